//! AVX-512 decode rows for the formats whose rows have no int8 product: one activation row
//! against a run of weight rows, four rows per pass from four streams (rows i, q + i,
//! 2q + i, 3q + i of the run): bf16 (against the activations' even/odd pairs), f32 and f16, and FP8 e4m3 with block scales.

use std::arch::x86_64::*;

use super::super::Fp8Run;
use super::avx512::{BF16, F16, F32, dot_lanes, load, size_of_kind, tail_mask};
use super::four_streams;

/// `out[j] = row j · x` for the bf16 rows stored `rb` bytes apart from `src`, four at a time
/// from four streams (rows i, q + i, 2q + i, 3q + i), as AVX2's kernel takes them: each load
/// of `pairs` serves four rows, and the four rows' lines are in flight together. A row at a
/// time, in the same order, read 21-27 GB/s on Zen 4 where Q8_0's streams read 35.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_rows_bf16_pairs(
    src: &[u8],
    rb: usize,
    x: &[f32],
    pairs: &[f32],
    out: &mut [f32],
) {
    let (n, k) = (out.len(), x.len());
    let full = k / 32 * 32;
    if n == 0 {
        return;
    }
    assert!(rb >= 2 * k && src.len() >= (n - 1) * rb + 2 * k && pairs.len() >= full);
    let q = n.div_ceil(4);
    let p = pairs.as_ptr();
    unsafe {
        let high = _mm512_set1_epi32(0xffff_0000u32 as i32);
        for i in 0..q {
            let w = four_streams(n, i).map(|r| src.as_ptr().add(r * rb));
            let mut acc = [[_mm512_setzero_ps(); 2]; 4];
            let mut c = 0;
            while c < full {
                let (pe, po) = (_mm512_loadu_ps(p.add(c)), _mm512_loadu_ps(p.add(c + 16)));
                for (a, &w) in acc.iter_mut().zip(&w) {
                    super::prefetch_ahead(w.add(2 * c), 64);
                    let v = _mm512_loadu_si512(w.add(2 * c) as *const _);
                    let even = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v));
                    let odd = _mm512_castsi512_ps(_mm512_and_si512(v, high));
                    a[0] = _mm512_fmadd_ps(even, pe, a[0]);
                    a[1] = _mm512_fmadd_ps(odd, po, a[1]);
                }
                c += 32;
            }
            for (s, (a, &w)) in acc.iter().zip(&w).enumerate() {
                let r = s * q + i;
                if r >= n {
                    continue;
                }
                let mut v = _mm512_add_ps(a[0], a[1]);
                if full < k {
                    v = _mm512_add_ps(
                        v,
                        dot_lanes::<BF16>(w.add(2 * full), x.as_ptr().add(full), k - full),
                    );
                }
                out[r] = _mm512_reduce_add_ps(v);
            }
        }
    }
}

/// `out[j] = row j · x` for f32 or f16 rows (`K`) stored `rb` bytes apart from `src`, four
/// at a time from four streams (rows i, q + i, 2q + i, 3q + i), as the other formats' rows:
/// each load of x serves four rows. (A row at a time, the router's f32 rows read 14-19 GB/s
/// in a decode step where the bf16 and block formats' rows read 27-47.)
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_rows_wide<const K: u8>(src: &[u8], rb: usize, x: &[f32], out: &mut [f32]) {
    let (n, k) = (out.len(), x.len());
    let size = size_of_kind(K);
    if n == 0 {
        return;
    }
    assert!(rb >= size * k && src.len() >= (n - 1) * rb + size * k);
    let q = n.div_ceil(4);
    let px = x.as_ptr();
    unsafe {
        for i in 0..q {
            let w = four_streams(n, i).map(|r| src.as_ptr().add(r * rb));
            let mut acc = [_mm512_setzero_ps(); 4];
            let mut c = 0;
            while c + 16 <= k {
                let xv = _mm512_loadu_ps(px.add(c));
                for (a, &w) in acc.iter_mut().zip(&w) {
                    super::prefetch_ahead(w.add(c * size), 16 * size);
                    *a = _mm512_fmadd_ps(load::<K>(w.add(c * size), None), xv, *a);
                }
                c += 16;
            }
            if c < k {
                let m = tail_mask(k - c);
                let xv = _mm512_maskz_loadu_ps(m, px.add(c));
                for (a, &w) in acc.iter_mut().zip(&w) {
                    *a = _mm512_fmadd_ps(load::<K>(w.add(c * size), Some(m)), xv, *a);
                }
            }
            for (s, a) in acc.iter().enumerate() {
                let r = s * q + i;
                if r < n {
                    out[r] = _mm512_reduce_add_ps(*a);
                }
            }
        }
    }
}

