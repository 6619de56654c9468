//! What the commands share: finding and loading the model and tokenizer, sampling flags,
//! and the timing report.

use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use engine::{BeamParams, SamplingParams, Timings};
use loader::Checkpoint;
use model::Model;
use tokenizer::Tokenizer;

use crate::gguf_meta;

/// Where the model comes from.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A Hugging Face model directory (config.json + *.safetensors) or a llama.cpp
    /// `deepseek2` GGUF file; default: the small model built into this binary.
    #[arg(long, env = "DEEPRUST_MODEL")]
    pub model: Option<PathBuf>,
    /// Directory with tokenizer.json (and tokenizer_config.json), or a GGUF file with
    /// tokenizer metadata; default: the model's own.
    #[arg(long, env = "DEEPRUST_TOKENIZER")]
    pub tokenizer: Option<PathBuf>,
    /// CPU threads for the kernels (default: every available core).
    #[arg(long, short = 't', env = "DEEPRUST_THREADS")]
    pub threads: Option<usize>,
    /// Force a kernel level instead of the best this CPU supports: scalar, avx2, avx512, avx512vnni, amx (AMX tiles for prefill).
    #[arg(long, value_name = "LEVEL")]
    pub kernels: Option<kernels::Level>,
    /// Pin kernel threads to CPUs (one each, in the process's affinity order).
    #[arg(long)]
    pub pin_threads: bool,
    /// Memory placement on multi-socket machines: `interleave` spreads every allocation
    /// and the mapped weights' pages over all NUMA nodes (as `numactl --interleave=all`).
    #[arg(long, value_enum, value_name = "POLICY")]
    pub numa: Option<NumaPolicy>,
    /// Where the model runs: cpu, or gpu (wgpu: Vulkan, Metal, DX12; weights on the GPU,
    /// activations round-trip from host memory at each operation).
    #[arg(
        long = "backend",
        value_enum,
        default_value = "cpu",
        env = "DEEPRUST_BACKEND"
    )]
    pub backend_kind: BackendKind,
    /// How the weight files are held in memory: `mmap` maps them in place (instant; pages
    /// shared with the page cache), `huge-pages` reads them once into anonymous memory in
    /// transparent 2 MiB pages (Linux), which decode streams faster (bf16 +14-16%, q8_0
    /// +7% here) at the cost of reading the whole file at start-up; `auto`: huge-pages for
    /// the long-running commands (serve, chat, bench) on the CPU backend, with 256 MiB of
    /// weight files or more that fit in 80% of the available memory, where the kernel
    /// gives huge pages; else mmap.
    #[arg(long, value_enum, default_value = "auto", value_name = "MODE")]
    pub load: LoadMode,
    /// How the latent KV cache stores values: `f32` (exact: logits as the reference
    /// computes them), `bf16` (half the memory, and half the bytes a decode step reads at
    /// depth; each cached latent rounded to bf16, as llama.cpp's default cache is f16) or
    /// `q8_0` (56% of bf16's memory: each row's latent in GGUF's Q8_0 blocks, as llama.cpp's
    /// `--cache-type-k q8_0`, its rope part bf16; read back as bf16).
    #[arg(long, default_value = "f32", value_name = "TYPE")]
    pub cache_type: model::CacheType,
    /// What bf16 weights' prefill products multiply: `f32` activations (exact: logits as
    /// the reference computes them) or `bf16` (each activation rounded to bf16, as
    /// llama.cpp does for bf16 files; twice the multiply rate with AVX-512 BF16, and f32
    /// where the CPU lacks it). Decode and the other formats are unaffected.
    #[arg(long, value_enum, default_value = "f32", value_name = "TYPE")]
    pub act_type: ActType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ActType {
    F32,
    Bf16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadMode {
    Auto,
    Mmap,
    HugePages,
}

/// From this many bytes of weight files on, `--load auto` copies them into huge pages
/// (a smaller model is not worth reading whole at start-up).
const HUGE_PAGES_FROM: u64 = 256 << 20;

/// Memory the kernel says is available for new allocations (`MemAvailable`, Linux).
fn mem_available() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Bytes of the weight files at `path`: a GGUF file, or a directory's *.safetensors.
fn weight_file_bytes(path: &Path) -> u64 {
    if path.is_file() {
        return path.metadata().map_or(0, |m| m.len());
    }
    std::fs::read_dir(path).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
            .map(|e| e.metadata().map_or(0, |m| m.len()))
            .sum()
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NumaPolicy {
    Interleave,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    Cpu,
    Gpu,
}

pub struct Loaded {
    pub model: Model,
    pub tokenizer: Option<Tokenizer>,
    pub load_time: Duration,
}

impl ModelArgs {
    /// How to name the model to a person.
    pub fn name(&self) -> String {
        self.model
            .as_ref()
            .map_or(embedded::NAME.to_string(), |p| p.display().to_string())
    }

    pub fn checkpoint(&self) -> Result<Checkpoint> {
        Ok(match &self.model {
            Some(dir) => {
                let residency = self.residency()?;
                let start = Instant::now();
                let ckpt = Checkpoint::open_with(dir, residency)?;
                if residency == loader::Residency::HugePages {
                    eprintln!(
                        "load: {:.2} GiB of weights read into anonymous memory (huge pages: {}) in {:.2} s",
                        ckpt.weight_bytes() as f64 / (1u64 << 30) as f64,
                        if loader::huge_pages_available() {
                            "yes"
                        } else {
                            "not offered by the kernel"
                        },
                        start.elapsed().as_secs_f64()
                    );
                }
                ckpt
            }
            None => embedded::checkpoint()?,
        })
    }

    /// These arguments for a long-running command, which pays a slower start for faster
    /// decode: `--load auto` becomes huge-pages for 256 MiB of weight files or more on the
    /// CPU backend, where the kernel gives huge pages and a copy fits in 80% of the
    /// available memory (a mapping larger than memory still runs, paged by the kernel);
    /// else mmap.
    pub fn long_running(&self) -> ModelArgs {
        let pays = |p: &Path| {
            let bytes = weight_file_bytes(p);
            self.backend_kind == BackendKind::Cpu
                && loader::huge_pages_available()
                && bytes >= HUGE_PAGES_FROM
                && mem_available().is_some_and(|m| bytes <= m / 10 * 8)
        };
        let load = match (self.load, &self.model) {
            (LoadMode::Auto, Some(p)) if pays(p) => LoadMode::HugePages,
            (LoadMode::Auto, _) => LoadMode::Mmap,
            (load, _) => load,
        };
        ModelArgs {
            load,
            ..self.clone()
        }
    }

    /// How `--load` holds the weight files (`auto` here: mapped, see `long_running`).
    fn residency(&self) -> Result<loader::Residency> {
        Ok(match self.load {
            LoadMode::HugePages if !cfg!(target_os = "linux") => {
                bail!("--load huge-pages: only on Linux (transparent huge pages)")
            }
            LoadMode::HugePages => loader::Residency::HugePages,
            LoadMode::Auto | LoadMode::Mmap => loader::Residency::Mapped,
        })
    }

    /// The CPU backend as `--threads`, `--kernels` and `--pin-threads` ask.
    pub fn backend(&self) -> Result<Box<dyn kernels::Backend>> {
        // before the pool's threads start (they inherit it) and the weights are first read
        if let Some(NumaPolicy::Interleave) = self.numa {
            let nodes = kernels::cpu::numa::interleave_all()
                .map_err(|e| anyhow::anyhow!("--numa interleave: {e}"))?;
            eprintln!("numa: memory interleaved over {nodes} node(s)");
        }
        let cpu =
            kernels::CpuBackend::with_options(&self.cpu_options()?).map_err(anyhow::Error::msg)?;
        Ok(match self.backend_kind {
            BackendKind::Cpu => Box::new(cpu),
            BackendKind::Gpu => {
                let g =
                    gpu::GpuBackend::new(cpu).map_err(|e| anyhow::anyhow!("--backend gpu: {e}"))?;
                eprintln!("gpu: {}", g.adapter());
                Box::new(g)
            }
        })
    }

    /// The kernel level and thread count `--kernels` and `--threads` give here (for
    /// reports; starts no thread).
    pub fn kernel_choice(&self) -> Result<(kernels::Level, usize)> {
        self.cpu_options()?.resolve().map_err(anyhow::Error::msg)
    }

    /// The activations bf16 weights' prefill products take here: `--act-type`, where the
    /// CPU backend at this level has the bf16 products.
    pub fn act_type_used(&self) -> Result<&'static str> {
        let (level, _) = self.kernel_choice()?;
        let bf16 = self.act_type == ActType::Bf16
            && self.backend_kind == BackendKind::Cpu
            && kernels::cpu::simd::has_bf16_dot(level);
        Ok(if bf16 { "bf16" } else { "f32" })
    }

    fn cpu_options(&self) -> Result<kernels::CpuOptions> {
        if self.threads == Some(0) {
            bail!("--threads must be at least 1");
        }
        Ok(kernels::CpuOptions {
            level: self.kernels,
            threads: self.threads,
            pin_threads: self.pin_threads,
            bf16_activations: self.act_type == ActType::Bf16,
        })
    }

    /// The model alone, for commands that never touch text (a GGUF's tokenizer metadata is
    /// not turned into a tokenizer).
    pub fn load_model(&self) -> Result<Model> {
        let backend = self.backend()?;
        with_spinner("loading model", || -> Result<Model> {
            let mut model = Model::load_with(&self.checkpoint()?, backend)?;
            model.set_cache_type(self.cache_type);
            Ok(model)
        })
    }

    /// `--tokenizer`, else the model's tokenizer (a directory's tokenizer.json, a GGUF
    /// file's tokenizer metadata), else the embedded one.
    pub fn load_tokenizer(&self) -> Result<Tokenizer> {
        match (&self.tokenizer, &self.model) {
            (Some(p), _) | (None, Some(p)) if is_gguf_file(p) => {
                let g = loader::gguf::GgufFile::open(p)?;
                gguf_meta::tokenizer_from_gguf(&g)?.ok_or_else(|| no_gguf_tokenizer(p))
            }
            (Some(dir), _) | (None, Some(dir)) => Ok(Tokenizer::from_dir(dir)?),
            (None, None) => Ok(embedded::tokenizer()?),
        }
    }

    /// Load the model (with a spinner if it takes a moment) and, if present, the tokenizer.
    /// A GGUF model's tokenizer comes from its metadata; one without any loads with no
    /// tokenizer (an error only when `need_tokenizer`).
    pub fn load(&self, need_tokenizer: bool) -> Result<Loaded> {
        let start = Instant::now();
        let backend = self.backend()?;
        let (model, from_gguf) = with_spinner(
            "loading model",
            || -> Result<(Model, Option<Result<Option<Tokenizer>>>)> {
                let ckpt = self.checkpoint()?;
                let from_gguf = match (&self.tokenizer, ckpt.gguf()) {
                    (None, Some(g)) => Some(gguf_meta::tokenizer_from_gguf(g)),
                    _ => None,
                };
                let mut model = Model::load_with(&ckpt, backend)?;
                model.set_cache_type(self.cache_type);
                Ok((model, from_gguf))
            },
        )?;
        let tokenizer = match (from_gguf, &self.tokenizer, &self.model) {
            (Some(Ok(Some(t))), _, _) => Some(t),
            (Some(Ok(None)), _, Some(p)) if need_tokenizer => return Err(no_gguf_tokenizer(p)),
            (Some(Ok(None)), _, _) => None,
            (Some(Err(e)), _, _) if need_tokenizer => return Err(e),
            (Some(Err(e)), _, _) => {
                eprintln!("warning: no tokenizer: {e:#}");
                None
            }
            (None, Some(_), _) | (None, None, None) => Some(self.load_tokenizer()?),
            (None, None, Some(dir)) if need_tokenizer || dir.join("tokenizer.json").is_file() => {
                Some(self.load_tokenizer()?)
            }
            (None, None, Some(_)) => None,
        };
        Ok(Loaded {
            model,
            tokenizer,
            load_time: start.elapsed(),
        })
    }
}

/// Whether `--model`/`--tokenizer` names a GGUF file (as `Checkpoint::open` decides: a
/// file with the GGUF magic or a `.gguf` name).
pub fn is_gguf_file(p: &Path) -> bool {
    p.is_file()
        && (loader::gguf::is_gguf(p)
            || p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf")))
}

fn no_gguf_tokenizer(p: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: this GGUF file has no tokenizer metadata (tokenizer.ggml.*); pass --tokenizer DIR (a directory with tokenizer.json) or use token ids",
        p.display()
    )
}

/// Run `f`, showing a spinner on stderr only if it takes longer than a moment.
pub fn with_spinner<T>(msg: &'static str, f: impl FnOnce() -> T) -> T {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let handle = std::thread::spawn(move || {
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(400) {
            if flag.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let bar = indicatif::ProgressBar::new_spinner().with_message(msg);
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            bar.tick();
            std::thread::sleep(Duration::from_millis(80));
        }
        bar.finish_and_clear();
    });
    let out = f();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = handle.join();
    out
}

