//! The MLA latent KV cache: per layer and token, the normalised latent `c_kv`
//! (kv_lora_rank values) followed by the roped shared key `k_pe` (qk_rope_head_dim values):
//! 576 values per token and layer for V3. Preallocated in fixed-size blocks, never grown.
//!
//! [`KvPool`] is the block storage; which blocks a sequence owns is the caller's business
//! (the engine's block manager). [`KvCache`] is the simple owner for one or a few sequences
//! (the CLI, tests): each slot gets its own run of blocks up front.

use kernels::KvRows;
use loader::ModelConfig;

use crate::error::ModelError;

/// How the latent cache stores its values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheType {
    /// Exactly what the forward computed (the default: logits match the reference).
    #[default]
    F32,
    /// Each latent rounded to bf16 when written (to nearest, ties to even) and widened
    /// exactly when read: half the memory and half the bytes a decode step reads at depth,
    /// as llama.cpp's default f16 cache is, with scores then off by the rounding of the
    /// cached values (~2^-9 relative each).
    Bf16,
    /// Each row's latent in GGML's Q8_0 blocks (32 int8 with an f16 scale, as llama.cpp's
    /// `--cache-type-k q8_0`), its roped key in bf16 ([`kernels::kv_q8`]): 608 bytes a row
    /// at the mid model's widths and 672 at V3's, about 56% of bf16's, and the attention
    /// reads each value as `bf16(q * d)`, so it runs as over a bf16 cache.
    #[allow(non_camel_case_types)]
    Q8_0,
}

impl CacheType {
    /// Bytes one cached row (a token in a layer) takes: `r` latent and `p` rope values.
    pub fn row_bytes(self, r: usize, p: usize) -> usize {
        match self {
            CacheType::F32 => 4 * (r + p),
            CacheType::Bf16 => 2 * (r + p),
            CacheType::Q8_0 => kernels::kv_q8::row_bytes(r, p),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CacheType::F32 => "f32",
            CacheType::Bf16 => "bf16",
            CacheType::Q8_0 => "q8_0",
        }
    }
}

impl std::fmt::Display for CacheType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CacheType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(CacheType::F32),
            "bf16" => Ok(CacheType::Bf16),
            "q8_0" | "q8" => Ok(CacheType::Q8_0),
            other => Err(format!(
                "unknown cache type {other:?} (expected f32, bf16 or q8_0)"
            )),
        }
    }
}

enum Rows {
    F32(Vec<f32>),
    Bf16(Vec<u16>),
    /// Rows of `kernels::kv_q8::row_bytes(r, p)` bytes.
    Q8(Vec<u8>),
}

/// Block storage for the latent cache: `[layers][blocks][block_size][row]`, so that one
/// layer's blocks are contiguous.
pub struct KvPool {
    data: Rows,
    layers: usize,
    num_blocks: usize,
    block_size: usize,
    row: usize,
    /// The row's latent and rope values (`r + p == row`).
    r: usize,
    p: usize,
}

impl KvPool {
    /// An f32 pool.
    pub fn new(cfg: &ModelConfig, num_blocks: usize, block_size: usize) -> KvPool {
        Self::with_type(cfg, num_blocks, block_size, CacheType::F32)
    }

    pub fn with_type(
        cfg: &ModelConfig,
        num_blocks: usize,
        block_size: usize,
        ty: CacheType,
    ) -> KvPool {
        assert!(block_size > 0, "block_size must be positive");
        let row = cfg.kv_values_per_token_per_layer();
        let (r, p) = (cfg.kv_lora_rank, cfg.qk_rope_head_dim);
        debug_assert_eq!(r + p, row);
        let layers = cfg.num_hidden_layers;
        let n = layers * num_blocks * block_size * row;
        KvPool {
            data: match ty {
                CacheType::F32 => Rows::F32(vec![0.0; n]),
                CacheType::Bf16 => Rows::Bf16(vec![0; n]),
                CacheType::Q8_0 => {
                    Rows::Q8(vec![
                        0;
                        layers * num_blocks * block_size * ty.row_bytes(r, p)
                    ])
                }
            },
            layers,
            num_blocks,
            block_size,
            row,
            r,
            p,
        }
    }

    pub fn cache_type(&self) -> CacheType {
        match self.data {
            Rows::F32(_) => CacheType::F32,
            Rows::Bf16(_) => CacheType::Bf16,
            Rows::Q8(_) => CacheType::Q8_0,
        }
    }

    /// Bytes one block takes across all layers.
    pub fn block_bytes(cfg: &ModelConfig, block_size: usize, ty: CacheType) -> usize {
        cfg.num_hidden_layers * block_size * ty.row_bytes(cfg.kv_lora_rank, cfg.qk_rope_head_dim)
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

    /// Bytes of one layer of an 8-bit pool.
    fn layer_bytes(&self) -> usize {
        self.num_blocks * self.block_size * CacheType::Q8_0.row_bytes(self.r, self.p)
    }

    pub(crate) fn layer(&self, layer: usize) -> KvRows<'_> {
        let n = self.layer_len();
        match &self.data {
            Rows::F32(v) => KvRows::F32(&v[layer * n..(layer + 1) * n]),
            Rows::Bf16(v) => KvRows::Bf16(&v[layer * n..(layer + 1) * n]),
            Rows::Q8(v) => {
                let n = self.layer_bytes();
                KvRows::Q8(kernels::kv_q8::Q8Rows {
                    bytes: &v[layer * n..(layer + 1) * n],
                    r: self.r,
                    p: self.p,
                })
            }
        }
    }

