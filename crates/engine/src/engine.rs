//! The engine: one model in memory, many requests at once. `EngineHandle::submit` is the
//! only entry point; behind it a thread runs the step loop: schedule, one forward over the
//! whole batch (decode tokens of running sequences and chunks of waiting prompts), sample,
//! stream events. Requests join and leave between steps; a dropped stream cancels its
//! request, and its KV blocks go back to the pool.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use model::{KvPool, LogitsMode, Model, PagedBatch, PagedSeq};
use tokenizer::Tokenizer;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::blocks::BlockManager;
use crate::error::EngineError;
use crate::generate::{FinishReason, StopParams, check_prompt};
use crate::output::OutputState;
use crate::sampler::{Sampled, Sampler, SamplingParams};
use crate::scheduler::{Scheduler, SchedulerConfig, SeqId};

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// KV-cache blocks in the pool (see [`EngineConfig::blocks_for_bytes`]).
    pub kv_blocks: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// Tokens per forward: decode tokens plus prefill chunks.
    pub max_batch_tokens: usize,
    /// Sequences running at once.
    pub max_running: usize,
    /// Longest sequence (prompt plus output).
    pub ctx_size: usize,
}

impl EngineConfig {
    /// How many blocks a memory budget buys for this model.
    pub fn blocks_for_bytes(model: &Model, bytes: usize, block_size: usize) -> usize {
        bytes / KvPool::block_bytes(&model.config, block_size, model.cache_type())
    }
}

#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    pub stop: StopParams,
    /// Completions (each its own sequence, sharing the prompt's cached blocks).
    pub n: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose KV came from the prefix cache.
    pub cached_tokens: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Completion `index` produced a token; `text` is what it completes (may be empty).
    Token {
        index: usize,
        token: Sampled,
        text: String,
    },
    /// Completion `index` ended.
    Done {
        index: usize,
        reason: FinishReason,
        usage: Usage,
    },
    /// The request failed; no more events follow.
    Error(String),
}

/// The events of one request, in order; ends after every completion is done.
pub struct EventStream {
    rx: UnboundedReceiver<Event>,
}

