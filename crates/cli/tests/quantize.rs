//! `deeprust quantize` and `deeprust kl`, end to end: a Hugging Face checkpoint written as a
//! GGUF file in every type runs (logits, tokenizer, generation) as the original does, within
//! each type's error, and `kl` measures that error.

mod common;
use common::*;

use std::path::Path;

use loader::SafetensorsFile;
use loader::gguf::{GgufFile, GgufValue};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn quantize(model: &Path, ty: &str, out: &Path) {
    ok(&deeprust(&[
        "quantize",
        "--model",
        s(model),
        "--type",
        ty,
        "--out",
        s(out),
    ]));
}

fn logits(model: &Path, ids: &str, dir: &Path) -> Vec<f32> {
    let out = dir.join("logits.safetensors");
    ok(&deeprust(&[
        "logits",
        "--model",
        s(model),
        "--token-ids",
        ids,
        "--out",
        s(&out),
    ]));
    let f = SafetensorsFile::open(&out).unwrap();
    f.tensor("logits").unwrap().to_f32_vec()
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

const TEXT: &str = "Hello world, the 123 cats <｜User｜>sat on a mat.\n";

/// Every type: the file is llama.cpp's deepseek2 with its file type and tokenizer; logits
/// equal the checkpoint's for f32 and bf16 (the golden weights are bf16) and are close for
/// the block types; text tokenizes and greedy generation starts as from the directory.
#[test]
fn golden_model_in_every_type() {
    let hf = golden("v3_yarn_mtp");
    let g = SafetensorsFile::open(&hf.join("goldens.safetensors")).unwrap();
    let ids: String = g
        .tensor("prompt.1.ids")
        .unwrap()
        .to_i64_vec()
        .unwrap()
        .iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let tmp = tempfile::tempdir().unwrap();
    let want = logits(&hf, &ids, tmp.path());
    let tokenize = |model: &Path| {
        json(&ok(&deeprust(&[
            "tokenize",
            "--model",
            s(model),
            "--text",
            TEXT,
            "--add-special-tokens",
            "--json",
        ])))
    };
    let generate = |model: &Path| {
        json(&ok(&deeprust(&[
            "generate",
            "--model",
            s(model),
            "--prompt",
            TEXT,
            "--temperature",
            "0",
            "--max-tokens",
            "6",
            "--ignore-eos",
            "--json",
        ])))
    };
    let hf_tokens = tokenize(&hf);
    let hf_gen = generate(&hf);
    assert_eq!(hf_tokens["ids"][0], 0, "BOS first");

    for (ty, ftype, bound) in [
        ("f32", 0, 1e-5),
        ("bf16", 32, 1e-5),
        ("f16", 1, 1e-2),
        // weights and (in the int8 products) activations both at 8 bits
        ("q8_0", 7, 3e-2),
        ("q6_k", 18, 5e-2),
        ("q4_k", 14, 5e-2),
        ("q4_k_m", 15, 5e-2),
    ] {
        let out = tmp.path().join(format!("{ty}.gguf"));
        quantize(&hf, ty, &out);
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(f.architecture(), Some("deepseek2"));
        assert_eq!(f.get_u32("general.file_type"), Some(ftype), "{ty}");
        assert_eq!(f.get_u32("general.quantization_version"), Some(2));
        assert_eq!(f.get_str("general.name"), Some("v3_yarn_mtp"));
        assert_eq!(f.get_str("tokenizer.ggml.model"), Some("gpt2"));
        assert_eq!(f.get_str("tokenizer.ggml.pre"), Some("deepseek-v3"));
        assert_eq!(f.array_len("tokenizer.ggml.tokens"), Some(320));
        assert_eq!(f.get_u32("tokenizer.ggml.bos_token_id"), Some(0));
        assert_eq!(f.get_u32("tokenizer.ggml.eos_token_id"), Some(1));
        assert_eq!(f.get_bool("tokenizer.ggml.add_bos_token"), Some(true));
        assert!(f.get_str("tokenizer.chat_template").is_some());
        assert!(matches!(
            f.get("tokenizer.ggml.token_type"),
            Some(GgufValue::Array(a)) if a.elem() == loader::gguf::GgufType::I32
        ));

        let got = logits(&out, &ids, tmp.path());
        let err = rel_l2(&got, &want);
        assert!(err <= bound, "{ty}: relative L2 {err} > {bound}");
        if matches!(ty, "q8_0" | "q6_k" | "q4_k" | "q4_k_m") {
            assert!(err > 0.0, "{ty}: quantized logits equal the original's");
        }
        assert_eq!(tokenize(&out), hf_tokens, "{ty}: tokenization");
        let gen_out = generate(&out);
        assert_eq!(gen_out["prompt_tokens"], hf_gen["prompt_tokens"], "{ty}");
        if matches!(ty, "f32" | "bf16") {
            assert_eq!(gen_out["token_ids"], hf_gen["token_ids"], "{ty}");
            assert_eq!(gen_out["text"], hf_gen["text"], "{ty}");
        }
    }
}

/// Bad inputs fail cleanly, naming the problem, and leave no file behind.
#[test]
fn quantize_refuses_bad_inputs() {
    let hf = golden("v3_yarn_mtp");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.gguf");
    let missing = tmp.path().join("no-such-dir");
    fails(
        &deeprust(&[
            "quantize",
            "--model",
            s(&missing),
            "--type",
            "q8_0",
            "--out",
            s(&out),
        ]),
        "does not exist",
    );
    fails(
        &deeprust(&[
            "quantize",
            "--model",
            s(tmp.path()),
            "--type",
            "q8_0",
            "--out",
            s(&out),
        ]),
        "no config.json",
    );
    fails(
        &deeprust(&[
            "quantize",
            "--model",
            s(&hf),
            "--type",
            "q5_k",
            "--out",
            s(&out),
        ]),
        "q5_k",
    );
    fails(
        &deeprust(&["quantize", "--type", "q8_0", "--out", s(&out)]),
        "--model",
    );
    assert!(!out.exists());
    quantize(&hf, "q8_0", &out);
    let before = std::fs::metadata(&out).unwrap().len();
    fails(
        &deeprust(&[
            "quantize",
            "--model",
            s(&hf),
            "--type",
            "f32",
            "--out",
            s(&out),
        ]),
        "--force",
    );
    assert_eq!(std::fs::metadata(&out).unwrap().len(), before, "kept");
    ok(&deeprust(&[
        "quantize",
        "--model",
        s(&hf),
        "--type",
        "f32",
        "--out",
        s(&out),
        "--force",
    ]));
    assert!(std::fs::metadata(&out).unwrap().len() > before, "replaced");
    // a GGUF is not a checkpoint directory to quantize
    fails(
        &deeprust(&[
            "quantize",
            "--model",
            s(&out),
            "--type",
            "q8_0",
            "--out",
            s(&tmp.path().join("x.gguf")),
        ]),
        "not a GGUF file",
    );
    // a tokenizer GGUF cannot express is refused, naming it
    let odd = tmp.path().join("odd");
    std::fs::create_dir(&odd).unwrap();
    let mut tj: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("tokenizer.json")).unwrap()).unwrap();
    tj["pre_tokenizer"] = serde_json::json!({"type": "Whitespace"});
    std::fs::write(odd.join("tokenizer.json"), tj.to_string()).unwrap();
    let out2 = tmp.path().join("odd.gguf");
    fails(
        &deeprust(&[
            "quantize",
            "--model",
            s(&hf),
            "--tokenizer",
            s(&odd),
            "--type",
            "q8_0",
            "--out",
            s(&out2),
        ]),
        "Whitespace",
    );
    assert!(!out2.exists());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A GGUF without tokenizer metadata runs from token ids; text needs a tokenizer, and the
