//! MLA's expanded form (the paper's, before absorption), which a long prefill chunk takes:
//! the cached latents mapped through `wkv_b` to per-head keys and values once, then
//! attended one head at a time.

use kernels::{Backend, Heads, MlaAttention};

use super::{KvB, Mla};
use crate::kv_cache::KvPool;
use crate::model::PagedSeq;
use crate::scratch::Buf;

/// Keys and values the expanded form holds at once, as its per-head rows `[k_nope | v |
/// k_pe]` (f32 values): 1M is 4 MiB, a few heads of a long prompt, so a prefill's largest
/// buffer stays small beside the KV cache.
pub(super) const EXPANDED_GROUP_VALUES: usize = 1 << 20;

/// Cached latents the expanded form widens at once (f32 values, 1 MiB): a block of
/// positions at a time, so a prefill at depth holds no copy of the whole cache.
pub(super) const LATENT_BLOCK_VALUES: usize = 1 << 18;

/// From how many tokens per chunk the expanded form costs fewer multiply-adds. Per query
/// and cached position, absorbed attention does `2 r + rope` per head and expanded
/// `2 v + nope + rope` (its kernel's scores also run over the zero query part facing the
/// values); expanding costs `(nope + v) r` per position and head, once per chunk.
pub(super) fn expand_from(r: usize, nope: usize, vd: usize) -> usize {
    let saved = (2 * r).saturating_sub(2 * vd + nope);
    if saved == 0 {
        usize::MAX
    } else {
        ((nope + vd) * r).div_ceil(saved) + 1
    }
}

