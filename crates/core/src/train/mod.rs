//! Training: BPR minibatches with per-epoch seeded negatives, Adam, periodic validation, early stopping and
//! best-state keeping.
//!
//! [`fit`] is the one training loop; retraining, fine-tuning and the gradient baselines reuse it. It never
//! looks at the test split: model selection uses the validation split only.

use std::collections::BTreeMap;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::Interactions;
use crate::error::{Error, Result};
use crate::eval::{EvalConfig, RankingReport};
use crate::graph::{Csr, Graph, NormAdj};
use crate::model::{Backbone, LossInput, ModelKind, SglViews};
use crate::tensor::SpMat;

pub mod adam;
pub mod sampler;

pub use adam::{Adam, AdamConfig};

/// Training hyper-parameters (the reference implementation's flag in parentheses).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Epochs (`--epoch`).
    pub epochs: usize,
    /// Minibatch size (`--batch`).
    pub batch_size: usize,
    /// Adam learning rate (`--lr`).
    pub lr: f64,
    /// Per-epoch learning-rate factor (`--decay`; 1 = constant; the rate never goes below 1e-4 of lr).
    pub lr_decay: f64,
    /// Validate every this many epochs (`--tst_epoch`).
    pub eval_every: usize,
    /// Stop after this many validations without improvement (0 = never).
    pub patience: usize,
    /// The validation metric to select on, `name@k`.
    pub select_metric: String,
    /// Steps per epoch at most (the reference stops at 2501; `None` = all minibatches).
    pub max_steps_per_epoch: Option<usize>,
    /// Seed of initialisation, shuffling, negatives and augmentations.
    pub seed: u64,
    /// Fraction of each user's training interactions carved out as validation when the data has none.
    pub valid_ratio: f64,
}

/// The default recipe finishes in minutes on the bundled datasets: batches of 2048 at lr 5e-3, validated
/// every 5 epochs, stopping after 3 validations without improvement (at most 200 epochs).
/// [`TrainConfig::reference`] is the reference implementation's schedule.
impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 200,
            batch_size: 2048,
            lr: 5e-3,
            lr_decay: 1.0,
            eval_every: 5,
            patience: 3,
            select_metric: "recall@20".into(),
            max_steps_per_epoch: None,
            seed: 1234,
            valid_ratio: 0.05,
        }
    }
}

impl TrainConfig {
    /// The reference implementation's schedule (`--preset reference`): 200 epochs of batches of 4096 at
    /// lr 1e-3, at most 2501 steps per epoch, validated every 3 epochs, no early stopping. Hours on Gowalla.
    pub fn reference() -> Self {
        Self {
            epochs: 200,
            batch_size: 4096,
            lr: 1e-3,
            eval_every: 3,
            patience: 0,
            max_steps_per_epoch: Some(2501),
            ..Self::default()
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::config("train.epochs", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(Error::config("train.batch_size", "must be at least 1"));
        }
        if self.eval_every == 0 {
            return Err(Error::config("train.eval_every", "must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::config("train.lr", "must be positive"));
        }
        if !(self.lr_decay > 0.0 && self.lr_decay <= 1.0) {
            return Err(Error::config("train.lr_decay", "must be in (0, 1]"));
        }
        if !(0.0..1.0).contains(&self.valid_ratio) {
            return Err(Error::config("train.valid_ratio", "must be in [0, 1)"));
        }
        parse_metric(&self.select_metric)?;
        Ok(())
    }
}

/// Splits `name@k`.
pub fn parse_metric(s: &str) -> Result<(String, usize)> {
    let bad = || Error::config("train.select_metric", format!("expected name@k such as recall@20, got {s:?}"));
    let (name, k) = s.split_once('@').ok_or_else(bad)?;
    let k: usize = k.parse().map_err(|_| bad())?;
    if !matches!(name, "recall" | "ndcg" | "precision" | "hit" | "mrr") || k == 0 {
        return Err(bad());
    }
    Ok((name.to_string(), k))
}

/// The graph and splits a model trains on.
pub struct TrainData {
    /// The training graph.
    pub graph: Graph,
    /// `Â` of the training graph.
    pub adj: SpMat,
    /// Validation items per user (users × items); may be empty.
    pub valid: Csr,
}

impl TrainData {
    /// Builds the graph, its adjacency and the validation pattern.
    pub fn new(n_users: usize, n_items: usize, train: &Interactions, valid: &Interactions) -> Self {
        let graph = Graph::from_interactions(n_users, n_items, train);
        let adj = SpMat::from_norm_adj(&NormAdj::from_graph(&graph));
        let valid = Graph::from_interactions(n_users, n_items, valid).user_items().clone();
        Self { graph, adj, valid }
    }
}

/// What happened in one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 0-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Wall-clock seconds of the training part.
    pub train_secs: f64,
    /// Validation metrics when evaluated this epoch.
    pub valid: Option<BTreeMap<String, f64>>,
}

/// Why training stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StopReason {
    /// All epochs ran.
    Completed,
    /// `patience` validations without improvement.
    EarlyStopped,
    /// A non-finite loss; the model holds the best state seen before.
    Diverged {
        /// The epoch.
        epoch: usize,
        /// The loss value.
        loss: f64,
    },
}

/// The outcome of [`fit`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    /// Per-epoch records.
    pub history: Vec<EpochRecord>,
    /// The epoch whose state the model now holds (`None` when never validated).
    pub best_epoch: Option<usize>,
    /// The selection metric at that epoch.
    pub best_metric: Option<f64>,
    /// Why training stopped.
    pub stop: StopReason,
    /// Total wall-clock seconds.
    pub secs: f64,
}

