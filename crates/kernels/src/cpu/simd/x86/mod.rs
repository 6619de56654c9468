//! x86-64 levels. Every function is `unsafe` only because it carries `#[target_feature]`;
//! callers reach it through `simd::dispatch!` after `Level::supported` checked the CPU.

pub mod amx;
pub mod avx2;
pub mod avx512;
mod avx512_attention;
pub mod avx512_bf16gemm;
mod avx512_int8;
pub mod avx512_qgemm;
pub mod avx512vnni;
