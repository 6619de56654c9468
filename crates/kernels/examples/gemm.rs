//! Prefill-shaped matmul (many tokens) over a random bf16 matrix: GFLOP/s with f32
//! activations (rows widened into panels) and with bf16 activations (`vdpbf16ps`, where
//! the CPU has AVX-512 BF16), the number to hold against the machine's peak.
//!
//! `cargo run --release -p kernels --example gemm -- [THREADS] [ROWS] [COLS] [TOKENS]`

use std::time::Instant;

use kernels::{Backend, CpuBackend, CpuOptions, Matrix};
use loader::{DType, Tensor};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
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
    let bytes: Vec<u8> = (0..rows * cols)
        .flat_map(|_| half::bf16::from_f32(next()).to_bits().to_le_bytes())
        .collect();
    let w = Matrix::dense(Tensor::from_bytes("w", DType::BF16, vec![rows, cols], bytes).unwrap())
        .unwrap();
    let x: Vec<f32> = (0..n * cols).map(|_| next()).collect();
    for bf16 in [false, true] {
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
            "bf16 [{rows}, {cols}] x {n} tokens, {} threads {threads}, acts {}: {:.2} ms  {:.1} GFLOP/s",
            be.level(),
            if be.bf16_activations() { "bf16" } else { "f32" },
            med * 1e3,
            2.0 * (rows * cols * n) as f64 / med / 1e9
        );
    }
}
