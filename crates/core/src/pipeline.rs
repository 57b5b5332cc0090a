//! End-to-end entry points used by the CLI: train a model on a dataset, export it. Evaluation and
//! recommendation are methods of [`Checkpoint`].

use std::collections::HashMap;

use crate::checkpoint::{Checkpoint, CheckpointMeta};
use crate::data::{Dataset, Interactions};
use crate::error::{Error, Result};
use crate::model::ModelConfig;
use crate::train::{FitReport, Observer, TrainConfig, TrainData, fit};

/// The union of two edge sets.
pub fn union(a: &Interactions, b: &Interactions) -> Interactions {
    a.union(b)
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
    let mut model =
        model_cfg.kind.architecture().init(model_cfg, ds.n_users(), ds.n_items(), &train, train_cfg.seed)?;
    let report = fit(&mut model, &data, train_cfg, obs)?;
    let meta = CheckpointMeta::trained(ds, &model.config, train_cfg, carved, Some(report.clone()));
    let ckpt = Checkpoint::new(model, meta, train, valid, Interactions::default())?;
    Ok((ckpt, report))
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
    let bytes = crate::io::f32_bytes;
    let (nu, ni) = (ckpt.model().n_users(), ckpt.model().n_items());
    let meta = HashMap::from([
        ("model".to_string(), ckpt.meta().model.kind.to_string()),
        ("dataset".to_string(), ckpt.meta().dataset.name.clone()),
        ("removed_edges".to_string(), ckpt.removed().len().to_string()),
    ]);
    let ids = serde_json::json!({"users": ckpt.users(), "items": ckpt.items()});
    crate::io::write_atomic(&ids_path(out), serde_json::to_string(&ids)?.as_bytes())?;
    crate::io::write_safetensors(
        out,
        &[
            ("user_embeddings", Dtype::F32, vec![nu, emb.dim], bytes(&emb.users)),
            ("item_embeddings", Dtype::F32, vec![ni, emb.dim], bytes(&emb.items)),
        ],
        meta,
    )
}
