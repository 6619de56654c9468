//! Matrix products over stored weights, split across the pool by output rows.
//!
//! Few tokens (decode): each weight row is read once from memory and dotted straight from
//! its stored encoding with every token; the op is bound by memory bandwidth. Many tokens
//! (prefill): a panel of rows is widened to f32 once into a per-thread buffer and a
//! register-tiled kernel multiplies it with every token; the op is bound by FMA throughput.

use std::cell::RefCell;

use super::dispatch::Level;
use super::pool::{Disjoint, ThreadPool};
use super::simd::{self, GemmPanel};
use crate::matrix::Matrix;

/// From this many tokens on, widening a panel once beats dotting each row per token.
const GEMM_MIN_TOKENS: usize = 4;
/// Rows per widened panel: 16 rows of a 7168-wide V3 row are 448 KiB, within L2.
const PANEL_ROWS: usize = 16;
/// Output rows per share are a multiple of this, so shares never write one cache line.
const ROW_ALIGN: usize = 16;

thread_local! {
    /// The caller's buffer for the serial small-`n` product; grows once, then is reused.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
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

/// `y[n, w.rows] = x[n, w.cols] · Wᵀ`.
pub fn matmul(level: Level, pool: &ThreadPool, x: &[f32], w: &Matrix, y: &mut [f32]) {
    let (m, k) = (w.rows, w.cols);
    let n = x.len() / k;
    assert!(
        x.len() == n * k && y.len() == n * m,
        "matmul shapes: x {} y {} for [{m}, {k}]",
        x.len(),
        y.len()
    );
    let out = Disjoint::new(y);
    if n < GEMM_MIN_TOKENS {
        pool.for_ranges(m, ROW_ALIGN, &|rows| {
            for r in rows {
                let (fmt, bytes) = w.row(r);
                for t in 0..n {
                    let v = simd::dot_row(level, &fmt, bytes, &x[t * k..(t + 1) * k]);
                    // SAFETY: row r belongs to this share alone; t * m + r < n * m.
                    unsafe { *out.ptr().add(t * m + r) = v };
                }
            }
        });
        return;
    }
    pool.for_ranges_scratch(m, ROW_ALIGN, PANEL_ROWS * k, &|rows, panel| {
        {
            let mut r0 = rows.start;
            while r0 < rows.end {
                let pr = (rows.end - r0).min(PANEL_ROWS);
                for i in 0..pr {
                    let (fmt, bytes) = w.row(r0 + i);
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
                unsafe { simd::gemm_panel(level, &g, out.ptr()) };
                r0 += pr;
            }
        }
    });
}

/// `y[n, w.cols] = x[n, w.rows] · W` (a head's q_nope through wkv_b's key half).
pub fn matmul_t(level: Level, pool: &ThreadPool, x: &[f32], w: &Matrix, y: &mut [f32]) {
    let (rows, cols) = (w.rows, w.cols);
    let n = x.len() / rows;
    assert!(
        x.len() == n * rows && y.len() == n * cols,
        "matmul_t shapes"
    );
    if n < GEMM_MIN_TOKENS {
        y.fill(0.0);
        with_scratch(cols, |row| {
            for r in 0..rows {
                let (fmt, bytes) = w.row(r);
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
                let (fmt, bytes) = w.row(r);
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
                unsafe { simd::gemm_panel(level, &g, out.ptr()) };
                c0 += pr;
            }
        }
    });
}
