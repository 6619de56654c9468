//! wasm SIMD128: 4 f32 lanes. Hand-written where the embedded model spends its time (f32
//! and bf16 row products, the register-tiled panel product); everything else is the
//! portable body, which the compiler vectorises with the same instructions. There is no
//! fused multiply-add in baseline SIMD128, so sums round as the portable code's do: a
//! product, then an add.

use core::arch::wasm32::*;

use super::super::{
    Fmt, GemmPanel, PvBlock, PvTile, QRow, ScoresTile, SoftmaxStep, portable, tile4x4,
};

#[inline(always)]
fn hsum(v: v128) -> f32 {
    f32x4_extract_lane::<0>(v)
        + f32x4_extract_lane::<1>(v)
        + f32x4_extract_lane::<2>(v)
        + f32x4_extract_lane::<3>(v)
}

/// Four bf16 values (8 bytes at `p`) to f32 lanes: each is the top half of its f32.
#[inline(always)]
unsafe fn load_bf16x4(p: *const u8) -> v128 {
    unsafe {
        i32x4_shl(
            u32x4_extend_low_u16x8(v128_load64_zero(p as *const u64)),
            16,
        )
    }
}

#[inline(always)]
unsafe fn load_f32x4(p: *const u8) -> v128 {
    unsafe { v128_load(p as *const v128) }
}

/// Σ w[i] * x[i] over `n` values loaded by `load` (4 at a time, 4 accumulators).
#[inline(always)]
unsafe fn dot_lanes(
    w: *const u8,
    size: usize,
    x: *const f32,
    n: usize,
    load: unsafe fn(*const u8) -> v128,
) -> v128 {
    unsafe {
        let mut acc = [f32x4_splat(0.0); 4];
        let mut i = 0;
        while i + 16 <= n {
            for (j, a) in acc.iter_mut().enumerate() {
                let o = i + 4 * j;
                *a = f32x4_add(
                    *a,
                    f32x4_mul(load(w.add(o * size)), v128_load(x.add(o) as *const v128)),
                );
            }
            i += 16;
        }
        while i + 4 <= n {
            acc[0] = f32x4_add(
                acc[0],
                f32x4_mul(load(w.add(i * size)), v128_load(x.add(i) as *const v128)),
            );
            i += 4;
        }
        let v = f32x4_add(f32x4_add(acc[0], acc[1]), f32x4_add(acc[2], acc[3]));
        if i < n {
            // the last 1-3 values through a zero-padded copy
            let mut wb = [0f32; 4];
            let mut xb = [0f32; 4];
            for j in 0..n - i {
                xb[j] = *x.add(i + j);
                let mut one = [0u8; 4];
                core::ptr::copy_nonoverlapping(w.add((i + j) * size), one.as_mut_ptr(), size);
                wb[j] = if size == 2 {
                    f32::from_bits((u16::from_le_bytes([one[0], one[1]]) as u32) << 16)
                } else {
                    f32::from_le_bytes(one)
                };
            }
            return f32x4_add(
                v,
                f32x4_mul(
                    v128_load(wb.as_ptr() as *const v128),
                    v128_load(xb.as_ptr() as *const v128),
                ),
            );
        }
        v
    }
}

pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    unsafe {
        hsum(dot_lanes(
            a.as_ptr() as *const u8,
            4,
            b.as_ptr(),
            n,
            load_f32x4,
        ))
    }
}

pub unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    portable::axpy(a, x, y)
}

pub unsafe fn widen(fmt: &Fmt<'_>, src: &[u8], out: &mut [f32]) {
    portable::widen(fmt, src, out)
}

pub unsafe fn dot_row(fmt: &Fmt<'_>, src: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    unsafe {
        match fmt {
            Fmt::BF16 => {
                assert!(src.len() >= 2 * n);
                hsum(dot_lanes(src.as_ptr(), 2, x.as_ptr(), n, load_bf16x4))
            }
            Fmt::F32 => {
                assert!(src.len() >= 4 * n);
                hsum(dot_lanes(src.as_ptr(), 4, x.as_ptr(), n, load_f32x4))
            }
            _ => portable::dot_row(fmt, src, x),
        }
    }
}

pub unsafe fn dot_row_q(fmt: &Fmt<'_>, src: &[u8], a: &QRow<'_>) -> f32 {
    portable::dot_row_q(fmt, src, a)
}

/// `R` panel rows against `T` tokens, R*T accumulators of 4 lanes.
#[inline(always)]
unsafe fn tile<const R: usize, const T: usize>(
    w: *const f32,
    x: *const f32,
    k: usize,
) -> [[f32; T]; R] {
    unsafe {
        let mut acc = [[f32x4_splat(0.0); T]; R];
        let mut i = 0;
        while i + 4 <= k {
            let mut xv = [f32x4_splat(0.0); T];
            for (t, v) in xv.iter_mut().enumerate() {
                *v = v128_load(x.add(t * k + i) as *const v128);
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let wv = v128_load(w.add(r * k + i) as *const v128);
                for (a, &v) in row.iter_mut().zip(&xv) {
                    *a = f32x4_add(*a, f32x4_mul(wv, v));
                }
            }
            i += 4;
        }
        let mut out = [[0f32; T]; R];
        for r in 0..R {
            for t in 0..T {
                let mut s = hsum(acc[r][t]);
                for j in i..k {
                    s += *w.add(r * k + j) * *x.add(t * k + j);
                }
                out[r][t] = s;
            }
        }
        out
    }
}

#[inline(always)]
unsafe fn tile_into<const R: usize, const T: usize>(
    g: &GemmPanel<'_>,
    r: usize,
    t: usize,
    y: *mut f32,
) {
    let k = g.k;
    let v = unsafe { tile::<R, T>(g.panel.as_ptr().add(r * k), g.x.as_ptr().add(t * k), k) };
    for (i, row) in v.iter().enumerate() {
        for (j, &s) in row.iter().enumerate() {
            unsafe { *y.add((t + j) * g.m + g.r0 + r + i) = s };
        }
    }
}

/// # Safety
/// As `simd::gemm_panel`.
pub unsafe fn gemm_panel(g: &GemmPanel<'_>, y: *mut f32) {
    let mut t = 0;
    while t < g.n {
        let tn = (g.n - t).min(4);
        let mut r = 0;
        while r < g.rows {
            let rn = (g.rows - r).min(4);
            unsafe { tile4x4!(rn, tn, tile_into(g, r, t, y)) }
            r += rn;
        }
        t += tn;
    }
}

pub unsafe fn pv_accumulate(b: &PvBlock<'_>, out: &mut [f32]) {
    portable::pv_accumulate(b, out)
}

pub unsafe fn scores_t(t: &ScoresTile<'_>, s: &mut [f32]) {
    portable::scores_t(t, s)
}

pub unsafe fn softmax_step(s: &mut [f32], st: &mut SoftmaxStep<'_>) {
    portable::softmax_step(s, st)
}

pub unsafe fn pv_t(t: &PvTile<'_>, o: &mut [f32]) {
    portable::pv_t(t, o)
}
