//! Generation for one request: prefill the prompt once, then sample (n sequences side by
//! side in one batch) or beam-search through the KV cache, streaming tokens and text.

use std::time::Instant;

use model::{ForwardBatch, KvCache, LogitsMode, Model, SeqChunk};
use tokenizer::{StopMatcher, StopStep, Tokenizer};

use crate::error::EngineError;
use crate::output::OutputState;
use crate::sampler::{Sampled, Sampler, SamplingParams, log_softmax, top_n};

/// What every request must satisfy, batched or not.
pub(crate) fn check_prompt(
    prompt: &[u32],
    n: usize,
    vocab: usize,
    ctx_size: usize,
) -> Result<(), EngineError> {
    if prompt.is_empty() {
        return Err(EngineError::InvalidRequest("the prompt is empty".into()));
    }
    if let Some(&id) = prompt.iter().find(|&&id| id as usize >= vocab) {
        return Err(EngineError::InvalidRequest(format!(
            "prompt token {id} is out of range (vocab_size {vocab})"
        )));
    }
    if prompt.len() >= ctx_size {
        return Err(EngineError::PromptTooLong {
            prompt: prompt.len(),
            context: ctx_size,
        });
    }
    if n == 0 || n > 128 {
        return Err(EngineError::InvalidRequest(format!(
            "n must be in [1, 128] (got {n})"
        )));
    }
    Ok(())
}

impl Timings {
    fn measured(
        prompt_tokens: usize,
        prompt_secs: f64,
        generated_tokens: usize,
        start: Instant,
        ttft: Option<f64>,
    ) -> Timings {
        let total = start.elapsed().as_secs_f64();
        Timings {
            prompt_tokens,
            prompt_secs,
            generated_tokens,
            generate_secs: total - prompt_secs,
            time_to_first_token_secs: ttft.unwrap_or(total),
        }
    }
}

/// When a sequence ends.
#[derive(Clone, Debug, Default)]
pub struct StopParams {
    pub max_tokens: usize,
    /// Text that ends generation; it is not part of the output.
    pub stop: Vec<String>,
    /// Token ids that end generation, besides the model's end-of-sequence tokens.
    pub stop_token_ids: Vec<u32>,
    /// Keep going after end-of-sequence tokens.
    pub ignore_eos: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BeamParams {
    pub width: usize,
    /// Scores are sum(logprob) / len^length_penalty; > 0 favours longer outputs.
    pub length_penalty: f32,
}

#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    pub stop: StopParams,
    /// Completions to return.
    pub n: usize,
    pub beam: Option<BeamParams>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token, a stop token or a stop string.
    Stop,
    /// max_tokens or the end of the context.
    Length,
    /// The caller asked to stop.
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// One streamed step of completion `index`.
pub struct Event<'a> {
    pub index: usize,
    pub token: &'a Sampled,
    /// Text this token completes (may be empty: part of a character, or held back because
    /// it could start a stop string).
    pub text: &'a str,
}

#[derive(Clone, Debug)]
pub struct Completion {
    pub ids: Vec<u32>,
    pub text: String,
    pub finish_reason: FinishReason,
    /// Per generated token, when logprobs were asked for.
    pub logprobs: Vec<Sampled>,
    /// Beam search: the length-normalised score.
    pub score: Option<f32>,
}

#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub prompt_tokens: usize,
    pub prompt_secs: f64,
    pub generated_tokens: usize,
    pub generate_secs: f64,
    pub time_to_first_token_secs: f64,
}

pub struct Generation {
    pub completions: Vec<Completion>,
    pub timings: Timings,
}

/// Generation over one model; text needs a tokenizer.
pub struct Generator<'m> {
    pub model: &'m Model,
    pub tokenizer: Option<&'m Tokenizer>,
    /// Context length: prompt plus generated tokens.
    pub ctx_size: usize,
}

/// Per-sequence state of sampling.
struct Seq {
    slot: usize,
    sampler: Sampler,
    output: OutputState,
    out: Completion,
    done: bool,
}

