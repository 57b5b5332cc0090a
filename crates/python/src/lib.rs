//! `unlearnrec._native`: the PyO3 module under the `unlearnrec` Python package.
//!
//! It wraps the library front of `unlearnrec-core` (`load_dataset`, `train`, `pretrain`, `forget`, `audit`,
//! the checkpoint files) with plain Python and numpy values; the public API, its docstrings and its argument
//! checks live in the pure-Python layer (`python/unlearnrec/__init__.py`), which is what users import.
//!
//! Conventions: heavy calls run without the GIL (`py.detach`); training-like calls report epochs to an
//! optional Python callback and check for signals (Ctrl-C) at every step ([`PyObserver`]); engine errors
//! map to Python exceptions by kind ([`to_py`]); configurations cross as JSON objects and are read by the
//! engine's own serde types, so an unknown key is a `ValueError` naming it; structured results (receipts,
//! audits, metrics) cross as JSON text that the Python layer decodes.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::PathBuf;
use std::sync::Arc;

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::create_exception;
use pyo3::exceptions::{
    PyException, PyFileNotFoundError, PyIndexError, PyKeyError, PyOSError, PyPermissionError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use unlearnrec_core as engine;
use unlearnrec_core::train::EpochRecord;
use unlearnrec_core::{
    AuditConfig, Checkpoint, Dataset, Error, EvalConfig, FinetuneConfig, ForgetOptions, ModelConfig, Observer,
    PretrainConfig, Request, Split, TrainConfig, Unlearner,
};

// Training allocates and frees embedding-sized buffers every step; the system allocator hands large ones back
// to the kernel and pays page faults on each reuse (a Gowalla step 2.2x slower than the CLI's), mimalloc
// keeps them. Only the engine's own allocations go through it; Python objects keep Python's allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

create_exception!(unlearnrec, UnlearnrecError, PyException, "Base class of the engine's own errors.");
create_exception!(
    unlearnrec,
    DivergedError,
    UnlearnrecError,
    "Training produced a non-finite loss (try a lower learning rate)."
);
create_exception!(
    unlearnrec,
    CheckpointMismatchError,
    UnlearnrecError,
    "A checkpoint or unlearner used with a dataset or model it does not belong to."
);
create_exception!(unlearnrec, InvalidCheckpointError, UnlearnrecError, "A checkpoint whose parts do not fit together.");

/// Maps an engine error to the Python exception of its kind, with the engine's message.
fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match &e {
        Error::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(msg),
            std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(msg),
            _ => PyOSError::new_err(msg),
        },
        Error::IdOutOfRange { .. } => PyIndexError::new_err(msg),
        Error::UnknownId { .. } => PyKeyError::new_err(msg),
        Error::Diverged { .. } => DivergedError::new_err(msg),
        Error::CheckpointMismatch { .. } => CheckpointMismatchError::new_err(msg),
        Error::InvalidCheckpoint(_) => InvalidCheckpointError::new_err(msg),
        Error::Format { .. }
        | Error::InvalidConfig { .. }
        | Error::Shape { .. }
        | Error::InvalidRequest(_)
        | Error::MissingMetric { .. }
        | Error::Erased { .. }
        | Error::Json(_) => PyValueError::new_err(msg),
        _ => UnlearnrecError::new_err(msg),
    }
}

/// `.py()` turns an engine result into a Python one.
trait IntoPyResult<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for engine::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

fn json_err(e: serde_json::Error) -> PyErr {
    PyValueError::new_err(format!("invalid configuration: {e}"))
}

/// The payload of the unwind with which [`PyObserver`] stops a run (Ctrl-C, or an exception raised by the
/// callback); [`observed`] catches it and raises the stored Python exception instead.
struct Stop;

/// Reports epochs to an optional Python callback `callback(stage, record_json)` and checks for signals at
/// every step. The engine's `Observer` cannot return an error, so a pending exception stops the run by
/// unwinding to [`observed`] with a [`Stop`] payload; the run's partial state is dropped there.
struct PyObserver {
    stage: &'static str,
    callback: Option<Py<PyAny>>,
    error: Option<PyErr>,
}

