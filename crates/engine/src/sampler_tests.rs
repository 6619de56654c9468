use super::*;

fn ln(p: &[f64]) -> Vec<f32> {
    p.iter().map(|x| x.ln() as f32).collect()
}

fn sampler(p: SamplingParams) -> Sampler {
    Sampler::new(SamplingParams { seed: Some(7), ..p }, &[], 0)
}

fn assert_probs(got: &[f32], want: &[f64]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() < 1e-6,
            "token {i}: {g} vs {w} (all: {got:?})"
        );
    }
}

const P: [f64; 4] = [0.5, 0.3, 0.15, 0.05];

#[test]
fn greedy_takes_the_first_maximum() {
    let mut s = sampler(SamplingParams::greedy());
    assert_eq!(s.sample(&[1.0, 3.0, 3.0, -1.0]).id, 1);
    let mut s = sampler(SamplingParams {
        top_k: 1,
        ..Default::default()
    });
    assert_eq!(s.sample(&[0.0, 0.5, 2.0]).id, 2);
}

#[test]
fn top_k_top_p_min_p_exact() {
    let l = ln(&P);
    let d = |p: SamplingParams| sampler(p).distribution(&l);
    assert_probs(&d(SamplingParams::default()), &P);
    assert_probs(
        &d(SamplingParams {
            top_k: 2,
            ..Default::default()
        }),
        &[0.625, 0.375, 0.0, 0.0],
    );
    assert_probs(
        &d(SamplingParams {
            top_p: 0.75,
            ..Default::default()
        }),
        &[0.625, 0.375, 0.0, 0.0],
    );
    assert_probs(
        &d(SamplingParams {
            top_p: 0.5,
            ..Default::default()
        }),
        &[1.0, 0.0, 0.0, 0.0],
    );
    assert_probs(
        &d(SamplingParams {
            top_p: 0.81,
            ..Default::default()
        }),
        &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0],
    );
    // min_p 0.4: keep p >= 0.2
    assert_probs(
        &d(SamplingParams {
            min_p: 0.4,
            ..Default::default()
        }),
        &[0.625, 0.375, 0.0, 0.0],
    );
    // temperature 2: p ∝ sqrt(p)
    let s: Vec<f64> = P.iter().map(|p| p.sqrt()).collect();
    let z: f64 = s.iter().sum();
    let t2: Vec<f64> = s.iter().map(|x| x / z).collect();
    assert_probs(
        &d(SamplingParams {
            temperature: 2.0,
            ..Default::default()
        }),
        &t2,
    );
}

#[test]
fn filters_apply_in_order() {
    let l = ln(&P);
    let d = |p: SamplingParams| sampler(p).distribution(&l);
    // Temperature first: at T=2 the top three are needed to reach 0.8 (0.379 + 0.294 + 0.207);
    // applying top-p to the T=1 distribution would keep two.
    let got = d(SamplingParams {
        temperature: 2.0,
        top_p: 0.8,
        ..Default::default()
    });
    assert_eq!(got.iter().filter(|&&p| p > 0.0).count(), 3, "{got:?}");
    // top-k before top-p, on the renormalised distribution: after top-3 the first two hold
    // 0.842 >= 0.84; top-p on the full distribution would keep three (0.5 + 0.3 < 0.84).
    let got = d(SamplingParams {
        top_k: 3,
        top_p: 0.84,
        ..Default::default()
    });
    assert_probs(&got, &[0.625, 0.375, 0.0, 0.0]);
    // min-p after temperature: at T=2 the floor is 0.4 * 0.379 = 0.152, keeping three.
    let got = d(SamplingParams {
        temperature: 2.0,
        min_p: 0.4,
        ..Default::default()
    });
    assert_eq!(got.iter().filter(|&&p| p > 0.0).count(), 3, "{got:?}");
}

