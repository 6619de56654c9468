//! The per-level kernels behind the CPU backend. Every entry point here takes the level and
//! dispatches once per call (a call covers a whole row or a panel, so the branch is free).

pub mod portable;
mod qacts;
pub mod qpanel;
#[cfg(target_arch = "wasm32")]
mod wasm;
#[cfg(target_arch = "x86_64")]
mod x86;

use super::dispatch::Level;
pub use qacts::{ActQuant, QActs, QRow};

/// How one stored row is encoded.
#[derive(Clone, Copy, Debug)]
pub enum Fmt<'a> {
    F32,
    F16,
    BF16,
    /// FP8 e4m3; `scales[j]` multiplies columns `[j * block, (j + 1) * block)` of this row.
    Fp8 {
        scales: &'a [f32],
        block: usize,
    },
    Q8_0,
    Q5_0,
    Q4K,
    Q6K,
}

impl Fmt<'_> {
    /// Bytes that 256 values take (not meaningful for FP8, which goes by its scale blocks).
    pub fn bytes_per_256(&self) -> usize {
        match self {
            Fmt::F32 => 1024,
            Fmt::F16 | Fmt::BF16 => 512,
            Fmt::Fp8 { .. } => 256,
            Fmt::Q8_0 => 272,
            Fmt::Q5_0 => 176,
            Fmt::Q4K => 144,
            Fmt::Q6K => 210,
        }
    }
}

/// A run of FP8 e4m3 rows with their block scales: row `r` is `rb` bytes from row `r - 1`
/// in `bytes`, and takes the scale grid's row `(row0 + r) / block[0]` (`grid_cols` scales,
/// one per `block[1]` columns).
#[derive(Clone, Copy, Debug)]
pub struct Fp8Run<'a> {
    pub bytes: &'a [u8],
    pub rb: usize,
    pub grid: &'a [f32],
    pub grid_cols: usize,
    pub row0: usize,
    pub block: [usize; 2],
}

impl<'a> Fp8Run<'a> {
    /// Row `r`'s scales, one per `block[1]` columns.
    #[inline(always)]
    pub fn scales(&self, r: usize) -> &'a [f32] {
        let s = (self.row0 + r) / self.block[0];
        &self.grid[s * self.grid_cols..(s + 1) * self.grid_cols]
    }

    /// Row `r`'s encoding and stored bytes (`k` values).
    pub fn row(&self, r: usize, k: usize) -> (Fmt<'a>, &'a [u8]) {
        let fmt = Fmt::Fp8 {
            scales: self.scales(r),
            block: self.block[1],
        };
        (fmt, &self.bytes[r * self.rb..r * self.rb + k])
    }
}

/// `$f::<R, T>(args)` for a runtime tile of `rn` rows by `tn` tokens, each 1 to 4: the
/// register-tiled kernels are generic over their shape, and a share's edges take the
/// smaller ones.
macro_rules! tile4x4 {
    ($rn:expr, $tn:expr, $f:ident($($a:expr),*)) => {
        match ($rn, $tn) {
            (4, 4) => $f::<4, 4>($($a),*),
            (4, 3) => $f::<4, 3>($($a),*),
            (4, 2) => $f::<4, 2>($($a),*),
            (4, 1) => $f::<4, 1>($($a),*),
            (3, 4) => $f::<3, 4>($($a),*),
            (3, 3) => $f::<3, 3>($($a),*),
            (3, 2) => $f::<3, 2>($($a),*),
            (3, 1) => $f::<3, 1>($($a),*),
            (2, 4) => $f::<2, 4>($($a),*),
            (2, 3) => $f::<2, 3>($($a),*),
            (2, 2) => $f::<2, 2>($($a),*),
            (2, 1) => $f::<2, 1>($($a),*),
            (1, 4) => $f::<1, 4>($($a),*),
            (1, 3) => $f::<1, 3>($($a),*),
            (1, 2) => $f::<1, 2>($($a),*),
            _ => $f::<1, 1>($($a),*),
        }
    };
}
#[allow(unused_imports)] // (not every target has a tiled kernel)
pub(crate) use tile4x4;

