//! # unlearnrec-serve
//!
//! An HTTP/JSON service (axum on tokio) that recommends from an unlearnrec checkpoint and erases
//! interactions, users and items on request with the UnlearnRec influence encoder, backed by a durable
//! SQLite ledger.
//!
//! The principal pieces:
//! - [`ledger::Ledger`]: requests and model versions in SQLite (WAL, `synchronous=FULL`). A forget request is
//!   acknowledged (202) only after its row is committed; its id is a content hash, so a repeated request
//!   gets the same id.
//! - [`store::Store`] and [`store::Served`]: the versioned files under the state directory and the model
//!   being served, swapped with [`arc_swap`] so readers never wait.
//! - [`worker`]: applies queued requests in batches (by count or time): one encoder pass
//!   ([`unlearnrec_core::unlearn::unlearn`]) per batch, a new `model-v{N}.safetensors` and `data-v{N}/`
//!   written atomically, then **one** ledger transaction that marks the batch applied and records version
//!   `N`. On start the version the ledger calls current is loaded and newer files are deleted, so a crash at
//!   any point re-applies exactly the requests that were not committed.
//! - [`api`]: the routes, the bearer-token check, input limits, and the OpenAPI document; [`metrics`]:
//!   Prometheus counters.
//!
//! Fine-tuning after the encoder pass is [`StoreConfig::finetune`] (`--finetune-epochs`), by default one
//! epoch as `unlearnrec unlearn`: that epoch is what brings the removed edges' scores to where retraining puts
//! them (docs/results.md, *Unlearning*), at the cost of one pass over the remaining data per batch. With 0 a batch is
//! the zero-shot encoder pass only (milliseconds on small data): choose it when latency matters more than
//! how closely the model matches a retrained one. Either way the removed edges leave the served graph, the
//! seen-item filter and the catalogue as soon as the batch is committed, and an erased user gets 410.
//!
//! With [`ServeConfig::retrain_every`] (`--retrain-every-secs`) or [`ServeConfig::consolidate_after_edges`]
//! (`--consolidate-after-edges`), a [`retrain`] schedule *consolidates* in the background: it retrains the
//! backbone exactly (from scratch, the checkpoint's own configuration and seed) on the current version's
//! remaining data, pre-trains a fresh unlearner for it, and the worker swaps both in as the next version
//! (recorded as a retrain in the ledger, the unlearner as `unlearner-v{N}.safetensors`), with the edges
//! removed while it ran applied on top. The served model is then exact again, a new anchor, and later batches
//! unlearn with the new unlearner.
//!
//! [`run`] ties them together and returns when SIGTERM or ctrl-c arrives: the listener stops accepting,
//! in-flight HTTP requests finish (within [`ServeConfig::drain`]), and a batch in flight is either committed
//! or left queued: its fine-tuning, and a consolidation in progress, stop at their next minibatch, and the
//! worker and the consolidation thread are joined within [`ServeConfig::stop_timeout`] (past it, `run` returns
//! anyway and the process exit cuts them, which is a crash the next start recovers from).
//!
//! A panic in the worker is caught: `/v1/health` answers 503 with the reason while the worker is down, the
//! batch it was applying stays queued (its ledger transaction never ran), and the worker is restarted on a
//! freshly reopened store after a pause (1 s, doubling), at most [`ServeConfig::max_restarts`] times; one
//! more panic stops the service and `run` returns [`ServeError::Worker`] (`unlearnrec serve` exits non-zero),
//! for a supervisor to restart it.
#![warn(missing_docs)]

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod api;
pub mod cancel;
pub mod error;
pub mod ledger;
pub mod metrics;
pub mod retrain;
pub mod store;
pub mod worker;

pub use api::{Limits, Token};
pub use error::{Result, ServeError};
pub use store::StoreConfig;
pub use worker::BatchConfig;

use unlearnrec_core::data::Dataset;

