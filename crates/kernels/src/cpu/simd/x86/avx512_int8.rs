//! AVX-512 BW int8 dot products of block-quantized weight rows with quantized activations
//! (`QRow`): weights unpack to bytes and multiply signed activation bytes as unsigned
//! bytes. Q8_0 sums them straight into i32 (`vpdpbusd`, or `vpmaddubsw` and `vpmaddwd`
//! without VNNI); the K-quants sum them in fours, pack those to i16 and apply the
//! per-sub-block scales while widening back to i32 (`vpmaddwd`). Each block's integer sum is
//! exact; f32 enters once per block. Q5_0 and short rows go to the AVX2 kernels
//! (`via_avx2`).

use std::arch::x86_64::*;

use super::prefetch_ahead;

use super::super::{Fmt, QRow, portable};

/// Q6_K's 128 weights a step: `vpackssdw` leaves group `8h + L` (four i32 of the low 64
/// weights) then group `8h + 4 + L` (the high 64) in 128-bit lane L.
const Q6K_PACKED_IDX: [[i16; 32]; 2] = [q6k_packed_index(0), q6k_packed_index(8)];

const fn q6k_packed_index(first: i16) -> [i16; 32] {
    let mut idx = [0i16; 32];
    let mut i = 0;
    while i < 32 {
        idx[i] = first + (i / 8) as i16 + 4 * (i % 8 >= 4) as i16;
        i += 1;
    }
    idx
}

/// The two index vectors (a loop, not a closure: closures do not inherit the caller's
/// target features, so the loads would be calls).
#[inline(always)]
unsafe fn load_idx2(idx: &[[i16; 32]; 2]) -> [__m512i; 2] {
    unsafe {
        let mut v = [_mm512_setzero_si512(); 2];
        for (v, i) in v.iter_mut().zip(idx) {
            *v = _mm512_loadu_si512(i.as_ptr() as *const __m512i);
        }
        v
    }
}