/// [`dot_rows_wide`] for f32 rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_rows_f32(src: &[u8], rb: usize, x: &[f32], out: &mut [f32]) {
    unsafe { dot_rows_wide::<F32>(src, rb, x, out) }
}

/// [`dot_rows_wide`] for f16 rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_rows_f16(src: &[u8], rb: usize, x: &[f32], out: &mut [f32]) {
    unsafe { dot_rows_wide::<F16>(src, rb, x, out) }
}

/// 16 e4m3 codes to f32 lanes at 2^-8 of their value: each code's sign and magnitude bits
/// put where an f16's go, which `vcvtph2ps` widens exactly (an e4m3 subnormal is an f16
/// normal); the caller's block scales carry the 2^8. Four operations per 16 weights, three
/// on 256 bits, where `fp8_lanes` takes seven on 512.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn fp8_f16_lanes(b: __m128i) -> __m512 {
    // sign-extended, shifted: the sign lands in bit 15 (and 14, cleared), the magnitude in 7-13
    let h = _mm256_slli_epi16::<7>(_mm256_cvtepi8_epi16(b));
    _mm512_cvtph_ps(_mm256_and_si256(h, _mm256_set1_epi16(0xbf80u16 as i16)))
}

/// `out[j] = row j · x` over a run of FP8 rows with block scales (`block[1]` a multiple of
/// 16), four at a time from four streams (rows i, q + i, 2q + i, 3q + i): each load of x
/// serves four rows, and a row's sum over a scale block is scaled once. The row-at-a-time
/// kernel restarted its four accumulators and widened with seven operations per 16 weights.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_rows_fp8(run: &Fp8Run<'_>, x: &[f32], out: &mut [f32]) {
    let (n, k) = (out.len(), x.len());
    let bc = run.block[1];
    if n == 0 {
        return;
    }
    assert!(bc.is_multiple_of(16) && run.bytes.len() >= (n - 1) * run.rb + k);
    let q = n.div_ceil(4);
    let px = x.as_ptr();
    unsafe {
        for i in 0..q {
            let rows = four_streams(n, i);
            let w = rows.map(|r| run.bytes.as_ptr().add(r * run.rb));
            let sc = rows.map(|r| run.scales(r).as_ptr());
            let mut acc = [_mm512_setzero_ps(); 4];
            let mut c0 = 0;
            let mut b = 0;
            while c0 < k {
                let end = (c0 + bc).min(k);
                let mut part = [_mm512_setzero_ps(); 4];
                for &w in &w {
                    super::prefetch_ahead(w.add(c0), bc);
                }
                let mut c = c0;
                while c + 16 <= end {
                    let xv = _mm512_loadu_ps(px.add(c));
                    for (a, &w) in part.iter_mut().zip(&w) {
                        let v = fp8_f16_lanes(_mm_loadu_si128(w.add(c) as *const __m128i));
                        *a = _mm512_fmadd_ps(v, xv, *a);
                    }
                    c += 16;
                }
                if c < end {
                    let m = tail_mask(end - c);
                    let xv = _mm512_maskz_loadu_ps(m, px.add(c));
                    for (a, &w) in part.iter_mut().zip(&w) {
                        let v = fp8_f16_lanes(_mm_maskz_loadu_epi8(m, w.add(c) as *const i8));
                        *a = _mm512_fmadd_ps(v, xv, *a);
                    }
                }
                for s in 0..4 {
                    let scale = _mm512_set1_ps(*sc[s].add(b) * 256.0);
                    acc[s] = _mm512_fmadd_ps(part[s], scale, acc[s]);
                }
                c0 = end;
                b += 1;
            }
            for (s, a) in acc.iter().enumerate() {
                let r = s * q + i;
                if r < n {
                    out[r] = _mm512_reduce_add_ps(*a);
                }
            }
        }
    }
}
