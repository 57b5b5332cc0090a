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
//! in-flight HTTP requests finish, and a batch in flight is either committed or left queued.
#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod api;
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
/// calls `on_listen` with the bound address. Returns after SIGTERM or ctrl-c once the worker stopped.
///
/// # Errors
/// Recovery errors (ledger, checkpoint, dataset or unlearner mismatch), a failure to bind, or a worker that
/// panicked.
pub fn run(cfg: ServeConfig, dataset: Dataset, on_listen: impl FnOnce(SocketAddr)) -> Result<()> {
    let store = store::Store::open(cfg.store.clone(), dataset)?;
    let served = store.served();
    let metrics = Arc::new(metrics::Metrics::default());
    metrics.set_model_version(served.load().version);
    // The forget-to-applied window starts from the ledger's last applied requests, across restarts.
    metrics.seed_waited(&ledger::Ledger::open(&cfg.store.db)?.recent_latencies(metrics::WINDOW)?);
    let kick = Arc::new(worker::Kick::default());
    let state = api::AppState {
        served,
        ledger: Arc::new(Mutex::new(ledger::Ledger::open(&cfg.store.db)?)),
        kick: kick.clone(),
        metrics: metrics.clone(),
        token: cfg.token.clone(),
        limits: cfg.limits,
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
    if schedule.is_on() {
        let (served, retrains, kick, pretrain) =
            (store.served(), retrains.clone(), kick.clone(), store.pretrain_config());
        // Not joined: a consolidation in progress when the service stops is discarded.
        std::thread::Builder::new()
            .name("unlearnrec-retrain".into())
            .spawn(move || retrain::run(schedule, pretrain, served, retrains, kick))
            .map_err(|e| ServeError::io("retrain thread", e))?;
    }
    let worker = {
        let (kick, metrics, batch) = (kick.clone(), metrics.clone(), cfg.batch);
        std::thread::Builder::new()
            .name("unlearnrec-worker".into())
            .spawn(move || worker::run(store, batch, kick, metrics, retrains))
            .map_err(|e| ServeError::io("worker thread", e))?
    };
    on_listen(addr);
    let stopping = Arc::new(tokio::sync::Notify::new());
    let served_http = runtime.block_on(async {
        let signal = {
            let (kick, stopping) = (kick.clone(), stopping.clone());
            async move {
                stop_signal().await;
                tracing::info!("stopping: no new connections; finishing in-flight requests and the batch");
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
    let joined = worker.join();
    runtime.shutdown_timeout(Duration::from_secs(1));
    served_http?;
    joined.map_err(|_| ServeError::Corrupt("the worker thread panicked".into()))
}
