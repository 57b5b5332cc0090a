//! The library front: the whole workflow in a handful of calls, with plain Rust types in and out (no
//! tensor types), for Rust users and for the bindings of other languages.
//!
//! | step | call |
//! |---|---|
//! | data | [`load_dataset`] (any format the CLI reads) or [`Dataset::from_pairs`] (in memory) |
//! | train | [`train`] with a [`ModelConfig`] and a [`TrainConfig`] |
//! | use | [`Checkpoint::recommend_many`], [`Checkpoint::evaluate`], [`Checkpoint::final_embeddings`] |
//! | pre-train the encoder | [`pretrain`] |
//! | forget | [`forget`] by method name (`unlearnrec`, `retrain`, `finetune`, …: [`method_names`]) with a [`Request`] of external ids, returning the new checkpoint and its [`Receipt`] |
//! | prove it | [`audit`] |
//! | files | [`Checkpoint::save`] / [`load`], [`Unlearner::save`] / [`load_unlearner`] |
//! | bring your own model | [`from_embeddings`]: base embeddings trained elsewhere, on the dataset's graph |
//!
//! Progress goes to an optional [`Observer`] (the `*_with` variants); the plain calls are silent.

use std::path::Path;

pub use crate::checkpoint::{Checkpoint, Split};
pub use crate::data::Dataset;
pub use crate::eval::{EvalConfig, MetricKey, RankingReport};
pub use crate::model::{Embeddings, ModelConfig, ModelKind};
pub use crate::train::{Observer, Silent, TrainConfig};
pub use crate::unlearn::audit::{AuditConfig, AuditReport};
pub use crate::unlearn::method::method_names;
pub use crate::unlearn::receipt::Receipt;
pub use crate::unlearn::request::Request;
pub use crate::unlearn::{FinetuneConfig, PretrainConfig, Unlearner};

use crate::data::Interactions;
use crate::error::{Error, Result};
use crate::unlearn::method::{MethodOptions, forget_method};

/// Reads a dataset directory or file in any supported format (detected), with the default split of
/// sources that carry none.
///
/// # Errors
/// I/O, or a malformed file (its path and line named).
pub fn load_dataset(path: &Path) -> Result<Dataset> {
    crate::data::format::load(path, &Default::default())
}

/// Trains a model of `model` on `ds` with `train` (silently).
///
/// # Errors
/// An invalid configuration, an empty training split, or a diverged run.
pub fn train(ds: &Dataset, model: &ModelConfig, train: &TrainConfig) -> Result<Checkpoint> {
    train_with(ds, model, train, &mut Silent)
}

/// [`train`] reporting progress to `obs`.
///
/// # Errors
/// As [`train`].
pub fn train_with(
    ds: &Dataset,
    model: &ModelConfig,
    train: &TrainConfig,
    obs: &mut dyn Observer,
) -> Result<Checkpoint> {
    let (ckpt, report) = crate::pipeline::train(ds, model, train, obs)?;
    report.require_converged()?;
    Ok(ckpt)
}

/// Pre-trains UnlearnRec's influence encoder for `ckpt` (silently).
///
/// # Errors
/// An invalid configuration, a model without embeddings (`pop`), a diverged run.
pub fn pretrain(ckpt: &Checkpoint, cfg: &PretrainConfig) -> Result<Unlearner> {
    pretrain_with(ckpt, cfg, &mut Silent)
}

/// [`pretrain`] reporting progress to `obs`.
///
/// # Errors
/// As [`pretrain`].
pub fn pretrain_with(ckpt: &Checkpoint, cfg: &PretrainConfig, obs: &mut dyn Observer) -> Result<Unlearner> {
    crate::unlearn::pretrain(ckpt, cfg, obs)
}

/// Options of [`forget`]: the unlearner (for `unlearnrec`) and UnlearnRec's fine-tuning; the other methods
/// run at their defaults.
#[derive(Clone, Default)]
pub struct ForgetOptions<'a> {
    /// The unlearner pre-trained for the checkpoint (required by `unlearnrec`).
    pub unlearner: Option<&'a Unlearner>,
    /// UnlearnRec's fine-tuning and calibration.
    pub finetune: FinetuneConfig,
    /// Missing pairs (already forgotten, or never there) are skipped instead of refused.
    pub skip_missing: bool,
}

/// Forgets `request` (external ids) from `ckpt` with the method called `method`, and returns the new
/// checkpoint with its receipt (hashes of the request and of both checkpoints' bytes, exactly as the
/// files [`Checkpoint::save`] writes would hash).
///
/// # Errors
/// An unknown method (the message lists them), a method that needs an unlearner without one, a request
/// naming unknown ids or pairs the model does not hold (unless skipped), an empty request, the method's own
/// errors.
pub fn forget(
    ckpt: &Checkpoint,
    method: &str,
    request: &Request,
    opts: &ForgetOptions<'_>,
) -> Result<(Checkpoint, Receipt)> {
    forget_with(ckpt, method, request, opts, &mut Silent)
}

