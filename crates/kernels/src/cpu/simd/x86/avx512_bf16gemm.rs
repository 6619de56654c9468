//! The bf16 prefill product (`simd::bf16_gemm`): stored bf16 weight rows against tokens
//! rounded to bf16, with `vdpbf16ps` (AVX-512 BF16), which multiplies 32 pairs per
//! instruction, twice the fp32 FMA's 16. The rows are read as stored: nothing is widened.

use std::arch::x86_64::*;

use super::super::{Bf16Gemm, tile4x4};
use super::avx512::{q4k_scale_min, quant_lanes, transpose_store};
use crate::cpu::simd::Fmt;
use half::f16;

const ROWS: usize = 64;
const TOKENS: usize = 128;

/// `R` rows by `T` tokens over the whole of `k`: `R + T` loads per 32 values for `R * T`
/// products; the masked last step reads zeros past `k`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")]
unsafe fn tile<const R: usize, const T: usize>(
    w: *const u16,
    ldw: usize,
    x: *const u16,
    k: usize,
) -> [[f32; T]; R] {
    unsafe {
        let load = |p: *const u16, m: __mmask32| -> __m512bh {
            std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi16(m, p as *const i16))
        };
        let mut acc = [[_mm512_setzero_ps(); T]; R];
        let mut c = 0;
        while c < k {
            let m = if k - c >= 32 {
                u32::MAX
            } else {
                (1u32 << (k - c)) - 1
            };
            let mut xv = [load(x, 0); T];
            for (j, v) in xv.iter_mut().enumerate() {
                *v = load(x.add(j * k + c), m);
            }
            for (i, a) in acc.iter_mut().enumerate() {
                let wv = load(w.add(i * ldw + c), m);
                for (s, &v) in a.iter_mut().zip(&xv) {
                    *s = _mm512_dpbf16_ps(*s, wv, v);
                }
            }
            c += 32;
        }
        // each row's T sums at once: halves added, then a tree of horizontal adds
        let mut out = [[0f32; T]; R];
        for (o, a) in out.iter_mut().zip(&acc) {
            let mut h = [_mm256_setzero_ps(); 4];
            for (h, v) in h.iter_mut().zip(a) {
                *h = _mm256_add_ps(
                    _mm512_castps512_ps256(*v),
                    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(*v))),
                );
            }
            let c = _mm256_hadd_ps(_mm256_hadd_ps(h[0], h[1]), _mm256_hadd_ps(h[2], h[3]));
            let mut s = [0f32; 4];
            _mm_storeu_ps(
                s.as_mut_ptr(),
                _mm_add_ps(_mm256_castps256_ps128(c), _mm256_extractf128_ps::<1>(c)),
            );
            o.copy_from_slice(&s[..T]);
        }
        out
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")]
unsafe fn tile_into<const R: usize, const T: usize>(
    g: &Bf16Gemm<'_>,
    r: usize,
    t: usize,
    y: *mut f32,
) {
    let ldw = g.rb / 2;
    let v = unsafe {
        tile::<R, T>(
            (g.w.as_ptr() as *const u16).add(r * ldw),
            ldw,
            g.x16.as_ptr().add(t * g.k),
            g.k,
        )
    };
    for (i, row) in v.iter().enumerate() {
        for (j, &s) in row.iter().enumerate() {
            unsafe { *y.add((t + j) * g.m + g.r0 + r + i) = s };
        }
    }
}

/// Blocks of `ROWS` rows by `TOKENS` tokens, both in L2 (256 KiB each at k = 1024); within
/// a block each tile of 4 rows stays in L1 while the block's tokens pass 4 at a time.
///
/// # Safety
/// As `simd::bf16_gemm`; the CPU has AVX-512 BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")]
pub unsafe fn bf16_gemm(g: &Bf16Gemm<'_>, y: *mut f32) {
    let mut r0 = 0;
    while r0 < g.rows {
        let rend = (r0 + ROWS).min(g.rows);
        let mut t0 = 0;
        while t0 < g.n {
            let tend = (t0 + TOKENS).min(g.n);
            let mut r = r0;
            while r < rend {
                let rn = (rend - r).min(4);
                let mut t = t0;
                while t < tend {
                    let tn = (tend - t).min(4);
                    unsafe { tile4x4!(rn, tn, tile_into(g, r, t, y)) }
                    t += tn;
                }
                r += rn;
            }
            t0 = tend;
        }
        r0 = rend;
    }
}

