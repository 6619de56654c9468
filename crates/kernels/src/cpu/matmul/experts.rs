//! The routed experts' grouped products: in decode, every selected expert's rows in one
//! parallel region over activations quantized once; in prefill, each expert with many
//! rows through `matmul`.

use std::cell::RefCell;

use super::super::dispatch::Level;
use super::super::pool::{Disjoint, ThreadPool};
use super::super::simd::Fmt;
use super::{GEMM_MIN_TOKENS, ROW_ALIGN, matmul, same_fmt, with_acts};
use crate::matrix::Matrix;

thread_local! {
    /// The experts sharing one parallel region.
    static EXPERT_LIST: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    /// Those experts' input rows, gathered when the other experts' rows are many, and
    /// where each expert's rows start among them.
    static EXPERT_ROWS: RefCell<(Vec<f32>, Vec<usize>)> =
        const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The routed experts' products (see `Backend::matmul_experts`). Experts with few rows
/// (decode) share one parallel region, so a token's six or eight experts cost one
/// dispatch, not one each; experts with many rows run the panel path on their own.
pub fn matmul_experts<'w>(
    level: Level,
    bf16: bool,
    pool: &ThreadPool,
    x: &[f32],
    starts: &[usize],
    w: &(dyn Fn(usize) -> &'w Matrix + Sync),
    y: &mut [f32],
) {
    matmul_experts_sets(level, bf16, pool, x, starts, &[w], &mut [y])
}

const MAX_SETS: usize = 4;

/// `matmul_experts` with several weight sets over the same rows (an expert's gate and up
/// projections): `ys[s]` takes `ws[s]`'s products. In decode all the sets' rows are one
/// parallel region over activations quantized once.
pub fn matmul_experts_sets<'w>(
    level: Level,
    bf16: bool,
    pool: &ThreadPool,
    x: &[f32],
    starts: &[usize],
    ws: &[&(dyn Fn(usize) -> &'w Matrix + Sync)],
    ys: &mut [&mut [f32]],
) {
    assert!(
        !starts.is_empty(),
        "matmul_experts: starts has experts + 1 entries"
    );
    assert!(
        ws.len() == ys.len() && ws.len() <= MAX_SETS,
        "matmul_experts: one output per weight set, at most {MAX_SETS} sets"
    );
    let experts = starts.len() - 1;
    let total = starts[experts];
    assert!(
        starts.windows(2).all(|p| p[0] <= p[1]),
        "matmul_experts: starts must not decrease"
    );
    if total == 0 || ws.is_empty() {
        return;
    }
    let k = x.len() / total;
    let m = ys[0].len() / total;
    assert!(
        x.len() == total * k && ys.iter().all(|y| y.len() == total * m),
        "matmul_experts shapes: x {} y {} for {total} rows",
        x.len(),
        ys[0].len()
    );
    EXPERT_LIST.with(|list| {
        let mut list = list.borrow_mut();
        list.clear();
        let mut fmt = None;
        for e in 0..experts {
            let (a, b) = (starts[e], starts[e + 1]);
            if a == b {
                continue;
            }
            let mut batched = true;
            for w in ws {
                let we = w(e);
                assert!(
                    we.cols == k && we.rows == m,
                    "matmul_experts: expert {e} is [{}, {}], want [{m}, {k}]",
                    we.rows,
                    we.cols
                );
                let f = we.rows().fmt();
                let same = fmt.is_none_or(|g: Fmt<'_>| same_fmt(&g, &f));
                if b - a >= GEMM_MIN_TOKENS || !same {
                    batched = false;
                } else {
                    fmt.get_or_insert(f);
                }
            }
            if batched {
                list.push(e);
                continue;
            }
            for (w, y) in ws.iter().zip(ys.iter_mut()) {
                matmul(
                    level,
                    bf16,
                    pool,
                    &x[a * k..b * k],
                    w(e),
                    &mut y[a * m..b * m],
                );
            }
        }
        let Some(fmt) = fmt else { return };
        if list.is_empty() {
            return;
        }
        let list = &*list;
        // (an array, not a Vec: nothing is allocated in a decode step)
        let mut outs = [None; MAX_SETS];
        for (o, y) in outs.iter_mut().zip(ys.iter_mut()) {
            *o = Some(Disjoint::new(y));
        }
        EXPERT_ROWS.with(|g| {
            let mut g = g.borrow_mut();
            let (rows_x, first) = &mut *g;
            // The listed experts' rows are made ready for their products (quantized, or
            // rearranged for bf16): all of x in decode, where they are all of it; only theirs
            // in a prefill, where the other experts took the panel path above.
            let listed: usize = list.iter().map(|&e| starts[e + 1] - starts[e]).sum();
            let whole = listed == total;
            first.clear();
            rows_x.clear();
            for &e in list {
                first.push(if whole { starts[e] } else { rows_x.len() / k });
                if !whole {
                    rows_x.extend_from_slice(&x[starts[e] * k..starts[e + 1] * k]);
                }
            }
            let xs: &[f32] = if whole { x } else { rows_x };
            let first = &*first;
            let per_set = list.len() * m;
            with_acts(level, fmt, xs, k, |acts| {
                pool.for_shares(ws.len() * per_set, ROW_ALIGN, &|vs| {
                    // the share's rows, one run per (set, expert)
                    let mut v = vs.start;
                    while v < vs.end {
                        let (set, u) = (v / per_set, v % per_set);
                        let (li, r) = (u / m, u % m);
                        let len = (m - r).min(vs.end - v);
                        let e = list[li];
                        let s = starts[e];
                        let tok = |t: usize| (first[li] + t, (s + t) * m + r);
                        let rows = ws[set](e).rows();
                        // SAFETY: (set, expert, r..r + len) belongs to this share alone;
                        // rows i of different experts are disjoint; i * m + r < total * m.
                        unsafe {
                            acts.dot_run(
                                level,
                                &rows,
                                r..r + len,
                                starts[e + 1] - s,
                                tok,
                                outs[set].expect("one output per set").ptr(),
                            )
                        };
                        v += len;
                    }
                });
            });
        });
    });
}
