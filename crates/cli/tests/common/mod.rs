//! Helpers shared by the CLI integration tests: run the `unlearnrec` binary and check its outcome.
#![allow(dead_code)] // each test binary uses a subset

use std::path::Path;
use std::process::{Command, Output};

/// Runs `unlearnrec args…`.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_unlearnrec")).args(args).output().expect("runs")
}

/// Runs and asserts success; returns (stdout, stderr).
#[track_caller]
pub fn ok_with_stderr(args: &[&str]) -> (String, String) {
    let out = run(args);
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
    assert!(out.status.success(), "unlearnrec {args:?} failed: {stderr}\n{stdout}");
    (stdout, stderr)
}

/// Runs and asserts success; returns stdout.
#[track_caller]
pub fn ok(args: &[&str]) -> String {
    ok_with_stderr(args).0
}

/// Runs and asserts exit code 2, every needle in stderr and no panic; returns stderr.
#[track_caller]
pub fn fails_with_all(args: &[&str], needles: &[&str]) -> String {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "unlearnrec {args:?} should fail with 2: {err}");
    for needle in needles {
        assert!(err.contains(needle), "unlearnrec {args:?}: expected {needle:?} in {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// [`fails_with_all`] with one needle.
#[track_caller]
pub fn fails(args: &[&str], needle: &str) -> String {
    fails_with_all(args, &[needle])
}

/// A path as a command-line argument.
pub fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}
