//! End-to-end runs of the baseline unlearning methods (`unlearn --method finetune | gradient-ascent |
//! influence | sisa`) on small generated data in a temporary directory.

mod common;

use common::{fails, ok, ok_with_stderr, p};
use std::path::{Path, PathBuf};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let data = root.join("data");
        ok(&["data", "synth", "--out", p(&data), "--users", "200", "--items", "150", "--interactions", "5000"]);
        Self { _dir: dir, root }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Trains a tiny LightGCN, with extra flags (e.g. `--shards 2`).
    fn train(&self, out: &str, extra: &[&str]) -> PathBuf {
        let ckpt = self.path(out);
        let data = self.path("data");
        let mut args = vec!["-q", "train", "--data", p(&data), "--model", "lightgcn", "--dim", "8", "--layers", "2"];
        args.extend(["--epochs", "3", "--batch-size", "512", "--eval-every", "3", "--out", p(&ckpt)]);
        args.extend(extra);
        ok(&args);
        ckpt
    }

    /// Forgets user 7 with `method` and returns the receipt.
    fn forget_user_7(&self, ckpt: &Path, method: &str) -> (PathBuf, serde_json::Value) {
        let out = self.path(&format!("{method}.safetensors"));
        let receipt = self.path(&format!("{method}.json"));
        let data = self.path("data");
        ok(&[
            "-q",
            "unlearn",
            "--model",
            p(ckpt),
            "--data",
            p(&data),
            "--user",
            "7",
            "--method",
            method,
            "--steps",
            "10",
            "--out",
            p(&out),
            "--receipt",
            p(&receipt),
        ]);
        let r = serde_json::from_slice(&std::fs::read(&receipt).expect("receipt written")).expect("json");
        (out, r)
    }
}

#[test]
fn every_baseline_forgets_a_user_and_writes_a_receipt() {
    let f = Fixture::new();
    let data = f.path("data");
    let plain = f.train("lg.safetensors", &[]);
    let sharded = f.train("sharded.safetensors", &["--shards", "2", "--partition", "user"]);
    for (method, ckpt, name) in [
        ("finetune", &plain, "finetune"),
        ("gradient-ascent", &plain, "gradient_ascent"),
        ("influence", &plain, "influence"),
        ("sisa", &sharded, "sisa"),
    ] {
        let (out, r) = f.forget_user_7(ckpt, method);
        assert_eq!(r["method"], name, "{method}: {r}");
        assert!(r["edges"].as_u64().unwrap() > 0, "{method}");
        assert_eq!(r["request_sha256"].as_str().unwrap().len(), 64);
        assert_ne!(r["checkpoint_before_sha256"], r["checkpoint_after_sha256"]);
        assert!(r["forgetting"]["removed"]["after"].as_f64().unwrap().is_finite(), "{method}: {r}");
        // The forgotten user is erased; the result evaluates and serves like any checkpoint.
        fails(&["recommend", "--model", p(&out), "--user", "7"], "erased");
        ok(&["recommend", "--model", p(&out), "--user", "8", "-k", "5"]);
        let ev: serde_json::Value =
            serde_json::from_str(&ok(&["eval", "--model", p(&out), "--data", p(&data), "--json"])).unwrap();
        assert!(ev["recall@20"].as_f64().unwrap() > 0.0, "{method}: {ev}");
    }
    assert!(f.path("influence.json").exists());
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(f.path("influence.json")).unwrap()).unwrap();
    assert!(r["solver_residual"].as_f64().unwrap() < 1e-2, "{r}");
    // A sharded checkpoint unlearns again in sequence; the alias `receraser` names the same method.
    let again = f.path("sisa2.safetensors");
    ok(&[
        "-q",
        "unlearn",
        "--model",
        p(&f.path("sisa.safetensors")),
        "--data",
        p(&data),
        "--user",
        "8",
        "--method",
        "receraser",
        "--out",
        p(&again),
    ]);
    fails(&["recommend", "--model", p(&again), "--user", "8"], "erased");
}

#[test]
fn unknown_methods_and_unsharded_checkpoints_are_refused() {
    let f = Fixture::new();
    let data = f.path("data");
    let plain = f.train("lg.safetensors", &[]);
    let out = f.path("x.safetensors");
    let base = ["unlearn", "--model", p(&plain), "--data", p(&data), "--user", "7", "--out", p(&out)];
    fails(&[&base[..], &["--method", "bogus"]].concat(), "bogus");
    fails(&[&base[..], &["--method", "sisa"]].concat(), "sharded");
    assert!(!out.exists(), "no output on failure");
    fails(&["train", "--data", p(&data), "--partition", "user", "--out", p(&out)], "--shards");
    let own_random = ["--shards", "2", "--partition", "random", "--aggregation", "own"];
    fails(&[&["train", "--data", p(&data), "--out", p(&out)][..], &own_random].concat(), "user partition");
    assert!(!out.exists(), "no output on failure");
}

#[test]
fn receraser_attention_aggregation_trains_serves_and_unlearns() {
    let f = Fixture::new();
    let data = f.path("data");
    let ckpt = f.path("att.safetensors");
    let (_, err) = ok_with_stderr(&[
        "train",
        "--data",
        p(&data),
        "--model",
        "mf",
        "--dim",
        "8",
        "--epochs",
        "3",
        "--batch-size",
        "512",
        "--shards",
        "3",
        "--partition",
        "random",
        "--aggregation",
        "attention",
        "--attention-epochs",
        "2",
        "--out",
        p(&ckpt),
    ]);
    assert!(err.contains("attention aggregation"), "{err}");
    assert!(err.contains("mean user weight per shard ["), "{err}");
    // Served as one MF model of the shards' dimension, exported as such.
    let emb = f.path("emb.safetensors");
    ok(&["export", "--model", p(&ckpt), "--out", p(&emb)]);
    let bytes = std::fs::read(&emb).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("user_embeddings").unwrap().shape()[1], 8);
    let (out, r) = f.forget_user_7(&ckpt, "sisa");
    assert_eq!(r["method"], "sisa", "{r}");
    fails(&["recommend", "--model", p(&out), "--user", "7"], "erased");
    let ev: serde_json::Value =
        serde_json::from_str(&ok(&["eval", "--model", p(&out), "--data", p(&data), "--json"])).unwrap();
    assert!(ev["recall@20"].as_f64().unwrap() > 0.0, "{ev}");
}
