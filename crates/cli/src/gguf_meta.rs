//! A GGUF file's tokenizer metadata as a [`GgufVocab`], and a [`GgufVocab`] as the metadata
//! llama.cpp's converter writes (`tokenizer.ggml.*`, `tokenizer.chat_template`).

use anyhow::{Context, Result, bail};
use loader::gguf::{GgufFile, GgufValue};
use tokenizer::{GgufVocab, Tokenizer};

const MODEL: &str = "tokenizer.ggml.model";
const PRE: &str = "tokenizer.ggml.pre";
const TOKENS: &str = "tokenizer.ggml.tokens";
const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
const MERGES: &str = "tokenizer.ggml.merges";
const BOS: &str = "tokenizer.ggml.bos_token_id";
const EOS: &str = "tokenizer.ggml.eos_token_id";
const PAD: &str = "tokenizer.ggml.padding_token_id";
const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
const TEMPLATE: &str = "tokenizer.chat_template";

/// Whether `g` has tokenizer metadata at all.
pub fn has_vocab(g: &GgufFile) -> bool {
    g.get(MODEL).is_some() || g.get(TOKENS).is_some()
}

/// The tokenizer keys of `g`; `None` when it has none (neither a model nor tokens). A key of
/// the wrong type, or tokens without the rest, is an error naming the key and the file.
pub fn vocab_from_gguf(g: &GgufFile) -> Result<Option<GgufVocab>> {
    if !has_vocab(g) {
        return Ok(None);
    }
    let file = g.path.display();
    let wrong = |key: &str, want: &str| {
        anyhow::anyhow!("{file}: {key} is {}, expected {want}", describe(g.get(key)))
    };
    let string = |key: &str| -> Result<Option<String>> {
        match g.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| wrong(key, "a string")),
        }
    };
    let id = |key: &str| -> Result<Option<u32>> {
        match g.get(key) {
            None => Ok(None),
            Some(v) => v.as_u32().map(Some).ok_or_else(|| wrong(key, "a token id")),
        }
    };
    let flag = |key: &str| -> Result<Option<bool>> {
        match g.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| wrong(key, "a bool")),
        }
    };
    let strings = |key: &str| -> Result<Option<Vec<String>>> {
        match g.get(key) {
            None => Ok(None),
            Some(_) => g
                .get_str_array(key)
                .map(|a| Some(a.into_iter().map(str::to_string).collect()))
                .ok_or_else(|| wrong(key, "an array of strings")),
        }
    };
    let model = string(MODEL)?.with_context(|| format!("{file}: {MODEL} is missing"))?;
    let tokens = strings(TOKENS)?.with_context(|| format!("{file}: {TOKENS} is missing"))?;
    // llama.cpp takes every token as normal when the types are absent
    let token_types = match g.get(TOKEN_TYPE) {
        None => vec![1; tokens.len()],
        Some(_) => g
            .get_i32_array(TOKEN_TYPE)
            .ok_or_else(|| wrong(TOKEN_TYPE, "an array of integers"))?,
    };
    let merges = match strings(MERGES)? {
        Some(m) => m,
        None if model == "gpt2" => {
            bail!("{file}: {MERGES} is missing, which a BPE (\"gpt2\") tokenizer needs")
        }
        None => Vec::new(),
    };
    Ok(Some(GgufVocab {
        model,
        pre: string(PRE)?,
        tokens,
        token_types,
        merges,
        bos: id(BOS)?,
        eos: id(EOS)?,
        pad: id(PAD)?,
        add_bos: flag(ADD_BOS)?,
        add_eos: flag(ADD_EOS)?,
        chat_template: string(TEMPLATE)?,
    }))
}

/// The tokenizer `g`'s metadata describes, if it has any.
pub fn tokenizer_from_gguf(g: &GgufFile) -> Result<Option<Tokenizer>> {
    match vocab_from_gguf(g)? {
        None => Ok(None),
        Some(v) => Ok(Some(
            Tokenizer::from_gguf_vocab(v).with_context(|| g.path.display().to_string())?,
        )),
    }
}

