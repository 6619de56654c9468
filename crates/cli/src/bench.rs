//! `deeprust bench`: by default, llama-bench's tests (prefill of `-p` tokens, decode of `-n`
//! tokens, each at every `--depth`), so the two engines' figures line up; `--membw` measures
//! the machine's memory bandwidth; `--concurrency` instead drives the batching engine with
//! many clients at once, each holding a multi-turn conversation (every turn re-sends the
//! whole history, as chat clients do), and reports decode throughput (aggregate and per
//! stream), time to first token, and the prefix-cache hit rate per concurrency level.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use engine::{EngineConfig, EngineEvent, EngineHandle, Request, SamplingParams, StopParams};

use crate::common::ModelArgs;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub single: crate::bench_single::SingleArgs,
    /// Serving benchmark: concurrent clients, comma-separated levels (e.g. 1,4,8,16).
    #[arg(long, value_delimiter = ',')]
    pub concurrency: Option<Vec<usize>>,
    /// Turns per conversation.
    #[arg(long, default_value_t = 3)]
    pub turns: usize,
    /// Tokens generated per turn.
    #[arg(long, default_value_t = 48)]
    pub max_tokens: usize,
    /// Tokens of each new user message.
    #[arg(long, default_value_t = 64)]
    pub message_tokens: usize,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// How the engine is sized.
#[derive(Args, Clone)]
pub struct EngineArgs {
    /// Memory for the KV cache, in GiB (default: --kv-cache-fraction of available memory).
    #[arg(
        long,
        conflicts_with = "kv_cache_fraction",
        env = "DEEPRUST_KV_CACHE_GB"
    )]
    pub kv_cache_gb: Option<f64>,
    /// Share of the memory available now (MemAvailable) to give the KV cache.
    #[arg(long, default_value_t = 0.1, env = "DEEPRUST_KV_CACHE_FRACTION")]
    pub kv_cache_fraction: f64,
    /// Tokens per KV-cache block.
    #[arg(long, default_value_t = 16, env = "DEEPRUST_BLOCK_SIZE")]
    pub block_size: usize,
    /// Tokens per forward step (decode tokens plus prefill chunks).
    #[arg(long, default_value_t = 512, env = "DEEPRUST_MAX_BATCH_TOKENS")]
    pub max_batch_tokens: usize,
    /// Sequences running at once.
    #[arg(long, default_value_t = 64, env = "DEEPRUST_MAX_RUNNING")]
    pub max_running: usize,
    /// Longest sequence; default: the model's max_position_embeddings.
    #[arg(long, env = "DEEPRUST_CTX_SIZE")]
    pub ctx_size: Option<usize>,
}

impl EngineArgs {
    pub fn config(&self, model: &model::Model) -> Result<EngineConfig> {
        if self.block_size == 0 || self.max_batch_tokens == 0 || self.max_running == 0 {
            bail!("--block-size, --max-batch-tokens and --max-running must be positive");
        }
        let bytes = match self.kv_cache_gb {
            Some(gb) if gb > 0.0 && gb.is_finite() => gb * (1u64 << 30) as f64,
            Some(gb) => bail!("--kv-cache-gb must be positive (got {gb})"),
            None => {
                let f = self.kv_cache_fraction;
                if !(f > 0.0 && f <= 1.0) {
                    bail!("--kv-cache-fraction must be in (0, 1] (got {f})");
                }
                available_memory()? as f64 * f
            }
        } as usize;
        let kv_blocks = EngineConfig::blocks_for_bytes(model, bytes, self.block_size);
        if kv_blocks == 0 {
            bail!(
                "a KV budget of {bytes} bytes holds no block of {} tokens",
                self.block_size
            );
        }
        Ok(EngineConfig {
            kv_blocks,
            block_size: self.block_size,
            max_batch_tokens: self.max_batch_tokens,
            max_running: self.max_running,
            ctx_size: self
                .ctx_size
                .unwrap_or(model.config.max_position_embeddings),
        })
    }
}

/// MemAvailable from /proc/meminfo, in bytes.
fn available_memory() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| anyhow::anyhow!("reading /proc/meminfo: {e} (set --kv-cache-gb)"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| anyhow::anyhow!("/proc/meminfo has no MemAvailable (set --kv-cache-gb)"))
}

struct Turn {
    ttft: f64,
    decode_tokens: usize,
    decode_secs: f64,
}

