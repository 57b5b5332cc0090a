//! The model the service answers from, and the files of its versions.
//!
//! - [`Served`]: one checkpoint with its serving view ([`Checkpoint::serving`]: final embeddings, the
//!   seen-item filter, the erased catalogue) computed before it is served. Readers take it from an
//!   [`ArcSwap`] and never wait for the worker.
//! - [`Store`]: the worker's side. [`Store::open`] recovers: it loads the version the ledger says is current
//!   (checking its SHA-256) and deletes files of versions the ledger never committed. [`Store::apply`] applies
//!   a batch: unlearning, then `model-v{N}.safetensors` and `data-v{N}/` written atomically under the state
//!   directory, then one ledger transaction, then the swap. [`Store::consolidate`] commits a consolidation
//!   of the retrain schedule the same way, with `unlearner-v{N}.safetensors`, the unlearner pre-trained for
//!   its backbone, written beside the checkpoint before the commit; the worker then unlearns with it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use unlearnrec_core::checkpoint::{Anchor, Checkpoint, ServeInfo, Serving};
use unlearnrec_core::data::{Dataset, IdMap, Interactions};
use unlearnrec_core::graph::Graph;
use unlearnrec_core::io::sha256_hex;
use unlearnrec_core::model::Backbone;
use unlearnrec_core::pipeline::union;
use unlearnrec_core::train::Silent;
use unlearnrec_core::unlearn::receipt;
use unlearnrec_core::unlearn::request::Request;
use unlearnrec_core::unlearn::{
    self, FinetuneConfig, MethodId, MethodOptions, PretrainConfig, UnlearnReport, Unlearner, forget_method,
};

use crate::error::{Result, ServeError};
use crate::ledger::{Applied, Forget, Ledger, RequestRow, VersionRow, now_utc};
use crate::retrain::Pending;

/// Why a forget request is refused before it is recorded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// An id the model does not know.
    #[error("unknown {kind} id {id:?}")]
    Unknown {
        /// `user` or `item`.
        kind: &'static str,
        /// The id.
        id: String,
    },
    /// Known ids that name no interaction of the model, past or present.
    #[error("{0}")]
    NoInteraction(String),
}

/// A checkpoint ready to answer.
pub struct Served {
    /// Its version in the ledger.
    pub version: u64,
    /// Its file.
    pub path: PathBuf,
    /// SHA-256 of its file.
    pub sha256: String,
    /// The checkpoint.
    pub ckpt: Checkpoint,
}

impl Served {
    /// `ckpt` with its serving view computed, so that no reader computes it.
    pub fn new(version: u64, path: PathBuf, sha256: String, ckpt: Checkpoint) -> Result<Self> {
        ckpt.serving()?;
        Ok(Self { version, path, sha256, ckpt })
    }

    fn view(&self) -> &Serving {
        self.ckpt.serving().expect("the serving view is computed by Served::new")
    }

    /// External user ids.
    pub fn users(&self) -> &IdMap {
        self.ckpt.users()
    }

    /// External item ids.
    pub fn items(&self) -> &IdMap {
        self.ckpt.items()
    }

    /// The internal id of an external user id.
    pub fn user(&self, external: &str) -> Option<u32> {
        self.users().get(external)
    }

    /// True when every interaction of the user was unlearned.
    pub fn is_erased_user(&self, user: u32) -> bool {
        self.ckpt.is_erased_user(user)
    }

    /// Edges (training and validation) removed since the model's anchor, the last exactly trained model it
    /// is unlearned from: the drift a consolidation removes. 0 for an exactly trained model.
    pub fn edges_since_anchor(&self) -> usize {
        self.ckpt.anchor().map_or(0, |a| a.since_train.len() + a.since_valid.len())
    }

    /// Whether the model is not an exact training result: it was unlearned from an anchor, or (a file written
    /// before anchors) its base embeddings carry an encoder offset. What a consolidation replaces.
    pub fn is_approximate(&self) -> bool {
        self.ckpt.anchor().is_some() || self.ckpt.meta().provenance.encoder_offset.is_some()
    }

    /// The top-`k` unseen items of `user` (external id, score), best first: [`Checkpoint::recommend`],
    /// answered from the view computed once per version.
    pub fn recommend(&self, user: u32, k: usize) -> Result<Vec<(String, f32)>> {
        Ok(self.ckpt.recommend(user, k)?)
    }

    fn lookup(&self, f: &Forget) -> Result<(Option<u32>, Vec<u32>), Rejection> {
        let user = |u: &str| self.users().get(u).ok_or(Rejection::Unknown { kind: "user", id: u.to_string() });
        let item = |i: &str| self.items().get(i).ok_or(Rejection::Unknown { kind: "item", id: i.to_string() });
        Ok(match f {
            Forget::Pairs { user: u, items } => {
                (Some(user(u)?), items.iter().map(|i| item(i)).collect::<Result<_, _>>()?)
            }
            Forget::User { user: u } => (Some(user(u)?), Vec::new()),
            Forget::Item { item: i } => (None, vec![item(i)?]),
        })
    }

