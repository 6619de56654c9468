//! The batching engine gives each request what it would get alone, whatever else runs, and
//! leaves the KV pool as it found it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{
    EngineConfig, EngineEvent, EngineHandle, FinishReason, GenerateRequest, Generator, Request,
    SamplingParams, StopParams,
};
use loader::Checkpoint;
use model::Model;

fn model() -> Arc<Model> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/v3_yarn_mtp");
    Arc::new(Model::load(&Checkpoint::open(&dir).unwrap()).unwrap())
}

fn engine(model: &Arc<Model>, kv_blocks: usize, max_batch_tokens: usize) -> EngineHandle {
    let cfg = EngineConfig {
        kv_blocks,
        block_size: 4,
        max_batch_tokens,
        max_running: 16,
        ctx_size: 128,
    };
    EngineHandle::start(model.clone(), None, cfg)
}

fn prompt(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + seed * 101) % 320).collect()
}

fn request(p: Vec<u32>, max_tokens: usize, sampling: SamplingParams) -> Request {
    Request {
        prompt: p,
        sampling,
        stop: StopParams {
            max_tokens,
            ignore_eos: true,
            ..Default::default()
        },
        n: 1,
    }
}

fn greedy_logprobs() -> SamplingParams {
    SamplingParams {
        logprobs: Some(5),
        ..SamplingParams::greedy()
    }
}

/// Token ids and per-step top-5 logprobs of completion 0.
type Out = (Vec<u32>, Vec<Vec<(u32, f32)>>);

fn collect(stream: &mut engine::EventStream) -> (Out, FinishReason, engine::Usage) {
    let (mut ids, mut lps) = (Vec::new(), Vec::new());
    loop {
        match stream.next_blocking().expect("stream ends with Done") {
            EngineEvent::Token { token, .. } => {
                ids.push(token.id);
                lps.push(token.top_logprobs);
            }
            EngineEvent::Done { reason, usage, .. } => return ((ids, lps), reason, usage),
            EngineEvent::Error(e) => panic!("{e}"),
        }
    }
}

fn alone(model: &Model, req: &Request) -> Out {
    let g = Generator {
        model,
        tokenizer: None,
        ctx_size: 128,
    };
    let out = g
        .generate(
            &GenerateRequest {
                prompt: req.prompt.clone(),
                sampling: req.sampling.clone(),
                stop: req.stop.clone(),
                n: 1,
                beam: None,
            },
            &mut |_| true,
        )
        .unwrap();
    let c = &out.completions[0];
    (
        c.ids.clone(),
        c.logprobs.iter().map(|s| s.top_logprobs.clone()).collect(),
    )
}

fn assert_same(got: &Out, want: &Out, what: &str) {
    assert_eq!(got.0, want.0, "{what}: token ids");
    for (step, (g, w)) in got.1.iter().zip(&want.1).enumerate() {
        for ((gi, gl), (wi, wl)) in g.iter().zip(w) {
            assert_eq!(gi, wi, "{what}: step {step} alternatives");
            assert!(
                (gl - wl).abs() <= 1e-4,
                "{what}: step {step} logprob {gl} vs {wl}"
            );
        }
    }
}

