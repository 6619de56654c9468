//! Counting and timing the operations that run on the GPU.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::GpuBackend;

/// Operations run on a GPU in this process so far (every `GpuBackend` together).
static GPU_OPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many operations have run on a GPU in this process.
pub fn gpu_ops() -> usize {
    GPU_OPS.load(std::sync::atomic::Ordering::Relaxed)
}

pub(crate) fn count() {
    GPU_OPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Wall time per operation, kept when DEEPRUST_GPU_PROFILE is set and printed to stderr
/// when the backend is dropped: where a token's time goes when every op is a round trip.
pub(crate) type Profile = Mutex<HashMap<&'static str, (u64, std::time::Duration)>>;

pub(crate) struct OpTimer<'a> {
    pub(crate) profile: &'a Profile,
    pub(crate) op: &'static str,
    pub(crate) start: std::time::Instant,
}

impl Drop for OpTimer<'_> {
    fn drop(&mut self) {
        let mut p = self.profile.lock().unwrap_or_else(|e| e.into_inner());
        let e = p.entry(self.op).or_default();
        e.0 += 1;
        e.1 += self.start.elapsed();
    }
}

impl Drop for GpuBackend {
    fn drop(&mut self) {
        let Some(p) = &self.profile else { return };
        let p = p.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<_> = p.iter().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.1.1));
        let total: f64 = rows.iter().map(|r| r.1.1.as_secs_f64()).sum();
        eprintln!(
            "gpu profile ({}): {:.1} ms in ops",
            self.adapter,
            total * 1e3
        );
        for (op, (n, t)) in rows {
            eprintln!(
                "  {op:<16} {n:>8} calls {:>10.1} ms {:>8.1} us/call",
                t.as_secs_f64() * 1e3,
                t.as_secs_f64() * 1e6 / *n as f64
            );
        }
    }
}
