//! Decode-shaped absorbed MLA attention (one token, every head) over a deep paged latent
//! cache, one cache per layer so the reads come from memory as in a real decode step.
//!
//! `cargo run --release -p kernels --example attention -- [THREADS] [DEPTH] [LEVEL|auto] [LAYERS] [f32|bf16|q8_0] [ITERS]`
//! (the mid-size peer model's shape: 16 heads, kv_lora 512, rope 32, 12 layers, blocks of 16)

use std::time::Instant;

use kernels::{Backend, CpuBackend, CpuOptions, MlaAttention};

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let threads = argv.first().map_or(2, |a| a.parse().unwrap());
    let depth: usize = argv.get(1).map_or(4096, |a| a.parse().unwrap());
    let level = argv
        .get(2)
        .filter(|l| *l != "auto")
        .map(|l| l.parse::<kernels::Level>().unwrap());
    let be = CpuBackend::with_options(&CpuOptions {
        threads: Some(threads),
        level,
        ..Default::default()
    })
    .unwrap();
    let layers: usize = argv.get(3).map_or(12, |a| a.parse().unwrap());
    // cache types, comma-separated: measured in turn, token by token, so that the host's
    // slow and fast stretches fall on each alike
    let types: Vec<&str> = argv
        .get(4)
        .map_or("f32", |t| t.as_str())
        .split(',')
        .collect();
    let (h, r, p, bs) = (16usize, 512usize, 32usize, 16usize);
    let row = r + p;
    let len = depth + 1;
    let nblocks = len.div_ceil(bs);
    let blocks: Vec<u32> = (0..nblocks as u32).collect();
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let kv: Vec<Vec<f32>> = (0..layers)
        .map(|_| (0..nblocks * bs * row).map(|_| next()).collect())
        .collect();
    let kv16: Vec<Vec<u16>> = kv
        .iter()
        .map(|l| {
            l.iter()
                .map(|&v| half::bf16::from_f32(v).to_bits())
                .collect()
        })
        .collect();
    let rb = kernels::kv_q8::row_bytes(r, p);
    let kv8: Vec<Vec<u8>> = kv
        .iter()
        .map(|l| {
            let mut b = vec![0u8; l.len() / row * rb];
            for (x, o) in l.chunks_exact(row).zip(b.chunks_exact_mut(rb)) {
                kernels::kv_q8::quantize_row(x, r, p, o);
            }
            b
        })
        .collect();
    let q_latent: Vec<f32> = (0..h * r).map(|_| next()).collect();
    let q_pe: Vec<f32> = (0..h * p).map(|_| next()).collect();
    let mut out = vec![0f32; h * r];
    let iters: usize = argv.get(5).map_or(30, |a| a.parse().unwrap());
    let mut times = vec![Vec::new(); types.len()];
    for _ in 0..iters {
        for (ty, times) in types.iter().zip(&mut times) {
            let t0 = Instant::now();
            for ((kv, kv16), kv8) in kv.iter().zip(&kv16).zip(&kv8) {
                let a = MlaAttention {
                    q_latent: &q_latent,
                    q_pe: &q_pe,
                    kv: match *ty {
                        "q8_0" => kernels::KvRows::Q8(kernels::kv_q8::Q8Rows { bytes: kv8, r, p }),
                        "bf16" => kernels::KvRows::Bf16(kv16),
                        _ => kernels::KvRows::F32(kv),
                    },
                    blocks: &blocks,
                    block_size: bs,
                    n_heads: h,
                    kv_lora_rank: r,
                    rope_dim: p,
                    start_pos: depth,
                    scale: 0.1,
                };
                be.mla_attention(&a, &mut out);
            }
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    for (ty, times) in types.iter().zip(&mut times) {
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let med = times[times.len() / 2];
        let macs = (layers * h * len * (row + r)) as f64;
        let per_row = match *ty {
            "q8_0" => rb,
            "bf16" => 2 * row,
            _ => 4 * row,
        };
        let bytes = (layers * len * per_row) as f64;
        println!(
            "depth {depth} threads {threads} {} {ty}: {:.2} ms per token ({layers} layers, best {:.2})  {:.1} GFLOP/s  {:.1} GB/s of cache",
            be.level(),
            med * 1e3,
            times[0] * 1e3,
            2.0 * macs / med / 1e9,
            bytes / med / 1e9
        );
    }
}
