//! Prefill products on AMX's tile unit (`Level::Amx`). A tile op multiplies a 16-row tile
//! by a 16-column one over 32 bf16 values (`tdpbf16ps`): 8192 multiply-adds per
//! instruction against 32 for one AVX-512 BF16 instruction.
//!
//! Stable Rust has no AMX intrinsics, so the tile instructions are inline assembly; the
//! compiler never allocates tile registers itself, so their state carries from one `asm!`
//! block to the next, and every block is volatile (kept in order).
//!
//! - bf16 weights with `--act-type bf16`: the tiles' A side is 16 stored weight rows, loaded
//!   as they lie in the file (nothing repacked); the B side is the tokens rounded to bf16,
//!   packed once per product in pairs (`simd::amx_pack_acts`). (f32 activations split into
//!   three bf16 parts that sum to them exactly would keep the f32 numerics at three tile ops
//!   a step; measured on our Xeon VM, where a tile op takes about 38 cycles and a tile load
//!   55, that ran at 58% of the f32 FMA kernel's speed, so f32 activations stay there.)
//! - block-quantized weights: each share widens a block of rows and rounds it to bf16
//!   (`matmul`), then the same kernel. An int8 tile kernel (`tdpbssd` over the `vpdpbusd`
//!   panels) was built first and dropped: every group of 16 or 32 values has its own scale,
//!   so each tile op needed a tile store and a scaling, which cost more than the op
//!   (q4_k_m prefill +21% over AVX-512 VNNI, q8_0 none; the bf16 tiles then took q4_k_m
//!   pp512 from 296-322 to 383-412 tok/s). Shapes the tiles do not take (rows not whole
//!   panels of 16) run as `avx512vnni`.

use super::super::AmxBf16Gemm;
use std::arch::asm;

/// A tile configuration (palette 1): per tile register its rows and bytes per row.
#[repr(C, align(64))]
struct TileCfg([u8; 64]);

impl TileCfg {
    fn new() -> TileCfg {
        let mut c = [0u8; 64];
        c[0] = 1;
        TileCfg(c)
    }

    /// Every tile register 16 rows of 64 bytes: what all our kernels use.
    fn full() -> TileCfg {
        let mut cfg = TileCfg::new();
        for t in 0..8 {
            cfg.set(t, 16, 64);
        }
        cfg
    }

    fn set(&mut self, tile: usize, rows: usize, colsb: usize) {
        debug_assert!(rows <= 16 && colsb <= 64);
        self.0[16 + 2 * tile..18 + 2 * tile].copy_from_slice(&(colsb as u16).to_le_bytes());
        self.0[48 + tile] = rows as u8;
    }

    /// # Safety
    /// AMX must be enabled for the process (`Level::Amx` is supported).
    unsafe fn load(&self) {
        unsafe { asm!("ldtilecfg [{}]", in(reg) self.0.as_ptr(), options(nostack, readonly)) }
    }
}

/// Leaves the tile state empty again, so a context switch saves none of it.
unsafe fn release() {
    unsafe { asm!("tilerelease", options(nostack, nomem)) }
}

macro_rules! tile_zero {
    ($t:literal) => {
        asm!(concat!("tilezero tmm", $t), options(nostack, nomem))
    };
}

/// Tile `$t` from `$p`, rows `$stride` bytes apart.
macro_rules! tile_load {
    ($t:literal, $p:expr, $stride:expr) => {
        asm!(concat!("tileloadd tmm", $t, ", [{p} + {s}]"),
             p = in(reg) $p, s = in(reg) ($stride) as usize, options(nostack, readonly))
    };
}

macro_rules! tile_store {
    ($t:literal, $p:expr, $stride:expr) => {
        asm!(concat!("tilestored [{p} + {s}], tmm", $t),
             p = in(reg) $p, s = in(reg) ($stride) as usize, options(nostack))
    };
}

macro_rules! tdp {
    ($op:literal, $c:literal, $a:literal, $b:literal) => {
        asm!(
            concat!($op, " tmm", $c, ", tmm", $a, ", tmm", $b),
            options(nostack)
        )
    };
}

