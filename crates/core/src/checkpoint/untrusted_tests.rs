//! Checkpoint and unlearner files as untrusted input: truncated, tampered with, of another format, or
//! hostile. Each must be refused with an error naming the file and the problem, without a panic and without
//! allocating what a forged header claims.

use std::collections::HashMap;
use std::path::Path;

use super::file::{NamedTensor, meta_json, write_tensors};
use super::*;
use crate::data::synthetic::{SynthConfig, generate};
use crate::model::{ModelConfig, ModelKind};
use crate::train::Silent;
use crate::unlearn::{PretrainConfig, Unlearner};

fn trained() -> Checkpoint {
    let ds = generate(&SynthConfig { users: 40, items: 30, interactions: 500, seed: 9, ..Default::default() }).unwrap();
    let model = ModelConfig { kind: ModelKind::LightGcn, dim: 4, layers: 2, ..ModelConfig::default() };
    let train = TrainConfig { epochs: 1, batch_size: 256, eval_every: 1, seed: 3, ..TrainConfig::default() };
    crate::pipeline::train(&ds, &model, &train, &mut Silent).unwrap().0
}

fn checkpoint_error(path: &Path) -> String {
    match Checkpoint::load(path) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{} loaded", path.display()),
    }
}

fn unlearner_error(path: &Path) -> String {
    match Unlearner::load(path) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{} loaded", path.display()),
    }
}

/// The metadata document of `ckpt` as JSON, to edit.
fn doc(ckpt: &Checkpoint) -> serde_json::Value {
    serde_json::from_str(&meta_json(ckpt.meta()).unwrap()).unwrap()
}

/// Writes `ckpt`'s tensors, changed by `edit`, with the document `json`, sealed (a forged but consistent file).
fn forge(ckpt: &Checkpoint, json: &serde_json::Value, edit: impl FnOnce(&mut Vec<NamedTensor>), path: &Path) {
    let (mut tensors, _) = ckpt.file_parts().unwrap();
    edit(&mut tensors);
    write_tensors(path, &tensors, json.to_string()).unwrap();
}

/// The byte offset of the tensor data in a safetensors file.
fn data_start(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

#[test]
fn a_file_changed_after_it_was_written_is_refused_by_its_seal() {
    let ckpt = trained();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    ckpt.save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    Checkpoint::load(&path).unwrap();
    // One bit of an embedding (a finite value stays finite: only the seal can tell).
    let mut bytes = good.clone();
    let at = data_start(&bytes) + 3;
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let err = checkpoint_error(&path);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("does not match the SHA-256 it was written with") && err.contains("tampered"), "{err}");
    // An external id in the metadata, same length: the header stays valid JSON.
    let mut bytes = good.clone();
    let header = &bytes[8..data_start(&bytes)];
    let text = std::str::from_utf8(header).unwrap();
    let k = text.find("item_ids").unwrap();
    let digit = k + text[k..].find(|c: char| c.is_ascii_digit()).unwrap();
    bytes[8 + digit] = if bytes[8 + digit] == b'7' { b'8' } else { b'7' };
    std::fs::write(&path, &bytes).unwrap();
    let err = checkpoint_error(&path);
    assert!(err.contains("does not match the SHA-256"), "{err}");
    // A malformed seal.
    let mut bytes = good.clone();
    let header = std::str::from_utf8(&bytes[8..data_start(&bytes)]).unwrap();
    let k = header.find("sha256").unwrap() + 15;
    bytes[8 + k] = b'z';
    std::fs::write(&path, &bytes).unwrap();
    let err = checkpoint_error(&path);
    assert!(err.contains("SHA-256 is malformed"), "{err}");
}

#[test]
fn truncated_files_are_refused_at_every_length() {
    let ckpt = trained();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    ckpt.save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let start = data_start(&good);
    for len in [0, 1, 7, 8, 9, start / 2, start - 1, start, start + 1, (start + good.len()) / 2, good.len() - 1] {
        std::fs::write(&path, &good[..len]).unwrap();
        let err = checkpoint_error(&path);
        assert!(
            err.contains(&path.display().to_string()) && err.contains("not an unlearnrec checkpoint"),
            "{len}: {err}"
        );
    }
    std::fs::write(&path, &good[..good.len() - 1]).unwrap();
    assert!(checkpoint_error(&path).contains("truncated"));
    // And a file of the right length whose tail is garbage is caught by the seal.
    let mut bytes = good.clone();
    let n = bytes.len();
    bytes[n - 8..].copy_from_slice(&[0xff; 8]);
    std::fs::write(&path, &bytes).unwrap();
    assert!(checkpoint_error(&path).contains("does not match the SHA-256"));
}

