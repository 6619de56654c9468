//! Absorbed multi-head latent attention (DeepSeek-V2 paper, §2.1.2, "absorb" form): every
//! head attends over the same cached latent rows, so the cache holds 576 values per token
//! for V3 instead of 128 heads of K and V.
//!
//! Because all heads share the keys, attention is two matrix products per block of query
//! rows (a query row is one (token, head) pair, `[q_latent | q_pe]`, matching the cached
//! `[c_kv | k_pe]` rows): scores = Q · KVᵀ through the same register-tiled panel kernel as
//! the weights (a cache block is already a contiguous f32 panel), then O = P · C_kv with an
//! outer-product kernel. Each cache block is read once per query block rather than once
//! per head, which is what keeps decode at depth bound by memory, not by dot products.

use std::cell::RefCell;

use super::dispatch::Level;
use super::norm::softmax;
use super::pool::{Disjoint, ThreadPool};
use super::simd::{self, GemmPanel, PvBlock};
use crate::backend::MlaAttention;

thread_local! {
    /// The caller's `[q_latent | q_pe]` rows.
    static QUERY: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

pub fn mla_attention(level: Level, pool: &ThreadPool, a: &MlaAttention<'_>, out: &mut [f32]) {
    let (h, r, p) = (a.n_heads, a.kv_lora_rank, a.rope_dim);
    let row = r + p;
    let tokens = a.q_pe.len() / (h * p);
    let rows = tokens * h;
    assert!(out.len() >= rows * r && a.q_latent.len() >= rows * r);
    if rows == 0 {
        return;
    }
    QUERY.with(|q| {
        let mut q = q.borrow_mut();
        if q.len() < rows * row {
            q.resize((rows * row).next_power_of_two(), 0.0);
        }
        for i in 0..rows {
            q[i * row..i * row + r].copy_from_slice(&a.q_latent[i * r..(i + 1) * r]);
            q[i * row + r..(i + 1) * row].copy_from_slice(&a.q_pe[i * p..(i + 1) * p]);
        }
        let q = &q[..rows * row];
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
                &q[qr.start * row..qr.end * row],
                qr.start,
                o,
                scores,
            );
        });
    });
}

/// Query rows `first..first + q.len() / row` against their causal prefix of the cache.
fn attend(
    level: Level,
    a: &MlaAttention<'_>,
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
                panel: &a.kv[base..base + nb * row],
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
            let si = &mut s[i * len..(i + 1) * len];
            for v in &mut si[..visible] {
                *v *= a.scale;
            }
            softmax(&mut si[..visible]);
            si[visible..].fill(0.0);
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
                v: &a.kv[base..base + nb * row],
                ld_v: row,
                n,
                width: r,
            };
            simd::pv_accumulate(level, &pv, o);
        }
    }
}
