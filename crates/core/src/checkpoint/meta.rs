//! A checkpoint's metadata: configuration, dataset, id maps, history and typed provenance.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::shards::ShardMeta;
use crate::data::{Dataset, IdMap};
use crate::error::{Error, Result};
use crate::model::ModelConfig;
use crate::train::{FitReport, TrainConfig};
use crate::unlearn::method::MethodId;

/// Identifies the dataset a checkpoint was trained on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// The dataset's name.
    pub name: String,
    /// [`Dataset::fingerprint`] of the dataset as loaded (before any carving or unlearning).
    pub fingerprint: String,
    /// Users.
    pub n_users: usize,
    /// Items.
    pub n_items: usize,
}

impl DatasetInfo {
    /// The info of a dataset.
    pub fn of(ds: &Dataset) -> Self {
        Self { name: ds.name.clone(), fingerprint: ds.fingerprint(), n_users: ds.n_users(), n_items: ds.n_items() }
    }
}

/// The encoder offset `MLP(H⁰)` of docs/method.md §8.3 is in a checkpoint's base embeddings: which
/// unlearner put it there. A later request subtracts it before applying the encoder again, which is right
/// only with the same unlearner ([`crate::unlearn::unlearn`] refuses another).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetApplied {
    /// [`crate::unlearn::Unlearner::sha256`] of the unlearner that applied it (`None` in format-1 files,
    /// which recorded only that an offset was applied).
    pub unlearner_sha256: Option<String>,
    /// [`super::Checkpoint::backbone_sha256`] of the backbone that unlearner was pre-trained for (`None` in
    /// format-1 files and for unlearners written before they recorded it).
    pub backbone_sha256: Option<String>,
}

/// What the service records about a version it wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeInfo {
    /// The version in the service's ledger.
    pub version: u64,
    /// The version this one is an exact retrain of (the retrain schedule), if it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrain_of: Option<u64>,
}

/// Where a checkpoint comes from and what was done to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Provenance {
    /// The unlearnrec version that trained the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The method of the last unlearning (`None` for a freshly trained model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<MethodId>,
    /// Set when the base embeddings carry an unlearner's encoder offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoder_offset: Option<OffsetApplied>,
    /// The shards behind the served model of a sharded (SISA) checkpoint; its sub-models are tensors of the
    /// same file ([`crate::unlearn::baselines::sisa::save`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<ShardMeta>,
    /// Set on the versions the service writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serve: Option<ServeInfo>,
    /// Free-form notes of tools (the experiment runner's sharded training time), in key order.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

/// Everything but the tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// The model's configuration (the backbone's own, [`super::Checkpoint::new`] checks).
    pub model: ModelConfig,
    /// The training configuration.
    pub train: TrainConfig,
    /// The dataset.
    pub dataset: DatasetInfo,
    /// Whether a validation split was carved from train with `train.valid_ratio` and `train.seed`.
    pub carved_valid: bool,
    /// The training history.
    pub history: Option<FitReport>,
    /// Method, encoder offset, shards, service version and notes.
    pub provenance: Provenance,
    /// External user ids by internal id.
    #[serde(rename = "user_ids")]
    pub users: IdMap,
    /// External item ids by internal id.
    #[serde(rename = "item_ids")]
    pub items: IdMap,
}

impl CheckpointMeta {
    /// Metadata of a model freshly trained on `ds` (this build's version in the provenance).
    pub fn trained(
        ds: &Dataset,
        model: &ModelConfig,
        train: &TrainConfig,
        carved_valid: bool,
        history: Option<FitReport>,
    ) -> Self {
        Self {
            model: model.clone(),
            train: train.clone(),
            dataset: DatasetInfo::of(ds),
            carved_valid,
            history,
            provenance: Provenance { version: Some(env!("CARGO_PKG_VERSION").to_string()), ..Provenance::default() },
            users: ds.users.clone(),
            items: ds.items.clone(),
        }
    }

