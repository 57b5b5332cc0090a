//! Checkpoints: safetensors files that Python reads with `safetensors.safe_open`.
//!
//! Tensors (f32, rows in internal-id order):
//! - `user_embedding` `(n_users, dim)` and `item_embedding` `(n_items, dim)`: the base (layer-0) embeddings
//!   `E⁰`; the final embeddings come from propagating them over the checkpoint's graph.
//! - `graph_users`, `graph_items` (u32): the training edges the model propagates over and treats as seen
//!   (after unlearning: the remaining graph).
//! - `valid_users`, `valid_items` (u32): the validation edges used for model selection (also seen).
//! - `removed_users`, `removed_items` (u32): the forgotten edges (empty for a freshly trained model).
//!
//! The metadata entry `unlearnrec` holds a JSON [`CheckpointMeta`]: model and training configuration,
//! dataset fingerprint and id maps, training history. Files are written to a temporary file and renamed.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Interactions};
use crate::error::{Error, Result};
use crate::model::{Backbone, ModelConfig};
use crate::train::{FitReport, TrainConfig};

/// The metadata key of the JSON document.
pub const META_KEY: &str = "unlearnrec";
/// Checkpoint format version.
pub const FORMAT_VERSION: u32 = 1;

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

/// Everything but the tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Format version.
    pub format: u32,
    /// The model's configuration.
    pub model: ModelConfig,
    /// The training configuration.
    pub train: TrainConfig,
    /// The dataset.
    pub dataset: DatasetInfo,
    /// External user ids by internal id.
    pub user_ids: Vec<String>,
    /// External item ids by internal id.
    pub item_ids: Vec<String>,
    /// Whether a validation split was carved from train with `train.valid_ratio` and `train.seed`.
    pub carved_valid: bool,
    /// The training history.
    pub history: Option<FitReport>,
    /// Free-form provenance (tool version, command, UTC time).
    pub provenance: HashMap<String, String>,
}

impl CheckpointMeta {
    /// Metadata of a model freshly trained on `ds` (this build's format and version in the provenance).
    pub fn trained(
        ds: &Dataset,
        model: &ModelConfig,
        train: &TrainConfig,
        carved_valid: bool,
        history: Option<FitReport>,
    ) -> Self {
        Self {
            format: FORMAT_VERSION,
            model: model.clone(),
            train: train.clone(),
            dataset: DatasetInfo::of(ds),
            user_ids: ds.users.ids().to_vec(),
            item_ids: ds.items.ids().to_vec(),
            carved_valid,
            history,
            provenance: HashMap::from([("version".to_string(), env!("CARGO_PKG_VERSION").to_string())]),
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
        for (kind, theirs, ours) in [("user", ds.users.ids(), &self.user_ids), ("item", ds.items.ids(), &self.item_ids)]
        {
            // Equal lengths here: the sizes matched and a loaded checkpoint has one id per row.
            if let Some((k, (a, b))) = theirs.iter().zip(ours.iter()).enumerate().find(|(_, (a, b))| a != b) {
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

/// A model with everything needed to use it without the dataset: its graph and the items each user has seen.
pub struct Checkpoint {
    /// The model with its base embeddings.
    pub model: Backbone,
    /// The metadata.
    pub meta: CheckpointMeta,
    /// The training edges the model propagates over (internal ids).
    pub graph: Interactions,
    /// The validation edges (internal ids).
    pub valid: Interactions,
    /// Edges the model has unlearned (internal ids); empty for a freshly trained model.
    pub removed: Interactions,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Serialises named tensors and a metadata map to `path` atomically.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)],
    meta: HashMap<String, String>,
) -> Result<()> {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dt, shape, bytes)| Ok((*name, TensorView::new(*dt, shape.clone(), bytes)?)))
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, Some(meta))?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to a temporary file next to `path`, then renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = crate::data::temp_file_in(dir).map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Saves a checkpoint atomically.
pub fn save(path: &Path, ckpt: &Checkpoint) -> Result<()> {
    let model = &ckpt.model;
    let d = model.dim();
    let base = model.base_vec()?;
    let (u, i) = base.split_at(model.n_users() * d);
    let mut tensors = vec![
        ("user_embedding", Dtype::F32, vec![model.n_users(), d], f32_bytes(u)),
        ("item_embedding", Dtype::F32, vec![model.n_items(), d], f32_bytes(i)),
    ];
    for (prefix, edges) in [("graph", &ckpt.graph), ("valid", &ckpt.valid), ("removed", &ckpt.removed)] {
        tensors.push((edge_name(prefix, true), Dtype::U32, vec![edges.len()], u32_bytes(edges.users())));
        tensors.push((edge_name(prefix, false), Dtype::U32, vec![edges.len()], u32_bytes(edges.items())));
    }
    let json = serde_json::to_string(&ckpt.meta)?;
    write_safetensors(path, &tensors, HashMap::from([(META_KEY.to_string(), json)]))
}

fn edge_name(prefix: &str, users: bool) -> &'static str {
    match (prefix, users) {
        ("graph", true) => "graph_users",
        ("graph", false) => "graph_items",
        ("valid", true) => "valid_users",
        ("valid", false) => "valid_items",
        ("removed", true) => "removed_users",
        _ => "removed_items",
    }
}

