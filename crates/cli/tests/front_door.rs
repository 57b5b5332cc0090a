//! What a first-time user hit (the front-door review): one test per defect, on small generated data.

mod common;

use common::{fails, fails_with_all, ok, ok_with_stderr, p, run};
use std::path::{Path, PathBuf};

/// A trained model, an unlearner and a users request on a small synthetic dataset.
struct Trained {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Trained {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let s = |x: &Path| x.to_str().unwrap().to_string();
        let (data, lg, un) = (s(&root.join("data")), s(&root.join("lg.safetensors")), s(&root.join("un.safetensors")));
        ok(&["-q", "data", "synth", "--out", &data, "--users", "200", "--items", "150", "--interactions", "5000"]);
        ok(&["-q", "train", "--data", &data, "--epochs", "2", "--dim", "16", "--batch-size", "512", "--out", &lg]);
        ok(&["-q", "pretrain", "--model", &lg, "--data", &data, "--epochs", "1", "--max-steps", "3", "--out", &un]);
        let req = s(&root.join("req.csv"));
        ok(&["-q", "request", "make", "--data", &data, "--protocol", "users", "--fraction", "0.01", "--out", &req]);
        Self { _dir: dir, root }
    }
    fn path(&self, name: &str) -> String {
        p(&self.root.join(name)).to_string()
    }
    /// `unlearn` of the users request with the given extra arguments.
    fn unlearn(&self, out: &str, extra: &[&str]) -> std::process::Output {
        let (lg, un, data, req) =
            (self.path("lg.safetensors"), self.path("un.safetensors"), self.path("data"), self.path("req.csv"));
        let mut args = vec!["-q", "unlearn", "--model", &lg, "--unlearner", &un, "--data", &data, "--request", &req];
        args.extend_from_slice(&["--finetune-epochs", "1", "--out", out]);
        args.extend_from_slice(extra);
        run(&args)
    }
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// Defect 1: checkpoint, receipt and remaining data land together or not at all.
#[test]
fn unlearn_outputs_land_together_or_not_at_all() {
    let t = Trained::new();
    let out = t.path("forgot.safetensors");
    for (flag, bad) in [
        ("--receipt", "/nonexistent/dir/r.json".to_string()),
        ("--receipt", t.path("")),
        ("--write-data", t.path("lg.safetensors")),
    ] {
        let o = t.unlearn(&out, &[flag, &bad]);
        assert_eq!(o.status.code(), Some(2), "{flag} {bad}: {}", stderr(&o));
        assert!(stderr(&o).contains(flag), "{}", stderr(&o));
        assert!(!Path::new(&out).exists(), "{flag} {bad}: a checkpoint was written without its companions");
    }
    let (receipt, rest) = (t.path("r.json"), t.path("rest"));
    let o = t.unlearn(&out, &["--receipt", &receipt, "--write-data", &rest]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(Path::new(&out).exists() && Path::new(&receipt).exists() && Path::new(&rest).join("train.txt").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&t.root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".unlearnrec-"))
        .collect();
    assert!(leftovers.is_empty(), "temporaries left behind: {leftovers:?}");
}

// Defect 2: output locations are checked before any work.
#[test]
fn output_paths_are_checked_before_training() {
    let t = Trained::new();
    let data = t.path("data");
    for bad in ["/nonexistent/dir/o.safetensors".to_string(), t.path("")] {
        // Training would print per-validation lines (eval every epoch, not quiet): none may appear.
        let o = run(&["train", "--data", &data, "--epochs", "3", "--eval-every", "1", "--out", &bad]);
        assert_eq!(o.status.code(), Some(2));
        let err = stderr(&o);
        assert!(err.contains("--out") && !err.contains("epoch"), "{err}");
    }
    let lg = t.path("lg.safetensors");
    fails(&["pretrain", "--model", &lg, "--data", &data, "--out", "/nonexistent/u.safetensors"], "does not exist");
    fails(&["export", "--model", &lg, "--out", "/nonexistent/e.safetensors"], "does not exist");
    fails(
        &[
            "request",
            "make",
            "--data",
            &data,
            "--protocol",
            "random",
            "--fraction",
            "0.01",
            "--out",
            "/nonexistent/r.csv",
        ],
        "does not exist",
    );
    fails(&["data", "convert", &data, "--to", "csv", "--out", &lg], "is a file");
}

// Defect 3: `audit` has the `--skip-missing` its error message suggests.
#[test]
fn audit_accepts_skip_missing() {
    let t = Trained::new();
    let forgot = t.path("forgot.safetensors");
    assert!(t.unlearn(&forgot, &[]).status.success());
    let req = std::fs::read_to_string(t.path("req.csv")).unwrap();
    // A pair that was never an interaction: an item the first user of the request never had.
    let first = req.lines().nth(1).unwrap().split(',').next().unwrap().to_string();
    let items: Vec<&str> = req
        .lines()
        .skip(1)
        .filter(|l| l.starts_with(&format!("{first},")))
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    let stranger = (0..150).map(|i| i.to_string()).find(|i| !items.contains(&i.as_str())).unwrap();
    let bad = t.path("bad.csv");
    std::fs::write(&bad, format!("{req}{first},{stranger}\n")).unwrap();
    let data = t.path("data");
    let err = fails(&["audit", "--model", &forgot, "--data", &data, "--request", &bad], "--skip-missing");
    assert!(err.contains("not training interactions"), "{err}");
    let (out, err) =
        ok_with_stderr(&["audit", "--model", &forgot, "--data", &data, "--request", &bad, "--skip-missing"]);
    assert!(out.contains("audit of") && err.contains("skipped 1 pair"), "{out}\n{err}");
}

// Defect 4: an OS error names the path once and the cause once.
#[test]
fn os_errors_say_the_path_and_the_cause_once() {
    let t = Trained::new();
    let (data, lg) = (t.path("data"), t.path("lg.safetensors"));
    let nope = t.path("nope");
    let cases: Vec<Vec<&str>> = vec![
        vec!["eval", "--model", &nope, "--data", &data],
        vec!["eval", "--model", &lg, "--data", &nope],
        vec!["unlearn", "--model", &lg, "--data", &data, "--request", &nope, "--method", "retrain", "--out", "x"],
        vec!["train", "--data", &data, "--config", &nope, "--out", "x"],
    ];
    for args in cases {
        let err = fails(&args, "No such file");
        assert_eq!(err.matches("No such file").count(), 1, "{err}");
        assert_eq!(err.matches(nope.as_str()).count(), 1, "{err}");
    }
    let dir = t.path("data");
    let err = fails(&["eval", "--model", &dir, "--data", &data], "Is a directory");
    assert_eq!(err.matches("Is a directory").count(), 1, "{err}");
}

// Defect 5: an empty dataset directory: one message, no placeholder.
#[test]
fn an_empty_dataset_directory_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails(&["data", "stats", p(dir.path())], "train.txt");
    assert_eq!(err.matches("train.txt").count(), 1, "{err}");
    assert!(!err.contains("{name}"), "{err}");
}

