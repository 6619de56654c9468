use std::fmt;

/// Element types a safetensors header may name. Weights use F32, F16, BF16 and F8E4M3;
/// the integer types appear in goldens and are readable but never used as weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    /// `float8_e4m3fn`: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities, 0x7f/0xff NaN.
    F8E4M3,
    F8E5M2,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    Bool,
    /// GGUF/ggml `Q8_0`: blocks of 32 weights, an f16 scale then 32 i8 (34 bytes).
    Q8_0,
    /// GGUF/ggml `Q5_0`: blocks of 32, an f16 scale, 32 high bits, 16 bytes of low nibbles
    /// (22 bytes); value = d * (q - 16). llama.cpp's Q4_K_M falls back to it for rows that
    /// are not whole 256-blocks (DeepSeek's `attn_k_b`).
    Q5_0,
    /// GGUF/ggml `Q4_K`: super-blocks of 256 weights in 8 sub-blocks of 32 with 6-bit
    /// scales and mins; f16 d, f16 dmin, 12 bytes of scales, 128 bytes of nibbles (144 bytes).
    Q4K,
    /// GGUF/ggml `Q6_K`: super-blocks of 256 weights in 16 sub-blocks of 16 with i8 scales;
    /// 128 bytes low nibbles, 64 bytes high 2 bits, 16 scales, f16 d (210 bytes).
    Q6K,
}

impl DType {
    pub fn parse(s: &str) -> Option<DType> {
        Some(match s {
            "F64" => DType::F64,
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "F8_E4M3" => DType::F8E4M3,
            "F8_E5M2" => DType::F8E5M2,
            "I64" => DType::I64,
            "I32" => DType::I32,
            "I16" => DType::I16,
            "I8" => DType::I8,
            "U64" => DType::U64,
            "U32" => DType::U32,
            "U16" => DType::U16,
            "U8" => DType::U8,
            "BOOL" => DType::Bool,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::F8E4M3 | DType::F8E5M2 | DType::I8 | DType::U8 | DType::Bool => 1,
            // block types: see `block`; per-element size is not a whole number of bytes
            DType::Q8_0 | DType::Q5_0 | DType::Q4K | DType::Q6K => 0,
        }
    }

    /// `(weights per block, bytes per block)`; `(1, size)` for the plain types.
    pub fn block(self) -> (usize, usize) {
        match self {
            DType::Q8_0 => (32, 34),
            DType::Q5_0 => (32, 22),
            DType::Q4K => (256, 144),
            DType::Q6K => (256, 210),
            other => (1, other.size()),
        }
    }

    /// Whether this is a block-quantized type (rows must be whole blocks).
    pub fn is_quantized(self) -> bool {
        self.block().0 > 1
    }

    /// Bytes that `numel` elements occupy; None if `numel` is not a whole number of blocks.
    pub fn storage_bytes(self, numel: usize) -> Option<usize> {
        let (e, b) = self.block();
        numel.is_multiple_of(e).then_some(numel / e * b)
    }

    /// Whether values of this type can be widened to f32 (weights, activations in goldens).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::F32 | DType::F16 | DType::BF16 | DType::F8E4M3 | DType::F64
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F64 => "F64",
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F8E4M3 => "F8_E4M3",
            DType::F8E5M2 => "F8_E5M2",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::I16 => "I16",
            DType::I8 => "I8",
            DType::U64 => "U64",
            DType::U32 => "U32",
            DType::U16 => "U16",
            DType::U8 => "U8",
            DType::Bool => "BOOL",
            DType::Q8_0 => "Q8_0",
            DType::Q5_0 => "Q5_0",
            DType::Q4K => "Q4_K",
            DType::Q6K => "Q6_K",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[inline]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

#[inline]
pub fn f16_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// All 256 e4m3fn values, so decoding is one table load.
static FP8_E4M3_TABLE: [f32; 256] = fp8_e4m3_table();

const fn fp8_e4m3_table() -> [f32; 256] {
    let mut t = [0f32; 256];
    let mut i = 0;
    while i < 256 {
        let sign = if i & 0x80 != 0 { -1.0f32 } else { 1.0f32 };
        let exp = ((i >> 3) & 0xf) as i32;
        let man = (i & 0x7) as i32;
        let mag = if exp == 0xf && man == 0x7 {
            f32::NAN
        } else if exp == 0 {
            // subnormal: man/8 * 2^-6
            man as f32 * (1.0 / 512.0)
        } else {
            let m = 1.0 + man as f32 / 8.0;
            let mut p = 1.0f32;
            let mut e = exp - 7;
            while e > 0 {
                p *= 2.0;
                e -= 1;
            }
            while e < 0 {
                p *= 0.5;
                e += 1;
            }
            m * p
        };
        t[i] = sign * mag;
        i += 1;
    }
    t
}

#[inline]
pub fn fp8_e4m3_to_f32(bits: u8) -> f32 {
    FP8_E4M3_TABLE[bits as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_known_values() {
        assert_eq!(fp8_e4m3_to_f32(0x00), 0.0);
        assert_eq!(fp8_e4m3_to_f32(0x38), 1.0); // exp 7, man 0
        assert_eq!(fp8_e4m3_to_f32(0xb8), -1.0);
        assert_eq!(fp8_e4m3_to_f32(0x7e), 448.0); // the largest finite value
        assert_eq!(fp8_e4m3_to_f32(0x01), 2f32.powi(-9)); // smallest subnormal
        assert_eq!(fp8_e4m3_to_f32(0x08), 2f32.powi(-6)); // smallest normal
        assert!(fp8_e4m3_to_f32(0x7f).is_nan());
        assert!(fp8_e4m3_to_f32(0xff).is_nan());
    }

    #[test]
    fn half_widening() {
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc040), -3.0);
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
    }
}
