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
        let q = match &self.q {
            QProj::LowRank { wq_a, q_norm, wq_b } => {
                let mut qa = Buf::<f32>::zeros(tokens * wq_a.rows);
                be.matmul(x, wq_a, &mut qa);
                let mut qa_n = Buf::<f32>::zeros(qa.len());
                be.rms_norm(&qa, q_norm, self.eps, &mut qa_n);
                let mut q = Buf::<f32>::zeros(tokens * h * qk);
                be.matmul(&qa_n, wq_b, &mut q);
                q
            }
            QProj::Full { wq } => {
                let mut q = Buf::<f32>::zeros(tokens * h * qk);
                be.matmul(x, wq, &mut q);
                q
            }
        };

        // kv: [tokens, kv_lora_rank + rope_dim] = [c_kv | k_pe]; normalise c_kv, rope k_pe
        let mut kv = Buf::<f32>::zeros(tokens * (r + p));
        be.matmul(x, &self.wkv_a, &mut kv);
        let mut q_pe = Buf::<f32>::zeros(tokens * h * p); // [tokens, n_heads, rope_dim]
        let mut q_nope = Buf::<f32>::zeros(tokens * h * nope); // [tokens, n_heads, qk_nope_head_dim]
        for t in 0..tokens {
            let (c, s) = (
                &cos[t * half..(t + 1) * half],
                &sin[t * half..(t + 1) * half],
            );
            let row = &mut kv[t * (r + p)..(t + 1) * (r + p)];
            let c_kv = Buf::from_slice(&row[..r]);
            be.rms_norm(&c_kv, &self.kv_norm, self.eps, &mut row[..r]);
            be.rope(&mut row[r..], c, s);
            for head in 0..h {
                let src = &q[(t * h + head) * qk..(t * h + head + 1) * qk];
                q_nope[(t * h + head) * nope..][..nope].copy_from_slice(&src[..nope]);
                q_pe[(t * h + head) * p..][..p].copy_from_slice(&src[nope..]);
            }
            be.rope(&mut q_pe[t * h * p..(t + 1) * h * p], c, s);
        }

        // Absorb wkv_b's key half into the query: q_latent[t, h] = q_nope[t, h] · W_uk[h]
        let mut q_latent = Buf::<f32>::zeros(tokens * h * r); // [tokens, n_heads, kv_lora_rank]
        match &self.kv_b {
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
                // the key half is [nope, r] per head: a product with W, not Wᵀ
                let mut head_in = Buf::<f32>::zeros(tokens * nope);
                let mut head_out = Buf::<f32>::zeros(tokens * r);
                for head in 0..h {
                    for t in 0..tokens {
                        head_in[t * nope..(t + 1) * nope]
                            .copy_from_slice(&q_nope[(t * h + head) * nope..][..nope]);
                    }
                    be.matmul_t(
                        &head_in,
                        &w.rows_view(head * (nope + vd), nope),
                        &mut head_out,
                    );
                    for t in 0..tokens {
                        q_latent[(t * h + head) * r..][..r]
                            .copy_from_slice(&head_out[t * r..(t + 1) * r]);
                    }
                }
            }
        }

        // Cache this chunk's latent rows, then attend per sequence.
        let mut t0 = 0;
        for span in spans {
            for i in 0..span.tokens.len() {
                let at = pool.offset(span.blocks, span.start_pos + i);
                pool.layer_mut(layer)[at..at + r + p]
                    .copy_from_slice(&kv[(t0 + i) * (r + p)..(t0 + i + 1) * (r + p)]);
            }
            t0 += span.tokens.len();
        }
        let mut o_latent = Buf::<f32>::zeros(tokens * h * r); // [tokens, n_heads, kv_lora_rank]
        let mut t0 = 0;
        for span in spans {
            let attn = MlaAttention {
                q_latent: &q_latent[t0 * h * r..(t0 + span.tokens.len()) * h * r],
                q_pe: &q_pe[t0 * h * p..(t0 + span.tokens.len()) * h * p],
                kv: pool.layer(layer),
                blocks: span.blocks,
                block_size: pool.block_size(),
                n_heads: h,
                kv_lora_rank: r,
                rope_dim: p,
                start_pos: span.start_pos,
                scale: self.softmax_scale,
            };
            be.mla_attention(
                &attn,
                &mut o_latent[t0 * h * r..(t0 + span.tokens.len()) * h * r],
            );
            t0 += span.tokens.len();
        }

        // Apply wkv_b's value half per head: o[t, h] = W_uv[h] · o_latent[t, h]
        let mut o = Buf::<f32>::zeros(tokens * h * vd); // [tokens, n_heads * v_head_dim]
        let (w_uv, heads) = match &self.kv_b {
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
        be.matmul_heads(&o_latent, w_uv, heads, &mut o);
        let mut out = Buf::<f32>::zeros(tokens * self.wo.rows);
        be.matmul(&o, &self.wo, &mut out);
        out
    }
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
