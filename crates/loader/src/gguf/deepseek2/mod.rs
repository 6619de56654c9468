//! llama.cpp's `deepseek2` architecture: a GGUF file as a Hugging Face checkpoint
//! (config and tensor names), and a Hugging Face checkpoint written as such a GGUF file.
//!
//! Names: llama.cpp's `blk.{i}.attn_q_a.weight` is `model.layers.{i}.self_attn.q_a_proj.weight`
//! and so on (see [`hf_name`]). Routed experts are stacked in one 3-D tensor per projection
//! (`ffn_gate_exps`, ne = [cols, rows, n_expert]); each expert becomes its own tensor, a window
//! into the stack (no copy). Current converters split `kv_b_proj` into `attn_k_b` (per head
//! the key half, transposed: [kv_lora_rank, qk_nope]) and `attn_v_b` (per head [v_head,
//! kv_lora_rank]); they map to `self_attn.k_b_proj.weight` ([n_head * kv_lora_rank, qk_nope])
//! and `self_attn.v_b_proj.weight` ([n_head * v_head, kv_lora_rank]), which the model reads as
//! they are; [`rebuild_kv_b`] gives `kv_b_proj` back for tools that want it.
//!
//! The MTP module, when a file has one, follows llama.cpp's NextN convention: `block_count`
//! counts it and `nextn_predict_layers` says how many of the last blocks are MTP layers.

mod config;
mod export;
mod metadata;
mod names;

pub use config::config_json;
pub use export::{ExportOptions, export_deepseek2, export_deepseek2_with, weight_dtype};
pub(crate) use names::{GgufModel, open_deepseek2};
pub use names::{hf_name, rebuild_kv_b};

const ARCH: &str = "deepseek2";

#[cfg(test)]
mod export_tests;
