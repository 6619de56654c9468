//! Writing: GGUF files from tensors in memory or streamed in order.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::{DEFAULT_ALIGNMENT, GgufArray, GgufValue, MAGIC, MAX_DIMS, ggml_of_dtype};
use crate::dtype::DType;
use crate::error::{LoadError, Result};

/// A tensor to write: `shape` row-major (written as `ne` = shape reversed), `bytes` its data
/// in `dtype`'s layout.
pub struct GgufTensorOut<'a> {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: &'a [u8],
}

/// A tensor's description for [`write_gguf_streaming`], whose data comes later.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::String(s) => put_str(out, s),
        GgufValue::Array(a) => put_array(out, a),
        scalar => scalar.put_scalar(out),
    }
}

fn put_array(out: &mut Vec<u8>, a: &GgufArray) {
    out.extend_from_slice(&(a.elem() as u32).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    match a {
        GgufArray::Scalars { bytes, .. } => out.extend_from_slice(bytes),
        GgufArray::Strings { .. } => a.strs().into_iter().flatten().for_each(|s| put_str(out, s)),
        GgufArray::Arrays(v) => v.iter().for_each(|inner| put_array(out, inner)),
    }
}

/// Write a GGUF v3 file from tensors in memory, aligned to 32 bytes (what llama.cpp writes
/// and reads). `general.alignment` in `metadata`, if given, must be a u32 power of two and
/// sets the alignment.
pub fn write_gguf(
    path: &Path,
    metadata: &[(String, GgufValue)],
    tensors: &[GgufTensorOut<'_>],
) -> Result<()> {
    let specs: Vec<GgufTensorSpec> = tensors
        .iter()
        .map(|t| GgufTensorSpec {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
        })
        .collect();
    write_gguf_streaming(path, metadata, &specs, |i, w| w.write_all(tensors[i].bytes))
}

/// Write a GGUF v3 file whose tensor data `fill(i, writer)` produces, tensor by tensor, in
/// the order of `specs` (so a model larger than memory can be converted). Each tensor must
/// get exactly the bytes its dtype and shape take.
pub fn write_gguf_streaming(
    path: &Path,
    metadata: &[(String, GgufValue)],
    specs: &[GgufTensorSpec],
    mut fill: impl FnMut(usize, &mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let bad = |reason: String| LoadError::BadGguf {
        path: path.to_path_buf(),
        reason,
    };
    let mut alignment = DEFAULT_ALIGNMENT;
    let mut seen = std::collections::BTreeSet::new();
    let mut head = Vec::new();
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&(specs.len() as u64).to_le_bytes());
    head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        if !seen.insert(k.as_str()) {
            return Err(bad(format!("duplicate key `{k}`")));
        }
        if k == "general.alignment" {
            match v {
                GgufValue::U32(a) if *a > 0 && a.is_power_of_two() => alignment = *a as usize,
                _ => return Err(bad("`general.alignment` must be a u32 power of two".into())),
            }
        }
        put_str(&mut head, k);
        head.extend_from_slice(&(v.ty() as u32).to_le_bytes());
        put_value(&mut head, v);
    }
    let mut sizes = Vec::with_capacity(specs.len());
    let mut offset = 0u64;
    let mut names = std::collections::BTreeSet::new();
    for s in specs {
        let bad_t = |reason: String| LoadError::BadTensor {
            path: path.to_path_buf(),
            tensor: s.name.clone(),
            reason,
        };
        if !names.insert(s.name.as_str()) {
            return Err(bad_t("duplicate tensor name".into()));
        }
        let ty = ggml_of_dtype(s.dtype)
            .ok_or_else(|| bad_t(format!("{} cannot be stored in GGUF", s.dtype)))?;
        if s.shape.is_empty() || s.shape.len() > MAX_DIMS {
            return Err(bad_t(format!(
                "shape {:?} must have 1 to {MAX_DIMS} dimensions",
                s.shape
            )));
        }
        let (be, _) = s.dtype.block();
        if !s.shape.last().unwrap().is_multiple_of(be) {
            return Err(bad_t(format!(
                "rows of {} values are not whole {be}-value {} blocks",
                s.shape.last().unwrap(),
                s.dtype
            )));
        }
        let numel: usize = s.shape.iter().product();
        let n = s.dtype.storage_bytes(numel).unwrap() as u64;
        put_str(&mut head, &s.name);
        head.extend_from_slice(&(s.shape.len() as u32).to_le_bytes());
        for &d in s.shape.iter().rev() {
            head.extend_from_slice(&(d as u64).to_le_bytes());
        }
        head.extend_from_slice(&ty.to_le_bytes());
        head.extend_from_slice(&offset.to_le_bytes());
        sizes.push(n);
        offset += n.div_ceil(alignment as u64) * alignment as u64;
    }
    while !head.len().is_multiple_of(alignment) {
        head.push(0);
    }
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::io::BufWriter::new(File::create(path).map_err(io)?);
    f.write_all(&head).map_err(io)?;
    for (i, s) in specs.iter().enumerate() {
        let mut w = Counting {
            inner: &mut f,
            n: 0,
        };
        fill(i, &mut w).map_err(io)?;
        if w.n != sizes[i] {
            return Err(LoadError::BadTensor {
                path: path.to_path_buf(),
                tensor: s.name.clone(),
                reason: format!(
                    "{} bytes written, {} {:?} needs {}",
                    w.n, s.dtype, s.shape, sizes[i]
                ),
            });
        }
        let pad = sizes[i].div_ceil(alignment as u64) * alignment as u64 - sizes[i];
        f.write_all(&vec![0u8; pad as usize]).map_err(io)?;
    }
    f.flush().map_err(io)
}

struct Counting<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
