//! A tokenizer built from GGUF metadata against the checkpoint's own `tokenizer.json`.
//!
//! The metadata is made from the real DeepSeek-V3 tokenizer as llama.cpp's converter makes
//! it: every id up to the model's vocabulary size, added tokens typed control (special) or
//! user-defined (not), ids nothing uses typed unused as `[PAD<id>]`.

mod common;
use common::*;

use std::sync::OnceLock;

use serde_json::{Value, json};
use tokenizer::{GgufVocab, GgufVocabError, Tokenizer, TokenizerError};

/// The GGUF keys for DeepSeek-V3, as the library derives them from the checkpoint's files.
fn v3_vocab() -> GgufVocab {
    let n = golden()["special"]["model_vocab_size"].as_u64().unwrap() as usize;
    GgufVocab::from_hf_dir(&root().join("assets/tokenizers/deepseek-v3"), Some(n)).unwrap()
}

/// The same keys written out by hand from tokenizer.json and tokenizer_config.json.
fn v3_vocab_by_hand() -> GgufVocab {
    let tj = read_json("assets/tokenizers/deepseek-v3/tokenizer.json");
    let cfg = read_json("assets/tokenizers/deepseek-v3/tokenizer_config.json");
    let n = golden()["special"]["model_vocab_size"].as_u64().unwrap() as usize;
    let mut tokens = vec![None; n];
    let mut types = vec![5; n];
    for (t, id) in tj["model"]["vocab"].as_object().unwrap() {
        let id = id.as_u64().unwrap() as usize;
        tokens[id] = Some(t.clone());
        types[id] = 1;
    }
    for a in tj["added_tokens"].as_array().unwrap() {
        let id = a["id"].as_u64().unwrap() as usize;
        tokens[id] = Some(a["content"].as_str().unwrap().to_string());
        types[id] = if a["special"].as_bool().unwrap() {
            3
        } else {
            4
        };
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| format!("[PAD{i}]")))
        .collect();
    let merges = tj["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            Value::String(s) => s.clone(),
            Value::Array(pair) => format!(
                "{} {}",
                pair[0].as_str().unwrap(),
                pair[1].as_str().unwrap()
            ),
            other => panic!("merge {other}"),
        })
        .collect();
    let id_of = |key: &str| {
        let content = cfg[key]["content"].as_str().unwrap();
        tokens.iter().position(|t| t == content).map(|i| i as u32)
    };
    GgufVocab {
        model: "gpt2".into(),
        pre: Some("deepseek-v3".into()),
        bos: id_of("bos_token"),
        eos: id_of("eos_token"),
        pad: id_of("pad_token"),
        add_bos: cfg["add_bos_token"].as_bool(),
        add_eos: cfg["add_eos_token"].as_bool(),
        chat_template: cfg["chat_template"].as_str().map(str::to_string),
        tokens,
        token_types: types,
        merges,
    }
}

/// The library's keys are the hand-made ones: every token, type and merge, the ids and flags.
#[test]
fn vocab_from_hf_dir_is_the_converters() {
    let (lib, hand) = (v3_vocab(), v3_vocab_by_hand());
    assert_eq!(lib.model, hand.model);
    assert_eq!(lib.pre.as_deref(), Some("deepseek-v3"));
    assert_eq!(lib.tokens, hand.tokens);
    assert_eq!(lib.token_types, hand.token_types);
    assert_eq!(lib.merges, hand.merges);
    assert_eq!(
        (lib.bos, lib.eos, lib.pad, lib.add_bos, lib.add_eos),
        (hand.bos, hand.eos, hand.pad, hand.add_bos, hand.add_eos)
    );
    assert_eq!((lib.bos, lib.eos), (Some(0), Some(1)));
    assert_eq!(lib.chat_template, hand.chat_template);
    assert!(lib.chat_template.is_some());
    // past the tokenizer's end, [PAD<id>] typed unused
    let last = lib.tokens.len() - 1;
    assert_eq!(lib.tokens[last], format!("[PAD{last}]"));
    assert_eq!(lib.token_types[last], 5);
    // without a model vocabulary size, the tokenizer's own
    let own = GgufVocab::from_hf_dir(&root().join("assets/tokenizers/deepseek-v3"), None).unwrap();
    assert!(own.tokens.len() < lib.tokens.len());
    assert_eq!(own.tokens[..], lib.tokens[..own.tokens.len()]);
}

