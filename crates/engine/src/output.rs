//! From sampled tokens to streamed text, and when a sequence ends: shared by the
//! single-request generator and the batching engine.

use tokenizer::{StopMatcher, StopStep, StreamDecoder, Tokenizer, TokenizerError};

use crate::generate::{FinishReason, StopParams};

pub(crate) struct OutputState {
    decoder: StreamDecoder,
    stops: StopMatcher,
}

pub(crate) struct Step {
    /// Text this token completes (may be empty).
    pub text: String,
    pub finish: Option<FinishReason>,
}

impl OutputState {
    pub fn new(stop: &StopParams) -> OutputState {
        OutputState {
            decoder: StreamDecoder::new(true),
            stops: StopMatcher::new(stop.stop.clone()),
        }
    }

    /// Take token `id`. `stop_token`: it ends generation (end-of-sequence or a stop id; its
    /// text is not emitted); `at_limit`: no room for another token (max_tokens or context).
    pub fn step(
        &mut self,
        tok: Option<&Tokenizer>,
        id: u32,
        stop_token: bool,
        at_limit: bool,
    ) -> Result<Step, TokenizerError> {
        let mut out = Step {
            text: String::new(),
            finish: None,
        };
        if let Some(t) = tok {
            if !stop_token && let Some(piece) = self.decoder.step(t, id)? {
                self.push(&piece, &mut out);
            }
            if out.finish.is_none() && (stop_token || at_limit) {
                // the end: release what the decoder and the stop matcher still hold
                if let Some(piece) = self.decoder.flush(t)? {
                    self.push(&piece, &mut out);
                }
                if out.finish.is_none() {
                    out.text.push_str(&self.stops.flush());
                }
            }
        }
        if out.finish.is_none() {
            if stop_token {
                out.finish = Some(FinishReason::Stop);
            } else if at_limit {
                out.finish = Some(FinishReason::Length);
            }
        }
        Ok(out)
    }

    fn push(&mut self, piece: &str, out: &mut Step) {
        match self.stops.push(piece) {
            StopStep::Continue(s) => out.text.push_str(&s),
            StopStep::Stop(s, _) => {
                out.text.push_str(&s);
                out.finish = Some(FinishReason::Stop);
            }
        }
    }
}
