//! Training: BPR minibatches with per-epoch seeded negatives, Adam, periodic validation, early stopping and
//! best-state keeping.
//!
//! [`fit`] trains a backbone on the one training loop of [`driver`] (which the encoder's pre-training,
//! UnlearnRec's fine-tuning and the gradient baselines drive with their own steps); retraining and the
//! fine-tuning baseline call [`fit`] itself. It never looks at the test split: model selection uses the
//! validation split only.

use std::time::Instant;

use candle_core::Tensor;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::Interactions;
use crate::error::{Error, Result};
use crate::eval::{EvalConfig, MetricKey, RankingReport};
use crate::graph::{Csr, Graph, NormAdj};
use crate::model::{Backbone, EpochState, RegTerm};
use crate::tensor::{GradSink, SpMat};

pub mod adam;
pub mod driver;
pub mod sampler;

pub use adam::{Adam, AdamConfig};
pub use driver::{
    Checked, EpochRecord, LrDecay, Observer, OnDivergence, Outcome, Schedule, Silent, Steps, StopReason, Validation,
};
use sampler::Triples;

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
    /// The validation metric to select on, `name@k` in files.
    pub select_metric: MetricKey,
    /// Steps per epoch at most (the reference stops at 2501; `None` = all minibatches).
    pub max_steps_per_epoch: Option<usize>,
    /// Seed of initialisation, shuffling, negatives and augmentations.
    pub seed: u64,
    /// Fraction of each user's training interactions carved out as validation when the data has none.
    pub valid_ratio: f64,
    /// How an epoch's positive pairs are drawn ([`Sampling`]).
    pub sampling: Sampling,
    /// The node order the propagation runs in ([`NodeOrder`]).
    pub node_order: NodeOrder,
}

/// The order of the table's rows during training: training renumbers the graph and the table on entry and
/// the table back on exit, and draws its batches in the dataset's ids. For MF and LightGCN the run is the same
/// in either order up to the float rounding of the products' sums; SGL's dropout views and SimGCL's noise are
/// drawn in the training order, so their runs differ by those draws (of the same distribution).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeOrder {
    /// Reverse Cuthill–McKee, users then items ([`crate::graph::Relabel::rcm`]): neighbours' rows near each
    /// other, so the propagation's gathers hit the cache more often (docs/benchmarks.md, "Node order").
    #[default]
    Rcm,
    /// The dataset's own ids.
    Dataset,
}

