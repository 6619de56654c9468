//! AVX-512 decode attention (see `attention.rs`): scores are register-tiled dot products
//! stored with the query rows in lanes (one vector of scores per position), so every row's
//! softmax runs lane-wise; the probabilities times the latents are outer products.

use std::arch::x86_64::*;

use super::super::{PvTile, ScoresTile, SoftmaxStep};
use super::avx512::tail_mask;
use crate::backend::KvRows;

/// 16 cached values from `base` (element `i` of the layer) as f32: f32 as stored, bf16
/// (`BF`) widened exactly by a shift; lanes outside `m` read nothing and are 0.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn load16<const BF: bool>(base: *const u8, i: usize, m: __mmask16) -> __m512 {
    unsafe {
        if BF {
            let h = _mm256_maskz_loadu_epi16(m, base.add(2 * i) as *const i16);
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        } else {
            _mm512_maskz_loadu_ps(m, base.add(4 * i) as *const f32)
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn scores_t(t: &ScoresTile<'_>, s: &mut [f32]) {
    // SAFETY: the wrapper checked every row's bounds, q's and s's.
    unsafe {
        match t.kv {
            KvRows::F32(kv) => scores_of::<false, false>(t, kv.as_ptr() as *const u8, s),
            // the wrapper checked that q16 is only given where vdpbf16ps exists
            KvRows::Bf16(kv) if !t.q16.is_empty() => {
                scores_of::<true, true>(t, kv.as_ptr() as *const u8, s)
            }
            KvRows::Bf16(kv) => scores_of::<true, false>(t, kv.as_ptr() as *const u8, s),
            KvRows::Q8(_) => unreachable!("the wrapper refuses an 8-bit cache"),
        }
    }
}

/// `DP`: bf16 pairs multiplied by `vdpbf16ps` (only where the CPU has AVX-512 BF16, and
/// only with a bf16 cache, against the queries' bf16 copy `q16`); else f32 FMAs on values
/// widened from the stored type.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn scores_of<const BF: bool, const DP: bool>(
    t: &ScoresTile<'_>,
    kv: *const u8,
    s: &mut [f32],
) {
    let (q, rows, lanes, k, offs) = (t.q, t.rows, t.lanes, t.k, t.offs);
    let size = if BF { 2 } else { 4 };
    let groups = offs.len() / 4;
    let ahead = t.prefetch.len().div_ceil(groups.max(1));
    for jt in 0..groups {
        let keys: [usize; 4] = std::array::from_fn(|j| offs[jt * 4 + j]);
        // the next tile's rows, spread over the groups, into L2: the prefetchers see
        // only short streams (one cached row is 17-36 lines), and this product is where
        // the cache first comes in from memory
        for &off in t.prefetch.iter().skip(ahead * jt).take(ahead) {
            let row = kv.wrapping_add(off * size);
            for line in (0..k * size).step_by(64) {
                // a hint: it never faults, even out of bounds
                _mm_prefetch::<_MM_HINT_T1>(row.wrapping_add(line) as *const i8);
            }
        }
        // SAFETY (here and below): the wrapper checked every row's bounds, q's and s's.
        let out = unsafe { s.as_mut_ptr().add(jt * 4 * lanes) };
        let mut i = 0;
        while i < rows {
            let qi = unsafe { q.as_ptr().add(i * k) };
            let o = unsafe { out.add(i) };
            if DP {
                let qi = unsafe { t.q16.as_ptr().add(i * k) };
                let kv = kv as *const u16;
                unsafe {
                    match rows - i {
                        1 => scores_tile_dp::<1>(qi, k, kv, &keys, lanes, o),
                        2 => scores_tile_dp::<2>(qi, k, kv, &keys, lanes, o),
                        3 => scores_tile_dp::<3>(qi, k, kv, &keys, lanes, o),
                        _ => scores_tile_dp::<4>(qi, k, kv, &keys, lanes, o),
                    }
                }
                i += 4;
                continue;
            }
            unsafe {
                match rows - i {
                    1 => scores_tile::<1, BF>(qi, k, kv, &keys, lanes, o),
                    2 => scores_tile::<2, BF>(qi, k, kv, &keys, lanes, o),
                    3 => scores_tile::<3, BF>(qi, k, kv, &keys, lanes, o),
                    _ => scores_tile::<4, BF>(qi, k, kv, &keys, lanes, o),
                }
            }
            i += 4;
        }
    }
}

/// `R` query rows by 4 positions as dot products along the row (`R + 4` loads for `4R`
/// FMAs per 16 values, the last ones masked), each sum reduced once at the end and stored
/// lane-wise: `out[j * lanes + i]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn scores_tile<const R: usize, const BF: bool>(
    q: *const f32,
    k: usize,
    kv: *const u8,
    keys: &[usize; 4],
    lanes: usize,
    out: *mut f32,
) {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        for d in (0..k).step_by(16) {
            let m = if k - d >= 16 {
                0xffff
            } else {
                tail_mask(k - d)
            };
            let kr: [__m512; 4] = std::array::from_fn(|j| load16::<BF>(kv, keys[j] + d, m));
            for (i, a) in acc.iter_mut().enumerate() {
                let qv = _mm512_maskz_loadu_ps(m, q.add(i * k + d));
                for j in 0..4 {
                    a[j] = _mm512_fmadd_ps(qv, kr[j], a[j]);
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            for (j, v) in a.iter().enumerate() {
                *out.add(j * lanes + i) = _mm512_reduce_add_ps(*v);
            }
        }
    }
}

/// As `scores_tile`, 32 bf16 pairs at a time through `vdpbf16ps` (twice the multiplies of
/// an f32 FMA, and no widening); the products of two bf16 values are exact in f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")]
unsafe fn scores_tile_dp<const R: usize>(
    q: *const u16,
    k: usize,
    kv: *const u16,
    keys: &[usize; 4],
    lanes: usize,
    out: *mut f32,
) {
    unsafe {
        let load = |p: *const u16, m: __mmask32| -> __m512bh {
            std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi16(m, p as *const i16))
        };
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        let mut d = 0;
        while d < k {
            let m = if k - d >= 32 {
                u32::MAX
            } else {
                (1u32 << (k - d)) - 1
            };
            let kr: [__m512bh; 4] = std::array::from_fn(|j| load(kv.add(keys[j] + d), m));
            for (i, a) in acc.iter_mut().enumerate() {
                let qv = load(q.add(i * k + d), m);
                for j in 0..4 {
                    a[j] = _mm512_dpbf16_ps(a[j], qv, kr[j]);
                }
            }
            d += 32;
        }
        for (i, a) in acc.iter().enumerate() {
            for (j, v) in a.iter().enumerate() {
                *out.add(j * lanes + i) = _mm512_reduce_add_ps(*v);
            }
        }
    }
}