macro_rules! dispatch {
    ($level:expr, $name:ident($($arg:expr),*)) => {
        match $level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a level is only ever selected when `Level::supported` said so.
            Level::Avx512 => unsafe { x86::avx512::$name($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            Level::Avx512Vnni | Level::Amx => unsafe { x86::avx512vnni::$name($($arg),*) },
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            // SAFETY: the module was built with SIMD128, so these instructions exist.
            Level::Simd128 => unsafe { wasm::simd128::$name($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => unsafe { x86::avx2::$name($($arg),*) },
            #[allow(unused_unsafe)]
            _ => unsafe { portable::$name($($arg),*) },
        }
    };
}

// the decode attention's tile products (declared after `dispatch!`, which they use)
mod decode_attention;
pub use decode_attention::*;

/// `a · b` over the shorter length.
pub fn dot(level: Level, a: &[f32], b: &[f32]) -> f32 {
    dispatch!(level, dot(a, b))
}

/// `y += a * x`.
pub fn axpy(level: Level, a: f32, x: &[f32], y: &mut [f32]) {
    dispatch!(level, axpy(a, x, y))
}

/// Decode the stored row `src` into `out` (whole blocks for block formats).
pub fn widen(level: Level, fmt: &Fmt<'_>, src: &[u8], out: &mut [f32]) {
    dispatch!(level, widen(fmt, src, out))
}

/// `row · x` straight from the stored encoding (the decode path: the row is read once).
pub fn dot_row(level: Level, fmt: &Fmt<'_>, src: &[u8], x: &[f32]) -> f32 {
    dispatch!(level, dot_row(fmt, src, x))
}

/// Whether this level has `dot_row_bf16_pairs` (else it is `dot_row`).
pub fn has_bf16_pairs(level: Level) -> bool {
    matches!(
        level,
        Level::Avx2 | Level::Avx512 | Level::Avx512Vnni | Level::Amx
    )
}

/// Appends `x` rearranged for `dot_row_bf16_pairs` to `out`: each whole block of 32
/// values as its 16 even-indexed values, then its 16 odd ones (a tail shorter than 32 is
/// left out).
pub fn bf16_pairs(x: &[f32], out: &mut Vec<f32>) {
    for b in x.chunks_exact(32) {
        out.extend(b.iter().step_by(2));
        out.extend(b.iter().skip(1).step_by(2));
    }
}

/// `out[j] = row j · x` for the bf16 rows stored `rb` bytes apart from `src`, given `pairs`
/// = [`bf16_pairs`]`(x)` as well (the decode path for bf16 weights: see the AVX-512
/// kernel). Rows are taken from four streams (i, q + i, 2q + i, 3q + i), as the quantized
/// kernels take them: one stream held a core to ~10 GB/s from memory, four let the L2's
/// prefetcher run. AVX2 and AVX-512 take each four rows in one pass; the other levels a
/// row at a time in the same order.
pub fn dot_rows_bf16_pairs(
    level: Level,
    src: &[u8],
    rb: usize,
    x: &[f32],
    pairs: &[f32],
    out: &mut [f32],
) {
    let n = out.len();
    assert!(n == 0 || src.len() >= (n - 1) * rb + 2 * x.len());
    #[cfg(target_arch = "x86_64")]
    match level {
        // SAFETY: a level is only selected when `Level::supported` said so.
        Level::Avx2 => return unsafe { x86::avx2::dot_rows_bf16_pairs(src, rb, x, pairs, out) },
        Level::Avx512 | Level::Avx512Vnni | Level::Amx => {
            return unsafe { x86::avx512::dot_rows_bf16_pairs(src, rb, x, pairs, out) };
        }
        _ => {}
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = pairs;
    for j in four_stream_order(n) {
        out[j] = dot_row(level, &Fmt::BF16, &src[j * rb..j * rb + 2 * x.len()], x);
    }
}

/// Rows `0..n` in the order of four streams (0, q, 2q, 3q, 1, q + 1, ..., q = n / 4
/// rounded up), skipping those past `n`: the order the SIMD levels' decode rows take, for
/// the levels that take a row at a time.
pub fn four_stream_order(n: usize) -> impl Iterator<Item = usize> {
    let q = n.div_ceil(4);
    (0..q)
        .flat_map(move |j| (0..4).map(move |s| s * q + j))
        .filter(move |&j| j < n)
}

/// `out[j] = row j · x` for the f32 or f16 rows (`fmt`) stored `rb` bytes apart from
/// `src`, taken from four streams (i, q + i, 2q + i, 3q + i) as the other formats' rows are.
/// AVX-512 takes each four rows in one pass; the other levels a row at a time in the same
/// order.
pub fn dot_rows_wide(
    level: Level,
    fmt: &Fmt<'_>,
    src: &[u8],
    rb: usize,
    x: &[f32],
    out: &mut [f32],
) {
    let (n, k) = (out.len(), x.len());
    let size = match fmt {
        Fmt::F32 => 4,
        Fmt::F16 => 2,
        other => panic!("dot_rows_wide takes f32 or f16 rows, not {other:?}"),
    };
    assert!(n == 0 || (rb >= size * k && src.len() >= (n - 1) * rb + size * k));
    #[cfg(target_arch = "x86_64")]
    if matches!(level, Level::Avx512 | Level::Avx512Vnni | Level::Amx) {
        // SAFETY: a level is only selected when `Level::supported` said so; bounds above.
        return unsafe {
            match fmt {
                Fmt::F32 => x86::avx512::dot_rows_f32(src, rb, x, out),
                _ => x86::avx512::dot_rows_f16(src, rb, x, out),
            }
        };
    }
    for j in four_stream_order(n) {
        out[j] = dot_row(level, fmt, &src[j * rb..j * rb + size * k], x);
    }
}

/// `x`'s values rounded to bf16 in place (each `f32::from_bits(bf16_bits(v) << 16)`).
pub fn round_to_bf16(level: Level, x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if matches!(level, Level::Avx512 | Level::Avx512Vnni | Level::Amx) {
        // SAFETY: a level is only selected when `Level::supported` said so.
        return unsafe { x86::avx512::round_to_bf16(x) };
    }
    let _ = level;
    for v in x {
        *v = f32::from_bits((crate::bf16_bits(*v) as u32) << 16);
    }
}

/// `out[j] = row j · x` over a run of FP8 rows, taken from four streams (i, q + i, 2q + i,
/// 3q + i) as the other formats' rows are. AVX2 and AVX-512 take each four rows in one
/// pass; the other levels a row at a time in the same order.
pub fn dot_rows_fp8(level: Level, run: &Fp8Run<'_>, x: &[f32], out: &mut [f32]) {
    let (n, k) = (out.len(), x.len());
    if n == 0 {
        return;
    }
    let last = (run.row0 + n - 1) / run.block[0];
    assert!(
        run.rb >= k
            && run.bytes.len() >= (n - 1) * run.rb + k
            && run.block[0] > 0
            && run.block[1] > 0
            && run.grid_cols >= k.div_ceil(run.block[1])
            && run.grid.len() >= (last + 1) * run.grid_cols,
        "dot_rows_fp8: {n} rows of {k} values do not fit the run"
    );
    #[cfg(target_arch = "x86_64")]
    match level {
        // SAFETY: a level is only selected when `Level::supported` said so; bounds above.
        Level::Avx2 if run.block[1].is_multiple_of(8) => {
            return unsafe { x86::avx2::dot_rows_fp8(run, x, out) };
        }
        Level::Avx512 | Level::Avx512Vnni | Level::Amx if run.block[1].is_multiple_of(16) => {
            return unsafe { x86::avx512::dot_rows_fp8(run, x, out) };
        }
        _ => {}
    }
    for j in four_stream_order(n) {
        let (fmt, src) = run.row(j, k);
        out[j] = dot_row(level, &fmt, src, x);
    }
}

/// `row · a` for a row of a format with an int8 dot product (`fmt.act_quant()` is some),
/// against activations quantized in that format's layout.
pub fn dot_row_q(level: Level, fmt: &Fmt<'_>, src: &[u8], a: &QRow<'_>) -> f32 {
    dispatch!(level, dot_row_q(fmt, src, a))
}

/// `out[j] = row j · a` for the rows stored back to back from `src`, `rb` bytes apart
/// (the decode path over a run of rows: the x86 levels keep four rows in flight).
pub fn dot_rows_q(
    level: Level,
    fmt: &Fmt<'_>,
    src: &[u8],
    rb: usize,
    a: &QRow<'_>,
    out: &mut [f32],
) {
    assert!(out.is_empty() || src.len() >= (out.len() - 1) * rb);
    #[cfg(target_arch = "x86_64")]
    match level {
        // SAFETY: an AVX-512 level is only selected when `Level::supported` said so.
        Level::Avx512 => return unsafe { x86::avx512::dot_rows_q(fmt, src, rb, a, out) },
        Level::Avx512Vnni | Level::Amx => {
            return unsafe { x86::avx512vnni::dot_rows_q(fmt, src, rb, a, out) };
        }
        Level::Avx2 => return unsafe { x86::avx2::dot_rows_q(fmt, src, rb, a, out) },
        _ => {}
    }
    for (j, o) in out.iter_mut().enumerate() {
        *o = dot_row_q(level, fmt, &src[j * rb..(j + 1) * rb], a);
    }
}

/// Whether this level has an int8 prefill kernel (`qgemm_panel`) for `fmt`: the AVX-512
/// VNNI levels for every packed format; AVX2 for all but Q8_0, whose full bytes would
/// overflow `vpmaddubsw`'s pairs (it stays on the f32 panels there).
pub fn has_qgemm(level: Level, fmt: &Fmt<'_>) -> bool {
    match level {
        Level::Avx512Vnni | Level::Amx => qpanel::packs(fmt),
        Level::Avx2 => qpanel::packs(fmt) && !matches!(fmt, Fmt::Q8_0),
        _ => false,
    }
}

/// One call of the int8 prefill kernel: a packed panel of up to 16 rows against tokens
/// `tokens` of `acts`, writing `y[t * m + r0 + r]`.
pub struct QGemm<'a> {
    pub panel: &'a qpanel::QPanel,
    pub acts: &'a QActs,
    pub kind: ActQuant,
    pub tokens: std::ops::Range<usize>,
    pub m: usize,
    pub r0: usize,
}

/// Only where `has_qgemm(level, fmt)` for the panel's format.
///
/// # Safety
/// `y` must be valid for writes at every `t * m + r0 + r` (`t` in `tokens`,
/// `r < panel.rows`), and no other thread may access those elements meanwhile.
pub unsafe fn qgemm_panel(level: Level, g: &QGemm<'_>, y: *mut f32) {
    assert!(
        matches!(level, Level::Avx512Vnni | Level::Amx | Level::Avx2),
        "no int8 prefill kernel at level {level}"
    );
    assert!(g.r0 + g.panel.rows <= g.m);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the level is supported (checked when it was chosen); the caller vouches for y.
    unsafe {
        if level == Level::Avx2 {
            x86::avx2_qgemm::qgemm_panel(g, y)
        } else {
            x86::avx512_qgemm::qgemm_panel(g, y)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (g, y);
}

/// A panel of `rows` widened weight rows of length `k`, against `n` tokens `x[n, k]`,
/// writing `y[t * m + r0 + r] = panel[r] · x[t]` (the prefill path: each panel row is reused
/// by every token from cache).
pub struct GemmPanel<'a> {
    pub panel: &'a [f32],
    pub rows: usize,
    pub k: usize,
    pub x: &'a [f32],
    pub n: usize,
    pub m: usize,
    pub r0: usize,
}

/// # Safety
/// `y` must be valid for writes at every `t * m + r0 + r` (`t < n`, `r < rows`), and no
/// other thread may access those elements meanwhile (callers split disjoint rows).
pub unsafe fn gemm_panel(level: Level, g: &GemmPanel<'_>, y: *mut f32) {
    assert!(g.panel.len() >= g.rows * g.k && g.x.len() >= g.n * g.k && g.r0 + g.rows <= g.m);
    dispatch!(level, gemm_panel(g, y))
}

/// A matmul's panel of at most 16 rows: as `gemm_panel`, but AVX2 transposes the panel
/// once and runs its rows in the lanes (the dot-shaped tiles loaded a weight vector from L2
/// per three FMAs and ran at about half the FMA peak).
///
/// # Safety
/// As `gemm_panel`.
pub unsafe fn gemm_panel16(level: Level, g: &GemmPanel<'_>, y: *mut f32) {
    assert!(g.rows <= 16);
    assert!(g.panel.len() >= g.rows * g.k && g.x.len() >= g.n * g.k && g.r0 + g.rows <= g.m);
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx2 {
        // SAFETY: the level is supported (checked when it was chosen); bounds checked above;
        // the caller vouches for y.
        return unsafe { x86::avx2::gemm_panel16(g, y) };
    }
    // SAFETY: the caller's contract, passed on
    unsafe { gemm_panel(level, g, y) }
}

/// `out[i, c] += Σ_j p[i, j0 + j] * v[j, c]` for `i < n`, `j < nj`, `c < width`: attention
/// probabilities times one cache block's latent rows (`v` rows `ld_v` apart).
pub struct PvBlock<'a> {
    pub p: &'a [f32],
    pub ld_p: usize,
    pub j0: usize,
    pub nj: usize,
    pub v: &'a [f32],
    pub ld_v: usize,
    pub n: usize,
    pub width: usize,
}

pub fn pv_accumulate(level: Level, b: &PvBlock<'_>, out: &mut [f32]) {
    assert!(b.n == 0 || b.p.len() >= (b.n - 1) * b.ld_p + b.j0 + b.nj);
    assert!(b.nj == 0 || b.v.len() >= (b.nj - 1) * b.ld_v + b.width);
    assert!(out.len() >= b.n * b.width);
    dispatch!(level, pv_accumulate(b, out))
}

/// Whether this level multiplies a bf16 cache's scores as bf16 pairs (`vdpbf16ps`, AVX-512
/// BF16), given `ScoresTile::q16`.
pub fn has_bf16_dot(level: Level) -> bool {
    #[cfg(target_arch = "x86_64")]
    if matches!(level, Level::Avx512 | Level::Avx512Vnni | Level::Amx) {
        return std::arch::is_x86_feature_detected!("avx512bf16");
    }
    let _ = level;
    false
}

/// A bf16 prefill product with activations rounded to bf16 (where `has_bf16_dot`):
/// `rows` stored bf16 weight rows, `rb` bytes apart from `w`, against `n` tokens of `k`
/// values in `x16` (bf16 bits, see `round_bf16`), writing `y[t * m + r0 + r]`.
pub struct Bf16Gemm<'a> {
    pub w: &'a [u8],
    pub rb: usize,
    pub rows: usize,
    pub k: usize,
    pub x16: &'a [u16],
    pub n: usize,
    pub m: usize,
    pub r0: usize,
}

/// `x` rounded to bf16 (to nearest, ties to even), appended to `out`.
pub fn round_bf16(level: Level, x: &[f32], out: &mut Vec<u16>) {
    #[cfg(target_arch = "x86_64")]
    if has_bf16_dot(level) {
        // SAFETY: AVX-512 BF16 is present (checked above).
        return unsafe { x86::avx512_bf16gemm::round_bf16(x, out) };
    }
    let _ = level;
    out.extend(x.iter().map(|&v| half::bf16::from_f32(v).to_bits()));
}

/// A row of `wide.len()` values widened (as `widen`) and rounded to bf16 (as `round_bf16`),
/// appended to `out`; `wide` is scratch. Where the CPU has AVX-512 BF16, Q8_0, Q4_K and
/// Q6_K rows round as they decode, without the f32 row in between.
pub fn widen_bf16(level: Level, fmt: &Fmt<'_>, src: &[u8], wide: &mut [f32], out: &mut Vec<u16>) {
    #[cfg(target_arch = "x86_64")]
    if has_bf16_dot(level) && matches!(fmt, Fmt::Q8_0 | Fmt::Q4K | Fmt::Q6K) {
        // SAFETY: AVX-512 BF16 is present (checked above).
        return unsafe { x86::avx512_bf16gemm::widen_bf16(fmt, src, wide.len(), out) };
    }
    widen(level, fmt, src, wide);
    round_bf16(level, wide, out);
}

/// # Safety
/// `y` must be valid for writes at every `t * m + r0 + r` (`t < n`, `r < rows`), and no
/// other thread may access those elements meanwhile.
pub unsafe fn bf16_gemm(level: Level, g: &Bf16Gemm<'_>, y: *mut f32) {
    assert!(g.rb >= 2 * g.k && g.rb.is_multiple_of(2) && g.x16.len() >= g.n * g.k);
    assert!(g.rows == 0 || g.w.len() >= (g.rows - 1) * g.rb + 2 * g.k);
    assert!(g.r0 + g.rows <= g.m);
    // the x86 kernel reads the rows as u16: they must be 2-aligned
    assert!((g.w.as_ptr() as usize).is_multiple_of(2));
    #[cfg(target_arch = "x86_64")]
    if has_bf16_dot(level) {
        // SAFETY: AVX-512 BF16 is present (checked above); the caller vouches for y.
        return unsafe { x86::avx512_bf16gemm::bf16_gemm(g, y) };
    }
    let _ = level;
    unsafe { portable::bf16_gemm(g, y) }
}

/// bf16 values (as `u16` bits) as the bytes the tile kernels take their A side from.
pub fn u16_bytes(v: &[u16]) -> &[u8] {
    // SAFETY: any u16 is two initialised bytes, at u16 alignment.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), 2 * v.len()) }
}

/// f32 values as their bytes (for addresses to fetch ahead).
pub fn f32_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: any f32 is four initialised bytes, at f32 alignment.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), 4 * v.len()) }
}