pub fn run(a: &BenchArgs) -> Result<()> {
    let Some(concurrency) = &a.concurrency else {
        return crate::bench_single::run(&a.model, &a.single);
    };
    let model = Arc::new(a.model.long_running().load_model()?);
    let cfg = a.engine.config(&model)?;
    let vocab = model.config.vocab_size as u32;
    let eos = model.config.eos_token_ids.clone();
    let engine = EngineHandle::start(model, None, cfg.clone());
    println!(
        "model {}  kv blocks {} x {} tokens  turns {}  max_tokens {}  message {} tokens",
        a.model.name(),
        cfg.kv_blocks,
        cfg.block_size,
        a.turns,
        a.max_tokens,
        a.message_tokens
    );
    println!(
        "{:>11} {:>14} {:>16} {:>12} {:>12} {:>10}",
        "concurrency",
        "aggregate t/s",
        "per-stream t/s",
        "ttft p50 ms",
        "ttft p90 ms",
        "prefix hit"
    );
    let mut single = None;
    for (level, &c) in concurrency.iter().enumerate() {
        if c == 0 {
            bail!("--concurrency levels must be positive");
        }
        let stats = engine.stats();
        let (q0, h0) = (
            stats.prefix_queried.load(Ordering::Relaxed),
            stats.prefix_hit.load(Ordering::Relaxed),
        );
        let start = Instant::now();
        let turns: Vec<Vec<Turn>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..c)
                .map(|client| {
                    let engine = engine.clone();
                    let eos = eos.clone();
                    s.spawn(move || {
                        conversation(&engine, (level * 1000 + client) as u32, vocab, &eos, a)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("client thread"))
                .collect::<Result<_>>()
        })?;
        let wall = start.elapsed().as_secs_f64();
        let all: Vec<&Turn> = turns.iter().flatten().collect();
        let tokens: usize = all.iter().map(|t| t.decode_tokens).sum();
        let aggregate = tokens as f64 / wall;
        let per_stream = all
            .iter()
            .map(|t| t.decode_tokens as f64 / t.decode_secs.max(1e-9))
            .sum::<f64>()
            / all.len() as f64;
        let mut ttft: Vec<f64> = all.iter().map(|t| t.ttft * 1e3).collect();
        ttft.sort_by(f64::total_cmp);
        let pct = |p: f64| ttft[((ttft.len() - 1) as f64 * p).round() as usize];
        let (q, h) = (
            stats.prefix_queried.load(Ordering::Relaxed) - q0,
            stats.prefix_hit.load(Ordering::Relaxed) - h0,
        );
        let hit = if q == 0 { 0.0 } else { h as f64 / q as f64 };
        let ratio = match single {
            None => {
                single = (c == 1).then_some(aggregate);
                String::new()
            }
            Some(s1) => format!("  ({:.2}x single)", aggregate / s1),
        };
        println!(
            "{c:>11} {aggregate:>14.1} {per_stream:>16.1} {:>12.1} {:>12.1} {:>9.1}%{ratio}",
            pct(0.5),
            pct(0.9),
            hit * 100.0
        );
    }
    Ok(())
}

/// One client: `turns` requests, each re-sending the history plus a new message.
fn conversation(
    engine: &EngineHandle,
    seed: u32,
    vocab: u32,
    eos: &[u32],
    a: &BenchArgs,
) -> Result<Vec<Turn>> {
    let mut rng = seed.wrapping_mul(2654435761).wrapping_add(1);
    let mut message = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                let t = rng % vocab;
                if eos.contains(&t) { (t + 1) % vocab } else { t }
            })
            .collect()
    };
    let mut history = message(a.message_tokens);
    let mut out = Vec::new();
    for _ in 0..a.turns {
        let req = Request {
            prompt: history.clone(),
            sampling: SamplingParams::greedy(),
            stop: StopParams {
                max_tokens: a.max_tokens,
                ignore_eos: true,
                ..Default::default()
            },
            n: 1,
        };
        let t0 = Instant::now();
        let mut stream = engine.submit(req)?;
        let (mut first, mut n) = (None, 0usize);
        let mut reply = Vec::new();
        while let Some(ev) = stream.next_blocking() {
            match ev {
                EngineEvent::Token { token, .. } => {
                    first.get_or_insert_with(Instant::now);
                    reply.push(token.id);
                    n += 1;
                }
                EngineEvent::Done { .. } => break,
                EngineEvent::Error(e) => bail!("{e}"),
            }
        }
        let first = first.unwrap_or_else(Instant::now);
        out.push(Turn {
            ttft: (first - t0).as_secs_f64(),
            decode_tokens: n.saturating_sub(1),
            decode_secs: first.elapsed().as_secs_f64(),
        });
        history.extend(reply);
        history.extend(message(a.message_tokens / 2));
    }
    Ok(out)
}