/// The eight 6-bit scales and eight 6-bit mins of a Q4_K block's 12 scale bytes, as the
/// bytes of two u64 (see `loader::quant::q4k_scale_min` for the packing).
#[inline(always)]
pub(super) fn q4k_scales_mins(s: &[u8]) -> (u64, u64) {
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

/// `out[j] = row j · a` for the rows stored `rb` bytes apart from `src` (see
/// `simd::dot_rows_q`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_rows_q_bw(fmt: &Fmt<'_>, src: &[u8], rb: usize, a: &QRow<'_>, out: &mut [f32]) {
    unsafe { dot_rows_q::<false>(fmt, src, rb, a, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_rows_q_vnni(fmt: &Fmt<'_>, src: &[u8], rb: usize, a: &QRow<'_>, out: &mut [f32]) {
    unsafe { dot_rows_q::<true>(fmt, src, rb, a, out) }
}

/// A run of rows, four at a time. A decode step's rows are short (a 1024-wide Q4_K row is
/// four blocks), so a row-at-a-time product spends a fifth of its time on dispatch, setup
/// and the final sum; four rows share them and one horizontal sum. Q8_0 also interleaves
/// the four rows block by block (sharing the activations' loads, four independent chains
/// of sums), taking them from four streams (the run cut in quarters: rows i, q + i,
/// 2q + i, 3q + i), each walked in order: four adjacent rows interleaved (the obvious
/// grouping) ran 2-3 times slower from memory here, as the prefetchers lost the stream.
/// The K-quants take the four streams a block of each in turn too (`k_quant_x4`). A
/// single stream (four adjacent rows, one after another) held a core to ~10 GB/s from
/// memory on the Xeon, as the far prefetches queue behind the L1's few fill buffers;
/// four streams let the L2's prefetcher run beside them (a 129280x1024 Q6_K product,
/// q4_k_m's lm_head, went from 18 to 27-30 GB/s on two threads). One whole row of each
/// stream in turn left only one stream moving at a time; block by block, as the AVX2
/// kernels found on Zen 3, q4_k_m decode steps on Zen 4 took a median of 0.99 of the
/// time (alternated within one run).
#[inline(always)]
unsafe fn dot_rows_q<const VNNI: bool>(
    fmt: &Fmt<'_>,
    src: &[u8],
    rb: usize,
    a: &QRow<'_>,
    out: &mut [f32],
) {
    let rows = out.len();
    let blocks = a.d.len();
    // Q5_0, and runs of short rows, through the AVX2 kernels: eight adjacent short rows
    // share one horizontal sum there, and Q5_0 (MLA's per-head `attn_k_b` in q4_k_m
    // files, rows of 64 values) goes four streams a block at a time, where here a row
    // went alone with its own sum. Decode steps alternated within one run (Zen 4,
    // q4_k_m): a median of 0.99 of the time; with the K-quants' streams below taken a
    // block at a time too, 0.98 (9 comparisons, 0.975-1.01); q8_0 1.00.
    if via_avx2(fmt, blocks) {
        // SAFETY: every AVX-512 CPU has AVX2, FMA and F16C; the kernel checks the bounds.
        return unsafe { super::avx2_int8::dot_rows_q(fmt, src, rb, a, out) };
    }
    // bytes per block, activations per block, activation sums per block
    let (per, block, sums) = match fmt {
        Fmt::Q8_0 => (34, 32, 1),
        Fmt::Q4K => (144, 256, 16),
        Fmt::Q6K => (210, 256, 16),
        _ => (0, 0, 0),
    };
    if per == 0 || rows == 0 {
        // (not through `dot_row_q`, which comes back here: a cycle of `inline(always)`
        // functions is outlined without the target features, and every intrinsic in it
        // becomes a call)
        for (j, o) in out.iter_mut().enumerate() {
            *o = portable::dot_row_q(fmt, &src[j * rb..(j + 1) * rb], a);
        }
        return;
    }
    assert!(rb >= per * blocks && src.len() >= (rows - 1) * rb + per * blocks);
    assert!(a.qs.len() >= blocks * block && a.bsums.len() >= blocks * sums);
    if let Fmt::Q8_0 = fmt {
        // four streams: rows i, q + i, 2q + i, 3q + i of the run, each walked in order
        let q = rows.div_ceil(4);
        for i in 0..q {
            let mut w = [src.as_ptr(); 4];
            let mut idx = [usize::MAX; 4];
            for s in 0..4 {
                let r = s * q + i;
                if r < rows {
                    idx[s] = r;
                }
                // a missing row (past the run's end) repeats row i; its sum is not stored
                w[s] = unsafe { src.as_ptr().add(if r < rows { r } else { i } * rb) };
            }
            let mut s4 = [0f32; 4];
            unsafe { _mm_storeu_ps(s4.as_mut_ptr(), q8_0_x4::<VNNI>(w, a, blocks)) };
            for s in 0..4 {
                if idx[s] != usize::MAX {
                    out[idx[s]] = s4[s];
                }
            }
        }
        return;
    }
    // Q4_K reads its activations reordered (`Q4kActs`), in buffers taken out of the
    // thread-local and put back: the kernel must not run inside a closure, which would not
    // inherit this function's target features
    let acts = matches!(fmt, Fmt::Q4K).then(|| {
        let mut acts = Q4K_ACTS.with(|c| c.take());
        acts.fill(a, blocks);
        acts
    });
    let (qs, sums) = match &acts {
        Some(acts) => (acts.qs.as_ptr(), acts.sums.as_ptr()),
        None => (a.qs.as_ptr(), a.bsums.as_ptr()),
    };
    let src = src.as_ptr();
    // SAFETY: the rows lie within src (asserted above); the activations are `blocks`
    // whole blocks.
    unsafe {
        match acts {
            Some(_) => k_quant_streams::<VNNI, true>(src, rb, rows, a, qs, sums, out),
            None => k_quant_streams::<VNNI, false>(src, rb, rows, a, qs, sums, out),
        }
    }
    if let Some(acts) = acts {
        Q4K_ACTS.with(|c| c.replace(acts));
    }
}

/// The K-quants' runs (Q4_K, or else Q6_K): four streams (`k_quant_x4`), or under four
/// rows one row at a time. (Generic, not over a closure: closures do not inherit the
/// caller's target features, and the kernels became calls.)
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn k_quant_streams<const VNNI: bool, const Q4K: bool>(
    src: *const u8,
    rb: usize,
    rows: usize,
    a: &QRow<'_>,
    qs: *const i8,
    sums: *const i16,
    out: &mut [f32],
) {
    if rows >= 4 {
        // SAFETY: the caller checked the rows' bounds.
        return unsafe { k_quant_x4::<VNNI, Q4K>(src, rb, rows, a, qs, sums, out) };
    }
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY: row r lies within src (the caller checked).
        let w = unsafe { src.add(r * rb) };
        let (acc, acc_min) = unsafe {
            if Q4K {
                q4k_acc64::<VNNI>(w, qs, sums, a.d)
            } else {
                (q6k_acc::<VNNI>(w, a, a.d.len()), _mm_setzero_ps())
            }
        };
        let mut s4 = [0f32; 4];
        unsafe {
            let acc = [
                acc,
                _mm512_setzero_ps(),
                _mm512_setzero_ps(),
                _mm512_setzero_ps(),
            ];
            let m = [
                acc_min,
                _mm_setzero_ps(),
                _mm_setzero_ps(),
                _mm_setzero_ps(),
            ];
            _mm_storeu_ps(s4.as_mut_ptr(), _mm_sub_ps(hsum4(acc), hsum4_128(m)));
        }
        *o = s4[0];
    }
}

/// The K-quants' runs of at least four rows: the four streams advance a block each in
/// turn, so four streams' lines are in flight while the arithmetic runs.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn k_quant_x4<const VNNI: bool, const Q4K: bool>(
    src: *const u8,
    rb: usize,
    rows: usize,
    a: &QRow<'_>,
    qs: *const i8,
    sums: *const i16,
    out: &mut [f32],
) {
    unsafe {
        let q = rows.div_ceil(4);
        let k4 = Q4kConsts::new();
        let k6 = Q6kConsts::new();
        let blocks = a.d.len();
        for i in 0..q {
            // a missing row (past the run's end) repeats row i; its sum is not stored
            let mut w = [src; 4];
            for (s, w) in w.iter_mut().enumerate() {
                let r = s * q + i;
                *w = src.add(if r < rows { r } else { i } * rb);
            }
            let mut acc = [_mm512_setzero_ps(); 4];
            let mut acc_min = [_mm_setzero_ps(); 4];
            for b in 0..blocks {
                for s in 0..4 {
                    if Q4K {
                        q4k_block::<VNNI>(
                            &k4,
                            w[s].add(144 * b),
                            qs.add(256 * b),
                            sums.add(8 * b),
                            a.d[b],
                            &mut acc[s],
                            &mut acc_min[s],
                        );
                    } else {
                        q6k_block::<VNNI>(&k6, w[s].add(210 * b), a, b, &mut acc[s]);
                    }
                }
            }
            let mut s4 = [0f32; 4];
            _mm_storeu_ps(s4.as_mut_ptr(), _mm_sub_ps(hsum4(acc), hsum4_128(acc_min)));
            for s in 0..4 {
                if s * q + i < rows {
                    out[s * q + i] = s4[s];
                }
            }
        }
    }
}

/// Lane `j` is the sum of `v[j]`'s lanes.
#[inline(always)]
unsafe fn hsum4(v: [__m512; 4]) -> __m128 {
    unsafe {
        // (loops, not closures: closures do not inherit the caller's target features)
        let mut h = [_mm256_setzero_ps(); 4];
        for (h, x) in h.iter_mut().zip(v) {
            *h = _mm256_add_ps(
                _mm512_castps512_ps256(x),
                _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x))),
            );
        }
        let c = _mm256_hadd_ps(_mm256_hadd_ps(h[0], h[1]), _mm256_hadd_ps(h[2], h[3]));
        _mm_add_ps(_mm256_castps256_ps128(c), _mm256_extractf128_ps::<1>(c))
    }
}