/// Whether this level runs prefill products on AMX tiles (`amx_bf16_gemm`).
pub fn has_amx(level: Level) -> bool {
    level == Level::Amx
}

/// 32 cached positions for the AMX prefill attention's tiles: `rows[i]` is position `i`'s
/// cached row (at least `r` values; `None` past the context, as zeros), of which the first
/// `kp` (a multiple of 32; zeros past the row) are keys and the first `r` (a multiple of
/// 16) values.
pub struct KvGroup<'a> {
    pub rows: [Option<&'a [u16]>; 32],
    pub r: usize,
    pub kp: usize,
    /// Positions a packed block holds (the values' tile stride is `16 * kb`).
    pub kb: usize,
}

/// Packs a [`KvGroup`] as `amx_bf16_gemm`'s B side: the keys as two tiles of 16 positions,
/// `[2][kp / 2][16][2]` from `keys` (each pair of key values, the 16 positions' two); the
/// values per tile of 16 latent columns `c` at `values + c * 16 * kb`, as 16 pairs of
/// positions `[16][16][2]` (each pair of positions, the 16 columns' two).
///
/// # Safety
/// `keys` is valid for `32 * kp` writes, `values` for `(r / 16 - 1) * 16 * kb + 512`.
pub unsafe fn amx_pack_kv(level: Level, g: &KvGroup<'_>, keys: *mut u16, values: *mut u16) {
    assert!(has_amx(level), "no AMX kernel at level {level}");
    assert!(g.kp.is_multiple_of(32) && g.r.is_multiple_of(16));
    assert!(g.rows.iter().flatten().all(|row| row.len() >= g.r));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512 BW is part of the AMX level; the caller vouches for the destinations.
    unsafe {
        x86::amx::pack_kv(g, keys, values)
    }
    // (has_amx holds only on x86-64)
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (keys, values);
}

