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