/// How an epoch's (user, positive) pairs are drawn; each gets a seeded negative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    /// Every training edge once, shuffled (the UnlearnRec reference).
    #[default]
    Edges,
    /// As many pairs as edges, each a uniform user then a uniform item of theirs (the LightGCN paper's code):
    /// every user weighs the same, whatever their degree.
    Users,
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
            select_metric: MetricKey::RECALL_20,
            max_steps_per_epoch: None,
            seed: 1234,
            valid_ratio: 0.05,
            sampling: Sampling::Edges,
            node_order: NodeOrder::Rcm,
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
        if self.select_metric.k == 0 {
            return Err(Error::config("train.select_metric", "the cut-off must be at least 1"));
        }
        Ok(())
    }
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
    let metric = cfg.select_metric;
    let mut ks = vec![10, 20, 50];
    if !ks.contains(&metric.k) {
        ks.push(metric.k);
        ks.sort_unstable();
    }
    if !model.architecture().learns_embeddings() {
        return Ok(FitReport {
            history: vec![],
            best_epoch: None,
            best_metric: None,
            stop: StopReason::Completed,
            secs: start.elapsed().as_secs_f64(),
        });
    }
    // A graph model trains in a locality order: the graph, the validation split and the table renumbered
    // here and the table back at the end. Batches are drawn in the dataset's ids and renumbered, so the run
    // takes the same steps as in the dataset's order (up to the float rounding of the products' sums).
    let relabel = (cfg.node_order == NodeOrder::Rcm && model.architecture().propagates())
        .then(|| crate::graph::Relabel::rcm(&data.graph));
    let relabelled = relabel.as_ref().map(|r| {
        let graph = r.graph(&data.graph);
        let adj = SpMat::from_norm_adj(&NormAdj::from_graph(&graph));
        TrainData { graph, adj, valid: r.user_items(&data.valid) }
    });
    if let Some(r) = &relabel {
        model.map_base(|t| r.rows_to_new(t, model.dim()))?;
    }
    let out = fit_in_order(model, data, relabelled.as_ref(), relabel.as_ref(), cfg, ks, metric, obs);
    if let Some(r) = &relabel {
        model.map_base(|t| r.rows_to_old(t, model.dim()))?;
    }
    let out = out?;
    let best = out.best();
    Ok(FitReport {
        best_epoch: best.and_then(|b| b.epoch),
        best_metric: best.map(|b| b.score),
        history: out.history,
        stop: out.stop,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// [`fit`]'s run, on `relabelled` data when given (with `relabel` renumbering the batches drawn from `data`).
#[allow(clippy::too_many_arguments)]
fn fit_in_order(
    model: &mut Backbone,
    data: &TrainData,
    relabelled: Option<&TrainData>,
    relabel: Option<&crate::graph::Relabel>,
    cfg: &TrainConfig,
    ks: Vec<usize>,
    metric: MetricKey,
    obs: &mut dyn Observer,
) -> Result<driver::Outcome<()>> {
    let mut opt = Adam::new(vec![model.base().clone()], fit_adam(model, cfg.lr))?;
    // The fused ops hand the table's gradient to Adam directly (no table of zeros plus an addition per step).
    let sink = GradSink::new();
    opt.attach_sink(model.base(), sink.clone())?;
    let schedule = Schedule {
        patience: cfg.patience,
        lr_decay: (cfg.lr_decay < 1.0).then_some(LrDecay { factor: cfg.lr_decay, floor: cfg.lr * 1e-4 }),
        on_divergence: OnDivergence::KeepLastGood,
        ..Schedule::new(cfg.epochs, (data.valid.nnz() > 0).then_some(cfg.eval_every))
    };
    let mut steps = FitSteps {
        model,
        data: relabelled.unwrap_or(data),
        sample_from: data,
        relabel,
        cfg,
        ks,
        metric,
        rng: ChaCha8Rng::seed_from_u64(cfg.seed),
        triples: Triples::default(),
        epoch_state: None,
        sink,
    };
    driver::run(&mut steps, &mut opt, &schedule, obs)
}

/// Training's Adam for `model`'s base table at `lr`: with weight decay `2 · reg` when its regulariser is the
/// whole table's `reg · ‖E⁰‖²`, whose gradient the loss then leaves out ([`Backbone::fit_reg_term`]).
pub fn fit_adam(model: &Backbone, lr: f64) -> AdamConfig {
    let weight_decay = if model.fit_reg_term() == RegTerm::ValueOnly { 2.0 * model.config.reg } else { 0.0 };
    AdamConfig { lr, weight_decay, ..AdamConfig::default() }
}

/// [`fit`]'s step functions: the backbone's own loss on the epoch's BPR triples (and the epoch's state the
/// model draws, SGL's augmented views), validated by `metric` on the validation split.
struct FitSteps<'a> {
    model: &'a mut Backbone,
    /// The data the model propagates over and is validated on (renumbered when `relabel` is given).
    data: &'a TrainData,
    /// The data batches are drawn from, in the dataset's ids.
    sample_from: &'a TrainData,
    /// The renumbering from `sample_from`'s ids to `data`'s.
    relabel: Option<&'a crate::graph::Relabel>,
    cfg: &'a TrainConfig,
    /// The cut-offs validated.
    ks: Vec<usize>,
    /// The selection metric.
    metric: MetricKey,
    rng: ChaCha8Rng,
    triples: Triples,
    epoch_state: Option<EpochState>,
    /// The base table's gradient, read by the run's Adam.
    sink: GradSink,
}

impl Steps for FitSteps<'_> {
    type State = Vec<f32>;
    type Detail = ();

    fn begin_epoch(&mut self, epoch: usize) -> Result<usize> {
        let (model, cfg) = (&*self.model, self.cfg);
        let seen = self.sample_from.graph.user_items();
        self.triples = match cfg.sampling {
            Sampling::Edges => sampler::sample_epoch(seen, cfg.seed, epoch as u64),
            Sampling::Users => sampler::sample_epoch_by_users(seen, cfg.seed, epoch as u64),
        };
        // Drawn in the dataset's ids, propagated in the training order.
        if let Some(r) = self.relabel {
            let all = &mut self.triples.all;
            all.users.par_iter_mut().for_each(|u| *u = r.user_new[*u as usize]);
            all.pos.par_iter_mut().chain(all.neg.par_iter_mut()).for_each(|i| *i = r.item_new[*i as usize]);
        }
        self.epoch_state = model.epoch_state(&self.data.graph, &mut self.rng)?;
        let n_steps = self.triples.n_batches(cfg.batch_size);
        Ok(cfg.max_steps_per_epoch.map_or(n_steps, |cap| n_steps.min(cap)))
    }

    fn loss(&mut self, step: usize) -> Result<Tensor> {
        let batch = self.triples.batch(step, self.cfg.batch_size);
        Ok(self
            .model
            .train_loss(&self.data.adj, &batch, self.epoch_state.as_ref(), &mut self.rng, Some(&self.sink))?
            .total)
    }

    fn validate(&mut self) -> Result<Validation<()>> {
        let r = validate(self.model, self.data, &self.ks)?;
        Ok(Validation { score: r.metrics.require(self.metric)?, eligible: true, metrics: Some(r.metrics), detail: () })
    }

    fn snapshot(&mut self) -> Result<Vec<f32>> {
        self.model.base_vec()
    }

    fn restore(&mut self, state: Vec<f32>) -> Result<()> {
        self.model.set_base(&state)
    }
}
