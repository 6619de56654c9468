//! The safetensors container: an 8-byte little-endian header length, a JSON header
//! `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {..}}`, then the data.
//! Every offset is checked against the file before any tensor is handed out.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::dtype::DType;
use crate::error::{LoadError, Result};
use crate::residency::Residency;
use crate::storage::{Storage, Tensor};

/// Headers larger than this are refused rather than parsed (the format's own limit).
const MAX_HEADER: u64 = 100 * 1024 * 1024;

/// One parsed safetensors file over its storage.
pub struct SafetensorsFile {
    pub path: PathBuf,
    tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

impl SafetensorsFile {
    /// Map `path` read-only and parse its header. The weights are not read.
    pub fn open(path: &Path) -> Result<SafetensorsFile> {
        Self::open_with(path, Residency::Mapped)
    }

    /// Open `path` with its bytes held as `residency` asks.
    pub fn open_with(path: &Path, residency: Residency) -> Result<SafetensorsFile> {
        let io = |source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < 8 {
            return Err(LoadError::BadHeader {
                path: path.to_path_buf(),
                reason: format!("file is {len} bytes, too short for the 8-byte header length"),
            });
        }
        let storage = crate::residency::hold(&file, len as usize, residency).map_err(io)?;
        Self::parse(path.to_path_buf(), storage)
    }

    /// Parse a safetensors image already in memory (embedded weights, a browser download).
    pub fn from_storage(path: PathBuf, storage: Storage) -> Result<SafetensorsFile> {
        Self::parse(path, storage)
    }

    fn parse(path: PathBuf, storage: Storage) -> Result<SafetensorsFile> {
        let bytes: &[u8] = (*storage).as_ref();
        let bad = |reason: String| LoadError::BadHeader {
            path: path.clone(),
            reason,
        };
        if bytes.len() < 8 {
            return Err(bad(format!(
                "file is {} bytes, too short for the 8-byte header length",
                bytes.len()
            )));
        }
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        let file_len = bytes.len() as u64;
        if n > MAX_HEADER || 8 + n > file_len {
            return Err(bad(format!(
                "header length {n} runs past the end of the file ({file_len} bytes): truncated or not a safetensors file"
            )));
        }
        let header = &bytes[8..8 + n as usize];
        let json: serde_json::Value = serde_json::from_slice(header)
            .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
        let obj = json
            .as_object()
            .ok_or_else(|| bad("header is not a JSON object".into()))?;
        let data_start = 8 + n as usize;
        let data_len = bytes.len() - data_start;

        let mut tensors = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        for (name, info) in obj {
            if name == "__metadata__" {
                if let Some(m) = info.as_object() {
                    for (k, v) in m {
                        if let Some(s) = v.as_str() {
                            metadata.insert(k.clone(), s.to_string());
                        }
                    }
                }
                continue;
            }
            let bad_t = |reason: String| LoadError::BadTensor {
                path: path.clone(),
                tensor: name.clone(),
                reason,
            };
            let dtype_s = info
                .get("dtype")
                .and_then(|v| v.as_str())
                .ok_or_else(|| bad_t("missing `dtype`".into()))?;
            let dtype =
                DType::parse(dtype_s).ok_or_else(|| bad_t(format!("unknown dtype `{dtype_s}`")))?;
            let shape: Vec<usize> = info
                .get("shape")
                .and_then(|v| v.as_array())
                .ok_or_else(|| bad_t("missing `shape`".into()))?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<_>>()
                .ok_or_else(|| bad_t("`shape` must hold non-negative integers".into()))?;
            let offs: Vec<u64> = info
                .get("data_offsets")
                .and_then(|v| v.as_array())
                .and_then(|a| a.iter().map(|x| x.as_u64()).collect::<Option<Vec<_>>>())
                .filter(|a| a.len() == 2)
                .ok_or_else(|| bad_t("`data_offsets` must be [begin, end]".into()))?;
            let (begin, end) = (offs[0], offs[1]);
            let numel = shape
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
                .ok_or_else(|| bad_t(format!("shape {shape:?} overflows")))?;
            let want = numel
                .checked_mul(dtype.size() as u64)
                .ok_or_else(|| bad_t(format!("shape {shape:?} overflows")))?;
            if end < begin || end - begin != want {
                return Err(bad_t(format!(
                    "data_offsets [{begin}, {end}] hold {} bytes, but {dtype} {shape:?} needs {want}",
                    end.saturating_sub(begin)
                )));
            }
            if end > data_len as u64 {
                return Err(bad_t(format!(
                    "byte range [{begin}, {end}) runs past the end of the data ({data_len} bytes): file truncated?"
                )));
            }
            let t = Tensor::new(
                name.clone(),
                dtype,
                shape,
                storage.clone(),
                data_start + begin as usize,
                want as usize,
            );
            tensors.insert(name.clone(), t);
        }
        Ok(SafetensorsFile {
            path,
            tensors,
            metadata,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// The tensor `name`, or an error naming this file and the tensor.
    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.get(name).ok_or_else(|| LoadError::MissingTensor {
            path: self.path.clone(),
            tensor: name.to_string(),
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|s| s.as_str())
    }

    pub fn tensors(&self) -> impl Iterator<Item = &Tensor> {
        self.tensors.values()
    }
}
