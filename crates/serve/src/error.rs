//! The service's error type.

/// What can go wrong in the service (outside of HTTP input, which gets [`crate::api::ApiError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The engine: loading, unlearning, writing checkpoints or data.
    #[error(transparent)]
    Core(#[from] unlearnrec_core::Error),
    /// The ledger database.
    #[error("ledger: {0}")]
    Ledger(#[from] rusqlite::Error),
    /// A file or directory of the state.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// JSON stored in the ledger.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The ledger and the files disagree, or the ledger holds something it should not.
    #[error("inconsistent state: {0}")]
    Corrupt(String),
    /// A ledger update that does not apply (a request that is not queued, a version out of order).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A bad configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The worker panicked more often than it may be restarted (`--max-worker-restarts`), or its state could
    /// not be reopened after a panic: the service stopped (its batch stays queued).
    #[error("the worker failed: {0}")]
    Worker(String),
}

impl ServeError {
    pub(crate) fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        ServeError::Io { path: path.into(), source }
    }
}

/// The service's result type.
pub type Result<T, E = ServeError> = std::result::Result<T, E>;
