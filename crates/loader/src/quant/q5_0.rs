//! `Q5_0`: 32 weights in 22 bytes, `f16 d; u8 qh[4]; u8 qs[16]`.

use half::f16;

/// Q5_0 blocks (`f16 d; u8 qh[4]; u8 qs[16]`, 32 values): value j < 16 takes the low
/// nibble of qs[j] and bit j of qh as its fifth bit, value j + 16 the high nibble and bit
/// j + 16; then `d * (q - 16)`.
#[inline]
pub fn dequantize_q5_0(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes.chunks_exact(22).zip(out.chunks_exact_mut(32)) {
        let d = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        for j in 0..16 {
            let lo = (b[6 + j] & 0x0f) as u32 | (((qh >> j) & 1) << 4);
            let hi = (b[6 + j] >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4);
            y[j] = d * (lo as i32 - 16) as f32;
            y[j + 16] = d * (hi as i32 - 16) as f32;
        }
    }
}