    /// Checks a request before it is recorded: known ids that name interactions the model has or had.
    pub fn check(&self, f: &Forget) -> Result<(), Rejection> {
        let (seen, removed) = (self.view().seen(), self.view().removed());
        let had = |u: u32, i: u32| seen.contains(u, i) || removed.contains(u, i);
        match (f, self.lookup(f)?) {
            (Forget::Pairs { user, items }, (Some(u), ids)) => {
                if let Some(k) = ids.iter().position(|&i| !had(u, i)) {
                    return Err(Rejection::NoInteraction(format!(
                        "({user}, {}) is not an interaction of this model",
                        items[k]
                    )));
                }
            }
            (Forget::User { user }, (Some(u), _)) => {
                let row = |g: &Graph| g.user_items().row(u as usize).is_empty();
                if row(seen) && row(removed) {
                    return Err(Rejection::NoInteraction(format!("user {user:?} has no interactions")));
                }
            }
            (Forget::Item { item }, (_, ids)) => {
                let row = |g: &Graph| g.item_users().row(ids[0] as usize).is_empty();
                if row(seen) && row(removed) {
                    return Err(Rejection::NoInteraction(format!("item {item:?} has no interactions")));
                }
            }
            _ => unreachable!("lookup returns a user for user requests"),
        }
        Ok(())
    }

    /// The interactions (training graph or validation) a request still names, internal ids
    /// ([`Request::present_in`]).
    pub fn resolve(&self, f: &Forget) -> Result<Vec<(u32, u32)>, Rejection> {
        Request::from(f.clone()).present_in(self.users(), self.items(), self.view().seen()).map_err(|e| match e {
            unlearnrec_core::Error::UnknownId { kind, id } => Rejection::Unknown { kind, id },
            e => Rejection::NoInteraction(e.to_string()),
        })
    }

    fn external(&self, edges: &[(u32, u32)]) -> Vec<(String, String)> {
        edges
            .iter()
            .map(|&(u, i)| (self.users().external(u).to_string(), self.items().external(i).to_string()))
            .collect()
    }
}

/// A fault [`Store::apply`] injects, for crash and fault tests (`--fault-point`, hidden).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPoint {
    /// Abort after the new checkpoint is written, before the remaining data.
    AfterCheckpoint,
    /// Abort after both files are written, before the ledger commit.
    BeforeCommit,
    /// Abort after the ledger commit, before the served model is swapped.
    AfterCommit,
    /// Panic in the worker after unlearning the first batch that changes the model, before writing it (once
    /// per process: the restarted worker applies the batch).
    Panic,
    /// The same panic in every such batch (the worker's restarts run out).
    PanicAlways,
    /// Stall a batch for two minutes after unlearning, not looking at the stop flag (a step that cannot be
    /// cancelled), before writing it.
    Stall,
    /// Fail the first [`DISK_FULL_FAILURES`] writes of a version with "no space left on device", after
    /// its checkpoint file is written (a half-written version).
    DiskFull,
}

/// How many version writes [`FaultPoint::DiskFull`] fails.
#[doc(hidden)]
pub const DISK_FULL_FAILURES: u32 = 2;

impl std::str::FromStr for FaultPoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "after-checkpoint" => Ok(FaultPoint::AfterCheckpoint),
            "before-commit" => Ok(FaultPoint::BeforeCommit),
            "after-commit" => Ok(FaultPoint::AfterCommit),
            "panic" => Ok(FaultPoint::Panic),
            "panic-always" => Ok(FaultPoint::PanicAlways),
            "stall" => Ok(FaultPoint::Stall),
            "disk-full" => Ok(FaultPoint::DiskFull),
            _ => Err(format!(
                "unknown fault point {s:?} (after-checkpoint, before-commit, after-commit, panic, panic-always, \
                 stall, disk-full)"
            )),
        }
    }
}

/// What the worker's store needs.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The checkpoint the service was first started with (version 0).
    pub model: PathBuf,
    /// The pre-trained unlearner.
    pub unlearner: PathBuf,
    /// The ledger.
    pub db: PathBuf,
    /// Where versioned checkpoints and remaining data go.
    pub state_dir: PathBuf,
    /// Fine-tuning after the encoder pass.
    pub finetune: FinetuneConfig,
    /// Crash injection (tests only).
    #[doc(hidden)]
    pub fault: Option<FaultPoint>,
}

