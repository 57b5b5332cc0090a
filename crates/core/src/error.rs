//! The library's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the library.
///
/// Messages are lowercase sentences without a trailing period; the CLI prints them once with their
/// cause chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error while reading or writing `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Malformed input in a data or request file (`path:line: msg`, or `path: msg` when line is 0).
    #[error("{}: {msg}", location(.path, *.line))]
    Format {
        /// The file involved.
        path: PathBuf,
        /// 1-based line number (0 when the whole file is at fault).
        line: usize,
        /// What was expected.
        msg: String,
    },
    /// An id outside its declared range.
    #[error("{kind} id {id} is out of range (there are {n})")]
    IdOutOfRange {
        /// `user` or `item`.
        kind: &'static str,
        /// The offending id.
        id: u64,
        /// The number of ids.
        n: usize,
    },
    /// An external id that the dataset does not know.
    #[error("unknown {kind} id {id:?}")]
    UnknownId {
        /// `user` or `item`.
        kind: &'static str,
        /// The external id.
        id: String,
    },
    /// A configuration value that cannot be used.
    #[error("invalid configuration `{field}`: {reason}")]
    InvalidConfig {
        /// The field at fault.
        field: String,
        /// Why.
        reason: String,
    },
    /// Tensors or matrices with incompatible shapes.
    #[error("shape mismatch in {op}: expected {expected}, got {got}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// The expected shape.
        expected: String,
        /// The shape found.
        got: String,
    },
    /// Training produced a non-finite loss.
    #[error("training diverged at epoch {epoch}: loss is {loss}")]
    Diverged {
        /// The epoch (0-based).
        epoch: usize,
        /// The offending loss value.
        loss: f64,
    },
    /// A metric that a computation needs was not among those evaluated.
    #[error("metric {key} was not computed")]
    MissingMetric {
        /// The metric.
        key: crate::eval::MetricKey,
    },
    /// A checkpoint or unlearner does not belong to the dataset or model at hand.
    #[error("checkpoint mismatch: expected {expected}, found {found}")]
    CheckpointMismatch {
        /// What the caller has.
        expected: String,
        /// What the file holds.
        found: String,
    },
    /// A checkpoint whose parts do not fit together (see [`crate::checkpoint::Checkpoint::new`]).
    #[error("invalid checkpoint: {0}")]
    InvalidCheckpoint(String),
    /// A user or item whose every interaction was forgotten: the model no longer serves it.
    #[error("{kind} {id:?} was erased: all of its interactions were unlearned")]
    Erased {
        /// `user` or `item`.
        kind: &'static str,
        /// The external id.
        id: String,
    },
    /// An unlearning request that cannot be applied.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A tensor error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A safetensors error.
    #[error("safetensors: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    /// A JSON (de)serialisation error.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// `path:line`, or `path` alone when the whole file is at fault (line 0).
fn location(path: &std::path::Path, line: usize) -> String {
    if line == 0 { path.display().to_string() } else { format!("{}:{line}", path.display()) }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// A format error at `path:line`.
    pub fn format(path: impl Into<PathBuf>, line: usize, msg: impl Into<String>) -> Self {
        Error::Format { path: path.into(), line, msg: msg.into() }
    }

    /// An invalid configuration value.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidConfig { field: field.into(), reason: reason.into() }
    }
}
