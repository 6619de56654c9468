//! CPU kernels against plain f64 definitions, on awkward sizes (tails, partial FP8 blocks).

use loader::{DType, Tensor};

use crate::backend::{Backend, KvRows, MlaAttention};
use crate::cpu::CpuBackend;
use crate::matrix::Matrix;

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// One backend per kernel level this CPU has, each with 1 and 3 threads (3 so shares split
/// unevenly on small matrices).
fn backends() -> Vec<CpuBackend> {
    crate::Level::available()
        .into_iter()
        .flat_map(|level| [1, 3].map(|threads| backend(level, threads)))
        .collect()
}

/// A backend forced to `level` on `threads` threads.
pub(super) fn backend(level: crate::Level, threads: usize) -> CpuBackend {
    CpuBackend::with_options(&crate::CpuOptions {
        level: Some(level),
        threads: Some(threads),
        ..Default::default()
    })
    .unwrap()
}

fn f32_matrix(rows: usize, cols: usize, seed: u64) -> (Matrix, Vec<f32>) {
    let v = values(rows * cols, seed);
    let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let t = Tensor::from_bytes("w", DType::F32, vec![rows, cols], bytes).unwrap();
    (Matrix::dense(t).unwrap(), v)
}

/// An FP8 matrix with scale grid for `block`, and its dequantized f32 values.
fn fp8_matrix(rows: usize, cols: usize, block: [usize; 2]) -> (Matrix, Vec<f32>) {
    let codes: Vec<u8> = (0..rows * cols)
        .map(|i| {
            let c = (i * 37 % 251) as u8;
            if c & 0x7f == 0x7f { 0x3c } else { c } // avoid NaN codes
        })
        .collect();
    let grid = [rows.div_ceil(block[0]), cols.div_ceil(block[1])];
    let scales: Vec<f32> = (0..grid[0] * grid[1])
        .map(|i| 0.01 * (i + 1) as f32)
        .collect();
    let mut dense = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            dense[r * cols + c] = loader::fp8_e4m3_to_f32(codes[r * cols + c])
                * scales[(r / block[0]) * grid[1] + c / block[1]];
        }
    }
    let w = Tensor::from_bytes("w", DType::F8E4M3, vec![rows, cols], codes).unwrap();
    let s = Tensor::from_bytes(
        "w_scale_inv",
        DType::F32,
        grid.to_vec(),
        scales.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
    .unwrap();
    (Matrix::fp8(w, s, block).unwrap(), dense)
}

fn bf16_matrix(rows: usize, cols: usize) -> (Matrix, Vec<f32>) {
    let v = values(rows * cols, 7);
    let bits: Vec<u16> = v.iter().map(|x| (x.to_bits() >> 16) as u16).collect();
    let dense = bits.iter().map(|&b| loader::bf16_to_f32(b)).collect();
    let bytes = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
    let t = Tensor::from_bytes("w", DType::BF16, vec![rows, cols], bytes).unwrap();
    (Matrix::dense(t).unwrap(), dense)
}

fn matmul_ref(x: &[f32], w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let n = x.len() / cols;
    let mut y = vec![0f32; n * rows];
    for t in 0..n {
        for r in 0..rows {
            y[t * rows + r] = (0..cols)
                .map(|c| x[t * cols + c] as f64 * w[r * cols + c] as f64)
                .sum::<f64>() as f32;
        }
    }
    y
}

fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "element {i}: {a} vs {b}"
        );
    }
}

#[test]
fn fp8_rows_dequantize_with_partial_edge_blocks() {
    // [200, 300] in 128x128 blocks: a 72-row and a 44-column partial edge.
    let (m, dense) = fp8_matrix(200, 300, [128, 128]);
    let mut row = vec![0f32; 300];
    for r in [0, 127, 128, 199] {
        m.read_row(r, &mut row);
        assert_eq!(&row[..], &dense[r * 300..(r + 1) * 300], "row {r}");
    }
    // A view that starts inside a block keeps the stored tensor's block coordinates.
    let v = m.rows_view(120, 20);
    v.read_row(10, &mut row);
    assert_eq!(&row[..], &dense[130 * 300..131 * 300]);
}

