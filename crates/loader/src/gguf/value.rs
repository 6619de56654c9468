//! GGUF metadata values and ggml's tensor type ids (and their [`DType`]s).

use crate::dtype::DType;

/// The type tag of a metadata value (GGUF's `gguf_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl GgufType {
    pub fn from_u32(t: u32) -> Option<GgufType> {
        use GgufType::*;
        Some(match t {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The fewest bytes a value of this type takes (to bound counts read from a file).
    pub(super) fn min_size(self) -> usize {
        use GgufType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Elements all of one type (arrays may nest), stored packed.
    Array(GgufArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    pub fn ty(&self) -> GgufType {
        match self {
            GgufValue::U8(_) => GgufType::U8,
            GgufValue::I8(_) => GgufType::I8,
            GgufValue::U16(_) => GgufType::U16,
            GgufValue::I16(_) => GgufType::I16,
            GgufValue::U32(_) => GgufType::U32,
            GgufValue::I32(_) => GgufType::I32,
            GgufValue::F32(_) => GgufType::F32,
            GgufValue::Bool(_) => GgufType::Bool,
            GgufValue::String(_) => GgufType::String,
            GgufValue::Array(..) => GgufType::Array,
            GgufValue::U64(_) => GgufType::U64,
            GgufValue::I64(_) => GgufType::I64,
            GgufValue::F64(_) => GgufType::F64,
        }
    }

    /// Any integer type, as i128 (so every u64 and i64 fits).
    fn as_int(&self) -> Option<i128> {
        Some(match *self {
            GgufValue::U8(v) => v as i128,
            GgufValue::I8(v) => v as i128,
            GgufValue::U16(v) => v as i128,
            GgufValue::I16(v) => v as i128,
            GgufValue::U32(v) => v as i128,
            GgufValue::I32(v) => v as i128,
            GgufValue::U64(v) => v as i128,
            GgufValue::I64(v) => v as i128,
            _ => return None,
        })
    }

    /// Any integer type whose value fits in u64.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_int().and_then(|v| u64::try_from(v).ok())
    }

    /// Any integer type whose value fits in u32.
    pub fn as_u32(&self) -> Option<u32> {
        self.as_int().and_then(|v| u32::try_from(v).ok())
    }

    /// Any integer type whose value fits in i64.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_int().and_then(|v| i64::try_from(v).ok())
    }

    /// Any integer type whose value fits in i32.
    pub fn as_i32(&self) -> Option<i32> {
        self.as_int().and_then(|v| i32::try_from(v).ok())
    }

    /// F32 or F64 (an integer too, converted).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            _ => self.as_int().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&GgufArray> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// An array of strings.
    pub fn from_strs<S: AsRef<str>>(items: &[S]) -> GgufValue {
        let mut a = GgufArray::Strings {
            text: String::new(),
            ends: Vec::with_capacity(items.len()),
        };
        for s in items {
            a.push_str(s.as_ref());
        }
        GgufValue::Array(a)
    }

    /// An array of i32.
    pub fn from_i32s(items: &[i32]) -> GgufValue {
        GgufValue::Array(GgufArray::Scalars {
            elem: GgufType::I32,
            bytes: items.iter().flat_map(|v| v.to_le_bytes()).collect(),
        })
    }

    /// An array of f32.
    pub fn from_f32s(items: &[f32]) -> GgufValue {
        GgufValue::Array(GgufArray::Scalars {
            elem: GgufType::F32,
            bytes: items.iter().flat_map(|v| v.to_le_bytes()).collect(),
        })
    }

    /// An array of `elem` from values of that type (an error names the first that is not).
    pub fn array(elem: GgufType, items: Vec<GgufValue>) -> Result<GgufValue, String> {
        let mut a = GgufArray::empty(elem);
        for (i, v) in items.into_iter().enumerate() {
            if v.ty() != elem {
                return Err(format!(
                    "an array of {elem:?} cannot hold element {i}, a {:?}",
                    v.ty()
                ));
            }
            match (&mut a, v) {
                (GgufArray::Strings { .. }, GgufValue::String(s)) => a.push_str(&s),
                (GgufArray::Arrays(v), GgufValue::Array(inner)) => v.push(inner),
                (GgufArray::Scalars { bytes, .. }, v) => v.put_scalar(bytes),
                _ => unreachable!("the element type was checked"),
            }
        }
        Ok(GgufValue::Array(a))
    }

    /// A scalar's little-endian bytes (nothing for strings and arrays).
    pub(super) fn put_scalar(&self, out: &mut Vec<u8>) {
        match self {
            GgufValue::U8(x) => out.push(*x),
            GgufValue::I8(x) => out.push(*x as u8),
            GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::Bool(b) => out.push(*b as u8),
            GgufValue::String(_) | GgufValue::Array(_) => {}
        }
    }
}

/// An array's elements, packed by type: a vocabulary's 129,280 tokens are one string and
/// an index, not as many allocations (a GGUF file's metadata is parsed whole at open).
#[derive(Debug, Clone, PartialEq)]
pub enum GgufArray {
    /// Numbers or bools (`elem`), each as its little-endian bytes.
    Scalars { elem: GgufType, bytes: Vec<u8> },
    /// Strings one after another: string `i` ends at `ends[i]` and starts where the
    /// previous one ends.
    Strings { text: String, ends: Vec<usize> },
    /// Arrays of arrays.
    Arrays(Vec<GgufArray>),
}

impl GgufArray {
    /// No elements of type `elem`.
    pub fn empty(elem: GgufType) -> GgufArray {
        match elem {
            GgufType::String => GgufArray::Strings {
                text: String::new(),
                ends: Vec::new(),
            },
            GgufType::Array => GgufArray::Arrays(Vec::new()),
            _ => GgufArray::Scalars {
                elem,
                bytes: Vec::new(),
            },
        }
    }

    pub fn elem(&self) -> GgufType {
        match self {
            GgufArray::Scalars { elem, .. } => *elem,
            GgufArray::Strings { .. } => GgufType::String,
            GgufArray::Arrays(_) => GgufType::Array,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            GgufArray::Scalars { elem, bytes } => bytes.len() / elem.min_size(),
            GgufArray::Strings { ends, .. } => ends.len(),
            GgufArray::Arrays(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a string (only to an array of strings).
    pub(super) fn push_str(&mut self, s: &str) {
        if let GgufArray::Strings { text, ends } = self {
            text.push_str(s);
            ends.push(text.len());
        }
    }

    /// The strings, if this is an array of strings.
    pub fn strs(&self) -> Option<impl Iterator<Item = &str>> {
        match self {
            GgufArray::Strings { text, ends } => Some(ends.iter().scan(0, |start, &end| {
                let s = &text[*start..end];
                *start = end;
                Some(s)
            })),
            _ => None,
        }
    }

    /// Every element as a value (strings and inner arrays copied).
    pub fn values(&self) -> Box<dyn Iterator<Item = GgufValue> + '_> {
        match self {
            GgufArray::Scalars { elem, bytes } => {
                let (elem, size) = (*elem, elem.min_size());
                Box::new(bytes.chunks_exact(size).map(move |b| scalar(elem, b)))
            }
            GgufArray::Strings { .. } => Box::new(
                self.strs()
                    .into_iter()
                    .flatten()
                    .map(|s| GgufValue::String(s.to_string())),
            ),
            GgufArray::Arrays(v) => Box::new(v.iter().map(|a| GgufValue::Array(a.clone()))),
        }
    }
}

/// The scalar of type `elem` whose little-endian bytes are `b` (`elem.min_size()` of them).
pub(super) fn scalar(elem: GgufType, b: &[u8]) -> GgufValue {
    let a = |n: usize| -> [u8; 8] {
        let mut x = [0u8; 8];
        x[..n].copy_from_slice(&b[..n]);
        x
    };
    match elem {
        GgufType::U8 => GgufValue::U8(b[0]),
        GgufType::I8 => GgufValue::I8(b[0] as i8),
        GgufType::Bool => GgufValue::Bool(b[0] != 0),
        GgufType::U16 => GgufValue::U16(u16::from_le_bytes([b[0], b[1]])),
        GgufType::I16 => GgufValue::I16(i16::from_le_bytes([b[0], b[1]])),
        GgufType::U32 => GgufValue::U32(u32::from_le_bytes(b[..4].try_into().unwrap())),
        GgufType::I32 => GgufValue::I32(i32::from_le_bytes(b[..4].try_into().unwrap())),
        GgufType::F32 => GgufValue::F32(f32::from_le_bytes(b[..4].try_into().unwrap())),
        GgufType::U64 => GgufValue::U64(u64::from_le_bytes(a(8))),
        GgufType::I64 => GgufValue::I64(i64::from_le_bytes(a(8))),
        GgufType::F64 => GgufValue::F64(f64::from_le_bytes(a(8))),
        GgufType::String | GgufType::Array => unreachable!("not a scalar type"),
    }
}

/// ggml's tensor type ids and, for listing and bounds checks, their block sizes.
/// `(id, name, elements per block, bytes per block)`.
const GGML_TYPES: &[(u32, &str, usize, usize)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
];

/// The name of ggml type `id` ("type 99" if unknown).
pub fn ggml_type_name(id: u32) -> String {
    GGML_TYPES
        .iter()
        .find(|t| t.0 == id)
        .map(|t| t.1.to_string())
        .unwrap_or_else(|| format!("type {id}"))
}

pub(super) fn ggml_block(id: u32) -> Option<(usize, usize)> {
    GGML_TYPES.iter().find(|t| t.0 == id).map(|t| (t.2, t.3))
}

/// The loader dtype of ggml type `id`, if this crate reads it.
pub fn dtype_of_ggml(id: u32) -> Option<DType> {
    Some(match id {
        0 => DType::F32,
        1 => DType::F16,
        6 => DType::Q5_0,
        8 => DType::Q8_0,
        12 => DType::Q4K,
        14 => DType::Q6K,
        24 => DType::I8,
        25 => DType::I16,
        26 => DType::I32,
        27 => DType::I64,
        28 => DType::F64,
        30 => DType::BF16,
        _ => return None,
    })
}

/// The ggml type id of a loader dtype, if GGUF can hold it.
pub fn ggml_of_dtype(dtype: DType) -> Option<u32> {
    Some(match dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Q5_0 => 6,
        DType::Q8_0 => 8,
        DType::Q4K => 12,
        DType::Q6K => 14,
        DType::I8 => 24,
        DType::I16 => 25,
        DType::I32 => 26,
        DType::I64 => 27,
        DType::F64 => 28,
        DType::BF16 => 30,
        _ => return None,
    })
}
