//! Block-quantized weight rows repacked for the int8 prefill kernel: 16 rows side by side,
//! four bytes of each row per 32-bit lane, so one `vpdpbusd` with a token's four activation
//! bytes broadcast advances 16 rows at once and each row's sum stays in its own lane. The
//! block formats differ only in how a byte and its scales decode, so all four become one
//! shape: unsigned bytes `q` with `w = (q - off) * gscale[group] * d[unit] - mins[group]`.
//!
//! Packing is plain Rust; it is done once per 16 rows per matmul and read by every token.

use super::{ActQuant, Fmt, QRow};
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
    /// `wq` holds the values themselves as i8 (`make_signed`), `off` is 0.
    pub signed: bool,
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
    pub fn pack<'a>(
        &mut self,
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
        (self.has_gscale, self.has_mins, self.signed) = (has_gscale, has_mins, false);
        let (groups, units) = (k / group, k / unit);
        fit(&mut self.wq, k * PANEL);
        fit(&mut self.gscale, groups * PANEL);
        fit(&mut self.d, units * PANEL);
        fit(&mut self.mins, groups * PANEL);
        for r in 0..PANEL {
            if r >= rows {
                // padding rows: zero weights and scales, so their lanes sum to zero
                for kq in 0..k / 4 {
                    self.wq[(kq * PANEL + r) * 4..][..4].fill(off as u8);
                }
                (0..units).for_each(|u| self.d[u * PANEL + r] = 0.0);
                (0..groups).for_each(|g| {
                    self.gscale[g * PANEL + r] = 0;
                    self.mins[g * PANEL + r] = 0.0;
                });
                continue;
            }
            let src = row(r);
            // four values of row r at k = 4 kq .. 4 kq + 4 go to one 32-bit lane slot
            let wq = &mut self.wq;
            let mut put = |kq: usize, v: u32| {
                wq[(kq * PANEL + r) * 4..][..4].copy_from_slice(&v.to_le_bytes());
            };
            let u32_at =
                |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
            const NIB: u32 = 0x0f0f_0f0f;
            const TWO: u32 = 0x0303_0303;
            match fmt {
                Fmt::Q8_0 => {
                    for (b, blk) in src.chunks_exact(34).take(k / 32).enumerate() {
                        for j in 0..8 {
                            put(8 * b + j, u32_at(blk, 2 + 4 * j) ^ 0x8080_8080); // (w as i8) + 128
                        }
                        self.d[b * PANEL + r] = f16_at(blk, 0);
                        self.gscale[b * PANEL + r] = 1;
                        self.mins[b * PANEL + r] = 0.0;
                    }
                }
                Fmt::Q5_0 => {
                    for (b, blk) in src.chunks_exact(22).take(k / 32).enumerate() {
                        let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                        for j in 0..8 {
                            // values 4j..4j+4: low nibbles (j < 4) or high nibbles of qs[4j % 16..]
                            let v = u32_at(blk, 6 + 4 * (j % 4));
                            let nib = if j < 4 { v & NIB } else { (v >> 4) & NIB };
                            let h = (qh >> (4 * j)) & 0xf;
                            let bits = (h & 1) | ((h & 2) << 7) | ((h & 4) << 14) | ((h & 8) << 21);
                            put(8 * b + j, nib | (bits << 4));
                        }
                        self.d[b * PANEL + r] = f16_at(blk, 0);
                        self.gscale[b * PANEL + r] = 1;
                        self.mins[b * PANEL + r] = 0.0;
                    }
                }
                Fmt::Q4K => {
                    for (u, blk) in src.chunks_exact(144).take(k / 256).enumerate() {
                        let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
                        for c in 0..4 {
                            for l in 0..8 {
                                let v = u32_at(blk, 16 + 32 * c + 4 * l);
                                put(64 * u + 16 * c + l, v & NIB);
                                put(64 * u + 16 * c + 8 + l, (v >> 4) & NIB);
                            }
                        }
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
                        for h in 0..2 {
                            let (ql, qh) = (64 * h, 128 + 32 * h);
                            let base = 64 * u + 32 * h;
                            for l in 0..8 {
                                let a = u32_at(blk, ql + 4 * l);
                                let b = u32_at(blk, ql + 32 + 4 * l);
                                let hb = u32_at(blk, qh + 4 * l);
                                put(base + l, (a & NIB) | ((hb & TWO) << 4));
                                put(base + 8 + l, (b & NIB) | (((hb >> 2) & TWO) << 4));
                                put(base + 16 + l, ((a >> 4) & NIB) | (((hb >> 4) & TWO) << 4));
                                put(base + 24 + l, ((b >> 4) & NIB) | (((hb >> 6) & TWO) << 4));
                            }
                        }
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

    /// Stores each value as itself in an i8 (the offset taken off), for a kernel with a
    /// signed-by-signed product (AMX's `tdpbssd`), which then needs no offset correction.
    pub fn make_signed(&mut self) {
        if self.signed {
            return;
        }
        let off = self.off as u8;
        for b in &mut self.wq[..self.k * PANEL] {
            *b = b.wrapping_sub(off);
        }
        (self.off, self.signed) = (0, true);
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
                    let byte = self.wq[((i / 4) * PANEL + r) * 4 + i % 4];
                    let q = if self.signed {
                        byte as i8 as i32
                    } else {
                        byte as i32
                    };
                    gi += q * a.qs[i] as i32;
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

fn fit<T: Default + Clone>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::default());
    }
}

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}
