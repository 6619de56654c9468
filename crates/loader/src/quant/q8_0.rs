//! `Q8_0`: 32 weights in 34 bytes, `f16 d; i8 qs[32]`; `w = d * q`.

use super::{Q8_0_BYTES, QK8_0, f16_bytes, f16_le};

/// Decode whole `Q8_0` blocks: `bytes.len() == n/32 * 34`, `out.len() == n`.
///
/// # Panics
/// If the lengths disagree (use [`dequantize_row`](super::dequantize_row) for a checked call).
#[inline]
pub fn dequantize_q8_0(bytes: &[u8], out: &mut [f32]) {
    assert_eq!(bytes.len() / Q8_0_BYTES * QK8_0, out.len());
    assert!(bytes.len().is_multiple_of(Q8_0_BYTES));
    for (blk, o) in bytes
        .chunks_exact(Q8_0_BYTES)
        .zip(out.chunks_exact_mut(QK8_0))
    {
        let d = f16_le(blk, 0);
        for (v, &q) in o.iter_mut().zip(&blk[2..]) {
            *v = (q as i8) as f32 * d;
        }
    }
}

/// Encode `x` (a multiple of 32 values) as `Q8_0`, appending to `out`: ggml's
/// `quantize_row_q8_0_ref` (d = amax / 127, q = round-half-away(x / d)).
///
/// # Panics
/// If `x.len()` is not a multiple of 32.
pub fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) {
    assert!(x.len().is_multiple_of(QK8_0));
    let start = out.len();
    out.resize(start + x.len() / QK8_0 * Q8_0_BYTES, 0);
    for (blk, o) in x
        .chunks_exact(QK8_0)
        .zip(out[start..].chunks_exact_mut(Q8_0_BYTES))
    {
        quantize_q8_0_block(blk, o);
    }
}

/// One `Q8_0` block: 32 values into 34 bytes, as [`quantize_q8_0`] writes them (no
/// allocation: the 8-bit KV cache quantizes a row's blocks as it writes them).
///
/// # Panics
/// If `x` is not 32 values or `out` not 34 bytes.
pub fn quantize_q8_0_block(x: &[f32], out: &mut [u8]) {
    assert!(x.len() == QK8_0 && out.len() == Q8_0_BYTES);
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&f16_bytes(d));
    for (q, &v) in out[2..].iter_mut().zip(x) {
        // `as i8` saturates; |x * id| <= 127 up to rounding anyway
        *q = (v * id).round() as i8 as u8;
    }
}
