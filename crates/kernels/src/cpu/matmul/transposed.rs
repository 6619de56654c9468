//! Transposed products, `y[n, w.cols] = x[n, w.rows] · W`: MLA's key half of `wkv_b`
//! applied to queries (absorbed form) or to cached latents (expanded form).

use std::cell::RefCell;

use super::super::dispatch::Level;
use super::super::pool::{Disjoint, ThreadPool};
use super::super::simd::{self, Fmt, GemmPanel};
use super::{
    GEMM_MIN_TOKENS, HEAD_SCRATCH, PANEL_ROWS, ROW_ALIGN, head_tokens, scratch_pair, with_scratch,
};
use crate::backend::{Heads, head_by_head_shared, head_by_head_t};
use crate::matrix::{Matrix, Rows};

thread_local! {
    /// `amx_matmul_t`'s tokens as bf16 and packed columns.
    static TILE_OPS: RefCell<(Vec<u16>, Vec<u16>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// A share's row of W or run of tokens rounded to bf16 (each thread its own).
    static ROW16: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// `y[n, w.cols] = x[n, w.rows] · W` (a head's q_nope through wkv_b's key half).
/// `bf16` as for [`super::matmul`].
pub fn matmul_t(level: Level, bf16: bool, pool: &ThreadPool, x: &[f32], w: &Matrix, y: &mut [f32]) {
    let (rows, cols) = (w.rows, w.cols);
    let n = x.len() / rows;
    assert!(
        x.len() == n * rows && y.len() == n * cols,
        "matmul_t shapes"
    );
    let w = w.rows();
    if on_tiles(level, bf16, &w, n, cols) {
        return amx_matmul_t(level, pool, x, &[w], y);
    }
    if n < GEMM_MIN_TOKENS {
        y.fill(0.0);
        with_scratch(cols, |row| {
            for r in 0..rows {
                let (fmt, bytes) = w.get(r);
                simd::widen(level, &fmt, bytes, row);
                for t in 0..n {
                    simd::axpy(
                        level,
                        x[t * rows + r],
                        row,
                        &mut y[t * cols..(t + 1) * cols],
                    );
                }
            }
        });
        return;
    }
    // Many tokens: every share widens W once, transposed to [cols, rows], and runs the
    // panel kernel over its own columns with k = rows.
    let out = Disjoint::new(y);
    pool.for_ranges_scratch(cols, ROW_ALIGN, cols + cols * rows, &|cs, buf| {
        let width = cs.len();
        {
            let (row, panel) = buf.split_at_mut(cols);
            for r in 0..rows {
                let (fmt, bytes) = w.get(r);
                simd::widen(level, &fmt, bytes, row);
                for (j, c) in cs.clone().enumerate() {
                    panel[j * rows + r] = row[c];
                }
            }
            let mut c0 = 0;
            while c0 < width {
                let pr = (width - c0).min(PANEL_ROWS);
                let g = GemmPanel {
                    panel: &panel[c0 * rows..],
                    rows: pr,
                    k: rows,
                    x,
                    n,
                    m: cols,
                    r0: cs.start + c0,
                };
                // SAFETY: columns cs belong to this share; the pointer covers n * cols.
                // (the same panel kernel as `matmul`: the same sums in the same order, so a
                // product stored transposed, as GGUF's attn_k_b, matches the HF layout's
                // bit for bit)
                unsafe { simd::gemm_panel16(level, &g, out.ptr()) };
                c0 += pr;
            }
        }
    });
}

/// Whether a transposed product of `n` tokens over rows `w` (`cols` wide) runs on AMX
/// tiles: where `matmul` would take them (block-quantized rows, or bf16 ones with bf16
/// activations), in whole tiles.
fn on_tiles(level: Level, bf16: bool, w: &Rows<'_>, n: usize, cols: usize) -> bool {
    let tiles = matches!(w.fmt(), Fmt::BF16) && bf16 || w.fmt().act_quant().is_some();
    n >= GEMM_MIN_TOKENS
        && simd::has_amx(level)
        && tiles
        && w.len().is_multiple_of(32)
        && cols.is_multiple_of(16)
}

/// `matmul_t` on AMX tiles, for one W or several side by side (`y[n, ws.len() * cols]`,
/// W number `g`'s products at columns `g * cols..`): each W's columns are the tiles' B
/// side, widened, rounded to bf16 and packed once (`[cols / 16][rows / 2][16][2]`, the
/// Ws one after another, so they are the B side of one wider product), the tokens rounded
/// to bf16 once are the A side as they lie, and the sums go to y's rows straight from the
/// tiles. (For MLA's expanded prefill, the cached latents times each head's `attn_k_b`:
/// through the f32 panel kernel that was a tenth of a pp512 at depth 1024; head by head,
/// rounding the latents again for each head, the keys took 4.5% of a q4_k_m pp512.)
fn amx_matmul_t(level: Level, pool: &ThreadPool, x: &[f32], ws: &[Rows<'_>], y: &mut [f32]) {
    let rows = ws[0].len();
    let n = x.len() / rows;
    let cols = y.len() / n / ws.len();
    let all = cols * ws.len();
    TILE_OPS.with(|t| {
        let mut t = t.borrow_mut();
        let (x16, packed) = &mut *t;
        // W's rows and the tokens, each rounded to bf16 by shares over the pool (on one
        // thread, with the expanded prefill calling this per head, they were a third of
        // the time a pp512's other thread sat idle)
        packed.resize(all * rows, 0);
        let dst = Disjoint::new(&mut packed[..]);
        pool.for_ranges_scratch(ws.len() * rows, 2, cols, &|rs, wide| {
            ROW16.with(|r16| {
                let mut r16 = r16.borrow_mut();
                for i in rs {
                    let (g, r) = (i / rows, i % rows);
                    let (fmt, bytes) = ws[g].get(r);
                    r16.clear();
                    simd::widen_bf16(level, &fmt, bytes, wide, &mut r16);
                    let base = g * cols * rows + 32 * (r / 2) + r % 2;
                    for (j, &v) in r16.iter().enumerate() {
                        // SAFETY: W g's row r's places (pair r / 2, half r % 2) are this
                        // share's.
                        unsafe { *dst.ptr().add(base + j / 16 * 16 * rows + 2 * (j % 16)) = v };
                    }
                }
            })
        });
        x16.resize(n.next_multiple_of(16) * rows, 0);
        x16[n * rows..].fill(0);
        let dst = Disjoint::new(&mut x16[..]);
        pool.for_ranges(n, 16, &|ts| {
            ROW16.with(|r16| {
                let mut r16 = r16.borrow_mut();
                r16.clear();
                simd::round_bf16(level, &x[ts.start * rows..ts.end * rows], &mut r16);
                // SAFETY: token rows ts are this share's.
                unsafe { dst.slice(ts.start * rows, ts.len() * rows) }.copy_from_slice(&r16);
            })
        });
        // whole tiles of 16 token rows straight into y; the last partial one is staged
        let full = n / 16 * 16;
        let (x16, packed) = (&x16[..], &packed[..]);
        let bytes = simd::u16_bytes(x16);
        let gemm = |r0: usize, len: usize, y: *mut f32| {
            let g = simd::AmxBf16Gemm {
                w: &bytes[2 * r0 * rows..],
                rb: 2 * rows,
                rows: len,
                k: rows,
                acts: packed,
                acts_k: rows,
                n: all,
                m: all,
                r0: 0,
                rows_out: true,
            };
            // SAFETY: the callers give y room for len rows of cols, theirs alone.
            unsafe { simd::amx_bf16_gemm(level, &g, y) };
        };
        let out = Disjoint::new(y);
        pool.for_ranges(full, 16, &|rs| {
            // SAFETY: token rows rs are this share's alone.
            gemm(rs.start, rs.len(), unsafe { out.ptr().add(rs.start * all) })
        });
        if full < n {
            let mut staged = vec![0.0f32; 16 * all];
            gemm(full, 16, staged.as_mut_ptr());
            // SAFETY: no share runs now; rows full..n are y's last.
            let tail = unsafe { out.slice(full * all, (n - full) * all) };
            tail.copy_from_slice(&staged[..(n - full) * all]);
        }
    });
}

/// Every head's transposed product of the same rows, side by side (see
/// `Backend::matmul_t_shared`): on AMX one product over all the heads' packed columns,
/// with the rows rounded to bf16 once; elsewhere head by head.
pub fn matmul_t_shared(
    level: Level,
    bf16: bool,
    pool: &ThreadPool,
    x: &[f32],
    w: &Matrix,
    heads: Heads,
    y: &mut [f32],
) {
    let (k, m, h) = (heads.rows, w.cols, heads.count);
    let n = x.len() / k.max(1);
    assert!(
        x.len() == n * k && y.len() == n * h * m,
        "matmul_t_shared shapes"
    );
    if n == 0 || h == 0 {
        return;
    }
    let views: Vec<Matrix> = (0..h)
        .map(|g| w.rows_view(heads.first + g * heads.stride, k))
        .collect();
    let rows: Vec<Rows<'_>> = views.iter().map(|v| v.rows()).collect();
    if on_tiles(level, bf16, &rows[0], n, m) {
        return amx_matmul_t(level, pool, x, &rows, y);
    }
    HEAD_SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        s.resize(n * m, 0.0);
        head_by_head_shared(x, w, heads, y, &mut s, &mut |x, w, y| {
            matmul_t(level, bf16, pool, x, w, y)
        });
    });
}

/// Per-head transposed products (see `Backend::matmul_t_heads`): head by head through the
/// caller's reusable scratch, each head's product split across the pool.
pub fn matmul_t_heads(
    level: Level,
    bf16: bool,
    pool: &ThreadPool,
    x: &[f32],
    w: &Matrix,
    heads: Heads,
    y: &mut [f32],
) {
    let (k, m, h) = (heads.rows, w.cols, heads.count);
    let n = head_tokens("matmul_t_heads", x, y, w, heads, k, m);
    if n == 0 || h == 0 {
        return;
    }
    HEAD_SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let (xg, yg) = scratch_pair(&mut s, n * k, n * m);
        head_by_head_t(x, w, heads, y, xg, yg, &mut |x, w, y| {
            matmul_t(level, bf16, pool, x, w, y)
        });
    });
}
