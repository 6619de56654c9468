//! A persistent thread pool for per-op parallelism.
//!
//! A decode step is hundreds of small matmuls, each a few microseconds of work per thread,
//! so the cost that matters is waking the workers. Workers spin on a generation counter for
//! a short while after each job (the next op usually follows within microseconds), then
//! sleep on a condvar so an idle server does not burn its cores.
//!
//! Work is handed out as chunks rather than one fixed share per thread: each thread owns
//! a contiguous run of the chunks and takes them in order, and a thread that finishes its
//! own takes the others' remaining chunks from their far end. The caller works too, and if
//! a worker is descheduled (a busy or oversubscribed machine) the others take its chunks
//! instead of waiting a scheduler tick for it. Chunks are disjoint output ranges, so threads
//! never write the same cache line.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `(chunk, thread)`: the thread index picks that thread's scratch buffer.
type Job = dyn Fn(usize, usize) + Sync;

/// How long a worker spins for the next job before sleeping.
const SPIN: Duration = Duration::from_micros(300);
/// Chunks per thread for a splittable job: enough to rebalance, few enough to stay cheap.
const CHUNKS_PER_THREAD: usize = 4;
/// Short chunks after each thread's long one in [`ThreadPool::for_shares`].
const TAIL: usize = 3;

struct Shared {
    /// The current job; readable by a worker once it has registered in `active` and seen
    /// `retired == false` (the caller writes it before clearing `retired`).
    job: UnsafeCell<Option<*const Job>>,
    /// Thread t's share of the chunks, `(front, back)` packed in one word: t takes from the
    /// front, a thread done with its own share takes from the back.
    shares: Box<[Padded]>,
    done: AtomicUsize,
    /// Set once every chunk is done; a worker that sees it must not touch the job.
    retired: AtomicBool,
    /// Workers between registering for a job and leaving it.
    active: AtomicUsize,
    generation: AtomicU64,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    /// Workers that have finished starting up.
    started: AtomicUsize,
    sleepers: Mutex<usize>,
    wake: Condvar,
}

// SAFETY: see the protocol on `job` and `retired`; everything else is atomics or locks.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

impl Shared {
    /// Run this thread's share from the front, then take what is left of the others' from
    /// their backs, until no chunk is left. A thread walks its own share in order, so its
    /// chunks are one contiguous stretch of the output (and of the weights behind it):
    /// chunks dealt from one shared counter alternate between the threads, and each switch
    /// restarts the memory streams (equal eighths ran decode 6% slower than halves, measured).
    fn work(&self, job: &(dyn Fn(usize, usize) + Sync + '_), thread: usize) {
        let threads = self.shares.len();
        for k in 0..threads {
            let share = &self.shares[(thread + k) % threads].0;
            let own = k == 0;
            loop {
                let v = share.load(Acquire);
                let (front, back) = ((v >> 32) as usize, (v & 0xffff_ffff) as usize);
                if front >= back {
                    break;
                }
                let (next, c) = if own {
                    (v + (1 << 32), front)
                } else {
                    (v - 1, back - 1)
                };
                if share
                    .compare_exchange_weak(v, next, AcqRel, Acquire)
                    .is_err()
                {
                    continue;
                }
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(c, thread)))
                    .is_err()
                {
                    self.panicked.store(true, Relaxed);
                }
                self.done.fetch_add(1, Release);
            }
        }
    }

    /// Deal `chunks` into one contiguous share per thread.
    fn deal(&self, chunks: usize) {
        let threads = self.shares.len();
        for (t, share) in self.shares.iter().enumerate() {
            let (front, back) = (t * chunks / threads, (t + 1) * chunks / threads);
            share.0.store(((front as u64) << 32) | back as u64, Relaxed);
        }
    }
}

/// One share's counters on a cache line of its own, so claims on different shares do not
/// contend.
#[repr(align(128))]
struct Padded(AtomicU64);

pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
    /// One job at a time; concurrent callers queue here.
    submit: Mutex<()>,
    /// Per-thread scratch, sized by the caller before a job (never by a worker mid-job),
    /// so which thread happens to take which chunk never decides when memory is allocated.
    scratch: Box<[UnsafeCell<Vec<f32>>]>,
}

// SAFETY: scratch[i] is touched only by thread i during a job, or by the caller holding
// `submit` between jobs.
unsafe impl Sync for ThreadPool {}

