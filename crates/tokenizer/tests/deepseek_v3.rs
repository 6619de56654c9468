//! The real DeepSeek-V3 tokenizer against goldens from the Python stack
//! (`scripts/reference/tokenizer_goldens.py`, pinned transformers).

mod common;
use common::*;

use std::sync::OnceLock;

use tokenizer::{StreamDecoder, Tokenizer};

fn tok() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_dir(&root().join("assets/tokenizers/deepseek-v3")).unwrap())
}

#[test]
fn special_tokens_from_the_config() {
    check_special(tok());
}

#[test]
fn encodings_equal_python() {
    check_encodings(tok());
}

#[test]
fn decodings_equal_python() {
    check_decodings(tok());
}

#[test]
fn chat_templates_equal_python() {
    check_chat_templates(tok());
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
