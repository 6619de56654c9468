//! The goldens every DeepSeek-V3 tokenizer must meet, however it was built (from
//! tokenizer.json, or from a GGUF file's metadata).
#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;
use tokenizer::Tokenizer;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn read_json(rel: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join(rel)).unwrap()).unwrap()
}

/// `tests/golden/tokenizer/deepseek_v3.json` from `scripts/reference/tokenizer_goldens.py`.
pub fn golden() -> &'static Value {
    static G: OnceLock<Value> = OnceLock::new();
    G.get_or_init(|| read_json("tests/golden/tokenizer/deepseek_v3.json"))
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn check_special(t: &Tokenizer) {
    let s = &golden()["special"];
    assert_eq!(t.bos_token.as_deref(), s["bos_token"].as_str());
    assert_eq!(t.eos_token.as_deref(), s["eos_token"].as_str());
    assert_eq!(t.bos_id, Some(s["bos_token_id"].as_u64().unwrap() as u32));
    assert_eq!(t.eos_id, Some(s["eos_token_id"].as_u64().unwrap() as u32));
    assert_eq!(t.vocab_size() as u64, s["len_tokenizer"].as_u64().unwrap());
}

pub fn check_encodings(t: &Tokenizer) {
    let cases = golden()["encode"].as_array().unwrap();
    assert!(cases.len() > 300);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let text = c["text"].as_str().unwrap();
        assert_eq!(
            t.encode(text, false).unwrap(),
            ids(&c["ids"]),
            "{name}: ids"
        );
        assert_eq!(
            t.encode(text, true).unwrap(),
            ids(&c["ids_special"]),
            "{name}: ids with special tokens"
        );
        let want: Vec<String> = c["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        assert_eq!(t.tokens(&ids(&c["ids"])), want, "{name}: tokens");
    }
}

pub fn check_decodings(t: &Tokenizer) {
    for c in golden()["decode"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let i = ids(&c["ids"]);
        assert_eq!(
            t.decode(&i, true).unwrap(),
            c["skip_special"].as_str().unwrap(),
            "{name}: skip special"
        );
        assert_eq!(
            t.decode(&i, false).unwrap(),
            c["keep_special"].as_str().unwrap(),
            "{name}: keep special"
        );
    }
}

pub fn check_chat_templates(t: &Tokenizer) {
    let cases = golden()["chat"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let gen_prompt = c["add_generation_prompt"].as_bool().unwrap();
        let tools = c.get("tools").filter(|v| !v.is_null());
        let got = t.apply_chat_template(&c["messages"], tools, gen_prompt);
        if c.get("error").is_some() {
            assert!(
                got.is_err(),
                "{name}: Python failed to render, we rendered {got:?}"
            );
            continue;
        }
        assert_eq!(got.unwrap(), c["text"].as_str().unwrap(), "{name}: text");
        assert_eq!(
            t.encode_chat(&c["messages"], tools, gen_prompt).unwrap(),
            ids(&c["ids"]),
            "{name}: ids"
        );
    }
}