impl EventStream {
    /// Wait for the next event (for threads; async code uses [`EventStream::recv`]).
    pub fn next_blocking(&mut self) -> Option<Event> {
        self.rx.blocking_recv()
    }

    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

/// Live figures of the engine, for metrics.
#[derive(Default, Debug)]
pub struct EngineStats {
    pub running: AtomicUsize,
    pub waiting: AtomicUsize,
    pub kv_blocks_total: AtomicUsize,
    pub kv_blocks_used: AtomicUsize,
    pub prefix_queried: AtomicU64,
    pub prefix_hit: AtomicU64,
    pub steps: AtomicU64,
    pub preemptions: AtomicU64,
}

enum Msg {
    Submit {
        req: Request,
        tx: UnboundedSender<Event>,
    },
}

/// The engine's one entry point. Cheap to clone; the loop stops when the last clone drops.
#[derive(Clone)]
pub struct EngineHandle {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Msg>,
    model: Arc<Model>,
    cfg: EngineConfig,
    stats: Arc<EngineStats>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the loop once its work is done.
        let (dead, _) = mpsc::channel();
        self.tx = dead;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl EngineHandle {
    pub fn start(
        model: Arc<Model>,
        tokenizer: Option<Arc<Tokenizer>>,
        cfg: EngineConfig,
    ) -> EngineHandle {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(EngineStats::default());
        stats
            .kv_blocks_total
            .store(cfg.kv_blocks, Ordering::Relaxed);
        let thread = {
            let (model, cfg, stats) = (model.clone(), cfg.clone(), stats.clone());
            std::thread::Builder::new()
                .name("deeprust-engine".into())
                .spawn(move || Loop::new(model, tokenizer, cfg, stats).run(rx))
                .expect("spawning the engine thread")
        };
        EngineHandle {
            inner: Arc::new(Inner {
                tx,
                model,
                cfg,
                stats,
                thread: Some(thread),
            }),
        }
    }

    pub fn model(&self) -> &Model {
        &self.inner.model
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.cfg
    }

    pub fn stats(&self) -> &EngineStats {
        &self.inner.stats
    }

    /// Check `req` and queue it; its events arrive on the returned stream.
    pub fn submit(&self, req: Request) -> Result<EventStream, EngineError> {
        self.validate(&req)?;
        let (tx, rx) = unbounded_channel();
        self.inner
            .tx
            .send(Msg::Submit { req, tx })
            .map_err(|_| EngineError::InvalidRequest("the engine has stopped".into()))?;
        Ok(EventStream { rx })
    }

    fn validate(&self, req: &Request) -> Result<(), EngineError> {
        let cfg = &self.inner.cfg;
        let vocab = self.inner.model.config.vocab_size;
        check_prompt(&req.prompt, req.n, vocab, cfg.ctx_size)?;
        if req.stop.max_tokens == 0 {
            return Err(EngineError::InvalidRequest(
                "max_tokens must be at least 1".into(),
            ));
        }
        // Alone in the pool, the sequence must fit, or it could never run.
        let longest = cfg.ctx_size.min(req.prompt.len() + req.stop.max_tokens);
        if longest.div_ceil(cfg.block_size) > cfg.kv_blocks {
            return Err(EngineError::InvalidRequest(format!(
                "prompt plus max_tokens ({longest} tokens) exceed the KV cache ({} tokens)",
                cfg.kv_blocks * cfg.block_size
            )));
        }
        req.sampling
            .validate(vocab)
            .map_err(EngineError::InvalidRequest)
    }
}

/// Per-sequence state the loop keeps beside the scheduler's.
struct SeqCtx {
    index: usize,
    tx: UnboundedSender<Event>,
    sampler: Sampler,
    output: OutputState,
    stop: StopParams,
    prompt_len: usize,
    cached: usize,
    generated: usize,
    started: bool,
}

struct Loop {
    model: Arc<Model>,
    tokenizer: Option<Arc<Tokenizer>>,
    cfg: EngineConfig,
    stats: Arc<EngineStats>,
    pool: KvPool,
    logits: Vec<f32>,
    sched: Scheduler,
    seqs: HashMap<SeqId, SeqCtx>,
    next_id: SeqId,
}

impl Loop {
    fn new(
        model: Arc<Model>,
        tokenizer: Option<Arc<Tokenizer>>,
        cfg: EngineConfig,
        stats: Arc<EngineStats>,
    ) -> Loop {
        let manager = Rc::new(RefCell::new(BlockManager::new(
            cfg.kv_blocks,
            cfg.block_size,
        )));
        let sched = Scheduler::new(
            SchedulerConfig {
                max_batch_tokens: cfg.max_batch_tokens,
                max_running: cfg.max_running,
            },
            manager,
        );
        Loop {
            pool: KvPool::with_type(
                &model.config,
                cfg.kv_blocks,
                cfg.block_size,
                model.cache_type(),
            ),
            logits: Vec::new(),
            model,
            tokenizer,
            cfg,
            stats,
            sched,
            seqs: HashMap::new(),
            next_id: 0,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            // Idle: sleep until a request comes (or every handle is gone).
            if self.sched.is_idle() {
                match rx.recv() {
                    Ok(m) => self.take(m),
                    Err(_) => return,
                }
            }
            while let Ok(m) = rx.try_recv() {
                self.take(m);
            }
            self.drop_cancelled();
            if !self.step() {
                // Nothing could be scheduled: wait briefly for work to change that.
                if let Ok(m) = rx.recv_timeout(Duration::from_millis(5)) {
                    self.take(m);
                }
            }
            self.publish_stats();
        }
    }

    fn take(&mut self, m: Msg) {
        let Msg::Submit { req, tx } = m;
        for index in 0..req.n {
            let id = self.next_id;
            self.next_id += 1;
            self.seqs.insert(
                id,
                SeqCtx {
                    index,
                    tx: tx.clone(),
                    sampler: Sampler::new(req.sampling.clone(), &req.prompt, index as u64),
                    output: OutputState::new(&req.stop),
                    stop: req.stop.clone(),
                    prompt_len: req.prompt.len(),
                    cached: 0,
                    generated: 0,
                    started: false,
                },
            );
            self.sched.add(id, req.prompt.clone());
        }
    }