#[inline(always)]
unsafe fn hsum4_128(v: [__m128; 4]) -> __m128 {
    unsafe { _mm_hadd_ps(_mm_hadd_ps(v[0], v[1]), _mm_hadd_ps(v[2], v[3])) }
}

#[inline(always)]
pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
    unsafe {
        let h = (p as *const u16).read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
    }
}

/// Q8_0, four rows, two blocks a step. With VNNI the weights' sign moves by an offset:
/// `w ^ 0x80` is `w + 128` as an unsigned byte, so `vpdpbusd` gives `Σ w·x + 128·Σ x`, and
/// the second term, shared by the rows, starts each sum negated (one `vpdpbusd` of the
/// activations, against three operations a row to move the sign to them). Without VNNI
/// the sign goes to the activations (`|w|` times `sign(w)·x`, exact even for -128):
/// `vpmaddubsw` would saturate on `2 · 255 · 127`.
#[inline(always)]
unsafe fn q8_0_x4<const VNNI: bool>(w: [*const u8; 4], a: &QRow<'_>, blocks: usize) -> __m128 {
    unsafe {
        let zero = _mm512_setzero_si512();
        let flip = _mm512_set1_epi8(-128);
        let halves = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        let mut acc = [_mm512_setzero_ps(); 4];
        let x = a.qs.as_ptr();
        let mut b = 0;
        while b + 2 <= blocks {
            let xv = _mm512_loadu_si512(x.add(32 * b) as *const __m512i);
            let base = if VNNI {
                _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, flip, xv))
            } else {
                zero
            };
            let da = _mm_castpd_ps(_mm_load_sd(a.d.as_ptr().add(b) as *const f64));
            for r in 0..4 {
                let p = w[r].add(34 * b);
                prefetch_ahead(p, 68);
                let lo = _mm256_loadu_si256(p.add(2) as *const __m256i);
                let hi = _mm256_loadu_si256(p.add(36) as *const __m256i);
                let wv = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
                let isum = if VNNI {
                    _mm512_dpbusd_epi32(base, _mm512_xor_si512(wv, flip), xv)
                } else {
                    let xs = _mm512_mask_sub_epi8(xv, _mm512_movepi8_mask(wv), zero, xv);
                    dot_u8i8::<false>(zero, _mm512_abs_epi8(wv), xs)
                };
                let d0 = (p as *const u16).read_unaligned() as u32;
                let d1 = (p.add(34) as *const u16).read_unaligned() as u32;
                let dw = _mm_cvtph_ps(_mm_cvtsi32_si128((d0 | d1 << 16) as i32));
                let s = _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(_mm_mul_ps(dw, da)));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), s, acc[r]);
            }
            b += 2;
        }
        let mut sums = hsum4(acc);
        if b < blocks {
            let xv = _mm256_loadu_si256(x.add(32 * b) as *const __m256i);
            let mut tail = [0f32; 4];
            for r in 0..4 {
                let p = w[r].add(34 * b);
                let wv = _mm256_loadu_si256(p.add(2) as *const __m256i);
                let xs =
                    _mm256_mask_sub_epi8(xv, _mm256_movepi8_mask(wv), _mm256_setzero_si256(), xv);
                let isum = dot_u8i8_256::<VNNI>(_mm256_setzero_si256(), _mm256_abs_epi8(wv), xs);
                tail[r] = hsum256(_mm256_cvtepi32_ps(isum)) * (f16_at(p) * a.d[b]);
            }
            sums = _mm_add_ps(sums, _mm_loadu_ps(tail.as_ptr()));
        }
        sums
    }
}

