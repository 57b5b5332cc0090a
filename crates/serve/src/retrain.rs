//! The optional retrain schedule (`--retrain-every-secs`): an exact retrain of the served version in the
//! background, swapped in when done.
//!
//! Every `every` seconds, when at least one batch was applied since the last retrain (the current version is
//! not version 0 and not itself a retrain), the schedule thread retrains the backbone from scratch on the
//! current version `N`'s remaining data ([`exact`]: the checkpoint's own configuration and seed, its current
//! graph and validation edges; the removed set is version `N`'s). The result is handed to the worker
//! ([`Retrains`]), which writes and commits it as version `N + 1` through the same files and ledger path as a
//! batch ([`crate::store::Store::commit_retrain`]), only while the current version is still `N`: when a batch
//! committed meanwhile, the retrain is discarded and the next tick retries. An applied erasure is never lost.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use unlearnrec_core::checkpoint::Checkpoint;
use unlearnrec_core::train::Silent;

use crate::error::Result;
use crate::ledger::Ledger;
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

/// A finished retrain waiting for the worker.
pub struct Pending {
    /// The version it retrained.
    pub base: u64,
    /// The retrained checkpoint.
    pub ckpt: Checkpoint,
}

/// The hand-off between the schedule thread and the worker (at most one retrain waits).
#[derive(Default)]
pub struct Retrains {
    pending: Mutex<Option<Pending>>,
}

impl Retrains {
    /// Hands a retrain to the worker (replacing one not yet taken).
    pub fn offer(&self, p: Pending) {
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
    }

    /// The waiting retrain, if any.
    pub fn take(&self) -> Option<Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn waiting(&self) -> bool {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }
}

/// Whether version `served` needs a retrain: a batch version (not 0, not a retrain) that is the ledger's
/// current version.
fn due(ledger: &Ledger, served: u64) -> Result<bool> {
    if served == 0 || ledger.current()?.version != served {
        return Ok(false);
    }
    Ok(ledger.version(served)?.is_some_and(|row| !row.retrain))
}

/// The schedule loop: every `every`, retrains the served version when [`due`] and hands the result to the
/// worker, until [`Kick::stop`]. A retrain in progress when the service stops is discarded.
pub fn run(every: Duration, db: PathBuf, served: Arc<ArcSwap<Served>>, retrains: Arc<Retrains>, kick: Arc<Kick>) {
    let ledger = match Ledger::open(&db) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("retrain schedule: opening the ledger: {e}; no retrains");
            return;
        }
    };
    let step = Duration::from_millis(50).min(every);
    let mut tick = Instant::now();
    while !kick.stop.load(std::sync::atomic::Ordering::SeqCst) {
        if tick.elapsed() < every {
            std::thread::sleep(step);
            continue;
        }
        tick = Instant::now();
        if retrains.waiting() {
            continue;
        }
        let cur = served.load_full();
        match due(&ledger, cur.version) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::error!("retrain schedule: reading the ledger: {e}");
                continue;
            }
        }
        let t0 = Instant::now();
        match exact(&cur.ckpt) {
            Ok(ckpt) => {
                tracing::info!("retrained version {} in {:.2}s", cur.version, t0.elapsed().as_secs_f64());
                retrains.offer(Pending { base: cur.version, ckpt });
                kick.kick();
            }
            Err(e) => tracing::error!("retraining version {}: {e}; retrying at the next tick", cur.version),
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
