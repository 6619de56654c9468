//! GGUF, llama.cpp's model container (versions 2 and 3), read in place and written.
//!
//! Layout (all little-endian): the magic `GGUF`, `u32` version, `u64` tensor count, `u64`
//! key-value count; the key-value pairs (`string` key, `u32` value type, value); the tensor
//! infos (`string` name, `u32` n_dims, `u64` ne[n_dims], `u32` ggml type, `u64` offset
//! relative to the data section); padding to `general.alignment` (default 32); the data.
//! A string is a `u64` length and UTF-8 bytes; an array is a `u32` element type, a `u64`
//! count and the elements.
//!
//! `ne[0]` is the innermost (contiguous) dimension, so a tensor's row-major shape is `ne`
//! reversed: `ne = [4096, 11008]` is a `[11008, 4096]` matrix of 11008 rows.
//!
//! Every count and length is checked against the bytes that remain before anything is
//! allocated from it, and every tensor's byte range against the file, so a truncated or
//! corrupt file is an error naming the file, never a panic or a huge allocation.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::dtype::DType;
use crate::error::{LoadError, Result};
use crate::storage::{Storage, Tensor};

mod deepseek2;
pub use deepseek2::{
    ExportOptions, config_json, export_deepseek2, export_deepseek2_with, hf_name, rebuild_kv_b,
    weight_dtype,
};
pub(crate) use deepseek2::{GgufModel, open_deepseek2};

/// The magic bytes at the start of every GGUF file.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// The alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// Dimensions a ggml tensor can have.
pub const MAX_DIMS: usize = 4;

/// The type tag of a metadata value (GGUF's `gguf_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl GgufType {
    pub fn from_u32(t: u32) -> Option<GgufType> {
        use GgufType::*;
        Some(match t {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The fewest bytes a value of this type takes (to bound counts read from a file).
    fn min_size(self) -> usize {
        use GgufType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Elements all of type `elem` (arrays may nest).
    Array(GgufType, Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    pub fn ty(&self) -> GgufType {
        match self {
            GgufValue::U8(_) => GgufType::U8,
            GgufValue::I8(_) => GgufType::I8,
            GgufValue::U16(_) => GgufType::U16,
            GgufValue::I16(_) => GgufType::I16,
            GgufValue::U32(_) => GgufType::U32,
            GgufValue::I32(_) => GgufType::I32,
            GgufValue::F32(_) => GgufType::F32,
            GgufValue::Bool(_) => GgufType::Bool,
            GgufValue::String(_) => GgufType::String,
            GgufValue::Array(..) => GgufType::Array,
            GgufValue::U64(_) => GgufType::U64,
            GgufValue::I64(_) => GgufType::I64,
            GgufValue::F64(_) => GgufType::F64,
        }
    }

    /// Any integer type, as i128 (so every u64 and i64 fits).
    fn as_int(&self) -> Option<i128> {
        Some(match *self {
            GgufValue::U8(v) => v as i128,
            GgufValue::I8(v) => v as i128,
            GgufValue::U16(v) => v as i128,
            GgufValue::I16(v) => v as i128,
            GgufValue::U32(v) => v as i128,
            GgufValue::I32(v) => v as i128,
            GgufValue::U64(v) => v as i128,
            GgufValue::I64(v) => v as i128,
            _ => return None,
        })
    }

    /// Any integer type whose value fits in u64.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_int().and_then(|v| u64::try_from(v).ok())
    }

    /// Any integer type whose value fits in u32.
    pub fn as_u32(&self) -> Option<u32> {
        self.as_int().and_then(|v| u32::try_from(v).ok())
    }

    /// Any integer type whose value fits in i64.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_int().and_then(|v| i64::try_from(v).ok())
    }

    /// Any integer type whose value fits in i32.
    pub fn as_i32(&self) -> Option<i32> {
        self.as_int().and_then(|v| i32::try_from(v).ok())
    }

    /// F32 or F64 (an integer too, converted).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            _ => self.as_int().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(_, v) => Some(v),
            _ => None,
        }
    }

    /// An array of strings.
    pub fn from_strs<S: AsRef<str>>(items: &[S]) -> GgufValue {
        GgufValue::Array(
            GgufType::String,
            items
                .iter()
                .map(|s| GgufValue::String(s.as_ref().to_string()))
                .collect(),
        )
    }

    /// An array of i32.
    pub fn from_i32s(items: &[i32]) -> GgufValue {
        GgufValue::Array(
            GgufType::I32,
            items.iter().map(|&v| GgufValue::I32(v)).collect(),
        )
    }

    /// An array of f32.
    pub fn from_f32s(items: &[f32]) -> GgufValue {
        GgufValue::Array(
            GgufType::F32,
            items.iter().map(|&v| GgufValue::F32(v)).collect(),
        )
    }
}

/// ggml's tensor type ids and, for listing and bounds checks, their block sizes.
/// `(id, name, elements per block, bytes per block)`.
const GGML_TYPES: &[(u32, &str, usize, usize)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
];

/// The name of ggml type `id` ("type 99" if unknown).
pub fn ggml_type_name(id: u32) -> String {
    GGML_TYPES
        .iter()
        .find(|t| t.0 == id)
        .map(|t| t.1.to_string())
        .unwrap_or_else(|| format!("type {id}"))
}

fn ggml_block(id: u32) -> Option<(usize, usize)> {
    GGML_TYPES.iter().find(|t| t.0 == id).map(|t| (t.2, t.3))
}

