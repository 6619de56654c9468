//! DeepSeekMoE (DeepSeek-V2 paper §2.2; V3 report §2.1.2): shared experts that see every
//! token, plus routed experts chosen per token by a gate. V3 scores experts with a sigmoid
//! and selects on `score + e_score_correction_bias` (auxiliary-loss-free balancing) within
//! the best groups; V2 scores with a softmax. Tokens are bucketed by expert once, and each
//! chosen expert runs once over all of its tokens.

use kernels::{Backend, Matrix};
use loader::{ModelConfig, ScoringFunc, TopkMethod};

use crate::error::ModelError;
use crate::scratch::Buf;
use crate::weights::WeightLoader;

/// A SwiGLU MLP: `w2(silu(w1 x) * w3 x)`. Dense layers, shared experts and experts alike.
pub struct Mlp {
    pub w1: Matrix, // gate_proj [inter, hidden]
    pub w3: Matrix, // up_proj   [inter, hidden]
    pub w2: Matrix, // down_proj [hidden, inter]
    /// Values per intermediate buffer (see `DEFAULT_BUDGET`)
    pub budget: usize,
}

impl Mlp {
    pub(crate) fn load(
        w: &WeightLoader,
        p: &str,
        hidden: usize,
        inter: usize,
    ) -> Result<Mlp, ModelError> {
        Ok(Mlp {
            w1: w.matrix(&format!("{p}.gate_proj.weight"), inter, hidden)?,
            w3: w.matrix(&format!("{p}.up_proj.weight"), inter, hidden)?,
            w2: w.matrix(&format!("{p}.down_proj.weight"), hidden, inter)?,
            budget: DEFAULT_BUDGET,
        })
    }

    /// `x`: [tokens, hidden] -> [tokens, hidden]. A long prompt's tokens go in pieces, so
    /// the intermediate activations stay within `budget` values a buffer (each piece reads
    /// the weights again: a dense layer's or the shared expert's, a small part of a
    /// prefill's reads).
    pub fn forward(&self, be: &dyn Backend, x: &[f32]) -> Buf<f32> {
        let (hidden, inter) = (self.w1.cols, self.w1.rows);
        let tokens = x.len() / hidden;
        let mut out = Buf::<f32>::for_overwrite(tokens * self.w2.rows);
        let piece = rows_within(self.budget, hidden, inter).min(tokens.max(1));
        let mut g = Buf::<f32>::for_overwrite(piece * inter);
        let mut u = Buf::<f32>::for_overwrite(piece * inter);
        for t0 in (0..tokens).step_by(piece) {
            let n = piece.min(tokens - t0);
            let (g, u) = (&mut g[..n * inter], &mut u[..n * inter]);
            let xp = &x[t0 * hidden..(t0 + n) * hidden];
            // gate and up as one operation over the same rows (one expert of n rows)
            be.matmul_experts_pair(xp, &[0, n], &|_| &self.w1, &|_| &self.w3, g, u);
            be.silu_mul(g, u);
            be.matmul(g, &self.w2, &mut out[t0 * hidden..(t0 + n) * hidden]);
        }
        out
    }
}

/// Values per activation buffer in the feed-forward parts (2 MiB of f32): a 512-token
/// chunk's routed experts would otherwise hold 6 x 512 gathered rows and their products
/// at once (25 MB on a 1024-wide model; 117 MB computed for V3's shape), the largest part
/// of the memory a long prompt adds over the weights and the cache.
pub const DEFAULT_BUDGET: usize = 1 << 19;

/// How many rows of `hidden` inputs and `inter` intermediate values fit `budget` values.
fn rows_within(budget: usize, hidden: usize, inter: usize) -> usize {
    (budget / hidden.max(inter).max(1)).max(1)
}