impl Mla {
    /// Attention for one sequence's chunk in the expanded form, as the paper writes MLA
    /// before absorption: every cached position's latent is mapped through `wkv_b` to its
    /// per-head key and value once, and the chunk's queries attend over those. For a long
    /// chunk this is several times fewer multiply-adds than the absorbed form, which pays
    /// `2 * kv_lora_rank` per query, position and head. The same attention kernel runs it,
    /// one head at a time, over rows `[v | k_nope | k_pe]` as `[latent | rope part]`: the
    /// query is `[0 | q_nope | q_pe]`, so the scores are `q_nope · k_nope + q_pe · k_pe`,
    /// and the output (the probabilities times the latent part) is the head's output, with
    /// nothing computed for the keys' half. Writes `o` `[n, n_heads, v_head_dim]`.
    pub(super) fn attend_expanded(
        &self,
        be: &dyn Backend,
        (q_nope, q_pe): (&[f32], &[f32]),
        pool: &KvPool,
        layer: usize,
        span: &PagedSeq<'_>,
        o: &mut [f32],
    ) {
        let (h, r, p) = (self.n_heads, self.kv_lora_rank, self.qk_rope_head_dim);
        let (nope, vd) = (self.qk_nope_head_dim, self.v_head_dim);
        let n = span.tokens.len();
        let positions = span.start_pos + n;
        // the sequence's cached rope keys, contiguous: k_pe [P, p]; its latents are read a
        // block of positions at a time below (all of them as f32 would be P x r values, the
        // largest buffer of a long prompt's prefill at depth)
        let mut k_pe = Buf::<f32>::for_overwrite(positions * p);
        let cache = pool.layer(layer);
        be.for_rows(&mut k_pe, p, &|first, rows| {
            for (j, row) in (first..).zip(rows.chunks_exact_mut(p)) {
                cache.read(pool.offset(span.blocks, j) + r, row);
            }
        });
        let block = (self.latent_block_values / r.max(1)).clamp(1, positions.max(1));
        let mut c_blk = Buf::<f32>::for_overwrite(block * r);
        // Keys and values [k_nope | v] of a group of heads at a time, each group's product
        // one matmul over a block of cached latents: all heads at once would hold P x
        // n_heads x (nope + vd) values, the largest buffer of a long prefill, and a head at
        // a time would quantize the latents once per head for a block-format wkv_b. Each
        // block's products go straight into the group's per-head rows [k_nope | v | k_pe]
        // (a whole-context buffer of the products beside them was 4.7 MB at depth 4608).
        let kvw = nope + vd;
        let width = kvw + p;
        let group = (self.expand_group_values / (positions * width)).clamp(1, h);
        // a combined wkv_b's products are [block, group, k_nope | v]; a split one's keys
        // [block, group, nope] (every head's key half in one product, the latents prepared
        // once) and values [block, group, vd]
        let (mut kv, mut k, mut v) = match &self.kv_b {
            KvB::Split { .. } => (
                Buf::<f32>::zeros(0),
                Buf::<f32>::for_overwrite(block * group * nope),
                Buf::<f32>::for_overwrite(block * group * vd),
            ),
            KvB::Combined(_) => (
                Buf::<f32>::for_overwrite(block * group * kvw),
                Buf::<f32>::zeros(0),
                Buf::<f32>::zeros(0),
            ),
        };
        // one head at a time: rows [v | k_nope | k_pe], queries [0 | q_nope | q_pe]; a bf16
        // (or 8-bit) cache's rows are bf16 (the kernels' rule for a bf16 cache is bf16
        // attention), written as such, an f32 cache's f32
        let bf16 = !matches!(cache, kernels::KvRows::F32(_));
        let len = group * positions * width; // [group, P, width]
        let mut rows = Buf::<f32>::for_overwrite(if bf16 { 0 } else { len });
        let mut rows16 = Buf::<u16>::for_overwrite(if bf16 { len } else { 0 });
        let zeros = Buf::<f32>::zeros(n * vd);
        let mut qp = Buf::<f32>::for_overwrite(n * (nope + p));
        let mut out = Buf::<f32>::for_overwrite(n * vd);
        let blocks = [0u32];
        for head in 0..h {
            let (g0, gi) = (head - head % group, head % group);
            let gn = group.min(h - g0);
            if gi == 0 {
                for j0 in (0..positions).step_by(block) {
                    let pn = block.min(positions - j0);
                    let c_kv = &mut c_blk[..pn * r];
                    be.for_rows(c_kv, r, &|first, rows| {
                        for (j, c) in (first..).zip(rows.chunks_exact_mut(r)) {
                            cache.read(pool.offset(span.blocks, j0 + j), c);
                        }
                    });
                    match &self.kv_b {
                        KvB::Combined(w) => be.matmul(
                            c_kv,
                            &w.rows_view(g0 * kvw, gn * kvw),
                            &mut kv[..pn * gn * kvw],
                        ),
                        KvB::Split { k_b, v_b } => {
                            be.matmul(
                                c_kv,
                                &v_b.rows_view(g0 * vd, gn * vd),
                                &mut v[..pn * gn * vd],
                            );
                            // k_b is [h * r, nope]: head g's rows are g * r .. (g + 1) * r
                            let heads = Heads {
                                count: gn,
                                first: g0 * r,
                                stride: r,
                                rows: r,
                            };
                            be.matmul_t_shared(c_kv, k_b, heads, &mut k[..pn * gn * nope]);
                        }
                    }
                    // position j's key and value halves for head hh of the group
                    let (kv, k, v) = (&*kv, &*k, &*v);
                    let halves = |j: usize, hh: usize| -> (&[f32], &[f32]) {
                        match &self.kv_b {
                            KvB::Combined(_) => {
                                let kvj = &kv[(j * gn + hh) * kvw..][..kvw];
                                (&kvj[..nope], &kvj[nope..])
                            }
                            KvB::Split { .. } => (
                                &k[(j * gn + hh) * nope..][..nope],
                                &v[(j * gn + hh) * vd..][..vd],
                            ),
                        }
                    };
                    for hh in 0..gn {
                        let at = (hh * positions + j0) * width;
                        if bf16 {
                            // rounded to bf16 as the cache would hold them
                            let dst = &mut rows16[at..at + pn * width];
                            be.for_rows16(dst, width, &|first, rs| {
                                for (j, row) in (first..).zip(rs.chunks_exact_mut(width)) {
                                    let (kn, vv) = halves(j, hh);
                                    let kpe = &k_pe[(j0 + j) * p..(j0 + j + 1) * p];
                                    let (rv, rest) = row.split_at_mut(vd);
                                    let (rk, rp) = rest.split_at_mut(nope);
                                    kernels::round_bf16_into(vv, rv);
                                    kernels::round_bf16_into(kn, rk);
                                    kernels::round_bf16_into(kpe, rp);
                                }
                            });
                        } else {
                            be.for_rows(&mut rows[at..at + pn * width], width, &|first, rs| {
                                for (j, row) in (first..).zip(rs.chunks_exact_mut(width)) {
                                    let (kn, vv) = halves(j, hh);
                                    row[..vd].copy_from_slice(vv);
                                    row[vd..kvw].copy_from_slice(kn);
                                    row[kvw..]
                                        .copy_from_slice(&k_pe[(j0 + j) * p..(j0 + j + 1) * p]);
                                }
                            });
                        }
                    }
                }
            }
            let head_rows = gi * positions * width..(gi + 1) * positions * width;
            let kv = if bf16 {
                kernels::KvRows::Bf16(&rows16[head_rows])
            } else {
                kernels::KvRows::F32(&rows[head_rows])
            };
            be.for_rows(&mut qp, nope + p, &|first, rs| {
                for (t, q) in (first..).zip(rs.chunks_exact_mut(nope + p)) {
                    q[..nope].copy_from_slice(&q_nope[(t * h + head) * nope..][..nope]);
                    q[nope..].copy_from_slice(&q_pe[(t * h + head) * p..][..p]);
                }
            });
            let attn = MlaAttention {
                q_latent: &zeros,
                q_pe: &qp,
                kv,
                blocks: &blocks,
                block_size: positions,
                n_heads: 1,
                kv_lora_rank: vd,
                rope_dim: nope + p,
                start_pos: span.start_pos,
                scale: self.softmax_scale,
            };
            be.mla_attention(&attn, &mut out);
            let out = &out;
            be.for_rows(o, h * vd, &|first, rs| {
                for (t, ot) in (first..).zip(rs.chunks_exact_mut(h * vd)) {
                    ot[head * vd..(head + 1) * vd].copy_from_slice(&out[t * vd..(t + 1) * vd]);
                }
            });
        }
    }
}
