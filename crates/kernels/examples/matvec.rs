//! Decode-shaped matmul (one token) over a large random matrix of each format, reporting
//! the bytes of weights read per second: the number to hold against `deeprust bench --membw`.
//!
//! `cargo run --release -p kernels --example matvec -- [THREADS] [ROWS] [COLS] [LEVEL|auto] [COPIES] [TYPES]`
//! (a small matrix stays in cache and shows the kernel's arithmetic limit instead; COPIES
//! distinct matrices taken in turn, 1 GB or more in all, come from memory as a decode
//! step's experts do)

use std::time::Instant;

use kernels::{Backend, CpuBackend, CpuOptions, Matrix};
use loader::{DType, Tensor};

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let level = argv
        .get(3)
        .filter(|l| *l != "auto")
        .map(|l| l.parse::<kernels::Level>().unwrap());
    let copies: usize = argv.get(4).map_or(1, |c| c.parse().unwrap());
    // an optional comma-separated list of formats (f32,bf16,q8_0,q5_0,q6_k,q4_k,f8_e4m3): all
    // by default
    let only: Option<Vec<String>> = argv
        .get(5)
        .map(|t| t.split(',').map(str::to_owned).collect());
    let args: Vec<usize> = argv.iter().take(3).map(|a| a.parse().unwrap()).collect();
    let threads = args.first().copied().unwrap_or(2);
    let rows = args.get(1).copied().unwrap_or(32768);
    let cols = args.get(2).copied().unwrap_or(4096);
    let be = CpuBackend::with_options(&CpuOptions {
        threads: Some(threads),
        level,
        ..Default::default()
    })
    .unwrap();
    let x: Vec<f32> = (0..cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    for (dtype, per256) in [
        (DType::F32, 1024),
        (DType::BF16, 512),
        (DType::Q8_0, 272),
        (DType::Q5_0, 176),
        (DType::Q6K, 210),
        (DType::Q4K, 144),
        (DType::F8E4M3, 256),
    ] {
        let name = format!("{dtype}").to_lowercase();
        if only.as_ref().is_some_and(|o| !o.contains(&name)) {
            continue;
        }
        let bytes_len = rows * cols / 256 * per256;
        let mut s = 0x1234_5678_9abc_def0u64;
        let ws: Vec<Matrix> = (0..copies)
            .map(|_| {
                let bytes: Vec<u8> = (0..bytes_len)
                    .map(|i| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        // keep f16 scales finite: clear the exponent's top bit of every odd byte;
                        // and bf16 weights normal (a subnormal costs an assist of ~100 cycles, and
                        // one weight in 64 was: 3 GB/s)
                        let b = (s >> 24) as u8;
                        match (i % 2, dtype) {
                            // f32: its top byte as bf16's, the rest random
                            (_, DType::F32) if i % 4 == 3 => b & 0x3b | 0x04,
                            (_, DType::F32) => b,
                            // e4m3: no NaN codes
                            (_, DType::F8E4M3) if b & 0x7f == 0x7f => 0x3c,
                            (_, DType::F8E4M3) => b,
                            (1, DType::BF16) => b & 0x3b | 0x04,
                            (1, _) => b & 0x3b,
                            _ => b,
                        }
                    })
                    .collect();
                let t = Tensor::from_bytes("w", dtype, vec![rows, cols], bytes).unwrap();
                if dtype != DType::F8E4M3 {
                    return Matrix::dense(t).unwrap();
                }
                // the official checkpoints' 128x128 blocks
                let grid = vec![rows.div_ceil(128), cols.div_ceil(128)];
                let scales = (0..grid[0] * grid[1]).flat_map(|_| 0.01f32.to_le_bytes());
                let s = Tensor::from_bytes("s", DType::F32, grid, scales.collect()).unwrap();
                Matrix::fp8(t, s, [128, 128]).unwrap()
            })
            .collect();
        let mut y = vec![0f32; rows];
        let reps = (2_000_000_000 / bytes_len).clamp(15, 20000);
        let mut times = Vec::new();
        for i in 0..reps {
            let w = &ws[i % copies];
            let t0 = Instant::now();
            be.matmul(&x, w, &mut y);
            times.push(t0.elapsed().as_secs_f64());
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let med = times[times.len() / 2];
        println!(
            "{dtype:>6} {rows}x{cols} {} threads {threads}: {:.3} ms  {:.1} GB/s  {:.1} Gweights/s",
            be.level(),
            med * 1e3,
            bytes_len as f64 / med / 1e9,
            (rows * cols) as f64 / med / 1e9
        );
    }
}
