//! `Q6_K`: 256 weights in 210 bytes, `u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d`.

use super::{GROUP_MAX_EPS, Q6K_BYTES, QK_K, f16_bytes, f16_le, nearest_int};

/// Decode whole `Q6_K` super-blocks: `bytes.len() == n/256 * 210`, `out.len() == n`.
///
/// Weight `e = 128 n + 32 k + l` (n in 0..2, k in 0..4, l in 0..32) has its low 4 bits in
/// `ql[64 n + 32 (k % 2) + l]` (low nibble for k < 2, else high), its high 2 bits in bits
/// `2k..2k+2` of `qh[32 n + l]`, and scale `scales[e / 16]`.
///
/// # Panics
/// If the lengths disagree (use [`dequantize_row`](super::dequantize_row) for a checked call).
#[inline]
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
