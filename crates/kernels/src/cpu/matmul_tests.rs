//! Whole products at every level against their oracles: quantized and bf16 matmuls over
//! the backend (prefill panels, AMX tiles, decode rows), and the batched forms (shared
//! transposed products, heads and experts in one call) against one matmul each.

use loader::{DType, Tensor};

use super::dispatch::Level;
use super::simd::{self, portable};
use super::simd_tests::{Rng, THREADS, close, stored};
use crate::backend::Backend;
use crate::matrix::Matrix;

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

/// Whether a prefill over block-quantized `w` at `level` runs on AMX's bf16 tiles (whole
/// panels of 16 rows): the weights and the activations are then both rounded to bf16.
fn amx_bf16(level: Level, w: &Matrix, n: usize) -> bool {
    simd::has_amx(level)
        && n >= 4
        && w.rows.is_multiple_of(16)
        && w.cols.is_multiple_of(32)
        && w.row(0).0.act_quant().is_some()
}

fn round_bf16(v: f32) -> f32 {
    half::bf16::from_f32(v).to_f32()
}

/// The activations a matmul over `w` computes with at `level`: quantized to int8 and back
/// where the format has an int8 product and either the decode path (under 4 tokens) or the
/// level's int8 prefill kernel runs.
fn acts_as_kernels_see_them(level: Level, w: &Matrix, x: &[f32], n: usize) -> Vec<f32> {
    if amx_bf16(level, w, n) {
        return x.iter().map(|&v| round_bf16(v)).collect();
    }
    let int8 = n < 4 || simd::has_qgemm(level, &w.row(0).0);
    let Some(kind) = w.row(0).0.act_quant().filter(|_| int8) else {
        return x.to_vec();
    };
    let mut q = simd::QActs::default();
    q.quantize(kind, x, w.cols);
    (0..n)
        .flat_map(|t| {
            let row = q.row(t);
            (0..w.cols).map(move |i| row.qs[i] as f32 * row.d[i / kind.block()])
        })
        .collect()
}

