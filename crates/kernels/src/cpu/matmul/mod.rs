//! Matrix products over stored weights, split across the pool by output rows.
//!
//! Few tokens (decode): each weight row is read once from memory and dotted straight from
//! its stored encoding with every token; the op is bound by memory bandwidth. Many tokens
//! (prefill): a panel of rows is widened to f32 once into a per-thread buffer and a
//! register-tiled kernel multiplies it with every token; the op is bound by FMA throughput.
//! The prefill's other forms: block formats in int8 against quantized tokens (AVX-512
//! VNNI), bf16 rows against tokens rounded to bf16 (`--act-type bf16`), and on AMX the
//! block formats' rows rounded to bf16 for the bf16 tiles.
//!
//! Here the products with W as stored (`y = x · Wᵀ`: dense layers, heads, pairs); the
//! transposed products (`y = x · W`, MLA's key half) are in `transposed`, the routed
//! experts' grouped products in `experts`.

use std::cell::RefCell;

use super::dispatch::Level;
use super::pool::{Disjoint, ThreadPool};
use super::simd::{self, Fmt, GemmPanel, QActs, qpanel};
use crate::backend::{Heads, head_by_head};
use crate::matrix::{Matrix, Rows};

mod experts;
mod transposed;

pub use experts::{matmul_experts, matmul_experts_sets};
pub use transposed::{matmul_t, matmul_t_heads, matmul_t_shared};

/// From this many tokens on, widening a panel once beats dotting each row per token.
const GEMM_MIN_TOKENS: usize = 4;
/// Rows per widened panel: 16 rows of a 7168-wide V3 row are 448 KiB, within L2.
const PANEL_ROWS: usize = 16;
/// Bytes of bf16 rows an AMX share widens at a time: they stay in L2 while every tile of
/// tokens passes over them.
const DEQUANT_BLOCK_BYTES: usize = 256 * 1024;
/// Output rows per share are a multiple of this, so shares never write one cache line.
const ROW_ALIGN: usize = 16;

thread_local! {
    /// The caller's buffer for the serial small-`n` product; grows once, then is reused.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The caller's activations rounded to bf16 for the bf16 prefill kernel; grows once.
    static X16: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
    /// Those rounded activations packed for the AMX bf16 kernel; grows once.
    static AMX_ACTS: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
    /// A pool thread's block of block-quantized rows widened (one row of f32) and rounded to
    /// bf16 for the AMX tiles; grows once.
    static WIDE_ROWS: RefCell<(Vec<f32>, Vec<u16>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// The caller's activations rearranged for the bf16 decode kernel; grows once.
    static PAIRS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The caller's quantized activations for int8 products; grows once, then is reused.
    static QSCRATCH: RefCell<QActs> = RefCell::new(QActs::default());
    /// One head's gathered inputs and outputs when many tokens take the panel path.
    static HEAD_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A pool thread's packed panel for the int8 prefill kernel.
    static QPANEL: RefCell<qpanel::QPanel> = RefCell::new(qpanel::QPanel::default());
}

fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0.0);
        }
        f(&mut s[..len])
    })
}

/// A few-token product's activations: f32 rows, or rows quantized to int8 for a format
/// with an int8 product.
enum Acts<'a> {
    F32 {
        x: &'a [f32],
        k: usize,
    },
    Q(&'a QActs),
    /// bf16 weights: rows of `x` with their `simd::bf16_pairs` (the whole 32-blocks of
    /// each row)
    Bf16 {
        x: &'a [f32],
        pairs: &'a [f32],
        k: usize,
    },
}

impl Acts<'_> {
    /// Stored row `src` (encoded as `fmt`) · activation row `i`.
    #[inline(always)]
    fn dot(&self, level: Level, fmt: &Fmt<'_>, src: &[u8], i: usize) -> f32 {
        match self {
            Acts::F32 { x, k } => simd::dot_row(level, fmt, src, &x[i * k..(i + 1) * k]),
            Acts::Q(q) => simd::dot_row_q(level, fmt, src, &q.row(i)),
            // (bf16 rows always come as runs, which `dot_run` takes four at a time)
            Acts::Bf16 { x, k, .. } => simd::dot_row(level, fmt, src, &x[i * k..(i + 1) * k]),
        }
    }
}

