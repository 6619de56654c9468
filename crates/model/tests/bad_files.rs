//! Broken checkpoints give an error that names the file and the tensor or field; never a
//! panic. Each case damages a copy of a good golden checkpoint in one way.

use std::fs;
use std::path::{Path, PathBuf};

use loader::{Checkpoint, DType, SafetensorsFile, TensorOut, write_safetensors};
use model::Model;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden")
        .join(name)
}

/// A temp copy of golden model `name` (weights and config only).
fn copy_of(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for e in fs::read_dir(golden(name)).unwrap() {
        let p = e.unwrap().path();
        let f = p.file_name().unwrap().to_str().unwrap();
        if f != "goldens.safetensors" {
            fs::copy(&p, tmp.path().join(f)).unwrap();
        }
    }
    tmp
}

/// Load a directory all the way to a model; the error text if it fails.
fn load_err(dir: &Path) -> String {
    match Checkpoint::open(dir) {
        Err(e) => e.to_string(),
        Ok(ckpt) => match Model::load(&ckpt) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{} loaded, but it is broken", dir.display()),
        },
    }
}

fn assert_mentions(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "error `{err}` does not mention `{p}`");
    }
}

/// Rewrite `file` through `edit`, which may change, drop or add tensors.
fn rewrite(file: &Path, edit: impl Fn(&mut Vec<(String, DType, Vec<usize>, Vec<u8>)>)) {
    let st = SafetensorsFile::open(file).unwrap();
    let mut ts: Vec<_> = st
        .tensors()
        .map(|t| (t.name.clone(), t.dtype, t.shape.clone(), t.bytes().to_vec()))
        .collect();
    drop(st);
    edit(&mut ts);
    let outs: Vec<TensorOut> = ts
        .iter()
        .map(|(n, d, s, b)| TensorOut {
            name: n,
            dtype: *d,
            shape: s.clone(),
            data: b,
        })
        .collect();
    write_safetensors(file, &outs, &[]).unwrap();
}

const WEIGHTS: &str = "model.safetensors";

#[test]
fn truncated_data_names_the_tensor() {
    let d = copy_of("v3_yarn_mtp");
    let f = d.path().join(WEIGHTS);
    let len = fs::metadata(&f).unwrap().len();
    let bytes = fs::read(&f).unwrap();
    fs::write(&f, &bytes[..(len as usize) - 1000]).unwrap();
    let e = load_err(d.path());
    assert_mentions(&e, &["model.safetensors", "tensor `", "runs past the end"]);
}

#[test]
fn truncated_header() {
    let d = copy_of("v3_yarn_mtp");
    let f = d.path().join(WEIGHTS);
    let bytes = fs::read(&f).unwrap();
    fs::write(&f, &bytes[..100]).unwrap();
    assert_mentions(
        &load_err(d.path()),
        &["model.safetensors", "header length", "truncated"],
    );
    fs::write(&f, &bytes[..5]).unwrap();
    assert_mentions(&load_err(d.path()), &["model.safetensors", "too short"]);
    fs::write(&f, b"").unwrap();
    assert_mentions(&load_err(d.path()), &["model.safetensors", "too short"]);
}

#[test]
fn corrupt_header() {
    let d = copy_of("v3_yarn_mtp");
    let f = d.path().join(WEIGHTS);
    let mut bytes = fs::read(&f).unwrap();
    bytes[8] = b'#'; // the opening brace of the JSON header
    fs::write(&f, &bytes).unwrap();
    assert_mentions(
        &load_err(d.path()),
        &["model.safetensors", "not valid JSON"],
    );

    // a header length far past the end of the file
    let mut bytes = fs::read(golden("v3_yarn_mtp").join(WEIGHTS)).unwrap();
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    fs::write(&f, &bytes).unwrap();
    assert_mentions(&load_err(d.path()), &["model.safetensors", "header length"]);
}

#[test]
fn offsets_that_disagree_with_the_shape() {
    let d = copy_of("v3_yarn_mtp");
    let f = d.path().join(WEIGHTS);
    let bytes = fs::read(&f).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    // Claim a larger shape for the first tensor while keeping its byte range.
    let mut json: serde_json::Value = serde_json::from_str(header).unwrap();
    let name = "model.norm.weight";
    json[name]["shape"] = serde_json::json!([65]);
    let new_header = serde_json::to_vec(&json).unwrap();
    let mut out = (new_header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&new_header);
    out.extend_from_slice(&bytes[8 + n..]);
    fs::write(&f, out).unwrap();
    assert_mentions(&load_err(d.path()), &["model.safetensors", name, "needs"]);
}

#[test]
fn missing_tensor() {
    let d = copy_of("v3_yarn_mtp");
    let name = "model.layers.1.self_attn.kv_b_proj.weight";
    rewrite(&d.path().join(WEIGHTS), |ts| ts.retain(|t| t.0 != name));
    assert_mentions(&load_err(d.path()), &[name, "not found"]);

    // The MTP module is checked too.
    let d = copy_of("v3_yarn_mtp");
    let name = "model.layers.3.eh_proj.weight";
    rewrite(&d.path().join(WEIGHTS), |ts| ts.retain(|t| t.0 != name));
    assert_mentions(&load_err(d.path()), &[name, "not found"]);

    // Without any MTP tensor the module is simply absent (redistributions often drop it).
    let d = copy_of("v3_yarn_mtp");
    rewrite(&d.path().join(WEIGHTS), |ts| {
        ts.retain(|t| !t.0.starts_with("model.layers.3."))
    });
    let model = Model::load(&Checkpoint::open(d.path()).unwrap()).unwrap();
    assert!(model.mtp.is_empty());

    // V3 routing needs the correction bias.
    let d = copy_of("v3_yarn_mtp");
    let name = "model.layers.2.mlp.gate.e_score_correction_bias";
    rewrite(&d.path().join(WEIGHTS), |ts| ts.retain(|t| t.0 != name));
    assert_mentions(&load_err(d.path()), &[name, "not found"]);
}