/// Reads a safetensors file whose metadata carries a JSON document under `key`. `what` names the kind of
/// file in errors ("checkpoint", "unlearner").
pub(crate) fn read_document<T: serde::de::DeserializeOwned>(
    path: &Path,
    key: &str,
    what: &str,
) -> Result<(Vec<u8>, T)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |why: String| Error::format(path, 0, format!("not an unlearnrec {what}: {why}"));
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(describe(&e, &bytes)))?;
    let json =
        header.metadata().as_ref().and_then(|m| m.get(key)).ok_or_else(|| bad(format!("no `{key}` metadata")))?;
    let doc = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    Ok((bytes, doc))
}

/// A safetensors parse error in words a user can act on: a file cut short says "truncated" and by how much.
fn describe(e: &safetensors::SafeTensorError, bytes: &[u8]) -> String {
    use safetensors::SafeTensorError as E;
    let declared = || -> Option<u64> {
        let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let header = std::str::from_utf8(bytes.get(8..8 + usize::try_from(n).ok()?)?).ok()?;
        let json: serde_json::Value = serde_json::from_str(header).ok()?;
        let end = json.as_object()?.values().filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64()).max()?;
        Some(8 + n + end)
    };
    match e {
        E::HeaderTooSmall => format!("truncated or empty ({} bytes, shorter than a safetensors header)", bytes.len()),
        E::MetadataIncompleteBuffer => match declared() {
            Some(want) if want > bytes.len() as u64 => {
                format!("truncated: the file has {} bytes, its header describes {want}", bytes.len())
            }
            _ => "its tensors do not cover the file exactly (corrupt or tampered with)".into(),
        },
        E::InvalidHeaderLength | E::HeaderTooLarge => "not a safetensors file, or truncated within its header".into(),
        _ => e.to_string(),
    }
}