impl PyObserver {
    fn attach(&mut self, f: impl FnOnce(Python<'_>, Option<&Py<PyAny>>) -> PyResult<()>) {
        let callback = self.callback.as_ref();
        let result = Python::attach(|py| {
            py.check_signals()?;
            f(py, callback)
        });
        if let Err(e) = result {
            self.error = Some(e);
            resume_unwind(Box::new(Stop));
        }
    }
}

impl Observer for PyObserver {
    fn step(&mut self, _step: usize, _loss: f64) {
        self.attach(|_, _| Ok(()));
    }

    fn epoch_end(&mut self, record: &EpochRecord) {
        let stage = self.stage;
        let json = serde_json::to_string(record).unwrap_or_else(|_| "{}".into());
        self.attach(|py, callback| {
            if let Some(cb) = callback {
                cb.call1(py, (stage, json))?;
            }
            Ok(())
        });
    }

    fn validation_start(&mut self) {
        // The memory mimalloc keeps from the steps' freed buffers goes back to the system before the
        // validation pass's large buffers (as the CLI does).
        // SAFETY: `mi_collect` takes no pointers and may be called at any time from any thread.
        unsafe { libmimalloc_sys::mi_collect(true) }
    }
}

/// Runs `f` without the GIL, reporting to `callback`; Ctrl-C or an exception in the callback stops it.
fn observed<T: Send>(
    py: Python<'_>,
    stage: &'static str,
    callback: Option<Py<PyAny>>,
    f: impl FnOnce(&mut dyn Observer) -> engine::Result<T> + Send,
) -> PyResult<T> {
    py.detach(move || {
        let mut obs = PyObserver { stage, callback, error: None };
        let out = catch_unwind(AssertUnwindSafe(|| f(&mut obs)));
        match out {
            // An exception the observer stored stops the run even if the engine returned normally.
            Ok(r) => match obs.error.take() {
                Some(e) => Err(e),
                None => r.map_err(to_py),
            },
            Err(payload) => match obs.error.take() {
                Some(e) if is_stop(&*payload) => Err(e),
                _ => resume_unwind(payload),
            },
        }
    })
}

fn is_stop(payload: &(dyn Any + Send)) -> bool {
    payload.is::<Stop>()
}

/// A JSON object of a configuration, from the Python layer.
fn json_object(text: &str) -> PyResult<Map<String, Value>> {
    match serde_json::from_str::<Value>(text).map_err(json_err)? {
        Value::Object(m) => Ok(m),
        _ => Err(PyValueError::new_err("a configuration must be a mapping")),
    }
}

fn object_of<T: Serialize>(value: &T) -> PyResult<Map<String, Value>> {
    match serde_json::to_value(value).map_err(json_err)? {
        Value::Object(m) => Ok(m),
        _ => Err(PyValueError::new_err("not a configuration")),
    }
}

/// `base` with the keys of `given` replaced; an unknown key is an error naming it (serde's
/// `deny_unknown_fields` on every configuration type).
fn overlay<T: Serialize + DeserializeOwned>(base: &T, given: Map<String, Value>, what: &str) -> PyResult<T> {
    let base = object_of(base)?;
    let mut m = base.clone();
    m.extend(given.clone());
    serde_json::from_value(Value::Object(m)).map_err(|e| {
        // serde names unknown keys but not the key of a value of the wrong type: find it.
        let culprit = given.iter().find(|(k, v)| {
            let mut one = base.clone();
            one.insert((*k).clone(), (*v).clone());
            serde_json::from_value::<T>(Value::Object(one)).is_err()
        });
        match culprit {
            Some((k, _)) => PyValueError::new_err(format!("invalid {what}: `{k}`: {e}")),
            None => PyValueError::new_err(format!("invalid {what}: {e}")),
        }
    })
}

/// Splits the flat keyword arguments of `train` / `from_embeddings` into the `[model]` and `[train]` tables of
/// the CLI's configuration files.
fn run_config(json: &str) -> PyResult<(ModelConfig, TrainConfig)> {
    let (model_keys, train_keys) = (object_of(&ModelConfig::default())?, object_of(&TrainConfig::default())?);
    let (mut model, mut train) = (Map::new(), Map::new());
    for (k, v) in json_object(json)? {
        if model_keys.contains_key(&k) {
            model.insert(k, v);
        } else if train_keys.contains_key(&k) {
            train.insert(k, v);
        } else {
            let keys = |m: &Map<String, Value>| m.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(PyValueError::new_err(format!(
                "unknown configuration key `{k}` (model keys: {}; train keys: {})",
                keys(&model_keys),
                keys(&train_keys)
            )));
        }
    }
    Ok((
        overlay(&ModelConfig::default(), model, "model configuration")?,
        overlay(&TrainConfig::default(), train, "train configuration")?,
    ))
}

/// Index `i` of `n`, or an IndexError.
fn index(kind: &str, i: i64, n: usize) -> PyResult<u32> {
    if i < 0 || i as u64 >= n as u64 {
        return Err(PyIndexError::new_err(format!("{kind} index {i} is out of range (there are {n})")));
    }
    Ok(i as u32)
}

/// The rows of an `(n, 2)` array of (user, item) indices.
fn pairs_of(arr: &PyReadonlyArray2<'_, i64>, n_users: usize, n_items: usize) -> PyResult<Vec<(u32, u32)>> {
    let a = arr.as_array();
    if a.ncols() != 2 {
        return Err(PyValueError::new_err(format!("pairs must have shape (n, 2), got {:?}", a.shape())));
    }
    a.rows().into_iter().map(|r| Ok((index("user", r[0], n_users)?, index("item", r[1], n_items)?))).collect()
}

/// An `(n, 2)` int64 array of interactions.
fn pairs_array<'py>(py: Python<'py>, e: &engine::data::Interactions) -> Bound<'py, PyArray2<i64>> {
    let mut v = Vec::with_capacity(e.len() * 2);
    for (u, i) in e.iter() {
        v.push(i64::from(u));
        v.push(i64::from(i));
    }
    Array2::from_shape_vec((e.len(), 2), v).expect("n x 2 values").into_pyarray(py)
}

