//! DeepRust's default model, inside the binary: a small model of exactly the DeepSeek-V3
//! architecture that `scripts/train/run.sh` trained and exported to `assets/model/`
//! (see `assets/model/training.json`). It loads through the same loader as any checkpoint,
//! parsed in place from the binary's read-only data: no copy, no download.

use std::path::Path;
use std::sync::Arc;

use loader::{Checkpoint, Result, Storage};
use tokenizer::{Tokenizer, TokenizerError};

const CONFIG: &str = include_str!("../../../assets/model/config.json");
static WEIGHTS: &[u8] = include_bytes!("../../../assets/model/model.safetensors");
static TOKENIZER: &[u8] = include_bytes!("../../../assets/model/tokenizer.json");
const TOKENIZER_CONFIG: &str = include_str!("../../../assets/model/tokenizer_config.json");

/// How errors and `info` name the embedded model.
pub const NAME: &str = "<embedded>";

pub fn checkpoint() -> Result<Checkpoint> {
    let storage: Storage = Arc::new(WEIGHTS);
    Checkpoint::from_memory(
        Path::new(NAME),
        CONFIG,
        vec![("model.safetensors".into(), storage)],
    )
}

pub fn tokenizer() -> Result<Tokenizer, TokenizerError> {
    let path = Path::new(NAME);
    let config = serde_json_value(TOKENIZER_CONFIG)?;
    Tokenizer::from_parts(
        TOKENIZER,
        Some(&config),
        None,
        &path.join("tokenizer.json"),
        &path.join("tokenizer_config.json"),
    )
}

/// The safetensors image compiled in (tensors of [`checkpoint`] point into it).
pub fn weights() -> &'static [u8] {
    WEIGHTS
}

fn serde_json_value(s: &str) -> Result<tokenizer::JsonValue, TokenizerError> {
    tokenizer::parse_json(s, Path::new(NAME).join("tokenizer_config.json"))
}
