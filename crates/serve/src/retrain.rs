//! The optional consolidation schedule (`--retrain-every-secs`, `--consolidate-after-edges`): an exact retrain
//! of the served version in the background, with a fresh unlearner for it, swapped in when done.
//!
//! The served model is its *anchor* (the last exactly trained model) with every edge removed since applied
//! by the encoder in one pass ([`unlearnrec_core::checkpoint::Anchor`]). A consolidation makes the current
//! version exact again, a new anchor: the schedule thread retrains the backbone from scratch on the current
//! version `N`'s remaining data ([`exact`]: the checkpoint's own configuration and seed, its current graph and
//! validation edges), then pre-trains an unlearner for the retrained backbone ([`unlearnrec_core::unlearn::pretrain`],
//! what `unlearnrec pretrain` runs, with the configuration the unlearner in use was pre-trained with, which
//! its file records), since the unlearner of the old anchor is refused on the new one. The pair is handed to
//! the worker ([`Retrains`]), which commits it through the same files and ledger path as a batch
//! ([`crate::store::Store::consolidate`]): the edges batches removed while it ran are unlearned from the
//! retrain with the new unlearner, so the consolidation lands under a steady stream of requests, and the
//! worker unlearns with the new unlearner from then on. An applied erasure is never lost.
//!
//! A consolidation starts when the served model is not exact ([`crate::store::Served::is_approximate`]) and
//! either `every` passed since the schedule last looked (the time trigger) or at least `after_edges` edges
//! were removed since the anchor ([`crate::store::Served::edges_since_anchor`], the size trigger). One that
//! fails (a diverged retrain) is logged; the size trigger does not retry it before the served version
//! changes, the time trigger retries at its next tick.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use unlearnrec_core::checkpoint::Checkpoint;
use unlearnrec_core::train::Silent;
use unlearnrec_core::unlearn::{PretrainConfig, Unlearner};

use crate::cancel::cancellable;
use crate::error::Result;
use crate::store::Served;
use crate::worker::Kick;

/// Retrains `ckpt`'s backbone from scratch on its current graph and validation edges, with its own model
/// and training configuration and seed ([`unlearnrec_core::unlearn::refit`], the retrain of the empty
/// request). The result has the same graph, validation and removed edges as `ckpt`.
///
/// # Errors
/// A tensor error, or a diverged training run ([`unlearnrec_core::Error::Diverged`]).
pub fn exact(ckpt: &Checkpoint) -> Result<Checkpoint> {
    Ok(unlearnrec_core::unlearn::refit(ckpt, &mut Silent)?)
}

/// [`exact`], then an unlearner pre-trained for the result with `pretrain`: a consolidation of version
/// `base`.
///
/// # Errors
/// As [`exact`] and [`unlearnrec_core::unlearn::pretrain`].
pub fn consolidation(base: u64, ckpt: &Checkpoint, pretrain: &PretrainConfig) -> Result<Pending> {
    Ok(consolidation_until(base, ckpt, pretrain, &AtomicBool::new(false))?.expect("never stopped"))
}

/// [`consolidation`], stopped at the next minibatch of the retrain or the pre-training once `stop` is set:
/// then `Ok(None)` (the work is discarded).
///
/// # Errors
/// As [`consolidation`].
pub fn consolidation_until(
    base: u64,
    ckpt: &Checkpoint,
    pretrain: &PretrainConfig,
    stop: &AtomicBool,
) -> Result<Option<Pending>> {
    let Some(ckpt) = cancellable(stop, |obs| unlearnrec_core::unlearn::refit(ckpt, obs)).transpose()? else {
        return Ok(None);
    };
    let Some(unlearner) =
        cancellable(stop, |obs| unlearnrec_core::unlearn::pretrain(&ckpt, pretrain, obs)).transpose()?
    else {
        return Ok(None);
    };
    Ok(Some(Pending { base, ckpt, unlearner }))
}

/// A finished consolidation waiting for the worker.
pub struct Pending {
    /// The version it retrained.
    pub base: u64,
    /// The retrained checkpoint.
    pub ckpt: Checkpoint,
    /// The unlearner pre-trained for it.
    pub unlearner: Unlearner,
}

/// The hand-off between the schedule thread and the worker (at most one consolidation waits).
#[derive(Default)]
pub struct Retrains {
    pending: Mutex<Option<Pending>>,
}

impl Retrains {
    /// Hands a consolidation to the worker (replacing one not yet taken).
    pub fn offer(&self, p: Pending) {
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
    }

    /// The waiting consolidation, if any.
    pub fn take(&self) -> Option<Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn waiting(&self) -> bool {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }
}

