//! One decoder layer: `h += attn(norm(h)); h += ffn(norm(h))`.

use kernels::Backend;
use loader::ModelConfig;

use crate::error::ModelError;
use crate::kv_cache::KvPool;
use crate::mla::{Mla, Positions};
use crate::moe::{Mlp, Moe, Routing};
use crate::scratch::Buf;
use crate::weights::WeightLoader;

#[allow(clippy::large_enum_variant)] // one per layer; boxing buys nothing
pub enum Ffn {
    Dense(Mlp),
    Moe(Moe),
}

pub struct Block {
    pub attn_norm: Vec<f32>, // input_layernorm [hidden]
    pub attn: Mla,
    pub ffn_norm: Vec<f32>, // post_attention_layernorm [hidden]
    pub ffn: Ffn,
    pub eps: f32,
}

impl Block {
    /// Layer `i` under prefix `p` (e.g. `model.layers.3`). MTP layers pass their own index.
    pub(crate) fn load(
        w: &WeightLoader,
        cfg: &ModelConfig,
        i: usize,
        p: &str,
    ) -> Result<Block, ModelError> {
        let hidden = cfg.hidden_size;
        let ffn = if cfg.is_moe_layer(i) {
            Ffn::Moe(Moe::load(w, cfg, &format!("{p}.mlp"))?)
        } else {
            Ffn::Dense(Mlp::load(
                w,
                &format!("{p}.mlp"),
                hidden,
                cfg.intermediate_size,
            )?)
        };
        Ok(Block {
            attn_norm: w.vector(&format!("{p}.input_layernorm.weight"), hidden)?,
            attn: Mla::load(w, cfg, &format!("{p}.self_attn"))?,
            ffn_norm: w.vector(&format!("{p}.post_attention_layernorm.weight"), hidden)?,
            ffn,
            eps: cfg.rms_norm_eps as f32,
        })
    }

    /// Updates the residual stream `h` [tokens, hidden] in place; returns the routing of a
    /// MoE layer.
    /// Values per activation buffer of the feed-forward part (see `moe::DEFAULT_BUDGET`).
    pub fn set_ffn_budget(&mut self, values: usize) {
        match &mut self.ffn {
            Ffn::Dense(mlp) => mlp.budget = values,
            Ffn::Moe(moe) => {
                moe.budget = values;
                if let Some(s) = &mut moe.shared {
                    s.budget = values;
                }
            }
        }
    }

    pub fn forward(
        &self,
        be: &dyn Backend,
        h: &mut [f32],
        at: &Positions<'_>,
        pool: &mut KvPool,
        layer: usize,
    ) -> Option<Routing> {
        let mut x = Buf::<f32>::for_overwrite(h.len());
        be.rms_norm(h, &self.attn_norm, self.eps, &mut x);
        let a = self.attn.forward(be, &x, at, pool, layer);
        let d = self.attn_norm.len();
        // the residual adds, row by row over the backend's threads
        let add = |h: &mut [f32], a: &[f32]| {
            be.for_rows(h, d, &|first, rows| {
                rows.iter_mut()
                    .zip(&a[first * d..])
                    .for_each(|(h, a)| *h += a)
            })
        };
        add(h, &a);

        be.rms_norm(h, &self.ffn_norm, self.eps, &mut x);
        let (f, routing) = match &self.ffn {
            Ffn::Dense(mlp) => (mlp.forward(be, &x), None),
            Ffn::Moe(moe) => {
                let (f, r) = moe.forward(be, &x);
                (f, Some(r))
            }
        };
        add(h, &f);
        routing
    }
}
