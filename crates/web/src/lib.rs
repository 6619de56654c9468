//! The engine as the browser runs it: one sequence, driven one token at a time, so a Web
//! Worker can post each piece of text as it comes and take a stop request between tokens.
//! Everything here is the native crates (loader, model, tokenizer, sampler); only the
//! `wasm` module below is specific to WebAssembly, and it only converts types (JavaScript
//! calls `step` `next`).

use engine::sampler::{Sampler, SamplingParams};
use model::{ForwardBatch, KvCache, LogitsMode, Model, SeqChunk};
use tokenizer::{StreamDecoder, Tokenizer};

/// Longest conversation a session keeps (prompt plus reply), within the model's own limit.
const MAX_CONTEXT: usize = 4096;

/// A loaded model and tokenizer, and the one generation in progress.
pub struct Session {
    model: Model,
    /// What the model was loaded from, to load it again onto another backend.
    ckpt: loader::Checkpoint,
    tok: Tokenizer,
    cache: KvCache,
    ctx: usize,
    level: String,
    run: Option<Run>,
}

struct Run {
    /// Prompt then generated tokens.
    tokens: Vec<u32>,
    /// How many of `tokens` are in the cache.
    fed: usize,
    prompt: usize,
    left: usize,
    sampler: Sampler,
    decoder: StreamDecoder,
    done: bool,
}

impl Session {
    /// The model built into this crate (no download, no file system), at the best kernel
    /// level this build has.
    pub fn embedded() -> Result<Session, String> {
        Session::embedded_at(None)
    }

    /// The embedded model at a named kernel level (`scalar`, `simd128`, ...).
    pub fn embedded_at(level: Option<&str>) -> Result<Session, String> {
        let ckpt = embedded::checkpoint().map_err(|e| e.to_string())?;
        let tok = embedded::tokenizer().map_err(|e| e.to_string())?;
        Session::with(ckpt, tok, level)
    }

    /// A checkpoint handed over as bytes (the page fetches them): `config.json`'s text, one
    /// `model.safetensors` image (kept, not copied, and parsed in place), `tokenizer.json`
    /// and optionally `tokenizer_config.json` (for the chat template).
    pub fn from_parts(
        config: &str,
        weights: Vec<u8>,
        tokenizer_json: &[u8],
        tokenizer_config: Option<&str>,
        level: Option<&str>,
    ) -> Result<Session, String> {
        let dir = std::path::Path::new("<bytes>");
        let storage: loader::Storage = std::sync::Arc::new(weights);
        let ckpt = loader::Checkpoint::from_memory(
            dir,
            config,
            vec![("model.safetensors".into(), storage)],
        )
        .map_err(|e| e.to_string())?;
        let tc = tokenizer_config
            .map(|t| tokenizer::parse_json(t, dir.join("tokenizer_config.json")))
            .transpose()
            .map_err(|e| e.to_string())?;
        let tok = Tokenizer::from_parts(
            tokenizer_json,
            tc.as_ref(),
            None,
            &dir.join("tokenizer.json"),
            &dir.join("tokenizer_config.json"),
        )
        .map_err(|e| e.to_string())?;
        Session::with(ckpt, tok, level)
    }

    fn with(
        ckpt: loader::Checkpoint,
        tok: Tokenizer,
        level: Option<&str>,
    ) -> Result<Session, String> {
        let level = level.map(str::parse::<kernels::Level>).transpose()?;
        let options = kernels::CpuOptions {
            level,
            threads: Some(1),
            ..Default::default()
        };
        let backend = kernels::CpuBackend::with_options(&options)?;
        let model = Model::load_with(&ckpt, Box::new(backend)).map_err(|e| e.to_string())?;
        let ctx = model.config.max_position_embeddings.min(MAX_CONTEXT);
        Ok(Session {
            cache: model.new_cache(1, ctx),
            level: options.resolve()?.0.to_string(),
            model,
            ckpt,
            tok,
            ctx,
            run: None,
        })
    }

    /// Parameters of the model (for reports).
    pub fn params(&self) -> u64 {
        self.ckpt
            .tensors()
            .map(|t| t.shape.iter().product::<usize>() as u64)
            .sum()
    }

