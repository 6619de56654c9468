//! The 8-bit latent cache (`--cache-type q8_0`): each cached row's latent in GGML's Q8_0
//! blocks (32 values in 34 bytes: an f16 scale `d = amax / 127` and 32 int8 `q`, quantized
//! as ggml's reference quantizer does, as llama.cpp's `--cache-type-k q8_0` stores its
//! cache), and its roped key in bf16 (the rope part is small and carries the positions,
//! as DeepSeek's own 8-bit cache for V3.2 keeps it in 16 bits). 608 bytes a row at the mid
//! model's widths (512 + 32), 672 at V3's (512 + 64), against 1088 and 1152 in bf16.
//!
//! A row is `[ceil(r / 32) blocks][p bf16]`; a last partial block is padded with zeros.
//!
//! Every reader attends over `bf16(q * d)` (the product in f32, rounded to nearest even):
//! the kernels' rule for a bf16 cache then holds unchanged, and the AMX tiles take the rows
//! as bf16. Int8 in blocks of 32 rather than FP8 E4M3 (built first, as DeepSeek's V3.2
//! cache is): on roughly Gaussian latents E4M3's three mantissa bits lose more. Mean KL
//! against the bf16 model's logits on the mid model, measured with `deeprust kl`: E4M3 in
//! groups of 64 with power-of-two scales 0.108 nats, this format 0.049, a bf16 cache 0.029.

/// Latent values a block holds.
pub const BLOCK: usize = loader::quant::QK8_0;
/// Bytes of a block: the f16 scale, then the 32 codes.
pub const BLOCK_BYTES: usize = loader::quant::Q8_0_BYTES;

/// Blocks of a row's latent.
pub fn blocks(r: usize) -> usize {
    r.div_ceil(BLOCK)
}

/// Where the rope values start in a row (even: blocks are 34 bytes).
pub fn rope_offset(r: usize) -> usize {
    blocks(r) * BLOCK_BYTES
}

/// Bytes of one cached row of `r` latent values and `p` rope values.
pub fn row_bytes(r: usize, p: usize) -> usize {
    rope_offset(r) + 2 * p
}

/// A layer of the 8-bit cache: rows of [`row_bytes`]`(r, p)`. Offsets into it are counted
/// in values, as for the other cache types (`slot * (r + p)`): [`Q8Rows::byte_offset`]
/// turns one into where its row starts.
#[derive(Clone, Copy, Debug)]
pub struct Q8Rows<'a> {
    pub bytes: &'a [u8],
    pub r: usize,
    pub p: usize,
}

impl Q8Rows<'_> {
    /// Where the row holding value offset `at` starts.
    pub fn byte_offset(&self, at: usize) -> usize {
        at / (self.r + self.p) * row_bytes(self.r, self.p)
    }

    /// Values the layer holds (as the other cache types count them).
    pub fn len(&self) -> usize {
        self.bytes.len() / row_bytes(self.r, self.p) * (self.r + self.p)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Quantize one row (`r` latent values then `p` rope values) into `out`
/// ([`row_bytes`]`(r, p)` bytes): the latent as GGUF's Q8_0 blocks
/// (`loader::quant::quantize_q8_0_block`, a last partial block zero-padded), the rope part
/// rounded to bf16.
pub fn quantize_row(row: &[f32], r: usize, p: usize, out: &mut [u8]) {
    assert!(row.len() == r + p && out.len() == row_bytes(r, p));
    for (vals, blk) in row[..r]
        .chunks(BLOCK)
        .zip(out[..rope_offset(r)].chunks_exact_mut(BLOCK_BYTES))
    {
        let mut padded = [0f32; BLOCK];
        padded[..vals.len()].copy_from_slice(vals);
        loader::quant::quantize_q8_0_block(&padded, blk);
    }
    for (d, &v) in out[rope_offset(r)..].chunks_exact_mut(2).zip(&row[r..]) {
        d.copy_from_slice(&half::bf16::from_f32(v).to_bits().to_le_bytes());
    }
}

/// What every reader takes code `q` of a block with scale `d` for: `bf16(q * d)`, the
/// product in f32 rounded to nearest even.
#[inline]
pub fn code_to_bf16(q: u8, d: f32) -> u16 {
    half::bf16::from_f32(q as i8 as f32 * d).to_bits()
}

/// Value `i` of a row (`i < r + p`) as bf16 bits.
pub fn value(bytes: &[u8], r: usize, i: usize) -> u16 {
    if i < r {
        let blk = &bytes[i / BLOCK * BLOCK_BYTES..];
        code_to_bf16(blk[2 + i % BLOCK], scale(blk))
    } else {
        let at = rope_offset(r) + 2 * (i - r);
        u16::from_le_bytes([bytes[at], bytes[at + 1]])
    }
}

/// A block's scale as f32.
#[inline]
pub fn scale(blk: &[u8]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([blk[0], blk[1]])).to_f32()
}

/// One row as bf16 bits (`r + p` of them): what every kernel attends over.
pub fn row_to_bf16(bytes: &[u8], r: usize, p: usize, out: &mut [u16]) {
    for (blk, os) in bytes[..rope_offset(r)]
        .chunks_exact(BLOCK_BYTES)
        .zip(out[..r].chunks_mut(BLOCK))
    {
        let d = scale(blk);
        for (o, &q) in os.iter_mut().zip(&blk[2..]) {
            *o = code_to_bf16(q, d);
        }
    }
    for (o, b) in out[r..r + p]
        .iter_mut()
        .zip(bytes[rope_offset(r)..].chunks_exact(2))
    {
        *o = u16::from_le_bytes([b[0], b[1]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn rows_are_ggml_q8_0_blocks_then_bf16_rope() {
        // a partial last block, a zero block, blocks of very different magnitudes
        let (r, p) = (80, 6);
        let mut row = values(r + p, 7);
        row[..32].iter_mut().for_each(|v| *v *= 1e-3);
        row[32..64].iter_mut().for_each(|v| *v = 0.0);
        row[70] = -36.0;
        let mut bytes = vec![0u8; row_bytes(r, p)];
        assert_eq!(bytes.len(), 3 * 34 + 12);
        quantize_row(&row, r, p, &mut bytes);
        // the latent's blocks are what the GGUF quantizer writes for the zero-padded latent
        let mut padded = row[..r].to_vec();
        padded.resize(96, 0.0);
        let mut want = Vec::new();
        loader::quant::quantize_q8_0(&padded, &mut want);
        assert_eq!(&bytes[..rope_offset(r)], &want[..]);
        let mut back = vec![0u16; r + p];
        row_to_bf16(&bytes, r, p, &mut back);
        for (b, vals) in row[..r].chunks(BLOCK).enumerate() {
            let d = scale(&bytes[b * BLOCK_BYTES..]);
            for (i, &v) in vals.iter().enumerate() {
                let got = half::bf16::from_bits(back[b * BLOCK + i]).to_f32();
                // half a step, and bf16's rounding of the product
                let bound = d / 2.0 * 1.01 + v.abs() / 256.0;
                assert!(
                    (got - v).abs() <= bound,
                    "block {b} value {i}: {v} -> {got}"
                );
            }
        }
        assert!(back[32..64].iter().all(|&b| b == 0));
        assert_eq!(half::bf16::from_bits(back[70]).to_f32(), -36.0);
        for (i, &v) in row[r..].iter().enumerate() {
            assert_eq!(back[r + i], half::bf16::from_f32(v).to_bits());
        }
    }
}
