//! Absorbed multi-head latent attention (DeepSeek-V2 paper, §2.1.2, "absorb" form): every
//! head attends over the same cached latent rows, so the cache holds 576 values per token
//! for V3 instead of 128 heads of K and V.
//!
//! Because all heads share the keys, attention is two matrix products per block of query
//! rows (a query row is one (token, head) pair, `[q_latent | q_pe]`, matching the cached
//! `[c_kv | k_pe]` rows): scores = Q · KVᵀ through the same register-tiled panel kernel as
//! the weights (a cache block is already a contiguous f32 panel), then O = P · C_kv with an
//! outer-product kernel. Each cache block is read once per query block rather than once
//! per head.
//!
//! Decode (and any step with few query rows) splits the *positions* across threads instead,
//! as flash-decoding does: each thread walks its tiles of 64 cached rows once, computing
//! the tile's scores for every query row, an online-softmax step and the tile's share of
//! the output while the tile is in L1/L2; the threads' partial outputs are merged by
//! their maxima and sums at the end. A tile's scores are stored with the query rows in
//! vector lanes (one vector per position), so the softmax runs lane-wise with a vectorised
//! exp. The two-pass form read the whole cache twice per query block and ran libm's exp
//! per score; at depth 4096 it was ~3x slower. The scalar level keeps the two-pass form: it
//! is the oracle the others are tested against.

mod amx;
mod decode;

use std::cell::RefCell;

use amx::amx_prefill;
use decode::split_positions;

use super::dispatch::Level;
use super::pool::{Disjoint, ThreadPool};
use super::simd::{self, GemmPanel, PvBlock};
use crate::backend::{KvRows, MlaAttention};