/// A tokenizer.json whose parts GGUF metadata cannot name is refused, naming the part.
#[test]
fn vocab_from_hf_refuses_what_gguf_cannot_say() {
    let tj = read_json("assets/tokenizers/deepseek-v3/tokenizer.json");
    let cfg = read_json("assets/tokenizers/deepseek-v3/tokenizer_config.json");
    let p = std::path::Path::new("x/tokenizer.json");
    let c = std::path::Path::new("x/tokenizer_config.json");
    let from = |tj: &Value, n: Option<usize>| {
        GgufVocab::from_hf_parts(tj, Some(&cfg), None, n, p, c).map(|_| ())
    };
    from(&tj, None).unwrap();
    let mut gpt2 = tj.clone();
    gpt2["pre_tokenizer"] = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let e = from(&gpt2, None).unwrap_err().to_string();
    assert!(
        e.contains("x/tokenizer.json")
            && e.contains("pre_tokenizer")
            && e.contains("ByteLevel")
            && e.contains("deepseek-v3"),
        "{e}"
    );
    let e = from(&tj, Some(1000)).unwrap_err().to_string();
    assert!(e.contains("vocab_size is 1000"), "{e}");
    let mut nfc = tj.clone();
    nfc["normalizer"] = json!({"type": "NFC"});
    let e = from(&nfc, None).unwrap_err().to_string();
    assert!(e.contains("normalizer") && e.contains("NFC"), "{e}");
    let mut wp = tj.clone();
    wp["model"]["type"] = json!("WordPiece");
    let e = from(&wp, None).unwrap_err().to_string();
    assert!(e.contains("WordPiece"), "{e}");
    let mut bad_bos = cfg.clone();
    bad_bos["bos_token"] = json!("<nope>");
    let e = GgufVocab::from_hf_parts(&tj, Some(&bad_bos), None, None, p, c)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("x/tokenizer_config.json") && e.contains("<nope>"),
        "{e}"
    );
}

fn gguf() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_gguf_vocab(v3_vocab()).unwrap())
}

fn hf() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_dir(&root().join("assets/tokenizers/deepseek-v3")).unwrap())
}

#[test]
fn special_tokens_and_size_equal_python() {
    check_special(gguf());
}

#[test]
fn encodings_equal_python() {
    check_encodings(gguf());
}

#[test]
fn decodings_equal_python() {
    check_decodings(gguf());
}

#[test]
fn chat_templates_equal_python() {
    check_chat_templates(gguf());
}

/// Every id (the unused ones past the end too) has the same token string and decodes to the
/// same text, and added tokens written into text are matched whole, as from tokenizer.json.
#[test]
fn every_id_and_added_token_equals_tokenizer_json() {
    let (g, h) = (gguf(), hf());
    let n = golden()["special"]["model_vocab_size"].as_u64().unwrap() as u32;
    let all: Vec<u32> = (0..n).collect();
    assert_eq!(g.tokens(&all), h.tokens(&all));
    for chunk in all.chunks(997) {
        for skip in [true, false] {
            assert_eq!(
                g.decode(chunk, skip).unwrap(),
                h.decode(chunk, skip).unwrap()
            );
        }
    }
    assert_eq!(g.decode(&[129_000], false).unwrap(), "");
    let text = "<｜begin▁of▁sentence｜>hi<｜User｜>a<｜place▁holder▁no▁7｜>b<|EOT|> <｜tool▁sep｜>\n<｜fim▁hole｜>x";
    assert_eq!(g.encode(text, true).unwrap(), h.encode(text, true).unwrap());
    let i = g.encode(text, false).unwrap();
    assert!(i.contains(&128803) && i.contains(&128814) && i.contains(&128007));
    for skip in [true, false] {
        assert_eq!(g.decode(&i, skip).unwrap(), h.decode(&i, skip).unwrap());
    }
}

fn tiny() -> GgufVocab {
    GgufVocab {
        model: "gpt2".into(),
        pre: Some("deepseek-v3".into()),
        tokens: ["<s>", "[PAD1]", "a", "b", "ab", "<tool>", "</s>"]
            .map(String::from)
            .to_vec(),
        token_types: vec![3, 5, 1, 1, 1, 4, 3],
        merges: vec!["a b".into()],
        bos: Some(0),
        eos: Some(6),
        add_bos: Some(true),
        ..Default::default()
    }
}

/// Ids are kept where the vocabulary has gaps (an unused id in the middle); user-defined
/// tokens are matched whole but kept on decode; no template, no template.
#[test]
fn a_small_vocabulary_keeps_its_ids() {
    let t = Tokenizer::from_gguf_vocab(tiny()).unwrap();
    assert_eq!(
        t.encode("ab<tool>ba</s>", true).unwrap(),
        [0, 4, 5, 3, 2, 6]
    );
    assert_eq!(t.decode(&[0, 4, 5, 1, 6], true).unwrap(), "ab<tool>");
    assert_eq!(
        t.decode(&[0, 4, 5, 1, 6], false).unwrap(),
        "<s>ab<tool></s>"
    );
    assert_eq!(t.vocab_size(), 6);
    assert_eq!(t.eos_id, Some(6));
    let e = t
        .apply_chat_template(&json!([{"role": "user", "content": "hi"}]), None, true)
        .unwrap_err();
    assert!(matches!(e, TokenizerError::NoTemplate), "{e}");
    // no add_bos key: no BOS
    let t = Tokenizer::from_gguf_vocab(GgufVocab {
        add_bos: None,
        ..tiny()
    })
    .unwrap();
    assert_eq!(t.encode("ab", true).unwrap(), [4]);
}