/// Whole matmuls (and transposed ones) on block-quantized weights: every level and thread
/// count, decode and prefill paths (with AMX: whole and partial tiles of tokens), against
/// f64 products of the dequantized rows.
#[test]
fn quantized_matmul_matches_dequantized_reference() {
    let mut rng = Rng(1234);
    for dtype in [
        DType::Q8_0,
        DType::Q5_0,
        DType::Q4K,
        DType::Q6K,
        DType::BF16,
        DType::F16,
    ] {
        let cols = 512;
        for rows in [1, 17, 27, 32, 40] {
            let bytes = stored(dtype, rows * cols, &mut rng);
            let t = Tensor::from_bytes("w", dtype, vec![rows, cols], bytes).unwrap();
            let w = Matrix::dense(t).unwrap();
            let mut dense = vec![0f32; rows * cols];
            for r in 0..rows {
                w.read_row(r, &mut dense[r * cols..(r + 1) * cols]);
            }
            for n in [1, 3, 4, 9, 17] {
                let x = rng.vec(n * cols);
                let want_at = |level: Level| -> Vec<f64> {
                    let x = acts_as_kernels_see_them(level, &w, &x, n);
                    let dense: Vec<f32> = if amx_bf16(level, &w, n) {
                        dense.iter().map(|&v| round_bf16(v)).collect()
                    } else {
                        dense.clone()
                    };
                    (0..n)
                        .flat_map(|t| {
                            let (x, dense) = (&x, &dense);
                            (0..rows).map(move |r| {
                                (0..cols)
                                    .map(|c| x[t * cols + c] as f64 * dense[r * cols + c] as f64)
                                    .sum::<f64>()
                            })
                        })
                        .collect()
                };
                for level in Level::available() {
                    let want = want_at(level);
                    for &threads in THREADS {
                        let be = super::tests::backend(level, threads);
                        let mut y = vec![0f32; n * rows];
                        be.matmul(&x, &w, &mut y);
                        let scale =
                            dense.iter().map(|v| v.abs()).fold(0f32, f32::max) * cols as f32;
                        for (g, w) in y.iter().zip(&want) {
                            assert!(
                                ((*g as f64) - w).abs() <= 1e-5 * scale as f64,
                                "{dtype} {level} t{threads} rows={rows} n={n}: {g} vs {w}"
                            );
                        }
                    }
                }
                // the transposed product y[n, cols] = xt[n, rows] · W, in f32 at every level
                // but AMX, whose tiles take W's columns rounded to bf16 against the tokens
                // rounded to bf16 (32 rows and more: whole steps of k)
                let xt = rng.vec(n * rows);
                let want_at = |level: Level| -> Vec<f64> {
                    let tiles = simd::has_amx(level)
                        && n >= 4
                        && rows.is_multiple_of(32)
                        && w.row(0).0.act_quant().is_some();
                    let r16 = |v: &[f32]| -> Vec<f32> {
                        v.iter()
                            .map(|&v| if tiles { round_bf16(v) } else { v })
                            .collect()
                    };
                    let (xt, dense) = (r16(&xt), r16(&dense));
                    (0..n * cols)
                        .map(|i| {
                            let (t, c) = (i / cols, i % cols);
                            (0..rows)
                                .map(|r| xt[t * rows + r] as f64 * dense[r * cols + c] as f64)
                                .sum::<f64>()
                        })
                        .collect()
                };
                for level in Level::available() {
                    let want = want_at(level);
                    let scale = dense.iter().map(|v| v.abs()).fold(0f32, f32::max) * rows as f32;
                    for &threads in THREADS {
                        let be = super::tests::backend(level, threads);
                        let mut y = vec![f32::NAN; n * cols];
                        be.matmul_t(&xt, &w, &mut y);
                        for (g, w) in y.iter().zip(&want) {
                            assert!(
                                ((*g as f64) - w).abs() <= 1e-5 * scale.max(1.0) as f64,
                                "matmul_t {dtype} {level} t{threads} rows={rows} n={n}: {g} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Every head's transposed product of the same rows at once (`matmul_t_shared`, MLA's
/// expanded keys) equals each head's `matmul_t` placed side by side, bit for bit, at every
/// level and thread count: on AMX one product over the heads' packed columns, with partial
/// tiles of tokens and heads taken from the middle of the matrix.
#[test]
fn shared_transposed_products_equal_each_heads() {
    let mut rng = Rng(4321);
    for dtype in [
        DType::Q8_0,
        DType::Q5_0,
        DType::Q4K,
        DType::BF16,
        DType::F32,
    ] {
        let (cols, rows, count) = (256, 64, 3);
        // five heads' rows in the matrix, three taken from the second on
        let bytes = stored(dtype, 5 * rows * cols, &mut rng);
        let t = Tensor::from_bytes("k_b", dtype, vec![5 * rows, cols], bytes).unwrap();
        let w = Matrix::dense(t).unwrap();
        let heads = crate::Heads {
            count,
            first: rows,
            stride: rows,
            rows,
        };
        for n in [2, 16, 21] {
            let x = rng.vec(n * rows);
            for level in Level::available() {
                for &threads in THREADS {
                    let be = super::tests::backend(level, threads);
                    let mut want = vec![0f32; n * count * cols];
                    let mut yg = vec![0f32; n * cols];
                    for g in 0..count {
                        be.matmul_t(&x, &w.rows_view(rows * (1 + g), rows), &mut yg);
                        for t in 0..n {
                            want[(t * count + g) * cols..][..cols]
                                .copy_from_slice(&yg[t * cols..(t + 1) * cols]);
                        }
                    }
                    let mut got = vec![f32::NAN; n * count * cols];
                    be.matmul_t_shared(&x, &w, heads, &mut got);
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(g, w)| g.to_bits() == w.to_bits());
                    assert!(same, "{dtype} {level} t{threads} n={n}");
                }
            }
        }
    }
}

/// The bf16 prefill kernel against its oracle (exact products summed in f32), on shapes
/// with a masked tail of k, partial tiles of rows and tokens, blocks of rows and tokens
/// (64 and 128) crossed, and rows with padding between them.
#[test]
fn bf16_gemm_matches_the_oracle() {
    let mut rng = Rng(0xbf16);
    for (rows, k, n) in [
        (1, 32, 1),
        (7, 40, 5),
        (9, 70, 4),
        (70, 1000, 3),
        (66, 64, 131),
    ] {
        let rb = 2 * k + 6;
        let w: Vec<u8> = (0..rows * rb)
            .map(|i| {
                if i % rb >= 2 * k {
                    0xff // padding: a NaN if it were read
                } else {
                    (rng.next() >> 24) as u8 & if i % 2 == 1 { 0xbf } else { 0xff }
                }
            })
            .collect();
        let x = rng.vec(n * k);
        for level in Level::available() {
            let mut x16 = Vec::new();
            simd::round_bf16(level, &x, &mut x16);
            let want16: Vec<u16> = x
                .iter()
                .map(|&v| half::bf16::from_f32(v).to_bits())
                .collect();
            assert_eq!(x16, want16, "{level}: rounding");
            let (m, r0) = (rows + 3, 2);
            let g = simd::Bf16Gemm {
                w: &w,
                rb,
                rows,
                k,
                x16: &x16,
                n,
                m,
                r0,
            };
            let mut want = vec![f32::NAN; n * m];
            let mut got = vec![f32::NAN; n * m];
            unsafe {
                portable::bf16_gemm(&g, want.as_mut_ptr());
                simd::bf16_gemm(level, &g, got.as_mut_ptr());
            }
            for t in 0..n {
                for r in 0..rows {
                    let i = t * m + r0 + r;
                    let norm: f32 = (0..k)
                        .map(|c| {
                            let wv = loader::bf16_to_f32(u16::from_le_bytes([
                                w[r * rb + 2 * c],
                                w[r * rb + 2 * c + 1],
                            ]));
                            (wv * loader::bf16_to_f32(x16[t * k + c])).abs()
                        })
                        .sum();
                    close(
                        got[i],
                        want[i],
                        norm,
                        &format!("{level} {rows}x{k} n={n} t={t} r={r}"),
                    );
                }
            }
            // nothing outside the rows r0.. is written
            for t in 0..n {
                assert!(
                    got[t * m].is_nan() && got[t * m + 1].is_nan() && got[t * m + m - 1].is_nan()
                );
            }
        }
    }
}

/// The batched products give exactly what one `matmul` per head or per expert gives (each
/// output is the same row product either way), for every format, level and thread count,
/// with decode-sized and prefill-sized groups mixed.
#[test]
fn head_and_expert_batches_equal_one_matmul_each() {
    let mut rng = Rng(77);
    for dtype in [
        DType::Q4K,
        DType::Q6K,
        DType::Q8_0,
        DType::Q5_0,
        DType::BF16,
        DType::F32,
        DType::F8E4M3,
    ] {
        let k = 256;
        // FP8 with scale blocks of 16 rows, so heads and experts start inside one
        let matrix = |name: &str, rows: usize, rng: &mut Rng| {
            let t = Tensor::from_bytes(name, dtype, vec![rows, k], stored(dtype, rows * k, rng));
            if dtype != DType::F8E4M3 {
                return Matrix::dense(t.unwrap()).unwrap();
            }
            let grid = vec![rows.div_ceil(16), k.div_ceil(128)];
            let scales: Vec<u8> = (0..grid[0] * grid[1])
                .flat_map(|_| (rng.f().abs() + 0.01).to_le_bytes())
                .collect();
            let s = Tensor::from_bytes("s", DType::F32, grid, scales).unwrap();
            Matrix::fp8(t.unwrap(), s, [16, 128]).unwrap()
        };
        // heads: 5 heads of 24 rows, 3 rows apart from a first row of 7
        let heads = crate::Heads {
            count: 5,
            first: 7,
            stride: 27,
            rows: 24,
        };
        let rows = heads.first + 4 * heads.stride + heads.rows + 2;
        let w = matrix("w", rows, &mut rng);
        // experts: rows per expert 0, 1, 2, 0, 5, 3 (5 takes the panel path)
        let experts: Vec<Matrix> = (0..6).map(|_| matrix("e", 40, &mut rng)).collect();
        let f32_experts: Vec<Matrix> = (0..6)
            .map(|_| {
                let t = Tensor::from_bytes(
                    "f",
                    DType::F32,
                    vec![40, k],
                    stored(DType::F32, 40 * k, &mut rng),
                );
                Matrix::dense(t.unwrap()).unwrap()
            })
            .collect();
        let starts = [0, 0, 1, 3, 3, 8, 11];
        for level in Level::available() {
            for &threads in THREADS {
                let be = super::tests::backend(level, threads);
                for n in [1, 2, 4, 6] {
                    let x = rng.vec(n * heads.count * k);
                    let mut got = vec![f32::NAN; n * heads.count * heads.rows];
                    be.matmul_heads(&x, &w, heads, &mut got);
                    let (mut xg, mut yg) = (vec![0f32; n * k], vec![0f32; n * heads.rows]);
                    for g in 0..heads.count {
                        for t in 0..n {
                            xg[t * k..(t + 1) * k]
                                .copy_from_slice(&x[(t * heads.count + g) * k..][..k]);
                        }
                        let wg = w.rows_view(heads.first + g * heads.stride, heads.rows);
                        be.matmul(&xg, &wg, &mut yg);
                        for t in 0..n {
                            let at = (t * heads.count + g) * heads.rows;
                            assert_eq!(
                                &got[at..at + heads.rows],
                                &yg[t * heads.rows..(t + 1) * heads.rows],
                                "{dtype} {level} t{threads} n={n} head {g}"
                            );
                        }
                    }
                }
                let total = starts[6];
                let x = rng.vec(total * k);
                let mut got = vec![f32::NAN; total * 40];
                be.matmul_experts(&x, &starts, &|e| &experts[e], &mut got);
                for e in 0..6 {
                    let (a, b) = (starts[e], starts[e + 1]);
                    let mut want = vec![0f32; (b - a) * 40];
                    be.matmul(&x[a * k..b * k], &experts[e], &mut want);
                    assert_eq!(
                        &got[a * 40..b * 40],
                        &want[..],
                        "{dtype} {level} t{threads} expert {e}"
                    );
                }
                // two matrices of different heights over the same rows, once in another
                // format (which the shared region cannot take)
                for n in [1, 3, 6] {
                    let x = rng.vec(n * k);
                    for wb in [&w, &f32_experts[1]] {
                        let (mut ga, mut gb) =
                            (vec![f32::NAN; n * 40], vec![f32::NAN; n * wb.rows]);
                        be.matmul_pair(&x, &experts[0], wb, &mut ga, &mut gb);
                        let (mut wa_, mut wb_) = (vec![0f32; n * 40], vec![0f32; n * wb.rows]);
                        be.matmul(&x, &experts[0], &mut wa_);
                        be.matmul(&x, wb, &mut wb_);
                        assert_eq!(ga, wa_, "{dtype} {level} t{threads} n={n} pair a");
                        assert_eq!(gb, wb_, "{dtype} {level} t{threads} n={n} pair b");
                    }
                }
                // two weight sets over the same rows (gate and up): the second set's
                // experts in reverse order, and once in another format, which the batched
                // region cannot share
                for other in [&experts, &f32_experts] {
                    let wb = |e: usize| &other[5 - e];
                    let (mut ga, mut gb) = (vec![f32::NAN; total * 40], vec![f32::NAN; total * 40]);
                    be.matmul_experts_pair(&x, &starts, &|e| &experts[e], &wb, &mut ga, &mut gb);
                    for e in 0..6 {
                        let (a, b) = (starts[e], starts[e + 1]);
                        let mut want = vec![0f32; (b - a) * 40];
                        be.matmul(&x[a * k..b * k], &experts[e], &mut want);
                        assert_eq!(&ga[a * 40..b * 40], &want[..], "{dtype} {level} pair a {e}");
                        be.matmul(&x[a * k..b * k], wb(e), &mut want);
                        assert_eq!(&gb[a * 40..b * 40], &want[..], "{dtype} {level} pair b {e}");
                    }
                }
            }
        }
    }
}
