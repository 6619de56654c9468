//! `deeprust chat`: a conversation in the terminal. Ctrl-C stops the answer being written
//! and returns to the prompt; Ctrl-D or /exit leaves.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use clap::Args;
use engine::{FinishReason, GenerateRequest, Generator};
use serde_json::{Value, json};

use crate::common::{ModelArgs, SamplingArgs, report};

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A system message at the start of the conversation.
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Print the timing report after each answer.
    #[arg(long)]
    pub timings: bool,
}

pub fn run(a: &ChatArgs) -> Result<()> {
    let loaded = a.model.long_running().load(true)?;
    let tok = loaded
        .tokenizer
        .as_ref()
        .context("chat needs a tokenizer")?;
    if !tok.has_chat_template() {
        anyhow::bail!("{}: the tokenizer has no chat template", a.model.name());
    }
    let generator = Generator {
        model: &loaded.model,
        tokenizer: Some(tok),
        ctx_size: a.sampling.ctx(&loaded.model)?,
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;

    let mut history: Vec<Value> = Vec::new();
    if let Some(s) = &a.system {
        history.push(json!({"role": "system", "content": s}));
    }
    eprintln!(
        "deeprust chat: {} (Ctrl-C stops an answer, Ctrl-D or /exit quits, /reset forgets)",
        a.model.name()
    );
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    loop {
        write!(stdout, "\n> ")?;
        stdout.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            writeln!(stdout)?;
            break; // Ctrl-D
        }
        interrupted.store(false, Ordering::SeqCst);
        let line = line.trim_end_matches(['\n', '\r']);
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history.retain(|m| m["role"] == "system");
                writeln!(stdout, "(conversation cleared)")?;
                continue;
            }
            _ => {}
        }
        history.push(json!({"role": "user", "content": line}));
        let prompt = tok.encode_chat(&Value::Array(history.clone()), None, true)?;
        let req = GenerateRequest {
            prompt,
            sampling: a.sampling.params(),
            stop: a.sampling.stop(),
            n: 1,
            beam: None,
        };
        let out = generator.generate(&req, &mut |ev| {
            let _ = write!(stdout, "{}", ev.text).and_then(|_| stdout.flush());
            !interrupted.load(Ordering::SeqCst)
        });
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                // e.g. the conversation outgrew the context: say so, keep the session
                writeln!(stdout, "\nerror: {e} (use /reset to start over)")?;
                history.pop();
                continue;
            }
        };
        let c = &out.completions[0];
        if c.finish_reason == FinishReason::Cancelled {
            write!(stdout, " [stopped]")?;
        }
        writeln!(stdout)?;
        history.push(json!({"role": "assistant", "content": c.text}));
        if a.timings {
            report(&out.timings, None);
        }
    }
    Ok(())
}