#[test]
fn penalties_and_bias() {
    // logit_bias flips the choice; -100 bans
    let mut s = sampler(SamplingParams {
        logit_bias: vec![(2, 5.0), (0, -100.0)],
        ..SamplingParams::greedy()
    });
    assert_eq!(s.sample(&[3.0, 1.0, -1.0]).id, 2);
    // repetition penalty: positive logits divided, negative multiplied, prompt included
    let p = SamplingParams {
        repetition_penalty: 2.0,
        ..SamplingParams::greedy()
    };
    let mut s = Sampler::new(p, &[0, 2], 0);
    let mut l = vec![4.0, 3.0, -1.0];
    s.apply_penalties(&mut l);
    assert_eq!(l, vec![2.0, 3.0, -2.0]);
    assert_eq!(s.sample(&[4.0, 3.0, -1.0]).id, 1);
    // presence and frequency: only over generated tokens, frequency per occurrence
    let p = SamplingParams {
        presence_penalty: 0.5,
        frequency_penalty: 0.25,
        ..SamplingParams::greedy()
    };
    let mut s = Sampler::new(p, &[1], 0);
    assert_eq!(s.sample(&[2.0, 1.9, 0.0]).id, 0); // nothing generated yet
    let mut l = vec![2.0, 1.9, 0.0];
    s.apply_penalties(&mut l);
    assert_eq!(l, vec![1.25, 1.9, 0.0]);
    assert_eq!(s.sample(&[2.0, 1.9, 0.0]).id, 1);
    assert_eq!(s.sample(&[3.0, 2.0, 0.0]).id, 0); // 3 - 0.75 = 2.25 > 2 - 0.75 = 1.25
    let mut l = vec![3.0, 2.0, 0.0];
    s.apply_penalties(&mut l);
    assert_eq!(l, vec![3.0 - 0.5 - 0.5, 2.0 - 0.75, 0.0]);
}

#[test]
fn sampled_frequencies_follow_the_filtered_distribution() {
    let l = ln(&P);
    let mut s = sampler(SamplingParams {
        top_k: 3,
        temperature: 1.0,
        ..Default::default()
    });
    let mut counts = [0usize; 4];
    let n = 40_000;
    for _ in 0..n {
        counts[s.sample(&l).id as usize] += 1;
    }
    assert_eq!(counts[3], 0, "top-k let a removed token through");
    let want = [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95];
    for k in 0..3 {
        let f = counts[k] as f64 / n as f64;
        assert!(
            (f - want[k]).abs() < 0.01,
            "token {k}: frequency {f} vs {}",
            want[k]
        );
    }
    // min_p and a high temperature together: token 3 stays out, the rest flatten
    let mut s = sampler(SamplingParams {
        temperature: 3.0,
        min_p: 0.4,
        ..Default::default()
    });
    let mut counts = [0usize; 4];
    for _ in 0..n {
        counts[s.sample(&l).id as usize] += 1;
    }
    // T=3: p ∝ p^(1/3) = [0.794, 0.669, 0.531, 0.368]; floor 0.4 * 0.794 = 0.318 keeps all four
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
}

#[test]
fn the_same_seed_gives_the_same_tokens() {
    let l = ln(&[0.25, 0.25, 0.25, 0.25]);
    let run = |seed, stream| {
        let mut s = Sampler::new(
            SamplingParams {
                seed: Some(seed),
                ..Default::default()
            },
            &[],
            stream,
        );
        (0..64).map(|_| s.sample(&l).id).collect::<Vec<_>>()
    };
    assert_eq!(run(42, 0), run(42, 0));
    assert_ne!(run(42, 0), run(43, 0));
    assert_ne!(run(42, 0), run(42, 1), "samples of one request must differ");
}

#[test]
fn logprobs_are_of_the_raw_distribution() {
    let l = ln(&P);
    let mut s = sampler(SamplingParams {
        logprobs: Some(2),
        temperature: 0.0,
        repetition_penalty: 1.5,
        ..Default::default()
    });
    let out = s.sample(&l);
    assert_eq!(out.id, 0);
    assert!((out.logprob.unwrap() as f64 - 0.5f64.ln()).abs() < 1e-6);
    assert_eq!(out.top_logprobs.len(), 2);
    assert_eq!(out.top_logprobs[1].0, 1);
    assert!((out.top_logprobs[1].1 as f64 - 0.3f64.ln()).abs() < 1e-6);
}

#[test]
fn options_out_of_range_are_named() {
    let bad = [
        (
            SamplingParams {
                temperature: -1.0,
                ..Default::default()
            },
            "temperature",
        ),
        (
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            },
            "top_p",
        ),
        (
            SamplingParams {
                min_p: 1.5,
                ..Default::default()
            },
            "min_p",
        ),
        (
            SamplingParams {
                repetition_penalty: 0.0,
                ..Default::default()
            },
            "repetition_penalty",
        ),
        (
            SamplingParams {
                presence_penalty: 3.0,
                ..Default::default()
            },
            "presence_penalty",
        ),
        (
            SamplingParams {
                logit_bias: vec![(99, 1.0)],
                ..Default::default()
            },
            "logit_bias",
        ),
        (
            SamplingParams {
                logprobs: Some(50),
                ..Default::default()
            },
            "top_logprobs",
        ),
    ];
    for (p, name) in bad {
        let e = p.validate(10).unwrap_err();
        assert!(e.contains(name), "{e}");
    }
    assert!(SamplingParams::default().validate(10).is_ok());
}
