//! Binding checkpoint tensors to the model's fields, checking shape and dtype once.

use kernels::Matrix;
use loader::{Checkpoint, DType};

use crate::error::ModelError;

pub(crate) struct WeightLoader<'a> {
    pub ckpt: &'a Checkpoint,
}

impl WeightLoader<'_> {
    /// A linear weight `[rows, cols]`: dense (F32/F16/BF16) or FP8 with `<name>_scale_inv`.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix, ModelError> {
        let t = self.ckpt.tensor_checked(
            name,
            &[rows, cols],
            &[
                DType::BF16,
                DType::F16,
                DType::F32,
                DType::F8E4M3,
                DType::Q8_0,
                DType::Q5_0,
                DType::Q4K,
                DType::Q6K,
            ],
        )?;
        let path = self.ckpt.file_of(name);
        let m = if t.dtype == DType::F8E4M3 {
            let block = self
                .ckpt
                .config
                .quantization
                .as_ref()
                .map_or([128, 128], |q| q.block);
            let scale = self.ckpt.tensor(&format!("{name}_scale_inv"))?;
            Matrix::fp8(t.clone(), scale.clone(), block)
        } else {
            Matrix::dense(t.clone())
        };
        m.map_err(|e| ModelError::Weight { path, reason: e.0 })
    }

    pub fn has(&self, name: &str) -> bool {
        self.ckpt.contains(name)
    }

    /// A small vector (norm weight, bias) widened to f32 once at load.
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let t = self
            .ckpt
            .tensor_checked(name, &[len], &[DType::BF16, DType::F16, DType::F32])?;
        Ok(t.to_f32_vec())
    }
}