/// Sampling controls, named as llama.cpp and the OpenAI API name them.
#[derive(Args, Clone, Debug)]
pub struct SamplingArgs {
    /// 0 is greedy decoding; higher values sample from softmax(logits / temperature).
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches p.
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one.
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    pub min_p: f32,
    /// Penalise tokens already in the prompt or output (1: off).
    #[arg(
        long,
        visible_alias = "repeat-penalty",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub repetition_penalty: f32,
    /// Subtracted from the logits of tokens already generated (OpenAI's presence_penalty).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub presence_penalty: f32,
    /// Subtracted per occurrence of a generated token (OpenAI's frequency_penalty).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub frequency_penalty: f32,
    /// TOKEN_ID=BIAS added to a token's logit; repeatable (-100 bans a token).
    #[arg(long, value_parser = parse_bias, allow_hyphen_values = true)]
    pub logit_bias: Vec<(u32, f32)>,
    /// Seed: the same seed and request give the same tokens.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Report log-probabilities of the chosen tokens and this many alternatives (0-20).
    #[arg(long)]
    pub logprobs: Option<usize>,
    /// Most tokens to generate.
    #[arg(long, short = 'n', visible_alias = "n-predict", default_value_t = 256)]
    pub max_tokens: usize,
    /// Text that ends generation (not printed); repeatable.
    #[arg(long)]
    pub stop: Vec<String>,
    /// Token id that ends generation; repeatable.
    #[arg(long)]
    pub stop_token_id: Vec<u32>,
    /// Keep generating after an end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Context length (prompt + generated); default: the model's max_position_embeddings.
    #[arg(long)]
    pub ctx_size: Option<usize>,
}