/// Q4_K's activations as `q4k_acc64` reads them: per block the sub-blocks of 32 in the
/// order 0, 2, 1, 3, 4, 6, 5, 7 (so one 64-byte load of the weights' nibbles, masked or
/// shifted, meets one 64-byte load of activations), and per sub-block the sum of its
/// activations (the minimums' part).
#[derive(Default)]
struct Q4kActs {
    qs: Vec<i8>,
    sums: Vec<i16>,
}

thread_local! {
    static Q4K_ACTS: std::cell::RefCell<Q4kActs> = std::cell::RefCell::new(Q4kActs::default());
}

impl Q4kActs {
    fn fill(&mut self, a: &QRow<'_>, blocks: usize) {
        self.qs.clear();
        self.sums.clear();
        for b in 0..blocks {
            let x = &a.qs[256 * b..256 * (b + 1)];
            for j in [0, 2, 1, 3, 4, 6, 5, 7] {
                self.qs.extend_from_slice(&x[32 * j..32 * (j + 1)]);
            }
            for j in 0..8 {
                self.sums
                    .push(a.bsums[16 * b + 2 * j] + a.bsums[16 * b + 2 * j + 1]);
            }
        }
    }
}

/// i16 lane `i` of 32 picks scale `first + (i % 8 >= 4) + 2 * (i >= 16)`: the layout
/// `vpackssdw` leaves two blocks' sums of sub-blocks (first | first + 2) and
/// (first + 1 | first + 3) in, four i32 of each per 128-bit lane.
const fn packed_scale_index(first: i16) -> [i16; 32] {
    let mut idx = [0i16; 32];
    let mut i = 0;
    while i < 32 {
        idx[i] = first + (i % 8 >= 4) as i16 + 2 * (i >= 16) as i16;
        i += 1;
    }
    idx
}

const Q4K_PACKED_IDX: [[i16; 32]; 2] = [packed_scale_index(0), packed_scale_index(4)];

