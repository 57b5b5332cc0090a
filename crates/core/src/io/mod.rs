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

/// Reads a safetensors file whose metadata carries a document under `key`: returns the file's bytes and
/// the document's text. `what` names the kind of file in errors ("checkpoint", "unlearner").
pub fn read_document(path: &Path, key: &str, what: &str) -> Result<(Vec<u8>, String)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |why: String| Error::format(path, 0, format!("not an unlearnrec {what}: {why}"));
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(describe(&e, &bytes)))?;
    let text =
        header.metadata().as_ref().and_then(|m| m.get(key)).ok_or_else(|| bad(format!("no `{key}` metadata")))?.clone();
    Ok((bytes, text))
}

/// [`read_document`] with the document parsed as JSON.
pub fn read_json_document<T: serde::de::DeserializeOwned>(path: &Path, key: &str, what: &str) -> Result<(Vec<u8>, T)> {
    let (bytes, json) = read_document(path, key, what)?;
    let doc =
        serde_json::from_str(&json).map_err(|e| Error::format(path, 0, format!("not an unlearnrec {what}: {e}")))?;
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
