//! R1-style reasoning: text between `<think>` and `</think>` goes to `reasoning_content`,
//! the rest to `content`. Tags may be split across streamed deltas, so a suffix that could
//! start the awaited tag is held back until it is known.

#[derive(Debug, Default)]
pub struct ThinkSplitter {
    thinking: bool,
    pending: String,
}

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

impl ThinkSplitter {
    /// `thinking`: the prompt already opened the reasoning (R1's template ends with `<think>`).
    pub fn new(thinking: bool) -> ThinkSplitter {
        ThinkSplitter {
            thinking,
            pending: String::new(),
        }
    }

    /// Split `text` into (reasoning, content).
    pub fn push(&mut self, text: &str) -> (String, String) {
        self.pending.push_str(text);
        let (mut reasoning, mut content) = (String::new(), String::new());
        loop {
            let tag = if self.thinking { CLOSE } else { OPEN };
            let out = if self.thinking {
                &mut reasoning
            } else {
                &mut content
            };
            if let Some(i) = self.pending.find(tag) {
                out.push_str(&self.pending[..i]);
                self.pending.drain(..i + tag.len());
                self.thinking = !self.thinking;
                if !self.thinking {
                    // the newline(s) after </think> belong to neither
                    let trimmed = self.pending.trim_start_matches('\n').len();
                    let cut = self.pending.len() - trimmed;
                    self.pending.drain(..cut);
                }
                continue;
            }
            let hold = (1..tag.len())
                .rev()
                .find(|&k| self.pending.ends_with(&tag[..k]))
                .unwrap_or(0);
            let cut = self.pending.len() - hold;
            out.push_str(&self.pending[..cut]);
            self.pending.drain(..cut);
            return (reasoning, content);
        }
    }

    /// Whatever is held back, at the end.
    pub fn flush(&mut self) -> (String, String) {
        let rest = std::mem::take(&mut self.pending);
        if self.thinking {
            (rest, String::new())
        } else {
            (String::new(), rest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(thinking: bool, pieces: &[&str]) -> (String, String) {
        let mut s = ThinkSplitter::new(thinking);
        let (mut r, mut c) = (String::new(), String::new());
        for p in pieces {
            let (a, b) = s.push(p);
            r += &a;
            c += &b;
        }
        let (a, b) = s.flush();
        (r + &a, c + &b)
    }

    #[test]
    fn splits_reasoning_from_the_answer() {
        assert_eq!(
            run(
                true,
                &["Let me ", "think.</thi", "nk>\n\nThe answer", " is 4."]
            ),
            ("Let me think.".into(), "The answer is 4.".into())
        );
        assert_eq!(
            run(false, &["<th", "ink>hmm</think>ok"]),
            ("hmm".into(), "ok".into())
        );
        assert_eq!(
            run(false, &["no tags at all, 3 < 4"]),
            ("".into(), "no tags at all, 3 < 4".into())
        );
        assert_eq!(
            run(true, &["cut off mid-thought </thi"]),
            ("cut off mid-thought </thi".into(), "".into())
        );
    }
}
