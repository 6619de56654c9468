//! Every SIMD level against the portable oracle, format by format, on awkward sizes: tails
//! shorter than a vector, partial FP8 scale blocks, panels and token counts that do not
//! fill a register tile.

use half::f16;
use loader::{DType, Tensor};

use super::dispatch::Level;
use super::simd::{self, Fmt, GemmPanel, portable};
use crate::cpu::CpuBackend;
use crate::matrix::Matrix;

// On wasm32 these tests run under wasm-bindgen-test (scripts/build-wasm.sh runs them in
// Node, with SIMD128 among the levels); natively `#[test]` stays libtest's.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

/// Thread counts the backends are tested with: wasm32-unknown-unknown has no threads.
pub(super) const THREADS: &[usize] = if cfg!(target_arch = "wasm32") {
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

/// The bf16 decode kernel over even/odd-rearranged activations, one row against the
/// oracle's widened row, on lengths around its 32- and 64-value steps.
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
            let mut got = [f32::NAN];
            simd::dot_rows_bf16_pairs(level, &src, 2 * n, &x, &pairs, &mut got);
            close(
                got[0],
                portable::dot(&w, &x),
                norm,
                &format!("{level} bf16 pairs n={n}"),
            );
        }
    }
}

/// The bf16 decode kernel's four-stream form over a run of rows: row counts that leave
/// streams short (the repeated row's sum dropped), lengths with and without a tail, rows
/// stored farther apart than their length; each row against the oracle's widened row.
#[test]
fn bf16_pair_row_runs_match_the_oracle_at_every_level() {
    let mut rng = Rng(37);
    for level in Level::available() {
        for k in [32, 37, 64, 100, 1024, 1031] {
            for (n, pad) in [(1, 0), (3, 0), (4, 2), (5, 0), (9, 6), (17, 0)] {
                let rb = 2 * (k + pad);
                let src = stored(DType::BF16, n * (k + pad), &mut rng);
                let x = rng.vec(k);
                let mut pairs = Vec::new();
                simd::bf16_pairs(&x, &mut pairs);
                let mut got = vec![f32::NAN; n];
                simd::dot_rows_bf16_pairs(level, &src, rb, &x, &pairs, &mut got);
                for (r, g) in got.iter().enumerate() {
                    let mut w = vec![0f32; k];
                    portable::widen(&Fmt::BF16, &src[r * rb..r * rb + 2 * k], &mut w);
                    let norm: f32 = w.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
                    close(
                        *g,
                        portable::dot(&w, &x),
                        norm,
                        &format!("{level} bf16 pair rows k={k} n={n} row {r}"),
                    );
                }
            }
        }
    }
}

/// The f32 and f16 decode rows over a run, each row against the oracle's widened row:
/// lengths with and without whole 16s, short streams, rows stored farther apart than their
/// length.
#[test]
fn wide_row_runs_match_the_oracle_at_every_level() {
    let mut rng = Rng(47);
    for level in Level::available() {
        for dtype in [DType::F32, DType::F16] {
            let size = if dtype == DType::F32 { 4 } else { 2 };
            for k in [1, 16, 37, 1024, 1031] {
                for (n, pad) in [(1, 0), (3, 1), (4, 0), (9, 5), (17, 0)] {
                    let rb = size * (k + pad);
                    let src = stored(dtype, n * (k + pad), &mut rng);
                    let x = rng.vec(k);
                    let fmt = fmt_of(dtype, &[], 0);
                    let mut got = vec![f32::NAN; n];
                    simd::dot_rows_wide(level, &fmt, &src, rb, &x, &mut got);
                    for (r, g) in got.iter().enumerate() {
                        let mut w = vec![0f32; k];
                        portable::widen(&fmt, &src[r * rb..r * rb + size * k], &mut w);
                        let norm: f32 = w.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
                        close(
                            *g,
                            portable::dot(&w, &x),
                            norm,
                            &format!("{level} {dtype} rows k={k} n={n} row {r}"),
                        );
                    }
                }
            }
        }
    }
}

