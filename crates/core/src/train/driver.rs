//! The one training loop: epochs of minibatch Adam steps, validation on a schedule, the best validated state
//! kept and restored, early stopping, divergence handling and progress events.
//!
//! Whoever trains something supplies its [`Steps`]: how an epoch starts (its negatives, augmentations, simulated
//! request: the epoch's random draws), the loss of each step, how a state is validated and how it is copied
//! and restored. [`run`] does the rest, in this order per epoch:
//!
//! 1. without a kept state yet and with [`OnDivergence::KeepLastGood`], copy the state (the last good one);
//! 2. [`Steps::begin_epoch`] → `n_steps`; [`Observer::epoch_start`];
//! 3. per step: [`Steps::loss`]; a non-finite value stops the run ([`OnDivergence`]); otherwise Adam steps on
//!    its gradient and [`Observer::step`] sees it;
//! 4. the learning-rate decay, if any;
//! 5. on a validation epoch ([`Schedule::validate_every`], and always the last), [`Steps::validate`]; an eligible
//!    validation whose score beats the kept one (strictly) is kept ([`Steps::snapshot`]), any other counts
//!    towards [`Schedule::patience`];
//! 6. [`Observer::epoch_end`] with the epoch's [`EpochRecord`]; early stop when patience is exhausted.
//!
//! At the end the kept state is restored ([`Steps::restore`]); without one, the state is the last one.
//! [`super::fit`], the encoder's pre-training ([`crate::unlearn::pretrain`]), UnlearnRec's fine-tuning
//! ([`crate::unlearn::unlearn`]), gradient ascent ([`crate::unlearn::baselines::gradient_ascent()`]) and RecEraser's
//! aggregator ([`crate::unlearn::baselines::sisa::attention::train_attention`]) all run on it.

use std::time::Instant;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::Adam;
use crate::error::{Error, Result};
use crate::eval::Metrics;

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
    pub valid: Option<Metrics>,
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

/// Progress callbacks; the library never prints, the CLI draws bars from these.
pub trait Observer {
    /// An epoch of `n_steps` minibatches starts.
    fn epoch_start(&mut self, _epoch: usize, _n_steps: usize) {}
    /// A minibatch finished with this loss.
    fn step(&mut self, _step: usize, _loss: f64) {}
    /// An epoch finished.
    fn epoch_end(&mut self, _record: &EpochRecord) {}
    /// A validation pass is about to start: the final embeddings of the whole graph, the largest buffers
    /// of a run. A binary can return the memory its allocator keeps from the steps to the system here.
    fn validation_start(&mut self) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// What to do on a non-finite loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDivergence {
    /// Fail with [`Error::Diverged`] at once; the state is left as it is.
    Fail,
    /// Restore the kept state, or the state at the start of the epoch when none was kept yet, and stop with
    /// [`StopReason::Diverged`].
    KeepLastGood,
}

/// A per-epoch learning-rate decay: after each epoch, `lr ← max(lr · factor, floor)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrDecay {
    /// The factor, in (0, 1).
    pub factor: f64,
    /// The rate never goes below this.
    pub floor: f64,
}

/// When [`run`] validates and what it does with the results.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// Epochs.
    pub epochs: usize,
    /// Validate after every this many epochs, and after the last one; `None`: never.
    pub validate_every: Option<usize>,
    /// Validate the state before the first epoch too (it may be kept).
    pub validate_initial: bool,
    /// Stop after this many validations in a row that keep nothing (0 = never).
    pub patience: usize,
    /// The learning-rate decay, if any.
    pub lr_decay: Option<LrDecay>,
    /// What a non-finite loss does.
    pub on_divergence: OnDivergence,
}

impl Schedule {
    /// `epochs` epochs validated after every `validate_every` and the last, no initial validation, no
    /// patience, no decay, failing on divergence.
    pub fn new(epochs: usize, validate_every: Option<usize>) -> Self {
        Self {
            epochs,
            validate_every,
            validate_initial: false,
            patience: 0,
            lr_decay: None,
            on_divergence: OnDivergence::Fail,
        }
    }

