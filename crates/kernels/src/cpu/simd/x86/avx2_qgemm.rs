//! The int8 prefill kernel for AVX2 without VNNI, over the same packed panel as the AVX-512
//! one (`simd::qpanel`): eight of the panel's rows in the lanes of a register, a tile of up
//! to four tokens, `vpmaddubsw` with each token's next four activation bytes broadcast.
//! A panel of more than 8 rows takes both halves from each broadcast (`tile::<T, 2, F>`):
//! 2 weight loads and T broadcasts for 2T products where a half at a time took 1 and T for
//! T, with its i32 and f32 sums left to the stack; on Zen 3 that ran a Q4_K prefill's
//! products 1.2-1.4x as fast.
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
use super::super::{ActQuant, Fmt, QActs, QGemm, QRow};

/// Most tokens per tile: with one half, three registers per token (i16 sums, i32 sums, f32
/// sums) and four shared make 16; with two, the i16 sums take 8 and the rest spill.
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
    // up to 8 rows: one half; more: both halves from each broadcast (fewer loads per
    // product). Four tokens, but three with both halves where the sums flush every 2 steps
    // (Q6_K), as measured on Zen 3.
    let halves = if p.rows > 8 { 2 } else { 1 };
    let most = if halves == 2 && f < 4 { 3 } else { TILE };
    macro_rules! tiles {
        ($h:literal, $f:literal, $c:expr, $t:expr) => {
            match $c {
                4 => tile::<4, $h, $f>(g, $t, y),
                3 => tile::<3, $h, $f>(g, $t, y),
                2 => tile::<2, $h, $f>(g, $t, y),
                _ => tile::<1, $h, $f>(g, $t, y),
            }
        };
    }
    let mut t = g.tokens.start;
    while t < g.tokens.end {
        let c = (g.tokens.end - t).min(most);
        // SAFETY: the caller's contract, passed on
        unsafe {
            match (halves, f) {
                (2, 8..) => tiles!(2, 8, c, t),
                (2, 4..8) => tiles!(2, 4, c, t),
                (2, 2..4) => tiles!(2, 2, c, t),
                (2, _) => tiles!(2, 1, c, t),
                (_, 8..) => tiles!(1, 8, c, t),
                (_, 4..8) => tiles!(1, 4, c, t),
                (_, 2..4) => tiles!(1, 2, c, t),
                (_, _) => tiles!(1, 1, c, t),
            }
        }
        t += c;
    }
}

