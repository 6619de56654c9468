//! llama-bench's tests on our engine: `pp N` is one prefill of N tokens, `tg N` is N
//! single-token decode steps, each starting with `depth` tokens already in the cache. Every
//! test runs once to warm up (unless `--no-warmup`), then `-r` times; the records carry
//! llama-bench's JSON fields so `scripts/bench/peer.sh` can set the two engines side by side.

use std::time::Instant;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use model::{ForwardBatch, LogitsMode, Model, SeqChunk};
use serde_json::json;

use crate::common::{LoadMode, ModelArgs};

#[derive(Args)]
pub struct SingleArgs {
    /// Prompt lengths for prefill tests (pp), comma-separated; 0 for none.
    #[arg(
        short = 'p',
        long = "n-prompt",
        default_value = "512",
        value_delimiter = ','
    )]
    pub n_prompt: Vec<usize>,
    /// Generated tokens for decode tests (tg), comma-separated; 0 for none.
    #[arg(
        short = 'n',
        long = "n-gen",
        default_value = "128",
        value_delimiter = ','
    )]
    pub n_gen: Vec<usize>,
    /// Tokens already in the KV cache when each test starts, comma-separated.
    #[arg(
        short = 'd',
        long = "depth",
        default_value = "0",
        value_delimiter = ','
    )]
    pub depth: Vec<usize>,
    /// Timed repetitions per test (after one warm-up run).
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub reps: usize,
    /// Skip the warm-up run before each test, as llama-bench's `--no-warmup` (a test at a
    /// depth is warm anyway: its cache is filled, untimed, first).
    #[arg(long)]
    pub no_warmup: bool,
    /// Output: a markdown table, or JSON records as llama-bench writes them.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Md)]
    pub output: Output,
    /// Measure the machine's memory bandwidth (STREAM triad) instead of a model.
    #[arg(long)]
    pub membw: bool,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum Output {
    Md,
    Json,
    Jsonl,
}

struct Test {
    n_prompt: usize,
    n_gen: usize,
    depth: usize,
}

impl Test {
    fn name(&self) -> String {
        let t = if self.n_gen == 0 {
            format!("pp{}", self.n_prompt)
        } else {
            format!("tg{}", self.n_gen)
        };
        if self.depth > 0 {
            format!("{t} @ d{}", self.depth)
        } else {
            t
        }
    }
}