/// `x` rounded to bf16 (to nearest, ties to even: `vcvtneps2bf16`), appended to `out`.
///
/// # Safety
/// The CPU has AVX-512 BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")]
pub unsafe fn round_bf16(x: &[f32], out: &mut Vec<u16>) {
    let start = out.len();
    out.resize(start + x.len(), 0);
    let dst = &mut out[start..];
    let whole = x.len() / 16 * 16;
    for (d, v) in dst[..whole].chunks_exact_mut(16).zip(x.chunks_exact(16)) {
        unsafe {
            let h = _mm512_cvtneps_pbh(_mm512_loadu_ps(v.as_ptr()));
            _mm256_storeu_si256(
                d.as_mut_ptr() as *mut __m256i,
                std::mem::transmute::<__m256bh, __m256i>(h),
            );
        }
    }
    for (d, &v) in dst[whole..].iter_mut().zip(&x[whole..]) {
        *d = half::bf16::from_f32(v).to_bits();
    }
}

/// `simd::widen_bf16` for Q8_0, Q4_K and Q6_K rows: each 16 values rounded as they are
/// decoded, appended to `out`.
///
/// # Safety
/// AVX-512 BF16 is present.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")]
pub unsafe fn widen_bf16(fmt: &Fmt<'_>, src: &[u8], n: usize, out: &mut Vec<u16>) {
    let start = out.len();
    out.reserve(n);
    // SAFETY (all): `n` values are reserved past `start`; both decoders write every one of
    // them (quant_lanes asserts whole blocks), so the length covers only written values.
    unsafe {
        let o = out.as_mut_ptr().add(start);
        if matches!(fmt, Fmt::Q4K) {
            q4k_bf16(src, n, o);
        } else {
            quant_lanes(fmt, src, n, |i, v| {
                let h = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v));
                _mm256_storeu_si256(o.add(16 * i) as *mut __m256i, h)
            });
        }
        out.set_len(start + n);
    }
}

/// Q4_K rows to bf16 by table: a sub-block's 32 values take only 16 distinct values, `d *
/// sc * q - dmin * m` for the nibbles `q` 0-15 (computed as the portable decoder computes
/// them, a product then a difference, and rounded once), so each sub-block makes that
/// table of 16 bf16 and looks its 32 nibbles up with one `vpermw`. (Widening the
/// block-quantized rows value by value through f32 took 16-17% of a q4_k_m pp512 on AMX.)
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")]
unsafe fn q4k_bf16(src: &[u8], n: usize, o: *mut u16) {
    assert!(n.is_multiple_of(256) && src.len() >= n / 256 * 144);
    let iota = _mm512_setr_ps(
        0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
    );
    let low = _mm256_set1_epi8(0x0f);
    for b in 0..n / 256 {
        let blk = &src[144 * b..144 * (b + 1)];
        let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
        let dmin = f16::from_le_bytes([blk[2], blk[3]]).to_f32();
        let scales = &blk[4..16];
        for pair in 0..4 {
            // SAFETY: 32 bytes of nibbles at 16 + 32 * pair, inside the block.
            let q = unsafe { _mm256_loadu_si256(blk.as_ptr().add(16 + 32 * pair).cast()) };
            let nibbles = [
                _mm256_and_si256(q, low),
                _mm256_and_si256(_mm256_srli_epi16::<4>(q), low),
            ];
            for (half, nib) in nibbles.into_iter().enumerate() {
                let j = 2 * pair + half;
                let (sc, m) = q4k_scale_min(j, scales);
                let (ds, dm) = (d * sc, dmin * m);
                let table =
                    _mm512_sub_ps(_mm512_mul_ps(iota, _mm512_set1_ps(ds)), _mm512_set1_ps(dm));
                // SAFETY: a bit cast of 16 bf16
                let table =
                    unsafe { std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(table)) };
                // (vpermw reads the table's low 16 words only)
                let table = _mm512_castsi256_si512(table);
                let v = _mm512_permutexvar_epi16(_mm512_cvtepu8_epi16(nib), table);
                // SAFETY: values 256 b + 32 j .. + 32 are within the n the caller reserved.
                unsafe { _mm512_storeu_si512(o.add(256 * b + 32 * j).cast(), v) };
            }
        }
    }
}

/// `simd::amx_pack_acts`: per tile of 16 tokens and 16 column pairs, each token's 32 values
/// rounded in one `vcvtne2ps2bf16` and the 16 x 16 pairs transposed into 1 KiB.
///
/// # Safety
/// AVX-512 BF16 is present; `out` holds `n.div_ceil(16) * 16 * k` values (all written), `k`
/// is a multiple of 32 and `x` is `n` rows of `k`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")]
pub unsafe fn amx_pack_acts(x: &[f32], k: usize, out: &mut [u16]) {
    let n = x.len() / k;
    debug_assert!(k.is_multiple_of(32) && out.len() >= n.div_ceil(16) * 16 * k);
    for b in 0..n.div_ceil(16) {
        let tokens = (n - 16 * b).min(16);
        for p0 in (0..k / 2).step_by(16) {
            let mut r = [_mm512_setzero_si512(); 16];
            for (t, row) in r.iter_mut().enumerate().take(tokens) {
                unsafe {
                    let src = x.as_ptr().add((16 * b + t) * k + 2 * p0);
                    let lo = _mm512_loadu_ps(src);
                    let hi = _mm512_loadu_ps(src.add(16));
                    *row = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
                }
            }
            // SAFETY: the tile's 16 pairs of 16 tokens are 1 KiB within `out`.
            unsafe { transpose_store(&r, out.as_mut_ptr().add(b * 16 * k + 32 * p0).cast()) };
        }
    }
}

