//! llama.cpp's `deepseek2` architecture: a GGUF file as a Hugging Face checkpoint
//! (config and tensor names), and a Hugging Face checkpoint written as such a GGUF file.
//!
//! Names: llama.cpp's `blk.{i}.attn_q_a.weight` is `model.layers.{i}.self_attn.q_a_proj.weight`
//! and so on (see [`hf_name`]). Routed experts are stacked in one 3-D tensor per projection
//! (`ffn_gate_exps`, ne = [cols, rows, n_expert]); each expert becomes its own tensor, a window
//! into the stack (no copy). Current converters split `kv_b_proj` into `attn_k_b` (per head
//! the key half, transposed: [kv_lora_rank, qk_nope]) and `attn_v_b` (per head [v_head,
//! kv_lora_rank]); they map to `self_attn.k_b_proj.weight` ([n_head * kv_lora_rank, qk_nope])
//! and `self_attn.v_b_proj.weight` ([n_head * v_head, kv_lora_rank]), which the model reads as
//! they are; [`rebuild_kv_b`] gives `kv_b_proj` back for tools that want it.
//!
//! The MTP module, when a file has one, follows llama.cpp's NextN convention: `block_count`
//! counts it and `nextn_predict_layers` says how many of the last blocks are MTP layers.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{GgufFile, GgufTensorSpec, GgufValue, write_gguf_streaming};
use crate::checkpoint::Checkpoint;
use crate::config::{ModelConfig, RopeScaling, ScoringFunc};
use crate::dtype::DType;
use crate::error::{LoadError, Result};
use crate::quant;
use crate::storage::Tensor;

const ARCH: &str = "deepseek2";

/// A `deepseek2` GGUF file as a checkpoint: its config and its tensors under HF names.
pub(crate) struct GgufModel {
    pub file: GgufFile,
    pub config: ModelConfig,
    pub tensors: BTreeMap<String, Tensor>,
    /// HF name -> why it cannot be read (an unsupported ggml type).
    pub unsupported: BTreeMap<String, String>,
}

/// f32 metadata as the decimal it was written from (1e-6f32 -> 1e-6, not 9.99999997e-7).
fn f32_to_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

struct Meta<'a> {
    g: &'a GgufFile,
}

impl Meta<'_> {
    fn key(k: &str) -> String {
        format!("{ARCH}.{k}")
    }

    fn missing(&self, k: &str) -> LoadError {
        LoadError::MissingField {
            path: self.g.path.clone(),
            field: Self::key(k),
        }
    }

    fn bad(&self, k: &str, reason: String) -> LoadError {
        LoadError::BadField {
            path: self.g.path.clone(),
            field: Self::key(k),
            reason,
        }
    }

    /// A non-negative integer; a per-layer array is accepted when all its values agree.
    fn opt_u(&self, k: &str) -> Result<Option<u64>> {
        let Some(v) = self.g.get(&Self::key(k)) else {
            return Ok(None);
        };
        if let Some(a) = v.as_array() {
            let vals: Option<Vec<u64>> = a.iter().map(|x| x.as_u64()).collect();
            return match vals.as_deref() {
                Some([first, rest @ ..]) if rest.iter().all(|x| x == first) => Ok(Some(*first)),
                _ => Err(self.bad(k, format!("expected one non-negative integer, found {v:?}"))),
            };
        }
        v.as_u64()
            .map(Some)
            .ok_or_else(|| self.bad(k, format!("expected a non-negative integer, found {v:?}")))
    }

    fn req_u(&self, k: &str) -> Result<u64> {
        self.opt_u(k)?.ok_or_else(|| self.missing(k))
    }

    fn opt_f(&self, k: &str) -> Result<Option<f64>> {
        match self.g.get(&Self::key(k)) {
            None => Ok(None),
            Some(GgufValue::F32(x)) => Ok(Some(f32_to_f64(*x))),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.bad(k, format!("expected a number, found {v:?}"))),
        }
    }

    fn req_f(&self, k: &str) -> Result<f64> {
        self.opt_f(k)?.ok_or_else(|| self.missing(k))
    }

    fn opt_bool(&self, k: &str) -> Result<Option<bool>> {
        match self.g.get(&Self::key(k)) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.bad(k, format!("expected a bool, found {v:?}"))),
        }
    }

    fn opt_str(&self, k: &str) -> Result<Option<&str>> {
        match self.g.get(&Self::key(k)) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.bad(k, format!("expected a string, found {v:?}"))),
        }
    }
}

