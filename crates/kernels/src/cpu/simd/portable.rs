//! Plain-Rust kernels: the scalar oracle, the path for CPUs without a SIMD level, and the
//! body the x86 levels compile with their target features where hand-written intrinsics
//! do not pay (K-quant unpacking autovectorises well).

use super::{Fmt, GemmPanel, PvBlock};
use loader::{bf16_to_f32, f16_to_f32, fp8_e4m3_to_f32};

#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0f32;
    for (x, y) in a
        .chunks_exact(8)
        .remainder()
        .iter()
        .zip(b.chunks_exact(8).remainder())
    {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[inline(always)]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += a * v;
    }
}

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}

/// One Q8_0 block (34 bytes) to 32 values.
#[inline(always)]
pub fn q8_0_block(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (o, &q) in out[..32].iter_mut().zip(&b[2..34]) {
        *o = d * (q as i8) as f32;
    }
}

#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// One Q5_0 block (22 bytes) to 32 values.
#[inline(always)]
pub fn q5_0_block(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for j in 0..16 {
        let lo = (b[6 + j] & 0xf) as u32 | (((qh >> j) & 1) << 4);
        let hi = (b[6 + j] >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4);
        out[j] = d * (lo as i32 - 16) as f32;
        out[j + 16] = d * (hi as i32 - 16) as f32;
    }
}

/// One Q4_K super-block (144 bytes) to 256 values.
#[inline(always)]
pub fn q4_k_block(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for pair in 0..4 {
        let (s1, m1) = scale_min_k4(2 * pair, scales);
        let (s2, m2) = scale_min_k4(2 * pair + 1, scales);
        let (d1, m1) = (d * s1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * s2 as f32, dmin * m2 as f32);
        let q = &qs[32 * pair..32 * pair + 32];
        let o = &mut out[64 * pair..64 * pair + 64];
        for l in 0..32 {
            o[l] = d1 * (q[l] & 0xf) as f32 - m1;
            o[32 + l] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

/// One Q6_K super-block (210 bytes) to 256 values.
#[inline(always)]
pub fn q6_k_block(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let o = &mut out[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            o[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            o[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            o[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            o[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

/// Values `out.len()` of a row stored as `fmt` in `src` (whole blocks for block formats).
#[inline(always)]
pub fn widen(fmt: &Fmt<'_>, src: &[u8], out: &mut [f32]) {
    match *fmt {
        Fmt::F32 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        Fmt::BF16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        Fmt::F16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        Fmt::Fp8 { scales, block } => {
            for ((o, s), &scale) in out.chunks_mut(block).zip(src.chunks(block)).zip(scales) {
                for (v, &c) in o.iter_mut().zip(s) {
                    *v = fp8_e4m3_to_f32(c) * scale;
                }
            }
        }
        Fmt::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(src.chunks_exact(34)) {
                q8_0_block(b, o);
            }
        }
        Fmt::Q5_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(src.chunks_exact(22)) {
                q5_0_block(b, o);
            }
        }
        Fmt::Q4K => {
            for (o, b) in out.chunks_exact_mut(256).zip(src.chunks_exact(144)) {
                q4_k_block(b, o);
            }
        }
        Fmt::Q6K => {
            for (o, b) in out.chunks_exact_mut(256).zip(src.chunks_exact(210)) {
                q6_k_block(b, o);
            }
        }
    }
}

/// `row · x` for a stored row, widened a chunk at a time into a stack buffer.
#[inline(always)]
pub fn dot_row(fmt: &Fmt<'_>, src: &[u8], x: &[f32]) -> f32 {
    let mut buf = [0f32; 256];
    if let Fmt::Fp8 { scales, block } = *fmt {
        let mut sum = 0f32;
        for ((xs, s), &scale) in x.chunks(block).zip(src.chunks(block)).zip(scales) {
            let mut part = 0f32;
            for (xc, sc) in xs.chunks(256).zip(s.chunks(256)) {
                let b = &mut buf[..xc.len()];
                for (v, &c) in b.iter_mut().zip(sc) {
                    *v = fp8_e4m3_to_f32(c);
                }
                part += dot(b, xc);
            }
            sum += part * scale;
        }
        return sum;
    }
    let bytes = fmt.bytes_per_256();
    let mut sum = 0f32;
    for (xs, s) in x.chunks(256).zip(src.chunks(bytes)) {
        let b = &mut buf[..xs.len()];
        widen(fmt, s, b);
        sum += dot(b, xs);
    }
    sum
}

/// `y[t * m + r0 + r] = panel[r] · x[t]`.
#[inline(always)]
/// # Safety
/// `y` must be valid for writes at every `t * m + r0 + r` (`t < n`, `r < rows`).
pub unsafe fn gemm_panel(g: &GemmPanel<'_>, y: *mut f32) {
    let k = g.k;
    for t in 0..g.n {
        let xt = &g.x[t * k..(t + 1) * k];
        for r in 0..g.rows {
            unsafe { *y.add(t * g.m + g.r0 + r) = dot(&g.panel[r * k..(r + 1) * k], xt) };
        }
    }
}

#[inline(always)]
pub fn pv_accumulate(b: &PvBlock<'_>, out: &mut [f32]) {
    for i in 0..b.n {
        let o = &mut out[i * b.width..(i + 1) * b.width];
        for j in 0..b.nj {
            let pij = b.p[i * b.ld_p + b.j0 + j];
            axpy(pij, &b.v[j * b.ld_v..j * b.ld_v + b.width], o);
        }
    }
}
