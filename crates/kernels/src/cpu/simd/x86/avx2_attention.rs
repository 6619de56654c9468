//! AVX2 decode attention and the `e^x` users: scores with the query rows in lanes, each
//! cached value broadcast against 16 transposed query rows (a bf16 tile widened to f32 on
//! the way, once for all rows and for the output's product too); the probabilities times
//! the latents as outer products; softmax and SwiGLU's join with a vector `e^x`. The
//! portable bodies they replace loaded two vectors per FMA (a dot per query row and
//! position; an `axpy` into the output row per position).

use std::arch::x86_64::*;

use super::super::{Ahead, PvTile, ScoresTile, SoftmaxStep, portable};
use crate::backend::KvRows;

/// 8 cached values from element `i` on, as f32: f32 as stored, bf16 (`BF`) widened exactly
/// by a shift.
#[inline(always)]
unsafe fn load8<const BF: bool>(base: *const u8, i: usize) -> __m256 {
    unsafe {
        if BF {
            let h = _mm_loadu_si128(base.add(2 * i) as *const __m128i);
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        } else {
            _mm256_loadu_ps(base.add(4 * i) as *const f32)
        }
    }
}

/// One cached value as f32 (the tails past the last whole vector).
#[inline(always)]
unsafe fn load1<const BF: bool>(base: *const u8, i: usize) -> f32 {
    unsafe {
        if BF {
            f32::from_bits(((base.add(2 * i) as *const u16).read_unaligned() as u32) << 16)
        } else {
            (base.add(4 * i) as *const f32).read_unaligned()
        }
    }
}

/// The sum of `v`'s lanes.
#[inline(always)]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    unsafe {
        let v = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
        _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)))
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn scores_t(t: &ScoresTile<'_>, s: &mut [f32]) {
    match t.kv {
        // SAFETY: the wrapper checked every row's bounds, qt's and s's.
        KvRows::F32(kv) if !t.qt.is_empty() => unsafe {
            scores_qt::<false>(t, kv.as_ptr() as *const u8, std::ptr::null_mut(), s)
        },
        // (attention always passes the transposed queries, and a bf16 tile to
        // `scores_widening`)
        _ => portable::scores_t(t, s),
    }
}

/// `simd::scores_widening`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn scores_widening(t: &ScoresTile<'_>, s: &mut [f32], wide: &mut [f32]) {
    match t.kv {
        // SAFETY: the wrapper checked every row's bounds, qt's, s's and wide's.
        KvRows::Bf16(kv) => unsafe {
            scores_qt::<true>(t, kv.as_ptr() as *const u8, wide.as_mut_ptr(), s)
        },
        _ => unreachable!("the wrapper takes only a bf16 tile"),
    }
}

