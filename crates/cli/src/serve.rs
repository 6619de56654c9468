//! `deeprust serve`: the OpenAI-compatible server on one model.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use engine::EngineHandle;
use server::{AccessConfig, AppState, Limits, app};

use crate::bench::EngineArgs;
use crate::common::ModelArgs;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", env = "DEEPRUST_HOST")]
    pub host: String,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 8080, env = "DEEPRUST_PORT")]
    pub port: u16,
    /// The model's name in the API (`model` field); default: the directory name.
    #[arg(long, env = "DEEPRUST_MODEL_NAME")]
    pub model_name: Option<String>,
    /// An accepted API key (repeatable); clients send `Authorization: Bearer KEY`.
    #[arg(long = "api-key", env = "DEEPRUST_API_KEY", value_delimiter = ',')]
    pub api_keys: Vec<String>,
    /// A file of API keys, one a line, each optionally followed by `rpm=N tpm=N concurrent=N`.
    #[arg(long, env = "DEEPRUST_API_KEYS_FILE")]
    pub api_keys_file: Option<std::path::PathBuf>,
    /// Requests per minute per key (or per client address without keys).
    #[arg(long, env = "DEEPRUST_RATE_LIMIT_RPM")]
    pub rate_limit_rpm: Option<u64>,
    /// Tokens (prompt + completion) per minute per key.
    #[arg(long, env = "DEEPRUST_RATE_LIMIT_TPM")]
    pub rate_limit_tpm: Option<u64>,
    /// Requests in flight per key.
    #[arg(long, env = "DEEPRUST_MAX_CONCURRENT")]
    pub max_concurrent: Option<u64>,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 30)]
    pub grace_secs: u64,
    /// The in-browser page (WebAssembly) to serve at /local/: the `web` directory once
    /// scripts/build-wasm.sh has built it. Default: ./web when it holds a built page.
    #[arg(long, env = "DEEPRUST_WEB_DIR")]
    pub web_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub fn run(a: &ServeArgs) -> Result<()> {
    let loaded = a.model.long_running().load(true)?;
    let tokenizer = Arc::new(loaded.tokenizer.context("serve needs a tokenizer")?);
    let model = Arc::new(loaded.model);
    let cfg = a.engine.config(&model)?;
    let name = a
        .model_name
        .clone()
        .unwrap_or_else(|| match &a.model.model {
            Some(p) => p
                .file_name()
                .map_or("model".into(), |n| n.to_string_lossy().into_owned()),
            None => "deeprust-embedded".into(),
        });
    let mut access = AccessConfig {
        keys: a
            .api_keys
            .iter()
            .filter(|k| !k.is_empty())
            .map(|k| (k.clone(), None))
            .collect(),
        defaults: Limits {
            rpm: a.rate_limit_rpm,
            tpm: a.rate_limit_tpm,
            concurrent: a.max_concurrent,
        },
    };
    if let Some(f) = &a.api_keys_file {
        access
            .keys
            .extend(AccessConfig::read_keys_file(f).map_err(anyhow::Error::msg)?);
    }
    let web_dir = match &a.web_dir {
        Some(d) if !d.join("pkg").join("web.js").is_file() => bail!(
            "--web-dir {}: no built page there (pkg/web.js is missing; run scripts/build-wasm.sh)",
            d.display()
        ),
        Some(d) => Some(d.clone()),
        None => Some(std::path::PathBuf::from("web")).filter(|d| d.join("pkg/web.js").is_file()),
    };
    let engine = EngineHandle::start(model, Some(tokenizer.clone()), cfg);
    let state = Arc::new(
        AppState::new(engine, tokenizer, name.clone())
            .with_access(access)
            .with_local_page(web_dir.clone()),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let addr = format!("{}:{}", a.host, a.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        eprintln!("deeprust: serving `{name}` on http://{local} (OpenAI API at http://{local}/v1)");
        if let Some(d) = &web_dir {
            eprintln!(
                "deeprust: the in-browser page ({}) at http://{local}/local/",
                d.display()
            );
        }
        server::serve(listener, app(state), Duration::from_secs(a.grace_secs)).await?;
        eprintln!("deeprust: stopped");
        Ok(())
    })
}