fn err(v: GgufVocab) -> GgufVocabError {
    match Tokenizer::from_gguf_vocab(v) {
        Err(TokenizerError::Gguf(e)) => {
            let shown = TokenizerError::Gguf(e.clone()).to_string();
            assert!(shown.starts_with("GGUF tokenizer metadata: "), "{shown}");
            e
        }
        Err(other) => panic!("not a GGUF error: {other}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn bad_metadata_is_named() {
    use GgufVocabError::*;
    let e = err(GgufVocab {
        pre: Some("qwen2".into()),
        ..tiny()
    });
    assert_eq!(e, UnknownPre("qwen2".into()));
    assert!(e.to_string().contains("\"qwen2\"") && e.to_string().contains("deepseek-v3"));
    assert_eq!(
        err(GgufVocab {
            pre: None,
            ..tiny()
        }),
        MissingPre
    );
    let e = err(GgufVocab {
        model: "llama".into(),
        ..tiny()
    });
    assert_eq!(e, UnsupportedModel("llama".into()));
    assert!(e.to_string().contains("\"llama\""), "{e}");
    assert_eq!(
        err(GgufVocab {
            tokens: vec![],
            token_types: vec![],
            merges: vec![],
            bos: None,
            eos: None,
            add_bos: None,
            ..tiny()
        }),
        NoTokens
    );
    let e = err(GgufVocab {
        token_types: vec![1; 6],
        ..tiny()
    });
    assert_eq!(
        e,
        TokenTypeCount {
            tokens: 7,
            types: 6
        }
    );
    assert!(e.to_string().contains("6 entries") && e.to_string().contains("has 7"));
    let mut v = tiny();
    v.token_types[3] = 9;
    assert_eq!(
        err(v),
        UnknownTokenType {
            id: 3,
            token: "b".into(),
            value: 9
        }
    );
    let mut v = tiny();
    v.token_types[3] = 6;
    assert_eq!(
        err(v),
        ByteToken {
            id: 3,
            token: "b".into()
        }
    );
    let mut v = tiny();
    v.tokens[5] = "a".into();
    assert_eq!(
        err(v),
        DuplicateToken {
            token: "a".into(),
            first: 2,
            second: 5
        }
    );
    // a duplicate among unused tokens does not matter
    let mut v = tiny();
    v.tokens[1] = "a".into();
    Tokenizer::from_gguf_vocab(v).unwrap();
    for bad in ["ab", "a ", " "] {
        assert_eq!(
            err(GgufVocab {
                merges: vec!["a b".into(), bad.into()],
                ..tiny()
            }),
            MalformedMerge {
                index: 1,
                merge: bad.into()
            }
        );
    }
    let e = err(GgufVocab {
        merges: vec!["a c".into()],
        ..tiny()
    });
    assert_eq!(
        e,
        MergeUnknownToken {
            index: 0,
            merge: "a c".into(),
            token: "c".into()
        }
    );
    assert!(e.to_string().contains("\"c\""), "{e}");
    // a merge naming an unused token names a token that is not there
    assert!(matches!(
        err(GgufVocab {
            merges: vec!["[PAD1] a".into()],
            ..tiny()
        }),
        MergeUnknownToken { token, .. } if token == "[PAD1]"
    ));
    assert_eq!(
        err(GgufVocab {
            merges: vec!["b a".into()],
            ..tiny()
        }),
        MergeUnknownResult {
            index: 0,
            merge: "b a".into(),
            token: "ba".into()
        }
    );
    let e = err(GgufVocab {
        eos: Some(7),
        ..tiny()
    });
    assert_eq!(
        e,
        SpecialIdOutOfRange {
            key: "eos_token_id",
            id: 7,
            count: 7
        }
    );
    assert!(
        e.to_string().contains("tokenizer.ggml.eos_token_id is 7"),
        "{e}"
    );
    assert_eq!(
        err(GgufVocab {
            pad: Some(1),
            ..tiny()
        }),
        SpecialIdUnused {
            key: "padding_token_id",
            id: 1
        }
    );
    assert_eq!(
        err(GgufVocab {
            bos: None,
            ..tiny()
        }),
        AddWithoutId { which: "bos" }
    );
    assert_eq!(
        err(GgufVocab {
            add_eos: Some(true),
            eos: None,
            ..tiny()
        }),
        AddWithoutId { which: "eos" }
    );
    // a template that does not parse is the template's error
    let e = Tokenizer::from_gguf_vocab(GgufVocab {
        chat_template: Some("{% for m in messages %}".into()),
        ..tiny()
    })
    .err()
    .unwrap();
    assert!(
        matches!(e, TokenizerError::Template(_)) && e.to_string().contains("does not parse"),
        "{e}"
    );
}

/// The other DeepSeek pre-tokenizers build and encode.
#[test]
fn deepseek_llm_and_coder_build() {
    for pre in ["deepseek-llm", "deepseek-coder"] {
        let t = Tokenizer::from_gguf_vocab(GgufVocab {
            pre: Some(pre.into()),
            ..tiny()
        })
        .unwrap();
        assert_eq!(t.encode("ab<tool>", false).unwrap(), [4, 5], "{pre}");
    }
}