#[test]
fn format_2_files_without_a_seal_still_load_and_format_3_needs_one() {
    let ckpt = trained();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.safetensors");
    let (tensors, _) = ckpt.file_parts().unwrap();
    let mut d = doc(&ckpt);
    d["format"] = 2.into();
    let raw = |d: &serde_json::Value| {
        crate::io::safetensors_bytes(&tensors, HashMap::from([(META_KEY.to_string(), d.to_string())])).unwrap()
    };
    std::fs::write(&path, raw(&d)).unwrap();
    let back = Checkpoint::load(&path).unwrap();
    assert_eq!(back.model().base_vec().unwrap(), ckpt.model().base_vec().unwrap());
    d["format"] = FORMAT_VERSION.into();
    std::fs::write(&path, raw(&d)).unwrap();
    let err = checkpoint_error(&path);
    assert!(err.contains("a format-3 checkpoint without its SHA-256 seal"), "{err}");
}

#[test]
fn hostile_headers_are_refused_without_allocating_what_they_claim() {
    let ckpt = trained();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.safetensors");
    // Sizes far beyond the file: refused by the tensors' shapes (a 2⁶⁰-row table is never allocated).
    for (key, field) in [("dataset", "n_users"), ("dataset", "n_items"), ("model", "dim")] {
        let mut d = doc(&ckpt);
        d[key][field] = (1u64 << 60).into();
        forge(&ckpt, &d, |_| {}, &path);
        let err = checkpoint_error(&path);
        assert!(err.contains("not an unlearnrec checkpoint") && err.contains("expected F32"), "{field}: {err}");
    }
    // Unbounded work and impossible configurations.
    for (key, field, value, want) in [
        ("model", "layers", serde_json::json!(1_000_000_000u64), "model.layers"),
        ("model", "dim", serde_json::json!(0), "model.dim"),
        ("train", "batch_size", serde_json::json!(0), "train.batch_size"),
        ("model", "ssl_temp", serde_json::json!(-1.0), "model.ssl_temp"),
    ] {
        let mut d = doc(&ckpt);
        d[key][field] = value;
        forge(&ckpt, &d, |_| {}, &path);
        let err = checkpoint_error(&path);
        assert!(err.contains(want), "{field}: {err}");
    }
    // Metadata of the wrong shape.
    for (key, value) in [
        ("model", serde_json::json!([1, 2])),
        ("user_ids", serde_json::json!("x")),
        ("dataset", serde_json::json!(null)),
    ] {
        let mut d = doc(&ckpt);
        d[key] = value;
        forge(&ckpt, &d, |_| {}, &path);
        let err = checkpoint_error(&path);
        assert!(err.contains("not an unlearnrec checkpoint: invalid type"), "{key}: {err}");
    }
    // A tensor of another type or rank.
    let d = doc(&ckpt);
    forge(
        &ckpt,
        &d,
        |t| {
            let g = t.iter_mut().find(|t| t.0 == "graph_items").unwrap();
            g.1 = safetensors::tensor::Dtype::F32;
        },
        &path,
    );
    assert!(checkpoint_error(&path).contains("graph_items has F32"));
}

#[test]
fn stored_edges_outside_the_model_or_inconsistent_are_refused() {
    let ckpt = trained();
    let ni = ckpt.model().n_items() as u32;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ids.safetensors");
    let d = doc(&ckpt);
    let set_first = |name: &'static str, v: u32| {
        move |t: &mut Vec<NamedTensor>| {
            let g = t.iter_mut().find(|t| t.0 == name).unwrap();
            g.3[..4].copy_from_slice(&v.to_le_bytes());
        }
    };
    forge(&ckpt, &d, set_first("graph_items", ni + 5), &path);
    let err = checkpoint_error(&path);
    assert!(err.contains(&format!("item {}) is outside the model's", ni + 5)), "{err}");
    forge(&ckpt, &d, set_first("valid_users", u32::MAX), &path);
    assert!(checkpoint_error(&path).contains("is outside the model's"));
    // Users and items of different lengths.
    forge(
        &ckpt,
        &d,
        |t| {
            let g = t.iter_mut().find(|t| t.0 == "graph_items").unwrap();
            g.2 = vec![g.2[0] - 1];
            g.3.truncate(g.3.len() - 4);
        },
        &path,
    );
    assert!(checkpoint_error(&path).contains("graph_users has"));
    // NaN in the table (forged with a valid seal).
    forge(
        &ckpt,
        &d,
        |t| {
            let e = t.iter_mut().find(|t| t.0 == "user_embedding").unwrap();
            e.3[..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
        },
        &path,
    );
    assert!(checkpoint_error(&path).contains("the embedding of user 0 is not finite (inf)"));
}

