//! Text in and out, identical to the Python stack: `tokenizer.json` through the `tokenizers`
//! crate, special tokens and the chat template from `tokenizer_config.json`, the template
//! rendered with minijinja configured as transformers configures jinja2.

mod chat;
mod gguf;
mod stream;

use std::path::{Path, PathBuf};

use serde_json::Value;
use thiserror::Error;

pub use chat::ChatTemplate;
pub use gguf::{GgufVocab, GgufVocabError, TokenType};
pub use stream::{StopMatcher, StopStep, StreamDecoder};

#[derive(Debug, Error)]
pub enum TokenizerError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error(
        "this tokenizer has no chat template (no `chat_template` in tokenizer_config.json, no `tokenizer.chat_template` in the GGUF)"
    )]
    NoTemplate,
    #[error("GGUF tokenizer metadata: {0}")]
    Gguf(#[from] GgufVocabError),
}

pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;

pub use serde_json::Value as JsonValue;

/// Parse a JSON config file's text, naming `path` in the error.
pub fn parse_json(text: &str, path: PathBuf) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| TokenizerError::File {
        path,
        reason: format!("not valid JSON: {e}"),
    })
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    add_bos_token: bool,
    add_eos_token: bool,
    template: Option<ChatTemplate>,
}

impl Tokenizer {
    /// Load `tokenizer.json` and (if present) `tokenizer_config.json` from `dir`.
    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        let f = HfFiles::read(dir)?;
        Self::from_parts(
            &f.tokenizer_json,
            f.config.as_ref(),
            f.template_file,
            &f.tokenizer_path,
            &f.config_path,
        )
    }

    /// Build from the bytes of `tokenizer.json` and the parsed `tokenizer_config.json`;
    /// the paths only name the files in errors.
    pub fn from_parts(
        tokenizer_json: &[u8],
        config: Option<&Value>,
        template_override: Option<String>,
        tokenizer_path: &Path,
        config_path: &Path,
    ) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_bytes(tokenizer_json).map_err(|e| {
            TokenizerError::File {
                path: tokenizer_path.to_path_buf(),
                reason: format!("not a valid tokenizer.json: {e}"),
            }
        })?;
        let token_str = |k: &str| config_token(config, k);
        let flag = |k: &str, default: bool| {
            config
                .and_then(|c| c.get(k))
                .and_then(Value::as_bool)
                .unwrap_or(default)
        };
        let bos_token = token_str("bos_token");
        let eos_token = token_str("eos_token");
        let template_src = chat_template_of(config, template_override, config_path)?;
        Self::assemble(
            inner,
            bos_token,
            eos_token,
            flag("add_bos_token", false),
            flag("add_eos_token", false),
            template_src,
        )
    }

    /// The parts every constructor shares: the special tokens' ids are looked up by content.
    fn assemble(
        inner: tokenizers::Tokenizer,
        bos_token: Option<String>,
        eos_token: Option<String>,
        add_bos_token: bool,
        add_eos_token: bool,
        template_src: Option<String>,
    ) -> Result<Tokenizer> {
        let bos_id = bos_token.as_deref().and_then(|t| inner.token_to_id(t));
        let eos_id = eos_token.as_deref().and_then(|t| inner.token_to_id(t));
        let template = template_src
            .map(|src| ChatTemplate::new(src, bos_token.clone(), eos_token.clone()))
            .transpose()?;
        Ok(Tokenizer {
            inner,
            bos_token,
            eos_token,
            bos_id,
            eos_id,
            add_bos_token,
            add_eos_token,
            template,
        })
    }

    /// Token ids of `text`. With `add_special`, BOS/EOS are added as `tokenizer_config.json`
    /// says (transformers' `add_special_tokens=True`); the template output is encoded without.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| TokenizerError::Tokenizer(e.to_string()))?;
        let mut ids = enc.get_ids().to_vec();
        if add_special {
            if self.add_bos_token
                && let Some(b) = self.bos_id
            {
                ids.insert(0, b);
            }
            if self.add_eos_token
                && let Some(e) = self.eos_id
            {
                ids.push(e);
            }
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::Tokenizer(e.to_string()))
    }

    /// The token strings of `ids` (as transformers' `convert_ids_to_tokens`).
    pub fn tokens(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&i| self.inner.id_to_token(i).unwrap_or_default())
            .collect()
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Tokens the tokenizer knows, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// Render an OpenAI-style `messages` array (and optional `tools`) through the template.
    pub fn apply_chat_template(
        &self,
        messages: &Value,
        tools: Option<&Value>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.template
            .as_ref()
            .ok_or(TokenizerError::NoTemplate)?
            .render(messages, tools, add_generation_prompt)
    }

    /// The rendered conversation's token ids (the template writes BOS itself).
    pub fn encode_chat(
        &self,
        messages: &Value,
        tools: Option<&Value>,
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        let text = self.apply_chat_template(messages, tools, add_generation_prompt)?;
        self.encode(&text, false)
    }
}

/// The files of a Hugging Face tokenizer directory, read.
pub(crate) struct HfFiles {
    pub tokenizer_path: PathBuf,
    pub tokenizer_json: Vec<u8>,
    pub config_path: PathBuf,
    pub config: Option<Value>,
    /// `chat_template.jinja`, which newer checkpoints keep the template in.
    pub template_file: Option<String>,
}

impl HfFiles {
    pub(crate) fn read(dir: &Path) -> Result<HfFiles> {
        let tj = dir.join("tokenizer.json");
        if !tj.is_file() {
            return Err(TokenizerError::File {
                path: tj,
                reason: "not found (a tokenizer.json is needed for text; pass --tokenizer DIR or use token ids)".into(),
            });
        }
        let bytes = std::fs::read(&tj).map_err(|e| TokenizerError::File {
            path: tj.clone(),
            reason: e.to_string(),
        })?;
        let cfg_path = dir.join("tokenizer_config.json");
        let config = if cfg_path.is_file() {
            let text = std::fs::read_to_string(&cfg_path).map_err(|e| TokenizerError::File {
                path: cfg_path.clone(),
                reason: e.to_string(),
            })?;
            Some(parse_json(&text, cfg_path.clone())?)
        } else {
            None
        };
        // Newer checkpoints keep the template in its own file.
        let jinja = dir.join("chat_template.jinja");
        let template_file = if jinja.is_file() {
            Some(
                std::fs::read_to_string(&jinja).map_err(|e| TokenizerError::File {
                    path: jinja.clone(),
                    reason: e.to_string(),
                })?,
            )
        } else {
            None
        };
        Ok(HfFiles {
            tokenizer_path: tj,
            tokenizer_json: bytes,
            config_path: cfg_path,
            config,
            template_file,
        })
    }
}

/// A special token's text in `tokenizer_config.json` (a string or `{"content": ...}`).
pub(crate) fn config_token(config: Option<&Value>, key: &str) -> Option<String> {
    match config?.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// The chat template: `template_override` (from `chat_template.jinja`), else the config's
/// `chat_template` (a string, or a list of named templates of which "default" is taken).
pub(crate) fn chat_template_of(
    config: Option<&Value>,
    template_override: Option<String>,
    config_path: &Path,
) -> Result<Option<String>> {
    if template_override.is_some() {
        return Ok(template_override);
    }
    Ok(match config.and_then(|c| c.get("chat_template")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template")?.as_str())
            .map(str::to_string),
        Some(other) => {
            return Err(TokenizerError::File {
                path: config_path.to_path_buf(),
                reason: format!("`chat_template` must be a string, found {other}"),
            });
        }
    })
}
