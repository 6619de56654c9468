//! AVX2 int8 dot products of block-quantized weight rows with quantized activations
//! (`QRow`), for CPUs without AVX-512 (Zen 3, older Xeons): `vpmaddubsw` multiplies
//! unsigned weight bytes by signed activation bytes into i16 pairs, `vpmaddwd` widens them
//! to i32 (by ones, or by the K-quants' per-sub-block scales in the same instruction).
//! Each block's integer sum is exact; f32 enters once per block, as in the AVX-512 kernels.
//!
//! The autovectorised portable bodies these replace unpacked every weight to a byte array
//! first and summed products in i32 a lane at a time.

use std::arch::x86_64::*;

use super::avx512_int8::f16_at;
use super::prefetch_ahead;

use super::super::{Fmt, QRow, portable};

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_row_q(fmt: &Fmt<'_>, src: &[u8], a: &QRow<'_>) -> f32 {
    match fmt {
        Fmt::Q8_0 | Fmt::Q5_0 | Fmt::Q4K | Fmt::Q6K => {
            let mut out = [0f32];
            // one row as a run of one (the run kernel checks the bounds)
            unsafe { rows(fmt, src, src.len(), a, &mut out) };
            out[0]
        }
        _ => portable::dot_row_q(fmt, src, a),
    }
}

/// `out[j] = row j · a` for the rows stored `rb` bytes apart from `src` (see
/// `simd::dot_rows_q`).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_rows_q(fmt: &Fmt<'_>, src: &[u8], rb: usize, a: &QRow<'_>, out: &mut [f32]) {
    unsafe { rows(fmt, src, rb, a, out) }
}

/// Four streams (rows i, q + i, 2q + i, 3q + i of the run; see `avx512_int8::dot_rows_q`
/// for why streams, not adjacent rows), a block of each in turn, one horizontal sum for the
/// four. The four streams then advance together, each with its lines asked for ahead, so
/// four times the bytes are on their way while the arithmetic runs. (One whole row of each
/// in turn, as the AVX-512 K-quant kernels took them until 2026-11-29, left a Zen 3 core stalled on memory
/// and then computing: Q6_K from memory at about the rate that a read at full speed and
/// the arithmetic from cache give when one waits for the other. Block by block, decode
/// steps alternated within one run took a median of 0.97 of the time for q4_k_m (24
/// comparisons) and 0.95 for q8_0 (12); 8192x4096 Q6_K from memory 0.83.)
#[inline(always)]
unsafe fn rows(fmt: &Fmt<'_>, src: &[u8], rb: usize, a: &QRow<'_>, out: &mut [f32]) {
    let n = out.len();
    let blocks = a.d.len();
    // bytes, activations and activation sums (the K-quants' only) per block
    let (per, block, sums) = match fmt {
        Fmt::Q8_0 => (34, 32, 0),
        Fmt::Q5_0 => (22, 32, 1),
        Fmt::Q4K => (144, 256, 16),
        Fmt::Q6K => (210, 256, 16),
        _ => {
            for (j, o) in out.iter_mut().enumerate() {
                *o = portable::dot_row_q(fmt, &src[j * rb..(j + 1) * rb], a);
            }
            return;
        }
    };
    if n == 0 {
        return;
    }
    assert!(rb >= per * blocks && src.len() >= (n - 1) * rb + per * blocks);
    assert!(a.qs.len() >= blocks * block && a.bsums.len() >= blocks * sums);
    if n >= 8 && blocks * block <= if block == 256 { 512 } else { 128 } {
        // SAFETY: the bounds were asserted above.
        unsafe { short_rows(fmt, src, rb, a, out) };
        return;
    }
    if n < 4 {
        // (a whole step of four streams would repeat a row)
        for (j, o) in out.iter_mut().enumerate() {
            // SAFETY: row j lies within src (asserted above).
            let acc = unsafe {
                let w = src.as_ptr().add(j * rb);
                match fmt {
                    Fmt::Q8_0 => q8_0_acc(w, a, blocks),
                    Fmt::Q5_0 => q5_0_acc(w, a, blocks),
                    Fmt::Q4K => q4k_acc(w, a, blocks),
                    _ => q6k_acc(w, a, blocks),
                }
            };
            *o = unsafe { super::avx2_attention::hsum(acc) };
        }
        return;
    }
    let q = n.div_ceil(4);
    for i in 0..q {
        // a stream past the run's end repeats row i (its sum is dropped)
        let mut w = [src.as_ptr(); 4];
        for (s, w) in w.iter_mut().enumerate() {
            let r = if s * q + i < n { s * q + i } else { i };
            // SAFETY: row r lies within src (asserted above).
            *w = unsafe { src.as_ptr().add(r * rb) };
        }
        // SAFETY: as above.
        let acc = unsafe {
            match fmt {
                Fmt::Q8_0 => small_x4::<false>(w, a, blocks),
                Fmt::Q5_0 => small_x4::<true>(w, a, blocks),
                Fmt::Q4K => q4k_x4(w, a, blocks),
                _ => q6k_x4(w, a, blocks),
            }
        };
        let mut s4 = [0f32; 4];
        unsafe { _mm_storeu_ps(s4.as_mut_ptr(), hsum4(acc)) };
        for (s, &v) in s4.iter().enumerate() {
            if s * q + i < n {
                out[s * q + i] = v;
            }
        }
    }
}

