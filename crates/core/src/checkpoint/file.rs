//! The checkpoint file: a safetensors file that Python reads with `safetensors.safe_open`.
//!
//! Tensors (rows in internal-id order):
//! - `user_embedding` `(n_users, dim)` and `item_embedding` `(n_items, dim)` (f32): the base (layer-0)
//!   embeddings `E⁰`; the final embeddings come from propagating them over the checkpoint's graph.
//! - `graph_users`, `graph_items` (u32): the training edges the model propagates over and treats as seen
//!   (after unlearning: the remaining graph).
//! - `valid_users`, `valid_items` (u32): the validation edges used for model selection (also seen).
//! - `removed_users`, `removed_items` (u32): the forgotten edges (empty for a freshly trained model).
//!
//! The metadata entry [`META_KEY`] holds a JSON [`CheckpointMeta`] after its `sha256` seal and `format`
//! number: model and training configuration, dataset, carving, training history, typed provenance and the id
//! maps, every map in a fixed key order, so the same checkpoint always gives the same bytes. The seal is the
//! SHA-256 of the document and every tensor ([`crate::io::content_digest`]): a file changed after it was
//! written (a flipped bit, an edited tensor or id map) is refused on load. Files are written to a temporary
//! file and renamed.
//!
//! A file is untrusted input: [`Checkpoint::load`] checks the format, the seal, every tensor's type and shape
//! against the metadata, the configurations, ids, edges and finiteness before it builds anything, so a
//! truncated, tampered or hostile file gets an error naming the file and the problem, and nothing is
//! allocated beyond a small multiple of the file's size.

use std::path::Path;

use safetensors::tensor::Dtype;
use serde::{Deserialize, Serialize};

use super::meta::MetaV1;
use super::{Anchor, Checkpoint, CheckpointMeta};
use crate::data::Interactions;
use crate::error::{Error, Result};
use crate::io::{f32_bytes, read_document, read_f32, read_u32, u32_bytes};
use crate::model::Backbone;

/// The metadata key of the JSON document.
pub const META_KEY: &str = "unlearnrec";

/// The checkpoint format this build writes. Format 3 (this one) is format 2 sealed with the SHA-256 of its
/// content, which is required and checked; format 2 has typed provenance; format 1, whose provenance was a
/// map of strings (`method`, `encoder_offset`, `sisa`, `serve_version`, …), is still read and upgraded on
/// load. Files of formats 1 and 2 carry no seal. Newer formats are refused.
pub const FORMAT_VERSION: u32 = 3;

/// The metadata as written: the format number first.
#[derive(Serialize)]
struct Versioned<'a> {
    format: u32,
    #[serde(flatten)]
    meta: &'a CheckpointMeta,
}

/// Just the format number of a metadata document.
#[derive(Deserialize)]
struct Probe {
    format: u32,
}

/// Why a metadata document cannot be read.
pub(super) enum MetaError {
    /// Not a checkpoint's metadata, or a broken one.
    Bad(String),
    /// A format this build does not know.
    Format(u32),
}

/// Parses the metadata document of any format this build reads.
pub(super) fn parse_meta(json: &str) -> Result<CheckpointMeta, MetaError> {
    let bad = |e: serde_json::Error| MetaError::Bad(e.to_string());
    let Probe { format } = serde_json::from_str(json).map_err(bad)?;
    match format {
        1 => serde_json::from_str::<MetaV1>(json).map_err(bad)?.upgrade().map_err(MetaError::Bad),
        2 | FORMAT_VERSION => serde_json::from_str(json).map_err(bad),
        f => Err(MetaError::Format(f)),
    }
}

/// The metadata document this build writes.
pub(super) fn meta_json(meta: &CheckpointMeta) -> Result<String> {
    Ok(serde_json::to_string(&Versioned { format: FORMAT_VERSION, meta })?)
}

fn edge_names(prefix: &str) -> (&'static str, &'static str) {
    match prefix {
        "graph" => ("graph_users", "graph_items"),
        "valid" => ("valid_users", "valid_items"),
        "anchor_train" => ("anchor_train_users", "anchor_train_items"),
        "anchor_valid" => ("anchor_valid_users", "anchor_valid_items"),
        _ => ("removed_users", "removed_items"),
    }
}

/// A named tensor as [`write_safetensors`] takes it.
pub(crate) type NamedTensor = (String, Dtype, Vec<usize>, Vec<u8>);

impl Checkpoint {
    /// The tensors and the metadata document of the file (what [`Checkpoint::save`] writes; a sharded
    /// checkpoint adds its shards' tensors).
    pub(crate) fn file_parts(&self) -> Result<(Vec<NamedTensor>, String)> {
        let model = &self.model;
        let d = model.dim();
        let base = model.base_vec()?;
        let (u, i) = base.split_at(model.n_users() * d);
        let mut tensors = vec![
            ("user_embedding".to_string(), Dtype::F32, vec![model.n_users(), d], f32_bytes(u)),
            ("item_embedding".to_string(), Dtype::F32, vec![model.n_items(), d], f32_bytes(i)),
        ];
        for (prefix, edges) in [("graph", &self.edges), ("valid", &self.valid), ("removed", &self.removed)] {
            let (users, items) = edge_names(prefix);
            tensors.push((users.into(), Dtype::U32, vec![edges.len()], u32_bytes(edges.users())));
            tensors.push((items.into(), Dtype::U32, vec![edges.len()], u32_bytes(edges.items())));
        }
        if let Some(a) = &self.anchor {
            let (u, i) = a.base.split_at(model.n_users() * d);
            tensors.push(("anchor_user_embedding".to_string(), Dtype::F32, vec![model.n_users(), d], f32_bytes(u)));
            tensors.push(("anchor_item_embedding".to_string(), Dtype::F32, vec![model.n_items(), d], f32_bytes(i)));
            for (prefix, edges) in [("anchor_train", &a.since_train), ("anchor_valid", &a.since_valid)] {
                let (users, items) = edge_names(prefix);
                tensors.push((users.into(), Dtype::U32, vec![edges.len()], u32_bytes(edges.users())));
                tensors.push((items.into(), Dtype::U32, vec![edges.len()], u32_bytes(edges.items())));
            }
        }
        Ok((tensors, meta_json(&self.meta)?))
    }