/// `simd::amx_pack_probs`: per head tile, 16 positions' 16 lanes at a time transposed (as
/// 32-bit words, through 1 KiB in L1) into 16 rows of 16 positions, each row rounded in one
/// `vcvtneps2bf16` (to nearest even, as the scalar rounding: probabilities are finite).
/// (Rounded a position at a time and scattered to the 16 rows one value at a time, this
/// was 5% of a decode step's attention at depth.)
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")]
pub unsafe fn amx_pack_probs(p: &[f32], lanes: usize, rows: usize, nj: usize, p16: &mut [u16]) {
    let kpos = nj.next_multiple_of(32);
    let mut t = [[0f32; 16]; 16];
    // SAFETY (below): the wrapper checked the buffers' sizes; position j's lanes are
    // p[j * lanes..], read only for j < nj.
    unsafe {
        for ht in 0..rows / 16 {
            let dst = p16.as_mut_ptr().add(ht * 16 * kpos);
            for j0 in (0..kpos).step_by(16) {
                let r: [__m512i; 16] = std::array::from_fn(|j| {
                    if j0 + j < nj {
                        _mm512_loadu_si512(p.as_ptr().add((j0 + j) * lanes + 16 * ht).cast())
                    } else {
                        _mm512_setzero_si512()
                    }
                });
                transpose_store(&r, t.as_mut_ptr().cast());
                for (i, lane) in t.iter().enumerate() {
                    let v = _mm512_cvtneps_pbh(_mm512_loadu_ps(lane.as_ptr()));
                    _mm256_storeu_si256(
                        dst.add(i * kpos + j0).cast(),
                        std::mem::transmute::<__m256bh, __m256i>(v),
                    );
                }
            }
        }
    }
}

/// `simd::q8_rows_to_bf16`: per Q8_0 block, its 32 codes widened to f32 in two halves,
/// times the block's scale, rounded to bf16 in one `vcvtne2ps2bf16` (to nearest even, as
/// the scalar reader rounds).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,f16c")]
pub unsafe fn q8_rows_to_bf16(f: &crate::kv_q8::Q8Rows<'_>, offs: &[usize], out: &mut [u16]) {
    use crate::kv_q8::{BLOCK, BLOCK_BYTES, blocks, rope_offset, row_bytes};
    let (r, p) = (f.r, f.p);
    let (ro, nb, rb) = (rope_offset(r), blocks(r), row_bytes(r, p));
    // rows fetched this many ahead: a tile's rows need not be contiguous
    const AHEAD: usize = 6;
    // SAFETY (all): the wrapper checked every row's bytes and out's length.
    unsafe {
        for (i, (&o, dst)) in offs.iter().zip(out.chunks_exact_mut(r + p)).enumerate() {
            let row = f.bytes.as_ptr().add(f.byte_offset(o));
            if let Some(&ahead) = offs.get(i + AHEAD) {
                let at = f.bytes.as_ptr().add(f.byte_offset(ahead));
                for l in (0..rb).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(at.add(l).cast());
                }
            }
            let out16 = dst.as_mut_ptr();
            for b in 0..nb {
                let blk = row.add(b * BLOCK_BYTES);
                let d = crate::kv_q8::scale(std::slice::from_raw_parts(blk, 2));
                let scale = _mm512_set1_ps(d);
                let q = blk.add(2);
                let n = BLOCK.min(r - b * BLOCK);
                if n == BLOCK {
                    let lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q.cast())));
                    let hi =
                        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q.add(16).cast())));
                    let v = _mm512_cvtne2ps_pbh(_mm512_mul_ps(hi, scale), _mm512_mul_ps(lo, scale));
                    _mm512_storeu_si512(
                        out16.add(b * BLOCK).cast(),
                        std::mem::transmute::<__m512bh, __m512i>(v),
                    );
                } else {
                    for j in 0..n {
                        *out16.add(b * BLOCK + j) = crate::kv_q8::code_to_bf16(*q.add(j), d);
                    }
                }
            }
            std::ptr::copy_nonoverlapping(row.add(ro), out16.add(r).cast::<u8>(), 2 * p);
        }
    }
}