    /// Move the model onto the GPU backend (WebGPU in the browser, wgpu's adapter natively):
    /// the same weights and model code, its operations in WGSL. Returns the adapter in words.
    /// Ends any generation in progress.
    pub fn use_gpu(&mut self) -> Result<String, String> {
        let cpu = kernels::CpuBackend::with_options(&kernels::CpuOptions {
            threads: Some(1),
            ..Default::default()
        })?;
        let g = gpu::GpuBackend::new(cpu).map_err(|e| e.to_string())?;
        let adapter = g.adapter().to_string();
        self.model = Model::load_with(&self.ckpt, Box::new(g)).map_err(|e| e.to_string())?;
        self.cache = self.model.new_cache(1, self.ctx);
        self.run = None;
        self.level = format!("gpu: {adapter}");
        Ok(adapter)
    }

    /// The kernels the model runs on (a CPU level, or `gpu: ADAPTER`).
    pub fn level(&self) -> String {
        self.level.clone()
    }

    pub fn vocab_size(&self) -> usize {
        self.model.config.vocab_size
    }

    /// Token ids of `text`: as a chat turn through the chat template, or as raw text.
    pub fn encode(&self, text: &str, chat: bool) -> Result<Vec<u32>, String> {
        let r = if chat {
            let messages = serde_json::json!([{"role": "user", "content": text}]);
            self.tok.encode_chat(&messages, None, true)
        } else {
            self.tok.encode(text, true)
        };
        r.map_err(|e| e.to_string())
    }

    /// Logits `[ids.len(), vocab]` of a fresh prefill of `ids` (the parity check against
    /// the native build). Ends any generation in progress.
    pub fn logits(&mut self, ids: &[u32]) -> Result<Vec<f32>, String> {
        self.run = None;
        self.check(ids)?;
        let batch = ForwardBatch {
            seqs: vec![SeqChunk {
                slot: 0,
                start_pos: 0,
                tokens: ids,
            }],
            logits: LogitsMode::All,
        };
        self.model
            .forward(&batch, &mut self.cache)
            .map_err(|e| e.to_string())
    }

    /// Begin generating after `prompt`; returns the prompt's length in tokens.
    /// `temperature` 0 is greedy; `seed` makes sampling repeatable.
    pub fn start(
        &mut self,
        prompt: &str,
        chat: bool,
        max_tokens: usize,
        temperature: f32,
        seed: u64,
    ) -> Result<usize, String> {
        let ids = self.encode(prompt, chat)?;
        self.start_ids(&ids, max_tokens, temperature, seed)
    }

    pub fn start_ids(
        &mut self,
        ids: &[u32],
        max_tokens: usize,
        temperature: f32,
        seed: u64,
    ) -> Result<usize, String> {
        self.run = None;
        self.check(ids)?;
        let params = SamplingParams {
            temperature,
            seed: Some(seed),
            ..SamplingParams::default()
        };
        params.validate(self.vocab_size())?;
        self.run = Some(Run {
            tokens: ids.to_vec(),
            fed: 0,
            prompt: ids.len(),
            left: max_tokens.min(self.ctx - ids.len()),
            sampler: Sampler::new(params, ids, 0),
            decoder: StreamDecoder::new(true),
            done: max_tokens == 0,
        });
        Ok(ids.len())
    }

    /// One token more: the text it completes (possibly empty, when a character is still
    /// incomplete), or `None` once the reply has ended (end of sequence, `max_tokens`, the
    /// context, or no generation started).
    pub fn step(&mut self) -> Result<Option<String>, String> {
        let Some(run) = self.run.as_mut() else {
            return Ok(None);
        };
        if run.done {
            return Ok(None);
        }
        let chunk = &run.tokens[run.fed..];
        let batch = ForwardBatch {
            seqs: vec![SeqChunk {
                slot: 0,
                start_pos: run.fed,
                tokens: chunk,
            }],
            logits: LogitsMode::Last,
        };
        let logits = self
            .model
            .forward(&batch, &mut self.cache)
            .map_err(|e| e.to_string())?;
        run.fed = run.tokens.len();
        let id = run.sampler.sample(&logits).id;
        run.tokens.push(id);
        run.left -= 1;
        let eos = self.tok.eos_id == Some(id);
        if eos || run.left == 0 {
            run.done = true;
        }
        let mut text = if eos {
            String::new()
        } else {
            run.decoder
                .step(&self.tok, id)
                .map_err(|e| e.to_string())?
                .unwrap_or_default()
        };
        if run.done
            && let Some(rest) = run.decoder.flush(&self.tok).map_err(|e| e.to_string())?
        {
            text.push_str(&rest);
        }
        Ok(Some(text))
    }

