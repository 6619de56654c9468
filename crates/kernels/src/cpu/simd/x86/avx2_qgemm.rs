//! The int8 prefill kernel for AVX2 without VNNI, over the same packed panel as the AVX-512
//! one (`simd::qpanel`): eight of the panel's rows in the lanes of a register, a tile of up
//! to four tokens, `vpmaddubsw` with each token's next four activation bytes broadcast.
//!
//! `vpmaddubsw` sums products in pairs into i16, so it runs alone for a few steps: its i16
//! lanes take `F` steps (`F` pairs of at most `2 · qmax · 127`) before they could overflow,
//! and only then does `vpmaddwd` widen them to i32, multiplying by the group's integer
//! scale in the same instruction. Q4_K (`qmax` 15) widens once per 32 values, so the
//! integer multiplier runs 1.1 times per 32 products where `vpmaddubsw + vpmaddwd` a step
//! would run it twice; on Zen 3 that unit is the limit. Every sum is exact, as the
//! oracle's (`QPanel::dot`). Q8_0's stored bytes (0-255) would overflow the pairs; it is
//! not taken here (`simd::has_qgemm`).

use std::arch::x86_64::*;

use super::super::qpanel::{PANEL, QPanel};
use super::super::{ActQuant, QActs, QGemm, QRow};

/// Most tokens per tile: three registers per token (i16 sums, i32 sums, f32 sums) and four
/// shared make 16.
const TILE: usize = 4;

/// Steps of four values whose `vpmaddubsw` pairs an i16 lane can add up exactly.
pub fn steps(qmax: i32) -> usize {
    (i16::MAX as i32 / (2 * qmax * 127)) as usize
}

/// `y[t * m + r0 + r] = panel row r · token t` for the tokens of `g`.
///
/// # Safety
/// `y` must be valid for writes at `t * m + r0 + r` for those tokens and `r < p.rows`, and
/// no other thread may write them meanwhile.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn qgemm_panel(g: &QGemm<'_>, y: *mut f32) {
    let p = g.panel;
    // the flush interval must divide a group's steps: 8 (Q4_K), 4 (Q5_0: 4 of 8), 2 (Q6_K)
    let f = steps(p.qmax).min(p.group / 4);
    assert!(
        f > 0 && (p.group / 4).is_multiple_of(f),
        "qgemm: qmax {}",
        p.qmax
    );
    for half in 0..p.rows.div_ceil(8) {
        let mut t = g.tokens.start;
        while t < g.tokens.end {
            let c = (g.tokens.end - t).min(TILE);
            unsafe {
                match (f, c) {
                    (8.., 4) => tile::<4, 8>(g, t, half, y),
                    (8.., 3) => tile::<3, 8>(g, t, half, y),
                    (8.., 2) => tile::<2, 8>(g, t, half, y),
                    (8.., _) => tile::<1, 8>(g, t, half, y),
                    (4..8, 4) => tile::<4, 4>(g, t, half, y),
                    (4..8, 3) => tile::<3, 4>(g, t, half, y),
                    (4..8, 2) => tile::<2, 4>(g, t, half, y),
                    (4..8, _) => tile::<1, 4>(g, t, half, y),
                    (2..4, 4) => tile::<4, 2>(g, t, half, y),
                    (2..4, 3) => tile::<3, 2>(g, t, half, y),
                    (2..4, 2) => tile::<2, 2>(g, t, half, y),
                    (2..4, _) => tile::<1, 2>(g, t, half, y),
                    (_, 4) => tile::<4, 1>(g, t, half, y),
                    (_, 3) => tile::<3, 1>(g, t, half, y),
                    (_, 2) => tile::<2, 1>(g, t, half, y),
                    (_, _) => tile::<1, 1>(g, t, half, y),
                }
            }
            t += c;
        }
    }
}

