use super::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::dtype::DType;
use crate::error::{LoadError, Result};

/// A path named `name` in a directory of its own, removed with the directory when dropped
/// (a checkpoint mapped from the file stays readable).
struct Tmp {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl std::ops::Deref for Tmp {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Tmp {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

fn tmp(name: &str) -> Tmp {
    let dir = tempfile::Builder::new()
        .prefix("deeprust-gguf-")
        .tempdir()
        .unwrap();
    let path = dir.path().join(name);
    Tmp { _dir: dir, path }
}

fn every_value_type() -> Vec<(String, GgufValue)> {
    vec![
        (
            "general.architecture".into(),
            GgufValue::String("test".into()),
        ),
        ("t.u8".into(), GgufValue::U8(250)),
        ("t.i8".into(), GgufValue::I8(-7)),
        ("t.u16".into(), GgufValue::U16(65000)),
        ("t.i16".into(), GgufValue::I16(-30000)),
        ("t.u32".into(), GgufValue::U32(4_000_000_000)),
        ("t.i32".into(), GgufValue::I32(-2_000_000_000)),
        ("t.f32".into(), GgufValue::F32(0.1)),
        ("t.bool".into(), GgufValue::Bool(true)),
        ("t.string".into(), GgufValue::String("héllo 世界".into())),
        ("t.u64".into(), GgufValue::U64(u64::MAX)),
        ("t.i64".into(), GgufValue::I64(i64::MIN)),
        ("t.f64".into(), GgufValue::F64(-1e300)),
        ("t.strs".into(), GgufValue::from_strs(&["a", "", "ccc"])),
        ("t.i32s".into(), GgufValue::from_i32s(&[1, -2, 3])),
        (
            "t.u8s".into(),
            GgufValue::array(GgufType::U8, vec![GgufValue::U8(1), GgufValue::U8(2)]).unwrap(),
        ),
        ("t.empty".into(), GgufValue::from_f32s(&[])),
        (
            "t.nested".into(),
            GgufValue::array(
                GgufType::Array,
                vec![
                    GgufValue::from_i32s(&[1, 2]),
                    GgufValue::from_i32s(&[]),
                    GgufValue::from_strs(&["x", "yz"]),
                ],
            )
            .unwrap(),
        ),
        (
            "t.bools".into(),
            GgufValue::array(
                GgufType::Bool,
                vec![GgufValue::Bool(false), GgufValue::Bool(true)],
            )
            .unwrap(),
        ),
    ]
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A file with three tensors of different types and sizes that need padding.
fn sample(path: &Path) -> (Vec<(String, GgufValue)>, Vec<Vec<u8>>) {
    let meta = every_value_type();
    let a: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
    let a = f32_bytes(&a);
    let b: Vec<u8> = (0..2 * 64u32)
        .flat_map(|i| half::bf16::from_f32(i as f32).to_le_bytes())
        .collect();
    let mut q = Vec::new();
    crate::quant::quantize_row(
        DType::Q8_0,
        &(0..64).map(|i| i as f32 - 30.0).collect::<Vec<_>>(),
        &mut q,
    )
    .unwrap();
    let tensors = vec![
        GgufTensorOut {
            name: "a".into(),
            dtype: DType::F32,
            shape: vec![2, 3],
            bytes: &a,
        },
        GgufTensorOut {
            name: "b.weight".into(),
            dtype: DType::BF16,
            shape: vec![2, 64],
            bytes: &b,
        },
        GgufTensorOut {
            name: "q".into(),
            dtype: DType::Q8_0,
            shape: vec![2, 32],
            bytes: &q,
        },
    ];
    write_gguf(path, &meta, &tensors).unwrap();
    (meta, vec![a.clone(), b.clone(), q.clone()])
}

#[test]
fn write_then_read_every_value_type_and_tensor() {
    let p = tmp("roundtrip.gguf");
    let (meta, data) = sample(&p);
    let g = GgufFile::open(&p).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.alignment, 32);
    assert_eq!(g.metadata, meta);
    assert_eq!(g.data_start % 32, 0);
    assert_eq!(g.architecture(), Some("test"));
    // getters accept any integer width that fits
    assert_eq!(g.get_u32("t.u8"), Some(250));
    assert_eq!(g.get_u32("t.u16"), Some(65000));
    assert_eq!(g.get_u32("t.i8"), None); // negative
    assert_eq!(g.get_i32("t.i8"), Some(-7));
    assert_eq!(g.get_u64("t.u64"), Some(u64::MAX));
    assert_eq!(g.get_i64("t.i64"), Some(i64::MIN));
    assert_eq!(g.get_u32("t.u64"), None); // out of range
    assert_eq!(g.get_f32("t.f32"), Some(0.1));
    assert_eq!(g.get_f64("t.f64"), Some(-1e300));
    assert_eq!(g.get_bool("t.bool"), Some(true));
    assert_eq!(g.get_str("t.string"), Some("héllo 世界"));
    assert_eq!(g.get_str_array("t.strs"), Some(vec!["a", "", "ccc"]));
    assert_eq!(g.get_i32_array("t.i32s"), Some(vec![1, -2, 3]));
    assert_eq!(g.get_i32_array("t.u8s"), Some(vec![1, 2]));
    assert_eq!(g.get_u32_array("t.i32s"), None);
    assert_eq!(g.get_f32_array("t.empty"), Some(vec![]));
    assert_eq!(g.array_len("t.nested"), Some(3));
    assert_eq!(g.get_str("missing"), None);
    assert_eq!(g.get_str("t.u8"), None);

    let names: Vec<&str> = g.names().collect();
    assert_eq!(names, ["a", "b.weight", "q"]);
    let infos = g.tensor_infos();
    assert_eq!(infos[0].ne, vec![3, 2]); // innermost first
    assert_eq!(infos[1].ne, vec![64, 2]);
    for i in infos {
        assert_eq!(i.offset % 32, 0, "{}", i.name);
    }
    let ts = g.tensors().unwrap();
    assert_eq!(ts[0].shape, vec![2, 3]);
    assert_eq!(ts[0].dtype, DType::F32);
    assert_eq!(ts[0].bytes(), &data[0][..]);
    assert_eq!(ts[0].to_f32_vec(), vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
    assert_eq!(ts[1].dtype, DType::BF16);
    assert_eq!(ts[1].bytes(), &data[1][..]);
    assert_eq!(ts[1].get_f32(100), 100.0);
    assert_eq!(ts[2].dtype, DType::Q8_0);
    assert_eq!(ts[2].shape, vec![2, 32]);
    assert_eq!(ts[2].bytes(), &data[2][..]);
    assert!((ts[2].to_f32_vec()[5] + 25.0).abs() < 0.2);
    assert!(matches!(
        g.tensor("nope"),
        Err(LoadError::MissingTensor { .. })
    ));
}

/// A hand-built v2 file (the writer only writes v3) with an unsupported tensor type.
fn handmade(
    version: u32,
    tensors: &[(&str, &[u64], u32, u64)],
    data_len: usize,
    alignment: Option<u32>,
) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    b.extend_from_slice(&(alignment.is_some() as u64).to_le_bytes());
    if let Some(a) = alignment {
        put_str(&mut b, "general.alignment");
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&a.to_le_bytes());
    }
    for (name, ne, ty, off) in tensors {
        put_str(&mut b, name);
        b.extend_from_slice(&(ne.len() as u32).to_le_bytes());
        for d in *ne {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(&off.to_le_bytes());
    }
    let a = alignment.unwrap_or(32) as usize;
    while b.len() % a != 0 {
        b.push(0);
    }
    b.extend(std::iter::repeat_n(0u8, data_len));
    b
}

fn parse(bytes: Vec<u8>) -> Result<GgufFile> {
    GgufFile::from_storage(PathBuf::from("mem.gguf"), Arc::new(bytes))
}

#[test]
fn v2_file_with_unsupported_type_opens_and_lists() {
    // Q5_K (13): 256 values in 176 bytes; F32 [4]
    let b = handmade(
        2,
        &[("k5", &[256, 2], 13, 0), ("f", &[4], 0, 352)],
        352 + 16,
        None,
    );
    let g = parse(b).unwrap();
    assert_eq!(g.version, 2);
    assert_eq!(g.tensor_info("k5").unwrap().type_name(), "Q5_K");
    assert_eq!(g.tensor_info("k5").unwrap().shape(), vec![2, 256]);
    assert_eq!(g.tensor("f").unwrap().to_f32_vec(), vec![0.0; 4]);
    let e = g.tensor("k5").unwrap_err().to_string();
    assert!(
        e.contains("mem.gguf") && e.contains("k5") && e.contains("Q5_K"),
        "{e}"
    );
    assert!(g.tensors().is_err());
    // an unknown type id also lists, and errors only when asked for
    let g = parse(handmade(3, &[("x", &[8], 200, 0)], 0, None)).unwrap();
    assert!(g.tensor("x").unwrap_err().to_string().contains("type 200"));
}

#[test]
fn custom_alignment() {
    let p = tmp("align.gguf");
    let meta = vec![("general.alignment".to_string(), GgufValue::U32(64))];
    let a = f32_bytes(&[1.0, 2.0, 3.0]);
    let c = f32_bytes(&[4.0]);
    write_gguf(
        &p,
        &meta,
        &[
            GgufTensorOut {
                name: "a".into(),
                dtype: DType::F32,
                shape: vec![3],
                bytes: &a,
            },
            GgufTensorOut {
                name: "c".into(),
                dtype: DType::F32,
                shape: vec![1],
                bytes: &c,
            },
        ],
    )
    .unwrap();
    let g = GgufFile::open(&p).unwrap();
    assert_eq!(g.alignment, 64);
    assert_eq!(g.data_start % 64, 0);
    assert_eq!(g.tensor_info("c").unwrap().offset, 64);
    assert_eq!(g.tensor("c").unwrap().to_f32_vec(), vec![4.0]);
    // a bad alignment value is refused on read
    let e = parse(handmade(3, &[], 0, Some(3))).unwrap_err().to_string();
    assert!(e.contains("general.alignment"), "{e}");
}

fn err_of(bytes: Vec<u8>) -> String {
    match parse(bytes) {
        Ok(_) => panic!("parsed a broken file"),
        Err(e) => {
            let s = e.to_string();
            assert!(s.contains("mem.gguf"), "error does not name the file: {s}");
            s
        }
    }
}

#[test]
fn truncated_files_are_errors_at_every_cut() {
    let p = tmp("trunc.gguf");
    sample(&p);
    let full = std::fs::read(&p).unwrap();
    let g = parse(full.clone()).unwrap();
    let data_start = g.data_start;
    // every cut inside the header and metadata, and a few inside the data
    let mut cuts: Vec<usize> = (0..data_start).collect();
    let last = g.tensor_infos().last().unwrap();
    let data_end = data_start + (last.offset + last.nbytes.unwrap()) as usize;
    cuts.extend([data_start + 1, data_start + 30, data_end - 1]);
    // trailing padding after the last tensor is not needed
    assert!(parse(full[..data_end].to_vec()).is_ok());
    for cut in cuts {
        let e = match parse(full[..cut].to_vec()) {
            Ok(_) => panic!("cut at {cut} of {} parsed", full.len()),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("truncated")
                || e.contains("too short")
                || e.contains("remain")
                || e.contains("past the end"),
            "cut at {cut}: {e}"
        );
    }
    // on disk too
    let q = tmp("trunc2.gguf");
    std::fs::write(&q, &full[..data_end - 10]).unwrap();
    let e = GgufFile::open(&q).unwrap_err().to_string();
    assert!(
        e.contains("trunc2.gguf") && e.contains("past the end"),
        "{e}"
    );
    std::fs::write(&q, &full[..10]).unwrap();
    assert!(
        GgufFile::open(&q)
            .unwrap_err()
            .to_string()
            .contains("too short")
    );
}

#[test]
fn bad_magic_version_and_counts() {
    let good = handmade(3, &[("f", &[4], 0, 0)], 16, None);
    let mut b = good.clone();
    b[0] = b'X';
    assert!(err_of(b).contains("bad magic"));
    let mut b = good.clone();
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(err_of(b).contains("version 1"));
    let mut b = good.clone();
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(err_of(b).contains("unsupported GGUF version"));
    // absurd tensor count: must fail before allocating
    let mut b = good.clone();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(err_of(b).contains("tensor count"));
    let mut b = good.clone();
    b[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(err_of(b).contains("key-value count"));
    // absurd string length (the tensor name's)
    let mut b = good.clone();
    b[24..32].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    assert!(err_of(b).contains("length of name of tensor 0"));
}

fn meta_file(key: &str, ty: u32, value: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    put_str(&mut b, key);
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(value);
    b
}

#[test]
fn bad_metadata_values() {
    assert!(err_of(meta_file("k", 13, &[])).contains("unknown value type 13"));
    assert!(err_of(meta_file("k", 7, &[2])).contains("bool byte is 2"));
    // array of 2^40 u32 in a tiny file
    let mut v = 4u32.to_le_bytes().to_vec();
    v.extend_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(err_of(meta_file("k", 9, &v)).contains("element count of `k`"));
    // array with an unknown element type
    let mut v = 77u32.to_le_bytes().to_vec();
    v.extend_from_slice(&0u64.to_le_bytes());
    assert!(err_of(meta_file("k", 9, &v)).contains("element type 77"));
    // a string that is not UTF-8
    let mut v = 2u64.to_le_bytes().to_vec();
    v.extend_from_slice(&[0xff, 0xfe]);
    assert!(err_of(meta_file("k", 8, &v)).contains("UTF-8"));
    // deeply nested arrays
    let mut v = Vec::new();
    for _ in 0..20 {
        v.extend_from_slice(&9u32.to_le_bytes());
        v.extend_from_slice(&1u64.to_le_bytes());
    }
    v.extend_from_slice(&[0; 64]);
    assert!(err_of(meta_file("k", 9, &v)).contains("nested"));
    // duplicate keys
    let mut b = meta_file("k", 0, &[1]);
    b[16..24].copy_from_slice(&2u64.to_le_bytes());
    put_str(&mut b, "k");
    b.extend_from_slice(&0u32.to_le_bytes());
    b.push(2);
    assert!(err_of(b).contains("duplicate key"));
}

#[test]
fn bad_tensor_infos() {
    // offset past the end of the file
    let e = err_of(handmade(3, &[("f", &[4], 0, 64)], 16, None));
    assert!(e.contains("`f`") && e.contains("past the end"), "{e}");
    // offset + size overflows
    let e = err_of(handmade(3, &[("f", &[4], 0, u64::MAX - 31)], 16, None));
    assert!(e.contains("past the end"), "{e}");
    // misaligned offset
    let e = err_of(handmade(3, &[("f", &[1], 0, 4)], 64, None));
    assert!(e.contains("alignment"), "{e}");
    // rows that are not whole blocks
    let e = err_of(handmade(3, &[("q", &[40, 2], 8, 0)], 200, None));
    assert!(e.contains("whole 32-value blocks"), "{e}");
    // dimensions that overflow
    let e = err_of(handmade(3, &[("f", &[u64::MAX, 4], 0, 0)], 16, None));
    assert!(e.contains("overflow"), "{e}");
    // too many dimensions
    let e = err_of(handmade(3, &[("f", &[1, 1, 1, 1, 1], 0, 0)], 16, None));
    assert!(e.contains("5 dimensions"), "{e}");
    // duplicate tensor names
    let e = err_of(handmade(
        3,
        &[("f", &[4], 0, 0), ("f", &[4], 0, 0)],
        16,
        None,
    ));
    assert!(e.contains("duplicate tensor"), "{e}");
}

#[test]
fn writer_refuses_bad_input() {
    let p = tmp("bad-write.gguf");
    let four = f32_bytes(&[0.0; 4]);
    let t = |name: &str, dtype, shape: Vec<usize>, bytes| GgufTensorOut {
        name: name.into(),
        dtype,
        shape,
        bytes,
    };
    let e = write_gguf(&p, &[], &[t("x", DType::F32, vec![3], &four)]).unwrap_err();
    assert!(
        e.to_string().contains("4 bytes") || e.to_string().contains("16 bytes written"),
        "{e}"
    );
    let e = write_gguf(&p, &[], &[t("x", DType::F8E4M3, vec![4], &four[..4])]).unwrap_err();
    assert!(e.to_string().contains("cannot be stored"), "{e}");
    let e = write_gguf(&p, &[], &[t("x", DType::Q8_0, vec![2, 16], &four)]).unwrap_err();
    assert!(e.to_string().contains("whole 32-value"), "{e}");
    let e = write_gguf(
        &p,
        &[],
        &[
            t("x", DType::F32, vec![4], &four),
            t("x", DType::F32, vec![4], &four),
        ],
    )
    .unwrap_err();
    assert!(e.to_string().contains("duplicate"), "{e}");
    // an array holds one type: a mixed one cannot be built, so never written
    assert!(
        GgufValue::array(GgufType::I32, vec![GgufValue::I32(1), GgufValue::U8(1)])
            .unwrap_err()
            .contains("array of I32 cannot hold element 1, a U8")
    );
    let dup = vec![
        ("k".to_string(), GgufValue::U8(1)),
        ("k".to_string(), GgufValue::U8(2)),
    ];
    assert!(
        write_gguf(&p, &dup, &[])
            .unwrap_err()
            .to_string()
            .contains("duplicate key")
    );
}

#[test]
fn magic_sniffing() {
    let p = tmp("sniff.gguf");
    sample(&p);
    assert!(is_gguf(&p));
    let q = tmp("sniff.txt");
    std::fs::write(&q, b"hello").unwrap();
    assert!(!is_gguf(&q));
    assert!(!is_gguf(&tmp("does-not-exist")));
}
