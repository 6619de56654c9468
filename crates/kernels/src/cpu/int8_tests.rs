//! The int8 path, in its data flow: activations quantized per block, decode products of
//! one row and of runs of rows, and the packed prefill panel, each against the portable
//! oracle and the dequantized product.

use loader::DType;

use super::dispatch::Level;
use super::simd::{self, portable};
use super::simd_tests::{Rng, close, fmt_of, stored};

// On wasm32 these tests run under wasm-bindgen-test, as simd_tests.rs's do.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

/// The int8 products: every level against the portable oracle (same integers, f32 sums in
/// another order), and the oracle against f64 products of the dequantized weights and
/// dequantized activations (which it must equal up to f32 rounding).
#[test]
fn int8_dot_row_matches_the_oracle_and_the_dequantized_product() {
    let mut rng = Rng(0x51ed);
    for (dtype, lens) in [
        (DType::Q8_0, vec![32, 64, 96, 320, 1056]),
        (DType::Q5_0, vec![32, 64, 96, 544]),
        (DType::Q4K, vec![256, 512, 1280]),
        (DType::Q6K, vec![256, 768, 1280]),
    ] {
        for n in lens {
            let src = stored(dtype, n, &mut rng);
            let fmt = fmt_of(dtype, &[], 0);
            let kind = fmt.act_quant().unwrap();
            // rows of real values, a row of zeros and a row with one large outlier
            let mut x = rng.vec(2 * n);
            x.extend(std::iter::repeat_n(0.0, n));
            x[n / 3] = 40.0;
            let mut q = simd::QActs::default();
            q.quantize(kind, &x, n);
            let mut w = vec![0f32; n];
            portable::widen(&fmt, &src, &mut w);
            for t in 0..3 {
                let row = q.row(t);
                let block = kind.block();
                let xq: Vec<f64> = (0..n)
                    .map(|i| row.qs[i] as f64 * row.d[i / block] as f64)
                    .collect();
                let want: f64 = w.iter().zip(&xq).map(|(a, b)| *a as f64 * b).sum();
                let norm: f64 = w.iter().zip(&xq).map(|(a, b)| (*a as f64 * b).abs()).sum();
                let oracle = portable::dot_row_q(&fmt, &src, &row);
                close(
                    oracle,
                    want as f32,
                    norm as f32,
                    &format!("oracle {dtype} n={n} t={t}"),
                );
                for level in Level::available() {
                    let got = simd::dot_row_q(level, &fmt, &src, &row);
                    close(
                        got,
                        oracle,
                        norm as f32,
                        &format!("{level} {dtype} n={n} t={t}"),
                    );
                }
            }
        }
    }
}

/// Runs of rows (the decode path's groups of four, and of eight short rows): every level
/// against the oracle's row products, for run lengths with every remainder of four, rows
/// with padding between them, an odd count of Q8_0 blocks, and a row of extreme weights
/// (all -128 for Q8_0).
#[test]
fn int8_dot_rows_match_the_row_products() {
    let mut rng = Rng(0x7a11);
    for (dtype, n) in [
        (DType::Q8_0, 32),
        (DType::Q8_0, 96),
        (DType::Q8_0, 128),
        (DType::Q8_0, 1024),
        (DType::Q5_0, 32),
        (DType::Q5_0, 64),
        (DType::Q5_0, 96),
        (DType::Q5_0, 128),
        (DType::Q4K, 512),
        (DType::Q6K, 512),
        (DType::Q6K, 768),
    ] {
        let fmt = fmt_of(dtype, &[], 0);
        let kind = fmt.act_quant().unwrap();
        let row_bytes = stored(dtype, n, &mut rng).len();
        let rb = row_bytes + 7;
        let mut x = rng.vec(n);
        x[n / 2] = -30.0;
        let mut q = simd::QActs::default();
        q.quantize(kind, &x, n);
        let a = q.row(0);
        for rows in [1, 2, 3, 4, 5, 6, 7, 9, 14, 37] {
            let mut src = Vec::new();
            for r in 0..rows {
                let mut row = stored(dtype, n, &mut rng);
                if r == 1 && dtype == DType::Q8_0 {
                    for blk in row.chunks_exact_mut(34) {
                        blk[2..].fill(0x80);
                    }
                }
                row.resize(rb, 0xee);
                src.extend(row);
            }
            let want: Vec<f32> = (0..rows)
                .map(|r| portable::dot_row_q(&fmt, &src[r * rb..r * rb + row_bytes], &a))
                .collect();
            // each row's Σ |w · x|, the scale of its rounding
            let norm: Vec<f32> = (0..rows)
                .map(|r| {
                    let mut w = vec![0f32; n];
                    portable::widen(&fmt, &src[r * rb..r * rb + row_bytes], &mut w);
                    let block = kind.block();
                    (0..n)
                        .map(|i| (w[i] * a.qs[i] as f32 * a.d[i / block]).abs())
                        .sum()
                })
                .collect();
            for level in Level::available() {
                let mut got = vec![f32::NAN; rows];
                simd::dot_rows_q(level, &fmt, &src, rb, &a, &mut got);
                for r in 0..rows {
                    let what = format!("{level} {dtype} n={n} row {r}/{rows}");
                    close(got[r], want[r], norm[r], &what);
                }
            }
        }
    }
}