/// error says so; --tokenizer supplies one.
#[test]
fn gguf_without_a_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let bare = tmp.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    let hf = golden("v3_yarn_mtp");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(hf.join(f), bare.join(f)).unwrap();
    }
    let out = tmp.path().join("bare.gguf");
    let q = deeprust(&[
        "quantize",
        "--model",
        s(&bare),
        "--type",
        "bf16",
        "--out",
        s(&out),
    ]);
    ok(&q);
    assert!(String::from_utf8_lossy(&q.stderr).contains("no tokenizer"));
    assert!(
        GgufFile::open(&out)
            .unwrap()
            .get("tokenizer.ggml.tokens")
            .is_none()
    );
    let want = logits(&hf, "0,5,17,3", tmp.path());
    assert_eq!(logits(&out, "0,5,17,3", tmp.path()), want);
    fails(
        &deeprust(&[
            "generate",
            "--model",
            s(&out),
            "--prompt",
            "hi",
            "--max-tokens",
            "2",
        ]),
        "no tokenizer metadata",
    );
    fails(
        &deeprust(&["tokenize", "--model", s(&out), "--text", "hi"]),
        "no tokenizer metadata",
    );
    let j = json(&ok(&deeprust(&[
        "generate",
        "--model",
        s(&out),
        "--tokenizer",
        s(&hf),
        "--prompt",
        "hi",
        "--max-tokens",
        "2",
        "--json",
        "--temperature",
        "0",
    ])));
    let from_dir = json(&ok(&deeprust(&[
        "generate",
        "--model",
        s(&hf),
        "--prompt",
        "hi",
        "--max-tokens",
        "2",
        "--json",
        "--temperature",
        "0",
    ])));
    assert_eq!(j["token_ids"], from_dir["token_ids"]);
    assert_eq!(j["prompt_tokens"], from_dir["prompt_tokens"]);
    // the tokenizer of another GGUF file
    let with_tok = tmp.path().join("with.gguf");
    quantize(&hf, "bf16", &with_tok);
    let j2 = json(&ok(&deeprust(&[
        "generate",
        "--model",
        s(&out),
        "--tokenizer",
        s(&with_tok),
        "--prompt",
        "hi",
        "--max-tokens",
        "2",
        "--json",
        "--temperature",
        "0",
    ])));
    assert_eq!(j2["token_ids"], j["token_ids"]);
}

