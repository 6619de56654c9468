//! Reading: a GGUF image parsed in place over its (memory-mapped) storage.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::cursor::Cursor;
use super::value::ggml_block;
use super::{
    DEFAULT_ALIGNMENT, GgufType, GgufValue, MAGIC, MAX_DIMS, dtype_of_ggml, ggml_type_name,
};
use crate::error::{LoadError, Result};
use crate::residency::Residency;
use crate::storage::{Storage, Tensor};

/// A tensor as the file describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// Dimensions innermost first, as stored.
    pub ne: Vec<u64>,
    /// The ggml type id.
    pub ggml_type: u32,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Bytes of data, when the type's block size is known.
    pub nbytes: Option<u64>,
}

impl GgufTensorInfo {
    /// The row-major shape: `ne` reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn type_name(&self) -> String {
        ggml_type_name(self.ggml_type)
    }
}

/// A parsed GGUF file over its storage (memory-mapped by [`GgufFile::open`]).
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    /// Every key-value pair, in file order.
    pub metadata: Vec<(String, GgufValue)>,
    index: BTreeMap<String, usize>,
    infos: Vec<GgufTensorInfo>,
    by_name: BTreeMap<String, usize>,
    pub alignment: usize,
    /// Where the data section starts in the file.
    pub data_start: usize,
    storage: Storage,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GgufFile({}, v{}, {} keys, {} tensors)",
            self.path.display(),
            self.version,
            self.metadata.len(),
            self.infos.len()
        )
    }
}

/// Whether `path` starts with the GGUF magic (false if it cannot be read).
pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut m = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut m))
        .map(|_| &m == MAGIC)
        .unwrap_or(false)
}

impl GgufFile {
    /// Map `path` read-only and parse its header, metadata and tensor infos. Tensor data is
    /// not read, but every tensor's byte range is checked against the file.
    pub fn open(path: &Path) -> Result<GgufFile> {
        Self::open_with(path, Residency::Mapped)
    }

    /// Open `path` with its bytes held as `residency` asks.
    pub fn open_with(path: &Path, residency: Residency) -> Result<GgufFile> {
        let io = |source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < 24 {
            return Err(LoadError::BadGguf {
                path: path.to_path_buf(),
                reason: format!("file is {len} bytes, too short for a GGUF header (24 bytes)"),
            });
        }
        let storage = crate::residency::hold(&file, len as usize, residency).map_err(io)?;
        Self::from_storage(path.to_path_buf(), storage)
    }

    /// Parse a GGUF image already in memory; `path` only names it in errors.
    pub fn from_storage(path: PathBuf, storage: Storage) -> Result<GgufFile> {
        let bytes: &[u8] = (*storage).as_ref();
        let mut c = Cursor {
            b: bytes,
            pos: 0,
            path: &path,
        };
        let magic = c.take(4, "the magic")?;
        if magic != MAGIC {
            return Err(c.err(format!(
                "bad magic {magic:02x?} (expected \"GGUF\"): not a GGUF file"
            )));
        }
        let version = c.u32("the version")?;
        if version == 1 {
            return Err(c.err("GGUF version 1 is not supported (only 2 and 3)".into()));
        }
        if !(2..=3).contains(&version) {
            // a big-endian file reads as a huge version number
            return Err(c.err(format!(
                "unsupported GGUF version {version} (only 2 and 3, little-endian)"
            )));
        }
        // each tensor info is at least 8 (name len) + 4 + 4 + 8 bytes; each kv 8 + 4 + 1
        let n_tensors = c.count(24, "the tensor count")?;
        let n_kv = c.count(13, "the key-value count")?;

        let mut metadata = Vec::with_capacity(n_kv);
        let mut index = BTreeMap::new();
        for i in 0..n_kv {
            let key = c.string(&format!("key {i}"))?;
            let t = c.u32(&format!("type of `{key}`"))?;
            let ty = GgufType::from_u32(t)
                .ok_or_else(|| c.err(format!("`{key}`: unknown value type {t}")))?;
            let v = c.value(ty, &key, 0)?;
            if index.insert(key.clone(), metadata.len()).is_some() {
                return Err(c.err(format!("duplicate key `{key}`")));
            }
            metadata.push((key, v));
        }

        let alignment = match index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(GgufValue::U32(a)) if *a > 0 && a.is_power_of_two() => *a as usize,
            Some(v) => {
                return Err(c.err(format!(
                    "`general.alignment` is {v:?}; it must be a u32 power of two"
                )));
            }
        };