/// Tokens (`[n][k]`, `k` a multiple of 32) rounded to bf16 as `round_bf16` rounds them and
/// packed for `amx_bf16_gemm`: for each tile of 16 tokens (the last padded with zeros) and
/// each pair of columns, the 16 tokens' two values: `[n / 16][k / 2][16][2]`, so a tile's B
/// side over 32 columns is 1 KiB in a row. `out` holds exactly the tiles; every value of it
/// is written.
pub fn amx_pack_acts(level: Level, x: &[f32], k: usize, out: &mut [u16]) {
    assert!(k.is_multiple_of(32) && x.len().is_multiple_of(k));
    let n = x.len() / k;
    assert_eq!(
        out.len(),
        n.div_ceil(16) * 16 * k,
        "amx_pack_acts: whole tiles"
    );
    #[cfg(target_arch = "x86_64")]
    if has_bf16_dot(level) {
        // SAFETY: AVX-512 BF16 is present (checked above); shapes as asserted.
        return unsafe { x86::avx512_bf16gemm::amx_pack_acts(x, k, out) };
    }
    let _ = level;
    out.fill(0);
    for (t, row) in x.chunks_exact(k).enumerate() {
        let base = t / 16 * 16 * k + 2 * (t % 16);
        for (c, pair) in row.chunks_exact(2).enumerate() {
            for (d, &v) in out[base + 32 * c..][..2].iter_mut().zip(pair) {
                *d = half::bf16::from_f32(v).to_bits();
            }
        }
    }
}

