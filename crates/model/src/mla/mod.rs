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
use expanded::{EXPANDED_GROUP_VALUES, LATENT_BLOCK_VALUES, expand_from};

/// The latent norms use the reference's default eps, not `rms_norm_eps` (as DeepSeek's
/// `model.py` and transformers both construct them).
const LATENT_NORM_EPS: f32 = 1e-6;

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
}

mod expanded;
#[cfg(test)]
mod tests;
