//! Checkpoints as people have them, mapped, never copied.
//!
//! A Hugging Face model directory is a `config.json` ([`ModelConfig`]) plus weights in one
//! `model.safetensors` or in shards named by `model.safetensors.index.json` ([`Checkpoint`]).
//! Every tensor is a [`Tensor`]: a typed, shaped window into a shared memory map, so a
//! kernel reads the stored dtype (bf16, f16, f32, FP8 e4m3 with block scales) in place.

mod checkpoint;
pub mod config;
mod dtype;
mod error;
pub mod gguf;
pub mod quant;
mod residency;
mod safetensors;
mod storage;
mod writer;

pub use checkpoint::Checkpoint;
pub use config::{ModelConfig, Quantization, RopeScaling, ScoringFunc, TopkMethod, YarnParams};
pub use dtype::{DType, bf16_to_f32, f16_to_f32, fp8_e4m3_to_f32};
pub use error::{LoadError, Result};
pub use residency::{Residency, huge_pages_available};
pub use safetensors::SafetensorsFile;
pub use storage::{Storage, Tensor};
pub use writer::{TensorOut, write_safetensors};
