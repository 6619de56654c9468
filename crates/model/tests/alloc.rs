//! The steady-state decode loop allocates nothing: after a few warm-up steps (which size
//! the scratch free lists and the kernels' per-thread buffers), further decode steps of a
//! MoE + MLA model make no heap allocation at all, on any thread. One test in this binary,
//! so nothing else allocates while it counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kernels::{CpuBackend, CpuOptions};
use loader::Checkpoint;
use model::{KvPool, LogitsMode, Model, PagedBatch, PagedSeq};

struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static LAST_SIZE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            LAST_SIZE.store(l.size(), Ordering::Relaxed);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn decode_steps_allocate_nothing() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/v3_yarn_mtp");
    let ckpt = Checkpoint::open(&dir).unwrap();
    let be = CpuBackend::with_options(&CpuOptions {
        threads: Some(2),
        ..Default::default()
    })
    .unwrap();
    let model = Model::load_with(&ckpt, Box::new(be)).unwrap();
    let (bs, steps, warm) = (4, 40, 6);
    let mut pool = KvPool::new(&model.config, 64, bs);
    let blocks: Vec<u32> = (0..64).rev().collect(); // scattered, out of order
    let prompt: Vec<u32> = (1..=9).collect();
    let mut logits = Vec::with_capacity(model.config.vocab_size * 2);
    let batch = PagedBatch {
        seqs: vec![PagedSeq {
            blocks: &blocks,
            start_pos: 0,
            tokens: &prompt,
        }],
        logits: LogitsMode::Last,
    };
    model
        .forward_paged_into(&batch, &mut pool, None, &mut logits)
        .unwrap();
    let mut ids = vec![0u32; steps];
    let mut counted = Vec::new();
    for step in 0..steps {
        // greedy: the next token depends on the last logits
        let next = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as u32)
            .unwrap();
        ids[step] = next;
        let batch = PagedBatch {
            seqs: vec![PagedSeq {
                blocks: &blocks,
                start_pos: prompt.len() + step,
                tokens: &ids[step..step + 1],
            }],
            logits: LogitsMode::Last,
        };
        ALLOCS.store(0, Ordering::Relaxed);
        COUNTING.store(step >= warm, Ordering::Relaxed);
        model
            .forward_paged_into(&batch, &mut pool, None, &mut logits)
            .unwrap();
        COUNTING.store(false, Ordering::Relaxed);
        if step >= warm {
            counted.push(ALLOCS.load(Ordering::Relaxed));
        }
    }
    assert!(
        counted.iter().all(|&n| n == 0),
        "allocations per decode step after warm-up: {counted:?} (last of {} bytes)",
        LAST_SIZE.load(Ordering::Relaxed)
    );
}