/// Everything [`run`] needs besides the dataset.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Model, unlearner, ledger, state directory and fine-tuning.
    pub store: StoreConfig,
    /// Address to listen on (port 0: any free port, reported to `on_listen`).
    pub listen: SocketAddr,
    /// The bearer token of the forget routes.
    pub token: Token,
    /// Batching of the worker.
    pub batch: BatchConfig,
    /// Input bounds.
    pub limits: Limits,
    /// How long in-flight HTTP requests may take to finish after a stop signal.
    pub drain: Duration,
    /// The time trigger of consolidations (`--retrain-every-secs`): every this long, when the served model is
    /// not exact (a batch was applied since the last consolidation), an exact retrain of the current version
    /// with a fresh unlearner runs in the background and is swapped in ([`retrain`]). `None`: off.
    pub retrain_every: Option<Duration>,
    /// The size trigger of consolidations (`--consolidate-after-edges`): as soon as at least this many edges
    /// (training and validation) were removed since the anchor. `None`: off.
    pub consolidate_after_edges: Option<usize>,
    /// How long the worker and the consolidation thread may take to stop once the HTTP server stopped
    /// (`--shutdown-timeout-secs`, with [`ServeConfig::drain`]).
    pub stop_timeout: Duration,
    /// Restarts of the worker after a panic before the service gives up (`--max-worker-restarts`).
    pub max_restarts: u32,
}