/// The Hugging Face `config.json` that a `deepseek2` GGUF file's metadata describes.
pub fn config_json(g: &GgufFile) -> Result<Value> {
    match g.architecture() {
        Some(ARCH) => {}
        other => {
            return Err(LoadError::BadField {
                path: g.path.clone(),
                field: "general.architecture".into(),
                reason: match other {
                    Some(a) => format!("`{a}` is not supported (only `{ARCH}`)"),
                    None => "missing (expected `deepseek2`)".into(),
                },
            });
        }
    }
    let m = Meta { g };
    let block_count = m.req_u("block_count")?;
    let nextn = m.opt_u("nextn_predict_layers")?.unwrap_or(0);
    if nextn >= block_count {
        return Err(m.bad(
            "nextn_predict_layers",
            format!("{nextn} leaves no decoder layers of block_count {block_count}"),
        ));
    }
    let vocab = match m.opt_u("vocab_size")? {
        Some(v) => v,
        None => match g.array_len("tokenizer.ggml.tokens") {
            Some(n) => n as u64,
            None => match g.tensor_info("token_embd.weight") {
                Some(t) if t.ne.len() == 2 => t.ne[1],
                _ => return Err(m.missing("vocab_size")),
            },
        },
    };
    let rope_dim = m.req_u("rope.dimension_count")?;
    let (k_len, v_len) = match (
        m.opt_u("attention.key_length_mla")?,
        m.opt_u("attention.value_length_mla")?,
    ) {
        (Some(k), Some(v)) => (k, v),
        _ => (
            m.req_u("attention.key_length")?,
            m.req_u("attention.value_length")?,
        ),
    };
    if k_len <= rope_dim {
        return Err(m.bad(
            "attention.key_length",
            format!("{k_len} leaves no non-rotary part beside rope.dimension_count {rope_dim}"),
        ));
    }
    let n_expert = m.opt_u("expert_count")?.unwrap_or(0);
    let moe = n_expert > 0;
    let scoring = match m.opt_u("expert_gating_func")? {
        None | Some(1) => "softmax", // llama.cpp's default for V2 files without the key
        Some(2) => "sigmoid",
        Some(x) => {
            return Err(m.bad(
                "expert_gating_func",
                format!("{x} is not supported (1 = softmax, 2 = sigmoid)"),
            ));
        }
    };
    let n_group = m.opt_u("expert_group_count")?.unwrap_or(1);
    let topk_group = m.opt_u("expert_group_used_count")?.unwrap_or(1);
    let topk_method = if scoring == "sigmoid" {
        "noaux_tc"
    } else if n_group > 1 {
        "group_limited_greedy"
    } else {
        "greedy"
    };
    let context = m.req_u("context_length")?;
    let rope_scaling = match m.opt_str("rope.scaling.type")? {
        None | Some("none") => Value::Null,
        Some("yarn") => {
            let factor = m.req_f("rope.scaling.factor")?;
            let orig = m
                .opt_u("rope.scaling.original_context_length")?
                .unwrap_or(context);
            let mut o = json!({
                "type": "yarn",
                "factor": factor,
                "original_max_position_embeddings": orig,
                "beta_fast": 32,
                "beta_slow": 1,
            });
            if let Some(mul) = m.opt_f("rope.scaling.yarn_log_multiplier")? {
                let ms = f32_to_f64((mul / 0.1) as f32);
                o["mscale"] = json!(ms);
                o["mscale_all_dim"] = json!(ms);
            }
            o
        }
        Some(other) => {
            return Err(m.bad(
                "rope.scaling.type",
                format!("`{other}` is not supported (only yarn)"),
            ));
        }
    };
    let q_lora = m.opt_u("attention.q_lora_rank")?.filter(|&r| r > 0);
    let mut cfg = json!({
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": if scoring == "sigmoid" { "deepseek_v3" } else { "deepseek_v2" },
        "vocab_size": vocab,
        "hidden_size": m.req_u("embedding_length")?,
        "intermediate_size": m.req_u("feed_forward_length")?,
        "num_hidden_layers": block_count - nextn,
        "num_attention_heads": m.req_u("attention.head_count")?,
        "max_position_embeddings": context,
        "rms_norm_eps": m.req_f("attention.layer_norm_rms_epsilon")?,
        "rope_theta": m.opt_f("rope.freq_base")?.unwrap_or(10000.0),
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": g.tensor_info("output.weight").is_none(),
        "q_lora_rank": q_lora,
        "kv_lora_rank": m.req_u("attention.kv_lora_rank")?,
        "qk_nope_head_dim": k_len - rope_dim,
        "qk_rope_head_dim": rope_dim,
        "v_head_dim": v_len,
        "num_nextn_predict_layers": nextn,
        "hidden_act": "silu",
    });
    if moe {
        let o = cfg.as_object_mut().unwrap();
        o.insert("n_routed_experts".into(), json!(n_expert));
        o.insert(
            "n_shared_experts".into(),
            json!(m.opt_u("expert_shared_count")?.unwrap_or(0)),
        );
        o.insert(
            "moe_intermediate_size".into(),
            json!(m.req_u("expert_feed_forward_length")?),
        );
        o.insert(
            "num_experts_per_tok".into(),
            json!(m.req_u("expert_used_count")?),
        );
        o.insert("n_group".into(), json!(n_group));
        o.insert("topk_group".into(), json!(topk_group));
        o.insert("topk_method".into(), json!(topk_method));
        o.insert("scoring_func".into(), json!(scoring));
        o.insert(
            "norm_topk_prob".into(),
            json!(m.opt_bool("expert_weights_norm")?.unwrap_or(false)),
        );
        o.insert(
            "routed_scaling_factor".into(),
            json!(m.opt_f("expert_weights_scale")?.unwrap_or(1.0)),
        );
        o.insert(
            "first_k_dense_replace".into(),
            json!(m.opt_u("leading_dense_block_count")?.unwrap_or(0)),
        );
        o.insert("moe_layer_freq".into(), json!(1));
    }
    if let Some(b) = g.get_u32("tokenizer.ggml.bos_token_id") {
        cfg["bos_token_id"] = json!(b);
    }
    if let Some(e) = g.get_u32("tokenizer.ggml.eos_token_id") {
        cfg["eos_token_id"] = json!(e);
    }
    Ok(cfg)
}

