//! Multi-token prediction (V3 report §2.2). Real checkpoints ship it as decoder layer
//! `num_hidden_layers` and beyond; it is not part of the main stack. Module k combines the
//! main model's hidden state with the embedding of the next token and predicts one more:
//! `h' = block(eh_proj([enorm(embed(t_{i+1})) ; hnorm(h_i)]))`, logits = head(norm(h')).
//! Loaded here so speculative decoding can use it.

use kernels::Matrix;
use loader::ModelConfig;

use crate::block::Block;
use crate::error::ModelError;
use crate::weights::WeightLoader;

pub struct Mtp {
    pub embed: Matrix,       // embed_tokens [vocab, hidden]
    pub enorm: Vec<f32>,     // [hidden]
    pub hnorm: Vec<f32>,     // [hidden]
    pub eh_proj: Matrix,     // [hidden, 2 * hidden]
    pub block: Block,        // a full decoder layer (MoE in V3)
    pub head_norm: Vec<f32>, // shared_head.norm [hidden]
    pub head: Matrix,        // shared_head.head [vocab, hidden]
}

impl Mtp {
    /// MTP module `k` (0-based), stored as `model.layers.{num_hidden_layers + k}`.
    pub(crate) fn load(w: &WeightLoader, cfg: &ModelConfig, k: usize) -> Result<Mtp, ModelError> {
        let i = cfg.num_hidden_layers + k;
        let p = format!("model.layers.{i}");
        let (v, d) = (cfg.vocab_size, cfg.hidden_size);
        Ok(Mtp {
            embed: w.matrix(&format!("{p}.embed_tokens.weight"), v, d)?,
            enorm: w.vector(&format!("{p}.enorm.weight"), d)?,
            hnorm: w.vector(&format!("{p}.hnorm.weight"), d)?,
            eh_proj: w.matrix(&format!("{p}.eh_proj.weight"), d, 2 * d)?,
            block: Block::load(w, cfg, i, &p)?,
            head_norm: w.vector(&format!("{p}.shared_head.norm.weight"), d)?,
            head: w.matrix(&format!("{p}.shared_head.head.weight"), v, d)?,
        })
    }
}
