//! The test oracle: attention with K and V decompressed per head from the latent, as
//! the paper writes it before absorption. Production never takes this path.

use super::*;
use crate::rope::Rope;
use kernels::CpuBackend;
use loader::Checkpoint;

fn naive(m: &Mla, be: &dyn Backend, x: &[f32], cos: &[f32], sin: &[f32]) -> Vec<f32> {
    let (h, r, p) = (m.n_heads, m.kv_lora_rank, m.qk_rope_head_dim);
    let (nope, vd) = (m.qk_nope_head_dim, m.v_head_dim);
    let tokens = cos.len() / (p / 2);
    let half = p / 2;
    let mut q = vec![0f32; tokens * h * (nope + p)];
    match &m.q {
        QProj::LowRank { wq_a, q_norm, wq_b } => {
            let mut qa = vec![0f32; tokens * wq_a.rows];
            be.matmul(x, wq_a, &mut qa);
            let mut qn = vec![0f32; qa.len()];
            be.rms_norm(&qa, q_norm, m.eps, &mut qn);
            be.matmul(&qn, wq_b, &mut q);
        }
        QProj::Full { wq } => be.matmul(x, wq, &mut q),
    }
    let mut kv = vec![0f32; tokens * (r + p)];
    be.matmul(x, &m.wkv_a, &mut kv);
    let mut c_kv = vec![0f32; tokens * r];
    let mut k_pe = vec![0f32; tokens * p];
    for t in 0..tokens {
        let row = &kv[t * (r + p)..(t + 1) * (r + p)];
        be.rms_norm(&row[..r], &m.kv_norm, m.eps, &mut c_kv[t * r..(t + 1) * r]);
        k_pe[t * p..(t + 1) * p].copy_from_slice(&row[r..]);
        let (c, s) = (
            &cos[t * half..(t + 1) * half],
            &sin[t * half..(t + 1) * half],
        );
        be.rope(&mut k_pe[t * p..(t + 1) * p], c, s);
        for head in 0..h {
            let at = (t * h + head) * (nope + p) + nope;
            be.rope(&mut q[at..at + p], c, s);
        }
    }
    // Decompress: [tokens, n_heads * (nope + v)]
    let mut kv_full = vec![0f32; tokens * h * (nope + vd)];
    let KvB::Combined(wkv_b) = &m.kv_b else {
        panic!("the oracle decompresses with a combined kv_b")
    };
    be.matmul(&c_kv, wkv_b, &mut kv_full);
    let mut o = vec![0f32; tokens * h * vd];
    for head in 0..h {
        for t in 0..tokens {
            let qh = &q[(t * h + head) * (nope + p)..][..nope + p];
            let mut scores: Vec<f32> = (0..=t)
                .map(|j| {
                    let k = &kv_full[(j * h + head) * (nope + vd)..][..nope];
                    let dot_nope: f32 = qh[..nope].iter().zip(k).map(|(a, b)| a * b).sum();
                    let dot_pe: f32 = qh[nope..]
                        .iter()
                        .zip(&k_pe[j * p..(j + 1) * p])
                        .map(|(a, b)| a * b)
                        .sum();
                    (dot_nope + dot_pe) * m.softmax_scale
                })
                .collect();
            be.softmax(&mut scores);
            for (j, pj) in scores.iter().enumerate() {
                let v = &kv_full[(j * h + head) * (nope + vd) + nope..][..vd];
                for (ov, vv) in o[(t * h + head) * vd..][..vd].iter_mut().zip(v) {
                    *ov += pj * vv;
                }
            }
        }
    }
    let mut out = vec![0f32; tokens * m.wo.rows];
    be.matmul(&o, &m.wo, &mut out);
    out
}

/// A golden model's checkpoint (`tests/golden/NAME`).
fn golden_checkpoint(name: &str) -> Checkpoint {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden")
        .join(name);
    Checkpoint::open(&dir).unwrap()
}