impl FitReport {
    /// Refuses a run that stopped on a non-finite loss, for callers whose model must be trained (a retrain):
    /// [`fit`] then leaves the last good state, which is the random initialisation when the first epoch
    /// diverged.
    ///
    /// # Errors
    /// [`Error::Diverged`] with the epoch and loss of [`StopReason::Diverged`].
    pub fn require_converged(&self) -> Result<()> {
        match self.stop {
            StopReason::Diverged { epoch, loss } => Err(Error::Diverged { epoch, loss }),
            _ => Ok(()),
        }
    }
}

/// Progress callbacks; the library never prints, the CLI draws bars from these.
pub trait Observer {
    /// An epoch of `n_steps` minibatches starts.
    fn epoch_start(&mut self, _epoch: usize, _n_steps: usize) {}
    /// A minibatch finished with this loss.
    fn step(&mut self, _step: usize, _loss: f64) {}
    /// An epoch finished.
    fn epoch_end(&mut self, _record: &EpochRecord) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// Validation metrics of `model` on `data.valid` (training items masked).
pub fn validate(model: &Backbone, data: &TrainData, ks: &[usize]) -> Result<RankingReport> {
    let emb = model.final_embeddings(&data.adj)?;
    let cfg = EvalConfig { ks: ks.to_vec(), ..EvalConfig::default() };
    crate::eval::evaluate_ranking(&emb.users, &emb.items, emb.dim, data.graph.user_items(), &data.valid, &cfg)
}

/// Trains `model` on `data` with BPR minibatches; validates every `eval_every` epochs and keeps the best
/// state by `select_metric` on the validation split. On return the model holds the best validated state
/// (or the last one when nothing was validated).
///
/// # Errors
/// Invalid configuration or tensor errors. A non-finite loss is not an error: the report says
/// [`StopReason::Diverged`] and the model holds the last good state.
pub fn fit(model: &mut Backbone, data: &TrainData, cfg: &TrainConfig, obs: &mut dyn Observer) -> Result<FitReport> {
    cfg.validate()?;
    let start = Instant::now();
    let (metric_name, metric_k) = parse_metric(&cfg.select_metric)?;
    let metric_key = format!("{metric_name}@{metric_k}");
    let mut ks = vec![10, 20, 50];
    if !ks.contains(&metric_k) {
        ks.push(metric_k);
        ks.sort_unstable();
    }
    let mut report =
        FitReport { history: vec![], best_epoch: None, best_metric: None, stop: StopReason::Completed, secs: 0.0 };
    if model.kind() == ModelKind::Pop {
        report.secs = start.elapsed().as_secs_f64();
        return Ok(report);
    }
    let mut opt = Adam::new(vec![model.base().clone()], AdamConfig { lr: cfg.lr, ..AdamConfig::default() })?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut best_state: Option<Vec<f32>> = None;
    let mut bad_evals = 0usize;
    let has_valid = data.valid.nnz() > 0;
    for epoch in 0..cfg.epochs {
        let t0 = Instant::now();
        // Without a validated state yet, the state at the start of the epoch is the last good one.
        let epoch_start = if best_state.is_none() { Some(model.base_vec()?) } else { None };
        let triples = sampler::sample_epoch(data.graph.user_items(), cfg.seed, epoch as u64);
        let views = if model.kind() == ModelKind::Sgl && model.config.ssl_reg > 0.0 {
            Some(SglViews::sample(&data.graph, model.config.keep_rate, &mut rng)?)
        } else {
            None
        };
        let mut n_steps = triples.n_batches(cfg.batch_size);
        if let Some(cap) = cfg.max_steps_per_epoch {
            n_steps = n_steps.min(cap);
        }
        obs.epoch_start(epoch, n_steps);
        let mut loss_sum = 0.0;
        for step in 0..n_steps {
            let batch = triples.batch(step, cfg.batch_size);
            let e0 = model.base().as_tensor().clone();
            let parts = model.loss(LossInput {
                adj: &data.adj,
                e0: &e0,
                batch: &batch,
                sgl_views: views.as_ref(),
                rng: &mut rng,
                with_reg: true,
            })?;
            let loss = parts.total.to_scalar::<f32>()? as f64;
            if !loss.is_finite() {
                if let Some(good) = best_state.as_ref().or(epoch_start.as_ref()) {
                    model.set_base(good)?;
                }
                report.stop = StopReason::Diverged { epoch, loss };
                report.secs = start.elapsed().as_secs_f64();
                return Ok(report);
            }
            opt.step(&parts.total.backward()?)?;
            loss_sum += loss;
            obs.step(step, loss);
        }
        if cfg.lr_decay < 1.0 {
            opt.set_lr((opt.lr() * cfg.lr_decay).max(cfg.lr * 1e-4));
        }
        let mut rec = EpochRecord {
            epoch,
            loss: loss_sum / n_steps.max(1) as f64,
            train_secs: t0.elapsed().as_secs_f64(),
            valid: None,
        };
        let last = epoch + 1 == cfg.epochs;
        if has_valid && ((epoch + 1) % cfg.eval_every == 0 || last) {
            let r = validate(model, data, &ks)?;
            let m = r.metrics.get(&metric_key).copied().unwrap_or(0.0);
            rec.valid = Some(r.metrics);
            if report.best_metric.is_none_or(|b| m > b) {
                report.best_metric = Some(m);
                report.best_epoch = Some(epoch);
                best_state = Some(model.base_vec()?);
                bad_evals = 0;
            } else {
                bad_evals += 1;
            }
        }
        obs.epoch_end(&rec);
        report.history.push(rec);
        if cfg.patience > 0 && bad_evals >= cfg.patience {
            report.stop = StopReason::EarlyStopped;
            break;
        }
    }
    if let Some(best) = &best_state {
        model.set_base(best)?;
    }
    report.secs = start.elapsed().as_secs_f64();
    Ok(report)
}
