//! `unlearnrec experiment` end to end on a tiny synthetic dataset: the grid's files, resumption, and
//! bad experiment files.

mod common;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use common::{fails_with_all as fails, ok_with_stderr as ok, p};

fn mtimes(dir: &Path) -> Vec<(PathBuf, SystemTime)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("cache dir")
        .map(|e| {
            let e = e.expect("entry");
            (e.path(), e.metadata().expect("metadata").modified().expect("mtime"))
        })
        .collect();
    v.sort();
    v
}

const GRID: &str = r#"
models = ["lightgcn"]
protocols = ["random", "adversarial"]
fraction = 0.02
methods = ["retrain", "unlearnrec-zero-shot", "unlearnrec"]
seeds = [1, 2]
audit = true

[model]
dim = 16
layers = 2

[train]
epochs = 2
batch_size = 512
lr = 0.005
eval_every = 1

[pretrain]
epochs = 1
batch_size = 512
max_steps_per_epoch = 4

[finetune]
batch_size = 512

[stream]
requests = 3
scenarios = "random"
fraction = 0.005
checkpoint_every = 2
seed2 = false
"#;

#[test]
fn experiment_grid_writes_results_and_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let data = root.join("data");
    ok(&[
        "data",
        "synth",
        "--out",
        p(&data),
        "--users",
        "200",
        "--items",
        "150",
        "--interactions",
        "5000",
        "--seed",
        "3",
    ]);
    let config = root.join("exp.toml");
    std::fs::write(&config, format!("datasets = [{:?}]\n{GRID}", p(&data))).expect("write config");
    let out = root.join("out");
    let (table, _) = ok(&["-q", "experiment", "--config", p(&config), "--out", p(&out)]);

    // One Markdown row per protocol × method, mean ± std over the two seeds.
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.iter().take_while(|l| !l.is_empty()).count(), 2 + 6, "{table}");
    assert!(lines[0].contains("Recall@20") && lines[0].contains("MIA AUC"), "{table}");
    for (line, (protocol, method)) in lines[2..].iter().zip(
        ["random", "adversarial"]
            .iter()
            .flat_map(|p| ["retrain", "unlearnrec-zero-shot", "unlearnrec"].map(move |m| (*p, m))),
    ) {
        assert!(line.contains(&format!("| {protocol} |")) && line.contains(&format!("| {method} | 2 |")), "{line}");
        assert!(line.contains(" ± "), "{line}");
    }
    let (grid_table, stream_table) = table.split_once("\n\n").expect("the grid's table, then the streams'");
    assert_eq!(std::fs::read_to_string(out.join("results.md")).expect("results.md"), format!("{grid_table}\n"));
    assert_eq!(std::fs::read_to_string(out.join("stream.md")).expect("stream.md"), stream_table);
    let csv = std::fs::read_to_string(out.join("results.csv")).expect("results.csv");
    assert_eq!(csv.lines().count(), 1 + 12, "{csv}");
    assert!(csv.starts_with("dataset,model,protocol,fraction,method,seed,config_hash,"), "{csv}");
    // The audit's columns: the strongest attackers', the removed items' rank, and each attacker's.
    let header: Vec<&str> = csv.lines().next().expect("header").split(',').collect();
    for k in [
        "mia_auc",
        "removed_called_members",
        "removed_vs_held_out_auc",
        "removed_median_rank",
        "removed_top20",
        "mia_auc_gbt",
        "removed_called_members_logistic",
        "removed_vs_held_out_auc_gbt_difference",
        "agreement_top20",
    ] {
        assert!(header.contains(&k), "{k}: {header:?}");
    }
    assert!(lines[0].contains("removed vs held-out AUC") && lines[0].contains("removed median rank"), "{table}");
    for svg in ["quality_vs_time.svg", "forgetting.svg", "stream.svg"] {
        let text = std::fs::read_to_string(out.join(svg)).expect(svg);
        assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"), "{svg}");
        assert!(text.to_lowercase().contains("unlearnrec"), "{svg}");
    }
    // Stream: per seed the original model, 3 requests and a retrain on the union after requests 2 and 3
    // (the last); stream.md has one row per stream, printed after the grid's table.
    let stream = std::fs::read_to_string(out.join("stream.csv")).expect("stream.csv");
    assert_eq!(stream.lines().count(), 1 + 2 * 6, "{stream}");
    assert_eq!(stream.lines().filter(|l| l.contains(",retrain,")).count(), 4, "{stream}");
    let md = std::fs::read_to_string(out.join("stream.md")).expect("stream.md");
    assert_eq!(md.lines().filter(|l| l.contains("| random |")).count(), 2, "{md}");

    // An existing run is not overwritten; --resume reuses everything and does no work.
    fails(&["experiment", "--config", p(&config), "--out", p(&out)], &["already holds results", "resume"]);
    let cache = mtimes(&out.join("cache"));
    let csv_time = std::fs::metadata(out.join("results.csv")).expect("csv").modified().expect("mtime");
    let (again, log) = ok(&["experiment", "--config", p(&config), "--out", p(&out), "--resume"]);
    assert_eq!(again, table);
    assert!(log.contains("0 cells run, 12 already finished"), "{log}");
    assert_eq!(mtimes(&out.join("cache")), cache);
    assert_eq!(std::fs::metadata(out.join("results.csv")).expect("csv").modified().expect("mtime"), csv_time);
}