fn parse_bias(s: &str) -> Result<(u32, f32), String> {
    let (id, b) = s
        .split_once(['=', ':'])
        .ok_or_else(|| format!("`{s}`: expected TOKEN_ID=BIAS"))?;
    let id = id
        .trim()
        .parse()
        .map_err(|_| format!("`{id}` is not a token id"))?;
    let b = b
        .trim()
        .parse()
        .map_err(|_| format!("`{b}` is not a number"))?;
    Ok((id, b))
}

impl SamplingArgs {
    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            logit_bias: self.logit_bias.clone(),
            seed: self.seed,
            logprobs: self.logprobs,
        }
    }

    pub fn stop(&self) -> engine::StopParams {
        engine::StopParams {
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            stop_token_ids: self.stop_token_id.clone(),
            ignore_eos: self.ignore_eos,
        }
    }

    pub fn ctx(&self, model: &Model) -> Result<usize> {
        match self.ctx_size {
            Some(0) => bail!("--ctx-size must be positive"),
            Some(c) => Ok(c),
            None => Ok(model.config.max_position_embeddings),
        }
    }
}

/// Beam search instead of sampling.
#[derive(Args, Clone, Debug)]
pub struct BeamArgs {
    /// Beam search with this many beams (instead of sampling).
    #[arg(long)]
    pub beam_width: Option<usize>,
    /// Beam scores are sum(logprob) / length^penalty.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub length_penalty: f32,
}

