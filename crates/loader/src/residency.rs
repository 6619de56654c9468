//! How a weight file's bytes are held: mapped in place, or read once into anonymous memory
//! in transparent huge pages.
//!
//! Decode streams every weight once per token, so the page size matters: with 4 KiB pages
//! a 2-3 GB model is ~700,000 translations, and each page starts its own prefetch stream.
//! Streaming a 2 GiB file on our 2-core Zen 4 machines, 2 threads: 28.1 GB/s through its
//! file mapping, 30.1 from 4 KiB anonymous pages, 33.3 from 2 MiB pages (medians of 5).
//! Linux's page cache does not give regular files' mappings huge pages, so the fast path is
//! a copy; the file is read, never mapped, so resident memory stays the weights' size.

use std::fs::File;
use std::io;
use std::sync::Arc;

use crate::storage::Storage;

/// How the weight files' bytes are held in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Residency {
    /// Mapped read-only in place: pages come from the page cache when first touched and
    /// are shared with it; nothing is copied, so loading is instant.
    #[default]
    Mapped,
    /// Read once into anonymous memory advised for transparent huge pages (Linux): faster
    /// to stream, at the cost of reading the whole file at load. Elsewhere, `Mapped`.
    HugePages,
}

/// Whether the kernel gives transparent huge pages to memory that asks for them (Linux,
/// `transparent_hugepage/enabled` set to `always` or `madvise`).
pub fn huge_pages_available() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|s| s.contains("[always]") || s.contains("[madvise]"))
}

struct Mapped(memmap2::Mmap);

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// `len` bytes of `file` as `residency` asks.
pub(crate) fn hold(file: &File, len: usize, residency: Residency) -> io::Result<Storage> {
    #[cfg(target_os = "linux")]
    if residency == Residency::HugePages && len > 0 {
        return Ok(Arc::new(HugeCopy::read(file, len)?));
    }
    // (both are only read on Linux)
    let _ = (residency, len);
    // SAFETY: the map is read-only. Like every mmap-based loader we assume the file is not
    // truncated by another process while mapped.
    let map = unsafe { memmap2::Mmap::map(file) }?;
    Ok(Arc::new(Mapped(map)))
}

/// A file's bytes in anonymous memory, starting on a 2 MiB boundary so that the kernel can
/// back it with huge pages from the first byte.
#[cfg(target_os = "linux")]
struct HugeCopy {
    map: memmap2::Mmap,
    offset: usize,
    len: usize,
}

#[cfg(target_os = "linux")]
impl AsRef<[u8]> for HugeCopy {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.offset..self.offset + self.len]
    }
}

#[cfg(target_os = "linux")]
impl HugeCopy {
    const HUGE: usize = 2 << 20;

    fn read(file: &File, len: usize) -> io::Result<HugeCopy> {
        use std::os::unix::fs::FileExt;
        let mut map = memmap2::MmapMut::map_anon(len + Self::HUGE)?;
        // advice only: without huge pages the copy still works, in small pages
        let _ = map.advise(memmap2::Advice::HugePage);
        let offset = (Self::HUGE - map.as_ptr() as usize % Self::HUGE) % Self::HUGE;
        let dst = &mut map[offset..offset + len];
        // in pieces, so a short read names where the file ended
        let mut at = 0;
        while at < len {
            let end = (at + (64 << 20)).min(len);
            file.read_exact_at(&mut dst[at..end], at as u64)?;
            at = end;
        }
        Ok(HugeCopy {
            map: map.make_read_only()?,
            offset,
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn both_residencies_hold_the_files_bytes() {
        // an odd length, so the copy's last piece is partial
        let bytes: Vec<u8> = (0..(3 << 20) + 12_345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&bytes).unwrap();
        for r in [Residency::Mapped, Residency::HugePages] {
            let held = hold(f.as_file(), bytes.len(), r).unwrap();
            assert!((*held).as_ref() == &bytes[..], "{r:?}");
        }
        // a file shorter than asked is an error, not short or garbage weights
        if cfg!(target_os = "linux") {
            let e = hold(f.as_file(), bytes.len() + 1, Residency::HugePages).err();
            assert_eq!(e.map(|e| e.kind()), Some(io::ErrorKind::UnexpectedEof));
        }
    }
}