/// Q8_0 (or, with `Q5`, Q5_0) over four rows, a block of each in turn (see [`rows`]), the
/// lines of two blocks (four) asked for at a time.
#[inline(always)]
unsafe fn small_x4<const Q5: bool>(w: [*const u8; 4], a: &QRow<'_>, blocks: usize) -> [__m256; 4] {
    let (per, every) = if Q5 { (22, 4) } else { (34, 2) };
    unsafe {
        let k = Q5Consts::new();
        let mut acc = [_mm256_setzero_ps(); 4];
        for b in 0..blocks {
            for (acc, &w) in acc.iter_mut().zip(&w) {
                if b % every == 0 {
                    prefetch_ahead(w.add(per * b), per * every);
                }
                *acc = if Q5 {
                    q5_0_block(w, a, b, &k, *acc)
                } else {
                    q8_0_block(w, a, b, *acc)
                };
            }
        }
        acc
    }
}

/// Q4_K over four rows, a block of each in turn.
#[inline(always)]
unsafe fn q4k_x4(w: [*const u8; 4], a: &QRow<'_>, blocks: usize) -> [__m256; 4] {
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        for b in 0..blocks {
            for (acc, &w) in acc.iter_mut().zip(&w) {
                *acc = q4k_block(w, a, b, *acc);
            }
        }
        // (a loop, not `map`: a closure would not inherit the target features)
        let mut out = [_mm256_setzero_ps(); 4];
        for (o, [v, m]) in out.iter_mut().zip(acc) {
            *o = _mm256_sub_ps(v, m);
        }
        out
    }
}

/// Q6_K over four rows, a block of each in turn.
#[inline(always)]
unsafe fn q6k_x4(w: [*const u8; 4], a: &QRow<'_>, blocks: usize) -> [__m256; 4] {
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 4];
        for b in 0..blocks {
            for (acc, &w) in acc.iter_mut().zip(&w) {
                *acc = q6k_block(w, a, b, *acc);
            }
        }
        acc
    }
}

