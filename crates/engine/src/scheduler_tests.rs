use super::*;

fn sched(blocks: usize, bs: usize, budget: usize, max_running: usize) -> Scheduler {
    let m = Rc::new(RefCell::new(BlockManager::new(blocks, bs)));
    Scheduler::new(
        SchedulerConfig {
            max_batch_tokens: budget,
            max_running,
        },
        m,
    )
}

fn it(id: SeqId, start: usize, len: usize) -> Scheduled {
    Scheduled { id, start, len }
}

/// Run a plan as the engine would: advance every item, and give each sequence that is
/// ready a next token (its id, so tests can follow it).
fn run(s: &mut Scheduler, plan: &Plan) {
    for i in &plan.items {
        s.advance(i);
        if s.ready_to_sample(i.id) {
            s.push_token(i.id, 1000 + i.id as u32);
        }
    }
}

fn prompt(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32).map(|i| i * 7 + seed).collect()
}

#[test]
fn token_budget_and_chunked_prefill() {
    let mut s = sched(64, 4, 8, 8);
    s.add(1, prompt(10, 0));
    s.add(2, prompt(10, 1));
    let p = s.schedule();
    assert_eq!(p.items, vec![it(1, 0, 8)]);
    run(&mut s, &p);
    let p = s.schedule();
    assert_eq!(p.items, vec![it(1, 8, 2), it(2, 0, 6)]);
    run(&mut s, &p); // 1 got its first token
    // decoding sequence 1 goes first, then the rest of 2's prompt
    let p = s.schedule();
    assert_eq!(p.items, vec![it(1, 10, 1), it(2, 6, 4)]);
    run(&mut s, &p);
    let p = s.schedule();
    assert_eq!(p.items, vec![it(1, 11, 1), it(2, 10, 1)]);
}

#[test]
fn admission_waits_for_blocks_and_the_pool_returns_to_baseline() {
    // 4 blocks of 4: room for 16 positions
    let mut s = sched(4, 4, 64, 8);
    s.add(1, prompt(9, 0)); // 3 blocks
    s.add(2, prompt(6, 1)); // 2 blocks: must wait
    let p = s.schedule();
    assert_eq!(p.items, vec![it(1, 0, 9)]);
    assert_eq!(s.waiting(), 1);
    run(&mut s, &p);
    s.finish(1);
    let p = s.schedule();
    assert_eq!(p.items, vec![it(2, 0, 6)]);
    run(&mut s, &p);
    s.finish(2);
    assert!(s.is_idle());
    assert_eq!(s.blocks().borrow().available(), 4);
    assert_eq!(s.blocks().borrow().in_use(), 0);
}

#[test]
fn the_newest_running_sequence_is_preempted_and_resumes() {
    let mut s = sched(4, 4, 64, 8);
    s.add(1, prompt(7, 0)); // 2 blocks
    s.add(2, prompt(7, 1)); // 2 blocks
    let p = s.schedule();
    assert_eq!(p.items, vec![it(1, 0, 7), it(2, 0, 7)]);
    run(&mut s, &p); // both now have 8 tokens: positions 0..7 cached, token 7 to compute
    let p = s.schedule();
    assert_eq!(p.items, vec![it(1, 7, 1), it(2, 7, 1)]);
    run(&mut s, &p); // 9 tokens each: position 8 needs a third block, none left
    let p = s.schedule();
    assert_eq!(p.preempted, vec![2]);
    assert_eq!(p.items, vec![it(1, 8, 1)]);
    assert_eq!(s.seq(2).computed, 0);
    assert_eq!(s.seq(2).tokens.len(), 9, "generated tokens are kept");
    run(&mut s, &p);
    s.finish(1);
    // 2 resumes: its full blocks may still be cached, the rest is recomputed
    let p = s.schedule();
    assert_eq!(p.items.len(), 1);
    assert_eq!(p.items[0].id, 2);
    assert_eq!(p.items[0].start + p.items[0].len, 9);
}

