//! Files: safetensors reading and writing, atomic writes and SHA-256, shared by checkpoints
//! ([`crate::checkpoint`]), unlearners and exports. Knows nothing of what the files hold.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Hex SHA-256 of bytes: the hash of checkpoint files in receipts and in the service's ledger, and of
/// requests.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Little-endian bytes of f32 values, as safetensors stores them.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian bytes of u32 values, as safetensors stores them.
pub fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Serialises named tensors and a metadata map to `path` atomically. safetensors orders the tensors by
/// dtype, then name; a map of more than one entry is written in no fixed order.
pub fn write_safetensors<S: AsRef<str>>(
    path: &Path,
    tensors: &[(S, Dtype, Vec<usize>, Vec<u8>)],
    meta: HashMap<String, String>,
) -> Result<()> {
    write_atomic(path, &safetensors_bytes(tensors, meta)?)
}

/// The bytes [`write_safetensors`] writes.
///
/// # Errors
/// A tensor whose bytes do not match its shape and type.
pub fn safetensors_bytes<S: AsRef<str>>(
    tensors: &[(S, Dtype, Vec<usize>, Vec<u8>)],
    meta: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dt, shape, bytes)| Ok((name.as_ref(), TensorView::new(*dt, shape.clone(), bytes)?)))
        .collect::<Result<_>>()?;
    Ok(safetensors::serialize(views, Some(meta))?)
}

/// Writes `bytes` to a temporary file next to `path`, then renames it over `path`, durably: the temporary
/// file is synced (`fsync`) before the rename and its directory after it, so that once this returns the new
/// content survives a power loss under `path`, and a crash at any point leaves either the old file or the
/// new one (never a torn one) there.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = crate::data::temp_file_in(dir).map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    sync_dir(dir)
}

/// Syncs a directory (`fsync` of the directory itself), so that the renames and new entries in it are
/// durable. A no-op where directories cannot be opened as files (not Unix).
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| Error::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The key of a document's seal: the first key of a sealed JSON document (see [`seal`]).
const SEAL_PREFIX: &str = "{\"sha256\":\"";

/// SHA-256 over a metadata document and the tensors it describes (each tensor's name, dtype, shape and bytes,
/// in name order): what [`seal`] records, so that a changed byte anywhere in the tensors or the document is
/// seen on load.
pub fn content_digest<'a>(
    doc: &str,
    tensors: impl IntoIterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
) -> String {
    let mut tensors: Vec<_> = tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = Sha256::new();
    h.update((doc.len() as u64).to_le_bytes());
    h.update(doc.as_bytes());
    for (name, dtype, shape, data) in tensors {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(format!("{dtype:?}").as_bytes());
        h.update((shape.len() as u64).to_le_bytes());
        for &s in shape {
            h.update((s as u64).to_le_bytes());
        }
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `doc` (a JSON object) with `"sha256": digest` inserted as its first key.
pub fn seal(doc: &str, digest: &str) -> String {
    debug_assert!(doc.starts_with('{'));
    let rest = &doc[1..];
    let sep = if rest.trim_start().starts_with('}') { "" } else { "," };
    format!("{SEAL_PREFIX}{digest}\"{sep}{rest}")
}

/// Splits a sealed document into its digest and the document as it was sealed; `None` for an unsealed one.
pub fn unseal(doc: &str) -> Option<(&str, String)> {
    let rest = doc.strip_prefix(SEAL_PREFIX)?;
    let digest = rest.get(..64).filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))?;
    let after = rest[64..].strip_prefix('"')?;
    let after = after.strip_prefix(',').unwrap_or(after);
    Some((digest, format!("{{{after}")))
}

/// The bytes of a safetensors file holding `tensors` and the JSON object `doc` under metadata `key`, sealed
/// with their [`content_digest`].
///
/// # Errors
/// A tensor whose bytes do not match its shape and type.
pub fn sealed_bytes<S: AsRef<str>>(
    tensors: &[(S, Dtype, Vec<usize>, Vec<u8>)],
    key: &str,
    doc: &str,
) -> Result<Vec<u8>> {
    let digest = content_digest(doc, tensors.iter().map(|(n, d, s, b)| (n.as_ref(), *d, s.as_slice(), b.as_slice())));
    safetensors_bytes(tensors, HashMap::from([(key.to_string(), seal(doc, &digest))]))
}

/// A safetensors file's metadata document, read by [`read_document`].
pub struct Document {
    /// The whole file.
    pub bytes: Vec<u8>,
    /// The document without its seal.
    pub text: String,
    /// The digest it was sealed with (`None`: written unsealed, by an older build).
    pub seal: Option<String>,
}

impl Document {
    /// Parses the file's tensors and checks them and the document against the seal, if the document has one.
    /// `what` names the kind of file in errors.
    ///
    /// # Errors
    /// [`Error::Format`] naming `path` for a file whose tensors cannot be parsed or that does not match its
    /// seal (changed after it was written: corrupt or tampered with).
    pub fn tensors(&self, path: &Path, what: &str) -> Result<safetensors::SafeTensors<'_>> {
        let bad = |why: String| Error::format(path, 0, format!("not an unlearnrec {what}: {why}"));
        let st = safetensors::SafeTensors::deserialize(&self.bytes).map_err(|e| bad(describe(&e, &self.bytes)))?;
        if let Some(want) = &self.seal {
            let views = st.tensors();
            let got =
                content_digest(&self.text, views.iter().map(|(n, t)| (n.as_str(), t.dtype(), t.shape(), t.data())));
            if &got != want {
                return Err(bad(format!(
                    "its content does not match the SHA-256 it was written with ({}… recorded, {}… read): the file \
                     was changed after it was written (corrupt or tampered with)",
                    &want[..12],
                    &got[..12]
                )));
            }
        }
        Ok(st)
    }
}

/// Reads a safetensors file whose metadata carries a JSON document under `key` (sealed by [`sealed_bytes`] or
/// not). `what` names the kind of file in errors ("checkpoint", "unlearner"). The seal is checked by
/// [`Document::tensors`].
pub fn read_document(path: &Path, key: &str, what: &str) -> Result<Document> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |why: String| Error::format(path, 0, format!("not an unlearnrec {what}: {why}"));
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(describe(&e, &bytes)))?;
    let raw = header.metadata().as_ref().and_then(|m| m.get(key)).ok_or_else(|| bad(format!("no `{key}` metadata")))?;
    let (text, seal) = match unseal(raw) {
        Some((digest, text)) => (text, Some(digest.to_string())),
        None if raw.starts_with(SEAL_PREFIX) => return Err(bad("its metadata's SHA-256 is malformed".into())),
        None => (raw.clone(), None),
    };
    Ok(Document { bytes, text, seal })
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
pub fn read_f32(
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

/// The values of the one-dimensional u32 tensor `name`; errors go through `bad`.
pub fn read_u32(st: &safetensors::SafeTensors<'_>, name: &str, bad: &dyn Fn(String) -> Error) -> Result<Vec<u32>> {
    let t = st.tensor(name).map_err(|e| bad(format!("{name}: {e}")))?;
    if t.dtype() != Dtype::U32 || t.shape().len() != 1 {
        return Err(bad(format!("{name} has {:?} {:?}, expected U32 [n]", t.dtype(), t.shape())));
    }
    Ok(t.data().chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_known_string() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
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
