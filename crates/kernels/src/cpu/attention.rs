//! Absorbed multi-head latent attention (DeepSeek-V2 paper, §2.1.2, "absorb" form): every
//! head attends over the same cached latent rows, so the cache holds 576 values per token
//! for V3 instead of 128 heads of K and V. Shares of the pool take (token, head) pairs.

use std::cell::RefCell;

use super::dispatch::Level;
use super::norm::softmax;
use super::pool::ThreadPool;
use super::simd;
use crate::backend::MlaAttention;

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

#[derive(Clone, Copy)]
struct Out(*mut f32);
unsafe impl Send for Out {}
unsafe impl Sync for Out {}
impl Out {
    /// A method, not a field access, so closures capture the `Sync` wrapper.
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

pub fn mla_attention(level: Level, pool: &ThreadPool, a: &MlaAttention<'_>, out: &mut [f32]) {
    let (h, r, p) = (a.n_heads, a.kv_lora_rank, a.rope_dim);
    let row = r + p;
    let tokens = a.q_pe.len() / (h * p);
    assert!(out.len() >= tokens * h * r);
    let bs = a.block_size;
    let at = |j: usize| (a.blocks[j / bs] as usize * bs + j % bs) * row;
    let dst = Out(out.as_mut_ptr());
    pool.for_ranges(tokens * h, 1, &|pairs| {
        SCORES.with(|sc| {
            let mut sc = sc.borrow_mut();
            if sc.len() < a.start_pos + tokens {
                sc.resize(a.start_pos + tokens, 0.0);
            }
            for pair in pairs {
                let t = pair / h;
                let len = a.start_pos + t + 1; // causal: keys 0..=position
                let q_lat = &a.q_latent[pair * r..][..r];
                let q_pe = &a.q_pe[pair * p..][..p];
                let s = &mut sc[..len];
                for (j, sj) in s.iter_mut().enumerate() {
                    let kv = &a.kv[at(j)..at(j) + row];
                    *sj = (simd::dot(level, q_lat, &kv[..r]) + simd::dot(level, q_pe, &kv[r..]))
                        * a.scale;
                }
                softmax(s);
                // SAFETY: pair's output row belongs to this share alone.
                let o = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(pair * r), r) };
                o.fill(0.0);
                for (j, &pj) in s.iter().enumerate() {
                    simd::axpy(level, pj, &a.kv[at(j)..at(j) + r], o);
                }
            }
        })
    });
}
