//! AVX-512 decode attention (see `attention.rs`): scores are register-tiled dot products
//! stored with the query rows in lanes (one vector of scores per position), so every row's
//! softmax runs lane-wise; the probabilities times the latents are outer products.

use std::arch::x86_64::*;

use super::super::{Ahead, PvTile, ScoresTile, SoftmaxStep};
use super::Fetch;
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
            KvRows::F32(kv) if !t.qt.is_empty() => scores_qt(t, kv.as_ptr(), s),
            KvRows::F32(kv) => scores_of::<false>(t, kv.as_ptr() as *const u8, s),
            // the wrapper checked that q16 is only given where vdpbf16ps exists
            KvRows::Bf16(kv) if !t.q16.is_empty() => scores_dp(t, kv.as_ptr(), s),
            KvRows::Bf16(kv) => scores_of::<true>(t, kv.as_ptr() as *const u8, s),
            KvRows::Q8(_) => unreachable!("the wrapper refuses an 8-bit cache"),
        }
    }
}

/// An f32 tile's scores with the query rows in lanes (`ScoresTile::qt`): per value along
/// k, a vector of 16 rows' queries against each of eight positions' value broadcast, so
/// each sum lands in its lane of `s` with no horizontal sums. The next tile's rows are
/// asked for a line a step (`Fetch`). Against the dot along each row (`scores_of`), whole
/// decode attention at depth 4096 took 0.87-0.92x the time from cache on one thread and
/// 0.85-0.92x over 12 layers from memory on two (Zen 4, alternated within one run).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn scores_qt(t: &ScoresTile<'_>, kv: *const f32, s: &mut [f32]) {
    let (lanes, k, offs) = (t.lanes, t.k, t.offs);
    let groups = offs.len() / 8;
    for jt in 0..groups {
        let mut next = t.prefetch.share(jt, groups);
        let mut rows = [kv; 8];
        for (j, r) in rows.iter_mut().enumerate() {
            // SAFETY (here and below): the wrapper checked every row's bounds, qt's and s's.
            *r = unsafe { kv.add(offs[jt * 8 + j]) };
        }
        let out = unsafe { s.as_mut_ptr().add(jt * 8 * lanes) };
        for lb in (0..t.rows).step_by(16) {
            unsafe { scores8_qt(t.qt.as_ptr().add(lb), lanes, k, &rows, out.add(lb), next) };
            next = next.rows(0..0);
        }
    }
}

/// Eight positions (cached rows `rows`) by the 16 query rows whose transposed values start
/// at `qt`: `out[j * lanes + l] = Σ_d qt[d * lanes + l] * rows[j][d]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn scores8_qt(
    qt: *const f32,
    lanes: usize,
    k: usize,
    rows: &[*const f32; 8],
    out: *mut f32,
    next: Ahead<'_>,
) {
    let mut fetch = Fetch::new(next);
    unsafe {
        let mut acc = [_mm512_setzero_ps(); 8];
        for d in 0..k {
            fetch.step();
            let q = _mm512_loadu_ps(qt.add(d * lanes));
            for (a, &r) in acc.iter_mut().zip(rows) {
                *a = _mm512_fmadd_ps(_mm512_set1_ps(*r.add(d)), q, *a);
            }
        }
        fetch.rest();
        for (j, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(out.add(j * lanes), *a);
        }
    }
}

