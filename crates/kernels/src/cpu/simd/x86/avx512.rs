//! AVX-512 F/BW/VL kernels, 16 f32 lanes. Weight rows are widened in registers (bf16 by a
//! shift, f16 by vcvtph2ps, FP8 e4m3 exactly by moving its bits into an f32 and rescaling,
//! Q8_0 by sign extension) and meet f32 activations in FMAs, so results match the scalar
//! oracle to f32 rounding. Tails use masked loads, which never touch memory past the mask.

use std::arch::x86_64::*;

use super::super::{Fmt, GemmPanel, PvBlock, portable, tile4x4};
pub use super::avx512_attention::{
    pair_queries, pv_t, round_to_bf16, scores_t, silu_mul, softmax_row, softmax_step,
};
pub use super::avx512_int8::{dot_row_q_bw as dot_row_q, dot_rows_q_bw as dot_rows_q};
pub use super::avx512_rows::{dot_rows_bf16_pairs, dot_rows_f16, dot_rows_f32, dot_rows_fp8};

#[inline(always)]
pub(super) fn tail_mask(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

/// 16 e4m3 codes (zero-extended to i32 lanes) to f32: the 7 magnitude bits shifted into
/// place form an f32 with exponent off by 120 (normal and subnormal alike), so one multiply
/// by 2^120 gives the exact value.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn fp8_lanes(v: __m512i) -> __m512 {
    let sign = _mm512_slli_epi32::<24>(_mm512_and_si512(v, _mm512_set1_epi32(0x80)));
    let mag = _mm512_slli_epi32::<20>(_mm512_and_si512(v, _mm512_set1_epi32(0x7f)));
    let f = _mm512_castsi512_ps(_mm512_or_si512(sign, mag));
    _mm512_mul_ps(f, _mm512_set1_ps(f32::from_bits((120 + 127) << 23)))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn load_bf16(p: *const u8, m: Option<__mmask16>) -> __m512 {
    unsafe {
        let h = match m {
            None => _mm256_loadu_si256(p as *const __m256i),
            Some(m) => _mm256_maskz_loadu_epi16(m, p as *const i16),
        };
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn load_f16(p: *const u8, m: Option<__mmask16>) -> __m512 {
    unsafe {
        let h = match m {
            None => _mm256_loadu_si256(p as *const __m256i),
            Some(m) => _mm256_maskz_loadu_epi16(m, p as *const i16),
        };
        _mm512_cvtph_ps(h)
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn load_f32(p: *const u8, m: Option<__mmask16>) -> __m512 {
    unsafe {
        match m {
            None => _mm512_loadu_ps(p as *const f32),
            Some(m) => _mm512_maskz_loadu_ps(m, p as *const f32),
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn load_fp8(p: *const u8, m: Option<__mmask16>) -> __m512 {
    unsafe {
        let b = match m {
            None => _mm_loadu_si128(p as *const __m128i),
            Some(m) => _mm_maskz_loadu_epi8(m, p as *const i8),
        };
        fp8_lanes(_mm512_cvtepu8_epi32(b))
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn load_i8(p: *const u8) -> __m512 {
    unsafe { _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i))) }
}

/// Load kinds for `dot_lanes` / `widen_lanes` (a const parameter so each loop is
/// specialised with its load inlined).
pub(super) const F32: u8 = 0;
pub(super) const BF16: u8 = 1;
pub(super) const F16: u8 = 2;
const FP8: u8 = 3;

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn load<const K: u8>(p: *const u8, m: Option<__mmask16>) -> __m512 {
    unsafe {
        match K {
            F32 => load_f32(p, m),
            BF16 => load_bf16(p, m),
            F16 => load_f16(p, m),
            _ => load_fp8(p, m),
        }
    }
}

pub(super) const fn size_of_kind(k: u8) -> usize {
    match k {
        F32 => 4,
        BF16 | F16 => 2,
        _ => 1,
    }
}

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    loader::f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}

/// Σ load(w, i) * x[i] over `n` values, as an unreduced vector; `size` bytes per value.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn dot_lanes<const K: u8>(w: *const u8, x: *const f32, n: usize) -> __m512 {
    let size = size_of_kind(K);
    unsafe {
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 64 <= n {
            for (j, a) in acc.iter_mut().enumerate() {
                let o = i + 16 * j;
                *a = _mm512_fmadd_ps(
                    load::<K>(w.add(o * size), None),
                    _mm512_loadu_ps(x.add(o)),
                    *a,
                );
            }
            i += 64;
        }
        while i + 16 <= n {
            acc[0] = _mm512_fmadd_ps(
                load::<K>(w.add(i * size), None),
                _mm512_loadu_ps(x.add(i)),
                acc[0],
            );
            i += 16;
        }
        if i < n {
            let m = tail_mask(n - i);
            acc[1] = _mm512_fmadd_ps(
                load::<K>(w.add(i * size), Some(m)),
                _mm512_maskz_loadu_ps(m, x.add(i)),
                acc[1],
            );
        }
        _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]))
    }
}

/// 16 unsigned bytes to f32 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn u8x16(v: __m128i) -> __m512 {
    _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v))
}