/// An AMX bf16 prefill product: `rows` (a multiple of 16) bf16 weight rows (a bf16 file's
/// as stored, with `--act-type bf16`, or block-quantized rows widened and rounded by
/// `widen_bf16`), `rb` bytes apart from `w`, against `n` tokens of `k` values (a multiple of
/// 32) packed by `amx_pack_acts` into `acts`, writing `y[t * m + r0 + r]`. (`Bf16Gemm`'s
/// fields, with the tokens packed rather than in rows.)
///
/// `acts_k` is the packed tokens' length (their tiles' stride, at least `k`: a product may
/// run over the first `k` values of longer tokens). With `rows_out`, the sums go to
/// `y[(r0 + r) * m + t]` instead, straight from the tiles (`n` then a multiple of 16):
/// attention's products, whose A side is the query or probability rows.
pub struct AmxBf16Gemm<'a> {
    pub w: &'a [u8],
    pub rb: usize,
    pub rows: usize,
    pub k: usize,
    pub acts: &'a [u16],
    pub acts_k: usize,
    pub n: usize,
    pub m: usize,
    pub r0: usize,
    pub rows_out: bool,
}

/// Decode scores on AMX tiles over a bf16 cache: for each group of 16 cached positions
/// whose rows lie `row` values apart from `kv[firsts[g]]` on, and each query lane `i`,
/// `s[(16 g + j) * lanes + i]` = row `j` of the group · query `i`, over the first `k`
/// values (a multiple of 32, at most `row`). The queries are packed as `amx_pack_acts`
/// packs tokens (`[lanes / 16][k / 2][16][2]`). A group may run past the positions the
/// caller wants (the last, partial one): those rows must still be inside `kv`, and their
/// scores are written.
///
/// `ahead`: the next call's groups (their first rows), fetched into L2 meanwhile, spread
/// over the call's steps. A hint: never read, never faults.
pub struct AmxScores<'a> {
    pub kv: &'a [u16],
    pub row: usize,
    pub firsts: &'a [usize],
    pub k: usize,
    pub q: &'a [u16],
    pub lanes: usize,
    pub ahead: &'a [usize],
}

