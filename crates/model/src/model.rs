//! Embedding -> decoder layers -> norm -> lm_head, over a batch of sequence chunks.

use kernels::{Backend, CpuBackend, Matrix};
use loader::{Checkpoint, ModelConfig};

use crate::block::Block;
use crate::error::ModelError;
use crate::kv_cache::{CacheType, KvCache, KvPool};
use crate::mla::Positions;
use crate::mtp::Mtp;
use crate::rope::Rope;
use crate::scratch::Buf;
use crate::weights::WeightLoader;

/// Consecutive tokens of one sequence: a prompt (or a chunk of one) from any start position,
/// or a single decode token.
pub struct SeqChunk<'a> {
    /// The sequence's slot in the KV cache.
    pub slot: usize,
    /// Position of `tokens[0]`; the cache must already hold positions `0..start_pos`.
    pub start_pos: usize,
    pub tokens: &'a [u32],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsMode {
    /// Logits for every token of the batch, in order.
    All,
    /// Logits for the last token of each chunk.
    Last,
}

pub struct ForwardBatch<'a> {
    pub seqs: Vec<SeqChunk<'a>>,
    pub logits: LogitsMode,
}

/// Consecutive tokens of one sequence whose cache lives in pool blocks: position j is in
/// `blocks[j / block_size]`. Positions before `start_pos` must already be cached there.
pub struct PagedSeq<'a> {
    pub blocks: &'a [u32],
    pub start_pos: usize,
    pub tokens: &'a [u32],
}

pub struct PagedBatch<'a> {
    pub seqs: Vec<PagedSeq<'a>>,
    pub logits: LogitsMode,
}

/// Named intermediates of one forward, for comparing with the reference layer by layer.
#[derive(Default)]
pub struct Trace {
    /// Per layer: the residual stream after the layer, [tokens, hidden].
    pub residual: Vec<Vec<f32>>,
    /// Per layer: for MoE layers, the chosen experts and weights, [tokens, top_k] each.
    pub router: Vec<Option<(Vec<usize>, Vec<f32>)>>,
}

pub struct Model {
    pub config: ModelConfig,
    pub embed: Matrix, // [vocab, hidden]
    pub layers: Vec<Block>,
    pub norm: Vec<f32>,  // [hidden]
    pub lm_head: Matrix, // [vocab, hidden] (the embedding when tied)
    pub mtp: Vec<Mtp>,
    rope: Rope,
    backend: Box<dyn Backend>,
    cache_type: CacheType,
}

impl Model {
    /// Bind every tensor of `ckpt` (checked for shape and dtype) on the CPU backend.
    pub fn load(ckpt: &Checkpoint) -> Result<Model, ModelError> {
        Self::load_with(ckpt, Box::new(CpuBackend::new()))
    }

    pub fn load_with(ckpt: &Checkpoint, backend: Box<dyn Backend>) -> Result<Model, ModelError> {
        let cfg = ckpt.config.clone();
        let w = WeightLoader { ckpt };
        let (v, d) = (cfg.vocab_size, cfg.hidden_size);
        let embed = w.matrix("model.embed_tokens.weight", v, d)?;
        let lm_head = if cfg.tie_word_embeddings && !ckpt.contains("lm_head.weight") {
            embed.clone()
        } else {
            w.matrix("lm_head.weight", v, d)?
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Block::load(&w, &cfg, i, &format!("model.layers.{i}")))
            .collect::<Result<_, _>>()?;
        // Many redistributed checkpoints drop the MTP weights but keep the config field; a
        // module with no tensors at all is absent, one with some tensors must be whole.
        let mtp = (0..cfg.num_nextn_predict_layers)
            .take_while(|k| {
                let prefix = format!("model.layers.{}.", cfg.num_hidden_layers + k);
                ckpt.names().any(|n| n.starts_with(&prefix))
            })
            .map(|k| Mtp::load(&w, &cfg, k))
            .collect::<Result<_, _>>()?;
        Ok(Model {
            norm: w.vector("model.norm.weight", d)?,
            rope: Rope::new(&cfg),
            config: cfg,
            embed,
            layers,
            lm_head,
            mtp,
            backend,
            cache_type: CacheType::F32,
        })
    }

