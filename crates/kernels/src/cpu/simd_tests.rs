//! Every SIMD level against the portable oracle, format by format, on awkward sizes: tails
//! shorter than a vector, partial FP8 scale blocks, panels and token counts that do not
//! fill a register tile.

use half::f16;
use loader::{DType, Tensor};

use super::dispatch::Level;
use super::simd::{self, Fmt, GemmPanel, portable};
use crate::backend::Backend;
use crate::cpu::CpuBackend;
use crate::matrix::Matrix;

// On wasm32 these tests run under wasm-bindgen-test (scripts/build-wasm.sh runs them in
// Node, with SIMD128 among the levels); natively `#[test]` stays libtest's.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

/// Thread counts the backends are tested with: wasm32-unknown-unknown has no threads.
const THREADS: &[usize] = if cfg!(target_arch = "wasm32") {
    &[1]
} else {
    &[1, 2, 3]
};

pub(super) struct Rng(pub(super) u64);
impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(super) fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn byte(&mut self) -> u8 {
        (self.next() >> 32) as u8
    }
    pub(super) fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
}

fn f16_bytes(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_bits().to_le_bytes()
}

/// Random but valid stored bytes for `n` values of `dtype`.
pub(super) fn stored(dtype: DType, n: usize, rng: &mut Rng) -> Vec<u8> {
    let mut b = Vec::new();
    match dtype {
        DType::F32 => (0..n).for_each(|_| b.extend(rng.f().to_le_bytes())),
        DType::F16 => (0..n).for_each(|_| b.extend(f16_bytes(rng.f()))),
        DType::BF16 => {
            (0..n).for_each(|_| b.extend(half::bf16::from_f32(rng.f()).to_bits().to_le_bytes()))
        }
        DType::F8E4M3 => (0..n).for_each(|_| {
            let c = rng.byte();
            b.push(if c & 0x7f == 0x7f { 0x3c } else { c }) // no NaN codes
        }),
        DType::Q8_0 => (0..n / 32).for_each(|_| {
            b.extend(f16_bytes(rng.f() * 0.05));
            (0..32).for_each(|_| b.push(rng.byte()));
        }),
        DType::Q5_0 => (0..n / 32).for_each(|_| {
            b.extend(f16_bytes(rng.f() * 0.05));
            (0..20).for_each(|_| b.push(rng.byte()));
        }),
        DType::Q4K => (0..n / 256).for_each(|_| {
            b.extend(f16_bytes(rng.f().abs() * 0.01));
            b.extend(f16_bytes(rng.f().abs() * 0.01));
            (0..140).for_each(|_| b.push(rng.byte()));
        }),
        DType::Q6K => (0..n / 256).for_each(|_| {
            (0..208).for_each(|_| b.push(rng.byte()));
            b.extend(f16_bytes(rng.f() * 0.01));
        }),
        other => panic!("no generator for {other}"),
    }
    b
}

pub(super) fn fmt_of<'a>(dtype: DType, scales: &'a [f32], block: usize) -> Fmt<'a> {
    match dtype {
        DType::F32 => Fmt::F32,
        DType::F16 => Fmt::F16,
        DType::BF16 => Fmt::BF16,
        DType::F8E4M3 => Fmt::Fp8 { scales, block },
        DType::Q8_0 => Fmt::Q8_0,
        DType::Q5_0 => Fmt::Q5_0,
        DType::Q4K => Fmt::Q4K,
        DType::Q6K => Fmt::Q6K,
        _ => unreachable!(),
    }
}

pub(super) fn close(got: f32, want: f32, scale: f32, what: &str) {
    assert!(
        (got - want).abs() <= 1e-5 * scale.max(1.0),
        "{what}: got {got}, want {want}"
    );
}

/// (dtype, lengths) with tails and partial blocks.
fn cases() -> Vec<(DType, Vec<usize>)> {
    vec![
        (DType::F32, vec![1, 5, 15, 16, 17, 63, 64, 65, 300]),
        (DType::F16, vec![1, 7, 16, 33, 129]),
        (DType::BF16, vec![1, 7, 16, 17, 64, 65, 200]),
        (DType::F8E4M3, vec![1, 15, 127, 128, 129, 300]),
        (DType::Q8_0, vec![32, 64, 96, 320]),
        (DType::Q5_0, vec![32, 64, 288]),
        (DType::Q4K, vec![256, 512, 768]),
        (DType::Q6K, vec![256, 512]),
    ]
}