/// Short rows (up to four Q8_0 or Q5_0 blocks: MLA's per-head `attn_k_b` is 64 values a
/// row; up to two K-quant blocks: `attn_v_b` and the experts' down projections of our
/// mid-size model are 512) in groups of eight adjacent ones, one horizontal sum for the
/// eight. One row at a time from each of four streams spent more on the loop, the sums and
/// the stores than on the row: `attn_k_b` ran at 4-6 GB/s, a twentieth of a q4_k_m decode
/// step. Adjacent short rows are one stream, which the prefetchers follow. Timed in a
/// decode against the gate and up products of the same steps: q4_k_m's down products took
/// 0.95 of their time, six runs alternating; q8_0's, with 16-block rows here too, 1.5, so
/// longer rows keep the four streams.
#[inline(always)]
unsafe fn short_rows(fmt: &Fmt<'_>, src: &[u8], rb: usize, a: &QRow<'_>, out: &mut [f32]) {
    unsafe {
        let n = out.len();
        let blocks = a.d.len();
        let k = Q5Consts::new();
        // whole groups of eight Q8_0 or Q5_0 rows, unrolled by their count of blocks
        let dst = &mut out[..n / 8 * 8];
        let mut g = match (fmt, blocks) {
            (Fmt::Q8_0, 1) => eight_rows::<1, false>(src, rb, a, &k, dst),
            (Fmt::Q8_0, 2) => eight_rows::<2, false>(src, rb, a, &k, dst),
            (Fmt::Q8_0, 3) => eight_rows::<3, false>(src, rb, a, &k, dst),
            (Fmt::Q8_0, 4) => eight_rows::<4, false>(src, rb, a, &k, dst),
            (Fmt::Q5_0, 1) => eight_rows::<1, true>(src, rb, a, &k, dst),
            (Fmt::Q5_0, 2) => eight_rows::<2, true>(src, rb, a, &k, dst),
            (Fmt::Q5_0, 3) => eight_rows::<3, true>(src, rb, a, &k, dst),
            (Fmt::Q5_0, 4) => eight_rows::<4, true>(src, rb, a, &k, dst),
            _ => 0,
        };
        while g < n {
            let p = src.as_ptr().add(g * rb);
            // (the K-quant row kernels ask for their own blocks' lines)
            if matches!(fmt, Fmt::Q8_0 | Fmt::Q5_0) {
                prefetch_ahead(p, 8 * rb);
            }
            let mut acc = [_mm256_setzero_ps(); 8];
            for (j, acc) in acc.iter_mut().enumerate() {
                if g + j < n {
                    let w = p.add(j * rb);
                    match fmt {
                        Fmt::Q4K => *acc = q4k_acc(w, a, blocks),
                        Fmt::Q6K => *acc = q6k_acc(w, a, blocks),
                        _ => {
                            for b in 0..blocks {
                                *acc = match fmt {
                                    Fmt::Q8_0 => q8_0_block(w, a, b, *acc),
                                    _ => q5_0_block(w, a, b, &k, *acc),
                                };
                            }
                        }
                    }
                }
            }
            let s = hsum8(acc);
            if g + 8 <= n {
                _mm256_storeu_ps(out.as_mut_ptr().add(g), s);
            } else {
                let mut t = [0f32; 8];
                _mm256_storeu_ps(t.as_mut_ptr(), s);
                out[g..].copy_from_slice(&t[..n - g]);
            }
            g += 8;
        }
    }
}

/// [`short_rows`] for whole groups of eight rows of `B` Q8_0 (or, with `Q5`, Q5_0) blocks,
/// the blocks and rows unrolled so the eight sums stay in registers. With the count of
/// blocks known only at run time, a loop over each row's blocks kept the sums on the
/// stack, and each block waited on the last one's store: 1.3-2.4x this one's time from L2
/// (`examples/matvec`, 4096 rows of 32-128 values, calls alternated). Returns the rows
/// done: all of `out`, whole groups of eight.
#[inline(always)]
unsafe fn eight_rows<const B: usize, const Q5: bool>(
    src: &[u8],
    rb: usize,
    a: &QRow<'_>,
    k: &Q5Consts,
    out: &mut [f32],
) -> usize {
    unsafe {
        let mut g = 0;
        while g < out.len() {
            let p = src.as_ptr().add(g * rb);
            prefetch_ahead(p, 8 * rb);
            let mut acc = [_mm256_setzero_ps(); 8];
            for b in 0..B {
                for (j, acc) in acc.iter_mut().enumerate() {
                    let w = p.add(j * rb);
                    *acc = if Q5 {
                        q5_0_block(w, a, b, k, *acc)
                    } else {
                        q8_0_block(w, a, b, *acc)
                    };
                }
            }
            _mm256_storeu_ps(out.as_mut_ptr().add(g), hsum8(acc));
            g += 8;
        }
        g
    }
}

/// Lane `j` is the sum of `v[j]`'s lanes.
#[inline(always)]
unsafe fn hsum8(v: [__m256; 8]) -> __m256 {
    unsafe {
        // [v0 v1 v2 v3] of each 128-bit half, then the halves added
        let a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
        let b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(a, b),
            _mm256_permute2f128_ps::<0x31>(a, b),
        )
    }
}

/// Lane `j` is the sum of `v[j]`'s lanes.
#[inline(always)]
pub(super) unsafe fn hsum4(v: [__m256; 4]) -> __m128 {
    unsafe {
        let c = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
        _mm_add_ps(_mm256_castps256_ps128(c), _mm256_extractf128_ps::<1>(c))
    }
}

