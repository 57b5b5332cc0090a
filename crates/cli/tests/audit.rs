//! End-to-end runs of `unlearnrec request make` and `unlearnrec audit` on small generated data.

mod common;

use std::path::PathBuf;

use common::{fails_with_all as fails, ok_with_stderr as ok, p};

/// A temporary directory with a synthetic dataset `data` (seed 3).
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = Self { root: dir.path().to_path_buf(), _dir: dir };
        f.synth("data", "3");
        f
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn synth(&self, name: &str, seed: &str) {
        let out = self.path(name);
        let args =
            ["data", "synth", "--out", p(&out), "--users", "200", "--items", "150", "--interactions", "5000", "--seed"];
        ok(&[&args[..], &[seed]].concat());
    }

    fn train(&self, data: &str, out: &str, seed: &str) {
        let (data, out) = (self.path(data), self.path(out));
        ok(&[
            "-q",
            "train",
            "--data",
            p(&data),
            "--model",
            "lightgcn",
            "--dim",
            "16",
            "--epochs",
            "2",
            "--batch-size",
            "512",
            "--seed",
            seed,
            "--out",
            p(&out),
        ]);
    }
}

#[test]
fn request_make_then_audit_with_reference_and_original() {
    let f = Fixture::new();
    f.train("data", "lg.safetensors", "1");
    let (data, ckpt, req) = (f.path("data"), f.path("lg.safetensors"), f.path("req.csv"));
    let make = ["request", "make", "--data", p(&data), "--protocol", "core", "--fraction", "0.05", "--seed", "4"];
    let (_, summary) = ok(&[&make[..], &["--out", p(&req)]].concat());
    assert!(summary.contains("interactions") && summary.contains("users") && summary.contains("items"), "{summary}");
    let text = std::fs::read_to_string(&req).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("user,item"));
    let n = lines.clone().count();
    assert!(n > 0 && lines.all(|l| l.split(',').count() == 2));
    // Deterministic for the seed.
    let again = f.path("req2.csv");
    ok(&[&make[..], &["--out", p(&again)]].concat());
    assert_eq!(std::fs::read_to_string(&again).unwrap(), text);

    // The exact reference: retrain without the request (with `--seed`, another retrain: the noise floor).
    let retrained = f.path("retrained.safetensors");
    let retrain = |out: &std::path::Path, seed: &[&str]| {
        let base =
            ["-q", "unlearn", "--method", "retrain", "--model", p(&ckpt), "--data", p(&data), "--request", p(&req)];
        ok(&[&base[..], seed, &["--out", p(out)]].concat());
    };
    // `audit --json` of a model against the retrained reference and the original.
    let audit_json = |model: &std::path::Path, extra: &[&str]| -> serde_json::Value {
        let base = ["audit", "--model", p(model), "--data", p(&data), "--request", p(&req)];
        let against = ["--reference", p(&retrained), "--original", p(&ckpt), "--json"];
        let (json, _) = ok(&[&base[..], &against, extra].concat());
        serde_json::from_str(&json).expect("json")
    };
    retrain(&retrained, &[]);
    let v = audit_json(&retrained, &["--seed", "2"]);
    assert_eq!(v["removed"].as_u64(), Some(n as u64));
    for k in ["mean_rank", "median_rank", "top_k_fraction", "count"] {
        assert!(v["rank"][k].is_number(), "rank.{k}: {v}");
    }
    for k in ["auc", "removed_member_fraction", "non_member_fraction"] {
        let x = v["mia"][k].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&x), "mia.{k} = {x}");
    }
    assert!(v["forgetting"]["removed"]["before"].is_number(), "{v}");
    let agreement = &v["reference"]["agreement"];
    assert_eq!(agreement["top_k_overlap"].as_f64(), Some(1.0), "{v}");
    assert_eq!(agreement["kl"].as_f64(), Some(0.0), "{v}");

    // A second exact retrain with another seed: its agreement with the first is the noise floor.
    let retrained2 = f.path("retrained2.safetensors");
    retrain(&retrained2, &["--seed", "2"]);
    let v = audit_json(&retrained2, &[]);
    let floor = v["reference"]["agreement"]["top_k_overlap"].as_f64().unwrap();
    assert!(floor > 0.0 && floor < 1.0, "{v}");
    let names: Vec<&str> =
        v["mia"]["attackers"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["logistic", "gbt", "logistic+difference", "gbt+difference"], "{v}");
    fails(
        &[
            "unlearn",
            "--model",
            p(&ckpt),
            "--data",
            p(&data),
            "--request",
            p(&req),
            "--seed",
            "2",
            "--out",
            p(&f.path("x")),
        ],
        &["--seed sets the training seed of --method retrain only"],
    );

    // The original model against the retrained one, as a table.
    let (table, _) =
        ok(&["audit", "--model", p(&ckpt), "--data", p(&data), "--request", p(&req), "--reference", p(&retrained)]);
    assert!(table.contains("| audited |") && table.contains("| reference |") && table.contains("overlap"), "{table}");
}

#[test]
fn a_reference_for_another_dataset_is_refused() {
    let f = Fixture::new();
    f.train("data", "lg.safetensors", "1");
    f.synth("other", "9");
    f.train("other", "other.safetensors", "1");
    let (data, req) = (f.path("data"), f.path("req.csv"));
    ok(&["request", "make", "--data", p(&data), "--protocol", "random", "--fraction", "0.02", "--out", p(&req)]);
    let ckpt = f.path("lg.safetensors");
    let other = f.path("other.safetensors");
    fails(
        &["audit", "--model", p(&ckpt), "--data", p(&data), "--request", p(&req), "--reference", p(&other)],
        &["reference checkpoint", "checkpoint mismatch"],
    );
}

#[test]
fn bad_protocols_and_fractions_fail_without_writing() {
    let f = Fixture::new();
    let (data, out) = (f.path("data"), f.path("req.csv"));
    let base = ["request", "make", "--data", p(&data), "--out", p(&out)];
    fails(&[&base[..], &["--protocol", "hubs", "--fraction", "0.1"]].concat(), &["hubs", "popular", "tail"]);
    assert!(!out.exists());
    fails(&[&base[..], &["--protocol", "users", "--fraction", "1.5"]].concat(), &["fraction", "(0, 1)"]);
    assert!(!out.exists());
}