/// 16 signed bytes to f32 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn i8x16(v: __m128i) -> __m512 {
    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v))
}

/// Q4_K scale and min of sub-block `j`, as f32: `loader::quant::q4k_scale_min` again, kept
/// here because calling that one from this loop measured 8-20% slower q4_k_m decode.
#[inline(always)]
pub(super) fn q4k_scale_min(j: usize, q: &[u8]) -> (f32, f32) {
    let (s, m) = if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    };
    (s as f32, m as f32)
}

/// One Q4_K super-block's 256 values, 16 at a time: `each(i, values)` for lanes
/// `16 i .. 16 i + 16`. Values are `d * sc * q - dmin * m`, rounded as the portable
/// decoder rounds them (a product, then a difference).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn q4k_lanes(b: &[u8], mut each: impl FnMut(usize, __m512)) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let low = _mm256_set1_epi8(0x0f);
    for pair in 0..4 {
        let q = unsafe { _mm256_loadu_si256(b.as_ptr().add(16 + 32 * pair) as *const __m256i) };
        let lo = _mm256_and_si256(q, low);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low);
        for (half, nib) in [lo, hi].into_iter().enumerate() {
            let (sc, m) = q4k_scale_min(2 * pair + half, scales);
            let (ds, dm) = (_mm512_set1_ps(d * sc), _mm512_set1_ps(dmin * m));
            let parts = [
                _mm256_castsi256_si128(nib),
                _mm256_extracti128_si256::<1>(nib),
            ];
            for (k, part) in parts.into_iter().enumerate() {
                let v = _mm512_sub_ps(_mm512_mul_ps(u8x16(part), ds), dm);
                each(4 * pair + 2 * half + k, v);
            }
        }
    }
}