/// The outcome of [`Store::apply`].
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The batch is applied; `changed` when a new model version was written.
    Applied {
        /// The served version after the batch.
        version: u64,
        /// Requests applied.
        requests: usize,
        /// Edges removed.
        edges: usize,
        /// Whether the model changed.
        changed: bool,
        /// Seconds from each applied request's commit (its `202`) to the ledger transaction that applied
        /// it, from the ledger's recorded times (requests committed before they were recorded are left out).
        waited: Vec<f64>,
    },
    /// The service is stopping; the batch stays queued and will be applied on the next start.
    Abandoned,
}

/// Why [`Store::apply`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Unlearning itself failed on this batch (deterministic: retrying the same batch fails again).
    #[error("{0}")]
    Request(String),
    /// Files or the ledger (possibly transient; the batch stays queued).
    #[error(transparent)]
    Serve(#[from] ServeError),
}

impl From<unlearnrec_core::Error> for ApplyError {
    fn from(e: unlearnrec_core::Error) -> Self {
        ApplyError::Serve(e.into())
    }
}

/// The worker's view of the state: the ledger connection, the data and unlearner, the served model.
pub struct Store {
    cfg: StoreConfig,
    ledger: Ledger,
    dataset: Dataset,
    unlearner: Unlearner,
    /// The version whose `unlearner-v{N}` file `unlearner` is; `None`: [`StoreConfig::unlearner`].
    unlearner_version: Option<u64>,
    served: Arc<ArcSwap<Served>>,
}

/// The files of a version written by [`Store::write_version`].
struct Written {
    checkpoint: PathBuf,
    data_dir: PathBuf,
    /// The checkpoint's bytes and SHA-256.
    bytes: Vec<u8>,
    sha256: String,
    /// The unlearner's file and SHA-256, when one was written.
    unlearner: Option<(PathBuf, String)>,
}

/// The file name of version `v`'s checkpoint.
pub fn checkpoint_name(v: u64) -> String {
    format!("model-v{v:06}.safetensors")
}

/// The directory name of version `v`'s remaining data.
pub fn data_name(v: u64) -> String {
    format!("data-v{v:06}")
}

/// The file name of the unlearner pre-trained for consolidation `v`'s backbone.
pub fn unlearner_name(v: u64) -> String {
    format!("unlearner-v{v:06}.safetensors")
}

fn six_digits(digits: &str) -> Option<u64> {
    (digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// The version of a checkpoint or remaining-data name.
fn version_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("model-v").and_then(|s| s.strip_suffix(".safetensors"));
    six_digits(digits.or_else(|| name.strip_prefix("data-v"))?)
}

/// The version of an unlearner name.
fn unlearner_version_of(name: &str) -> Option<u64> {
    six_digits(name.strip_prefix("unlearner-v")?.strip_suffix(".safetensors")?)
}

fn remove_path(p: &Path) -> Result<()> {
    let r = if p.is_dir() { std::fs::remove_dir_all(p) } else { std::fs::remove_file(p) };
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ServeError::io(p, e)),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    Ok(unlearnrec_core::io::sync_dir(dir)?)
}

/// Deletes what the ledger never committed (versions above `current`, temporary files), versions older
/// than `current - 1`, and every unlearner but `unlearner`'s (the version whose unlearner is in use).
/// Returns the deleted names.
pub fn clean_state_dir(dir: &Path, current: u64, unlearner: Option<u64>) -> Result<Vec<String>> {
    let mut gone = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| ServeError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ServeError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = match (version_of(&name), unlearner_version_of(&name)) {
            (Some(v), _) => v > current || v + 1 < current,
            (_, Some(v)) => Some(v) != unlearner,
            _ => name.starts_with(".unlearnrec-") || name.starts_with(".data-v"),
        };
        if stale {
            remove_path(&entry.path())?;
            gone.push(name);
        }
    }
    if !gone.is_empty() {
        sync_dir(dir)?;
    }
    Ok(gone)
}

fn read_with_sha(path: &Path) -> Result<(Vec<u8>, String)> {
    let bytes = std::fs::read(path).map_err(|e| ServeError::io(path, e))?;
    let sha = sha256_hex(&bytes);
    Ok((bytes, sha))
}

/// Writes `ds` in LightGCN format to `dir` atomically: a temporary directory, every file synced, renamed.
fn write_data_dir(ds: &Dataset, dir: &Path) -> Result<()> {
    let parent = dir.parent().expect("the data directory is inside the state directory");
    let name = dir.file_name().expect("a data directory has a name").to_string_lossy();
    let tmp = parent.join(format!(".{name}.tmp"));
    remove_path(&tmp)?;
    unlearnrec_core::data::write_lightgcn(ds, &tmp)?;
    for entry in std::fs::read_dir(&tmp).map_err(|e| ServeError::io(&tmp, e))? {
        let p = entry.map_err(|e| ServeError::io(&tmp, e))?.path();
        std::fs::File::open(&p).and_then(|f| f.sync_all()).map_err(|e| ServeError::io(&p, e))?;
    }
    sync_dir(&tmp)?;
    remove_path(dir)?;
    std::fs::rename(&tmp, dir).map_err(|e| ServeError::io(dir, e))?;
    sync_dir(parent)
}