    /// A KV cache sized for this model, of its cache type.
    pub fn new_cache(&self, slots: usize, capacity: usize) -> KvCache {
        KvCache::with_type(&self.config, slots, capacity, self.cache_type)
    }

    /// How caches made for this model ([`Model::new_cache`], the engine's pool) store the
    /// latents.
    pub fn cache_type(&self) -> CacheType {
        self.cache_type
    }

    /// Values per activation buffer in the feed-forward layers (default
    /// `moe::DEFAULT_BUDGET`, 2 MiB of f32): a long prompt's tokens and routed experts go
    /// in pieces that fit. Smaller saves memory for more passes over the dense weights.
    pub fn set_ffn_budget(&mut self, values: usize) {
        let values = values.max(1);
        for b in &mut self.layers {
            b.set_ffn_budget(values);
        }
        for m in &mut self.mtp {
            m.block.set_ffn_budget(values);
        }
    }

    pub fn set_cache_type(&mut self, ty: CacheType) {
        self.cache_type = ty;
    }

    /// One forward over the batch; returns logits `[rows, vocab]` (rows per `LogitsMode`).
    pub fn forward(
        &self,
        batch: &ForwardBatch<'_>,
        cache: &mut KvCache,
    ) -> Result<Vec<f32>, ModelError> {
        self.forward_traced(batch, cache, None)
    }

    pub fn forward_traced(
        &self,
        batch: &ForwardBatch<'_>,
        cache: &mut KvCache,
        trace: Option<&mut Trace>,
    ) -> Result<Vec<f32>, ModelError> {
        self.check_batch(batch, cache)?;
        let KvCache { pool, tables, .. } = cache;
        let paged = PagedBatch {
            seqs: batch
                .seqs
                .iter()
                .map(|s| PagedSeq {
                    blocks: &tables[s.slot],
                    start_pos: s.start_pos,
                    tokens: s.tokens,
                })
                .collect(),
            logits: batch.logits,
        };
        self.forward_paged(&paged, pool, trace)
    }

    /// One forward over sequences whose caches live in `pool` under their block tables.
    /// Blocks a chunk writes must not be written by another chunk of the batch; blocks
    /// before a chunk's start may be shared (a cached prefix).
    pub fn forward_paged(
        &self,
        batch: &PagedBatch<'_>,
        pool: &mut KvPool,
        trace: Option<&mut Trace>,
    ) -> Result<Vec<f32>, ModelError> {
        let mut logits = Vec::new();
        self.forward_paged_into(batch, pool, trace, &mut logits)?;
        Ok(logits)
    }

    /// [`Model::forward_paged`] writing the logits into `logits` (resized), so a decode loop
    /// that keeps its buffer allocates nothing per step.
    pub fn forward_paged_into(
        &self,
        batch: &PagedBatch<'_>,
        pool: &mut KvPool,
        mut trace: Option<&mut Trace>,
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let cfg = &self.config;
        let be = self.backend.as_ref();
        self.check_paged(batch, pool)?;
        let n: usize = batch.seqs.iter().map(|s| s.tokens.len()).sum();
        let mut tokens = Buf::<u32>::with_capacity(n);
        for s in &batch.seqs {
            tokens.vec().extend_from_slice(s.tokens);
        }
        let d = cfg.hidden_size;

        // cos/sin per token: [tokens, rope_dim / 2]
        let half = self.rope.half_dim();
        let (mut cos, mut sin) = (Buf::<f32>::zeros(n * half), Buf::<f32>::zeros(n * half));
        let mut t = 0;
        for s in &batch.seqs {
            for i in 0..s.tokens.len() {
                let (c, sn) = (
                    &mut cos[t * half..(t + 1) * half],
                    &mut sin[t * half..(t + 1) * half],
                );
                self.rope.cos_sin(s.start_pos + i, c, sn);
                t += 1;
            }
        }
        let at = Positions {
            cos: &cos,
            sin: &sin,
            spans: &batch.seqs,
        };

        let mut h = Buf::<f32>::zeros(n * d); // [tokens, hidden] residual stream
        be.embedding(&self.embed, &tokens, &mut h);
        for (li, layer) in self.layers.iter().enumerate() {
            let routing = layer.forward(be, &mut h, &at, pool, li);
            if let Some(tr) = trace.as_deref_mut() {
                tr.residual.push(h.to_vec());
                tr.router
                    .push(routing.map(|r| (r.indices.to_vec(), r.weights.to_vec())));
            }
        }

        // Only the rows whose logits are wanted go through the final norm and head.
        let mut rows = Buf::<usize>::with_capacity(n);
        match batch.logits {
            LogitsMode::All => rows.vec().extend(0..n),
            LogitsMode::Last => {
                let mut end = 0;
                for s in &batch.seqs {
                    end += s.tokens.len();
                    rows.vec().push(end - 1);
                }
            }
        }
        let mut x = Buf::<f32>::with_capacity(rows.len() * d);
        for &r in rows.iter() {
            x.vec().extend_from_slice(&h[r * d..(r + 1) * d]);
        }
        let mut xn = Buf::<f32>::zeros(x.len());
        be.rms_norm(&x, &self.norm, cfg.rms_norm_eps as f32, &mut xn);
        logits.clear();
        logits.resize(rows.len() * cfg.vocab_size, 0.0);
        be.matmul(&xn, &self.lm_head, logits);
        Ok(())
    }

