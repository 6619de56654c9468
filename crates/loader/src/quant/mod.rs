//! ggml's block-quantized weight formats, scalar reference code.
//!
//! The layouts are ggml's, byte for byte, so a GGUF file's tensor data is decoded in place:
//!
//! - `Q8_0`, 32 weights in 34 bytes: `f16 d; i8 qs[32]`; `w = d * q`.
//! - `Q4_K`, 256 weights in 144 bytes: `f16 d; f16 dmin; u8 scales[12]; u8 qs[128]`, eight
//!   sub-blocks of 32 weights with a 6-bit scale `sc` and a 6-bit min `m` each;
//!   `w = d * sc * q - dmin * m` with `q` in 0..=15.
//! - `Q6_K`, 256 weights in 210 bytes: `u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d`, sixteen
//!   sub-blocks of 16 weights with an i8 scale each; `w = d * sc * (q - 32)`, `q` in 0..=63.
//!
//! The quantizers follow ggml's reference ("`_ref`") quantizers step by step, in the same
//! f32 operation order and with the same round-half-to-even trick, so for the same input they
//! produce the same bytes as llama.cpp's reference path (a build of llama.cpp that lets the C
//! compiler fuse multiply-adds may differ in the last bit of rare ties).

use half::f16;
use thiserror::Error;

use crate::dtype::DType;

mod q4_k;
mod q5_0;
mod q6_k;
mod q8_0;

pub use q4_k::{dequantize_q4_k, q4k_pack_scales, q4k_scale_min, quantize_q4_k};
pub use q5_0::dequantize_q5_0;
pub use q6_k::{dequantize_q6_k, quantize_q6_k};
pub use q8_0::{dequantize_q8_0, quantize_q8_0, quantize_q8_0_block};

/// Weights per `Q8_0` block.
pub const QK8_0: usize = 32;
/// Weights per k-quant super-block.
pub const QK_K: usize = 256;
/// Bytes of one `Q8_0` block.
pub const Q8_0_BYTES: usize = 34;
/// Bytes of one `Q4_K` super-block.
pub const Q4K_BYTES: usize = 144;
/// Bytes of one `Q6_K` super-block.
pub const Q6K_BYTES: usize = 210;

/// A request that does not fit a format: wrong lengths or a type with no codec here.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantError {
    #[error("{dtype}: {n} values are not a whole number of {block}-value blocks")]
    NotWholeBlocks {
        dtype: DType,
        n: usize,
        block: usize,
    },
    #[error("{dtype}: {bytes} bytes do not decode to {values} values")]
    LengthMismatch {
        dtype: DType,
        bytes: usize,
        values: usize,
    },
    #[error("{0} has no f32 codec")]
    Unsupported(DType),
}

#[inline]
fn f16_le(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

#[inline]
fn f16_bytes(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_bits().to_le_bytes()
}

/// ggml's `nearest_int`: round half to even by adding 1.5 * 2^23 and reading the mantissa.
/// Exact for |x| < 2^22, the range every caller stays in.
#[inline]
fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0f32;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Below this a group is treated as all zeros (ggml's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

// ---------------------------------------------------------------- by dtype

fn check_blocks(dtype: DType, n: usize) -> Result<(usize, usize), QuantError> {
    let (e, b) = dtype.block();
    if b == 0 || !n.is_multiple_of(e) {
        return Err(QuantError::NotWholeBlocks { dtype, n, block: e });
    }
    Ok((e, b))
}
/// Decode `out.len()` values of `dtype` from `bytes` (exactly their storage). Handles the
/// block types and the plain float types (F32, F16, BF16).
pub fn dequantize_row(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let (e, b) = check_blocks(dtype, out.len())?;
    if bytes.len() != out.len() / e * b {
        return Err(QuantError::LengthMismatch {
            dtype,
            bytes: bytes.len(),
            values: out.len(),
        });
    }
    match dtype {
        DType::Q8_0 => dequantize_q8_0(bytes, out),
        DType::Q5_0 => dequantize_q5_0(bytes, out),
        DType::Q4K => dequantize_q4_k(bytes, out),
        DType::Q6K => dequantize_q6_k(bytes, out),
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(())
}

/// Encode `x` as `dtype`, appending the bytes to `out`. Block types need whole blocks;
/// F32, F16 and BF16 (round to nearest even) take any length.
pub fn quantize_row(dtype: DType, x: &[f32], out: &mut Vec<u8>) -> Result<(), QuantError> {
    check_blocks(dtype, x.len())?;
    match dtype {
        DType::Q8_0 => quantize_q8_0(x, out),
        DType::Q4K => quantize_q4_k(x, out),
        DType::Q6K => quantize_q6_k(x, out),
        DType::F32 => out.extend(x.iter().flat_map(|v| v.to_le_bytes())),
        DType::F16 => out.extend(x.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes())),
        DType::BF16 => out.extend(
            x.iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()),
        ),
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