fn fault(at: FaultPoint, cfg: Option<FaultPoint>) {
    if cfg == Some(at) {
        eprintln!("fault injection: aborting at {at:?}");
        std::process::abort();
    }
}

/// The faults injected between unlearning a batch and writing it: a panic, a stall.
fn fault_before_write(cfg: Option<FaultPoint>) {
    static PANICKED: AtomicBool = AtomicBool::new(false);
    match cfg {
        Some(FaultPoint::Panic) if !PANICKED.swap(true, Ordering::SeqCst) => {
            panic!("fault injection: a panic in the worker")
        }
        Some(FaultPoint::PanicAlways) => panic!("fault injection: a panic in the worker, every batch"),
        Some(FaultPoint::Stall) => {
            eprintln!("fault injection: stalling the batch for 120 s");
            std::thread::sleep(std::time::Duration::from_secs(120));
        }
        _ => {}
    }
}

/// The disk-full fault: an error for the first [`DISK_FULL_FAILURES`] calls when configured.
fn fault_disk_full(cfg: Option<FaultPoint>, path: &Path) -> Result<()> {
    static FAILED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    if cfg == Some(FaultPoint::DiskFull) && FAILED.fetch_add(1, Ordering::SeqCst) < DISK_FULL_FAILURES {
        eprintln!("fault injection: disk full writing {}", path.display());
        return Err(ServeError::io(path, std::io::Error::other("no space left on device (fault injection)")));
    }
    Ok(())
}

/// `ckpt` with `edges` (validation edges only, which the model never trained on) moved to its removed set. An
/// anchor is kept, with the edges counted as removed since it, so the next request still applies from it.
fn drop_valid_edges(ckpt: &Checkpoint, edges: &Interactions) -> Result<Checkpoint> {
    let m = ckpt.model();
    let model = Backbone::from_embeddings(m.config.clone(), m.n_users(), m.n_items(), m.base_vec()?)?;
    let valid = ckpt.valid().difference(edges).0;
    let out = ckpt.derive(model, ckpt.edges().clone(), valid, union(ckpt.removed(), edges))?;
    Ok(match ckpt.anchor() {
        Some(a) => out.with_anchor(Anchor {
            base: a.base.clone(),
            since_train: a.since_train.clone(),
            since_valid: union(&a.since_valid, edges),
        })?,
        None => out,
    })
}

