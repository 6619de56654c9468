//! The bounds-checked byte reader the GGUF parser runs on.

use std::path::Path;

use super::{GgufArray, GgufType, GgufValue};
use crate::error::{LoadError, Result};

pub(super) struct Cursor<'a> {
    pub(super) b: &'a [u8],
    pub(super) pos: usize,
    pub(super) path: &'a Path,
}

impl<'a> Cursor<'a> {
    pub(super) fn err(&self, reason: String) -> LoadError {
        LoadError::BadGguf {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    pub(super) fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    pub(super) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
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

    pub(super) fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().unwrap())
    }

    pub(super) fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }

    pub(super) fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }

    /// A count of items of at least `min_size` bytes each, bounded by the bytes left.
    pub(super) fn count(&mut self, min_size: usize, what: &str) -> Result<usize> {
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

    pub(super) fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(1, &format!("length of {what}"))?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| self.err(format!("{what} is not valid UTF-8: {e}")))
    }

    pub(super) fn value(&mut self, ty: GgufType, key: &str, depth: usize) -> Result<GgufValue> {
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
            GgufType::Array => GgufValue::Array(self.array(key, depth)?),
        })
    }

    /// An array value's type, count and elements, packed (see `GgufArray`).
    fn array(&mut self, key: &str, depth: usize) -> Result<GgufArray> {
        if depth >= 8 {
            return Err(self.err(format!("`{key}`: arrays nested deeper than 8")));
        }
        let what = format!("value of `{key}`");
        let t = self.u32(&what)?;
        let elem = GgufType::from_u32(t)
            .ok_or_else(|| self.err(format!("`{key}`: unknown array element type {t}")))?;
        let n = self.count(elem.min_size(), &format!("element count of `{key}`"))?;
        Ok(match elem {
            GgufType::String => {
                let mut a = GgufArray::empty(elem);
                for i in 0..n {
                    let what = format!("string {i} of `{key}`");
                    let len = self.count(1, &format!("length of {what}"))?;
                    let bytes = self.take(len, &what)?;
                    let s = std::str::from_utf8(bytes)
                        .map_err(|e| self.err(format!("{what} is not valid UTF-8: {e}")))?;
                    a.push_str(s);
                }
                a
            }
            GgufType::Array => GgufArray::Arrays(
                (0..n)
                    .map(|_| self.array(key, depth + 1))
                    .collect::<Result<_>>()?,
            ),
            _ => {
                let bytes = self.take(n * elem.min_size(), &what)?.to_vec();
                if elem == GgufType::Bool
                    && let Some(b) = bytes.iter().find(|&&b| b > 1)
                {
                    return Err(self.err(format!("`{key}`: bool byte is {b}, not 0 or 1")));
                }
                GgufArray::Scalars { elem, bytes }
            }
        })
    }
}