/// The HF name of a llama.cpp tensor name (unknown names are kept as they are).
pub fn hf_name(name: &str) -> String {
    match name {
        "token_embd.weight" => return "model.embed_tokens.weight".into(),
        "output_norm.weight" => return "model.norm.weight".into(),
        "output.weight" => return "lm_head.weight".into(),
        _ => {}
    }
    let Some((layer, suffix)) = split_block(name) else {
        return name.to_string();
    };
    let hf = match suffix {
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_q_a.weight" => "self_attn.q_a_proj.weight",
        "attn_q_a_norm.weight" => "self_attn.q_a_layernorm.weight",
        "attn_q_b.weight" => "self_attn.q_b_proj.weight",
        "attn_kv_a_mqa.weight" => "self_attn.kv_a_proj_with_mqa.weight",
        "attn_kv_a_norm.weight" => "self_attn.kv_a_layernorm.weight",
        "attn_kv_b.weight" => "self_attn.kv_b_proj.weight",
        "attn_k_b.weight" => "self_attn.k_b_proj.weight",
        "attn_v_b.weight" => "self_attn.v_b_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        "ffn_gate_inp.weight" => "mlp.gate.weight",
        "exp_probs_b.bias" | "ffn_exp_probs_b.bias" => "mlp.gate.e_score_correction_bias",
        "ffn_gate_shexp.weight" => "mlp.shared_experts.gate_proj.weight",
        "ffn_up_shexp.weight" => "mlp.shared_experts.up_proj.weight",
        "ffn_down_shexp.weight" => "mlp.shared_experts.down_proj.weight",
        "nextn.eh_proj.weight" => "eh_proj.weight",
        "nextn.enorm.weight" => "enorm.weight",
        "nextn.hnorm.weight" => "hnorm.weight",
        "nextn.embed_tokens.weight" => "embed_tokens.weight",
        "nextn.shared_head_norm.weight" => "shared_head.norm.weight",
        "nextn.shared_head_head.weight" => "shared_head.head.weight",
        _ => return name.to_string(),
    };
    format!("model.layers.{layer}.{hf}")
}

fn split_block(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let (i, suffix) = rest.split_once('.')?;
    Some((i.parse().ok()?, suffix))
}

/// `ffn_{gate,up,down}_exps.weight` -> the HF projection name.
fn expert_proj(suffix: &str) -> Option<&'static str> {
    Some(match suffix {
        "ffn_gate_exps.weight" => "gate_proj",
        "ffn_up_exps.weight" => "up_proj",
        "ffn_down_exps.weight" => "down_proj",
        _ => return None,
    })
}

/// Open a `deepseek2` GGUF file as a checkpoint.
pub(crate) fn open_deepseek2(path: &Path) -> Result<GgufModel> {
    let file = GgufFile::open(path)?;
    let cfg = config_json(&file)?;
    let config = ModelConfig::from_json_str(&cfg.to_string(), path)?;
    let mut tensors = BTreeMap::new();
    let mut unsupported = BTreeMap::new();
    for info in file.tensor_infos() {
        let t = match file.tensor(&info.name) {
            Ok(t) => t,
            Err(e) => {
                let reason = match e {
                    LoadError::BadTensor { reason, .. } => reason,
                    other => other.to_string(),
                };
                unsupported.insert(hf_name(&info.name), reason);
                continue;
            }
        };
        let (be, bb) = t.dtype.block();
        if let Some((layer, suffix)) = split_block(&info.name)
            && let Some(proj) = expert_proj(suffix)
        {
            if t.shape.len() != 3 {
                return Err(LoadError::BadTensor {
                    path: path.to_path_buf(),
                    tensor: info.name.clone(),
                    reason: format!("stacked experts must be 3-D, found {:?}", t.shape),
                });
            }
            let (n, rows, cols) = (t.shape[0], t.shape[1], t.shape[2]);
            let slab = rows * cols / be * bb;
            for e in 0..n {
                let name = format!("model.layers.{layer}.mlp.experts.{e}.{proj}.weight");
                let w = t.window(name.clone(), t.dtype, vec![rows, cols], e * slab, slab);
                tensors.insert(name, w);
            }
            continue;
        }
        let name = hf_name(&info.name);
        let shape = if t.shape.len() > 2 {
            let cols = *t.shape.last().unwrap();
            vec![t.numel() / cols.max(1), cols]
        } else {
            t.shape.clone()
        };
        let len = t.bytes().len();
        tensors.insert(name.clone(), t.window(name, t.dtype, shape, 0, len));
    }
    Ok(GgufModel {
        file,
        config,
        tensors,
        unsupported,
    })
}