    /// Whether the state after `epoch` (0-based) is validated.
    pub fn validates(&self, epoch: usize) -> bool {
        self.validate_every.is_some_and(|every| (epoch + 1).is_multiple_of(every.max(1)) || epoch + 1 == self.epochs)
    }
}

/// One validation of the current state, as [`Steps::validate`] measures it.
#[derive(Clone, Debug, PartialEq)]
pub struct Validation<D> {
    /// The selection score: higher is better.
    pub score: f64,
    /// Whether the state may be kept at all (pre-training refuses states that cost too much quality).
    pub eligible: bool,
    /// The metrics that the epoch's [`EpochRecord::valid`] shows observers (`None`: none).
    pub metrics: Option<Metrics>,
    /// The caller's own figures.
    pub detail: D,
}

/// A validation as [`run`] recorded it.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked<D> {
    /// The epoch after which it was taken; `None` for the state before training.
    pub epoch: Option<usize>,
    /// The selection score.
    pub score: f64,
    /// Whether this state became the kept one (a later one may have replaced it).
    pub kept: bool,
    /// The caller's own figures.
    pub detail: D,
}

/// The outcome of [`run`].
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome<D> {
    /// The finished epochs (not the one that diverged).
    pub history: Vec<EpochRecord>,
    /// Every validation, in order.
    pub validations: Vec<Checked<D>>,
    /// The index in `validations` of the state now held, if one was kept.
    pub best: Option<usize>,
    /// Why the run stopped.
    pub stop: StopReason,
}

impl<D> Outcome<D> {
    /// The kept validation.
    pub fn best(&self) -> Option<&Checked<D>> {
        self.best.map(|i| &self.validations[i])
    }

    /// The validations taken after the training epochs, with their epoch (the initial one left out).
    pub fn after_epochs(&self) -> impl Iterator<Item = (usize, &Checked<D>)> {
        self.validations.iter().filter_map(|c| Some((c.epoch?, c)))
    }
}

/// What a training procedure supplies to [`run`].
pub trait Steps {
    /// A copy of the state the loop keeps and restores.
    type State;
    /// The caller's own figures of a validation.
    type Detail;

    /// Prepares `epoch` (0-based) and returns its number of steps. Everything an epoch draws at random
    /// before its first step is drawn here.
    fn begin_epoch(&mut self, epoch: usize) -> Result<usize>;

    /// The scalar loss of step `step` of the current epoch, whose gradient reaches the optimiser's
    /// variables.
    fn loss(&mut self, step: usize) -> Result<Tensor>;

    /// Validates the current state. Called only on the schedule's validation epochs.
    fn validate(&mut self) -> Result<Validation<Self::Detail>>;

    /// A copy of the current state: called right after a validation that is kept, and at the start of an
    /// epoch under [`OnDivergence::KeepLastGood`] while none is kept.
    fn snapshot(&mut self) -> Result<Self::State>;

    /// Puts a copied state back.
    fn restore(&mut self, state: Self::State) -> Result<()>;
}

/// Per-run bookkeeping of the kept state.
struct Keeper<S, D> {
    out: Outcome<D>,
    state: Option<S>,
    /// Validations in a row that kept nothing.
    bad: usize,
}

impl<S, D> Keeper<S, D> {
    /// Validates the current state of `steps` after `epoch` and keeps it if it is eligible and beats the kept
    /// one; returns the metrics to show.
    fn check<T: Steps<State = S, Detail = D> + ?Sized>(
        &mut self,
        steps: &mut T,
        epoch: Option<usize>,
    ) -> Result<Option<Metrics>> {
        let v = steps.validate()?;
        let kept = v.eligible && self.out.best().is_none_or(|b| v.score > b.score);
        if kept {
            self.state = Some(steps.snapshot()?);
            self.out.best = Some(self.out.validations.len());
            self.bad = 0;
        } else {
            self.bad += 1;
        }
        self.out.validations.push(Checked { epoch, score: v.score, kept, detail: v.detail });
        Ok(v.metrics)
    }
}