/// Resolves on SIGTERM or ctrl-c.
async fn stop_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for ctrl-c: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Recovers the state (see [`store::Store::open`]), starts the worker, serves HTTP on `cfg.listen` and
/// calls `on_listen` with the bound address. Returns after SIGTERM or ctrl-c once the worker stopped (or
/// [`ServeConfig::stop_timeout`] passed), or when the worker gave up after panics.
///
/// # Errors
/// Recovery errors (ledger, checkpoint, dataset or unlearner mismatch), a failure to bind, or a worker that
/// panicked more than [`ServeConfig::max_restarts`] times ([`ServeError::Worker`]).
pub fn run(cfg: ServeConfig, dataset: Dataset, on_listen: impl FnOnce(SocketAddr)) -> Result<()> {
    let store = store::Store::open(cfg.store.clone(), dataset)?;
    let served = store.served();
    let metrics = Arc::new(metrics::Metrics::default());
    metrics.set_model_version(served.load().version);
    // The forget-to-applied window starts from the ledger's last applied requests, across restarts.
    metrics.seed_waited(&ledger::Ledger::open(&cfg.store.db)?.recent_latencies(metrics::WINDOW)?);
    let kick = Arc::new(worker::Kick::default());
    let state = api::AppState {
        served: served.clone(),
        ledger: Arc::new(Mutex::new(ledger::Ledger::open(&cfg.store.db)?)),
        kick: kick.clone(),
        metrics: metrics.clone(),
        token: cfg.token.clone(),
        limits: cfg.limits,
        rates: Arc::new(api::RateLimiter::new(cfg.limits.rate)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("unlearnrec-http")
        .enable_all()
        .build()
        .map_err(|e| ServeError::io("tokio runtime", e))?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(cfg.listen))
        .map_err(|e| ServeError::io(cfg.listen.to_string(), e))?;
    let addr = listener.local_addr().map_err(|e| ServeError::io(cfg.listen.to_string(), e))?;
    let retrains = Arc::new(retrain::Retrains::default());
    let schedule = retrain::Schedule { every: cfg.retrain_every, after_edges: cfg.consolidate_after_edges };
    let retrain_thread = if schedule.is_on() {
        let (served, retrains, kick, pretrain) =
            (store.served(), retrains.clone(), kick.clone(), store.pretrain_config());
        // Joined at shutdown: a consolidation in progress stops at its next minibatch and is discarded.
        Some(
            std::thread::Builder::new()
                .name("unlearnrec-retrain".into())
                .spawn(move || retrain::run(schedule, pretrain, served, retrains, kick))
                .map_err(|e| ServeError::io("retrain thread", e))?,
        )
    } else {
        None
    };
    // Resolved when the worker gives up after panics: the service stops.
    let fatal = Arc::new(tokio::sync::Notify::new());
    let worker = {
        let sup = Supervisor {
            cfg: cfg.store.clone(),
            batch: cfg.batch,
            kick: kick.clone(),
            metrics: metrics.clone(),
            retrains,
            served,
            max_restarts: cfg.max_restarts,
            fatal: fatal.clone(),
        };
        std::thread::Builder::new()
            .name("unlearnrec-worker".into())
            .spawn(move || sup.run(store))
            .map_err(|e| ServeError::io("worker thread", e))?
    };
    on_listen(addr);
    let stopping = Arc::new(tokio::sync::Notify::new());
    let served_http = runtime.block_on(async {
        let signal = {
            let (kick, stopping) = (kick.clone(), stopping.clone());
            async move {
                tokio::select! {
                    () = stop_signal() => tracing::info!(
                        "stopping: no new connections; finishing in-flight requests and the batch"
                    ),
                    () = fatal.notified() => tracing::error!("stopping: the worker failed"),
                }
                kick.stop();
                stopping.notify_one();
            }
        };
        let server = axum::serve(listener, api::router(state)).with_graceful_shutdown(signal);
        let deadline = async {
            stopping.notified().await;
            tokio::time::sleep(cfg.drain).await;
        };
        tokio::select! {
            r = server => r.map_err(|e| ServeError::io(addr.to_string(), e)),
            () = deadline => {
                tracing::warn!("in-flight HTTP requests did not finish within {:?}; closing them", cfg.drain);
                Ok(())
            }
        }
    });
    kick.stop();
    let until = Instant::now() + cfg.stop_timeout;
    let joined = join_until(worker, until);
    if let Some(t) = retrain_thread
        && join_until(t, until).is_none()
    {
        tracing::warn!("the consolidation thread did not stop within {:?}; leaving it", cfg.stop_timeout);
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    served_http?;
    match joined {
        None => {
            tracing::warn!(
                "the worker did not stop within {:?}; exiting without it: the batch in flight, if any, stays \
                 queued and is applied on the next start",
                cfg.stop_timeout
            );
            Ok(())
        }
        Some(Ok(r)) => r.map_err(ServeError::Worker),
        Some(Err(_)) => Err(ServeError::Worker("the worker's supervisor panicked".into())),
    }
}

/// Joins `t` if it finishes before `until`; `None` when it is still running then.
fn join_until<T>(t: JoinHandle<T>, until: Instant) -> Option<std::thread::Result<T>> {
    while !t.is_finished() {
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Some(t.join())
}

/// Runs the worker loop, restarting it after a panic (see the crate docs).
struct Supervisor {
    cfg: StoreConfig,
    batch: BatchConfig,
    kick: Arc<worker::Kick>,
    metrics: Arc<metrics::Metrics>,
    retrains: Arc<retrain::Retrains>,
    /// The readers' handle of the served model, kept across restarts.
    served: Arc<arc_swap::ArcSwap<store::Served>>,
    max_restarts: u32,
    fatal: Arc<tokio::sync::Notify>,
}

impl Supervisor {
    /// Runs until the service stops (`Ok`) or the worker panicked once more than it may be restarted
    /// (`Err`, with the reason, after the service was told to stop).
    fn run(self, mut store: store::Store) -> std::result::Result<(), String> {
        let mut restarts = 0u32;
        loop {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                worker::run(&mut store, self.batch, &self.kick, &self.metrics, &self.retrains)
            }));
            let Err(payload) = outcome else { return Ok(()) };
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            if restarts >= self.max_restarts {
                return Err(self.give_up(format!(
                    "the worker panicked ({msg}) after {restarts} restart(s); the service stops, queued requests \
                     stay queued"
                )));
            }
            restarts += 1;
            let pause = Duration::from_secs(1 << (restarts - 1).min(4));
            let why = format!(
                "the worker panicked ({msg}); its batch stays queued; restart {restarts} of {} in {pause:?}",
                self.max_restarts
            );
            tracing::error!("{why}");
            self.metrics.worker_down(why);
            let until = Instant::now() + pause;
            while Instant::now() < until {
                if self.kick.stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // The store's memory may be half-way through a batch: reopen it from the ledger and the files,
            // as a new process would.
            store = match store::Store::open(self.cfg.clone(), store.into_dataset()) {
                Ok(s) => s,
                Err(e) => return Err(self.give_up(format!("reopening the state after a worker panic: {e}"))),
            };
            store.serve_through(self.served.clone());
            self.metrics.set_model_version(self.served.load().version);
            self.metrics.worker_restarted();
            tracing::warn!("restarted the worker ({restarts} of {})", self.max_restarts);
        }
    }

    fn give_up(&self, why: String) -> String {
        tracing::error!("{why}");
        self.metrics.worker_down(why.clone());
        self.fatal.notify_one();
        why
    }
}
