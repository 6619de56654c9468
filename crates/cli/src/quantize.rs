//! `deeprust quantize`: a Hugging Face checkpoint written as a llama.cpp `deepseek2` GGUF file,
//! weights in one type or llama.cpp's Q4_K_M mix, with the tokenizer in its metadata.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use loader::gguf::{ExportOptions, GgufFile, GgufValue, export_deepseek2_with};
use loader::{Checkpoint, DType};
use tokenizer::GgufVocab;

use crate::gguf_meta::vocab_metadata;

/// The file types `--type` offers, named as llama-quantize names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FileType {
    /// Everything F32.
    #[value(name = "f32")]
    F32,
    #[value(name = "f16")]
    F16,
    #[value(name = "bf16")]
    Bf16,
    /// 8-bit blocks of 32.
    #[value(name = "q8_0")]
    Q8_0,
    /// 6-bit k-quants (rows of 256).
    #[value(name = "q6_k")]
    Q6K,
    /// 4-bit k-quants for every weight (llama.cpp's Q4_K_S).
    #[value(name = "q4_k")]
    Q4K,
    /// Q4_K with Q6_K for the output matrix and for attn_v_b / ffn_down in a third of the
    /// layers (llama.cpp's Q4_K_M).
    #[value(name = "q4_k_m")]
    Q4KM,
}

impl FileType {
    /// The type of most 2-D weights.
    pub fn weight_type(self) -> DType {
        match self {
            FileType::F32 => DType::F32,
            FileType::F16 => DType::F16,
            FileType::Bf16 => DType::BF16,
            FileType::Q8_0 => DType::Q8_0,
            FileType::Q6K => DType::Q6K,
            FileType::Q4K | FileType::Q4KM => DType::Q4K,
        }
    }

    /// llama.cpp's `llama_ftype`, written as `general.file_type`.
    pub fn llama_ftype(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q8_0 => 7,
            FileType::Q4K => 14,
            FileType::Q4KM => 15,
            FileType::Q6K => 18,
            FileType::Bf16 => 32,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FileType::F32 => "F32",
            FileType::F16 => "F16",
            FileType::Bf16 => "BF16",
            FileType::Q8_0 => "Q8_0",
            FileType::Q6K => "Q6_K",
            FileType::Q4K => "Q4_K_S",
            FileType::Q4KM => "Q4_K_M",
        }
    }
}

#[derive(Args)]
pub struct QuantizeArgs {
    /// The Hugging Face checkpoint directory to convert (config.json + *.safetensors; bf16,
    /// f16, f32 or FP8 with block scales).
    #[arg(long)]
    pub model: PathBuf,
    /// Weight type of the file.
    #[arg(long = "type", value_name = "TYPE")]
    pub file_type: FileType,
    /// The GGUF file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Tokenizer directory whose tokenizer goes into the file; default: the model directory.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// `general.name`; default: the model directory's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Also write the multi-token-prediction layers (llama.cpp's deepseek2 does not load them).
    #[arg(long)]
    pub mtp: bool,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third
/// layer between get more bits in its mixes.
pub fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The Q4_K_M choice for one weight: Q6_K for the output matrix (the embedding when it is
/// tied) and, in the layers [`use_more_bits`] picks, for `attn_v_b` and the down projections;
/// `None` (the file's Q4_K) for the rest.
pub fn q4_k_m_type(name: &str, n_layers: usize, tied: bool) -> Option<DType> {
    if name == "output.weight" || (tied && name == "token_embd.weight") {
        return Some(DType::Q6K);
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let more = matches!(
        suffix,
        "attn_v_b.weight"
            | "attn_v.weight"
            | "ffn_down.weight"
            | "ffn_down_exps.weight"
            | "ffn_down_shexp.weight"
    ) && use_more_bits(layer, n_layers);
    more.then_some(DType::Q6K)
}

pub fn run(a: &QuantizeArgs) -> Result<()> {
    let start = Instant::now();
    check_model_dir(&a.model)?;
    if a.out.is_dir() {
        bail!("--out {} is a directory; give a file name", a.out.display());
    }
    if a.out.exists() && !a.force {
        bail!(
            "--out {} exists; pass --force to replace it",
            a.out.display()
        );
    }
    if let Some(parent) = a.out.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        bail!(
            "--out {}: the directory {} does not exist",
            a.out.display(),
            parent.display()
        );
    }

    eprintln!("reading   {}", a.model.display());
    let ckpt = Checkpoint::open(&a.model)?;
    let c = &ckpt.config;
    eprintln!(
        "          {} ({} layers, hidden {}, vocab {}), {} of weights",
        c.model_type,
        c.num_hidden_layers,
        c.hidden_size,
        c.vocab_size,
        bytes(ckpt.weight_bytes())
    );

    let mut meta: Vec<(String, GgufValue)> = Vec::new();
    let name = a.name.clone().unwrap_or_else(|| {
        std::fs::canonicalize(&a.model)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into())
    });
    meta.push(("general.name".into(), GgufValue::String(name)));
    meta.push((
        "general.file_type".into(),
        GgufValue::U32(a.file_type.llama_ftype()),
    ));
    meta.push(("general.quantization_version".into(), GgufValue::U32(2)));

    let tok_dir = a.tokenizer.as_deref().unwrap_or(&a.model);
    if a.tokenizer.is_some() || tok_dir.join("tokenizer.json").is_file() {
        let v = GgufVocab::from_hf_dir(tok_dir, Some(c.vocab_size))
            .with_context(|| format!("the tokenizer in {}", tok_dir.display()))?;
        let used = v.token_types.iter().filter(|&&t| t != 5).count();
        eprintln!(
            "tokenizer {} tokens ({} padding to the model's {}), {} merges, pre-tokenizer {}{}",
            used,
            v.tokens.len() - used,
            v.tokens.len(),
            v.merges.len(),
            v.pre.as_deref().unwrap_or("?"),
            if v.chat_template.is_some() {
                ", chat template"
            } else {
                ""
            }
        );
        meta.extend(vocab_metadata(&v));
    } else {
        eprintln!(
            "warning: no tokenizer.json in {}: the file gets no tokenizer (llama.cpp needs one; pass --tokenizer DIR)",
            a.model.display()
        );
    }

    let mut opts = ExportOptions::new(a.file_type.weight_type());
    opts.include_mtp = a.mtp;
    if a.file_type == FileType::Q4KM {
        let (n, tied) = (c.num_hidden_layers, c.tie_word_embeddings);
        opts.tensor_type = Some(Arc::new(move |name: &str, _shape: &[usize]| {
            q4_k_m_type(name, n, tied)
        }));
    }
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "writing   [{bar:40}] {pos}/{len} tensors {elapsed} {msg}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    opts.progress = Some(Arc::new(move |i: usize, n: usize, name: &str| {
        b.set_length(n as u64);
        b.set_position(i as u64);
        b.set_message(name.to_string());
    }));

    // write beside --out and rename at the end, so that a failure leaves no partial file
    let tmp = partial_path(&a.out);
    eprintln!(
        "writing   {} as {} (weights {})",
        a.out.display(),
        a.file_type.name(),
        a.file_type.weight_type()
    );
    let written = export_deepseek2_with(&ckpt, &opts, &meta, &tmp);
    bar.finish_and_clear();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).context(format!("writing {}", a.out.display()));
    }
    std::fs::rename(&tmp, &a.out).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("renaming {} to {}", tmp.display(), a.out.display())
    })?;

    let g = GgufFile::open(&a.out)?;
    let mut types: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for t in g.tensor_infos() {
        let e = types.entry(t.type_name()).or_default();
        e.0 += 1;
        e.1 += t.nbytes.unwrap_or(0);
    }
    let size = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "wrote     {} tensors, {} in {:.1} s",
        g.tensor_infos().len(),
        bytes(size),
        start.elapsed().as_secs_f64()
    );
    for (t, (n, b)) in &types {
        eprintln!("          {t:<6} {n:>5} tensors {:>12}", bytes(*b));
    }
    Ok(())
}

