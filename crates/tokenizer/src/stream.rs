//! Streaming text out of a token stream.
//!
//! A byte-level token may hold part of a character (an emoji spans several), so text is
//! emitted only once it decodes without a replacement character at its end. Decoding a
//! window that starts a few tokens back keeps decoders that treat the first token specially
//! (leading-space handling) correct.

use crate::{Result, Tokenizer};

#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    /// Start of the window decoded for context.
    prefix: usize,
    /// Tokens before this have been emitted.
    read: usize,
    skip_special: bool,
}

impl StreamDecoder {
    pub fn new(skip_special: bool) -> StreamDecoder {
        StreamDecoder {
            skip_special,
            ..Default::default()
        }
    }

    /// Add one token; returns the text it completes, if any.
    pub fn step(&mut self, tok: &Tokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let before = tok.decode(&self.ids[self.prefix..self.read], self.skip_special)?;
        let now = tok.decode(&self.ids[self.prefix..], self.skip_special)?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') && now.starts_with(&before) {
            let delta = now[before.len()..].to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            return Ok(Some(delta));
        }
        if !now.starts_with(&before) {
            // The decoder rewrote earlier text (rare); emit what follows the common part.
            let common = common_prefix(&before, &now);
            if !now.ends_with('\u{FFFD}') && now.len() > common {
                let delta = now[common..].to_string();
                self.prefix = self.read;
                self.read = self.ids.len();
                return Ok(Some(delta));
            }
        }
        Ok(None)
    }

    /// Whatever is held back (an incomplete character at the very end) as final text.
    pub fn flush(&mut self, tok: &Tokenizer) -> Result<Option<String>> {
        if self.read == self.ids.len() {
            return Ok(None);
        }
        let before = tok.decode(&self.ids[self.prefix..self.read], self.skip_special)?;
        let now = tok.decode(&self.ids[self.prefix..], self.skip_special)?;
        self.prefix = self.read;
        self.read = self.ids.len();
        let common = common_prefix(&before, &now);
        Ok((now.len() > common).then(|| now[common..].to_string()))
    }
}

fn common_prefix(a: &str, b: &str) -> usize {
    let mut n = 0;
    for (x, y) in a.char_indices().zip(b.chars()) {
        if x.1 != y {
            break;
        }
        n = x.0 + x.1.len_utf8();
    }
    n
}

/// Stop strings that may span token boundaries. Text that could be the start of a stop
/// string is held back until it is known not to be; the stop string itself is never emitted.
#[derive(Debug, Default, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum StopStep {
    /// Text that is safe to emit now (may be empty).
    Continue(String),
    /// A stop string matched: the text before it, and which stop string.
    Stop(String, usize),
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> StopMatcher {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> StopStep {
        self.pending.push_str(text);
        let hit = self
            .stops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.pending.find(s.as_str()).map(|p| (p, i)))
            .min();
        if let Some((pos, i)) = hit {
            let out = self.pending[..pos].to_string();
            self.pending.clear();
            return StopStep::Stop(out, i);
        }
        // Hold back the longest suffix that is a proper prefix of some stop string.
        let mut hold = 0;
        for s in &self.stops {
            for (k, _) in s.char_indices().skip(1) {
                if k > hold && self.pending.ends_with(&s[..k]) {
                    hold = k;
                }
            }
        }
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        StopStep::Continue(out)
    }

    /// The held-back text, at the end of generation.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, Option<usize>) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                StopStep::Continue(t) => out.push_str(&t),
                StopStep::Stop(t, i) => {
                    out.push_str(&t);
                    return (out, Some(i));
                }
            }
        }
        out.push_str(&m.flush());
        (out, None)
    }

    #[test]
    fn stop_strings_across_boundaries() {
        assert_eq!(
            run(&["END"], &["abc E", "N", "D tail"]),
            ("abc ".into(), Some(0))
        );
        assert_eq!(
            run(&["END"], &["abc E", "N", "x"]),
            ("abc ENx".into(), None)
        );
        assert_eq!(
            run(&["\n\n", "###"], &["a\n", "#", "##b"]),
            ("a\n".into(), Some(1))
        );
        // the earliest match wins, whichever stop string it is
        assert_eq!(run(&["cd", "b"], &["abcd"]), ("a".into(), Some(1)));
        // multi-byte stop strings
        assert_eq!(
            run(&["停止"], &["好的停", "止了"]),
            ("好的".into(), Some(0))
        );
        // held text comes out at the end if no stop completes
        assert_eq!(run(&["STOP"], &["go ST"]), ("go ST".into(), None));
    }

    #[test]
    fn held_text_is_released_as_soon_as_it_cannot_match() {
        let mut m = StopMatcher::new(vec!["abc".into()]);
        assert_eq!(m.push("xa"), StopStep::Continue("x".into()));
        assert_eq!(m.push("b"), StopStep::Continue("".into()));
        assert_eq!(m.push("d"), StopStep::Continue("abd".into()));
    }
}