fn wait_idle(e: &EngineHandle) {
    let t = Instant::now();
    loop {
        let s = e.stats();
        use std::sync::atomic::Ordering::Relaxed;
        if s.running.load(Relaxed) == 0
            && s.waiting.load(Relaxed) == 0
            && s.kv_blocks_used.load(Relaxed) == 0
        {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the engine did not drain: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn batched_outputs_equal_one_at_a_time() {
    let m = model();
    let reqs: Vec<Request> = (0..6)
        .map(|i| request(prompt(3 + 9 * i, i as u32), 10, greedy_logprobs()))
        .collect();
    // a small token budget: long prompts are chunked and mixed with running decodes
    let e = engine(&m, 256, 12);
    let mut streams: Vec<_> = reqs.iter().map(|r| e.submit(r.clone()).unwrap()).collect();
    for (i, (r, s)) in reqs.iter().zip(streams.iter_mut()).enumerate() {
        let (got, reason, usage) = collect(s);
        assert_same(&got, &alone(&m, r), &format!("request {i}"));
        assert_eq!(reason, FinishReason::Length);
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens),
            (r.prompt.len(), 10)
        );
    }
    // sampled requests with seeds too
    let sampled: Vec<Request> = (0..4)
        .map(|i| {
            request(
                prompt(5 + i, 9),
                12,
                SamplingParams {
                    seed: Some(i as u64),
                    logprobs: Some(2),
                    ..Default::default()
                },
            )
        })
        .collect();
    let mut streams: Vec<_> = sampled
        .iter()
        .map(|r| e.submit(r.clone()).unwrap())
        .collect();
    for (r, s) in sampled.iter().zip(streams.iter_mut()) {
        assert_same(&collect(s).0, &alone(&m, r), "seeded sampling");
    }
    wait_idle(&e);
}

#[test]
fn preemption_under_a_small_pool_does_not_change_outputs() {
    let m = model();
    // 14 blocks of 4 = 56 positions for 5 sequences growing to ~30 tokens: preemption happens
    let e = engine(&m, 14, 64);
    let reqs: Vec<Request> = (0..5)
        .map(|i| request(prompt(10 + i, 20 + i as u32), 20, greedy_logprobs()))
        .collect();
    let mut streams: Vec<_> = reqs.iter().map(|r| e.submit(r.clone()).unwrap()).collect();
    for (r, s) in reqs.iter().zip(streams.iter_mut()) {
        assert_same(&collect(s).0, &alone(&m, r), "under preemption");
    }
    assert!(
        e.stats()
            .preemptions
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the pool was never short"
    );
    wait_idle(&e);
}

#[test]
fn a_second_turn_reuses_the_first_turns_blocks() {
    let m = model();
    let e = engine(&m, 256, 64);
    let first = request(prompt(30, 3), 8, greedy_logprobs());
    let (out1, _, u1) = collect(&mut e.submit(first.clone()).unwrap());
    assert_eq!(u1.cached_tokens, 0);
    // the next turn re-sends the whole history plus more
    let mut history = first.prompt.clone();
    history.extend(&out1.0);
    history.extend(prompt(5, 77));
    let second = request(history, 8, greedy_logprobs());
    let (out2, _, u2) = collect(&mut e.submit(second.clone()).unwrap());
    assert!(
        u2.cached_tokens >= 28,
        "cached {} of {} prompt tokens",
        u2.cached_tokens,
        second.prompt.len()
    );
    assert_same(&out2, &alone(&m, &second), "second turn");
    let s = e.stats();
    assert!(s.prefix_hit.load(std::sync::atomic::Ordering::Relaxed) > 0);
    wait_idle(&e);
}

#[test]
fn cancelled_failed_and_finished_requests_all_return_their_blocks() {
    let m = model();
    let e = engine(&m, 64, 32);
    // finished
    let (_, reason, _) = collect(
        &mut e
            .submit(request(prompt(9, 1), 5, SamplingParams::greedy()))
            .unwrap(),
    );
    assert_eq!(reason, FinishReason::Length);
    // cancelled mid-stream: drop the stream after two tokens
    let mut s = e
        .submit(request(prompt(9, 2), 100, SamplingParams::greedy()))
        .unwrap();
    s.next_blocking();
    s.next_blocking();
    drop(s);
    // cancelled before it ever ran
    drop(
        e.submit(request(prompt(40, 3), 50, SamplingParams::greedy()))
            .unwrap(),
    );
    // refused at the door
    assert!(
        e.submit(request(vec![], 5, SamplingParams::greedy()))
            .is_err()
    );
    assert!(
        e.submit(request(vec![999], 5, SamplingParams::greedy()))
            .is_err()
    );
    assert!(
        e.submit(request(prompt(200, 1), 5, SamplingParams::greedy()))
            .is_err(),
        "longer than the context"
    );
    assert!(
        e.submit(request(
            prompt(9, 1),
            1000,
            SamplingParams {
                top_p: 7.0,
                ..Default::default()
            }
        ))
        .is_err()
    );
    // n > 1: several completions, all finishing
    let mut s = e
        .submit(Request {
            n: 3,
            ..request(
                prompt(9, 4),
                4,
                SamplingParams {
                    seed: Some(1),
                    ..Default::default()
                },
            )
        })
        .unwrap();
    let mut done = 0;
    while let Some(ev) = s.next_blocking() {
        if let EngineEvent::Done { .. } = ev {
            done += 1;
        }
    }
    assert_eq!(done, 3);
    wait_idle(&e);
}