/// `kv_b_proj` ([n_head * (nope + v), kv_lora]) from the split halves `k_b_proj` and
/// `v_b_proj` (2-D, as a GGUF checkpoint maps them): per head, the key rows are `k_b[h]`
/// transposed, then the value rows `v_b[h]`. In their dtype when both are F32, F16 or BF16
/// (an exact copy), else dequantised to F32. The model reads the split form directly; this
/// is for tools that want the Hugging Face layout back.
pub fn rebuild_kv_b(
    c: &ModelConfig,
    name: &str,
    k: &Tensor,
    v: &Tensor,
) -> std::result::Result<Tensor, String> {
    let (h, r, nope, vd) = (
        c.num_attention_heads,
        c.kv_lora_rank,
        c.qk_nope_head_dim,
        c.v_head_dim,
    );
    if k.shape != [h * r, nope] || v.shape != [h * vd, r] {
        return Err(format!(
            "cannot rebuild from attn_k_b {:?} and attn_v_b {:?} (expected [{}, {nope}] and [{}, {r}])",
            k.shape,
            v.shape,
            h * r,
            h * vd
        ));
    }
    let same = k.dtype == v.dtype && matches!(k.dtype, DType::F32 | DType::F16 | DType::BF16);
    let dtype = if same { k.dtype } else { DType::F32 };
    let es = dtype.size();
    let rows = h * (nope + vd);
    let mut out = vec![0u8; rows * r * es];
    if same {
        let (kb, vb) = (k.bytes(), v.bytes());
        for hh in 0..h {
            let base = hh * (nope + vd);
            for i in 0..nope {
                for j in 0..r {
                    let src = ((hh * r + j) * nope + i) * es;
                    let dst = ((base + i) * r + j) * es;
                    out[dst..dst + es].copy_from_slice(&kb[src..src + es]);
                }
            }
            let src = hh * vd * r * es;
            let dst = (base + nope) * r * es;
            out[dst..dst + vd * r * es].copy_from_slice(&vb[src..src + vd * r * es]);
        }
    } else {
        let (kf, vf) = (k.to_f32_vec(), v.to_f32_vec());
        let mut put = |row: usize, col: usize, x: f32| {
            let at = (row * r + col) * 4;
            out[at..at + 4].copy_from_slice(&x.to_le_bytes());
        };
        for hh in 0..h {
            let base = hh * (nope + vd);
            for i in 0..nope {
                for j in 0..r {
                    put(base + i, j, kf[(hh * r + j) * nope + i]);
                }
            }
            for i in 0..vd {
                for j in 0..r {
                    put(base + nope + i, j, vf[(hh * vd + i) * r + j]);
                }
            }
        }
    }
    Tensor::from_bytes(name, dtype, vec![rows, r], out)
}

// ---------------------------------------------------------------- export

/// A per-tensor weight type: given a weight's GGUF name (`blk.3.ffn_down.weight`) and its
/// row-major shape as written (stacked experts are 3-D), the type it should be, or `None` for
/// [`ExportOptions::weight_type`]. The fallback for rows that are not whole blocks (see
/// [`weight_dtype`]) still applies to what it returns.
pub type TensorTypeFn = Arc<dyn Fn(&str, &[usize]) -> Option<DType> + Send + Sync>;

/// Told as each tensor starts to be written: its index, the tensor count, its GGUF name.
pub type ProgressFn = Arc<dyn Fn(usize, usize, &str) + Send + Sync>;

/// How [`export_deepseek2_with`] writes a checkpoint.
#[derive(Clone)]
pub struct ExportOptions {
    /// The type of 2-D weight matrices. Block types apply to matrices whose rows are whole
    /// blocks; others fall back as llama.cpp does: Q4_K / Q6_K to Q8_0 (rows a multiple of
    /// 32), else F16. Norms, biases and the router stay F32.
    pub weight_type: DType,
    /// Write `attn_kv_b` as well as `attn_k_b` / `attn_v_b`. Current llama.cpp refuses a file
    /// with both (it expects exactly the tensors it creates); this reader takes either.
    /// Off by default: the split form is what current llama.cpp loads and the model reads.
    pub also_kv_b: bool,
    /// Write the MTP layers (NextN convention). llama.cpp's `deepseek2` does not load them.
    pub include_mtp: bool,
    /// Per-tensor types (mixes such as llama.cpp's Q4_K_M); `None`: `weight_type` for all.
    pub tensor_type: Option<TensorTypeFn>,
    /// Progress while writing; `None`: silent.
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for ExportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportOptions")
            .field("weight_type", &self.weight_type)
            .field("also_kv_b", &self.also_kv_b)
            .field("include_mtp", &self.include_mtp)
            .field("tensor_type", &self.tensor_type.as_ref().map(|_| "fn"))
            .field("progress", &self.progress.as_ref().map(|_| "fn"))
            .finish()
    }
}

