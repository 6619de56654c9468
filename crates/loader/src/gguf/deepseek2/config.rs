//! Reading: a `deepseek2` GGUF file's metadata as a Hugging Face `config.json`.

use serde_json::{Value, json};

use super::ARCH;
use crate::error::{LoadError, Result};
use crate::gguf::{GgufFile, GgufValue};

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
            let vals: Option<Vec<u64>> = a.values().map(|x| x.as_u64()).collect();
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
