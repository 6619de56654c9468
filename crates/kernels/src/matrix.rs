//! A weight matrix as stored: a window into the mapped checkpoint, read in its own dtype.

use loader::{DType, Tensor};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MatrixError(pub String);

/// Row-major `[rows, cols]` weight, in bf16, f16, f32 or FP8 e4m3 with block scales
/// (`W[i, j] = fp8[i, j] * scale_inv[i / block_rows, j / block_cols]`). A `Matrix` may be a
/// view of consecutive rows of a larger tensor (a head's slice of `kv_b_proj`); `row0` keeps
/// block-scale lookups in the coordinates of the stored tensor.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    row0: usize,
    data: Tensor,
    scales: Option<BlockScales>,
}

#[derive(Clone, Debug)]
struct BlockScales {
    scale_inv: Tensor, // [ceil(rows/b0), ceil(cols/b1)]
    block: [usize; 2],
}

impl Matrix {
    /// A 2-D float tensor (F32, F16, BF16), read as is.
    pub fn dense(data: Tensor) -> Result<Matrix, MatrixError> {
        let [rows, cols] = two_d(&data)?;
        if !matches!(data.dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(MatrixError(format!(
                "tensor `{}` has dtype {}; a dense matrix needs F32, F16 or BF16",
                data.name, data.dtype
            )));
        }
        Ok(Matrix {
            rows,
            cols,
            row0: 0,
            data,
            scales: None,
        })
    }

    /// An FP8 e4m3 tensor with its `scale_inv` grid for `block`-sized blocks.
    pub fn fp8(data: Tensor, scale_inv: Tensor, block: [usize; 2]) -> Result<Matrix, MatrixError> {
        let [rows, cols] = two_d(&data)?;
        if data.dtype != DType::F8E4M3 {
            return Err(MatrixError(format!(
                "tensor `{}` has dtype {}, expected F8_E4M3",
                data.name, data.dtype
            )));
        }
        let want = [rows.div_ceil(block[0]), cols.div_ceil(block[1])];
        if scale_inv.shape != want {
            return Err(MatrixError(format!(
                "tensor `{}` has shape {:?}, expected {want:?} for a [{rows}, {cols}] weight in {}x{} blocks",
                scale_inv.name, scale_inv.shape, block[0], block[1]
            )));
        }
        if !matches!(scale_inv.dtype, DType::F32 | DType::BF16) {
            return Err(MatrixError(format!(
                "tensor `{}` has dtype {}, expected F32",
                scale_inv.name, scale_inv.dtype
            )));
        }
        Ok(Matrix {
            rows,
            cols,
            row0: 0,
            data,
            scales: Some(BlockScales { scale_inv, block }),
        })
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype
    }

    pub fn name(&self) -> &str {
        &self.data.name
    }

    /// Rows `[start, start + n)` of this matrix, sharing its storage.
    pub fn rows_view(&self, start: usize, n: usize) -> Matrix {
        assert!(start + n <= self.rows, "row view out of range");
        Matrix {
            rows: n,
            cols: self.cols,
            row0: self.row0 + start,
            data: self.data.clone(),
            scales: self.scales.clone(),
        }
    }

    /// Row `r` widened to f32 (dequantized for FP8) into `out[..cols]`.
    pub fn read_row(&self, r: usize, out: &mut [f32]) {
        let abs = self.row0 + r;
        let out = &mut out[..self.cols];
        self.data.read_f32(abs * self.cols, out);
        if let Some(s) = &self.scales {
            let [b0, b1] = s.block;
            let grid_cols = s.scale_inv.shape[1];
            let srow = abs / b0;
            for (j, chunk) in out.chunks_mut(b1).enumerate() {
                let scale = s.scale_inv.get_f32(srow * grid_cols + j);
                for v in chunk {
                    *v *= scale;
                }
            }
        }
    }
}

fn two_d(t: &Tensor) -> Result<[usize; 2], MatrixError> {
    match t.shape[..] {
        [r, c] => Ok([r, c]),
        _ => Err(MatrixError(format!(
            "tensor `{}` has shape {:?}, expected a matrix",
            t.name, t.shape
        ))),
    }
}
