//! Text in, text out through the `deeprust` binary: prompts, chat, sampling flags, stop
//! strings, tokenize, and the interactive chat in a pseudo-terminal.

mod common;
use common::*;

use serde_json::Value;

fn tiny() -> String {
    root()
        .join("tests/golden/v3_yarn_mtp")
        .to_str()
        .unwrap()
        .to_string()
}

fn json(args: &[&str]) -> Value {
    let out = deeprust(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn text_goldens() -> Vec<Value> {
    let t =
        std::fs::read_to_string(root().join("tests/golden/v3_yarn_mtp/text_goldens.json")).unwrap();
    serde_json::from_str::<Value>(&t).unwrap()["cases"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn prompts_generate_what_transformers_generates() {
    let m = tiny();
    for case in text_goldens() {
        let want_ids = ids(&case["greedy_ids"]);
        let got = if let Some(p) = case["prompt"].as_str() {
            json(&[
                "generate",
                "--model",
                &m,
                "--prompt",
                p,
                "--temperature",
                "0",
                "--max-tokens",
                "16",
                "--ignore-eos",
                "--json",
            ])
        } else {
            // A conversation: the template's ids, then generation from them.
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("messages.json");
            std::fs::write(&f, case["messages"].to_string()).unwrap();
            let t = json(&[
                "tokenize",
                "--model",
                &m,
                "--messages",
                f.to_str().unwrap(),
                "--add-generation-prompt",
                "--json",
            ]);
            assert_eq!(ids(&t["ids"]), ids(&case["prompt_ids"]));
            let csv: Vec<String> = ids(&t["ids"]).iter().map(|x| x.to_string()).collect();
            let out = json(&[
                "generate",
                "--model",
                &m,
                "--token-ids",
                &csv.join(","),
                "--temperature",
                "0",
                "--max-tokens",
                "16",
                "--ignore-eos",
                "--json",
            ]);
            let msgs = case["messages"].as_array().unwrap();
            if msgs.len() == 1 {
                // the same conversation through --chat
                let via_chat = json(&[
                    "generate",
                    "--model",
                    &m,
                    "--chat",
                    "--prompt",
                    msgs[0]["content"].as_str().unwrap(),
                    "--temperature",
                    "0",
                    "--max-tokens",
                    "16",
                    "--ignore-eos",
                    "--json",
                ]);
                assert_eq!(via_chat["token_ids"], out["token_ids"]);
                assert_eq!(
                    via_chat["prompt_tokens"],
                    case["prompt_ids"].as_array().unwrap().len()
                );
            }
            out
        };
        assert_eq!(ids(&got["token_ids"]), want_ids, "{case}");
        assert_eq!(got["text"], case["greedy_text"], "{case}");
    }
}

#[test]
fn text_streams_to_stdout_with_timings_on_stderr() {
    let case = &text_goldens()[0];
    let out = deeprust(&[
        "generate",
        "--model",
        &tiny(),
        "--prompt",
        case["prompt"].as_str().unwrap(),
        "--temperature",
        "0",
        "--max-tokens",
        "16",
        "--ignore-eos",
    ]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}\n", case["greedy_text"].as_str().unwrap())
    );
    let err = String::from_utf8(out.stderr).unwrap();
    for what in ["load time", "prompt", "generated", "tok/s", "first token"] {
        assert!(err.contains(what), "timings lack `{what}`: {err}");
    }
}

#[test]
fn seeds_samples_and_beams() {
    let m = tiny();
    let run = |extra: &[&str]| {
        let mut a = vec![
            "generate",
            "--model",
            m.as_str(),
            "--prompt",
            "Once upon",
            "--ignore-eos",
            "--json",
            "--temperature",
            "1.0",
            "--top-k",
            "0",
            "--top-p",
            "1",
            "--min-p",
            "0",
        ];
        a.extend_from_slice(extra);
        if !extra.contains(&"--max-tokens") {
            a.extend_from_slice(&["--max-tokens", "24"]);
        }
        json(&a)
    };
    let a = run(&["--seed", "5"]);
    assert_eq!(
        a["token_ids"],
        run(&["--seed", "5"])["token_ids"],
        "same seed, same tokens"
    );
    assert_ne!(a["token_ids"], run(&["--seed", "6"])["token_ids"]);
    // n samples: each from its own stream of the seed, so they differ
    let n = run(&["--seed", "5", "--samples", "3"]);
    let c = n["completions"].as_array().unwrap();
    assert_eq!(c.len(), 3);
    assert_ne!(c[0]["token_ids"], c[1]["token_ids"]);
    assert_eq!(n["completion_tokens"], 72);
    // logit bias can force a token
    let forced = run(&["--seed", "5", "--logit-bias", "42=100"]);
    assert!(ids(&forced["token_ids"]).iter().all(|&t| t == 42));
    // logprobs: the chosen token's logprob and the requested alternatives
    let lp = run(&["--seed", "5", "--logprobs", "3", "--max-tokens", "4"]);
    let steps = lp["logprobs"].as_array().unwrap();
    assert_eq!(steps.len(), 4);
    assert_eq!(steps[0]["top_logprobs"].as_array().unwrap().len(), 3);
    assert!(steps[0]["logprob"].as_f64().unwrap() <= 0.0);
    // beam search returns the best n beams, best first
    let b = json(&[
        "generate",
        "--model",
        &m,
        "--prompt",
        "Once upon",
        "--beam-width",
        "4",
        "--samples",
        "2",
        "--max-tokens",
        "8",
        "--json",
    ]);
    let c = b["completions"].as_array().unwrap();
    assert_eq!(c.len(), 2);
    assert!(c[0]["score"].as_f64().unwrap() >= c[1]["score"].as_f64().unwrap());
    // a beam of width 1 is greedy decoding
    let g = json(&[
        "generate",
        "--model",
        &m,
        "--prompt",
        "Once upon",
        "--temperature",
        "0",
        "--max-tokens",
        "8",
        "--ignore-eos",
        "--json",
    ]);
    let b1 = json(&[
        "generate",
        "--model",
        &m,
        "--prompt",
        "Once upon",
        "--beam-width",
        "1",
        "--max-tokens",
        "8",
        "--ignore-eos",
        "--json",
    ]);
    assert_eq!(g["token_ids"], b1["token_ids"]);
}

#[test]
fn stop_strings_end_the_text_and_are_not_printed() {
    let case = &text_goldens()[0]; // greedy text: "ad toad toad toie ..."
    let p = case["prompt"].as_str().unwrap();
    let out = json(&[
        "generate",
        "--model",
        &tiny(),
        "--prompt",
        p,
        "--temperature",
        "0",
        "--max-tokens",
        "16",
        "--stop",
        "oad to",
        "--json",
    ]);
    assert_eq!(out["text"], "ad t");
    assert_eq!(out["finish_reason"], "stop");
    // stop token ids end generation too
    let g = ids(&case["greedy_ids"]);
    let at = (0..g.len())
        .find(|&i| !g[..i].contains(&g[i]) && i > 2)
        .unwrap();
    let first = g[at];
    let out = json(&[
        "generate",
        "--model",
        &tiny(),
        "--prompt",
        p,
        "--temperature",
        "0",
        "--max-tokens",
        "16",
        "--stop-token-id",
        &first.to_string(),
        "--json",
    ]);
    assert_eq!(ids(&out["token_ids"]), g[..=at].to_vec());
    assert_eq!(out["finish_reason"], "stop");
}

#[test]
fn tokenize_the_real_tokenizer() {
    let dir = root().join("assets/tokenizers/deepseek-v3");
    let d = dir.to_str().unwrap();
    let j = json(&["tokenize", "--model", d, "--text", "Hello 世界", "--json"]);
    assert_eq!(ids(&j["ids"]), vec![19923, 223, 3427]);
    assert_eq!(j["tokens"][0], "Hello");
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("m.json");
    std::fs::write(
        &f,
        r#"[{"role":"system","content":"S"},{"role":"user","content":"hi"}]"#,
    )
    .unwrap();
    let j = json(&[
        "tokenize",
        "--model",
        d,
        "--messages",
        f.to_str().unwrap(),
        "--add-generation-prompt",
        "--json",
    ]);
    assert_eq!(
        j["text"],
        "<｜begin▁of▁sentence｜>S<｜User｜>hi<｜Assistant｜>"
    );
    assert_eq!(ids(&j["ids"])[0], 0);
}

#[test]
fn text_errors_name_the_problem() {
    let m = tiny();
    let no_tok = root().join("tests/golden/v3_fp8_sharded");
    fails(
        &deeprust(&[
            "generate",
            "--model",
            no_tok.to_str().unwrap(),
            "--prompt",
            "hi",
        ]),
        "tokenizer.json",
    );
    fails(
        &deeprust(&["generate", "--model", &m, "--prompt", "hi", "--top-p", "2"]),
        "top_p",
    );
    fails(
        &deeprust(&["generate", "--model", &m, "--prompt", "hi", "--min-p", "-1"]),
        "min_p",
    );
    fails(
        &deeprust(&[
            "generate",
            "--model",
            &m,
            "--prompt",
            "hi",
            "--logit-bias",
            "5",
        ]),
        "TOKEN_ID=BIAS",
    );
    fails(
        &deeprust(&[
            "generate",
            "--model",
            &m,
            "--prompt",
            "hi",
            "--logit-bias",
            "100000=1",
        ]),
        "logit_bias",
    );
    fails(
        &deeprust(&[
            "generate",
            "--model",
            &m,
            "--prompt",
            "hi",
            "--beam-width",
            "0",
        ]),
        "beam width",
    );
    let long = "word ".repeat(400);
    fails(
        &deeprust(&["generate", "--model", &m, "--prompt", &long]),
        "context holds 128",
    );
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("m.json");
    std::fs::write(&f, "{not json").unwrap();
    fails(
        &deeprust(&["tokenize", "--model", &m, "--messages", f.to_str().unwrap()]),
        "not valid JSON",
    );
    std::fs::write(&f, "[]").unwrap();
    fails(
        &deeprust(&["tokenize", "--model", &m, "--messages", f.to_str().unwrap()]),
        "messages",
    );
    fails(
        &deeprust(&[
            "tokenize",
            "--model",
            tmp.path().to_str().unwrap(),
            "--text",
            "x",
        ]),
        "tokenizer.json",
    );
}

#[test]
fn interactive_chat_in_a_terminal() {
    let cmd = format!(
        "{} chat --model {} --system 'Be brief.' --temperature 0 --ignore-eos --max-tokens 1000000 --ctx-size 200000",
        env!("CARGO_BIN_EXE_deeprust"),
        tiny()
    );
    let mut p = rexpect::spawn(&cmd, Some(30_000)).unwrap();
    p.exp_string("> ").unwrap();
    // A long answer, stopped with Ctrl-C; the session goes on.
    p.send_line("Tell me a story about the sea.").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    p.send_control('c').unwrap();
    p.exp_string("[stopped]").unwrap();
    p.exp_string("> ").unwrap();
    p.send_line("/reset").unwrap();
    p.exp_string("(conversation cleared)").unwrap();
    p.exp_string("> ").unwrap();
    p.send_line("/exit").unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn the_embedded_model_is_the_default() {
    let r: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("assets/model/reference.json")).unwrap(),
    )
    .unwrap();
    let case = &r["cases"][0];
    let steps = r["greedy_steps"].to_string();
    let out = json(&[
        "generate",
        "--prompt",
        case["prompt"].as_str().unwrap(),
        "--temperature",
        "0",
        "--max-tokens",
        &steps,
        "--ignore-eos",
        "--json",
    ]);
    assert_eq!(out["token_ids"], case["greedy_ids"]);
    assert_eq!(out["text"], case["greedy_text"]);
    let info = json(&["info", "--json"]);
    assert_eq!(info["model_type"], "deepseek_v3");
    assert_eq!(info["mtp_modules"], 1);
    let t = json(&[
        "tokenize",
        "--text",
        "Once upon a time",
        "--add-special-tokens",
        "--json",
    ]);
    assert_eq!(t["ids"], case["prompt_ids"]);
}