/// `e^x` lane-wise, as `portable::exp_approx` (same reduction and polynomial), with the
/// power of two applied by `vscalefps`; 0 below -87.33 and for -inf.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn exp512(x: __m512) -> __m512 {
    let live = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(-87.33));
    let xc = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-87.33)),
        _mm512_set1_ps(88.37),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(_mm512_fmadd_ps(
        xc,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
        _mm512_set1_ps(0.5),
    ));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), xc);
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let e = _mm512_add_ps(
        _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r),
        _mm512_set1_ps(1.0),
    );
    _mm512_maskz_scalef_ps(live, e, n)
}

/// `gate = silu(gate) * up` with [`exp512`]: SwiGLU's join sits between two parallel
/// products in decode, serial, where libm's `exp` per value was 0.8% of the samples.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let (pg, pu) = (gate.as_mut_ptr(), up.as_ptr());
    let one = _mm512_set1_ps(1.0);
    let mut i = 0;
    unsafe {
        while i < n {
            let m = if n - i >= 16 {
                0xffff
            } else {
                tail_mask(n - i)
            };
            let g = _mm512_maskz_loadu_ps(m, pg.add(i));
            let u = _mm512_maskz_loadu_ps(m, pu.add(i));
            let e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
            let s = _mm512_div_ps(g, _mm512_add_ps(one, e));
            _mm512_mask_storeu_ps(pg.add(i), m, _mm512_mul_ps(s, u));
            i += 16;
        }
    }
}

