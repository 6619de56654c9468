//! AVX-512 BW int8 dot products of block-quantized weight rows with quantized activations
//! (`QRow`): weights unpack to bytes, `vpmaddubsw` multiplies unsigned weight bytes by
//! signed activation bytes into i16 pairs, and `vpmaddwd` applies the per-sub-block scales
//! while widening to i32. Each block's integer sum is exact; f32 enters once per block.

use std::arch::x86_64::*;

use super::super::{Fmt, QRow, portable};

/// An f16 bit pattern to f32 (F16C).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn f16c(b: &[u8], i: usize) -> f32 {
    let h = u16::from_le_bytes([b[i], b[i + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

/// 32 i16 lanes picking, from a vector of 8 or 16 i16 scales, scale `first + lane / per`.
const fn scale_index(first: i16, per: i16) -> [i16; 32] {
    let mut idx = [0i16; 32];
    let mut i = 0;
    while i < 32 {
        idx[i] = first + i as i16 / per;
        i += 1;
    }
    idx
}

/// Q4_K: 64 weights per step are one 32-byte load (low nibbles, then high nibbles, which
/// are sub-blocks 2c and 2c+1: 16 i16 pair-lanes each).
const Q4K_IDX: [[i16; 32]; 4] = [
    scale_index(0, 16),
    scale_index(2, 16),
    scale_index(4, 16),
    scale_index(6, 16),
];
/// Q6_K: 64 weights per step cover four 16-weight scale groups (8 i16 pair-lanes each).
const Q6K_IDX: [[i16; 32]; 4] = [
    scale_index(0, 8),
    scale_index(4, 8),
    scale_index(8, 8),
    scale_index(12, 8),
];

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn load_idx(idx: &[i16; 32]) -> __m512i {
    unsafe { _mm512_loadu_si512(idx.as_ptr() as *const __m512i) }
}

/// The eight 6-bit scales and eight 6-bit mins of a Q4_K block's 12 scale bytes, as the
/// bytes of two u64 (see `loader::quant::q4k_scale_min` for the packing).
#[inline(always)]
fn q4k_scales_mins(s: &[u8]) -> (u64, u64) {
    let w = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (w0, w1, w2) = (w(0), w(1), w(2));
    let low6 = 0x3f3f_3f3f;
    let sc_lo = w0 & low6;
    let m_lo = w1 & low6;
    let sc_hi = (w2 & 0x0f0f_0f0f) | (((w0 >> 6) & 0x0303_0303) << 4);
    let m_hi = ((w2 >> 4) & 0x0f0f_0f0f) | (((w1 >> 6) & 0x0303_0303) << 4);
    (
        sc_lo as u64 | (sc_hi as u64) << 32,
        m_lo as u64 | (m_hi as u64) << 32,
    )
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_row_q_bw(fmt: &Fmt<'_>, src: &[u8], a: &QRow<'_>) -> f32 {
    unsafe { dot_row_q::<false>(fmt, src, a) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_row_q_vnni(fmt: &Fmt<'_>, src: &[u8], a: &QRow<'_>) -> f32 {
    unsafe { dot_row_q::<true>(fmt, src, a) }
}

/// The bodies below are `inline(always)` and generic over VNNI, so each entry point above
/// compiles them with its own target features.
#[inline(always)]
unsafe fn dot_row_q<const VNNI: bool>(fmt: &Fmt<'_>, src: &[u8], a: &QRow<'_>) -> f32 {
    unsafe {
        match fmt {
            Fmt::Q8_0 => dot_q8_0::<VNNI>(src, a),
            Fmt::Q5_0 => dot_q5_0::<VNNI>(src, a),
            Fmt::Q4K => dot_q4k::<VNNI>(src, a),
            Fmt::Q6K => dot_q6k::<VNNI>(src, a),
            _ => portable::dot_row_q(fmt, src, a),
        }
    }
}

/// `acc + Σ` of each 4 adjacent products `u[i] * s[i]` (unsigned times signed bytes).
#[inline(always)]
unsafe fn dot_u8i8<const VNNI: bool>(acc: __m512i, u: __m512i, s: __m512i) -> __m512i {
    unsafe {
        if VNNI {
            _mm512_dpbusd_epi32(acc, u, s)
        } else {
            let p = _mm512_maddubs_epi16(u, s);
            _mm512_add_epi32(acc, _mm512_madd_epi16(p, _mm512_set1_epi16(1)))
        }
    }
}

#[inline(always)]
unsafe fn dot_u8i8_256<const VNNI: bool>(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    unsafe {
        if VNNI {
            _mm256_dpbusd_epi32(acc, u, s)
        } else {
            let p = _mm256_maddubs_epi16(u, s);
            _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
        }
    }
}

/// `acc + Σ` of each 2 adjacent products of i16 lanes.
#[inline(always)]
unsafe fn dot_i16<const VNNI: bool>(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    unsafe {
        if VNNI {
            _mm512_dpwssd_epi32(acc, a, b)
        } else {
            _mm512_add_epi32(acc, _mm512_madd_epi16(a, b))
        }
    }
}

/// Q8_0 weights are signed, so the sign moves to the activation side: |w| (as unsigned,
/// exact even for -128) times sign(w)·x (|x| <= 127, so negation is exact). Two blocks per
/// 512-bit step, each half scaled by its own block's scales.
#[inline(always)]
unsafe fn dot_q8_0<const VNNI: bool>(src: &[u8], a: &QRow<'_>) -> f32 {
    let blocks = a.d.len();
    assert!(src.len() >= 34 * blocks && a.qs.len() >= 32 * blocks);
    unsafe {
        let zero = _mm512_setzero_si512();
        // lanes 0-7 take the first block's scale, 8-15 the second's
        let halves = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        let mut acc = [_mm512_setzero_ps(); 2];
        let (w, x) = (src.as_ptr(), a.qs.as_ptr());
        let mut b = 0;
        while b + 2 <= blocks {
            let lo = _mm256_loadu_si256(w.add(34 * b + 2) as *const __m256i);
            let hi = _mm256_loadu_si256(w.add(34 * b + 36) as *const __m256i);
            let wv = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
            let xv = _mm512_loadu_si512(x.add(32 * b) as *const __m512i);
            let xs = _mm512_mask_sub_epi8(xv, _mm512_movepi8_mask(wv), zero, xv);
            let p = dot_u8i8::<VNNI>(zero, _mm512_abs_epi8(wv), xs);
            let d0 = u16::from_le_bytes([src[34 * b], src[34 * b + 1]]);
            let d1 = u16::from_le_bytes([src[34 * b + 34], src[34 * b + 35]]);
            let dw = _mm_cvtph_ps(_mm_cvtsi32_si128((d0 as u32 | (d1 as u32) << 16) as i32));
            let da = _mm_castpd_ps(_mm_load_sd(a.d.as_ptr().add(b) as *const f64));
            let s = _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(_mm_mul_ps(dw, da)));
            let acc = &mut acc[(b / 2) & 1];
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), s, *acc);
            b += 2;
        }
        let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
        if b < blocks {
            let wv = _mm256_loadu_si256(w.add(34 * b + 2) as *const __m256i);
            let xv = _mm256_loadu_si256(x.add(32 * b) as *const __m256i);
            let neg = _mm256_movepi8_mask(wv);
            let xs = _mm256_mask_sub_epi8(xv, neg, _mm256_setzero_si256(), xv);
            let p = dot_u8i8_256::<VNNI>(_mm256_setzero_si256(), _mm256_abs_epi8(wv), xs);
            sum += hsum256(_mm256_cvtepi32_ps(p)) * (f16c(src, 34 * b) * a.d[b]);
        }
        sum
    }
}

/// Q5_0: the low nibbles then the high nibbles of 16 bytes, the fifth bits from a mask;
/// the stored quants are q + 16, so 16 · (sum of the block's activations) comes off.
#[inline(always)]
unsafe fn dot_q5_0<const VNNI: bool>(src: &[u8], a: &QRow<'_>) -> f32 {
    unsafe {
        let blocks = a.d.len();
        assert!(src.len() >= 22 * blocks && a.qs.len() >= 32 * blocks && a.bsums.len() >= blocks);
        let nib = _mm256_set1_epi8(0x0f);
        let bit5 = _mm256_set1_epi8(0x10);
        let mut acc = _mm256_setzero_ps();
        let mut off = 0f32;
        {
            let x = a.qs.as_ptr();
            for b in 0..blocks {
                let blk = &src[22 * b..22 * b + 22];
                let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                let q = _mm_loadu_si128(blk.as_ptr().add(6) as *const __m128i);
                let q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(q), q), nib);
                let q = _mm256_mask_add_epi8(q, qh, q, bit5);
                let xv = _mm256_loadu_si256(x.add(32 * b) as *const __m256i);
                let p = dot_u8i8_256::<VNNI>(_mm256_setzero_si256(), q, xv);
                let scale = f16c(blk, 0) * a.d[b];
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(scale), acc);
                off += scale * a.bsums[b] as f32;
            }
            hsum256(acc) - 16.0 * off
        }
    }
}

