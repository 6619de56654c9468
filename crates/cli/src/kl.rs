//! `deeprust kl`: how far a model's next-token distributions are from a base model's over
//! the same prompts, as llama.cpp's `perplexity --kl-divergence` measures a quantized file:
//! KL(P_base || P_model) per position, its mean, median, 99th percentile and maximum, and how
//! often the two models' most likely tokens agree.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use model::{ForwardBatch, LogitsMode, Model, SeqChunk};
use tokenizer::Tokenizer;

use crate::common::{ModelArgs, TokenIds, parse_ids};

/// Prompts used when none are given: short prose, as the embedded model writes.
const DEFAULT_PROMPTS: &[&str] = &[
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun with her dog.",
    "Tom and his mom went to the park. They saw a big red ball under a tree, and Tom ran to get it.",
    "The old man walked slowly down the road. He was tired, but he smiled when he saw the river.",
    "\"Can I help you?\" asked the bird. The cat looked up and said, \"Yes, I am lost.\"",
];

#[derive(Args)]
pub struct KlArgs {
    /// The reference model, whose distributions are P: a Hugging Face directory or a GGUF file.
    #[arg(long)]
    pub base: PathBuf,
    /// The model compared with it (Q) is --model; --tokenizer tokenizes the prompts (default:
    /// the base model's tokenizer, else the model's).
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt text; repeatable.
    #[arg(long)]
    pub prompt: Vec<String>,
    /// Prompt token ids, comma-separated (e.g. 5,17,3); repeatable.
    #[arg(long, value_parser = parse_ids)]
    pub token_ids: Vec<TokenIds>,
    /// A text file of prompts, one per line (blank lines skipped). With no prompt at all, a
    /// few built-in sentences are used.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One prompt's comparison.
struct PromptKl {
    tokens: usize,
    /// KL(P || Q) at each position, in nats.
    kl: Vec<f64>,
    /// Whether the argmax tokens agree at each position.
    same_top: Vec<bool>,
}

pub fn run(a: &KlArgs) -> Result<()> {
    let base_args = ModelArgs {
        model: Some(a.base.clone()),
        tokenizer: None,
        threads: a.model.threads,
        kernels: a.model.kernels,
        pin_threads: a.model.pin_threads,
        numa: a.model.numa,
        backend_kind: a.model.backend_kind,
        load: a.model.load,
        // the reference side stays exact, so `--cache-type bf16` measures the cache's cost
        cache_type: model::CacheType::F32,
        act_type: crate::common::ActType::F32,
    };
    let texts = texts(a)?;
    let need_tok = !texts.is_empty();
    let base = base_args
        .load(false)
        .with_context(|| format!("--base {}", a.base.display()))?;
    let other = a.model.load(false)?;
    if base.model.config.vocab_size != other.model.config.vocab_size {
        bail!(
            "the models' vocabularies differ: --base {} has {} tokens, --model {} has {}",
            a.base.display(),
            base.model.config.vocab_size,
            a.model.name(),
            other.model.config.vocab_size
        );
    }

    let mut prompts: Vec<Vec<u32>> = a.token_ids.iter().map(|t| t.0.clone()).collect();
    if need_tok {
        let own;
        let tok: &Tokenizer = match (&a.model.tokenizer, &base.tokenizer, &other.tokenizer) {
            (Some(_), _, _) => {
                own = a.model.load_tokenizer()?;
                &own
            }
            (None, Some(t), _) | (None, None, Some(t)) => t,
            (None, None, None) => bail!(
                "text prompts need a tokenizer and neither model has one; pass --tokenizer DIR or use --token-ids"
            ),
        };
        for (i, text) in texts.iter().enumerate() {
            let ids = tok.encode(text, true)?;
            if a.model.tokenizer.is_none()
                && let (Some(_), Some(t2)) = (&base.tokenizer, &other.tokenizer)
                && t2.encode(text, true)? != ids
            {
                eprintln!(
                    "warning: the models' tokenizers split prompt {} differently; using the base's tokens",
                    i + 1
                );
            }
            prompts.push(ids);
        }
    }

    let mut results = Vec::with_capacity(prompts.len());
    for (i, ids) in prompts.iter().enumerate() {
        if ids.is_empty() {
            bail!("prompt {} has no tokens", i + 1);
        }
        let p = prefill(&base.model, ids)
            .with_context(|| format!("prompt {} on --base {}", i + 1, a.base.display()))?;
        let q = prefill(&other.model, ids)
            .with_context(|| format!("prompt {} on --model {}", i + 1, a.model.name()))?;
        results.push(compare(&p, &q, base.model.config.vocab_size));
    }

    let all: Vec<f64> = results.iter().flat_map(|r| r.kl.iter().copied()).collect();
    let positions = all.len();
    let agree = results
        .iter()
        .flat_map(|r| &r.same_top)
        .filter(|&&s| s)
        .count();
    let mean = all.iter().sum::<f64>() / positions as f64;
    let mut sorted = all.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |q: f64| sorted[((positions - 1) as f64 * q).round() as usize];
    let (max_at, max) = results
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.kl.iter().enumerate().map(move |(t, &k)| ((i, t), k)))
        .fold(((0, 0), f64::NEG_INFINITY), |best, x| {
            if x.1 > best.1 { x } else { best }
        });
    let top1 = 100.0 * agree as f64 / positions as f64;

