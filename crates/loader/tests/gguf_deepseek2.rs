//! A Hugging Face checkpoint written as a llama.cpp `deepseek2` GGUF file and opened again.

use std::path::{Path, PathBuf};

use loader::gguf::{self, ExportOptions, GgufFile, GgufValue};
use loader::{Checkpoint, DType, LoadError};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden")
        .join(name)
}

/// A path named `name` in a directory of its own, removed with the directory when dropped
/// (a checkpoint mapped from the file stays readable).
struct Tmp {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl std::ops::Deref for Tmp {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Tmp {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

fn tmp(name: &str) -> Tmp {
    let dir = tempfile::Builder::new()
        .prefix("deeprust-gguf-")
        .tempdir()
        .unwrap();
    let path = dir.path().join(name);
    Tmp { _dir: dir, path }
}

fn export(
    src: &Checkpoint,
    opts: &ExportOptions,
    extra: &[(String, GgufValue)],
    name: &str,
) -> Checkpoint {
    let p = tmp(name);
    gguf::export_deepseek2_with(src, opts, extra, &p).unwrap();
    Checkpoint::open(&p).unwrap()
}

/// kv_b_proj's key half of head h, transposed ([kv_lora, nope]), and value half ([v, kv_lora]).
fn split_kv_b(c: &loader::ModelConfig, kv: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (h, r, nope, vd) = (
        c.num_attention_heads,
        c.kv_lora_rank,
        c.qk_nope_head_dim,
        c.v_head_dim,
    );
    let (mut k, mut v) = (Vec::new(), Vec::new());
    for hh in 0..h {
        let base = hh * (nope + vd);
        for j in 0..r {
            for i in 0..nope {
                k.push(kv[(base + i) * r + j]);
            }
        }
        v.extend_from_slice(&kv[(base + nope) * r..(base + nope + vd) * r]);
    }
    (k, v)
}

#[test]
fn bf16_export_round_trips_every_tensor_and_the_config() {
    let src = Checkpoint::open(&golden("v3_yarn_mtp")).unwrap();
    let mut opts = ExportOptions::new(DType::BF16);
    opts.include_mtp = true;
    let extra = vec![
        (
            "general.name".to_string(),
            GgufValue::String("tiny v3".into()),
        ),
        (
            "tokenizer.ggml.model".to_string(),
            GgufValue::String("gpt2".into()),
        ),
        (
            "tokenizer.chat_template".to_string(),
            GgufValue::String("{{ x }}".into()),
        ),
    ];
    let g = export(&src, &opts, &extra, "v3-bf16.gguf");
    assert_eq!(format!("{:?}", g.config), format!("{:?}", src.config));
    assert!(g.dir.ends_with("v3-bf16.gguf"));
    for t in src
        .tensors()
        .filter(|t| !t.name.ends_with("kv_b_proj.weight"))
    {
        let got = g
            .tensor(&t.name)
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        assert_eq!(got.shape, t.shape, "{}", t.name);
        if got.dtype == t.dtype {
            assert_eq!(got.bytes(), t.bytes(), "{}", t.name);
        } else {
            // norms, biases and the router are F32 in GGUF; the values are the same
            assert_eq!(got.dtype, DType::F32, "{}", t.name);
            assert_eq!(got.to_f32_vec(), t.to_f32_vec(), "{}", t.name);
        }
    }
    // the split halves of kv_b_proj are there too, 2-D
    let c = &src.config;
    for layer in 0..c.num_hidden_layers + c.num_nextn_predict_layers {
        let p = format!("model.layers.{layer}.self_attn");
        let kv = src
            .tensor(&format!("{p}.kv_b_proj.weight"))
            .unwrap()
            .to_f32_vec();
        let (k, v) = split_kv_b(c, &kv);
        let kb = g.tensor(&format!("{p}.k_b_proj.weight")).unwrap();
        assert_eq!(
            kb.shape,
            vec![c.num_attention_heads * c.kv_lora_rank, c.qk_nope_head_dim]
        );
        assert_eq!(kb.to_f32_vec(), k);
        let vb = g.tensor(&format!("{p}.v_b_proj.weight")).unwrap();
        assert_eq!(
            vb.shape,
            vec![c.num_attention_heads * c.v_head_dim, c.kv_lora_rank]
        );
        assert_eq!(vb.to_f32_vec(), v);
    }
    // tokenizer metadata is reachable for the tokenizer crate
    let file = g.gguf().unwrap();
    assert_eq!(file.get_str("tokenizer.chat_template"), Some("{{ x }}"));
    assert_eq!(file.get_u32("tokenizer.ggml.eos_token_id"), Some(1));
    assert_eq!(file.get_str("general.name"), Some("tiny v3"));
    assert!(
        g.gguf_metadata()
            .unwrap()
            .iter()
            .any(|(k, _)| k == "tokenizer.ggml.model")
    );
    // the file itself is laid out as llama.cpp's converter lays it out
    assert_eq!(file.architecture(), Some("deepseek2"));
    assert_eq!(file.get_u32("deepseek2.block_count"), Some(4));
    assert_eq!(file.get_u32("deepseek2.nextn_predict_layers"), Some(1));
    assert_eq!(
        file.get_u32("deepseek2.attention.key_length"),
        Some(32 + 16)
    );
    assert_eq!(file.get_u32("deepseek2.attention.key_length_mla"), Some(32));
    assert_eq!(
        file.get_u32("deepseek2.attention.value_length_mla"),
        Some(16)
    );
    assert_eq!(file.get_u32("deepseek2.attention.head_count_kv"), Some(1));
    assert_eq!(file.get_u32("deepseek2.expert_gating_func"), Some(2));
    assert_eq!(
        file.get_f32("deepseek2.rope.scaling.yarn_log_multiplier"),
        Some(0.1)
    );
    let exps = file.tensor_info("blk.1.ffn_gate_exps.weight").unwrap();
    assert_eq!(exps.ne, vec![64, 32, 16]); // [cols, rows, n_expert]
    assert_eq!(
        file.tensor_info("blk.0.attn_k_b.weight").unwrap().ne,
        vec![16, 32, 4]
    );
    assert_eq!(
        file.tensor_info("blk.0.attn_v_b.weight").unwrap().ne,
        vec![32, 16, 4]
    );
    assert!(file.tensor_info("blk.0.attn_kv_b.weight").is_none());
    assert!(file.tensor_info("blk.3.nextn.eh_proj.weight").is_some());
    assert!(file.tensor_info("blk.1.exp_probs_b.bias").is_some());
    assert_eq!(
        file.tensor_info("blk.0.attn_norm.weight")
            .unwrap()
            .ggml_type,
        0
    );
    // no attn_kv_b in the file, so no kv_b_proj; rebuilt from the halves it is byte-identical
    assert!(!g.contains("model.layers.0.self_attn.kv_b_proj.weight"));
    for layer in 0..4 {
        let p = format!("model.layers.{layer}.self_attn");
        let kv = gguf::rebuild_kv_b(
            c,
            "kv",
            g.tensor(&format!("{p}.k_b_proj.weight")).unwrap(),
            g.tensor(&format!("{p}.v_b_proj.weight")).unwrap(),
        )
        .unwrap();
        let want = src.tensor(&format!("{p}.kv_b_proj.weight")).unwrap();
        assert_eq!((kv.dtype, &kv.shape), (want.dtype, &want.shape));
        assert_eq!(kv.bytes(), want.bytes());
    }
}

#[test]
fn without_mtp_and_with_kv_b() {
    let src = Checkpoint::open(&golden("v3_yarn_mtp")).unwrap();
    let mut opts = ExportOptions::new(DType::F32);
    opts.also_kv_b = true;
    let g = export(&src, &opts, &[], "v3-f32.gguf");
    assert_eq!(g.config.num_nextn_predict_layers, 0);
    assert_eq!(g.config.num_hidden_layers, 3);
    assert!(!g.contains("model.layers.3.eh_proj.weight"));
    assert!(
        g.gguf()
            .unwrap()
            .tensor_info("blk.2.attn_kv_b.weight")
            .is_some()
    );
    for t in src
        .tensors()
        .filter(|t| !t.name.starts_with("model.layers.3."))
    {
        let got = g.tensor(&t.name).unwrap();
        assert_eq!(got.dtype, DType::F32, "{}", t.name);
        assert_eq!(got.to_f32_vec(), t.to_f32_vec(), "{}", t.name);
    }
}

#[test]
fn quantized_export_is_close_and_falls_back_where_rows_do_not_fit() {
    let src = Checkpoint::open(&golden("v3_yarn_mtp")).unwrap();
    let g = export(&src, &ExportOptions::new(DType::Q8_0), &[], "v3-q8.gguf");
    let file = g.gguf().unwrap();
    // rows of 64 (hidden) are whole Q8_0 blocks; rows of 48 (q_lora) and 16 (nope) are not
    assert_eq!(
        g.tensor("model.layers.0.self_attn.q_a_proj.weight")
            .unwrap()
            .dtype,
        DType::Q8_0
    );
    assert_eq!(
        g.tensor("model.layers.0.self_attn.q_b_proj.weight")
            .unwrap()
            .dtype,
        DType::F16
    );
    assert_eq!(
        g.tensor("model.layers.0.self_attn.k_b_proj.weight")
            .unwrap()
            .dtype,
        DType::F16
    );
    assert_eq!(
        g.tensor("model.layers.1.mlp.experts.5.up_proj.weight")
            .unwrap()
            .dtype,
        DType::Q8_0
    );
    assert_eq!(
        g.tensor("model.layers.1.mlp.gate.weight").unwrap().dtype,
        DType::F32
    );
    assert_eq!(
        file.tensor_info("blk.1.ffn_down_exps.weight")
            .unwrap()
            .ggml_type,
        8
    );
    // kv_b_proj is rebuilt from a Q8_0 half and an F16 one as F32
    let p = "model.layers.0.self_attn";
    let kv = gguf::rebuild_kv_b(
        &g.config,
        "kv",
        g.tensor(&format!("{p}.k_b_proj.weight")).unwrap(),
        g.tensor(&format!("{p}.v_b_proj.weight")).unwrap(),
    )
    .unwrap();
    assert_eq!(kv.dtype, DType::F32);
    let want = src
        .tensor(&format!("{p}.kv_b_proj.weight"))
        .unwrap()
        .to_f32_vec();
    assert!(
        kv.to_f32_vec()
            .iter()
            .zip(&want)
            .all(|(a, b)| (a - b).abs() < 0.01)
    );
    for t in src
        .tensors()
        .filter(|t| !t.name.starts_with("model.layers.3.") && !t.name.ends_with("kv_b_proj.weight"))
    {
        let got = g.tensor(&t.name).unwrap();
        let (a, b) = (t.to_f32_vec(), got.to_f32_vec());
        let amax = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (x, y) in a.iter().zip(&b) {
            // Q8_0: within half a step of the block scale (amax/127), plus f16 rounding
            assert!(
                (x - y).abs() <= amax / 127.0 * 0.51 + amax * 1e-3,
                "{}: {x} vs {y}",
                t.name
            );
        }
    }
    // each expert is a window into the stacked tensor, in order
    let stacked = file.tensor("blk.1.ffn_up_exps.weight").unwrap();
    let e5 = g
        .tensor("model.layers.1.mlp.experts.5.up_proj.weight")
        .unwrap();
    let slab = e5.bytes().len();
    assert_eq!(&stacked.bytes()[5 * slab..6 * slab], e5.bytes());
}

#[test]
fn weight_type_fallbacks() {
    use gguf::weight_dtype;
    assert_eq!(weight_dtype(DType::Q4K, 7168), DType::Q4K);
    assert_eq!(weight_dtype(DType::Q4K, 128), DType::Q8_0);
    assert_eq!(weight_dtype(DType::Q6K, 48), DType::F16);
    assert_eq!(weight_dtype(DType::Q8_0, 64), DType::Q8_0);
    assert_eq!(weight_dtype(DType::Q8_0, 16), DType::F16);
    assert_eq!(weight_dtype(DType::BF16, 3), DType::BF16);
}

#[test]
fn v2_lite_without_q_lora_and_softmax_greedy() {
    let src = Checkpoint::open(&golden("v2_lite_greedy")).unwrap();
    let g = export(&src, &ExportOptions::new(DType::F32), &[], "v2lite.gguf");
    assert_eq!(format!("{:?}", g.config), format!("{:?}", src.config));
    let file = g.gguf().unwrap();
    assert!(file.get("deepseek2.attention.q_lora_rank").is_none());
    assert_eq!(file.get_u32("deepseek2.expert_gating_func"), Some(1));
    for t in src
        .tensors()
        .filter(|t| !t.name.ends_with("kv_b_proj.weight"))
    {
        assert_eq!(
            g.tensor(&t.name).unwrap().to_f32_vec(),
            t.to_f32_vec(),
            "{}",
            t.name
        );
    }
}

#[test]
fn other_goldens_keep_their_config() {
    for name in ["v2_softmax_grouped", "v3_nolora_f16"] {
        let src = Checkpoint::open(&golden(name)).unwrap();
        let mut opts = ExportOptions::new(DType::F32);
        opts.include_mtp = true;
        let g = export(&src, &opts, &[], &format!("{name}.gguf"));
        assert_eq!(
            format!("{:?}", g.config),
            format!("{:?}", src.config),
            "{name}"
        );
        for t in src
            .tensors()
            .filter(|t| !t.name.ends_with("kv_b_proj.weight"))
        {
            assert_eq!(
                g.tensor(&t.name).unwrap().to_f32_vec(),
                t.to_f32_vec(),
                "{name} {}",
                t.name
            );
        }
    }
}

/// Rewrite `path`'s metadata through `edit` (tensors kept), for error tests.
fn with_metadata(path: &Path, out: &str, edit: impl Fn(&mut Vec<(String, GgufValue)>)) -> Tmp {
    let f = GgufFile::open(path).unwrap();
    let mut meta = f.metadata.clone();
    edit(&mut meta);
    let ts = f.tensors().unwrap();
    let outs: Vec<gguf::GgufTensorOut> = f
        .tensor_infos()
        .iter()
        .zip(&ts)
        .map(|(i, t)| gguf::GgufTensorOut {
            name: i.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            bytes: t.bytes(),
        })
        .collect();
    let p = tmp(out);
    gguf::write_gguf(&p, &meta, &outs).unwrap();
    p
}

#[test]
fn missing_or_bad_metadata_names_the_key_and_file() {
    let src = Checkpoint::open(&golden("v3_yarn_mtp")).unwrap();
    let base = tmp("base.gguf");
    gguf::export_deepseek2(&src, DType::BF16, &[], &base).unwrap();

    let p = with_metadata(&base, "no-blocks.gguf", |m| {
        m.retain(|(k, _)| k != "deepseek2.block_count")
    });
    match Checkpoint::open(&p) {
        Err(LoadError::MissingField { path, field }) => {
            assert_eq!(field, "deepseek2.block_count");
            assert!(path.ends_with("no-blocks.gguf"));
        }
        other => panic!("{:?}", other.map(|c| c.config)),
    }
    let p = with_metadata(&base, "llama.gguf", |m| {
        m[0].1 = GgufValue::String("llama".into())
    });
    let e = Checkpoint::open(&p).err().unwrap().to_string();
    assert!(
        e.contains("general.architecture") && e.contains("llama.gguf"),
        "{e}"
    );
    let p = with_metadata(&base, "gating.gguf", |m| {
        for (k, v) in m.iter_mut() {
            if k == "deepseek2.expert_gating_func" {
                *v = GgufValue::U32(7);
            }
        }
    });
    let e = Checkpoint::open(&p).err().unwrap().to_string();
    assert!(
        e.contains("deepseek2.expert_gating_func") && e.contains("7"),
        "{e}"
    );
    let p = with_metadata(&base, "heads.gguf", |m| {
        for (k, v) in m.iter_mut() {
            if k == "deepseek2.attention.head_count" {
                *v = GgufValue::String("four".into());
            }
        }
    });
    let e = Checkpoint::open(&p).err().unwrap().to_string();
    assert!(e.contains("deepseek2.attention.head_count"), "{e}");
    // vocab_size may be absent: the token list or the embedding rows give it
    let p = with_metadata(&base, "novocab.gguf", |m| {
        m.retain(|(k, _)| k != "deepseek2.vocab_size")
    });
    assert_eq!(Checkpoint::open(&p).unwrap().config.vocab_size, 320);
    // the MLA keys win over key_length / value_length
    let p = with_metadata(&base, "nomla.gguf", |m| {
        m.retain(|(k, _)| !k.ends_with("_mla"));
        for (k, v) in m.iter_mut() {
            if k == "deepseek2.attention.key_length" {
                *v = GgufValue::U32(32);
            }
            if k == "deepseek2.attention.value_length" {
                *v = GgufValue::U32(16);
            }
        }
    });
    let c = Checkpoint::open(&p).unwrap().config;
    assert_eq!((c.qk_nope_head_dim, c.v_head_dim), (16, 16));
}

#[test]
fn names_map_to_hugging_face() {
    use gguf::hf_name;
    assert_eq!(hf_name("token_embd.weight"), "model.embed_tokens.weight");
    assert_eq!(hf_name("output.weight"), "lm_head.weight");
    assert_eq!(
        hf_name("blk.12.attn_kv_a_mqa.weight"),
        "model.layers.12.self_attn.kv_a_proj_with_mqa.weight"
    );
    assert_eq!(
        hf_name("blk.3.exp_probs_b.bias"),
        "model.layers.3.mlp.gate.e_score_correction_bias"
    );
    assert_eq!(
        hf_name("blk.3.ffn_exp_probs_b.bias"),
        "model.layers.3.mlp.gate.e_score_correction_bias"
    );
    assert_eq!(
        hf_name("blk.0.ffn_up_shexp.weight"),
        "model.layers.0.mlp.shared_experts.up_proj.weight"
    );
    assert_eq!(
        hf_name("blk.61.nextn.shared_head_norm.weight"),
        "model.layers.61.shared_head.norm.weight"
    );
    assert_eq!(hf_name("rope_freqs.weight"), "rope_freqs.weight");
    assert_eq!(hf_name("blk.x.attn_norm.weight"), "blk.x.attn_norm.weight");
}

#[test]
fn a_directory_still_opens_and_a_non_gguf_file_is_an_error() {
    assert!(
        Checkpoint::open(&golden("v3_yarn_mtp"))
            .unwrap()
            .gguf()
            .is_none()
    );
    let p = tmp("not-a-model.gguf");
    std::fs::write(&p, b"hello world, not gguf at all").unwrap();
    let e = Checkpoint::open(&p).err().unwrap().to_string();
    assert!(e.contains("not-a-model.gguf") && e.contains("magic"), "{e}");
}

#[test]
fn fp8_checkpoint_exports_dequantised() {
    let src = Checkpoint::open(&golden("v3_fp8_sharded")).unwrap();
    let [br, bc] = src.config.quantization.as_ref().unwrap().block;
    let g = export(&src, &ExportOptions::new(DType::F32), &[], "fp8.gguf");
    assert!(g.names().all(|n| !n.ends_with("_scale_inv")));
    let mut checked = 0;
    for t in src.tensors().filter(|t| t.dtype == DType::F8E4M3) {
        if t.name.ends_with("kv_b_proj.weight") || !g.contains(&t.name) {
            continue;
        }
        let s = src.tensor(&format!("{}_scale_inv", t.name)).unwrap();
        let (cols, sc) = (t.shape[1], s.shape[1]);
        let (raw, scale, got) = (
            t.to_f32_vec(),
            s.to_f32_vec(),
            g.tensor(&t.name).unwrap().to_f32_vec(),
        );
        for (i, (&r, &y)) in raw.iter().zip(&got).enumerate() {
            let (row, col) = (i / cols, i % cols);
            assert_eq!(
                y,
                r * scale[(row / br) * sc + col / bc],
                "{} [{row}, {col}]",
                t.name
            );
        }
        checked += 1;
    }
    assert!(checked > 5, "only {checked} FP8 tensors checked");
}
