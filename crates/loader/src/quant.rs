//! ggml's block-quantized weight formats, scalar reference code.
//!
//! The layouts are ggml's, byte for byte, so a GGUF file's tensor data is decoded in place:
//!
//! - `Q8_0`, 32 weights in 34 bytes: `f16 d; i8 qs[32]`; `w = d * q`.
//! - `Q4_K`, 256 weights in 144 bytes: `f16 d; f16 dmin; u8 scales[12]; u8 qs[128]`, eight
//!   sub-blocks of 32 weights with a 6-bit scale `sc` and a 6-bit min `m` each;
//!   `w = d * sc * q - dmin * m` with `q` in 0..=15.
//! - `Q6_K`, 256 weights in 210 bytes: `u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d`, sixteen
//!   sub-blocks of 16 weights with an i8 scale each; `w = d * sc * (q - 32)`, `q` in 0..=63.
//!
//! The quantizers follow ggml's reference ("`_ref`") quantizers step by step, in the same
//! f32 operation order and with the same round-half-to-even trick, so for the same input they
//! produce the same bytes as llama.cpp's reference path (a build of llama.cpp that lets the C
//! compiler fuse multiply-adds may differ in the last bit of rare ties).

use half::f16;
use thiserror::Error;

use crate::dtype::DType;

/// Weights per `Q8_0` block.
pub const QK8_0: usize = 32;
/// Weights per k-quant super-block.
pub const QK_K: usize = 256;
/// Bytes of one `Q8_0` block.
pub const Q8_0_BYTES: usize = 34;
/// Bytes of one `Q4_K` super-block.
pub const Q4K_BYTES: usize = 144;
/// Bytes of one `Q6_K` super-block.
pub const Q6K_BYTES: usize = 210;

/// A request that does not fit a format: wrong lengths or a type with no codec here.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantError {
    #[error("{dtype}: {n} values are not a whole number of {block}-value blocks")]
    NotWholeBlocks {
        dtype: DType,
        n: usize,
        block: usize,
    },
    #[error("{dtype}: {bytes} bytes do not decode to {values} values")]
    LengthMismatch {
        dtype: DType,
        bytes: usize,
        values: usize,
    },
    #[error("{0} has no f32 codec")]
    Unsupported(DType),
}

#[inline]
fn f16_le(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

#[inline]
fn f16_bytes(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_bits().to_le_bytes()
}

/// ggml's `nearest_int`: round half to even by adding 1.5 * 2^23 and reading the mantissa.
/// Exact for |x| < 2^22, the range every caller stays in.
#[inline]
fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0f32;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Below this a group is treated as all zeros (ggml's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

// ---------------------------------------------------------------- Q8_0

/// Decode whole `Q8_0` blocks: `bytes.len() == n/32 * 34`, `out.len() == n`.
///
/// # Panics
/// If the lengths disagree (use [`dequantize_row`] for a checked call).
pub fn dequantize_q8_0(bytes: &[u8], out: &mut [f32]) {
    assert_eq!(bytes.len() / Q8_0_BYTES * QK8_0, out.len());
    assert!(bytes.len().is_multiple_of(Q8_0_BYTES));
    for (blk, o) in bytes
        .chunks_exact(Q8_0_BYTES)
        .zip(out.chunks_exact_mut(QK8_0))
    {
        let d = f16_le(blk, 0);
        for (v, &q) in o.iter_mut().zip(&blk[2..]) {
            *v = (q as i8) as f32 * d;
        }
    }
}

/// Encode `x` (a multiple of 32 values) as `Q8_0`, appending to `out`: ggml's
/// `quantize_row_q8_0_ref` (d = amax / 127, q = round-half-away(x / d)).
///
/// # Panics
/// If `x.len()` is not a multiple of 32.
pub fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) {
    assert!(x.len().is_multiple_of(QK8_0));
    out.reserve(x.len() / QK8_0 * Q8_0_BYTES);
    for blk in x.chunks_exact(QK8_0) {
        let amax = blk.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16_bytes(d));
        // `as i8` saturates; |x * id| <= 127 up to rounding anyway
        out.extend(blk.iter().map(|&v| (v * id).round() as i8 as u8));
    }
}

// ---------------------------------------------------------------- Q4_K