#[inline(always)]
unsafe fn dot_q4k<const VNNI: bool>(src: &[u8], a: &QRow<'_>) -> f32 {
    unsafe {
        let blocks = a.d.len();
        assert!(
            src.len() >= 144 * blocks && a.qs.len() >= 256 * blocks && a.bsums.len() >= 16 * blocks
        );
        let nib = _mm512_set1_epi8(0x0f);
        // the upper 256 bits of each step take the high nibbles
        let shift = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(4));
        let idx = Q4K_IDX.map(|i| load_idx(&i));
        let mut acc = _mm512_setzero_ps();
        let mut acc_min = _mm_setzero_ps();
        {
            let x = a.qs.as_ptr();
            for b in 0..blocks {
                let blk = &src[144 * b..144 * b + 144];
                let (scales, mins) = q4k_scales_mins(&blk[4..16]);
                let sc =
                    _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(scales as i64)));
                let mut isum = _mm512_setzero_si512();
                for (c, idx) in idx.iter().enumerate() {
                    let q = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                        blk.as_ptr().add(16 + 32 * c) as *const __m256i,
                    ));
                    let q = _mm512_and_si512(_mm512_srlv_epi16(q, shift), nib);
                    let xv = _mm512_loadu_si512(x.add(256 * b + 64 * c) as *const __m512i);
                    let p = _mm512_maddubs_epi16(q, xv);
                    let s = _mm512_permutexvar_epi16(*idx, sc);
                    isum = dot_i16::<VNNI>(isum, p, s);
                }
                // Σ_j min_j · (sum of the activations of sub-block j)
                let bs = _mm256_loadu_si256(a.bsums.as_ptr().add(16 * b) as *const __m256i);
                let b32 = _mm_hadd_epi16(
                    _mm256_castsi256_si128(bs),
                    _mm256_extracti128_si256::<1>(bs),
                );
                let m16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(mins as i64));
                let im = _mm_madd_epi16(m16, b32);
                let da = a.d[b];
                acc = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(isum),
                    _mm512_set1_ps(f16c(blk, 0) * da),
                    acc,
                );
                acc_min =
                    _mm_fmadd_ps(_mm_cvtepi32_ps(im), _mm_set1_ps(f16c(blk, 2) * da), acc_min);
            }
            _mm512_reduce_add_ps(acc) - hsum128(acc_min)
        }
    }
}

