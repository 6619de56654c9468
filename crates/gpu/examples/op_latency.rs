//! Round-trip time of one small operation on the GPU backend (upload, dispatch, read back):
//! what bounds decode on it while activations cross the bus at every op.
//! `cargo run --release -p gpu --example op_latency [OPS]`
use kernels::{Backend, CpuBackend};

fn main() {
    let ops: usize = std::env::args().nth(1).map_or(2000, |s| s.parse().unwrap());
    let g = gpu::GpuBackend::new(CpuBackend::new()).expect("a GPU adapter");
    let mut x = vec![1.0f32; 1024];
    let w = vec![1.0f32; 1024];
    let mut out = vec![0f32; 1024];
    let time = |name: &str, f: &mut dyn FnMut()| {
        for _ in 0..10 {
            f();
        }
        let t = std::time::Instant::now();
        for _ in 0..ops {
            f();
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / ops as f64;
        println!("{}: {name}: {us:.1} us per op", g.adapter());
    };
    time("softmax [1024]", &mut || g.softmax(&mut x));
    time("rms_norm [1024]", &mut || {
        g.rms_norm(&x, &w, 1e-6, &mut out)
    });
}
