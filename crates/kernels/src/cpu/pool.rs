//! A persistent thread pool for per-op parallelism.
//!
//! A decode step is hundreds of small matmuls, each a few microseconds of work per thread,
//! so the cost that matters is waking the workers. Workers spin on a generation counter for
//! a short while after each job (the next op usually follows within microseconds), then
//! sleep on a condvar so an idle server does not burn its cores. The caller runs share 0
//! itself. Work is split by the caller into disjoint output ranges, so threads never write
//! the same cache line.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Job = dyn Fn(usize) + Sync;

/// How long a worker spins for the next job before sleeping.
const SPIN: Duration = Duration::from_micros(200);

struct Shared {
    /// The current job; valid while `remaining > 0` for the generation that published it.
    job: UnsafeCell<Option<*const Job>>,
    generation: AtomicU64,
    remaining: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    sleepers: Mutex<usize>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the submitting thread while no worker reads it (all
// workers have finished the previous generation) and read by workers only after they
// observe the new generation (Acquire pairs with the submitter's Release).
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
    /// One job at a time; concurrent callers queue here.
    submit: Mutex<()>,
}

impl ThreadPool {
    /// A pool of `threads` shares (the caller plus `threads - 1` workers). With `pin`, share
    /// i runs on the i-th CPU of the process's affinity mask where the OS allows it.
    pub fn new(threads: usize, pin: bool) -> ThreadPool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            job: UnsafeCell::new(None),
            generation: AtomicU64::new(0),
            remaining: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleepers: Mutex::new(0),
            wake: Condvar::new(),
        });
        let cpus = if pin { affinity::cpus() } else { Vec::new() };
        if let Some(&c) = cpus.first() {
            affinity::pin_current(c);
        }
        let workers = (1..threads)
            .map(|idx| {
                let s = shared.clone();
                let cpu = cpus.get(idx).copied();
                std::thread::Builder::new()
                    .name(format!("deeprust-cpu-{idx}"))
                    .spawn(move || {
                        if let Some(c) = cpu {
                            affinity::pin_current(c);
                        }
                        worker(&s, idx)
                    })
                    .expect("spawning a kernel worker thread")
            })
            .collect();
        ThreadPool {
            shared,
            workers,
            threads,
            submit: Mutex::new(()),
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Run `f(share)` for every share in `0..threads()`, returning when all are done.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.threads == 1 {
            f(0);
            return;
        }
        let _guard = self.submit.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: erase the lifetime; we wait below until every worker is done with it.
        let ptr: *const (dyn Fn(usize) + Sync + '_) = f;
        let ptr: *const Job = unsafe { std::mem::transmute(ptr) };
        unsafe { *s.job.get() = Some(ptr) };
        s.remaining.store(self.threads - 1, Ordering::Relaxed);
        s.generation.fetch_add(1, Ordering::Release);
        if *s.sleepers.lock().unwrap_or_else(|e| e.into_inner()) > 0 {
            s.wake.notify_all();
        }
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0)));
        let mut spins = 0u32;
        while s.remaining.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < 1 << 16 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        unsafe { *s.job.get() = None };
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::Relaxed) {
            panic!("a kernel worker thread panicked");
        }
    }

    /// Split `0..n` into one contiguous range per share, each a multiple of `align` long
    /// (except the last), and run `f(range)` on each non-empty one.
    pub fn for_ranges(&self, n: usize, align: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
        let shares = self.threads.min(n.div_ceil(align.max(1))).max(1);
        if shares == 1 {
            f(0..n);
            return;
        }
        let chunk = n.div_ceil(shares).div_ceil(align) * align;
        self.run(&|i| {
            let start = (i * chunk).min(n);
            let end = ((i + 1) * chunk).min(n);
            if start < end {
                f(start..end)
            }
        });
    }
}