fn kl(base: &Path, model: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["kl", "--base", s(base), "--model", s(model), "--json"];
    args.extend_from_slice(extra);
    json(&ok(&deeprust(&args)))
}

/// KL of a model against itself (or its exact f32 copy) is 0 with every top token agreeing;
/// against Q8_0 small but positive; against Q4_K larger (the embedded model, whose dense
/// down projection has rows of 512 values, so that one matrix is Q4_K; every other falls back
/// to Q8_0, see README).
#[test]
fn kl_orders_the_types() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = golden("v3_yarn_mtp");
    let same = kl(
        &hf,
        &hf,
        &["--token-ids", "0,5,17,3,9,44", "--prompt", TEXT],
    );
    assert_eq!(same["prompts"], 2);
    assert_eq!(same["per_prompt"][0]["tokens"], 6);
    assert_eq!(same["kl_mean"], 0.0);
    assert_eq!(same["kl_max"], 0.0);
    assert_eq!(same["top1_agreement_pct"], 100.0);
    let q8 = tmp.path().join("g_q8.gguf");
    quantize(&hf, "q8_0", &q8);
    let g8 = kl(&hf, &q8, &[]);
    let m = g8["kl_mean"].as_f64().unwrap();
    assert!(m > 0.0 && m < 0.1, "golden q8_0 KL {m}");
    assert!(g8["kl_max"].as_f64().unwrap() >= m);

    let emb = root().join("assets/model");
    let prompts = tmp.path().join("prompts.txt");
    std::fs::write(
        &prompts,
        "Once upon a time, there was a little dog named Max.\n\nMax liked to run in the park with his friend Sue.\nOne day it began to rain, and they ran home.\n",
    )
    .unwrap();
    let file = ["--file", s(&prompts)];
    let mut kls = Vec::new();
    for ty in ["f32", "q8_0", "q4_k"] {
        let out = tmp.path().join(format!("e_{ty}.gguf"));
        quantize(&emb, ty, &out);
        let j = kl(&emb, &out, &file);
        assert_eq!(j["prompts"], 3, "blank lines are skipped");
        kls.push(j["kl_mean"].as_f64().unwrap());
        if ty == "f32" {
            assert_eq!(j["top1_agreement_pct"], 100.0);
        }
    }
    // f32 holds bf16 exactly; what is left is the order of f32 sums (the bf16 decode
    // kernel adds even and odd positions in separate lanes), ~1e-13 nats
    assert!(kls[0] < 1e-9, "{kls:?}");
    assert!(kls[1] > 0.0 && kls[1] < 0.05, "{kls:?}");
    assert!(kls[2] > kls[1], "q4_k KL should exceed q8_0's: {kls:?}");
    // text output
    let text = ok(&deeprust(&[
        "kl",
        "--base",
        s(&emb),
        "--model",
        s(&tmp.path().join("e_q8_0.gguf")),
        "--file",
        s(&prompts),
    ]));
    assert!(
        text.contains("KL(base || model)") && text.contains("top-1"),
        "{text}"
    );
    // different vocabularies cannot be compared
    fails(
        &deeprust(&[
            "kl",
            "--base",
            s(&emb),
            "--model",
            s(&hf),
            "--token-ids",
            "1,2",
        ]),
        "vocabularies differ",
    );
}