/// The scores with the query rows in lanes, as they are stored: per cached value, one
/// broadcast multiplies 16 query rows (two vectors of `qt`). Six positions by 16 rows keep
/// 12 sums, two query vectors and a broadcast in 15 registers: 8 loads for 12 FMAs, and no
/// horizontal sums. (A dot per query row and position before needed `R + 4` loads and 4
/// widenings for `4R` FMAs.)
///
/// With `WIDEN`, each group of six positions' bf16 rows are widened into `wide` first
/// (`wide[j * k..]` holds row `offs[j]`), where the scores read them and the output's
/// product will. The next tile's rows are asked for into L2 a line every other step of the
/// tiles (`Fetch`): over an f32 cache at depth 4096 on 12 layers from memory that took
/// 0.89-0.90x the time, alternated within one run on Zen 4 (bf16 and 8-bit caches, bound
/// by their widening here, neither gained nor lost). Asked for all at once, a tile ahead or
/// two groups ahead, they had been slower than the hardware's prefetchers alone.
#[inline(always)]
unsafe fn scores_qt<const WIDEN: bool>(
    t: &ScoresTile<'_>,
    src: *const u8,
    wide: *mut f32,
    s: &mut [f32],
) {
    let (qt, lanes, k, offs) = (t.qt.as_ptr(), t.lanes, t.k, t.offs);
    let out = s.as_mut_ptr();
    let groups = offs.len().div_ceil(6);
    for j in (0..offs.len()).step_by(6) {
        let n = (offs.len() - j).min(6);
        let mut next = t.prefetch.share(j / 6, groups);
        let mut keys = [0usize; 6];
        let kv = if WIDEN {
            for (i, key) in keys[..n].iter_mut().enumerate() {
                *key = (j + i) * k;
                // SAFETY: the wrapper checked the row's bounds and wide's length.
                unsafe {
                    let dst = wide.add(*key);
                    let mut d = 0;
                    while d + 8 <= k {
                        _mm256_storeu_ps(dst.add(d), load8::<true>(src, offs[j + i] + d));
                        d += 8;
                    }
                    while d < k {
                        *dst.add(d) = load1::<true>(src, offs[j + i] + d);
                        d += 1;
                    }
                }
            }
            wide as *const f32
        } else {
            keys[..n].copy_from_slice(&offs[j..j + n]);
            src as *const f32
        };
        let keys = &keys[..n];
        let mut lb = 0;
        while lb < t.rows {
            // SAFETY (all the tiles): the wrapper checked every row's bounds, qt's (k rows
            // of lanes) and s's (offs.len() groups of lanes).
            unsafe {
                let (q, o) = (qt.add(lb), out.add(j * lanes + lb));
                match n {
                    6 => qt_tile::<6>(q, lanes, k, kv, keys, o, next),
                    5 => qt_tile::<5>(q, lanes, k, kv, keys, o, next),
                    4 => qt_tile::<4>(q, lanes, k, kv, keys, o, next),
                    3 => qt_tile::<3>(q, lanes, k, kv, keys, o, next),
                    2 => qt_tile::<2>(q, lanes, k, kv, keys, o, next),
                    _ => qt_tile::<1>(q, lanes, k, kv, keys, o, next),
                }
            }
            next = next.rows(0..0);
            lb += 16;
        }
    }
}

/// `J` positions by the 16 query rows whose transposed values start at `qt`:
/// `out[j * lanes + l] = Σ_d qt[d * lanes + l] * kv[keys[j] + d]`.
#[inline(always)]
unsafe fn qt_tile<const J: usize>(
    qt: *const f32,
    lanes: usize,
    k: usize,
    kv: *const f32,
    keys: &[usize],
    out: *mut f32,
    next: Ahead<'_>,
) {
    let mut fetch = super::Fetch::new(next);
    unsafe {
        let mut key = [kv; J];
        for (p, &off) in key.iter_mut().zip(keys) {
            *p = kv.add(off);
        }
        let mut acc = [[_mm256_setzero_ps(); 2]; J];
        for d in 0..k {
            // (a line every other step spreads a group's share over its steps)
            if d % 2 == 0 {
                fetch.step();
            }
            let q = qt.add(d * lanes);
            let (q0, q1) = (_mm256_loadu_ps(q), _mm256_loadu_ps(q.add(8)));
            for (a, p) in acc.iter_mut().zip(&key) {
                let b = _mm256_broadcast_ss(&*p.add(d));
                a[0] = _mm256_fmadd_ps(b, q0, a[0]);
                a[1] = _mm256_fmadd_ps(b, q1, a[1]);
            }
        }
        fetch.rest();
        for (j, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(j * lanes), a[0]);
            _mm256_storeu_ps(out.add(j * lanes + 8), a[1]);
        }
    }
}

/// `simd::q8_rows_to_f32`: the latent's whole blocks as `bf16(q · d)` by
/// `avx2::widen_q8_0`, kept as f32; the rope part widened from bf16 by a shift.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q8_rows_to_f32(f: &crate::kv_q8::Q8Rows<'_>, offs: &[usize], out: &mut [f32]) {
    use crate::kv_q8::{BLOCK, BLOCK_BYTES, rope_offset, row_bytes};
    let (r, p) = (f.r, f.p);
    let (rb, whole) = (row_bytes(r, p), r / BLOCK);
    for (&o, dst) in offs.iter().zip(out.chunks_exact_mut(r + p)) {
        let b = f.byte_offset(o);
        let row = &f.bytes[b..b + rb];
        // SAFETY: this function's target features are the callee's.
        unsafe {
            super::avx2::widen_q8_0::<true>(&row[..whole * BLOCK_BYTES], &mut dst[..whole * BLOCK])
        };
        // SAFETY: the rope part reads 2p bytes from rope_offset(r) and writes p values from
        // r, within the row and dst.
        unsafe {
            let (rope, d) = (row.as_ptr().add(rope_offset(r)), dst.as_mut_ptr());
            let mut i = 0;
            while i + 8 <= p {
                _mm256_storeu_ps(d.add(r + i), load8::<true>(rope, i));
                i += 8;
            }
        }
        // a partial last block and the rope's tail, by the scalar rule
        for (i, v) in dst.iter_mut().enumerate().skip(whole * BLOCK) {
            if i < r || i >= r + p / 8 * 8 {
                *v = f32::from_bits((crate::kv_q8::value(row, r, i) as u32) << 16);
            }
        }
    }
}

