//! Checkpoints: a model with everything needed to use it without the dataset — its graph, the items each
//! user has seen, the edges it has forgotten, its external ids and where it comes from.
//!
//! A [`Checkpoint`] is built by [`Checkpoint::new`] (training), [`Checkpoint::derive`] (unlearning) or
//! [`Checkpoint::load`], which all check its invariants: the id maps, the dataset sizes and the backbone
//! agree; every edge is within the backbone's users and items; the removed edges are neither training nor
//! validation edges; the backbone's configuration is the metadata's; a loaded file's embeddings are finite.
//! Its parts are read through accessors and changed only through methods that keep the invariants.
//!
//! The file format ([`Checkpoint::save`]) is a safetensors file that Python reads with
//! `safetensors.safe_open`; its metadata is written in a fixed order, so that the same checkpoint always
//! gives the same bytes (and the same SHA-256 in receipts and in the service's ledger). Format 1 files are
//! still read; see [`FORMAT_VERSION`].
//!
//! [`Checkpoint::serving`] computes what answering needs (final embeddings, seen items, the erased
//! catalogue) once per checkpoint; [`Checkpoint::recommend`] and the service answer from it.
//!
//! ```
//! use unlearnrec_core::data::synthetic::{SynthConfig, generate};
//! use unlearnrec_core::model::{ModelConfig, ModelKind};
//! use unlearnrec_core::train::{Silent, TrainConfig};
//!
//! let ds = generate(&SynthConfig { users: 40, items: 30, interactions: 500, ..Default::default() }).unwrap();
//! let model = ModelConfig { kind: ModelKind::Mf, dim: 8, ..ModelConfig::default() };
//! let train = TrainConfig { epochs: 2, batch_size: 128, ..TrainConfig::default() };
//! let (ckpt, _) = unlearnrec_core::pipeline::train(&ds, &model, &train, &mut Silent).unwrap();
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("mf.safetensors");
//! ckpt.save(&path).unwrap();
//! let back = unlearnrec_core::checkpoint::Checkpoint::load(&path).unwrap();
//! assert_eq!(back.edges(), ckpt.edges());
//! let user = back.user(ds.users.external(0)).unwrap();
//! assert_eq!(back.recommend(user, 5).unwrap(), ckpt.recommend(user, 5).unwrap());
//! ```

mod file;
mod meta;
mod serving;
pub mod shards;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod untrusted_tests;

use std::sync::OnceLock;

pub use crate::unlearn::method::MethodId;
pub(crate) use file::write_tensors;
pub use file::{FORMAT_VERSION, META_KEY};
pub use meta::{CheckpointMeta, DatasetInfo, OffsetApplied, Provenance, ServeInfo};
pub use serving::Serving;
pub use shards::{Aggregation, AttentionReport, Partition, ShardMeta};

use crate::data::{Dataset, IdMap, Interactions};
use crate::error::{Error, Result};
use crate::eval::{EvalConfig, RankingReport};
use crate::graph::Graph;
use crate::model::{Backbone, Embeddings};
use crate::tensor::SpMat;
use crate::train::{TrainConfig, TrainData};

/// Which held-out split to evaluate on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The validation edges stored in the checkpoint (training items masked).
    Valid,
    /// The dataset's test split (training and validation items masked).
    Test,
}

/// A model with its graph, validation and removed edges and metadata (see the module docs).
pub struct Checkpoint {
    /// The model with its base embeddings.
    model: Backbone,
    /// The metadata, with the id maps.
    meta: CheckpointMeta,
    /// The training edges the model propagates over (internal ids).
    edges: Interactions,
    /// The validation edges (internal ids).
    valid: Interactions,
    /// Edges the model has unlearned (internal ids); empty for a freshly trained model.
    removed: Interactions,
    /// The model unlearning started from, when this checkpoint was made by UnlearnRec from it.
    anchor: Option<Anchor>,
    /// What answering needs, computed on first use.
    serving: OnceLock<Serving>,
}

