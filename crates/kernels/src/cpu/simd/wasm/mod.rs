//! WebAssembly levels. The build decides (`-C target-feature=+simd128`): wasm has no run-time
//! feature detection, so a module either has these instructions or does not load.

#[cfg(target_feature = "simd128")]
pub mod simd128;