    /// A client that dropped its stream has cancelled: free its sequences.
    fn drop_cancelled(&mut self) {
        let gone: Vec<SeqId> = self
            .seqs
            .iter()
            .filter(|(_, c)| c.tx.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.seqs.remove(&id);
            self.sched.finish(id);
        }
    }

    /// One forward over the scheduled batch. False if nothing could run.
    fn step(&mut self) -> bool {
        let plan = self.sched.schedule();
        self.stats
            .preemptions
            .fetch_add(plan.preempted.len() as u64, Ordering::Relaxed);
        if plan.items.is_empty() {
            return false;
        }
        for item in &plan.items {
            let c = self
                .seqs
                .get_mut(&item.id)
                .expect("scheduled sequences have a context");
            if !c.started {
                // a first chunk that does not start at 0 begins after a prefix-cache hit
                c.started = true;
                c.cached = item.start;
            }
        }
        let batch = PagedBatch {
            seqs: plan
                .items
                .iter()
                .map(|it| {
                    let s = self.sched.seq(it.id);
                    PagedSeq {
                        blocks: &s.table.blocks,
                        start_pos: it.start,
                        tokens: &s.tokens[it.start..it.start + it.len],
                    }
                })
                .collect(),
            logits: LogitsMode::Last,
        };
        // the logits buffer is kept from step to step (taken out while we sample)
        let mut logits = std::mem::take(&mut self.logits);
        match self
            .model
            .forward_paged_into(&batch, &mut self.pool, None, &mut logits)
        {
            Ok(()) => {}
            Err(e) => {
                for it in &plan.items {
                    if let Some(c) = self.seqs.remove(&it.id) {
                        let _ = c.tx.send(Event::Error(e.to_string()));
                    }
                    self.sched.finish(it.id);
                }
                return true;
            }
        };
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        let vocab = self.model.config.vocab_size;
        for (k, it) in plan.items.iter().enumerate() {
            self.sched.advance(it);
            if self.sched.ready_to_sample(it.id) {
                self.sample(it.id, &logits[k * vocab..(k + 1) * vocab]);
            }
        }
        self.logits = logits;
        true
    }

    fn sample(&mut self, id: SeqId, logits: &[f32]) {
        let Some(c) = self.seqs.get_mut(&id) else {
            return;
        };
        let tok = c.sampler.sample(logits);
        c.generated += 1;
        let len = self.sched.seq(id).tokens.len() + 1;
        let stop_token = c.stop.stop_token_ids.contains(&tok.id)
            || (!c.stop.ignore_eos && self.model.config.eos_token_ids.contains(&tok.id));
        let at_limit = c.generated >= c.stop.max_tokens || len >= self.cfg.ctx_size;
        let step = match c
            .output
            .step(self.tokenizer.as_deref(), tok.id, stop_token, at_limit)
        {
            Ok(s) => s,
            Err(e) => {
                let _ = c.tx.send(Event::Error(e.to_string()));
                self.seqs.remove(&id);
                self.sched.finish(id);
                return;
            }
        };
        let mut alive =
            c.tx.send(Event::Token {
                index: c.index,
                token: tok.clone(),
                text: step.text,
            })
            .is_ok();
        if let Some(reason) = step.finish {
            let usage = Usage {
                prompt_tokens: c.prompt_len,
                completion_tokens: c.generated,
                cached_tokens: c.cached,
            };
            let _ = c.tx.send(Event::Done {
                index: c.index,
                reason,
                usage,
            });
            alive = false;
        }
        if alive {
            self.sched.push_token(id, tok.id);
        } else {
            self.seqs.remove(&id);
            self.sched.finish(id);
        }
    }

    fn publish_stats(&self) {
        let s = &self.stats;
        s.running.store(self.sched.running(), Ordering::Relaxed);
        s.waiting.store(self.sched.waiting(), Ordering::Relaxed);
        let m = self.sched.blocks().borrow();
        s.kv_blocks_used.store(m.in_use(), Ordering::Relaxed);
        s.prefix_queried.store(m.stats.queried, Ordering::Relaxed);
        s.prefix_hit.store(m.stats.hit, Ordering::Relaxed);
    }
}