/// f32 FMAs on values widened from the stored type.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn scores_of<const BF: bool>(t: &ScoresTile<'_>, kv: *const u8, s: &mut [f32]) {
    let (q, rows, lanes, k, offs) = (t.q, t.rows, t.lanes, t.k, t.offs);
    let groups = offs.len() / 4;
    // the calls a group makes, four query rows each
    let calls = rows.div_ceil(4);
    for jt in 0..groups {
        let keys: [usize; 4] = std::array::from_fn(|j| offs[jt * 4 + j]);
        // the next tile's rows, spread over the groups and their calls, into L2, a line
        // a step: the prefetchers see only short streams (one cached row is 17-36
        // lines), and this product is where the cache first comes in from memory (see
        // `scores8_dp`)
        let mine = t.prefetch.share(jt, groups);
        // SAFETY (here and below): the wrapper checked every row's bounds, q's and s's.
        let out = unsafe { s.as_mut_ptr().add(jt * 4 * lanes) };
        let mut i = 0;
        while i < rows {
            let next = mine.share(i / 4, calls);
            let qi = unsafe { q.as_ptr().add(i * k) };
            let o = unsafe { out.add(i) };
            unsafe {
                match rows - i {
                    1 => scores_tile::<1, BF>(qi, k, kv, &keys, lanes, o, next),
                    2 => scores_tile::<2, BF>(qi, k, kv, &keys, lanes, o, next),
                    3 => scores_tile::<3, BF>(qi, k, kv, &keys, lanes, o, next),
                    _ => scores_tile::<4, BF>(qi, k, kv, &keys, lanes, o, next),
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
    next: Ahead<'_>,
) {
    let mut fetch = Fetch::new(next);
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        for d in (0..k).step_by(16) {
            fetch.step();
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
        fetch.rest();
        for (i, a) in acc.iter().enumerate() {
            for (j, v) in a.iter().enumerate() {
                *out.add(j * lanes + i) = _mm512_reduce_add_ps(*v);
            }
        }
    }
}

/// The scores by `vdpbf16ps` with the query rows in lanes: per pair of values along k, a
/// vector of 16 rows' query pairs (`q16`) against one cached row's pair broadcast, eight
/// positions at a time, so each sum lands in its lane of `s` with no horizontal sums. (The
/// dot products along each row, four rows by four positions, spent as many operations on
/// the sixteen horizontal sums of a step as on its products: decode attention over a bf16
/// cache at depth 4096 ran at 272 GFLOP/s of the 445 that `vdpbf16ps` gives.)
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")]
unsafe fn scores_dp(t: &ScoresTile<'_>, kv: *const u16, s: &mut [f32]) {
    let (lanes, k, offs) = (t.lanes, t.k, t.offs);
    let groups = offs.len() / 8;
    // the lane vectors that hold query rows
    let nv = t.rows.div_ceil(16);
    for jt in 0..groups {
        // the next tile's rows, spread over the groups, into L2; within a group the
        // kernel asks for them a line per step (see `scores8_dp`)
        let next = t.prefetch.share(jt, groups);
        let mut rows = [kv; 8];
        for (j, r) in rows.iter_mut().enumerate() {
            // SAFETY (here and below): the wrapper checked every row's bounds, q16's and s's.
            *r = unsafe { kv.add(offs[jt * 8 + j]) };
        }
        let out = unsafe { s.as_mut_ptr().add(jt * 8 * lanes) };
        let mut g = 0;
        while g < nv {
            unsafe {
                // (the first vectors' pass asks for the group's share of the next rows)
                let next = if g == 0 { next } else { next.rows(0..0) };
                if nv - g >= 2 {
                    scores8_dp::<2>(t.q16.as_ptr(), lanes, k, &rows, g, out, next);
                    g += 2;
                } else {
                    scores8_dp::<1>(t.q16.as_ptr(), lanes, k, &rows, g, out, next);
                    g += 1;
                }
            }
        }
    }
}

/// Eight positions (cached rows `rows`) by `G` vectors of query rows from lane `16 * g0`,
/// asking for the lines of the cached rows `next` into L2, a line a step. (All of a
/// group's lines asked for at once before its products took 1.10-1.19x as long at depth
/// 4096 and 1.22-1.27x at 16384 over 12 layers from memory on Zen 4, alternated within one
/// run or by build; a line a step into L1, as long.)
#[inline]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")]
unsafe fn scores8_dp<const G: usize>(
    q: *const u32,
    lanes: usize,
    k: usize,
    rows: &[*const u16; 8],
    g0: usize,
    out: *mut f32,
    next: Ahead<'_>,
) {
    let mut fetch = Fetch::new(next);
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); G]; 8];
        let mut qv = [_mm512_setzero_si512(); G];
        for dp in 0..k.div_ceil(2) {
            fetch.step();
            for (v, qv) in qv.iter_mut().enumerate() {
                *qv = _mm512_loadu_si512(q.add(dp * lanes + 16 * (g0 + v)) as *const __m512i);
            }
            // the last of an odd k alone: the pair past it would read past the row
            let whole = 2 * dp + 1 < k;
            for (a, &r) in acc.iter_mut().zip(rows) {
                let pair = if whole {
                    (r.add(2 * dp) as *const u32).read_unaligned()
                } else {
                    *r.add(2 * dp) as u32
                };
                let b = _mm512_set1_epi32(pair as i32);
                for (a, &qv) in a.iter_mut().zip(&qv) {
                    *a = _mm512_dpbf16_ps(
                        *a,
                        std::mem::transmute::<__m512i, __m512bh>(qv),
                        std::mem::transmute::<__m512i, __m512bh>(b),
                    );
                }
            }
        }
        fetch.rest();
        for (j, a) in acc.iter().enumerate() {
            for (v, a) in a.iter().enumerate() {
                _mm512_storeu_ps(out.add(j * lanes + 16 * (g0 + v)), *a);
            }
        }
    }
}

