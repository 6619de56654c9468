//! Prefill-shaped matmul (many tokens) over a random matrix: for bf16, GFLOP/s with f32
//! activations (rows widened into panels) and with bf16 activations (`vdpbf16ps`, where
//! the CPU has AVX-512 BF16); for a quantized type (q8_0, q4_k, q6_k), GOP/s of the
//! level's prefill over it (int8 products with the activations quantized on the fly where
//! the level has them, else f32 panels). The number to hold against the machine's peak.
//!
//! `cargo run --release -p kernels --example gemm -- [THREADS] [ROWS] [COLS] [TOKENS] [TYPE]`

use std::time::Instant;

use kernels::{Backend, CpuBackend, CpuOptions, Matrix};
use loader::{DType, Tensor};

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let dtype = match argv.get(4).map(String::as_str) {
        None | Some("bf16") => DType::BF16,
        Some("q8_0") => DType::Q8_0,
        Some("q4_k") => DType::Q4K,
        Some("q6_k") => DType::Q6K,
        Some(t) => panic!("type {t}: bf16, q8_0, q4_k or q6_k"),
    };
    let args: Vec<usize> = argv
        .iter()
        .take(4)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let threads = args.first().copied().unwrap_or(2);
    let rows = args.get(1).copied().unwrap_or(1024);
    let cols = args.get(2).copied().unwrap_or(1024);
    let n = args.get(3).copied().unwrap_or(512);
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let w = if dtype == DType::BF16 {
        let bytes: Vec<u8> = (0..rows * cols)
            .flat_map(|_| half::bf16::from_f32(next()).to_bits().to_le_bytes())
            .collect();
        Tensor::from_bytes("w", dtype, vec![rows, cols], bytes).unwrap()
    } else {
        let mut bytes = Vec::new();
        for _ in 0..rows {
            let row: Vec<f32> = (0..cols).map(|_| next()).collect();
            loader::quant::quantize_row(dtype, &row, &mut bytes).unwrap();
        }
        Tensor::from_bytes("w", dtype, vec![rows, cols], bytes).unwrap()
    };
    let w = Matrix::dense(w).unwrap();
    let x: Vec<f32> = (0..n * cols).map(|_| next()).collect();
    let acts: &[bool] = if dtype == DType::BF16 {
        &[false, true]
    } else {
        &[false]
    };
    for &bf16 in acts {
        let be = CpuBackend::with_options(&CpuOptions {
            threads: Some(threads),
            bf16_activations: bf16,
            ..Default::default()
        })
        .unwrap();
        let mut y = vec![0f32; n * rows];
        let mut times = Vec::new();
        for _ in 0..15 {
            let t0 = Instant::now();
            be.matmul(&x, &w, &mut y);
            times.push(t0.elapsed().as_secs_f64());
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let med = times[times.len() / 2];
        println!(
            "{dtype} [{rows}, {cols}] x {n} tokens, {} threads {threads}, acts {}: {:.2} ms  {:.1} G{}/s",
            be.level(),
            match (dtype, be.bf16_activations()) {
                (DType::BF16, true) => "bf16",
                (DType::BF16, false) => "f32",
                _ => "as the level takes them",
            },
            med * 1e3,
            2.0 * (rows * cols * n) as f64 / med / 1e9,
            if dtype == DType::BF16 { "FLOP" } else { "OP" }
        );
    }
}