/// Two arrays returned together: `(ids, scores)` or `(users, items)`.
type Pair<'py, A, B> = (Bound<'py, PyArray2<A>>, Bound<'py, PyArray2<B>>);

/// A row-major table as an `(rows, dim)` float32 array.
fn table<'py>(py: Python<'py>, v: Vec<f32>, dim: usize) -> Bound<'py, PyArray2<f32>> {
    let rows = v.len().checked_div(dim).unwrap_or(0);
    Array2::from_shape_vec((rows, dim), v).expect("rows x dim values").into_pyarray(py)
}

fn table_vec(arr: &PyReadonlyArray2<'_, f32>, rows: usize, dim: usize, what: &str) -> PyResult<Vec<f32>> {
    let a = arr.as_array();
    if a.shape() != [rows, dim] {
        return Err(PyValueError::new_err(format!("{what} must have shape ({rows}, {dim}), got {:?}", a.shape())));
    }
    Ok(a.iter().copied().collect())
}

/// A temporary file path for the engine's path-based readers and writers.
fn temp_path() -> PyResult<tempfile::TempPath> {
    Ok(tempfile::NamedTempFile::new()?.into_temp_path())
}

/// A dataset: train, optional validation and test interactions over dense indices, with external ids.
#[pyclass(module = "unlearnrec._native", name = "Dataset", frozen)]
struct PyDataset {
    inner: Arc<Dataset>,
}