/// Tokens `t0..t0 + T` over the panel's first `8 H` rows (`H` halves of 8, each token's
/// broadcast serving both), flushing the i16 sums every `F` steps.
#[inline(always)]
unsafe fn tile<const T: usize, const H: usize, const F: usize>(
    g: &QGemm<'_>,
    t0: usize,
    y: *mut f32,
) {
    let (p, acts, kind): (&QPanel, &QActs, ActQuant) = (g.panel, g.acts, g.kind);
    // (a loop, not `array::from_fn`, whose closure stayed a call: 5% of a q4_k_m
    // prefill's samples on AVX2)
    let mut rows: [QRow<'_>; T] = [acts.row(t0); T];
    for (t, r) in rows.iter_mut().enumerate().skip(1) {
        *r = acts.row(t0 + t);
    }
    let (k, gsz, u) = (p.k, p.group, p.unit);
    assert!(rows.iter().all(|r| r.qs.len() == k));
    assert!(p.wq.len() >= k * PANEL && p.d.len() >= k / u * PANEL);
    assert!(p.gscale.len() >= k / gsz * PANEL && p.mins.len() >= k / gsz * PANEL);
    let (block, per_sum) = (kind.block(), kind.sum_group());
    let sums_per_group = gsz / per_sum.min(gsz);
    unsafe {
        let zero = _mm256_setzero_si256();
        let low = _mm256_set1_epi32(0xffff);
        let mut facc = [[_mm256_setzero_ps(); H]; T];
        let wq = p.wq.as_ptr();
        for unit in 0..k / u {
            let mut ui = [[zero; H]; T];
            // (loops, not `array::from_fn`: its closures were calls, per group, here)
            let mut da = [0f32; T];
            for t in 0..T {
                da[t] = *rows[t].d.get_unchecked(unit * u / block);
            }
            for grp in unit * u / gsz..(unit + 1) * u / gsz {
                let gsp = p.gscale.as_ptr().add(grp * PANEL);
                let mut gs32 = [zero; H];
                // each row's scale in both i16 halves of its lane, for `vpmaddwd`
                let mut gs16 = [_mm256_set1_epi16(1); H];
                for h in 0..H {
                    gs32[h] = _mm256_loadu_si256(gsp.add(8 * h) as *const __m256i);
                    if p.has_gscale {
                        gs16[h] = _mm256_or_si256(
                            _mm256_and_si256(gs32[h], low),
                            _mm256_slli_epi32::<16>(gs32[h]),
                        );
                    }
                }
                let mut j = 0;
                while j < gsz / 4 {
                    let mut a16 = [[zero; H]; T];
                    for s in 0..F {
                        let step = grp * gsz / 4 + j + s;
                        let mut w = [zero; H];
                        for (h, w) in w.iter_mut().enumerate() {
                            *w = _mm256_loadu_si256(
                                wq.add(step * 4 * PANEL + 32 * h) as *const __m256i
                            );
                        }
                        for t in 0..T {
                            let x = _mm256_set1_epi32(
                                (rows[t].qs.as_ptr().add(4 * step) as *const i32).read_unaligned(),
                            );
                            for h in 0..H {
                                a16[t][h] =
                                    _mm256_add_epi16(a16[t][h], _mm256_maddubs_epi16(w[h], x));
                            }
                        }
                    }
                    for t in 0..T {
                        for h in 0..H {
                            ui[t][h] =
                                _mm256_add_epi32(ui[t][h], _mm256_madd_epi16(a16[t][h], gs16[h]));
                        }
                    }
                    j += F;
                }
                // the activation sum of this group, per token (sums of 16 or 32 quants)
                let mut asum = [0i32; T];
                for t in 0..T {
                    let s = rows[t].bsums.as_ptr().add(grp * gsz / per_sum);
                    asum[t] = if sums_per_group == 2 {
                        *s as i32 + *s.add(1) as i32
                    } else {
                        *s as i32
                    };
                }
                if p.off != 0 {
                    for t in 0..T {
                        let o = _mm256_set1_epi32(p.off * asum[t]);
                        for h in 0..H {
                            let o = if p.has_gscale {
                                _mm256_mullo_epi32(o, gs32[h])
                            } else {
                                o
                            };
                            ui[t][h] = _mm256_sub_epi32(ui[t][h], o);
                        }
                    }
                }
                if p.has_mins {
                    let mut mv = [_mm256_setzero_ps(); H];
                    for (h, m) in mv.iter_mut().enumerate() {
                        *m = _mm256_loadu_ps(p.mins.as_ptr().add(grp * PANEL + 8 * h));
                    }
                    for t in 0..T {
                        let c = _mm256_set1_ps(da[t] * asum[t] as f32);
                        for h in 0..H {
                            facc[t][h] = _mm256_fnmadd_ps(mv[h], c, facc[t][h]);
                        }
                    }
                }
            }
            for h in 0..H {
                let dv = _mm256_loadu_ps(p.d.as_ptr().add(unit * PANEL + 8 * h));
                for t in 0..T {
                    let s = _mm256_mul_ps(dv, _mm256_set1_ps(da[t]));
                    facc[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ui[t][h]), s, facc[t][h]);
                }
            }
        }
        // the rows of each half that the panel holds
        super::avx2::store_halves(&facc, p.rows, y.add(t0 * g.m + g.r0), g.m);
    }
}

/// 64 values (chunk `chunk`) of each of 16 rows of Q8_0, Q4_K or Q6_K decoded as
/// `QPanel` stores them (each value plus `off`; an empty row is padding, all `off`), then
/// transposed so each row's 16 words of four values lie side by side: 1 KiB at `dst`.
/// (The AVX-512 levels' `pack_chunk`, with four 8x8 word transposes.)
///
/// # Safety
/// `dst` is valid for 1 KiB of writes; the rows hold the chunk's blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn pack_chunk(fmt: &Fmt<'_>, srcs: &[&[u8]; 16], chunk: usize, off: u8, dst: *mut u8) {
    unsafe {
        // each row's words 0-7 and 8-15 (a loop and a function, not closures, which were
        // calls per row here)
        let mut rows = [[_mm256_setzero_si256(); 2]; 16];
        for (r, row) in rows.iter_mut().enumerate() {
            *row = decode64(fmt, srcs[r], chunk, off);
        }
        for (rb, eight) in rows.chunks_exact(8).enumerate() {
            for wb in 0..2 {
                let mut v = [_mm256_setzero_si256(); 8];
                for (v, row) in v.iter_mut().zip(eight) {
                    *v = row[wb];
                }
                let t = transpose8(&v);
                for (j, w) in t.iter().enumerate() {
                    let at = ((8 * wb + j) * PANEL + 8 * rb) * 4;
                    _mm256_storeu_si256(dst.add(at) as *mut __m256i, *w);
                }
            }
        }
    }
}