/// One Q4_K row over `Q4kActs`: per block two 64-byte loads of nibbles, four byte dot
/// products (`vpdpbusd`, each 128 weights' sums of four in i32, which fit in i16), packed
/// in pairs to i16 and scaled per sub-block while summing (`vpdpwssd`). The kernel it
/// replaced took 64 weights a step (a 32-byte broadcast, a variable shift, a mask,
/// `vpmaddubsw`, a permute and `vpdpwssd`), as Q6_K still does: twice the permutes and a
/// third more operations on port 0, where it was bound at ~20 cycles a block from L1.
/// `examples/matvec`, 1024x1024 from L1/L2 on one thread: 25-28 -> 35-37 Gweights/s.
#[inline(always)]
unsafe fn q4k_acc64<const VNNI: bool>(
    w: *const u8,
    qs: *const i8,
    sums: *const i16,
    d: &[f32],
) -> (__m512, __m128) {
    unsafe {
        let k = Q4kConsts::new();
        let mut acc = _mm512_setzero_ps();
        let mut acc_min = _mm_setzero_ps();
        for (b, &da) in d.iter().enumerate() {
            q4k_block::<VNNI>(
                &k,
                w.add(144 * b),
                qs.add(256 * b),
                sums.add(8 * b),
                da,
                &mut acc,
                &mut acc_min,
            );
        }
        (acc, acc_min)
    }
}

/// The constants of a Q4_K block step, loaded once a run.
struct Q4kConsts {
    nib: __m512i,
    idx: [__m512i; 2],
}

impl Q4kConsts {
    #[inline(always)]
    unsafe fn new() -> Self {
        unsafe {
            Q4kConsts {
                nib: _mm512_set1_epi8(0x0f),
                idx: load_idx2(&Q4K_PACKED_IDX),
            }
        }
    }
}

/// One Q4_K block `p` against its reordered activations `x` and sub-block sums `sums`.
#[inline(always)]
unsafe fn q4k_block<const VNNI: bool>(
    k: &Q4kConsts,
    p: *const u8,
    x: *const i8,
    sums: *const i16,
    da: f32,
    acc: &mut __m512,
    acc_min: &mut __m128,
) {
    unsafe {
        prefetch_ahead(p, 144);
        let zero = _mm512_setzero_si512();
        let (scales, mins) = q4k_scales_mins(std::slice::from_raw_parts(p.add(4), 12));
        let sc = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(scales as i64)));
        let mut isum = zero;
        for (h, idx) in k.idx.iter().enumerate() {
            let v = _mm512_loadu_si512(p.add(16 + 64 * h) as *const __m512i);
            let lo = _mm512_and_si512(v, k.nib);
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), k.nib);
            let xl = _mm512_loadu_si512(x.add(128 * h) as *const __m512i);
            let xh = _mm512_loadu_si512(x.add(128 * h + 64) as *const __m512i);
            let sl = dot_u8i8::<VNNI>(zero, lo, xl);
            let sh = dot_u8i8::<VNNI>(zero, hi, xh);
            let s16 = _mm512_packs_epi32(sl, sh);
            isum = dot_i16::<VNNI>(isum, s16, _mm512_permutexvar_epi16(*idx, sc));
        }
        let m16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(mins as i64));
        let im = _mm_madd_epi16(m16, _mm_loadu_si128(sums as *const __m128i));
        // d and dmin lie side by side: one conversion for both
        let dd = _mm_mul_ps(
            _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned())),
            _mm_set1_ps(da),
        );
        *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_broadcastss_ps(dd), *acc);
        *acc_min = _mm_fmadd_ps(
            _mm_cvtepi32_ps(im),
            _mm_permute_ps::<0b01_01_01_01>(dd),
            *acc_min,
        );
    }
}

/// One Q6_K row's sum, spread over the lanes: the low four bits from `ql`, the top two
/// from `qh`, each 64 weights scaled per 16-weight group while widening to i32.
#[inline(always)]
unsafe fn q6k_acc<const VNNI: bool>(w: *const u8, a: &QRow<'_>, blocks: usize) -> __m512 {
    unsafe {
        let k = Q6kConsts::new();
        let mut acc = _mm512_setzero_ps();
        for b in 0..blocks {
            q6k_block::<VNNI>(&k, w.add(210 * b), a, b, &mut acc);
        }
        acc
    }
}

/// The constants of a Q6_K block step, loaded once a run.
struct Q6kConsts {
    nib: __m512i,
    top: __m512i,
    shift: __m512i,
    idx: [__m512i; 2],
}

impl Q6kConsts {
    #[inline(always)]
    unsafe fn new() -> Self {
        unsafe {
            Q6kConsts {
                nib: _mm512_set1_epi8(0x0f),
                top: _mm512_set1_epi8(0x30),
                shift: _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(2)),
                idx: load_idx2(&Q6K_PACKED_IDX),
            }
        }
    }
}