#[pymethods]
impl PyDataset {
    /// Reads a dataset in any format the CLI reads.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let ds = py.detach(|| engine::load_dataset(&path)).py()?;
        Ok(Self { inner: Arc::new(ds) })
    }

    /// A dataset from `(n, 2)` arrays of (user, item) indices.
    #[staticmethod]
    #[pyo3(signature = (name, n_users, n_items, train, test, valid=None, user_ids=None, item_ids=None))]
    #[allow(clippy::too_many_arguments)]
    fn from_pairs(
        name: &str,
        n_users: usize,
        n_items: usize,
        train: PyReadonlyArray2<'_, i64>,
        test: PyReadonlyArray2<'_, i64>,
        valid: Option<PyReadonlyArray2<'_, i64>>,
        user_ids: Option<Vec<String>>,
        item_ids: Option<Vec<String>>,
    ) -> PyResult<Self> {
        let train = pairs_of(&train, n_users, n_items)?;
        let test = pairs_of(&test, n_users, n_items)?;
        let valid = valid.map(|v| pairs_of(&v, n_users, n_items)).transpose()?;
        let mut ds = Dataset::from_pairs(name, n_users, n_items, train, valid, test).py()?;
        if user_ids.is_some() || item_ids.is_some() {
            let users = user_ids.unwrap_or_else(|| ds.users.ids().to_vec());
            let items = item_ids.unwrap_or_else(|| ds.items.ids().to_vec());
            ds = ds.with_ids(users, items).py()?;
        }
        Ok(Self { inner: Arc::new(ds) })
    }

    #[getter]
    fn name(&self) -> String {
        self.inner.name.clone()
    }

    #[getter]
    fn n_users(&self) -> usize {
        self.inner.n_users()
    }

    #[getter]
    fn n_items(&self) -> usize {
        self.inner.n_items()
    }

    #[getter]
    fn user_ids(&self) -> Vec<String> {
        self.inner.users.ids().to_vec()
    }

    #[getter]
    fn item_ids(&self) -> Vec<String> {
        self.inner.items.ids().to_vec()
    }

    /// The `(n, 2)` pairs of a split: `train`, `valid` or `test`.
    fn pairs<'py>(&self, py: Python<'py>, split: &str) -> PyResult<Bound<'py, PyArray2<i64>>> {
        let empty = engine::data::Interactions::default();
        let e = match split {
            "train" => &self.inner.train,
            "valid" => self.inner.valid.as_ref().unwrap_or(&empty),
            "test" => &self.inner.test,
            _ => return Err(PyValueError::new_err(format!("unknown split {split:?} (train, valid or test)"))),
        };
        Ok(pairs_array(py, e))
    }

    /// Whether the dataset has a validation split of its own.
    #[getter]
    fn has_valid(&self) -> bool {
        self.inner.valid.as_ref().is_some_and(|v| !v.is_empty())
    }

    /// The index of an external user id (KeyError when unknown).
    fn user_index(&self, id: &str) -> PyResult<u32> {
        self.inner.users.get(id).ok_or_else(|| PyKeyError::new_err(format!("unknown user id {id:?}")))
    }

    /// The index of an external item id (KeyError when unknown).
    fn item_index(&self, id: &str) -> PyResult<u32> {
        self.inner.items.get(id).ok_or_else(|| PyKeyError::new_err(format!("unknown item id {id:?}")))
    }

    /// The dataset's fingerprint (what checkpoints record).
    fn fingerprint(&self) -> String {
        self.inner.fingerprint()
    }

    /// `unlearnrec data stats --json`'s figures, as JSON text.
    fn stats_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.inner.stats()).map_err(json_err)
    }
}

/// A trained (or unlearned) model: the CLI's checkpoint.
#[pyclass(module = "unlearnrec._native", name = "Model", frozen)]
struct PyModel {
    inner: Arc<Checkpoint>,
}