#[test]
fn fp8_rejects_a_wrong_scale_grid() {
    let codes = vec![0u8; 200 * 300];
    let w = Tensor::from_bytes("w", DType::F8E4M3, vec![200, 300], codes).unwrap();
    let s = Tensor::from_bytes("w_scale_inv", DType::F32, vec![2, 2], vec![0; 16]).unwrap();
    let e = Matrix::fp8(w, s, [128, 128]).unwrap_err();
    assert!(e.0.contains("expected [2, 3]"), "{}", e.0);
}

#[test]
fn matmul_over_every_format() {
    for be in backends() {
        matmul_over_every_format_on(&be);
    }
}

fn matmul_over_every_format_on(be: &CpuBackend) {
    // (48, 96, 19): whole panels of 16 rows and 32-column steps, the AMX kernel's shapes
    for (rows, cols, n) in [
        (1, 1, 1),
        (7, 13, 3),
        (33, 129, 5),
        (200, 300, 2),
        (48, 96, 19),
    ] {
        let x = values(n * cols, 3);
        let cases = [
            f32_matrix(rows, cols, 1),
            bf16_matrix(rows, cols),
            fp8_matrix(rows, cols, [128, 128]),
        ];
        for (m, dense) in cases {
            let mut y = vec![0f32; n * rows];
            be.matmul(&x, &m, &mut y);
            assert_close(&y, &matmul_ref(&x, &dense, rows, cols), 1e-5);

            // xᵀ-side product: y[n, cols] = x[n, rows] · W
            let xt = values(n * rows, 9);
            let mut yt = vec![0f32; n * cols];
            be.matmul_t(&xt, &m, &mut yt);
            let mut wt = vec![0f32; rows * cols];
            for r in 0..rows {
                for c in 0..cols {
                    wt[c * rows + r] = dense[r * cols + c];
                }
            }
            assert_close(&yt, &matmul_ref(&xt, &wt, cols, rows), 1e-5);
        }
    }
}

