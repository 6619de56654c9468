//! A tokenizer from the tokenizer metadata of a llama.cpp GGUF file.
//!
//! The GGUF keeps what `tokenizer.json` holds, flattened: the token strings by id, a type per
//! token, the BPE merges, the special ids and a name (`tokenizer.ggml.pre`) for the
//! pre-tokenizer. From these this module writes the `tokenizer.json` that the name stands for
//! and loads it through the `tokenizers` crate, like any other, so a GGUF model encodes and
//! decodes as its Hugging Face checkpoint does.
//!
//! The GGUF cannot say everything `tokenizer.json` says. llama.cpp's converter writes every
//! added token that looks special (`<｜...｜>`, `<|...|>`) as a control token, whatever its
//! `special` flag was; a control token is a special token here, so it is skipped when decoding
//! with `skip_special`. For DeepSeek-V3 that covers `<｜User｜>`, `<｜Assistant｜>` and the
//! tool-call markers, which transformers (and this crate reading `tokenizer.json`) keeps.
//! Encoding is unaffected.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value, json};
use thiserror::Error;

use crate::{HfFiles, Result, Tokenizer, TokenizerError, chat_template_of, config_token};

/// The tokenizer keys of a GGUF file (`tokenizer.ggml.*`, `tokenizer.chat_template`).
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: `"gpt2"` (byte-level BPE) for the DeepSeek family.
    pub model: String,
    /// `tokenizer.ggml.pre`: `"deepseek-v3"`, `"deepseek-llm"` (V2) or `"deepseek-coder"`.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`, indexed by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`, one per token (see [`TokenType`]).
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges`, `"left right"` each, highest priority first.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`; absent means no (llama.cpp's default for BPE).
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`; absent means no.
    pub add_eos: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

/// llama.cpp's `llama_token_type`, the values of `tokenizer.ggml.token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

impl TokenType {
    pub fn from_gguf(value: i32) -> Option<TokenType> {
        Some(match value {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => return None,
        })
    }
}

/// What is wrong with a GGUF's tokenizer metadata.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GgufVocabError {
    #[error(
        "tokenizer.ggml.model is {0:?}; only \"gpt2\" (byte-level BPE, the DeepSeek family's) is supported"
    )]
    UnsupportedModel(String),
    #[error(
        "tokenizer.ggml.pre is {0:?}, which this build does not know; supported: {SUPPORTED_PRE}"
    )]
    UnknownPre(String),
    #[error(
        "tokenizer.ggml.pre is missing, so the pre-tokenizer is unknown (supported: {SUPPORTED_PRE}); reconvert the model with a current llama.cpp"
    )]
    MissingPre,
    #[error("tokenizer.ggml.tokens is empty")]
    NoTokens,
    #[error("{0} tokens is more than token ids can number")]
    TooManyTokens(usize),
    #[error("tokenizer.ggml.token_type has {types} entries but tokenizer.ggml.tokens has {tokens}")]
    TokenTypeCount { tokens: usize, types: usize },
    #[error(
        "token {id} ({token:?}) has type {value}, which is not a llama.cpp token type (1 to 6)"
    )]
    UnknownTokenType { id: u32, token: String, value: i32 },
    #[error(
        "token {id} ({token:?}) is a byte token (type 6), which SentencePiece vocabularies have, not byte-level BPE"
    )]
    ByteToken { id: u32, token: String },
    #[error("token {token:?} appears twice, as ids {first} and {second}")]
    DuplicateToken {
        token: String,
        first: u32,
        second: u32,
    },
    #[error("merge {index} ({merge:?}) is not two tokens separated by a space")]
    MalformedMerge { index: usize, merge: String },
    #[error("merge {index} ({merge:?}) names {token:?}, which is not a token of the vocabulary")]
    MergeUnknownToken {
        index: usize,
        merge: String,
        token: String,
    },
    #[error("merge {index} ({merge:?}) makes {token:?}, which is not a token of the vocabulary")]
    MergeUnknownResult {
        index: usize,
        merge: String,
        token: String,
    },
    #[error("tokenizer.ggml.{key} is {id}, past the vocabulary's {count} tokens")]
    SpecialIdOutOfRange {
        key: &'static str,
        id: u32,
        count: usize,
    },
    #[error("tokenizer.ggml.{key} is {id}, which is marked unused (type 5)")]
    SpecialIdUnused { key: &'static str, id: u32 },
    #[error(
        "tokenizer.ggml.add_{which}_token is true but tokenizer.ggml.{which}_token_id is not set"
    )]
    AddWithoutId { which: &'static str },
    #[error("the tokenizers library rejected the tokenizer built from it: {0}")]
    Rejected(String),
}