/// The router.
pub struct Gate {
    pub weight: Matrix,         // [n_routed_experts, hidden]
    pub bias: Option<Vec<f32>>, // [n_routed_experts] e_score_correction_bias (selection only)
    pub scoring: ScoringFunc,
    pub method: TopkMethod,
    pub n_group: usize,
    pub topk_group: usize,
    pub top_k: usize,
    pub norm_topk_prob: bool,
    pub route_scale: f32,
}

/// Per token, the chosen experts and their weights (`top_k` each).
pub struct Routing {
    pub indices: Buf<usize>, // [tokens, top_k]
    pub weights: Buf<f32>,   // [tokens, top_k]
}

impl Gate {
    pub(crate) fn load(w: &WeightLoader, cfg: &ModelConfig, p: &str) -> Result<Gate, ModelError> {
        let e = cfg.n_routed_experts;
        let bias_name = format!("{p}.e_score_correction_bias");
        // noaux_tc selects on biased scores, so the bias is required there; elsewhere a
        // checkpoint may carry one that the method ignores.
        let bias = if cfg.topk_method == TopkMethod::NoauxTc {
            Some(w.vector(&bias_name, e)?)
        } else {
            None
        };
        Ok(Gate {
            weight: w.matrix(&format!("{p}.weight"), e, cfg.hidden_size)?,
            bias,
            scoring: cfg.scoring_func,
            method: cfg.topk_method,
            n_group: cfg.n_group,
            topk_group: cfg.topk_group,
            top_k: cfg.num_experts_per_tok,
            norm_topk_prob: cfg.norm_topk_prob,
            route_scale: cfg.routed_scaling_factor as f32,
        })
    }

    /// Router logits in f32, scores, then group-limited top-k per token.
    pub fn route(&self, be: &dyn Backend, x: &[f32]) -> Routing {
        let e = self.weight.rows;
        let tokens = x.len() / self.weight.cols;
        let mut scores = Buf::<f32>::for_overwrite(tokens * e);
        be.matmul(x, &self.weight, &mut scores);
        // per token, over the backend's threads: its scores, its choice and their weights,
        // written as [weights | indices] (indices as f32: exact below 2^24 experts)
        let k = self.top_k;
        let mut picked = Buf::<f32>::for_overwrite(tokens * 2 * k);
        be.for_rows(&mut picked, 2 * k, &|first, rows| {
            let mut s = Buf::<f32>::for_overwrite(e);
            let mut work = CHOICE.with(|c| c.take());
            for (t, out) in (first..).zip(rows.chunks_exact_mut(2 * k)) {
                s.copy_from_slice(&scores[t * e..(t + 1) * e]);
                match self.scoring {
                    ScoringFunc::Sigmoid => {
                        s.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()))
                    }
                    ScoringFunc::Softmax => be.softmax(&mut s),
                }
                let chosen = self.select(&s, &mut work);
                let (w, ids) = out.split_at_mut(k);
                for (j, (w, id)) in w.iter_mut().zip(ids.iter_mut()).enumerate() {
                    // (fewer experts than k: the last one again, at no weight)
                    let i = chosen.get(j).copied();
                    *w = i.map_or(0.0, |i| s[i]);
                    *id = i.or(chosen.last().copied()).unwrap_or(0) as f32;
                }
                self.weigh(w);
            }
            CHOICE.with(|c| c.replace(work));
        });
        let mut routing = Routing {
            indices: Buf::with_capacity(tokens * k),
            weights: Buf::with_capacity(tokens * k),
        };
        for out in picked.chunks_exact(2 * k) {
            routing.weights.vec().extend_from_slice(&out[..k]);
            routing
                .indices
                .vec()
                .extend(out[k..].iter().map(|&i| i as usize));
        }
        routing
    }

    /// The experts one token is sent to (DeepSeek's `Gate.forward` selection), in `work`'s
    /// buffers (reused token to token: a prefill routes every token of every layer).
    fn select<'w>(&self, scores: &[f32], work: &'w mut Choice) -> &'w [usize] {
        let e = scores.len();
        let Choice {
            biased,
            groups,
            idx,
            keep,
        } = work;
        biased.clear();
        biased.extend_from_slice(scores);
        if let Some(b) = &self.bias {
            biased.iter_mut().zip(b).for_each(|(s, b)| *s += b);
        }
        if self.method != TopkMethod::Greedy && self.n_group > 1 {
            let per = e / self.n_group;
            groups.clear();
            groups.extend(biased.chunks_exact(per).map(|g| match self.method {
                // noaux_tc: a group is as good as its two best experts
                TopkMethod::NoauxTc => best_two_sum(g),
                _ => g.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            }));
            top_k_into(groups, self.topk_group, keep);
            for (gi, g) in biased.chunks_exact_mut(per).enumerate() {
                if !keep.contains(&gi) {
                    g.fill(f32::NEG_INFINITY);
                }
            }
        }
        top_k_into(biased, self.top_k, idx);
        idx
    }

    /// Unbiased scores of the chosen experts -> mixing weights.
    fn weigh(&self, w: &mut [f32]) {
        let normalise = |w: &mut [f32]| {
            let sum: f32 = w.iter().sum::<f32>() + 1e-20;
            w.iter_mut().for_each(|v| *v /= sum);
        };
        match self.scoring {
            // V3: renormalise (norm_topk_prob), then scale.
            ScoringFunc::Sigmoid => {
                if self.norm_topk_prob {
                    normalise(w);
                }
                w.iter_mut().for_each(|v| *v *= self.route_scale);
            }
            // V2's reference: either renormalise or scale, never both.
            ScoringFunc::Softmax => {
                if self.norm_topk_prob && self.top_k > 1 {
                    normalise(w);
                } else {
                    w.iter_mut().for_each(|v| *v *= self.route_scale);
                }
            }
        }
    }
}

