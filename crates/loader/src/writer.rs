//! Writing safetensors files (logits dumps, test fixtures).

use std::io::Write;
use std::path::Path;

use crate::dtype::DType;
use crate::error::{LoadError, Result};

/// One tensor to write: raw little-endian bytes of `dtype` with `shape`.
pub struct TensorOut<'a> {
    pub name: &'a str,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

/// Write `tensors` (in order) as a safetensors file, with optional string metadata.
pub fn write_safetensors(
    path: &Path,
    tensors: &[TensorOut<'_>],
    metadata: &[(&str, &str)],
) -> Result<()> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let m: serde_json::Map<_, _> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        header.insert("__metadata__".into(), m.into());
    }
    let mut offset = 0usize;
    for t in tensors {
        let n = t.data.len();
        header.insert(
            t.name.to_string(),
            serde_json::json!({"dtype": t.dtype.name(), "shape": t.shape, "data_offsets": [offset, offset + n]}),
        );
        offset += n;
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header))
        .expect("JSON of strings and numbers");
    // pad the header so the data starts 8-byte aligned, as other writers do
    while !(8 + h.len()).is_multiple_of(8) {
        h.push(b' ');
    }
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    f.write_all(&(h.len() as u64).to_le_bytes()).map_err(io)?;
    f.write_all(&h).map_err(io)?;
    for t in tensors {
        f.write_all(t.data).map_err(io)?;
    }
    f.flush().map_err(io)
}
