//! A weight matrix as stored: a window into the mapped checkpoint, read in its own dtype.

use std::sync::Arc;

use loader::{DType, Tensor};

use crate::cpu::simd::{Fmt, Fp8Run};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MatrixError(pub String);

/// Row-major `[rows, cols]` weight, in bf16, f16, f32, GGUF block formats (Q8_0, Q4_K,
/// Q6_K; a row is whole blocks) or FP8 e4m3 with block scales
/// (`W[i, j] = fp8[i, j] * scale_inv[i / block_rows, j / block_cols]`). A `Matrix` may be a
/// view of consecutive rows of a larger tensor (a head's slice of `kv_b_proj`); `row0` keeps
/// block-scale lookups in the coordinates of the stored tensor.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    row0: usize,
    /// Shared, so views (`rows_view`, a head's slice) are an Arc bump, not a copy of the
    /// tensor's name: the decode loop takes views and must not allocate.
    data: Arc<Tensor>,
    scales: Option<BlockScales>,
}

/// A matrix's rows with the storage lookup done (see [`Matrix::rows`]).
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    bytes: &'a [u8],
    rb: usize,
    fmt: Fmt<'a>,
    row0: usize,
    scales: Option<&'a BlockScales>,
}

impl<'a> Rows<'a> {
    /// How many rows.
    pub fn len(&self) -> usize {
        self.bytes.len().checked_div(self.rb).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `r`'s encoding and stored bytes.
    #[inline]
    pub fn get(&self, r: usize) -> (Fmt<'a>, &'a [u8]) {
        let bytes = &self.bytes[r * self.rb..(r + 1) * self.rb];
        match self.scales {
            None => (self.fmt, bytes),
            Some(s) => {
                let srow = (self.row0 + r) / s.block[0];
                let fmt = Fmt::Fp8 {
                    scales: &s.grid[srow * s.grid_cols..(srow + 1) * s.grid_cols],
                    block: s.block[1],
                };
                (fmt, bytes)
            }
        }
    }

    /// Rows `r0..r0 + len` as one slice and the bytes between rows, where every row has
    /// the same encoding (all but FP8 with block scales).
    #[inline]
    pub fn run(&self, r0: usize, len: usize) -> Option<(&'a [u8], usize)> {
        match self.scales {
            None => Some((&self.bytes[r0 * self.rb..(r0 + len) * self.rb], self.rb)),
            Some(_) => None,
        }
    }

    /// Rows `r0..r0 + len` of an FP8 matrix with block scales, as one run.
    #[inline]
    pub fn fp8_run(&self, r0: usize, len: usize) -> Option<Fp8Run<'a>> {
        self.scales.map(|s| Fp8Run {
            bytes: &self.bytes[r0 * self.rb..(r0 + len) * self.rb],
            rb: self.rb,
            grid: &s.grid[..],
            grid_cols: s.grid_cols,
            row0: self.row0 + r0,
            block: s.block,
        })
    }

    /// The encoding shared by every row, up to FP8's per-row scales.
    pub fn fmt(&self) -> Fmt<'a> {
        self.fmt
    }
}

#[derive(Clone, Debug)]
struct BlockScales {
    /// `[ceil(rows/b0), ceil(cols/b1)]`, widened once at load (it is 1/16384 of the weight)
    grid: Arc<[f32]>,
    grid_cols: usize,
    block: [usize; 2],
}

impl Matrix {
    /// A 2-D tensor read as stored: F32, F16, BF16, or a GGUF block format (Q8_0, Q4_K,
    /// Q6_K) whose rows are whole blocks.
    pub fn dense(data: Tensor) -> Result<Matrix, MatrixError> {
        let [rows, cols] = two_d(&data)?;
        if !matches!(
            data.dtype,
            DType::F32
                | DType::F16
                | DType::BF16
                | DType::Q8_0
                | DType::Q5_0
                | DType::Q4K
                | DType::Q6K
        ) {
            return Err(MatrixError(format!(
                "tensor `{}` has dtype {}; a weight matrix needs F32, F16, BF16, Q8_0, Q5_0, Q4_K or Q6_K (or F8_E4M3 with scales)",
                data.name, data.dtype
            )));
        }
        let block = data.dtype.block().0;
        if !cols.is_multiple_of(block) {
            return Err(MatrixError(format!(
                "tensor `{}`: {cols} columns are not whole {} blocks of {block}",
                data.name, data.dtype
            )));
        }
        Ok(Matrix {
            rows,
            cols,
            row0: 0,
            data: Arc::new(data),
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
            data: Arc::new(data),
            scales: Some(BlockScales {
                grid: scale_inv.to_f32_vec().into(),
                grid_cols: want[1],
                block,
            }),
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

    /// The stored bytes of this matrix's rows, the tensor that holds them, and the rows'
    /// place in it: what a backend with its own memory (a GPU) uploads once and finds again.
    /// Keep the tensor while using its address as a key, or a new tensor may reuse it. FP8's
    /// scales live beside the bytes: see [`Matrix::block_scales`].
    pub fn stored(&self) -> (&[u8], &Arc<Tensor>, usize, usize) {
        let rb = self.row_bytes();
        let bytes = &self.data.bytes()[self.row0 * rb..(self.row0 + self.rows) * rb];
        (bytes, &self.data, self.row0, self.rows)
    }

    /// FP8's `scale_inv` grid, widened to f32 and shared (`[ceil(rows/b0), ceil(cols/b1)]`
    /// of the stored tensor, so indexed by the absolute row `stored` gives), and the block
    /// shape `[b0, b1]`.
    pub fn block_scales(&self) -> Option<(&Arc<[f32]>, [usize; 2])> {
        self.scales.as_ref().map(|s| (&s.grid, s.block))
    }

    /// Bytes of one stored row.
    pub fn row_bytes(&self) -> usize {
        self.data
            .dtype
            .storage_bytes(self.cols)
            .expect("checked at construction")
    }

    /// Row `r`'s encoding and stored bytes.
    pub fn row(&self, r: usize) -> (Fmt<'_>, &[u8]) {
        self.rows().get(r)
    }

    /// Row access with the storage resolved once: kernels call `get` per row, which is
    /// then two multiplications, not a walk through the tensor's storage.
    pub fn rows(&self) -> Rows<'_> {
        let rb = self.row_bytes();
        let bytes = &self.data.bytes()[self.row0 * rb..(self.row0 + self.rows) * rb];
        let fmt = match self.data.dtype {
            DType::F32 => Fmt::F32,
            DType::F16 => Fmt::F16,
            DType::BF16 => Fmt::BF16,
            DType::Q8_0 => Fmt::Q8_0,
            DType::Q5_0 => Fmt::Q5_0,
            DType::Q4K => Fmt::Q4K,
            DType::Q6K => Fmt::Q6K,
            // FP8 rows take their scales in `get`
            DType::F8E4M3 => Fmt::F32,
            other => unreachable!("dtype {other} rejected at construction"),
        };
        Rows {
            bytes,
            rb,
            fmt,
            row0: self.row0,
            scales: self.scales.as_ref(),
        }
    }

    /// Row `r` widened to f32 (dequantized) into `out[..cols]`, by the portable kernel.
    pub fn read_row(&self, r: usize, out: &mut [f32]) {
        let (fmt, bytes) = self.row(r);
        crate::cpu::simd::portable::widen(&fmt, bytes, &mut out[..self.cols]);
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