/// Q6_K block `b` of a row, at `p`: the low four bits from `ql`, the top two from `qh`,
/// each 64 weights scaled per 16-weight group while widening to i32.
#[inline(always)]
unsafe fn q6k_block<const VNNI: bool>(
    k: &Q6kConsts,
    p: *const u8,
    a: &QRow<'_>,
    b: usize,
    acc: &mut __m512,
) {
    unsafe {
        prefetch_ahead(p, 210);
        let zero = _mm512_setzero_si512();
        let x = a.qs.as_ptr();
        let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(192) as *const __m128i));
        let sc = _mm512_castsi256_si512(sc16);
        let mut isum = _mm512_setzero_si512();
        for (h, idx) in k.idx.iter().enumerate() {
            let ql = _mm512_loadu_si512(p.add(64 * h) as *const __m512i);
            let qh =
                _mm512_broadcast_i64x4(_mm256_loadu_si256(p.add(128 + 32 * h) as *const __m256i));
            let qh = _mm512_srlv_epi16(qh, k.shift);
            let lo = _mm512_or_si512(
                _mm512_and_si512(ql, k.nib),
                _mm512_and_si512(_mm512_slli_epi16::<4>(qh), k.top),
            );
            let hi = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(ql), k.nib),
                _mm512_and_si512(qh, k.top),
            );
            // sums of four (at most 4 · 63 · 127, an i16), packed in pairs and scaled
            // per group of 16 while summing, as Q4_K goes (`q4k_block`)
            let xl = _mm512_loadu_si512(x.add(256 * b + 128 * h) as *const __m512i);
            let xh = _mm512_loadu_si512(x.add(256 * b + 128 * h + 64) as *const __m512i);
            let s16 = _mm512_packs_epi32(
                dot_u8i8::<VNNI>(zero, lo, xl),
                dot_u8i8::<VNNI>(zero, hi, xh),
            );
            isum = dot_i16::<VNNI>(isum, s16, _mm512_permutexvar_epi16(*idx, sc));
        }
        // the stored quants are q + 32: subtract 32 · Σ_g scale_g · (sum of group g)
        let bs = _mm256_loadu_si256(a.bsums.as_ptr().add(16 * b) as *const __m256i);
        let off = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, bs));
        isum = _mm512_sub_epi32(isum, _mm512_zextsi256_si512(off));
        *acc = _mm512_fmadd_ps(
            _mm512_cvtepi32_ps(isum),
            _mm512_set1_ps(f16_at(p.add(208)) * a.d[b]),
            *acc,
        );
    }
}

/// Whether rows of `blocks` blocks of `fmt` go through the AVX2 kernels (see `dot_rows_q`):
/// Q5_0, and short rows (those the AVX2 kernels take eight at a time). Whole shapes go
/// there, whatever the run's length, so that a row's sum does not depend on how the
/// rows were split into runs (batched heads and experts must equal one product each).
#[inline(always)]
fn via_avx2(fmt: &Fmt<'_>, blocks: usize) -> bool {
    match fmt {
        Fmt::Q5_0 => true,
        Fmt::Q8_0 => blocks <= 4,
        Fmt::Q4K | Fmt::Q6K => blocks <= 2,
        _ => false,
    }
}

/// The bodies below are `inline(always)` and generic over VNNI, so each entry point above
/// compiles them with its own target features.
#[inline(always)]
unsafe fn dot_row_q<const VNNI: bool>(fmt: &Fmt<'_>, src: &[u8], a: &QRow<'_>) -> f32 {
    unsafe {
        if via_avx2(fmt, a.d.len()) {
            // as a run of this shape goes
            return super::avx2_int8::dot_row_q(fmt, src, a);
        }
        match fmt {
            // one row through the run kernel, which checks the bounds
            Fmt::Q8_0 | Fmt::Q4K | Fmt::Q6K => dot_one::<VNNI>(fmt, src, a),
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

/// One row through the run kernel (for Q8_0 every stream the same row; not on a hot path:
/// decode and prefill go by runs of rows).
#[inline(always)]
unsafe fn dot_one<const VNNI: bool>(fmt: &Fmt<'_>, src: &[u8], a: &QRow<'_>) -> f32 {
    let mut out = [0f32];
    unsafe { dot_rows_q::<VNNI>(fmt, src, src.len(), a, &mut out) };
    out[0]
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
