//! End-to-end runs of the `unlearnrec` binary on small generated data in a temporary directory.

mod common;

use common::{fails, ok, p, run};
use std::path::{Path, PathBuf};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        ok(&[
            "data",
            "synth",
            "--out",
            p(&root.join("data")),
            "--users",
            "200",
            "--items",
            "150",
            "--interactions",
            "5000",
            "--seed",
            "3",
        ]);
        Self { _dir: dir, root }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

#[test]
fn data_stats_json_has_the_documented_keys() {
    let f = Fixture::new();
    let out = ok(&["data", "stats", p(&f.path("data")), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["users"], 200);
    assert_eq!(v["items"], 150);
    let total = v["train"].as_u64().unwrap() + v["valid"].as_u64().unwrap() + v["test"].as_u64().unwrap();
    assert_eq!(total, 5000);
}

#[test]
fn convert_round_trips_through_every_format() {
    let f = Fixture::new();
    let base = ok(&["data", "stats", p(&f.path("data")), "--json"]);
    for fmt in ["csv", "tsv", "recbole", "lightgcn"] {
        let out = f.path(&format!("conv-{fmt}"));
        ok(&["data", "convert", p(&f.path("data")), "--to", fmt, "--out", p(&out)]);
        let again = ok(&["data", "stats", p(&out), "--json"]);
        let (a, b): (serde_json::Value, serde_json::Value) =
            (serde_json::from_str(&base).unwrap(), serde_json::from_str(&again).unwrap());
        for k in ["train", "valid", "test"] {
            assert_eq!(a[k], b[k], "{fmt}: {k}");
        }
    }
}

#[test]
fn bad_inputs_give_one_line_errors_and_exit_2() {
    let f = Fixture::new();
    let bad = f.path("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("train.txt"), "0 1 2\n1 x 3\n").unwrap();
    std::fs::write(bad.join("test.txt"), "0 3\n").unwrap();
    fails(&["data", "stats", p(&bad)], "train.txt:2");
    fails(&["data", "stats", p(&f.path("missing"))], "missing");
    fails(&["train", "--data", p(&f.path("data")), "--model", "gcn", "--out", p(&f.path("m"))], "gcn");
    let out = run(&["data", "stats"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn train_eval_export_recommend_unlearn_end_to_end() {
    let f = Fixture::new();
    let data = f.path("data");
    let ckpt = f.path("lg.safetensors");
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
        "4",
        "--batch-size",
        "512",
        "--eval-every",
        "2",
        "--out",
        p(&ckpt),
    ]);
    let ev: serde_json::Value =
        serde_json::from_str(&ok(&["eval", "--model", p(&ckpt), "--data", p(&data), "--json"])).unwrap();
    for k in ["recall@20", "ndcg@20", "precision@10", "hit@50", "mrr@20"] {
        let v = ev[k].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    // Export: Python-readable tensors and ids.
    let exp = f.path("emb.safetensors");
    ok(&["export", "--model", p(&ckpt), "--out", p(&exp)]);
    let bytes = std::fs::read(&exp).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["user_embeddings"]["shape"], serde_json::json!([200, 16]));
    assert_eq!(header["item_embeddings"]["dtype"], "F32");
    let ids: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.path("emb.safetensors.ids.json")).unwrap()).unwrap();
    assert_eq!(ids["items"].as_array().unwrap().len(), 150);
    // Recommend excludes seen items.
    let rec: serde_json::Value =
        serde_json::from_str(&ok(&["recommend", "--model", p(&ckpt), "--user", "7", "-k", "10", "--json"])).unwrap();
    let items: Vec<String> =
        rec["items"].as_array().unwrap().iter().map(|x| x["item"].as_str().unwrap().to_string()).collect();
    assert_eq!(items.len(), 10);
    let train = std::fs::read_to_string(data.join("train.txt")).unwrap();
    let seen: Vec<&str> =
        train.lines().find(|l| l.split_whitespace().next() == Some("7")).unwrap().split_whitespace().skip(1).collect();
    assert!(items.iter().all(|i| !seen.contains(&i.as_str())), "recommended a seen item");
    fails(&["recommend", "--model", p(&ckpt), "--user", "nobody"], "nobody");
    // Pre-train the encoder briefly and unlearn one user's interactions; then the user's history is gone.
    let un = f.path("un.safetensors");
    ok(&[
        "-q",
        "pretrain",
        "--model",
        p(&ckpt),
        "--data",
        p(&data),
        "--epochs",
        "2",
        "--batch-size",
        "512",
        "--out",
        p(&un),
    ]);
    let out = f.path("lg2.safetensors");
    let receipt = f.path("receipt.json");
    let rest = f.path("rest");
    ok(&[
        "-q",
        "unlearn",
        "--model",
        p(&ckpt),
        "--unlearner",
        p(&un),
        "--data",
        p(&data),
        "--user",
        "7",
        "--out",
        p(&out),
        "--receipt",
        p(&receipt),
        "--write-data",
        p(&rest),
    ]);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    let valid = std::fs::read_to_string(data.join("valid.txt")).unwrap();
    let n_valid = valid
        .lines()
        .find(|l| l.split_whitespace().next() == Some("7"))
        .map_or(0, |l| l.split_whitespace().count() - 1);
    assert_eq!(r["edges"].as_u64().unwrap() as usize, seen.len() + n_valid, "train and validation interactions");
    assert_eq!(r["request_sha256"].as_str().unwrap().len(), 64);
    // The request id is the request's as asked: the service's id of `{"user": "7"}`.
    let id = unlearnrec_core::unlearn::request::Part::User { user: "7".into() }.id();
    assert_eq!(r["request_id"], id.as_str());
    assert_ne!(r["checkpoint_before_sha256"], r["checkpoint_after_sha256"]);
    let rest_train = std::fs::read_to_string(rest.join("train.txt")).unwrap();
    let line = rest_train.lines().find(|l| l.split_whitespace().next() == Some("7")).unwrap_or("7");
    assert_eq!(line.split_whitespace().count(), 1, "user 7 still has training interactions: {line}");
    // The erased user gets no recommendations; another user still does, and requests apply in sequence.
    fails(&["recommend", "--model", p(&out), "--user", "7"], "erased");
    ok(&["recommend", "--model", p(&out), "--user", "8"]);
    let out2 = f.path("lg3.safetensors");
    ok(&[
        "-q",
        "unlearn",
        "--model",
        p(&out),
        "--unlearner",
        p(&un),
        "--data",
        p(&data),
        "--user",
        "8",
        "--out",
        p(&out2),
    ]);
    fails(&["recommend", "--model", p(&out2), "--user", "8"], "erased");
    let ev2: serde_json::Value =
        serde_json::from_str(&ok(&["eval", "--model", p(&out2), "--data", p(&data), "--json"])).unwrap();
    assert!(ev2["recall@20"].as_f64().unwrap() > 0.0);
    // The fast path gives another model for the same chained request, and is refused beside --config.
    let fast = f.path("lg3-fast.safetensors");
    let args = [
        "-q",
        "unlearn",
        "--model",
        p(&out),
        "--unlearner",
        p(&un),
        "--data",
        p(&data),
        "--user",
        "8",
        "--fast",
        "--out",
        p(&fast),
    ];
    ok(&args);
    assert_ne!(std::fs::read(&fast).unwrap(), std::fs::read(&out2).unwrap());
    let none = f.path("none.toml");
    let with_config: Vec<&str> = args.iter().copied().chain(["--config", p(&none)]).collect();
    fails(&with_config, "--config");
    // Unlearning the same user again: nothing left to forget.
    fails(
        &[
            "unlearn",
            "--model",
            p(&out),
            "--unlearner",
            p(&un),
            "--data",
            p(&data),
            "--user",
            "7",
            "--out",
            p(&f.path("x")),
        ],
        "empty",
    );
    assert!(!f.path("x").exists(), "no output on failure");
    // A request pair that is not an interaction is refused, with the pair named.
    let req = f.path("req.csv");
    std::fs::write(&req, format!("user,item\n7,{}\n", seen[0])).unwrap();
    fails(
        &[
            "unlearn",
            "--model",
            p(&out),
            "--unlearner",
            p(&un),
            "--data",
            p(&data),
            "--request",
            p(&req),
            "--out",
            p(&f.path("y")),
        ],
        "not training interactions",
    );
    assert!(!f.path("y").exists());
}

#[test]
fn poison_injects_new_edges_and_their_request_unlearns_them() {
    let f = Fixture::new();
    let data = f.path("data");
    let ckpt = f.path("clean.safetensors");
    ok(&["-q", "train", "--data", p(&data), "--model", "mf", "--dim", "8", "--epochs", "2", "--out", p(&ckpt)]);
    let out = f.path("poisoned");
    ok(&["-q", "data", "poison", p(&data), "--model", p(&ckpt), "--ratio", "0.5", "--seed", "4", "--out", p(&out)]);
    let pairs = |dir: &Path, file: &str| -> Vec<(String, String)> {
        std::fs::read_to_string(dir.join(file))
            .unwrap()
            .lines()
            .flat_map(|l| {
                let mut w = l.split_whitespace();
                let u = w.next().unwrap_or_default().to_string();
                w.map(move |i| (u.clone(), i.to_string()))
            })
            .collect()
    };
    let clean: std::collections::HashSet<_> =
        ["train.txt", "valid.txt", "test.txt"].iter().flat_map(|f| pairs(&data, f)).collect();
    let request: Vec<(String, String)> = std::fs::read_to_string(out.join("adversarial.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let (u, i) = l.split_once(',').unwrap();
            (u.to_string(), i.to_string())
        })
        .collect();
    // At least half the users (200) get one; every injected pair is new and is in the poisoned training data.
    assert!(request.len() >= 100, "{}", request.len());
    let poisoned: std::collections::HashSet<_> = pairs(&out, "train.txt").into_iter().collect();
    assert!(request.iter().all(|e| !clean.contains(e) && poisoned.contains(e)));
    assert_eq!(poisoned.len(), pairs(&data, "train.txt").len() + request.len());
    assert_eq!(std::fs::read(out.join("test.txt")).unwrap(), std::fs::read(data.join("test.txt")).unwrap());
    // The poisoned data trains, and the request is accepted by unlearn (exact retraining here).
    let pm = f.path("poisoned.safetensors");
    ok(&["-q", "train", "--data", p(&out), "--model", "mf", "--dim", "8", "--epochs", "2", "--out", p(&pm)]);
    let req = out.join("adversarial.csv");
    let back = f.path("back.safetensors");
    let args = ["-q", "unlearn", "--method", "retrain", "--model", p(&pm), "--data", p(&out), "--request", p(&req)];
    ok(&[&args[..], &["--out", p(&back)]].concat());
    fails(&["data", "poison", p(&data), "--model", p(&ckpt), "--ratio", "1.5", "--out", p(&f.path("x"))], "ratio");
    assert!(!f.path("x").exists(), "no output on error");
}

#[test]
fn write_data_keeps_carved_validation_edges() {
    // Data without a validation split: training carves one, and the remaining data written after unlearning
    // must still hold those (not forgotten) edges.
    let f = Fixture::new();
    let dir = f.path("nv");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["train.txt", "test.txt"] {
        std::fs::copy(f.path("data").join(name), dir.join(name)).unwrap();
    }
    let ckpt = f.path("m.safetensors");
    ok(&["-q", "train", "--data", p(&dir), "--model", "mf", "--dim", "8", "--epochs", "1", "--out", p(&ckpt)]);
    let (out, rest) = (f.path("m2.safetensors"), f.path("rest"));
    let args = ["-q", "unlearn", "--method", "retrain", "--model", p(&ckpt), "--data", p(&dir), "--user", "7"];
    ok(&[&args[..], &["--out", p(&out), "--write-data", p(&rest)]].concat());
    let count = |path: &Path| -> (usize, usize) {
        let text = std::fs::read_to_string(path).unwrap();
        let n = |keep: &dyn Fn(&str) -> bool| {
            text.lines()
                .filter(|l| keep(l.split_whitespace().next().unwrap_or("")))
                .map(|l| l.split_whitespace().count() - 1)
                .sum()
        };
        (n(&|u| u == "7"), n(&|u| u != "7"))
    };
    let (seven, others) = count(&dir.join("train.txt"));
    assert!(seven > 0);
    assert_eq!(count(&rest.join("train.txt")), (0, others));
    assert!(!rest.join("valid.txt").exists());
}

/// `bench --json` on the built-in synthetic data reports every timed operation as a positive duration.
#[test]
fn bench_reports_every_timing() {
    let out = ok(&["bench", "--repeat", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    for key in [
        "norm_adj_ms",
        "spmm_ms",
        "train_step_ms",
        "train_step_spmms",
        "sgl_step_ms",
        "simgcl_step_ms",
        "encoder_mlp_ms",
        "align_loss_ms",
        "negative_sampling_epoch_ms",
        "full_eval_ms",
    ] {
        let t = v[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {out}"));
        assert!(t > 0.0 && t.is_finite(), "{key} = {t}");
    }
    assert_eq!(v["batch_size"], 2048);
}

/// `bench --scale` measures each size in its own process and fits exponents; sizes of requests above a tenth of
/// a graph are skipped, the `--fast` path is timed up to `--fast-max-edges`; a plot is drawn where asked.
#[test]
fn bench_scale_reports_each_size_and_the_exponents() {
    let f = Fixture::new();
    let svg = f.path("scale.svg");
    let args = ["bench", "--scale", "--edges", "3000,6000", "--repeat", "1", "--request-sizes", "10,500", "--json"];
    let args = [&args[..], &["--fast-max-edges", "100"]].concat();
    let out = ok(&[&args[..], &["--plot", p(&svg)]].concat());
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let points = v["points"].as_array().expect("points");
    assert_eq!(points.len(), 2, "{out}");
    for (pt, edges) in points.iter().zip([3000, 6000]) {
        // The generator holds out a tenth for test: the training edges are close to the size asked.
        let e = pt["edges"].as_f64().unwrap();
        assert!((e - edges as f64).abs() < 0.05 * edges as f64, "{e} for {edges}");
        for key in ["spmm_ms", "train_step_ms", "epoch_s", "full_eval_s", "pretrain_step_ms", "train_peak_mib"] {
            let t = pt[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {out}"));
            assert!(t > 0.0 && t.is_finite(), "{key} = {t}");
        }
        let sizes: Vec<u64> = pt["requests"].as_array().unwrap().iter().map(|r| r["edges"].as_u64().unwrap()).collect();
        // 500 edges is more than a tenth of the 3,000-edge graph.
        assert_eq!(sizes, if edges == 3000 { vec![10] } else { vec![10, 500] });
        let fast: Vec<bool> = pt["requests"].as_array().unwrap().iter().map(|r| r["fast_ms"].is_f64()).collect();
        assert_eq!(fast, if edges == 3000 { vec![true] } else { vec![true, false] });
    }
    assert!(v["exponents"]["SpMM (ms)"].as_f64().is_some_and(f64::is_finite), "{out}");
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
}

#[test]
fn stream_scenarios_and_spam_accounts_from_the_command_line() {
    let f = Fixture::new();
    let data = f.path("data");
    // One file per request, one user each, landed together.
    let dir = f.path("subset");
    ok(&["request", "make", "--data", p(&data), "--protocol", "user-subset", "--requests", "7", "--out", p(&dir)]);
    let mut files: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, (1..=7).map(|k| format!("request-{k:04}.csv")).collect::<Vec<_>>());
    let users: std::collections::BTreeSet<String> = files
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            let mut us: Vec<&str> = text.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
            us.dedup();
            assert_eq!(us.len(), 1, "{name}: one user per request");
            us[0].to_string()
        })
        .collect();
    assert_eq!(users.len(), 7, "different users");
    // Spam: fake accounts injected, then deleted one per request, exactly those.
    let spam = f.path("spam");
    ok(&["data", "poison", p(&data), "--spam", "--spam-share", "0.02", "--out", p(&spam)]);
    let accounts = std::fs::read_to_string(spam.join("spam_accounts.txt")).unwrap();
    let fake: std::collections::BTreeSet<&str> = accounts.lines().collect();
    assert_eq!(fake.len(), 4);
    let reqs = f.path("spam-requests");
    let acc = spam.join("spam_accounts.txt");
    ok(&[
        "request",
        "make",
        "--data",
        p(&spam),
        "--protocol",
        "spam",
        "--accounts",
        p(&acc),
        "--requests",
        "4",
        "--out",
        p(&reqs),
    ]);
    let mut removed = std::collections::BTreeSet::new();
    for k in 1..=4 {
        let text = std::fs::read_to_string(reqs.join(format!("request-{k:04}.csv"))).unwrap();
        removed.extend(text.lines().skip(1).map(|l| l.split(',').next().unwrap().to_string()));
    }
    assert_eq!(removed.iter().map(String::as_str).collect::<std::collections::BTreeSet<_>>(), fake);
    // Clear errors (exit 2, no panic): a protocol needs --fraction; spam needs --accounts; more requests than
    // accounts.
    fails(
        &["request", "make", "--data", p(&data), "--protocol", "random", "--out", p(&f.path("r.csv"))],
        "needs --fraction",
    );
    fails(&["request", "make", "--data", p(&spam), "--protocol", "spam", "--out", p(&f.path("s"))], "--accounts");
    let s5 = f.path("s5");
    let args = [
        "request",
        "make",
        "--data",
        p(&spam),
        "--protocol",
        "spam",
        "--accounts",
        p(&acc),
        "--requests",
        "5",
        "--out",
        p(&s5),
    ];
    fails(&args, "the graph has 4");
    assert!(!f.path("s5").exists(), "no partial output");
}
