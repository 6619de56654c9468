use std::path::Path;
use std::sync::{Arc, Mutex};

use super::*;
use crate::checkpoint::Checkpoint;
use crate::dtype::DType;
use crate::gguf::GgufFile;

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