/// The loader dtype of ggml type `id`, if this crate reads it.
pub fn dtype_of_ggml(id: u32) -> Option<DType> {
    Some(match id {
        0 => DType::F32,
        1 => DType::F16,
        6 => DType::Q5_0,
        8 => DType::Q8_0,
        12 => DType::Q4K,
        14 => DType::Q6K,
        24 => DType::I8,
        25 => DType::I16,
        26 => DType::I32,
        27 => DType::I64,
        28 => DType::F64,
        30 => DType::BF16,
        _ => return None,
    })
}

/// The ggml type id of a loader dtype, if GGUF can hold it.
pub fn ggml_of_dtype(dtype: DType) -> Option<u32> {
    Some(match dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Q5_0 => 6,
        DType::Q8_0 => 8,
        DType::Q4K => 12,
        DType::Q6K => 14,
        DType::I8 => 24,
        DType::I16 => 25,
        DType::I32 => 26,
        DType::I64 => 27,
        DType::F64 => 28,
        DType::BF16 => 30,
        _ => return None,
    })
}

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

struct Mapped(memmap2::Mmap);

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.0
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

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, reason: String) -> LoadError {
        LoadError::BadGguf {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "file ends at byte {} inside {what} (needs {n} bytes at offset {}): truncated?",
                self.b.len(),
                self.pos
            )));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().unwrap())
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }

    /// A count of items of at least `min_size` bytes each, bounded by the bytes left.
    fn count(&mut self, min_size: usize, what: &str) -> Result<usize> {
        let n = self.u64(what)?;
        let room = (self.remaining() / min_size.max(1)) as u64;
        if n > room {
            return Err(self.err(format!(
                "{what} is {n}, but only {} bytes remain: corrupt or truncated",
                self.remaining()
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(1, &format!("length of {what}"))?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| self.err(format!("{what} is not valid UTF-8: {e}")))
    }

    fn value(&mut self, ty: GgufType, key: &str, depth: usize) -> Result<GgufValue> {
        let what = format!("value of `{key}`");
        Ok(match ty {
            GgufType::U8 => GgufValue::U8(self.arr::<1>(&what)?[0]),
            GgufType::I8 => GgufValue::I8(self.arr::<1>(&what)?[0] as i8),
            GgufType::U16 => GgufValue::U16(u16::from_le_bytes(self.arr(&what)?)),
            GgufType::I16 => GgufValue::I16(i16::from_le_bytes(self.arr(&what)?)),
            GgufType::U32 => GgufValue::U32(u32::from_le_bytes(self.arr(&what)?)),
            GgufType::I32 => GgufValue::I32(i32::from_le_bytes(self.arr(&what)?)),
            GgufType::F32 => GgufValue::F32(f32::from_le_bytes(self.arr(&what)?)),
            GgufType::U64 => GgufValue::U64(u64::from_le_bytes(self.arr(&what)?)),
            GgufType::I64 => GgufValue::I64(i64::from_le_bytes(self.arr(&what)?)),
            GgufType::F64 => GgufValue::F64(f64::from_le_bytes(self.arr(&what)?)),
            GgufType::Bool => match self.arr::<1>(&what)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.err(format!("`{key}`: bool byte is {b}, not 0 or 1"))),
            },
            GgufType::String => GgufValue::String(self.string(&what)?),
            GgufType::Array => {
                if depth >= 8 {
                    return Err(self.err(format!("`{key}`: arrays nested deeper than 8")));
                }
                let t = self.u32(&what)?;
                let elem = GgufType::from_u32(t)
                    .ok_or_else(|| self.err(format!("`{key}`: unknown array element type {t}")))?;
                let n = self.count(elem.min_size(), &format!("element count of `{key}`"))?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                GgufValue::Array(elem, items)
            }
        })
    }
}

impl GgufFile {
    /// Map `path` read-only and parse its header, metadata and tensor infos. Tensor data is
    /// not read, but every tensor's byte range is checked against the file.
    pub fn open(path: &Path) -> Result<GgufFile> {
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
        // SAFETY: the map is read-only. Like every mmap-based loader we assume the file is not
        // truncated by another process while mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::from_storage(path.to_path_buf(), Arc::new(Mapped(map)))
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

    /// An array of strings (None if any element is not a string).
    pub fn get_str_array(&self, key: &str) -> Option<Vec<&str>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(|v| v.as_str())
            .collect()
    }

    /// An array of integers of any width, each fitting in i32.
    pub fn get_i32_array(&self, key: &str) -> Option<Vec<i32>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(|v| v.as_i32())
            .collect()
    }

    /// An array of integers of any width, each fitting in u32.
    pub fn get_u32_array(&self, key: &str) -> Option<Vec<u32>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(|v| v.as_u32())
            .collect()
    }

    /// An array of F32/F64 values.
    pub fn get_f32_array(&self, key: &str) -> Option<Vec<f32>> {
        self.get(key)?
            .as_array()?
            .iter()
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

// ---------------------------------------------------------------- writing

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

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue, key: &str) -> std::result::Result<(), String> {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.push(*x as u8),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(b) => out.push(*b as u8),
        GgufValue::String(s) => put_str(out, s),
        GgufValue::Array(elem, items) => {
            out.extend_from_slice(&(*elem as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for it in items {
                if it.ty() != *elem {
                    return Err(format!(
                        "`{key}`: array of {elem:?} holds a {:?} element",
                        it.ty()
                    ));
                }
                put_value(out, it, key)?;
            }
        }
    }
    Ok(())
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
        put_value(&mut head, v, k).map_err(bad)?;
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

#[cfg(test)]
mod tests;
