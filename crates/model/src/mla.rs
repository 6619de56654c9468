//! Multi-head Latent Attention (DeepSeek-V2 paper §2.1; V3 report §2.1.1).
//!
//! Keys and values are compressed into one latent `c_kv` per token (plus one shared roped
//! key `k_pe`), and only those are cached. At attention time `wkv_b`'s key half is folded
//! into the query and its value half applied to the latent output ("absorbed" form), so no
//! per-head K or V is ever materialised.

use kernels::{Backend, Heads, Matrix, MlaAttention};
use loader::ModelConfig;

use crate::error::ModelError;
use crate::kv_cache::KvPool;
use crate::model::PagedSeq;
use crate::scratch::Buf;
use crate::weights::WeightLoader;

/// The latent norms use the reference's default eps, not `rms_norm_eps` (as DeepSeek's
/// `model.py` and transformers both construct them).
const LATENT_NORM_EPS: f32 = 1e-6;

/// Keys and values the expanded form holds at once, as its per-head rows `[k_nope | v |
/// k_pe]` (f32 values): 1M is 4 MiB, a few heads of a long prompt, so a prefill's largest
/// buffer stays small beside the KV cache.
const EXPANDED_GROUP_VALUES: usize = 1 << 20;

/// Cached latents the expanded form widens at once (f32 values, 1 MiB): a block of
/// positions at a time, so a prefill at depth holds no copy of the whole cache.
const LATENT_BLOCK_VALUES: usize = 1 << 18;

/// From how many tokens per chunk the expanded form costs fewer multiply-adds. Per query
/// and cached position, absorbed attention does `2 r + rope` per head and expanded
/// `2 v + nope + rope` (its kernel's scores also run over the zero query part facing the
/// values); expanding costs `(nope + v) r` per position and head, once per chunk.
fn expand_from(r: usize, nope: usize, vd: usize) -> usize {
    let saved = (2 * r).saturating_sub(2 * vd + nope);
    if saved == 0 {
        usize::MAX
    } else {
        ((nope + vd) * r).div_ceil(saved) + 1
    }
}

/// The query path: low-rank (V3, V2) or one projection (V2-Lite, `q_lora_rank: null`).
#[allow(clippy::large_enum_variant)] // one per layer
pub enum QProj {
    LowRank {
        wq_a: Matrix,     // [q_lora_rank, hidden]
        q_norm: Vec<f32>, // [q_lora_rank]
        wq_b: Matrix,     // [n_heads * qk_head_dim, q_lora_rank]
    },
    Full {
        wq: Matrix, // [n_heads * qk_head_dim, hidden]
    },
}

/// `wkv_b` as stored. Hugging Face checkpoints (and llama.cpp's older GGUF files) keep it
/// whole; newer GGUF files store the key half transposed per head (`attn_k_b`), which is
/// the layout the absorbed query product wants, and the value half apart (`attn_v_b`).
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // one per layer
pub enum KvB {
    /// `[n_heads * (qk_nope_head_dim + v_head_dim), kv_lora_rank]`
    Combined(Matrix),
    Split {
        k_b: Matrix, // [n_heads * kv_lora_rank, qk_nope_head_dim]
        v_b: Matrix, // [n_heads * v_head_dim, kv_lora_rank]
    },
}

pub struct Mla {
    pub q: QProj,
    pub wkv_a: Matrix,     // [kv_lora_rank + qk_rope_head_dim, hidden]
    pub kv_norm: Vec<f32>, // [kv_lora_rank]
    pub kv_b: KvB,
    pub wo: Matrix, // [hidden, n_heads * v_head_dim]
    pub n_heads: usize,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    pub softmax_scale: f32,
    /// eps of q_a_layernorm and kv_a_layernorm
    pub eps: f32,
    /// A sequence's chunk of at least this many tokens attends in the expanded form (see
    /// `attend_expanded`); shorter chunks, decode among them, stay absorbed.
    pub expand_from: usize,
    /// Keys and values the expanded form makes per pass (f32 values); see
    /// `EXPANDED_GROUP_VALUES`.
    pub expand_group_values: usize,
    /// Cached latents the expanded form widens per block of positions (f32 values); see
    /// `LATENT_BLOCK_VALUES`.
    pub latent_block_values: usize,
}

