use std::path::Path;

use super::*;
use crate::data::synthetic::{SynthConfig, generate};
use crate::model::{ModelConfig, ModelKind};
use crate::train::Silent;

fn dataset() -> Dataset {
    generate(&SynthConfig { users: 60, items: 40, interactions: 900, seed: 5, ..Default::default() }).unwrap()
}

fn configs() -> (ModelConfig, TrainConfig) {
    let model = ModelConfig { kind: ModelKind::LightGcn, dim: 8, layers: 2, ..ModelConfig::default() };
    let train = TrainConfig { epochs: 2, batch_size: 256, eval_every: 1, seed: 3, ..TrainConfig::default() };
    (model, train)
}

/// A tiny trained LightGCN checkpoint.
fn trained(ds: &Dataset) -> Checkpoint {
    let (model, train) = configs();
    crate::pipeline::train(ds, &model, &train, &mut Silent).unwrap().0
}

fn trained_with_seed(ds: &Dataset, seed: u64) -> Checkpoint {
    let (model, train) = configs();
    crate::pipeline::train(ds, &model, &TrainConfig { seed, ..train }, &mut Silent).unwrap().0
}

/// `ckpt`'s parts as [`Checkpoint::new`] takes them, with an independent copy of the model.
fn parts(ckpt: &Checkpoint) -> (Backbone, CheckpointMeta, Interactions, Interactions, Interactions) {
    let m = ckpt.model();
    let model = Backbone::from_embeddings(m.config.clone(), m.n_users(), m.n_items(), m.base_vec().unwrap()).unwrap();
    (model, ckpt.meta().clone(), ckpt.edges().clone(), ckpt.valid().clone(), ckpt.removed().clone())
}

/// The message of loading `path`, which must fail.
fn load_error(path: &Path) -> String {
    match Checkpoint::load(path) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{} loaded", path.display()),
    }
}

fn invalid(r: Result<Checkpoint>) -> String {
    match r {
        Err(Error::InvalidCheckpoint(why)) => why,
        Err(e) => panic!("expected an invalid checkpoint, got {e}"),
        Ok(_) => panic!("expected an invalid checkpoint, got a valid one"),
    }
}

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

#[test]
fn broken_invariants_are_refused_with_clear_errors() {
    let ds = dataset();
    let ckpt = trained(&ds);
    let (nu, ni) = (ckpt.model().n_users() as u32, ckpt.model().n_items() as u32);
    let edge = ckpt.edges().iter().next().unwrap();
    let valid_edge = ckpt.valid().iter().next().unwrap();
    let one = |pairs: Vec<(u32, u32)>| Interactions::from_pairs(pairs).0;

    let (m, mut meta, e, v, r) = parts(&ckpt);
    meta.users = IdMap::identity(nu as usize - 1);
    let why = invalid(Checkpoint::new(m, meta, e, v, r));
    assert!(why.contains(&format!("{} external user ids for a model of {nu} users", nu - 1)), "{why}");

    let (m, mut meta, e, v, r) = parts(&ckpt);
    meta.dataset.n_items += 1;
    let why = invalid(Checkpoint::new(m, meta, e, v, r));
    assert!(why.contains(&format!("the dataset has {} items, the model {ni}", ni + 1)), "{why}");

    let (m, mut meta, e, v, r) = parts(&ckpt);
    meta.model.dim = 16;
    let why = invalid(Checkpoint::new(m, meta, e, v, r));
    assert!(why.contains("another model configuration (lightgcn, d=16) than the model's (lightgcn, d=8)"), "{why}");

    let (m, meta, e, v, _) = parts(&ckpt);
    let why = invalid(Checkpoint::new(m, meta, e, v, one(vec![(nu, 0)])));
    assert!(why.contains(&format!("removed edge (user {nu}, item 0) is outside the model's {nu} users")), "{why}");

    let (m, meta, _, v, r) = parts(&ckpt);
    let why = invalid(Checkpoint::new(m, meta, one(vec![(0, ni + 3)]), v, r));
    assert!(why.contains(&format!("training edge (user 0, item {})", ni + 3)), "{why}");

    let (m, meta, e, v, _) = parts(&ckpt);
    let why = invalid(Checkpoint::new(m, meta, e, v, one(vec![edge])));
    assert!(why.contains(&format!("removed edge (user {}, item {}) is still a training edge", edge.0, edge.1)));

    let (m, meta, e, v, _) = parts(&ckpt);
    let why = invalid(Checkpoint::new(m, meta, e, v, one(vec![valid_edge])));
    assert!(why.contains("is still a validation edge"), "{why}");

    // A successor is checked too: a model of another size does not fit.
    let small = Backbone::new(ckpt.model().config.clone(), nu as usize - 1, ni as usize, 1).unwrap();
    let why = invalid(ckpt.derive(small, ckpt.edges().clone(), Interactions::default(), Interactions::default()));
    assert!(why.contains("external user ids"), "{why}");
    // The parts themselves make a checkpoint.
    let (m, meta, e, v, r) = parts(&ckpt);
    Checkpoint::new(m, meta, e, v, r).unwrap();
}