pub fn amx_scores(level: Level, g: &AmxScores<'_>, s: &mut [f32]) {
    assert!(has_amx(level), "no AMX kernel at level {level}");
    assert!(g.k.is_multiple_of(32) && g.k <= g.row && g.lanes.is_multiple_of(16));
    assert!(g.q.len() >= g.lanes * g.k && s.len() >= 16 * g.firsts.len() * g.lanes);
    assert!(g.firsts.iter().all(|&f| f + 15 * g.row + g.k <= g.kv.len()));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the level is supported; bounds as asserted.
    unsafe {
        x86::amx::scores(g, s.as_mut_ptr())
    }
}

/// Rows of an 8-bit cache, at value offsets `offs` (row starts), as bf16 rows one after
/// another in `out` (`r + p` values each): as [`crate::kv_q8`] defines them. An attention
/// converts a tile of them and attends over that as over a bf16 cache.
pub fn q8_rows_to_bf16(
    level: Level,
    f: &crate::kv_q8::Q8Rows<'_>,
    offs: &[usize],
    out: &mut [u16],
) {
    let (r, p) = (f.r, f.p);
    let rb = crate::kv_q8::row_bytes(r, p);
    assert!(out.len() >= offs.len() * (r + p));
    assert!(offs.iter().all(|&o| f.byte_offset(o) + rb <= f.bytes.len()));
    #[cfg(target_arch = "x86_64")]
    if has_bf16_dot(level) {
        // SAFETY: AVX-512 BF16 (and F16C with it) was detected; bounds as asserted.
        unsafe { x86::avx512_bf16gemm::q8_rows_to_bf16(f, offs, out) };
        return;
    }
    let _ = level;
    for (&o, dst) in offs.iter().zip(out.chunks_exact_mut(r + p)) {
        let b = f.byte_offset(o);
        crate::kv_q8::row_to_bf16(&f.bytes[b..b + rb], r, p, dst);
    }
}