// Defect 6: a truncated checkpoint says "truncated", and whole-file errors carry no `:0`.
#[test]
fn a_truncated_checkpoint_says_truncated() {
    let t = Trained::new();
    let bytes = std::fs::read(t.path("lg.safetensors")).unwrap();
    let half = t.path("half.safetensors");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let err = fails(&["eval", "--model", &half, "--data", &t.path("data")], "truncated");
    assert!(!err.contains(":0"), "{err}");
    let err = fails(
        &[
            "unlearn",
            "--method",
            "sisa",
            "--model",
            &t.path("lg.safetensors"),
            "--data",
            &t.path("data"),
            "--user",
            "0",
            "--out",
            &t.path("s.safetensors"),
        ],
        "not a sharded checkpoint",
    );
    assert!(!err.contains(":0"), "{err}");
}

// Defects 7, 8 and 9: zero epochs are refused; a diverged run writes nothing and says so once; negative
// numbers reach the range check.
#[test]
fn zero_epochs_divergence_and_negative_numbers() {
    let t = Trained::new();
    let (data, out) = (t.path("data"), t.path("o.safetensors"));
    fails(&["train", "--data", &data, "--epochs", "0", "--out", &out], "train.epochs");
    let err = fails(&["train", "--data", &data, "--epochs", "2", "--lr", "1e30", "--out", &out], "diverged");
    assert!(!err.contains("trained") && err.contains("nothing written"), "{err}");
    assert!(!Path::new(&out).exists());
    fails(&["train", "--data", &data, "--lr", "-1", "--out", &out], "train.lr");
    fails(
        &["pretrain", "--model", &t.path("lg.safetensors"), "--data", &data, "--drop-rate", "-0.5", "--out", &out],
        "drop_rate",
    );
}

// Defect 10: a LightGCN file given directly gets a hint.
#[test]
fn a_lightgcn_file_read_as_a_table_gets_a_hint() {
    let t = Trained::new();
    let train = Path::new(&t.path("data")).join("train.txt");
    fails(&["data", "stats", p(&train)], "--format lightgcn");
    let out = ok(&["data", "stats", p(&train), "--format", "lightgcn", "--json"]);
    assert!(out.contains("\"users\""), "{out}");
}

