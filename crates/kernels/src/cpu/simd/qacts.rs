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
    block: usize,
    group: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    bsums: Vec<i16>,
}

impl QActs {
    /// Quantize the rows of `x` (`k` values each; `k` a multiple of the block).
    pub fn quantize(&mut self, kind: ActQuant, x: &[f32], k: usize) {
        let (block, group) = (kind.block(), kind.sum_group());
        assert!(k > 0 && k.is_multiple_of(block) && x.len().is_multiple_of(k));
        let n = x.len() / k;
        grow(&mut self.qs, n * k);
        grow(&mut self.d, n * k / block);
        grow(&mut self.bsums, n * k / group);
        (self.k, self.block, self.group) = (k, block, group);
        for (b, xs) in x.chunks_exact(block).enumerate() {
            let qs = &mut self.qs[b * block..(b + 1) * block];
            self.d[b] = quantize_block(xs, qs);
            let sums = &mut self.bsums[b * block / group..(b + 1) * block / group];
            for (s, q) in sums.iter_mut().zip(qs.chunks_exact(group)) {
                *s = q.iter().map(|&v| v as i16).sum();
            }
        }
    }

    /// Token `t`'s row.
    pub fn row(&self, t: usize) -> QRow<'_> {
        let (k, b, g) = (self.k, self.block, self.group);
        QRow {
            qs: &self.qs[t * k..(t + 1) * k],
            d: &self.d[t * k / b..(t + 1) * k / b],
            bsums: &self.bsums[t * k / g..(t + 1) * k / g],
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
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 || !amax.is_finite() {
        q.fill(0);
        return 0.0;
    }
    let id = 127.0 / amax;
    // Adding 1.5 * 2^23 leaves |y| <= 127.x with no fraction bits, so the addition itself
    // rounds to nearest even: the same as `round_ties_even`, without a libm call per value
    // (the baseline target has no rounding instruction), and it vectorises.
    const MAGIC: f32 = 12_582_912.0;
    for (o, &v) in q.iter_mut().zip(x) {
        *o = ((v * id + MAGIC) - MAGIC) as i8;
    }
    amax / 127.0
}