        let mut infos = Vec::with_capacity(n_tensors);
        let mut by_name = BTreeMap::new();
        for i in 0..n_tensors {
            let name = c.string(&format!("name of tensor {i}"))?;
            let n_dims = c.u32(&format!("n_dims of `{name}`"))? as usize;
            if n_dims > MAX_DIMS {
                return Err(c.err(format!(
                    "tensor `{name}` has {n_dims} dimensions (at most {MAX_DIMS})"
                )));
            }
            let mut ne = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                ne.push(c.u64(&format!("dimensions of `{name}`"))?);
            }
            let ggml_type = c.u32(&format!("type of `{name}`"))?;
            let offset = c.u64(&format!("offset of `{name}`"))?;
            if by_name.insert(name.clone(), infos.len()).is_some() {
                return Err(c.err(format!("duplicate tensor `{name}`")));
            }
            infos.push(GgufTensorInfo {
                name,
                ne,
                ggml_type,
                offset,
                nbytes: None,
            });
        }
        let data_start = c.pos.div_ceil(alignment) * alignment;
        if data_start > bytes.len() && n_tensors > 0 {
            return Err(c.err(format!(
                "the data section would start at byte {data_start}, past the end of the file ({} bytes): truncated?",
                bytes.len()
            )));
        }
        let data_len = bytes.len().saturating_sub(data_start) as u64;
        for info in &mut infos {
            let bad = |reason: String| LoadError::BadTensor {
                path: path.clone(),
                tensor: info.name.clone(),
                reason,
            };
            let numel = info
                .ne
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .filter(|&n| n < (1u64 << 62))
                .ok_or_else(|| bad(format!("dimensions {:?} overflow", info.ne)))?;
            if !(info.offset as usize).is_multiple_of(alignment) {
                return Err(bad(format!(
                    "data offset {} is not a multiple of the alignment {alignment}",
                    info.offset
                )));
            }
            let Some((be, bb)) = ggml_block(info.ggml_type) else {
                continue; // an unknown type: an error only if the tensor is asked for
            };
            let ne0 = info.ne.first().copied().unwrap_or(1);
            if !ne0.is_multiple_of(be as u64) {
                return Err(bad(format!(
                    "rows of {ne0} values are not whole {}-value blocks of {}",
                    be,
                    info.type_name()
                )));
            }
            let nbytes = numel / be as u64 * bb as u64;
            let end = info.offset.checked_add(nbytes).filter(|&e| e <= data_len);
            if end.is_none() {
                return Err(bad(format!(
                    "bytes [{}, {}) run past the end of the data section ({data_len} bytes): file truncated?",
                    info.offset,
                    info.offset as u128 + nbytes as u128
                )));
            }
            info.nbytes = Some(nbytes);
        }
        Ok(GgufFile {
            path,
            version,
            metadata,
            index,
            infos,
            by_name,
            alignment,
            data_start,
            storage,
        })
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// `general.architecture`, e.g. `"deepseek2"`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// Any integer value that fits (None if absent, another type, or out of range).
    pub fn get_u32(&self, key: &str) -> Option<u32> {
        self.get(key)?.as_u32()
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    pub fn get_i32(&self, key: &str) -> Option<i32> {
        self.get(key)?.as_i32()
    }

    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key)?.as_i64()
    }

    /// F32 or F64 (or an integer), narrowed to f32.
    pub fn get_f32(&self, key: &str) -> Option<f32> {
        self.get(key)?.as_f64().map(|v| v as f32)
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key)?.as_f64()
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Option<Vec<&str>> {
        Some(self.get(key)?.as_array()?.strs()?.collect())
    }

    /// An array of integers of any width, each fitting in i32.
    pub fn get_i32_array(&self, key: &str) -> Option<Vec<i32>> {
        self.get(key)?
            .as_array()?
            .values()
            .map(|v| v.as_i32())
            .collect()
    }

    /// An array of integers of any width, each fitting in u32.
    pub fn get_u32_array(&self, key: &str) -> Option<Vec<u32>> {
        self.get(key)?
            .as_array()?
            .values()
            .map(|v| v.as_u32())
            .collect()
    }

    /// An array of F32/F64 values.
    pub fn get_f32_array(&self, key: &str) -> Option<Vec<f32>> {
        self.get(key)?
            .as_array()?
            .values()
            .map(|v| v.as_f64().map(|x| x as f32))
            .collect()
    }

    /// The number of elements of an array value.
    pub fn array_len(&self, key: &str) -> Option<usize> {
        self.get(key)?.as_array().map(|a| a.len())
    }

    pub fn tensor_infos(&self) -> &[GgufTensorInfo] {
        &self.infos
    }

    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.by_name.get(name).map(|&i| &self.infos[i])
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.infos.iter().map(|t| t.name.as_str())
    }

    /// The tensor `name` with its row-major shape, over the file's storage (no copy).
    /// Errors if it is absent or its ggml type has no loader dtype.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| LoadError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })?;
        self.tensor_of(info)
    }

    fn tensor_of(&self, info: &GgufTensorInfo) -> Result<Tensor> {
        let dtype = dtype_of_ggml(info.ggml_type).ok_or_else(|| LoadError::BadTensor {
            path: self.path.clone(),
            tensor: info.name.clone(),
            reason: format!(
                "ggml type {} ({}) is not supported (F32, F16, BF16, Q8_0, Q4_K, Q6_K)",
                info.type_name(),
                info.ggml_type
            ),
        })?;
        let nbytes = info.nbytes.expect("known types have their size checked") as usize;
        Ok(Tensor::new(
            info.name.clone(),
            dtype,
            info.shape(),
            self.storage.clone(),
            self.data_start + info.offset as usize,
            nbytes,
        ))
    }

    /// Every tensor, in file order; fails on the first of an unsupported type.
    pub fn tensors(&self) -> Result<Vec<Tensor>> {
        self.infos.iter().map(|i| self.tensor_of(i)).collect()
    }
}
