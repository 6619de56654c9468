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
pub mod avx512vnni;

/// How far ahead of the bytes being multiplied the decode kernels ask for lines. A run's
/// rows lie back to back, so this reaches into the next rows. On our Xeon VM the hardware
/// prefetchers alone kept q4_k_m decode at about 50 tok/s; 1, 2, 4 and 8 KiB ahead gave
/// about 55, 63, 65 and 66 (medians of three to six alternating runs).
const AHEAD: usize = 4096;

/// Asks for the lines of the `len` bytes `AHEAD` past `p` (a hint: it never faults, so
/// the address may lie past the run).
#[inline(always)]
unsafe fn prefetch_ahead(p: *const u8, len: usize) {
    let mut o = 0;
    while o < len {
        // SAFETY: a prefetch reads nothing architecturally and never faults.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                p.wrapping_add(AHEAD + o) as *const i8,
            )
        };
        o += 64;
    }
}
