//! Block-quantized weight rows repacked for the int8 prefill kernel: 16 rows side by side,
//! four bytes of each row per 32-bit lane, so one `vpdpbusd` with a token's four activation
//! bytes broadcast advances 16 rows at once and each row's sum stays in its own lane. The
//! block formats differ only in how a byte and its scales decode, so all four become one
//! shape: unsigned bytes `q` with `w = (q - off) * gscale[group] * d[unit] - mins[group]`.
//!
//! Packing is plain Rust; it is done once per 16 rows per matmul and read by every token.

use super::{ActQuant, Fmt, QRow};
use crate::cpu::dispatch::Level;
use loader::f16_to_f32;

/// Rows per panel (the f32 lanes of one 512-bit register).
pub const PANEL: usize = 16;

#[derive(Debug, Default)]
pub struct QPanel {
    pub rows: usize,
    pub k: usize,
    /// Values per group (one integer scale and one min) and per unit (one f32 scale).
    pub group: usize,
    pub unit: usize,
    /// Stored bytes are the value plus `off`, so they fit `vpdpbusd`'s unsigned side.
    pub off: i32,
    pub has_gscale: bool,
    pub has_mins: bool,
    /// The largest stored byte the format can give (what an i16 pair sum must hold).
    pub qmax: i32,
    /// `[k / 4][16 rows][4]`
    pub wq: Vec<u8>,
    /// `[k / group][16]`
    pub gscale: Vec<i32>,
    /// `[k / unit][16]`
    pub d: Vec<f32>,
    /// `[k / group][16]`: Q4_K's `dmin * m`, subtracted times the activation sum
    pub mins: Vec<f32>,
}

/// Whether a format has this packing.
pub fn packs(fmt: &Fmt<'_>) -> bool {
    matches!(fmt, Fmt::Q8_0 | Fmt::Q5_0 | Fmt::Q4K | Fmt::Q6K)
}

impl QPanel {
    /// Pack `rows` (at most 16) rows of `k` values; `row(i)` is row i's stored bytes.
    ///
    /// Each 64 values of the 16 rows are decoded row by row into a 16 x 16 block of 32-bit
    /// words (four values each), which is then transposed into place; the x86 levels decode
    /// a row's 64 values in two 256-bit halves and transpose with shuffles.
    pub fn pack<'a>(
        &mut self,
        level: Level,
        fmt: &Fmt<'_>,
        rows: usize,
        k: usize,
        row: impl Fn(usize) -> &'a [u8],
    ) {
        assert!(rows <= PANEL && packs(fmt));
        let (group, unit, off, has_gscale, has_mins) = match fmt {
            Fmt::Q8_0 => (32, 32, 128, false, false),
            Fmt::Q5_0 => (32, 32, 16, false, false),
            Fmt::Q4K => (32, 256, 0, true, true),
            _ => (16, 256, 32, true, false),
        };
        assert!(k.is_multiple_of(unit));
        (self.rows, self.k, self.group, self.unit, self.off) = (rows, k, group, unit, off);
        (self.has_gscale, self.has_mins) = (has_gscale, has_mins);
        self.qmax = match fmt {
            Fmt::Q8_0 => 255,
            Fmt::Q5_0 => 31,
            Fmt::Q4K => 15,
            _ => 63,
        };
        let (groups, units) = (k / group, k / unit);
        fit(&mut self.wq, k * PANEL);
        fit(&mut self.gscale, groups * PANEL);
        fit(&mut self.d, units * PANEL);
        fit(&mut self.mins, groups * PANEL);
        let srcs: [&[u8]; PANEL] = std::array::from_fn(|r| if r < rows { row(r) } else { &[] });
        // the values, 64 at a time (k is a multiple of 32; a last half chunk is padded)
        let mut block = [[0u32; PANEL]; PANEL];
        let _ = level; // (only the x86 levels decode with SIMD)
        for chunk in 0..k.div_ceil(64) {
            let dst = &mut self.wq[chunk * 64 * PANEL..];
            #[cfg(target_arch = "x86_64")]
            if 64 * (chunk + 1) <= k
                && matches!(fmt, Fmt::Q8_0 | Fmt::Q4K | Fmt::Q6K)
                && matches!(
                    level,
                    Level::Avx2 | Level::Avx512 | Level::Avx512Vnni | Level::Amx
                )
            {
                assert!(dst.len() >= 64 * PANEL);
                // SAFETY: a level is only selected when the CPU has it; dst holds the
                // chunk's 1 KiB; the kernels check each load against its row.
                unsafe {
                    let (d, o) = (dst.as_mut_ptr(), off as u8);
                    match level {
                        Level::Avx2 => super::x86::avx2_qgemm::pack_chunk(fmt, &srcs, chunk, o, d),
                        _ => super::x86::avx512::pack_chunk(fmt, &srcs, chunk, o, d),
                    }
                };
                continue;
            }
            for (r, words) in block.iter_mut().enumerate() {
                let bytes: &mut [u8; 64] = bytemuck_words(words);
                for half in 0..2 {
                    let piece = 2 * chunk + half;
                    let out: &mut [u8; 32] =
                        (&mut bytes[32 * half..32 * half + 32]).try_into().unwrap();
                    if r < rows && 32 * piece < k {
                        decode32(fmt, srcs[r], piece, out);
                    } else {
                        // padding rows (and past k): zero values, their lanes sum to zero
                        out.fill(off as u8);
                    }
                }
            }
            let words = (k - 64 * chunk).min(64) / 4;
            transpose16(&block, words, &mut dst[..words * PANEL * 4]);
        }
        // the scales, per block
        for (r, &src) in srcs.iter().enumerate() {
            if r >= rows {
                (0..units).for_each(|u| self.d[u * PANEL + r] = 0.0);
                (0..groups).for_each(|g| {
                    self.gscale[g * PANEL + r] = 0;
                    self.mins[g * PANEL + r] = 0.0;
                });
                continue;
            }
            match fmt {
                Fmt::Q8_0 | Fmt::Q5_0 => {
                    let size = if matches!(fmt, Fmt::Q8_0) { 34 } else { 22 };
                    for (b, blk) in src.chunks_exact(size).take(k / 32).enumerate() {
                        self.d[b * PANEL + r] = f16_at(blk, 0);
                        self.gscale[b * PANEL + r] = 1;
                        self.mins[b * PANEL + r] = 0.0;
                    }
                }
                Fmt::Q4K => {
                    for (u, blk) in src.chunks_exact(144).take(k / 256).enumerate() {
                        let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
                        for j in 0..8 {
                            let (sc, m) = loader::quant::q4k_scale_min(j, &blk[4..16]);
                            self.gscale[(8 * u + j) * PANEL + r] = sc as i32;
                            self.mins[(8 * u + j) * PANEL + r] = dmin * m as f32;
                        }
                        self.d[u * PANEL + r] = d;
                    }
                }
                _ => {
                    for (u, blk) in src.chunks_exact(210).take(k / 256).enumerate() {
                        for g in 0..16 {
                            self.gscale[(16 * u + g) * PANEL + r] = blk[192 + g] as i8 as i32;
                            self.mins[(16 * u + g) * PANEL + r] = 0.0;
                        }
                        self.d[u * PANEL + r] = f16_at(blk, 208);
                    }
                }
            }
        }
    }

    /// The oracle: row `r` of the panel times a quantized token row, as the kernel sums it
    /// (exact integers per group, f32 per unit).
    pub fn dot(&self, r: usize, a: &QRow<'_>, kind: ActQuant) -> f32 {
        let (g, u) = (self.group, self.unit);
        let per_sum = kind.sum_group();
        let mut sum = 0f32;
        for unit in 0..self.k / u {
            let mut ui = 0i32;
            let mut fm = 0f32;
            let da = a.d[unit * u / kind.block()];
            for grp in unit * u / g..(unit + 1) * u / g {
                let mut gi = 0i32;
                for i in grp * g..(grp + 1) * g {
                    gi += self.wq[((i / 4) * PANEL + r) * 4 + i % 4] as i32 * a.qs[i] as i32;
                }
                let asum: i32 = (grp * g / per_sum..(grp + 1) * g / per_sum)
                    .map(|s| a.bsums[s] as i32)
                    .sum();
                gi -= self.off * asum;
                ui += gi * self.gscale[grp * PANEL + r];
                fm += self.mins[grp * PANEL + r] * (da * asum as f32);
            }
            sum += ui as f32 * (self.d[unit * PANEL + r] * da) - fm;
        }
        sum
    }
}