#[test]
fn widen_and_dot_row_match_the_oracle_at_every_level() {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for level in Level::available() {
        for (dtype, lens) in cases() {
            for n in lens {
                for block in [128, 7] {
                    let src = stored(dtype, n, &mut rng);
                    let scales: Vec<f32> = (0..n.div_ceil(block))
                        .map(|_| rng.f().abs() + 0.1)
                        .collect();
                    let fmt = fmt_of(dtype, &scales, block);
                    let x = rng.vec(n);
                    let mut want = vec![0f32; n];
                    portable::widen(&fmt, &src, &mut want);
                    let mut got = vec![f32::NAN; n];
                    simd::widen(level, &fmt, &src, &mut got);
                    assert_eq!(got, want, "{level} widen {dtype} n={n} block={block}");
                    // the AMX path's rows: widened and rounded to bf16, in one pass or two
                    let mut wide16 = vec![7u16];
                    simd::widen_bf16(level, &fmt, &src, &mut got, &mut wide16);
                    let rounded: Vec<u16> = std::iter::once(7)
                        .chain(want.iter().map(|&v| half::bf16::from_f32(v).to_bits()))
                        .collect();
                    assert_eq!(wide16, rounded, "{level} widen_bf16 {dtype} n={n}");
                    let norm: f32 = want.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
                    let want_dot: f32 = want.iter().zip(&x).map(|(a, b)| a * b).sum();
                    close(
                        simd::dot_row(level, &fmt, &src, &x),
                        want_dot,
                        norm,
                        &format!("{level} dot_row {dtype} n={n} block={block}"),
                    );
                    close(
                        portable::dot_row(&fmt, &src, &x),
                        want_dot,
                        norm,
                        &format!("portable dot_row {dtype} n={n}"),
                    );
                }
            }
        }
    }
}

#[test]
fn dot_and_axpy_match_the_oracle_at_every_level() {
    let mut rng = Rng(7);
    for level in Level::available() {
        for n in [0, 1, 15, 16, 17, 100, 1000] {
            let (a, b) = (rng.vec(n), rng.vec(n));
            let norm: f32 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum();
            close(
                simd::dot(level, &a, &b),
                portable::dot(&a, &b),
                norm,
                &format!("{level} dot n={n}"),
            );
            let mut y1 = rng.vec(n);
            let mut y2 = y1.clone();
            simd::axpy(level, 0.37, &a, &mut y1);
            portable::axpy(0.37, &a, &mut y2);
            for (g, w) in y1.iter().zip(&y2) {
                close(*g, *w, 1.0, &format!("{level} axpy n={n}"));
            }
        }
    }
}

/// The bf16 decode kernel over even/odd-rearranged activations, against the oracle's
/// widened row, on lengths around its 32- and 64-value steps.
#[test]
fn bf16_pair_rows_match_the_oracle_at_every_level() {
    let mut rng = Rng(31);
    for level in Level::available() {
        for n in [1, 16, 31, 32, 33, 63, 64, 65, 96, 100, 1024, 1031] {
            let src = stored(DType::BF16, n, &mut rng);
            let x = rng.vec(n);
            let mut pairs = Vec::new();
            simd::bf16_pairs(&x, &mut pairs);
            assert_eq!(pairs.len(), n / 32 * 32);
            let mut w = vec![0f32; n];
            portable::widen(&Fmt::BF16, &src, &mut w);
            let norm: f32 = w.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
            close(
                simd::dot_row_bf16_pairs(level, &src, &x, &pairs),
                portable::dot(&w, &x),
                norm,
                &format!("{level} bf16 pairs n={n}"),
            );
        }
    }
}

#[test]
fn gemm_panel_matches_the_oracle_for_every_tile_shape() {
    let mut rng = Rng(99);
    for level in Level::available() {
        for k in [1, 15, 17, 64, 100] {
            // (16 rows and fewer: a matmul's panel; more: attention's blocks of positions)
            for rows in (1..=9).chain([12, 16, 17, 40]) {
                for n in (1..=9).chain([13]) {
                    let panel = rng.vec(rows * k);
                    let x = rng.vec(n * k);
                    let (m, r0) = (rows + 3, 2);
                    let g = GemmPanel {
                        panel: &panel,
                        rows,
                        k,
                        x: &x,
                        n,
                        m,
                        r0,
                    };
                    let mut got = vec![f32::NAN; n * m];
                    let mut want = got.clone();
                    let mut got16 = got.clone();
                    unsafe {
                        simd::gemm_panel(level, &g, got.as_mut_ptr());
                        simd::gemm_panel(Level::Scalar, &g, want.as_mut_ptr());
                        if rows <= 16 {
                            simd::gemm_panel16(level, &g, got16.as_mut_ptr());
                        } else {
                            got16.copy_from_slice(&got);
                        }
                    }
                    for (i, ((a, a16), b)) in got.iter().zip(&got16).zip(&want).enumerate() {
                        let col = i % m;
                        if col < r0 || col >= r0 + rows {
                            assert!(a.is_nan(), "{level} wrote outside its rows");
                            assert!(a16.is_nan(), "{level} panel16 wrote outside its rows");
                        } else {
                            close(
                                *a,
                                *b,
                                k as f32,
                                &format!("{level} gemm k={k} rows={rows} n={n}"),
                            );
                            close(
                                *a16,
                                *b,
                                k as f32,
                                &format!("{level} panel16 k={k} rows={rows} n={n}"),
                            );
                        }
                    }
                }
            }
        }
    }
}

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

