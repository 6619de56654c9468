//! `deeprust logits` and `deeprust generate`, on token ids (text comes with the tokenizer).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use loader::{Checkpoint, DType, TensorOut, write_safetensors};
use model::{ForwardBatch, LogitsMode, Model, SeqChunk};

use crate::ModelArgs;

#[derive(Args)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt token ids, comma-separated (e.g. 5,17,3).
    #[arg(long, value_parser = parse_ids)]
    pub token_ids: TokenIds,
    /// Output safetensors file; holds `logits`, f32 [T, vocab_size].
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt token ids, comma-separated (e.g. 5,17,3).
    #[arg(long, value_parser = parse_ids)]
    pub token_ids: TokenIds,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 16)]
    pub max_tokens: usize,
    /// 0 is greedy decoding; higher values sample from softmax(logits / temperature).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Seed for sampling (temperature > 0).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep generating after an end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Context length (prompt + generated); defaults to the model's max_position_embeddings.
    #[arg(long)]
    pub ctx_size: Option<usize>,
    /// Print one JSON object as the last line of stdout instead of streaming ids.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Debug)]
pub struct TokenIds(pub Vec<u32>);

fn parse_ids(s: &str) -> Result<TokenIds, String> {
    let ids = s
        .split(',')
        .map(|x| {
            let x = x.trim();
            x.parse::<u32>().map_err(|_| {
                format!("`{x}` is not a token id (expected comma-separated non-negative integers)")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ids.is_empty() {
        return Err("no token ids".into());
    }
    Ok(TokenIds(ids))
}

fn load(m: &ModelArgs) -> Result<Model> {
    let ckpt = Checkpoint::open(&m.model)?;
    Ok(Model::load(&ckpt)?)
}

pub fn logits(a: &LogitsArgs) -> Result<()> {
    let model = load(&a.model)?;
    let ids = &a.token_ids.0;
    let mut cache = model.new_cache(1, ids.len());
    let batch = ForwardBatch {
        seqs: vec![SeqChunk {
            slot: 0,
            start_pos: 0,
            tokens: ids,
        }],
        logits: LogitsMode::All,
    };
    let logits = model.forward(&batch, &mut cache)?;
    let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    let t = TensorOut {
        name: "logits",
        dtype: DType::F32,
        shape: vec![ids.len(), model.config.vocab_size],
        data: &bytes,
    };
    write_safetensors(&a.out, &[t], &[]).with_context(|| format!("writing {}", a.out.display()))?;
    Ok(())
}

pub fn generate(a: &GenerateArgs) -> Result<()> {
    if !a.temperature.is_finite() || a.temperature < 0.0 {
        bail!(
            "--temperature must be a finite number >= 0 (got {})",
            a.temperature
        );
    }
    let model = load(&a.model)?;
    let prompt = &a.token_ids.0;
    let ctx = a.ctx_size.unwrap_or(model.config.max_position_embeddings);
    if prompt.len() >= ctx {
        bail!(
            "the prompt has {} tokens, but the context holds {ctx} (set --ctx-size to raise it)",
            prompt.len()
        );
    }
    let capacity = ctx.min(prompt.len() + a.max_tokens);
    let mut cache = model.new_cache(1, capacity);
    let mut rng = SplitMix64(a.seed);
    let eos = &model.config.eos_token_ids;

    let mut out = Vec::new();
    let mut finish = "length";
    let mut stdout = std::io::stdout().lock();
    let mut chunk: Vec<u32> = prompt.clone();
    let mut pos = 0;
    while out.len() < a.max_tokens && pos + chunk.len() <= capacity {
        let batch = ForwardBatch {
            seqs: vec![SeqChunk {
                slot: 0,
                start_pos: pos,
                tokens: &chunk,
            }],
            logits: LogitsMode::Last,
        };
        let logits = model.forward(&batch, &mut cache)?;
        pos += chunk.len();
        let next = if a.temperature == 0.0 {
            argmax(&logits)
        } else {
            sample(&logits, a.temperature, &mut rng)
        };
        out.push(next);
        if !a.json {
            write!(stdout, "{next} ")?;
            stdout.flush()?;
        }
        if !a.ignore_eos && eos.contains(&next) {
            finish = "stop";
            break;
        }
        chunk = vec![next];
    }
    if a.json {
        let j = serde_json::json!({
            "token_ids": out,
            "prompt_tokens": prompt.len(),
            "completion_tokens": out.len(),
            "finish_reason": finish,
        });
        writeln!(stdout, "{j}")?;
    } else {
        writeln!(stdout)?;
    }
    Ok(())
}

/// The first index of the largest logit (as torch.argmax).
fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn sample(logits: &[f32], temperature: f32, rng: &mut SplitMix64) -> u32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let p: Vec<f64> = logits
        .iter()
        .map(|&l| (((l - max) / temperature) as f64).exp())
        .collect();
    let total: f64 = p.iter().sum();
    let mut u = rng.next_f64() * total;
    for (i, &pi) in p.iter().enumerate() {
        u -= pi;
        if u <= 0.0 {
            return i as u32;
        }
    }
    argmax(logits)
}

/// A small seeded generator: the same seed gives the same samples on every machine.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