/// Quantized activations: within half a step of the input, the block's largest magnitude
/// exact, sums of 16 consistent, zeros kept as zeros.
#[test]
fn activation_quantization_is_symmetric_int8_per_block() {
    let mut rng = Rng(3);
    for kind in [simd::ActQuant::Q8_0, simd::ActQuant::Q8K] {
        let k = 512;
        let mut x = rng.vec(3 * k);
        x[2 * k..].fill(0.0);
        x[5] = -3.0;
        let mut q = simd::QActs::default();
        // a larger call first: the buffers are reused, not reallocated per call
        q.quantize(kind, &rng.vec(8 * k), k);
        q.quantize(kind, &x, k);
        let block = kind.block();
        for t in 0..3 {
            let row = q.row(t);
            assert_eq!(row.qs.len(), k);
            assert_eq!(row.d.len(), k / block);
            for i in 0..k {
                let v = x[t * k + i];
                let d = row.d[i / block];
                assert!(
                    (row.qs[i] as f32 * d - v).abs() <= 0.5 * d * 1.0001,
                    "{kind:?} {v}"
                );
                assert!(row.qs[i] != -128);
            }
            if t == 2 {
                assert!(row.qs.iter().all(|&q| q == 0) && row.d.iter().all(|&d| d == 0.0));
            }
            let group = kind.sum_group();
            assert_eq!(row.bsums.len(), k / group);
            for (g, s) in row.bsums.iter().enumerate() {
                let want: i16 = row.qs[group * g..group * (g + 1)]
                    .iter()
                    .map(|&v| v as i16)
                    .sum();
                assert_eq!(*s, want);
            }
        }
        assert_eq!(
            q.row(0).qs[5],
            -127,
            "{kind:?}: the block maximum maps to -127"
        );
        // ties round to even, as `round_ties_even` does
        let mut tie = vec![0f32; kind.block()];
        tie[0] = 127.0;
        tie[1] = 2.5;
        tie[2] = -3.5;
        tie[3] = 0.5;
        q.quantize(kind, &tie, tie.len());
        assert_eq!(&q.row(0).qs[..4], &[127, 2, -4, 0]);
    }
}

/// The int8 prefill kernel: the packed panel's oracle equals the row-by-row int8 product,
/// and the kernel equals the oracle, for partial panels and every tile size of tokens.
#[test]
fn int8_panel_kernel_matches_the_row_products() {
    use simd::qpanel::QPanel;
    let mut rng = Rng(0xabc);
    for (dtype, k) in [
        (DType::Q8_0, 96),
        (DType::Q5_0, 64),
        (DType::Q4K, 512),
        (DType::Q6K, 512),
    ] {
        for rows in [1, 5, 16] {
            let w: Vec<Vec<u8>> = (0..rows).map(|_| stored(dtype, k, &mut rng)).collect();
            let fmt = fmt_of(dtype, &[], 0);
            let kind = fmt.act_quant().unwrap();
            let mut p = QPanel::default();
            // pack a larger panel first: the buffers are reused, stale values must not leak
            let big: Vec<Vec<u8>> = (0..16).map(|_| stored(dtype, 2 * k, &mut rng)).collect();
            p.pack(Level::Scalar, &fmt, 16, 2 * k, |r| &big[r]);
            p.pack(Level::Scalar, &fmt, rows, k, |r| &w[r]);
            // every level packs the same panels (the AVX-512 ones transpose with shuffles)
            for level in Level::available() {
                let mut q = QPanel::default();
                q.pack(level, &fmt, 16, 2 * k, |r| &big[r]);
                q.pack(level, &fmt, rows, k, |r| &w[r]);
                assert_eq!(
                    q.wq[..16 * k],
                    p.wq[..16 * k],
                    "{level} {dtype} rows={rows}: bytes"
                );
                let (g, u) = (k / p.group * 16, k / p.unit * 16);
                assert_eq!(
                    q.gscale[..g],
                    p.gscale[..g],
                    "{level} {dtype}: group scales"
                );
                assert_eq!(q.mins[..g], p.mins[..g], "{level} {dtype}: minimums");
                assert_eq!(q.d[..u], p.d[..u], "{level} {dtype}: unit scales");
            }
            for n in [1, 2, 6, 7, 13, 17, 35] {
                let x = rng.vec(n * k);
                let mut acts = simd::QActs::default();
                acts.quantize(kind, &x, k);
                let (m, r0) = (rows + 3, 2);
                let mut want = vec![f32::NAN; n * m];
                for t in 0..n {
                    for r in 0..rows {
                        let a = acts.row(t);
                        let row_product = portable::dot_row_q(&fmt, &w[r], &a);
                        let oracle = p.dot(r, &a, kind);
                        let norm: f32 = a.qs.iter().map(|&q| (q as f32).abs()).sum::<f32>()
                            * a.d.iter().fold(0f32, |m, d| m.max(*d));
                        close(
                            oracle,
                            row_product,
                            norm,
                            &format!("oracle {dtype} r{r} t{t}"),
                        );
                        want[t * m + r0 + r] = oracle;
                    }
                }
                for level in Level::available()
                    .into_iter()
                    .filter(|l| simd::has_qgemm(*l, &fmt))
                {
                    let mut got = vec![f32::NAN; n * m];
                    let g = simd::QGemm {
                        panel: &p,
                        acts: &acts,
                        kind,
                        tokens: 0..n,
                        m,
                        r0,
                    };
                    unsafe { simd::qgemm_panel(level, &g, got.as_mut_ptr()) };
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        if b.is_nan() {
                            assert!(a.is_nan(), "{level} wrote outside the panel at {i}");
                        } else {
                            close(
                                *a,
                                *b,
                                b.abs().max(1.0) * 10.0,
                                &format!("{level} {dtype} rows={rows} n={n} at {i}"),
                            );
                        }
                    }
                }
            }
        }
    }
}