/// The *anchor* of an unlearned checkpoint: the exactly trained (or consolidated) model that UnlearnRec
/// started from, and every edge removed since it. A further request is applied from the anchor with the
/// union of all of them, so the encoder always sees one request against the model it was pre-trained for
/// and chained requests do not compound error: chaining requests one by one gives the model that applying
/// their union at once gives.
#[derive(Clone, Debug, PartialEq)]
pub struct Anchor {
    /// The anchor's base table `E⁰`, row-major `(n_users + n_items, dim)`.
    pub base: Vec<f32>,
    /// Removed since the anchor: edges that were its training edges.
    pub since_train: Interactions,
    /// Removed since the anchor: edges that were its validation edges.
    pub since_valid: Interactions,
}

/// The first edge of `a` that is also in `b` (both sorted).
fn first_common(a: &Interactions, b: &Interactions) -> Option<(u32, u32)> {
    if a.difference(b).1 == 0 {
        return None;
    }
    a.iter().find(|&(u, i)| b.contains(u, i))
}

impl Checkpoint {
    /// A checkpoint of `model` with its metadata, training edges `edges` (the graph it propagates over),
    /// validation edges and removed edges.
    ///
    /// # Errors
    /// [`Error::InvalidCheckpoint`] naming the first broken invariant: id maps or dataset sizes other than
    /// the backbone's, a backbone configuration other than the metadata's, an edge outside the backbone's
    /// users or items, a removed edge that is still a training or validation edge.
    pub fn new(
        model: Backbone,
        meta: CheckpointMeta,
        edges: Interactions,
        valid: Interactions,
        removed: Interactions,
    ) -> Result<Self> {
        let bad = |why: String| Err(Error::InvalidCheckpoint(why));
        let (nu, ni) = (model.n_users(), model.n_items());
        for (kind, n, ids, declared) in
            [("user", nu, &meta.users, meta.dataset.n_users), ("item", ni, &meta.items, meta.dataset.n_items)]
        {
            if ids.len() != n {
                return bad(format!("{} external {kind} ids for a model of {n} {kind}s", ids.len()));
            }
            if declared != n {
                return bad(format!("the dataset has {declared} {kind}s, the model {n}"));
            }
        }
        if meta.model != model.config {
            return bad(format!(
                "the metadata describes another model configuration ({}, d={}) than the model's ({}, d={})",
                meta.model.kind,
                meta.model.dim,
                model.kind(),
                model.dim()
            ));
        }
        for (what, e) in [("training", &edges), ("validation", &valid), ("removed", &removed)] {
            let (bu, bi) = e.id_bounds();
            if bu > nu || bi > ni {
                let (u, i) = e.iter().find(|&(u, i)| u as usize >= nu || i as usize >= ni).expect("out of bounds");
                return bad(format!(
                    "{what} edge (user {u}, item {i}) is outside the model's {nu} users and {ni} items"
                ));
            }
        }
        for (what, e) in [("training", &edges), ("validation", &valid)] {
            if let Some((u, i)) = first_common(&removed, e) {
                return bad(format!("removed edge (user {u}, item {i}) is still a {what} edge"));
            }
        }
        Ok(Self { model, meta, edges, valid, removed, anchor: None, serving: OnceLock::new() })
    }

    /// This checkpoint with `anchor` (see [`Anchor`]).
    ///
    /// # Errors
    /// [`Error::InvalidCheckpoint`] when the anchor's table does not have this model's shape, or an edge it
    /// lists as removed since the anchor is not among this checkpoint's removed edges.
    pub fn with_anchor(mut self, anchor: Anchor) -> Result<Self> {
        let n = (self.model.n_users() + self.model.n_items()) * self.model.dim();
        if anchor.base.len() != n {
            return Err(Error::InvalidCheckpoint(format!(
                "the anchor table has {} values, the model {n}",
                anchor.base.len()
            )));
        }
        if let Some(k) = anchor.base.iter().position(|x| !x.is_finite()) {
            return Err(Error::InvalidCheckpoint(format!("the anchor table's value {k} is not finite")));
        }
        for e in [&anchor.since_train, &anchor.since_valid] {
            if let Some((u, i)) = e.iter().find(|&(u, i)| !self.removed.contains(u, i)) {
                return Err(Error::InvalidCheckpoint(format!(
                    "anchor edge (user {u}, item {i}) is not a removed edge of the checkpoint"
                )));
            }
        }
        self.anchor = Some(anchor);
        Ok(self)
    }