/// [`forget`] reporting progress to `obs`.
///
/// # Errors
/// As [`forget`].
pub fn forget_with(
    ckpt: &Checkpoint,
    method: &str,
    request: &Request,
    opts: &ForgetOptions<'_>,
    obs: &mut dyn Observer,
) -> Result<(Checkpoint, Receipt)> {
    let mopts = MethodOptions { unlearner: opts.unlearner, finetune: opts.finetune.clone(), ..Default::default() };
    let m = forget_method(method, &mopts)?;
    let (pairs, _) = request.resolve(ckpt, opts.skip_missing)?;
    if pairs.is_empty() {
        return Err(Error::InvalidRequest("nothing to forget: the request names no pair the model holds".into()));
    }
    let before = ckpt.to_bytes()?;
    let out = m.forget(ckpt, &pairs, obs)?;
    if out.shards.is_some() {
        return Err(Error::config("method", "sisa keeps its shards in files: use the CLI or save them yourself"));
    }
    let after = out.checkpoint.to_bytes()?;
    let receipt =
        crate::unlearn::receipt::build(&request.id(), &pairs, ckpt.users(), ckpt.items(), &out.report, &before, &after);
    Ok((out.checkpoint, receipt))
}

/// Audits `model` on the pairs `removed` (internal ids) against `ds`'s test split as non-members, with the
/// model before unlearning (`original`, for the difference attackers) and an exact retrain (`reference`)
/// when given; the default [`AuditConfig`].
///
/// # Errors
/// A checkpoint of another dataset, an `original` that is not an ancestor of `model`, ids out of range, an
/// empty request.
pub fn audit(
    model: &Checkpoint,
    ds: &Dataset,
    removed: &Interactions,
    original: Option<&Checkpoint>,
    reference: Option<&Checkpoint>,
) -> Result<AuditReport> {
    audit_with(model, ds, removed, original, reference, &AuditConfig::default())
}

/// [`audit`] with the settings `cfg` (top-K cut-off, seed, attacker) instead of the defaults.
///
/// # Errors
/// As [`audit`], and an invalid `cfg`.
pub fn audit_with(
    model: &Checkpoint,
    ds: &Dataset,
    removed: &Interactions,
    original: Option<&Checkpoint>,
    reference: Option<&Checkpoint>,
    cfg: &AuditConfig,
) -> Result<AuditReport> {
    model.meta().check_dataset(ds)?;
    crate::unlearn::audit::audit_checkpoints(model, removed, &ds.test, reference, original, cfg)
}

/// The figures of an evaluation as `unlearnrec eval --json` prints them: one number per metric and cut-off
/// (`recall@20`, `ndcg@20`, …), `users_evaluated` and `recall_denominator`.
///
/// # Errors
/// None in practice (JSON serialisation of plain values).
pub fn eval_json(report: &RankingReport) -> Result<serde_json::Value> {
    let mut obj = serde_json::Map::new();
    for (k, v) in &report.metrics {
        obj.insert(k.to_string(), serde_json::json!(v));
    }
    obj.insert("users_evaluated".into(), serde_json::json!(report.n_users_evaluated));
    obj.insert("recall_denominator".into(), serde_json::to_value(report.recall_denominator)?);
    Ok(serde_json::Value::Object(obj))
}

/// A checkpoint of base embeddings `E⁰` trained elsewhere (a PyTorch LightGCN's embedding tables, say) on
/// `ds`'s training split, so that an unlearner can be pre-trained for it and requests forgotten from it.
///
/// `users` is `(n_users, dim)` and `items` `(n_items, dim)`, row-major f32, rows in `ds`'s internal-id order;
/// `dim` is `model.dim`. The graph the model propagates over is the training split minus the validation
/// edges, which are `ds`'s own or, when it has none, carved with `train.valid_ratio` and `train.seed`
/// exactly as [`train`] carves them (`valid_ratio = 0` keeps every training edge in the graph). The
/// checkpoint records `train` as its training configuration (retraining baselines use it) and no history.
///
/// # Errors
/// An invalid configuration, a model without learned embeddings (`pop`), tables of the wrong size
/// ([`Error::Shape`]) or with non-finite values, an empty training split.
pub fn from_embeddings(
    ds: &Dataset,
    model: &ModelConfig,
    train: &TrainConfig,
    users: &[f32],
    items: &[f32],
) -> Result<Checkpoint> {
    model.validate()?;
    train.validate()?;
    if !model.kind.architecture().learns_embeddings() {
        return Err(Error::config("model.kind", format!("{} has no embeddings to import", model.kind)));
    }
    for (what, table, n) in [("users", users, ds.n_users()), ("items", items, ds.n_items())] {
        if table.len() != n * model.dim {
            return Err(Error::Shape {
                op: "from_embeddings",
                expected: format!("{what} table ({n}, {})", model.dim),
                got: format!("{} values", table.len()),
            });
        }
        if let Some(k) = table.iter().position(|x| !x.is_finite()) {
            return Err(Error::config(what, format!("value {k} of the table is not finite")));
        }
    }
    let (edges, valid, carved) = crate::pipeline::train_valid(ds, train)?;
    if edges.is_empty() {
        return Err(Error::config("data", "the training split is empty"));
    }
    let mut data = Vec::with_capacity(users.len() + items.len());
    data.extend_from_slice(users);
    data.extend_from_slice(items);
    let backbone = crate::model::Backbone::from_embeddings(model.clone(), ds.n_users(), ds.n_items(), data)?;
    let meta = crate::checkpoint::CheckpointMeta::trained(ds, model, train, carved, None);
    Checkpoint::new(backbone, meta, edges, valid, Interactions::default())
}