#[test]
fn sisa_runs_next_to_retrain_and_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let data = root.join("data");
    ok(&["data", "synth", "--out", p(&data), "--users", "60", "--items", "40", "--interactions", "900", "--seed", "3"]);
    let config = root.join("exp.toml");
    let body = format!(
        "datasets = [{:?}]\nmethods = [\"retrain\", \"sisa\"]\nfraction = 0.02\n\
         [model]\ndim = 8\nlayers = 2\n[train]\nepochs = 2\nbatch_size = 256\nlr = 0.005\n\
         [baselines.sisa]\nshards = 3\npartition = \"random\"\n",
        p(&data)
    );
    std::fs::write(&config, body).expect("write config");
    let out = root.join("out");
    let (table, _) = ok(&["-q", "experiment", "--config", p(&config), "--out", p(&out)]);
    assert!(table.contains("| retrain | 1 |") && table.contains("| sisa | 1 |"), "{table}");
    let csv = std::fs::read_to_string(out.join("results.csv")).expect("results.csv");
    assert_eq!(csv.lines().count(), 1 + 2, "{csv}");
    assert!(csv.lines().next().expect("header").contains(",sharded_recall@20,"), "{csv}");
    let cache = mtimes(&out.join("cache"));
    assert!(cache.iter().any(|(f, _)| f.file_name().expect("name").to_string_lossy().starts_with("sharded-")));
    let (again, log) = ok(&["experiment", "--config", p(&config), "--out", p(&out), "--resume"]);
    assert_eq!(again, table);
    assert!(log.contains("0 cells run, 2 already finished"), "{log}");
    assert_eq!(mtimes(&out.join("cache")), cache);
}

#[test]
fn bad_experiment_files_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let out = root.join("out");
    for (body, needles) in [
        ("datasets = [\"synth\"]\nfractions = 0.1\n", &["exp.toml:2", "unknown field `fractions`", "`fraction`"][..]),
        ("datasets = [\"synth\"]\n[train]\nepoch = 2\n", &["exp.toml:3", "unknown field `epoch`"][..]),
        (
            "datasets = [\"synth\"]\nmethods = [\"retrain\", \"forget\"]\n",
            &["`methods`", "unknown method \"forget\""][..],
        ),
        ("datasets = [\"synth\"]\nprotocols = [\"hubs\"]\n", &["`protocols`", "unknown protocol \"hubs\""][..]),
        ("datasets = [\"synth\"]\nfraction = [0.01, 1.5]\n", &["`fraction`", "must be in (0, 1), got 1.5"][..]),
        ("datasets = [\"synth\"]\nfraction = 0\n", &["`fraction`", "got 0"][..]),
        ("datasets = [\"no/such/dir\"]\n", &["no/such/dir"][..]),
        ("datasets = [\"synth\"]\n[baselines.sisa]\nshard = 2\n", &["exp.toml:3", "unknown field `shard`"][..]),
        (
            "datasets = [\"synth\"]\nmethods = [\"sisa\"]\n[baselines.sisa]\nshards = 0\n",
            &["`baselines.sisa.shards`", "at least 1"][..],
        ),
    ] {
        let config = root.join("exp.toml");
        std::fs::write(&config, body).expect("write config");
        fails(&["experiment", "--config", p(&config), "--out", p(&out)], needles);
        assert!(!out.exists(), "{body}: wrote {}", out.display());
    }
}