/// The FP8 decode rows over a run with block scales, each row against the oracle's widened
/// row: scale blocks of 16 and 128 columns (AVX-512's four-row kernel) and of 24 (a row at a
/// time), a last block partial and a tail short of 16, short streams, runs that start inside
/// a block of scale rows and cross into the next, rows stored farther apart than their length.
#[test]
fn fp8_row_runs_match_the_oracle_at_every_level() {
    let mut rng = Rng(41);
    for level in Level::available() {
        for (k, bc) in [(128, 128), (300, 128), (100, 16), (72, 24), (7168, 128)] {
            for (n, row0, b0) in [(1, 0, 128), (3, 5, 2), (9, 1, 3), (17, 127, 128)] {
                let rb = k + 3;
                let src = stored(DType::F8E4M3, n * rb, &mut rng);
                let grid_cols = k.div_ceil(bc) + 1;
                let grid_rows = (row0 + n - 1) / b0 + 1;
                let grid: Vec<f32> = (0..grid_rows * grid_cols)
                    .map(|_| rng.f().abs() + 0.01)
                    .collect();
                let run = simd::Fp8Run {
                    bytes: &src,
                    rb,
                    grid: &grid,
                    grid_cols,
                    row0,
                    block: [b0, bc],
                };
                let x = rng.vec(k);
                let mut got = vec![f32::NAN; n];
                simd::dot_rows_fp8(level, &run, &x, &mut got);
                for (r, g) in got.iter().enumerate() {
                    let (fmt, row) = run.row(r, k);
                    let mut w = vec![0f32; k];
                    portable::widen(&fmt, row, &mut w);
                    let norm: f32 = w.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
                    close(
                        *g,
                        portable::dot(&w, &x),
                        norm,
                        &format!("{level} fp8 rows k={k} block {bc} n={n} row0={row0} row {r}"),
                    );
                }
            }
        }
    }
}

/// Rounding to bf16 in place at every level, bit for bit as `bf16_bits`: ties both ways,
/// subnormals, the largest finite values (which round to infinity), infinities and NaNs,
/// negative values, and a tail short of 16.
#[test]
fn rounding_to_bf16_matches_bf16_bits_at_every_level() {
    let mut rng = Rng(53);
    let mut bits: Vec<u32> = vec![
        0x3f80_8000,
        0x3f81_8000,
        0xbf80_8000,
        0x3f80_7fff,
        0x3f80_8001,
        0x0000_0001,
        0x0000_8000,
        0x0001_8000,
        0x807f_ffff,
        0x7f7f_ffff,
        0xff7f_ffff,
        0x7f80_0000,
        0xff80_0000,
        0x7f80_0001,
        0xffc0_0000,
        0x7fff_ffff,
        0,
        0x8000_0000,
    ];
    bits.extend(rng.vec(45).iter().map(|v| v.to_bits()));
    for level in Level::available() {
        let mut got: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        simd::round_to_bf16(level, &mut got);
        for (g, &b) in got.iter().zip(&bits) {
            let want = (crate::bf16_bits(f32::from_bits(b)) as u32) << 16;
            assert_eq!(g.to_bits(), want, "{level} {b:#010x}");
        }
    }
}

