//! The `deeprust` binary's stable interfaces (`info`, `logits`, `generate`), end to end.

mod common;
use common::*;

use loader::SafetensorsFile;

fn ids_csv(t: &loader::Tensor) -> String {
    t.to_i64_vec()
        .unwrap()
        .iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn logits_match_the_reference() {
    for name in ["v3_yarn_mtp", "v3_fp8_sharded", "v2_softmax_grouped"] {
        let g = SafetensorsFile::open(&golden(name).join("goldens.safetensors")).unwrap();
        let ids = ids_csv(g.tensor("prompt.1.ids").unwrap());
        let want = g.tensor("prompt.1.logits").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let out_path = tmp.path().join("logits.safetensors");
        let model = golden(name);
        ok(&deeprust(&[
            "logits",
            "--model",
            model.to_str().unwrap(),
            "--token-ids",
            &ids,
            "--out",
            out_path.to_str().unwrap(),
        ]));
        let got = SafetensorsFile::open(&out_path).unwrap();
        let got = got.tensor("logits").unwrap();
        assert_eq!(got.dtype, loader::DType::F32);
        assert_eq!(got.shape, want.shape);
        let (a, b) = (got.to_f32_vec(), want.to_f32_vec());
        let num: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum();
        let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
        assert!((num / den).sqrt() <= 1e-4, "{name}: logits differ");
    }
}

#[test]
fn greedy_generate_matches_the_reference() {
    for name in [
        "v3_yarn_mtp",
        "v3_nolora_f16",
        "v3_fp8_sharded",
        "v2_softmax_grouped",
        "v2_lite_greedy",
    ] {
        let g = SafetensorsFile::open(&golden(name).join("goldens.safetensors")).unwrap();
        let model = golden(name);
        let cfg = loader::ModelConfig::from_file(&model.join("config.json")).unwrap();
        for case in 0..2 {
            let prompt = ids_csv(g.tensor(&format!("greedy.{case}.prompt_ids")).unwrap());
            let want: Vec<i64> = g
                .tensor(&format!("greedy.{case}.ids"))
                .unwrap()
                .to_i64_vec()
                .unwrap();
            let run = |extra: &[&str]| -> serde_json::Value {
                let mut args = vec![
                    "generate",
                    "--model",
                    model.to_str().unwrap(),
                    "--token-ids",
                    &prompt,
                    "--max-tokens",
                    "16",
                    "--temperature",
                    "0",
                    "--json",
                ];
                args.extend_from_slice(extra);
                let stdout = ok(&deeprust(&args));
                serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
            };
            let all = run(&["--ignore-eos"]);
            let got: Vec<i64> = all["token_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            assert_eq!(got, want, "{name} greedy {case}");
            // By default generation ends at (and includes) the first end-of-sequence token.
            let stop = want
                .iter()
                .position(|&t| cfg.eos_token_ids.contains(&(t as u32)));
            let expect = stop.map_or(&want[..], |i| &want[..=i]);
            let j = run(&[]);
            let got: Vec<i64> = j["token_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            assert_eq!(got, expect, "{name} greedy {case} with EOS");
            assert_eq!(
                j["finish_reason"],
                if stop.is_some() { "stop" } else { "length" }
            );
        }
    }
}

#[test]
fn info_reports_the_architecture() {
    let model = golden("v3_fp8_sharded");
    let out = ok(&deeprust(&[
        "info",
        "--model",
        model.to_str().unwrap(),
        "--json",
    ]));
    let j: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(j["layers"], 3);
    assert_eq!(j["moe_layers"], 2);
    assert_eq!(j["mtp_modules"], 1);
    // (kv_lora_rank 72 + rope 16) values x 3 layers
    assert_eq!(j["kv_cache_values_per_token"], 264);
    assert!(j["weight_dtypes"]["F8_E4M3"]["tensors"].as_u64().unwrap() > 0);
    let total = j["parameters_total"].as_u64().unwrap();
    let active = j["parameters_active_per_token"].as_u64().unwrap();
    assert!(active < total);
    let text = ok(&deeprust(&["info", "--model", model.to_str().unwrap()]));
    assert!(text.contains("MLA") && text.contains("active per token"));
}

#[test]
fn bad_input_fails_cleanly() {
    let model = golden("v3_yarn_mtp");
    let m = model.to_str().unwrap();
    fails(
        &deeprust(&["info", "--model", "/no/such/dir"]),
        "/no/such/dir",
    );
    fails(
        &deeprust(&["generate", "--model", m, "--token-ids", "5,x"]),
        "`x` is not a token id",
    );
    fails(
        &deeprust(&["generate", "--model", m, "--token-ids", "5,99999"]),
        "out of range",
    );
    fails(
        &deeprust(&[
            "generate",
            "--model",
            m,
            "--token-ids",
            "1,2,3",
            "--ctx-size",
            "3",
        ]),
        "context holds 3",
    );
    fails(
        &deeprust(&[
            "generate",
            "--model",
            m,
            "--token-ids",
            "1",
            "--temperature",
            "-1",
        ]),
        "temperature",
    );
    fails(
        &deeprust(&["generate", "--model", m, "--token-ids", "1", "--bogus"]),
        "--bogus",
    );
    let long: String = (0..200)
        .map(|i| (i % 300).to_string())
        .collect::<Vec<_>>()
        .join(",");
    fails(
        &deeprust(&["generate", "--model", m, "--token-ids", &long]),
        "context holds 128",
    );
    fails(
        &deeprust(&[
            "logits",
            "--model",
            m,
            "--token-ids",
            "1",
            "--out",
            "/no/such/dir/x.safetensors",
        ]),
        "/no/such/dir/x.safetensors",
    );
}

/// llama-bench's JSON shape: one record per test with the fields peers' tooling reads.
#[test]
fn bench_writes_llama_bench_records() {
    let out = ok(&deeprust(&[
        "bench", "-p", "16", "-n", "4", "-d", "0,8", "-r", "2", "-t", "2", "-o", "json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let recs = v.as_array().unwrap();
    assert_eq!(recs.len(), 4, "pp and tg at two depths: {out}");
    let keys = [
        "n_prompt",
        "n_gen",
        "n_depth",
        "n_threads",
        "avg_ts",
        "stddev_ts",
        "samples_ts",
    ];
    for r in recs {
        for k in keys {
            assert!(r.get(k).is_some(), "record lacks {k}: {r}");
        }
        assert_eq!(r["n_threads"], 2);
        assert!(r["avg_ts"].as_f64().unwrap() > 0.0);
        assert_eq!(r["samples_ts"].as_array().unwrap().len(), 2);
    }
    let tests: Vec<(u64, u64, u64)> = recs
        .iter()
        .map(|r| {
            let f = |k: &str| r[k].as_u64().unwrap();
            (f("n_prompt"), f("n_gen"), f("n_depth"))
        })
        .collect();
    assert_eq!(tests, [(16, 0, 0), (0, 4, 0), (16, 0, 8), (0, 4, 8)]);
}

/// `--no-warmup` (llama-bench's flag, for a script that interleaves single runs of two
/// engines) is accepted and still times each repetition into complete records. (Whether
/// the warm-up ran is not visible in the output; this checks the flag's plumbing only.)
#[test]
fn bench_without_warmup_times_each_repetition() {
    let out = ok(&deeprust(&[
        "bench",
        "-p",
        "8",
        "-n",
        "2",
        "-r",
        "1",
        "--no-warmup",
        "-o",
        "jsonl",
    ]));
    let recs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 2, "{out}");
    for r in &recs {
        assert_eq!(r["samples_ts"].as_array().unwrap().len(), 1, "{r}");
        assert!(r["avg_ts"].as_f64().unwrap() > 0.0, "{r}");
    }
}

#[test]
fn kernel_levels_can_be_forced_and_agree() {
    let logits = |level: &str| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("l.safetensors");
        ok(&deeprust(&[
            "logits",
            "--token-ids",
            "1,2,3,4,5",
            "--kernels",
            level,
            "--out",
            out.to_str().unwrap(),
        ]));
        SafetensorsFile::open(&out)
            .unwrap()
            .tensor("logits")
            .unwrap()
            .to_f32_vec()
    };
    let base = logits("scalar");
    for level in kernels::Level::available() {
        let l = logits(level.name());
        let diff = l
            .iter()
            .zip(&base)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-3, "{level}: max logit diff {diff} vs scalar");
    }
    fails(
        &deeprust(&["info", "--kernels", "sse9"]),
        "unknown kernel level `sse9`",
    );
    fails(
        &deeprust(&["bench", "-t", "0", "-n", "1", "-p", "0"]),
        "--threads must be at least 1",
    );
}

/// `--numa interleave` sets the policy before the kernel threads start (and says over how
/// many nodes), and the model computes the same thing under it; an unknown policy is an
/// error that lists the known ones.
#[test]
fn numa_interleave_is_applied_and_changes_no_result() {
    let run = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--prompt",
            "Once upon a time",
            "--max-tokens",
            "8",
            "--temperature",
            "0",
            "--pin-threads",
        ];
        args.extend_from_slice(extra);
        deeprust(&args)
    };
    let plain = run(&[]);
    ok(&plain);
    let numa = run(&["--numa", "interleave"]);
    if std::fs::metadata("/sys/devices/system/node/online").is_err() {
        fails(&numa, "no NUMA nodes");
        return;
    }
    ok(&numa);
    let text = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(text(&numa), text(&plain));
    assert!(String::from_utf8_lossy(&numa.stderr).contains("interleaved over"));
    fails(
        &deeprust(&["info", "--numa", "scatter"]),
        "possible values: interleave",
    );
}

/// `--load huge-pages` reads the weight files into anonymous memory (where the kernel has
/// transparent huge pages), `--load mmap` maps them: the same logits either way.
#[test]
fn weights_in_huge_pages_give_the_mapped_logits() {
    let dir = tempfile::tempdir().unwrap();
    let golden = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/golden/v3_yarn_mtp"
    );
    let run = |mode: &str| {
        let out = dir.path().join(format!("{mode}.safetensors"));
        let o = deeprust(&[
            "logits",
            "--model",
            golden,
            "--token-ids",
            "1,5,9,200,7",
            "--load",
            mode,
            "--out",
            out.to_str().unwrap(),
        ]);
        (o, out)
    };
    let (mapped, a) = run("mmap");
    ok(&mapped);
    let (huge, b) = run("huge-pages");
    if !cfg!(target_os = "linux") {
        fails(&huge, "only on Linux");
        return;
    }
    ok(&huge);
    assert!(String::from_utf8_lossy(&huge.stderr).contains("read into anonymous memory"));
    assert!(!String::from_utf8_lossy(&mapped.stderr).contains("read into anonymous memory"));
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    fails(
        &deeprust(&["info", "--load", "copy"]),
        "possible values: auto, mmap, huge-pages",
    );
}