impl ExportOptions {
    pub fn new(weight_type: DType) -> ExportOptions {
        ExportOptions {
            weight_type,
            also_kv_b: false,
            include_mtp: false,
            tensor_type: None,
            progress: None,
        }
    }
}

/// Write `ckpt` as a llama.cpp `deepseek2` GGUF file with 2-D weights in `weight_type`
/// (see [`ExportOptions`]); `extra_metadata` (tokenizer.ggml.*, general.name, ...) is added
/// and wins over a key this function would write.
pub fn export_deepseek2(
    ckpt: &Checkpoint,
    weight_type: DType,
    extra_metadata: &[(String, GgufValue)],
    out_path: &Path,
) -> Result<()> {
    export_deepseek2_with(
        ckpt,
        &ExportOptions::new(weight_type),
        extra_metadata,
        out_path,
    )
}

/// Where an exported tensor's values come from.
enum Src {
    /// An HF tensor, written as stored or converted.
    Plain(String),
    /// `n` experts' `proj` of layer `layer`, stacked.
    Experts {
        layer: usize,
        proj: &'static str,
        n: usize,
    },
    /// The key half of `kv_b_proj`, per head transposed: [n_head, kv_lora, nope].
    KB(String),
    /// The value half of `kv_b_proj`: [n_head, v, kv_lora].
    VB(String),
}

fn u32v(x: usize) -> GgufValue {
    GgufValue::U32(x as u32)
}