/// The values of f32 tensor `name`, which must have exactly `shape`; errors go through `bad`.
pub(crate) fn read_f32(
    st: &safetensors::SafeTensors<'_>,
    name: &str,
    shape: &[usize],
    bad: &dyn Fn(String) -> Error,
) -> Result<Vec<f32>> {
    let t = st.tensor(name).map_err(|e| bad(format!("{name}: {e}")))?;
    if t.dtype() != Dtype::F32 || t.shape() != shape {
        return Err(bad(format!("{name} has {:?} {:?}, expected F32 {shape:?}", t.dtype(), t.shape())));
    }
    Ok(t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Loads a checkpoint written by [`save`].
///
/// # Errors
/// I/O, a file that is not an unlearnrec checkpoint, or inconsistent shapes.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let (bytes, meta): (_, CheckpointMeta) = read_document(path, META_KEY, "checkpoint")?;
    let not_ours = |why: String| Error::format(path, 0, format!("not an unlearnrec checkpoint: {why}"));
    if meta.format != FORMAT_VERSION {
        return Err(not_ours(format!("format version {} (this build reads {FORMAT_VERSION})", meta.format)));
    }
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| not_ours(e.to_string()))?;
    let (nu, ni, d) = (meta.dataset.n_users, meta.dataset.n_items, meta.model.dim);
    let mut data = read_f32(&st, "user_embedding", &[nu, d], &not_ours)?;
    data.extend(read_f32(&st, "item_embedding", &[ni, d], &not_ours)?);
    let edges = |prefix: &str| -> Result<Interactions> {
        let col = |name: &str| -> Result<Vec<u32>> {
            let t = st.tensor(name).map_err(|e| not_ours(format!("{name}: {e}")))?;
            if t.dtype() != Dtype::U32 || t.shape().len() != 1 {
                return Err(not_ours(format!("{name} has {:?} {:?}, expected U32 [n]", t.dtype(), t.shape())));
            }
            Ok(t.data().chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        };
        let (u, i) = (col(edge_name(prefix, true))?, col(edge_name(prefix, false))?);
        if u.len() != i.len() || u.iter().any(|&x| x as usize >= nu) || i.iter().any(|&x| x as usize >= ni) {
            return Err(not_ours(format!("{prefix} edges are inconsistent with {nu} users and {ni} items")));
        }
        Ok(Interactions::from_pairs(u.into_iter().zip(i).collect()).0)
    };
    let (graph, valid, removed) = (edges("graph")?, edges("valid")?, edges("removed")?);
    if meta.user_ids.len() != nu || meta.item_ids.len() != ni {
        return Err(not_ours("id maps do not match the dataset sizes".into()));
    }
    let model = Backbone::from_embeddings(meta.model.clone(), nu, ni, data)?;
    Ok(Checkpoint { model, meta, graph, valid, removed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::IdMap;
    use crate::data::synthetic::{SynthConfig, generate};

    #[test]
    fn check_dataset_refuses_the_same_interactions_under_other_external_ids() {
        let ds = generate(&SynthConfig { users: 30, items: 20, interactions: 300, ..Default::default() }).unwrap();
        let meta = CheckpointMeta::trained(&ds, &ModelConfig::default(), &TrainConfig::default(), false, None);
        meta.check_dataset(&ds).unwrap();
        // Two users' external ids swapped: same fingerprint, but user 3 is now someone else.
        let mut ids = ds.users.ids().to_vec();
        ids.swap(3, 4);
        let swapped = Dataset { users: IdMap::from_ids(ids).unwrap(), ..ds.clone() };
        assert_eq!(swapped.fingerprint(), ds.fingerprint());
        let err = meta.check_dataset(&swapped).unwrap_err();
        assert!(matches!(err, Error::CheckpointMismatch { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("user 3") && msg.contains("\"4\"") && msg.contains("\"3\""), "{msg}");
        // An item renamed.
        let mut ids = ds.items.ids().to_vec();
        ids[7] = "renamed".into();
        let renamed = Dataset { items: IdMap::from_ids(ids).unwrap(), ..ds.clone() };
        let msg = meta.check_dataset(&renamed).unwrap_err().to_string();
        assert!(msg.contains("item 7") && msg.contains("\"renamed\"") && msg.contains("\"7\""), "{msg}");
    }

    #[cfg(unix)]
    #[test]
    fn atomic_writes_are_readable_by_others_like_ordinary_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        write_atomic(&path, b"{}").unwrap();
        let created = std::fs::File::create(dir.path().join("plain")).unwrap().metadata().unwrap().permissions();
        let ours = std::fs::metadata(&path).unwrap().permissions();
        // Same mode as a file created the ordinary way under the current umask (0644 under umask 022).
        assert_eq!(ours.mode() & 0o777, created.mode() & 0o777);
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
    }
}