#[repr(C, align(64))]
struct Block([[f32; 16]; 16]);

/// Weight bytes a block of rows may take, so the block stays in L2 while every tile of
/// tokens passes over it (each token tile's packed parts are then read once per block,
/// not once per panel: 512 tokens of 1024 values are 1 MiB).
const BLOCK_BYTES: usize = 512 * 1024;

/// `y[t * m + r0 + r] = weight row r · token t` over whole panels of 16 rows: blocks of
/// rows that fit L2, and in a block two panels by two tiles of 16 tokens at a time (four
/// sums in tiles, each tile of A and B loaded once for two products), the sums over the
/// whole of `k` in the tiles.
///
/// # Safety
/// `Level::Amx` is supported; `y` is valid for writes at `t * m + r0 + r` (`t < n`,
/// `r < rows`) and no other thread writes there meanwhile.
pub unsafe fn bf16_gemm(g: &AmxBf16Gemm<'_>, y: *mut f32) {
    let (k, rb, n, m, r0) = (g.k, g.rb, g.n, g.m, g.r0);
    let nb = n.div_ceil(16);
    let block_rows = (BLOCK_BYTES / (2 * k)).max(32) / 32 * 32;
    let cfg = TileCfg::full();
    let mut out = Block([[0.0; 16]; 16]);
    let w = g.w.as_ptr();
    let acts = g.acts.as_ptr();
    // B tile of token tile b, values c..c + 32: 16 pairs of 16 tokens, 1 KiB
    let ak = g.acts_k;
    let b_at = |b: usize, c: usize| unsafe { acts.add((b * ak + c) * 16) };
    // a tile of sums for panel row p and token tile t0, into y
    let put = |out: &mut Block, tile: u8, p: usize, t0: usize| {
        let tokens = (n - t0).min(16);
        if g.rows_out {
            // rows of y as the tile holds them: no staging
            let at = unsafe { y.add((r0 + p) * m + t0) };
            match tile {
                0 => unsafe { tile_store!(0, at, 4 * m) },
                1 => unsafe { tile_store!(1, at, 4 * m) },
                2 => unsafe { tile_store!(2, at, 4 * m) },
                _ => unsafe { tile_store!(3, at, 4 * m) },
            }
        } else {
            match tile {
                0 => unsafe { tile_store!(0, out.0.as_mut_ptr(), 64) },
                1 => unsafe { tile_store!(1, out.0.as_mut_ptr(), 64) },
                2 => unsafe { tile_store!(2, out.0.as_mut_ptr(), 64) },
                _ => unsafe { tile_store!(3, out.0.as_mut_ptr(), 64) },
            }
            unsafe { scatter(out, y, m, t0, tokens, r0 + p) };
        }
    };
    // tiles: sums 0-3 (panel i, token tile j at 2i + j), weights 4-5, tokens 6-7
    unsafe {
        cfg.load();
        let mut blk = 0;
        while blk < g.rows {
            let blk_end = (blk + block_rows).min(g.rows);
            let mut b = 0;
            while b < nb {
                let two_t = nb - b >= 2;
                let mut p = blk;
                while p < blk_end {
                    let two_p = blk_end - p >= 32;
                    let a0 = w.add(p * rb);
                    let a1 = w.add((p + 16) * rb);
                    tile_zero!(0);
                    tile_zero!(1);
                    tile_zero!(2);
                    tile_zero!(3);
                    let mut c = 0;
                    while c < k {
                        tile_load!(4, a0.add(2 * c), rb);
                        if two_p {
                            tile_load!(5, a1.add(2 * c), rb);
                        }
                        tile_load!(6, b_at(b, c), 64);
                        tdp!("tdpbf16ps", 0, 4, 6);
                        if two_p {
                            tdp!("tdpbf16ps", 2, 5, 6);
                        }
                        if two_t {
                            tile_load!(7, b_at(b + 1, c), 64);
                            tdp!("tdpbf16ps", 1, 4, 7);
                            if two_p {
                                tdp!("tdpbf16ps", 3, 5, 7);
                            }
                        }
                        c += 32;
                    }
                    let t0 = 16 * b;
                    put(&mut out, 0, p, t0);
                    if two_t {
                        put(&mut out, 1, p, t0 + 16);
                        if two_p {
                            put(&mut out, 3, p + 16, t0 + 16);
                        }
                    }
                    if two_p {
                        put(&mut out, 2, p + 16, t0);
                    }
                    p += if two_p { 32 } else { 16 };
                }
                b += if two_t { 2 } else { 1 };
            }
            blk = blk_end;
        }
        release();
    }
}