    fn check_batch(&self, batch: &ForwardBatch<'_>, cache: &mut KvCache) -> Result<(), ModelError> {
        if batch.seqs.is_empty() {
            return Err(ModelError::BadBatch("no sequences".into()));
        }
        for (i, s) in batch.seqs.iter().enumerate() {
            if s.tokens.is_empty() {
                return Err(ModelError::BadBatch(format!("sequence {i} has no tokens")));
            }
            if batch.seqs[..i].iter().any(|o| o.slot == s.slot) {
                return Err(ModelError::BadBatch(format!(
                    "slot {} appears twice",
                    s.slot
                )));
            }
            self.check_tokens(s.tokens)?;
        }
        for s in &batch.seqs {
            cache.reserve(s.slot, s.start_pos, s.tokens.len())?;
        }
        Ok(())
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<(), ModelError> {
        let vocab = self.config.vocab_size;
        match tokens.iter().find(|&&id| id as usize >= vocab) {
            Some(&id) => Err(ModelError::TokenOutOfRange { id, vocab }),
            None => Ok(()),
        }
    }

    fn check_paged(&self, batch: &PagedBatch<'_>, pool: &KvPool) -> Result<(), ModelError> {
        if batch.seqs.is_empty() {
            return Err(ModelError::BadBatch("no sequences".into()));
        }
        let bs = pool.block_size();
        // the blocks a chunk writes: those holding positions start_pos..end
        fn written<'s>(s: &PagedSeq<'s>, bs: usize) -> &'s [u32] {
            let end = s.start_pos + s.tokens.len();
            &s.blocks[s.start_pos / bs..end.div_ceil(bs).min(s.blocks.len())]
        }
        for (i, s) in batch.seqs.iter().enumerate() {
            if s.tokens.is_empty() {
                return Err(ModelError::BadBatch(format!("sequence {i} has no tokens")));
            }
            self.check_tokens(s.tokens)?;
            let end = s.start_pos + s.tokens.len();
            if s.blocks.len() * bs < end {
                return Err(ModelError::BadBatch(format!(
                    "sequence {i} reaches position {end}, but its {} blocks hold {}",
                    s.blocks.len(),
                    s.blocks.len() * bs
                )));
            }
            if let Some(&b) = s.blocks.iter().find(|&&b| b as usize >= pool.num_blocks()) {
                return Err(ModelError::BadBatch(format!(
                    "block {b} is not in the pool ({} blocks)",
                    pool.num_blocks()
                )));
            }
            // pairwise, without a set: batches are small and this must not allocate
            let mine = written(s, bs);
            for (j, b) in mine.iter().enumerate() {
                let twice = mine[..j].contains(b)
                    || batch.seqs[..i].iter().any(|o| written(o, bs).contains(b));
                if twice {
                    return Err(ModelError::BadBatch(format!(
                        "block {b} is written by two sequences"
                    )));
                }
            }
        }
        Ok(())
    }
}