/// Reads base embeddings for [`from_embeddings`] from a safetensors file: f32 tensors `user_embedding`
/// `(rows, dim)` and `item_embedding` `(rows, dim)` (what `safetensors.torch.save_file` writes from a
/// PyTorch model's embedding tables). Row `r` belongs to the external id `ids.users[r]` (`ids.items[r]`), or
/// without `ids` to the external id `r` in decimal (the LightGCN text format's integer ids). Returns the
/// user and item tables in `ds`'s internal-id order, row-major, and `dim`; rows of ids `ds` does not have
/// are ignored.
///
/// # Errors
/// I/O; a file without both tensors, of another dtype or width; a user or item of `ds` without a row.
pub fn read_embeddings(
    path: &Path,
    ds: &Dataset,
    ids: Option<(&[String], &[String])>,
) -> Result<(Vec<f32>, Vec<f32>, usize)> {
    use safetensors::tensor::Dtype;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |why: String| Error::format(path, 0, why);
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut dim = None;
    let mut tables = Vec::new();
    for (kind, name, map, names) in [
        ("user", "user_embedding", &ds.users, ids.map(|i| i.0)),
        ("item", "item_embedding", &ds.items, ids.map(|i| i.1)),
    ] {
        let t = st.tensor(name).map_err(|e| bad(format!("{name}: {e}")))?;
        let (rows, d) = match t.shape() {
            [r, d] if t.dtype() == Dtype::F32 && dim.is_none_or(|x| x == *d) => (*r, *d),
            _ => return Err(bad(format!("{name} is {:?} {:?}, expected F32 (rows, dim)", t.dtype(), t.shape()))),
        };
        dim = Some(d);
        let values: Vec<f32> = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let lookup: Option<std::collections::HashMap<&str, usize>> =
            names.map(|n| n.iter().enumerate().map(|(r, s)| (s.as_str(), r)).collect());
        if let Some(n) = names
            && n.len() != rows
        {
            return Err(bad(format!("{name} has {rows} rows, the ids list {}", n.len())));
        }
        let mut out = Vec::with_capacity(map.len() * d);
        for id in map.ids() {
            let row = match &lookup {
                Some(l) => l.get(id.as_str()).copied(),
                None => id.parse::<usize>().ok(),
            };
            match row {
                Some(r) if r < rows => out.extend_from_slice(&values[r * d..(r + 1) * d]),
                _ => return Err(bad(format!("{kind} {id:?} of the dataset has no row in {name} ({rows} rows)"))),
            }
        }
        tables.push(out);
    }
    let items = tables.pop().expect("two tables");
    let users = tables.pop().expect("two tables");
    Ok((users, items, dim.expect("read")))
}

/// Loads a checkpoint ([`Checkpoint::load`]).
///
/// # Errors
/// As [`Checkpoint::load`].
pub fn load(path: &Path) -> Result<Checkpoint> {
    Checkpoint::load(path)
}

/// Loads an unlearner ([`Unlearner::load`]).
///
/// # Errors
/// As [`Unlearner::load`].
pub fn load_unlearner(path: &Path) -> Result<Unlearner> {
    Unlearner::load(path)
}

/// Top-`k` recommendations of many users at once.
#[derive(Clone, Debug, PartialEq)]
pub struct Recommendations {
    /// The row stride (`min(k, n_items)`).
    pub k: usize,
    /// Item ids (internal), `users × k`, row-major, best first; rows shorter than `k` (too few unseen items)
    /// are padded with `u32::MAX`.
    pub items: Vec<u32>,
    /// Their scores; padding is `-inf`.
    pub scores: Vec<f32>,
}