/// [`q8_rows_to_bf16`]'s rows widened on to f32 (`out[j * (r + p)..]` holds the row at
/// `offs[j]`): exactly the values a bf16 cache's rows widen to, in one pass, for the
/// levels that multiply f32 (AVX2). The AVX2 scores took an 8-bit tile through bf16 rows
/// by a scalar loop and then widened them again.
pub fn q8_rows_to_f32(level: Level, f: &crate::kv_q8::Q8Rows<'_>, offs: &[usize], out: &mut [f32]) {
    let (r, p) = (f.r, f.p);
    let rb = crate::kv_q8::row_bytes(r, p);
    assert!(out.len() >= offs.len() * (r + p));
    assert!(offs.iter().all(|&o| f.byte_offset(o) + rb <= f.bytes.len()));
    #[cfg(target_arch = "x86_64")]
    if level != Level::Scalar {
        // SAFETY: every level above Scalar has AVX2, FMA and F16C; bounds as asserted.
        unsafe { x86::avx2_attention::q8_rows_to_f32(f, offs, out) };
        return;
    }
    let _ = level;
    for (&o, dst) in offs.iter().zip(out.chunks_exact_mut(r + p)) {
        let b = f.byte_offset(o);
        for (i, v) in dst.iter_mut().enumerate() {
            *v = f32::from_bits((crate::kv_q8::value(&f.bytes[b..b + rb], r, i) as u32) << 16);
        }
    }
}