/// Rows per run of `Acts::dot_run` for two or three tokens: every token takes the run
/// while it is in L2 (64 rows of 7168 Q8_0 values are 490 KB), so a few-token product
/// still reads each weight from memory once.
const RUN_ROWS: usize = 64;

impl Acts<'_> {
    /// Rows `rows` of `w` · activation rows: for each `t < ntok`, `tok(t)` is the
    /// activation row and where row `rows.start`'s product goes in `out` (the next rows' follow).
    ///
    /// # Safety
    /// The caller owns `out[o..o + len]` for every `o` that `tok` gives.
    #[inline(always)]
    unsafe fn dot_run(
        &self,
        level: Level,
        w: &Rows<'_>,
        rows: std::ops::Range<usize>,
        ntok: usize,
        tok: impl Fn(usize) -> (usize, usize),
        out: *mut f32,
    ) {
        let (r0, len) = (rows.start, rows.len());
        let mut c = 0;
        while c < len {
            // one token: the whole run at once, so the kernel's four streams are long
            let cl = if ntok == 1 {
                len
            } else {
                (len - c).min(RUN_ROWS)
            };
            for t in 0..ntok {
                let (i, o) = tok(t);
                // SAFETY: the caller owns these elements.
                let dst = unsafe { std::slice::from_raw_parts_mut(out.add(o + c), cl) };
                match (self, w.run(r0 + c, cl)) {
                    (Acts::Q(q), Some((bytes, rb))) => {
                        simd::dot_rows_q(level, &w.fmt(), bytes, rb, &q.row(i), dst)
                    }
                    (Acts::Bf16 { x, pairs, k }, Some((bytes, rb))) => {
                        let full = k / 32 * 32;
                        let (x, pairs) = (&x[i * k..(i + 1) * k], &pairs[i * full..(i + 1) * full]);
                        simd::dot_rows_bf16_pairs(level, bytes, rb, x, pairs, dst)
                    }
                    (Acts::F32 { x, k }, Some((bytes, rb)))
                        if matches!(w.fmt(), Fmt::F32 | Fmt::F16) =>
                    {
                        let x = &x[i * k..(i + 1) * k];
                        simd::dot_rows_wide(level, &w.fmt(), bytes, rb, x, dst)
                    }
                    (Acts::F32 { x, k }, None) => {
                        let run = w.fp8_run(r0 + c, cl).expect("only FP8 rows have no run");
                        simd::dot_rows_fp8(level, &run, &x[i * k..(i + 1) * k], dst)
                    }
                    _ => {
                        // rows from four streams (i, q + i, 2q + i, 3q + i), as the
                        // quantized kernels take them: one stream held a core to ~10 GB/s
                        // from memory here, four let the L2's prefetcher run
                        for j in simd::four_stream_order(cl) {
                            let (fmt, bytes) = w.get(r0 + c + j);
                            dst[j] = self.dot(level, &fmt, bytes, i);
                        }
                    }
                }
            }
            c += cl;
        }
    }
}