thread_local! {
    /// Each thread's router buffers, kept between calls (a decode step allocates nothing).
    static CHOICE: std::cell::Cell<Choice> = std::cell::Cell::new(Choice::default());
}

/// A router's per-token buffers (see [`Gate::select`]).
#[derive(Default)]
struct Choice {
    biased: Vec<f32>,
    groups: Vec<f32>,
    idx: Vec<usize>,
    keep: Vec<usize>,
}

/// The sum of a group's two largest values (one value alone: itself), as the sum of
/// `top_k_into(g, 2)`'s values adds them: the best, then the second.
fn best_two_sum(g: &[f32]) -> f32 {
    let (mut a, mut b): (Option<f32>, Option<f32>) = (None, None);
    for &v in g {
        if a.is_none_or(|a| v.total_cmp(&a).is_gt()) {
            (a, b) = (Some(v), a);
        } else if b.is_none_or(|b| v.total_cmp(&b).is_gt()) {
            b = Some(v);
        }
    }
    a.into_iter().chain(b).sum()
}

/// Indices of the `k` largest values into `idx`, best first; ties go to the lower index.
fn top_k_into(v: &[f32], k: usize, idx: &mut Vec<usize>) {
    idx.clear();
    idx.extend(0..v.len());
    // a total order (value, then index): the k best are a selection, then a sort of k
    // (a whole sort of every expert per token was a prefill's largest serial part)
    let order = |a: &usize, b: &usize| v[*b].total_cmp(&v[*a]).then(a.cmp(b));
    if k == 0 {
        idx.clear();
    } else if k < v.len() {
        idx.select_nth_unstable_by(k - 1, order);
    }
    idx.truncate(k);
    idx.sort_unstable_by(order);
}

pub struct Moe {
    pub gate: Gate,
    pub experts: Vec<Mlp>,
    pub shared: Option<Mlp>,
    /// Values per activation buffer of the routed experts (see `DEFAULT_BUDGET`)
    pub budget: usize,
}