/// The decode attention's query pairs at every level against their definition: whole and
/// partial groups of 16 rows, lengths with and without whole 32s and odd ones, more lanes
/// than the rows' groups; lanes past the rows keep what they held.
#[test]
fn query_pairs_match_their_definition_at_every_level() {
    let mut rng = Rng(43);
    for level in Level::available() {
        for (rows, k, lanes) in [
            (16, 576, 16),
            (5, 37, 16),
            (17, 64, 32),
            (33, 100, 64),
            (128, 576, 128),
            (3, 31, 16),
        ] {
            // bf16 values, as the attention rounds the queries first
            let q: Vec<f32> = rng
                .vec(rows * k)
                .iter()
                .map(|&v| half::bf16::from_f32(v).to_f32())
                .collect();
            let sentinel = 0xdead_beef;
            let mut got = vec![sentinel; k.div_ceil(2) * lanes];
            simd::pair_queries(level, &q, rows, k, lanes, &mut got);
            for d2 in 0..k.div_ceil(2) {
                for i in 0..lanes {
                    let want = if i >= rows {
                        sentinel
                    } else {
                        let lo = half::bf16::from_f32(q[i * k + 2 * d2]).to_bits() as u32;
                        let hi = if 2 * d2 + 1 < k {
                            half::bf16::from_f32(q[i * k + 2 * d2 + 1]).to_bits() as u32
                        } else {
                            0
                        };
                        lo | hi << 16
                    };
                    assert_eq!(
                        got[d2 * lanes + i],
                        want,
                        "{level} rows={rows} k={k} lanes={lanes} pair {d2} row {i}"
                    );
                }
            }
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

/// The decode attention's transposed queries, at every level, are the rows' values moved
/// (bit for bit) with zeros in the padding lanes: row counts that fill no group of 8 and
/// lengths with tails past the last 8.
#[test]
fn transposed_queries_are_the_rows_moved() {
    let mut rng = Rng(0x7a05);
    for (rows, k, lanes) in [
        (1, 8, 16),
        (5, 13, 16),
        (16, 544, 16),
        (17, 21, 32),
        (32, 7, 32),
    ] {
        let q = rng.vec(rows * k);
        for level in Level::available() {
            let mut qt = vec![f32::NAN; k * lanes];
            simd::transpose_queries(level, &q, rows, k, lanes, &mut qt);
            for d in 0..k {
                for i in 0..lanes {
                    let want = if i < rows { q[i * k + d] } else { 0.0 };
                    assert_eq!(
                        qt[d * lanes + i].to_bits(),
                        want.to_bits(),
                        "{level} rows {rows} k {k} lane {i} value {d}"
                    );
                }
            }
        }
    }
}

/// The row-at-a-time levels take a run's rows in the four streams' order, each row once.
#[test]
fn four_stream_order_visits_every_row_once() {
    let got: Vec<usize> = simd::four_stream_order(6).collect();
    assert_eq!(got, [0, 2, 4, 1, 3, 5]);
    for n in 0..40 {
        let mut rows: Vec<usize> = simd::four_stream_order(n).collect();
        assert_eq!(rows.len(), n, "n = {n}");
        if n >= 4 {
            // the first pass starts the four streams
            let q = n.div_ceil(4);
            assert_eq!(rows[..3], [0, q, 2 * q], "n = {n}");
        }
        rows.sort_unstable();
        assert!(rows.iter().copied().eq(0..n), "n = {n}");
    }
}

/// The rows a tile's groups fetch ahead are all the rows, each once, in order.
#[test]
fn fetch_ahead_shares_cover_the_rows_once() {
    let offs: Vec<usize> = (0..40).map(|i| 1000 + 576 * i).collect();
    for n in 0..offs.len() {
        for groups in 1..10 {
            let all = simd::Ahead {
                offs: &offs[..n],
                ..Default::default()
            };
            let got: Vec<usize> = (0..groups)
                .flat_map(|g| all.share(g, groups).offs.to_vec())
                .collect();
            assert_eq!(got, &offs[..n], "{n} rows over {groups} groups");
        }
    }
    // addresses as the cache stores its rows: 2 or 4 bytes a value; none of an 8-bit cache
    let (kv16, kv32) = (vec![0u16; 40 * 576], vec![0f32; 40 * 576]);
    let b16 = simd::Ahead::of(&crate::KvRows::Bf16(&kv16), &offs, 576);
    assert_eq!(b16.row(3) as usize - kv16.as_ptr() as usize, 2 * offs[3]);
    assert_eq!(b16.lines(), 1152 / 64 + 1);
    let f32s = simd::Ahead::of(&crate::KvRows::F32(&kv32), &offs, 576);
    assert_eq!(f32s.row(3) as usize - kv32.as_ptr() as usize, 4 * offs[3]);
    assert_eq!(f32s.lines(), 2304 / 64 + 1);
    let q8 = crate::kv_q8::Q8Rows {
        bytes: &[],
        r: 512,
        p: 64,
    };
    assert!(
        simd::Ahead::of(&crate::KvRows::Q8(q8), &offs, 576)
            .offs
            .is_empty()
    );
}