/// The oracle tests' inputs: `tokens` hidden rows of a fixed pattern, and their positions'
/// rope cosines and sines.
fn inputs(cfg: &ModelConfig, tokens: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let rope = Rope::new(cfg);
    let half = cfg.qk_rope_head_dim / 2;
    let x: Vec<f32> = (0..tokens * cfg.hidden_size)
        .map(|i| (i * 7919 % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let (mut cos, mut sin) = (vec![0f32; tokens * half], vec![0f32; tokens * half]);
    for t in 0..tokens {
        rope.cos_sin(
            t,
            &mut cos[t * half..(t + 1) * half],
            &mut sin[t * half..(t + 1) * half],
        );
    }
    (x, cos, sin)
}

/// `attn_k_b` / `attn_v_b` as llama.cpp's converter derives them from `kv_b_proj`.
fn split_kv_b(m: &Mla) -> KvB {
    let KvB::Combined(w) = &m.kv_b else {
        unreachable!()
    };
    let (h, r, nope, vd) = (m.n_heads, m.kv_lora_rank, m.qk_nope_head_dim, m.v_head_dim);
    let mut k_b = vec![0f32; h * r * nope];
    let mut v_b = vec![0f32; h * vd * r];
    let mut row = vec![0f32; r];
    for head in 0..h {
        for i in 0..nope + vd {
            w.read_row(head * (nope + vd) + i, &mut row);
            for (c, &v) in row.iter().enumerate() {
                if i < nope {
                    k_b[(head * r + c) * nope + i] = v;
                } else {
                    v_b[(head * vd + i - nope) * r + c] = v;
                }
            }
        }
    }
    let mat = |name: &str, v: Vec<f32>, shape: Vec<usize>| {
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        Matrix::dense(loader::Tensor::from_bytes(name, loader::DType::F32, shape, bytes).unwrap())
            .unwrap()
    };
    KvB::Split {
        k_b: mat("k_b", k_b, vec![h * r, nope]),
        v_b: mat("v_b", v_b, vec![h * vd, r]),
    }
}

/// The expanded form (long prefill chunks) against the decompressed oracle, with both
/// `wkv_b` layouts, as one chunk and as a second chunk over a cached prefix.
#[test]
fn expanded_attention_equals_decompressed() {
    for name in ["v3_yarn_mtp", "v3_fp8_sharded", "v2_lite_greedy"] {
        let ckpt = golden_checkpoint(name);
        let cfg = &ckpt.config;
        let w = WeightLoader { ckpt: &ckpt };
        let load = || Mla::load(&w, cfg, "model.layers.1.self_attn").unwrap();
        let be = CpuBackend::new();
        let (tokens, half) = (37, cfg.qk_rope_head_dim / 2);
        let (x, cos, sin) = inputs(cfg, tokens);
        let want = naive(&load(), &be, &x, &cos, &sin);
        let combined = Mla {
            expand_from: 1,
            ..load()
        };
        let split = Mla {
            kv_b: split_kv_b(&combined),
            expand_from: 1,
            ..load()
        };
        let blocks = [4u32, 1, 3, 0, 2];
        let hd = cfg.hidden_size;
        // keys and values made a few heads at a time (the last group shorter), from
        // latents widened 6 positions at a time (the last block shorter, 1 position in
        // the second chunk's), as a long prompt's are
        let heads = cfg.num_attention_heads;
        let per_pass = if heads > 3 { 3 } else { 1 };
        let few = |m: &Mla| Mla {
            expand_group_values: per_pass
                * tokens
                * (cfg.qk_nope_head_dim + cfg.v_head_dim + cfg.qk_rope_head_dim),
            latent_block_values: 6 * cfg.kv_lora_rank,
            kv_b: m.kv_b.clone(),
            expand_from: 1,
            ..load()
        };
        let (combined_few, split_few) = (few(&combined), few(&split));
        for (layout, mla) in [
            ("combined", &combined),
            ("split", &split),
            ("combined, a few heads a pass", &combined_few),
            ("split, a few heads a pass", &split_few),
        ] {
            // one chunk
            let ids = vec![0u32; tokens];
            let spans = [PagedSeq {
                start_pos: 0,
                tokens: &ids,
                blocks: &blocks,
            }];
            let at = Positions {
                cos: &cos,
                sin: &sin,
                spans: &spans,
            };
            let got = mla.forward(&be, &x, &at, &mut KvPool::new(cfg, 5, 8), 1);
            assert_close(&got, &want, &format!("{name} {layout} one chunk"));
            // 20 tokens, then 17 more over the cached 20
            let mut pool = KvPool::new(cfg, 5, 8);
            let mut rows = Vec::new();
            for (a, b) in [(0, 20), (20, tokens)] {
                let ids = vec![0u32; b - a];
                let spans = [PagedSeq {
                    start_pos: a,
                    tokens: &ids,
                    blocks: &blocks,
                }];
                let at = Positions {
                    cos: &cos[a * half..b * half],
                    sin: &sin[a * half..b * half],
                    spans: &spans,
                };
                rows.extend_from_slice(&mla.forward(&be, &x[a * hd..b * hd], &at, &mut pool, 1));
            }
            assert_close(&rows, &want, &format!("{name} {layout} two chunks"));
        }
    }
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len());
    let err: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        .sqrt()
        / want.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
    assert!(
        err < 1e-5,
        "{what}: expanded vs decompressed rel L2 {err:.3e}"
    );
}

#[test]
fn the_expanded_form_starts_where_it_saves_work() {
    // V3's shapes: r 512, nope 128, v 128 -> from 206 tokens; 2 r <= 2 v + nope never
    assert_eq!(expand_from(512, 128, 128), 206);
    assert_eq!(expand_from(512, 64, 64), 80);
    assert_eq!(expand_from(32, 16, 16), 65);
    assert_eq!(expand_from(16, 16, 16), usize::MAX);
    assert_eq!(expand_from(48, 32, 32), usize::MAX);
}

#[test]
fn absorbed_attention_equals_decompressed() {
    for name in ["v3_yarn_mtp", "v3_fp8_sharded", "v2_lite_greedy"] {
        let ckpt = golden_checkpoint(name);
        let cfg = &ckpt.config;
        let w = WeightLoader { ckpt: &ckpt };
        let mla = Mla::load(&w, cfg, "model.layers.1.self_attn").unwrap();
        let be = CpuBackend::new();
        let tokens = 37;
        let (x, cos, sin) = inputs(cfg, tokens);
        // blocks of 8 in a scrambled order
        let mut pool = KvPool::new(cfg, 5, 8);
        let blocks = [4u32, 1, 3, 0, 2];
        let ids = vec![0u32; tokens];
        let spans = [PagedSeq {
            start_pos: 0,
            tokens: &ids,
            blocks: &blocks,
        }];
        let at = Positions {
            cos: &cos,
            sin: &sin,
            spans: &spans,
        };
        let got = mla.forward(&be, &x, &at, &mut pool, 1);
        let want = naive(&mla, &be, &x, &cos, &sin);
        // llama.cpp's split layout (key half transposed per head) gives the same output
        let split = Mla {
            kv_b: split_kv_b(&mla),
            ..Mla::load(&w, cfg, "model.layers.1.self_attn").unwrap()
        };
        let got_split = split.forward(&be, &x, &at, &mut KvPool::new(cfg, 5, 8), 1);
        let e: f32 = got
            .iter()
            .zip(&got_split)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(e < 1e-4, "{name}: split vs combined kv_b max diff {e}");
        let err: f64 = got
            .iter()
            .zip(&want)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            .sqrt()
            / want.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
        assert!(
            err < 1e-5,
            "{name}: absorbed vs decompressed rel L2 {err:.3e}"
        );
    }
}