impl Store {
    /// Opens the ledger and recovers: version 0 is recorded on first start; the current version's checkpoint
    /// is loaded and checked against its recorded SHA-256; files of versions the ledger never committed are
    /// deleted. Queued requests stay queued for the worker.
    ///
    /// # Errors
    /// A ledger started from another checkpoint, a checkpoint whose hash differs from the ledger's, a dataset
    /// or unlearner that does not match the checkpoint.
    pub fn open(mut cfg: StoreConfig, dataset: Dataset) -> Result<Self> {
        std::fs::create_dir_all(&cfg.state_dir).map_err(|e| ServeError::io(&cfg.state_dir, e))?;
        // The ledger records absolute paths, so that a restart from another directory finds the files.
        cfg.state_dir = std::path::absolute(&cfg.state_dir).map_err(|e| ServeError::io(&cfg.state_dir, e))?;
        let model = std::path::absolute(&cfg.model).map_err(|e| ServeError::io(&cfg.model, e))?;
        let mut ledger = Ledger::open(&cfg.db)?;
        let (_, base_sha) = read_with_sha(&model)?;
        ledger.init_base(&model, &base_sha)?;
        let base = ledger.version(0)?.ok_or_else(|| ServeError::Corrupt("no version 0".into()))?;
        if base.sha256 != base_sha {
            return Err(ServeError::Config(format!(
                "the ledger {} was started from checkpoint {} (sha256 {}), not {} (sha256 {base_sha})",
                cfg.db.display(),
                base.checkpoint.display(),
                base.sha256,
                model.display()
            )));
        }
        let current = ledger.current()?;
        let in_use = ledger.unlearner_of(current.version)?;
        // Recorded before the files go, in one transaction: a row never names a deleted file unmarked.
        ledger.mark_collected(current.version.saturating_sub(2))?;
        ledger.mark_unlearners_collected(in_use.as_ref().map(|u| u.0))?;
        let gone = clean_state_dir(&cfg.state_dir, current.version, in_use.as_ref().map(|u| u.0))?;
        if !gone.is_empty() {
            tracing::warn!("deleted files the ledger never committed or no longer needs: {}", gone.join(", "));
        }
        let (_, sha) = read_with_sha(&current.checkpoint)?;
        if sha != current.sha256 {
            return Err(ServeError::Corrupt(format!(
                "{} has sha256 {sha}, the ledger recorded {} for version {}",
                current.checkpoint.display(),
                current.sha256,
                current.version
            )));
        }
        if let Some(d) = &current.data_dir
            && !d.is_dir()
        {
            return Err(ServeError::Corrupt(format!(
                "the remaining data {} of the current version is missing",
                d.display()
            )));
        }
        let ckpt = Checkpoint::load(&current.checkpoint)?;
        ckpt.meta().check_dataset(&dataset)?;
        let (mut unlearner, mut unlearner_version) = match in_use {
            Some((v, path, recorded)) => {
                let (_, sha) = read_with_sha(&path)?;
                if sha != recorded {
                    return Err(ServeError::Corrupt(format!(
                        "{} has sha256 {sha}, the ledger recorded {recorded} for version {v}'s unlearner",
                        path.display()
                    )));
                }
                (Unlearner::load(&path)?, Some(v))
            }
            None => (Unlearner::load(&cfg.unlearner)?, None),
        };
        unlearner.check(&ckpt)?;
        if let (Some(want), Some(have)) = (ckpt.anchor_backbone_sha256()?, unlearner.meta.backbone_sha256.as_ref())
            && want != *have
        {
            // A consolidation committed before consolidations recorded their unlearner: pre-train one for the
            // anchor now. Otherwise the unlearner given is not the model's.
            let since = unlearner_version.unwrap_or(0);
            if !ledger.versions()?.iter().any(|r| r.retrain && r.version > since) {
                return Err(ServeError::Config(format!(
                    "the unlearner {} was pre-trained for another model (backbone sha256 {have}, the served \
                     model's anchor has {want}); pre-train one for it (`unlearnrec pretrain`)",
                    cfg.unlearner.display()
                )));
            }
            tracing::warn!(
                "version {} has no unlearner for its anchor (a consolidation written before they were recorded); \
                 pre-training one",
                current.version
            );
            let cfg_pre = unlearner.meta.pretrain.clone();
            unlearner = match ckpt.anchor_checkpoint()? {
                Some(anchor) => unlearn::pretrain(&anchor, &cfg_pre, &mut Silent)?,
                None => unlearn::pretrain(&ckpt, &cfg_pre, &mut Silent)?,
            };
            let path = cfg.state_dir.join(unlearner_name(current.version));
            unlearner.save(&path)?;
            sync_dir(&cfg.state_dir)?;
            let (_, sha) = read_with_sha(&path)?;
            ledger.set_unlearner(current.version, &(path, sha))?;
            unlearner_version = Some(current.version);
        }
        let served = Served::new(current.version, current.checkpoint.clone(), current.sha256.clone(), ckpt)?;
        Ok(Self { cfg, ledger, dataset, unlearner, unlearner_version, served: Arc::new(ArcSwap::from_pointee(served)) })
    }

    /// The configuration the unlearner in use was pre-trained with: what a consolidation pre-trains the
    /// next one with.
    pub fn pretrain_config(&self) -> PretrainConfig {
        self.unlearner.meta.pretrain.clone()
    }

    /// `request` (checked against `ckpt`) forgotten from `ckpt` with `unlearner`: through the encoder (and
    /// the configured fine-tuning) when it names edges the model learned from, else only moved out of the
    /// validation edges. The report when the encoder ran.
    /// Fine-tuning stops at the next minibatch once `stop` is set: then `Ok(None)`.
    fn forget(
        &self,
        ckpt: &Checkpoint,
        unlearner: &Unlearner,
        request: &Interactions,
        stop: &AtomicBool,
    ) -> Result<Option<(Checkpoint, Option<UnlearnReport>)>, ApplyError> {
        let learned = unlearn::check_request(ckpt, request).map_err(|e| ApplyError::Request(e.to_string()))?;
        if learned.is_empty() {
            return Ok(Some((drop_valid_edges(ckpt, request)?, None)));
        }
        // The service forgets with UnlearnRec, built through the registry like every method.
        let opts =
            MethodOptions { unlearner: Some(unlearner), finetune: self.cfg.finetune.clone(), ..Default::default() };
        let Some(out) = crate::cancel::cancellable(stop, |obs| {
            forget_method(MethodId::UNLEARNREC.name(), &opts).and_then(|m| m.forget(ckpt, request, obs))
        }) else {
            return Ok(None);
        };
        let out = out.map_err(|e| ApplyError::Request(e.to_string()))?;
        Ok(Some((out.checkpoint, Some(out.report))))
    }

    /// The served model, shared with the readers.
    pub fn served(&self) -> Arc<ArcSwap<Served>> {
        self.served.clone()
    }

    /// The dataset the store was opened with (to reopen it after a worker panic).
    pub fn into_dataset(self) -> Dataset {
        self.dataset
    }