/// When consolidations start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// The time trigger (`--retrain-every-secs`): every this long, when the served model is not exact.
    pub every: Option<Duration>,
    /// The size trigger (`--consolidate-after-edges`): as soon as at least this many edges were removed since
    /// the anchor.
    pub after_edges: Option<usize>,
}

impl Schedule {
    /// Whether either trigger is set.
    pub fn is_on(&self) -> bool {
        self.every.is_some() || self.after_edges.is_some()
    }
}

/// The schedule loop: consolidates the served version when a trigger of `schedule` fires (see the module
/// docs) and hands the result to the worker, until [`Kick::stop`]. A consolidation in progress when the
/// service stops is stopped at its next minibatch and discarded, so that the thread can be joined.
pub fn run(
    schedule: Schedule,
    pretrain: PretrainConfig,
    served: Arc<ArcSwap<Served>>,
    retrains: Arc<Retrains>,
    kick: Arc<Kick>,
) {
    let step = schedule.every.map_or(Duration::from_millis(50), |e| e.min(Duration::from_millis(50)));
    let mut tick = Instant::now();
    // The version whose size-triggered consolidation failed: not retried until the version changes.
    let mut failed_on = None;
    while !kick.stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(step);
        let timed = schedule.every.is_some_and(|e| tick.elapsed() >= e);
        if timed {
            tick = Instant::now();
        }
        if retrains.waiting() {
            continue;
        }
        let cur = served.load_full();
        if !cur.is_approximate() {
            continue;
        }
        let edges = cur.edges_since_anchor();
        let sized = schedule.after_edges.is_some_and(|n| edges >= n) && failed_on != Some(cur.version);
        if !(timed || sized) {
            continue;
        }
        let t0 = Instant::now();
        let trigger = if sized { "size" } else { "time" };
        tracing::info!("consolidating version {} ({edges} edges since the anchor; {trigger} trigger)", cur.version);
        match consolidation_until(cur.version, &cur.ckpt, &pretrain, &kick.stop) {
            Ok(None) => tracing::info!("stopping: discarded the consolidation of version {} in progress", cur.version),
            Ok(Some(p)) => {
                tracing::info!(
                    "retrained version {} and pre-trained its unlearner in {:.2}s",
                    cur.version,
                    t0.elapsed().as_secs_f64()
                );
                retrains.offer(p);
                kick.kick();
            }
            Err(e) => {
                tracing::error!("consolidating version {}: {e}; retrying later", cur.version);
                failed_on = Some(cur.version);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use unlearnrec_core::data::synthetic::{SynthConfig, generate};
    use unlearnrec_core::model::{ModelConfig, ModelKind};
    use unlearnrec_core::train::TrainConfig;

    use super::*;
    use crate::error::ServeError;

    #[test]
    fn a_consolidation_stops_when_the_service_stops() {
        let ds = generate(&SynthConfig { users: 200, items: 150, interactions: 5000, ..Default::default() }).unwrap();
        let mc = ModelConfig { kind: ModelKind::LightGcn, dim: 16, layers: 2, ..Default::default() };
        let tc = TrainConfig { epochs: 1, batch_size: 256, eval_every: 1, ..Default::default() };
        let (mut ckpt, _) = unlearnrec_core::pipeline::train(&ds, &mc, &tc, &mut Silent).unwrap();
        // A retrain of thousands of epochs: minutes if it ran to the end.
        ckpt.set_train_config(TrainConfig { epochs: 5000, eval_every: 10_000, ..tc });
        let stop = Arc::new(AtomicBool::new(false));
        let setter = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
                Instant::now()
            })
        };
        let out = consolidation_until(3, &ckpt, &PretrainConfig::default(), &stop).unwrap();
        let late = setter.join().unwrap().elapsed();
        assert!(out.is_none(), "the consolidation was not stopped");
        assert!(late < Duration::from_secs(2), "stopped {late:?} after the flag");
    }

    #[test]
    fn a_diverged_scheduled_retrain_is_an_error_not_a_version() {
        let ds = generate(&SynthConfig { users: 40, items: 30, interactions: 500, ..Default::default() }).unwrap();
        let mc = ModelConfig { kind: ModelKind::Mf, dim: 8, ..Default::default() };
        let tc = TrainConfig { epochs: 1, batch_size: 128, lr: 1e-2, eval_every: 1, ..Default::default() };
        let (mut ckpt, _) = unlearnrec_core::pipeline::train(&ds, &mc, &tc, &mut Silent).unwrap();
        assert!(exact(&ckpt).is_ok());
        ckpt.set_train_config(TrainConfig { lr: 1e30, epochs: 3, eval_every: 100, ..tc });
        let err = exact(&ckpt).err().expect("a diverged retrain must fail");
        assert!(matches!(err, ServeError::Core(unlearnrec_core::Error::Diverged { .. })), "{err}");
    }
}