/// One Q6_K super-block's 256 values, 16 at a time (see `q4k_lanes`); values are
/// `(d * sc) * (q - 32)` as the portable decoder computes them.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn q6k_lanes(b: &[u8], mut each: impl FnMut(usize, __m512)) {
    let d = f16_at(b, 208);
    let low = _mm256_set1_epi8(0x0f);
    let two = _mm256_set1_epi8(3);
    let off = _mm256_set1_epi8(32);
    for half in 0..2 {
        let p = b.as_ptr();
        let (a, bb, h) = unsafe {
            (
                _mm256_loadu_si256(p.add(64 * half) as *const __m256i),
                _mm256_loadu_si256(p.add(64 * half + 32) as *const __m256i),
                _mm256_loadu_si256(p.add(128 + 32 * half) as *const __m256i),
            )
        };
        let hbits = |shift: i32| -> __m256i {
            let v = match shift {
                0 => h,
                2 => _mm256_srli_epi16::<2>(h),
                4 => _mm256_srli_epi16::<4>(h),
                _ => _mm256_srli_epi16::<6>(h),
            };
            _mm256_slli_epi16::<4>(_mm256_and_si256(v, two))
        };
        let qs = [
            _mm256_or_si256(_mm256_and_si256(a, low), hbits(0)),
            _mm256_or_si256(_mm256_and_si256(bb, low), hbits(2)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(a), low), hbits(4)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(bb), low), hbits(6)),
        ];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        for (g, q) in qs.into_iter().enumerate() {
            let q = _mm256_sub_epi8(q, off);
            let parts = [_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q)];
            for (k, part) in parts.into_iter().enumerate() {
                let scale = _mm512_set1_ps(d * (sc[2 * g + k] as i8) as f32);
                each(8 * half + 2 * g + k, _mm512_mul_ps(scale, i8x16(part)));
            }
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    unsafe { _mm512_reduce_add_ps(dot_lanes::<F32>(a.as_ptr() as *const u8, b.as_ptr(), n)) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let av = _mm512_set1_ps(a);
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let mut i = 0;
    unsafe {
        while i + 16 <= n {
            let v = _mm512_fmadd_ps(av, _mm512_loadu_ps(px.add(i)), _mm512_loadu_ps(py.add(i)));
            _mm512_storeu_ps(py.add(i), v);
            i += 16;
        }
        if i < n {
            let m = tail_mask(n - i);
            let v = _mm512_fmadd_ps(
                av,
                _mm512_maskz_loadu_ps(m, px.add(i)),
                _mm512_maskz_loadu_ps(m, py.add(i)),
            );
            _mm512_mask_storeu_ps(py.add(i), m, v);
        }
    }
}

