//! `config.json`: every architecture field is read from the file, never inferred from
//! tensor sizes. Fields that real DeepSeek configs of some generation omit get the value
//! that generation's reference code assumes (e.g. V2 has no `num_nextn_predict_layers`).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{LoadError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoringFunc {
    Sigmoid,
    Softmax,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopkMethod {
    /// V3: selection on scores + e_score_correction_bias; group score = sum of top-2.
    NoauxTc,
    /// V2-Lite: plain top-k over all experts.
    Greedy,
    /// V2: group score = max of the group.
    GroupLimitedGreedy,
}

/// YaRN parameters as `rope_scaling` carries them (`type` or `rope_type` = "yarn").
#[derive(Debug, Clone, PartialEq)]
pub struct YarnParams {
    pub factor: f64,
    pub original_max_position_embeddings: usize,
    pub beta_fast: f64,
    pub beta_slow: f64,
    pub mscale: Option<f64>,
    pub mscale_all_dim: Option<f64>,
    pub attention_factor: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    Yarn(YarnParams),
}

/// The official FP8 checkpoint format: e4m3 weights with one f32 `scale_inv` per block.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantization {
    pub block: [usize; 2],
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Dense MLP width (layers before `first_k_dense_replace`).
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub tie_word_embeddings: bool,
    // MLA
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    // DeepSeekMoE (n_routed_experts == 0: every layer is dense)
    pub n_routed_experts: usize,
    pub n_shared_experts: usize,
    pub moe_intermediate_size: usize,
    pub num_experts_per_tok: usize,
    pub n_group: usize,
    pub topk_group: usize,
    pub topk_method: TopkMethod,
    pub scoring_func: ScoringFunc,
    pub norm_topk_prob: bool,
    pub routed_scaling_factor: f64,
    pub first_k_dense_replace: usize,
    pub moe_layer_freq: usize,
    pub num_nextn_predict_layers: usize,
    pub quantization: Option<Quantization>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<ModelConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text, path)
    }

    /// Parse config JSON; `path` is only used to name the file in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<ModelConfig> {
        let json: Value = serde_json::from_str(text).map_err(|e| LoadError::BadField {
            path: path.to_path_buf(),
            field: "(file)".into(),
            reason: format!("not valid JSON: {e}"),
        })?;
        let obj = json.as_object().ok_or_else(|| LoadError::BadField {
            path: path.to_path_buf(),
            field: "(file)".into(),
            reason: "not a JSON object".into(),
        })?;
        let f = Fields {
            obj,
            path: path.to_path_buf(),
        };
        let cfg = f.parse()?;
        cfg.validate(&f)?;
        Ok(cfg)
    }

    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// Whether decoder layer `i` uses DeepSeekMoE (else a dense SwiGLU MLP).
    pub fn is_moe_layer(&self, i: usize) -> bool {
        self.n_routed_experts > 0
            && i >= self.first_k_dense_replace
            && i.is_multiple_of(self.moe_layer_freq.max(1))
    }

    /// Values cached per token and layer by MLA: the latent c_kv plus the shared roped k_pe.
    pub fn kv_values_per_token_per_layer(&self) -> usize {
        self.kv_lora_rank + self.qk_rope_head_dim
    }

    /// The softmax scale, including YaRN's mscale^2 correction when configured.
    pub fn softmax_scale(&self) -> f64 {
        let mut s = (self.qk_head_dim() as f64).powf(-0.5);
        if let Some(RopeScaling::Yarn(y)) = &self.rope_scaling
            && let Some(all) = y.mscale_all_dim
            && all != 0.0
        {
            let m = yarn_mscale(y.factor, all);
            s *= m * m;
        }
        s
    }

    fn validate(&self, f: &Fields) -> Result<()> {
        let bad = |field: &str, reason: String| Err(f.bad(field, reason));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("kv_lora_rank", self.kv_lora_rank),
            ("qk_rope_head_dim", self.qk_rope_head_dim),
            ("v_head_dim", self.v_head_dim),
        ] {
            if v == 0 {
                return bad(name, "must be positive".into());
            }
        }
        if !self.qk_rope_head_dim.is_multiple_of(2) {
            return bad(
                "qk_rope_head_dim",
                format!("{} is odd; RoPE rotates pairs", self.qk_rope_head_dim),
            );
        }
        if self.q_lora_rank == Some(0) {
            return bad("q_lora_rank", "must be positive or null".into());
        }
        if self.n_routed_experts > 0 {
            if self.moe_intermediate_size == 0 {
                return bad("moe_intermediate_size", "must be positive".into());
            }
            if self.num_experts_per_tok == 0 || self.num_experts_per_tok > self.n_routed_experts {
                return bad(
                    "num_experts_per_tok",
                    format!(
                        "{} is not in 1..={} (n_routed_experts)",
                        self.num_experts_per_tok, self.n_routed_experts
                    ),
                );
            }
            if self.n_group == 0 || !self.n_routed_experts.is_multiple_of(self.n_group) {
                return bad(
                    "n_group",
                    format!(
                        "{} does not divide n_routed_experts ({})",
                        self.n_group, self.n_routed_experts
                    ),
                );
            }
            if self.topk_group == 0 || self.topk_group > self.n_group {
                return bad(
                    "topk_group",
                    format!(
                        "{} is not in 1..={} (n_group)",
                        self.topk_group, self.n_group
                    ),
                );
            }
            let per_group = self.n_routed_experts / self.n_group;
            if self.topk_method != TopkMethod::Greedy
                && self.num_experts_per_tok > self.topk_group * per_group
            {
                return bad(
                    "num_experts_per_tok",
                    format!(
                        "{} exceeds the experts in the kept groups ({} groups x {per_group})",
                        self.num_experts_per_tok, self.topk_group
                    ),
                );
            }
            if self.topk_method == TopkMethod::NoauxTc && per_group < 2 {
                return bad(
                    "n_group",
                    "noaux_tc scores a group by its top-2 experts; each group needs at least 2"
                        .into(),
                );
            }
            if self.moe_layer_freq == 0 {
                return bad("moe_layer_freq", "must be positive".into());
            }
        }
        if let Some(RopeScaling::Yarn(y)) = &self.rope_scaling {
            if y.factor.is_nan() || y.factor <= 0.0 {
                return bad(
                    "rope_scaling.factor",
                    format!("{} must be positive", y.factor),
                );
            }
            if y.original_max_position_embeddings == 0 {
                return bad(
                    "rope_scaling.original_max_position_embeddings",
                    "must be positive".into(),
                );
            }
        }
        if self.rms_norm_eps.is_nan() || self.rms_norm_eps < 0.0 {
            return bad("rms_norm_eps", "must be non-negative".into());
        }
        if self.rope_theta.is_nan() || self.rope_theta <= 0.0 {
            return bad("rope_theta", "must be positive".into());
        }
        Ok(())
    }
}

