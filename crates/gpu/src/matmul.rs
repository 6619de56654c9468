//! The matmul shaders' side on the host: weights (and FP8 scale grids) uploaded once per
//! tensor, the format codes and parameters matmul.wgsl reads, and recording a product.

use std::sync::Arc;

use kernels::Matrix;
use loader::DType;
use wgpu::util::DeviceExt;

use crate::GpuBackend;
use crate::job::{Job, grid};

/// `record_matmul`'s heads argument for a plain product.
pub(crate) const ONE_HEAD: [usize; 4] = [1, 0, 0, 0];

/// The shader's code for a weight format, if it reads it.
pub(crate) fn kind(dtype: DType) -> Option<u32> {
    Some(match dtype {
        DType::F32 => 0,
        DType::BF16 => 1,
        DType::F16 => 2,
        DType::Q8_0 => 3,
        DType::Q4K => 4,
        DType::Q6K => 5,
        DType::Q5_0 => 6,
        DType::F8E4M3 => 7,
        _ => return None,
    })
}

impl GpuBackend {
    /// `w`'s rows on the device, uploaded on first use.
    pub(crate) fn weight(&self, w: &Matrix) -> Arc<wgpu::Buffer> {
        let (bytes, tensor, row0, rows) = w.stored();
        let key = (Arc::as_ptr(tensor) as usize, row0, rows);
        let mut map = self.weights.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key)
            .or_insert_with(|| {
                // storage buffers hold whole 32-bit words
                let mut padded = bytes.to_vec();
                padded.resize(bytes.len().div_ceil(4).max(1) * 4, 0);
                let buf = self
                    .device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("weight"),
                        contents: &padded,
                        usage: wgpu::BufferUsages::STORAGE,
                    });
                (tensor.clone(), Arc::new(buf))
            })
            .1
            .clone()
    }

    /// The shader's format code when a product of `n` tokens through `w` writing `out`
    /// values runs on the GPU: a format it reads, and every operand within one binding.
    pub(crate) fn matmul_kind(&self, w: &Matrix, n: usize, out: usize) -> Option<u32> {
        let ok = w.rows > 0
            && w.cols > 0
            && n > 0
            && n <= 65_535
            && (w.stored().0.len() as u64) <= self.max_binding
            && self.fits(out)
            // FP8 goes 32 values under one scale at a time
            && w.block_scales().is_none_or(|(_, [_, b1])| b1.is_multiple_of(32) && w.cols.is_multiple_of(32));
        kind(w.dtype()).filter(|_| ok)
    }

    /// The matmul shaders' parameters, and the buffer for their scales binding (FP8's grid,
    /// uploaded once, or a placeholder).
    pub(crate) fn matmul_params(
        &self,
        w: &Matrix,
        kind: u32,
        m: usize,
        n: usize,
        [x_off, y_off, w_row0]: [usize; 3],
    ) -> ([u32; 16], Arc<wgpu::Buffer>) {
        let (_, _, s_row0, _) = w.stored();
        let (scales, s_cols, [b0, b1]) = match w.block_scales() {
            Some((grid, block)) => {
                let key = (Arc::as_ptr(grid) as *const f32 as usize, 0, grid.len());
                let mut map = self.scales.lock().unwrap_or_else(|e| e.into_inner());
                let buf = map
                    .entry(key)
                    .or_insert_with(|| {
                        let bytes: Vec<u8> = grid.iter().flat_map(|v| v.to_le_bytes()).collect();
                        let buf =
                            self.device
                                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                                    label: Some("fp8 scales"),
                                    contents: &bytes,
                                    usage: wgpu::BufferUsages::STORAGE,
                                });
                        (grid.clone(), Arc::new(buf))
                    })
                    .1
                    .clone();
                (buf, w.cols.div_ceil(block[1]), block)
            }
            None => (self.placeholder.clone(), 1, [1, 1]),
        };
        let params = [
            m as u32,
            w.cols as u32,
            n as u32,
            kind,
            w.row_bytes() as u32,
            x_off as u32,
            y_off as u32,
            w_row0 as u32,
            s_row0 as u32,
            s_cols as u32,
            b0 as u32,
            b1 as u32,
            // one head unless the caller sets hx, hy, hw
            0,
            0,
            0,
            0,
        ];
        (params, scales)
    }

    /// Record `y[y_off..] = x[x_off..] · W[w_row0..w_row0 + m]ᵀ` for `n` tokens.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_matmul(
        &self,
        job: &mut Job<'_>,
        w: &Matrix,
        bufs: [&wgpu::Buffer; 3],
        kind: u32,
        (m, n): (usize, usize),
        (x_off, y_off, w_row0): (usize, usize, usize),
        [heads, hx, hy, hw]: [usize; 4],
    ) {
        let (mut params, scales) = self.matmul_params(w, kind, m, n, [x_off, y_off, w_row0]);
        params[12..15].copy_from_slice(&[hx as u32, hy as u32, hw as u32]);
        let bufs = [bufs[0], bufs[1], bufs[2], &*scales];
        // decode: one token and four rows per workgroup; else four tokens of one row; z
        // runs over heads, then token groups
        let (kernel, (gx, gy), gz) = match n {
            1 => (&self.k.matmul1, grid((m as u32).div_ceil(4)), 1),
            _ => (&self.k.matmul4, grid(m as u32), (n as u32).div_ceil(4)),
        };
        job.dispatch(kernel, &params, &bufs, (gx, gy, gz * heads as u32));
    }
}