/// Chunk `chunk` (64 values) of one row as two registers of bytes, as `pack_chunk` takes
/// them.
#[inline(always)]
unsafe fn decode64(fmt: &Fmt<'_>, s: &[u8], chunk: usize, off: u8) -> [__m256i; 2] {
    unsafe {
        if s.is_empty() {
            return [_mm256_set1_epi8(off as i8); 2];
        }
        let nib = _mm256_set1_epi8(0x0f);
        let two = _mm256_set1_epi8(3);
        // the last byte any format below reads, checked once
        let end = match fmt {
            Fmt::Q8_0 => 68 * chunk + 68,
            Fmt::Q4K => 144 * (chunk / 4) + 48 + 32 * (chunk % 4),
            _ => 210 * (chunk / 4) + 160 + 32 * (chunk % 4 / 2),
        };
        assert!(end <= s.len());
        let p = s.as_ptr();
        macro_rules! load {
            ($at:expr) => {
                _mm256_loadu_si256(p.add($at) as *const __m256i)
            };
        }
        match fmt {
            Fmt::Q8_0 => {
                let flip = _mm256_set1_epi8(-128);
                [
                    _mm256_xor_si256(load!(68 * chunk + 2), flip),
                    _mm256_xor_si256(load!(68 * chunk + 36), flip),
                ]
            }
            Fmt::Q4K => {
                let b = load!(144 * (chunk / 4) + 16 + 32 * (chunk % 4));
                [
                    _mm256_and_si256(b, nib),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(b), nib),
                ]
            }
            _ => {
                // Q6_K: as the AVX-512 pack reads it (chunk c of a super-block is half c / 2,
                // low nibbles for even c, high for odd, two high bits each)
                let (u, c) = (chunk / 4, chunk % 4);
                let base = 210 * u;
                let l0 = load!(base + 64 * (c / 2));
                let l1 = load!(base + 64 * (c / 2) + 32);
                let qh = load!(base + 128 + 32 * (c / 2));
                let (l0, l1, h0, h1) = if c % 2 == 0 {
                    (
                        _mm256_and_si256(l0, nib),
                        _mm256_and_si256(l1, nib),
                        _mm256_and_si256(qh, two),
                        _mm256_and_si256(_mm256_srli_epi16::<2>(qh), two),
                    )
                } else {
                    (
                        _mm256_and_si256(_mm256_srli_epi16::<4>(l0), nib),
                        _mm256_and_si256(_mm256_srli_epi16::<4>(l1), nib),
                        _mm256_and_si256(_mm256_srli_epi16::<4>(qh), two),
                        _mm256_and_si256(_mm256_srli_epi16::<6>(qh), two),
                    )
                };
                [
                    _mm256_or_si256(l0, _mm256_slli_epi16::<4>(h0)),
                    _mm256_or_si256(l1, _mm256_slli_epi16::<4>(h1)),
                ]
            }
        }
    }
}

/// An 8x8 transpose of 32-bit words: output `j` holds word `j` of inputs 0-7.
#[inline(always)]
pub(super) unsafe fn transpose8(v: &[__m256i; 8]) -> [__m256i; 8] {
    unsafe {
        // pairs of rows interleaved: words (0, 1 | 4, 5) and (2, 3 | 6, 7) of each pair
        let t0 = _mm256_unpacklo_epi32(v[0], v[1]);
        let t1 = _mm256_unpackhi_epi32(v[0], v[1]);
        let t2 = _mm256_unpacklo_epi32(v[2], v[3]);
        let t3 = _mm256_unpackhi_epi32(v[2], v[3]);
        let t4 = _mm256_unpacklo_epi32(v[4], v[5]);
        let t5 = _mm256_unpackhi_epi32(v[4], v[5]);
        let t6 = _mm256_unpacklo_epi32(v[6], v[7]);
        let t7 = _mm256_unpackhi_epi32(v[6], v[7]);
        // word (j | j + 4) of rows 0-3 (u0-u3) and of rows 4-7 (u4-u7)
        let u0 = _mm256_unpacklo_epi64(t0, t2);
        let u1 = _mm256_unpackhi_epi64(t0, t2);
        let u2 = _mm256_unpacklo_epi64(t1, t3);
        let u3 = _mm256_unpackhi_epi64(t1, t3);
        let u4 = _mm256_unpacklo_epi64(t4, t6);
        let u5 = _mm256_unpackhi_epi64(t4, t6);
        let u6 = _mm256_unpacklo_epi64(t5, t7);
        let u7 = _mm256_unpackhi_epi64(t5, t7);
        [
            _mm256_permute2x128_si256::<0x20>(u0, u4),
            _mm256_permute2x128_si256::<0x20>(u1, u5),
            _mm256_permute2x128_si256::<0x20>(u2, u6),
            _mm256_permute2x128_si256::<0x20>(u3, u7),
            _mm256_permute2x128_si256::<0x31>(u0, u4),
            _mm256_permute2x128_si256::<0x31>(u1, u5),
            _mm256_permute2x128_si256::<0x31>(u2, u6),
            _mm256_permute2x128_si256::<0x31>(u3, u7),
        ]
    }
}