const SUPPORTED_PRE: &str = "deepseek-v3, deepseek-llm, deepseek-coder";

type VocabResult<T> = std::result::Result<T, GgufVocabError>;

impl Tokenizer {
    /// The tokenizer a GGUF file's metadata describes: byte-level BPE with the pre-tokenizer
    /// its `tokenizer.ggml.pre` names, control and user-defined tokens as added tokens (control
    /// ones special), BOS/EOS added as `add_bos`/`add_eos` say, and the chat template.
    pub fn from_gguf_vocab(v: GgufVocab) -> Result<Tokenizer> {
        let spec = tokenizer_json(&v)?;
        let inner: tokenizers::Tokenizer =
            serde_json::from_value(spec).map_err(|e| GgufVocabError::Rejected(e.to_string()))?;
        let token = |id: Option<u32>| id.map(|i| v.tokens[i as usize].clone());
        Tokenizer::assemble(
            inner,
            token(v.bos),
            token(v.eos),
            v.add_bos.unwrap_or(false),
            v.add_eos.unwrap_or(false),
            v.chat_template,
        )
    }
}

impl GgufVocab {
    /// The GGUF tokenizer keys for a Hugging Face tokenizer directory (`tokenizer.json`,
    /// `tokenizer_config.json`, `chat_template.jinja`), the inverse of
    /// [`Tokenizer::from_gguf_vocab`]: the tokens by id, padded to `vocab_size` (the model's,
    /// when it has more rows than the tokenizer has tokens) with `[PAD<id>]` typed unused;
    /// special added tokens typed control, other added tokens user-defined, the rest normal;
    /// merges as `"left right"`; BOS/EOS/padding ids, `add_bos_token`/`add_eos_token` and the
    /// chat template from the config; `pre` named by matching the pre-tokenizer against the
    /// ones this crate knows (an error names one that is none of them).
    ///
    /// llama.cpp's converter also types every added token that looks special (`<｜...｜>`,
    /// `<|...|>`) control whatever its flag; this keeps the flag, so that a tokenizer read
    /// back decodes (skipping special tokens) exactly as `tokenizer.json` does.
    pub fn from_hf_dir(dir: &Path, vocab_size: Option<usize>) -> Result<GgufVocab> {
        let f = HfFiles::read(dir)?;
        let tj: Value =
            serde_json::from_slice(&f.tokenizer_json).map_err(|e| TokenizerError::File {
                path: f.tokenizer_path.clone(),
                reason: format!("not valid JSON: {e}"),
            })?;
        Self::from_hf_parts(
            &tj,
            f.config.as_ref(),
            f.template_file,
            vocab_size,
            &f.tokenizer_path,
            &f.config_path,
        )
    }

