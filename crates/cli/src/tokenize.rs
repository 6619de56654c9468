//! `deeprust tokenize`: what the model will see.

use anyhow::{Result, bail};
use clap::Args;
use std::path::PathBuf;

use crate::common::read_json;

#[derive(Args)]
pub struct TokenizeArgs {
    /// A model directory, or any directory holding tokenizer.json (+ tokenizer_config.json);
    /// default: the embedded model's tokenizer.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Use this tokenizer directory instead of the model's.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Text to tokenize.
    #[arg(
        long,
        conflicts_with = "messages",
        required_unless_present = "messages"
    )]
    pub text: Option<String>,
    /// A JSON file with an OpenAI-style messages array (or {"messages": [...], "tools": [...]}).
    #[arg(long)]
    pub messages: Option<PathBuf>,
    /// With --messages: end with the assistant prompt.
    #[arg(long, requires = "messages")]
    pub add_generation_prompt: bool,
    /// With --text: add BOS/EOS as the tokenizer config says.
    #[arg(long)]
    pub add_special_tokens: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &TokenizeArgs) -> Result<()> {
    let tok = crate::common::ModelArgs {
        model: a.model.clone(),
        tokenizer: a.tokenizer.clone(),
        threads: None,
        kernels: None,
        pin_threads: false,
        numa: None,
        backend_kind: crate::common::BackendKind::Cpu,
        load: crate::common::LoadMode::Mmap,
        cache_type: model::CacheType::F32,
        act_type: crate::common::ActType::F32,
    }
    .load_tokenizer()?;
    if let Some(text) = &a.text {
        let ids = tok.encode(text, a.add_special_tokens)?;
        let tokens = tok.tokens(&ids);
        if a.json {
            println!("{}", serde_json::json!({"ids": ids, "tokens": tokens}));
        } else {
            for (id, t) in ids.iter().zip(&tokens) {
                println!("{id:>8} {t:?}");
            }
        }
        return Ok(());
    }
    let Some(path) = &a.messages else {
        bail!("give --text or --messages")
    };
    let v = read_json(path)?;
    let (messages, tools) = match &v {
        serde_json::Value::Array(_) => (v.clone(), None),
        serde_json::Value::Object(o) if o.contains_key("messages") => {
            (o["messages"].clone(), o.get("tools").cloned())
        }
        _ => bail!(
            "{}: expected a messages array or an object with `messages`",
            path.display()
        ),
    };
    let text = tok.apply_chat_template(&messages, tools.as_ref(), a.add_generation_prompt)?;
    let ids = tok.encode(&text, false)?;
    if a.json {
        println!("{}", serde_json::json!({"text": text, "ids": ids}));
    } else {
        println!("{text}");
        println!("{ids:?}");
    }
    Ok(())
}