/// A tile of sums for 16 weight rows (rows of `out`) by 16 tokens (columns), into `y`'s
/// token rows.
#[inline(always)]
unsafe fn scatter(out: &Block, y: *mut f32, m: usize, t0: usize, tokens: usize, r: usize) {
    for t in 0..tokens {
        let dst = unsafe { std::slice::from_raw_parts_mut(y.add((t0 + t) * m + r), 16) };
        for (i, d) in dst.iter_mut().enumerate() {
            *d = out.0[i][t];
        }
    }
}

/// `simd::amx_scores`: per head tile (16 query rows) and 16-position group, the sum over
/// `k` of the cached rows (the A side, 16 rows `row` values apart, loaded from the cache as
/// they lie) times the packed queries (B), written as 16 positions by 16 query lanes;
/// up to four groups share each B tile.
///
/// # Safety
/// `Level::Amx` is supported; the wrapper checked every group's rows, the packed queries
/// and `s`'s bounds.
pub unsafe fn scores(g: &super::super::AmxScores<'_>, s: *mut f32) {
    let (k, lanes, rb) = (g.k, g.lanes, 2 * g.row);
    let cfg = TileCfg::full();
    let kv = g.kv.as_ptr();
    let q = g.q.as_ptr();
    // the next call's rows, 64 bytes at a time, spread evenly over this call's k steps:
    // the cache comes in from memory here, and 16 rows read a line at a time each are
    // more streams than the hardware prefetchers follow
    let group_lines = (16 * rb).div_ceil(64);
    let lines = g.ahead.len() * group_lines;
    let steps = g.firsts.len().div_ceil(4) * (lanes / 16) * k.div_ceil(32);
    let per_step = lines.div_ceil(steps.max(1));
    let (mut group, mut line) = (0, 0);
    let mut fetch = || {
        for _ in 0..per_step {
            if group == g.ahead.len() {
                return;
            }
            let at = kv
                .wrapping_add(g.ahead[group])
                .cast::<u8>()
                .wrapping_add(64 * line);
            // SAFETY: a prefetch is a hint; it never faults, whatever the address.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(at.cast())
            };
            line += 1;
            if line == group_lines {
                (group, line) = (group + 1, 0);
            }
        }
    };
    unsafe {
        cfg.load();
        for (p, firsts) in g.firsts.chunks(4).enumerate() {
            let a: [*const u16; 4] =
                std::array::from_fn(|i| kv.add(firsts[i.min(firsts.len() - 1)]));
            for ht in 0..lanes / 16 {
                tile_zero!(0);
                tile_zero!(1);
                tile_zero!(2);
                tile_zero!(3);
                // The query tiles alternate between two registers step by step, and the
                // rows between two, group by group, so that a tile load need not wait for
                // the products still reading its register (measured in L2: one register
                // each took 24% longer).
                let n = firsts.len();
                macro_rules! step {
                    ($qt:literal, $c:expr) => {{
                        let c = $c;
                        fetch();
                        tile_load!($qt, q.add((ht * k + c) * 16), 64);
                        tile_load!(4, a[0].add(c), rb);
                        tdp!("tdpbf16ps", 0, 4, $qt);
                        if n > 1 {
                            tile_load!(7, a[1].add(c), rb);
                            tdp!("tdpbf16ps", 1, 7, $qt);
                        }
                        if n > 2 {
                            tile_load!(4, a[2].add(c), rb);
                            tdp!("tdpbf16ps", 2, 4, $qt);
                        }
                        if n > 3 {
                            tile_load!(7, a[3].add(c), rb);
                            tdp!("tdpbf16ps", 3, 7, $qt);
                        }
                    }};
                }
                let mut c = 0;
                while c + 64 <= k {
                    step!(5, c);
                    step!(6, c + 32);
                    c += 64;
                }
                if c < k {
                    step!(5, c);
                }
                // group i's 16 positions by this tile's 16 lanes
                let at = |i: usize| s.add((16 * (4 * p + i)) * lanes + 16 * ht);
                tile_store!(0, at(0), 4 * lanes);
                if firsts.len() > 1 {
                    tile_store!(1, at(1), 4 * lanes);
                }
                if firsts.len() > 2 {
                    tile_store!(2, at(2), 4 * lanes);
                }
                if firsts.len() > 3 {
                    tile_store!(3, at(3), 4 * lanes);
                }
            }
        }
        release();
    }
}

