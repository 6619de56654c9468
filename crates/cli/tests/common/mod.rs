//! What the binary's end-to-end tests share: running `deeprust`, and judging its exit.
#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn golden(name: &str) -> PathBuf {
    root().join("tests/golden").join(name)
}

pub fn deeprust(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deeprust"))
        .args(args)
        .output()
        .unwrap()
}

/// Stdout of a successful run.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "deeprust failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A clean failure: exit status 1 or 2 (never a panic's 101), with `mention` in stderr.
pub fn fails(out: &Output, mention: &str) {
    let code = out.status.code();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(code, Some(1) | Some(2)),
        "exit {code:?}, stderr: {err}"
    );
    assert!(
        err.contains(mention),
        "stderr `{err}` does not mention `{mention}`"
    );
}
