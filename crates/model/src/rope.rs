//! Rotary position embedding with YaRN (arXiv:2309.00071), as the DeepSeek reference computes
//! it: per-frequency interpolation between `beta_fast` and `beta_slow` over the pretraining
//! length, and a magnitude factor on cos/sin. Pairs are interleaved `(x[2i], x[2i+1])`.
//! Tables are computed in f32 the way the reference does, so angles agree to the last bits.

use loader::{ModelConfig, RopeScaling, config::yarn_mscale};

pub struct Rope {
    /// [rope_dim / 2]
    inv_freq: Vec<f32>,
    /// YaRN's cos/sin magnitude, mscale(factor, mscale) / mscale(factor, mscale_all_dim)
    attention_factor: f32,
}

impl Rope {
    pub fn new(cfg: &ModelConfig) -> Rope {
        let dim = cfg.qk_rope_head_dim;
        let base = cfg.rope_theta as f32;
        // base^(2i/dim) in f32, as torch computes `base ** (arange(0, dim, 2).float() / dim)`
        let pos_freqs: Vec<f32> = (0..dim / 2)
            .map(|i| base.powf((2 * i) as f32 / dim as f32))
            .collect();
        match &cfg.rope_scaling {
            None => Rope {
                inv_freq: pos_freqs.iter().map(|p| 1.0 / p).collect(),
                attention_factor: 1.0,
            },
            Some(RopeScaling::Yarn(y)) => {
                let factor = y.factor;
                let attention_factor = y.attention_factor.unwrap_or_else(|| {
                    match (
                        y.mscale.filter(|&m| m != 0.0),
                        y.mscale_all_dim.filter(|&m| m != 0.0),
                    ) {
                        (Some(m), Some(all)) => yarn_mscale(factor, m) / yarn_mscale(factor, all),
                        _ => yarn_mscale(factor, 1.0),
                    }
                });
                let orig = y.original_max_position_embeddings as f64;
                let correction_dim = |rot: f64| {
                    dim as f64 * (orig / (rot * 2.0 * std::f64::consts::PI)).ln()
                        / (2.0 * (cfg.rope_theta).ln())
                };
                let low = correction_dim(y.beta_fast).floor().max(0.0);
                let high = correction_dim(y.beta_slow).ceil().min(dim as f64 - 1.0);
                let (low, high) = (
                    low as f32,
                    if low == high { high + 0.001 } else { high } as f32,
                );
                let inv_freq = pos_freqs
                    .iter()
                    .enumerate()
                    .map(|(i, &p)| {
                        let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrapolation = 1.0 - ramp; // 1: keep the original frequency
                        let interp = 1.0 / (factor as f32 * p);
                        let extra = 1.0 / p;
                        interp * (1.0 - extrapolation) + extra * extrapolation
                    })
                    .collect();
                Rope {
                    inv_freq,
                    attention_factor: attention_factor as f32,
                }
            }
        }
    }

    pub fn half_dim(&self) -> usize {
        self.inv_freq.len()
    }

    /// cos and sin (each `[half_dim]`) of every frequency at `pos`, scaled by YaRN's factor.
    pub fn cos_sin(&self, pos: usize, cos: &mut [f32], sin: &mut [f32]) {
        for ((c, s), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(&self.inv_freq) {
            let angle = f * pos as f32;
            *c = angle.cos() * self.attention_factor;
            *s = angle.sin() * self.attention_factor;
        }
    }
}
