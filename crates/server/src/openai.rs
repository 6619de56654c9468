//! OpenAI request bodies as clients send them, and their translation into engine requests.

use std::collections::HashMap;

use engine::{Request, SamplingParams, StopParams};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

#[derive(Deserialize, Debug, Default)]
#[serde(untagged)]
pub enum Stop {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Debug, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Fields shared by chat and text completions.
#[derive(Deserialize, Debug, Default)]
pub struct Common {
    pub model: Option<String>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    #[serde(default)]
    pub stop: Stop,
    pub seed: Option<u64>,
    pub n: Option<usize>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logit_bias: Option<HashMap<String, f32>>,
    /// Accepted for compatibility; not used.
    #[allow(dead_code)]
    pub user: Option<String>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    // Extensions vLLM and llama.cpp servers accept.
    pub top_k: Option<usize>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    #[serde(default)]
    pub ignore_eos: bool,
}

#[derive(Deserialize, Debug)]
pub struct ChatRequest {
    pub messages: Value,
    pub tools: Option<Value>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<usize>,
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Deserialize, Debug)]
pub struct CompletionRequest {
    pub prompt: Value,
    /// An integer 0-5 in the legacy API: alternatives per token.
    pub logprobs: Option<usize>,
    #[serde(default)]
    pub echo: bool,
    #[serde(flatten)]
    pub common: Common,
}

impl Common {
    /// The engine request for `prompt`, with every option checked.
    pub fn request(
        &self,
        prompt: Vec<u32>,
        logprobs: Option<usize>,
        default_max: usize,
    ) -> Result<Request, ApiError> {
        let bad = |m: String, p: &str| Err(ApiError::bad_request(m, Some(p)));
        let n = self.n.unwrap_or(1);
        if n == 0 || n > 128 {
            return bad(format!("n must be in [1, 128] (got {n})"), "n");
        }
        let max_tokens = self
            .max_completion_tokens
            .or(self.max_tokens)
            .unwrap_or(default_max);
        if max_tokens == 0 {
            return bad("max_tokens must be at least 1".into(), "max_tokens");
        }
        let stop = match &self.stop {
            Stop::None => vec![],
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) if v.len() > 4 => {
                return bad(
                    format!("at most 4 stop sequences (got {})", v.len()),
                    "stop",
                );
            }
            Stop::Many(v) => v.clone(),
        };
        let mut logit_bias = Vec::new();
        for (k, v) in self.logit_bias.iter().flatten() {
            let id = k.parse::<u32>().map_err(|_| {
                ApiError::bad_request(
                    format!("logit_bias key `{k}` is not a token id"),
                    Some("logit_bias"),
                )
            })?;
            logit_bias.push((id, *v));
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return bad(
                format!("temperature must be in [0, 2] (got {temperature})"),
                "temperature",
            );
        }
        let sampling = SamplingParams {
            temperature,
            top_k: self.top_k.unwrap_or(0),
            top_p: self.top_p.unwrap_or(1.0),
            min_p: self.min_p.unwrap_or(0.0),
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            logit_bias,
            seed: self.seed,
            logprobs,
        };
        // Name the parameter of a sampling option out of range.
        if let Err(m) = sampling.validate(usize::MAX) {
            let param = [
                "temperature",
                "top_p",
                "min_p",
                "repetition_penalty",
                "presence_penalty",
                "frequency_penalty",
                "logit_bias",
                "top_logprobs",
            ]
            .into_iter()
            .find(|p| m.starts_with(p))
            .unwrap_or("body");
            return bad(m, param);
        }
        Ok(Request {
            prompt,
            sampling,
            stop: StopParams {
                max_tokens,
                stop,
                stop_token_ids: vec![],
                ignore_eos: self.ignore_eos,
            },
            n,
        })
    }
}
