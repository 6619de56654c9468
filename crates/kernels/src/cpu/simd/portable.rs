//! Plain-Rust kernels: the scalar oracle, the path for CPUs without a SIMD level, and the
//! body the x86 levels compile with their target features where hand-written intrinsics
//! do not pay (K-quant unpacking autovectorises well).

use super::{Bf16Gemm, Fmt, GemmPanel, PvBlock, PvTile, QRow, ScoresTile, SoftmaxStep};
use crate::backend::KvRows;
use loader::{bf16_to_f32, f16_to_f32, fp8_e4m3_to_f32, quant};

#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    dot_cached(&a[..n], &b[..n])
}

#[inline(always)]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += a * v;
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
        // the block formats decode with the loader's reference codec (ggml's layouts)
        Fmt::Q8_0 => quant::dequantize_q8_0(src, out),
        Fmt::Q5_0 => quant::dequantize_q5_0(src, out),
        Fmt::Q4K => quant::dequantize_q4_k(src, out),
        Fmt::Q6K => quant::dequantize_q6_k(src, out),
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

/// `row · a` in integers: each block's (or sub-block's) byte products sum exactly in i32;
/// scales apply once per block. Formats without an int8 product fall back to `dot_row` on
/// the dequantized activations.
#[inline(always)]
pub fn dot_row_q(fmt: &Fmt<'_>, src: &[u8], a: &QRow<'_>) -> f32 {
    let idot =
        |w: &[u8], x: &[i8]| -> i32 { w.iter().zip(x).map(|(&w, &x)| w as i32 * x as i32).sum() };
    let f16 = |b: &[u8], i: usize| f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]));
    let mut sum = 0f32;
    match *fmt {
        Fmt::Q8_0 => {
            for (b, blk) in src.chunks_exact(34).take(a.d.len()).enumerate() {
                let x = &a.qs[32 * b..32 * b + 32];
                let isum: i32 = blk[2..]
                    .iter()
                    .zip(x)
                    .map(|(&w, &x)| w as i8 as i32 * x as i32)
                    .sum();
                sum += f16(blk, 0) * a.d[b] * isum as f32;
            }
        }
        Fmt::Q5_0 => {
            for (b, blk) in src.chunks_exact(22).take(a.d.len()).enumerate() {
                let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                let q: [u8; 32] = std::array::from_fn(|j| {
                    let nib = if j < 16 {
                        blk[6 + j] & 0xf
                    } else {
                        blk[6 + j - 16] >> 4
                    };
                    nib | (((qh >> j) & 1) << 4) as u8
                });
                let isum = idot(&q, &a.qs[32 * b..32 * b + 32]) - 16 * a.bsums[b] as i32;
                sum += f16(blk, 0) * a.d[b] * isum as f32;
            }
        }
        Fmt::Q4K => {
            for (b, blk) in src.chunks_exact(144).take(a.d.len()).enumerate() {
                let x = &a.qs[256 * b..256 * b + 256];
                let (mut is, mut im) = (0i32, 0i32);
                for c in 0..4 {
                    let q = &blk[16 + 32 * c..48 + 32 * c];
                    let lo: [u8; 32] = std::array::from_fn(|i| q[i] & 0xf);
                    let hi: [u8; 32] = std::array::from_fn(|i| q[i] >> 4);
                    for (j, nib) in [(2 * c, lo), (2 * c + 1, hi)] {
                        let (sc, m) = quant::q4k_scale_min(j, &blk[4..16]);
                        is += sc as i32 * idot(&nib, &x[32 * j..32 * j + 32]);
                        let bsum =
                            a.bsums[16 * b + 2 * j] as i32 + a.bsums[16 * b + 2 * j + 1] as i32;
                        im += m as i32 * bsum;
                    }
                }
                let da = a.d[b];
                sum += f16(blk, 0) * da * is as f32 - f16(blk, 2) * da * im as f32;
            }
        }
        Fmt::Q6K => {
            for (b, blk) in src.chunks_exact(210).take(a.d.len()).enumerate() {
                let x = &a.qs[256 * b..256 * b + 256];
                let mut q = [0u8; 256];
                for (h, q) in q.chunks_exact_mut(128).enumerate() {
                    let (ql, qh) = (&blk[64 * h..64 * h + 64], &blk[128 + 32 * h..160 + 32 * h]);
                    for l in 0..32 {
                        q[l] = (ql[l] & 0xf) | ((qh[l] & 3) << 4);
                        q[l + 32] = (ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4);
                        q[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                        q[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                    }
                }
                let mut is = 0i32;
                for g in 0..16 {
                    let sc = blk[192 + g] as i8 as i32;
                    let offset = 32 * a.bsums[16 * b + g] as i32;
                    is += sc * (idot(&q[16 * g..16 * g + 16], &x[16 * g..16 * g + 16]) - offset);
                }
                sum += f16(blk, 208) * a.d[b] * is as f32;
            }
        }
        _ => {
            let block = a.qs.len() / a.d.len().max(1);
            let x: Vec<f32> =
                a.qs.iter()
                    .enumerate()
                    .map(|(i, &q)| q as f32 * a.d[i / block])
                    .collect();
            return dot_row(fmt, src, &x);
        }
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

/// The oracle of the bf16 prefill product: each product exact in f32 (bf16 x bf16 is),
/// summed in order.
///
/// # Safety
/// `y` must be valid for writes at every `t * m + r0 + r` (`t < n`, `r < rows`).
pub unsafe fn bf16_gemm(g: &Bf16Gemm<'_>, y: *mut f32) {
    let k = g.k;
    for t in 0..g.n {
        let xt = &g.x16[t * k..(t + 1) * k];
        for r in 0..g.rows {
            let row = &g.w[r * g.rb..r * g.rb + 2 * k];
            let s: f32 = row
                .chunks_exact(2)
                .zip(xt)
                .map(|(w, &x)| bf16_to_f32(u16::from_le_bytes([w[0], w[1]])) * bf16_to_f32(x))
                .sum();
            unsafe { *y.add(t * g.m + g.r0 + r) = s };
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

/// `gate = silu(gate) * up`, with libm's `exp` (the polynomial below is no faster here:
/// without SSE4.1 its `floor` is a libm call too, and the loop does not vectorise).
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// `e^x` to about 2 ulp without a libm call, so loops over it vectorise: Cody-Waite
/// reduction by ln 2 and Cephes' degree-6 polynomial for `e^r` on [-ln2/2, ln2/2]. Exactly 0
/// below -87.33 (where e^x leaves the normal range) and for -inf.
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    let xc = x.clamp(-87.33, 88.37);
    let n = (xc * std::f32::consts::LOG2_E + 0.5).floor();
    let r = xc - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let pow = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.33 { 0.0 } else { e * pow }
}

/// A stored cache value as f32 (bf16 widens exactly).
trait Cached: Copy {
    fn f32(self) -> f32;
}

impl Cached for f32 {
    #[inline(always)]
    fn f32(self) -> f32 {
        self
    }
}

impl Cached for u16 {
    #[inline(always)]
    fn f32(self) -> f32 {
        bf16_to_f32(self)
    }
}

pub fn scores_t(t: &ScoresTile<'_>, s: &mut [f32]) {
    match t.kv {
        KvRows::F32(kv) => scores_of(t, kv, s),
        KvRows::Bf16(kv) => scores_of(t, kv, s),
        KvRows::Q8(_) => unreachable!("the wrapper refuses an 8-bit cache"),
    }
}

/// `a · b` against f32 or stored cache values, 8 partial sums so that it vectorises.
fn dot_cached<T: Cached>(a: &[f32], b: &[T]) -> f32 {
    let mut acc = [0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += x[k] * y[k].f32();
        }
    }
    let mut tail = 0f32;
    for (x, y) in a
        .chunks_exact(8)
        .remainder()
        .iter()
        .zip(b.chunks_exact(8).remainder())
    {
        tail += x * y.f32();
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

fn scores_of<T: Cached>(t: &ScoresTile<'_>, kv: &[T], s: &mut [f32]) {
    for (j, &off) in t.offs.iter().enumerate() {
        let key = &kv[off..off + t.k];
        for (i, qi) in t.q.chunks_exact(t.k).take(t.rows).enumerate() {
            s[j * t.lanes + i] = dot_cached(qi, key);
        }
    }
}

pub fn softmax_step(s: &mut [f32], st: &mut SoftmaxStep<'_>) {
    let n = st.lanes;
    let (vis, m, l, alpha) = (
        &st.visible[..n],
        &mut st.m[..n],
        &mut st.l[..n],
        &mut st.alpha[..n],
    );
    // scale and mask, running maxima into `alpha` for now
    alpha.copy_from_slice(m);
    for j in 0..st.nj {
        let pos = (st.j0 + j) as u32;
        for ((v, &lim), mx) in s[j * n..(j + 1) * n]
            .iter_mut()
            .zip(vis)
            .zip(alpha.iter_mut())
        {
            *v = if pos < lim {
                *v * st.scale
            } else {
                f32::NEG_INFINITY
            };
            *mx = mx.max(*v);
        }
    }
    for i in 0..n {
        // a row that has seen nothing visible yet keeps m = -inf, alpha = 1 (its sums are 0)
        let new = alpha[i];
        alpha[i] = if new == f32::NEG_INFINITY {
            1.0
        } else {
            exp_approx(m[i] - new)
        };
        l[i] *= alpha[i];
        m[i] = new;
    }
    for j in 0..st.nj {
        for ((v, &mi), sum) in s[j * n..(j + 1) * n]
            .iter_mut()
            .zip(m.iter())
            .zip(l.iter_mut())
        {
            let base = if mi == f32::NEG_INFINITY { 0.0 } else { mi };
            *v = exp_approx(*v - base);
            *sum += *v;
        }
    }
}

pub fn pv_t(t: &PvTile<'_>, o: &mut [f32]) {
    match t.kv {
        KvRows::F32(kv) => pv_of(t, kv, o),
        KvRows::Bf16(kv) => pv_of(t, kv, o),
        KvRows::Q8(_) => unreachable!("the wrapper refuses an 8-bit cache"),
    }
}

fn pv_of<T: Cached>(t: &PvTile<'_>, kv: &[T], o: &mut [f32]) {
    for i in 0..t.rows {
        let oi = &mut o[i * t.width..(i + 1) * t.width];
        for (j, &off) in t.offs.iter().enumerate() {
            let pij = t.p[j * t.lanes + i];
            for (y, &v) in oi.iter_mut().zip(&kv[off..off + t.width]) {
                *y += pij * v.f32();
            }
        }
    }
}