/// `x`'s values rounded to bf16 in place, as `crate::bf16_bits` rounds (to nearest even, a
/// NaN kept quiet, subnormals rounded rather than flushed as `vcvtneps2bf16` would).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn round_to_bf16(x: &mut [f32]) {
    let whole = x.len() / 16 * 16;
    unsafe {
        let one = _mm512_set1_epi32(1);
        let half = _mm512_set1_epi32(0x7fff);
        let top = _mm512_set1_epi32(0xffff_0000u32 as i32);
        let abs = _mm512_set1_epi32(0x7fff_ffff);
        let inf = _mm512_set1_epi32(0x7f80_0000);
        let quiet = _mm512_set1_epi32(0x0040_0000);
        for c in (0..whole).step_by(16) {
            let p = x.as_mut_ptr().add(c) as *mut __m512i;
            let b = _mm512_loadu_si512(p);
            let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(b), one);
            let r = _mm512_and_si512(_mm512_add_epi32(_mm512_add_epi32(b, half), odd), top);
            let nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, abs), inf);
            let q = _mm512_and_si512(_mm512_or_si512(b, quiet), top);
            _mm512_storeu_si512(p, _mm512_mask_mov_epi32(r, nan, q));
        }
    }
    for v in &mut x[whole..] {
        *v = f32::from_bits((crate::bf16_bits(*v) as u32) << 16);
    }
}