/// A random checkpoint whose matrices have rows of 256 values, so that every k-quant applies
/// (the goldens' and the embedded model's rows are too short for most of them): 8 layers
/// (the first dense), 2 routed experts and a shared one.
fn wide_checkpoint(dir: &Path) {
    let (h, v, heads, nope, rope, vd, r, q, inter, n_exp, layers) =
        (256, 256, 2, 32, 32, 32, 256, 256, 256, 2, 8);
    let config = serde_json::json!({
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "vocab_size": v, "hidden_size": h, "intermediate_size": inter,
        "moe_intermediate_size": inter, "num_hidden_layers": layers,
        "first_k_dense_replace": 1, "moe_layer_freq": 1,
        "num_attention_heads": heads, "num_key_value_heads": heads,
        "q_lora_rank": q, "kv_lora_rank": r, "qk_nope_head_dim": nope,
        "qk_rope_head_dim": rope, "v_head_dim": vd,
        "n_routed_experts": n_exp, "n_shared_experts": 1, "num_experts_per_tok": 1,
        "n_group": 1, "topk_group": 1, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
        "norm_topk_prob": true, "routed_scaling_factor": 1.0,
        "num_nextn_predict_layers": 0, "max_position_embeddings": 64,
        "rope_theta": 10000.0, "rope_scaling": null, "rms_norm_eps": 1e-6,
        "hidden_act": "silu", "tie_word_embeddings": false,
        "bos_token_id": 0, "eos_token_id": 1, "torch_dtype": "bfloat16",
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![v, h]),
        ("model.norm.weight".into(), vec![h]),
        ("lm_head.weight".into(), vec![v, h]),
    ];
    for l in 0..layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        shapes.extend([
            (p("input_layernorm.weight"), vec![h]),
            (p("post_attention_layernorm.weight"), vec![h]),
            (p("self_attn.q_a_proj.weight"), vec![q, h]),
            (p("self_attn.q_a_layernorm.weight"), vec![q]),
            (
                p("self_attn.q_b_proj.weight"),
                vec![heads * (nope + rope), q],
            ),
            (p("self_attn.kv_a_proj_with_mqa.weight"), vec![r + rope, h]),
            (p("self_attn.kv_a_layernorm.weight"), vec![r]),
            (
                p("self_attn.kv_b_proj.weight"),
                vec![heads * (nope + vd), r],
            ),
            (p("self_attn.o_proj.weight"), vec![h, heads * vd]),
        ]);
        let mut mlp = |prefix: String| {
            shapes.extend([
                (format!("{prefix}.gate_proj.weight"), vec![inter, h]),
                (format!("{prefix}.up_proj.weight"), vec![inter, h]),
                (format!("{prefix}.down_proj.weight"), vec![h, inter]),
            ])
        };
        if l == 0 {
            mlp(p("mlp"));
        } else {
            for e in 0..n_exp {
                mlp(p(&format!("mlp.experts.{e}")));
            }
            mlp(p("mlp.shared_experts"));
            shapes.push((p("mlp.gate.weight"), vec![n_exp, h]));
            shapes.push((p("mlp.gate.e_score_correction_bias"), vec![n_exp]));
        }
    }
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5 // uniform in [-0.5, 0.5)
    };
    let data: Vec<Vec<u8>> = shapes
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let norm = shape.len() == 1 && !name.contains("bias");
            (0..n)
                .flat_map(|_| {
                    let x = if norm { 1.0 } else { next() * 0.2 };
                    ((x.to_bits() >> 16) as u16).to_le_bytes()
                })
                .collect()
        })
        .collect();
    let tensors: Vec<loader::TensorOut> = shapes
        .iter()
        .zip(&data)
        .map(|((name, shape), d)| loader::TensorOut {
            name,
            dtype: loader::DType::BF16,
            shape: shape.clone(),
            data: d,
        })
        .collect();
    loader::write_safetensors(&dir.join("model.safetensors"), &tensors, &[]).unwrap();
}

