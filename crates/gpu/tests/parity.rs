//! The GPU backend on whatever adapter wgpu finds (Mesa's lavapipe on our machines, which
//! have no GPU): matmul parity with the CPU's scalar oracle on awkward shapes in every dense
//! format, weights uploaded once, and the f32 goldens through the whole model.
//!
//! Without any adapter these tests say so and pass, unless DEEPRUST_REQUIRE_GPU=1 (set by
//! scripts/test-gpu.sh, which installs lavapipe first), where a missing adapter fails them.

use std::path::PathBuf;

use gpu::GpuBackend;
use kernels::{Backend, CpuBackend, CpuOptions, Level, Matrix, MlaAttention};
use loader::{Checkpoint, DType, SafetensorsFile, Tensor};
use model::{ForwardBatch, LogitsMode, Model, SeqChunk};

fn scalar() -> CpuBackend {
    CpuBackend::with_options(&CpuOptions {
        level: Some(Level::Scalar),
        threads: Some(1),
        ..Default::default()
    })
    .unwrap()
}

fn gpu() -> Option<GpuBackend> {
    match GpuBackend::new(CpuBackend::new()).map(GpuBackend::every_op_on_gpu) {
        Ok(g) => {
            eprintln!("adapter: {}", g.adapter());
            Some(g)
        }
        Err(e) if std::env::var("DEEPRUST_REQUIRE_GPU").as_deref() == Ok("1") => {
            panic!("DEEPRUST_REQUIRE_GPU=1 but {e}")
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn matrix(dtype: DType, rows: usize, cols: usize, rng: &mut Rng) -> Matrix {
    let mut bytes = Vec::new();
    for _ in 0..rows * cols {
        let v = rng.f();
        match dtype {
            DType::F32 => bytes.extend(v.to_le_bytes()),
            DType::BF16 => bytes.extend(((v.to_bits() >> 16) as u16).to_le_bytes()),
            _ => bytes.extend(half_bits(v).to_le_bytes()),
        }
    }
    Matrix::dense(Tensor::from_bytes("w", dtype, vec![rows, cols], bytes).unwrap()).unwrap()
}

/// f32 to IEEE half, round to nearest (values here are in [-1, 1]).
fn half_bits(v: f32) -> u16 {
    let b = v.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let a = v.abs();
    if a < 6.1e-5 {
        return sign | (a / 5.96e-8).round() as u16;
    }
    let e = ((b >> 23) & 0xff) as i32 - 127 + 15;
    let m = ((b & 0x7f_ffff) + 0x1000) >> 13;
    sign | (((e as u32) << 10) + m) as u16
}

#[test]
fn dense_matmuls_match_the_scalar_oracle() {
    let Some(g) = gpu() else { return };
    let cpu = scalar();
    let mut rng = Rng(0x1234_5678);
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        for (rows, cols, n) in [
            (1, 1, 1),
            (7, 13, 3),
            (33, 129, 5),
            (65, 64, 1),
            (200, 300, 2),
            (130, 1027, 4),
        ] {
            let w = matrix(dtype, rows, cols, &mut rng);
            let x: Vec<f32> = (0..n * cols).map(|_| rng.f()).collect();
            let mut want = vec![0f32; n * rows];
            cpu.matmul(&x, &w, &mut want);
            assert!(g.handles(&x, &w), "{dtype} runs on the GPU");
            let mut got = vec![f32::NAN; n * rows];
            g.matmul(&x, &w, &mut got);
            let mut dense = vec![0f32; cols];
            for t in 0..n {
                for r in 0..rows {
                    w.read_row(r, &mut dense);
                    let norm: f32 = dense
                        .iter()
                        .zip(&x[t * cols..])
                        .map(|(a, b)| (a * b).abs())
                        .sum();
                    let (a, b) = (got[t * rows + r], want[t * rows + r]);
                    assert!(
                        (a - b).abs() <= 1e-5 * norm.max(1.0),
                        "{dtype} [{rows}, {cols}] n={n} t={t} r={r}: gpu {a} cpu {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_weight_is_uploaded_once() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng(9);
    let w = matrix(DType::BF16, 40, 32, &mut rng);
    let x = vec![0.5f32; 32];
    let mut y = vec![0f32; 40];
    g.matmul(&x, &w, &mut y);
    g.matmul(&x, &w.clone(), &mut y);
    assert_eq!(
        g.uploaded(),
        1,
        "the same rows again are not uploaded again"
    );
    let mut y8 = vec![0f32; 8];
    g.matmul(&x, &w.rows_view(8, 8), &mut y8);
    assert_eq!(g.uploaded(), 2, "a view of other rows is its own weight");
    assert_eq!(&y8[..], &y[8..16], "a view multiplies the rows it names");
}

/// The f32 goldens (transformers, float32) through the GPU backend: logits within the same
/// relative L2 bound the CPU meets (1e-4). The GPU sums each dot product in one thread,
/// in order, with f32 accumulators like the CPU's, so the two differ only in rounding
/// order: ~1e-7 relative, far inside the bound.
#[test]
fn goldens_through_the_gpu_backend() {
    if gpu().is_none() {
        return;
    }
    for name in ["v3_yarn_mtp", "v3_nolora_f16", "v2_lite_greedy"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/golden")
            .join(name);
        let ckpt = Checkpoint::open(&dir).unwrap();
        // every op on the GPU, small ones included
        let be = GpuBackend::new(CpuBackend::new())
            .unwrap()
            .every_op_on_gpu();
        let model = Model::load_with(&ckpt, Box::new(be)).unwrap();
        let golden = SafetensorsFile::open(&dir.join("goldens.safetensors")).unwrap();
        let ids: Vec<u32> = golden
            .tensor("prompt.0.ids")
            .unwrap()
            .to_i64_vec()
            .unwrap()
            .iter()
            .map(|&v| v as u32)
            .collect();
        let mut cache = model.new_cache(1, ids.len() + 1);
        let batch = ForwardBatch {
            seqs: vec![SeqChunk {
                slot: 0,
                start_pos: 0,
                tokens: &ids,
            }],
            logits: LogitsMode::All,
        };
        let before = gpu::gpu_ops();
        let got = model.forward(&batch, &mut cache).unwrap();
        assert!(gpu::gpu_ops() > before, "{name}: nothing ran on the GPU");
        let want = golden.tensor("prompt.0.logits").unwrap().to_f32_vec();
        let num: f64 = got
            .iter()
            .zip(&want)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
        let e = (num / den).sqrt();
        eprintln!("{name}: rel L2 {e:.2e}");
        assert!(
            e <= 1e-4,
            "{name}: logits through the GPU, rel L2 {e:.3e} > 1e-4"
        );
    }
}

/// The GGUF block formats, decoded value by value in WGSL, against f64 products of the rows
/// the loader's reference codec decodes (f32 activations on both sides).
#[test]
fn block_format_matmuls_match_the_reference_decoder() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng(77);
    for (dtype, cols) in [
        (DType::Q8_0, 96),
        (DType::Q4K, 512),
        (DType::Q6K, 512),
        (DType::Q4K, 256),
    ] {
        for (rows, n) in [(1, 1), (5, 3), (70, 2)] {
            let mut bytes = Vec::new();
            for _ in 0..rows {
                let v: Vec<f32> = (0..cols).map(|_| rng.f()).collect();
                let mut row = Vec::new();
                loader::quant::quantize_row(dtype, &v, &mut row).unwrap();
                bytes.extend(row);
            }
            let t = Tensor::from_bytes("w", dtype, vec![rows, cols], bytes).unwrap();
            let w = Matrix::dense(t).unwrap();
            let x: Vec<f32> = (0..n * cols).map(|_| rng.f()).collect();
            assert!(g.handles(&x, &w), "{dtype} runs on the GPU");
            let mut got = vec![f32::NAN; n * rows];
            g.matmul(&x, &w, &mut got);
            let mut dense = vec![0f32; cols];
            for r in 0..rows {
                w.read_row(r, &mut dense);
                for t in 0..n {
                    let xs = &x[t * cols..(t + 1) * cols];
                    let want: f64 = dense
                        .iter()
                        .zip(xs)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum();
                    let norm: f64 = dense
                        .iter()
                        .zip(xs)
                        .map(|(a, b)| (*a as f64 * *b as f64).abs())
                        .sum();
                    let a = got[t * rows + r] as f64;
                    assert!(
                        (a - want).abs() <= 1e-5 * norm.max(1.0),
                        "{dtype} [{rows}, {cols}] t={t} r={r}: gpu {a} want {want}"
                    );
                }
            }
        }
    }
}

/// Largest |a - b| relative to the largest |b| (1 where `b` is all zeros).
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-30f32, |m, v| m.max(v.abs())).max(1e-30);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / scale)
        .fold(0.0, f32::max)
}

#[test]
fn row_ops_match_the_scalar_oracle() {
    let Some(g) = gpu() else { return };
    let cpu = scalar();
    let mut rng = Rng(31);
    for (rows, d) in [(1, 1), (3, 7), (5, 300), (2, 1027)] {
        let x: Vec<f32> = (0..rows * d).map(|_| rng.f() * 3.0).collect();
        let w: Vec<f32> = (0..d).map(|_| rng.f()).collect();
        let (mut a, mut b) = (vec![0f32; x.len()], vec![f32::NAN; x.len()]);
        cpu.rms_norm(&x, &w, 1e-6, &mut a);
        g.rms_norm(&x, &w, 1e-6, &mut b);
        assert!(rel_err(&b, &a) < 1e-5, "rms_norm [{rows}, {d}]");

        let up: Vec<f32> = (0..x.len()).map(|_| rng.f()).collect();
        let (mut a, mut b) = (x.clone(), x.clone());
        cpu.silu_mul(&mut a, &up);
        g.silu_mul(&mut b, &up);
        assert!(rel_err(&b, &a) < 1e-5, "silu_mul {}", x.len());

        let (mut a, mut b) = (x.clone(), x.clone());
        cpu.softmax(&mut a);
        g.softmax(&mut b);
        assert!(rel_err(&b, &a) < 1e-5, "softmax {}", x.len());
        assert!((b.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    }
    for (heads, half) in [(1, 1), (3, 4), (16, 32), (7, 13)] {
        let x: Vec<f32> = (0..heads * 2 * half).map(|_| rng.f()).collect();
        let ang: Vec<f32> = (0..half).map(|i| i as f32 * 0.37 + 0.1).collect();
        let (cos, sin): (Vec<f32>, Vec<f32>) = ang.iter().map(|a| (a.cos(), a.sin())).unzip();
        let (mut a, mut b) = (x.clone(), x.clone());
        cpu.rope(&mut a, &cos, &sin);
        g.rope(&mut b, &cos, &sin);
        assert!(rel_err(&b, &a) < 1e-6, "rope {heads}x{half}");
    }
}

#[test]
fn head_and_expert_matmuls_match_the_scalar_oracle() {
    let Some(g) = gpu() else { return };
    let cpu = scalar();
    let mut rng = Rng(5);
    for dtype in [DType::BF16, DType::F32] {
        // transposed: x[n, rows] · W
        for (rows, cols, n) in [(1, 1, 1), (13, 70, 3), (64, 65, 2)] {
            let w = matrix(dtype, rows, cols, &mut rng);
            let x: Vec<f32> = (0..n * rows).map(|_| rng.f()).collect();
            let (mut a, mut b) = (vec![0f32; n * cols], vec![f32::NAN; n * cols]);
            cpu.matmul_t(&x, &w, &mut a);
            g.matmul_t(&x, &w, &mut b);
            assert!(
                rel_err(&b, &a) < 1e-5,
                "{dtype} matmul_t [{rows}, {cols}] n={n}"
            );
        }
        // per head: 3 heads of 5 rows, 7 rows apart from row 2, over 4 tokens
        let w = matrix(dtype, 30, 33, &mut rng);
        let heads = kernels::Heads {
            count: 3,
            first: 2,
            stride: 7,
            rows: 5,
        };
        for n in [1, 4, 6] {
            let x: Vec<f32> = (0..n * 3 * 33).map(|_| rng.f()).collect();
            let (mut a, mut b) = (vec![0f32; n * 15], vec![f32::NAN; n * 15]);
            cpu.matmul_heads(&x, &w, heads, &mut a);
            g.matmul_heads(&x, &w, heads, &mut b);
            assert!(rel_err(&b, &a) < 1e-5, "{dtype} matmul_heads n={n}");
        }
        // transposed per head: 3 heads of 6 rows, 8 rows apart from row 1, into 33 columns
        let heads_t = kernels::Heads {
            count: 3,
            first: 1,
            stride: 8,
            rows: 6,
        };
        for n in [1, 3] {
            let x: Vec<f32> = (0..n * 3 * 6).map(|_| rng.f()).collect();
            let mut want = vec![0f32; n * 3 * 33];
            let mut one = vec![0f32; n * 33];
            for g in 0..3 {
                let xg: Vec<f32> = (0..n)
                    .flat_map(|t| x[(t * 3 + g) * 6..][..6].to_vec())
                    .collect();
                cpu.matmul_t(&xg, &w.rows_view(1 + 8 * g, 6), &mut one);
                for t in 0..n {
                    want[(t * 3 + g) * 33..][..33].copy_from_slice(&one[t * 33..][..33]);
                }
            }
            let (mut a, mut b) = (vec![f32::NAN; n * 99], vec![f32::NAN; n * 99]);
            cpu.matmul_t_heads(&x, &w, heads_t, &mut a);
            g.matmul_t_heads(&x, &w, heads_t, &mut b);
            assert_eq!(a, want, "{dtype} cpu matmul_t_heads n={n}");
            assert!(
                rel_err(&b, &want) < 1e-5,
                "{dtype} gpu matmul_t_heads n={n}"
            );
        }
        // experts: 4 experts of [9, 40], rows 0..2 to expert 1, none to 0 and 2, 2..7 to 3
        let experts: Vec<Matrix> = (0..4).map(|_| matrix(dtype, 9, 40, &mut rng)).collect();
        let starts = [0, 0, 2, 2, 7];
        let x: Vec<f32> = (0..7 * 40).map(|_| rng.f()).collect();
        let (mut a, mut b) = (vec![0f32; 7 * 9], vec![f32::NAN; 7 * 9]);
        cpu.matmul_experts(&x, &starts, &|e| &experts[e], &mut a);
        g.matmul_experts(&x, &starts, &|e| &experts[e], &mut b);
        assert!(rel_err(&b, &a) < 1e-5, "{dtype} matmul_experts");
    }
}

#[test]
fn mla_attention_matches_the_scalar_oracle() {
    let Some(g) = gpu() else { return };
    let cpu = scalar();
    let mut rng = Rng(11);
    // (heads, rank, rope, block size, start, tokens)
    for (h, r, pe, bs, start, tokens) in [
        (1usize, 4usize, 2usize, 4usize, 0usize, 1usize),
        (3, 16, 8, 4, 5, 3),
        (4, 70, 6, 16, 40, 1),
        (2, 33, 4, 8, 0, 9),
    ] {
        let len = start + tokens;
        let nblocks = len.div_ceil(bs);
        // blocks out of order, with a spare one between
        let blocks: Vec<u32> = (0..nblocks as u32).rev().map(|b| 2 * b + 1).collect();
        let kv: Vec<f32> = (0..(2 * nblocks + 2) * bs * (r + pe))
            .map(|_| rng.f())
            .collect();
        let q_latent: Vec<f32> = (0..tokens * h * r).map(|_| rng.f()).collect();
        let q_pe: Vec<f32> = (0..tokens * h * pe).map(|_| rng.f()).collect();
        let a = MlaAttention {
            q_latent: &q_latent,
            q_pe: &q_pe,
            kv: kernels::KvRows::F32(&kv),
            blocks: &blocks,
            block_size: bs,
            n_heads: h,
            kv_lora_rank: r,
            rope_dim: pe,
            start_pos: start,
            scale: 0.3,
        };
        let (mut want, mut got) = (vec![0f32; tokens * h * r], vec![f32::NAN; tokens * h * r]);
        cpu.mla_attention(&a, &mut want);
        g.mla_attention(&a, &mut got);
        assert!(
            rel_err(&got, &want) < 1e-5,
            "mla h={h} r={r} start={start} tokens={tokens}: {}",
            rel_err(&got, &want)
        );
    }
}

/// `y = x · Wᵀ` in f64 from the rows the loader's reference decoder gives, with the sum of
/// |products| as the scale of the rounding allowed.
fn reference(w: &Matrix, x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let (rows, cols) = (w.rows, w.cols);
    let n = x.len() / cols;
    let mut dense = vec![0f32; cols];
    let (mut want, mut norm) = (vec![0f64; n * rows], vec![0f64; n * rows]);
    for r in 0..rows {
        w.read_row(r, &mut dense);
        for t in 0..n {
            for (a, b) in dense.iter().zip(&x[t * cols..(t + 1) * cols]) {
                want[t * rows + r] += *a as f64 * *b as f64;
                norm[t * rows + r] += (*a as f64 * *b as f64).abs();
            }
        }
    }
    (want, norm)
}

/// Q5_0 blocks (built byte by byte: the loader does not write them) and FP8 e4m3 with
/// block scales (whole and as a view of later rows, as a head's slice is), against the
/// reference decoder; FP8 through the transposed product too.
#[test]
fn q5_0_and_fp8_matmuls_match_the_reference_decoder() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng(123);
    let mut byte = || (rng.f() * 127.0 + 128.0) as u8;
    let check = |w: &Matrix, x: &[f32], what: &str| {
        assert!(g.handles(x, w), "{what} runs on the GPU");
        let mut got = vec![f32::NAN; x.len() / w.cols * w.rows];
        g.matmul(x, w, &mut got);
        let (want, norm) = reference(w, x);
        for (i, ((a, b), s)) in got.iter().zip(&want).zip(&norm).enumerate() {
            assert!(
                (*a as f64 - b).abs() <= 1e-5 * s.max(1.0),
                "{what} [{}, {}] value {i}: gpu {a} want {b}",
                w.rows,
                w.cols
            );
        }
    };
    for (rows, cols, n) in [(1, 32, 1), (7, 96, 3), (33, 320, 2)] {
        let mut bytes = Vec::new();
        for _ in 0..rows * cols / 32 {
            let d = half_bits(0.01 + 0.05 * (byte() as f32 / 255.0));
            bytes.extend(d.to_le_bytes());
            bytes.extend((0..20).map(|_| byte()));
        }
        let t = Tensor::from_bytes("w", DType::Q5_0, vec![rows, cols], bytes).unwrap();
        let w = Matrix::dense(t).unwrap();
        let x: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
            .collect();
        check(&w, &x, "Q5_0");
    }
    for (rows, cols, block, n) in [
        (20usize, 64usize, [16usize, 32], 1usize),
        (40, 256, [16, 128], 3),
        (130, 384, [128, 128], 2),
    ] {
        // every byte but the two NaN patterns
        let bytes: Vec<u8> = (0..rows * cols)
            .map(|_| match byte() {
                0x7f | 0xff => 0x3c,
                b => b,
            })
            .collect();
        let grid = [rows.div_ceil(block[0]), cols.div_ceil(block[1])];
        let scales: Vec<u8> = (0..grid[0] * grid[1])
            .flat_map(|i| (0.5 + i as f32 * 0.01).to_le_bytes())
            .collect();
        let t = Tensor::from_bytes("w", DType::F8E4M3, vec![rows, cols], bytes).unwrap();
        let s = Tensor::from_bytes("s", DType::F32, grid.to_vec(), scales).unwrap();
        let w = Matrix::fp8(t, s, block).unwrap();
        let x: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 104_729) % 89) as f32 / 89.0 - 0.5)
            .collect();
        check(&w, &x, "FP8");
        let view = w.rows_view(rows / 2 + 1, rows / 3);
        check(&view, &x, "FP8 view");
        // x[n, rows] · W
        let xt: Vec<f32> = (0..n * rows)
            .map(|i| ((i * 31) % 23) as f32 / 23.0 - 0.5)
            .collect();
        let (mut a, mut b) = (vec![0f32; n * cols], vec![f32::NAN; n * cols]);
        scalar().matmul_t(&xt, &w, &mut a);
        g.matmul_t(&xt, &w, &mut b);
        assert!(rel_err(&b, &a) < 1e-5, "FP8 matmul_t [{rows}, {cols}]");
    }
}