/// `simd::pair_queries` (see there): sixteen rows by sixteen pairs at a time, each row's
/// 32 values' top halves gathered into pairs by one `vpermt2w`, then transposed so that a
/// pair index's sixteen rows are one store. (Pair by pair, a store 64 bytes from the last,
/// it took 8.5 us of a 19 us decode attention at depth 1: 16 heads of 576 values.)
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn pair_queries(q: &[f32], rows: usize, k: usize, lanes: usize, q16: &mut [u32]) {
    let whole = k / 32 * 32;
    unsafe {
        // word w of the result: word 2w + 1 (an f32's top half) of the pair of vectors
        let idx = _mm512_set_epi16(
            63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 31, 29, 27, 25, 23, 21,
            19, 17, 15, 13, 11, 9, 7, 5, 3, 1,
        );
        let dst = q16.as_mut_ptr();
        for g in (0..rows).step_by(16) {
            let n = (rows - g).min(16);
            let mut r = [_mm512_setzero_si512(); 16];
            for c in (0..whole).step_by(32) {
                for (i, r) in r.iter_mut().enumerate().take(n) {
                    let p = q.as_ptr().add((g + i) * k + c) as *const __m512i;
                    *r = _mm512_permutex2var_epi16(
                        _mm512_loadu_si512(p),
                        idx,
                        _mm512_loadu_si512(p.add(1)),
                    );
                }
                // rows past `rows` stay zero; their lanes past `lanes`' 16-groups never exist
                if n == 16 {
                    super::avx512::transpose_store_at(
                        &r,
                        dst.add(c / 2 * lanes + g) as *mut u8,
                        4 * lanes,
                    );
                } else {
                    // a partial group: transposed into a buffer, its rows copied
                    let mut t = [0u32; 256];
                    super::avx512::transpose_store(&r, t.as_mut_ptr() as *mut u8);
                    for j in 0..16 {
                        let at = (c / 2 + j) * lanes + g;
                        q16[at..at + n].copy_from_slice(&t[16 * j..16 * j + n]);
                    }
                }
            }
            // the pairs past the last whole 32 values
            for i in g..g + n {
                let qi = &q[i * k + whole..(i + 1) * k];
                for (d2, pair) in (whole / 2..).zip(qi.chunks(2)) {
                    let hi = pair.get(1).map_or(0, |v| v.to_bits() >> 16);
                    q16[d2 * lanes + i] = pair[0].to_bits() >> 16 | hi << 16;
                }
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
            // the wrapper checked that bf16_dot is only asked where vdpbf16ps exists
            KvRows::Bf16(kv) if t.bf16_dot => pv_dp(t, kv.as_ptr(), o),
            KvRows::Bf16(kv) => pv_of::<true>(t, kv.as_ptr() as *const u8, o),
            KvRows::Q8(_) => unreachable!("the wrapper refuses an 8-bit cache"),
        }
    }
}

thread_local! {
    /// A tile's probabilities as bf16 pairs (see `pv_dp`).
    static P_PAIRS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `pv_t` by `vdpbf16ps`, two positions at a time: the probabilities of positions 2j and
/// 2j + 1 rounded to bf16 and packed as one pair per query row, the two latent rows' 32
/// values interleaved into pairs by `vpunpck{l,h}wd`. Per 16 columns and two positions
/// that is one unpack and a `vdpbf16ps` per query row, where the f32 path widened two rows
/// (four operations) and did two FMAs per row: the f32 FMAs were the decode attention's
/// bound at depth. Columns past the last whole 32 go the f32 way.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")]
unsafe fn pv_dp(t: &PvTile<'_>, kv: *const u16, o: &mut [f32]) {
    let nj = t.offs.len();
    let pairs = nj.div_ceil(2);
    let mut pp = P_PAIRS.with(|c| c.take());
    pp.clear();
    pp.resize(pairs * t.lanes, 0);
    // SAFETY: the wrapper checked p's bounds (nj * lanes) and lanes % 16 == 0.
    unsafe {
        // interleave the two positions' 16 rounded values: pair i is (p_2j[i], p_2j+1[i])
        let idx = _mm512_set_epi16(
            31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20,
            4, 19, 3, 18, 2, 17, 1, 16, 0,
        );
        let p = t.p.as_ptr();
        for jp in 0..pairs {
            for g in (0..t.lanes).step_by(16) {
                let a = _mm512_loadu_ps(p.add(2 * jp * t.lanes + g));
                let b = if 2 * jp + 1 < nj {
                    _mm512_loadu_ps(p.add((2 * jp + 1) * t.lanes + g))
                } else {
                    _mm512_setzero_ps()
                };
                // low 16 bf16 from a, high 16 from b (round to nearest even)
                let h: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(b, a));
                let v = _mm512_permutexvar_epi16(idx, h);
                _mm512_storeu_si512(pp.as_mut_ptr().add(jp * t.lanes + g) as *mut __m512i, v);
            }
        }
        let mut i = 0;
        while i < t.rows {
            let rn = (t.rows - i).min(6);
            let mut c = 0;
            while c + 32 <= t.width {
                let two = c + 64 <= t.width;
                macro_rules! go {
                    ($r:literal) => {
                        if two {
                            pv_tile_dp::<$r, 2>(t, &pp, kv, i, c, o)
                        } else {
                            pv_tile_dp::<$r, 1>(t, &pp, kv, i, c, o)
                        }
                    };
                }
                match rn {
                    6 => go!(6),
                    5 => go!(5),
                    4 => go!(4),
                    3 => go!(3),
                    2 => go!(2),
                    _ => go!(1),
                }
                c += if two { 64 } else { 32 };
            }
            while c < t.width {
                pv_cols16::<true>(t, kv as *const u8, i, rn, c, o);
                c += 16;
            }
            i += rn;
        }
    }
    P_PAIRS.with(|c| c.replace(pp));
}

/// `R` query rows by `U` units of 32 latent columns from `c`, two positions a step. In the
/// accumulators a unit's columns lie as the unpacks leave them: the low one holds columns
/// 0-3, 8-11, 16-19, 24-27 of the unit, the high one 4-7, 12-15, 20-23, 28-31.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")]
unsafe fn pv_tile_dp<const R: usize, const U: usize>(
    t: &PvTile<'_>,
    pp: &[u32],
    kv: *const u16,
    i0: usize,
    c: usize,
    o: &mut [f32],
) {
    unsafe {
        let op = o.as_mut_ptr();
        let mut acc = [[[_mm512_setzero_ps(); 2]; U]; R];
        for (i, a) in acc.iter_mut().enumerate() {
            for (u, a) in a.iter_mut().enumerate() {
                let at = op.add((i0 + i) * t.width + c + 32 * u);
                let (x0, x1) = (_mm512_loadu_ps(at), _mm512_loadu_ps(at.add(16)));
                a[0] = _mm512_shuffle_f32x4::<0b10_00_10_00>(x0, x1);
                a[1] = _mm512_shuffle_f32x4::<0b11_01_11_01>(x0, x1);
            }
        }
        let nj = t.offs.len();
        let pr = pp.as_ptr().add(i0);
        for jp in 0..nj.div_ceil(2) {
            let oa = *t.offs.get_unchecked(2 * jp);
            // an odd tile's last pair repeats its row, with a probability of 0
            let ob = if 2 * jp + 1 < nj {
                *t.offs.get_unchecked(2 * jp + 1)
            } else {
                oa
            };
            let mut v = [[_mm512_setzero_si512(); 2]; U];
            for (u, v) in v.iter_mut().enumerate() {
                let a = _mm512_loadu_si512(kv.add(oa + c + 32 * u) as *const __m512i);
                let b = _mm512_loadu_si512(kv.add(ob + c + 32 * u) as *const __m512i);
                v[0] = _mm512_unpacklo_epi16(a, b);
                v[1] = _mm512_unpackhi_epi16(a, b);
            }
            for (i, a) in acc.iter_mut().enumerate() {
                let pb: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*pr.add(jp * t.lanes + i) as i32));
                for (a, v) in a.iter_mut().zip(&v) {
                    for h in 0..2 {
                        a[h] = _mm512_dpbf16_ps(
                            a[h],
                            pb,
                            std::mem::transmute::<__m512i, __m512bh>(v[h]),
                        );
                    }
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            for (u, a) in a.iter().enumerate() {
                let at = op.add((i0 + i) * t.width + c + 32 * u);
                let t0 = _mm512_shuffle_f32x4::<0b01_00_01_00>(a[0], a[1]);
                let t1 = _mm512_shuffle_f32x4::<0b11_10_11_10>(a[0], a[1]);
                _mm512_storeu_ps(at, _mm512_shuffle_f32x4::<0b11_01_10_00>(t0, t0));
                _mm512_storeu_ps(at.add(16), _mm512_shuffle_f32x4::<0b11_01_10_00>(t1, t1));
            }
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
                    pv_cols16::<BF>(t, kv, i, rn, c, o);
                    c += 16;
                }
            }
        }
        i += rn;
    }
}

/// Query rows `i..i + rn` (at most 6) by the up to 16 latent columns from `c`, the last
/// ones masked.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn pv_cols16<const BF: bool>(
    t: &PvTile<'_>,
    kv: *const u8,
    i: usize,
    rn: usize,
    c: usize,
    o: &mut [f32],
) {
    let left = t.width - c;
    let m = if left >= 16 { 0xffff } else { tail_mask(left) };
    // SAFETY: as `pv_tile`'s callers: the wrapper checked every bound; m covers the tail.
    unsafe {
        match rn {
            6 => pv_tile::<6, 1, BF>(t, kv, i, c, m, o),
            5 => pv_tile::<5, 1, BF>(t, kv, i, c, m, o),
            4 => pv_tile::<4, 1, BF>(t, kv, i, c, m, o),
            3 => pv_tile::<3, 1, BF>(t, kv, i, c, m, o),
            2 => pv_tile::<2, 1, BF>(t, kv, i, c, m, o),
            _ => pv_tile::<1, 1, BF>(t, kv, i, c, m, o),
        }
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