/// `e^x` lane-wise, as `portable::exp_approx` (same reduction and polynomial), the power of
/// two built in the exponent bits; 0 below -87.33, for -inf and for NaN.
#[inline(always)]
unsafe fn exp256(x: __m256) -> __m256 {
    unsafe {
        let live = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(-87.33));
        let xc = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-87.33)),
            _mm256_set1_ps(88.37),
        );
        let n = _mm256_floor_ps(_mm256_fmadd_ps(
            xc,
            _mm256_set1_ps(std::f32::consts::LOG2_E),
            _mm256_set1_ps(0.5),
        ));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), xc);
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            0.166_666_65,
            0.5,
        ] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let e = _mm256_add_ps(
            _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
            _mm256_set1_ps(1.0),
        );
        let pow = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_and_ps(_mm256_mul_ps(e, _mm256_castsi256_ps(pow)), live)
    }
}

/// `gate = silu(gate) * up` with [`exp256`] (libm's `exp` per value before).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let (pg, pu) = (gate.as_mut_ptr(), up.as_ptr());
    let mut i = 0;
    unsafe {
        let one = _mm256_set1_ps(1.0);
        while i + 8 <= n {
            let g = _mm256_loadu_ps(pg.add(i));
            let u = _mm256_loadu_ps(pu.add(i));
            let e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), g));
            let s = _mm256_div_ps(g, _mm256_add_ps(one, e));
            _mm256_storeu_ps(pg.add(i), _mm256_mul_ps(s, u));
            i += 8;
        }
    }
    portable::silu_mul(&mut gate[i..n], &up[i..n]);
}

