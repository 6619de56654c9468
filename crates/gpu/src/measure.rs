//! Measurements of the device for `deeprust bench --membw --backend gpu`: its read
//! bandwidth through WGSL and the decode matmul's weight stream in each format.

use kernels::Matrix;

use crate::GpuBackend;
use crate::matmul::ONE_HEAD;

impl GpuBackend {
    /// The matmul `kind` on the GPU, timed: `reps` products of `x` through `w` in one
    /// submission (the first submission, which uploads `w`, is not timed). For measuring the
    /// shader against the device's memory bandwidth.
    pub fn time_matmul(&self, x: &[f32], w: &Matrix, reps: usize) -> Option<std::time::Duration> {
        let n = x.len() / w.cols;
        let kind = self.matmul_kind(w, n, n * w.rows)?;
        let wb = self.weight(w);
        let run = |reps: usize| {
            let mut job = self.job();
            let xb = job.input(x);
            let yb = job.output(n * w.rows);
            for _ in 0..reps {
                self.record_matmul(
                    &mut job,
                    w,
                    [&wb, &xb, &yb],
                    kind,
                    (w.rows, n),
                    (0, 0, 0),
                    ONE_HEAD,
                );
            }
            let mut one = [0f32];
            let t = std::time::Instant::now();
            job.finish(&mut [(&yb, &mut one)]);
            t.elapsed()
        };
        run(1);
        Some(run(reps))
    }

    /// Device memory read bandwidth in GB/s: `reps` passes of a WGSL kernel that reads a
    /// `bytes`-long buffer word by word across the whole device, in one submission (after
    /// one untimed pass); the ceiling the matmuls' weight streams are measured against.
    pub fn read_bandwidth(&self, bytes: u64, reps: usize) -> f64 {
        let words = (bytes.min(self.max_binding) / 4) as usize;
        let src = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("stream"),
            size: words as u64 * 4,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let groups = 16_384u32;
        let run = |reps: usize| {
            let mut job = self.job();
            let x = job.input(&[0.0]);
            let y = job.output(groups as usize * 64);
            let params = [0, words as u32, 0, 0, 0, 0, 0, 0];
            for _ in 0..reps {
                job.dispatch(
                    &self.k.read_stream,
                    &params,
                    &[&src, &x, &y, &self.placeholder],
                    (groups, 1, 1),
                );
            }
            let mut one = [0f32];
            let t = std::time::Instant::now();
            job.finish(&mut [(&y, &mut one)]);
            t.elapsed()
        };
        run(1);
        (words * 4) as f64 * reps as f64 / run(reps).as_secs_f64() / 1e9
    }

    /// Largest buffer one binding may hold, in bytes.
    pub fn max_binding(&self) -> u64 {
        self.max_binding
    }
}