/// `Σ` of each 4 adjacent products `u[i] * s[i]` (unsigned times signed bytes) as i32, the
/// pairs' i16 sums exact where `2 · u · |s|` fits (weights below 128).
#[inline(always)]
unsafe fn dot_u8i8(u: __m256i, s: __m256i) -> __m256i {
    unsafe { _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)) }
}

/// Q8_0: the weights' signs move to the activations (`|w|` times `sign(w)·x`, exact even
/// for -128, as ggml's AVX2 path does), two blocks a step with independent sums. (The two
/// sums were an array indexed by `b & 1`: it lived on the stack, and every block waited on
/// a store and its reload behind the last FMA, ~11 cycles a block: 9 GB/s a core from L2.)
#[inline(always)]
unsafe fn q8_0_acc(w: *const u8, a: &QRow<'_>, blocks: usize) -> __m256 {
    unsafe {
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut b = 0;
        while b + 2 <= blocks {
            prefetch_ahead(w.add(34 * b), 68);
            acc0 = q8_0_block(w, a, b, acc0);
            acc1 = q8_0_block(w, a, b + 1, acc1);
            b += 2;
        }
        if b < blocks {
            acc0 = q8_0_block(w, a, b, acc0);
        }
        _mm256_add_ps(acc0, acc1)
    }
}

/// `acc` plus Q8_0 block `b`'s products, by lane.
#[inline(always)]
unsafe fn q8_0_block(w: *const u8, a: &QRow<'_>, b: usize, acc: __m256) -> __m256 {
    unsafe {
        let p = w.add(34 * b);
        let wv = _mm256_loadu_si256(p.add(2) as *const __m256i);
        let xv = _mm256_loadu_si256(a.qs.as_ptr().add(32 * b) as *const __m256i);
        let isum = dot_u8i8(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
        let s = _mm256_set1_ps(f16_at(p) * *a.d.get_unchecked(b));
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), s, acc)
    }
}

/// Q5_0 (llama.cpp's fallback for Q4_K rows that are not whole blocks of 256, as the
/// 64-wide rows of `attn_k_b`): the low nibbles then the high nibbles of 16 bytes, each
/// byte's fifth bit picked from `qh` by a shuffle and a compare; the stored quants are
/// q + 16 (below 32, so the pair sums fit an i16), and 16 · (the block's activation sum)
/// comes off in lane 0. (The portable body these replace was 8% of a q4_k_m decode's
/// samples for 0.5% of its bytes.)
#[inline(always)]
unsafe fn q5_0_acc(w: *const u8, a: &QRow<'_>, blocks: usize) -> __m256 {
    unsafe {
        let k = Q5Consts::new();
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut b = 0;
        while b + 2 <= blocks {
            if b % 4 == 0 {
                prefetch_ahead(w.add(22 * b), 88);
            }
            acc0 = q5_0_block(w, a, b, &k, acc0);
            acc1 = q5_0_block(w, a, b + 1, &k, acc1);
            b += 2;
        }
        if b < blocks {
            acc0 = q5_0_block(w, a, b, &k, acc0);
        }
        _mm256_add_ps(acc0, acc1)
    }
}

/// Byte j of a Q5_0 block's 32 takes `qh`'s byte j / 8 (its 128-bit lane holds `qh` too)
/// and tests bit j % 8.
const Q5_PICK: __m256i = unsafe {
    std::mem::transmute::<[u8; 32], __m256i>([
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    ])
};

/// [`q5_0_block`]'s constants, made once per row.
struct Q5Consts {
    nib: __m256i,
    pick: __m256i,
    bit: __m256i,
}

impl Q5Consts {
    #[inline(always)]
    unsafe fn new() -> Self {
        unsafe {
            Q5Consts {
                nib: _mm256_set1_epi8(0x0f),
                pick: Q5_PICK,
                bit: _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64),
            }
        }
    }
}

