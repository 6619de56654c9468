//! AVX2 + FMA + F16C: the portable bodies compiled with these features, which LLVM
//! vectorises 8 wide. Hand-written intrinsics for this level can replace any of them
//! later without touching callers.

use super::super::{Fmt, GemmPanel, PvBlock, PvTile, QRow, ScoresTile, SoftmaxStep, portable};

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    portable::dot(a, b)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    portable::axpy(a, x, y)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn widen(fmt: &Fmt<'_>, src: &[u8], out: &mut [f32]) {
    portable::widen(fmt, src, out)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_row(fmt: &Fmt<'_>, src: &[u8], x: &[f32]) -> f32 {
    portable::dot_row(fmt, src, x)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_row_q(fmt: &Fmt<'_>, src: &[u8], a: &QRow<'_>) -> f32 {
    portable::dot_row_q(fmt, src, a)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm_panel(g: &GemmPanel<'_>, y: *mut f32) {
    unsafe { portable::gemm_panel(g, y) }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn pv_accumulate(b: &PvBlock<'_>, out: &mut [f32]) {
    portable::pv_accumulate(b, out)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn scores_t(t: &ScoresTile<'_>, s: &mut [f32]) {
    portable::scores_t(t, s)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn softmax_step(s: &mut [f32], st: &mut SoftmaxStep<'_>) {
    portable::softmax_step(s, st)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn pv_t(t: &PvTile<'_>, o: &mut [f32]) {
    portable::pv_t(t, o)
}
