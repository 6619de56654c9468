//! The decode attention's two AMX kernels on data that stays in L2: nanoseconds per cached
//! position of the scores and of the output product, 16 heads at V3's widths. The best
//! and the median of many short trials: the host's slow stretches move the median, not
//! the best.
//!
//! `cargo run --release -p kernels --example amx_probe -- [POSITIONS] [PER_CALL]`

use kernels::cpu::simd;
use kernels::{CpuBackend, CpuOptions, Level};
use std::time::Instant;

fn main() {
    // the backend asks Linux for the tile state
    let be = CpuBackend::with_options(&CpuOptions {
        threads: Some(1),
        ..Default::default()
    })
    .unwrap();
    if be.level() != Level::Amx {
        eprintln!("no AMX on this CPU (level {})", be.level());
        return;
    }
    let level = Level::Amx;
    let row = 544usize;
    let argv: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let npos = argv.first().copied().unwrap_or(128).next_multiple_of(16);
    let per_call = argv.get(1).copied().unwrap_or(simd::AMX_PV_POSITIONS);
    let kv: Vec<u16> = (0..npos * row).map(|i| 0x3f80 + (i % 7) as u16).collect();
    let q: Vec<u16> = (0..16 * row).map(|i| 0x3f80 + (i % 5) as u16).collect();
    let firsts: Vec<usize> = (0..npos / 16).map(|g| g * 16 * row).collect();
    let offs: Vec<usize> = (0..npos).map(|j| j * row).collect();
    let p16 = vec![0x3c00u16; 16 * simd::AMX_PV_POSITIONS];
    let mut s = vec![0f32; npos * 16];
    let mut o = vec![0f32; 16 * 512];
    let iters = 50;
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..400 {
        for (k, t) in times.iter_mut().enumerate() {
            let t0 = Instant::now();
            for _ in 0..iters {
                if k == 0 {
                    for f in firsts.chunks(4) {
                        let g = simd::AmxScores {
                            kv: &kv,
                            row,
                            firsts: f,
                            k: row,
                            q: &q,
                            lanes: 16,
                            ahead: &[],
                        };
                        simd::amx_scores(level, &g, &mut s);
                    }
                } else {
                    for of in offs.chunks(per_call) {
                        let g = simd::AmxPv {
                            kv: &kv,
                            offs: of,
                            p: &p16,
                            rows: 16,
                            r: 512,
                        };
                        simd::amx_pv(level, &g, &mut o);
                    }
                }
            }
            t.push(t0.elapsed().as_secs_f64() * 1e9 / (iters * npos) as f64);
        }
    }
    for (t, name) in times.iter_mut().zip(["scores", "output product"]) {
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{name}: best {:.1} ns a position, median {:.1}",
            t[0],
            t[t.len() / 2]
        );
    }
}
