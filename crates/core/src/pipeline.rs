//! End-to-end entry points used by the CLI: train a model on a dataset, evaluate, recommend, export.

use std::collections::HashMap;

use crate::data::{Dataset, Interactions};
use crate::error::{Error, Result};
use crate::eval::{EvalConfig, RankingReport};
use crate::graph::Graph;
use crate::io::checkpoint::{Checkpoint, CheckpointMeta};
use crate::model::{Backbone, Embeddings, ModelConfig};
use crate::tensor::SpMat;
use crate::train::{FitReport, Observer, TrainConfig, TrainData, fit};

/// The union of two edge sets.
pub fn union(a: &Interactions, b: &Interactions) -> Interactions {
    let mut pairs: Vec<(u32, u32)> = a.iter().collect();
    pairs.extend(b.iter());
    Interactions::from_pairs(pairs).0
}

/// Training and validation edges for a dataset: its own validation split, or one carved from train with
/// `cfg.valid_ratio` and `cfg.seed` when it has none. Returns `(train, valid, carved)`.
pub fn train_valid(ds: &Dataset, cfg: &TrainConfig) -> Result<(Interactions, Interactions, bool)> {
    match &ds.valid {
        Some(v) if !v.is_empty() => Ok((ds.train.clone(), v.clone(), false)),
        _ if cfg.valid_ratio > 0.0 => {
            let carved = crate::data::split::carve_validation(ds, cfg.valid_ratio, cfg.seed)?;
            let valid = carved.valid.clone().unwrap_or_default();
            Ok((carved.train, valid, true))
        }
        _ => Ok((ds.train.clone(), Interactions::default(), false)),
    }
}

/// Item popularity (training interactions per item).
pub fn popularity(n_items: usize, train: &Interactions) -> Vec<f32> {
    let mut pop = vec![0f32; n_items];
    for &i in train.items() {
        pop[i as usize] += 1.0;
    }
    pop
}

/// Trains a model of `model_cfg` on `ds` and returns it as a checkpoint with the fit report.
pub fn train(
    ds: &Dataset,
    model_cfg: &ModelConfig,
    train_cfg: &TrainConfig,
    obs: &mut dyn Observer,
) -> Result<(Checkpoint, FitReport)> {
    model_cfg.validate()?;
    train_cfg.validate()?;
    let (train, valid, carved) = train_valid(ds, train_cfg)?;
    if train.is_empty() {
        return Err(Error::config("data", "the training split is empty"));
    }
    let data = TrainData::new(ds.n_users(), ds.n_items(), &train, &valid);
    let mut model = fresh_backbone(model_cfg, ds.n_users(), ds.n_items(), &train, train_cfg.seed)?;
    let report = fit(&mut model, &data, train_cfg, obs)?;
    let meta = CheckpointMeta::trained(ds, &model.config, train_cfg, carved, Some(report.clone()));
    let ckpt = Checkpoint { model, meta, graph: train, valid, removed: Interactions::default() };
    Ok((ckpt, report))
}

/// Which held-out split to evaluate on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The validation edges stored in the checkpoint (training items masked).
    Valid,
    /// The dataset's test split (training and validation items masked).
    Test,
}

/// The model `fit` starts from: its architecture's [`init`](crate::model::Architecture::init) (most-popular
/// scores of `train`, else a seeded initialisation of `config`).
pub fn fresh_backbone(
    config: &ModelConfig,
    n_users: usize,
    n_items: usize,
    train: &Interactions,
    seed: u64,
) -> Result<Backbone> {
    config.kind.architecture().init(config, n_users, n_items, train, seed)
}

impl Checkpoint {
    /// The graph the model propagates over.
    pub fn graph(&self) -> Graph {
        Graph::from_interactions(self.model.n_users(), self.model.n_items(), &self.graph)
    }

    /// `Â` of [`Checkpoint::graph`].
    pub fn adjacency(&self) -> SpMat {
        SpMat::from_norm_adj(&crate::graph::NormAdj::from_graph(&self.graph()))
    }

    /// Final (propagated) embeddings.
    pub fn final_embeddings(&self) -> Result<Embeddings> {
        self.model.final_embeddings(&self.adjacency())
    }

    /// All items each user has seen: training graph plus validation edges.
    pub fn seen(&self) -> Interactions {
        union(&self.graph, &self.valid)
    }

    /// The remaining data as a dataset (what `unlearn --write-data` and the server write): the training split
    /// is the graph plus the validation edges when these were carved from it, else the dataset's validation
    /// split is the remaining validation edges; the test split is `ds`'s.
    pub fn remaining_dataset(&self, ds: &Dataset) -> Dataset {
        let mut rest = ds.clone();
        if self.meta.carved_valid {
            rest.train = self.seen();
        } else {
            rest.train = self.graph.clone();
            rest.valid = rest.valid.is_some().then(|| self.valid.clone());
        }
        rest
    }