fn metadata(c: &ModelConfig, split: bool, n_mtp: usize) -> Vec<(String, GgufValue)> {
    let k = |s: &str| format!("{ARCH}.{s}");
    let mut m: Vec<(String, GgufValue)> = vec![
        (
            "general.architecture".into(),
            GgufValue::String(ARCH.into()),
        ),
        ("general.quantization_version".into(), GgufValue::U32(2)),
        (k("context_length"), u32v(c.max_position_embeddings)),
        (k("embedding_length"), u32v(c.hidden_size)),
        (k("block_count"), u32v(c.num_hidden_layers + n_mtp)),
        (k("feed_forward_length"), u32v(c.intermediate_size)),
        (k("attention.head_count"), u32v(c.num_attention_heads)),
        (
            k("attention.head_count_kv"),
            u32v(if split { 1 } else { c.num_attention_heads }),
        ),
        (k("rope.freq_base"), GgufValue::F32(c.rope_theta as f32)),
        (
            k("attention.layer_norm_rms_epsilon"),
            GgufValue::F32(c.rms_norm_eps as f32),
        ),
        (k("vocab_size"), u32v(c.vocab_size)),
        (k("attention.kv_lora_rank"), u32v(c.kv_lora_rank)),
        (k("rope.dimension_count"), u32v(c.qk_rope_head_dim)),
    ];
    if let Some(q) = c.q_lora_rank {
        m.push((k("attention.q_lora_rank"), u32v(q)));
    }
    if split {
        m.push((
            k("attention.key_length"),
            u32v(c.kv_lora_rank + c.qk_rope_head_dim),
        ));
        m.push((k("attention.value_length"), u32v(c.kv_lora_rank)));
        m.push((k("attention.key_length_mla"), u32v(c.qk_head_dim())));
        m.push((k("attention.value_length_mla"), u32v(c.v_head_dim)));
    } else {
        m.push((k("attention.key_length"), u32v(c.qk_head_dim())));
        m.push((k("attention.value_length"), u32v(c.v_head_dim)));
    }
    if c.n_routed_experts > 0 {
        m.extend([
            (
                k("leading_dense_block_count"),
                u32v(c.first_k_dense_replace),
            ),
            (k("expert_count"), u32v(c.n_routed_experts)),
            (k("expert_used_count"), u32v(c.num_experts_per_tok)),
            (k("expert_shared_count"), u32v(c.n_shared_experts)),
            (
                k("expert_feed_forward_length"),
                u32v(c.moe_intermediate_size),
            ),
            (
                k("expert_weights_scale"),
                GgufValue::F32(c.routed_scaling_factor as f32),
            ),
            (k("expert_weights_norm"), GgufValue::Bool(c.norm_topk_prob)),
            (
                k("expert_gating_func"),
                GgufValue::U32(match c.scoring_func {
                    ScoringFunc::Softmax => 1,
                    ScoringFunc::Sigmoid => 2,
                }),
            ),
            (k("expert_group_count"), u32v(c.n_group)),
            (k("expert_group_used_count"), u32v(c.topk_group)),
        ]);
    } else {
        // llama.cpp reads these for every deepseek2 file
        m.extend([
            (k("leading_dense_block_count"), u32v(c.num_hidden_layers)),
            (k("expert_feed_forward_length"), u32v(c.intermediate_size)),
            (k("expert_shared_count"), u32v(0)),
            (k("expert_weights_scale"), GgufValue::F32(1.0)),
        ]);
    }
    if let Some(RopeScaling::Yarn(y)) = &c.rope_scaling {
        m.push((k("rope.scaling.type"), GgufValue::String("yarn".into())));
        m.push((k("rope.scaling.factor"), GgufValue::F32(y.factor as f32)));
        m.push((
            k("rope.scaling.original_context_length"),
            u32v(y.original_max_position_embeddings),
        ));
        if let Some(all) = y.mscale_all_dim {
            m.push((
                k("rope.scaling.yarn_log_multiplier"),
                GgufValue::F32((0.1 * all) as f32),
            ));
        }
    }
    if n_mtp > 0 {
        m.push((k("nextn_predict_layers"), u32v(n_mtp)));
    }
    if let Some(b) = c.bos_token_id {
        m.push(("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(b)));
    }
    if let Some(&e) = c.eos_token_ids.first() {
        m.push(("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(e)));
    }
    m
}

/// The type a 2-D weight with rows of `cols` values is written in.
pub fn weight_dtype(want: DType, cols: usize) -> DType {
    let fits = |d: DType| cols.is_multiple_of(d.block().0);
    match want {
        DType::Q4K | DType::Q6K if fits(want) => want,
        DType::Q4K | DType::Q6K | DType::Q8_0 if fits(DType::Q8_0) => DType::Q8_0,
        DType::Q4K | DType::Q6K | DType::Q8_0 => DType::F16,
        other => other,
    }
}

/// [`export_deepseek2`] with every option.
pub fn export_deepseek2_with(
    ckpt: &Checkpoint,
    opts: &ExportOptions,
    extra_metadata: &[(String, GgufValue)],
    out_path: &Path,
) -> Result<()> {
    let c = &ckpt.config;
    let bad = |field: &str, reason: String| LoadError::BadField {
        path: out_path.to_path_buf(),
        field: field.into(),
        reason,
    };
    let check = |field: &str, t: DType| {
        if matches!(
            t,
            DType::F32 | DType::F16 | DType::BF16 | DType::Q8_0 | DType::Q4K | DType::Q6K
        ) {
            Ok(t)
        } else {
            Err(bad(
                field,
                format!("{t} is not a GGUF weight type here (F32, F16, BF16, Q8_0, Q4_K, Q6_K)"),
            ))
        }
    };
    check("weight_type", opts.weight_type)?;
    if c.n_routed_experts > 0 && c.moe_layer_freq != 1 {
        return Err(bad(
            "moe_layer_freq",
            format!(
                "{} cannot be expressed in a deepseek2 GGUF (only 1)",
                c.moe_layer_freq
            ),
        ));
    }
    let split = true;
    let n_mtp = if opts.include_mtp {
        c.num_nextn_predict_layers
    } else {
        0
    };
    let mut meta = metadata(c, split, n_mtp);
    meta.retain(|(k, _)| !extra_metadata.iter().any(|(e, _)| e == k));
    meta.extend(extra_metadata.iter().cloned());

    let mut specs: Vec<GgufTensorSpec> = Vec::new();
    let mut srcs: Vec<Src> = Vec::new();
    let shape_of = |name: &str| -> Result<Vec<usize>> { Ok(ckpt.tensor(name)?.shape.clone()) };
    let mut push = |gguf: String, dtype: DType, shape: Vec<usize>, src: Src| {
        specs.push(GgufTensorSpec {
            name: gguf,
            dtype,
            shape,
        });
        srcs.push(src);
    };
    let wt = opts.weight_type;
    let matrix = |name: &str, shape: &[usize]| -> Result<DType> {
        let want = match opts.tensor_type.as_ref().and_then(|f| f(name, shape)) {
            Some(t) => check(&format!("tensor_type({name})"), t)?,
            None => wt,
        };
        Ok(weight_dtype(want, *shape.last().unwrap_or(&1)))
    };
    let plain = |push: &mut dyn FnMut(String, DType, Vec<usize>, Src),
                 gguf: String,
                 hf: String,
                 keep_f32: bool|
     -> Result<()> {
        let shape = shape_of(&hf)?;
        let dtype = if keep_f32 || shape.len() < 2 {
            DType::F32
        } else {
            matrix(&gguf, &shape)?
        };
        push(gguf, dtype, shape, Src::Plain(hf));
        Ok(())
    };
    plain(
        &mut push,
        "token_embd.weight".into(),
        "model.embed_tokens.weight".into(),
        false,
    )?;
    plain(
        &mut push,
        "output_norm.weight".into(),
        "model.norm.weight".into(),
        true,
    )?;
    if !c.tie_word_embeddings && ckpt.contains("lm_head.weight") {
        plain(
            &mut push,
            "output.weight".into(),
            "lm_head.weight".into(),
            false,
        )?;
    }
    for layer in 0..c.num_hidden_layers + n_mtp {
        let hf = |s: &str| format!("model.layers.{layer}.{s}");
        let gg = |s: &str| format!("blk.{layer}.{s}");
        let mut simple = vec![
            ("attn_norm.weight", "input_layernorm.weight", true),
            ("ffn_norm.weight", "post_attention_layernorm.weight", true),
            (
                "attn_kv_a_mqa.weight",
                "self_attn.kv_a_proj_with_mqa.weight",
                false,
            ),
            (
                "attn_kv_a_norm.weight",
                "self_attn.kv_a_layernorm.weight",
                true,
            ),
            ("attn_output.weight", "self_attn.o_proj.weight", false),
        ];
        if c.q_lora_rank.is_some() {
            simple.extend([
                ("attn_q_a.weight", "self_attn.q_a_proj.weight", false),
                (
                    "attn_q_a_norm.weight",
                    "self_attn.q_a_layernorm.weight",
                    true,
                ),
                ("attn_q_b.weight", "self_attn.q_b_proj.weight", false),
            ]);
        } else {
            simple.push(("attn_q.weight", "self_attn.q_proj.weight", false));
        }
        if c.is_moe_layer(layer) {
            simple.extend([
                ("ffn_gate_inp.weight", "mlp.gate.weight", true),
                (
                    "ffn_gate_shexp.weight",
                    "mlp.shared_experts.gate_proj.weight",
                    false,
                ),
                (
                    "ffn_up_shexp.weight",
                    "mlp.shared_experts.up_proj.weight",
                    false,
                ),
                (
                    "ffn_down_shexp.weight",
                    "mlp.shared_experts.down_proj.weight",
                    false,
                ),
            ]);
            if ckpt.contains(&hf("mlp.gate.e_score_correction_bias")) {
                simple.push(("exp_probs_b.bias", "mlp.gate.e_score_correction_bias", true));
            }
        } else {
            simple.extend([
                ("ffn_gate.weight", "mlp.gate_proj.weight", false),
                ("ffn_up.weight", "mlp.up_proj.weight", false),
                ("ffn_down.weight", "mlp.down_proj.weight", false),
            ]);
        }
        if layer >= c.num_hidden_layers {
            simple.extend([
                ("nextn.eh_proj.weight", "eh_proj.weight", false),
                ("nextn.enorm.weight", "enorm.weight", true),
                ("nextn.hnorm.weight", "hnorm.weight", true),
                (
                    "nextn.shared_head_norm.weight",
                    "shared_head.norm.weight",
                    true,
                ),
            ]);
            for (g, h) in [
                ("nextn.embed_tokens.weight", "embed_tokens.weight"),
                ("nextn.shared_head_head.weight", "shared_head.head.weight"),
            ] {
                if ckpt.contains(&hf(h)) {
                    plain(&mut push, gg(g), hf(h), false)?;
                }
            }
        }
        for (g, h, keep) in simple {
            if (g.starts_with("ffn_") && g.contains("shexp")) && c.n_shared_experts == 0 {
                continue;
            }
            plain(&mut push, gg(g), hf(h), keep)?;
        }
        if c.is_moe_layer(layer) {
            for (g, proj) in [
                ("ffn_gate_exps.weight", "gate_proj"),
                ("ffn_up_exps.weight", "up_proj"),
                ("ffn_down_exps.weight", "down_proj"),
            ] {
                let s = shape_of(&hf(&format!("mlp.experts.0.{proj}.weight")))?;
                let shape = vec![c.n_routed_experts, s[0], s[1]];
                push(
                    gg(g),
                    matrix(&gg(g), &shape)?,
                    shape,
                    Src::Experts {
                        layer,
                        proj,
                        n: c.n_routed_experts,
                    },
                );
            }
        }
        let kv = hf("self_attn.kv_b_proj.weight");
        let (h, r, nope, vd) = (
            c.num_attention_heads,
            c.kv_lora_rank,
            c.qk_nope_head_dim,
            c.v_head_dim,
        );
        let kv_shape = shape_of(&kv)?;
        if kv_shape != [h * (nope + vd), r] {
            return Err(LoadError::WrongShape {
                path: ckpt.file_of(&kv),
                tensor: kv,
                expected: vec![h * (nope + vd), r],
                found: kv_shape,
            });
        }
        if opts.also_kv_b {
            plain(&mut push, gg("attn_kv_b.weight"), kv.clone(), false)?;
        }
        let kb = vec![h, r, nope];
        let kb_dtype = matrix(&gg("attn_k_b.weight"), &kb)?;
        push(gg("attn_k_b.weight"), kb_dtype, kb, Src::KB(kv.clone()));
        let vb = vec![h, vd, r];
        let vb_dtype = matrix(&gg("attn_v_b.weight"), &vb)?;
        push(gg("attn_v_b.weight"), vb_dtype, vb, Src::VB(kv));
    }

    // FP8 checkpoints: weights are e4m3 with one f32 `scale_inv` per block
    let fp8_block = c.quantization.as_ref().map(|q| q.block);
    let rows_f32 = |name: &str| -> std::io::Result<Vec<f32>> {
        let t = ckpt.tensor(name).map_err(std::io::Error::other)?;
        let mut v = t.to_f32_vec();
        if t.dtype == DType::F8E4M3
            && let Some([br, bc]) = fp8_block
            && t.shape.len() == 2
        {
            let s = ckpt
                .tensor(&format!("{name}_scale_inv"))
                .map_err(std::io::Error::other)?
                .to_f32_vec();
            let (rows, cols) = (t.shape[0], t.shape[1]);
            let sc = cols.div_ceil(bc);
            for i in 0..rows {
                for j in 0..cols {
                    v[i * cols + j] *= s[(i / br) * sc + j / bc];
                }
            }
        }
        Ok(v)
    };
    let encode = |w: &mut dyn Write, dtype: DType, x: &[f32]| -> std::io::Result<()> {
        let mut buf = Vec::new();
        quant::quantize_row(dtype, x, &mut buf).map_err(std::io::Error::other)?;
        w.write_all(&buf)
    };
    let specs_ref = &specs;
    write_gguf_streaming(out_path, &meta, specs_ref, |i, w| {
        let spec = &specs_ref[i];
        if let Some(p) = &opts.progress {
            p(i, specs_ref.len(), &spec.name);
        }
        match &srcs[i] {
            Src::Plain(name) => {
                let t = ckpt.tensor(name).map_err(std::io::Error::other)?;
                if t.dtype == spec.dtype {
                    w.write_all(t.bytes())
                } else {
                    encode(w, spec.dtype, &rows_f32(name)?)
                }
            }
            Src::Experts { layer, proj, n } => {
                for e in 0..*n {
                    let name = format!("model.layers.{layer}.mlp.experts.{e}.{proj}.weight");
                    let t = ckpt.tensor(&name).map_err(std::io::Error::other)?;
                    if t.shape != spec.shape[1..] {
                        return Err(std::io::Error::other(format!(
                            "{name} has shape {:?}, expert 0 has {:?}",
                            t.shape,
                            &spec.shape[1..]
                        )));
                    }
                    if t.dtype == spec.dtype {
                        w.write_all(t.bytes())?;
                    } else {
                        encode(w, spec.dtype, &rows_f32(&name)?)?;
                    }
                }
                Ok(())
            }
            Src::KB(kv) | Src::VB(kv) => {
                let all = rows_f32(kv)?;
                let (h, r, nope, vd) = (
                    c.num_attention_heads,
                    c.kv_lora_rank,
                    c.qk_nope_head_dim,
                    c.v_head_dim,
                );
                let mut out = Vec::with_capacity(h * r * nope.max(vd));
                for hh in 0..h {
                    let base = hh * (nope + vd);
                    if matches!(srcs[i], Src::KB(_)) {
                        for j in 0..r {
                            for k in 0..nope {
                                out.push(all[(base + k) * r + j]);
                            }
                        }
                    } else {
                        out.extend_from_slice(&all[(base + nope) * r..(base + nope + vd) * r]);
                    }
                }
                encode(w, spec.dtype, &out)
            }
        }
    })
}

#[cfg(test)]
mod export_tests {
    use super::*;
    use std::sync::Mutex;

    fn golden() -> Checkpoint {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/v3_yarn_mtp");
        Checkpoint::open(&dir).unwrap()
    }

    /// The callback picks per tensor (after which rows that are not whole blocks fall back),
    /// a type GGUF cannot hold is refused naming the tensor, and progress sees every tensor.
    #[test]
    fn per_tensor_types_and_progress() {
        let ckpt = golden();
        let dir = std::env::temp_dir().join(format!("deeprust-ds2-cb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("m.gguf");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut opts = ExportOptions::new(DType::Q8_0);
        opts.tensor_type = Some(Arc::new(|name: &str, shape: &[usize]| match name {
            "output.weight" => Some(DType::F32),
            "blk.1.ffn_gate_exps.weight" if shape.len() == 3 => Some(DType::F16),
            // rows of 64 values: Q4_K falls back to Q8_0
            "blk.1.ffn_up_exps.weight" => Some(DType::Q4K),
            "blk.2.attn_kv_a_mqa.weight" => Some(DType::BF16),
            _ => None,
        }));
        let s2 = seen.clone();
        opts.progress = Some(Arc::new(move |i: usize, n: usize, name: &str| {
            s2.lock().unwrap().push((i, n, name.to_string()))
        }));
        export_deepseek2_with(&ckpt, &opts, &[], &out).unwrap();
        let g = GgufFile::open(&out).unwrap();
        let ty = |n: &str| g.tensor_info(n).unwrap().type_name();
        assert_eq!(ty("output.weight"), "F32");
        assert_eq!(ty("blk.2.attn_kv_a_mqa.weight"), "BF16");
        assert_eq!(ty("blk.1.attn_kv_a_mqa.weight"), "Q8_0");
        assert_eq!(ty("blk.1.ffn_gate_exps.weight"), "F16");
        assert_eq!(ty("blk.1.ffn_up_exps.weight"), "Q8_0");
        assert_eq!(ty("blk.2.ffn_gate_exps.weight"), "Q8_0");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), g.tensor_infos().len());
        assert!(
            seen.iter()
                .enumerate()
                .all(|(k, (i, n, _))| *i == k && *n == seen.len())
        );
        assert_eq!(seen[0].2, g.tensor_infos()[0].name);

        opts.tensor_type = Some(Arc::new(|name: &str, _: &[usize]| {
            (name == "blk.0.attn_output.weight").then_some(DType::I32)
        }));
        opts.progress = None;
        let e = export_deepseek2_with(&ckpt, &opts, &[], &out)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tensor_type(blk.0.attn_output.weight)") && e.contains("I32"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