    /// The anchor, when this checkpoint was unlearned from one ([`Anchor`]).
    pub fn anchor(&self) -> Option<&Anchor> {
        self.anchor.as_ref()
    }

    /// The anchor as a checkpoint of its own: its table over this checkpoint's edges plus those removed since
    /// it, with this checkpoint's metadata (no method, no encoder offset); `None` without an anchor.
    ///
    /// # Errors
    /// An anchor inconsistent with the checkpoint ([`Checkpoint::new`]).
    pub fn anchor_checkpoint(&self) -> Result<Option<Checkpoint>> {
        let Some(a) = &self.anchor else { return Ok(None) };
        let union = |x: &Interactions, y: &Interactions| Interactions::from_pairs(x.iter().chain(y.iter()).collect()).0;
        let model = Backbone::from_embeddings(
            self.model.config.clone(),
            self.model.n_users(),
            self.model.n_items(),
            a.base.clone(),
        )?;
        let removed = self.removed.difference(&union(&a.since_train, &a.since_valid)).0;
        let mut out =
            self.derive(model, union(&self.edges, &a.since_train), union(&self.valid, &a.since_valid), removed)?;
        let prov = out.provenance_mut();
        prov.method = None;
        prov.encoder_offset = None;
        Ok(Some(out))
    }

    /// A successor of this checkpoint (what unlearning builds): the same dataset, ids and provenance with
    /// `model` (whose configuration becomes the metadata's) over new training, validation and removed
    /// edges. The caller records how it was made ([`Checkpoint::provenance_mut`]).
    ///
    /// # Errors
    /// As [`Checkpoint::new`].
    pub fn derive(
        &self,
        model: Backbone,
        edges: Interactions,
        valid: Interactions,
        removed: Interactions,
    ) -> Result<Self> {
        let meta = CheckpointMeta { model: model.config.clone(), ..self.meta.clone() };
        Self::new(model, meta, edges, valid, removed)
    }

    /// The model with its base embeddings.
    pub fn model(&self) -> &Backbone {
        &self.model
    }

    /// The metadata.
    pub fn meta(&self) -> &CheckpointMeta {
        &self.meta
    }

    /// The training edges the model propagates over and treats as seen (after unlearning: the remaining
    /// graph).
    pub fn edges(&self) -> &Interactions {
        &self.edges
    }

    /// The validation edges (also seen).
    pub fn valid(&self) -> &Interactions {
        &self.valid
    }

    /// The edges the model has unlearned; empty for a freshly trained model.
    pub fn removed(&self) -> &Interactions {
        &self.removed
    }

    /// External user ids.
    pub fn users(&self) -> &IdMap {
        &self.meta.users
    }

    /// External item ids.
    pub fn items(&self) -> &IdMap {
        &self.meta.items
    }

    /// The provenance, to record what was done to the checkpoint.
    pub fn provenance_mut(&mut self) -> &mut Provenance {
        &mut self.meta.provenance
    }

    /// Replaces the training configuration (what a retrain with another seed records).
    pub fn set_train_config(&mut self, train: TrainConfig) {
        self.meta.train = train;
    }

    /// SHA-256 of the backbone's base embeddings (the little-endian bytes of `user_embedding`, then of
    /// `item_embedding`): what an unlearner records of the backbone it was pre-trained for.
    pub fn backbone_sha256(&self) -> Result<String> {
        Ok(crate::io::sha256_hex(&crate::io::f32_bytes(&self.model.base_vec()?)))
    }

    /// [`Checkpoint::backbone_sha256`] of the model an unlearner must have been pre-trained for to unlearn
    /// from this checkpoint: its anchor's, its own when it is exactly trained (no anchor, never through the
    /// encoder), `None` for an unanchored checkpoint that went through the encoder (an older build's file).
    ///
    /// # Errors
    /// A tensor error reading the base table.
    pub fn anchor_backbone_sha256(&self) -> Result<Option<String>> {
        Ok(match &self.anchor {
            Some(a) => Some(crate::io::sha256_hex(&crate::io::f32_bytes(&a.base))),
            None if self.meta.provenance.encoder_offset.is_none() => Some(self.backbone_sha256()?),
            None => None,
        })
    }