    if a.json {
        let per: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "tokens": r.tokens,
                    "kl_mean": r.kl.iter().sum::<f64>() / r.kl.len() as f64,
                    "kl_max": r.kl.iter().copied().fold(0.0, f64::max),
                    "top1_agreement_pct": 100.0 * r.same_top.iter().filter(|&&s| s).count() as f64 / r.same_top.len() as f64,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "base": a.base.display().to_string(),
                "model": a.model.name(),
                "prompts": results.len(),
                "positions": positions,
                "kl_mean": mean,
                "kl_median": pct(0.5),
                "kl_p99": pct(0.99),
                "kl_max": max,
                "kl_max_at": {"prompt": max_at.0 + 1, "position": max_at.1},
                "top1_agreement_pct": top1,
                "per_prompt": per,
            })
        );
        return Ok(());
    }
    println!("base       {}", a.base.display());
    println!("model      {}", a.model.name());
    println!("prompts    {} ({positions} positions)", results.len());
    println!(
        "KL(base || model), nats: mean {mean:.6}, median {:.6}, p99 {:.6}, max {max:.6} (prompt {}, position {})",
        pct(0.5),
        pct(0.99),
        max_at.0 + 1,
        max_at.1
    );
    println!("top-1      {top1:.2}% agree ({agree}/{positions})");
    Ok(())
}

/// The prompts' texts: --prompt, then --file's lines; the built-in ones when there is no
/// prompt of any kind.
fn texts(a: &KlArgs) -> Result<Vec<String>> {
    let mut t = a.prompt.clone();
    if let Some(f) = &a.file {
        let s = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let lines: Vec<String> = s
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        if lines.is_empty() {
            bail!("{}: no prompts (every line is blank)", f.display());
        }
        t.extend(lines);
    }
    if t.is_empty() && a.token_ids.is_empty() {
        t = DEFAULT_PROMPTS.iter().map(|s| s.to_string()).collect();
    }
    Ok(t)
}

/// The logits at every position of `ids`, [T, vocab].
fn prefill(model: &Model, ids: &[u32]) -> Result<Vec<f32>> {
    let mut cache = model.new_cache(1, ids.len());
    let batch = ForwardBatch {
        seqs: vec![SeqChunk {
            slot: 0,
            start_pos: 0,
            tokens: ids,
        }],
        logits: LogitsMode::All,
    };
    Ok(model.forward(&batch, &mut cache)?)
}

/// Per position: KL(softmax(p) || softmax(q)) and whether the argmaxes agree.
fn compare(p: &[f32], q: &[f32], vocab: usize) -> PromptKl {
    let mut r = PromptKl {
        tokens: p.len() / vocab,
        kl: Vec::new(),
        same_top: Vec::new(),
    };
    for (pr, qr) in p.chunks_exact(vocab).zip(q.chunks_exact(vocab)) {
        let (lp, lq) = (log_softmax(pr), log_softmax(qr));
        let kl: f64 = lp
            .iter()
            .zip(&lq)
            .map(|(&a, &b)| {
                if a.is_finite() {
                    a.exp() * (a - b)
                } else {
                    0.0
                }
            })
            .sum();
        r.kl.push(kl.max(0.0));
        r.same_top.push(argmax(pr) == argmax(qr));
    }
    r
}

fn log_softmax(x: &[f32]) -> Vec<f64> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = m + x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
    x.iter().map(|&v| v as f64 - lse).collect()
}

fn argmax(x: &[f32]) -> usize {
    x.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_of_known_distributions() {
        // P = (1/2, 1/2), Q = (1/4, 3/4): KL = 1/2 ln 2 + 1/2 ln (2/3)
        let p = [0.0f32, 0.0];
        let q = [0.0f32, 3f32.ln()];
        let r = compare(&p, &q, 2);
        let want = 0.5 * 2f64.ln() + 0.5 * (2.0f64 / 3.0).ln();
        assert!((r.kl[0] - want).abs() < 1e-7, "{} vs {want}", r.kl[0]);
        assert_eq!(r.same_top, [true]); // a tie in P picks the last, as Q's max does
        let same = compare(
            &[1.0, 2.0, -3.0, 0.5, 0.1, 0.2],
            &[1.0, 2.0, -3.0, 0.5, 0.1, 0.2],
            3,
        );
        assert_eq!(same.kl, [0.0, 0.0]);
        assert_eq!(same.tokens, 2);
        let swapped = compare(&[2.0, 0.0], &[0.0, 2.0], 2);
        assert_eq!(swapped.same_top, [false]);
        assert!(swapped.kl[0] > 1.0);
    }
}