fn worker(s: &Shared, idx: usize) {
    let mut seen = 0u64;
    loop {
        // spin, then sleep, until a new generation (or shutdown) is published
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let g = s.generation.load(Ordering::Acquire);
            if g != seen || s.shutdown.load(Ordering::Relaxed) {
                seen = g;
                break;
            }
            spins += 1;
            if spins.is_multiple_of(1024) && start.elapsed() > SPIN {
                let mut sleepers = s.sleepers.lock().unwrap_or_else(|e| e.into_inner());
                *sleepers += 1;
                while s.generation.load(Ordering::Acquire) == seen
                    && !s.shutdown.load(Ordering::Relaxed)
                {
                    sleepers = s.wake.wait(sleepers).unwrap_or_else(|e| e.into_inner());
                }
                *sleepers -= 1;
            } else {
                std::hint::spin_loop();
            }
        }
        if s.shutdown.load(Ordering::Relaxed) {
            return;
        }
        // SAFETY: published before the generation bump we just acquired; the submitter
        // keeps it alive until `remaining` reaches zero.
        let job = unsafe { (*s.job.get()).expect("job published with its generation") };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { (*job)(idx) }));
        if r.is_err() {
            s.panicked.store(true, Ordering::Relaxed);
        }
        s.remaining.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Relaxed);
        {
            let _g = self
                .shared
                .sleepers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ThreadPool({} threads)", self.threads)
    }
}

#[cfg(target_os = "linux")]
mod affinity {
    /// The CPUs this process may run on, in order.
    pub fn cpus() -> Vec<usize> {
        // /proc/self/status "Cpus_allowed_list: 0-3,8" avoids a libc dependency
        let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
            return Vec::new();
        };
        let Some(line) = s.lines().find(|l| l.starts_with("Cpus_allowed_list:")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for part in line["Cpus_allowed_list:".len()..].trim().split(',') {
            let mut it = part.split('-').map(|v| v.trim().parse::<usize>());
            match (it.next(), it.next()) {
                (Some(Ok(a)), Some(Ok(b))) => out.extend(a..=b),
                (Some(Ok(a)), None) => out.push(a),
                _ => {}
            }
        }
        out
    }

    /// Pin the calling thread to `cpu` (best effort: a refused pin leaves it unpinned).
    pub fn pin_current(cpu: usize) {
        const WORDS: usize = 16; // 1024 CPUs
        if cpu >= WORDS * 64 {
            return;
        }
        let mut mask = [0u64; WORDS];
        mask[cpu / 64] |= 1 << (cpu % 64);
        // SAFETY: sched_setaffinity(0, size, mask) reads `size` bytes of `mask` and
        // affects only the calling thread.
        unsafe {
            sched_setaffinity(0, std::mem::size_of_val(&mask), mask.as_ptr());
        }
    }

    unsafe extern "C" {
        fn sched_setaffinity(pid: i32, cpusetsize: usize, mask: *const u64) -> i32;
    }
}

#[cfg(not(target_os = "linux"))]
mod affinity {
    pub fn cpus() -> Vec<usize> {
        Vec::new()
    }
    pub fn pin_current(_cpu: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_share_runs_once_per_job() {
        for threads in [1, 2, 3, 5] {
            let pool = ThreadPool::new(threads, false);
            for _ in 0..200 {
                let hits: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
                pool.run(&|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn ranges_cover_exactly_and_align() {
        let pool = ThreadPool::new(3, false);
        for n in [0, 1, 15, 16, 17, 100, 1000] {
            let seen: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            let starts = Mutex::new(Vec::new());
            pool.for_ranges(n, 16, &|r| {
                starts.lock().unwrap().push(r.start);
                for i in r {
                    seen[i].fetch_add(1, Ordering::Relaxed);
                }
            });
            assert!(seen.iter().all(|h| h.load(Ordering::Relaxed) == 1), "n={n}");
            assert!(starts.lock().unwrap().iter().all(|s| s % 16 == 0));
        }
    }

    #[test]
    fn wakes_after_sleeping() {
        let pool = ThreadPool::new(2, false);
        std::thread::sleep(SPIN * 20);
        let n = AtomicUsize::new(0);
        pool.run(&|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_panicking_share_reaches_the_caller() {
        let pool = ThreadPool::new(2, false);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(&|i| {
                if i == 1 {
                    panic!("boom")
                }
            })
        }));
        assert!(r.is_err());
        // and the pool still works afterwards
        let n = AtomicUsize::new(0);
        pool.run(&|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 2);
    }
}