impl Checkpoint {
    /// The top-`k` unseen items of each of `users` (internal ids), in one parallel pass (seen items and
    /// erased items never recommended).
    ///
    /// # Errors
    /// `k = 0`, or a user outside the model.
    pub fn recommend_many(&self, users: &[u32], k: usize) -> Result<Recommendations> {
        let top = self.serving()?.top_k_many(users, k)?;
        let stride = top.k;
        let mut items = vec![u32::MAX; users.len() * stride];
        let mut scores = vec![f32::NEG_INFINITY; users.len() * stride];
        for r in 0..users.len() {
            let (it, sc) = top.row(r);
            items[r * stride..r * stride + it.len()].copy_from_slice(it);
            scores[r * stride..r * stride + sc.len()].copy_from_slice(sc);
        }
        Ok(Recommendations { k: stride, items, scores })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::{SynthConfig, generate};

    #[test]
    fn the_front_runs_the_workflow_and_its_receipt_hashes_the_saved_bytes() {
        let ds = generate(&SynthConfig { users: 60, items: 40, interactions: 900, ..Default::default() }).unwrap();
        let mc = ModelConfig { kind: ModelKind::LightGcn, dim: 8, layers: 2, ..Default::default() };
        let tc = TrainConfig { epochs: 2, batch_size: 256, ..Default::default() };
        let ckpt = train(&ds, &mc, &tc).unwrap();
        let un =
            pretrain(&ckpt, &PretrainConfig { epochs: 1, max_steps_per_epoch: Some(2), ..Default::default() }).unwrap();
        let user = ckpt.users().external(0).to_string();
        let request = Request { users: vec![user.clone()], ..Default::default() };
        let opts = ForgetOptions { unlearner: Some(&un), ..Default::default() };
        let (out, receipt) = forget(&ckpt, "unlearnrec", &request, &opts).unwrap();
        assert!(out.edges().iter().all(|(u, _)| u != 0));
        assert_eq!(receipt.request_id, request.id());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.safetensors");
        out.save(&path).unwrap();
        assert_eq!(receipt.checkpoint_after_sha256, crate::io::sha256_hex(&std::fs::read(&path).unwrap()));
        assert_eq!(load(&path).unwrap().to_bytes().unwrap(), std::fs::read(&path).unwrap());
        // Many users at once agree with one at a time; the erased user still gets (random-like) items.
        let recs = out.recommend_many(&[1, 2, 0], 5).unwrap();
        let one = out.recommend(2, 5).unwrap();
        let ids: Vec<&str> = recs.items[5..10].iter().map(|&i| out.items().external(i)).collect();
        assert_eq!(ids, one.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>());
        // The audit of the erased user's pairs.
        let removed = out.removed().clone();
        let report = audit(&out, &ds, &removed, Some(&ckpt), None).unwrap();
        assert!(report.rank.count > 0);
        // Clear errors.
        let err = forget(&ckpt, "bogus", &request, &opts).err().expect("unknown method");
        assert!(err.to_string().contains("unlearnrec"), "{err}");
        assert!(forget(&ckpt, "unlearnrec", &request, &ForgetOptions::default()).is_err());
        let unknown = Request { users: vec!["nobody".into()], ..Default::default() };
        assert!(forget(&ckpt, "retrain", &unknown, &opts).is_err());
    }

    #[test]
    fn imported_base_embeddings_reproduce_the_model() {
        let ds = generate(&SynthConfig { users: 50, items: 30, interactions: 700, ..Default::default() }).unwrap();
        let mc = ModelConfig { kind: ModelKind::LightGcn, dim: 8, layers: 2, ..Default::default() };
        let tc = TrainConfig { epochs: 2, batch_size: 256, ..Default::default() };
        let ckpt = train(&ds, &mc, &tc).unwrap();
        let base = ckpt.model().base_vec().unwrap();
        let (u, i) = base.split_at(ds.n_users() * 8);
        let back = from_embeddings(&ds, &mc, &tc, u, i).unwrap();
        assert_eq!(back.final_embeddings().unwrap(), ckpt.final_embeddings().unwrap());
        assert_eq!(back.recommend_many(&[0, 3], 5).unwrap(), ckpt.recommend_many(&[0, 3], 5).unwrap());
        let err = from_embeddings(&ds, &mc, &tc, &u[1..], i).err().expect("short table");
        assert!(matches!(err, Error::Shape { .. }), "{err}");
        let json = eval_json(&ckpt.evaluate(&ds, Split::Test, &EvalConfig::default()).unwrap()).unwrap();
        assert!(json.get("recall@20").is_some() && json.get("users_evaluated").is_some(), "{json}");
    }
}