fn unlearner(ckpt: &Checkpoint) -> Unlearner {
    let pre =
        PretrainConfig { epochs: 1, batch_size: 256, max_steps_per_epoch: Some(1), seed: 1, ..Default::default() };
    crate::unlearn::pretrain(ckpt, &pre, &mut Silent).unwrap()
}

/// The unlearner at `path`, its tensors and its document, to forge from.
fn unlearner_parts(path: &Path) -> (Vec<NamedTensor>, serde_json::Value) {
    let doc = crate::io::read_document(path, "unlearnrec_unlearner", "unlearner").unwrap();
    let st = doc.tensors(path, "unlearner").unwrap();
    let tensors =
        st.tensors().into_iter().map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec())).collect();
    (tensors, serde_json::from_str(&doc.text).unwrap())
}

fn forge_unlearner(tensors: &[NamedTensor], d: &serde_json::Value, path: &Path) {
    crate::io::write_atomic(path, &crate::io::sealed_bytes(tensors, "unlearnrec_unlearner", &d.to_string()).unwrap())
        .unwrap();
}

#[test]
fn unlearner_files_are_checked_like_checkpoints() {
    let ckpt = trained();
    let u = unlearner(&ckpt);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u.safetensors");
    u.save(&path).unwrap();
    assert_eq!(Unlearner::load(&path).unwrap().sha256().unwrap(), u.sha256().unwrap());
    let good = std::fs::read(&path).unwrap();
    // Tampered, truncated.
    let mut bytes = good.clone();
    let n = bytes.len();
    bytes[n - 2] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    assert!(unlearner_error(&path).contains("does not match the SHA-256"));
    std::fs::write(&path, &good[..n / 2]).unwrap();
    let err = unlearner_error(&path);
    assert!(err.contains(&path.display().to_string()) && err.contains("not an unlearnrec unlearner"), "{err}");
    std::fs::write(&path, &good).unwrap();
    let (tensors, d) = unlearner_parts(&path);
    // A future format.
    let mut f = d.clone();
    f["format"] = (crate::unlearn::UNLEARNER_FORMAT + 1).into();
    forge_unlearner(&tensors, &f, &path);
    let err = unlearner_error(&path);
    assert!(err.contains("unlearner format 3 is newer than this build") && err.contains("upgrade unlearnrec"), "{err}");
    // Sizes and layers that a forged header claims.
    for (field, value, want) in [
        ("n_users", serde_json::json!(1u64 << 62), "h0 has F32"),
        ("n_items", serde_json::json!(u64::MAX), "too many users and items"),
        ("dim", serde_json::json!(1u64 << 40), "h0 has F32"),
        ("hops", serde_json::json!(1u64 << 40), "hops (at most"),
    ] {
        let mut f = d.clone();
        f[field] = value;
        forge_unlearner(&tensors, &f, &path);
        let err = unlearner_error(&path);
        assert!(err.contains(want), "{field}: {err}");
    }
    let mut f = d.clone();
    f["encoder"]["mlp_layers"] = 1_000_000_000.into();
    forge_unlearner(&tensors, &f, &path);
    assert!(unlearner_error(&path).contains("encoder.mlp_layers"));
    let mut f = d.clone();
    f["encoder"]["mlp_layers"] = 3.into();
    forge_unlearner(&tensors, &f, &path);
    assert!(unlearner_error(&path).contains("mlp.2.weight"));
    // Metadata of the wrong shape; a non-finite weight.
    let mut f = d.clone();
    f["encoder"] = serde_json::json!("x");
    forge_unlearner(&tensors, &f, &path);
    assert!(unlearner_error(&path).contains("invalid type"));
    let mut t = tensors.clone();
    t.iter_mut().find(|t| t.0 == "w").unwrap().3[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    forge_unlearner(&t, &d, &path);
    assert!(unlearner_error(&path).contains("w's value 1 is not finite"));
    // A format-1 file (unsealed) still loads.
    let mut f = d.clone();
    f["format"] = 1.into();
    let raw =
        crate::io::safetensors_bytes(&tensors, HashMap::from([("unlearnrec_unlearner".to_string(), f.to_string())]))
            .unwrap();
    std::fs::write(&path, raw).unwrap();
    assert_eq!(Unlearner::load(&path).unwrap().sha256().unwrap(), u.sha256().unwrap());
}
