//! `Q4_K`: 256 weights in 144 bytes, `f16 d; f16 dmin; u8 scales[12]; u8 qs[128]`.

use super::{Q4K_BYTES, QK_K, f16_bytes, f16_le, nearest_int};

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
/// If the lengths disagree (use [`dequantize_row`](super::dequantize_row) for a checked call).
#[inline]
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