    /// Saves the checkpoint atomically in format [`FORMAT_VERSION`]. The same checkpoint always gives the
    /// same bytes.
    ///
    /// # Errors
    /// I/O.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::io::write_atomic(path, &self.to_bytes()?)
    }

    /// The bytes [`Checkpoint::save`] writes (of a checkpoint without shards), for hashing or sending a
    /// checkpoint that lives in memory (a receipt's SHA-256 of it equals the saved file's).
    ///
    /// # Errors
    /// As [`Checkpoint::save`], without the I/O.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let (tensors, json) = self.file_parts()?;
        crate::io::sealed_bytes(&tensors, META_KEY, &json)
    }

    /// Loads a checkpoint written by [`Checkpoint::save`] (or in format 1).
    ///
    /// # Errors
    /// I/O; a file that is not an unlearnrec checkpoint, does not match its seal (changed since written), or
    /// is inconsistent (configurations, shapes, ids, edges, non-finite embeddings: the invariants of
    /// [`Checkpoint::new`]); a format newer than [`FORMAT_VERSION`].
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let doc = read_document(path, META_KEY, "checkpoint")?;
        let not_ours = |why: String| Error::format(path, 0, format!("not an unlearnrec checkpoint: {why}"));
        // The format first (a newer build may seal differently), then the seal, before the document is read.
        let format = serde_json::from_str::<Probe>(&doc.text).ok().map(|p| p.format);
        let st = match format {
            Some(f) if f > FORMAT_VERSION => None,
            _ => Some(doc.tensors(path, "checkpoint")?),
        };
        let meta = parse_meta(&doc.text).map_err(|e| match e {
            MetaError::Bad(why) => not_ours(why),
            MetaError::Format(f) if f > FORMAT_VERSION => Error::format(
                path,
                0,
                format!(
                    "checkpoint format {f} is newer than this build of unlearnrec reads (formats 1 to \
                     {FORMAT_VERSION}); upgrade unlearnrec"
                ),
            ),
            MetaError::Format(f) => not_ours(format!("unknown format {f} (this build reads 1 to {FORMAT_VERSION})")),
        })?;
        // (parse_meta refused a document without a format or of a newer one.)
        let (Some(format), Some(st)) = (format, st) else { return Err(not_ours("no format".into())) };
        if format >= 3 && doc.seal.is_none() {
            return Err(not_ours(format!("a format-{format} checkpoint without its SHA-256 seal")));
        }
        meta.model.validate().map_err(|e| not_ours(format!("its model configuration: {e}")))?;
        meta.train.validate().map_err(|e| not_ours(format!("its training configuration: {e}")))?;
        let (nu, ni, d) = (meta.dataset.n_users, meta.dataset.n_items, meta.model.dim);
        let mut data = read_f32(&st, "user_embedding", &[nu, d], &not_ours)?;
        data.extend(read_f32(&st, "item_embedding", &[ni, d], &not_ours)?);
        if let Some(k) = data.iter().position(|x| !x.is_finite()) {
            let (what, row) = if k < nu * d { ("user", k / d) } else { ("item", k / d - nu) };
            return Err(not_ours(format!("the embedding of {what} {row} is not finite ({})", data[k])));
        }
        let edges = |prefix: &str| -> Result<Interactions> {
            let (un, inn) = edge_names(prefix);
            let (u, i) = (read_u32(&st, un, &not_ours)?, read_u32(&st, inn, &not_ours)?);
            if u.len() != i.len() {
                return Err(not_ours(format!("{un} has {} entries, {inn} {}", u.len(), i.len())));
            }
            Ok(Interactions::from_pairs(u.into_iter().zip(i).collect()).0)
        };
        let (graph, valid, removed) = (edges("graph")?, edges("valid")?, edges("removed")?);
        let model = Backbone::from_embeddings(meta.model.clone(), nu, ni, data)?;
        let anchor = if st.names().contains(&"anchor_user_embedding") {
            let mut base = read_f32(&st, "anchor_user_embedding", &[nu, d], &not_ours)?;
            base.extend(read_f32(&st, "anchor_item_embedding", &[ni, d], &not_ours)?);
            Some(Anchor { base, since_train: edges("anchor_train")?, since_valid: edges("anchor_valid")? })
        } else {
            None
        };
        let ckpt = Checkpoint::new(model, meta, graph, valid, removed);
        let ckpt = match anchor {
            Some(a) => ckpt.and_then(|c| c.with_anchor(a)),
            None => ckpt,
        };
        ckpt.map_err(|e| match e {
            Error::InvalidCheckpoint(why) => not_ours(why),
            e => e,
        })
    }
}

/// Writes named tensors and a checkpoint metadata document atomically, sealed.
pub(crate) fn write_tensors(path: &Path, tensors: &[NamedTensor], json: String) -> Result<()> {
    crate::io::write_atomic(path, &crate::io::sealed_bytes(tensors, META_KEY, &json)?)
}
