//! Prefill attention over a bf16 cache on AMX's bf16 tiles.

use std::cell::RefCell;

use super::super::dispatch::Level;
use super::super::pool::{Disjoint, ThreadPool};
use super::super::simd;
use crate::backend::{KvRows, MlaAttention};

/// The AMX prefill's operands (see [`amx_prefill`]).
struct Tiles {
    /// The queries as bf16 rows, padded to 32 values and to whole tiles of 16 rows.
    q16: Vec<u16>,
    /// A block of cached rows as the tiles' B side of the scores:
    /// `[positions / 16][k / 2][16][2]`.
    keys: Vec<u16>,
    /// Their latent part as the B side of the output: `[r / 16][positions / 2][16][2]`.
    values: Vec<u16>,
    /// Per query row, the running maximum and sum of its softmax over the blocks so far.
    ml: Vec<f32>,
}

thread_local! {
    static TILES: RefCell<Tiles> = const {
        RefCell::new(Tiles {
            q16: Vec::new(),
            keys: Vec::new(),
            values: Vec::new(),
            ml: Vec::new(),
        })
    };
    /// A query block's probabilities as bf16 rows.
    static P16: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// Query rows a chunk of the AMX prefill takes: two tiles of 16, so each key tile loaded
/// serves two tile products.
const AMX_QUERY_ROWS: usize = 32;

/// Cached positions the AMX prefill packs at a time (a multiple of 32): their keys and
/// values as tiles take 1.1 MB at V3's widths, whatever the context's length.
const AMX_KV_BLOCK: usize = 512;

/// Prefill attention over a bf16 cache on AMX tiles (`Level::Amx`): the two products of
/// the two-pass form as bf16 tile products, the scores with the query rows as the tiles' A
/// side and the cached rows packed as B, the output with the probabilities (rounded to
/// bf16) as A and the latents packed as B. A bf16 cache already rounds keys and values, and
/// its scores are bf16 products at every level; this path also rounds the probabilities,
/// as llama.cpp's f16 attention does.
///
/// The cache is packed [`AMX_KV_BLOCK`] positions at a time, and every query block that
/// sees a block attends over it before the next is packed (so what is packed stays in L2
/// and its size does not grow with the context): each block's softmax is merged into the
/// rows' outputs by its maximum and sum, as flash attention does. Per query block, only
/// the positions its last row sees are scored.
pub(super) fn amx_prefill(
    level: Level,
    pool: &ThreadPool,
    a: &MlaAttention<'_>,
    q: &[f32],
    out: &mut [f32],
) {
    let (h, r, p) = (a.n_heads, a.kv_lora_rank, a.rope_dim);
    let KvRows::Bf16(kv) = a.kv else {
        unreachable!("amx_prefill takes a bf16 cache")
    };
    let row = r + p;
    let rows = q.len() / row;
    let tokens = rows / h;
    let len = a.start_pos + tokens;
    let kp = row.next_multiple_of(32);
    let kb = AMX_KV_BLOCK;
    let rows16 = rows.next_multiple_of(16);
    TILES.with(|t| {
        let t = &mut *t.borrow_mut();
        // the queries are already rounded to bf16: their top halves are exact
        t.q16.clear();
        t.q16.resize(rows16 * kp, 0);
        let qd = Disjoint::new(&mut t.q16[..]);
        pool.for_ranges(rows, 1, &|rg| {
            // SAFETY: rows rg are this range's alone.
            let q16 = unsafe { qd.slice(rg.start * kp, rg.len() * kp) };
            for (dst, src) in q16
                .chunks_exact_mut(kp)
                .zip(q[rg.start * row..].chunks_exact(row))
            {
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d = (v.to_bits() >> 16) as u16;
                }
            }
        });
        // every value of both is written per block below (zeros past the context's end)
        t.keys.resize(kb * kp, 0);
        t.values.resize(r * kb, 0);
        t.ml.clear();
        t.ml.resize(2 * rows, 0.0);
        let dst = Disjoint::new(out);
        let qb = AMX_QUERY_ROWS;
        for b0 in (0..len).step_by(kb) {
            let bn = kb.min(len - b0);
            let (kd, vd) = (
                Disjoint::new(&mut t.keys[..]),
                Disjoint::new(&mut t.values[..]),
            );
            pool.for_chunks(kb / 32, &|c| {
                let group = simd::KvGroup {
                    rows: std::array::from_fn(|i| {
                        let j = 32 * c + i;
                        (j < bn).then(|| &kv[a.row_offset(b0 + j)..a.row_offset(b0 + j) + row])
                    }),
                    r,
                    kp,
                    kb,
                };
                // SAFETY: positions 32c..32c + 32's places are this chunk's alone, inside
                // the buffers sized above.
                unsafe {
                    simd::amx_pack_kv(
                        level,
                        &group,
                        kd.ptr().add(32 * c * kp),
                        vd.ptr().add(16 * 32 * c),
                    )
                };
            });
            let (q16, keys, values) = (&t.q16[..], &t.keys[..], &t.values[..]);
            let mld = Disjoint::new(&mut t.ml[..]);
            pool.for_chunks_scratch(rows.div_ceil(qb), qb * (kb + r), &|c, scratch| {
                let (q0, qn) = (c * qb, qb.min(rows - c * qb));
                let qn16 = qn.next_multiple_of(16);
                // the positions of this block the chunk's last row sees
                let seen = (a.start_pos + (q0 + qn - 1) / h + 1).saturating_sub(b0);
                if seen == 0 {
                    return;
                }
                let sn = seen.min(bn);
                let (n16, n32) = (sn.next_multiple_of(16), sn.next_multiple_of(32));
                let (s, staged) = scratch.split_at_mut(qb * kb);
                let scores = simd::AmxBf16Gemm {
                    w: simd::u16_bytes(&q16[q0 * kp..(q0 + qn16) * kp]),
                    rb: 2 * kp,
                    rows: qn16,
                    k: kp,
                    acts: keys,
                    acts_k: kp,
                    n: n16,
                    m: n32,
                    r0: 0,
                    rows_out: true,
                };
                // SAFETY: s holds qn16 rows of n32 scores.
                unsafe { simd::amx_bf16_gemm(level, &scores, s.as_mut_ptr()) };
                // SAFETY: rows q0..q0 + qn's maxima and sums are this chunk's alone.
                let ml = unsafe { mld.slice(2 * q0, 2 * qn) };
                // per row, what its outputs so far and this block's are weighed by
                let mut weights = [(0f32, 0f32); AMX_QUERY_ROWS];
                for (i, (mli, w)) in ml.chunks_exact_mut(2).zip(&mut weights).enumerate() {
                    let visible = (a.start_pos + (q0 + i) / h + 1).saturating_sub(b0).min(sn);
                    let si = &mut s[i * n32..(i + 1) * n32];
                    let (mb, lb) = simd::softmax_row(level, si, visible, a.scale);
                    if visible == 0 {
                        // nothing of this block is visible to the row: keep what it has
                        *w = (1.0, 0.0);
                        continue;
                    }
                    // every row sees position 0, so its first block starts the sums
                    let (m, l) = if b0 == 0 { (mb, 0.0) } else { (mli[0], mli[1]) };
                    let top = m.max(mb);
                    let (old, new) = (l * (m - top).exp(), lb * (mb - top).exp());
                    let total = old + new;
                    (mli[0], mli[1]) = (top, total);
                    *w = (old / total, new / total);
                }
                P16.with(|p16| {
                    let mut p16 = p16.borrow_mut();
                    p16.clear();
                    simd::round_bf16(level, &s[..qn * n32], &mut p16);
                    p16.resize(qn16 * n32, 0);
                    let o = simd::AmxBf16Gemm {
                        w: simd::u16_bytes(&p16),
                        rb: 2 * n32,
                        rows: qn16,
                        k: n32,
                        acts: values,
                        acts_k: kb,
                        n: r,
                        m: r,
                        r0: 0,
                        rows_out: true,
                    };
                    // SAFETY: staged holds qn16 rows of r outputs.
                    unsafe { simd::amx_bf16_gemm(level, &o, staged.as_mut_ptr()) };
                });
                // SAFETY: query rows q0..q0 + qn are this chunk's alone.
                let o = unsafe { dst.slice(q0 * r, qn * r) };
                for ((oi, si), &(wo, wn)) in o
                    .chunks_exact_mut(r)
                    .zip(staged.chunks_exact(r))
                    .zip(&weights)
                {
                    if b0 == 0 {
                        // the first block overwrites (out is uninitialised)
                        oi.copy_from_slice(si);
                    } else if wn != 0.0 {
                        oi.iter_mut()
                            .zip(si)
                            .for_each(|(o, &v)| *o = wo * *o + wn * v);
                    }
                }
            });
        }
    });
}