/// q4_k_m is llama.cpp's mix where rows are whole k-quant blocks: Q6_K for the output matrix
/// and for attn_v_b and the down projections in the layers use_more_bits picks (0, 3, 6, 7
/// of 8), Q4_K elsewhere; its KL lies below plain Q4_K's.
#[test]
fn q4_k_m_mixes_types() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("wide");
    std::fs::create_dir(&hf).unwrap();
    wide_checkpoint(&hf);
    let (m, k) = (tmp.path().join("m.gguf"), tmp.path().join("k.gguf"));
    quantize(&hf, "q4_k_m", &m);
    quantize(&hf, "q4_k", &k);
    let types = |p: &Path| {
        let g = GgufFile::open(p).unwrap();
        g.tensor_infos()
            .iter()
            .map(|t| (t.name.clone(), t.type_name()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (tm, tk) = (types(&m), types(&k));
    for (name, want) in [
        ("output.weight", "Q6_K"),
        ("token_embd.weight", "Q4_K"),
        ("blk.0.ffn_down.weight", "Q6_K"),
        ("blk.0.attn_v_b.weight", "Q6_K"),
        ("blk.1.ffn_down_exps.weight", "Q4_K"),
        ("blk.1.ffn_down_shexp.weight", "Q4_K"),
        ("blk.1.attn_v_b.weight", "Q4_K"),
        ("blk.3.ffn_down_exps.weight", "Q6_K"),
        ("blk.3.ffn_down_shexp.weight", "Q6_K"),
        ("blk.3.attn_v_b.weight", "Q6_K"),
        ("blk.4.ffn_down_exps.weight", "Q4_K"),
        ("blk.6.ffn_down_exps.weight", "Q6_K"),
        ("blk.7.attn_v_b.weight", "Q6_K"),
        ("blk.7.ffn_up_exps.weight", "Q4_K"),
        ("blk.7.attn_q_b.weight", "Q4_K"),
        // rows of 32 or 64 values: not whole Q4_K blocks, so Q8_0 as llama.cpp falls back
        ("blk.7.attn_k_b.weight", "Q8_0"),
        ("blk.7.attn_output.weight", "Q8_0"),
        ("blk.7.attn_norm.weight", "F32"),
    ] {
        assert_eq!(tm[name], want, "q4_k_m {name}");
    }
    for name in [
        "output.weight",
        "blk.3.ffn_down_exps.weight",
        "blk.0.attn_v_b.weight",
    ] {
        assert_eq!(tk[name], "Q4_K", "q4_k {name}");
    }
    let ids = ["--token-ids", "0,17,200,31,5,99,140,7,63,250,11,42"];
    let km = kl(&hf, &m, &ids)["kl_mean"].as_f64().unwrap();
    let kk = kl(&hf, &k, &ids)["kl_mean"].as_f64().unwrap();
    assert!(km > 0.0 && km < kk, "q4_k_m KL {km}, q4_k KL {kk}");
}
