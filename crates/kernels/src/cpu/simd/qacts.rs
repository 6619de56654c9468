//! Activations quantized to int8 on the fly, so quantized weights meet them in integer dot
//! products (as ggml's `vec_dot_type` does): unpacking a 4- or 6-bit weight to an integer
//! and multiplying bytes costs a fraction of widening it to f32, which is what keeps the
//! decode of block-quantized files bound by memory rather than by arithmetic.
//!
//! One quantizer for every level, so every level sees the same integers and differs only
//! in the order it adds f32 partial sums.

use super::Fmt;

/// The int8 layout a weight format's dot product wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActQuant {
    /// Blocks of 32, one f32 scale and one sum each (meets Q8_0 and Q5_0 weights block
    /// for block; Q5_0's offset of 16 folds into the sum).
    Q8_0,
    /// Blocks of 256, one f32 scale each, plus the sum of every 16 quants (the K-quants'
    /// per-sub-block minimums and offsets fold into those sums).
    Q8K,
}

impl ActQuant {
    pub fn block(self) -> usize {
        match self {
            ActQuant::Q8_0 => 32,
            ActQuant::Q8K => 256,
        }
    }

    /// Quants per entry of `bsums`.
    pub fn sum_group(self) -> usize {
        match self {
            ActQuant::Q8_0 => 32,
            ActQuant::Q8K => 16,
        }
    }
}

impl Fmt<'_> {
    /// The activation layout for this format's int8 dot product, if it has one.
    pub fn act_quant(&self) -> Option<ActQuant> {
        match self {
            Fmt::Q8_0 | Fmt::Q5_0 => Some(ActQuant::Q8_0),
            Fmt::Q4K | Fmt::Q6K => Some(ActQuant::Q8K),
            _ => None,
        }
    }
}

/// One quantized token row: value `i` is `qs[i] * d[i / block]`.
#[derive(Clone, Copy, Debug)]
pub struct QRow<'a> {
    pub qs: &'a [i8],
    pub d: &'a [f32],
    /// Sums of the quants: `Q8K` of every 16 (`bsums[g] = Σ qs[16 g .. 16 g + 16]`),
    /// `Q8_0` of every block of 32.
    pub bsums: &'a [i16],
}

/// Token rows quantized for one matmul; the buffers grow to the largest call and stay.
#[derive(Debug, Default)]
pub struct QActs {
    k: usize,
    /// Scales and sums per token.
    per_d: usize,
    per_sums: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    bsums: Vec<i16>,
}

impl QActs {
    /// Quantize the rows of `x` (`k` values each; `k` a multiple of the block).
    pub fn quantize(&mut self, kind: ActQuant, x: &[f32], k: usize) {
        let (block, group) = (kind.block(), kind.sum_group());
        assert!(k > 0 && k.is_multiple_of(block) && x.len().is_multiple_of(k));
        grow(&mut self.qs, x.len());
        grow(&mut self.d, x.len() / block);
        grow(&mut self.bsums, x.len() / group);
        (self.k, self.per_d, self.per_sums) = (k, k / block, k / group);
        for (b, xs) in x.chunks_exact(block).enumerate() {
            let qs = &mut self.qs[b * block..(b + 1) * block];
            self.d[b] = quantize_block(xs, qs);
            let sums = &mut self.bsums[b * block / group..(b + 1) * block / group];
            for (s, q) in sums.iter_mut().zip(qs.chunks_exact(group)) {
                let mut acc = 0i16;
                for &v in q {
                    acc += v as i16;
                }
                *s = acc;
            }
        }
    }

    /// Token `t`'s row.
    #[inline]
    pub fn row(&self, t: usize) -> QRow<'_> {
        // per-token lengths kept from `quantize`: no divisions here, this runs per tile
        let (k, nd, ns) = (self.k, self.per_d, self.per_sums);
        QRow {
            qs: &self.qs[t * k..(t + 1) * k],
            d: &self.d[t * nd..(t + 1) * nd],
            bsums: &self.bsums[t * ns..(t + 1) * ns],
        }
    }
}

fn grow<T: Default + Clone>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::default());
    }
}

/// Symmetric int8: the largest magnitude maps to ±127, the rest round to nearest (ties to
/// even). Returns the scale. A block of zeros (or non-finite values) gets scale 0.
#[inline]
fn quantize_block(x: &[f32], q: &mut [i8]) -> f32 {
    // sixteen running maxima with a plain compare (not f32::max, whose NaN rule stops
    // vectorisation; NaN compares false and is skipped); blocks are multiples of 16
    let mut lanes = [0f32; 16];
    for c in x.chunks_exact(16) {
        for (m, v) in lanes.iter_mut().zip(c) {
            *m = if v.abs() > *m { v.abs() } else { *m };
        }
    }
    let amax = lanes.iter().fold(0f32, |m, &v| if v > m { v } else { m });
    if amax == 0.0 || !amax.is_finite() {
        q.fill(0);
        return 0.0;
    }
    let id = 127.0 / amax;
    // Adding 1.5 * 2^23 to |y| <= 127.x leaves no fraction bits, so the addition itself
    // rounds to nearest even (as `round_ties_even`), and the sum's low mantissa byte is the
    // rounded value in two's complement: no libm call and no saturating float-to-int cast
    // per value (the baseline target has neither instruction), so the loop vectorises.
    const MAGIC: f32 = 12_582_912.0;
    for (o, &v) in q.iter_mut().zip(x) {
        *o = (v * id + MAGIC).to_bits() as u8 as i8;
    }
    amax / 127.0
}