/// Where the tokens of one forward sit: their rotary angles (`[tokens, rope_dim / 2]` each)
/// and each sequence's span of positions and cache blocks, in token order.
pub struct Positions<'a> {
    pub cos: &'a [f32],
    pub sin: &'a [f32],
    /// The batch's sequences: positions `start_pos..start_pos + tokens.len()` of each,
    /// whose cache lives in `blocks` of the pool.
    pub spans: &'a [PagedSeq<'a>],
}

impl Mla {
    pub(crate) fn load(w: &WeightLoader, cfg: &ModelConfig, p: &str) -> Result<Mla, ModelError> {
        let (h, hidden) = (cfg.num_attention_heads, cfg.hidden_size);
        let q = match cfg.q_lora_rank {
            Some(rank) => QProj::LowRank {
                wq_a: w.matrix(&format!("{p}.q_a_proj.weight"), rank, hidden)?,
                q_norm: w.vector(&format!("{p}.q_a_layernorm.weight"), rank)?,
                wq_b: w.matrix(&format!("{p}.q_b_proj.weight"), h * cfg.qk_head_dim(), rank)?,
            },
            None => QProj::Full {
                wq: w.matrix(&format!("{p}.q_proj.weight"), h * cfg.qk_head_dim(), hidden)?,
            },
        };
        let r = cfg.kv_lora_rank;
        Ok(Mla {
            q,
            wkv_a: w.matrix(
                &format!("{p}.kv_a_proj_with_mqa.weight"),
                r + cfg.qk_rope_head_dim,
                hidden,
            )?,
            kv_norm: w.vector(&format!("{p}.kv_a_layernorm.weight"), r)?,
            kv_b: if w.has(&format!("{p}.k_b_proj.weight")) {
                KvB::Split {
                    k_b: w.matrix(&format!("{p}.k_b_proj.weight"), h * r, cfg.qk_nope_head_dim)?,
                    v_b: w.matrix(&format!("{p}.v_b_proj.weight"), h * cfg.v_head_dim, r)?,
                }
            } else {
                KvB::Combined(w.matrix(
                    &format!("{p}.kv_b_proj.weight"),
                    h * (cfg.qk_nope_head_dim + cfg.v_head_dim),
                    r,
                )?)
            },
            wo: w.matrix(&format!("{p}.o_proj.weight"), hidden, h * cfg.v_head_dim)?,
            n_heads: h,
            kv_lora_rank: r,
            qk_nope_head_dim: cfg.qk_nope_head_dim,
            qk_rope_head_dim: cfg.qk_rope_head_dim,
            v_head_dim: cfg.v_head_dim,
            softmax_scale: cfg.softmax_scale() as f32,
            eps: LATENT_NORM_EPS,
            expand_from: expand_from(r, cfg.qk_nope_head_dim, cfg.v_head_dim),
            expand_group_values: EXPANDED_GROUP_VALUES,
            latent_block_values: LATENT_BLOCK_VALUES,
        })
    }