    /// Refuses a dataset other than the one the checkpoint was made from: another fingerprint or size, or
    /// the same interactions under other external ids (the fingerprint leaves the id maps out).
    ///
    /// # Errors
    /// [`Error::CheckpointMismatch`] naming both datasets, or the first internal id whose external ids differ.
    pub fn check_dataset(&self, ds: &Dataset) -> Result<()> {
        let fp = ds.fingerprint();
        if fp != self.dataset.fingerprint
            || ds.n_users() != self.dataset.n_users
            || ds.n_items() != self.dataset.n_items
        {
            return Err(Error::CheckpointMismatch {
                expected: format!(
                    "dataset {:?} ({} users, {} items, fingerprint {fp})",
                    ds.name,
                    ds.n_users(),
                    ds.n_items()
                ),
                found: format!(
                    "a checkpoint trained on {:?} ({} users, {} items, fingerprint {})",
                    self.dataset.name, self.dataset.n_users, self.dataset.n_items, self.dataset.fingerprint
                ),
            });
        }
        for (kind, theirs, ours) in [("user", &ds.users, &self.users), ("item", &ds.items, &self.items)] {
            // Equal lengths here: the sizes matched and a checkpoint has one id per row.
            let pairs = theirs.ids().iter().zip(ours.ids());
            if let Some((k, (a, b))) = pairs.enumerate().find(|(_, (a, b))| a != b) {
                return Err(Error::CheckpointMismatch {
                    expected: format!("dataset {:?} whose {kind} {k} has external id {a:?}", ds.name),
                    found: format!(
                        "a checkpoint trained on {:?} whose {kind} {k} has external id {b:?} (same interactions, \
                         other ids)",
                        self.dataset.name
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The provenance keys of format 1, where provenance was a map of strings.
mod v1 {
    pub const VERSION: &str = "version";
    pub const METHOD: &str = "method";
    pub const OFFSET: &str = "encoder_offset";
    pub const SHARDS: &str = "sisa";
    pub const SERVE_VERSION: &str = "serve_version";
    pub const SERVE_RETRAIN_OF: &str = "serve_retrain_of";
    /// Redundant with the removed edges; dropped.
    pub const UNLEARNED_EDGES: &str = "unlearned_edges";
}

/// The metadata document of format 1.
#[derive(Deserialize)]
pub(super) struct MetaV1 {
    model: ModelConfig,
    train: TrainConfig,
    dataset: DatasetInfo,
    user_ids: Vec<String>,
    item_ids: Vec<String>,
    carved_valid: bool,
    history: Option<FitReport>,
    provenance: BTreeMap<String, String>,
}

impl MetaV1 {
    /// The same metadata in this build's types: the known provenance keys become typed fields (an
    /// unknown method name and unknown keys go to [`Provenance::extra`]; `unlearned_edges`, the size of
    /// the removed set, is dropped). Errors are reasons, for the caller to place.
    pub(super) fn upgrade(self) -> std::result::Result<CheckpointMeta, String> {
        let mut p = self.provenance;
        let mut prov = Provenance { version: p.remove(v1::VERSION), ..Provenance::default() };
        if let Some(m) = p.remove(v1::METHOD) {
            match serde_json::from_value(serde_json::Value::String(m.clone())) {
                Ok(method) => prov.method = Some(method),
                Err(_) => {
                    prov.extra.insert(v1::METHOD.into(), m);
                }
            }
        }
        if p.remove(v1::OFFSET).is_some() {
            prov.encoder_offset = Some(OffsetApplied { unlearner_sha256: None, backbone_sha256: None });
        }
        if let Some(json) = p.remove(v1::SHARDS) {
            prov.shards = Some(serde_json::from_str(&json).map_err(|e| format!("provenance `sisa`: {e}"))?);
        }
        let number = |key: &str, v: String| v.parse::<u64>().map_err(|e| format!("provenance `{key}` {v:?}: {e}"));
        let retrain_of = p.remove(v1::SERVE_RETRAIN_OF).map(|v| number(v1::SERVE_RETRAIN_OF, v)).transpose()?;
        if let Some(v) = p.remove(v1::SERVE_VERSION) {
            prov.serve = Some(ServeInfo { version: number(v1::SERVE_VERSION, v)?, retrain_of });
        }
        p.remove(v1::UNLEARNED_EDGES);
        prov.extra.extend(p);
        let ids = |kind: &str, ids: Vec<String>| IdMap::from_ids(ids).map_err(|d| format!("{kind} id {d:?} twice"));
        Ok(CheckpointMeta {
            model: self.model,
            train: self.train,
            dataset: self.dataset,
            carved_valid: self.carved_valid,
            history: self.history,
            provenance: prov,
            users: ids("user", self.user_ids)?,
            items: ids("item", self.item_ids)?,
        })
    }
}
