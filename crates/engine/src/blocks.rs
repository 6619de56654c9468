//! Ownership of KV-cache blocks: a free list, reference counts, and a prefix cache of full
//! blocks keyed by the tokens they hold (and all tokens before them), evicted LRU when unused.
//! Pure bookkeeping: the block contents live in the model's `KvPool`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::rc::Rc;

/// Identity of a full block's content: a hash chained over every token up to its end.
pub type PrefixHash = u64;

pub struct BlockManager {
    block_size: usize,
    free: Vec<u32>,
    refs: Vec<u32>,
    /// Full blocks whose content is known, by prefix hash (with the tokens, to rule out collisions).
    cached: HashMap<PrefixHash, u32>,
    content: Vec<Option<(PrefixHash, Vec<u32>)>>,
    /// Cached blocks nobody references, by last use: the eviction order.
    idle: BTreeMap<u64, u32>,
    idle_since: Vec<u64>,
    clock: u64,
    pub stats: PrefixStats,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PrefixStats {
    /// Prompt tokens looked up in the prefix cache.
    pub queried: u64,
    /// Of those, tokens whose KV came from the cache.
    pub hit: u64,
}

impl PrefixStats {
    pub fn hit_rate(&self) -> f64 {
        if self.queried == 0 {
            0.0
        } else {
            self.hit as f64 / self.queried as f64
        }
    }
}

pub fn chain_hash(parent: PrefixHash, tokens: &[u32]) -> PrefixHash {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

impl BlockManager {
    pub fn new(num_blocks: usize, block_size: usize) -> BlockManager {
        BlockManager {
            block_size,
            free: (0..num_blocks as u32).rev().collect(),
            refs: vec![0; num_blocks],
            cached: HashMap::new(),
            content: vec![None; num_blocks],
            idle: BTreeMap::new(),
            idle_since: vec![0; num_blocks],
            clock: 0,
            stats: PrefixStats::default(),
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.refs.len()
    }

    /// Blocks that can be handed out now (free, or cached but unused and evictable).
    pub fn available(&self) -> usize {
        self.free.len() + self.idle.len()
    }

    /// Blocks referenced by some sequence.
    pub fn in_use(&self) -> usize {
        self.num_blocks() - self.available()
    }

    /// A fresh block (evicting the least recently used idle cached block if needed).
    pub fn allocate(&mut self) -> Option<u32> {
        let b = match self.free.pop() {
            Some(b) => b,
            None => {
                let (&t, &b) = self.idle.iter().next()?;
                self.idle.remove(&t);
                if let Some((h, _)) = self.content[b as usize].take() {
                    self.cached.remove(&h);
                }
                b
            }
        };
        self.refs[b as usize] = 1;
        Some(b)
    }

    fn retain(&mut self, b: u32) {
        if self.refs[b as usize] == 0 {
            self.idle.remove(&self.idle_since[b as usize]);
        }
        self.refs[b as usize] += 1;
    }

    pub fn release(&mut self, b: u32) {
        let r = &mut self.refs[b as usize];
        assert!(*r > 0, "block {b} released more often than taken");
        *r -= 1;
        if *r == 0 {
            if self.content[b as usize].is_some() {
                self.clock += 1;
                self.idle_since[b as usize] = self.clock;
                self.idle.insert(self.clock, b);
            } else {
                self.free.push(b);
            }
        }
    }

    /// Take (reference) the cached blocks holding the longest prefix of `tokens`, up to
    /// `max_blocks` full blocks. Returns them in order; their tokens need no recompute.
    pub fn lookup(&mut self, tokens: &[u32], max_blocks: usize) -> Vec<u32> {
        let mut out = Vec::new();
        let mut h = 0;
        for chunk in tokens.chunks_exact(self.block_size).take(max_blocks) {
            h = chain_hash(h, chunk);
            match self.cached.get(&h) {
                Some(&b)
                    if self.content[b as usize]
                        .as_ref()
                        .is_some_and(|(_, t)| t == chunk) =>
                {
                    self.retain(b);
                    out.push(b);
                }
                _ => break,
            }
        }
        out
    }

    /// Record that block `b` now holds exactly `tokens` (a full block) after `parent`.
    /// Returns the block's hash, the parent of the next block.
    pub fn register(&mut self, b: u32, parent: PrefixHash, tokens: &[u32]) -> PrefixHash {
        debug_assert_eq!(tokens.len(), self.block_size);
        let h = chain_hash(parent, tokens);
        if self.content[b as usize].is_none() && !self.cached.contains_key(&h) {
            self.cached.insert(h, b);
            self.content[b as usize] = Some((h, tokens.to_vec()));
        }
        h
    }
}

/// A sequence's blocks, returned to the manager when dropped (finish, error, cancel alike).
pub struct BlockTable {
    manager: Rc<RefCell<BlockManager>>,
    pub blocks: Vec<u32>,
    /// Hash of the last registered full block, and how many blocks are registered.
    registered: (PrefixHash, usize),
}

impl BlockTable {
    pub fn new(manager: Rc<RefCell<BlockManager>>) -> BlockTable {
        BlockTable {
            manager,
            blocks: Vec::new(),
            registered: (0, 0),
        }
    }

    /// Attach cached prefix blocks for `tokens`; returns how many tokens they cover.
    /// At least one token is left to compute so the sequence gets logits, and the block
    /// that token falls in is never a shared one.
    pub fn attach_prefix(&mut self, tokens: &[u32]) -> usize {
        assert!(self.blocks.is_empty());
        let mut m = self.manager.borrow_mut();
        let bs = m.block_size();
        let max_blocks = (tokens.len().saturating_sub(1)) / bs;
        let hit = m.lookup(tokens, max_blocks);
        m.stats.queried += tokens.len() as u64;
        m.stats.hit += (hit.len() * bs) as u64;
        let mut h = 0;
        for chunk in tokens.chunks_exact(bs).take(hit.len()) {
            h = chain_hash(h, chunk);
        }
        self.registered = (h, hit.len());
        self.blocks = hit;
        self.blocks.len() * bs
    }

    /// Blocks needed so that positions `0..len` have a home.
    pub fn blocks_needed(&self, len: usize) -> usize {
        let bs = self.manager.borrow().block_size();
        len.div_ceil(bs).saturating_sub(self.blocks.len())
    }

    /// Grow to cover `len` positions; false (and no change) if the pool cannot.
    pub fn grow(&mut self, len: usize) -> bool {
        let need = self.blocks_needed(len);
        let mut m = self.manager.borrow_mut();
        if m.available() < need {
            return false;
        }
        for _ in 0..need {
            let b = m.allocate().expect("checked available");
            self.blocks.push(b);
        }
        true
    }

    /// Offer the full blocks among the first `computed` tokens to the prefix cache.
    pub fn register_full(&mut self, tokens: &[u32], computed: usize) {
        let mut m = self.manager.borrow_mut();
        let bs = m.block_size();
        let (mut h, mut n) = self.registered;
        while (n + 1) * bs <= computed {
            h = m.register(self.blocks[n], h, &tokens[n * bs..(n + 1) * bs]);
            n += 1;
        }
        self.registered = (h, n);
    }

    /// Give every block back (preemption); the table can grow again later.
    pub fn clear(&mut self) {
        let mut m = self.manager.borrow_mut();
        for b in self.blocks.drain(..) {
            m.release(b);
        }
        self.registered = (0, 0);
    }
}

impl Drop for BlockTable {
    fn drop(&mut self) {
        self.clear();
    }
}