    /// `x`: [tokens, hidden] normalised input; `cos`/`sin`: [tokens, rope_dim / 2];
    /// `spans` cover the tokens in order; their latent rows are written into `layer` of
    /// `pool`, then every token attends over its sequence's cached rows. Returns
    /// [tokens, hidden].
    pub fn forward(
        &self,
        be: &dyn Backend,
        x: &[f32],
        at: &Positions<'_>,
        pool: &mut KvPool,
        layer: usize,
    ) -> Buf<f32> {
        let (cos, sin, spans) = (at.cos, at.sin, at.spans);
        let (h, r, p) = (self.n_heads, self.kv_lora_rank, self.qk_rope_head_dim);
        let (nope, vd) = (self.qk_nope_head_dim, self.v_head_dim);
        let qk = nope + p;
        let tokens = cos.len() / (p / 2);
        let half = p / 2;

        // q: [tokens, n_heads, qk_head_dim] = [q_nope | q_pe] per head
        // kv: [tokens, kv_lora_rank + rope_dim] = [c_kv | k_pe]; normalised and roped below
        let mut kv = Buf::<f32>::for_overwrite(tokens * (r + p));
        let q = match &self.q {
            QProj::LowRank { wq_a, q_norm, wq_b } => {
                // both down-projections of x as one operation
                let mut qa = Buf::<f32>::for_overwrite(tokens * wq_a.rows);
                be.matmul_pair(x, wq_a, &self.wkv_a, &mut qa, &mut kv);
                let mut qa_n = Buf::<f32>::for_overwrite(qa.len());
                be.rms_norm(&qa, q_norm, self.eps, &mut qa_n);
                let mut q = Buf::<f32>::for_overwrite(tokens * h * qk);
                be.matmul(&qa_n, wq_b, &mut q);
                q
            }
            QProj::Full { wq } => {
                let mut q = Buf::<f32>::for_overwrite(tokens * h * qk);
                be.matmul_pair(x, wq, &self.wkv_a, &mut q, &mut kv);
                q
            }
        };

        // normalise c_kv, rope k_pe; split q per head into q_nope and (roped) q_pe: per
        // token, over the backend's threads
        let at_t = |t: usize| {
            (
                &cos[t * half..(t + 1) * half],
                &sin[t * half..(t + 1) * half],
            )
        };
        be.for_rows(&mut kv, r + p, &|first, rows| {
            for (t, row) in (first..).zip(rows.chunks_exact_mut(r + p)) {
                let (c, s) = at_t(t);
                let c_kv = Buf::from_slice(&row[..r]);
                be.rms_norm(&c_kv, &self.kv_norm, self.eps, &mut row[..r]);
                be.rope(&mut row[r..], c, s);
            }
        });
        let mut q_nope = Buf::<f32>::for_overwrite(tokens * h * nope); // [tokens, n_heads, qk_nope_head_dim]
        be.for_rows(&mut q_nope, h * nope, &|first, rows| {
            for (t, row) in (first..).zip(rows.chunks_exact_mut(h * nope)) {
                for (head, dst) in row.chunks_exact_mut(nope).enumerate() {
                    dst.copy_from_slice(&q[(t * h + head) * qk..][..nope]);
                }
            }
        });
        let mut q_pe = Buf::<f32>::for_overwrite(tokens * h * p); // [tokens, n_heads, rope_dim]
        be.for_rows(&mut q_pe, h * p, &|first, rows| {
            for (t, row) in (first..).zip(rows.chunks_exact_mut(h * p)) {
                for (head, dst) in row.chunks_exact_mut(p).enumerate() {
                    dst.copy_from_slice(&q[(t * h + head) * qk + nope..][..p]);
                }
                let (c, s) = at_t(t);
                be.rope(row, c, s);
            }
        });

        // Absorb wkv_b's key half into the query: q_latent[t, h] = q_nope[t, h] · W_uk[h]
        // (only for the spans that attend absorbed)
        let absorbed = |n: usize| n < self.expand_from;
        let q_rows = if spans.iter().any(|s| absorbed(s.tokens.len())) {
            tokens
        } else {
            0
        };
        let mut q_latent = Buf::<f32>::for_overwrite(q_rows * h * r); // [tokens, n_heads, kv_lora_rank]
        match &self.kv_b {
            _ if q_rows == 0 => {}
            KvB::Split { k_b, .. } => {
                // k_b is [h * r, nope]: head g's rows are g * r .. (g + 1) * r
                let heads = Heads {
                    count: h,
                    first: 0,
                    stride: r,
                    rows: r,
                };
                be.matmul_heads(&q_nope, k_b, heads, &mut q_latent);
            }
            KvB::Combined(w) => {
                // the key half is [nope, r] per head (rows g * (nope + vd) ..): a product
                // with W, not Wᵀ
                let heads = Heads {
                    count: h,
                    first: 0,
                    stride: nope + vd,
                    rows: nope,
                };
                be.matmul_t_heads(&q_nope, w, heads, &mut q_latent);
            }
        }

        // Cache this chunk's latent rows, then attend per sequence.
        let mut t0 = 0;
        for span in spans {
            for i in 0..span.tokens.len() {
                let at = pool.offset(span.blocks, span.start_pos + i);
                pool.write(layer, at, &kv[(t0 + i) * (r + p)..(t0 + i + 1) * (r + p)]);
            }
            t0 += span.tokens.len();
        }
        // Attend per sequence; absorbed spans leave latent outputs that wkv_b's value half
        // then maps per head (o[t, h] = W_uv[h] · o_latent[t, h]), expanded spans write o.
        let mut o = Buf::<f32>::for_overwrite(tokens * h * vd); // [tokens, n_heads * v_head_dim]
        let mut o_latent = Buf::<f32>::for_overwrite(q_rows * h * r); // [tokens, n_heads, kv_lora_rank]
        let (w_uv, v_heads) = match &self.kv_b {
            KvB::Combined(w) => (
                w,
                Heads {
                    count: h,
                    first: nope,
                    stride: nope + vd,
                    rows: vd,
                },
            ),
            KvB::Split { v_b, .. } => (
                v_b,
                Heads {
                    count: h,
                    first: 0,
                    stride: vd,
                    rows: vd,
                },
            ),
        };
        let mut t0 = 0;
        for span in spans {
            let n = span.tokens.len();
            let (a, b) = (t0, t0 + n);
            t0 = b;
            if !absorbed(n) {
                let q = (
                    &q_nope[a * h * nope..b * h * nope],
                    &q_pe[a * h * p..b * h * p],
                );
                self.attend_expanded(be, q, pool, layer, span, &mut o[a * h * vd..b * h * vd]);
                continue;
            }
            let attn = MlaAttention {
                q_latent: &q_latent[a * h * r..b * h * r],
                q_pe: &q_pe[a * h * p..b * h * p],
                kv: pool.layer(layer),
                blocks: span.blocks,
                block_size: pool.block_size(),
                n_heads: h,
                kv_lora_rank: r,
                rope_dim: p,
                start_pos: span.start_pos,
                scale: self.softmax_scale,
            };
            be.mla_attention(&attn, &mut o_latent[a * h * r..b * h * r]);
            if spans.len() > 1 {
                let (lat, out) = (
                    &o_latent[a * h * r..b * h * r],
                    &mut o[a * h * vd..b * h * vd],
                );
                be.matmul_heads(lat, w_uv, v_heads, out);
            }
        }
        if spans.len() == 1 && q_rows > 0 {
            // one sequence: its value product in one call
            be.matmul_heads(&o_latent, w_uv, v_heads, &mut o);
        }
        let mut out = Buf::<f32>::for_overwrite(tokens * self.wo.rows);
        be.matmul(&o, &self.wo, &mut out);
        out
    }