pub fn run(m: &ModelArgs, a: &SingleArgs) -> Result<()> {
    if a.reps == 0 {
        bail!("-r/--repetitions must be at least 1");
    }
    if a.membw {
        return membw(m, a);
    }
    let m = &m.long_running();
    // as llama-bench's `use_mmap` (the embedded model is in the binary: mapped too)
    let use_mmap = m.load != LoadMode::HugePages || m.model.is_none();
    let model = m.load_model()?;
    let (level, threads) = m.kernel_choice()?; // what the model was built with, for the report
    let act_type = m.act_type_used()?;
    let ctx = model.config.max_position_embeddings;
    let mut tests = Vec::new();
    for &depth in &a.depth {
        for &p in a.n_prompt.iter().filter(|&&p| p > 0) {
            tests.push(Test {
                n_prompt: p,
                n_gen: 0,
                depth,
            });
        }
        for &n in a.n_gen.iter().filter(|&&n| n > 0) {
            tests.push(Test {
                n_prompt: 0,
                n_gen: n,
                depth,
            });
        }
    }
    for t in &tests {
        let need = t.depth + t.n_prompt + t.n_gen;
        if need > ctx {
            bail!(
                "test {} needs {need} positions but the model's context is {ctx}",
                t.name()
            );
        }
    }
    let file = m.name();
    // mapped, whatever --load says: only sizes and names are read here
    let ckpt = match &m.model {
        Some(p) => loader::Checkpoint::open(p)?,
        None => m.checkpoint()?,
    };
    let size: u64 = ckpt.weight_bytes();
    let params: usize = ckpt
        .tensors()
        .filter(|t| !t.name.ends_with("_scale_inv"))
        .map(|t| t.numel())
        .sum();
    let types = dtype_summary(&ckpt);
    drop(ckpt);
    let mut records = Vec::new();
    if a.output == Output::Md {
        println!(
            "model {file}  {:.2} GiB  {:.2} B params  kernels {level}  threads {threads}  load {}  cache {}  acts {act_type}",
            size as f64 / (1u64 << 30) as f64,
            params as f64 / 1e9,
            if use_mmap { "mmap" } else { "huge-pages" },
            model.cache_type()
        );
        println!("| {:>16} | {:>20} |", "test", "t/s");
        println!("| {:->16} | {:->20} |", "", "");
    }
    for t in &tests {
        if !a.no_warmup {
            run_once(&model, t)?; // warm-up: page in the weights, size the scratch buffers
        }
        let mut samples_ns = Vec::with_capacity(a.reps);
        for _ in 0..a.reps {
            samples_ns.push(run_once(&model, t)?);
        }
        let tokens = (t.n_prompt + t.n_gen) as f64;
        let ts: Vec<f64> = samples_ns
            .iter()
            .map(|&ns| tokens * 1e9 / ns as f64)
            .collect();
        let (avg_ts, stddev_ts) = mean_sd(&ts);
        let ns: Vec<f64> = samples_ns.iter().map(|&n| n as f64).collect();
        let (avg_ns, stddev_ns) = mean_sd(&ns);
        let rec = json!({
            "build_commit": option_env!("DEEPRUST_GIT_COMMIT").unwrap_or("unknown"),
            "build_number": 0,
            "cpu_info": cpu_name(),
            "backends": "CPU",
            "kernels": level.name(),
            "model_filename": file,
            "model_type": format!("deepseek2 {types}"),
            "model_size": size,
            "model_n_params": params,
            "n_batch": 2048,
            "n_ubatch": UBATCH,
            "n_threads": threads,
            "use_mmap": use_mmap,
            // one latent cache serves as both (MLA)
            "type_k": model.cache_type().name(),
            "type_v": model.cache_type().name(),
            // what bf16 weights' prefill products multiply (`--act-type`)
            "type_act": act_type,
            "n_prompt": t.n_prompt,
            "n_gen": t.n_gen,
            "n_depth": t.depth,
            "test_time": now_rfc3339(),
            "avg_ns": avg_ns as u64,
            "stddev_ns": stddev_ns as u64,
            "avg_ts": avg_ts,
            "stddev_ts": stddev_ts,
            "samples_ns": samples_ns,
            "samples_ts": ts,
        });
        match a.output {
            Output::Md => println!(
                "| {:>16} | {:>20} |",
                t.name(),
                format!("{avg_ts:.2} ± {stddev_ts:.2}")
            ),
            Output::Jsonl => println!("{rec}"),
            Output::Json => records.push(rec),
        }
    }
    // Memory: the peak resident set against what the run needs (mapped weights plus the
    // largest KV cache a test held); the rest is activations, scratch and the binary.
    let kv_max = tests
        .iter()
        .map(|t| {
            (t.depth + t.n_prompt + t.n_gen)
                * model::KvPool::block_bytes(&model.config, 1, model.cache_type())
        })
        .max()
        .unwrap_or(0) as u64;
    let peak = peak_rss();
    if let Some(peak) = peak {
        let need = size + kv_max;
        let over = peak as f64 / need as f64 - 1.0;
        match a.output {
            Output::Md => println!(
                "memory: peak RSS {} = weights {} + KV {} {:+.1}%",
                gib(peak),
                gib(size),
                gib(kv_max),
                over * 100.0
            ),
            _ => {
                for r in &mut records {
                    r["peak_rss_bytes"] = json!(peak);
                    r["kv_bytes"] = json!(kv_max);
                }
            }
        }
    }
    if a.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    }
    Ok(())
}

fn gib(b: u64) -> String {
    format!("{:.3} GiB", b as f64 / (1u64 << 30) as f64)
}