/// `--model` must be a Hugging Face checkpoint directory.
fn check_model_dir(p: &Path) -> Result<()> {
    if !p.exists() {
        bail!("--model {} does not exist", p.display());
    }
    if p.is_file() {
        bail!(
            "--model {} is a file; quantize reads a Hugging Face checkpoint directory (config.json + *.safetensors){}",
            p.display(),
            if crate::common::is_gguf_file(p) {
                ", not a GGUF file"
            } else {
                ""
            }
        );
    }
    if !p.join("config.json").is_file() {
        bail!(
            "--model {} has no config.json: not a Hugging Face checkpoint directory",
            p.display()
        );
    }
    Ok(())
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial-{}", std::process::id()));
    out.with_file_name(name)
}

fn bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's layers for 61 (V3) and the small models here.
    #[test]
    fn more_bits_follow_llama_cpp() {
        let picked = |n: usize| (0..n).filter(|&i| use_more_bits(i, n)).collect::<Vec<_>>();
        assert_eq!(picked(3), [2]);
        assert_eq!(picked(4), [2, 3]);
        assert_eq!(picked(8), [0, 3, 6, 7]);
        let v3 = picked(61);
        assert_eq!(&v3[..9], [0, 1, 2, 3, 4, 5, 6, 9, 12]);
        assert!(v3.ends_with(&[48, 51, 53, 54, 55, 56, 57, 58, 59, 60]));
        assert_eq!(v3.len(), 7 + 15 + 8);
    }

    #[test]
    fn q4_k_m_mix() {
        assert_eq!(q4_k_m_type("output.weight", 4, false), Some(DType::Q6K));
        assert_eq!(q4_k_m_type("token_embd.weight", 4, false), None);
        assert_eq!(q4_k_m_type("token_embd.weight", 4, true), Some(DType::Q6K));
        assert_eq!(
            q4_k_m_type("blk.2.ffn_down_exps.weight", 4, false),
            Some(DType::Q6K)
        );
        assert_eq!(
            q4_k_m_type("blk.3.attn_v_b.weight", 4, false),
            Some(DType::Q6K)
        );
        assert_eq!(q4_k_m_type("blk.1.ffn_down.weight", 4, false), None);
        assert_eq!(q4_k_m_type("blk.2.ffn_up_exps.weight", 4, false), None);
        assert_eq!(q4_k_m_type("blk.3.attn_k_b.weight", 4, false), None);
    }
}