    /// [`GgufVocab::from_hf_dir`] from the parsed files; the paths only name them in errors.
    pub fn from_hf_parts(
        tokenizer_json: &Value,
        config: Option<&Value>,
        template_override: Option<String>,
        vocab_size: Option<usize>,
        tokenizer_path: &Path,
        config_path: &Path,
    ) -> Result<GgufVocab> {
        let bad = |reason: String| TokenizerError::File {
            path: tokenizer_path.to_path_buf(),
            reason,
        };
        let model = &tokenizer_json["model"];
        match model.get("type").and_then(Value::as_str) {
            Some("BPE") => {}
            other => {
                return Err(bad(format!(
                    "model.type is {}; only byte-level BPE (\"BPE\") can be written as GGUF \"gpt2\"",
                    other.map_or("missing".into(), |t| format!("{t:?}"))
                )));
            }
        }
        if model.get("byte_fallback").and_then(Value::as_bool) == Some(true) {
            return Err(bad(
                "model.byte_fallback is true (a SentencePiece-style BPE), not byte-level BPE"
                    .into(),
            ));
        }
        match &tokenizer_json["normalizer"] {
            Value::Null => {}
            n if n["type"] == "Sequence"
                && n["normalizers"].as_array().is_some_and(|a| a.is_empty()) => {}
            n => {
                return Err(bad(format!(
                    "the normalizer {} cannot be expressed in GGUF tokenizer metadata (only none)",
                    short(n)
                )));
            }
        }
        let pre = pre_name(&tokenizer_json["pre_tokenizer"]).map_err(bad)?;

        let mut by_id: Vec<Option<(String, i32)>> = Vec::new();
        let mut put = |id: u64, token: &str, ty: TokenType| {
            let id = id as usize;
            if id >= by_id.len() {
                by_id.resize(id + 1, None);
            }
            by_id[id] = Some((token.to_string(), ty as i32));
        };
        let vocab = model["vocab"]
            .as_object()
            .ok_or_else(|| bad("model.vocab is not an object of token -> id".into()))?;
        for (token, id) in vocab {
            let id = id
                .as_u64()
                .filter(|&i| i < u32::MAX as u64)
                .ok_or_else(|| bad(format!("model.vocab[{token:?}] is {id}, not a token id")))?;
            put(id, token, TokenType::Normal);
        }
        let added = match &tokenizer_json["added_tokens"] {
            Value::Null => &[][..],
            Value::Array(a) => a.as_slice(),
            other => return Err(bad(format!("added_tokens is {}, not a list", short(other)))),
        };
        for a in added {
            let (Some(id), Some(content)) = (
                a["id"].as_u64().filter(|&i| i < u32::MAX as u64),
                a["content"].as_str(),
            ) else {
                return Err(bad(format!(
                    "added token {} has no id or content",
                    short(a)
                )));
            };
            let ty = if a["special"].as_bool() == Some(true) {
                TokenType::Control
            } else {
                TokenType::UserDefined
            };
            put(id, content, ty);
        }
        let n = match vocab_size {
            Some(n) if n < by_id.len() => {
                return Err(bad(format!(
                    "it has token id {} but the model's vocab_size is {n}",
                    by_id.len() - 1
                )));
            }
            Some(n) => n,
            None => by_id.len(),
        };
        by_id.resize(n, None);
        let (tokens, token_types): (Vec<String>, Vec<i32>) = by_id
            .into_iter()
            .enumerate()
            .map(|(i, t)| t.unwrap_or_else(|| (format!("[PAD{i}]"), TokenType::Unused as i32)))
            .unzip();

        let merges = match &model["merges"] {
            Value::Null => Vec::new(),
            Value::Array(list) => list
                .iter()
                .enumerate()
                .map(|(i, m)| match m {
                    Value::String(s) => Ok(s.clone()),
                    Value::Array(pair) => match pair.as_slice() {
                        [Value::String(l), Value::String(r)] => Ok(format!("{l} {r}")),
                        _ => Err(bad(format!("merge {i} is {}, not two tokens", short(m)))),
                    },
                    _ => Err(bad(format!("merge {i} is {}, not two tokens", short(m)))),
                })
                .collect::<Result<_>>()?,
            other => return Err(bad(format!("model.merges is {}, not a list", short(other)))),
        };

        let mut ids: HashMap<&str, u32> = HashMap::new();
        for (i, (t, &ty)) in tokens.iter().zip(&token_types).enumerate().rev() {
            if ty != TokenType::Unused as i32 {
                ids.insert(t, i as u32);
            }
        }
        // added tokens win over a vocabulary entry of the same text, as in `tokenizers`
        for a in added {
            if let (Some(id), Some(c)) = (a["id"].as_u64(), a["content"].as_str()) {
                ids.insert(c, id as u32);
            }
        }
        let special = |key: &str, required: bool| -> Result<Option<u32>> {
            let Some(text) = config_token(config, key) else {
                return Ok(None);
            };
            match ids.get(text.as_str()) {
                Some(&id) => Ok(Some(id)),
                None if required => Err(TokenizerError::File {
                    path: config_path.to_path_buf(),
                    reason: format!("{key} is {text:?}, which tokenizer.json does not have"),
                }),
                None => Ok(None),
            }
        };
        let flag = |k: &str| config.and_then(|c| c.get(k)).and_then(Value::as_bool);
        Ok(GgufVocab {
            model: "gpt2".into(),
            pre: Some(pre.to_string()),
            bos: special("bos_token", true)?,
            eos: special("eos_token", true)?,
            pad: special("pad_token", false)?,
            add_bos: flag("add_bos_token"),
            add_eos: flag("add_eos_token"),
            chat_template: chat_template_of(config, template_override, config_path)?,
            tokens,
            token_types,
            merges,
        })
    }
}