/// The most positions an [`amx_pv`] call takes.
pub const AMX_PV_POSITIONS: usize = 128;

/// A decode tile's probabilities times its cached latents on AMX tiles, over a bf16 cache:
/// `o[i * r + c] += Σ_j p[i][j] · v[j][c]` for `rows` query rows (a multiple of 16) and the
/// first `r` values (a multiple of 32) of the cached rows at `offs` (at most
/// [`AMX_PV_POSITIONS`]), with `p`
/// as `amx_pack_probs` packs it.
pub struct AmxPv<'a> {
    pub kv: &'a [u16],
    pub offs: &'a [usize],
    pub p: &'a [u16],
    pub rows: usize,
    pub r: usize,
}

/// The probabilities of a decode tile of `nj` positions (lane-wise as the split path keeps
/// them, `p[j * lanes + i]`) rounded to bf16 as `rows` rows of `nj` rounded up to 32
/// (zeros past `nj`), into `p16`: the A side of `amx_pv`.
pub fn amx_pack_probs(
    level: Level,
    p: &[f32],
    lanes: usize,
    rows: usize,
    nj: usize,
    p16: &mut [u16],
) {
    assert!(has_amx(level), "no AMX kernel at level {level}");
    assert!(rows.is_multiple_of(16) && rows <= lanes && p.len() >= nj * lanes);
    assert!(p16.len() >= rows * nj.next_multiple_of(32));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512 BW is part of the AMX level; bounds as asserted.
    unsafe {
        x86::avx512_bf16gemm::amx_pack_probs(p, lanes, rows, nj, p16)
    }
}

pub fn amx_pv(level: Level, g: &AmxPv<'_>, o: &mut [f32]) {
    assert!(has_amx(level), "no AMX kernel at level {level}");
    let (nj, kpos) = (g.offs.len(), g.offs.len().next_multiple_of(32));
    assert!(nj > 0 && nj <= AMX_PV_POSITIONS);
    assert!(g.rows.is_multiple_of(16) && g.r.is_multiple_of(32));
    assert!(g.offs.iter().all(|&o| o + g.r <= g.kv.len()));
    assert!(g.p.len() >= g.rows * kpos && o.len() >= g.rows * g.r);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the level is supported; bounds as asserted.
    unsafe {
        x86::amx::pv(g, o.as_mut_ptr())
    }
}

/// Only where `has_amx(level)`.
///
/// # Safety
/// `y` must be valid for writes at every `t * m + r0 + r` (`t < n`, `r < rows`; with
/// `rows_out`, every `(r0 + r) * m + t`), and no other thread may access those elements
/// meanwhile.
pub unsafe fn amx_bf16_gemm(level: Level, g: &AmxBf16Gemm<'_>, y: *mut f32) {
    assert!(has_amx(level), "no AMX kernel at level {level}");
    assert!(g.rows.is_multiple_of(16) && g.k.is_multiple_of(32) && g.rb >= 2 * g.k);
    assert!(g.rows == 0 || g.w.len() >= (g.rows - 1) * g.rb + 2 * g.k);
    assert!(g.acts_k >= g.k && g.acts.len() >= g.n.div_ceil(16) * 16 * g.acts_k);
    if g.rows_out {
        assert!(g.n.is_multiple_of(16) && g.n <= g.m);
    } else {
        assert!(g.r0 + g.rows <= g.m);
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the level is supported (checked when it was chosen); the caller vouches for y.
    unsafe {
        x86::amx::bf16_gemm(g, y)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (g, y);
}

/// `gate = silu(gate) * up` (SwiGLU's join), over the shorter length. The x86 levels take
/// `e^x` from the attention's polynomial (within a few ulp); the others call libm's.
pub fn silu_mul(level: Level, gate: &mut [f32], up: &[f32]) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a level is only ever selected when `Level::supported` said so.
        Level::Avx512 | Level::Avx512Vnni | Level::Amx => unsafe {
            x86::avx512::silu_mul(gate, up)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Level::Avx2 => unsafe { x86::avx2::silu_mul(gate, up) },
        _ => portable::silu_mul(gate, up),
    }
}