    /// Serves through `served` from now on, storing this store's model in it: the readers' handle of the
    /// store this one replaces (a worker restarted after a panic reopens the store from disk).
    pub fn serve_through(&mut self, served: Arc<ArcSwap<Served>>) {
        served.store(self.served.load_full());
        self.served = served;
    }

    /// The worker's ledger connection.
    pub fn ledger(&mut self) -> &mut Ledger {
        &mut self.ledger
    }

    /// Applies `batch` (queued requests, oldest first) exactly once: each request removes the interactions
    /// it names that are still there and not taken by an earlier request of the batch; the union is
    /// unlearned with the encoder in one pass; the new checkpoint and remaining data are written under new
    /// versioned names; one ledger transaction marks the batch applied and records the version; then the
    /// served model is swapped. A batch with nothing left to remove is marked applied at the current
    /// version. When `stop` is set once unlearning finished, nothing is written and the batch stays queued.
    ///
    /// Requests whose ids the model does not know are marked failed and left out.
    pub fn apply(&mut self, batch: &[RequestRow], stop: &AtomicBool) -> Result<Outcome, ApplyError> {
        let cur = self.served.load_full();
        let mut taken = HashSet::new();
        let mut parts: Vec<(&RequestRow, Vec<(u32, u32)>)> = Vec::new();
        for row in batch {
            match cur.resolve(&row.forget) {
                Ok(edges) => {
                    let own: Vec<(u32, u32)> = edges.into_iter().filter(|e| taken.insert(*e)).collect();
                    parts.push((row, own));
                }
                Err(why) => self.ledger.fail(&row.id, &why.to_string())?,
            }
        }
        let all: Vec<(u32, u32)> = parts.iter().flat_map(|(_, e)| e.iter().copied()).collect();
        let n_edges = all.len();
        let request = Interactions::from_pairs(all).0;
        if request.is_empty() {
            let version = self.ledger.current()?;
            let applied: Vec<Applied> =
                parts.iter().map(|(r, _)| Applied { id: r.id.clone(), edges: Vec::new(), receipt: None }).collect();
            let waited = self.ledger.commit_batch(&version, &applied)?.into_iter().flatten().collect();
            return Ok(Outcome::Applied {
                version: cur.version,
                requests: applied.len(),
                edges: 0,
                changed: false,
                waited,
            });
        }
        let Some((mut next, report)) = self.forget(&cur.ckpt, &self.unlearner, &request, stop)? else {
            return Ok(Outcome::Abandoned);
        };
        fault_before_write(self.cfg.fault);
        if stop.load(Ordering::SeqCst) {
            return Ok(Outcome::Abandoned);
        }
        let v = cur.version + 1;
        let w = self.write_version(v, &mut next, None, None)?;
        let (after, ckpt_path, data_dir, sha) = (w.bytes, w.checkpoint, w.data_dir, w.sha256);
        let (before, _) = read_with_sha(&cur.path)?;
        let mut applied = Vec::with_capacity(parts.len());
        for (row, edges) in &parts {
            let receipt = match (&report, edges.is_empty()) {
                (Some(report), false) => {
                    let req = Interactions::from_pairs(edges.clone()).0;
                    let mut r = receipt::build(&row.id, &req, cur.users(), cur.items(), report, &before, &after);
                    (r.users, r.items) = unlearn::touched(&req);
                    r.edges = req.len();
                    Some(serde_json::to_string(&r).map_err(ServeError::from)?)
                }
                _ => None,
            };
            applied.push(Applied { id: row.id.clone(), edges: cur.external(edges), receipt });
        }
        let version = VersionRow {
            version: v,
            checkpoint: ckpt_path.clone(),
            sha256: sha.clone(),
            data_dir: Some(data_dir),
            edges: n_edges,
            created_utc: now_utc(),
            retrain: false,
            unlearner: None,
        };
        let waited = self.ledger.commit_batch(&version, &applied)?.into_iter().flatten().collect();
        fault(FaultPoint::AfterCommit, self.cfg.fault);
        self.swap_in(v, ckpt_path, sha, next)?;
        Ok(Outcome::Applied { version: v, requests: applied.len(), edges: n_edges, changed: true, waited })
    }

    /// Writes version `v`'s checkpoint (recording `v` and the version it is a retrain of, if it is one),
    /// remaining data and, for a consolidation, `unlearner` under their versioned names (replacing leftovers
    /// of an attempt that never committed), each synced with its directory. On an error (a full disk) what
    /// was written of version `v` is deleted again, best effort: no ledger row names it, and the next start
    /// would delete it anyway.
    fn write_version(
        &self,
        v: u64,
        next: &mut Checkpoint,
        retrain_of: Option<u64>,
        unlearner: Option<&Unlearner>,
    ) -> Result<Written> {
        let written = self.try_write_version(v, next, retrain_of, unlearner);
        if written.is_err() {
            let dir = &self.cfg.state_dir;
            let data_tmp = format!(".{}.tmp", data_name(v));
            for name in [checkpoint_name(v), data_name(v), data_tmp, unlearner_name(v)] {
                if unlearner.is_none() && name == unlearner_name(v) {
                    continue;
                }
                if let Err(e) = remove_path(&dir.join(&name)) {
                    tracing::warn!("could not delete the partial {name}: {e}");
                }
            }
            let _ = sync_dir(dir);
        }
        written
    }