/// A JSON value for an error message, cut short.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(160) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s,
    }
}

/// The `tokenizer.ggml.pre` whose pre-tokenizer `pre` is: the same steps (type, pattern,
/// behaviour, digit splitting) in the same order.
fn pre_name(pre: &Value) -> std::result::Result<&'static str, String> {
    fn steps(v: &Value) -> Vec<Value> {
        let list = match v["type"].as_str() {
            Some("Sequence") => v["pretokenizers"].as_array().cloned().unwrap_or_default(),
            _ => vec![v.clone()],
        };
        list.iter()
            .map(|s| {
                json!([
                    s["type"],
                    s["pattern"],
                    s["behavior"],
                    s["invert"],
                    s["individual_digits"]
                ])
            })
            .collect()
    }
    let have = steps(pre);
    for name in SUPPORTED_PRE.split(", ") {
        if let Ok(known) = pre_tokenizer(Some(name))
            && steps(&known) == have
        {
            return Ok(name);
        }
    }
    Err(format!(
        "its pre_tokenizer {} is none that GGUF metadata can name (supported: {SUPPORTED_PRE})",
        short(pre)
    ))
}

/// The `tokenizer.json` (as a JSON value) that `v` describes, after checking `v` through.
pub(crate) fn tokenizer_json(v: &GgufVocab) -> VocabResult<Value> {
    if v.model != "gpt2" {
        return Err(GgufVocabError::UnsupportedModel(v.model.clone()));
    }
    let pre_tokenizer = pre_tokenizer(v.pre.as_deref())?;
    if v.tokens.is_empty() {
        return Err(GgufVocabError::NoTokens);
    }
    if u32::try_from(v.tokens.len()).is_err() {
        return Err(GgufVocabError::TooManyTokens(v.tokens.len()));
    }
    if v.token_types.len() != v.tokens.len() {
        return Err(GgufVocabError::TokenTypeCount {
            tokens: v.tokens.len(),
            types: v.token_types.len(),
        });
    }

    // Every token but the unused ones goes in the BPE vocabulary under its own id, added
    // tokens included: `tokenizers` numbers an added token that the model lacks after the
    // model's last id, which would renumber any vocabulary with gaps.
    let mut ids: HashMap<&str, u32> = HashMap::with_capacity(v.tokens.len());
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (i, (token, &value)) in v.tokens.iter().zip(&v.token_types).enumerate() {
        let id = i as u32;
        let ty = TokenType::from_gguf(value).ok_or_else(|| GgufVocabError::UnknownTokenType {
            id,
            token: token.clone(),
            value,
        })?;
        let special = match ty {
            TokenType::Unused => continue,
            TokenType::Byte => {
                return Err(GgufVocabError::ByteToken {
                    id,
                    token: token.clone(),
                });
            }
            TokenType::Normal => None,
            TokenType::Control | TokenType::Unknown => Some(true),
            TokenType::UserDefined => Some(false),
        };
        if let Some(first) = ids.insert(token, id) {
            return Err(GgufVocabError::DuplicateToken {
                token: token.clone(),
                first,
                second: id,
            });
        }
        vocab.insert(token.clone(), json!(id));
        if let Some(special) = special {
            // as transformers writes them: special tokens match the raw text, others the
            // normalized text (the same here, the normalizer does nothing)
            added.push(json!({
                "id": id,
                "content": token,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": !special,
                "special": special,
            }));
        }
    }

    let mut merges = Vec::with_capacity(v.merges.len());
    for (index, merge) in v.merges.iter().enumerate() {
        // llama.cpp splits at the first space after the first byte, so a left part may be a
        // lone space
        let split = merge
            .char_indices()
            .skip(1)
            .find(|&(_, c)| c == ' ')
            .map(|(at, _)| (&merge[..at], &merge[at + 1..]));
        let (left, right) = match split {
            Some((l, r)) if !r.is_empty() => (l, r),
            _ => {
                return Err(GgufVocabError::MalformedMerge {
                    index,
                    merge: merge.clone(),
                });
            }
        };
        for part in [left, right] {
            if !ids.contains_key(part) {
                return Err(GgufVocabError::MergeUnknownToken {
                    index,
                    merge: merge.clone(),
                    token: part.to_string(),
                });
            }
        }
        let joined = format!("{left}{right}");
        if !ids.contains_key(joined.as_str()) {
            return Err(GgufVocabError::MergeUnknownResult {
                index,
                merge: merge.clone(),
                token: joined,
            });
        }
        merges.push(json!([left, right]));
    }

    for (key, id) in [
        ("bos_token_id", v.bos),
        ("eos_token_id", v.eos),
        ("padding_token_id", v.pad),
    ] {
        let Some(id) = id else { continue };
        match v.token_types.get(id as usize) {
            None => {
                return Err(GgufVocabError::SpecialIdOutOfRange {
                    key,
                    id,
                    count: v.tokens.len(),
                });
            }
            Some(&t) if t == TokenType::Unused as i32 => {
                return Err(GgufVocabError::SpecialIdUnused { key, id });
            }
            Some(_) => {}
        }
    }
    if v.add_bos == Some(true) && v.bos.is_none() {
        return Err(GgufVocabError::AddWithoutId { which: "bos" });
    }
    if v.add_eos == Some(true) && v.eos.is_none() {
        return Err(GgufVocabError::AddWithoutId { which: "eos" });
    }

    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": []},
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {
            "type": "ByteLevel",
            "add_prefix_space": true,
            "trim_offsets": false,
            "use_regex": true,
        },
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": true,
            "trim_offsets": true,
            "use_regex": true,
        },
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges,
        },
    }))
}