#[inline(always)]
unsafe fn dot_q6k<const VNNI: bool>(src: &[u8], a: &QRow<'_>) -> f32 {
    unsafe {
        let blocks = a.d.len();
        assert!(
            src.len() >= 210 * blocks && a.qs.len() >= 256 * blocks && a.bsums.len() >= 16 * blocks
        );
        let nib = _mm512_set1_epi8(0x0f);
        let top = _mm512_set1_epi8(0x30);
        // the upper 256 bits take qh's bits 2-3 and 6-7
        let shift = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(2));
        let idx = Q6K_IDX.map(|i| load_idx(&i));
        let mut acc = _mm512_setzero_ps();
        {
            let x = a.qs.as_ptr();
            for b in 0..blocks {
                let blk = &src[210 * b..210 * b + 210];
                let p = blk.as_ptr();
                let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(192) as *const __m128i));
                let sc = _mm512_castsi256_si512(sc16);
                let mut isum = _mm512_setzero_si512();
                for h in 0..2 {
                    let ql = _mm512_loadu_si512(p.add(64 * h) as *const __m512i);
                    let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                        p.add(128 + 32 * h) as *const __m256i
                    ));
                    let qh = _mm512_srlv_epi16(qh, shift);
                    let lo = _mm512_or_si512(
                        _mm512_and_si512(ql, nib),
                        _mm512_and_si512(_mm512_slli_epi16::<4>(qh), top),
                    );
                    let hi = _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16::<4>(ql), nib),
                        _mm512_and_si512(qh, top),
                    );
                    for (k, q) in [lo, hi].into_iter().enumerate() {
                        let xv =
                            _mm512_loadu_si512(x.add(256 * b + 128 * h + 64 * k) as *const __m512i);
                        let s = _mm512_permutexvar_epi16(idx[2 * h + k], sc);
                        isum = _mm512_add_epi32(
                            isum,
                            _mm512_madd_epi16(_mm512_maddubs_epi16(q, xv), s),
                        );
                    }
                }
                // the stored quants are q + 32: subtract 32 · Σ_g scale_g · (sum of group g)
                let bs = _mm256_loadu_si256(a.bsums.as_ptr().add(16 * b) as *const __m256i);
                let off = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, bs));
                isum = _mm512_sub_epi32(isum, _mm512_zextsi256_si512(off));
                acc = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(isum),
                    _mm512_set1_ps(f16c(blk, 208) * a.d[b]),
                    acc,
                );
            }
            _mm512_reduce_add_ps(acc)
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn hsum128(v: __m128) -> f32 {
    let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn hsum256(v: __m256) -> f32 {
    hsum128(_mm_add_ps(
        _mm256_castps256_ps128(v),
        _mm256_extractf128_ps::<1>(v),
    ))
}