/// `simd::softmax_row`: three passes over the row (scale and maximum, [`exp256`] and sum,
/// normalise), 8 lanes at a time; the tail through the scalar `exp_approx`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn softmax_row(s: &mut [f32], visible: usize, scale: f32) -> (f32, f32) {
    let (n, p) = (visible.min(s.len()), s.as_mut_ptr());
    let whole = n / 8 * 8;
    unsafe {
        let sc = _mm256_set1_ps(scale);
        let mut mx = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i < whole {
            let v = _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), sc);
            _mm256_storeu_ps(p.add(i), v);
            mx = _mm256_max_ps(mx, v);
            i += 8;
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), mx);
        let mut top = lanes.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        for v in &mut s[whole..n] {
            *v *= scale;
            top = top.max(*v);
        }
        let mxv = _mm256_set1_ps(top);
        let mut sum = _mm256_setzero_ps();
        i = 0;
        while i < whole {
            let e = exp256(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), mxv));
            _mm256_storeu_ps(p.add(i), e);
            sum = _mm256_add_ps(sum, e);
            i += 8;
        }
        let mut l = hsum(sum);
        for v in &mut s[whole..n] {
            *v = portable::exp_approx(*v - top);
            l += *v;
        }
        let inv = 1.0 / l;
        let invv = _mm256_set1_ps(inv);
        i = 0;
        while i < whole {
            _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), invv));
            i += 8;
        }
        for v in &mut s[whole..n] {
            *v *= inv;
        }
        s[n..].fill(0.0);
        (top, l)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn softmax_step(s: &mut [f32], st: &mut SoftmaxStep<'_>) {
    let n = st.lanes;
    unsafe {
        let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
        let scale = _mm256_set1_ps(st.scale);
        // unsigned compare by flipping the sign bits
        let flip = _mm256_set1_epi32(i32::MIN);
        for g in (0..n).step_by(8) {
            // SAFETY (here and below): the wrapper checked the lengths of s, m, l, alpha,
            // visible.
            let vis = _mm256_xor_si256(
                _mm256_loadu_si256(st.visible.as_ptr().add(g) as *const __m256i),
                flip,
            );
            let m_old = _mm256_loadu_ps(st.m.as_ptr().add(g));
            let mut mx = m_old;
            for j in 0..st.nj {
                let p = s.as_mut_ptr().add(j * n + g);
                let pos = _mm256_xor_si256(_mm256_set1_epi32((st.j0 + j) as i32), flip);
                let seen = _mm256_castsi256_ps(_mm256_cmpgt_epi32(vis, pos));
                let v = _mm256_blendv_ps(ninf, _mm256_mul_ps(_mm256_loadu_ps(p), scale), seen);
                _mm256_storeu_ps(p, v);
                mx = _mm256_max_ps(mx, v);
            }
            let empty = _mm256_cmp_ps::<_CMP_EQ_OQ>(mx, ninf);
            // rows still without a visible position keep alpha 1 and exponents against 0
            let alpha =
                _mm256_blendv_ps(exp256(_mm256_sub_ps(m_old, mx)), _mm256_set1_ps(1.0), empty);
            let base = _mm256_andnot_ps(empty, mx);
            let mut sum = _mm256_mul_ps(_mm256_loadu_ps(st.l.as_ptr().add(g)), alpha);
            for j in 0..st.nj {
                let p = s.as_mut_ptr().add(j * n + g);
                let e = exp256(_mm256_sub_ps(_mm256_loadu_ps(p), base));
                _mm256_storeu_ps(p, e);
                sum = _mm256_add_ps(sum, e);
            }
            _mm256_storeu_ps(st.m.as_mut_ptr().add(g), mx);
            _mm256_storeu_ps(st.l.as_mut_ptr().add(g), sum);
            _mm256_storeu_ps(st.alpha.as_mut_ptr().add(g), alpha);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
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

/// Columns outside, rows inside: one block of 16 columns of the tile's latents (4 KB of a
/// widened tile of 64) stays in L1 while every group of rows takes it.
#[inline(always)]
unsafe fn pv_of<const BF: bool>(t: &PvTile<'_>, kv: *const u8, o: &mut [f32]) {
    let whole = t.width / 16 * 16;
    let mut c = 0;
    while c < whole {
        let mut i = 0;
        while i < t.rows {
            let rn = (t.rows - i).min(6);
            // SAFETY: the wrapper checked o's, p's and every row's bounds.
            unsafe {
                match rn {
                    6 => pv_tile::<6, BF>(t, kv, i, c, o),
                    5 => pv_tile::<5, BF>(t, kv, i, c, o),
                    4 => pv_tile::<4, BF>(t, kv, i, c, o),
                    3 => pv_tile::<3, BF>(t, kv, i, c, o),
                    2 => pv_tile::<2, BF>(t, kv, i, c, o),
                    _ => pv_tile::<1, BF>(t, kv, i, c, o),
                }
            }
            i += rn;
        }
        c += 16;
    }
    // columns past the last 16
    for r in 0..t.rows {
        for (j, &off) in t.offs.iter().enumerate() {
            let pij = t.p[j * t.lanes + r];
            for col in whole..t.width {
                o[r * t.width + col] += pij * unsafe { load1::<BF>(kv, off + col) };
            }
        }
    }
}

/// `R` query rows by 16 latent columns from `c`: per position, 2 loads and `R` broadcasts
/// for `2R` FMAs (six rows: 12 sums, 2 values and a broadcast in 15 registers).
#[inline(always)]
unsafe fn pv_tile<const R: usize, const BF: bool>(
    t: &PvTile<'_>,
    kv: *const u8,
    i0: usize,
    c: usize,
    o: &mut [f32],
) {
    unsafe {
        let op = o.as_mut_ptr();
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for (i, a) in acc.iter_mut().enumerate() {
            for (q, v) in a.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(op.add((i0 + i) * t.width + c + 8 * q));
            }
        }
        let pp = t.p.as_ptr().add(i0);
        for (j, &off) in t.offs.iter().enumerate() {
            let v = [load8::<BF>(kv, off + c), load8::<BF>(kv, off + c + 8)];
            for (i, a) in acc.iter_mut().enumerate() {
                let b = _mm256_set1_ps(*pp.add(j * t.lanes + i));
                a[0] = _mm256_fmadd_ps(b, v[0], a[0]);
                a[1] = _mm256_fmadd_ps(b, v[1], a[1]);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            for (q, v) in a.iter().enumerate() {
                _mm256_storeu_ps(op.add((i0 + i) * t.width + c + 8 * q), *v);
            }
        }
    }
}
