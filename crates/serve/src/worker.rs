//! The worker thread: takes queued requests from the ledger in batches and applies them with
//! [`Store::apply`].
//!
//! A batch starts when `max` requests are queued or `wait` after the worker first saw a queued request,
//! whichever comes first. A batch whose unlearning fails is split and retried one request at a time; a single
//! request that fails is marked `failed` with the reason. File and ledger errors leave the batch queued and
//! are retried after a pause.
//!
//! The worker also commits the consolidations the [`crate::retrain`] schedule hands it, between batches, so
//! that only this thread ever writes versions (and switches to the unlearner that comes with one).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::retrain::Retrains;
use crate::store::{ApplyError, Outcome, Store};

/// Batching of queued requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Requests per batch at most.
    pub max: usize,
    /// How long to wait for more requests once one is queued.
    pub wait: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { max: 64, wait: Duration::from_millis(200) }
    }
}

/// Wakes the worker (a request was committed, or the service stops).
#[derive(Default)]
pub struct Kick {
    flag: Mutex<bool>,
    cv: Condvar,
    /// Set when the service stops.
    pub stop: AtomicBool,
}

impl Kick {
    /// Wakes the worker.
    pub fn kick(&self) {
        *self.flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    /// Asks the worker to stop after the batch in flight (which is left queued unless already committed).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.kick();
    }

    fn wait(&self, timeout: Duration) {
        let guard = self.flag.lock().unwrap_or_else(|e| e.into_inner());
        let (mut guard, _) = self.cv.wait_timeout_while(guard, timeout, |k| !*k).unwrap_or_else(|e| e.into_inner());
        *guard = false;
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Runs the worker loop until [`Kick::stop`]; commits the retrains handed over in `retrains`.
///
/// A panic unwinds out of it with the batch in flight uncommitted (still queued in the ledger); the caller
/// ([`crate::run`]) catches it, reopens the store and runs the loop again.
pub fn run(store: &mut Store, batch: BatchConfig, kick: &Kick, metrics: &Metrics, retrains: &Retrains) {
    let mut first_seen: Option<Instant> = None;
    // After a failed batch, this many requests are applied one at a time.
    let mut singles = 0usize;
    while !kick.stopping() {
        if let Some(p) = retrains.take() {
            let base = p.base;
            match store.consolidate(p) {
                Ok(Some(v)) => {
                    metrics.consolidated(v);
                    tracing::info!("swapped in the consolidation of version {base} as version {v}, with its unlearner");
                }
                Ok(None) => tracing::warn!("discarded the consolidation of version {base}: it does not apply any more"),
                Err(e) => tracing::error!("committing the consolidation of version {base}: {e}; retrying later"),
            }
            continue;
        }
        let queued = match store.ledger().counts() {
            Ok((q, ..)) => q as usize,
            Err(e) => {
                tracing::error!("reading the ledger: {e}");
                kick.wait(Duration::from_secs(1));
                continue;
            }
        };
        metrics.set_queue_depth(queued as u64);
        let limit = if singles > 0 { 1 } else { batch.max.max(1) };
        if queued == 0 {
            first_seen = None;
            singles = 0;
            kick.wait(Duration::from_secs(1));
            continue;
        }
        let t0 = *first_seen.get_or_insert_with(Instant::now);
        if queued < limit && t0.elapsed() < batch.wait {
            kick.wait(batch.wait.saturating_sub(t0.elapsed()));
            continue;
        }
        let rows = match store.ledger().queued(limit) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("reading the queue: {e}");
                kick.wait(Duration::from_secs(1));
                continue;
            }
        };
        let started = Instant::now();
        singles = singles.saturating_sub(1);
        match store.apply(&rows, &kick.stop) {
            Ok(Outcome::Applied { version, requests, edges, changed, waited }) => {
                first_seen = None;
                metrics.batch_done(requests as u64, started.elapsed().as_secs_f64(), version);
                metrics.waited(&waited);
                tracing::info!(
                    "applied {requests} request(s), {edges} edge(s) in {:.2}s; model version {version}{}",
                    started.elapsed().as_secs_f64(),
                    if changed { "" } else { " (unchanged)" }
                );
            }
            Ok(Outcome::Abandoned) => {
                tracing::info!("stopping: left {} request(s) queued", rows.len());
                break;
            }
            Err(ApplyError::Request(why)) if rows.len() > 1 => {
                tracing::warn!("a batch of {} failed ({why}); retrying one request at a time", rows.len());
                singles = rows.len();
            }
            Err(ApplyError::Request(why)) => {
                tracing::warn!("request {} failed: {why}", rows[0].id);
                metrics.failed();
                if let Err(e) = store.ledger().fail(&rows[0].id, &why) {
                    tracing::error!("recording the failure of {}: {e}", rows[0].id);
                }
            }
            Err(ApplyError::Serve(e)) => {
                tracing::error!("applying a batch: {e}; it stays queued, retrying");
                metrics.apply_error();
                kick.wait(Duration::from_secs(2));
            }
        }
    }
}