impl BeamArgs {
    pub fn params(&self) -> Option<BeamParams> {
        self.beam_width.map(|width| BeamParams {
            width,
            length_penalty: self.length_penalty,
        })
    }
}

/// The figures people compare across engines, on stderr.
pub fn report(t: &Timings, load: Option<Duration>) {
    let rate = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    if let Some(l) = load {
        eprintln!("load time       {:>9.1} ms", l.as_secs_f64() * 1e3);
    }
    eprintln!(
        "prompt          {:>9} tokens {:>9.1} ms {:>9.1} tok/s",
        t.prompt_tokens,
        t.prompt_secs * 1e3,
        rate(t.prompt_tokens, t.prompt_secs)
    );
    eprintln!(
        "generated       {:>9} tokens {:>9.1} ms {:>9.1} tok/s",
        t.generated_tokens,
        t.generate_secs * 1e3,
        rate(t.generated_tokens, t.generate_secs)
    );
    eprintln!(
        "first token     {:>9.1} ms",
        t.time_to_first_token_secs * 1e3
    );
}

/// Comma-separated token ids, as one argument.
#[derive(Clone, Debug)]
pub struct TokenIds(pub Vec<u32>);

/// `5,17,3` -> ids.
pub fn parse_ids(s: &str) -> Result<TokenIds, String> {
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

/// Read a JSON file, naming it in errors.
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))
}