#[test]
fn non_finite_embeddings_are_refused_on_load() {
    let ds = dataset();
    let ckpt = trained(&ds);
    let (m, meta, e, v, r) = parts(&ckpt);
    let mut base = m.base_vec().unwrap();
    let row = ckpt.model().n_users() + 2;
    base[row * m.dim() + 1] = f32::NAN;
    let m = Backbone::from_embeddings(m.config.clone(), m.n_users(), m.n_items(), base).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.safetensors");
    Checkpoint::new(m, meta, e, v, r).unwrap().save(&path).unwrap();
    let err = load_error(&path);
    assert!(err.contains("not an unlearnrec checkpoint: the embedding of item 2 is not finite (NaN)"), "{err}");
}

fn assert_same(a: &Checkpoint, b: &Checkpoint) {
    assert_eq!(a.model().base_vec().unwrap(), b.model().base_vec().unwrap());
    assert_eq!(a.model().config, b.model().config);
    assert_eq!((a.edges(), a.valid(), a.removed()), (b.edges(), b.valid(), b.removed()));
    assert_eq!(a.meta(), b.meta());
}

/// `ckpt` after a request of a few edges, with every provenance field set.
fn unlearned(ckpt: &Checkpoint) -> Checkpoint {
    let request = Interactions::from_pairs(ckpt.edges().iter().step_by(17).collect()).0;
    let (mut out, _) = crate::unlearn::retrain(ckpt, &request, &mut Silent).unwrap();
    let prov = out.provenance_mut();
    prov.encoder_offset =
        Some(OffsetApplied { unlearner_sha256: Some("a".repeat(64)), backbone_sha256: Some("b".repeat(64)) });
    prov.serve = Some(ServeInfo { version: 4, retrain_of: Some(3) });
    prov.extra.insert("note".into(), "kept".into());
    out
}

#[test]
fn save_then_load_gives_the_same_checkpoint() {
    let ds = dataset();
    let ckpt = trained(&ds);
    let dir = tempfile::tempdir().unwrap();
    for (name, c) in [("trained", &ckpt), ("unlearned", &unlearned(&ckpt))] {
        let path = dir.path().join(format!("{name}.safetensors"));
        c.save(&path).unwrap();
        let back = Checkpoint::load(&path).unwrap();
        assert_same(&back, c);
        assert_eq!(back.meta().provenance, c.meta().provenance);
        // Hashed id lookups, built once.
        let ext = ds.users.external(9);
        assert_eq!(back.user(ext).unwrap(), 9);
        assert!(matches!(back.user("nobody"), Err(Error::UnknownId { .. })));
        assert_eq!(back.recommend(9, 5).unwrap(), c.recommend(9, 5).unwrap());
    }
}

fn bytes_of(ckpt: &Checkpoint, path: &Path) -> Vec<u8> {
    ckpt.save(path).unwrap();
    std::fs::read(path).unwrap()
}

