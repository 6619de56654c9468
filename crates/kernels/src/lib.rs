//! Kernels: the small set of model-level operations the DeepSeek-V3 forward needs, behind
//! one [`Backend`] trait, with a CPU implementation. The model code calls only the trait, so
//! a faster kernel (SIMD, another device) changes nothing above it.

mod backend;
pub mod cpu;
pub mod kv_q8;
mod matrix;

pub use backend::{
    Backend, Heads, KvRows, MlaAttention, bf16_bits, head_by_head, head_by_head_shared,
    head_by_head_t, round_bf16_into,
};
pub use cpu::CpuBackend;
pub use cpu::dispatch::{CpuOptions, Level, cpu_features};
pub use matrix::{Matrix, MatrixError};
