//! The int8 prefill kernel over a packed panel (see `simd::qpanel`): 16 weight rows in the
//! lanes of a register, a tile of up to 6 tokens, `vpdpbusd` with each token's next four
//! activation bytes broadcast. Integer sums per group, scaled in integers per group and in
//! f32 once per unit; results land as 16 contiguous outputs per token.

use std::arch::x86_64::*;

use super::super::qpanel::{PANEL, QPanel};
use super::super::{ActQuant, QActs, QGemm, QRow};

/// Most tokens per tile: 3 accumulators per token must fit the 32 registers.
const TILE: usize = 6;

/// `y[t * m + r0 + r] = panel row r · token t` for the tokens of `g`.
///
/// # Safety
/// `y` must be valid for writes at `t * m + r0 + r` for those tokens and `r < p.rows`, and
/// no other thread may write them meanwhile.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn qgemm_panel(g: &QGemm<'_>, y: *mut f32) {
    let (p, acts, kind, tokens, m, r0) = (g.panel, g.acts, g.kind, g.tokens.clone(), g.m, g.r0);
    let mut t = tokens.start;
    while t < tokens.end {
        let c = (tokens.end - t).min(TILE);
        unsafe {
            match c {
                6 => tile::<6>(p, acts, kind, t, y, m, r0),
                5 => tile::<5>(p, acts, kind, t, y, m, r0),
                4 => tile::<4>(p, acts, kind, t, y, m, r0),
                3 => tile::<3>(p, acts, kind, t, y, m, r0),
                2 => tile::<2>(p, acts, kind, t, y, m, r0),
                _ => tile::<1>(p, acts, kind, t, y, m, r0),
            }
        }
        t += c;
    }
}

#[inline(always)]
unsafe fn tile<const T: usize>(
    p: &QPanel,
    acts: &QActs,
    kind: ActQuant,
    t0: usize,
    y: *mut f32,
    m: usize,
    r0: usize,
) {
    // (a loop, not `array::from_fn`, whose closure stayed a call: 5% of a q4_k_m
    // prefill's samples on AVX2)
    let mut rows: [QRow<'_>; T] = [acts.row(t0); T];
    for (t, r) in rows.iter_mut().enumerate().skip(1) {
        *r = acts.row(t0 + t);
    }
    let (k, g, u) = (p.k, p.group, p.unit);
    assert!(rows.iter().all(|r| r.qs.len() == k));
    assert!(p.wq.len() >= k * PANEL && p.d.len() >= k / u * PANEL);
    assert!(p.gscale.len() >= k / g * PANEL && p.mins.len() >= k / g * PANEL);
    let (block, per_sum) = (kind.block(), kind.sum_group());
    let sums_per_group = g / per_sum.min(g);
    unsafe {
        let zero = _mm512_setzero_si512();
        let mut facc = [_mm512_setzero_ps(); T];
        let wq = p.wq.as_ptr();
        for unit in 0..k / u {
            let mut ui = [zero; T];
            // (loops, not `array::from_fn`, whose closures were calls in the AVX2 kernel)
            let mut da = [0f32; T];
            for t in 0..T {
                da[t] = rows[t].d[unit * u / block];
            }
            for grp in unit * u / g..(unit + 1) * u / g {
                let mut gi = [zero; T];
                for j in 0..g / 4 {
                    let w = _mm512_loadu_si512(wq.add((grp * g / 4 + j) * 64) as *const __m512i);
                    for t in 0..T {
                        let a = (rows[t].qs.as_ptr().add(grp * g + 4 * j) as *const i32)
                            .read_unaligned();
                        gi[t] = _mm512_dpbusd_epi32(gi[t], w, _mm512_set1_epi32(a));
                    }
                }
                // the activation sum of this group, per token (sums of 16 or 32 quants)
                let mut asum = [0i32; T];
                for t in 0..T {
                    let s = &rows[t].bsums[grp * g / per_sum..];
                    asum[t] = if sums_per_group == 2 {
                        s[0] as i32 + s[1] as i32
                    } else {
                        s[0] as i32
                    };
                }
                let gs = _mm512_loadu_si512(p.gscale.as_ptr().add(grp * PANEL) as *const __m512i);
                for t in 0..T {
                    let v = _mm512_sub_epi32(gi[t], _mm512_set1_epi32(p.off * asum[t]));
                    ui[t] = if p.has_gscale {
                        _mm512_add_epi32(ui[t], _mm512_mullo_epi32(v, gs))
                    } else {
                        _mm512_add_epi32(ui[t], v)
                    };
                }
                if p.has_mins {
                    let mv = _mm512_loadu_ps(p.mins.as_ptr().add(grp * PANEL));
                    for t in 0..T {
                        let c = _mm512_set1_ps(da[t] * asum[t] as f32);
                        facc[t] = _mm512_fnmadd_ps(mv, c, facc[t]);
                    }
                }
            }
            let dv = _mm512_loadu_ps(p.d.as_ptr().add(unit * PANEL));
            for t in 0..T {
                let s = _mm512_mul_ps(dv, _mm512_set1_ps(da[t]));
                facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ui[t]), s, facc[t]);
            }
        }
        let mask = ((1u32 << p.rows) - 1) as __mmask16;
        for (t, acc) in facc.iter().enumerate() {
            _mm512_mask_storeu_ps(y.add((t0 + t) * m + r0), mask, *acc);
        }
    }
}
