//! Chat templates: Jinja rendered as transformers renders it (`trim_blocks`,
//! `lstrip_blocks`, loop controls, `raise_exception`, Python string methods).

use minijinja::{Environment, Error, ErrorKind, Value as J};
use serde_json::Value;

use crate::{Result, TokenizerError};

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl ChatTemplate {
    pub fn new(
        source: String,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .expect("default delimiters"),
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<J, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned("chat", source)
            .map_err(|e| TokenizerError::Template(format!("does not parse: {e}")))?;
        Ok(ChatTemplate {
            env,
            bos_token,
            eos_token,
        })
    }

    pub fn render(
        &self,
        messages: &Value,
        tools: Option<&Value>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        match messages.as_array() {
            None => {
                return Err(TokenizerError::Template(
                    "`messages` must be an array".into(),
                ));
            }
            // transformers refuses an empty conversation too
            Some(m) if m.is_empty() => {
                return Err(TokenizerError::Template("`messages` is empty".into()));
            }
            Some(_) => {}
        }
        let tmpl = self.env.get_template("chat").expect("added in new()");
        let ctx = minijinja::context! {
            messages => J::from(minijinja::value::Serde(messages)),
            tools => tools.map(|t| J::from(minijinja::value::Serde(t))),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        };
        tmpl.render(ctx).map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            TokenizerError::Template(format!("failed to render: {msg}"))
        })
    }
}