thread_local! {
    /// The caller's `[q_latent | q_pe]` rows.
    static QUERY: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A prefill's rows of an 8-bit cache as bf16, and their offsets.
    static FLAT: RefCell<(Vec<u16>, Vec<usize>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// A bf16 cache widened for the two-pass form, and its one-block table.
    static WIDE: RefCell<(Vec<f32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// At most this many query rows (tokens x heads) take the split-positions path: a decode
/// step of V3's 128 heads, or two tokens of a speculative check.
const SPLIT_ROWS: usize = 256;
pub fn mla_attention(level: Level, pool: &ThreadPool, a: &MlaAttention<'_>, out: &mut [f32]) {
    let (h, r, p) = (a.n_heads, a.kv_lora_rank, a.rope_dim);
    let row = r + p;
    let tokens = a.q_pe.len() / (h * p);
    let rows = tokens * h;
    assert!(out.len() >= rows * r && a.q_latent.len() >= rows * r);
    if rows == 0 {
        return;
    }
    if let KvRows::Q8(f) = a.kv
        && simd::has_amx(level)
        && rows > SPLIT_ROWS
    {
        // a prefill over an 8-bit cache on AMX: the sequence's rows converted to bf16 once
        // (what a decode step does a tile at a time), then attended over as a bf16 cache
        return FLAT.with(|fl| {
            let mut fl = fl.borrow_mut();
            let (rows16, offs) = &mut *fl;
            let len = a.start_pos + tokens;
            offs.clear();
            offs.extend((0..len).map(|j| a.row_offset(j)));
            rows16.resize(len * row, 0);
            simd::q8_rows_to_bf16(level, &f, offs, rows16);
            let flat = MlaAttention {
                kv: KvRows::Bf16(rows16),
                blocks: &[0],
                block_size: len,
                ..*a
            };
            mla_attention(level, pool, &flat, out)
        });
    }
    QUERY.with(|q| {
        let mut q = q.borrow_mut();
        if q.len() < rows * row {
            q.resize((rows * row).next_power_of_two(), 0.0);
        }
        // a bf16 (or 8-bit) cache's scores are bf16 products, as the bf16 dot instruction
        // makes them: every level rounds the queries alike, so all agree to f32 rounding
        let round = !matches!(a.kv, KvRows::F32(_));
        let fill = |i0: usize, q: &mut [f32]| {
            for (i, qi) in (i0..).zip(q.chunks_exact_mut(row)) {
                qi[..r].copy_from_slice(&a.q_latent[i * r..(i + 1) * r]);
                qi[r..].copy_from_slice(&a.q_pe[i * p..(i + 1) * p]);
                if round {
                    simd::round_to_bf16(level, qi);
                }
            }
        };
        let q = &mut q[..rows * row];
        if rows < 64 {
            fill(0, q);
        } else {
            // a prefill's rows over the pool (one thread filled them while the rest waited)
            let dst = Disjoint::new(q);
            pool.for_ranges(rows, 1, &|rg| {
                // SAFETY: rows rg are this range's alone.
                fill(rg.start, unsafe {
                    dst.slice(rg.start * row, rg.len() * row)
                })
            });
        }
        let q = &q[..];
        if level != Level::Scalar && rows <= SPLIT_ROWS {
            return split_positions(level, pool, a, q, out);
        }
        if simd::has_amx(level) && matches!(a.kv, KvRows::Bf16(_)) && r.is_multiple_of(16) {
            return amx_prefill(level, pool, a, q, out);
        }
        match a.kv {
            KvRows::F32(kv) => two_pass(level, pool, a, kv, q, out),
            // the two-pass form reads f32 panels: widen this sequence's rows once, in
            // position order
            KvRows::Bf16(_) | KvRows::Q8(_) => WIDE.with(|w| {
                let mut w = w.borrow_mut();
                let (wide, ids) = &mut *w;
                let len = a.start_pos + tokens;
                wide.resize(len * row, 0.0);
                if let KvRows::Q8(f) = a.kv {
                    // an 8-bit cache's rows straight to f32, by vector where there is one
                    FLAT.with(|fl| {
                        let offs = &mut fl.borrow_mut().1;
                        offs.clear();
                        offs.extend((0..len).map(|j| a.row_offset(j)));
                        simd::q8_rows_to_f32(level, &f, offs, wide);
                    });
                } else {
                    for (j, dst) in wide.chunks_exact_mut(row).enumerate() {
                        a.kv.read(a.row_offset(j), dst);
                    }
                }
                ids.clear();
                ids.push(0);
                let flat = MlaAttention {
                    kv: KvRows::F32(wide),
                    blocks: ids,
                    block_size: len,
                    ..*a
                };
                two_pass(level, pool, &flat, wide, q, out)
            }),
        }
    });
}

/// Query blocks over threads, each attending with [`attend`] over the whole cache.
fn two_pass(
    level: Level,
    pool: &ThreadPool,
    a: &MlaAttention<'_>,
    kv: &[f32],
    q: &[f32],
    out: &mut [f32],
) {
    let (h, r) = (a.n_heads, a.kv_lora_rank);
    let row = r + a.rope_dim;
    let rows = q.len() / row;
    let tokens = rows / h;
    // Query blocks: one per thread for a decode step (each block reads the whole
    // cache once, so fewer is better), a whole number of 4-row tiles, at most 64 rows.
    let per = rows
        .div_ceil(pool.threads())
        .clamp(4, 64)
        .next_multiple_of(4);
    let dst = Disjoint::new(out);
    // scores of one chunk: `per` rows by every position the sequence's blocks hold,
    // rounded up so a sequence growing a token per step re-sizes once per doubling
    let len = a.start_pos + tokens;
    let scratch = (per * len.max(a.blocks.len() * a.block_size)).next_power_of_two();
    pool.for_chunks_scratch(rows.div_ceil(per), scratch, &|c, scores| {
        let qr = c * per..((c + 1) * per).min(rows);
        // SAFETY: query rows qr's outputs belong to this chunk alone.
        let o = unsafe { dst.slice(qr.start * r, qr.len() * r) };
        attend(
            level,
            a,
            kv,
            &q[qr.start * row..qr.end * row],
            qr.start,
            o,
            scores,
        );
    });
}

/// Query rows `first..first + q.len() / row` against their causal prefix of the cache.
#[allow(clippy::too_many_arguments)]
fn attend(
    level: Level,
    a: &MlaAttention<'_>,
    kv: &[f32],
    q: &[f32],
    first: usize,
    o: &mut [f32],
    scores: &mut [f32],
) {
    let (h, r) = (a.n_heads, a.kv_lora_rank);
    let row = r + a.rope_dim;
    let n = q.len() / row;
    let last_token = (first + n - 1) / h;
    let len = a.start_pos + last_token + 1; // keys the last query row may see
    let bs = a.block_size;
    {
        let s = &mut scores[..n * len];
        // S = Q · KVᵀ, block by block of the cache
        for (b, &blk) in a.blocks.iter().enumerate().take(len.div_ceil(bs)) {
            let j0 = b * bs;
            let nb = bs.min(len - j0);
            let base = blk as usize * bs * row;
            let g = GemmPanel {
                panel: &kv[base..base + nb * row],
                rows: nb,
                k: row,
                x: q,
                n,
                m: len,
                r0: j0,
            };
            // SAFETY: `s` holds n rows of `len` scores.
            unsafe { simd::gemm_panel(level, &g, s.as_mut_ptr()) };
        }
        // causal mask, scale, softmax
        for i in 0..n {
            let visible = a.start_pos + (first + i) / h + 1;
            simd::softmax_row(level, &mut s[i * len..(i + 1) * len], visible, a.scale);
        }
        // O = P · C_kv (the latent half of each cached row)
        o.fill(0.0);
        for (b, &blk) in a.blocks.iter().enumerate().take(len.div_ceil(bs)) {
            let j0 = b * bs;
            let nb = bs.min(len - j0);
            let base = blk as usize * bs * row;
            let pv = PvBlock {
                p: s,
                ld_p: len,
                j0,
                nj: nb,
                v: &kv[base..base + nb * row],
                ld_v: row,
                n,
                width: r,
            };
            simd::pv_accumulate(level, &pv, o);
        }
    }
}