/// Values `32 piece .. 32 piece + 32` of a stored row, as the panel stores them (value +
/// `off`, unsigned).
#[inline(always)]
fn decode32(fmt: &Fmt<'_>, src: &[u8], piece: usize, out: &mut [u8; 32]) {
    match fmt {
        Fmt::Q8_0 => {
            let q = &src[34 * piece + 2..34 * piece + 34];
            for (o, &b) in out.iter_mut().zip(q) {
                *o = b ^ 0x80; // (w as i8) + 128
            }
        }
        Fmt::Q5_0 => {
            let blk = &src[22 * piece..22 * piece + 22];
            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
            let qs = &blk[6..22];
            for j in 0..16 {
                out[j] = (qs[j] & 0xf) | ((((qh >> j) & 1) as u8) << 4);
                out[j + 16] = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
            }
        }
        Fmt::Q4K => {
            // a super-block's 32-value pieces: low nibbles of 32 bytes, then their high ones
            let (u, p) = (piece / 8, piece % 8);
            let qs = &src[144 * u + 16 + 32 * (p / 2)..][..32];
            let shift = 4 * (p % 2) as u32;
            for (o, &b) in out.iter_mut().zip(qs) {
                *o = (b >> shift) & 0xf;
            }
        }
        _ => {
            // Q6_K: per half of 128 values, four pieces from 64 low-bit bytes and 32
            // high-bit bytes
            let (u, p) = (piece / 8, piece % 8);
            let (h, q) = (p / 4, p % 4);
            let blk = &src[210 * u..210 * u + 210];
            let ql = &blk[64 * h + 32 * (q % 2)..][..32];
            let qh = &blk[128 + 32 * h..][..32];
            let (lshift, hshift) = (4 * (q / 2) as u32, 2 * q as u32);
            for ((o, &l), &hb) in out.iter_mut().zip(ql).zip(qh) {
                *o = ((l >> lshift) & 0xf) | (((hb >> hshift) & 3) << 4);
            }
        }
    }
}

/// The 64 bytes of 16 words.
#[inline(always)]
fn bytemuck_words(w: &mut [u32; PANEL]) -> &mut [u8; 64] {
    // SAFETY: [u32; 16] and [u8; 64] have the same size, u8 has no alignment, and every
    // bit pattern is valid for both.
    unsafe { &mut *(w as *mut [u32; PANEL] as *mut [u8; 64]) }
}

/// `dst` word `j * 16 + r` = `block[r][j]` for `j < words`: 16 rows' words side by side.
fn transpose16(block: &[[u32; PANEL]; PANEL], words: usize, dst: &mut [u8]) {
    for j in 0..words {
        for r in 0..PANEL {
            dst[(j * PANEL + r) * 4..][..4].copy_from_slice(&block[r][j].to_le_bytes());
        }
    }
}

fn fit<T: Default + Clone>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::default());
    }
}

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}