/// `v` as GGUF metadata, keys and value types as llama.cpp's converter writes them.
pub fn vocab_metadata(v: &GgufVocab) -> Vec<(String, GgufValue)> {
    let mut m = vec![
        (MODEL.to_string(), GgufValue::String(v.model.clone())),
        (TOKENS.to_string(), GgufValue::from_strs(&v.tokens)),
        (TOKEN_TYPE.to_string(), GgufValue::from_i32s(&v.token_types)),
        (MERGES.to_string(), GgufValue::from_strs(&v.merges)),
    ];
    if let Some(p) = &v.pre {
        m.insert(1, (PRE.to_string(), GgufValue::String(p.clone())));
    }
    for (key, id) in [(BOS, v.bos), (EOS, v.eos), (PAD, v.pad)] {
        if let Some(id) = id {
            m.push((key.to_string(), GgufValue::U32(id)));
        }
    }
    for (key, b) in [(ADD_BOS, v.add_bos), (ADD_EOS, v.add_eos)] {
        if let Some(b) = b {
            m.push((key.to_string(), GgufValue::Bool(b)));
        }
    }
    if let Some(t) = &v.chat_template {
        m.push((TEMPLATE.to_string(), GgufValue::String(t.clone())));
    }
    m
}

/// A metadata value for an error message: its type, and the value if it is short.
fn describe(v: Option<&GgufValue>) -> String {
    match v {
        None => "missing".into(),
        Some(GgufValue::Array(a)) => format!("an array of {} {:?}", a.len(), a.elem()),
        Some(GgufValue::String(s)) if s.len() > 60 => "a long string".into(),
        Some(other) => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loader::gguf::{GgufType, write_gguf};

    fn golden_vocab() -> GgufVocab {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/v3_yarn_mtp");
        GgufVocab::from_hf_dir(&dir, Some(320)).unwrap()
    }

    fn write(meta: &[(String, GgufValue)]) -> (tempfile::TempDir, GgufFile) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.gguf");
        write_gguf(&p, meta, &[]).unwrap();
        let g = GgufFile::open(&p).unwrap();
        (dir, g)
    }

    /// Written as metadata and read back, a vocabulary is the same, key for key.
    #[test]
    fn metadata_round_trips() {
        let v = golden_vocab();
        let meta = vocab_metadata(&v);
        let (_d, g) = write(&meta);
        assert_eq!(g.get(TOKEN_TYPE).unwrap().ty(), GgufType::Array);
        assert!(matches!(
            g.get(TOKEN_TYPE),
            Some(GgufValue::Array(a)) if a.elem() == GgufType::I32
        ));
        assert!(matches!(g.get(BOS), Some(GgufValue::U32(0))));
        assert!(matches!(g.get(ADD_BOS), Some(GgufValue::Bool(true))));
        let back = vocab_from_gguf(&g).unwrap().unwrap();
        assert_eq!(back.model, "gpt2");
        assert_eq!(back.pre.as_deref(), Some("deepseek-v3"));
        assert_eq!(back.tokens, v.tokens);
        assert_eq!(back.token_types, v.token_types);
        assert_eq!(back.merges, v.merges);
        assert_eq!(
            (back.bos, back.eos, back.pad, back.add_bos, back.add_eos),
            (v.bos, v.eos, v.pad, v.add_bos, v.add_eos)
        );
        assert_eq!(back.chat_template, v.chat_template);
        let t = tokenizer_from_gguf(&g).unwrap().unwrap();
        assert_eq!(t.encode("Hello world", true).unwrap()[0], 0);
    }

    #[test]
    fn no_metadata_is_none_and_bad_metadata_is_named() {
        let (_d, g) = write(&[("general.name".into(), GgufValue::String("x".into()))]);
        assert!(vocab_from_gguf(&g).unwrap().is_none());
        assert!(tokenizer_from_gguf(&g).unwrap().is_none());

        let mut meta = vocab_metadata(&golden_vocab());
        meta.retain(|(k, _)| k != MERGES);
        let (_d, g) = write(&meta);
        let e = vocab_from_gguf(&g).unwrap_err().to_string();
        assert!(e.contains("t.gguf") && e.contains(MERGES), "{e}");

        let mut meta = vocab_metadata(&golden_vocab());
        meta.retain(|(k, _)| k != BOS);
        meta.push((BOS.into(), GgufValue::String("0".into())));
        let (_d, g) = write(&meta);
        let e = vocab_from_gguf(&g).unwrap_err().to_string();
        assert!(e.contains(BOS) && e.contains("expected a token id"), "{e}");

        let mut meta = vocab_metadata(&golden_vocab());
        meta.retain(|(k, _)| k != PRE);
        meta.push((PRE.into(), GgufValue::String("qwen2".into())));
        let (_d, g) = write(&meta);
        let e = format!("{:#}", tokenizer_from_gguf(&g).err().unwrap());
        assert!(e.contains("t.gguf") && e.contains("qwen2"), "{e}");
    }
}
