//! The embedded model's `Session` as WebAssembly in headless Chromium (wasm-bindgen-test,
//! run by scripts/build-wasm.sh through chromedriver): a greedy reply equals the native
//! build's, token for token, and the SIMD128 kernels' logits equal the scalar kernels' in
//! the same module. Natively this file is empty: tests/session.rs covers the same `Session`.
//!
//! The native reply comes in at compile time: `DEEPRUST_NATIVE_GEN` names a JSON file,
//! `deeprust generate --temperature 0 --json` with the prompt added as `"prompt"`, which
//! the script writes before it builds this test.

#![cfg(target_arch = "wasm32")]

use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};
use web::Session;

wasm_bindgen_test_configure!(run_in_browser);

const NATIVE_GEN: &str = include_str!(env!(
    "DEEPRUST_NATIVE_GEN",
    "set DEEPRUST_NATIVE_GEN to the native build's greedy reply as JSON (scripts/build-wasm.sh does)"
));

struct Native {
    prompt: String,
    prompt_tokens: usize,
    token_ids: Vec<u32>,
    text: String,
}

fn native() -> Native {
    let v: serde_json::Value =
        serde_json::from_str(NATIVE_GEN).expect("DEEPRUST_NATIVE_GEN is JSON");
    let field = |k: &str| {
        v.get(k)
            .unwrap_or_else(|| panic!("no `{k}` in DEEPRUST_NATIVE_GEN"))
    };
    Native {
        prompt: field("prompt").as_str().unwrap().to_string(),
        prompt_tokens: field("prompt_tokens").as_u64().unwrap() as usize,
        token_ids: field("token_ids")
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_u64().unwrap() as u32)
            .collect(),
        text: field("text").as_str().unwrap().to_string(),
    }
}

#[wasm_bindgen_test]
fn greedy_reply_equals_the_native_builds() {
    let want = native();
    assert!(!want.token_ids.is_empty());
    let mut s = Session::embedded().unwrap();
    assert_eq!(s.level(), "simd128", "the best level of a +simd128 build");
    let n = s
        .start(&want.prompt, false, want.token_ids.len(), 0.0, 1)
        .unwrap();
    assert_eq!(n, want.prompt_tokens, "prompt tokens");
    let mut text = String::new();
    while let Some(piece) = s.step().unwrap() {
        text.push_str(&piece);
    }
    assert_eq!(s.generated(), want.token_ids, "greedy tokens");
    assert_eq!(text, want.text, "streamed text");
}

#[wasm_bindgen_test]
fn simd128_logits_equal_the_scalar_kernels() {
    let prompt = native().prompt;
    let mut simd = Session::embedded().unwrap();
    let mut scalar = Session::embedded_at(Some("scalar")).unwrap();
    assert_eq!(
        (simd.level().as_str(), scalar.level().as_str()),
        ("simd128", "scalar")
    );
    let ids = simd.encode(&prompt, false).unwrap();
    let (got, want) = (simd.logits(&ids).unwrap(), scalar.logits(&ids).unwrap());
    assert_eq!(got.len(), ids.len() * simd.vocab_size());
    assert_eq!(got.len(), want.len());
    let max = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(max > 0.0);
    assert!(
        diff <= 1e-5 * max,
        "max |simd128 - scalar| / max |scalar| = {:e} (> 1e-5)",
        diff / max
    );
}
