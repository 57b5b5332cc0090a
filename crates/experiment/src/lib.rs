//! Experiment grids: datasets × backbones × request protocols × fractions × methods × seeds, run with
//! caching and resumption, summarised as CSV, Markdown and SVG plots (`unlearnrec experiment`).
//!
//! The experiment file (TOML, unknown keys are errors naming the key and its line):
//!
//! ```toml
//! datasets = ["../shared/data/ml-100k"]   # paths (relative to the working directory) or "synth"
//! models = ["lightgcn", "simgcl"]          # replaces [model].kind
//! protocols = ["random", "users", "adversarial"]  # random users items popular tail adversarial
//! fraction = 0.01                          # or a list; in (0, 1); not used by adversarial
//! methods = ["retrain", "unlearnrec-zero-shot", "unlearnrec"]  # + finetune gradient-ascent influence sisa
//!                                          # + retrain-seed2 (retrain with seed + 1: the noise floor)
//! seeds = [1, 2]                           # training, pre-training, fine-tuning, request, poison seeds
//! audit = false                            # attackers' AUCs, removed rank, agreement with retrain
//! poison_ratio = 0.5                       # adversarial: share of users and items given a least-related edge
//!
//! [model]          # unlearnrec_core::model::ModelConfig
//! [train]          # unlearnrec_core::train::TrainConfig (seed: each of `seeds`)
//! [pretrain]       # unlearnrec_core::unlearn::PretrainConfig
//! [finetune]       # unlearnrec_core::unlearn::FinetuneConfig (unlearnrec-zero-shot: 0 epochs)
//! [baselines.gradient_ascent]   # also baselines.finetune, baselines.influence
//! [baselines.sisa] # unlearnrec_core::unlearn::baselines::ShardConfig: shards = 4, partition = "user" | "random", …
//! [stream]         # optional: requests = 100, scenarios = ["user-subset", "account", "spam"],
//!                  # checkpoint_every = 25, seed2 = true, finetune_epochs, consolidate_share = 0, split
//! ```
//!
//! [`run`] validates everything before it writes anything, then per (dataset, model, seed) trains the
//! backbone and pre-trains the unlearner, or loads them from `<out>/cache/` where a file with the same
//! configuration hash exists. Under `adversarial` it poisons the dataset with
//! [`unlearnrec_core::unlearn::poison::least_related_edges`] of the clean backbone, trains a backbone on the
//! poisoned data, and forgets every injected edge. Each cell (one method on one request) yields a
//! [`ResultRow`]: test Recall@20 / NDCG@20 ([`unlearnrec_core::checkpoint::Checkpoint::evaluate`]), the forgetting
//! figures of the [`unlearnrec_core::unlearn::UnlearnReport`], its time and, with `audit = true`, the
//! [`unlearnrec_core::unlearn::audit`] figures against the retrained model of the same request (the `retrain`
//! cell's model, or one retrained for the audit when `retrain` is not listed): `mia_auc` and
//! `removed_called_members` of the strongest membership attacker, `removed_vs_held_out_auc` of the
//! strongest distinguisher, `removed_median_rank` and `removed_top20`, the same per attacker
//! (`mia_auc_<attacker>`, …) and `agreement_top20` / `agreement_kl` with the reference.
//! `retrain-seed2`, a second exact retrain with the next training seed, is audited against that
//! reference too: its row is the noise floor two exact retrains already differ by. `sisa` does not
//! start from the backbone: per (dataset, model, seed) and shard settings it trains (or loads from the
//! cache) a sharded model of the same kind on the same, possibly poisoned, training data with
//! [`unlearnrec_core::unlearn::baselines::train_sharded`], and forgets the request by retraining the shards that
//! held it; its time is that retraining alone. The sharded model's own quality before unlearning differs
//! from the single backbone's (`original_recall@20`), so its rows also hold `sharded_recall@20`,
//! `sharded_ndcg@20` and `sharded_train_secs`, and its forgetting and audit figures compare with the
//! sharded model. `results.csv` is
//! rewritten atomically after every cell, so a crash loses one cell at most; with
//! [`RunOptions::resume`], cells already there with the same configuration hash are skipped. At the end
//! come `results.md` (mean ± std over seeds, [`results::markdown`]), `quality_vs_time.svg`,
//! `forgetting.svg` and, with `[stream]`, `stream.csv`, `stream.md` and `stream.svg` (see
//! [`StreamConfig`]: many small requests one after another, each applied from the anchor with the union
//! so far, measured every `checkpoint_every` requests against an exact retrain on that union and a
//! second-seed retrain).
//!
//! The library never prints: progress goes to an [`ExperimentObserver`].
//!
//! ```
//! use unlearnrec_experiment::{ExperimentConfig, MethodSpec};
//!
//! let cfg = ExperimentConfig::from_toml_str(
//!     "datasets = [\"synth\"]\nmethods = [\"retrain\", \"unlearnrec\"]\nseeds = [1, 2]\n[train]\nepochs = 2\n",
//!     std::path::Path::new("exp.toml"),
//! )
//! .unwrap();
//! assert_eq!(cfg.methods, vec![MethodSpec::RETRAIN, MethodSpec::UNLEARNREC]);
//! let err = ExperimentConfig::from_toml_str("datasets = [\"synth\"]\nfraction = 2\n", "exp.toml".as_ref());
//! assert!(err.unwrap_err().to_string().contains("`fraction`"));
//! ```
#![warn(missing_docs)]