/// The pre-tokenizer of each `tokenizer.ggml.pre`, as the model's own `tokenizer.json` has it
/// (llama.cpp's `llama-vocab.cpp` carries the same regexes).
fn pre_tokenizer(pre: Option<&str>) -> VocabResult<Value> {
    let split = |regex: &str| {
        json!({
            "type": "Split",
            "pattern": {"Regex": regex},
            "behavior": "Isolated",
            "invert": false,
        })
    };
    // Where llama.cpp splits off `\p{N}+` (deepseek-llm) or `\p{N}` (deepseek-coder), the
    // checkpoints' tokenizer.json isolates every digit; their vocabularies have no token of two
    // digits, so the two agree.
    let digits = json!({"type": "Digits", "individual_digits": true});
    let mut steps = match pre {
        None => return Err(GgufVocabError::MissingPre),
        Some("deepseek-v3") => vec![
            split(r"\p{N}{1,3}"),
            split("[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+"),
            split(concat!(
                r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+"##,
                "|[^\r\n",
                r"\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+",
                "[\r\n]*|",
                r"\s*",
                "[\r\n]+|",
                r"\s+(?!\S)|\s+",
            )),
        ],
        Some("deepseek-llm") => vec![
            split("[\r\n]"),
            split(DEEPSEEK_LLM_LETTERS),
            split(
                "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+",
            ),
            split(r"\s+$"),
            split(CJK_HANGUL),
            digits,
        ],
        Some("deepseek-coder") => vec![
            split("[\r\n]"),
            split(r"\s?\p{L}+"),
            split(r"\s?\p{P}+"),
            split(CJK_HANGUL),
            digits,
        ],
        Some(other) => return Err(GgufVocabError::UnknownPre(other.to_string())),
    };
    steps.push(json!({
        "type": "ByteLevel",
        "add_prefix_space": false,
        "trim_offsets": true,
        "use_regex": false,
    }));
    Ok(json!({"type": "Sequence", "pretokenizers": steps}))
}

/// CJK ideographs, everything from Samaritan up to them, Hangul (deepseek-llm, deepseek-coder).
const CJK_HANGUL: &str = "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+";

