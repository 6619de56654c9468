//! The MLA latent KV cache: per layer and token, the normalised latent `c_kv`
//! (kv_lora_rank values) followed by the roped shared key `k_pe` (qk_rope_head_dim values):
//! 576 values per token and layer for V3. Preallocated in fixed-size blocks, never grown.
//!
//! [`KvPool`] is the block storage; which blocks a sequence owns is the caller's business
//! (the engine's block manager). [`KvCache`] is the simple owner for one or a few sequences
//! (the CLI, tests): each slot gets its own run of blocks up front.

use loader::ModelConfig;

use crate::error::ModelError;

/// Block storage for the latent cache: `[layers][blocks][block_size][row]`, so that one
/// layer's blocks are contiguous.
pub struct KvPool {
    data: Vec<f32>,
    layers: usize,
    num_blocks: usize,
    block_size: usize,
    row: usize,
}

impl KvPool {
    pub fn new(cfg: &ModelConfig, num_blocks: usize, block_size: usize) -> KvPool {
        assert!(block_size > 0, "block_size must be positive");
        let row = cfg.kv_values_per_token_per_layer();
        let layers = cfg.num_hidden_layers;
        KvPool {
            data: vec![0.0; layers * num_blocks * block_size * row],
            layers,
            num_blocks,
            block_size,
            row,
        }
    }

    /// Bytes one block takes across all layers.
    pub fn block_bytes(cfg: &ModelConfig, block_size: usize) -> usize {
        cfg.num_hidden_layers
            * block_size
            * cfg.kv_values_per_token_per_layer()
            * std::mem::size_of::<f32>()
    }

    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Values per cached token and layer (kv_lora_rank + qk_rope_head_dim).
    pub fn row(&self) -> usize {
        self.row
    }

    fn layer_len(&self) -> usize {
        self.num_blocks * self.block_size * self.row
    }

    pub(crate) fn layer(&self, layer: usize) -> &[f32] {
        let n = self.layer_len();
        &self.data[layer * n..(layer + 1) * n]
    }

    pub(crate) fn layer_mut(&mut self, layer: usize) -> &mut [f32] {
        let n = self.layer_len();
        &mut self.data[layer * n..(layer + 1) * n]
    }

    /// Copy the first `rows` token rows of block `src` into block `dst`, in every layer
    /// (copy-on-write of a shared, partly filled block; a forked beam).
    pub fn copy_block(&mut self, src: u32, dst: u32, rows: usize) {
        let (bs, row) = (self.block_size, self.row);
        assert!(rows <= bs && (src as usize) < self.num_blocks && (dst as usize) < self.num_blocks);
        if src == dst {
            return;
        }
        for l in 0..self.layers {
            let base = l * self.layer_len();
            let from = base + src as usize * bs * row;
            let to = base + dst as usize * bs * row;
            self.data.copy_within(from..from + rows * row, to);
        }
    }

    /// Position `pos` of a sequence with block table `blocks` as an offset into a layer.
    pub(crate) fn offset(&self, blocks: &[u32], pos: usize) -> usize {
        (blocks[pos / self.block_size] as usize * self.block_size + pos % self.block_size)
            * self.row
    }
}

/// A cache for a fixed number of sequence slots of up to `capacity` tokens each.
pub struct KvCache {
    pub(crate) pool: KvPool,
    pub(crate) tables: Vec<Vec<u32>>,
    lens: Vec<usize>,
    capacity: usize,
}

/// Block size of the slot cache: small enough that a short sequence wastes little.
const SLOT_BLOCK: usize = 16;

impl KvCache {
    /// Room for `slots` sequences of up to `capacity` tokens each.
    pub fn new(cfg: &ModelConfig, slots: usize, capacity: usize) -> KvCache {
        let per_slot = capacity.div_ceil(SLOT_BLOCK).max(1);
        let tables = (0..slots)
            .map(|s| ((s * per_slot) as u32..((s + 1) * per_slot) as u32).collect())
            .collect();
        KvCache {
            pool: KvPool::new(cfg, slots * per_slot, SLOT_BLOCK),
            tables,
            lens: vec![0; slots],
            capacity,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn slots(&self) -> usize {
        self.lens.len()
    }

    /// Tokens cached for `slot`.
    pub fn len(&self, slot: usize) -> usize {
        self.lens[slot]
    }

    pub fn is_empty(&self, slot: usize) -> bool {
        self.lens[slot] == 0
    }

    /// Forget a sequence (its rows are overwritten by the next one).
    pub fn clear(&mut self, slot: usize) {
        self.lens[slot] = 0;
    }

    /// Make `dst` hold the first `len` cached tokens of `src` (a shared prompt, a beam that
    /// forks); `dst`'s length becomes `len`.
    pub fn copy_prefix(&mut self, src: usize, dst: usize, len: usize) {
        assert!(
            len <= self.lens[src],
            "copy_prefix beyond the cached tokens of slot {src}"
        );
        if src != dst {
            for b in 0..len.div_ceil(SLOT_BLOCK) {
                let rows = (len - b * SLOT_BLOCK).min(SLOT_BLOCK);
                self.pool
                    .copy_block(self.tables[src][b], self.tables[dst][b], rows);
            }
        }
        self.lens[dst] = len;
    }

    /// Check that `slot` can take `n` tokens starting at `start` (a chunk may rewrite a
    /// suffix, never leave a gap), and record its new length.
    pub(crate) fn reserve(
        &mut self,
        slot: usize,
        start: usize,
        n: usize,
    ) -> Result<(), ModelError> {
        if slot >= self.lens.len() {
            return Err(ModelError::BadBatch(format!(
                "slot {slot} does not exist (the cache has {})",
                self.lens.len()
            )));
        }
        if start > self.lens[slot] {
            return Err(ModelError::BadBatch(format!(
                "slot {slot} holds {} tokens; a chunk cannot start at position {start}",
                self.lens[slot]
            )));
        }
        if start + n > self.capacity {
            return Err(ModelError::ContextOverflow {
                slot,
                needed: start + n,
                capacity: self.capacity,
            });
        }
        self.lens[slot] = start + n;
        Ok(())
    }
}