#[pymethods]
impl PyModel {
    /// Reads a checkpoint file.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let ckpt = py.detach(|| engine::load(&path)).py()?;
        Ok(Self { inner: Arc::new(ckpt) })
    }

    /// A checkpoint from the bytes of a file (`to_bytes`).
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        let path = temp_path()?;
        std::fs::write(&path, data)?;
        Self::load(py, path.to_path_buf())
    }

    /// Writes the checkpoint file (atomically).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| self.inner.save(&path)).py()
    }

    /// The bytes `save` writes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = py.detach(|| self.inner.to_bytes()).py()?;
        Ok(PyBytes::new(py, &bytes))
    }

    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.model().kind().name()
    }

    #[getter]
    fn n_users(&self) -> usize {
        self.inner.model().n_users()
    }

    #[getter]
    fn n_items(&self) -> usize {
        self.inner.model().n_items()
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.model().dim()
    }

    #[getter]
    fn user_ids(&self) -> Vec<String> {
        self.inner.users().ids().to_vec()
    }

    #[getter]
    fn item_ids(&self) -> Vec<String> {
        self.inner.items().ids().to_vec()
    }

    /// The checkpoint's metadata (configuration, dataset, history, provenance) as JSON text.
    fn meta_json(&self) -> PyResult<String> {
        serde_json::to_string(self.inner.meta()).map_err(json_err)
    }

    /// The forgotten interactions as `(n, 2)` indices.
    fn removed<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<i64>> {
        pairs_array(py, self.inner.removed())
    }

    /// The training edges the model propagates over, as `(n, 2)` indices.
    fn edges<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<i64>> {
        pairs_array(py, self.inner.edges())
    }

    /// Top-`k` unseen items of each user: `(ids, scores)`, `(n, k')` int64 and float32, padded with -1 / -inf;
    /// an erased user's row is all padding.
    fn recommend<'py>(
        &self,
        py: Python<'py>,
        users: PyReadonlyArray1<'_, i64>,
        k: usize,
    ) -> PyResult<Pair<'py, i64, f32>> {
        let n = self.inner.model().n_users();
        let users: Vec<u32> = users.as_array().iter().map(|&u| index("user", u, n)).collect::<PyResult<_>>()?;
        if k == 0 {
            return Err(PyValueError::new_err("k must be at least 1"));
        }
        let mut recs = py.detach(|| self.inner.recommend_many(&users, k)).py()?;
        // A user whose every interaction was forgotten is served nothing (the CLI and the service refuse it).
        let stride = recs.k;
        for (r, &u) in users.iter().enumerate() {
            if self.inner.is_erased_user(u) {
                recs.items[r * stride..(r + 1) * stride].fill(u32::MAX);
                recs.scores[r * stride..(r + 1) * stride].fill(f32::NEG_INFINITY);
            }
        }
        let ids: Vec<i64> = recs.items.iter().map(|&i| if i == u32::MAX { -1 } else { i64::from(i) }).collect();
        let shape = (users.len(), recs.k);
        let ids = Array2::from_shape_vec(shape, ids).expect("users x k ids");
        let scores = Array2::from_shape_vec(shape, recs.scores).expect("users x k scores");
        Ok((ids.into_pyarray(py), scores.into_pyarray(py)))
    }

    /// The final (propagated) embeddings: `(n_users, dim)` and `(n_items, dim)` float32.
    fn final_embeddings<'py>(&self, py: Python<'py>) -> PyResult<Pair<'py, f32, f32>> {
        let emb = py.detach(|| self.inner.final_embeddings()).py()?;
        Ok((table(py, emb.users, emb.dim), table(py, emb.items, emb.dim)))
    }

    /// The base embeddings `E⁰` (what training learns, before propagation).
    fn base_embeddings<'py>(&self, py: Python<'py>) -> PyResult<Pair<'py, f32, f32>> {
        let model = self.inner.model();
        let mut base = model.base_vec().py()?;
        let dim = base.len() / (model.n_users() + model.n_items()).max(1);
        let items = base.split_off(model.n_users() * dim);
        Ok((table(py, base, dim), table(py, items, dim)))
    }

    /// Ranking metrics on a split of `ds`, as the JSON of `unlearnrec eval --json`.
    fn evaluate(
        &self,
        py: Python<'_>,
        ds: &PyDataset,
        split: &str,
        ks: Vec<usize>,
        recall_denominator: &str,
    ) -> PyResult<String> {
        let split = match split {
            "test" => Split::Test,
            "valid" => Split::Valid,
            _ => return Err(PyValueError::new_err(format!("unknown split {split:?} (test or valid)"))),
        };
        let cfg = overlay(
            &EvalConfig { ks, ..EvalConfig::default() },
            Map::from_iter([("recall_denominator".to_string(), Value::from(recall_denominator))]),
            "evaluation settings",
        )?;
        let report = py.detach(|| self.inner.evaluate(&ds.inner, split, &cfg)).py()?;
        engine::eval_json(&report).py().map(|v| v.to_string())
    }

    /// Forgets a request; returns the new model and the receipt's JSON.
    #[pyo3(signature = (ds, method, unlearner, pairs, users, items, finetune, fast, skip_missing, callback=None))]
    #[allow(clippy::too_many_arguments)]
    fn forget(
        &self,
        py: Python<'_>,
        ds: &PyDataset,
        method: &str,
        unlearner: Option<&PyUnlearner>,
        pairs: Option<PyReadonlyArray2<'_, i64>>,
        users: Vec<String>,
        items: Vec<String>,
        finetune: &str,
        fast: bool,
        skip_missing: bool,
        callback: Option<Py<PyAny>>,
    ) -> PyResult<(PyModel, String)> {
        let ckpt = &self.inner;
        ckpt.meta().check_dataset(&ds.inner).py()?;
        let (u, i) = (ckpt.users(), ckpt.items());
        let pairs = match pairs {
            Some(p) => pairs_of(&p, u.len(), i.len())?
                .into_iter()
                .map(|(a, b)| (u.external(a).to_string(), i.external(b).to_string()))
                .collect(),
            None => Vec::new(),
        };
        let request = Request { pairs, users, items };
        let opts = ForgetOptions {
            unlearner: unlearner.map(|un| &*un.inner),
            finetune: overlay(
                &if fast { FinetuneConfig::fast() } else { FinetuneConfig::default() },
                json_object(finetune)?,
                "fine-tuning configuration",
            )?,
            skip_missing,
        };
        let (out, receipt) =
            observed(py, "forget", callback, |obs| engine::forget_with(ckpt, method, &request, &opts, obs))?;
        let receipt = serde_json::to_string(&receipt).map_err(json_err)?;
        Ok((PyModel { inner: Arc::new(out) }, receipt))
    }
}