use std::path::PathBuf;

use unlearnrec_core::train::{Observer, Silent};

pub mod config;
pub mod plot;
pub mod results;
mod runner;
mod stream;

pub use config::{
    BaselinesConfig, ExperimentConfig, MethodSpec, ProtocolSpec, StreamConfig, StreamScenario, StreamSplit, hash_json,
};
pub use results::{ResultRow, StreamRow, Summary, aggregate, markdown, mean_std};
pub use runner::{FORGETTING_SVG, QUALITY_SVG, RESULTS_CSV, RESULTS_MD, run};
pub use stream::{STREAM_CSV, STREAM_MD, STREAM_SVG};

/// Options of [`run`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Continue the run in the output directory: cells found in its `results.csv` with the same
    /// configuration hash (and complete streams in `stream.csv`) are skipped. Without it, an output
    /// directory that holds results is an error.
    pub resume: bool,
}

/// Progress of a run. Training, pre-training and unlearning report their epochs through the
/// [`Observer`] methods; the rest come here. Every method has a default that does nothing.
pub trait ExperimentObserver: Observer {
    /// The grid has `total` cells, `done` of which are already finished (resumed).
    fn grid(&mut self, _total: usize, _done: usize) {}
    /// A unit of work begins (training, pre-training, one cell's unlearning, a stream request);
    /// `epochs` is how many epochs it will report through [`Observer`] (0: none or unknown).
    fn stage(&mut self, _label: &str, _epochs: usize) {}
    /// A cached backbone, unlearner, reference or complete stream was reused.
    fn cached(&mut self, _label: &str) {}
    /// A cell is finished: run now, or found in `results.csv` (`skipped`).
    fn cell(&mut self, _row: &ResultRow, _skipped: bool) {}
    /// A stream of `requests` requests begins.
    fn stream(&mut self, _label: &str, _requests: usize) {}
    /// One stream step is measured.
    fn stream_step(&mut self, _row: &StreamRow) {}
}

impl ExperimentObserver for Silent {}

/// What [`run`] did.
#[derive(Clone, Debug)]
pub struct ExperimentReport {
    /// The rows of the current grid, in grid order (run now or resumed).
    pub rows: Vec<ResultRow>,
    /// Their aggregation over seeds.
    pub summaries: Vec<Summary>,
    /// `results.md`.
    pub markdown: String,
    /// Cells run now.
    pub ran: usize,
    /// Cells skipped because they were finished.
    pub skipped: usize,
    /// The stream rows of the current configuration.
    pub stream: Vec<StreamRow>,
    /// `stream.md` (empty without `[stream]`).
    pub stream_markdown: String,
    /// The files written.
    pub files: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use unlearnrec_core::data::synthetic::{SynthConfig, generate};
    use unlearnrec_core::data::write_lightgcn;
    use unlearnrec_core::train::{EpochRecord, TrainConfig};
    use unlearnrec_core::unlearn::PretrainConfig;
    use unlearnrec_core::unlearn::baselines::ShardConfig;

    #[derive(Default)]
    struct Counter {
        stages: Vec<String>,
        cached: usize,
        ran: usize,
        skipped: usize,
        epochs: usize,
    }