    fn try_write_version(
        &self,
        v: u64,
        next: &mut Checkpoint,
        retrain_of: Option<u64>,
        unlearner: Option<&Unlearner>,
    ) -> Result<Written> {
        next.provenance_mut().serve = Some(ServeInfo { version: v, retrain_of });
        let ckpt_path = self.cfg.state_dir.join(checkpoint_name(v));
        let data_dir = self.cfg.state_dir.join(data_name(v));
        remove_path(&ckpt_path)?;
        next.save(&ckpt_path)?;
        fault(FaultPoint::AfterCheckpoint, self.cfg.fault);
        fault_disk_full(self.cfg.fault, &data_dir)?;
        write_data_dir(&next.remaining_dataset(&self.dataset), &data_dir)?;
        let unlearner = match unlearner {
            Some(un) => {
                let path = self.cfg.state_dir.join(unlearner_name(v));
                un.save(&path)?;
                let (_, sha) = read_with_sha(&path)?;
                Some((path, sha))
            }
            None => None,
        };
        sync_dir(&self.cfg.state_dir)?;
        fault(FaultPoint::BeforeCommit, self.cfg.fault);
        let (bytes, sha256) = read_with_sha(&ckpt_path)?;
        Ok(Written { checkpoint: ckpt_path, data_dir, bytes, sha256, unlearner })
    }

    /// Serves committed version `v` and deletes version `v - 2`'s files, after recording in the ledger that
    /// they are collected (so that no row names a deleted file without saying so; a crash in between leaves
    /// files the next start deletes).
    fn swap_in(&mut self, v: u64, ckpt_path: PathBuf, sha: String, next: Checkpoint) -> Result<()> {
        self.served.store(Arc::new(Served::new(v, ckpt_path, sha, next)?));
        if v >= 3 {
            if let Err(e) = self.ledger.mark_collected(v - 2) {
                tracing::warn!("could not record version {} as collected: {e}; keeping its files", v - 2);
                return Ok(());
            }
            for old in [checkpoint_name(v - 2), data_name(v - 2)] {
                if let Err(e) = remove_path(&self.cfg.state_dir.join(&old)) {
                    tracing::warn!("could not delete {old}: {e}");
                }
            }
        }
        Ok(())
    }