#[test]
fn prefix_hits_skip_cached_blocks() {
    let mut s = sched(32, 4, 64, 8);
    let shared = prompt(12, 0);
    s.add(1, shared.clone());
    let p = s.schedule();
    run(&mut s, &p);
    s.finish(1); // its three full blocks stay cached, idle
    let mut second = shared.clone();
    second.extend([5, 6, 7, 8, 9]);
    s.add(2, second);
    let p = s.schedule();
    assert_eq!(
        p.items,
        vec![it(2, 12, 5)],
        "the first 12 tokens come from the cache"
    );
    let st = s.blocks().borrow().stats;
    assert_eq!((st.queried, st.hit), (12 + 17, 12));
    // the same prompt again: everything but the block of the last token is reused
    s.add(3, shared.clone());
    let p = s.schedule();
    assert_eq!(p.items.iter().find(|i| i.id == 3), Some(&it(3, 8, 4)));
}

#[test]
fn cached_blocks_are_evicted_least_recently_used_first() {
    let mut s = sched(3, 4, 64, 8);
    s.add(1, prompt(5, 0)); // 2 blocks, the first full and cached
    let p = s.schedule();
    run(&mut s, &p);
    s.finish(1);
    assert_eq!(s.blocks().borrow().available(), 3);
    s.add(2, prompt(12, 50)); // needs all 3 blocks: evicts the cached one
    let p = s.schedule();
    assert_eq!(p.items, vec![it(2, 0, 12)]);
    s.finish(2);
    s.add(3, prompt(5, 0));
    let p = s.schedule();
    assert_eq!(
        p.items,
        vec![it(3, 0, 5)],
        "the evicted prefix is recomputed"
    );
}

#[test]
fn no_request_starves() {
    // Two small requests hold blocks when a big one arrives; small ones keep arriving after
    // it. The big one must not be overtaken: it is admitted as soon as the first two finish.
    let mut s = sched(8, 4, 16, 8);
    s.add(1, prompt(3, 1));
    s.add(2, prompt(3, 2));
    let p = s.schedule();
    run(&mut s, &p);
    s.add(100, prompt(28, 9)); // 7 of the 8 blocks
    let mut admitted = Vec::new();
    for next in 3..33 {
        s.add(next, prompt(3, next as u32));
        let p = s.schedule();
        for i in &p.items {
            if i.start == 0 && !admitted.contains(&i.id) {
                admitted.push(i.id);
            }
        }
        run(&mut s, &p);
        // small requests finish once they have two tokens of output
        let done: Vec<SeqId> = p
            .items
            .iter()
            .map(|i| i.id)
            .filter(|&id| id != 100 && s.contains(id) && s.seq(id).tokens.len() >= 5)
            .collect();
        for id in done {
            s.finish(id);
        }
        if s.contains(100) && s.seq(100).tokens.len() >= 30 {
            s.finish(100);
        }
    }
    assert_eq!(
        admitted.first(),
        Some(&100),
        "nothing that arrived later was admitted before it: {admitted:?}"
    );
    assert!(
        admitted.len() > 5,
        "and the small ones ran after it: {admitted:?}"
    );
}

#[test]
fn max_running_caps_the_batch() {
    let mut s = sched(64, 4, 64, 2);
    for id in 1..=3 {
        s.add(id, prompt(3, id as u32));
    }
    let p = s.schedule();
    assert_eq!(p.items.len(), 2);
    assert_eq!(s.waiting(), 1);
}

#[test]
fn a_waiting_sequence_holds_no_blocks() {
    // The head of the queue found part of its prompt cached but cannot fit the rest: it
    // must not keep the cached blocks from a sequence preempted in front of it.
    let mut s = sched(6, 4, 64, 8);
    s.add(1, prompt(8, 0));
    let p = s.schedule();
    run(&mut s, &p);
    s.finish(1); // blocks 0-1 cached and idle
    s.add(2, prompt(17, 5)); // 5 blocks: fits
    s.add(3, [prompt(8, 0), prompt(12, 3)].concat()); // hits the cached 2 blocks, needs 5 in all
    let p = s.schedule();
    assert_eq!(p.items, vec![it(2, 0, 17)]);
    assert_eq!(
        s.blocks().borrow().in_use(),
        5,
        "sequence 3 waits without holding its prefix"
    );
}
