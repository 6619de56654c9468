//! The real DeepSeek-V3 tokenizer against goldens from the Python stack
//! (`scripts/reference/tokenizer_goldens.py`, pinned transformers).

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;
use tokenizer::{StreamDecoder, Tokenizer};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tok() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_dir(&root().join("assets/tokenizers/deepseek-v3")).unwrap())
}

fn golden() -> &'static Value {
    static G: OnceLock<Value> = OnceLock::new();
    G.get_or_init(|| {
        let text = std::fs::read_to_string(root().join("tests/golden/tokenizer/deepseek_v3.json"))
            .unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn special_tokens_from_the_config() {
    let t = tok();
    let s = &golden()["special"];
    assert_eq!(t.bos_token.as_deref(), s["bos_token"].as_str());
    assert_eq!(t.bos_id, Some(s["bos_token_id"].as_u64().unwrap() as u32));
    assert_eq!(t.eos_id, Some(s["eos_token_id"].as_u64().unwrap() as u32));
    assert_eq!(t.vocab_size() as u64, s["len_tokenizer"].as_u64().unwrap());
}

#[test]
fn encodings_equal_python() {
    let t = tok();
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

#[test]
fn decodings_equal_python() {
    let t = tok();
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

#[test]
fn chat_templates_equal_python() {
    let t = tok();
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

/// Streaming never breaks a character: every delta is whole, and the deltas add up to the
/// full decode, for every golden string (CJK, emoji with ZWJ, combining marks...).
#[test]
fn streaming_decode_emits_whole_characters() {
    let t = tok();
    for c in golden()["encode"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let i = ids(&c["ids_special"]);
        let full = t.decode(&i, true).unwrap();
        let mut d = StreamDecoder::new(true);
        let mut out = String::new();
        for &id in &i {
            if let Some(delta) = d.step(t, id).unwrap() {
                if !full.contains('\u{FFFD}') {
                    assert!(
                        !delta.contains('\u{FFFD}'),
                        "{name}: broken character in a delta"
                    );
                }
                out.push_str(&delta);
            }
        }
        if let Some(rest) = d.flush(t).unwrap() {
            out.push_str(&rest);
        }
        assert_eq!(out, full, "{name}: streamed text");
    }
}

#[test]
fn an_emoji_split_over_byte_tokens_comes_out_whole() {
    let t = tok();
    let text = "家族👨‍👩‍👧‍👦!";
    let i = t.encode(text, false).unwrap();
    assert!(
        i.len() > 4,
        "the emoji should span several byte-level tokens"
    );
    let mut d = StreamDecoder::new(true);
    let deltas: Vec<String> = i.iter().filter_map(|&id| d.step(t, id).unwrap()).collect();
    assert!(deltas.iter().all(|s| !s.contains('\u{FFFD}')));
    assert_eq!(deltas.concat(), text);
    // Cut off mid-character, flush gives the replacement character rather than losing bytes.
    let mut d = StreamDecoder::new(true);
    let cut = i
        .iter()
        .position(|&id| t.decode(&[id], true).unwrap().contains('\u{FFFD}'))
        .unwrap();
    let mut out = String::new();
    for &id in &i[..=cut] {
        out.extend(d.step(t, id).unwrap());
    }
    out.extend(d.flush(t).unwrap());
    assert_eq!(out, t.decode(&i[..=cut], true).unwrap());
}

#[test]
fn bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = Tokenizer::from_dir(dir.path()).err().unwrap().to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("not found"),
        "{e}"
    );
    std::fs::write(dir.path().join("tokenizer.json"), b"{\"model\": 3}").unwrap();
    let e = Tokenizer::from_dir(dir.path()).err().unwrap().to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("not a valid tokenizer.json"),
        "{e}"
    );
    std::fs::copy(
        root().join("assets/tokenizers/deepseek-v3/tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("tokenizer_config.json"), b"{oops").unwrap();
    let e = Tokenizer::from_dir(dir.path()).err().unwrap().to_string();
    assert!(
        e.contains("tokenizer_config.json") && e.contains("not valid JSON"),
        "{e}"
    );
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        br#"{"chat_template": "{% for m in messages %}{{ m.content"}"#,
    )
    .unwrap();
    let e = Tokenizer::from_dir(dir.path()).err().unwrap().to_string();
    assert!(
        e.contains("chat template") && e.contains("does not parse"),
        "{e}"
    );
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        br#"{"chat_template": "{{ raise_exception('no system role') }}"}"#,
    )
    .unwrap();
    let t = Tokenizer::from_dir(dir.path()).unwrap();
    let e = t
        .apply_chat_template(
            &serde_json::json!([{"role": "user", "content": "hi"}]),
            None,
            true,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("no system role"), "{e}");
}