    impl Observer for Counter {
        fn epoch_end(&mut self, _r: &EpochRecord) {
            self.epochs += 1;
        }
    }

    impl ExperimentObserver for Counter {
        fn stage(&mut self, label: &str, _epochs: usize) {
            self.stages.push(label.to_string());
        }
        fn cached(&mut self, _label: &str) {
            self.cached += 1;
        }
        fn cell(&mut self, _row: &ResultRow, skipped: bool) {
            if skipped {
                self.skipped += 1;
            } else {
                self.ran += 1;
            }
        }
    }

    fn tiny_config(data: &std::path::Path) -> ExperimentConfig {
        let mut cfg = ExperimentConfig {
            datasets: vec![data.to_str().unwrap().to_string()],
            methods: vec![MethodSpec::UnlearnrecZeroShot],
            fractions: vec![0.02],
            ..ExperimentConfig::default()
        };
        cfg.model.dim = 8;
        cfg.model.layers = 2;
        cfg.train = TrainConfig { epochs: 2, batch_size: 256, lr: 5e-3, eval_every: 1, ..TrainConfig::default() };
        cfg.pretrain =
            PretrainConfig { epochs: 1, batch_size: 256, max_steps_per_epoch: Some(3), ..Default::default() };
        cfg.finetune.batch_size = 256;
        cfg
    }