#[test]
fn wrong_shape() {
    let d = copy_of("v3_yarn_mtp");
    let name = "model.layers.0.self_attn.kv_b_proj.weight";
    rewrite(&d.path().join(WEIGHTS), |ts| {
        let t = ts.iter_mut().find(|t| t.0 == name).unwrap();
        t.2.reverse(); // stored transposed
    });
    assert_mentions(
        &load_err(d.path()),
        &[
            "model.safetensors",
            name,
            "shape [32, 128]",
            "expected [128, 32]",
        ],
    );
}

#[test]
fn wrong_dtype() {
    let d = copy_of("v3_yarn_mtp");
    let name = "model.layers.0.mlp.up_proj.weight";
    rewrite(&d.path().join(WEIGHTS), |ts| {
        let t = ts.iter_mut().find(|t| t.0 == name).unwrap();
        t.1 = DType::I16; // same byte size as bf16
    });
    assert_mentions(
        &load_err(d.path()),
        &["model.safetensors", name, "dtype I16"],
    );
}

#[test]
fn fp8_weight_without_its_scale() {
    let d = copy_of("v3_fp8_sharded");
    let name = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv";
    let index: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(d.path().join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let shard = index["weight_map"][name].as_str().unwrap().to_string();
    rewrite(&d.path().join(&shard), |ts| ts.retain(|t| t.0 != name));
    // The index still lists it, so the index check catches it first.
    assert_mentions(&load_err(d.path()), &["index", name, &shard]);

    // Gone from the index too: binding the weight finds no scale.
    let p = d.path().join("model.safetensors.index.json");
    let mut index = index;
    index["weight_map"].as_object_mut().unwrap().remove(name);
    fs::write(&p, serde_json::to_string(&index).unwrap()).unwrap();
    assert_mentions(&load_err(d.path()), &[name, "not found"]);
}

#[test]
fn fp8_scale_with_the_wrong_grid() {
    let d = copy_of("v3_fp8_sharded");
    let name = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv";
    let index: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(d.path().join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let shard = index["weight_map"][name].as_str().unwrap().to_string();
    rewrite(&d.path().join(&shard), |ts| {
        let t = ts.iter_mut().find(|t| t.0 == name).unwrap();
        // [1, 2] -> [2, 1]: same element count, wrong grid
        t.2.reverse();
    });
    assert_mentions(&load_err(d.path()), &[&shard, name, "expected [1, 2]"]);
}

#[test]
fn index_naming_a_missing_shard() {
    let d = copy_of("v3_fp8_sharded");
    fs::remove_file(d.path().join("model-00002-of-00003.safetensors")).unwrap();
    assert_mentions(
        &load_err(d.path()),
        &[
            "model.safetensors.index.json",
            "model-00002-of-00003.safetensors",
            "does not exist",
        ],
    );
}

#[test]
fn corrupt_index() {
    let d = copy_of("v3_fp8_sharded");
    fs::write(
        d.path().join("model.safetensors.index.json"),
        b"{\"weight_map\": 3}",
    )
    .unwrap();
    assert_mentions(
        &load_err(d.path()),
        &["model.safetensors.index.json", "weight_map"],
    );
}

#[test]
fn no_weights() {
    let d = copy_of("v3_yarn_mtp");
    fs::remove_file(d.path().join(WEIGHTS)).unwrap();
    assert_mentions(&load_err(d.path()), &["no weights"]);
    assert_mentions(
        &load_err(&d.path().join("nope")),
        &["nope", "not a model directory"],
    );
}

fn edit_config(dir: &Path, edit: impl Fn(&mut serde_json::Map<String, serde_json::Value>)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn config_missing_a_required_field() {
    for field in [
        "hidden_size",
        "kv_lora_rank",
        "q_lora_rank",
        "num_hidden_layers",
        "topk_method",
        "vocab_size",
    ] {
        let d = copy_of("v3_yarn_mtp");
        edit_config(d.path(), |c| {
            c.remove(field);
        });
        assert_mentions(
            &load_err(d.path()),
            &["config.json", "missing required field", field],
        );
    }
    let d = copy_of("v3_yarn_mtp");
    edit_config(d.path(), |c| {
        c["rope_scaling"].as_object_mut().unwrap().remove("factor");
    });
    assert_mentions(&load_err(d.path()), &["config.json", "rope_scaling.factor"]);
}

#[test]
fn config_with_unsupported_values() {
    let cases: [(&str, serde_json::Value, &str); 7] = [
        ("topk_method", "fancy".into(), "topk_method"),
        ("scoring_func", "relu".into(), "scoring_func"),
        ("model_type", "llama".into(), "model_type"),
        ("hidden_size", "wide".into(), "hidden_size"),
        ("n_group", 3.into(), "n_group"),
        (
            "rope_scaling",
            serde_json::json!({"type": "linear", "factor": 2.0}),
            "rope_scaling.type",
        ),
        (
            "quantization_config",
            serde_json::json!({"quant_method": "gptq"}),
            "quant_method",
        ),
    ];
    for (field, value, mention) in cases {
        let d = copy_of("v3_yarn_mtp");
        edit_config(d.path(), |c| {
            c.insert(field.to_string(), value.clone());
        });
        assert_mentions(&load_err(d.path()), &["config.json", mention]);
    }
    let d = copy_of("v3_yarn_mtp");
    fs::write(d.path().join("config.json"), b"{ not json").unwrap();
    assert_mentions(&load_err(d.path()), &["config.json", "not valid JSON"]);
}