/// A pre-trained influence encoder (UnlearnRec's unlearner) for one model.
#[pyclass(module = "unlearnrec._native", name = "Unlearner", frozen)]
struct PyUnlearner {
    inner: Arc<Unlearner>,
}

#[pymethods]
impl PyUnlearner {
    /// Reads an unlearner file.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let un = py.detach(|| engine::load_unlearner(&path)).py()?;
        Ok(Self { inner: Arc::new(un) })
    }

    /// An unlearner from the bytes of a file (`to_bytes`).
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        let path = temp_path()?;
        std::fs::write(&path, data)?;
        Self::load(py, path.to_path_buf())
    }

    /// Writes the unlearner file (atomically).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| self.inner.save(&path)).py()
    }

    /// The bytes `save` writes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let path = temp_path()?;
        py.detach(|| self.inner.save(&path)).py()?;
        Ok(PyBytes::new(py, &std::fs::read(&path)?))
    }

    /// SHA-256 of the encoder's parameters.
    fn sha256(&self) -> PyResult<String> {
        self.inner.sha256().py()
    }

    /// The unlearner's metadata as JSON text.
    fn meta_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.inner.meta).map_err(json_err)
    }
}

/// Trains a model on `ds` with the flat `[model]` + `[train]` keys of `config` (JSON).
#[pyfunction]
#[pyo3(signature = (ds, config, callback=None))]
fn train(py: Python<'_>, ds: &PyDataset, config: &str, callback: Option<Py<PyAny>>) -> PyResult<PyModel> {
    let (model, train) = run_config(config)?;
    let ds = ds.inner.clone();
    let ckpt = observed(py, "train", callback, |obs| engine::train_with(&ds, &model, &train, obs))?;
    Ok(PyModel { inner: Arc::new(ckpt) })
}