/// The process's peak resident set (VmHWM), where the OS reports it.
fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Prompt tokens per forward (llama-bench's default n_ubatch).
const UBATCH: usize = 512;

/// One run of a test in a fresh cache; returns the nanoseconds of the timed part.
fn run_once(model: &Model, t: &Test) -> Result<u64> {
    let total = t.depth + t.n_prompt + t.n_gen;
    let mut cache = model.new_cache(1, total.max(1));
    let vocab = model.config.vocab_size as u32;
    // deterministic, vocabulary-spread token ids (no tokenizer needed)
    let ids: Vec<u32> = (0..total as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) % vocab)
        .collect();
    let forward = |cache: &mut model::KvCache, start: usize, tokens: &[u32]| -> Result<()> {
        let batch = ForwardBatch {
            seqs: vec![SeqChunk {
                slot: 0,
                start_pos: start,
                tokens,
            }],
            logits: LogitsMode::Last,
        };
        model.forward(&batch, cache)?;
        Ok(())
    };
    // prompts go through in micro-batches of UBATCH tokens, as llama-bench's n_ubatch
    let chunked = |cache: &mut model::KvCache, from: usize, to: usize| -> Result<()> {
        let mut at = from;
        while at < to {
            let end = (at + UBATCH).min(to);
            forward(cache, at, &ids[at..end])?;
            at = end;
        }
        Ok(())
    };
    chunked(&mut cache, 0, t.depth)?;
    let start = Instant::now();
    chunked(&mut cache, t.depth, t.depth + t.n_prompt)?;
    for i in 0..t.n_gen {
        let pos = t.depth + t.n_prompt + i;
        forward(&mut cache, pos, &ids[pos..pos + 1])?;
    }
    Ok(start.elapsed().as_nanos() as u64)
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// The dtypes of the checkpoint's matrices, most common first.
fn dtype_summary(ckpt: &loader::Checkpoint) -> String {
    let mut seen: Vec<String> = Vec::new();
    for d in ckpt
        .tensors()
        .filter(|t| t.shape.len() == 2)
        .map(|t| t.dtype)
    {
        let s = d.to_string();
        if !seen.contains(&s) {
            seen.push(s);
        }
    }
    seen.join("/")
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // civil-from-days (Howard Hinnant's algorithm), to avoid a date crate for one field
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// STREAM triad `a = b + s * c` over arrays far larger than any cache, split across the
/// kernel thread pool by ranges; bytes counted as STREAM does (two reads, one write).
fn membw(m: &ModelArgs, a: &SingleArgs) -> Result<()> {
    if m.backend_kind == crate::common::BackendKind::Gpu {
        return gpu_membw(a);
    }
    let (_, threads) = m.kernel_choice()?;
    let pool = kernels::cpu::pool::ThreadPool::new(threads, m.pin_threads);
    let n = 64 << 20; // 64 Mi f32 = 256 MiB per array
    let mut av = vec![0f32; n];
    let b = vec![1f32; n];
    let c = vec![2f32; n];
    let dst = kernels::cpu::pool::Disjoint::new(&mut av);
    let triad = || {
        pool.for_ranges(n, 4096, &|r| {
            // SAFETY: each share writes its own range of `av`.
            let out = unsafe { dst.slice(r.start, r.len()) };
            for ((o, &x), &y) in out.iter_mut().zip(&b[r.clone()]).zip(&c[r]) {
                *o = x + 3.0 * y;
            }
        })
    };
    triad(); // first touch
    let mut gbs = Vec::new();
    for _ in 0..a.reps.max(3) {
        let t = Instant::now();
        triad();
        gbs.push(3.0 * 4.0 * n as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    std::hint::black_box(&av);
    gbs.sort_by(f64::total_cmp);
    let median = gbs[gbs.len() / 2];
    let best = gbs[gbs.len() - 1];
    match a.output {
        Output::Md => println!(
            "memory bandwidth (STREAM triad, {threads} threads, 3 x 256 MiB): median {median:.1} GB/s, best {best:.1} GB/s"
        ),
        _ => println!(
            "{}",
            json!({"test": "membw_triad", "n_threads": threads, "bandwidth_gbs": median, "best_gbs": best, "samples_gbs": gbs})
        ),
    }
    Ok(())
}

/// `--membw --backend gpu`: the device's read bandwidth through a WGSL stream, then the GPU
/// matmul's decode product (one token) streaming a weight far larger than any cache in each
/// format, as GB/s of weight bytes read and as a fraction of the stream's figure.
fn gpu_membw(a: &SingleArgs) -> Result<()> {
    let cpu = kernels::CpuBackend::new();
    let g = gpu::GpuBackend::new(cpu).map_err(|e| anyhow::anyhow!("--backend gpu: {e}"))?;
    let reps = a.reps.max(3);
    let target = (512u64 << 20).min(g.max_binding());
    let mut read: Vec<f64> = (0..reps).map(|_| g.read_bandwidth(target, 20)).collect();
    read.sort_by(f64::total_cmp);
    let read = read[read.len() / 2];
    let mut records =
        vec![json!({"test": "gpu_read", "adapter": g.adapter(), "bandwidth_gbs": read})];
    if a.output == Output::Md {
        println!(
            "{}: read {read:.0} GB/s (a WGSL stream over {} MiB)",
            g.adapter(),
            target >> 20
        );
    }
    // one small op's round trip (upload, dispatch, read back), what bounds decode here
    let mut v = vec![1f32; 1024];
    let mut trips = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..200 {
            kernels::Backend::softmax(&g, &mut v);
        }
        trips.push(t.elapsed().as_secs_f64() / 200.0 * 1e6);
    }
    trips.sort_by(f64::total_cmp);
    let trip = trips[trips.len() / 2];
    records.push(json!({"test": "gpu_op_round_trip", "microseconds": trip}));
    if a.output == Output::Md {
        println!("  one op's round trip (softmax of 1024): {trip:.0} us");
    }
    let cols = 8192;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    for dtype in [
        loader::DType::BF16,
        loader::DType::Q8_0,
        loader::DType::Q6K,
        loader::DType::Q5_0,
        loader::DType::Q4K,
        loader::DType::F8E4M3,
    ] {
        // 64 distinct random rows, tiled to the size (distinct addresses, so no cache helps)
        let mut rows64 = Vec::new();
        for _ in 0..64 {
            let v: Vec<f32> = (0..cols).map(|_| rnd()).collect();
            if dtype == loader::DType::BF16 {
                rows64.extend(
                    v.iter()
                        .flat_map(|f| ((f.to_bits() >> 16) as u16).to_le_bytes()),
                );
            } else if dtype == loader::DType::F8E4M3 {
                // random e4m3 bytes, none of them NaN
                rows64.extend(v.iter().map(|f| ((f * 100.0) as i8 as u8) & 0xf7));
            } else if dtype == loader::DType::Q5_0 {
                // random blocks (the loader does not write Q5_0): f16 scale 1/64, random bits
                for c in v.chunks(32) {
                    rows64.extend(0x2400u16.to_le_bytes());
                    rows64.extend(c[..20].iter().map(|f| (f * 127.0) as i8 as u8));
                }
            } else {
                loader::quant::quantize_row(dtype, &v, &mut rows64)?;
            }
        }
        let row_bytes = rows64.len() / 64;
        let rows = (target as usize / row_bytes) / 64 * 64;
        let mut bytes = Vec::with_capacity(rows * row_bytes);
        while bytes.len() < rows * row_bytes {
            bytes.extend_from_slice(&rows64);
        }
        let t = loader::Tensor::from_bytes("w", dtype, vec![rows, cols], bytes)
            .map_err(anyhow::Error::msg)?;
        let w = if dtype == loader::DType::F8E4M3 {
            // V3's 128x128 blocks, all scales 1
            let grid = vec![rows.div_ceil(128), cols.div_ceil(128)];
            let ones = [0u8, 0, 0x80, 0x3f].repeat(grid[0] * grid[1]);
            let s = loader::Tensor::from_bytes("s", loader::DType::F32, grid, ones)
                .map_err(anyhow::Error::msg)?;
            kernels::Matrix::fp8(t, s, [128, 128])
        } else {
            kernels::Matrix::dense(t)
        }
        .map_err(anyhow::Error::msg)?;
        let x: Vec<f32> = (0..cols).map(|_| rnd()).collect();
        let mut gbs = Vec::new();
        for _ in 0..reps {
            let Some(t) = g.time_matmul(&x, &w, 20) else {
                bail!("{dtype} [{rows}, {cols}] does not run on this GPU");
            };
            gbs.push((rows * row_bytes) as f64 * 20.0 / t.as_secs_f64() / 1e9);
        }
        gbs.sort_by(f64::total_cmp);
        let med = gbs[gbs.len() / 2];
        if a.output == Output::Md {
            println!(
                "  matmul {dtype} [{rows}, {cols}] x 1 token: {med:.0} GB/s of weights ({:.0}% of the read stream)",
                100.0 * med / read
            );
        }
        records.push(json!({"test": "gpu_matmul_stream", "type": dtype.to_string(), "rows": rows, "cols": cols, "bandwidth_gbs": med, "of_read": med / read}));
    }
    if a.output != Output::Md {
        for r in records {
            println!("{r}");
        }
    }
    Ok(())
}
