//! Choosing the next token from logits, as OpenAI's API and llama.cpp users expect.
//!
//! Order: logit_bias, repetition penalty (prompt and output, as transformers), presence and
//! frequency penalties (output only, as OpenAI), then temperature, top-k, top-p, min-p on the
//! resulting distribution (transformers' warper order), then a draw from the request's own
//! seeded generator. Log-probabilities reported are those of the model's raw distribution.

use std::collections::HashMap;

/// Per-request sampling controls. `Default` is plain sampling at temperature 1.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 picks the most likely token (greedy).
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p; 1 keeps all.
    pub top_p: f32,
    /// Drop tokens whose probability is below min_p times the most likely one's; 0 keeps all.
    pub min_p: f32,
    /// > 1 discourages tokens already in the prompt or output (1 is off).
    pub repetition_penalty: f32,
    /// Subtracted once from the logit of every token already generated.
    pub presence_penalty: f32,
    /// Subtracted from a token's logit per time it was generated.
    pub frequency_penalty: f32,
    /// Added to the logits of the given tokens (-100 bans, +100 forces, as OpenAI).
    pub logit_bias: Vec<(u32, f32)>,
    /// The same seed and request give the same tokens.
    pub seed: Option<u64>,
    /// Report the log-probability of each chosen token and this many alternatives.
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
            logprobs: None,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// A message naming the first option out of range, if any.
    pub fn validate(&self, vocab: usize) -> Result<(), String> {
        let finite = |v: f32| v.is_finite();
        if !finite(self.temperature) || self.temperature < 0.0 {
            return Err(format!(
                "temperature must be >= 0 (got {})",
                self.temperature
            ));
        }
        if !finite(self.top_p) || self.top_p <= 0.0 || self.top_p > 1.0 {
            return Err(format!("top_p must be in (0, 1] (got {})", self.top_p));
        }
        if !finite(self.min_p) || !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min_p must be in [0, 1] (got {})", self.min_p));
        }
        if !finite(self.repetition_penalty) || self.repetition_penalty <= 0.0 {
            return Err(format!(
                "repetition_penalty must be > 0 (got {})",
                self.repetition_penalty
            ));
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !finite(v) || !(-2.0..=2.0).contains(&v) {
                return Err(format!("{name} must be in [-2, 2] (got {v})"));
            }
        }
        for &(id, b) in &self.logit_bias {
            if id as usize >= vocab {
                return Err(format!(
                    "logit_bias names token {id}, but the vocabulary has {vocab}"
                ));
            }
            if !finite(b) || !(-100.0..=100.0).contains(&b) {
                return Err(format!(
                    "logit_bias for token {id} must be in [-100, 100] (got {b})"
                ));
            }
        }
        if let Some(n) = self.logprobs
            && n > 20
        {
            return Err(format!("top_logprobs must be in [0, 20] (got {n})"));
        }
        Ok(())
    }
}

/// One chosen token and, when asked, its log-probability and the best alternatives.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampled {
    pub id: u32,
    pub logprob: Option<f32>,
    pub top_logprobs: Vec<(u32, f32)>,
}

/// A sampler for one sequence: its parameters, its own generator, and the counts the
/// penalties need.
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    /// Tokens of the prompt (for the repetition penalty).
    prompt: Vec<u32>,
    /// Times each token was generated.
    counts: HashMap<u32, u32>,
}

