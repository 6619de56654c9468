//! GGUF, llama.cpp's model container (versions 2 and 3), read in place and written.
//!
//! Layout (all little-endian): the magic `GGUF`, `u32` version, `u64` tensor count, `u64`
//! key-value count; the key-value pairs (`string` key, `u32` value type, value); the tensor
//! infos (`string` name, `u32` n_dims, `u64` ne[n_dims], `u32` ggml type, `u64` offset
//! relative to the data section); padding to `general.alignment` (default 32); the data.
//! A string is a `u64` length and UTF-8 bytes; an array is a `u32` element type, a `u64`
//! count and the elements.
//!
//! `ne[0]` is the innermost (contiguous) dimension, so a tensor's row-major shape is `ne`
//! reversed: `ne = [4096, 11008]` is a `[11008, 4096]` matrix of 11008 rows.
//!
//! Every count and length is checked against the bytes that remain before anything is
//! allocated from it, and every tensor's byte range against the file, so a truncated or
//! corrupt file is an error naming the file, never a panic or a huge allocation.

mod cursor;
mod read;
mod value;
mod write;

pub use read::{GgufFile, GgufTensorInfo, is_gguf};
pub use value::{GgufArray, GgufType, GgufValue, dtype_of_ggml, ggml_of_dtype, ggml_type_name};
pub use write::{GgufTensorOut, GgufTensorSpec, write_gguf, write_gguf_streaming};

#[cfg(test)]
use write::put_str;

mod deepseek2;
pub use deepseek2::{
    ExportOptions, config_json, export_deepseek2, export_deepseek2_with, hf_name, rebuild_kv_b,
    weight_dtype,
};
pub(crate) use deepseek2::{GgufModel, open_deepseek2};

/// The magic bytes at the start of every GGUF file.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// The alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// Dimensions a ggml tensor can have.
pub const MAX_DIMS: usize = 4;

#[cfg(test)]
mod tests;