    /// The graph the model propagates over.
    pub fn train_graph(&self) -> Graph {
        Graph::from_interactions(self.model.n_users(), self.model.n_items(), &self.edges)
    }

    /// `Â` of [`Checkpoint::train_graph`].
    pub fn adjacency(&self) -> SpMat {
        SpMat::from_norm_adj(&crate::graph::NormAdj::from_graph(&self.train_graph()))
    }

    /// Final (propagated) embeddings, computed afresh ([`Checkpoint::serving`] keeps a copy).
    pub fn final_embeddings(&self) -> Result<Embeddings> {
        self.model.final_embeddings(&self.adjacency())
    }

    /// All items each user has seen: training graph plus validation edges.
    pub fn seen(&self) -> Interactions {
        self.edges.union(&self.valid)
    }

    /// What answering needs, computed on the first call and kept.
    pub fn serving(&self) -> Result<&Serving> {
        if let Some(s) = self.serving.get() {
            return Ok(s);
        }
        let s = Serving::new(self)?;
        Ok(self.serving.get_or_init(|| s))
    }

    /// The remaining data as a dataset (what `unlearn --write-data` and the server write): the training split
    /// is the graph plus the validation edges when these were carved from it, else the dataset's validation
    /// split is the remaining validation edges; the test split is `ds`'s.
    pub fn remaining_dataset(&self, ds: &Dataset) -> Dataset {
        let mut rest = ds.clone();
        if self.meta.carved_valid {
            rest.train = self.seen();
        } else {
            rest.train = self.edges.clone();
            rest.valid = rest.valid.is_some().then(|| self.valid.clone());
        }
        rest
    }

    /// The internal id of an external user id.
    ///
    /// # Errors
    /// [`Error::UnknownId`].
    pub fn user(&self, external: &str) -> Result<u32> {
        self.meta.users.get(external).ok_or_else(|| Error::UnknownId { kind: "user", id: external.to_string() })
    }

    /// True when every interaction of `user` was unlearned (it had some, and none remain).
    pub fn is_erased_user(&self, user: u32) -> bool {
        let has = |e: &Interactions| e.users().binary_search(&user).is_ok();
        has(&self.removed) && !has(&self.edges) && !has(&self.valid)
    }

    /// Top-`k` unseen items for a user, as (external item id, score), best first. Items whose every
    /// interaction was unlearned are not recommended. Answers from [`Checkpoint::serving`].
    ///
    /// # Errors
    /// [`Error::Erased`] for a user whose every interaction was unlearned.
    pub fn recommend(&self, user: u32, k: usize) -> Result<Vec<(String, f32)>> {
        if self.is_erased_user(user) {
            return Err(Error::Erased { kind: "user", id: self.meta.users.external(user).to_string() });
        }
        let (items, scores) = self.serving()?.top_k(user, k)?;
        Ok(items.iter().zip(scores).map(|(&i, s)| (self.meta.items.external(i).to_string(), s)).collect())
    }

    /// Full-ranking metrics on a split of `ds` (which must be the checkpoint's dataset).
    pub fn evaluate(&self, ds: &Dataset, split: Split, cfg: &EvalConfig) -> Result<RankingReport> {
        self.meta.check_dataset(ds)?;
        let (nu, ni) = (self.model.n_users(), self.model.n_items());
        let (truth, seen) = match split {
            Split::Valid => (self.valid.clone(), self.edges.clone()),
            Split::Test => (ds.test.clone(), self.seen()),
        };
        let emb = self.final_embeddings()?;
        let truth = Graph::from_interactions(nu, ni, &truth);
        let seen = Graph::from_interactions(nu, ni, &seen);
        crate::eval::evaluate_ranking(&emb.users, &emb.items, emb.dim, seen.user_items(), truth.user_items(), cfg)
    }

    /// The data to continue training this model on (its graph and validation edges).
    pub fn train_data(&self) -> TrainData {
        TrainData::new(self.model.n_users(), self.model.n_items(), &self.edges, &self.valid)
    }
}