/// The 6-bit scale and min of sub-block `j` (0..8) from a `Q4_K` block's 12 scale bytes:
/// sub-blocks 0..4 keep theirs in the low 6 bits of bytes `j` and `j + 4`; sub-blocks 4..8
/// keep the low 4 bits in byte `j + 4` (scale low nibble, min high nibble) and the top 2
/// bits in the top bits of bytes `j - 4` (scale) and `j` (min).
#[inline]
pub fn q4k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Pack eight 6-bit scales and mins into the 12 bytes [`q4k_scale_min`] reads.
pub fn q4k_pack_scales(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        let (ls, lm) = (sc[j] & 63, m[j] & 63);
        if j < 4 {
            s[j] |= ls;
            s[j + 4] |= lm;
        } else {
            s[j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
            s[j - 4] |= (ls >> 4) << 6;
            s[j] |= (lm >> 4) << 6;
        }
    }
    s
}

/// Decode whole `Q4_K` super-blocks: `bytes.len() == n/256 * 144`, `out.len() == n`.
///
/// Weight `e` of a block is in sub-block `e / 32`, stored in the low nibble of
/// `qs[32 * (e / 64) + e % 32]` when `e % 64 < 32`, else in its high nibble.
///
/// # Panics
/// If the lengths disagree (use [`dequantize_row`] for a checked call).
pub fn dequantize_q4_k(bytes: &[u8], out: &mut [f32]) {
    assert_eq!(bytes.len() / Q4K_BYTES * QK_K, out.len());
    assert!(bytes.len().is_multiple_of(Q4K_BYTES));
    for (blk, o) in bytes
        .chunks_exact(Q4K_BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        let d = f16_le(blk, 0);
        let dmin = f16_le(blk, 2);
        let scales = &blk[4..16];
        let qs = &blk[16..144];
        for c in 0..4 {
            let q = &qs[32 * c..32 * c + 32];
            let (sc1, m1) = q4k_scale_min(2 * c, scales);
            let (sc2, m2) = q4k_scale_min(2 * c + 1, scales);
            let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
            let (lo, hi) = o[64 * c..64 * c + 64].split_at_mut(32);
            for l in 0..32 {
                lo[l] = d1 * (q[l] & 0xf) as f32 - m1;
                hi[l] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

/// ggml's `make_qkx2_quants` with `use_mad = false`: fit `x ≈ scale * L - the_min` with
/// `L` in `0..=nmax`, searching `nstep + 1` candidate scales. Returns `(scale, the_min)`.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    l_aux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            l_aux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let dd = sum_w * sum_l2 - sum_l * sum_l;
        if dd > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / dd;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / dd;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * l_aux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&l_aux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Encode `x` (a multiple of 256 values) as `Q4_K`, appending to `out`: ggml's
/// `quantize_row_q4_K_ref`.
///
/// # Panics
/// If `x.len()` is not a multiple of 256.
pub fn quantize_q4_k(x: &[f32], out: &mut Vec<u8>) {
    assert!(x.len().is_multiple_of(QK_K));
    out.reserve(x.len() / QK_K * Q4K_BYTES);
    let mut l = [0u8; QK_K];
    let mut l_aux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; 8];
    let mut scales = [0f32; 8];
    for xb in x.chunks_exact(QK_K) {
        let mut max_scale = 0f32;
        let mut max_min = 0f32;
        for j in 0..8 {
            let xs = &xb[32 * j..32 * j + 32];
            let mut sum_x2 = 0f32;
            for &v in xs {
                sum_x2 += v * v;
            }
            let av_x = (sum_x2 / 32.0).sqrt();
            for (w, &v) in weights.iter_mut().zip(xs) {
                *w = av_x + v.abs();
            }
            let (s, m) = make_qkx2_quants(
                15,
                xs,
                &weights,
                &mut l[32 * j..32 * j + 32],
                &mut l_aux,
                -1.0,
                0.1,
                20,
            );
            scales[j] = s;
            mins[j] = m;
            if s > max_scale {
                max_scale = s;
            }
            if m > max_min {
                max_min = m;
            }
        }
        let inv_scale = if max_scale > 0.0 {
            63.0 / max_scale
        } else {
            0.0
        };
        let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
        let mut ls = [0u8; 8];
        let mut lm = [0u8; 8];
        for j in 0..8 {
            // C assigns the int to a uint8_t (wrapping) before MIN(63, ..)
            ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
            lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
        }
        let packed = q4k_pack_scales(&ls, &lm);
        let d16 = f16_bytes(max_scale / 63.0);
        let dmin16 = f16_bytes(max_min / 63.0);
        let d = f16_le(&d16, 0);
        let dmin = f16_le(&dmin16, 0);
        for j in 0..8 {
            let (sc, m) = q4k_scale_min(j, &packed);
            let dj = d * sc as f32;
            if dj == 0.0 {
                continue; // keeps the fit's quants, as ggml does
            }
            let dm = dmin * m as f32;
            for ii in 0..32 {
                let q = nearest_int((xb[32 * j + ii] + dm) / dj).clamp(0, 15);
                l[32 * j + ii] = q as u8;
            }
        }
        out.extend_from_slice(&d16);
        out.extend_from_slice(&dmin16);
        out.extend_from_slice(&packed);
        for c in 0..4 {
            for i in 0..32 {
                out.push(l[64 * c + i] | (l[64 * c + i + 32] << 4));
            }
        }
    }
}

// ---------------------------------------------------------------- Q6_K

/// Decode whole `Q6_K` super-blocks: `bytes.len() == n/256 * 210`, `out.len() == n`.
///
/// Weight `e = 128 n + 32 k + l` (n in 0..2, k in 0..4, l in 0..32) has its low 4 bits in
/// `ql[64 n + 32 (k % 2) + l]` (low nibble for k < 2, else high), its high 2 bits in bits
/// `2k..2k+2` of `qh[32 n + l]`, and scale `scales[e / 16]`.
///
/// # Panics
/// If the lengths disagree (use [`dequantize_row`] for a checked call).
pub fn dequantize_q6_k(bytes: &[u8], out: &mut [f32]) {
    assert_eq!(bytes.len() / Q6K_BYTES * QK_K, out.len());
    assert!(bytes.len().is_multiple_of(Q6K_BYTES));
    for (blk, o) in bytes
        .chunks_exact(Q6K_BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        let d = f16_le(blk, 208);
        for n in 0..2 {
            let ql = &blk[64 * n..64 * n + 64];
            let qh = &blk[128 + 32 * n..128 + 32 * n + 32];
            let sc = &blk[192 + 8 * n..192 + 8 * n + 8];
            let y = &mut o[128 * n..128 * n + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
            }
        }
    }
}

/// ggml's `make_qx_quants` with `rmse_type = 1` and no importance weights (w = x^2): fit
/// `x ≈ scale * (L - nmax)`, `L` in `0..2 nmax`, trying 19 candidate scales. Returns `scale`.
fn make_qx_quants_rmse1(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let n = x.len();
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = -nmaxf / max;
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
        let w = x[i] * x[i];
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmaxf + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
            let w = v * v;
            let lf = l as f32;
            sumlx += w * v * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
                l_out[i] = (l + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Encode `x` (a multiple of 256 values) as `Q6_K`, appending to `out`: ggml's
/// `quantize_row_q6_K_ref`.
///
/// # Panics
/// If `x.len()` is not a multiple of 256.
pub fn quantize_q6_k(x: &[f32], out: &mut Vec<u8>) {
    assert!(x.len().is_multiple_of(QK_K));
    out.reserve(x.len() / QK_K * Q6K_BYTES);
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    for xb in x.chunks_exact(QK_K) {
        let mut max_scale = 0f32;
        let mut max_abs_scale = 0f32;
        for ib in 0..16 {
            let s = make_qx_quants_rmse1(32, &xb[16 * ib..16 * ib + 16], &mut l[16 * ib..]);
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            out.extend_from_slice(&[0u8; Q6K_BYTES]);
            continue;
        }
        let iscale = -128.0f32 / max_scale;
        let d16 = f16_bytes(1.0 / iscale);
        let d = f16_le(&d16, 0);
        let mut sc = [0i8; 16];
        for ib in 0..16 {
            sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
        }
        for j in 0..16 {
            let dj = d * sc[j] as f32;
            if dj == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(xb[16 * j + ii] / dj).clamp(-32, 31);
                l[16 * j + ii] = (q + 32) as i8;
            }
        }
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for n in 0..2 {
            let lb = &l[128 * n..128 * n + 128];
            for i in 0..32 {
                let q = |k: usize| lb[i + 32 * k] as u8;
                ql[64 * n + i] = (q(0) & 0xf) | ((q(2) & 0xf) << 4);
                ql[64 * n + i + 32] = (q(1) & 0xf) | ((q(3) & 0xf) << 4);
                qh[32 * n + i] =
                    (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
            }
        }
        out.extend_from_slice(&ql);
        out.extend_from_slice(&qh);
        out.extend(sc.iter().map(|&s| s as u8));
        out.extend_from_slice(&d16);
    }
}

// ---------------------------------------------------------------- by dtype

fn check_blocks(dtype: DType, n: usize) -> Result<(usize, usize), QuantError> {
    let (e, b) = dtype.block();
    if b == 0 || !n.is_multiple_of(e) {
        return Err(QuantError::NotWholeBlocks { dtype, n, block: e });
    }
    Ok((e, b))
}

/// Q5_0 blocks (`f16 d; u8 qh[4]; u8 qs[16]`, 32 values): value j < 16 takes the low
/// nibble of qs[j] and bit j of qh as its fifth bit, value j + 16 the high nibble and bit
/// j + 16; then `d * (q - 16)`.
pub fn dequantize_q5_0(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes.chunks_exact(22).zip(out.chunks_exact_mut(32)) {
        let d = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        for j in 0..16 {
            let lo = (b[6 + j] & 0x0f) as u32 | (((qh >> j) & 1) << 4);
            let hi = (b[6 + j] >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4);
            y[j] = d * (lo as i32 - 16) as f32;
            y[j + 16] = d * (hi as i32 - 16) as f32;
        }
    }
}

/// Decode `out.len()` values of `dtype` from `bytes` (exactly their storage). Handles the
/// block types and the plain float types (F32, F16, BF16).
pub fn dequantize_row(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let (e, b) = check_blocks(dtype, out.len())?;
    if bytes.len() != out.len() / e * b {
        return Err(QuantError::LengthMismatch {
            dtype,
            bytes: bytes.len(),
            values: out.len(),
        });
    }
    match dtype {
        DType::Q8_0 => dequantize_q8_0(bytes, out),
        DType::Q5_0 => dequantize_q5_0(bytes, out),
        DType::Q4K => dequantize_q4_k(bytes, out),
        DType::Q6K => dequantize_q6_k(bytes, out),
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(())
}

/// Encode `x` as `dtype`, appending the bytes to `out`. Block types need whole blocks;
/// F32, F16 and BF16 (round to nearest even) take any length.
pub fn quantize_row(dtype: DType, x: &[f32], out: &mut Vec<u8>) -> Result<(), QuantError> {
    check_blocks(dtype, x.len())?;
    match dtype {
        DType::Q8_0 => quantize_q8_0(x, out),
        DType::Q4K => quantize_q4_k(x, out),
        DType::Q6K => quantize_q6_k(x, out),
        DType::F32 => out.extend(x.iter().flat_map(|v| v.to_le_bytes())),
        DType::F16 => out.extend(x.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes())),
        DType::BF16 => out.extend(
            x.iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()),
        ),
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn q5_0_hand_built_block() {
        // d = 0.5; value 0: low nibble 1 + fifth bit (qh bit 0) = 17; value 16: high
        // nibble 2 + qh bit 16 = 18; value 1: 0 with no fifth bit
        let mut b = vec![0u8; 22];
        b[..2].copy_from_slice(&half::f16::from_f32(0.5).to_bits().to_le_bytes());
        b[2..6].copy_from_slice(&(1u32 | 1 << 16).to_le_bytes());
        b[6] = 0x21;
        let mut y = vec![0f32; 32];
        dequantize_row(DType::Q5_0, &b, &mut y).unwrap();
        assert_eq!(y[0], 0.5);
        assert_eq!(y[16], 1.0);
        assert_eq!(y[1], -8.0);
        assert_eq!(y[17], -8.0);
    }

    use super::*;

    /// Deterministic pseudo-random values, roughly N(0, scale).
    fn gauss(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f32 / (1u64 << 53) as f32
        };
        (0..n)
            .map(|_| {
                let u: f32 = (0..4).map(|_| next()).sum::<f32>() - 2.0;
                u * scale * 1.7
            })
            .collect()
    }

    fn roundtrip(dtype: DType, x: &[f32]) -> (Vec<u8>, Vec<f32>) {
        let mut q = Vec::new();
        quantize_row(dtype, x, &mut q).unwrap();
        assert_eq!(Some(q.len()), dtype.storage_bytes(x.len()));
        let mut y = vec![0f32; x.len()];
        dequantize_row(dtype, &q, &mut y).unwrap();
        (q, y)
    }

    fn rel_rmse(x: &[f32], y: &[f32]) -> f32 {
        let e: f32 = x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum();
        let s: f32 = x.iter().map(|a| a * a).sum();
        (e / s).sqrt()
    }

    #[test]
    fn layout_sizes() {
        assert_eq!(DType::Q8_0.block(), (QK8_0, Q8_0_BYTES));
        assert_eq!(DType::Q4K.block(), (QK_K, Q4K_BYTES));
        assert_eq!(DType::Q6K.block(), (QK_K, Q6K_BYTES));
        assert_eq!((Q8_0_BYTES, Q4K_BYTES, Q6K_BYTES), (34, 144, 210));
        // 2 (d) + 32 ; 2 + 2 + 12 + 128 ; 128 + 64 + 16 + 2
        assert_eq!(2 + 32, Q8_0_BYTES);
        assert_eq!(2 + 2 + 12 + 128, Q4K_BYTES);
        assert_eq!(128 + 64 + 16 + 2, Q6K_BYTES);
    }

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-2.4), -2);
        assert_eq!(nearest_int(14.6), 15);
        assert_eq!(nearest_int(-128.0), -128);
    }

    #[test]
    fn q8_0_hand_block() {
        // d = 0.5 (f16 0x3800); q_i = i - 16
        let mut blk = vec![0x00, 0x38];
        blk.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let mut y = vec![0f32; 32];
        dequantize_row(DType::Q8_0, &blk, &mut y).unwrap();
        for (i, v) in y.iter().enumerate() {
            assert_eq!(*v, (i as f32 - 16.0) * 0.5);
        }
    }

    #[test]
    fn q8_0_quantize_known_block() {
        // amax 127 -> d = 1 exactly; x = i*4 - 64.4 rounds half away from zero
        let mut x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
        x[0] = -127.0;
        x[1] = 2.5; // -> 3 (away from zero, like C roundf)
        x[2] = -2.5; // -> -3
        let mut q = Vec::new();
        quantize_q8_0(&x, &mut q);
        assert_eq!(&q[..2], &[0x00, 0x3c]); // f16 1.0
        assert_eq!(q[2] as i8, -127);
        assert_eq!(q[3] as i8, 3);
        assert_eq!(q[4] as i8, -3);
        for i in 3..32 {
            assert_eq!(q[2 + i] as i8, i as i8 - 16);
        }
        // all zeros: d = 0, q = 0
        let mut z = Vec::new();
        quantize_q8_0(&[0.0; 32], &mut z);
        assert_eq!(z, vec![0u8; 34]);
    }

    #[test]
    fn q8_0_roundtrip_error_within_half_step() {
        let x = gauss(32 * 64, 1, 0.02);
        let (q, y) = roundtrip(DType::Q8_0, &x);
        for (b, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d32 = amax / 127.0;
            let d16 = f16_le(&q, b * 34);
            // round(x/d) is within d/2; storing d as f16 moves each value by |q| * |d16 - d32|
            let bound = d32 / 2.0 + 127.0 * (d16 - d32).abs() + 1e-7;
            for (a, c) in xb.iter().zip(yb) {
                assert!(
                    (a - c).abs() <= bound,
                    "block {b}: {a} vs {c}, bound {bound}"
                );
            }
        }
        assert!(rel_rmse(&x, &y) < 0.01);
    }

    #[test]
    fn q4_k_hand_block() {
        // d = 0.25, dmin = 0.125; scales and mins above 15 for j >= 4 exercise the high bits
        let sc: [u8; 8] = [1, 2, 3, 63, 17, 33, 48, 63];
        let m: [u8; 8] = [0, 5, 63, 7, 16, 31, 62, 1];
        let mut blk = Vec::new();
        blk.extend_from_slice(&f16::from_f32(0.25).to_bits().to_le_bytes());
        blk.extend_from_slice(&f16::from_f32(0.125).to_bits().to_le_bytes());
        let scales = q4k_pack_scales(&sc, &m);
        // independent check of the packing against the layout description
        assert_eq!(scales[0] & 63, sc[0]);
        assert_eq!(scales[4] & 63, m[0]);
        assert_eq!(scales[8], (sc[4] & 0xf) | ((m[4] & 0xf) << 4));
        blk.extend_from_slice(&scales);
        // quant of element e: (e * 7 + 3) % 16
        let qv = |e: usize| ((e * 7 + 3) % 16) as u8;
        let mut qs = [0u8; 128];
        for e in 0..256 {
            let byte = 32 * (e / 64) + e % 32;
            if e % 64 < 32 {
                qs[byte] |= qv(e);
            } else {
                qs[byte] |= qv(e) << 4;
            }
        }
        blk.extend_from_slice(&qs);
        assert_eq!(blk.len(), 144);
        for j in 0..8 {
            assert_eq!(q4k_scale_min(j, &scales), (sc[j], m[j]));
        }
        let mut y = vec![0f32; 256];
        dequantize_row(DType::Q4K, &blk, &mut y).unwrap();
        for (e, &v) in y.iter().enumerate() {
            let j = e / 32;
            let want = 0.25 * sc[j] as f32 * qv(e) as f32 - 0.125 * m[j] as f32;
            assert_eq!(v, want, "element {e}");
        }
    }

    #[test]
    fn q4_k_scale_packing_matches_ggml_bit_positions() {
        // sub-block 5: scale 0b10_1101 (45), min 0b01_0110 (22)
        let mut sc = [0u8; 8];
        let mut m = [0u8; 8];
        sc[5] = 45;
        m[5] = 22;
        let s = q4k_pack_scales(&sc, &m);
        assert_eq!(s[9], 0b0110_1101); // low nibbles: min << 4 | scale
        assert_eq!(s[1] >> 6, 0b10); // scale's top bits over byte j-4
        assert_eq!(s[5] >> 6, 0b01); // min's top bits over byte j
        assert_eq!(s.iter().map(|b| b.count_ones()).sum::<u32>(), 5 + 1 + 1);
    }

    #[test]
    fn q6_k_hand_block() {
        let qv = |e: usize| ((e * 11 + 5) % 64) as u8; // stored 0..63, value q - 32
        let sc = |j: usize| (j as i32 * 13 - 100) as i8; // -100..=95, negatives included
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for e in 0..256 {
            let (n, k, l) = (e / 128, (e % 128) / 32, e % 32);
            let q = qv(e);
            let byte = 64 * n + 32 * (k % 2) + l;
            if k < 2 {
                ql[byte] |= q & 0xf;
            } else {
                ql[byte] |= (q & 0xf) << 4;
            }
            qh[32 * n + l] |= (q >> 4) << (2 * k);
        }
        let mut blk = Vec::new();
        blk.extend_from_slice(&ql);
        blk.extend_from_slice(&qh);
        blk.extend((0..16).map(|j| sc(j) as u8));
        blk.extend_from_slice(&f16::from_f32(0.0625).to_bits().to_le_bytes());
        assert_eq!(blk.len(), 210);
        let mut y = vec![0f32; 256];
        dequantize_row(DType::Q6K, &blk, &mut y).unwrap();
        for (e, &v) in y.iter().enumerate() {
            let want = 0.0625 * sc(e / 16) as f32 * (qv(e) as f32 - 32.0);
            assert_eq!(v, want, "element {e}");
        }
    }

    #[test]
    fn zeros_encode_to_zero_bytes() {
        for dtype in [DType::Q4K, DType::Q6K, DType::Q8_0] {
            let (q, y) = roundtrip(dtype, &[0.0; 256]);
            assert!(y.iter().all(|&v| v == 0.0), "{dtype}");
            assert!(q.iter().all(|&b| b == 0), "{dtype}");
        }
    }

    #[test]
    fn q4_k_roundtrip_error() {
        let x = gauss(256 * 32, 7, 0.05);
        let (q, y) = roundtrip(DType::Q4K, &x);
        let r = rel_rmse(&x, &y);
        assert!(r < 0.12, "relative rmse {r}");
        // every value is within one step of its sub-block (q in 0..=15 covers [-m, 15 sc - m])
        for (b, (xb, yb)) in x.chunks(256).zip(y.chunks(256)).enumerate() {
            let blk = &q[b * 144..b * 144 + 144];
            let d = f16_le(blk, 0);
            for j in 0..8 {
                let (sc, _) = q4k_scale_min(j, &blk[4..16]);
                let step = d * sc as f32;
                for i in 32 * j..32 * j + 32 {
                    assert!(
                        (xb[i] - yb[i]).abs() <= step * 1.01 + 1e-6,
                        "block {b} element {i}: {} vs {}, step {step}",
                        xb[i],
                        yb[i]
                    );
                }
            }
        }
        // uniform data over one range is represented with small error
        let u: Vec<f32> = (0..256).map(|i| (i % 32) as f32 / 31.0 - 0.2).collect();
        let (_, v) = roundtrip(DType::Q4K, &u);
        assert!(rel_rmse(&u, &v) < 0.06, "{}", rel_rmse(&u, &v));
    }

    #[test]
    fn q6_k_roundtrip_error() {
        let x = gauss(256 * 32, 9, 0.05);
        let (q, y) = roundtrip(DType::Q6K, &x);
        let r = rel_rmse(&x, &y);
        assert!(r < 0.03, "relative rmse {r}");
        for (b, (xb, yb)) in x.chunks(256).zip(y.chunks(256)).enumerate() {
            let blk = &q[b * 210..b * 210 + 210];
            let d = f16_le(blk, 208);
            for j in 0..16 {
                let step = (d * (blk[192 + j] as i8) as f32).abs();
                for i in 16 * j..16 * j + 16 {
                    // rounding error is half a step; the clamp to [-32, 31] can cost one more
                    assert!(
                        (xb[i] - yb[i]).abs() <= step * 1.51 + 1e-6,
                        "block {b} element {i}: {} vs {}, step {step}",
                        xb[i],
                        yb[i]
                    );
                }
            }
        }
    }

    #[test]
    fn quantizing_is_deterministic_and_idempotent_on_decoded_values() {
        // Decoding then re-encoding Q8_0 reproduces the same bytes: the decoded block's amax
        // is 127 * d16, so the scale and every quant come back.
        let x = gauss(32 * 8, 3, 1.0);
        let (q1, y1) = roundtrip(DType::Q8_0, &x);
        let (q2, _) = roundtrip(DType::Q8_0, &y1);
        assert_eq!(q1, q2);
        let (a, _) = roundtrip(DType::Q4K, &x);
        let (b, _) = roundtrip(DType::Q4K, &x);
        assert_eq!(a, b);
    }

    #[test]
    fn plain_float_codecs() {
        let x = [1.0f32, -2.5, 0.1, 65504.0];
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let (q, y) = roundtrip(dtype, &x);
            assert_eq!(q.len(), 4 * dtype.size());
            assert_eq!(y[0], 1.0);
            assert_eq!(y[1], -2.5);
            assert!((y[2] - 0.1).abs() < 1e-3);
        }
    }

    #[test]
    fn bad_lengths_are_errors() {
        let mut v = Vec::new();
        assert_eq!(
            quantize_row(DType::Q4K, &[0.0; 100], &mut v),
            Err(QuantError::NotWholeBlocks {
                dtype: DType::Q4K,
                n: 100,
                block: 256
            })
        );
        let mut y = vec![0f32; 32];
        assert!(matches!(
            dequantize_row(DType::Q8_0, &[0u8; 33], &mut y),
            Err(QuantError::LengthMismatch { .. })
        ));
        assert_eq!(
            dequantize_row(DType::I32, &[0u8; 4], &mut y[..1]),
            Err(QuantError::Unsupported(DType::I32))
        );
    }

    #[test]
    fn tensor_reads_decode_quantized_blocks() {
        use crate::storage::Tensor;
        for dtype in [DType::Q8_0, DType::Q4K, DType::Q6K] {
            let x = gauss(2 * 512, 11, 0.1);
            let mut q = Vec::new();
            quantize_row(dtype, &x, &mut q).unwrap();
            let mut want = vec![0f32; x.len()];
            dequantize_row(dtype, &q, &mut want).unwrap();
            let t = Tensor::from_bytes("w", dtype, vec![2, 512], q).unwrap();
            assert_eq!(t.to_f32_vec(), want, "{dtype}");
            // a whole row (fast path) and a range that starts and ends mid-block
            let mut row = vec![0f32; 512];
            t.read_f32(512, &mut row);
            assert_eq!(row, want[512..], "{dtype}");
            let mut part = vec![0f32; 300];
            t.read_f32(250, &mut part);
            assert_eq!(part, want[250..550], "{dtype}");
            for i in [0, 31, 32, 255, 256, 700, 1023] {
                assert_eq!(t.get_f32(i), want[i], "{dtype} element {i}");
            }
        }
    }
}
