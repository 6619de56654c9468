//! The DeepSeek-V3 forward pass (DeepSeek-V3 technical report, arXiv:2412.19437; MLA and
//! DeepSeekMoE from DeepSeek-V2, arXiv:2405.04434), for every model of that architecture
//! family: V3, R1, V2, V2-Lite.
//!
//! Files follow the paper: [`rope`] (YaRN), [`mla`] (attention over the latent cache),
//! [`moe`] (routing and experts), [`block`] (one decoder layer), [`model`] (embedding to
//! logits), [`mtp`] (multi-token prediction), [`kv_cache`].

pub mod block;
mod error;
pub mod kv_cache;
pub mod mla;
pub mod model;
pub mod moe;
pub mod mtp;
pub mod rope;
pub mod scratch;
mod weights;

pub use error::ModelError;
pub use kv_cache::{CacheType, KvCache, KvPool};
pub use loader::ModelConfig;
pub use model::{ForwardBatch, LogitsMode, Model, PagedBatch, PagedSeq, SeqChunk, Trace};
