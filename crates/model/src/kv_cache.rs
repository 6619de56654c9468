//! The MLA latent KV cache: per sequence slot, layer and position, the normalised latent
//! `c_kv` (kv_lora_rank values) followed by the roped shared key `k_pe` (qk_rope_head_dim
//! values): 576 values per token and layer for V3. Preallocated; never grown.

use loader::ModelConfig;

use crate::error::ModelError;

pub struct KvCache {
    /// [slots][layers][capacity, row]
    data: Vec<f32>,
    lens: Vec<usize>,
    layers: usize,
    capacity: usize,
    row: usize,
}

impl KvCache {
    /// Room for `slots` sequences of up to `capacity` tokens each.
    pub fn new(cfg: &ModelConfig, slots: usize, capacity: usize) -> KvCache {
        let row = cfg.kv_values_per_token_per_layer();
        let layers = cfg.num_hidden_layers;
        KvCache {
            data: vec![0.0; slots * layers * capacity * row],
            lens: vec![0; slots],
            layers,
            capacity,
            row,
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
    /// forks). Every layer's rows are copied; `dst`'s length becomes `len`.
    pub fn copy_prefix(&mut self, src: usize, dst: usize, len: usize) {
        assert!(
            len <= self.lens[src],
            "copy_prefix beyond the cached tokens of slot {src}"
        );
        if src != dst {
            let stride = self.capacity * self.row;
            for layer in 0..self.layers {
                let from = (src * self.layers + layer) * stride;
                let to = (dst * self.layers + layer) * stride;
                self.data.copy_within(from..from + len * self.row, to);
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

    /// For each of `slots` (distinct), its rows of `layer`: `[capacity, kv_lora_rank + rope_dim]`.
    pub(crate) fn layer_rows(&mut self, slots: &[usize], layer: usize) -> Vec<&mut [f32]> {
        let stride = self.capacity * self.row;
        let layers = self.layers;
        let mut by_slot: Vec<Option<&mut [f32]>> = self
            .data
            .chunks_exact_mut(stride)
            .skip(layer)
            .step_by(layers)
            .map(Some)
            .collect();
        slots
            .iter()
            .map(|&s| by_slot[s].take().expect("slots are distinct and in range"))
            .collect()
    }
}