/// `simd::amx_pv`, 32 output columns (a stripe) at a time: the tile's latents for those
/// columns are packed in pairs of positions (two `vpermt2w` per pair of rows) into at most
/// 8 KiB that stay in L1, then each head tile's two output tiles are loaded from `o`, every
/// step of 32 positions multiplied in, and stored back once. (Packed whole first, the 64
/// KiB of a tile's latents went out of L1 and back: the packing's stores were the larger
/// part of the output product's time.)
///
/// With one head tile, the packing of a stripe is interleaved step by step with the
/// products of the stripe before (into the other of two buffers): alone, each of the two
/// left the other's units idle (measured in L2: 14% longer). The steps alternate between
/// two sets of registers, as the scores' do.
///
/// # Safety
/// `Level::Amx` is supported; the wrapper checked the rows' bounds and the buffers' sizes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn pv(g: &super::super::AmxPv<'_>, o: *mut f32) {
    use std::arch::x86_64::*;
    const MAX: usize = super::super::AMX_PV_POSITIONS;
    let (r, nj) = (g.r, g.offs.len());
    let kpos = nj.next_multiple_of(32);
    let steps = kpos / 32;
    let stripes = r / 32;
    // per stripe parity, the pairs (position 2i, 2i + 1) of 16 columns as tile rows:
    // [steps][2][16][32]
    let mut buf = Pack([0u16; 2 * MAX * 32]);
    let lo = _mm512_set_epi16(
        47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38, 6, 37, 5, 36, 4,
        35, 3, 34, 2, 33, 1, 32, 0,
    );
    let hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
    let kv = g.kv.as_ptr();
    let p = g.p.as_ptr();
    let bufs = buf.0.as_mut_ptr();
    let v_of = |stripe: usize| unsafe { bufs.add(stripe % 2 * MAX * 32) };
    // step s's 16 pairs of stripe `stripe`
    let pack = |stripe: usize, s: usize| unsafe {
        let (v, c) = (v_of(stripe), 32 * stripe);
        for pp in 16 * s..16 * s + 16 {
            let row = |t: usize| {
                if t < nj {
                    _mm512_loadu_si512(kv.add(g.offs[t] + c).cast())
                } else {
                    _mm512_setzero_si512()
                }
            };
            let (a, b) = (row(2 * pp), row(2 * pp + 1));
            let at = |half: usize| v.add(((pp / 16 * 2 + half) * 16 + pp % 16) * 32);
            _mm512_storeu_si512(at(0).cast(), _mm512_permutex2var_epi16(a, lo, b));
            _mm512_storeu_si512(at(1).cast(), _mm512_permutex2var_epi16(a, hi, b));
        }
    };
    let cfg = TileCfg::full();
    unsafe {
        cfg.load();
        macro_rules! step {
            ($pt:literal, $b0:literal, $b1:literal, $pa:expr, $v:expr, $s:expr) => {{
                let (pa, v, s) = ($pa, $v, $s);
                tile_load!($pt, pa.add(32 * s), 2 * kpos);
                tile_load!($b0, v.add(1024 * s), 64);
                tile_load!($b1, v.add(1024 * s + 512), 64);
                tdp!("tdpbf16ps", 0, $pt, $b0);
                tdp!("tdpbf16ps", 1, $pt, $b1);
            }};
        }
        // the products of stripe `st` for head tile `ht`, each step after `between(step)`
        let products = |st: usize, ht: usize, between: &dyn Fn(usize)| {
            let ob = o.add(ht * 16 * r + 32 * st);
            let pa = p.add(ht * 16 * kpos);
            let v = v_of(st);
            tile_load!(0, ob, 4 * r);
            tile_load!(1, ob.add(16), 4 * r);
            for s in 0..steps {
                between(s);
                if s % 2 == 0 {
                    step!(6, 2, 3, pa, v, s);
                } else {
                    step!(7, 4, 5, pa, v, s);
                }
            }
            tile_store!(0, ob, 4 * r);
            tile_store!(1, ob.add(16), 4 * r);
        };
        if g.rows == 16 {
            (0..steps).for_each(|s| pack(0, s));
            for st in 0..stripes {
                if st + 1 < stripes {
                    products(st, 0, &|s| pack(st + 1, s));
                } else {
                    products(st, 0, &|_| {});
                }
            }
        } else {
            for st in 0..stripes {
                (0..steps).for_each(|s| pack(st, s));
                for ht in 0..g.rows / 16 {
                    products(st, ht, &|_| {});
                }
            }
        }
        release();
    }
}