/// deepseek-llm's words: an optional whitespace and a run of cased letters. Written with
/// escapes because several range ends (U+1F7D, U+1FBE, U+1FD3, U+1FDB, U+2126, U+212A) are
/// characters that Unicode normalization (NFC) replaces with look-alikes, which would empty or
/// widen their ranges; llama.cpp's copy has suffered exactly that.
const DEEPSEEK_LLM_LETTERS: &str = concat!(
    "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}",
    "\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}",
    "\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}",
    "\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}",
    "\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}",
    "\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}",
    "\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}",
    "\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}",
    "\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}",
    "\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}",
    "\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}",
    "\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}",
    "\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}",
    "\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}",
    "\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}",
    "\u{1E900}-\u{1E943}]+",
);

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::pre_tokenizers::PreTokenizerWrapper;
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

    /// The pieces `pre` cuts `text` into, as slices of `text`.
    fn pieces(pre: &str, text: &str) -> Vec<String> {
        let p: PreTokenizerWrapper = serde_json::from_value(pre_tokenizer(Some(pre)).unwrap())
            .expect("the pre-tokenizer deserializes");
        let mut s = PreTokenizedString::from(text);
        p.pre_tokenize(&mut s).unwrap();
        s.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(_, (a, b), _)| text[a..b].to_string())
            .collect()
    }

    #[test]
    fn deepseek_v3_is_the_checkpoints_own() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../assets/tokenizers/deepseek-v3/tokenizer.json"
        );
        let hf: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let tiny = GgufVocab {
            model: "gpt2".into(),
            pre: Some("deepseek-v3".into()),
            tokens: vec!["a".into()],
            token_types: vec![1],
            ..Default::default()
        };
        let ours = tokenizer_json(&tiny).unwrap();
        for key in ["normalizer", "pre_tokenizer", "post_processor", "decoder"] {
            assert_eq!(ours[key], hf[key], "{key}");
        }
        for (key, value) in hf["model"].as_object().unwrap() {
            if key != "vocab" && key != "merges" {
                assert_eq!(&ours["model"][key], value, "model.{key}");
            }
        }
    }

    #[test]
    fn deepseek_llm_pieces() {
        assert_eq!(
            pieces("deepseek-llm", "Hello world, 2024 αβγ\n  end"),
            [
                "Hello", " world", ",", " ", "2", "0", "2", "4", " αβγ", "\n", " ", " end"
            ]
        );
        // ASCII letters are also in the punctuation class that splits next (`:-~`), and
        // everything from U+0800 to U+4E00 in the CJK class after it
        assert_eq!(
            pieces("deepseek-llm", "x\u{3B1} \u{1F7D}"),
            ["x", "\u{3B1}", " ", "\u{1F7D}"]
        );
    }

    #[test]
    fn deepseek_llm_letters_are_the_cased_letters_of_its_tokenizer() {
        let letters = |text: &str| -> Vec<String> {
            let split = json!({"type": "Sequence", "pretokenizers": [{
                "type": "Split",
                "pattern": {"Regex": DEEPSEEK_LLM_LETTERS},
                "behavior": "Isolated",
                "invert": false,
            }]});
            let p: PreTokenizerWrapper = serde_json::from_value(split).unwrap();
            let mut s = PreTokenizedString::from(text);
            p.pre_tokenize(&mut s).unwrap();
            s.get_splits(OffsetReferential::Original, OffsetType::Byte)
                .into_iter()
                .map(|(_, (a, b), _)| text[a..b].to_string())
                .collect()
        };
        // range ends that normalization would change are letters (U+1F7D, U+1FBE, U+1FD3,
        // U+1FDB, U+2126, U+212A), and so are the ranges they end
        let greek = " \u{3B1}\u{1F7D}\u{1F70}\u{1FBE}\u{1FD3}\u{1FDB}\u{2126}\u{212A}\u{212D}";
        assert_eq!(letters(greek), [greek]);
        // not cased letters: Latin-1 symbols (inside K-\u{212D} were K the ASCII K), a glottal
        // stop (Lo), an Armenian small letter (left out upstream), a symbol between ranges
        assert_eq!(
            letters("a\u{BF}b\u{D7}c\u{294}d\u{561}e\u{2125}f"),
            [
                "a", "\u{BF}", "b", "\u{D7}", "c", "\u{294}", "d", "\u{561}", "e", "\u{2125}", "f"
            ]
        );
    }

    #[test]
    fn deepseek_llm_cjk() {
        assert_eq!(
            pieces("deepseek-llm", "中文 한국어！"),
            ["中文", " ", "한국어", "！"]
        );
    }

    #[test]
    fn deepseek_coder_pieces() {
        assert_eq!(
            pieces("deepseek-coder", "def f(x):\n  return 42"),
            [
                "def", " f", "(", "x", "):", "\n", " ", " return", " ", "4", "2"
            ]
        );
    }

    #[test]
    fn unknown_or_missing_pre_is_refused() {
        assert_eq!(
            pre_tokenizer(Some("llama-bpe")).unwrap_err(),
            GgufVocabError::UnknownPre("llama-bpe".into())
        );
        assert_eq!(pre_tokenizer(None).unwrap_err(), GgufVocabError::MissingPre);
    }
}