    /// The internal id of an external user id.
    pub fn user(&self, external: &str) -> Result<u32> {
        self.meta
            .user_ids
            .iter()
            .position(|s| s == external)
            .map(|i| i as u32)
            .ok_or_else(|| Error::UnknownId { kind: "user", id: external.to_string() })
    }

    /// True when every interaction of `user` was unlearned (it had some, and none remain).
    pub fn is_erased_user(&self, user: u32) -> bool {
        let has = |e: &Interactions| e.users().binary_search(&user).is_ok();
        has(&self.removed) && !has(&self.graph) && !has(&self.valid)
    }

    /// Top-`k` unseen items for a user, as (external item id, score), best first. Items whose every
    /// interaction was unlearned are not recommended.
    ///
    /// # Errors
    /// [`Error::Erased`] for a user whose every interaction was unlearned.
    pub fn recommend(&self, user: u32, k: usize) -> Result<Vec<(String, f32)>> {
        if self.is_erased_user(user) {
            return Err(Error::Erased { kind: "user", id: self.meta.user_ids[user as usize].clone() });
        }
        let emb = self.final_embeddings()?;
        let seen = Graph::from_interactions(self.model.n_users(), self.model.n_items(), &self.seen());
        // Items that had interactions and lost them all to unlearning are erased from the catalogue.
        let mut erased: Vec<u32> = self.removed.items().to_vec();
        erased.sort_unstable();
        erased.dedup();
        erased.retain(|&i| seen.item_users().row(i as usize).is_empty());
        let top =
            crate::eval::recommend(&[user], &emb.users, &emb.items, emb.dim, Some(seen.user_items()), &erased, k)?;
        let (items, scores) = top.row(0);
        Ok(items.iter().zip(scores).map(|(&i, &s)| (self.meta.item_ids[i as usize].clone(), s)).collect())
    }

    /// Full-ranking metrics on a split of `ds` (which must be the checkpoint's dataset).
    pub fn evaluate(&self, ds: &Dataset, split: Split, cfg: &EvalConfig) -> Result<RankingReport> {
        self.meta.check_dataset(ds)?;
        let (nu, ni) = (self.model.n_users(), self.model.n_items());
        let (truth, seen) = match split {
            Split::Valid => (self.valid.clone(), self.graph.clone()),
            Split::Test => (ds.test.clone(), self.seen()),
        };
        let emb = self.final_embeddings()?;
        let truth = Graph::from_interactions(nu, ni, &truth);
        let seen = Graph::from_interactions(nu, ni, &seen);
        crate::eval::evaluate_ranking(&emb.users, &emb.items, emb.dim, seen.user_items(), truth.user_items(), cfg)
    }

    /// The data to continue training this model on (its graph and validation edges).
    pub fn train_data(&self) -> TrainData {
        TrainData::new(self.model.n_users(), self.model.n_items(), &self.graph, &self.valid)
    }
}

/// A training run's configuration file: `[model]` and `[train]` tables.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// The model.
    pub model: ModelConfig,
    /// The training loop.
    pub train: TrainConfig,
}

impl RunConfig {
    /// Reads a TOML file; unknown keys are errors.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::format(path, 0, e.to_string()))
    }

    /// Checks both parts.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.train.validate()
    }
}

/// `<out>.ids.json`: the external ids of the exported rows.
pub fn ids_path(out: &std::path::Path) -> std::path::PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".ids.json");
    s.into()
}

/// Writes the final (propagated) embeddings as `user_embeddings` `(n_users, d)` and `item_embeddings`
/// `(n_items, d)` f32 tensors, rows in internal-id order, and `<out>.ids.json` with the external ids of each
/// row (`{"users": [...], "items": [...]}`), so that `user_embeddings @ item_embeddings.T` gives the
/// engine's scores. Both files are written atomically.
pub fn export(ckpt: &Checkpoint, out: &std::path::Path) -> Result<()> {
    use safetensors::tensor::Dtype;
    let emb = ckpt.final_embeddings()?;
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (nu, ni) = (ckpt.model.n_users(), ckpt.model.n_items());
    let meta = HashMap::from([
        ("model".to_string(), ckpt.meta.model.kind.to_string()),
        ("dataset".to_string(), ckpt.meta.dataset.name.clone()),
        ("removed_edges".to_string(), ckpt.removed.len().to_string()),
    ]);
    let ids = serde_json::json!({"users": ckpt.meta.user_ids, "items": ckpt.meta.item_ids});
    crate::io::checkpoint::write_atomic(&ids_path(out), serde_json::to_string(&ids)?.as_bytes())?;
    crate::io::checkpoint::write_safetensors(
        out,
        &[
            ("user_embeddings", Dtype::F32, vec![nu, emb.dim], bytes(&emb.users)),
            ("item_embeddings", Dtype::F32, vec![ni, emb.dim], bytes(&emb.items)),
        ],
        meta,
    )
}
