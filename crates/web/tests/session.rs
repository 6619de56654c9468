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