/// `acc` plus Q5_0 block `b`'s products, by lane.
#[inline(always)]
unsafe fn q5_0_block(w: *const u8, a: &QRow<'_>, b: usize, k: &Q5Consts, acc: __m256) -> __m256 {
    unsafe {
        let p = w.add(22 * b);
        let qh = _mm256_set1_epi32((p.add(2) as *const i32).read_unaligned());
        let set = _mm256_cmpeq_epi8(
            _mm256_and_si256(_mm256_shuffle_epi8(qh, k.pick), k.bit),
            k.bit,
        );
        let q = _mm_loadu_si128(p.add(6) as *const __m128i);
        let q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(q), q), k.nib);
        let q = _mm256_or_si256(q, _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
        let xv = _mm256_loadu_si256(a.qs.as_ptr().add(32 * b) as *const __m256i);
        let off = _mm_cvtsi32_si128(16 * *a.bsums.get_unchecked(b) as i32);
        let isum = _mm256_sub_epi32(dot_u8i8(q, xv), _mm256_zextsi128_si256(off));
        let s = _mm256_set1_ps(f16_at(p) * *a.d.get_unchecked(b));
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), s, acc)
    }
}

/// Q4_K: each 32 bytes of nibbles hold sub-block 2c (low) and 2c + 1 (high); their
/// products with the activations are summed in pairs (`vpmaddubsw`, at most 2 · 15 · 128).
/// The eight sub-blocks' pair sums then fold by unpacks within the 128-bit lanes and adds
/// into one vector whose i16 lane j (of each half) is sub-block j's sum over 16 weights
/// (at most 16 · 15 · 128 = 30720, an i16), and one `vpmaddwd` by the scales, in both
/// halves, finishes the block. (A lane-crossing permute and a scale widening per 64
/// weights, as before, held the shuffle pipes: from L2 this is 0.90 of that kernel's time,
/// from memory 0.95-0.97, the two interleaved call by call.) The minimums meet the
/// activations' sums of 16 in pairs: `dmin · Σ_j min_j · (sum of sub-block j)`. The
/// scales and minimums unpack in a vector register from the block's first 16 bytes, which
/// also give `d` and `dmin`: ~12 instructions where the scalar unpacking (as
/// `q4k_scales_mins`) and moving its results over took ~24, and this host's cores are
/// shared: on one core from L2, 0.86-0.91 of the time while the host was busy, 1.00-1.02
/// while it was quiet.
#[inline(always)]
unsafe fn q4k_acc(w: *const u8, a: &QRow<'_>, blocks: usize) -> __m256 {
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 2];
        for b in 0..blocks {
            acc = q4k_block(w, a, b, acc);
        }
        _mm256_sub_ps(acc[0], acc[1])
    }
}

/// Block `b` of the Q4_K row at `w` added to `[sums, minimum terms]` (see [`q4k_acc`]).
#[inline(always)]
unsafe fn q4k_block(w: *const u8, a: &QRow<'_>, b: usize, accs: [__m256; 2]) -> [__m256; 2] {
    unsafe {
        let nib = _mm256_set1_epi8(0x0f);
        let csc = _mm256_loadu_si256(Q4K_SCALES.as_ptr() as *const __m256i);
        let cmin = _mm256_loadu_si256(Q4K_MINS.as_ptr() as *const __m256i);
        let x = a.qs.as_ptr();
        let [mut acc, mut acc_min] = accs;
        let p = w.add(144 * b);
        prefetch_ahead(p, 144);
        // d, dmin and the twelve scale bytes in one load
        let v = _mm_loadu_si128(p as *const __m128i);
        let sm = q4k_scales_mins_v(v);
        let sm2 = _mm256_broadcastsi128_si256(sm);
        let xb = x.add(256 * b);
        // sub-block j's 16 pair sums
        let mut pair = [_mm256_setzero_si256(); 8];
        for c in 0..4 {
            let nibs = _mm256_loadu_si256(p.add(16 + 32 * c) as *const __m256i);
            let lo = _mm256_and_si256(nibs, nib);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(nibs), nib);
            let xl = _mm256_loadu_si256(xb.add(64 * c) as *const __m256i);
            let xh = _mm256_loadu_si256(xb.add(64 * c + 32) as *const __m256i);
            pair[2 * c] = _mm256_maddubs_epi16(lo, xl);
            pair[2 * c + 1] = _mm256_maddubs_epi16(hi, xh);
        }
        // i16 lanes [0 1 0 1 ..], then [0 1 2 3 0 1 2 3], then [0 .. 7]: sub-blocks
        let t01 = fold16(pair[0], pair[1]);
        let t23 = fold16(pair[2], pair[3]);
        let t45 = fold16(pair[4], pair[5]);
        let t67 = fold16(pair[6], pair[7]);
        let u03 = _mm256_add_epi16(
            _mm256_unpacklo_epi32(t01, t23),
            _mm256_unpackhi_epi32(t01, t23),
        );
        let u47 = _mm256_add_epi16(
            _mm256_unpacklo_epi32(t45, t67),
            _mm256_unpackhi_epi32(t45, t67),
        );
        let sums = _mm256_add_epi16(
            _mm256_unpacklo_epi64(u03, u47),
            _mm256_unpackhi_epi64(u03, u47),
        );
        let sc = _mm256_shuffle_epi8(sm2, csc);
        let isum = _mm256_madd_epi16(sums, sc);
        let bs = _mm256_loadu_si256(a.bsums.as_ptr().add(16 * b) as *const __m256i);
        let mn = _mm256_shuffle_epi8(sm2, cmin);
        let imin = _mm256_madd_epi16(bs, mn);
        // d and dmin lie side by side: one conversion for both (lanes 2 and 3, the
        // scale bytes as halves, go unused)
        let dd = _mm_mul_ps(_mm_cvtph_ps(v), _mm_set1_ps(*a.d.get_unchecked(b)));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_broadcastss_ps(dd), acc);
        acc_min = _mm256_fmadd_ps(
            _mm256_cvtepi32_ps(imin),
            _mm256_broadcastss_ps(_mm_movehdup_ps(dd)),
            acc_min,
        );
        [acc, acc_min]
    }
}