/// bf16 weights in the shapes the AMX kernel takes (whole panels of 16 rows, 32-column
/// steps; one and two panels at a time, tiles of 16 tokens whole and partial, rows in more
/// than one block where k is long): with f32
/// activations the product is the f64 one to f32 rounding, with `--act-type bf16` (AMX's
/// tiles where the CPU has them) the f64 product of the rounded activations.
#[test]
fn bf16_prefill_products_in_tile_shapes() {
    let small: &[usize] = &[4, 15, 16, 17, 40];
    for (rows, cols, ns) in [
        (48, 96, small),
        (16, 32, small),
        (64, 160, small),
        (64, 8192, &[17, 40][..]),
    ] {
        let (w, dense) = bf16_matrix(rows, cols);
        for level in crate::Level::available() {
            for threads in [1, 3] {
                for bf16_activations in [false, true] {
                    let be = CpuBackend::with_options(&crate::CpuOptions {
                        level: Some(level),
                        threads: Some(threads),
                        bf16_activations,
                        ..Default::default()
                    })
                    .unwrap();
                    for &n in ns {
                        // values over a wide range
                        let x: Vec<f32> = values(n * cols, 60 + n as u64)
                            .iter()
                            .enumerate()
                            .map(|(i, v)| v * [1.0, 1e-3, 37.0, 1e4][i % 4])
                            .collect();
                        let mut got = vec![f32::NAN; n * rows];
                        be.matmul(&x, &w, &mut got);
                        let xr: Vec<f32> = if be.bf16_activations() {
                            x.iter()
                                .map(|&v| half::bf16::from_f32(v).to_f32())
                                .collect()
                        } else {
                            x.clone()
                        };
                        let want = matmul_ref(&xr, &dense, rows, cols);
                        // relative to the sum of |products|, the f32 accumulation's scale
                        let mut mag = vec![0f32; n * rows];
                        for t in 0..n {
                            for r in 0..rows {
                                mag[t * rows + r] = (0..cols)
                                    .map(|c| (xr[t * cols + c] * dense[r * cols + c]).abs())
                                    .sum();
                            }
                        }
                        for (i, ((a, b), s)) in got.iter().zip(&want).zip(&mag).enumerate() {
                            assert!(
                                (a - b).abs() <= 1e-6 * s,
                                "{level} t{threads} bf16 acts {bf16_activations} [{rows}x{cols}] \
                                 n={n} at {i}: {a} vs {b} (sum of |products| {s})"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// `--act-type bf16`: prefill products of bf16 weights equal the f64 product of the
/// weights and the activations rounded to bf16 (k with a masked tail, uneven shares,
/// token counts around the tiles'); decode products and other formats are the f32 path's,
/// bit for bit. Where the CPU has no bf16 products the option changes nothing.
#[test]
fn bf16_activations_round_only_bf16_prefill_products() {
    let (w, dense) = bf16_matrix(37, 70);
    let (wf, dense_f) = f32_matrix(37, 70, 5);
    let round = |x: &[f32]| -> Vec<f32> {
        x.iter()
            .map(|&v| half::bf16::from_f32(v).to_f32())
            .collect()
    };
    for level in crate::Level::available() {
        for threads in [1, 3] {
            let be = CpuBackend::with_options(&crate::CpuOptions {
                level: Some(level),
                threads: Some(threads),
                bf16_activations: true,
                ..Default::default()
            })
            .unwrap();
            let plain = backend(level, threads);
            assert_eq!(be.bf16_activations(), crate::cpu::simd::has_bf16_dot(level));
            for n in [1, 3, 4, 5, 9] {
                let x = values(n * 70, 40 + n as u64);
                let mut got = vec![f32::NAN; n * 37];
                let mut f32_path = vec![f32::NAN; n * 37];
                be.matmul(&x, &w, &mut got);
                plain.matmul(&x, &w, &mut f32_path);
                if n < 4 || !be.bf16_activations() {
                    assert_eq!(got, f32_path, "{level} t{threads} n={n}: f32 path");
                } else {
                    let want = matmul_ref(&round(&x), &dense, 37, 70);
                    assert_close(&got, &want, 1e-5);
                    assert!(
                        got != f32_path,
                        "{level} t{threads} n={n}: activations were not rounded"
                    );
                }
                // other formats never round
                let mut a = vec![f32::NAN; n * 37];
                let mut b = vec![f32::NAN; n * 37];
                be.matmul(&x, &wf, &mut a);
                plain.matmul(&x, &wf, &mut b);
                assert_eq!(a, b, "{level} t{threads} n={n}: f32 weights");
                assert_close(&b, &matmul_ref(&x, &dense_f, 37, 70), 1e-4);
            }
        }
    }
}

#[test]
fn rms_norm_rope_softmax() {
    for be in backends() {
        rms_norm_rope_softmax_on(&be);
    }
}

fn rms_norm_rope_softmax_on(be: &CpuBackend) {
    let x = values(3 * 37, 5);
    let w = values(37, 6);
    let mut out = vec![0f32; x.len()];
    be.rms_norm(&x, &w, 1e-6, &mut out);
    for t in 0..3 {
        let row = &x[t * 37..(t + 1) * 37];
        let ms = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / 37.0;
        let want: Vec<f32> = row
            .iter()
            .zip(&w)
            .map(|(v, g)| (*v as f64 / (ms + 1e-6).sqrt() * *g as f64) as f32)
            .collect();
        assert_close(&out[t * 37..(t + 1) * 37], &want, 1e-6);
    }

    // Interleaved pairs: (x0, x1) rotated by angle 0, (x2, x3) by angle 1.
    let mut v = vec![1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0]; // two heads of 4
    let (c, s) = ([1.0, 1f32.cos()], [0.0, 1f32.sin()]);
    be.rope(&mut v, &c, &s);
    let (c1, s1) = (1f32.cos(), 1f32.sin());
    let want = [1.0, 2.0, 3.0 * c1 - 4.0 * s1, 3.0 * s1 + 4.0 * c1];
    assert_close(&v[..4], &want, 1e-6);
    assert_close(&v[4..], &want, 1e-6);

    let mut p = vec![1000.0, 1001.0, f32::NEG_INFINITY];
    be.softmax(&mut p);
    let e = 1f64.exp();
    assert_close(
        &p,
        &[(1.0 / (1.0 + e)) as f32, (e / (1.0 + e)) as f32, 0.0],
        1e-6,
    );
}

#[test]
fn mla_attention_is_causal_softmax_over_latents() {
    for be in backends() {
        mla_attention_is_causal_softmax_over_latents_on(&be);
    }
}

fn mla_attention_is_causal_softmax_over_latents_on(be: &CpuBackend) {
    let (h, r, p, start, tokens) = (3, 5, 4, 2, 3);
    let row = r + p;
    // Positions live in scattered blocks of 2: logical block i is physical block blocks[i].
    let (bs, blocks) = (2, [3u32, 0, 2]);
    let logical = values((start + tokens) * row, 11);
    let mut kv = vec![f32::NAN; 4 * bs * row];
    for j in 0..start + tokens {
        let at = (blocks[j / bs] as usize * bs + j % bs) * row;
        kv[at..at + row].copy_from_slice(&logical[j * row..(j + 1) * row]);
    }
    let q_latent = values(tokens * h * r, 12);
    let q_pe = values(tokens * h * p, 13);
    let a = MlaAttention {
        q_latent: &q_latent,
        q_pe: &q_pe,
        kv: KvRows::F32(&kv),
        blocks: &blocks,
        block_size: bs,
        n_heads: h,
        kv_lora_rank: r,
        rope_dim: p,
        start_pos: start,
        scale: 0.7,
    };
    let mut out = vec![0f32; tokens * h * r];
    be.mla_attention(&a, &mut out);
    for t in 0..tokens {
        for head in 0..h {
            let len = start + t + 1;
            let s: Vec<f64> = (0..len)
                .map(|j| {
                    let ql = &q_latent[(t * h + head) * r..][..r];
                    let qp = &q_pe[(t * h + head) * p..][..p];
                    let k = &logical[j * row..(j + 1) * row];
                    0.7 * (ql
                        .iter()
                        .zip(&k[..r])
                        .map(|(a, b)| (*a * *b) as f64)
                        .sum::<f64>()
                        + qp.iter()
                            .zip(&k[r..])
                            .map(|(a, b)| (*a * *b) as f64)
                            .sum::<f64>())
                })
                .collect();
            let m = s.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
            let want: Vec<f32> = (0..r)
                .map(|i| {
                    (0..len)
                        .map(|j| (s[j] - m).exp() / z * logical[j * row + i] as f64)
                        .sum::<f64>() as f32
                })
                .collect();
            assert_close(&out[(t * h + head) * r..][..r], &want, 1e-5);
        }
    }
}

/// A long prefill (more query rows than chunks of the preferred size, 320 rows on 1 thread) at every level and thread count equals the
/// single-threaded portable result.
#[test]
fn mla_attention_long_prefill_agrees_across_levels_and_threads() {
    let (h, r, p, start, tokens, bs) = (4usize, 40usize, 8usize, 5usize, 80usize, 4usize);
    let row = r + p;
    let nblocks = (start + tokens).div_ceil(bs);
    let blocks: Vec<u32> = (0..nblocks as u32).rev().collect();
    let kv = values(nblocks * bs * row, 21);
    let q_latent = values(tokens * h * r, 22);
    let q_pe = values(tokens * h * p, 23);
    let a = MlaAttention {
        q_latent: &q_latent,
        q_pe: &q_pe,
        kv: KvRows::F32(&kv),
        blocks: &blocks,
        block_size: bs,
        n_heads: h,
        kv_lora_rank: r,
        rope_dim: p,
        start_pos: start,
        scale: 0.3,
    };
    let oracle = backend(crate::Level::Scalar, 1);
    let mut want = vec![0f32; tokens * h * r];
    oracle.mla_attention(&a, &mut want);
    for be in backends() {
        let mut got = vec![f32::NAN; tokens * h * r];
        be.mla_attention(&a, &mut got);
        assert_close(&got, &want, 1e-5);
    }
}

/// Few query rows (decode, short verifies) take the split-positions path at every SIMD
/// level: tiles of positions over threads, online softmax, merged partial sums. Against the
/// scalar level's two-pass form on shapes that hit every edge: rows not a multiple of the
/// 16 lanes or of the register tiles, latent widths and row lengths with vector tails,
/// scattered blocks, rows that see nothing of a later chunk (causal), and scales peaked
/// enough that the running maximum moves between tiles; with the cache in f32 and in bf16
/// (which the kernels widen exactly, so the bound is the same; with AMX, the first two
/// shapes' scores over a bf16 cache run on tiles, as bf16 products like every level's).
#[test]
fn mla_attention_split_positions_match_the_two_pass_oracle() {
    // (heads, kv_lora_rank, rope_dim, block_size, start_pos, tokens, scale)
    let shapes: [(usize, usize, usize, usize, usize, usize, f32); 13] = [
        // rows of whole steps of 32 in blocks of whole groups of 16: AMX's scores; with
        // whole tiles of 16 query rows and latents of whole steps of 32, its output too
        // (tiles of 128 positions: a last tile of two steps of 32, of three, and two head
        // tiles with a last of three)
        (16, 64, 32, 16, 300, 1, 0.5),
        (16, 96, 32, 16, 340, 1, 0.5),
        (16, 64, 32, 16, 200, 2, 0.8),
        (32, 96, 32, 32, 130, 2, 1.0),
        (20, 96, 32, 32, 130, 2, 1.0),
        (16, 80, 8, 16, 150, 1, 0.05),
        (16, 80, 8, 16, 150, 1, 1.5),
        (5, 64, 4, 4, 70, 3, 0.3),
        (16, 32, 16, 8, 200, 2, 0.7),
        (7, 40, 8, 16, 60, 6, 1.0),
        (16, 72, 8, 16, 1000, 1, 0.5),
        (3, 16, 4, 2, 0, 1, 0.4),
        // an odd row (the bf16 scores' last pair alone) and latents of one step of 32 and
        // one column
        (5, 33, 4, 4, 70, 1, 0.3),
    ];
    let oracle = backend(crate::Level::Scalar, 1);
    for (n, &(h, r, p, bs, start, tokens, scale)) in shapes.iter().enumerate() {
        let row = r + p;
        let nblocks = (start + tokens).div_ceil(bs);
        // every other physical block, backwards, so logical order is scattered
        let blocks: Vec<u32> = (0..nblocks as u32).rev().map(|b| 2 * b + 1).collect();
        let kv = values((2 * nblocks + 2) * bs * row, 31 + n as u64);
        // the same cache stored as bf16 (`--cache-type bf16`)
        let kv16: Vec<u16> = kv
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_bits())
            .collect();
        let q_latent = values(tokens * h * r, 41 + n as u64);
        let q_pe = values(tokens * h * p, 51 + n as u64);
        // and as the 8-bit cache (`--cache-type q8_0`), whose rows read as the bf16 values
        // they convert to: the oracle over it must be the oracle over those, bit for bit
        let kv8 = q8_cache(&kv, r, p);
        let q8 = crate::kv_q8::Q8Rows { bytes: &kv8, r, p };
        let mut deq16 = vec![0u16; kv.len()];
        for (b, out) in kv8
            .chunks_exact(crate::kv_q8::row_bytes(r, p))
            .zip(deq16.chunks_exact_mut(row))
        {
            crate::kv_q8::row_to_bf16(b, r, p, out);
        }
        let at = |kv| MlaAttention {
            q_latent: &q_latent,
            q_pe: &q_pe,
            kv,
            blocks: &blocks,
            block_size: bs,
            n_heads: h,
            kv_lora_rank: r,
            rope_dim: p,
            start_pos: start,
            scale,
        };
        let (mut via8, mut via16) = (vec![0f32; tokens * h * r], vec![0f32; tokens * h * r]);
        oracle.mla_attention(&at(KvRows::Q8(q8)), &mut via8);
        oracle.mla_attention(&at(KvRows::Bf16(&deq16)), &mut via16);
        assert!(
            via8.iter()
                .zip(&via16)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "shape {n}: the 8-bit cache does not read as its bf16 values"
        );
        for cache in [KvRows::F32(&kv), KvRows::Bf16(&kv16), KvRows::Q8(q8)] {
            let a = MlaAttention {
                q_latent: &q_latent,
                q_pe: &q_pe,
                kv: cache,
                blocks: &blocks,
                block_size: bs,
                n_heads: h,
                kv_lora_rank: r,
                rope_dim: p,
                start_pos: start,
                scale,
            };
            let mut want = vec![0f32; tokens * h * r];
            oracle.mla_attention(&a, &mut want);
            // AMX's output product rounds the probabilities to bf16: the prefill test's
            // bound (values here are at most 1)
            let bf16_p = match cache {
                KvRows::Bf16(_) => bs.is_multiple_of(16),
                // converted a tile at a time into rows one after another
                KvRows::Q8(_) => true,
                KvRows::F32(_) => false,
            } && (h * tokens).is_multiple_of(16)
                && r.is_multiple_of(32)
                && (r + p).is_multiple_of(32);
            for be in backends() {
                let mut got = vec![f32::NAN; tokens * h * r];
                be.mla_attention(&a, &mut got);
                // so does the AVX-512 BF16 output product over a bf16 (or converted
                // 8-bit) tile, on its columns in whole steps of 32
                let dot_p = !matches!(cache, KvRows::F32(_))
                    && crate::cpu::simd::has_bf16_dot(be.level())
                    && r >= 32;
                if (bf16_p && be.level() == crate::Level::Amx) || dot_p {
                    assert_bf16_probabilities_close(&got, &want, &format!("shape {n}"));
                } else {
                    assert_close(&got, &want, 2e-5);
                }
            }
        }
    }
}

/// `kv`'s rows of `r + p` values as an 8-bit cache (`--cache-type q8_0`).
fn q8_cache(kv: &[f32], r: usize, p: usize) -> Vec<u8> {
    let rb = crate::kv_q8::row_bytes(r, p);
    let mut bytes = vec![0u8; kv.len() / (r + p) * rb];
    for (row, out) in kv.chunks_exact(r + p).zip(bytes.chunks_exact_mut(rb)) {
        crate::kv_q8::quantize_row(row, r, p, out);
    }
    bytes
}

/// Attention outputs whose probabilities were rounded to bf16, against f32 ones: each
/// output moves by at most 2^-8 of the values' largest (1 in these tests), and typically
/// by a tenth of that, which a misplaced value would blow.
fn assert_bf16_probabilities_close(got: &[f32], want: &[f32], what: &str) {
    let errs: Vec<f32> = got.iter().zip(want).map(|(g, w)| (g - w).abs()).collect();
    let worst = errs.iter().cloned().fold(0f32, f32::max);
    let mean = errs.iter().sum::<f32>() / errs.len() as f32;
    assert!(
        worst <= 1.0 / 256.0 && mean <= 1.0 / 2560.0,
        "{what}: worst {worst:.2e}, mean {mean:.2e}"
    );
}

/// A long prefill over a bf16 cache: at `Level::Amx` both products run on the bf16 tiles
/// (the probabilities rounded to bf16 too), at the other levels as the two-pass form.
/// Against the scalar oracle (bf16 products for the scores, f32 probabilities): shapes with
/// a partial last tile of query rows, rows padded to whole steps of 32, positions not a
/// multiple of 16, a start inside the cache, scattered blocks, and contexts of several of
/// the blocks AMX packs at a time (their softmaxes merged). Rounding a probability
/// moves each output by at most 2^-8 of the values' largest (1 here): the bound is that,
/// and the typical error, which a misplaced value would blow, a tenth of it.
#[test]
fn mla_attention_prefill_over_a_bf16_cache_matches_the_oracle() {
    // (heads, kv_lora_rank, rope_dim, block_size, start_pos, tokens, scale)
    let shapes: [(usize, usize, usize, usize, usize, usize, f32); 5] = [
        (5, 48, 8, 16, 37, 61, 0.3),
        (16, 64, 32, 16, 100, 20, 0.2),
        (3, 32, 16, 4, 0, 90, 1.0),
        // AMX packs the cache a block of 512 positions at a time: three blocks, query
        // blocks that see none of the last, and one whose rows see some of it and some not
        (8, 64, 32, 16, 1002, 40, 0.2),
        (16, 96, 32, 32, 1500, 20, 0.5),
    ];
    let oracle = backend(crate::Level::Scalar, 1);
    for (n, &(h, r, p, bs, start, tokens, scale)) in shapes.iter().enumerate() {
        let row = r + p;
        let nblocks = (start + tokens).div_ceil(bs);
        let blocks: Vec<u32> = (0..nblocks as u32).rev().map(|b| 2 * b + 1).collect();
        let kv = values((2 * nblocks + 2) * bs * row, 61 + n as u64);
        let kv16: Vec<u16> = kv
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_bits())
            .collect();
        // the same prefill over the 8-bit cache (converted whole, then as bf16)
        let kv8 = q8_cache(&kv, r, p);
        let q_latent = values(tokens * h * r, 71 + n as u64);
        let q_pe = values(tokens * h * p, 81 + n as u64);
        let q8 = crate::kv_q8::Q8Rows { bytes: &kv8, r, p };
        for (name, cache) in [("bf16", KvRows::Bf16(&kv16)), ("q8_0", KvRows::Q8(q8))] {
            let a = MlaAttention {
                q_latent: &q_latent,
                q_pe: &q_pe,
                kv: cache,
                blocks: &blocks,
                block_size: bs,
                n_heads: h,
                kv_lora_rank: r,
                rope_dim: p,
                start_pos: start,
                scale,
            };
            let mut want = vec![0f32; tokens * h * r];
            oracle.mla_attention(&a, &mut want);
            for be in backends() {
                let mut got = vec![f32::NAN; tokens * h * r];
                be.mla_attention(&a, &mut got);
                let what = format!("shape {n} {name} at {:?}", be.level());
                assert_bf16_probabilities_close(&got, &want, &what);
            }
        }
    }
}

/// The vectorisable exp of the split attention path: within 2 ulp-ish of the true value
/// over the whole normal range, exactly 0 below it and at -inf (masked scores).
#[test]
fn exp_approx_is_accurate_and_exactly_zero_when_masked() {
    use super::simd::portable::exp_approx;
    let mut worst = 0f64;
    for i in 0..=200_000 {
        let x = -87.3 + 175.6 * i as f32 / 200_000.0;
        let want = (x as f64).exp();
        worst = worst.max(((exp_approx(x) as f64 - want) / want).abs());
    }
    assert!(worst < 3e-7, "worst relative error {worst}");
    assert_eq!(exp_approx(0.0), 1.0);
    assert_eq!(exp_approx(f32::NEG_INFINITY), 0.0);
    assert_eq!(exp_approx(-100.0), 0.0);
}