/// Trains with `steps` and `opt` on `schedule`, reporting to `obs` (see the [module docs](self) for the
/// order of events). On return the state is the kept one, or the last one when nothing was kept.
///
/// # Errors
/// Errors of `steps` and of the optimiser; [`Error::Diverged`] on a non-finite loss under
/// [`OnDivergence::Fail`] (under [`OnDivergence::KeepLastGood`] the outcome says [`StopReason::Diverged`]).
pub fn run<T: Steps + ?Sized>(
    steps: &mut T,
    opt: &mut Adam,
    schedule: &Schedule,
    obs: &mut dyn Observer,
) -> Result<Outcome<T::Detail>> {
    let mut keeper: Keeper<T::State, T::Detail> = Keeper {
        out: Outcome { history: vec![], validations: vec![], best: None, stop: StopReason::Completed },
        state: None,
        bad: 0,
    };
    if schedule.validate_initial {
        obs.validation_start();
        keeper.check(steps, None)?;
    }
    for epoch in 0..schedule.epochs {
        let t0 = Instant::now();
        let keep_last_good = schedule.on_divergence == OnDivergence::KeepLastGood;
        let epoch_start = if keep_last_good && keeper.state.is_none() { Some(steps.snapshot()?) } else { None };
        let n_steps = steps.begin_epoch(epoch)?;
        obs.epoch_start(epoch, n_steps);
        let mut loss_sum = 0.0;
        for step in 0..n_steps {
            let total = steps.loss(step)?;
            let loss = f64::from(total.to_scalar::<f32>()?);
            if !loss.is_finite() {
                if !keep_last_good {
                    return Err(Error::Diverged { epoch, loss });
                }
                if let Some(good) = keeper.state.or(epoch_start) {
                    steps.restore(good)?;
                }
                keeper.out.stop = StopReason::Diverged { epoch, loss };
                return Ok(keeper.out);
            }
            opt.step(&total.backward()?)?;
            loss_sum += loss;
            obs.step(step, loss);
        }
        if let Some(d) = schedule.lr_decay {
            opt.set_lr((opt.lr() * d.factor).max(d.floor));
        }
        let mut rec = EpochRecord {
            epoch,
            loss: loss_sum / n_steps.max(1) as f64,
            train_secs: t0.elapsed().as_secs_f64(),
            valid: None,
        };
        if schedule.validates(epoch) {
            obs.validation_start();
            rec.valid = keeper.check(steps, Some(epoch))?;
        }
        obs.epoch_end(&rec);
        keeper.out.history.push(rec);
        if schedule.patience > 0 && keeper.bad >= schedule.patience {
            keeper.out.stop = StopReason::EarlyStopped;
            break;
        }
    }
    if let Some(best) = keeper.state {
        steps.restore(best)?;
    }
    Ok(keeper.out)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::eval::MetricKey;
    use crate::train::AdamConfig;

    /// One parameter `x` pulled towards 10 by `(x − 10)²`; validations score from a script; every call is
    /// logged.
    struct Toy {
        x: Var,
        steps_per_epoch: usize,
        /// The score of the i-th validation (the initial one included), and whether it is eligible.
        scores: Vec<(f64, bool)>,
        /// A NaN loss at this (epoch, step).
        nan_at: Option<(usize, usize)>,
        epoch: usize,
        /// `x` at each validation.
        at_validation: Vec<f32>,
        /// `x` at the start of each epoch.
        at_epoch_start: Vec<f32>,
        calls: Vec<String>,
    }

    impl Toy {
        fn new(steps_per_epoch: usize, scores: &[f64]) -> Self {
            Self {
                x: Var::new(0f32, &Device::Cpu).unwrap(),
                steps_per_epoch,
                scores: scores.iter().map(|&s| (s, true)).collect(),
                nan_at: None,
                epoch: 0,
                at_validation: vec![],
                at_epoch_start: vec![],
                calls: vec![],
            }
        }

        fn x(&self) -> f32 {
            self.x.as_tensor().to_scalar::<f32>().unwrap()
        }

        fn opt(&self, lr: f64) -> Adam {
            Adam::new(vec![self.x.clone()], AdamConfig { lr, ..AdamConfig::default() }).unwrap()
        }
    }

    impl Steps for Toy {
        type State = f32;
        type Detail = usize;

        fn begin_epoch(&mut self, epoch: usize) -> Result<usize> {
            self.calls.push(format!("begin {epoch}"));
            self.epoch = epoch;
            self.at_epoch_start.push(self.x());
            Ok(self.steps_per_epoch)
        }

        fn loss(&mut self, step: usize) -> Result<Tensor> {
            let l = (self.x.as_tensor() - 10.0)?.sqr()?;
            if self.nan_at == Some((self.epoch, step)) {
                return Ok((l * f64::NAN)?);
            }
            Ok(l)
        }

        fn validate(&mut self) -> Result<Validation<usize>> {
            let i = self.at_validation.len();
            self.calls.push(format!("validate {i}"));
            self.at_validation.push(self.x());
            let (score, eligible) = self.scores[i];
            let metrics = [(MetricKey::RECALL_20, score)].into_iter().collect();
            Ok(Validation { score, eligible, metrics: Some(metrics), detail: i })
        }

        fn snapshot(&mut self) -> Result<f32> {
            self.calls.push("snapshot".into());
            Ok(self.x())
        }

        fn restore(&mut self, state: f32) -> Result<()> {
            self.calls.push(format!("restore {state}"));
            self.x.set(&Tensor::new(state, &Device::Cpu)?)?;
            Ok(())
        }
    }

    /// Logs every observer event.
    #[derive(Default)]
    struct Log(Vec<String>);

    impl Observer for Log {
        fn epoch_start(&mut self, epoch: usize, n_steps: usize) {
            self.0.push(format!("start {epoch} {n_steps}"));
        }
        fn step(&mut self, step: usize, loss: f64) {
            self.0.push(format!("step {step} {loss}"));
        }
        fn epoch_end(&mut self, r: &EpochRecord) {
            let v = r.valid.as_ref().map(|m| m[&MetricKey::RECALL_20]);
            self.0.push(format!("end {} {} {v:?}", r.epoch, r.loss));
        }
        fn validation_start(&mut self) {
            self.0.push("validate".into());
        }
    }

    #[test]
    fn validates_on_schedule_and_restores_the_best_state() {
        // Validations after epochs 1, 3 and 4 (the last); the first is best, an equal score does not replace
        // it.
        let mut toy = Toy::new(2, &[0.5, 0.5, 0.4]);
        let mut opt = toy.opt(0.1);
        let out = run(&mut toy, &mut opt, &Schedule::new(5, Some(2)), &mut Silent).unwrap();
        assert_eq!(out.stop, StopReason::Completed);
        assert_eq!(out.history.len(), 5);
        let epochs: Vec<Option<usize>> = out.validations.iter().map(|c| c.epoch).collect();
        assert_eq!(epochs, [Some(1), Some(3), Some(4)]);
        assert_eq!(out.validations.iter().map(|c| c.kept).collect::<Vec<_>>(), [true, false, false]);
        assert_eq!(out.best().map(|b| (b.epoch, b.score, b.detail)), Some((Some(1), 0.5, 0)));
        let valid: Vec<bool> = out.history.iter().map(|r| r.valid.is_some()).collect();
        assert_eq!(valid, [false, true, false, true, true]);
        // The state is the one validated after epoch 1, not the last.
        assert_eq!(toy.x(), toy.at_validation[0]);
        assert_ne!(toy.at_validation[0], toy.at_validation[2]);
        assert_eq!(toy.calls.iter().filter(|c| *c == "snapshot").count(), 1);
    }

    #[test]
    fn without_validation_the_last_state_stays() {
        let mut toy = Toy::new(3, &[]);
        let mut opt = toy.opt(0.1);
        let out = run(&mut toy, &mut opt, &Schedule::new(3, None), &mut Silent).unwrap();
        assert_eq!((out.history.len(), out.validations.len(), out.best), (3, 0, None));
        assert!(!toy.calls.iter().any(|c| c.starts_with("restore") || c == "snapshot"));
        assert!(toy.x() > toy.at_epoch_start[2]);
    }

    #[test]
    fn patience_stops_after_validations_that_keep_nothing() {
        let mut toy = Toy::new(1, &[0.1, 0.3, 0.2, 0.25, 0.9]);
        let mut opt = toy.opt(0.1);
        let schedule = Schedule { patience: 2, ..Schedule::new(20, Some(2)) };
        let out = run(&mut toy, &mut opt, &schedule, &mut Silent).unwrap();
        assert_eq!(out.stop, StopReason::EarlyStopped);
        // Validations after epochs 1, 3, 5, 7: two in a row below 0.3 stop after epoch 7.
        assert_eq!(out.history.len(), 8);
        assert_eq!(out.best().and_then(|b| b.epoch), Some(3));
        assert_eq!(toy.x(), toy.at_validation[1]);
        // An improvement resets the count.
        let mut toy = Toy::new(1, &[0.1, 0.05, 0.2, 0.15, 0.3, 0.1, 0.1]);
        let out = run(&mut toy, &mut opt, &schedule, &mut Silent).unwrap();
        assert_eq!(out.stop, StopReason::EarlyStopped);
        assert_eq!((out.history.len(), out.best().and_then(|b| b.epoch)), (14, Some(9)));
        // No patience: every epoch runs.
        let mut toy = Toy::new(1, &[0.3, 0.2, 0.1]);
        let out = run(&mut toy, &mut opt, &Schedule::new(6, Some(2)), &mut Silent).unwrap();
        assert_eq!((out.stop, out.history.len()), (StopReason::Completed, 6));
    }

    #[test]
    fn the_initial_state_competes_and_ineligible_states_are_never_kept() {
        // The initial state (score 0.1) is kept; the trained ones score higher but are not eligible.
        let mut toy = Toy::new(2, &[0.1, 0.5, 0.7]);
        toy.scores[1].1 = false;
        toy.scores[2].1 = false;
        let mut opt = toy.opt(0.1);
        let schedule = Schedule { validate_initial: true, ..Schedule::new(2, Some(1)) };
        let out = run(&mut toy, &mut opt, &schedule, &mut Silent).unwrap();
        let seen: Vec<(Option<usize>, bool)> = out.validations.iter().map(|c| (c.epoch, c.kept)).collect();
        assert_eq!(seen, [(None, true), (Some(0), false), (Some(1), false)]);
        assert_eq!(out.best().map(|b| b.epoch), Some(None));
        assert_eq!(toy.x(), 0.0);
        assert_eq!(out.after_epochs().map(|(e, c)| (e, c.detail)).collect::<Vec<_>>(), [(0, 1), (1, 2)]);
        // The initial state is validated before the first epoch begins.
        assert_eq!(toy.calls[..3], ["validate 0", "snapshot", "begin 0"]);
    }

    #[test]
    fn a_non_finite_loss_fails_at_once() {
        let mut toy = Toy::new(3, &[0.5, 0.6, 0.7]);
        toy.nan_at = Some((2, 1));
        let mut opt = toy.opt(0.1);
        let mut log = Log::default();
        let err = run(&mut toy, &mut opt, &Schedule::new(4, Some(1)), &mut log).unwrap_err();
        assert!(matches!(err, Error::Diverged { epoch: 2, loss } if loss.is_nan()), "{err}");
        // The diverged step is neither applied nor observed, and the epoch does not end.
        assert_eq!(log.0.last().map(|e| e.split(' ').take(2).collect::<Vec<_>>()), Some(vec!["step", "0"]));
        assert!(log.0.iter().filter(|e| e.starts_with("end")).count() == 2);
        assert!(!toy.calls.iter().any(|c| c.starts_with("restore")));
    }

    #[test]
    fn keep_last_good_restores_the_kept_state_on_divergence() {
        let mut toy = Toy::new(3, &[0.5, 0.4, 0.7]);
        toy.nan_at = Some((2, 2));
        let mut opt = toy.opt(0.1);
        let schedule = Schedule { on_divergence: OnDivergence::KeepLastGood, ..Schedule::new(4, Some(1)) };
        let out = run(&mut toy, &mut opt, &schedule, &mut Silent).unwrap();
        assert!(matches!(out.stop, StopReason::Diverged { epoch: 2, loss } if loss.is_nan()), "{:?}", out.stop);
        assert_eq!(out.history.len(), 2);
        assert_eq!(out.best().and_then(|b| b.epoch), Some(0));
        assert_eq!(toy.x(), toy.at_validation[0]);
        // Epoch-start copies are taken only while nothing is kept.
        assert_eq!(toy.calls.iter().filter(|c| *c == "snapshot").count(), 2);
    }

    #[test]
    fn keep_last_good_without_a_kept_state_restores_the_diverged_epochs_start() {
        let mut toy = Toy::new(3, &[]);
        toy.nan_at = Some((2, 1));
        let mut opt = toy.opt(0.1);
        let schedule = Schedule { on_divergence: OnDivergence::KeepLastGood, ..Schedule::new(4, None) };
        let out = run(&mut toy, &mut opt, &schedule, &mut Silent).unwrap();
        assert!(matches!(out.stop, StopReason::Diverged { epoch: 2, .. }));
        assert_eq!(toy.x(), toy.at_epoch_start[2]);
        assert_ne!(toy.at_epoch_start[2], toy.at_epoch_start[1]);
        // Divergence in the first epoch: the initial state.
        let mut toy = Toy::new(3, &[]);
        toy.nan_at = Some((0, 2));
        let out = run(&mut toy, &mut opt, &schedule, &mut Silent).unwrap();
        assert!(matches!(out.stop, StopReason::Diverged { epoch: 0, .. }));
        assert_eq!((toy.x(), out.history.len()), (0.0, 0));
    }

    #[test]
    fn observers_see_every_epoch_and_step_in_order() {
        let mut toy = Toy::new(2, &[0.25, 0.75]);
        let mut opt = toy.opt(0.5);
        let mut log = Log::default();
        let out = run(&mut toy, &mut opt, &Schedule::new(3, Some(2)), &mut log).unwrap();
        let shape: Vec<String> = log.0.iter().map(|e| e.split(' ').take(2).collect::<Vec<_>>().join(" ")).collect();
        // Validations after epochs 1 and 2 (every 2, and the last), each announced before it runs.
        assert_eq!(
            shape,
            [
                "start 0", "step 0", "step 1", "end 0", "start 1", "step 0", "step 1", "validate", "end 1", "start 2",
                "step 0", "step 1", "validate", "end 2"
            ]
        );
        assert_eq!(log.0[0], "start 0 2");
        // The first step's loss is (0 − 10)²; each epoch's record is the mean of its steps' losses and shows
        // the validation metrics of validated epochs.
        assert_eq!(log.0[1], "step 0 100");
        let starts: Vec<usize> = (0..log.0.len()).filter(|&k| log.0[k].starts_with("start")).collect();
        let ends: Vec<&String> = log.0.iter().filter(|e| e.starts_with("end")).collect();
        for (e, r) in out.history.iter().enumerate() {
            let losses: Vec<f64> = log.0[starts[e] + 1..starts[e] + 3]
                .iter()
                .map(|s| s.rsplit(' ').next().unwrap().parse().unwrap())
                .collect();
            assert_eq!(r.loss, (losses[0] + losses[1]) / 2.0);
        }
        assert!(ends[0].ends_with("None") && ends[1].ends_with("Some(0.25)") && ends[2].ends_with("Some(0.75)"));
    }

    #[test]
    fn the_learning_rate_decays_to_its_floor() {
        let mut toy = Toy::new(1, &[]);
        let mut opt = toy.opt(1.0);
        let schedule = Schedule { lr_decay: Some(LrDecay { factor: 0.5, floor: 0.1 }), ..Schedule::new(3, None) };
        run(&mut toy, &mut opt, &schedule, &mut Silent).unwrap();
        assert_eq!(opt.lr(), 0.125);
        run(&mut toy, &mut opt, &schedule, &mut Silent).unwrap();
        assert_eq!(opt.lr(), 0.1);
    }
}