/// `--cache-type bf16` reaches the cache: bench reports it as llama-bench's `type_k` /
/// `type_v`, a greedy reply from the embedded model still runs to its length, and an
/// unknown type is an error that names the known ones.
/// `--act-type bf16` is reported as what the run used: bf16 where the CPU has AVX-512
/// BF16 at the chosen level, f32 elsewhere (and always at `--kernels avx2`).
#[test]
fn act_type_bf16_is_reported_as_used_and_runs() {
    let info = ok(&deeprust(&["info"]));
    let has = info.contains("avx512bf16") && info.contains("avx512");
    let json = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["bench", "-p", "8", "-n", "2", "-r", "1", "-o", "json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&ok(&deeprust(&args))).unwrap()
    };
    let want = if has { "bf16" } else { "f32" };
    for r in json(&["--act-type", "bf16"]).as_array().unwrap() {
        assert_eq!(r["type_act"], want, "{r}");
    }
    for r in json(&[]).as_array().unwrap() {
        assert_eq!(r["type_act"], "f32", "{r}");
    }
    if info.contains("avx2") {
        for r in json(&["--act-type", "bf16", "--kernels", "avx2"])
            .as_array()
            .unwrap()
        {
            assert_eq!(r["type_act"], "f32", "{r}");
        }
    }
    ok(&deeprust(&[
        "generate",
        "--prompt",
        "Once upon a time there was",
        "--max-tokens",
        "4",
        "--act-type",
        "bf16",
    ]));
    fails(
        &deeprust(&["generate", "--prompt", "x", "--act-type", "f8"]),
        "possible values: f32, bf16",
    );
}

#[test]
fn cache_type_bf16_is_reported_and_runs() {
    // (the 8-bit cache named as llama-bench names its q8_0 cache)
    for ty in ["bf16", "q8_0"] {
        let out = ok(&deeprust(&[
            "bench",
            "-p",
            "8",
            "-n",
            "4",
            "-r",
            "1",
            "-o",
            "json",
            "--cache-type",
            ty,
        ]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        for r in v.as_array().unwrap() {
            assert_eq!(r["type_k"], ty, "{r}");
            assert_eq!(r["type_v"], ty, "{r}");
        }
    }
    let out = ok(&deeprust(&[
        "bench", "-p", "8", "-n", "0", "-r", "1", "-o", "json",
    ]));
    assert!(out.contains("\"type_k\": \"f32\""), "{out}");
    for ty in ["bf16", "q8_0"] {
        ok(&deeprust(&[
            "generate",
            "--prompt",
            "Once upon a time",
            "--max-tokens",
            "8",
            "--temperature",
            "0",
            "--cache-type",
            ty,
        ]));
    }
    fails(
        &deeprust(&["generate", "--prompt", "x", "--cache-type", "f8"]),
        "expected f32, bf16 or q8_0",
    );
}
