//! Tensor names: llama.cpp's to Hugging Face's, the per-expert windows into the stacked
//! experts, and `kv_b_proj` rebuilt from its split halves.

use std::collections::BTreeMap;
use std::path::Path;

use super::config_json;
use crate::config::ModelConfig;
use crate::dtype::DType;
use crate::error::{LoadError, Result};
use crate::gguf::GgufFile;
use crate::storage::Tensor;

/// A `deepseek2` GGUF file as a checkpoint: its config and its tensors under HF names.
pub(crate) struct GgufModel {
    pub file: GgufFile,
    pub config: ModelConfig,
    pub tensors: BTreeMap<String, Tensor>,
    /// HF name -> why it cannot be read (an unsupported ggml type).
    pub unsupported: BTreeMap<String, String>,
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
pub(crate) fn open_deepseek2(path: &Path, residency: crate::Residency) -> Result<GgufModel> {
    let file = GgufFile::open_with(path, residency)?;
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
