//! x86-64 levels. Every function is `unsafe` only because it carries `#[target_feature]`;
//! callers reach it through `simd::dispatch!` after `Level::supported` checked the CPU.

pub mod amx;
pub mod avx2;
pub mod avx2_attention;
mod avx2_int8;
pub mod avx2_qgemm;
pub mod avx512;
mod avx512_attention;
pub mod avx512_bf16gemm;
mod avx512_int8;
pub mod avx512_qgemm;
mod avx512_rows;
pub mod avx512vnni;

use std::sync::LazyLock;

/// How far ahead of the bytes being multiplied the decode kernels ask for lines. A run's
/// rows lie back to back, so this reaches into the next rows. The lines go to L1, and
/// they must still be there when their turn comes: the best distance follows L1's size.
/// - On our Xeon VM (48 KiB of L1 data) the hardware prefetchers alone kept q4_k_m decode
///   at about 50 tok/s; 1, 2, 4 and 8 KiB ahead gave about 55, 63, 65 and 66 (medians of
///   three to six alternating runs).
/// - On our Zen 3 VM (32 KiB, 8-way, and a core shared with other guests) decode steps
///   alternated within one run took 0.97 of 4 KiB's time at 1 KiB for q4_k_m (median of
///   eight comparisons; 0.99 at 2 KiB, 0.985 at 0.5), 0.90-0.95 for bf16 and 0.98-1.00 for
///   q8_0. With none at all, q4_k_m's `output` product took 1.5-3.2x as long.
fn ahead() -> usize {
    static AHEAD: LazyLock<usize> = LazyLock::new(|| {
        if l1d_bytes().is_some_and(|b| b >= 48 << 10) {
            4096
        } else {
            1024
        }
    });
    *AHEAD
}

/// The L1 data cache of the core this runs on, from `cpuid` (AMD's leaf 0x8000_0005,
/// else the deterministic cache parameters of leaf 4).
fn l1d_bytes() -> Option<usize> {
    use std::arch::x86_64::__cpuid_count;
    // (cpuid exists on every x86-64 CPU; a leaf past the maximum reads as zeros or as the
    // highest basic leaf, which the checks below reject)
    let vendor = __cpuid_count(0, 0);
    let amd = vendor.ebx == u32::from_le_bytes(*b"Auth");
    if amd && __cpuid_count(0x8000_0000, 0).eax >= 0x8000_0005 {
        let kib = (__cpuid_count(0x8000_0005, 0).ecx >> 24) as usize;
        return (kib > 0).then_some(kib << 10);
    }
    if vendor.eax >= 4 {
        for sub in 0..16 {
            let r = __cpuid_count(4, sub);
            let (kind, level) = (r.eax & 0x1f, (r.eax >> 5) & 0x7);
            if kind == 0 {
                break;
            }
            if kind == 1 && level == 1 {
                let ways = (r.ebx >> 22) as usize + 1;
                let parts = ((r.ebx >> 12) & 0x3ff) as usize + 1;
                let line = (r.ebx & 0xfff) as usize + 1;
                return Some(ways * parts * line * (r.ecx as usize + 1));
            }
        }
    }
    None
}

/// The rows that pass `i` over a run of `n` rows reads from its four streams (rows i,
/// q + i, 2q + i, 3q + i, q = n.div_ceil(4)): a stream past the end repeats row i, and the
/// kernels drop its sum (`s * q + i >= n`).
#[inline(always)]
fn four_streams(n: usize, i: usize) -> [usize; 4] {
    let q = n.div_ceil(4);
    [0, 1, 2, 3].map(|s| if s * q + i < n { s * q + i } else { i })
}

/// Asks for the lines of the `len` bytes `ahead()` past `p` (a hint: it never faults, so
/// the address may lie past the run).
#[inline(always)]
unsafe fn prefetch_ahead(p: *const u8, len: usize) {
    let d = ahead();
    let mut o = 0;
    while o < len {
        // SAFETY: a prefetch reads nothing architecturally and never faults.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                p.wrapping_add(d + o) as *const i8,
            )
        };
        o += 64;
    }
}

/// Cached rows' lines asked for into L2 one at a time, a kernel's step each. (All of a
/// group's lines at once, before its products, cost an f32 cache's scores 1.16-1.2x the
/// time at depth 4096 over 12 layers from memory on Zen 4, alternated within one run.)
pub(super) struct Fetch<'a> {
    next: super::Ahead<'a>,
    lines: usize,
    row: usize,
    line: usize,
    /// Where row `row` starts.
    at: *const u8,
}

impl<'a> Fetch<'a> {
    #[inline(always)]
    pub(super) fn new(next: super::Ahead<'a>) -> Self {
        let at = if next.offs.is_empty() {
            std::ptr::null()
        } else {
            next.row(0)
        };
        Fetch {
            lines: next.lines(),
            next,
            row: 0,
            line: 0,
            at,
        }
    }

    /// Ask for the next line, if any is left.
    #[inline(always)]
    pub(super) fn step(&mut self) {
        if self.row < self.next.offs.len() {
            let at = self.at.wrapping_add(64 * self.line);
            // SAFETY: a prefetch is a hint: it reads nothing and never faults, even out
            // of bounds.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                    at as *const i8,
                )
            };
            self.line += 1;
            if self.line == self.lines {
                (self.row, self.line) = (self.row + 1, 0);
                if self.row < self.next.offs.len() {
                    self.at = self.next.row(self.row);
                }
            }
        }
    }

    /// Ask for the lines left (the kernel's steps were fewer).
    #[inline(always)]
    pub(super) fn rest(&mut self) {
        while self.row < self.next.offs.len() {
            self.step();
        }
    }
}

#[cfg(test)]
mod tests {
    /// The L1 data cache read from cpuid is one a real core has (x86-64 cores have had
    /// 16-64 KiB; a hypervisor may hide it, and then the default distance holds).
    #[test]
    fn l1d_size_is_plausible_and_picks_a_distance() {
        if let Some(b) = super::l1d_bytes() {
            assert!((8 << 10..=256 << 10).contains(&b), "L1D of {b} bytes");
            assert!(
                b.is_power_of_two() || b % (16 << 10) == 0,
                "L1D of {b} bytes"
            );
        }
        let d = super::ahead();
        assert!(d == 1024 || d == 4096, "{d}");
        assert_eq!(d, super::ahead());
    }
}
