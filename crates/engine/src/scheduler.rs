//! The scheduler: which tokens of which sequences go into the next forward. Pure and
//! deterministic (no model, no clocks): the engine loop calls `schedule`, runs the plan,
//! then reports back with `advance`, `push_token` and `finish`.
//!
//! Each step fills a token budget: first one token for every decoding sequence, then chunks
//! of running prefills (oldest first), then new sequences from the queue in arrival order
//! (chunked prefill: a long prompt takes several steps and never stalls running streams).
//! A sequence is admitted only when its blocks can be had; when a running sequence needs a
//! block and none is left, the newest running sequence is preempted (its blocks freed, its
//! tokens recomputed when it resumes at the head of the queue).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use crate::blocks::{BlockManager, BlockTable};

pub type SeqId = u64;

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Tokens per forward (decode tokens plus prefill chunks).
    pub max_batch_tokens: usize,
    /// Sequences running at once.
    pub max_running: usize,
}

pub struct SeqEntry {
    /// Prompt, then generated tokens.
    pub tokens: Vec<u32>,
    /// Leading tokens whose KV is in the cache.
    pub computed: usize,
    pub table: BlockTable,
}

/// Compute `tokens[start..start + len]` of sequence `id`; if that reaches the end of its
/// tokens, the forward's logits for the last one pick its next token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheduled {
    pub id: SeqId,
    pub start: usize,
    pub len: usize,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub items: Vec<Scheduled>,
    /// Sequences that lost their blocks this step (they resume later, unchanged).
    pub preempted: Vec<SeqId>,
}

pub struct Scheduler {
    cfg: SchedulerConfig,
    blocks: Rc<RefCell<BlockManager>>,
    seqs: HashMap<SeqId, SeqEntry>,
    waiting: VecDeque<SeqId>,
    /// In admission order: the oldest first.
    running: Vec<SeqId>,
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig, blocks: Rc<RefCell<BlockManager>>) -> Scheduler {
        assert!(cfg.max_batch_tokens > 0 && cfg.max_running > 0);
        Scheduler {
            cfg,
            blocks,
            seqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
        }
    }

    pub fn blocks(&self) -> &Rc<RefCell<BlockManager>> {
        &self.blocks
    }

    /// Queue a new sequence.
    pub fn add(&mut self, id: SeqId, tokens: Vec<u32>) {
        let table = BlockTable::new(self.blocks.clone());
        self.seqs.insert(
            id,
            SeqEntry {
                tokens,
                computed: 0,
                table,
            },
        );
        self.waiting.push_back(id);
    }

    pub fn seq(&self, id: SeqId) -> &SeqEntry {
        &self.seqs[&id]
    }

    pub fn is_idle(&self) -> bool {
        self.seqs.is_empty()
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    pub fn contains(&self, id: SeqId) -> bool {
        self.seqs.contains_key(&id)
    }

    pub fn schedule(&mut self) -> Plan {
        let mut plan = Plan::default();
        let mut budget = self.cfg.max_batch_tokens;
        // Decoding sequences first (one token each), then running prefills, oldest first.
        let mut order: Vec<SeqId> = self.running.clone();
        order.sort_by_key(|id| {
            let s = &self.seqs[id];
            (s.tokens.len() - s.computed > 1) as u8
        });
        for id in order {
            if budget == 0 {
                break;
            }
            if !self.running.contains(&id) {
                continue; // preempted earlier in this step
            }
            let s = &self.seqs[&id];
            let n = (s.tokens.len() - s.computed).min(budget);
            let start = s.computed;
            if !self.grow_or_preempt(id, start + n, &mut plan) {
                continue; // `id` itself was preempted
            }
            plan.items.push(Scheduled { id, start, len: n });
            budget -= n;
        }
        // Admit from the queue in arrival order while blocks, budget and room allow.
        while budget > 0 && self.running.len() < self.cfg.max_running {
            let Some(&id) = self.waiting.front() else {
                break;
            };
            let s = self.seqs.get_mut(&id).expect("queued sequences exist");
            if s.computed == 0 && s.table.blocks.is_empty() {
                s.computed = s.table.attach_prefix(&s.tokens);
            }
            let n = (s.tokens.len() - s.computed).min(budget);
            if !s.table.grow(s.computed + n) {
                // First come, first served: later requests wait behind it. It holds no
                // blocks while it waits (its prefix stays cached for the next try).
                s.table.clear();
                s.computed = 0;
                break;
            }
            self.waiting.pop_front();
            self.running.push(id);
            plan.items.push(Scheduled {
                id,
                start: s.computed,
                len: n,
            });
            budget -= n;
        }
        plan
    }

    /// Make room for `id` to cover `len` positions, preempting the newest running sequences
    /// that are not yet in this step's plan. False if `id` itself had to go.
    fn grow_or_preempt(&mut self, id: SeqId, len: usize, plan: &mut Plan) -> bool {
        loop {
            if self.seqs.get_mut(&id).unwrap().table.grow(len) {
                return true;
            }
            let victim = *self.running.last().expect("id is running");
            self.preempt(victim);
            plan.preempted.push(victim);
            plan.items.retain(|it| it.id != victim);
            if victim == id {
                return false;
            }
        }
    }

    fn preempt(&mut self, id: SeqId) {
        let s = self.seqs.get_mut(&id).unwrap();
        s.table.clear();
        s.computed = 0;
        self.running.retain(|&r| r != id);
        self.waiting.push_front(id);
    }

    /// The forward ran `item`: its tokens are cached now.
    pub fn advance(&mut self, item: &Scheduled) {
        let s = self
            .seqs
            .get_mut(&item.id)
            .expect("scheduled sequences exist");
        s.computed = item.start + item.len;
        let SeqEntry {
            tokens,
            computed,
            table,
        } = s;
        table.register_full(tokens, *computed);
    }

    /// Whether `id` has all its tokens cached (so its last forward gave next-token logits).
    pub fn ready_to_sample(&self, id: SeqId) -> bool {
        let s = &self.seqs[&id];
        s.computed == s.tokens.len()
    }

    pub fn push_token(&mut self, id: SeqId, token: u32) {
        self.seqs.get_mut(&id).unwrap().tokens.push(token);
    }

    /// Remove a sequence (finished, cancelled, failed); its blocks return to the pool.
    pub fn finish(&mut self, id: SeqId) {
        self.running.retain(|&r| r != id);
        self.waiting.retain(|&r| r != id);
        self.seqs.remove(&id);
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