/// `simd::softmax_row`: three passes over the row (scale and maximum, [`exp512`] and sum,
/// normalise), 16 lanes at a time.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn softmax_row(s: &mut [f32], visible: usize, scale: f32) -> (f32, f32) {
    let (n, p) = (visible.min(s.len()), s.as_mut_ptr());
    let mask = |i: usize| {
        if n - i >= 16 {
            0xffff
        } else {
            tail_mask(n - i)
        }
    };
    unsafe {
        let sc = _mm512_set1_ps(scale);
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i < n {
            let m = mask(i);
            let v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, p.add(i)), sc);
            _mm512_mask_storeu_ps(p.add(i), m, v);
            mx = _mm512_mask_max_ps(mx, m, mx, v);
            i += 16;
        }
        let top = _mm512_reduce_max_ps(mx);
        let mx = _mm512_set1_ps(top);
        let mut sum = _mm512_setzero_ps();
        i = 0;
        while i < n {
            let m = mask(i);
            let e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, p.add(i)), mx));
            _mm512_mask_storeu_ps(p.add(i), m, e);
            sum = _mm512_mask_add_ps(sum, m, sum, e);
            i += 16;
        }
        let l = _mm512_reduce_add_ps(sum);
        let inv = _mm512_set1_ps(1.0 / l);
        i = 0;
        while i < n {
            let m = mask(i);
            let v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, p.add(i)), inv);
            _mm512_mask_storeu_ps(p.add(i), m, v);
            i += 16;
        }
        s[n..].fill(0.0);
        (top, l)
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn softmax_step(s: &mut [f32], st: &mut SoftmaxStep<'_>) {
    let n = st.lanes;
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let scale = _mm512_set1_ps(st.scale);
    for g in (0..n).step_by(16) {
        // SAFETY (here and below): the wrapper checked the lengths of s, m, l, alpha, visible.
        unsafe {
            let vis = _mm512_loadu_si512(st.visible.as_ptr().add(g) as *const _);
            let m_old = _mm512_loadu_ps(st.m.as_ptr().add(g));
            let mut mx = m_old;
            for j in 0..st.nj {
                let p = s.as_mut_ptr().add(j * n + g);
                let seen = _mm512_cmpgt_epu32_mask(vis, _mm512_set1_epi32((st.j0 + j) as i32));
                let v = _mm512_mask_mul_ps(ninf, seen, _mm512_loadu_ps(p), scale);
                _mm512_storeu_ps(p, v);
                mx = _mm512_max_ps(mx, v);
            }
            let empty = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(mx, ninf);
            // rows still without a visible position keep alpha 1 and exponents against 0
            let alpha =
                _mm512_mask_blend_ps(empty, exp512(_mm512_sub_ps(m_old, mx)), _mm512_set1_ps(1.0));
            let base = _mm512_mask_blend_ps(empty, mx, _mm512_setzero_ps());
            let mut sum = _mm512_mul_ps(_mm512_loadu_ps(st.l.as_ptr().add(g)), alpha);
            for j in 0..st.nj {
                let p = s.as_mut_ptr().add(j * n + g);
                let e = exp512(_mm512_sub_ps(_mm512_loadu_ps(p), base));
                _mm512_storeu_ps(p, e);
                sum = _mm512_add_ps(sum, e);
            }
            _mm512_storeu_ps(st.m.as_mut_ptr().add(g), mx);
            _mm512_storeu_ps(st.l.as_mut_ptr().add(g), sum);
            _mm512_storeu_ps(st.alpha.as_mut_ptr().add(g), alpha);
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn pv_t(t: &PvTile<'_>, o: &mut [f32]) {
    // SAFETY: the wrapper checked o's, p's and every row's bounds.
    unsafe {
        match t.kv {
            KvRows::F32(kv) => pv_of::<false>(t, kv.as_ptr() as *const u8, o),
            KvRows::Bf16(kv) => pv_of::<true>(t, kv.as_ptr() as *const u8, o),
            KvRows::Q8(_) => unreachable!("the wrapper refuses an 8-bit cache"),
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn pv_of<const BF: bool>(t: &PvTile<'_>, kv: *const u8, o: &mut [f32]) {
    let mut i = 0;
    while i < t.rows {
        let rn = (t.rows - i).min(6);
        let mut c = 0;
        while c < t.width {
            let left = t.width - c;
            // SAFETY: the wrapper checked o's, p's and every row's bounds; masks cover tails.
            unsafe {
                if left >= 64 {
                    match rn {
                        6 => pv_tile::<6, 4, BF>(t, kv, i, c, 0xffff, o),
                        5 => pv_tile::<5, 4, BF>(t, kv, i, c, 0xffff, o),
                        4 => pv_tile::<4, 4, BF>(t, kv, i, c, 0xffff, o),
                        3 => pv_tile::<3, 4, BF>(t, kv, i, c, 0xffff, o),
                        2 => pv_tile::<2, 4, BF>(t, kv, i, c, 0xffff, o),
                        _ => pv_tile::<1, 4, BF>(t, kv, i, c, 0xffff, o),
                    }
                    c += 64;
                } else {
                    let m = if left >= 16 { 0xffff } else { tail_mask(left) };
                    match rn {
                        6 => pv_tile::<6, 1, BF>(t, kv, i, c, m, o),
                        5 => pv_tile::<5, 1, BF>(t, kv, i, c, m, o),
                        4 => pv_tile::<4, 1, BF>(t, kv, i, c, m, o),
                        3 => pv_tile::<3, 1, BF>(t, kv, i, c, m, o),
                        2 => pv_tile::<2, 1, BF>(t, kv, i, c, m, o),
                        _ => pv_tile::<1, 1, BF>(t, kv, i, c, m, o),
                    }
                    c += 16;
                }
            }
        }
        i += rn;
    }
}

/// `R` query rows by `C` vectors of latent columns from `c` (the last masked by `m`):
/// per position, `C` loads and `R` broadcasts for `R * C` FMAs.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn pv_tile<const R: usize, const C: usize, const BF: bool>(
    t: &PvTile<'_>,
    kv: *const u8,
    i0: usize,
    c: usize,
    m: __mmask16,
    o: &mut [f32],
) {
    unsafe {
        let mask = |q: usize| if q + 1 == C { m } else { 0xffff };
        let op = o.as_mut_ptr();
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        for (i, a) in acc.iter_mut().enumerate() {
            for (q, v) in a.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(mask(q), op.add((i0 + i) * t.width + c + 16 * q));
            }
        }
        let pp = t.p.as_ptr().add(i0);
        for (j, &off) in t.offs.iter().enumerate() {
            let v: [__m512; C] =
                std::array::from_fn(|q| load16::<BF>(kv, off + c + 16 * q, mask(q)));
            for (i, a) in acc.iter_mut().enumerate() {
                let b = _mm512_set1_ps(*pp.add(j * t.lanes + i));
                for q in 0..C {
                    a[q] = _mm512_fmadd_ps(b, v[q], a[q]);
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            for (q, v) in a.iter().enumerate() {
                _mm512_mask_storeu_ps(op.add((i0 + i) * t.width + c + 16 * q), mask(q), *v);
            }
        }
    }
}