/// Q4_K's eight 6-bit scales (bytes 0-7) and eight minimums (bytes 8-15) from a block's
/// first 16 bytes (`d`, `dmin`, the 12 packed bytes), as `q4k_scales_mins` unpacks them.
#[inline(always)]
unsafe fn q4k_scales_mins_v(v: __m128i) -> __m128i {
    unsafe {
        // packed byte k lies at v's byte 4 + k
        let pp = _mm_shuffle_epi8(
            v,
            _mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15),
        );
        let qq = _mm_shuffle_epi8(
            v,
            _mm_setr_epi8(
                -128, -128, -128, -128, 4, 5, 6, 7, -128, -128, -128, -128, 8, 9, 10, 11,
            ),
        );
        let r1 = _mm_and_si128(
            pp,
            _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0),
        );
        let r2 = _mm_and_si128(
            _mm_srli_epi16::<4>(pp),
            _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15),
        );
        let r3 = _mm_and_si128(
            _mm_srli_epi16::<2>(qq),
            _mm_setr_epi8(
                0, 0, 0, 0, 0x30, 0x30, 0x30, 0x30, 0, 0, 0, 0, 0x30, 0x30, 0x30, 0x30,
            ),
        );
        _mm_or_si128(_mm_or_si128(r1, r2), r3)
    }
}

/// `vpshufb` control over Q4_K's eight minimums (bytes 8-15 of `q4k_scales_mins_v`, in both
/// 128-bit lanes), against the activations' sums of 16: i16 lanes 2j and 2j + 1 take min j
/// (sub-blocks 0..3 in the low half, 4..7 in the high).
const Q4K_MINS: [u8; 32] = {
    let mut t = [0x80u8; 32];
    let mut k = 0;
    while k < 16 {
        t[2 * k] = (8 + k / 2) as u8;
        k += 1;
    }
    t
};

/// Each 128-bit half of `a` and `b`'s i16 lanes summed in pairs `(i, i + 4)` and
/// interleaved: `[a b a b ..]`. (A function, not a closure: closures do not inherit the
/// target features, and the intrinsics in them become calls.)
#[inline(always)]
unsafe fn fold16(a: __m256i, b: __m256i) -> __m256i {
    unsafe { _mm256_add_epi16(_mm256_unpacklo_epi16(a, b), _mm256_unpackhi_epi16(a, b)) }
}

/// `vpshufb` control over Q4_K's eight scale bytes (in both 128-bit lanes): i16 lane k of
/// each half takes byte k, zero-extended.
const Q4K_SCALES: [u8; 32] = {
    let mut t = [0x80u8; 32];
    let mut k = 0;
    while k < 16 {
        t[2 * k] = (k % 8) as u8;
        k += 1;
    }
    t
};