impl ThreadPool {
    /// A pool of `threads` threads (the caller plus `threads - 1` workers). With `pin`,
    /// thread i runs on the i-th CPU of the process's affinity mask where the OS allows it.
    pub fn new(threads: usize, pin: bool) -> ThreadPool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            job: UnsafeCell::new(None),
            shares: (0..threads).map(|_| Padded(AtomicU64::new(0))).collect(),
            done: AtomicUsize::new(0),
            retired: AtomicBool::new(true),
            active: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            started: AtomicUsize::new(0),
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
            .collect::<Vec<_>>();
        // Return only once every worker runs: thread start-up (naming, pinning) then never
        // lands inside the first jobs.
        while shared.started.load(Acquire) < threads - 1 {
            std::thread::yield_now();
        }
        ThreadPool {
            shared,
            workers,
            threads,
            submit: Mutex::new(()),
            scratch: (0..threads).map(|_| UnsafeCell::new(Vec::new())).collect(),
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Run `f(chunk)` for every chunk in `0..chunks`, spread over the pool's threads
    /// (the caller included); returns when all are done.
    pub fn for_chunks(&self, chunks: usize, f: &(dyn Fn(usize) + Sync)) {
        self.run(chunks, 0, &|c, _| f(c));
    }

    /// Split `0..n` into contiguous ranges, each a multiple of `align` long (except the
    /// last), and run `f(range)` on each across the pool.
    pub fn for_ranges(&self, n: usize, align: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
        self.for_ranges_scratch(n, align, 0, &|r, _| f(r));
    }

    /// Split `0..n` into one contiguous share per thread and run `f(range)` over each
    /// share's ranges (multiples of `align` long, except the last) across the pool: for
    /// products that stream their weights from memory once (decode), where a thread's one
    /// long stretch keeps the prefetchers' streams going. Cut into equal chunks dealt
    /// alternately, as the pool once dealt [`ThreadPool::for_ranges`]' chunks, they
    /// restarted at every chunk: q4_k_m decode ran 6% slower with four a thread than with
    /// one, measured.
    pub fn for_shares(&self, n: usize, align: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
        if n == 0 {
            return;
        }
        let t = self.threads;
        let align = align.max(1);
        let units = n.div_ceil(align);
        let share = units.div_ceil(t).max(1);
        // a share is one long chunk and then TAIL short ones (a twentieth each): its owner
        // runs on from the long one into them, still one stretch, while a thread done
        // first takes them from the far end, so the threads finish together (the one that
        // starts later, after a wake-up and a cold read of the activations, otherwise left
        // the other waiting 5% of a decode step)
        let piece = (share / 20).max(1).min(share / (TAIL + 1)).max(1);
        let long = share.saturating_sub(TAIL * piece).max(1);
        self.run(t * (TAIL + 1), 0, &|c, _| {
            let (owner, j) = (c / (TAIL + 1), c % (TAIL + 1));
            let start = owner * share + if j == 0 { 0 } else { long + (j - 1) * piece };
            let end = owner * share + if j == 0 { long } else { long + j * piece };
            let end = if j == TAIL { (owner + 1) * share } else { end };
            let (a, b) = (
                (start * align).min(n),
                (end.min((owner + 1) * share) * align).min(n),
            );
            if a < b {
                f(a..b)
            }
        });
    }

    /// [`ThreadPool::for_ranges`], handing each call the running thread's scratch buffer of
    /// `scratch` floats (contents unspecified).
    pub fn for_ranges_scratch(
        &self,
        n: usize,
        align: usize,
        scratch: usize,
        f: &(dyn Fn(std::ops::Range<usize>, &mut [f32]) + Sync),
    ) {
        let size = self.range_len(n, align);
        self.for_chunks_scratch(n.div_ceil(size), scratch, &|c, buf| {
            f(c * size..((c + 1) * size).min(n), buf)
        });
    }

    /// Run `f(chunk, scratch)` for every chunk in `0..chunks`, handing each the running
    /// thread's scratch buffer of `scratch` floats (contents unspecified).
    pub fn for_chunks_scratch(
        &self,
        chunks: usize,
        scratch: usize,
        f: &(dyn Fn(usize, &mut [f32]) + Sync),
    ) {
        self.run(chunks, scratch, &|c, t| {
            // SAFETY: thread t's buffer, used by thread t alone during the job
            let buf = unsafe { self.scratch_of(t) };
            f(c, &mut buf[..scratch])
        });
    }

    /// The length of the ranges [`ThreadPool::for_ranges`] cuts `n` items into (the last
    /// may be shorter).
    fn range_len(&self, n: usize, align: usize) -> usize {
        let align = align.max(1);
        let chunks = (self.threads * CHUNKS_PER_THREAD)
            .min(n.div_ceil(align))
            .max(1);
        n.div_ceil(chunks).div_ceil(align).max(1) * align
    }

    /// # Safety
    /// Only thread `t` during a job, or the caller under `submit` between jobs.
    #[allow(clippy::mut_from_ref)]
    unsafe fn scratch_of(&self, t: usize) -> &mut Vec<f32> {
        unsafe { &mut *self.scratch[t].get() }
    }

    fn run(&self, chunks: usize, scratch: usize, f: &(dyn Fn(usize, usize) + Sync)) {
        if chunks == 0 {
            return;
        }
        let _guard = self.submit.lock().unwrap_or_else(|e| e.into_inner());
        for buf in self.scratch.iter() {
            // SAFETY: between jobs, under `submit`: no thread is using any buffer
            let v = unsafe { &mut *buf.get() };
            if v.len() < scratch {
                v.resize(scratch, 0.0);
            }
        }
        if self.threads == 1 || chunks == 1 {
            (0..chunks).for_each(|c| f(c, 0));
            return;
        }
        let s = &*self.shared;
        // SAFETY: erase the lifetime; the job is retired below, and we wait until no worker
        // is inside it, before returning.
        let ptr: *const (dyn Fn(usize, usize) + Sync + '_) = f;
        let ptr: *const Job = unsafe { std::mem::transmute(ptr) };
        unsafe { *s.job.get() = Some(ptr) };
        assert!((chunks as u64) < 1 << 32, "a job of {chunks} chunks");
        s.deal(chunks);
        s.done.store(0, Relaxed);
        s.retired.store(false, SeqCst);
        s.generation.fetch_add(1, SeqCst);
        if *s.sleepers.lock().unwrap_or_else(|e| e.into_inner()) > 0 {
            s.wake.notify_all();
        }
        s.work(f, 0);
        // Chunks others took are running on scheduled threads: a short wait.
        let mut spins = 0u32;
        while s.done.load(Acquire) < chunks {
            spins += 1;
            if spins < 1 << 14 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        s.retired.store(true, SeqCst);
        while s.active.load(SeqCst) != 0 {
            std::hint::spin_loop();
        }
        unsafe { *s.job.get() = None };
        if s.panicked.swap(false, Relaxed) {
            panic!("a kernel thread panicked");
        }
    }
}

/// An output buffer that the chunks of one job write in disjoint places (rows, columns,
/// ranges): a raw pointer, so every chunk can hold it at once.
pub struct Disjoint<T = f32>(*mut T);

impl<T> Clone for Disjoint<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Disjoint<T> {}

// SAFETY: users write disjoint elements from different threads, never the same one.
unsafe impl<T> Send for Disjoint<T> {}
unsafe impl<T> Sync for Disjoint<T> {}

impl<T> Disjoint<T> {
    pub fn new(out: &mut [T]) -> Disjoint<T> {
        Disjoint(out.as_mut_ptr())
    }

    /// A method, not a field, so closures capture the `Sync` wrapper whole.
    pub fn ptr(self) -> *mut T {
        self.0
    }

    /// # Safety
    /// `start..start + len` lies in the buffer and no other chunk touches it meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice<'a>(self, start: usize, len: usize) -> &'a mut [T] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

fn worker(s: &Shared, idx: usize) {
    let mut seen = 0u64;
    s.started.fetch_add(1, Release);
    loop {
        // spin, then sleep, until a new generation (or shutdown) is published
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let g = s.generation.load(Acquire);
            if g != seen || s.shutdown.load(Relaxed) {
                seen = g;
                break;
            }
            spins += 1;
            if spins.is_multiple_of(1024) && start.elapsed() > SPIN {
                let mut sleepers = s.sleepers.lock().unwrap_or_else(|e| e.into_inner());
                *sleepers += 1;
                while s.generation.load(Acquire) == seen && !s.shutdown.load(Relaxed) {
                    sleepers = s.wake.wait(sleepers).unwrap_or_else(|e| e.into_inner());
                }
                *sleepers -= 1;
            } else {
                std::hint::spin_loop();
            }
        }
        if s.shutdown.load(Relaxed) {
            return;
        }
        s.active.fetch_add(1, SeqCst);
        if !s.retired.load(SeqCst) {
            // SAFETY: registered in `active` while the job is not retired, so the caller
            // keeps it alive until we leave.
            if let Some(job) = unsafe { *s.job.get() } {
                s.work(unsafe { &*job }, idx);
            }
        }
        s.active.fetch_sub(1, SeqCst);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Relaxed);
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
    fn every_chunk_runs_once_per_job() {
        for threads in [1, 2, 3, 5] {
            let pool = ThreadPool::new(threads, false);
            for chunks in [0, 1, 2, 7, 64] {
                for _ in 0..100 {
                    let hits: Vec<AtomicUsize> = (0..chunks).map(|_| AtomicUsize::new(0)).collect();
                    pool.for_chunks(chunks, &|i| {
                        hits[i].fetch_add(1, Relaxed);
                    });
                    assert!(hits.iter().all(|h| h.load(Relaxed) == 1));
                }
            }
        }
    }

    /// More threads than cores, each job tiny: the caller must not wait on a worker the
    /// OS has not scheduled (it takes the chunks itself).
    #[test]
    fn oversubscribed_pools_still_finish_every_job() {
        let pools: Vec<ThreadPool> = (0..3).map(|_| ThreadPool::new(4, false)).collect();
        std::thread::scope(|s| {
            for pool in &pools {
                s.spawn(move || {
                    for _ in 0..2000 {
                        let n = AtomicUsize::new(0);
                        pool.for_ranges(64, 1, &|r| {
                            n.fetch_add(r.len(), Relaxed);
                        });
                        assert_eq!(n.load(Relaxed), 64);
                    }
                });
            }
        });
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
                    seen[i].fetch_add(1, Relaxed);
                }
            });
            assert!(seen.iter().all(|h| h.load(Relaxed) == 1), "n={n}");
            assert!(starts.lock().unwrap().iter().all(|s| s % 16 == 0));
        }
    }

    #[test]
    fn shares_cover_exactly_in_long_aligned_ranges() {
        let pool = ThreadPool::new(3, false);
        for n in [0, 1, 15, 16, 17, 100, 1000, 5000] {
            let seen: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            let ranges = Mutex::new(Vec::new());
            pool.for_shares(n, 16, &|r| {
                ranges.lock().unwrap().push(r.clone());
                for i in r {
                    seen[i].fetch_add(1, Relaxed);
                }
            });
            assert!(seen.iter().all(|h| h.load(Relaxed) == 1), "n={n}");
            let ranges = ranges.into_inner().unwrap();
            assert!(ranges.len() <= 3 * (TAIL + 1), "n={n}: {ranges:?}");
            assert!(
                ranges.iter().all(|r| r.start % 16 == 0 && !r.is_empty()),
                "n={n}: {ranges:?}"
            );
            // most of each thread's share is one range: a long stretch of memory
            let share = n.div_ceil(16).div_ceil(3) * 16;
            if n >= 1000 {
                let long = ranges.iter().filter(|r| r.len() * 5 >= share * 4).count();
                assert_eq!(long, 3, "n={n}: {ranges:?}");
            }
        }
    }

    #[test]
    fn wakes_after_sleeping() {
        let pool = ThreadPool::new(2, false);
        std::thread::sleep(SPIN * 20);
        let n = AtomicUsize::new(0);
        pool.for_chunks(8, &|_| {
            n.fetch_add(1, Relaxed);
        });
        assert_eq!(n.load(Relaxed), 8);
    }

    #[test]
    fn a_panicking_chunk_reaches_the_caller() {
        let pool = ThreadPool::new(2, false);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.for_chunks(8, &|i| {
                if i == 5 {
                    panic!("boom")
                }
            })
        }));
        assert!(r.is_err());
        // and the pool still works afterwards
        let n = AtomicUsize::new(0);
        pool.for_chunks(8, &|_| {
            n.fetch_add(1, Relaxed);
        });
        assert_eq!(n.load(Relaxed), 8);
    }
}