/// `simd::amx_pack_kv`: the keys 16 positions by 16 pairs at a time, loaded as rows and
/// transposed as 32-bit words; the values two positions at a time, their 32 columns
/// interleaved by `vpermt2w` into two tiles' rows.
///
/// # Safety
/// As `simd::amx_pack_kv`; AVX-512 BW is present.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn pack_kv(g: &super::super::KvGroup<'_>, keys: *mut u16, values: *mut u16) {
    use std::arch::x86_64::*;
    let (r, kp, kb) = (g.r, g.kp, g.kb);
    // 32 values of a row from `d` on, zeros past `len` (and for a missing row)
    let load = |i: usize, d: usize, len: usize| match g.rows[i] {
        Some(row) if d < len.min(row.len()) => {
            let n = (len.min(row.len()) - d).min(32);
            let mask = if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
            // SAFETY: the mask covers only values d..d + n, inside the row.
            unsafe { _mm512_maskz_loadu_epi16(mask, row.as_ptr().add(d).cast()) }
        }
        _ => _mm512_setzero_si512(),
    };
    unsafe {
        for t in 0..2 {
            for d0 in (0..kp).step_by(32) {
                let rows: [__m512i; 16] = std::array::from_fn(|i| load(16 * t + i, d0, kp));
                super::avx512::transpose_store(&rows, keys.add(t * 16 * kp + 16 * d0).cast());
            }
        }
        let lo = _mm512_set_epi16(
            47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38, 6, 37, 5, 36,
            4, 35, 3, 34, 2, 33, 1, 32, 0,
        );
        let hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
        for jp in 0..16 {
            for d0 in (0..r).step_by(32) {
                let (a, b) = (load(2 * jp, d0, r), load(2 * jp + 1, d0, r));
                let at = |c: usize| values.add(c * 16 * kb + 32 * jp).cast::<__m512i>();
                _mm512_storeu_si512(at(d0 / 16), _mm512_permutex2var_epi16(a, lo, b));
                if d0 + 16 < r {
                    _mm512_storeu_si512(at(d0 / 16 + 1), _mm512_permutex2var_epi16(a, hi, b));
                }
            }
        }
    }
}

/// A decode tile's latents for 32 columns, twice, packed for the tiles (see [`pv`]).
#[repr(C, align(64))]
struct Pack([u16; 2 * super::super::AMX_PV_POSITIONS * 32]);
