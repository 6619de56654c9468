//! Decode-shaped matmul (one token) over a large random matrix of each format, reporting
//! the bytes of weights read per second: the number to hold against `deeprust bench --membw`.
//!
//! `cargo run --release -p kernels --example matvec -- [THREADS] [ROWS] [COLS]`

use std::time::Instant;

use kernels::{Backend, CpuBackend, CpuOptions, Matrix};
use loader::{DType, Tensor};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let threads = args.first().copied().unwrap_or(2);
    let rows = args.get(1).copied().unwrap_or(32768);
    let cols = args.get(2).copied().unwrap_or(4096);
    let be = CpuBackend::with_options(&CpuOptions {
        threads: Some(threads),
        ..Default::default()
    })
    .unwrap();
    let x: Vec<f32> = (0..cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    for (dtype, per256) in [
        (DType::BF16, 512),
        (DType::Q8_0, 272),
        (DType::Q6K, 210),
        (DType::Q4K, 144),
    ] {
        let bytes_len = rows * cols / 256 * per256;
        let mut s = 0x1234_5678_9abc_def0u64;
        let bytes: Vec<u8> = (0..bytes_len)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                // keep f16 scales finite: clear the exponent's top bit of every odd byte
                (s >> 24) as u8 & if i % 2 == 1 { 0x3b } else { 0xff }
            })
            .collect();
        let t = Tensor::from_bytes("w", dtype, vec![rows, cols], bytes).unwrap();
        let w = Matrix::dense(t).unwrap();
        let mut y = vec![0f32; rows];
        let mut times = Vec::new();
        for _ in 0..15 {
            let t0 = Instant::now();
            be.matmul(&x, &w, &mut y);
            times.push(t0.elapsed().as_secs_f64());
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let med = times[times.len() / 2];
        println!(
            "{dtype:>6} {rows}x{cols} threads {threads}: {:.2} ms  {:.1} GB/s  {:.1} Gweights/s",
            med * 1e3,
            bytes_len as f64 / med / 1e9,
            (rows * cols) as f64 / med / 1e9
        );
    }
}
