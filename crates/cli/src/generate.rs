//! `deeprust logits` and `deeprust generate`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use engine::{GenerateRequest, Generator};
use loader::{DType, TensorOut, write_safetensors};
use model::{ForwardBatch, LogitsMode, SeqChunk};

use crate::common::{BeamArgs, ModelArgs, SamplingArgs, TokenIds, parse_ids, report};

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
    /// Prompt text (needs the tokenizer).
    #[arg(
        long,
        conflicts_with = "token_ids",
        required_unless_present = "token_ids"
    )]
    pub prompt: Option<String>,
    /// Prompt token ids, comma-separated (e.g. 5,17,3).
    #[arg(long, value_parser = parse_ids)]
    pub token_ids: Option<TokenIds>,
    /// Send the prompt as a user message through the chat template.
    #[arg(long)]
    pub chat: bool,
    /// With --chat: a system message first.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub beam: BeamArgs,
    /// Number of completions to generate (OpenAI's `n`).
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// Print one JSON object as the last line of stdout instead of streaming.
    #[arg(long)]
    pub json: bool,
    /// Do not print the timing report.
    #[arg(long)]
    pub quiet: bool,
}

pub fn logits(a: &LogitsArgs) -> Result<()> {
    let loaded = a.model.load(false)?;
    let model = &loaded.model;
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
    let loaded = a.model.load(a.prompt.is_some())?;
    let model = &loaded.model;
    let tok = loaded.tokenizer.as_ref();
    let prompt: Vec<u32> = match (&a.prompt, &a.token_ids) {
        (_, Some(ids)) if !a.chat => ids.0.clone(),
        (_, Some(_)) => bail!("--chat needs --prompt text, not --token-ids"),
        (Some(text), None) => {
            let tok = tok.context("--prompt needs a tokenizer")?;
            if a.chat {
                let mut messages = Vec::new();
                if let Some(s) = &a.system {
                    messages.push(serde_json::json!({"role": "system", "content": s}));
                }
                messages.push(serde_json::json!({"role": "user", "content": text}));
                tok.encode_chat(&serde_json::Value::Array(messages), None, true)?
            } else {
                tok.encode(text, true)?
            }
        }
        (None, None) => bail!("give --prompt or --token-ids"),
    };
    let generator = Generator {
        model,
        tokenizer: tok,
        ctx_size: a.sampling.ctx(model)?,
    };
    let req = GenerateRequest {
        prompt,
        sampling: a.sampling.params(),
        stop: a.sampling.stop(),
        n: a.samples,
        beam: a.beam.params(),
    };
    let mut stdout = std::io::stdout().lock();
    let stream = !a.json && a.samples == 1 && a.beam.beam_width.is_none();
    let mut io_err = None;
    let out = generator.generate(&req, &mut |ev| {
        if stream {
            let r = if tok.is_some() {
                write!(stdout, "{}", ev.text)
            } else {
                write!(stdout, "{} ", ev.token.id)
            };
            if let Err(e) = r.and_then(|_| stdout.flush()) {
                io_err = Some(e);
                return false; // the reader went away: stop generating
            }
        }
        true
    })?;
    if let Some(e) = io_err {
        return Err(e).context("writing to stdout");
    }
    if a.json {
        let completions: Vec<serde_json::Value> = out
            .completions
            .iter()
            .map(|c| {
                let mut j = serde_json::json!({
                    "token_ids": c.ids,
                    "finish_reason": c.finish_reason.as_str(),
                });
                if tok.is_some() {
                    j["text"] = c.text.clone().into();
                }
                if let Some(s) = c.score {
                    j["score"] = s.into();
                }
                if a.sampling.logprobs.is_some() {
                    j["logprobs"] = c
                        .logprobs
                        .iter()
                        .map(|s| {
                            serde_json::json!({
                                "token_id": s.id,
                                "logprob": s.logprob,
                                "top_logprobs": s.top_logprobs.iter().map(|(id, lp)| serde_json::json!({"token_id": id, "logprob": lp})).collect::<Vec<_>>(),
                            })
                        })
                        .collect();
                }
                j
            })
            .collect();
        let mut j = completions[0].clone();
        j["prompt_tokens"] = out.timings.prompt_tokens.into();
        j["completion_tokens"] = out.timings.generated_tokens.into();
        if completions.len() > 1 {
            j["completions"] = completions.into();
        }
        writeln!(stdout, "{j}")?;
    } else if stream {
        writeln!(stdout)?;
    } else {
        for (i, c) in out.completions.iter().enumerate() {
            match tok {
                Some(_) => writeln!(stdout, "--- {i} ({})\n{}", c.finish_reason.as_str(), c.text)?,
                None => writeln!(
                    stdout,
                    "--- {i} ({})\n{:?}",
                    c.finish_reason.as_str(),
                    c.ids
                )?,
            }
        }
    }
    if !a.quiet {
        report(&out.timings, Some(loaded.load_time));
    }
    Ok(())
}