    /// Attention for one sequence's chunk in the expanded form, as the paper writes MLA
    /// before absorption: every cached position's latent is mapped through `wkv_b` to its
    /// per-head key and value once, and the chunk's queries attend over those. For a long
    /// chunk this is several times fewer multiply-adds than the absorbed form, which pays
    /// `2 * kv_lora_rank` per query, position and head. The same attention kernel runs it,
    /// one head at a time, over rows `[v | k_nope | k_pe]` as `[latent | rope part]`: the
    /// query is `[0 | q_nope | q_pe]`, so the scores are `q_nope · k_nope + q_pe · k_pe`,
    /// and the output (the probabilities times the latent part) is the head's output, with
    /// nothing computed for the keys' half. Writes `o` `[n, n_heads, v_head_dim]`.
    fn attend_expanded(
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
        let mut kv = Buf::<f32>::for_overwrite(block * group * kvw); // [block, group, kvw]
        let (mut k, mut v) = match &self.kv_b {
            KvB::Split { .. } => (
                Buf::<f32>::for_overwrite(block * nope),
                Buf::<f32>::for_overwrite(block * group * vd),
            ),
            KvB::Combined(_) => (Buf::<f32>::zeros(0), Buf::<f32>::zeros(0)),
        };
        // one head at a time: rows [v | k_nope | k_pe], queries [0 | q_nope | q_pe]
        let mut rows = Buf::<f32>::for_overwrite(group * positions * width); // [group, P, width]
        let zeros = Buf::<f32>::zeros(n * vd);
        let mut qp = Buf::<f32>::for_overwrite(n * (nope + p));
        let mut out = Buf::<f32>::for_overwrite(n * vd);
        let blocks = [0u32];
        let bf16 = matches!(cache, kernels::KvRows::Bf16(_));
        let mut rows16: Vec<u16> = Vec::new();
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
                    let kv = &mut kv[..pn * gn * kvw];
                    match &self.kv_b {
                        KvB::Combined(w) => be.matmul(c_kv, &w.rows_view(g0 * kvw, gn * kvw), kv),
                        KvB::Split { k_b, v_b } => {
                            let v = &mut v[..pn * gn * vd];
                            be.matmul(c_kv, &v_b.rows_view(g0 * vd, gn * vd), v);
                            for hh in 0..gn {
                                let k = &mut k[..pn * nope];
                                be.matmul_t(c_kv, &k_b.rows_view((g0 + hh) * r, r), k);
                                let (k, v) = (&*k, &*v);
                                be.for_rows(kv, gn * kvw, &|first, rows| {
                                    for (j, rj) in (first..).zip(rows.chunks_exact_mut(gn * kvw)) {
                                        let row = &mut rj[hh * kvw..(hh + 1) * kvw];
                                        row[..nope].copy_from_slice(&k[j * nope..(j + 1) * nope]);
                                        row[nope..].copy_from_slice(&v[(j * gn + hh) * vd..][..vd]);
                                    }
                                });
                            }
                        }
                    }
                    // each head's rows [v | k_nope | k_pe] (a bf16 cache's rounded to bf16
                    // here, as the cache would hold them: the kernels' rule for a bf16 cache
                    // is bf16 attention, and the rows then convert by taking top halves)
                    let kv = &*kv;
                    for hh in 0..gn {
                        let at = (hh * positions + j0) * width;
                        be.for_rows(&mut rows[at..at + pn * width], width, &|first, rs| {
                            for (j, row) in (first..).zip(rs.chunks_exact_mut(width)) {
                                let kvj = &kv[(j * gn + hh) * kvw..][..kvw];
                                row[..vd].copy_from_slice(&kvj[nope..]);
                                row[vd..kvw].copy_from_slice(&kvj[..nope]);
                                row[kvw..].copy_from_slice(&k_pe[(j0 + j) * p..(j0 + j + 1) * p]);
                                if bf16 {
                                    row.iter_mut().for_each(|v| *v = round_bf16(*v));
                                }
                            }
                        });
                    }
                }
            }
            let rows = &rows[gi * positions * width..(gi + 1) * positions * width];
            // a bf16 cache attends in bf16 (the kernels' rule for a bf16 cache): the head's
            // keys and values rounded as the cache would hold them
            let kv = if bf16 {
                rows16.clear();
                // (rounded above: the top halves are the bf16 values)
                rows16.extend(rows.iter().map(|&v| (v.to_bits() >> 16) as u16));
                kernels::KvRows::Bf16(&rows16)
            } else {
                kernels::KvRows::F32(rows)
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

/// `v` rounded to the nearest bf16 (ties to even), as f32; NaN stays NaN.
fn round_bf16(v: f32) -> f32 {
    half::bf16::from_f32(v).to_f32()
}

#[cfg(test)]
mod tests {
    //! The test oracle: attention with K and V decompressed per head from the latent, as
    //! the paper writes it before absorption. Production never takes this path.

    use super::*;
    use crate::rope::Rope;
    use kernels::CpuBackend;
    use loader::Checkpoint;

    fn naive(m: &Mla, be: &dyn Backend, x: &[f32], cos: &[f32], sin: &[f32]) -> Vec<f32> {
        let (h, r, p) = (m.n_heads, m.kv_lora_rank, m.qk_rope_head_dim);
        let (nope, vd) = (m.qk_nope_head_dim, m.v_head_dim);
        let tokens = cos.len() / (p / 2);
        let half = p / 2;
        let mut q = vec![0f32; tokens * h * (nope + p)];
        match &m.q {
            QProj::LowRank { wq_a, q_norm, wq_b } => {
                let mut qa = vec![0f32; tokens * wq_a.rows];
                be.matmul(x, wq_a, &mut qa);
                let mut qn = vec![0f32; qa.len()];
                be.rms_norm(&qa, q_norm, m.eps, &mut qn);
                be.matmul(&qn, wq_b, &mut q);
            }
            QProj::Full { wq } => be.matmul(x, wq, &mut q),
        }
        let mut kv = vec![0f32; tokens * (r + p)];
        be.matmul(x, &m.wkv_a, &mut kv);
        let mut c_kv = vec![0f32; tokens * r];
        let mut k_pe = vec![0f32; tokens * p];
        for t in 0..tokens {
            let row = &kv[t * (r + p)..(t + 1) * (r + p)];
            be.rms_norm(&row[..r], &m.kv_norm, m.eps, &mut c_kv[t * r..(t + 1) * r]);
            k_pe[t * p..(t + 1) * p].copy_from_slice(&row[r..]);
            let (c, s) = (
                &cos[t * half..(t + 1) * half],
                &sin[t * half..(t + 1) * half],
            );
            be.rope(&mut k_pe[t * p..(t + 1) * p], c, s);
            for head in 0..h {
                let at = (t * h + head) * (nope + p) + nope;
                be.rope(&mut q[at..at + p], c, s);
            }
        }
        // Decompress: [tokens, n_heads * (nope + v)]
        let mut kv_full = vec![0f32; tokens * h * (nope + vd)];
        let KvB::Combined(wkv_b) = &m.kv_b else {
            panic!("the oracle decompresses with a combined kv_b")
        };
        be.matmul(&c_kv, wkv_b, &mut kv_full);
        let mut o = vec![0f32; tokens * h * vd];
        for head in 0..h {
            for t in 0..tokens {
                let qh = &q[(t * h + head) * (nope + p)..][..nope + p];
                let mut scores: Vec<f32> = (0..=t)
                    .map(|j| {
                        let k = &kv_full[(j * h + head) * (nope + vd)..][..nope];
                        let dot_nope: f32 = qh[..nope].iter().zip(k).map(|(a, b)| a * b).sum();
                        let dot_pe: f32 = qh[nope..]
                            .iter()
                            .zip(&k_pe[j * p..(j + 1) * p])
                            .map(|(a, b)| a * b)
                            .sum();
                        (dot_nope + dot_pe) * m.softmax_scale
                    })
                    .collect();
                be.softmax(&mut scores);
                for (j, pj) in scores.iter().enumerate() {
                    let v = &kv_full[(j * h + head) * (nope + vd) + nope..][..vd];
                    for (ov, vv) in o[(t * h + head) * vd..][..vd].iter_mut().zip(v) {
                        *ov += pj * vv;
                    }
                }
            }
        }
        let mut out = vec![0f32; tokens * m.wo.rows];
        be.matmul(&o, &m.wo, &mut out);
        out
    }

    /// `attn_k_b` / `attn_v_b` as llama.cpp's converter derives them from `kv_b_proj`.
    fn split_kv_b(m: &Mla) -> KvB {
        let KvB::Combined(w) = &m.kv_b else {
            unreachable!()
        };
        let (h, r, nope, vd) = (m.n_heads, m.kv_lora_rank, m.qk_nope_head_dim, m.v_head_dim);
        let mut k_b = vec![0f32; h * r * nope];
        let mut v_b = vec![0f32; h * vd * r];
        let mut row = vec![0f32; r];
        for head in 0..h {
            for i in 0..nope + vd {
                w.read_row(head * (nope + vd) + i, &mut row);
                for (c, &v) in row.iter().enumerate() {
                    if i < nope {
                        k_b[(head * r + c) * nope + i] = v;
                    } else {
                        v_b[(head * vd + i - nope) * r + c] = v;
                    }
                }
            }
        }
        let mat = |name: &str, v: Vec<f32>, shape: Vec<usize>| {
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            Matrix::dense(
                loader::Tensor::from_bytes(name, loader::DType::F32, shape, bytes).unwrap(),
            )
            .unwrap()
        };
        KvB::Split {
            k_b: mat("k_b", k_b, vec![h * r, nope]),
            v_b: mat("v_b", v_b, vec![h * vd, r]),
        }
    }

    /// The expanded form (long prefill chunks) against the decompressed oracle, with both
    /// `wkv_b` layouts, as one chunk and as a second chunk over a cached prefix.
    #[test]
    fn expanded_attention_equals_decompressed() {
        for name in ["v3_yarn_mtp", "v3_fp8_sharded", "v2_lite_greedy"] {
            let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/golden")
                .join(name);
            let ckpt = Checkpoint::open(&dir).unwrap();
            let cfg = &ckpt.config;
            let w = WeightLoader { ckpt: &ckpt };
            let load = || Mla::load(&w, cfg, "model.layers.1.self_attn").unwrap();
            let be = CpuBackend::new();
            let rope = Rope::new(cfg);
            let tokens = 37;
            let half = cfg.qk_rope_head_dim / 2;
            let x: Vec<f32> = (0..tokens * cfg.hidden_size)
                .map(|i| (i * 7919 % 1000) as f32 / 500.0 - 1.0)
                .collect();
            let (mut cos, mut sin) = (vec![0f32; tokens * half], vec![0f32; tokens * half]);
            for t in 0..tokens {
                rope.cos_sin(
                    t,
                    &mut cos[t * half..(t + 1) * half],
                    &mut sin[t * half..(t + 1) * half],
                );
            }
            let want = naive(&load(), &be, &x, &cos, &sin);
            let combined = Mla {
                expand_from: 1,
                ..load()
            };
            let split = Mla {
                kv_b: split_kv_b(&combined),
                expand_from: 1,
                ..load()
            };
            let blocks = [4u32, 1, 3, 0, 2];
            let hd = cfg.hidden_size;
            // keys and values made a few heads at a time (the last group shorter), from
            // latents widened 6 positions at a time (the last block shorter, 1 position in
            // the second chunk's), as a long prompt's are
            let heads = cfg.num_attention_heads;
            let per_pass = if heads > 3 { 3 } else { 1 };
            let few = |m: &Mla| Mla {
                expand_group_values: per_pass
                    * tokens
                    * (cfg.qk_nope_head_dim + cfg.v_head_dim + cfg.qk_rope_head_dim),
                latent_block_values: 6 * cfg.kv_lora_rank,
                kv_b: m.kv_b.clone(),
                expand_from: 1,
                ..load()
            };
            let (combined_few, split_few) = (few(&combined), few(&split));
            for (layout, mla) in [
                ("combined", &combined),
                ("split", &split),
                ("combined, a few heads a pass", &combined_few),
                ("split, a few heads a pass", &split_few),
            ] {
                // one chunk
                let ids = vec![0u32; tokens];
                let spans = [PagedSeq {
                    start_pos: 0,
                    tokens: &ids,
                    blocks: &blocks,
                }];
                let at = Positions {
                    cos: &cos,
                    sin: &sin,
                    spans: &spans,
                };
                let got = mla.forward(&be, &x, &at, &mut KvPool::new(cfg, 5, 8), 1);
                assert_close(&got, &want, &format!("{name} {layout} one chunk"));
                // 20 tokens, then 17 more over the cached 20
                let mut pool = KvPool::new(cfg, 5, 8);
                let mut rows = Vec::new();
                for (a, b) in [(0, 20), (20, tokens)] {
                    let ids = vec![0u32; b - a];
                    let spans = [PagedSeq {
                        start_pos: a,
                        tokens: &ids,
                        blocks: &blocks,
                    }];
                    let at = Positions {
                        cos: &cos[a * half..b * half],
                        sin: &sin[a * half..b * half],
                        spans: &spans,
                    };
                    rows.extend_from_slice(&mla.forward(
                        &be,
                        &x[a * hd..b * hd],
                        &at,
                        &mut pool,
                        1,
                    ));
                }
                assert_close(&rows, &want, &format!("{name} {layout} two chunks"));
            }
        }
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len());
        let err: f64 = got
            .iter()
            .zip(want)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            .sqrt()
            / want.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
        assert!(
            err < 1e-5,
            "{what}: expanded vs decompressed rel L2 {err:.3e}"
        );
    }

    #[test]
    fn the_expanded_form_starts_where_it_saves_work() {
        // V3's shapes: r 512, nope 128, v 128 -> from 206 tokens; 2 r <= 2 v + nope never
        assert_eq!(expand_from(512, 128, 128), 206);
        assert_eq!(expand_from(512, 64, 64), 80);
        assert_eq!(expand_from(32, 16, 16), 65);
        assert_eq!(expand_from(16, 16, 16), usize::MAX);
        assert_eq!(expand_from(48, 32, 32), usize::MAX);
    }

    #[test]
    fn absorbed_attention_equals_decompressed() {
        for name in ["v3_yarn_mtp", "v3_fp8_sharded", "v2_lite_greedy"] {
            let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/golden")
                .join(name);
            let ckpt = Checkpoint::open(&dir).unwrap();
            let cfg = &ckpt.config;
            let w = WeightLoader { ckpt: &ckpt };
            let mla = Mla::load(&w, cfg, "model.layers.1.self_attn").unwrap();
            let be = CpuBackend::new();
            let rope = Rope::new(cfg);
            let tokens = 37;
            let half = cfg.qk_rope_head_dim / 2;
            let x: Vec<f32> = (0..tokens * cfg.hidden_size)
                .map(|i| (i * 7919 % 1000) as f32 / 500.0 - 1.0)
                .collect();
            let (mut cos, mut sin) = (vec![0f32; tokens * half], vec![0f32; tokens * half]);
            for t in 0..tokens {
                rope.cos_sin(
                    t,
                    &mut cos[t * half..(t + 1) * half],
                    &mut sin[t * half..(t + 1) * half],
                );
            }
            // blocks of 8 in a scrambled order
            let mut pool = KvPool::new(cfg, 5, 8);
            let blocks = [4u32, 1, 3, 0, 2];
            let ids = vec![0u32; tokens];
            let spans = [PagedSeq {
                start_pos: 0,
                tokens: &ids,
                blocks: &blocks,
            }];
            let at = Positions {
                cos: &cos,
                sin: &sin,
                spans: &spans,
            };
            let got = mla.forward(&be, &x, &at, &mut pool, 1);
            let want = naive(&mla, &be, &x, &cos, &sin);
            // llama.cpp's split layout (key half transposed per head) gives the same output
            let split = Mla {
                kv_b: split_kv_b(&mla),
                ..Mla::load(&w, cfg, "model.layers.1.self_attn").unwrap()
            };
            let got_split = split.forward(&be, &x, &at, &mut KvPool::new(cfg, 5, 8), 1);
            let e: f32 = got
                .iter()
                .zip(&got_split)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(e < 1e-4, "{name}: split vs combined kv_b max diff {e}");
            let err: f64 = got
                .iter()
                .zip(&want)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                .sqrt()
                / want.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
            assert!(
                err < 1e-5,
                "{name}: absorbed vs decompressed rel L2 {err:.3e}"
            );
        }
    }
}
