//! The CPU backend: kernels at the best SIMD level the CPU offers (or a forced one), run on
//! a persistent thread pool. The portable level is the oracle the others are tested against.

mod attention;
pub mod dispatch;
mod matmul;
mod norm;
pub mod numa;
pub mod pool;
pub mod simd;

use dispatch::{CpuOptions, Level};
use pool::ThreadPool;

use crate::backend::{Backend, Heads, MlaAttention};
use crate::matrix::Matrix;

#[derive(Debug)]
pub struct CpuBackend {
    level: Level,
    pool: ThreadPool,
    /// `CpuOptions::bf16_activations`, where this CPU has the bf16 products
    bf16: bool,
}

impl Default for CpuBackend {
    fn default() -> Self {
        CpuBackend::new()
    }
}

impl CpuBackend {
    /// The best level this CPU supports, one thread per available core.
    pub fn new() -> CpuBackend {
        CpuBackend::with_options(&CpuOptions::default()).expect("the detected level is supported")
    }

    /// Fails if the requested level is not supported by this CPU.
    pub fn with_options(o: &CpuOptions) -> Result<CpuBackend, String> {
        let (level, threads) = o.resolve()?;
        Ok(CpuBackend {
            level,
            pool: ThreadPool::new(threads, o.pin_threads),
            bf16: o.bf16_activations && simd::has_bf16_dot(level),
        })
    }

    /// Whether prefill products of bf16 weights take bf16 activations (asked for, and
    /// this CPU has AVX-512 BF16).
    pub fn bf16_activations(&self) -> bool {
        self.bf16
    }

    pub fn level(&self) -> Level {
        self.level
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }
}

impl Backend for CpuBackend {
    fn matmul(&self, x: &[f32], w: &Matrix, y: &mut [f32]) {
        matmul::matmul(self.level, self.bf16, &self.pool, x, w, y)
    }

    fn matmul_t(&self, x: &[f32], w: &Matrix, y: &mut [f32]) {
        matmul::matmul_t(self.level, self.bf16, &self.pool, x, w, y)
    }

    fn matmul_heads(&self, x: &[f32], w: &Matrix, heads: Heads, y: &mut [f32]) {
        matmul::matmul_heads(self.level, self.bf16, &self.pool, x, w, heads, y)
    }

    fn matmul_t_heads(&self, x: &[f32], w: &Matrix, heads: Heads, y: &mut [f32]) {
        matmul::matmul_t_heads(self.level, self.bf16, &self.pool, x, w, heads, y)
    }

    fn matmul_t_shared(&self, x: &[f32], w: &Matrix, heads: Heads, y: &mut [f32]) {
        matmul::matmul_t_shared(self.level, self.bf16, &self.pool, x, w, heads, y)
    }

    fn matmul_experts<'w>(
        &self,
        x: &[f32],
        starts: &[usize],
        w: &(dyn Fn(usize) -> &'w Matrix + Sync),
        y: &mut [f32],
    ) {
        matmul::matmul_experts(self.level, self.bf16, &self.pool, x, starts, w, y)
    }

    fn matmul_pair(&self, x: &[f32], wa: &Matrix, wb: &Matrix, ya: &mut [f32], yb: &mut [f32]) {
        matmul::matmul_pair(self.level, self.bf16, &self.pool, x, [wa, wb], [ya, yb])
    }

    fn matmul_experts_pair<'w>(
        &self,
        x: &[f32],
        starts: &[usize],
        wa: &(dyn Fn(usize) -> &'w Matrix + Sync),
        wb: &(dyn Fn(usize) -> &'w Matrix + Sync),
        ya: &mut [f32],
        yb: &mut [f32],
    ) {
        matmul::matmul_experts_sets(
            self.level,
            self.bf16,
            &self.pool,
            x,
            starts,
            &[wa, wb],
            &mut [ya, yb],
        )
    }

    fn embedding(&self, table: &Matrix, ids: &[u32], out: &mut [f32]) {
        for (row, &id) in out.chunks_exact_mut(table.cols).zip(ids) {
            let (fmt, bytes) = table.row(id as usize);
            simd::widen(self.level, &fmt, bytes, row);
        }
    }

    fn rms_norm(&self, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
        // A prefill's rows over the pool (each row's arithmetic is the same, however split):
        // one thread normalising 512 rows while the others waited was 1.5% of a pp512.
        let d = weight.len().max(1);
        let rows = (x.len() / d).min(out.len() / d);
        if rows < PARALLEL_ROWS || self.pool.threads() == 1 {
            return norm::rms_norm(x, weight, eps, out);
        }
        let dst = pool::Disjoint::new(out);
        self.pool.for_ranges(rows, 1, &|rg| {
            // SAFETY: rows rg of out are this range's alone.
            let o = unsafe { dst.slice(rg.start * d, rg.len() * d) };
            norm::rms_norm(&x[rg.start * d..rg.end * d], weight, eps, o);
        });
    }

    fn rope(&self, x: &mut [f32], cos: &[f32], sin: &[f32]) {
        norm::rope_interleaved(x, cos, sin)
    }

    fn silu_mul(&self, gate: &mut [f32], up: &[f32]) {
        // elementwise, in groups of 16 lanes: ranges of whole groups give the same values
        let n = gate.len().min(up.len());
        if n < PARALLEL_ROWS * 1024 || self.pool.threads() == 1 {
            return simd::silu_mul(self.level, gate, up);
        }
        let dst = pool::Disjoint::new(gate);
        self.pool.for_ranges(n, 16, &|rg| {
            // SAFETY: gate[rg] is this range's alone.
            let g = unsafe { dst.slice(rg.start, rg.len()) };
            simd::silu_mul(self.level, g, &up[rg]);
        });
    }

    fn softmax(&self, x: &mut [f32]) {
        norm::softmax(x);
    }

    fn mla_attention(&self, a: &MlaAttention<'_>, out: &mut [f32]) {
        attention::mla_attention(self.level, &self.pool, a, out)
    }

    fn for_rows(&self, out: &mut [f32], width: usize, f: &(dyn Fn(usize, &mut [f32]) + Sync)) {
        self.rows_over_pool(out, width, f)
    }

    fn for_rows16(&self, out: &mut [u16], width: usize, f: &(dyn Fn(usize, &mut [u16]) + Sync)) {
        self.rows_over_pool(out, width, f)
    }
}

impl CpuBackend {
    /// `for_rows` for rows of any element type.
    fn rows_over_pool<T>(&self, out: &mut [T], width: usize, f: &(dyn Fn(usize, &mut [T]) + Sync)) {
        let width = width.max(1);
        let rows = out.len() / width;
        assert_eq!(
            rows * width,
            out.len(),
            "for_rows: not whole rows of {width}"
        );
        if rows < PARALLEL_ROWS || self.pool.threads() == 1 {
            return f(0, out);
        }
        let dst = pool::Disjoint::new(out);
        self.pool.for_ranges(rows, 1, &|rg| {
            // SAFETY: rows rg of out are this range's alone.
            f(rg.start, unsafe {
                dst.slice(rg.start * width, rg.len() * width)
            })
        });
    }
}

/// Rows from which the row-wise operations (normalisation, the gated activation) run over
/// the pool: fewer, as in a decode step, cost less than waking it.
const PARALLEL_ROWS: usize = 16;

#[cfg(test)]
mod int8_tests;
#[cfg(test)]
mod matmul_tests;
#[cfg(test)]
mod simd_tests;
#[cfg(test)]
mod tests;