impl Generator<'_> {
    fn validate(&self, req: &GenerateRequest) -> Result<usize, EngineError> {
        let vocab = self.model.config.vocab_size;
        check_prompt(&req.prompt, req.n, vocab, self.ctx_size)?;
        if !req.stop.stop.is_empty() && self.tokenizer.is_none() {
            return Err(EngineError::InvalidRequest(
                "stop strings need a tokenizer".into(),
            ));
        }
        if let Some(b) = &req.beam {
            if b.width == 0 || b.width > 64 || req.n > b.width {
                return Err(EngineError::InvalidRequest(format!(
                    "beam width must be in [n, 64] (got {} with n = {})",
                    b.width, req.n
                )));
            }
            if !b.length_penalty.is_finite() {
                return Err(EngineError::InvalidRequest(
                    "length_penalty must be finite".into(),
                ));
            }
        }
        req.sampling
            .validate(vocab)
            .map_err(EngineError::InvalidRequest)?;
        // The cache holds the prompt and as much output as fits.
        Ok(self.ctx_size.min(req.prompt.len() + req.stop.max_tokens))
    }

    fn is_stop_token(&self, req: &GenerateRequest, id: u32) -> bool {
        req.stop.stop_token_ids.contains(&id)
            || (!req.stop.ignore_eos && self.model.config.eos_token_ids.contains(&id))
    }

    /// Run `req`, calling `on_event` for each token; it returns false to cancel.
    pub fn generate(
        &self,
        req: &GenerateRequest,
        on_event: &mut dyn FnMut(Event<'_>) -> bool,
    ) -> Result<Generation, EngineError> {
        let capacity = self.validate(req)?;
        match &req.beam {
            Some(b) => self.beam_search(req, b, capacity, on_event),
            None => self.sample(req, capacity, on_event),
        }
    }

    /// One decode token for each `(slot, token)` at position `pos`; logits per feed.
    fn decode_step(
        &self,
        cache: &mut KvCache,
        pos: usize,
        feeds: &[(usize, u32)],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let toks: Vec<[u32; 1]> = feeds.iter().map(|&(_, t)| [t]).collect();
        let batch = ForwardBatch {
            seqs: feeds
                .iter()
                .zip(&toks)
                .map(|(&(slot, _), t)| SeqChunk {
                    slot,
                    start_pos: pos,
                    tokens: t,
                })
                .collect(),
            logits: LogitsMode::Last,
        };
        let flat = self.model.forward(&batch, cache)?;
        Ok(flat
            .chunks_exact(self.model.config.vocab_size)
            .map(<[f32]>::to_vec)
            .collect())
    }

    fn prefill(&self, prompt: &[u32], cache: &mut KvCache) -> Result<Vec<f32>, EngineError> {
        let batch = ForwardBatch {
            seqs: vec![SeqChunk {
                slot: 0,
                start_pos: 0,
                tokens: prompt,
            }],
            logits: LogitsMode::Last,
        };
        Ok(self.model.forward(&batch, cache)?)
    }

    fn sample(
        &self,
        req: &GenerateRequest,
        capacity: usize,
        on_event: &mut dyn FnMut(Event<'_>) -> bool,
    ) -> Result<Generation, EngineError> {
        let start = Instant::now();
        let mut cache = self.model.new_cache(req.n, capacity);
        let first = self.prefill(&req.prompt, &mut cache)?;
        let prompt_secs = start.elapsed().as_secs_f64();
        for s in 1..req.n {
            cache.copy_prefix(0, s, req.prompt.len());
        }
        let mut seqs: Vec<Seq> = (0..req.n)
            .map(|i| Seq {
                slot: i,
                sampler: Sampler::new(req.sampling.clone(), &req.prompt, i as u64),
                output: OutputState::new(&req.stop),
                out: Completion {
                    ids: vec![],
                    text: String::new(),
                    finish_reason: FinishReason::Length,
                    logprobs: vec![],
                    score: None,
                },
                done: false,
            })
            .collect();
        let mut logits: Vec<Vec<f32>> = vec![first; req.n];
        let mut ttft = None;
        let mut pos = req.prompt.len();
        let mut cancelled = false;
        loop {
            let mut next = Vec::new(); // (slot, token) to feed
            for (seq, l) in seqs.iter_mut().filter(|s| !s.done).zip(&logits) {
                let tok = seq.sampler.sample(l);
                ttft.get_or_insert_with(|| start.elapsed().as_secs_f64());
                seq.out.ids.push(tok.id);
                let at_limit = seq.out.ids.len() >= req.stop.max_tokens || pos + 1 >= capacity;
                let step = seq.output.step(
                    self.tokenizer,
                    tok.id,
                    self.is_stop_token(req, tok.id),
                    at_limit,
                )?;
                seq.out.text.push_str(&step.text);
                if !on_event(Event {
                    index: seq.slot,
                    token: &tok,
                    text: &step.text,
                }) {
                    cancelled = true;
                }
                if req.sampling.logprobs.is_some() {
                    seq.out.logprobs.push(tok.clone());
                }
                match step.finish {
                    Some(reason) => {
                        seq.done = true;
                        seq.out.finish_reason = reason;
                    }
                    None => next.push((seq.slot, tok.id)),
                }
            }
            if cancelled {
                for s in seqs.iter_mut().filter(|s| !s.done) {
                    s.done = true;
                    s.out.finish_reason = FinishReason::Cancelled;
                }
                break;
            }
            if next.is_empty() {
                break;
            }
            logits = self.decode_step(&mut cache, pos, &next)?;
            pos += 1;
        }
        let generated = seqs.iter().map(|s| s.out.ids.len()).sum();
        Ok(Generation {
            completions: seqs.into_iter().map(|s| s.out).collect(),
            timings: Timings::measured(req.prompt.len(), prompt_secs, generated, start, ttft),
        })
    }

    fn beam_search(
        &self,
        req: &GenerateRequest,
        b: &BeamParams,
        capacity: usize,
        on_event: &mut dyn FnMut(Event<'_>) -> bool,
    ) -> Result<Generation, EngineError> {
        let start = Instant::now();
        let width = b.width;
        let norm = |sum: f32, len: usize| sum / (len.max(1) as f32).powf(b.length_penalty);
        // Beams live in slots [half, half + width); each step writes the other half.
        let mut cache = self.model.new_cache(2 * width, capacity);
        let first = self.prefill(&req.prompt, &mut cache)?;
        let prompt_secs = start.elapsed().as_secs_f64();
        let bias = &req.sampling.logit_bias;
        let scores = |l: &[f32]| {
            let mut l = l.to_vec();
            for &(id, v) in bias {
                l[id as usize] += v;
            }
            log_softmax(&l)
        };

        struct Beam {
            ids: Vec<u32>,
            sum: f32,
            slot: usize,
        }
        let mut beams = vec![Beam {
            ids: vec![],
            sum: 0.0,
            slot: 0,
        }];
        let mut logits = vec![first];
        let mut finished: Vec<(f32, Vec<u32>, FinishReason)> = Vec::new();
        let mut half = 0;
        let mut pos = req.prompt.len();
        let mut ttft = None;
        let mut cancelled = false;
        loop {
            // All (beam, token) continuations, best 2 * width overall.
            let mut cand: Vec<(f32, usize, u32)> = Vec::new();
            for (bi, (beam, l)) in beams.iter().zip(&logits).enumerate() {
                for (tok, lp) in top_n(&scores(l), 2 * width) {
                    cand.push((beam.sum + lp, bi, tok));
                }
            }
            cand.sort_by(|a, c| c.0.total_cmp(&a.0));
            ttft.get_or_insert_with(|| start.elapsed().as_secs_f64());
            let at_end = beams[0].ids.len() + 1 >= req.stop.max_tokens || pos + 1 >= capacity;
            let mut next = Vec::new();
            for (sum, bi, tok) in cand {
                if next.len() == width {
                    break;
                }
                let mut ids = beams[bi].ids.clone();
                ids.push(tok);
                if self.is_stop_token(req, tok) {
                    let n = ids.len();
                    finished.push((norm(sum, n), ids, FinishReason::Stop));
                } else {
                    next.push(Beam { ids, sum, slot: bi });
                }
            }
            if !on_event(Event {
                index: 0,
                token: &Sampled {
                    id: next.first().map_or(0, |b| b.ids[b.ids.len() - 1]),
                    logprob: None,
                    top_logprobs: vec![],
                },
                text: "",
            }) {
                cancelled = true;
            }
            // Done when no running beam can beat the worst of `width` finished hypotheses.
            finished.sort_by(|a, c| c.0.total_cmp(&a.0));
            finished.truncate(width);
            let best_running = next.first().map(|bm| norm(bm.sum, bm.ids.len()));
            let settled =
                finished.len() == width && best_running.is_none_or(|s| s <= finished[width - 1].0);
            if at_end || settled || next.is_empty() || cancelled {
                let reason = if cancelled {
                    FinishReason::Cancelled
                } else {
                    FinishReason::Length
                };
                if !settled {
                    for bm in next {
                        let n = bm.ids.len();
                        finished.push((norm(bm.sum, n), bm.ids, reason));
                    }
                }
                break;
            }
            // Fork caches: beam k continues old beam `slot`.
            let other = width - half;
            for (k, bm) in next.iter_mut().enumerate() {
                cache.copy_prefix(half + bm.slot, other + k, pos);
                bm.slot = other + k;
            }
            half = other;
            let feeds: Vec<(usize, u32)> = next
                .iter()
                .map(|bm| (bm.slot, bm.ids[bm.ids.len() - 1]))
                .collect();
            logits = self.decode_step(&mut cache, pos, &feeds)?;
            for bm in next.iter_mut() {
                bm.slot -= half; // index within the half, as candidates refer to it
            }
            beams = next;
            pos += 1;
        }
        finished.sort_by(|a, c| c.0.total_cmp(&a.0));
        finished.truncate(req.n);
        let mut completions = Vec::new();
        for (score, ids, reason) in finished {
            let text = match self.tokenizer {
                Some(t) => {
                    let mut m = StopMatcher::new(req.stop.stop.clone());
                    let full = t.decode(&ids, true)?;
                    match m.push(&full) {
                        StopStep::Stop(s, _) => s,
                        StopStep::Continue(s) => s + &m.flush(),
                    }
                }
                None => String::new(),
            };
            completions.push(Completion {
                ids,
                text,
                finish_reason: reason,
                logprobs: vec![],
                score: Some(score),
            });
        }
        let generated = completions.iter().map(|c| c.ids.len()).sum();
        Ok(Generation {
            completions,
            timings: Timings::measured(req.prompt.len(), prompt_secs, generated, start, ttft),
        })
    }
}
