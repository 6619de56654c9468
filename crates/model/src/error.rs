use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Load(#[from] loader::LoadError),
    #[error("{path}: {reason}")]
    Weight { path: PathBuf, reason: String },
    #[error("token id {id} is out of range (vocab_size {vocab})")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error(
        "sequence in slot {slot} would reach {needed} tokens, but the KV cache holds {capacity}"
    )]
    ContextOverflow {
        slot: usize,
        needed: usize,
        capacity: usize,
    },
    #[error("invalid batch: {0}")]
    BadBatch(String),
}
