//! The CPU backend. Each op family has a scalar reference here; later SIMD levels sit beside
//! them and are tested against them.

mod attention;
mod matmul;
mod norm;

use crate::backend::{Backend, MlaAttention};
use crate::matrix::Matrix;

#[derive(Debug, Default, Clone)]
pub struct CpuBackend;

impl CpuBackend {
    pub fn new() -> CpuBackend {
        CpuBackend
    }
}

impl Backend for CpuBackend {
    fn matmul(&self, x: &[f32], w: &Matrix, y: &mut [f32]) {
        matmul::matmul(x, w, y)
    }

    fn matmul_t(&self, x: &[f32], w: &Matrix, y: &mut [f32]) {
        matmul::matmul_t(x, w, y)
    }

    fn embedding(&self, table: &Matrix, ids: &[u32], out: &mut [f32]) {
        for (row, &id) in out.chunks_exact_mut(table.cols).zip(ids) {
            table.read_row(id as usize, row);
        }
    }

    fn rms_norm(&self, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
        norm::rms_norm(x, weight, eps, out)
    }

    fn rope(&self, x: &mut [f32], cos: &[f32], sin: &[f32]) {
        norm::rope_interleaved(x, cos, sin)
    }

    fn silu_mul(&self, gate: &mut [f32], up: &[f32]) {
        for (g, &u) in gate.iter_mut().zip(up) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
    }

    fn softmax(&self, x: &mut [f32]) {
        norm::softmax(x)
    }

    fn mla_attention(&self, a: &MlaAttention<'_>, out: &mut [f32]) {
        attention::mla_attention(a, out)
    }
}

#[cfg(test)]
mod tests;
