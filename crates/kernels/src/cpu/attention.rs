//! Absorbed multi-head latent attention (DeepSeek-V2 paper, §2.1.2, "absorb" form): every
//! head attends over the same cached latent rows, so the cache holds 576 values per token
//! for V3 instead of 128 heads of K and V.

use super::matmul::dot;
use super::norm::softmax;
use crate::backend::MlaAttention;

pub fn mla_attention(a: &MlaAttention<'_>, out: &mut [f32]) {
    let (h, r, p) = (a.n_heads, a.kv_lora_rank, a.rope_dim);
    let row = r + p;
    let tokens = a.q_pe.len() / (h * p);
    let mut scores = vec![0f32; a.start_pos + tokens];
    let bs = a.block_size;
    let at = |j: usize| (a.blocks[j / bs] as usize * bs + j % bs) * row;
    for t in 0..tokens {
        let len = a.start_pos + t + 1; // causal: keys 0..=position
        for head in 0..h {
            let q_lat = &a.q_latent[(t * h + head) * r..][..r];
            let q_pe = &a.q_pe[(t * h + head) * p..][..p];
            let s = &mut scores[..len];
            for (j, sj) in s.iter_mut().enumerate() {
                let kv = &a.kv[at(j)..at(j) + row];
                *sj = (dot(q_lat, &kv[..r]) + dot(q_pe, &kv[r..])) * a.scale;
            }
            softmax(s);
            let o = &mut out[(t * h + head) * r..][..r];
            o.fill(0.0);
            for (j, &pj) in s.iter().enumerate() {
                for (ov, &c) in o.iter_mut().zip(&a.kv[at(j)..at(j) + r]) {
                    *ov += pj * c;
                }
            }
        }
    }
}
