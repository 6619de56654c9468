//! The embedded model against transformers on the same exported checkpoint
//! (`assets/model/reference.json`, written by `scripts/train/export.py`).

use engine::{GenerateRequest, Generator, SamplingParams, StopParams};
use model::{ForwardBatch, LogitsMode, Model, SeqChunk};
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(include_str!("../../../assets/model/reference.json")).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn loads_in_place_from_the_binary() {
    let ckpt = embedded::checkpoint().unwrap();
    let w = embedded::weights().as_ptr_range();
    for t in ckpt.tensors() {
        assert!(w.contains(&t.bytes().as_ptr()), "{} was copied", t.name);
    }
    let model = Model::load(&ckpt).unwrap();
    assert_eq!(
        model.mtp.len(),
        1,
        "the MTP module trained with the model ships with it"
    );
}

#[test]
fn heldout_loss_is_far_below_uniform_and_equals_the_reference() {
    let model = Model::load(&embedded::checkpoint().unwrap()).unwrap();
    let r = reference();
    let uniform = r["uniform_loss"].as_f64().unwrap();
    let vocab = model.config.vocab_size;
    for w in r["heldout"].as_array().unwrap() {
        let all = ids(&w["ids"]);
        let (x, y) = (&all[..all.len() - 1], &all[1..]);
        let mut cache = model.new_cache(1, x.len());
        let batch = ForwardBatch {
            seqs: vec![SeqChunk {
                slot: 0,
                start_pos: 0,
                tokens: x,
            }],
            logits: LogitsMode::All,
        };
        let logits = model.forward(&batch, &mut cache).unwrap();
        let mut loss = 0.0f64;
        for (row, &t) in logits.chunks(vocab).zip(y) {
            let lp = engine::sampler::log_softmax(row);
            loss -= lp[t as usize] as f64;
        }
        loss /= y.len() as f64;
        let want = w["loss"].as_f64().unwrap();
        assert!(
            (loss - want).abs() < 1e-3 * want.max(1.0),
            "held-out loss {loss} vs transformers {want}"
        );
        assert!(
            loss < 0.35 * uniform,
            "held-out loss {loss} is not far below uniform {uniform}"
        );
    }
}

#[test]
fn greedy_output_equals_transformers() {
    let model = Model::load(&embedded::checkpoint().unwrap()).unwrap();
    let tok = embedded::tokenizer().unwrap();
    let r = reference();
    let steps = r["greedy_steps"].as_u64().unwrap() as usize;
    for case in r["cases"].as_array().unwrap() {
        let prompt = ids(&case["prompt_ids"]);
        let encoded = match case.get("prompt") {
            Some(p) => tok.encode(p.as_str().unwrap(), true).unwrap(),
            None => tok.encode_chat(&case["messages"], None, true).unwrap(),
        };
        assert_eq!(encoded, prompt, "tokenization of {case}");
        let generator = Generator {
            model: &model,
            tokenizer: Some(&tok),
            ctx_size: model.config.max_position_embeddings,
        };
        let req = GenerateRequest {
            prompt,
            sampling: SamplingParams::greedy(),
            stop: StopParams {
                max_tokens: steps,
                ignore_eos: true,
                ..Default::default()
            },
            n: 1,
            beam: None,
        };
        let out = generator.generate(&req, &mut |_| true).unwrap();
        assert_eq!(out.completions[0].ids, ids(&case["greedy_ids"]), "{case}");
        assert_eq!(
            out.completions[0].text,
            case["greedy_text"].as_str().unwrap()
        );
    }
}