    /// The tokens generated so far in the current run.
    pub fn generated(&self) -> Vec<u32> {
        self.run
            .as_ref()
            .map_or_else(Vec::new, |r| r.tokens[r.prompt..].to_vec())
    }

    fn check(&self, ids: &[u32]) -> Result<(), String> {
        if ids.is_empty() {
            return Err("the prompt is empty".into());
        }
        if ids.len() >= self.ctx {
            return Err(format!(
                "the prompt is {} tokens; this session holds {}",
                ids.len(),
                self.ctx
            ));
        }
        let vocab = self.vocab_size();
        if let Some(id) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(format!("token {id} is out of range (vocab_size {vocab})"));
        }
        Ok(())
    }
}

#[cfg(target_arch = "wasm32")]
mod wasm {
    //! The JavaScript surface: `new Session()`, then `start` and `next` from a Worker.

    use wasm_bindgen::prelude::*;

    #[wasm_bindgen(js_name = Session)]
    pub struct WebSession(super::Session, String);

    fn js(e: String) -> JsError {
        JsError::new(&e)
    }

    #[wasm_bindgen(js_class = Session)]
    impl WebSession {
        /// `new Session()` at the best level, or `new Session("scalar")`.
        #[wasm_bindgen(constructor)]
        pub fn new(level: Option<String>) -> Result<WebSession, JsError> {
            super::Session::embedded_at(level.as_deref())
                .map(|s| WebSession(s, String::new()))
                .map_err(js)
        }

        /// A checkpoint from bytes: config.json's text, model.safetensors, tokenizer.json
        /// and optionally tokenizer_config.json's text.
        #[wasm_bindgen(js_name = fromBytes)]
        pub fn from_bytes(
            config: &str,
            weights: Vec<u8>,
            tokenizer: &[u8],
            tokenizer_config: Option<String>,
            level: Option<String>,
        ) -> Result<WebSession, JsError> {
            super::Session::from_parts(
                config,
                weights,
                tokenizer,
                tokenizer_config.as_deref(),
                level.as_deref(),
            )
            .map(|s| WebSession(s, String::new()))
            .map_err(js)
        }

        pub fn level(&self) -> String {
            self.0.level()
        }

        /// Parameters of the model.
        pub fn params(&self) -> f64 {
            self.0.params() as f64
        }

        #[wasm_bindgen(js_name = vocabSize)]
        pub fn vocab_size(&self) -> usize {
            self.0.vocab_size()
        }

        pub fn encode(&self, text: &str, chat: bool) -> Result<Vec<u32>, JsError> {
            self.0.encode(text, chat).map_err(js)
        }

        pub fn logits(&mut self, ids: &[u32]) -> Result<Vec<f32>, JsError> {
            self.0.logits(ids).map_err(js)
        }

        pub fn start(
            &mut self,
            prompt: &str,
            chat: bool,
            max_tokens: usize,
            temperature: f32,
            seed: u64,
        ) -> Result<usize, JsError> {
            self.0
                .start(prompt, chat, max_tokens, temperature, seed)
                .map_err(js)
        }

        /// The next piece of text (`undefined` once the reply has ended).
        pub fn next(&mut self) -> Result<Option<String>, JsError> {
            self.0.step().map_err(js)
        }

        pub fn generated(&self) -> Vec<u32> {
            self.0.generated()
        }

        // The two calls below may wait for the GPU, so JavaScript calls their raw exports
        // through `WebAssembly.promising` (web/worker.js): they return plain numbers, and
        // what they have to say waits in `takeMessage`.

        /// Move onto the GPU backend: 1, with the adapter in `takeMessage`, or 0, with why not.
        #[wasm_bindgen(js_name = useGpu)]
        pub fn use_gpu(&mut self) -> i32 {
            match self.0.use_gpu() {
                Ok(adapter) => {
                    self.1 = adapter;
                    1
                }
                Err(e) => {
                    self.1 = e;
                    0
                }
            }
        }

        /// `next` as a number: 1 with the piece of text in `takeMessage`, 0 once the reply
        /// has ended, -1 with the error in `takeMessage`.
        pub fn advance(&mut self) -> i32 {
            match self.0.step() {
                Ok(Some(text)) => {
                    self.1 = text;
                    1
                }
                Ok(None) => 0,
                Err(e) => {
                    self.1 = e;
                    -1
                }
            }
        }

        #[wasm_bindgen(js_name = takeMessage)]
        pub fn take_message(&mut self) -> String {
            std::mem::take(&mut self.1)
        }
    }
}
