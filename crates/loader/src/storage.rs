use std::sync::Arc;

use crate::dtype::{DType, bf16_to_f32, f16_to_f32, fp8_e4m3_to_f32};
use crate::quant;

/// Bytes that back tensors: a memory-mapped file natively, or an owned buffer (e.g. weights
/// embedded in a binary or fetched by a browser). Tensors share it; nothing is copied.
pub type Storage = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A typed, shaped window into a [`Storage`]. Cloning is cheap (an `Arc` bump).
#[derive(Clone)]
pub struct Tensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    storage: Storage,
    offset: usize,
    len: usize,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} {} {:?})", self.name, self.dtype, self.shape)
    }
}

impl Tensor {
    /// The caller has checked that `offset + len` lies within the storage and that `len`
    /// equals the element count times the dtype size.
    pub(crate) fn new(
        name: String,
        dtype: DType,
        shape: Vec<usize>,
        storage: Storage,
        offset: usize,
        len: usize,
    ) -> Tensor {
        Tensor {
            name,
            dtype,
            shape,
            storage,
            offset,
            len,
        }
    }

    /// A tensor over owned bytes (built in memory, e.g. by tests or a repacking step).
    /// Fails if `bytes` does not hold exactly `shape` elements of `dtype`.
    pub fn from_bytes(
        name: &str,
        dtype: DType,
        shape: Vec<usize>,
        bytes: Vec<u8>,
    ) -> Result<Tensor, String> {
        let numel = shape.iter().product::<usize>();
        let Some(want) = dtype.storage_bytes(numel) else {
            return Err(format!(
                "tensor `{name}`: {numel} elements are not whole {dtype} blocks"
            ));
        };
        if bytes.len() != want {
            return Err(format!(
                "tensor `{name}`: {} bytes given, {dtype} {shape:?} needs {want}",
                bytes.len()
            ));
        }
        let len = bytes.len();
        Ok(Tensor::new(
            name.to_string(),
            dtype,
            shape,
            Arc::new(bytes),
            0,
            len,
        ))
    }

    pub fn bytes(&self) -> &[u8] {
        &(*self.storage).as_ref()[self.offset..self.offset + self.len]
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// A window of `len` bytes at `byte_offset` within this tensor's bytes, as a tensor of
    /// its own (an expert's slab of a stacked tensor). The caller checks the bounds and that
    /// `len` holds `shape` of `dtype`.
    pub(crate) fn window(
        &self,
        name: String,
        dtype: DType,
        shape: Vec<usize>,
        byte_offset: usize,
        len: usize,
    ) -> Tensor {
        debug_assert!(byte_offset + len <= self.len);
        Tensor::new(
            name,
            dtype,
            shape,
            self.storage.clone(),
            self.offset + byte_offset,
            len,
        )
    }

    /// Element `i` widened to f32. Panics only if `i` is out of range or the dtype is not a
    /// float or block-quantized type; callers check the dtype once when they bind the tensor.
    /// For block-quantized types this decodes the enclosing block; prefer [`Self::read_f32`]
    /// over whole blocks.
    #[inline]
    pub fn get_f32(&self, i: usize) -> f32 {
        let b = self.bytes();
        match self.dtype {
            DType::F32 => f32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap()),
            DType::BF16 => bf16_to_f32(u16::from_le_bytes([b[2 * i], b[2 * i + 1]])),
            DType::F16 => f16_to_f32(u16::from_le_bytes([b[2 * i], b[2 * i + 1]])),
            DType::F8E4M3 => fp8_e4m3_to_f32(b[i]),
            DType::F64 => f64::from_le_bytes(b[8 * i..8 * i + 8].try_into().unwrap()) as f32,
            q if q.is_quantized() => {
                let (e, bb) = q.block();
                let k = i / e;
                let mut tmp = [0f32; quant::QK_K];
                quant::dequantize_row(q, &b[k * bb..k * bb + bb], &mut tmp[..e])
                    .expect("whole block");
                tmp[i % e]
            }
            other => panic!("tensor {}: {other} is not a float type", self.name),
        }
    }

    /// Elements `[start, start + out.len())` widened to f32. Block-quantized types decode
    /// the blocks that hold the range; a range of whole blocks (start and length multiples
    /// of the block size, e.g. whole rows) is decoded straight into `out`.
    pub fn read_f32(&self, start: usize, out: &mut [f32]) {
        let b = self.bytes();
        match self.dtype {
            q if q.is_quantized() => {
                let (e, bb) = q.block();
                assert!(start + out.len() <= self.numel(), "read past tensor end");
                if start.is_multiple_of(e) && out.len().is_multiple_of(e) {
                    let from = start / e * bb;
                    let to = from + out.len() / e * bb;
                    quant::dequantize_row(q, &b[from..to], out).expect("whole blocks");
                    return;
                }
                let mut tmp = [0f32; quant::QK_K];
                let mut done = 0;
                while done < out.len() {
                    let i = start + done;
                    let k = i / e;
                    quant::dequantize_row(q, &b[k * bb..k * bb + bb], &mut tmp[..e])
                        .expect("whole block");
                    let within = i % e;
                    let n = (e - within).min(out.len() - done);
                    out[done..done + n].copy_from_slice(&tmp[within..within + n]);
                    done += n;
                }
            }
            DType::F32 => {
                for (o, c) in out.iter_mut().zip(b[4 * start..].chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            DType::BF16 => {
                for (o, c) in out.iter_mut().zip(b[2 * start..].chunks_exact(2)) {
                    *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
                }
            }
            DType::F16 => {
                for (o, c) in out.iter_mut().zip(b[2 * start..].chunks_exact(2)) {
                    *o = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
                }
            }
            DType::F8E4M3 => {
                for (o, &c) in out.iter_mut().zip(&b[start..]) {
                    *o = fp8_e4m3_to_f32(c);
                }
            }
            _ => {
                for (k, o) in out.iter_mut().enumerate() {
                    *o = self.get_f32(start + k);
                }
            }
        }
    }

    /// The whole tensor widened to f32 (small tensors: norms, biases, goldens).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let mut v = vec![0f32; self.numel()];
        self.read_f32(0, &mut v);
        v
    }

    /// The whole tensor as i64 (integer goldens such as token ids). None for float dtypes.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        let b = self.bytes();
        Some(match self.dtype {
            DType::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            DType::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            DType::U32 => b
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            _ => return None,
        })
    }
}