/// Pre-trains an unlearner for `model` with the `[pretrain]` keys of `config` (JSON).
#[pyfunction]
#[pyo3(signature = (model, ds, config, callback=None))]
fn pretrain(
    py: Python<'_>,
    model: &PyModel,
    ds: &PyDataset,
    config: &str,
    callback: Option<Py<PyAny>>,
) -> PyResult<PyUnlearner> {
    model.inner.meta().check_dataset(&ds.inner).py()?;
    let cfg = overlay(&PretrainConfig::default(), json_object(config)?, "pretrain configuration")?;
    let ckpt = model.inner.clone();
    let un = observed(py, "pretrain", callback, |obs| engine::pretrain_with(&ckpt, &cfg, obs))?;
    Ok(PyUnlearner { inner: Arc::new(un) })
}

/// Audits `model` on `removed` (`(n, 2)` indices; the model's own removed pairs when `None`); the report's JSON.
#[pyfunction]
#[pyo3(signature = (model, ds, removed, original, reference, config))]
fn audit(
    py: Python<'_>,
    model: &PyModel,
    ds: &PyDataset,
    removed: Option<PyReadonlyArray2<'_, i64>>,
    original: Option<&PyModel>,
    reference: Option<&PyModel>,
    config: &str,
) -> PyResult<String> {
    let ckpt = &model.inner;
    let removed = match removed {
        Some(p) => {
            engine::data::Interactions::from_pairs(pairs_of(&p, ckpt.model().n_users(), ckpt.model().n_items())?).0
        }
        None => ckpt.removed().clone(),
    };
    let cfg = overlay(&AuditConfig::default(), json_object(config)?, "audit configuration")?;
    let (original, reference) = (original.map(|m| &*m.inner), reference.map(|m| &*m.inner));
    let report = py.detach(|| engine::audit_with(ckpt, &ds.inner, &removed, original, reference, &cfg)).py()?;
    serde_json::to_string(&report).map_err(json_err)
}

/// A model of base embeddings trained elsewhere (rows in `ds`'s index order), with the flat `[model]` +
/// `[train]` keys of `config` (JSON; `dim` is the tables' width).
#[pyfunction]
fn from_embeddings(
    py: Python<'_>,
    ds: &PyDataset,
    users: PyReadonlyArray2<'_, f32>,
    items: PyReadonlyArray2<'_, f32>,
    config: &str,
) -> PyResult<PyModel> {
    let dim = users.as_array().ncols();
    let mut given = json_object(config)?;
    given.insert("dim".into(), Value::from(dim));
    let (model, train) = run_config(&Value::Object(given).to_string())?;
    let ds = &ds.inner;
    let users = table_vec(&users, ds.n_users(), dim, "user_emb")?;
    let items = table_vec(&items, ds.n_items(), dim, "item_emb")?;
    let ckpt = py.detach(|| engine::from_embeddings(ds, &model, &train, &users, &items)).py()?;
    Ok(PyModel { inner: Arc::new(ckpt) })
}

/// The registered forgetting methods.
#[pyfunction]
fn method_names() -> Vec<&'static str> {
    engine::method_names()
}

/// The registered models.
#[pyfunction]
fn model_names() -> Vec<&'static str> {
    engine::model::model_names().to_vec()
}

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("UnlearnrecError", py.get_type::<UnlearnrecError>())?;
    m.add("DivergedError", py.get_type::<DivergedError>())?;
    m.add("CheckpointMismatchError", py.get_type::<CheckpointMismatchError>())?;
    m.add("InvalidCheckpointError", py.get_type::<InvalidCheckpointError>())?;
    m.add_class::<PyDataset>()?;
    m.add_class::<PyModel>()?;
    m.add_class::<PyUnlearner>()?;
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_function(wrap_pyfunction!(pretrain, m)?)?;
    m.add_function(wrap_pyfunction!(audit, m)?)?;
    m.add_function(wrap_pyfunction!(from_embeddings, m)?)?;
    m.add_function(wrap_pyfunction!(method_names, m)?)?;
    m.add_function(wrap_pyfunction!(model_names, m)?)?;
    Ok(())
}