/// Sets the wall-clock fields of the training history to zero: the only part of two identical trainings
/// that differs.
fn zero_timing(ckpt: &mut Checkpoint) {
    let h = ckpt.meta.history.as_mut().expect("a trained checkpoint has a history");
    h.secs = 0.0;
    for r in &mut h.history {
        r.train_secs = 0.0;
    }
}

#[test]
fn identical_checkpoints_give_identical_files() {
    let ds = dataset();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"));
    // The same checkpoint saved twice, notes added in another order.
    let mut one = unlearned(&trained(&ds));
    let first = bytes_of(&one, &a);
    assert_eq!(first, bytes_of(&one, &b));
    let mut two = unlearned(&trained(&ds));
    for (k, v) in [("z", "1"), ("a", "2"), ("m", "3")] {
        one.provenance_mut().extra.insert(k.into(), v.into());
    }
    for (k, v) in [("m", "3"), ("z", "1"), ("a", "2")] {
        two.provenance_mut().extra.insert(k.into(), v.into());
    }
    zero_timing(&mut one);
    zero_timing(&mut two);
    let (x, y) = (bytes_of(&one, &a), bytes_of(&two, &b));
    assert_eq!(x, y, "two identical trainings and unlearnings give other bytes");
    assert_eq!(crate::io::sha256_hex(&x), crate::io::sha256_hex(&y));
    // Two identical trainings differ in their timing only.
    let (mut c, mut d) = (trained(&ds), trained(&ds));
    assert_ne!(bytes_of(&c, &a), bytes_of(&d, &b), "wall-clock seconds are recorded");
    zero_timing(&mut c);
    zero_timing(&mut d);
    assert_eq!(bytes_of(&c, &a), bytes_of(&d, &b));
}

/// A format-1 metadata document of `ckpt` with `provenance`.
fn v1_json(ckpt: &Checkpoint, provenance: serde_json::Value) -> String {
    let m = ckpt.meta();
    serde_json::json!({
        "format": 1,
        "model": m.model,
        "train": m.train,
        "dataset": m.dataset,
        "user_ids": m.users.ids(),
        "item_ids": m.items.ids(),
        "carved_valid": m.carved_valid,
        "history": m.history,
        "provenance": provenance,
    })
    .to_string()
}

/// Writes `ckpt`'s tensors with metadata document `json`.
fn write_with(ckpt: &Checkpoint, json: String, path: &Path) {
    let (tensors, _) = ckpt.file_parts().unwrap();
    write_tensors(path, &tensors, json).unwrap();
}