/// `vpshufb` control over a block half's eight i16 scales (the same in both 128-bit
/// lanes): for the 32 weights from `32 r` on, group `2r`'s scale in every i16 lane of the
/// low half (the first 16 weights' pair sums), group `2r + 1`'s in the high half.
const SCALE_PICK: [[u8; 32]; 4] = {
    let mut t = [[0u8; 32]; 4];
    let mut r = 0;
    while r < 4 {
        let mut i = 0;
        while i < 32 {
            let lane = if i < 16 { 2 * r } else { 2 * r + 1 };
            t[r][i] = (2 * lane + i % 2) as u8;
            i += 1;
        }
        r += 1;
    }
    t
};

/// Q6_K: per half of 128 weights, 32 bytes of `qh` and 64 of `ql` make four runs of 32
/// quants (0..63 each, the stored q + 32); products summed in pairs (at most 2 · 63 · 128)
/// and widened by the two 16-weight groups' signed scales; `32 · Σ_g scale_g · sum_g`
/// comes off at the end. The scales are widened to i16 once a block, each half's eight in
/// both 128-bit lanes, and each run picks its two by one in-lane `vpshufb`. (Widening each
/// run's two by a lane-crossing `vpmovsxbw` took 1.13-1.16x the time from L2, one core,
/// calls alternated, and 1.15x for 512-value rows. In a decode step, where `output` comes
/// from memory, the two are even; but with lines asked for 4 KiB ahead, while the host's
/// memory was slow, this one's `output` product took 1.3-1.4x the other's (7-8 ms), until
/// the distance came down to 1 KiB: see `x86::ahead`.)
#[inline(always)]
unsafe fn q6k_acc(w: *const u8, a: &QRow<'_>, blocks: usize) -> __m256 {
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for b in 0..blocks {
            acc = q6k_block(w, a, b, acc);
        }
        acc
    }
}

/// Block `b` of the Q6_K row at `w` added to `acc` (see [`q6k_acc`]).
#[inline(always)]
unsafe fn q6k_block(w: *const u8, a: &QRow<'_>, b: usize, mut acc: __m256) -> __m256 {
    unsafe {
        let nib = _mm256_set1_epi8(0x0f);
        let three = _mm256_set1_epi8(0x03);
        let x = a.qs.as_ptr();
        let p = w.add(210 * b);
        prefetch_ahead(p, 210);
        let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(192) as *const __m128i));
        let halves = [
            _mm256_permute2x128_si256::<0x00>(sc16, sc16),
            _mm256_permute2x128_si256::<0x11>(sc16, sc16),
        ];
        let xb = x.add(256 * b);
        let mut isum = _mm256_setzero_si256();
        for (h, &sh) in halves.iter().enumerate() {
            let ql0 = _mm256_loadu_si256(p.add(64 * h) as *const __m256i);
            let ql1 = _mm256_loadu_si256(p.add(64 * h + 32) as *const __m256i);
            let qh = _mm256_loadu_si256(p.add(128 + 32 * h) as *const __m256i);
            let t0 = _mm256_slli_epi16::<4>(_mm256_and_si256(qh, three));
            let t2 = _mm256_slli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(0x0c)));
            let t4 = _mm256_and_si256(qh, _mm256_set1_epi8(0x30));
            let t6 = _mm256_and_si256(_mm256_srli_epi16::<2>(qh), _mm256_set1_epi8(0x30));
            let q = [
                _mm256_or_si256(_mm256_and_si256(ql0, nib), t0),
                _mm256_or_si256(_mm256_and_si256(ql1, nib), t2),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql0), nib), t4),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql1), nib), t6),
            ];
            for (r, &q) in q.iter().enumerate() {
                let ctrl = _mm256_loadu_si256(SCALE_PICK[r].as_ptr() as *const __m256i);
                let s = _mm256_shuffle_epi8(sh, ctrl);
                let xv = _mm256_loadu_si256(xb.add(128 * h + 32 * r) as *const __m256i);
                let pr = _mm256_maddubs_epi16(q, xv);
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(pr, s));
            }
        }
        let bs = _mm256_loadu_si256(a.bsums.as_ptr().add(16 * b) as *const __m256i);
        let off = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, bs));
        isum = _mm256_sub_epi32(isum, off);
        acc = _mm256_fmadd_ps(
            _mm256_cvtepi32_ps(isum),
            _mm256_set1_ps(f16_at(p.add(208)) * *a.d.get_unchecked(b)),
            acc,
        );
        acc
    }
}