impl Sampler {
    /// `stream` separates the generators of several samples of one request (n > 1).
    pub fn new(params: SamplingParams, prompt: &[u32], stream: u64) -> Sampler {
        let seed = params.seed.unwrap_or_else(entropy);
        let mut prompt = prompt.to_vec();
        prompt.sort_unstable();
        prompt.dedup();
        Sampler {
            rng: Rng::new(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F)),
            params,
            prompt,
            counts: HashMap::new(),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Choose the next token from `logits` and record it for the penalties.
    pub fn sample(&mut self, logits: &[f32]) -> Sampled {
        let mut l = logits.to_vec();
        self.apply_penalties(&mut l);
        let id = if self.params.temperature == 0.0 || self.params.top_k == 1 {
            argmax(&l)
        } else {
            let probs = self.distribution(&l);
            self.draw(&probs)
        };
        *self.counts.entry(id).or_default() += 1;
        let (logprob, top_logprobs) = match self.params.logprobs {
            None => (None, Vec::new()),
            Some(n) => {
                let lp = log_softmax(logits);
                (Some(lp[id as usize]), top_n(&lp, n))
            }
        };
        Sampled {
            id,
            logprob,
            top_logprobs,
        }
    }

    fn apply_penalties(&self, l: &mut [f32]) {
        let p = &self.params;
        for &(id, b) in &p.logit_bias {
            if let Some(v) = l.get_mut(id as usize) {
                *v += b;
            }
        }
        if p.repetition_penalty != 1.0 {
            let seen = self.prompt.iter().chain(
                self.counts
                    .keys()
                    .filter(|k| self.prompt.binary_search(k).is_err()),
            );
            for &id in seen {
                if let Some(v) = l.get_mut(id as usize) {
                    *v = if *v > 0.0 {
                        *v / p.repetition_penalty
                    } else {
                        *v * p.repetition_penalty
                    };
                }
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&id, &c) in &self.counts {
                if let Some(v) = l.get_mut(id as usize) {
                    *v -= p.presence_penalty + p.frequency_penalty * c as f32;
                }
            }
        }
    }

    /// Probabilities after temperature, top-k, top-p and min-p (zeros for removed tokens).
    pub(crate) fn distribution(&self, logits: &[f32]) -> Vec<f32> {
        let p = &self.params;
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        let keep_k = if p.top_k == 0 {
            order.len()
        } else {
            p.top_k.min(order.len())
        };
        order.truncate(keep_k);
        // softmax over the kept tokens at this temperature
        let max = logits[order[0]];
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&i| (((logits[i] - max) / p.temperature) as f64).exp())
            .collect();
        let z: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= z);
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            let mut keep = probs.len();
            for (k, &x) in probs.iter().enumerate() {
                cum += x;
                if cum >= p.top_p as f64 {
                    keep = k + 1;
                    break;
                }
            }
            probs.truncate(keep);
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p as f64;
            let keep = probs.iter().take_while(|&&x| x >= floor).count().max(1);
            probs.truncate(keep);
        }
        let z: f64 = probs.iter().sum();
        let mut out = vec![0f32; logits.len()];
        for (k, &x) in probs.iter().enumerate() {
            out[order[k]] = (x / z) as f32;
        }
        out
    }

    fn draw(&mut self, probs: &[f32]) -> u32 {
        let mut u = self.rng.next_f64();
        let mut last = 0;
        for (i, &p) in probs.iter().enumerate() {
            if p > 0.0 {
                last = i;
                u -= p as f64;
                if u < 0.0 {
                    return i as u32;
                }
            }
        }
        last as u32 // rounding left a sliver: the last kept token
    }
}

/// The first index of the largest value (torch.argmax's tie rule).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

pub fn log_softmax(v: &[f32]) -> Vec<f32> {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = (v.iter().map(|&x| ((x - max) as f64).exp()).sum::<f64>()).ln() as f32 + max;
    v.iter().map(|&x| x - lse).collect()
}

/// The `n` largest entries as (index, value), best first.
pub fn top_n(v: &[f32], n: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    let n = n.min(v.len());
    if n == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(n - 1, |&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.truncate(n);
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.into_iter().map(|i| (i as u32, v[i])).collect()
}

fn entropy() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// xoshiro256** seeded through SplitMix64: small, fast, and the same on every platform.
pub struct Rng([u64; 4]);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
#[path = "sampler_tests.rs"]
mod tests;
