//! Logits, residual streams, routing and greedy continuations against goldens that
//! transformers (pinned, float32) produced with `scripts/reference/generate.py`.

use std::path::PathBuf;

use kernels::cpu::simd::has_bf16_dot;
use kernels::{CpuBackend, CpuOptions, Level};
use loader::{Checkpoint, SafetensorsFile};
use model::{ForwardBatch, LogitsMode, Model, SeqChunk, Trace};

const MODELS: [&str; 5] = [
    "v3_yarn_mtp",
    "v3_nolora_f16",
    "v3_fp8_sharded",
    "v2_softmax_grouped",
    "v2_lite_greedy",
];

fn golden_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden")
        .join(name)
}

struct Case {
    model: Model,
    golden: SafetensorsFile,
}

impl Case {
    fn open(name: &str) -> Case {
        Case::open_at(name, Level::detect(), 0)
    }

    /// With the kernels forced to `level` on `threads` threads (0: every core).
    fn open_at(name: &str, level: Level, threads: usize) -> Case {
        Case::open_with(
            name,
            &CpuOptions {
                level: Some(level),
                threads: Some(threads),
                ..Default::default()
            },
        )
    }

    fn open_with(name: &str, options: &CpuOptions) -> Case {
        let dir = golden_dir(name);
        let ckpt = Checkpoint::open(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let be = CpuBackend::with_options(options).unwrap();
        let model = Model::load_with(&ckpt, Box::new(be)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let golden = SafetensorsFile::open(&dir.join("goldens.safetensors")).unwrap();
        Case { model, golden }
    }

    fn f32s(&self, key: &str) -> Vec<f32> {
        self.golden.tensor(key).unwrap().to_f32_vec()
    }

    fn ids(&self, key: &str) -> Vec<u32> {
        self.golden
            .tensor(key)
            .unwrap()
            .to_i64_vec()
            .unwrap()
            .iter()
            .map(|&x| x as u32)
            .collect()
    }

    fn has(&self, key: &str) -> bool {
        self.golden.get(key).is_some()
    }

    fn count(&self, prefix: &str, suffix: &str) -> usize {
        (0..)
            .take_while(|k| self.has(&format!("{prefix}.{k}.{suffix}")))
            .count()
    }

    /// One-shot prefill from position 0 in a fresh cache.
    fn prefill(&self, ids: &[u32], trace: Option<&mut Trace>) -> Vec<f32> {
        let mut cache = self.model.new_cache(1, ids.len() + 1);
        let batch = ForwardBatch {
            seqs: vec![SeqChunk {
                slot: 0,
                start_pos: 0,
                tokens: ids,
            }],
            logits: LogitsMode::All,
        };
        self.model
            .forward_traced(&batch, &mut cache, trace)
            .unwrap()
    }
}

impl Case {
    /// One token at a time through a fresh cache: each step's logits.
    fn stepwise(&self, ids: &[u32]) -> Vec<f32> {
        let mut cache = self.model.new_cache(1, ids.len());
        let mut out = Vec::new();
        for (i, t) in ids.iter().enumerate() {
            let batch = ForwardBatch {
                seqs: vec![SeqChunk {
                    slot: 0,
                    start_pos: i,
                    tokens: std::slice::from_ref(t),
                }],
                logits: LogitsMode::Last,
            };
            out.extend(self.model.forward(&batch, &mut cache).unwrap());
        }
        out
    }
}

fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// Each row's relative L2 error, smallest first (for median and percentile bounds).
fn sorted_row_errors(got: &[f32], want: &[f32], width: usize) -> Vec<f64> {
    let mut errs: Vec<f64> = got
        .chunks(width)
        .zip(want.chunks(width))
        .map(|(g, w)| rel_l2(g, w))
        .collect();
    errs.sort_by(|a, b| a.total_cmp(b));
    errs
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Every row (token) of `[rows, width]` within `tol` relative L2.
fn assert_rows_close(what: &str, got: &[f32], want: &[f32], width: usize, tol: f64) {
    for (r, (g, w)) in got.chunks(width).zip(want.chunks(width)).enumerate() {
        let e = rel_l2(g, w);
        assert!(
            e <= tol,
            "{what}: row {r} relative L2 error {e:.3e} > {tol:.0e}"
        );
    }
}

fn check_prefill(name: &str, level: Level, threads: usize) {
    let case = Case::open_at(name, level, threads);
    let cfg = &case.model.config;
    let prompts = case.count("prompt", "ids");
    assert!(prompts >= 3, "{name}: expected several prompts");
    for k in 0..prompts {
        let ids = case.ids(&format!("prompt.{k}.ids"));
        let mut trace = Trace::default();
        let logits = case.prefill(&ids, Some(&mut trace));
        let want = case.f32s(&format!("prompt.{k}.logits"));
        assert_rows_close(
            &format!("{name} prompt {k} logits"),
            &logits,
            &want,
            cfg.vocab_size,
            1e-4,
        );

        for l in 0..cfg.num_hidden_layers {
            let want = case.f32s(&format!("prompt.{k}.residual.{l}"));
            let e = rel_l2(&trace.residual[l], &want);
            assert!(
                e <= 1e-5,
                "{name} prompt {k} layer {l}: residual rel L2 {e:.3e} > 1e-5"
            );

            let key = format!("prompt.{k}.router.{l}");
            match (&trace.router[l], case.has(&format!("{key}.indices"))) {
                (Some((idx, wts)), true) => {
                    let top_k = cfg.num_experts_per_tok;
                    let want_idx = case.ids(&format!("{key}.indices"));
                    let want_w = case.f32s(&format!("{key}.weights"));
                    for t in 0..ids.len() {
                        // goldens are sorted by expert index; so are ours after this
                        let mut pairs: Vec<(usize, f32)> = (0..top_k)
                            .map(|j| (idx[t * top_k + j], wts[t * top_k + j]))
                            .collect();
                        pairs.sort_by_key(|p| p.0);
                        let got_idx: Vec<u32> = pairs.iter().map(|p| p.0 as u32).collect();
                        assert_eq!(
                            got_idx,
                            want_idx[t * top_k..(t + 1) * top_k],
                            "{name} prompt {k} layer {l} token {t}: routed experts differ"
                        );
                        let got_w: Vec<f32> = pairs.iter().map(|p| p.1).collect();
                        let e = rel_l2(&got_w, &want_w[t * top_k..(t + 1) * top_k]);
                        assert!(
                            e <= 1e-5,
                            "{name} prompt {k} layer {l} token {t}: router weights rel {e:.3e}"
                        );
                    }
                }
                (None, false) => {}
                (got, want) => panic!(
                    "{name} layer {l}: MoE layer mismatch (ours routed: {}, golden routed: {want})",
                    got.is_some()
                ),
            }
        }
    }
}

fn check_greedy(name: &str, level: Level, threads: usize) {
    let case = Case::open_at(name, level, threads);
    let vocab = case.model.config.vocab_size;
    let cases = case.count("greedy", "ids");
    assert!(cases >= 2);
    for g in 0..cases {
        let prompt = case.ids(&format!("greedy.{g}.prompt_ids"));
        let want_ids = case.ids(&format!("greedy.{g}.ids"));
        let want_logits = case.f32s(&format!("greedy.{g}.step_logits"));
        let steps = want_ids.len();
        let mut cache = case.model.new_cache(1, prompt.len() + steps);
        let mut logits = case
            .model
            .forward(
                &ForwardBatch {
                    seqs: vec![SeqChunk {
                        slot: 0,
                        start_pos: 0,
                        tokens: &prompt,
                    }],
                    logits: LogitsMode::Last,
                },
                &mut cache,
            )
            .unwrap();
        let mut got = Vec::new();
        for step in 0..steps {
            let e = rel_l2(&logits, &want_logits[step * vocab..(step + 1) * vocab]);
            assert!(
                e <= 1e-4,
                "{name} greedy {g} step {step}: logits rel L2 {e:.3e} > 1e-4"
            );
            let next = argmax(&logits);
            got.push(next);
            let pos = prompt.len() + step;
            logits = case
                .model
                .forward(
                    &ForwardBatch {
                        seqs: vec![SeqChunk {
                            slot: 0,
                            start_pos: pos,
                            tokens: &[next],
                        }],
                        logits: LogitsMode::Last,
                    },
                    &mut cache,
                )
                .unwrap();
        }
        assert_eq!(got, want_ids, "{name} greedy {g}: ids differ");
    }
}

/// Chunked prefill, token-by-token decode through the cache, and several sequences in one
/// batch all give the one-shot prefill's logits.
fn check_cache_paths(name: &str, level: Level, threads: usize) {
    let case = Case::open_at(name, level, threads);
    let vocab = case.model.config.vocab_size;
    let k = case.count("prompt", "ids") - 1;
    let ids = case.ids(&format!("prompt.{k}.ids"));
    let n = ids.len();
    let one_shot = case.prefill(&ids, None);

    // chunks of uneven sizes
    let mut cache = case.model.new_cache(1, n);
    let mut chunked = Vec::new();
    let bounds = [0, 1, n / 3, n / 3 + 7, n];
    for w in bounds.windows(2) {
        let (a, b) = (w[0], w[1].min(n));
        if a >= b {
            continue;
        }
        let batch = ForwardBatch {
            seqs: vec![SeqChunk {
                slot: 0,
                start_pos: a,
                tokens: &ids[a..b],
            }],
            logits: LogitsMode::All,
        };
        chunked.extend(case.model.forward(&batch, &mut cache).unwrap());
    }
    assert_rows_close(
        &format!("{name} chunked prefill"),
        &chunked,
        &one_shot,
        vocab,
        1e-5,
    );

    // one token at a time
    let stepwise = case.stepwise(&ids);
    assert_rows_close(
        &format!("{name} decode through cache"),
        &stepwise,
        &one_shot,
        vocab,
        1e-5,
    );

    // two sequences in one batch, in slots 1 and 0, the second a prefix of the first
    let short = &ids[..n / 2];
    let mut cache = case.model.new_cache(2, n);
    let batch = ForwardBatch {
        seqs: vec![
            SeqChunk {
                slot: 1,
                start_pos: 0,
                tokens: &ids,
            },
            SeqChunk {
                slot: 0,
                start_pos: 0,
                tokens: short,
            },
        ],
        logits: LogitsMode::All,
    };
    let both = case.model.forward(&batch, &mut cache).unwrap();
    assert_rows_close(
        &format!("{name} batched (long)"),
        &both[..n * vocab],
        &one_shot,
        vocab,
        1e-6,
    );
    assert_rows_close(
        &format!("{name} batched (short)"),
        &both[n * vocab..],
        &one_shot[..short.len() * vocab],
        vocab,
        1e-5,
    );
}

#[test]
fn prefill_matches_reference() {
    // every kernel level this CPU has, single- and multi-threaded
    for level in Level::available() {
        for threads in [1, 2] {
            for name in MODELS {
                eprintln!("{name} at {level} on {threads} threads");
                check_prefill(name, level, threads);
            }
        }
    }
}

#[test]
fn greedy_decode_matches_reference() {
    // every kernel level this CPU has, single- and multi-threaded
    for level in Level::available() {
        for threads in [1, 2] {
            for name in MODELS {
                check_greedy(name, level, threads);
            }
        }
    }
}

#[test]
fn chunked_prefill_and_decode_equal_one_shot() {
    // every kernel level this CPU has, single- and multi-threaded
    for level in Level::available() {
        for threads in [1, 2] {
            for name in MODELS {
                check_cache_paths(name, level, threads);
            }
        }
    }
}

#[test]
fn mtp_module_is_loaded_apart_from_the_layers() {
    let case = Case::open("v3_yarn_mtp");
    assert_eq!(case.model.layers.len(), case.model.config.num_hidden_layers);
    assert_eq!(case.model.mtp.len(), 1);
    let case = Case::open("v3_fp8_sharded");
    assert_eq!(case.model.mtp.len(), 1);
    assert_eq!(case.model.mtp[0].eh_proj.dtype(), loader::DType::F8E4M3);
}

/// The feed-forward layers in pieces (`Model::set_ffn_budget`): with a budget of a few
/// rows, the dense MLP runs a few tokens at a time and the routed experts in many groups,
/// and the logits are those of one pass (the same row products, a few of them through the
/// decode path's summation order) and the reference's.
#[test]
fn ffn_in_pieces_gives_the_same_logits() {
    for name in MODELS {
        let mut case = Case::open_at(name, Level::detect(), 2);
        let vocab = case.model.config.vocab_size;
        let k = case.count("prompt", "ids") - 1;
        let ids = case.ids(&format!("prompt.{k}.ids"));
        let whole = case.prefill(&ids, None);
        // decode fuses the shared expert into the routed experts' products where it has
        // their shape; a budget of one row leaves it apart (and each routed expert in a
        // group of its own): the same sums, in the same order, so the same bits
        let steps = case.stepwise(&ids[..ids.len().min(6)]);
        case.model.set_ffn_budget(1);
        assert_eq!(
            case.stepwise(&ids[..ids.len().min(6)]),
            steps,
            "{name}: decode with the shared expert apart"
        );
        let width = case
            .model
            .config
            .hidden_size
            .max(case.model.config.intermediate_size);
        case.model.set_ffn_budget(3 * width);
        let pieces = case.prefill(&ids, None);
        assert_rows_close(
            &format!("{name} ffn in pieces"),
            &pieces,
            &whole,
            vocab,
            1e-5,
        );
        let want = case.f32s(&format!("prompt.{k}.logits"));
        assert_rows_close(
            &format!("{name} ffn in pieces vs reference"),
            &pieces,
            &want,
            vocab,
            1e-4,
        );
    }
}

/// `--act-type bf16`: prefill products of bf16 weights take activations rounded to bf16
/// (where the CPU has AVX-512 BF16, the only place the option acts): the prompt's logits
/// stay near the float32 reference, and the rounding shows.
#[test]
fn bf16_activations_stay_near_the_reference() {
    for name in MODELS {
        let case = Case::open_with(
            name,
            &CpuOptions {
                threads: Some(2),
                bf16_activations: true,
                ..Default::default()
            },
        );
        let vocab = case.model.config.vocab_size;
        let k = case.count("prompt", "ids") - 1;
        let ids = case.ids(&format!("prompt.{k}.ids"));
        let got = case.prefill(&ids, None);
        let want = case.f32s(&format!("prompt.{k}.logits"));
        let errs = sorted_row_errors(&got, &want, vocab);
        let (median, p90) = (errs[errs.len() / 2], errs[errs.len() * 9 / 10]);
        eprintln!(
            "{name}: bf16 activations, median {median:.2e}, p90 {p90:.2e}, best {:.2e}",
            errs[0]
        );
        assert!(
            median <= 1e-2 && p90 <= 2e-2,
            "{name}: bf16 activations, relative L2 per token from the reference: median {median:.2e}, 90th percentile {p90:.2e}"
        );
        // f16 weights never round; bf16 ones must, where the CPU has the products
        let rounds = name != "v3_nolora_f16"
            && kernels::cpu::simd::has_bf16_dot(Level::detect())
            && ids.len() >= 4;
        assert_eq!(
            errs[0] > 1e-5,
            rounds,
            "{name}: bf16 activations, closest row {:.1e} from the reference",
            errs[0]
        );
    }
}

/// `--cache-type bf16`: the latents are rounded once, when written, and every path reads
/// the same rounded values; the absorbed form's scores are bf16 products (its queries
/// rounded too), which a long prefill chunk's expanded form does not round, so decoding
/// token by token equals the one-shot prefill to that rounding, and both stay near the
/// float32 reference.
#[test]
fn bf16_cache_decodes_as_it_prefills_and_stays_near_the_reference() {
    for name in MODELS {
        let mut case = Case::open_at(name, Level::detect(), 2);
        case.model.set_cache_type(model::CacheType::Bf16);
        let vocab = case.model.config.vocab_size;
        let k = case.count("prompt", "ids") - 1;
        let ids = case.ids(&format!("prompt.{k}.ids"));
        let one_shot = case.prefill(&ids, None);
        let want = case.f32s(&format!("prompt.{k}.logits"));
        // per token: a tie in the router can flip one token's experts, which no rounding
        // bound covers (v3_fp8_sharded has one such row, 0.7 off, the rest ~2e-3), so
        // the median and most rows are bounded, not the worst
        let errs = sorted_row_errors(&one_shot, &want, vocab);
        let (median, p90) = (errs[errs.len() / 2], errs[errs.len() * 9 / 10]);
        assert!(
            median <= 5e-3 && p90 <= 1e-2,
            "{name}: bf16 cache, relative L2 per token from the reference: median {median:.2e}, 90th percentile {p90:.2e}"
        );
        // the rounding must show: a bf16 cache that silently stayed f32 would be exact
        assert!(
            errs[0] > 1e-5,
            "{name}: bf16 cache logits equal the f32 reference ({:.1e})",
            errs[0]
        );
        // Decode through the cache equals a prefill in the same (absorbed) form. A long
        // prompt's prefill takes the expanded form, checked against the reference above:
        // its keys and values are f32 products of the bf16 latents, where the absorbed
        // scores are bf16 products (the query rounded too), a difference of a few 1e-3.
        // With AMX the prefill's products run on bf16 tiles, which round the
        // probabilities as well (1.4e-3 on v3_yarn_mtp), where decode keeps them f32.
        // With AVX-512 BF16 it is decode's output product that rounds them (as the
        // reference does in bf16: its softmax is cast to the values' type), where this
        // prefill keeps them f32 (2.2e-3 at worst on v3_yarn_mtp).
        let stepwise = case.stepwise(&ids);
        for layer in &mut case.model.layers {
            layer.attn.expand_from = usize::MAX;
        }
        let absorbed = case.prefill(&ids, None);
        if Level::detect() == Level::Amx || has_bf16_dot(Level::detect()) {
            // those roundings differ per position: the median and most rows are bounded
            let errs = sorted_row_errors(&stepwise, &absorbed, vocab);
            let (median, p90) = (errs[errs.len() / 2], errs[errs.len() * 9 / 10]);
            assert!(
                median <= 2e-3 && p90 <= 4e-3,
                "{name}: bf16 cache with bf16 probabilities, decode through cache against prefill: median {median:.2e}, 90th percentile {p90:.2e}"
            );
        } else {
            // the two paths sum in f32 in different orders (decode's row kernels, the
            // prefill's panels), which these random models' layers magnify: 1.6e-4 to
            // 3.2e-4 at worst with the scalar kernels, 3.7e-4 to 5.2e-4 with AVX2's
            // (medians 1e-5 to 3e-5)
            assert_rows_close(
                &format!("{name} bf16 cache, decode through cache"),
                &stepwise,
                &absorbed,
                vocab,
                1e-3,
            );
        }
    }
}

/// `--cache-type q8_0`: each row's latent is quantized once, when written, to Q8_0 blocks
/// (int8 with an f16 scale a block of 32), and every path reads `bf16(q * d)`, so decoding
/// token by token equals the one-shot prefill as with the bf16 cache, and the logits stay
/// near the float32 reference by what 8 bits allow (measured medians 3.7e-3 to 1.3e-2 a
/// token). At every level the CPU has.
///
/// On AMX the prefill's tiles round the probabilities to bf16 where decode does not (a few
/// 1e-3 a token), and on v3_yarn_mtp that tips a router tie at token 5: its experts flip
/// (0.5 off) and the difference carries through the cache to later tokens (median 9e-3),
/// hence the looser bound there. With AVX-512 BF16 decode's output product rounds them
/// (the same tie: median 8.9e-3, 90th percentile 3.8e-2). Elsewhere decode and prefill
/// agree to 3e-4 at worst.
#[test]
fn q8_cache_decodes_as_it_prefills_and_stays_near_the_reference() {
    for level in Level::available() {
        q8_cache_at(level);
    }
}

fn q8_cache_at(level: Level) {
    for name in MODELS {
        let mut case = Case::open_at(name, level, 2);
        let vocab = case.model.config.vocab_size;
        let k = case.count("prompt", "ids") - 1;
        let ids = case.ids(&format!("prompt.{k}.ids"));
        let want = case.f32s(&format!("prompt.{k}.logits"));
        case.model.set_cache_type(model::CacheType::Bf16);
        let bf16 = case.prefill(&ids, None);
        case.model.set_cache_type(model::CacheType::Q8_0);
        let one_shot = case.prefill(&ids, None);
        let errs = sorted_row_errors(&one_shot, &want, vocab);
        let median = errs[errs.len() / 2];
        assert!(
            median <= 2.5e-2,
            "{name}: q8_0 cache at {level}, relative L2 per token from the reference: median {median:.2e}"
        );
        // the quantization must show: a cache that silently kept bf16 values would give
        // the bf16 cache's logits exactly
        let from_bf16 = sorted_row_errors(&one_shot, &bf16, vocab);
        assert!(
            from_bf16[from_bf16.len() / 2] > 1e-3,
            "{name}: q8_0 cache at {level} within {:.1e} of the bf16 cache's logits",
            from_bf16[from_bf16.len() / 2]
        );
        let stepwise = case.stepwise(&ids);
        for layer in &mut case.model.layers {
            layer.attn.expand_from = usize::MAX;
        }
        let absorbed = case.prefill(&ids, None);
        let (m, p) = if level == Level::Amx || has_bf16_dot(level) {
            (2e-2, 8e-2)
        } else {
            (2e-4, 5e-4)
        };
        let errs = sorted_row_errors(&stepwise, &absorbed, vocab);
        let (median, p90) = (errs[errs.len() / 2], errs[errs.len() * 9 / 10]);
        assert!(
            median <= m && p90 <= p,
            "{name}: q8_0 cache at {level}, decode through cache against prefill: median {median:.2e}, 90th percentile {p90:.2e}"
        );
    }
}
