//! The browser's step-wise session against the native engine's generator, natively: the
//! same tokens and text for greedy and seeded sampling, the same logits as a plain forward,
//! and clear errors for bad input.

use engine::sampler::SamplingParams;
use engine::{GenerateRequest, Generator, StopParams};
use web::Session;

fn engine_reply(prompt: &str, max_tokens: usize, sampling: SamplingParams) -> (Vec<u32>, String) {
    let ckpt = embedded::checkpoint().unwrap();
    let model = model::Model::load(&ckpt).unwrap();
    let tok = embedded::tokenizer().unwrap();
    let generator = Generator {
        model: &model,
        tokenizer: Some(&tok),
        ctx_size: 1024,
    };
    let req = GenerateRequest {
        prompt: tok.encode(prompt, true).unwrap(),
        sampling,
        stop: StopParams {
            max_tokens,
            ..StopParams::default()
        },
        n: 1,
        beam: None,
    };
    let out = generator.generate(&req, &mut |_| true).unwrap();
    let c = &out.completions[0];
    (c.ids.clone(), c.text.clone())
}

fn session_reply(s: &mut Session, prompt: &str, max_tokens: usize, t: f32, seed: u64) -> String {
    s.start(prompt, false, max_tokens, t, seed).unwrap();
    let mut text = String::new();
    while let Some(piece) = s.step().unwrap() {
        text.push_str(&piece);
    }
    text
}

#[test]
fn greedy_and_seeded_replies_equal_the_engines() {
    let mut s = Session::embedded().unwrap();
    for (prompt, t, seed) in [("Once upon a time", 0.0, 1), ("The little dog", 0.8, 42)] {
        let sampling = SamplingParams {
            temperature: t,
            seed: Some(seed),
            ..SamplingParams::default()
        };
        let (ids, text) = engine_reply(prompt, 20, sampling);
        let got = session_reply(&mut s, prompt, 20, t, seed);
        assert_eq!(s.generated(), ids, "{prompt} at t={t}");
        assert_eq!(got, text, "{prompt} at t={t}");
    }
    // after the reply, next() keeps saying it is over
    assert_eq!(s.step().unwrap(), None);
}

#[test]
fn logits_equal_a_plain_forward_and_bad_input_is_an_error() {
    let mut s = Session::embedded().unwrap();
    let ids = s.encode("Hello there", false).unwrap();
    let got = s.logits(&ids).unwrap();
    assert_eq!(got.len(), ids.len() * s.vocab_size());
    let ckpt = embedded::checkpoint().unwrap();
    let m = model::Model::load(&ckpt).unwrap();
    let mut cache = m.new_cache(1, 64);
    let want = m
        .forward(
            &model::ForwardBatch {
                seqs: vec![model::SeqChunk {
                    slot: 0,
                    start_pos: 0,
                    tokens: &ids,
                }],
                logits: model::LogitsMode::All,
            },
            &mut cache,
        )
        .unwrap();
    assert_eq!(got, want);

    assert!(s.logits(&[]).unwrap_err().contains("empty"));
    let e = s.logits(&[1, 999_999]).unwrap_err();
    assert!(e.contains("999999") && e.contains("out of range"), "{e}");
    let e = s.start("hi", false, 5, -1.0, 0).unwrap_err();
    assert!(e.contains("temperature"), "{e}");
    // no generation started: nothing to step
    assert_eq!(s.step().unwrap(), None);
    let long = vec![5u32; 5000];
    assert!(s.logits(&long).unwrap_err().contains("holds"));

    // a level by name; an unknown or absent one is an error, not a crash
    assert_eq!(
        Session::embedded_at(Some("scalar")).unwrap().level(),
        "scalar"
    );
    let e = Session::embedded_at(Some("sse9")).err().unwrap();
    assert!(e.contains("unknown kernel level"), "{e}");
    assert!(
        Session::embedded_at(Some("simd128")).is_err(),
        "no SIMD128 natively"
    );
}

/// A checkpoint handed over as bytes (what the page fetches) runs as the same model as the
/// embedded one, and a truncated weights file or a config that is not JSON is an error
/// that says so.
#[test]
fn a_checkpoint_from_bytes_is_the_same_model() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/model");
    let read = |name: &str| std::fs::read(root.join(name)).unwrap();
    let config = String::from_utf8(read("config.json")).unwrap();
    let tc = String::from_utf8(read("tokenizer_config.json")).unwrap();
    let weights = read("model.safetensors");
    let tokenizer = read("tokenizer.json");
    let mut a = Session::from_parts(&config, weights.clone(), &tokenizer, Some(&tc), None).unwrap();
    let mut b = Session::embedded().unwrap();
    assert_eq!(a.params(), b.params());
    assert!(a.params() > 1_000_000);
    let ids = b.encode("Once upon a time", false).unwrap();
    assert_eq!(a.encode("Once upon a time", false).unwrap(), ids);
    assert_eq!(a.logits(&ids).unwrap(), b.logits(&ids).unwrap());
    // the chat template came along
    assert_eq!(a.encode("hi", true).unwrap(), b.encode("hi", true).unwrap());

    let cut = Session::from_parts(
        &config,
        weights[..weights.len() / 2].to_vec(),
        &tokenizer,
        None,
        None,
    );
    let e = cut.err().expect("half a weights file does not load");
    assert!(e.contains("model.safetensors"), "{e}");
    let e = Session::from_parts("{not json", weights, &tokenizer, None, None)
        .err()
        .expect("a config that is not JSON does not load");
    assert!(e.contains("config.json"), "{e}");
}