#[test]
fn format_1_files_still_load() {
    let ds = dataset();
    let ckpt = unlearned(&trained(&ds));
    let shards = ShardMeta {
        shards: 2,
        partition: Partition::Random,
        model: ckpt.meta().model.clone(),
        seed: 9,
        last_retrained: vec![1],
        aggregation: None,
        attention_epochs: 0,
        attention: None,
    };
    let prov = serde_json::json!({
        "version": "0.1.0",
        "method": "gradient_ascent",
        "encoder_offset": "applied",
        "sisa": serde_json::to_string(&shards).unwrap(),
        "serve_version": "7",
        "serve_retrain_of": "6",
        "unlearned_edges": ckpt.removed().len().to_string(),
        "experiment.sharded_train_secs": "1.5",
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.safetensors");
    write_with(&ckpt, v1_json(&ckpt, prov), &path);
    let back = Checkpoint::load(&path).unwrap();
    let want = Provenance {
        version: Some("0.1.0".into()),
        method: Some(crate::unlearn::baselines::gradient_ascent::METHOD),
        encoder_offset: Some(OffsetApplied { unlearner_sha256: None, backbone_sha256: None }),
        shards: Some(shards),
        serve: Some(ServeInfo { version: 7, retrain_of: Some(6) }),
        extra: [("experiment.sharded_train_secs".to_string(), "1.5".to_string())].into(),
    };
    assert_eq!(back.meta().provenance, want);
    assert_eq!(back.users(), ckpt.users());
    assert_eq!(back.meta().history, ckpt.meta().history);
    assert_eq!(back.model().base_vec().unwrap(), ckpt.model().base_vec().unwrap());
    assert_eq!((back.edges(), back.valid(), back.removed()), (ckpt.edges(), ckpt.valid(), ckpt.removed()));
    // Saved again, it is a file of this format.
    back.save(&path).unwrap();
    let json = crate::io::read_document(&path, META_KEY, "checkpoint").unwrap().text;
    assert!(json.starts_with(&format!("{{\"format\":{FORMAT_VERSION},")), "{json}");
    assert_eq!(Checkpoint::load(&path).unwrap().meta().provenance, want);
    // A freshly trained format-1 file, and an unknown method name, which is kept as a note.
    let fresh = trained(&ds);
    write_with(&fresh, v1_json(&fresh, serde_json::json!({"version": "0.0.9", "method": "magic"})), &path);
    let back = Checkpoint::load(&path).unwrap();
    assert_eq!(back.meta().provenance.method, None);
    assert_eq!(back.meta().provenance.extra.get("method").map(String::as_str), Some("magic"));
    assert_eq!(back.meta().provenance.version.as_deref(), Some("0.0.9"));
    assert_eq!(back.model().base_vec().unwrap(), fresh.model().base_vec().unwrap());
}

#[test]
fn unknown_and_future_formats_are_refused() {
    let ds = dataset();
    let ckpt = trained(&ds);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.safetensors");
    let mut doc: serde_json::Value = serde_json::from_str(&file::meta_json(ckpt.meta()).unwrap()).unwrap();
    doc["format"] = (FORMAT_VERSION + 1).into();
    write_with(&ckpt, doc.to_string(), &path);
    let err = load_error(&path);
    assert!(
        err.contains(&format!("checkpoint format {} is newer than this build", FORMAT_VERSION + 1))
            && err.contains("upgrade unlearnrec"),
        "{err}"
    );
    doc["format"] = 0.into();
    write_with(&ckpt, doc.to_string(), &path);
    let err = load_error(&path);
    assert!(err.contains("not an unlearnrec checkpoint: unknown format 0"), "{err}");
    doc.as_object_mut().unwrap().remove("format");
    write_with(&ckpt, doc.to_string(), &path);
    let err = load_error(&path);
    assert!(err.contains("missing field `format`"), "{err}");
    // Duplicate external ids are refused.
    let mut doc: serde_json::Value = serde_json::from_str(&file::meta_json(ckpt.meta()).unwrap()).unwrap();
    doc["item_ids"][1] = doc["item_ids"][0].clone();
    write_with(&ckpt, doc.to_string(), &path);
    let err = load_error(&path);
    assert!(err.contains("is listed twice"), "{err}");
}

#[test]
fn the_serving_view_is_computed_once_and_recommend_answers_from_it() {
    let ds = dataset();
    let ckpt = trained(&ds);
    // Every interaction of user 4 and of item 0 forgotten.
    let request = Interactions::from_pairs(ckpt.seen().iter().filter(|&(u, i)| u == 4 || i == 0).collect::<Vec<_>>()).0;
    let (out, _) = crate::unlearn::retrain(&ckpt, &request, &mut Silent).unwrap();
    let view = out.serving().unwrap();
    assert!(std::ptr::eq(view, out.serving().unwrap()));
    assert_eq!(view.erased_items(), &[0]);
    assert!(out.is_erased_user(4));
    assert!(matches!(out.recommend(4, 5), Err(Error::Erased { .. })));
    // What `recommend` computed before the view: fresh final embeddings, the seen graph, the erased items.
    let emb = out.final_embeddings().unwrap();
    assert_eq!(view.embeddings(), &emb);
    let seen = Graph::from_interactions(out.model().n_users(), out.model().n_items(), &out.seen());
    for u in [0u32, 7, 31] {
        let top = crate::eval::recommend(&[u], &emb.users, &emb.items, emb.dim, Some(seen.user_items()), &[0], 10);
        let top = top.unwrap();
        let (items, scores) = top.row(0);
        let want: Vec<(String, f32)> =
            items.iter().zip(scores).map(|(&i, &s)| (out.items().external(i).to_string(), s)).collect();
        assert_eq!(out.recommend(u, 10).unwrap(), want, "user {u}");
    }
}

#[test]
fn the_encoder_offset_is_bound_to_the_unlearner_that_applied_it() {
    use crate::unlearn::{FinetuneConfig, PretrainConfig, pretrain, unlearn};
    let ds = dataset();
    let ckpt = trained(&ds);
    let pre =
        |seed| PretrainConfig { epochs: 1, batch_size: 256, max_steps_per_epoch: Some(2), seed, ..Default::default() };
    let (a, b) = (pretrain(&ckpt, &pre(1), &mut Silent).unwrap(), pretrain(&ckpt, &pre(2), &mut Silent).unwrap());
    assert_eq!(a.meta.backbone_sha256, Some(ckpt.backbone_sha256().unwrap()));
    assert_ne!(a.sha256().unwrap(), b.sha256().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.safetensors");
    a.save(&path).unwrap();
    let a = crate::unlearn::Unlearner::load(&path).unwrap();
    let ft = FinetuneConfig { epochs: 0, calibration_steps: 0, ..FinetuneConfig::default() };
    let edges: Vec<(u32, u32)> = ckpt.edges().iter().collect();
    let first = Interactions::from_pairs(edges[..3].to_vec()).0;
    let (once, _) = unlearn(&ckpt, &a, &first, &ft, &mut Silent).unwrap();
    let want = OffsetApplied {
        unlearner_sha256: Some(a.sha256().unwrap()),
        backbone_sha256: Some(ckpt.backbone_sha256().unwrap()),
    };
    assert_eq!(once.meta().provenance.encoder_offset, Some(want.clone()));
    assert_eq!(once.meta().provenance.method, Some(MethodId::UNLEARNREC));
    // The next request starts from the anchor, which carries no offset: any unlearner pre-trained for that
    // model may apply it, and the result records it.
    let second = Interactions::from_pairs(edges[10..12].to_vec()).0;
    let (twice, _) = unlearn(&once, &a, &second, &ft, &mut Silent).unwrap();
    assert_eq!(twice.meta().provenance.encoder_offset, Some(want));
    let (by_b, _) = unlearn(&once, &b, &second, &ft, &mut Silent).unwrap();
    assert_eq!(by_b.meta().provenance.encoder_offset.clone().unwrap().unlearner_sha256, Some(b.sha256().unwrap()));
    // One pre-trained for another model is refused.
    let other = trained_with_seed(&ds, 99);
    let c = pretrain(&other, &pre(1), &mut Silent).unwrap();
    let Err(err) = unlearn(&once, &c, &second, &ft, &mut Silent) else { panic!("another model's unlearner") };
    assert!(err.to_string().contains("pre-trained for another model"), "{err}");
    // Without an anchor (an older build's file), another unlearner cannot take the offset out.
    let mut bare =
        once.derive(parts(&once).0, once.edges().clone(), once.valid().clone(), once.removed().clone()).unwrap();
    bare.provenance_mut().encoder_offset = once.meta().provenance.encoder_offset.clone();
    let Err(err) = unlearn(&bare, &b, &second, &ft, &mut Silent) else { panic!("another unlearner is refused") };
    assert!(err.to_string().contains("the offset of another unlearner"), "{err}");
    // An offset of a format-1 file names no unlearner and is trusted, as it was.
    let mut legacy =
        once.derive(parts(&once).0, once.edges().clone(), once.valid().clone(), once.removed().clone()).unwrap();
    legacy.provenance_mut().encoder_offset = Some(OffsetApplied { unlearner_sha256: None, backbone_sha256: None });
    let (again, _) = unlearn(&legacy, &b, &second, &ft, &mut Silent).unwrap();
    let applied = again.meta().provenance.encoder_offset.clone().unwrap();
    assert_eq!(applied.unlearner_sha256, Some(b.sha256().unwrap()));
}