// Defects 11, 12 and 13: readable names and plurals; `unlearn` and `audit` agree on the forgetting
// figures; the receipt explains its edge counts.
#[test]
fn unlearn_and_audit_agree_and_speak_plainly() {
    let t = Trained::new();
    let (forgot, receipt) = (t.path("forgot.safetensors"), t.path("r.json"));
    let o = run(&[
        "unlearn",
        "--model",
        &t.path("lg.safetensors"),
        "--unlearner",
        &t.path("un.safetensors"),
        "--data",
        &t.path("data"),
        "--user",
        "3",
        "--finetune-epochs",
        "1",
        "--out",
        &forgot,
        "--receipt",
        &receipt,
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("with UnlearnRec") && err.contains("(1 user,"), "{err}");
    let eval = ok(&["eval", "--model", &forgot, "--data", &t.path("data")]);
    assert!(!eval.contains("All") && !eval.contains("MinK"), "{eval}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&receipt).unwrap()).unwrap();
    let (edges, train, valid) =
        (r["edges"].as_u64().unwrap(), r["train_edges"].as_u64().unwrap(), r["valid_edges"].as_u64().unwrap());
    assert_eq!(edges, train + valid);
    assert_eq!(r["forgetting"]["n"].as_u64().unwrap(), train);
    // The same request as a file, audited against the original: the same figures.
    let req = t.path("user3.csv");
    let rows: String = std::fs::read_to_string(Path::new(&t.path("data")).join("train.txt"))
        .unwrap()
        .lines()
        .chain(std::fs::read_to_string(Path::new(&t.path("data")).join("valid.txt")).unwrap().lines())
        .filter_map(|l| l.strip_prefix("3 "))
        .flat_map(|items| items.split_whitespace().map(|i| format!("3,{i}\n")).collect::<Vec<_>>())
        .collect();
    std::fs::write(&req, format!("user,item\n{rows}")).unwrap();
    let a = ok(&[
        "audit",
        "--model",
        &forgot,
        "--data",
        &t.path("data"),
        "--request",
        &req,
        "--original",
        &t.path("lg.safetensors"),
        "--json",
    ]);
    let a: serde_json::Value = serde_json::from_str(&a).unwrap();
    for k in ["gap", "mi_bf", "mi_ng", "n"] {
        let (x, y) = (a["forgetting"][k].as_f64().unwrap(), r["forgetting"][k].as_f64().unwrap());
        assert!((x - y).abs() < 1e-9, "{k}: audit {x} vs unlearn {y}");
    }
}

// Defect 14: defaults are shown, and the reference schedule is a named preset.
#[test]
fn help_shows_defaults_and_the_reference_preset() {
    let help = ok(&["train", "--help"]);
    for needle in ["[default: 200]", "[default: 2048]", "[default: 0.005]", "reference"] {
        assert!(help.contains(needle), "train --help lacks {needle}: {help}");
    }
    let help = ok(&["pretrain", "--help"]);
    assert!(help.contains("[default: 10]") && help.contains("reference"), "{help}");
    fails_with_all(
        &["train", "--data", "synth", "--preset", "reference", "--config", "x.toml", "--out", "x"],
        &["cannot be used with"],
    );
}

// Defect 15: `data convert` reports, the audit of a users request leaves erased users out of the
// agreement, and a run without a terminal logs its progress.
#[test]
fn convert_reports_audit_agreement_skips_erased_users_and_progress_is_logged() {
    let t = Trained::new();
    let (_, err) = ok_with_stderr(&["data", "convert", &t.path("data"), "--to", "tsv", "--out", &t.path("tsv")]);
    assert!(err.contains("converted") && err.contains("TSV"), "{err}");
    let (forgot, retrained) = (t.path("forgot.safetensors"), t.path("retrained.safetensors"));
    assert!(t.unlearn(&forgot, &[]).status.success());
    ok(&[
        "-q",
        "unlearn",
        "--model",
        &t.path("lg.safetensors"),
        "--method",
        "retrain",
        "--data",
        &t.path("data"),
        "--request",
        &t.path("req.csv"),
        "--out",
        &retrained,
    ]);
    let out = ok(&[
        "audit",
        "--model",
        &forgot,
        "--data",
        &t.path("data"),
        "--request",
        &t.path("req.csv"),
        "--reference",
        &retrained,
    ]);
    assert!(out.contains("were erased"), "{out}");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_unlearnrec"))
        .args(["train", "--data", &t.path("data"), "--epochs", "2", "--out", &t.path("p.safetensors")])
        .env("UNLEARNREC_LOG_EVERY_SECS", "0")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(stderr(&o).contains("progress: epoch 1/2"), "{}", stderr(&o));
}