impl Moe {
    pub(crate) fn load(w: &WeightLoader, cfg: &ModelConfig, p: &str) -> Result<Moe, ModelError> {
        let (hidden, inter) = (cfg.hidden_size, cfg.moe_intermediate_size);
        let experts = (0..cfg.n_routed_experts)
            .map(|i| Mlp::load(w, &format!("{p}.experts.{i}"), hidden, inter))
            .collect::<Result<_, _>>()?;
        let shared = match cfg.n_shared_experts {
            0 => None,
            n => Some(Mlp::load(
                w,
                &format!("{p}.shared_experts"),
                hidden,
                inter * n,
            )?),
        };
        Ok(Moe {
            gate: Gate::load(w, cfg, &format!("{p}.gate"))?,
            experts,
            shared,
            budget: DEFAULT_BUDGET,
        })
    }

    /// `x`: [tokens, hidden] -> [tokens, hidden], and the routing (for tracing).
    pub fn forward(&self, be: &dyn Backend, x: &[f32]) -> (Buf<f32>, Routing) {
        let hidden = self.gate.weight.cols;
        let tokens = x.len() / hidden;
        let routing = self.gate.route(be, x);
        let k = self.gate.top_k;

        // Bucket (token, weight) pairs by expert once (a counting sort into one buffer:
        // `pairs[start[e]..start[e + 1]]` are expert e's).
        let n_exp = self.experts.len();
        let mut start = Buf::<usize>::zeros(n_exp + 1);
        for &e in routing.indices.iter() {
            start[e + 1] += 1;
        }
        for e in 0..n_exp {
            start[e + 1] += start[e];
        }
        let mut fill = Buf::<usize>::from_slice(&start[..n_exp]);
        let mut pairs = Buf::<(usize, f32)>::zeros(tokens * k);
        // and where each of a token's choices went: slot[t * k + j]
        let mut slot = Buf::<usize>::zeros(tokens * k);
        for t in 0..tokens {
            for j in 0..k {
                let e = routing.indices[t * k + j];
                pairs[fill[e]] = (t, routing.weights[t * k + j]);
                slot[t * k + j] = fill[e];
                fill[e] += 1;
            }
        }
        // Gather the tokens in expert order, then every chosen expert's SwiGLU as three
        // grouped products (one parallel region each, however many experts a step picks).
        // A long prompt's experts go in groups whose rows fit the budget: each expert's
        // weights are still read once, and the activations held stay bounded.
        let inter = self.experts.first().map_or(0, |e| e.w1.rows);
        let limit = rows_within(self.budget, hidden, inter);
        // Where the shared expert has a routed expert's shape (V3's does) and everything fits
        // one group (decode), it joins the routed experts as one more expert over every
        // token: a layer's gate and up products are then one operation, its down products
        // another, instead of three more for the shared expert alone.
        let fused = self
            .shared
            .as_ref()
            .filter(|s| s.w1.rows == inter && s.w1.cols == hidden && tokens * k + tokens <= limit);
        let extra = if fused.is_some() { tokens } else { 0 };
        let mut out = Buf::<f32>::zeros(tokens * hidden);
        let mut e0 = 0;
        while e0 < n_exp {
            let mut e1 = e0 + 1;
            while e1 < n_exp && start[e1 + 1] - start[e0] <= limit {
                e1 += 1;
            }
            let base = e0; // experts base..e1, then the shared one where fused
            e0 = e1;
            let (r0, r1) = (start[base], start[e1]);
            if r0 == r1 {
                continue;
            }
            let group = &pairs[r0..r1];
            let routed = r1 - r0;
            let rows = routed + extra;
            let mut starts = Buf::<usize>::zeros(e1 - base + 1 + (extra > 0) as usize);
            for (s, &t) in starts.iter_mut().zip(&start[base..=e1]) {
                *s = t - r0;
            }
            *starts.last_mut().expect("at least one entry") = rows;
            let mut xs = Buf::<f32>::for_overwrite(rows * hidden);
            be.for_rows(&mut xs, hidden, &|first, dst| {
                for (i, d) in (first..).zip(dst.chunks_exact_mut(hidden)) {
                    // the routed rows, then (fused) every token again for the shared expert
                    let t = if i < routed { group[i].0 } else { i - routed };
                    d.copy_from_slice(&x[t * hidden..(t + 1) * hidden]);
                }
            });
            let expert = |e: usize| match fused {
                Some(shared) if base + e == n_exp => shared,
                _ => &self.experts[base + e],
            };
            let mut g = Buf::<f32>::for_overwrite(rows * inter);
            let mut u = Buf::<f32>::for_overwrite(rows * inter);
            be.matmul_experts_pair(
                &xs,
                &starts,
                &|e| &expert(e).w1,
                &|e| &expert(e).w3,
                &mut g,
                &mut u,
            );
            be.silu_mul(&mut g, &u);
            drop(u);
            // the gathered inputs are spent: their buffer takes the outputs
            let mut ys = xs;
            be.matmul_experts(&g, &starts, &|e| &expert(e).w2, &mut ys);
            // per token, its experts of this group in expert order (the order pairs hold
            // them in), then the fused shared expert: every token's sum in the order the
            // unfused path adds in, whichever thread has it
            let ys = &ys;
            let slot = &slot;
            be.for_rows(&mut out, hidden, &|first, dst| {
                for (t, o) in (first..).zip(dst.chunks_exact_mut(hidden)) {
                    // its slots within this group, smallest first (k is small)
                    let mut last = None;
                    while let Some(s) = slot[t * k..(t + 1) * k]
                        .iter()
                        .copied()
                        .filter(|&s| (r0..r1).contains(&s) && last.is_none_or(|l| s > l))
                        .min()
                    {
                        last = Some(s);
                        let (i, wt) = (s - r0, pairs[s].1);
                        for (o, &y) in o.iter_mut().zip(&ys[i * hidden..(i + 1) * hidden]) {
                            *o += wt * y;
                        }
                    }
                    if extra > 0 {
                        let y = &ys[(routed + t) * hidden..(routed + t + 1) * hidden];
                        o.iter_mut().zip(y).for_each(|(o, &y)| *o += y);
                    }
                }
            });
        }
        if let Some(shared) = self.shared.as_ref().filter(|_| fused.is_none()) {
            let sh = shared.forward(be, x);
            be.for_rows(&mut out, hidden, &|first, dst| {
                for (o, s) in dst.iter_mut().zip(&sh[first * hidden..]) {
                    *o += s;
                }
            });
        }
        (out, routing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group's score without sorting it is the sum of the two best `top_k_into` picks,
    /// bit for bit: ties, signed zeros, one-value groups, infinities.
    #[test]
    fn best_two_sum_is_the_sum_of_the_top_two() {
        let groups: [&[f32]; 8] = [
            &[0.5, 0.25, 0.75, 0.125],
            &[0.3, 0.3, 0.1],
            &[-0.0, -0.0, -1.0],
            &[2.0],
            &[f32::NEG_INFINITY, 1.0, f32::NEG_INFINITY],
            &[1e-8, 3.0, 3.0, -2.0, 1e30],
            &[0.1, 0.7, 0.2, 0.7, 0.4, 0.6, 0.05, 0.9],
            // x86's default NaN is negative: below -inf in the total order
            &[f32::from_bits(0xffc0_0000), f32::NEG_INFINITY],
        ];
        let mut idx = Vec::new();
        for g in groups {
            top_k_into(g, 2, &mut idx);
            let want: f32 = idx.iter().map(|&i| g[i]).sum();
            assert_eq!(best_two_sum(g).to_bits(), want.to_bits(), "{g:?}");
        }
        // and top_k_into orders best first, lower index first among ties
        top_k_into(&[0.2, 0.9, 0.9, 0.1], 3, &mut idx);
        assert_eq!(idx, [1, 2, 0]);
    }
}