/// The AMX tiles' B side: every level packs the tokens as the portable code does (16
/// tokens per tile, bf16 pairs side by side, the last tile padded with zeros), rounding as
/// `round_bf16` does, over stale output.
#[test]
fn amx_packing_matches_the_portable_packing() {
    let mut rng = Rng(99);
    for (n, k) in [(1, 32), (16, 64), (17, 96), (40, 32)] {
        let mut x = rng.vec(n * k);
        x[0] = 1.0 + f32::EPSILON * 64.0; // a tie, rounded to even
        let len = n.div_ceil(16) * 16 * k;
        let mut want = vec![0xffffu16; len];
        simd::amx_pack_acts(Level::Scalar, &x, k, &mut want);
        let mut rounded = Vec::new();
        simd::round_bf16(Level::Scalar, &x, &mut rounded);
        for t in 0..n.div_ceil(16) * 16 {
            for c in 0..k {
                let v = want[t / 16 * 16 * k + (c / 2) * 32 + 2 * (t % 16) + c % 2];
                let r = if t < n { rounded[t * k + c] } else { 0 };
                assert_eq!(v, r, "portable packing n={n} k={k} token {t} column {c}");
            }
        }
        for level in Level::available() {
            let mut got = vec![0xffffu16; len];
            simd::amx_pack_acts(level, &x, k, &mut got);
            assert_eq!(got, want, "{level} n={n} k={k}");
        }
    }
}

#[test]
fn a_quantized_matrix_needs_whole_blocks() {
    let t = Tensor::from_bytes("w", DType::Q4K, vec![2, 256], vec![0; 2 * 144]).unwrap();
    assert!(Matrix::dense(t).is_ok());
    let t = Tensor::from_bytes("w", DType::Q8_0, vec![16, 32], vec![0; 16 * 34]).unwrap();
    let t2 = Tensor::from_bytes("w", DType::Q8_0, vec![32, 16], vec![0; 16 * 34]).unwrap();
    assert!(Matrix::dense(t).is_ok());
    let e = Matrix::dense(t2).unwrap_err();
    assert!(e.0.contains("not whole Q8_0 blocks"), "{}", e.0);
}

#[test]
fn forcing_an_unsupported_level_is_an_error_not_a_crash() {
    for level in Level::ALL {
        let r = CpuBackend::with_options(&crate::CpuOptions {
            level: Some(level),
            threads: Some(1),
            ..Default::default()
        });
        assert_eq!(r.is_ok(), level.supported(), "{level}");
    }
    assert_eq!("avx512".parse::<Level>(), Ok(Level::Avx512));
    assert!(
        "sse9"
            .parse::<Level>()
            .unwrap_err()
            .contains("unknown kernel level `sse9`")
    );
}

