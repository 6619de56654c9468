//! Writing: a Hugging Face checkpoint as a llama.cpp `deepseek2` GGUF file.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::metadata::metadata;
use crate::checkpoint::Checkpoint;
use crate::dtype::DType;
use crate::error::{LoadError, Result};
use crate::gguf::{GgufTensorSpec, GgufValue, write_gguf_streaming};
use crate::quant;

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