    /// Commits a consolidation ([`crate::retrain`]): `p.ckpt`, an exact retrain of version `p.base`
    /// ([`crate::retrain::exact`]), with `p.unlearner` pre-trained for it. When batches committed since `p.base`,
    /// the edges they removed are unlearned from the retrain with `p.unlearner` (as a batch would, in one
    /// pass from the new anchor), so that a consolidation lands under a steady stream of requests. The
    /// result is written as the next version with the unlearner beside it (`unlearner-v{N}`), committed in one
    /// ledger transaction recorded as a retrain, and swapped in; the worker unlearns with `p.unlearner` from
    /// then on. Returns the new version, or `None` when the consolidation does not apply (its base is not
    /// an ancestor of the current version, or the result's edges differ from the current version's) and was
    /// discarded.
    ///
    /// # Errors
    /// Files or the ledger, or unlearning the edges removed since `p.base`; nothing is committed and the
    /// served model is unchanged.
    pub fn consolidate(&mut self, p: Pending) -> Result<Option<u64>, ApplyError> {
        let Pending { base, ckpt: retrained, unlearner } = p;
        let cur = self.served.load_full();
        let on = self.ledger.current()?.version;
        if cur.version != on || base > on {
            return Ok(None);
        }
        unlearner.check(&retrained)?;
        // Removed edges only grow from version to version: the retrain's are a subset of the current ones.
        if !retrained.removed().difference(cur.ckpt.removed()).0.is_empty() {
            return Ok(None);
        }
        let since = cur.ckpt.removed().difference(retrained.removed()).0;
        let mut next = if since.is_empty() {
            retrained
        } else {
            match self.forget(&retrained, &unlearner, &since, &AtomicBool::new(false))? {
                Some((next, _)) => next,
                None => return Ok(None),
            }
        };
        if next.edges() != cur.ckpt.edges() || next.removed() != cur.ckpt.removed() || next.valid() != cur.ckpt.valid()
        {
            return Ok(None);
        }
        let v = on + 1;
        let w = self.write_version(v, &mut next, Some(base), Some(&unlearner))?;
        let version = VersionRow {
            version: v,
            checkpoint: w.checkpoint.clone(),
            sha256: w.sha256.clone(),
            data_dir: Some(w.data_dir.clone()),
            edges: 0,
            created_utc: now_utc(),
            retrain: true,
            unlearner: w.unlearner.clone(),
        };
        if !self.ledger.commit_retrain(on, &version)? {
            // Only this worker writes versions, so this is another process on the same ledger; the files
            // are ours and uncommitted.
            remove_path(&w.checkpoint)?;
            remove_path(&w.data_dir)?;
            if let Some((u, _)) = &w.unlearner {
                remove_path(u)?;
            }
            return Ok(None);
        }
        fault(FaultPoint::AfterCommit, self.cfg.fault);
        self.swap_in(v, w.checkpoint, w.sha256, next)?;
        self.unlearner = unlearner;
        if let Some(old) = self.unlearner_version.replace(v) {
            if let Err(e) = self.ledger.mark_unlearners_collected(Some(v)) {
                tracing::warn!("could not record unlearner {old} as collected: {e}; keeping its file");
                return Ok(Some(v));
            }
            let old = self.cfg.state_dir.join(unlearner_name(old));
            if let Err(e) = remove_path(&old) {
                tracing::warn!("could not delete {}: {e}", old.display());
            }
        }
        Ok(Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_validation_edges_keeps_the_anchor() {
        use unlearnrec_core::data::synthetic::{SynthConfig, generate};
        use unlearnrec_core::model::{ModelConfig, ModelKind};
        use unlearnrec_core::train::TrainConfig;
        let ds = generate(&SynthConfig { users: 40, items: 30, interactions: 600, ..Default::default() }).unwrap();
        let mc = ModelConfig { kind: ModelKind::LightGcn, dim: 8, layers: 2, ..Default::default() };
        let tc = TrainConfig { epochs: 1, batch_size: 256, ..Default::default() };
        let (ckpt, _) = unlearnrec_core::pipeline::train(&ds, &mc, &tc, &mut Silent).unwrap();
        let pc =
            unlearnrec_core::unlearn::PretrainConfig { epochs: 1, max_steps_per_epoch: Some(1), ..Default::default() };
        let un = unlearn::pretrain(&ckpt, &pc, &mut Silent).unwrap();
        let first = Interactions::from_pairs(ckpt.edges().iter().take(3).collect()).0;
        let ft = FinetuneConfig { epochs: 0, ..FinetuneConfig::default() };
        let (a, _) = unlearn::unlearn(&ckpt, &un, &first, &ft, &mut Silent).unwrap();
        let valid = Interactions::from_pairs(a.valid().iter().take(2).collect()).0;
        let b = drop_valid_edges(&a, &valid).unwrap();
        let anchor = b.anchor().expect("the anchor survives");
        assert_eq!(anchor.base, ckpt.model().base_vec().unwrap());
        assert_eq!(anchor.since_valid, valid);
        assert_eq!(&anchor.since_train, &first);
    }

    #[test]
    fn versioned_names_round_trip() {
        assert_eq!(version_of(&checkpoint_name(12)), Some(12));
        assert_eq!(version_of(&data_name(3)), Some(3));
        assert_eq!(unlearner_version_of(&unlearner_name(7)), Some(7));
        assert_eq!(version_of(&unlearner_name(7)), None);
        assert_eq!(unlearner_version_of(&checkpoint_name(7)), None);
        assert_eq!(version_of("model-v12.safetensors"), None);
        assert_eq!(version_of("token"), None);
    }

    #[test]
    fn cleaning_keeps_current_and_previous_and_drops_uncommitted() {
        let dir = tempfile::tempdir().unwrap();
        for v in 1..=5 {
            std::fs::write(dir.path().join(checkpoint_name(v)), b"x").unwrap();
            std::fs::create_dir(dir.path().join(data_name(v))).unwrap();
        }
        std::fs::write(dir.path().join(".unlearnrec-abc"), b"x").unwrap();
        std::fs::create_dir(dir.path().join(".data-v000006.tmp")).unwrap();
        std::fs::write(dir.path().join("token"), b"t").unwrap();
        for v in [1, 2, 4] {
            std::fs::write(dir.path().join(unlearner_name(v)), b"u").unwrap();
        }
        clean_state_dir(dir.path(), 3, Some(1)).unwrap();
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        left.sort();
        let want =
            [data_name(2), data_name(3), checkpoint_name(2), checkpoint_name(3), "token".into(), unlearner_name(1)];
        assert_eq!(left, want);
        // Without a versioned unlearner in use, none is kept.
        clean_state_dir(dir.path(), 3, None).unwrap();
        assert!(!dir.path().join(unlearner_name(1)).exists());
    }
}