/// Run `f` with the rows of `x` (`k` values each) as `fmt`'s products want them: each row
/// quantized once here, so every weight row's product then runs on bytes.
fn with_acts<R>(
    level: Level,
    fmt: Fmt<'_>,
    x: &[f32],
    k: usize,
    f: impl FnOnce(&Acts<'_>) -> R,
) -> R {
    if matches!(fmt, Fmt::BF16) && simd::has_bf16_pairs(level) {
        return PAIRS.with(|p| {
            let mut p = p.borrow_mut();
            p.clear();
            for xr in x.chunks_exact(k) {
                simd::bf16_pairs(xr, &mut p);
            }
            f(&Acts::Bf16 { x, pairs: &p, k })
        });
    }
    match fmt.act_quant() {
        Some(kind) => QSCRATCH.with(|q| {
            let mut q = q.borrow_mut();
            q.quantize(kind, x, k);
            f(&Acts::Q(&q))
        }),
        None => f(&Acts::F32 { x, k }),
    }
}

/// `x` (`[n][k]`) rounded to bf16 for the bf16 prefill kernels: for AMX tiles packed
/// (`amx_acts`, and `x16` is empty), else in rows (`x16`).
fn with_amx_acts<R>(
    level: Level,
    pool: &ThreadPool,
    amx: bool,
    x: &[f32],
    k: usize,
    f: impl FnOnce(&[u16], &[u16]) -> R,
) -> R {
    X16.with(|x16| {
        let mut x16 = x16.borrow_mut();
        x16.clear();
        AMX_ACTS.with(|a| {
            let mut a = a.borrow_mut();
            if amx {
                // the tokens in pairs, 16 side by side: the tiles' B side, a tile of 16
                // tokens per chunk (every value is written: nothing to clear first)
                let n = x.len() / k;
                let tiles = n.div_ceil(16);
                a.resize(tiles * 16 * k, 0);
                let dst = Disjoint::new(&mut a[..]);
                pool.for_chunks(tiles, &|b| {
                    let rows = &x[16 * b * k..(16 * b + 16).min(n) * k];
                    // SAFETY: tile b's values are this chunk's alone.
                    let out = unsafe { dst.slice(16 * b * k, 16 * k) };
                    simd::amx_pack_acts(level, rows, k, out);
                });
            } else {
                a.clear();
                simd::round_bf16(level, x, &mut x16);
            }
            f(&x16, &a)
        })
    })
}

/// `y[n, w.rows] = x[n, w.cols] · Wᵀ`.
/// `bf16`: bf16 weights' prefill products take activations rounded to bf16 (the caller
/// checked `simd::has_bf16_dot`).
pub fn matmul(level: Level, bf16: bool, pool: &ThreadPool, x: &[f32], w: &Matrix, y: &mut [f32]) {
    let (m, k) = (w.rows, w.cols);
    let n = x.len() / k;
    assert!(
        x.len() == n * k && y.len() == n * m,
        "matmul shapes: x {} y {} for [{m}, {k}]",
        x.len(),
        y.len()
    );
    let out = Disjoint::new(y);
    let w = w.rows();
    if n < GEMM_MIN_TOKENS {
        decode_products(level, pool, x, n, k, &[(w, m, out)]);
        return;
    }
    // AMX tiles take whole panels of 16 rows and steps of 32 values
    let amx = simd::has_amx(level) && k.is_multiple_of(32) && m.is_multiple_of(16);
    if amx && w.fmt().act_quant().is_some() {
        // Block-quantized rows on AMX: each share widens a block of its rows once and
        // rounds them to bf16, and the bf16 tiles multiply them with the tokens rounded to
        // bf16; the sums stay in the tiles over the whole of k. (The int8 tiles needed a
        // store and a scaling per group of 32 values, each group having its own scale,
        // which cost more than the tile op: q4_k_m pp512 went from 296-322 to 383-412
        // tok/s.)
        // Both roundings are finer than the int8 activations the other levels use (2^-9
        // relative against 1/254 of a block's largest value): docs/performance.md has the
        // KL against bf16.
        return with_amx_acts(level, pool, true, x, k, |_, acts| {
            pool.for_ranges(m, ROW_ALIGN, &|rows| {
                WIDE_ROWS.with(|s| {
                    let mut s = s.borrow_mut();
                    let (wide, w16) = &mut *s;
                    wide.resize(k, 0.0);
                    let per = (DEQUANT_BLOCK_BYTES / (2 * k)).max(16) / 16 * 16;
                    let mut r0 = rows.start;
                    while r0 < rows.end {
                        let len = (rows.end - r0).min(per);
                        w16.clear();
                        for r in r0..r0 + len {
                            let (fmt, bytes) = w.get(r);
                            simd::widen_bf16(level, &fmt, bytes, wide, w16);
                        }
                        let bytes = simd::u16_bytes(w16);
                        let g = simd::AmxBf16Gemm {
                            w: bytes,
                            rb: 2 * k,
                            rows: len,
                            k,
                            acts,
                            acts_k: k,
                            n,
                            m,
                            r0,
                            rows_out: false,
                        };
                        // SAFETY: rows r0..r0 + len belong to this share; the pointer
                        // covers n * m.
                        unsafe { simd::amx_bf16_gemm(level, &g, out.ptr()) };
                        r0 += len;
                    }
                })
            })
        });
    }
    if bf16 && matches!(w.fmt(), Fmt::BF16) {
        // bf16 prefill: the rows as stored against the tokens rounded once to bf16 (the
        // AVX-512 kernel reads the rows as u16, so they must be 2-aligned)
        if let Some((bytes, rb)) = w
            .run(0, m)
            .filter(|(b, _)| amx || (b.as_ptr() as usize).is_multiple_of(2))
        {
            return with_amx_acts(level, pool, amx, x, k, |x16, acts| {
                pool.for_ranges(m, ROW_ALIGN, &|rows| {
                    let (w, r0) = (&bytes[rows.start * rb..], rows.start);
                    let len = rows.len();
                    // SAFETY (both): rows `rows` belong to this share; the pointer covers
                    // n * m.
                    if amx {
                        let g = simd::AmxBf16Gemm {
                            w,
                            rb,
                            rows: len,
                            k,
                            acts,
                            acts_k: k,
                            n,
                            m,
                            r0,
                            rows_out: false,
                        };
                        unsafe { simd::amx_bf16_gemm(level, &g, out.ptr()) };
                    } else {
                        let g = simd::Bf16Gemm {
                            w,
                            rb,
                            rows: len,
                            k,
                            x16,
                            n,
                            m,
                            r0,
                        };
                        unsafe { simd::bf16_gemm(level, &g, out.ptr()) };
                    }
                });
            });
        }
    }
    if let Some(kind) = w
        .fmt()
        .act_quant()
        .filter(|_| simd::has_qgemm(level, &w.fmt()))
    {
        // int8 prefill: each share packs 16 rows at a time and runs every token over them
        QSCRATCH.with(|q| {
            let mut q = q.borrow_mut();
            q.quantize(kind, x, k);
            let acts = &*q;
            let fmt = w.fmt();
            pool.for_ranges(m, ROW_ALIGN, &|rows| {
                QPANEL.with(|p| {
                    let mut p = p.borrow_mut();
                    let mut r0 = rows.start;
                    while r0 < rows.end {
                        let pr = (rows.end - r0).min(qpanel::PANEL);
                        p.pack(level, &fmt, pr, k, |i| w.get(r0 + i).1);
                        let g = simd::QGemm {
                            panel: &p,
                            acts,
                            kind,
                            tokens: 0..n,
                            m,
                            r0,
                        };
                        // SAFETY: rows r0..r0+pr belong to this share; the pointer covers n * m.
                        unsafe { simd::qgemm_panel(level, &g, out.ptr()) };
                        r0 += pr;
                    }
                })
            });
        });
        return;
    }
    pool.for_ranges_scratch(m, ROW_ALIGN, PANEL_ROWS * k, &|rows, panel| {
        {
            let mut r0 = rows.start;
            while r0 < rows.end {
                let pr = (rows.end - r0).min(PANEL_ROWS);
                for i in 0..pr {
                    let (fmt, bytes) = w.get(r0 + i);
                    simd::widen(level, &fmt, bytes, &mut panel[i * k..(i + 1) * k]);
                }
                let g = GemmPanel {
                    panel,
                    rows: pr,
                    k,
                    x,
                    n,
                    m,
                    r0,
                };
                // SAFETY: rows r0..r0+pr belong to this share; the pointer covers n * m.
                unsafe { simd::gemm_panel16(level, &g, out.ptr()) };
                r0 += pr;
            }
        }
    });
}

/// Decode-sized products of the same `n` rows of `x` (`k` values each) through matrices
/// whose rows take the same activations, `(rows, m, out)` each: one parallel region over
/// all their rows, with `x` prepared once.
fn decode_products(
    level: Level,
    pool: &ThreadPool,
    x: &[f32],
    n: usize,
    k: usize,
    mats: &[(Rows<'_>, usize, Disjoint)],
) {
    let total: usize = mats.iter().map(|&(_, m, _)| m).sum();
    with_acts(level, mats[0].0.fmt(), x, k, |acts| {
        pool.for_shares(total, ROW_ALIGN, &|vs| {
            // the share's rows, one run per matrix it reaches
            let mut first = 0;
            for &(w, m, out) in mats {
                let lo = vs.start.clamp(first, first + m) - first;
                let hi = vs.end.clamp(first, first + m) - first;
                first += m;
                if lo < hi {
                    // SAFETY: rows lo..hi of this matrix belong to this share alone;
                    // t * m + r < n * m.
                    unsafe { acts.dot_run(level, &w, lo..hi, n, |t| (t, t * m + lo), out.ptr()) };
                }
            }
        });
    });
}

/// Two products of the same rows, `ys[i] = x · ws[i]ᵀ`: in decode, where the weights take
/// the same activations, one parallel region over both matrices' rows with `x` prepared
/// once; otherwise one `matmul` each.
pub fn matmul_pair(
    level: Level,
    bf16: bool,
    pool: &ThreadPool,
    x: &[f32],
    ws: [&Matrix; 2],
    ys: [&mut [f32]; 2],
) {
    let [wa, wb] = ws;
    let [ya, yb] = ys;
    let k = wa.cols;
    let n = x.len() / k.max(1);
    let (ra, rb) = (wa.rows(), wb.rows());
    if wb.cols != k || n >= GEMM_MIN_TOKENS || x.len() != n * k || !same_fmt(&ra.fmt(), &rb.fmt()) {
        matmul(level, bf16, pool, x, wa, ya);
        matmul(level, bf16, pool, x, wb, yb);
        return;
    }
    let (ma, mb) = (wa.rows, wb.rows);
    assert!(
        ya.len() == n * ma && yb.len() == n * mb,
        "matmul_pair shapes: y {} and {} for [{ma}, {k}] and [{mb}, {k}]",
        ya.len(),
        yb.len()
    );
    decode_products(
        level,
        pool,
        x,
        n,
        k,
        &[(ra, ma, Disjoint::new(ya)), (rb, mb, Disjoint::new(yb))],
    );
}

/// The tokens of a per-head product, `x` `[n, heads, k]` into `y` `[n, heads, m]`, after
/// checking the shapes and that every head's `heads.rows` rows lie within `w`.
fn head_tokens(
    what: &str,
    x: &[f32],
    y: &[f32],
    w: &Matrix,
    heads: Heads,
    k: usize,
    m: usize,
) -> usize {
    let h = heads.count;
    let n = x.len().checked_div(h * k).unwrap_or(0);
    assert!(
        x.len() == n * h * k && y.len() == n * h * m,
        "{what} shapes: x {} y {} for {h} heads of [{k}] -> [{m}]",
        x.len(),
        y.len()
    );
    assert!(
        h == 0 || heads.first + (h - 1) * heads.stride + heads.rows <= w.rows,
        "{what}: head rows past the matrix's {} rows",
        w.rows
    );
    n
}

/// Per-head products (see `Backend::matmul_heads`). Few tokens: all heads' rows are one
/// parallel region; many: each head gathers its rows and runs the panel path.
pub fn matmul_heads(
    level: Level,
    bf16: bool,
    pool: &ThreadPool,
    x: &[f32],
    w: &Matrix,
    heads: Heads,
    y: &mut [f32],
) {
    let (k, m, h) = (w.cols, heads.rows, heads.count);
    let n = head_tokens("matmul_heads", x, y, w, heads, k, m);
    if n == 0 || h == 0 || m == 0 {
        return;
    }
    if n >= GEMM_MIN_TOKENS {
        HEAD_SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let (xg, yg) = scratch_pair(&mut s, n * k, n * m);
            head_by_head(x, w, heads, y, xg, yg, &mut |x, w, y| {
                matmul(level, bf16, pool, x, w, y)
            });
        });
        return;
    }
    let out = Disjoint::new(y);
    let rows = w.rows();
    // x is n * h rows of k: row t * h + g is token t's input to head g
    with_acts(level, rows.fmt(), x, k, |acts| {
        pool.for_shares(h * m, ROW_ALIGN, &|vs| {
            // the share's rows, one run per head
            let mut v = vs.start;
            while v < vs.end {
                let (g, r) = (v / m, v % m);
                let len = (m - r).min(vs.end - v);
                let tok = |t: usize| (t * h + g, (t * h + g) * m + r);
                let r0 = heads.first + g * heads.stride + r;
                // SAFETY: (g, r..r + len) belongs to this share alone; i * m + r < n * h * m.
                unsafe { acts.dot_run(level, &rows, r0..r0 + len, n, tok, out.ptr()) };
                v += len;
            }
        });
    });
}

/// Formats whose rows take the same activations (FP8 is never batched across experts).
fn same_fmt(a: &Fmt<'_>, b: &Fmt<'_>) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// Two disjoint buffers of `a` and `b` floats from one growing vector.
fn scratch_pair(v: &mut Vec<f32>, a: usize, b: usize) -> (&mut [f32], &mut [f32]) {
    if v.len() < a + b {
        v.resize(a + b, 0.0);
    }
    let (x, y) = v.split_at_mut(a);
    (x, &mut y[..b])
}