/// YaRN's attention magnitude correction: 0.1 * m * ln(factor) + 1 (1 when factor <= 1).
pub fn yarn_mscale(factor: f64, m: f64) -> f64 {
    if factor <= 1.0 {
        1.0
    } else {
        0.1 * m * factor.ln() + 1.0
    }
}

struct Fields<'a> {
    obj: &'a Map<String, Value>,
    path: PathBuf,
}

impl Fields<'_> {
    fn bad(&self, field: &str, reason: String) -> LoadError {
        LoadError::BadField {
            path: self.path.clone(),
            field: field.to_string(),
            reason,
        }
    }

    fn missing(&self, field: &str) -> LoadError {
        LoadError::MissingField {
            path: self.path.clone(),
            field: field.to_string(),
        }
    }

    /// Present and non-null.
    fn value(&self, k: &str) -> Option<&Value> {
        self.obj.get(k).filter(|v| !v.is_null())
    }

    fn usize_of(&self, field: &str, v: &Value) -> Result<usize> {
        v.as_u64()
            .map(|x| x as usize)
            .ok_or_else(|| self.bad(field, format!("expected a non-negative integer, found {v}")))
    }

    fn req_usize(&self, k: &str) -> Result<usize> {
        let v = self.value(k).ok_or_else(|| self.missing(k))?;
        self.usize_of(k, v)
    }

    fn opt_usize(&self, k: &str) -> Result<Option<usize>> {
        self.value(k).map(|v| self.usize_of(k, v)).transpose()
    }

    /// The key must be present; its value may be null (e.g. `q_lora_rank`).
    fn req_nullable_usize(&self, k: &str) -> Result<Option<usize>> {
        if !self.obj.contains_key(k) {
            return Err(self.missing(k));
        }
        self.opt_usize(k)
    }

    fn f64_of(&self, field: &str, v: &Value) -> Result<f64> {
        v.as_f64()
            .ok_or_else(|| self.bad(field, format!("expected a number, found {v}")))
    }

    fn req_f64(&self, k: &str) -> Result<f64> {
        let v = self.value(k).ok_or_else(|| self.missing(k))?;
        self.f64_of(k, v)
    }

    fn opt_bool(&self, k: &str, default: bool) -> Result<bool> {
        match self.value(k) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.bad(k, format!("expected true or false, found {v}"))),
        }
    }

    fn req_bool(&self, k: &str) -> Result<bool> {
        let v = self.value(k).ok_or_else(|| self.missing(k))?;
        v.as_bool()
            .ok_or_else(|| self.bad(k, format!("expected true or false, found {v}")))
    }

    fn req_str(&self, k: &str) -> Result<&str> {
        let v = self.value(k).ok_or_else(|| self.missing(k))?;
        v.as_str()
            .ok_or_else(|| self.bad(k, format!("expected a string, found {v}")))
    }

    fn token_ids(&self, k: &str) -> Result<Vec<u32>> {
        match self.value(k) {
            None => Ok(vec![]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| self.usize_of(k, v).map(|x| x as u32))
                .collect(),
            Some(v) => Ok(vec![self.usize_of(k, v)? as u32]),
        }
    }

    fn parse(&self) -> Result<ModelConfig> {
        let model_type = self.req_str("model_type")?.to_string();
        if !matches!(
            model_type.as_str(),
            "deepseek_v3" | "deepseek_v2" | "kimi_k2"
        ) {
            return Err(self.bad(
                "model_type",
                format!(
                    "`{model_type}` is not of the DeepSeek-V3 family (deepseek_v3, deepseek_v2)"
                ),
            ));
        }
        if let Some(act) = self.value("hidden_act")
            && act.as_str() != Some("silu")
        {
            return Err(self.bad(
                "hidden_act",
                format!("{act} is unsupported (only \"silu\")"),
            ));
        }
        if self.opt_bool("attention_bias", false)? {
            return Err(self.bad(
                "attention_bias",
                "true is unsupported (DeepSeek models have no attention bias)".into(),
            ));
        }
        if self.opt_bool("mlp_bias", false)? {
            return Err(self.bad("mlp_bias", "true is unsupported".into()));
        }
        let n_routed_experts = self.opt_usize("n_routed_experts")?.unwrap_or(0);
        let moe = n_routed_experts > 0;
        // MoE fields are required only for models that have routed experts.
        let moe_usize = |k: &str| -> Result<usize> {
            if moe {
                self.req_usize(k)
            } else {
                Ok(self.opt_usize(k)?.unwrap_or(0))
            }
        };
        let topk_method = match (moe, self.value("topk_method").and_then(|v| v.as_str())) {
            (_, Some("noaux_tc")) => TopkMethod::NoauxTc,
            (_, Some("greedy")) => TopkMethod::Greedy,
            (_, Some("group_limited_greedy")) => TopkMethod::GroupLimitedGreedy,
            (false, None) => TopkMethod::Greedy,
            (true, None) => return Err(self.missing("topk_method")),
            (_, Some(other)) => {
                return Err(self.bad(
                    "topk_method",
                    format!("`{other}` is unsupported (noaux_tc, greedy, group_limited_greedy)"),
                ));
            }
        };
        let scoring_func = match (moe, self.value("scoring_func").and_then(|v| v.as_str())) {
            (_, Some("sigmoid")) => ScoringFunc::Sigmoid,
            (_, Some("softmax")) => ScoringFunc::Softmax,
            (false, None) => ScoringFunc::Softmax,
            (true, None) => return Err(self.missing("scoring_func")),
            (_, Some(other)) => {
                return Err(self.bad(
                    "scoring_func",
                    format!("`{other}` is unsupported (sigmoid, softmax)"),
                ));
            }
        };
        let rope_scaling = self.rope_scaling()?;
        let quantization = self.quantization()?;
        Ok(ModelConfig {
            model_type,
            vocab_size: self.req_usize("vocab_size")?,
            hidden_size: self.req_usize("hidden_size")?,
            intermediate_size: self.req_usize("intermediate_size")?,
            num_hidden_layers: self.req_usize("num_hidden_layers")?,
            num_attention_heads: self.req_usize("num_attention_heads")?,
            max_position_embeddings: self.req_usize("max_position_embeddings")?,
            rms_norm_eps: self.req_f64("rms_norm_eps")?,
            rope_theta: self.req_f64("rope_theta")?,
            rope_scaling,
            tie_word_embeddings: self.opt_bool("tie_word_embeddings", false)?,
            q_lora_rank: self.req_nullable_usize("q_lora_rank")?,
            kv_lora_rank: self.req_usize("kv_lora_rank")?,
            qk_nope_head_dim: self.req_usize("qk_nope_head_dim")?,
            qk_rope_head_dim: self.req_usize("qk_rope_head_dim")?,
            v_head_dim: self.req_usize("v_head_dim")?,
            n_routed_experts,
            n_shared_experts: self.opt_usize("n_shared_experts")?.unwrap_or(0),
            moe_intermediate_size: moe_usize("moe_intermediate_size")?,
            num_experts_per_tok: moe_usize("num_experts_per_tok")?,
            n_group: if moe {
                self.opt_usize("n_group")?.unwrap_or(1)
            } else {
                1
            },
            topk_group: if moe {
                self.opt_usize("topk_group")?.unwrap_or(1)
            } else {
                1
            },
            topk_method,
            scoring_func,
            norm_topk_prob: if moe {
                self.req_bool("norm_topk_prob")?
            } else {
                false
            },
            routed_scaling_factor: if moe {
                self.req_f64("routed_scaling_factor")?
            } else {
                1.0
            },
            first_k_dense_replace: moe_usize("first_k_dense_replace")?,
            moe_layer_freq: self.opt_usize("moe_layer_freq")?.unwrap_or(1),
            num_nextn_predict_layers: self.opt_usize("num_nextn_predict_layers")?.unwrap_or(0),
            quantization,
            bos_token_id: self.opt_usize("bos_token_id")?.map(|x| x as u32),
            eos_token_ids: self.token_ids("eos_token_id")?,
        })
    }

    fn rope_scaling(&self) -> Result<Option<RopeScaling>> {
        let Some(v) = self.value("rope_scaling") else {
            return Ok(None);
        };
        let o = v.as_object().ok_or_else(|| {
            self.bad(
                "rope_scaling",
                format!("expected an object or null, found {v}"),
            )
        })?;
        let kind = o
            .get("rope_type")
            .or_else(|| o.get("type"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| self.missing("rope_scaling.type"))?;
        if kind == "default" {
            return Ok(None);
        }
        if kind != "yarn" {
            return Err(self.bad(
                "rope_scaling.type",
                format!("`{kind}` is unsupported (only \"yarn\")"),
            ));
        }
        let num = |k: &str| -> Result<Option<f64>> {
            match o.get(k).filter(|v| !v.is_null()) {
                None => Ok(None),
                Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                    self.bad(
                        &format!("rope_scaling.{k}"),
                        format!("expected a number, found {v}"),
                    )
                }),
            }
        };
        let factor = num("factor")?.ok_or_else(|| self.missing("rope_scaling.factor"))?;
        // As in transformers: without it, max_position_embeddings is the pretraining length.
        let original = match num("original_max_position_embeddings")? {
            Some(x) if x >= 1.0 && x.fract() == 0.0 => x as usize,
            Some(x) => {
                return Err(self.bad(
                    "rope_scaling.original_max_position_embeddings",
                    format!("{x} is not a positive integer"),
                ));
            }
            None => self.req_usize("max_position_embeddings")?,
        };
        Ok(Some(RopeScaling::Yarn(YarnParams {
            factor,
            original_max_position_embeddings: original,
            // `or` like the reference: a 0 or missing beta takes the default.
            beta_fast: num("beta_fast")?.filter(|&b| b != 0.0).unwrap_or(32.0),
            beta_slow: num("beta_slow")?.filter(|&b| b != 0.0).unwrap_or(1.0),
            mscale: num("mscale")?,
            mscale_all_dim: num("mscale_all_dim")?,
            attention_factor: num("attention_factor")?,
        })))
    }

    fn quantization(&self) -> Result<Option<Quantization>> {
        let Some(v) = self.value("quantization_config") else {
            return Ok(None);
        };
        let method = v.get("quant_method").and_then(|m| m.as_str());
        if method != Some("fp8") {
            return Err(self.bad(
                "quantization_config.quant_method",
                format!(
                    "{} is unsupported (only \"fp8\" block-scaled)",
                    v.get("quant_method").unwrap_or(&Value::Null)
                ),
            ));
        }
        if let Some(fmt) = v.get("fmt").and_then(|m| m.as_str())
            && fmt != "e4m3"
        {
            return Err(self.bad(
                "quantization_config.fmt",
                format!("`{fmt}` is unsupported (only e4m3)"),
            ));
        }
        let block = match v.get("weight_block_size").filter(|b| !b.is_null()) {
            None => [128, 128],
            Some(b) => {
                let dims: Option<Vec<usize>> = b.as_array().map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_u64().map(|x| x as usize))
                        .collect()
                });
                match dims.as_deref() {
                    Some([r, c]) if *r > 0 && *c > 0 => [*r, *c],
                    _ => {
                        return Err(self.bad(
                            "quantization_config.weight_block_size",
                            format!("expected [rows, cols], found {b}"),
                        ));
                    }
                }
            }
        };
        Ok(Some(Quantization { block }))
    }
}