    /// Store `values` at offset `at` of `layer` (rounded, for a bf16 pool; quantized, for
    /// an 8-bit one, which takes whole rows only).
    pub(crate) fn write(&mut self, layer: usize, at: usize, values: &[f32]) {
        let (r, p, row) = (self.r, self.p, self.row);
        let (layer_bytes, slot_at) = (self.layer_bytes(), at);
        let at = layer * self.layer_len() + at;
        match &mut self.data {
            Rows::F32(v) => v[at..at + values.len()].copy_from_slice(values),
            Rows::Bf16(v) => {
                for (d, &x) in v[at..at + values.len()].iter_mut().zip(values) {
                    *d = half::bf16::from_f32(x).to_bits();
                }
            }
            Rows::Q8(v) => {
                assert!(
                    values.len() == row && slot_at % row == 0,
                    "an 8-bit row is written whole"
                );
                let rb = CacheType::Q8_0.row_bytes(r, p);
                let b = layer * layer_bytes + slot_at / row * rb;
                kernels::kv_q8::quantize_row(values, r, p, &mut v[b..b + rb]);
            }
        }
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
            match &mut self.data {
                Rows::F32(v) => v.copy_within(from..from + rows * row, to),
                Rows::Bf16(v) => v.copy_within(from..from + rows * row, to),
                Rows::Q8(v) => {
                    let rb = CacheType::Q8_0.row_bytes(self.r, self.p);
                    let (from, to) = (from / row * rb, to / row * rb);
                    v.copy_within(from..from + rows * rb, to)
                }
            }
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
    /// Room for `slots` sequences of up to `capacity` tokens each, in f32.
    pub fn new(cfg: &ModelConfig, slots: usize, capacity: usize) -> KvCache {
        Self::with_type(cfg, slots, capacity, CacheType::F32)
    }

    pub fn with_type(cfg: &ModelConfig, slots: usize, capacity: usize, ty: CacheType) -> KvCache {
        let per_slot = capacity.div_ceil(SLOT_BLOCK).max(1);
        let tables = (0..slots)
            .map(|s| ((s * per_slot) as u32..((s + 1) * per_slot) as u32).collect())
            .collect();
        KvCache {
            pool: KvPool::with_type(cfg, slots * per_slot, SLOT_BLOCK, ty),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows written to one block and copied to another read back as written, rounded as
    /// each cache type stores them, in every layer, and the copy holds exactly the source's
    /// rows (the 8-bit pool's rows are bytes of another width than its values).
    #[test]
    fn every_cache_type_stores_copies_and_reads_rows() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/v3_yarn_mtp");
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let cfg = ModelConfig::from_json_str(&text, &dir).unwrap();
        let (r, p) = (cfg.kv_lora_rank, cfg.qk_rope_head_dim);
        let row = r + p;
        for ty in [CacheType::F32, CacheType::Bf16, CacheType::Q8_0] {
            let mut pool = KvPool::with_type(&cfg, 4, 4, ty);
            assert_eq!(pool.cache_type(), ty);
            let value =
                |l: usize, j: usize, i: usize| ((l * 7 + j * 3 + i) % 23) as f32 / 7.0 - 1.5;
            for l in 0..cfg.num_hidden_layers {
                for j in 0..4 {
                    let vals: Vec<f32> = (0..row).map(|i| value(l, j, i)).collect();
                    pool.write(l, (4 + j) * row, &vals);
                }
            }
            pool.copy_block(1, 2, 3);
            for l in 0..cfg.num_hidden_layers {
                let kv = pool.layer(l);
                for j in 0..4 {
                    let vals: Vec<f32> = (0..row).map(|i| value(l, j, i)).collect();
                    let want: Vec<f32> = match ty {
                        CacheType::F32 => vals.clone(),
                        CacheType::Bf16 => vals
                            .iter()
                            .map(|&v| half::bf16::from_f32(v).to_f32())
                            .collect(),
                        CacheType::Q8_0 => {
                            let mut b = vec![0u8; ty.row_bytes(r, p)];
                            kernels::kv_q8::quantize_row(&vals, r, p, &mut b);
                            let mut w = vec![0u16; row];
                            kernels::kv_q8::row_to_bf16(&b, r, p, &mut w);
                            w.iter()
                                .map(|&x| half::bf16::from_bits(x).to_f32())
                                .collect()
                        }
                    };
                    let mut got = vec![0f32; row];
                    kv.read((4 + j) * row, &mut got);
                    assert_eq!(got, want, "{ty} layer {l} row {j}");
                    // within 1% of each value's row's largest (q8_0's half step is 1/254)
                    assert!(
                        vals.iter()
                            .zip(&got)
                            .all(|(v, g)| (v - g).abs() <= 1.5 / 100.0)
                    );
                    if j < 3 {
                        kv.read((8 + j) * row, &mut got);
                        assert_eq!(got, want, "{ty} layer {l} copied row {j}");
                    }
                }
                // the rope part alone, as the expanded form reads it
                let mut rope = vec![0f32; p];
                kv.read(4 * row + r, &mut rope);
                let mut whole = vec![0f32; row];
                kv.read(4 * row, &mut whole);
                assert_eq!(rope, whole[r..], "{ty} layer {l} rope part");
            }
            assert_eq!(
                KvPool::block_bytes(&cfg, 4, ty),
                cfg.num_hidden_layers * 4 * ty.row_bytes(r, p)
            );
        }
        assert_eq!("Q8_0".parse::<CacheType>(), Ok(CacheType::Q8_0));
        assert!("f8".parse::<CacheType>().unwrap_err().contains("q8_0"));
    }
}