/// Widen `n` values with `load` (`size` bytes each), times `scale`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn widen_lanes<const K: u8>(src: *const u8, out: *mut f32, n: usize, scale: f32) {
    let size = size_of_kind(K);
    unsafe {
        let s = _mm512_set1_ps(scale);
        let mut i = 0;
        while i + 16 <= n {
            _mm512_storeu_ps(
                out.add(i),
                _mm512_mul_ps(load::<K>(src.add(i * size), None), s),
            );
            i += 16;
        }
        if i < n {
            let m = tail_mask(n - i);
            _mm512_mask_storeu_ps(
                out.add(i),
                m,
                _mm512_mul_ps(load::<K>(src.add(i * size), Some(m)), s),
            );
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn widen(fmt: &Fmt<'_>, src: &[u8], out: &mut [f32]) {
    let n = out.len();
    let (s, o) = (src.as_ptr(), out.as_mut_ptr());
    unsafe {
        match *fmt {
            Fmt::F32 => {
                assert!(src.len() >= 4 * n);
                widen_lanes::<F32>(s, o, n, 1.0)
            }
            Fmt::BF16 => {
                assert!(src.len() >= 2 * n);
                widen_lanes::<BF16>(s, o, n, 1.0)
            }
            Fmt::F16 => {
                assert!(src.len() >= 2 * n);
                widen_lanes::<F16>(s, o, n, 1.0)
            }
            Fmt::Fp8 { scales, block } => {
                assert!(src.len() >= n && scales.len() >= n.div_ceil(block));
                for (j, &scale) in scales.iter().enumerate().take(n.div_ceil(block)) {
                    let len = block.min(n - j * block);
                    widen_lanes::<FP8>(s.add(j * block), o.add(j * block), len, scale);
                }
            }
            Fmt::Q8_0 | Fmt::Q4K | Fmt::Q6K => {
                quant_lanes(fmt, src, n, |i, v| _mm512_storeu_ps(o.add(16 * i), v))
            }
            Fmt::Q5_0 => portable::widen(fmt, src, out),
        }
    }
}

/// The values of `n` of a Q8_0, Q4_K or Q6_K row, 16 at a time: `each(i, v)` takes values
/// `16 i .. 16 i + 16`, decoded as the portable decoder rounds them.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn quant_lanes(
    fmt: &Fmt<'_>,
    src: &[u8],
    n: usize,
    mut each: impl FnMut(usize, __m512),
) {
    unsafe {
        match fmt {
            Fmt::Q8_0 => {
                assert!(n.is_multiple_of(32) && src.len() >= n / 32 * 34);
                for b in 0..n / 32 {
                    let blk = &src[34 * b..34 * b + 34];
                    let d = _mm512_set1_ps(f16_at(blk, 0));
                    let p = blk.as_ptr().add(2);
                    each(2 * b, _mm512_mul_ps(load_i8(p), d));
                    each(2 * b + 1, _mm512_mul_ps(load_i8(p.add(16)), d));
                }
            }
            Fmt::Q4K | Fmt::Q6K => {
                let bytes = if matches!(fmt, Fmt::Q4K) { 144 } else { 210 };
                assert!(n.is_multiple_of(256) && src.len() >= n / 256 * bytes);
                for b in 0..n / 256 {
                    let blk = &src[bytes * b..bytes * (b + 1)];
                    let at = |i: usize, v: __m512| each(16 * b + i, v);
                    if matches!(fmt, Fmt::Q4K) {
                        q4k_lanes(blk, at);
                    } else {
                        q6k_lanes(blk, at);
                    }
                }
            }
            _ => unreachable!("quant_lanes: {fmt:?} is not Q8_0, Q4_K or Q6_K"),
        }
    }
}

/// `acc` plus Q8_0 block `b`'s products with the f32 activations from `px`, by lane.
#[inline(always)]
unsafe fn q8_0_f32_block(src: &[u8], px: *const f32, b: usize, acc: __m512) -> __m512 {
    unsafe {
        let blk = &src[34 * b..34 * b + 34];
        let p = blk.as_ptr().add(2);
        let t = _mm512_mul_ps(load_i8(p), _mm512_loadu_ps(px.add(32 * b)));
        let t = _mm512_fmadd_ps(load_i8(p.add(16)), _mm512_loadu_ps(px.add(32 * b + 16)), t);
        _mm512_fmadd_ps(t, _mm512_set1_ps(f16_at(blk, 0)), acc)
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_row(fmt: &Fmt<'_>, src: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    let (s, px) = (src.as_ptr(), x.as_ptr());
    unsafe {
        let v = match *fmt {
            Fmt::F32 => {
                assert!(src.len() >= 4 * n);
                dot_lanes::<F32>(s, px, n)
            }
            Fmt::BF16 => {
                assert!(src.len() >= 2 * n);
                dot_lanes::<BF16>(s, px, n)
            }
            Fmt::F16 => {
                assert!(src.len() >= 2 * n);
                dot_lanes::<F16>(s, px, n)
            }
            Fmt::Fp8 { scales, block } => {
                assert!(src.len() >= n && scales.len() >= n.div_ceil(block));
                let mut acc = _mm512_setzero_ps();
                for (j, &scale) in scales.iter().enumerate().take(n.div_ceil(block)) {
                    let len = block.min(n - j * block);
                    let part = dot_lanes::<FP8>(s.add(j * block), px.add(j * block), len);
                    acc = _mm512_fmadd_ps(part, _mm512_set1_ps(scale), acc);
                }
                acc
            }
            Fmt::Q8_0 => {
                assert!(n.is_multiple_of(32) && src.len() >= n / 32 * 34);
                // two named sums, not an array indexed by `b & 1` (which LLVM keeps on the
                // stack: a store and reload behind every block's FMA, as AVX2's Q8_0 had)
                let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
                let mut b = 0;
                while b + 2 <= n / 32 {
                    acc0 = q8_0_f32_block(src, px, b, acc0);
                    acc1 = q8_0_f32_block(src, px, b + 1, acc1);
                    b += 2;
                }
                if b < n / 32 {
                    acc0 = q8_0_f32_block(src, px, b, acc0);
                }
                _mm512_add_ps(acc0, acc1)
            }
            Fmt::Q5_0 => {
                assert!(n.is_multiple_of(32) && src.len() >= n / 32 * 22);
                let mut buf = [0f32; 32];
                let mut acc = _mm512_setzero_ps();
                for b in 0..n / 32 {
                    loader::quant::dequantize_q5_0(&src[22 * b..22 * (b + 1)], &mut buf);
                    let part = dot_lanes::<F32>(buf.as_ptr() as *const u8, px.add(32 * b), 32);
                    acc = _mm512_add_ps(acc, part);
                }
                acc
            }
            Fmt::Q4K | Fmt::Q6K => {
                let q4 = matches!(fmt, Fmt::Q4K);
                let bytes = if q4 { 144 } else { 210 };
                assert!(n.is_multiple_of(256) && src.len() >= n / 256 * bytes);
                let mut acc = [_mm512_setzero_ps(); 2];
                for b in 0..n / 256 {
                    let blk = &src[bytes * b..bytes * (b + 1)];
                    let xb = px.add(256 * b);
                    let fma = |i: usize, v: __m512| {
                        let a = &mut acc[i & 1];
                        *a = _mm512_fmadd_ps(v, _mm512_loadu_ps(xb.add(16 * i)), *a);
                    };
                    if q4 {
                        q4k_lanes(blk, fma);
                    } else {
                        q6k_lanes(blk, fma);
                    }
                }
                _mm512_add_ps(acc[0], acc[1])
            }
        };
        _mm512_reduce_add_ps(v)
    }
}

/// `R` panel rows against `T` tokens: R*T accumulators stay in registers; each step loads
/// R weight vectors and T activation vectors for R*T FMAs.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn tile<const R: usize, const T: usize>(
    w: *const f32,
    x: *const f32,
    k: usize,
) -> [[f32; T]; R] {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); T]; R];
        let mut i = 0;
        while i + 16 <= k {
            let mut xv = [_mm512_setzero_ps(); T];
            for (t, v) in xv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(x.add(t * k + i));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let wv = _mm512_loadu_ps(w.add(r * k + i));
                for (a, &v) in row.iter_mut().zip(&xv) {
                    *a = _mm512_fmadd_ps(wv, v, *a);
                }
            }
            i += 16;
        }
        if i < k {
            let m = tail_mask(k - i);
            let mut xv = [_mm512_setzero_ps(); T];
            for (t, v) in xv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(m, x.add(t * k + i));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let wv = _mm512_maskz_loadu_ps(m, w.add(r * k + i));
                for (a, &v) in row.iter_mut().zip(&xv) {
                    *a = _mm512_fmadd_ps(wv, v, *a);
                }
            }
        }
        let mut out = [[0f32; T]; R];
        for r in 0..R {
            for t in 0..T {
                out[r][t] = _mm512_reduce_add_ps(acc[r][t]);
            }
        }
        out
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn tile_into<const R: usize, const T: usize>(
    g: &GemmPanel<'_>,
    r: usize,
    t: usize,
    y: *mut f32,
) {
    let k = g.k;
    let v = unsafe { tile::<R, T>(g.panel.as_ptr().add(r * k), g.x.as_ptr().add(t * k), k) };
    for (i, row) in v.iter().enumerate() {
        for (j, &s) in row.iter().enumerate() {
            unsafe { *y.add((t + j) * g.m + g.r0 + r + i) = s };
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn gemm_panel(g: &GemmPanel<'_>, y: *mut f32) {
    let mut t = 0;
    while t < g.n {
        let tn = (g.n - t).min(4);
        let mut r = 0;
        while r < g.rows {
            let rn = (g.rows - r).min(4);
            unsafe { tile4x4!(rn, tn, tile_into(g, r, t, y)) }
            r += rn;
        }
        t += tn;
    }
}

/// `R` output rows by `C` vectors of columns starting at `c` (the last vector masked by
/// `m`): accumulators stay in registers across the whole block of keys; each key costs C
/// loads and R broadcasts for R*C FMAs.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn pv_tile<const R: usize, const C: usize>(
    b: &PvBlock<'_>,
    i0: usize,
    c: usize,
    m: __mmask16,
    out: *mut f32,
) {
    unsafe {
        let mask = |q: usize| if q + 1 == C { m } else { 0xffff };
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        for (i, a) in acc.iter_mut().enumerate() {
            for (q, v) in a.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(mask(q), out.add((i0 + i) * b.width + c + 16 * q));
            }
        }
        let pp = b.p.as_ptr().add(b.j0);
        let vp = b.v.as_ptr().add(c);
        for j in 0..b.nj {
            let mut vv = [_mm512_setzero_ps(); C];
            for (q, v) in vv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(mask(q), vp.add(j * b.ld_v + 16 * q));
            }
            for (i, a) in acc.iter_mut().enumerate() {
                let s = _mm512_set1_ps(*pp.add((i0 + i) * b.ld_p + j));
                for (x, &v) in a.iter_mut().zip(&vv) {
                    *x = _mm512_fmadd_ps(s, v, *x);
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            for (q, &v) in a.iter().enumerate() {
                _mm512_mask_storeu_ps(out.add((i0 + i) * b.width + c + 16 * q), mask(q), v);
            }
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn pv_accumulate(b: &PvBlock<'_>, out: &mut [f32]) {
    let o = out.as_mut_ptr();
    let mut i = 0;
    while i < b.n {
        let rn = (b.n - i).min(4);
        let mut c = 0;
        while c < b.width {
            let left = b.width - c;
            let (vecs, m) = if left >= 64 {
                (4, 0xffff)
            } else {
                (left.div_ceil(16), tail_mask_or_full(left % 16))
            };
            unsafe {
                match (rn, vecs) {
                    (4, 4) => pv_tile::<4, 4>(b, i, c, m, o),
                    (4, 3) => pv_tile::<4, 3>(b, i, c, m, o),
                    (4, 2) => pv_tile::<4, 2>(b, i, c, m, o),
                    (4, _) => pv_tile::<4, 1>(b, i, c, m, o),
                    (3, 4) => pv_tile::<3, 4>(b, i, c, m, o),
                    (3, 3) => pv_tile::<3, 3>(b, i, c, m, o),
                    (3, 2) => pv_tile::<3, 2>(b, i, c, m, o),
                    (3, _) => pv_tile::<3, 1>(b, i, c, m, o),
                    (2, 4) => pv_tile::<2, 4>(b, i, c, m, o),
                    (2, 3) => pv_tile::<2, 3>(b, i, c, m, o),
                    (2, 2) => pv_tile::<2, 2>(b, i, c, m, o),
                    (2, _) => pv_tile::<2, 1>(b, i, c, m, o),
                    (_, 4) => pv_tile::<1, 4>(b, i, c, m, o),
                    (_, 3) => pv_tile::<1, 3>(b, i, c, m, o),
                    (_, 2) => pv_tile::<1, 2>(b, i, c, m, o),
                    (_, _) => pv_tile::<1, 1>(b, i, c, m, o),
                }
            }
            c += 16 * vecs;
        }
        i += rn;
    }
}

/// A mask of the low `n` lanes, all 16 when `n` is 0 (a whole last vector).
fn tail_mask_or_full(n: usize) -> __mmask16 {
    if n == 0 { 0xffff } else { tail_mask(n) }
}

/// `dst` word `j * 16 + r` = word `j` of `r[r]`: a 16 x 16 transpose of 32-bit words, in
/// four rounds of shuffles (pairs of words, pairs of pairs, then 128-bit lanes twice).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn transpose_store(r: &[__m512i; 16], dst: *mut u8) {
    unsafe { transpose_store_at(r, dst, 64) }
}

/// [`transpose_store`] with the output's rows `stride` bytes apart.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn transpose_store_at(r: &[__m512i; 16], dst: *mut u8, stride: usize) {
    unsafe {
        // t: per 128-bit lane, words 0-1 or 2-3 of two rows interleaved
        let mut t = [_mm512_setzero_si512(); 16];
        for p in 0..8 {
            t[2 * p] = _mm512_unpacklo_epi32(r[2 * p], r[2 * p + 1]);
            t[2 * p + 1] = _mm512_unpackhi_epi32(r[2 * p], r[2 * p + 1]);
        }
        // u[4 g + c]: per lane L, word 4 L + c of rows 4 g .. 4 g + 4
        let mut u = [_mm512_setzero_si512(); 16];
        for g in 0..4 {
            let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
            u[4 * g] = _mm512_unpacklo_epi64(a, c);
            u[4 * g + 1] = _mm512_unpackhi_epi64(a, c);
            u[4 * g + 2] = _mm512_unpacklo_epi64(b, d);
            u[4 * g + 3] = _mm512_unpackhi_epi64(b, d);
        }
        let out = |j: usize| dst.add(j * stride) as *mut __m512i;
        for c in 0..4 {
            let v = _mm512_shuffle_i32x4::<0x88>(u[c], u[4 + c]);
            let w = _mm512_shuffle_i32x4::<0xdd>(u[c], u[4 + c]);
            let v2 = _mm512_shuffle_i32x4::<0x88>(u[8 + c], u[12 + c]);
            let w2 = _mm512_shuffle_i32x4::<0xdd>(u[8 + c], u[12 + c]);
            _mm512_storeu_si512(out(c), _mm512_shuffle_i32x4::<0x88>(v, v2));
            _mm512_storeu_si512(out(8 + c), _mm512_shuffle_i32x4::<0xdd>(v, v2));
            _mm512_storeu_si512(out(4 + c), _mm512_shuffle_i32x4::<0x88>(w, w2));
            _mm512_storeu_si512(out(12 + c), _mm512_shuffle_i32x4::<0xdd>(w, w2));
        }
    }
}

/// Values `64 chunk .. 64 chunk + 64` of 16 stored rows (Q8_0, Q4_K or Q6_K; `srcs[r]` is
/// empty for a padding row), decoded as `qpanel` stores them (value + `off`) and written
/// side by side: 1 KiB at `dst`.
///
/// # Safety
/// `dst` is valid for 1 KiB of writes; the rows hold the chunk's blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn pack_chunk(fmt: &Fmt<'_>, srcs: &[&[u8]; 16], chunk: usize, off: u8, dst: *mut u8) {
    unsafe {
        let nib = _mm256_set1_epi8(0x0f);
        let two = _mm256_set1_epi8(3);
        let join =
            |lo: __m256i, hi: __m256i| _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
        let load = |s: &[u8], at: usize, len: usize| -> __m256i {
            assert!(at + len <= s.len() && len == 32);
            _mm256_loadu_si256(s.as_ptr().add(at) as *const __m256i)
        };
        let rows: [__m512i; 16] = std::array::from_fn(|r| {
            let s = srcs[r];
            if s.is_empty() {
                return _mm512_set1_epi8(off as i8);
            }
            match fmt {
                Fmt::Q8_0 => {
                    let v = join(load(s, 68 * chunk + 2, 32), load(s, 68 * chunk + 36, 32));
                    _mm512_xor_si512(v, _mm512_set1_epi8(-128))
                }
                Fmt::Q4K => {
                    let b = load(s, 144 * (chunk / 4) + 16 + 32 * (chunk % 4), 32);
                    let lo = _mm256_and_si256(b, nib);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(b), nib);
                    join(lo, hi)
                }
                _ => {
                    // Q6_K: chunk c of a super-block is half c / 2, pieces 2 (c % 2) and
                    // 2 (c % 2) + 1: low nibbles (even c) or high nibbles (odd c) of the
                    // half's two 32-byte runs, with two high bits each from its 32 bytes
                    let (u, c) = (chunk / 4, chunk % 4);
                    let base = 210 * u;
                    let l0 = load(s, base + 64 * (c / 2), 32);
                    let l1 = load(s, base + 64 * (c / 2) + 32, 32);
                    let qh = load(s, base + 128 + 32 * (c / 2), 32);
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
                    join(
                        _mm256_or_si256(l0, _mm256_slli_epi16::<4>(h0)),
                        _mm256_or_si256(l1, _mm256_slli_epi16::<4>(h1)),
                    )
                }
            }
        });
        transpose_store(&rows, dst);
    }
}