/// Every level's block decoders against the loader's reference codec (which the portable
/// level calls), and through a real quantize -> decode round trip.
#[test]
fn block_decoders_agree_with_the_reference_codec() {
    let mut rng = Rng(42);
    for dtype in [DType::Q8_0, DType::Q5_0, DType::Q4K, DType::Q6K] {
        for n in [256, 1024] {
            let src = stored(dtype, n, &mut rng);
            let mut want = vec![0f32; n];
            loader::quant::dequantize_row(dtype, &src, &mut want).unwrap();
            let fmt = fmt_of(dtype, &[], 0);
            for level in Level::available() {
                let mut got = vec![0f32; n];
                simd::widen(level, &fmt, &src, &mut got);
                assert_eq!(got, want, "{level} {dtype}");
            }
            if dtype == DType::Q5_0 {
                continue; // read-only format: llama.cpp writes it, we never do
            }
            // quantized from real values, decoded by us: close to the input
            let x = rng.vec(n);
            let mut q = Vec::new();
            loader::quant::quantize_row(dtype, &x, &mut q).unwrap();
            let mut back = vec![0f32; n];
            simd::widen(Level::detect(), &fmt, &q, &mut back);
            let err: f32 = x
                .iter()
                .zip(&back)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f32>()
                .sqrt();
            let norm: f32 = x.iter().map(|a| a * a).sum::<f32>().sqrt();
            let bound = match dtype {
                DType::Q8_0 => 0.01,
                DType::Q6K => 0.03,
                _ => 0.1,
            };
            assert!(
                err / norm < bound,
                "{dtype}: round trip rel error {}",
                err / norm
            );
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
    ] {
        let k = 256;
        // heads: 5 heads of 24 rows, 3 rows apart from a first row of 7
        let heads = crate::Heads {
            count: 5,
            first: 7,
            stride: 27,
            rows: 24,
        };
        let rows = heads.first + 4 * heads.stride + heads.rows + 2;
        let t = Tensor::from_bytes("w", dtype, vec![rows, k], stored(dtype, rows * k, &mut rng));
        let w = Matrix::dense(t.unwrap()).unwrap();
        // experts: rows per expert 0, 1, 2, 0, 5, 3 (5 takes the panel path)
        let experts: Vec<Matrix> = (0..6)
            .map(|_| {
                let t =
                    Tensor::from_bytes("e", dtype, vec![40, k], stored(dtype, 40 * k, &mut rng));
                Matrix::dense(t.unwrap()).unwrap()
            })
            .collect();
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

/// SwiGLU's join at every level against f64, on lengths around the vector width, with
/// values past exp's range either way (where silu is 0 or the value itself).
#[test]
fn silu_mul_matches_f64_at_every_level() {
    let mut rng = Rng(91);
    for level in Level::available() {
        for n in [0, 1, 15, 16, 17, 100] {
            let mut g: Vec<f32> = rng.vec(n).iter().map(|v| v * 40.0).collect();
            if n > 3 {
                g[0] = -200.0;
                g[1] = 200.0;
                g[2] = 0.0;
            }
            let u = rng.vec(n);
            let mut got = g.clone();
            simd::silu_mul(level, &mut got, &u);
            for i in 0..n {
                let x = g[i] as f64;
                let want = x / (1.0 + (-x).exp()) * u[i] as f64;
                let err = (got[i] as f64 - want).abs();
                assert!(
                    err <= 1e-6 * want.abs() + 1e-30,
                    "{level} n={n} x={x}: {} vs {want}",
                    got[i]
                );
            }
        }
    }
}

/// An 8-bit cache's rows widened to f32 in one pass are, at every level, exactly the bf16
/// rows every other reader attends over, widened: whole and partial blocks, rope parts of
/// whole vectors and with tails, rows in any order.
#[test]
fn q8_rows_to_f32_are_the_bf16_rows_widened() {
    use crate::kv_q8::{Q8Rows, quantize_row, row_bytes, row_to_bf16};
    let mut rng = Rng(0x0b8f);
    for (r, p) in [(32, 8), (512, 32), (512, 64), (40, 13), (64, 5), (96, 0)] {
        let (row, rb, n) = (r + p, row_bytes(r, p), 11);
        let mut bytes = vec![0u8; n * rb];
        for (i, dst) in bytes.chunks_exact_mut(rb).enumerate() {
            // rows of several magnitudes, one with an outlier
            let mut v: Vec<f32> = rng.vec(row).iter().map(|x| x * (1 + i) as f32).collect();
            if i == 3 {
                v[r / 2] = 300.0;
            }
            quantize_row(&v, r, p, dst);
        }
        let f = Q8Rows {
            bytes: &bytes,
            r,
            p,
        };
        // value offsets, as the cache counts them: out of order, one repeated
        let offs: Vec<usize> = [7, 0, 3, 10, 3, 1, 9].iter().map(|&j| j * row).collect();
        let mut want16 = vec![0u16; row];
        for level in Level::available() {
            let mut got = vec![f32::NAN; offs.len() * row];
            simd::q8_rows_to_f32(level, &f, &offs, &mut got);
            for (&o, g) in offs.iter().zip(got.chunks_exact(row)) {
                let b = o / row * rb;
                row_to_bf16(&bytes[b..b + rb], r, p, &mut want16);
                for (i, (&w, &g)) in want16.iter().zip(g).enumerate() {
                    let want = f32::from_bits((w as u32) << 16);
                    assert_eq!(
                        g.to_bits(),
                        want.to_bits(),
                        "{level:?} r {r} p {p} row {o} value {i}"
                    );
                }
            }
        }
    }
}