    fn mtimes(dir: &std::path::Path) -> Vec<(PathBuf, std::time::SystemTime)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path(), e.metadata().unwrap().modified().unwrap())
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_second_run_resumes_without_work() {
        let tmp = tempfile::tempdir().unwrap();
        let ds = generate(&SynthConfig { users: 60, items: 40, interactions: 900, ..Default::default() }).unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        write_lightgcn(&ds, &data).unwrap();
        let out = tmp.path().join("out");
        let cfg = tiny_config(&data);
        let mut first = Counter::default();
        let r1 = run(&cfg, &out, &RunOptions::default(), &mut first).unwrap();
        assert_eq!((r1.ran, r1.skipped, first.ran), (1, 0, 1));
        assert_eq!(first.stages.len(), 3, "{:?}", first.stages); // backbone, unlearner, the cell
        assert!(first.epochs > 0);
        let row = &r1.rows[0];
        assert_eq!(row.method, "unlearnrec-zero-shot");
        assert!(row.get("recall@20").is_finite() && row.get("removed_after").is_finite(), "{row:?}");
        for f in [RESULTS_CSV, RESULTS_MD, QUALITY_SVG, FORGETTING_SVG] {
            assert!(out.join(f).is_file(), "{f}");
        }
        let cache = mtimes(&out.join("cache"));
        assert_eq!(cache.len(), 2, "{cache:?}");
        // Without resume, an output directory with results is refused before anything is touched.
        let err = run(&cfg, &out, &RunOptions::default(), &mut Silent).unwrap_err().to_string();
        assert!(err.contains("resume"), "{err}");
        // Resumed: nothing is trained, loaded from the cache or run.
        let mut second = Counter::default();
        let r2 = run(&cfg, &out, &RunOptions { resume: true }, &mut second).unwrap();
        assert_eq!((r2.ran, r2.skipped), (0, 1));
        assert!(second.stages.is_empty() && second.cached == 0 && second.epochs == 0 && second.ran == 0);
        assert_eq!(r2.rows, r1.rows);
        assert_eq!(mtimes(&out.join("cache")), cache);
        // Another method: the cached backbone and unlearner are reused, only the new cell runs.
        let cfg2 = ExperimentConfig { methods: vec![MethodSpec::UnlearnrecZeroShot, MethodSpec::UNLEARNREC], ..cfg };
        let mut third = Counter::default();
        let r3 = run(&cfg2, &out, &RunOptions { resume: true }, &mut third).unwrap();
        assert_eq!((r3.ran, r3.skipped, third.cached), (1, 1, 2));
        assert_eq!(third.stages.len(), 1, "{:?}", third.stages);
        assert_eq!(results::read_results(&out.join(RESULTS_CSV)).unwrap().len(), 2);
    }

    fn tiny_data(root: &std::path::Path) -> PathBuf {
        let ds = generate(&SynthConfig { users: 60, items: 40, interactions: 900, ..Default::default() }).unwrap();
        let data = root.join("data");
        std::fs::create_dir_all(&data).unwrap();
        write_lightgcn(&ds, &data).unwrap();
        data
    }

    #[test]
    fn sisa_cells_unlearn_a_cached_sharded_model() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tiny_data(tmp.path());
        let out = tmp.path().join("out");
        let mut cfg = tiny_config(&data);
        cfg.methods = vec![MethodSpec::RETRAIN, MethodSpec::registered("sisa")];
        cfg.baselines.sisa = ShardConfig { shards: 2, kmeans_iters: 3, pretrain_epochs: 1, ..Default::default() };
        let mut first = Counter::default();
        let r1 = run(&cfg, &out, &RunOptions::default(), &mut first).unwrap();
        assert_eq!((r1.ran, r1.skipped), (2, 0));
        // backbone, sharded model, the two cells
        assert_eq!(first.stages.len(), 4, "{:?}", first.stages);
        assert_eq!(r1.rows.iter().map(|r| r.method.as_str()).collect::<Vec<_>>(), ["retrain", "sisa"]);
        let row = &r1.rows[1];
        for k in ["recall@20", "ndcg@20", "removed_after", "unlearn_secs", "original_recall@20", "sharded_recall@20"] {
            assert!(row.get(k).is_finite(), "{k}: {row:?}");
        }
        assert!(row.get("sharded_train_secs") > 0.0, "{row:?}");
        assert!(r1.rows[0].get("sharded_recall@20").is_nan());
        let csv = std::fs::read_to_string(out.join(RESULTS_CSV)).unwrap();
        assert!(csv.lines().next().unwrap().contains(",sharded_recall@20"), "{csv}");
        let cache = mtimes(&out.join("cache"));
        assert_eq!(cache.len(), 2, "{cache:?}"); // the backbone and the sharded model
        // Resumed: no work at all.
        let mut second = Counter::default();
        let r2 = run(&cfg, &out, &RunOptions { resume: true }, &mut second).unwrap();
        assert_eq!((r2.ran, r2.skipped), (0, 2));
        assert!(second.stages.is_empty() && second.cached == 0 && second.epochs == 0);
        assert_eq!(r2.rows, r1.rows);
        // Another request size: the cached backbone and sharded model are loaded, only the cell runs.
        let cfg2 =
            ExperimentConfig { fractions: vec![0.05], methods: vec![MethodSpec::registered("sisa")], ..cfg.clone() };
        let mut third = Counter::default();
        let r3 = run(&cfg2, &out, &RunOptions { resume: true }, &mut third).unwrap();
        assert_eq!((r3.ran, third.cached), (1, 2));
        assert_eq!(third.stages.len(), 1, "{:?}", third.stages);
        assert_eq!(mtimes(&out.join("cache")), cache);
        assert_eq!(r3.rows[0].get("sharded_recall@20"), row.get("sharded_recall@20"));
        assert_eq!(r3.rows[0].get("sharded_train_secs"), row.get("sharded_train_secs"));
        // Deterministic per seed: a fresh run gives the same figures.
        let cfg3 = ExperimentConfig { methods: vec![MethodSpec::registered("sisa")], ..cfg };
        let r4 = run(&cfg3, &tmp.path().join("out2"), &RunOptions::default(), &mut Silent).unwrap();
        for k in ["recall@20", "ndcg@20", "removed_after", "sharded_recall@20"] {
            assert_eq!(r4.rows[0].get(k), row.get(k), "{k}");
        }
        assert_eq!(r4.rows[0].config_hash, row.config_hash);
    }

    #[test]
    fn audited_cells_have_the_attackers_columns_and_the_second_retrain_is_the_noise_floor() {
        let tmp = tempfile::tempdir().unwrap();
        let ds = generate(&SynthConfig { users: 80, items: 60, interactions: 1400, ..Default::default() }).unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        write_lightgcn(&ds, &data).unwrap();
        let out = tmp.path().join("out");
        let mut cfg = tiny_config(&data);
        cfg.methods = vec![MethodSpec::RETRAIN, MethodSpec::RetrainSeed2, MethodSpec::UnlearnrecZeroShot];
        cfg.fractions = vec![0.05];
        cfg.audit = true;
        let mut obs = Counter::default();
        let r = run(&cfg, &out, &RunOptions::default(), &mut obs).unwrap();
        assert_eq!(r.ran, 3);
        let methods: Vec<&str> = r.rows.iter().map(|r| r.method.as_str()).collect();
        assert_eq!(methods, ["retrain", "retrain-seed2", "unlearnrec-zero-shot"]);
        // The retrain cell is the reference: no separate audit reference is trained.
        assert!(!obs.stages.iter().any(|s| s.contains("audit reference")), "{:?}", obs.stages);
        for row in &r.rows {
            for k in [
                "mia_auc",
                "removed_called_members",
                "removed_vs_held_out_auc",
                "removed_median_rank",
                "removed_top20",
                "mia_auc_logistic",
                "mia_auc_gbt",
                "removed_called_members_logistic",
                "removed_called_members_gbt",
                "removed_vs_held_out_auc_logistic",
                "removed_vs_held_out_auc_gbt",
                "removed_vs_held_out_auc_logistic_difference",
                "removed_vs_held_out_auc_gbt_difference",
                "agreement_top20",
                "agreement_kl",
            ] {
                assert!(row.get(k).is_finite(), "{} {k}: {row:?}", row.method);
            }
            // The headline is the strongest attacker's.
            let best = row.get("mia_auc_logistic").max(row.get("mia_auc_gbt"));
            assert_eq!(row.get("mia_auc"), best, "{row:?}");
            let game = ["logistic", "gbt", "logistic_difference", "gbt_difference"]
                .map(|a| row.get(&format!("removed_vs_held_out_auc_{a}")))
                .into_iter()
                .fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(row.get("removed_vs_held_out_auc"), game, "{row:?}");
            assert!(row.get("removed_median_rank") >= 1.0, "{row:?}");
            // The difference attackers play only the distinguishing game.
            assert!(row.get("mia_auc_gbt_difference").is_nan(), "{row:?}");
        }
        let (retrain, seed2) = (&r.rows[0], &r.rows[1]);
        assert_eq!(retrain.get("agreement_top20"), 1.0, "{retrain:?}");
        assert!(seed2.get("agreement_top20") < 1.0, "{seed2:?}");
        assert!(seed2.get("agreement_kl") > 0.0, "{seed2:?}");
        // Another seed, so another model: same removal, different figures.
        assert_ne!(seed2.get("recall@20"), retrain.get("recall@20"));
        assert_ne!(seed2.config_hash, retrain.config_hash);
        // The columns reach results.csv (and back) and results.md.
        let csv = std::fs::read_to_string(out.join(RESULTS_CSV)).unwrap();
        let header = csv.lines().next().unwrap();
        for k in
            ["removed_vs_held_out_auc", "removed_median_rank", "mia_auc_gbt", "removed_vs_held_out_auc_gbt_difference"]
        {
            assert!(header.split(',').any(|h| h == k), "{k}: {header}");
        }
        assert_eq!(results::read_results(&out.join(RESULTS_CSV)).unwrap(), r.rows);
        assert!(r.markdown.contains("removed median rank") && r.markdown.contains("| retrain-seed2 | 1 |"));
        // Without retrain listed, the reference is retrained for the audit, and the second retrain is
        // still measured against it (same figures as above).
        let cfg2 = ExperimentConfig { methods: vec![MethodSpec::RetrainSeed2], ..cfg };
        let mut obs2 = Counter::default();
        let r2 = run(&cfg2, &tmp.path().join("out2"), &RunOptions::default(), &mut obs2).unwrap();
        assert!(obs2.stages.iter().any(|s| s.contains("audit reference")), "{:?}", obs2.stages);
        assert_eq!(r2.rows[0].get("agreement_top20"), seed2.get("agreement_top20"));
        assert_eq!(r2.rows[0].get("recall@20"), seed2.get("recall@20"));
    }

    /// A stream of 50 single-user requests (the fast path) on generated data (1000 users, 500 items, 40 000
    /// edges), with training, requests and retrains seeded by `seed`, measured at 25 and 50 requests against
    /// the exact retrain on the union so far. Returns, per checkpoint, UnlearnRec's and the retrain's
    /// (Recall@20, strongest attacker's member rate).
    fn synthetic_stream(seed: u64) -> Vec<((f64, f64), (f64, f64))> {
        let tmp = tempfile::tempdir().unwrap();
        let ds =
            generate(&SynthConfig { users: 1000, items: 500, interactions: 40_000, ..Default::default() }).unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        write_lightgcn(&ds, &data).unwrap();
        let mut cfg = tiny_config(&data);
        cfg.methods = Vec::new();
        cfg.seeds = vec![seed];
        cfg.model.dim = 16;
        cfg.train = TrainConfig { epochs: 20, batch_size: 512, lr: 1e-2, eval_every: 5, ..TrainConfig::default() };
        cfg.pretrain =
            PretrainConfig { epochs: 2, batch_size: 512, max_steps_per_epoch: Some(10), ..Default::default() };
        cfg.stream = Some(StreamConfig {
            requests: 50,
            scenarios: vec!["user-subset".into()],
            checkpoint_every: 25,
            seed2: false,
            ..StreamConfig::default()
        });
        cfg.validate().unwrap();
        let out = tmp.path().join("out");
        let r = run(&cfg, &out, &RunOptions::default(), &mut Silent).unwrap();
        assert_eq!(r.stream.iter().filter(|x| x.method == "unlearnrec").count(), 50);
        assert!(std::fs::read_to_string(out.join(STREAM_MD)).unwrap().contains("| user-subset |"));
        let at = |step: usize, m: &str| r.stream.iter().find(|x| x.step == step && x.method == m).unwrap().clone();
        [25, 50]
            .into_iter()
            .map(|step| {
                let (u, re) = (at(step, "unlearnrec"), at(step, "retrain"));
                assert_eq!(u.edges, re.edges);
                ((u.recall, u.members), (re.recall, re.members))
            })
            .collect()
    }

    /// Three 50-request streams (seeds 1 – 3) against the retrain on the union: Recall@20 ≥ 0.97 × the
    /// retrain's at every checkpoint of every stream, and the strongest attacker's member rate within ±0.05 of
    /// the retrain's at each checkpoint, averaged over the three streams.
    ///
    /// One stream's checkpoint holds 300 – 450 removed pairs, too few to resolve ±0.05 on its own: a second
    /// exact retrain lands 0.056 from the first in one of twelve such checkpoints (seeds 1 – 6; docs/results.md,
    /// Streams of requests), so a single stream is held to ±0.10 and the target is asserted on the average.
    /// Measured to fail without the encoder's change (the average 0.069 above the retrains' at 50 requests)
    /// and without both the encoder's change and calibration (0.068 above at 25); the fast path is 0.017
    /// below and 0.016 above.
    #[test]
    fn three_50_request_streams_keep_quality_and_the_member_rate_of_the_retrain_on_the_union() {
        let streams: Vec<_> = (1..=3).map(synthetic_stream).collect();
        let mut gap = [0.0f64; 2];
        for (s, checkpoints) in streams.iter().enumerate() {
            for (k, &((recall, members), (re_recall, re_members))) in checkpoints.iter().enumerate() {
                let at = format!("stream {}, checkpoint {k}", s + 1);
                assert!(recall >= 0.97 * re_recall, "{at}: Recall@20 {recall} vs the retrain's {re_recall}");
                assert!((members - re_members).abs() <= 0.10, "{at}: member rate {members} vs {re_members}");
                gap[k] += (members - re_members) / streams.len() as f64;
            }
        }
        for (k, g) in gap.into_iter().enumerate() {
            assert!(g.abs() <= 0.05, "checkpoint {k}: mean member rate {g:+} off the retrains'");
        }
    }

    /// The spam stream deletes exactly the injected accounts, and reports the targets' exposure.
    #[test]
    fn the_spam_stream_removes_exactly_the_injected_accounts() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tiny_data(tmp.path());
        let mut cfg = tiny_config(&data);
        cfg.methods = Vec::new();
        cfg.stream = Some(StreamConfig {
            requests: 4,
            scenarios: vec!["spam".into()],
            spam_filler: 5,
            spam_targets: 2,
            checkpoint_every: 4,
            seed2: false,
            finetune_epochs: Some(0),
            ..StreamConfig::default()
        });
        let out = tmp.path().join("out");
        let r = run(&cfg, &out, &RunOptions::default(), &mut Silent).unwrap();
        let last = r.stream.iter().find(|x| x.step == 4 && x.method == "unlearnrec").unwrap();
        // 4 fake accounts of 2 targets + 5 filler items each, all removed, nothing else.
        assert_eq!(last.edges, 4 * 7);
        let rows: Vec<_> = r.stream.iter().filter(|x| x.scenario == "spam").collect();
        assert!(rows.iter().all(|x| x.exposure_share.is_finite()), "{rows:?}");
        assert_eq!(rows[0].method, "original");
    }

    /// Past `consolidate_share`, the stream retrains the current model and pre-trains a new unlearner for
    /// it (the next request is refused with the old one), and the stream goes on from the new anchor.
    #[test]
    fn a_stream_consolidates_past_its_share_and_goes_on_from_the_new_anchor() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tiny_data(tmp.path());
        let mut cfg = tiny_config(&data);
        cfg.methods = Vec::new();
        cfg.stream = Some(StreamConfig {
            requests: 6,
            scenarios: vec!["account".into()],
            checkpoint_every: 3,
            seed2: false,
            finetune_epochs: Some(0),
            consolidate_share: 0.02,
            ..StreamConfig::default()
        });
        let out = tmp.path().join("out");
        let mut obs = Counter::default();
        let r = run(&cfg, &out, &RunOptions::default(), &mut obs).unwrap();
        let u: Vec<_> = r.stream.iter().filter(|x| x.method == "unlearnrec").collect();
        assert_eq!(u.len(), 6);
        let n = u.last().unwrap().consolidations;
        assert!(n >= 2, "{u:?}");
        assert_eq!(obs.stages.iter().filter(|s| s.contains("consolidation")).count(), n, "{:?}", obs.stages);
        // Consolidations only ever add up, and the retrain on the union still matches the stream's edges.
        assert!(u.windows(2).all(|w| w[0].consolidations <= w[1].consolidations));
        let last = r.stream.iter().find(|x| x.step == 6 && x.method == "retrain").unwrap();
        assert_eq!(last.edges, u.last().unwrap().edges);
    }

    /// Adding a scenario to `[stream]` keeps the streams already run: resuming reuses them.
    #[test]
    fn adding_a_scenario_resumes_the_streams_already_run() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tiny_data(tmp.path());
        let mut cfg = tiny_config(&data);
        cfg.methods = Vec::new();
        let stream = StreamConfig {
            requests: 3,
            scenarios: vec!["account".into()],
            checkpoint_every: 3,
            seed2: false,
            ..StreamConfig::default()
        };
        cfg.stream = Some(stream.clone());
        let out = tmp.path().join("out");
        let first = run(&cfg, &out, &RunOptions::default(), &mut Silent).unwrap();
        cfg.stream = Some(StreamConfig { scenarios: vec!["account".into(), "user-subset".into()], ..stream });
        let mut obs = Counter::default();
        let second = run(&cfg, &out, &RunOptions { resume: true }, &mut obs).unwrap();
        assert!(obs.stages.iter().all(|s| !s.contains("/ account /")), "{:?}", obs.stages);
        assert!(obs.stages.iter().any(|s| s.contains("/ user-subset /")), "{:?}", obs.stages);
        let account: Vec<_> = second.stream.iter().filter(|r| r.scenario == "account").cloned().collect();
        // The same rows (NaN figures included: compared as written).
        assert_eq!(crate::results::stream_csv(&account), crate::results::stream_csv(&first.stream));
    }

    #[test]
    fn bad_configurations_write_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let cfg = ExperimentConfig { datasets: vec!["synth".into()], fractions: vec![1.5], ..Default::default() };
        assert!(run(&cfg, &out, &RunOptions::default(), &mut Silent).is_err());
        let cfg =
            ExperimentConfig { datasets: vec![tmp.path().join("absent").display().to_string()], ..Default::default() };
        assert!(run(&cfg, &out, &RunOptions::default(), &mut Silent).is_err());
        // More user-partition shards than users.
        let mut cfg = tiny_config(&tiny_data(tmp.path()));
        cfg.methods = vec![MethodSpec::registered("sisa")];
        cfg.baselines.sisa.shards = 61;
        let err = run(&cfg, &out, &RunOptions::default(), &mut Silent).unwrap_err().to_string();
        assert!(err.contains("baselines.sisa.shards") && err.contains("61 shards for the"), "{err}");
        assert!(!out.exists());
    }
}