/// Tokens `t0..t0 + T` over rows `8 half ..` of the panel, flushing the i16 sums every `F`
/// steps.
#[inline(always)]
unsafe fn tile<const T: usize, const F: usize>(g: &QGemm<'_>, t0: usize, half: usize, y: *mut f32) {
    let (p, acts, kind): (&QPanel, &QActs, ActQuant) = (g.panel, g.acts, g.kind);
    let rows: [QRow<'_>; T] = std::array::from_fn(|t| acts.row(t0 + t));
    let (k, gsz, u) = (p.k, p.group, p.unit);
    assert!(rows.iter().all(|r| r.qs.len() == k));
    assert!(p.wq.len() >= k * PANEL && p.d.len() >= k / u * PANEL);
    assert!(p.gscale.len() >= k / gsz * PANEL && p.mins.len() >= k / gsz * PANEL);
    let (block, per_sum) = (kind.block(), kind.sum_group());
    let sums_per_group = gsz / per_sum.min(gsz);
    let lane0 = 8 * half;
    unsafe {
        let zero = _mm256_setzero_si256();
        let low = _mm256_set1_epi32(0xffff);
        let mut facc = [_mm256_setzero_ps(); T];
        let wq = p.wq.as_ptr().add(4 * lane0);
        for unit in 0..k / u {
            let mut ui = [zero; T];
            let da: [f32; T] = std::array::from_fn(|t| *rows[t].d.get_unchecked(unit * u / block));
            for grp in unit * u / gsz..(unit + 1) * u / gsz {
                let gs32 = _mm256_loadu_si256(
                    p.gscale.as_ptr().add(grp * PANEL + lane0) as *const __m256i
                );
                // each row's scale in both i16 halves of its lane, for `vpmaddwd`
                let gs16 = if p.has_gscale {
                    _mm256_or_si256(_mm256_and_si256(gs32, low), _mm256_slli_epi32::<16>(gs32))
                } else {
                    _mm256_set1_epi16(1)
                };
                let mut j = 0;
                while j < gsz / 4 {
                    let mut a16 = [zero; T];
                    for s in 0..F {
                        let step = grp * gsz / 4 + j + s;
                        let w = _mm256_loadu_si256(wq.add(step * 4 * PANEL) as *const __m256i);
                        for t in 0..T {
                            let x =
                                (rows[t].qs.as_ptr().add(4 * step) as *const i32).read_unaligned();
                            a16[t] = _mm256_add_epi16(
                                a16[t],
                                _mm256_maddubs_epi16(w, _mm256_set1_epi32(x)),
                            );
                        }
                    }
                    for t in 0..T {
                        ui[t] = _mm256_add_epi32(ui[t], _mm256_madd_epi16(a16[t], gs16));
                    }
                    j += F;
                }
                // the activation sum of this group, per token (sums of 16 or 32 quants)
                let asum: [i32; T] = std::array::from_fn(|t| {
                    let s = rows[t].bsums.as_ptr().add(grp * gsz / per_sum);
                    if sums_per_group == 2 {
                        *s as i32 + *s.add(1) as i32
                    } else {
                        *s as i32
                    }
                });
                if p.off != 0 {
                    for t in 0..T {
                        let o = _mm256_set1_epi32(p.off * asum[t]);
                        let o = if p.has_gscale {
                            _mm256_mullo_epi32(o, gs32)
                        } else {
                            o
                        };
                        ui[t] = _mm256_sub_epi32(ui[t], o);
                    }
                }
                if p.has_mins {
                    let mv = _mm256_loadu_ps(p.mins.as_ptr().add(grp * PANEL + lane0));
                    for t in 0..T {
                        let c = _mm256_set1_ps(da[t] * asum[t] as f32);
                        facc[t] = _mm256_fnmadd_ps(mv, c, facc[t]);
                    }
                }
            }
            let dv = _mm256_loadu_ps(p.d.as_ptr().add(unit * PANEL + lane0));
            for t in 0..T {
                let s = _mm256_mul_ps(dv, _mm256_set1_ps(da[t]));
                facc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ui[t]), s, facc[t]);
            }
        }
        // the rows of this half that the panel holds
        let live = (p.rows - lane0).min(8) as i32;
        let mask = _mm256_cmpgt_epi32(
            _mm256_set1_epi32(live),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        );
        for (t, acc) in facc.iter().enumerate() {
            _mm256_maskstore_ps(y.add((t0 + t) * g.m + g.r0 + lane0), mask, *acc);
        }
    }
}
