//! Fuzzes the model files: checkpoints (plain and sharded loaders), unlearners and imported embeddings.
//!
//! The first byte picks what the rest is:
//! - `0`: a whole file, given to [`Checkpoint::load`], `sisa::load`, [`Unlearner::load`] and
//!   [`read_embeddings`];
//! - `1` / `2`: the metadata document of a valid checkpoint / unlearner (the rest of the file kept);
//! - `3` / `4`: the safetensors JSON header of a valid checkpoint / unlearner (the tensor bytes kept);
//! - `5` / `6`: the metadata document / the header of a valid sharded (SISA) checkpoint.
//!
//! The valid files are a tiny model trained at start-up. A file that loads is then used as the CLI uses
//! it (served recommendations, the unlearner's check against the model), since a loader that accepts a
//! file must leave a model that works.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use unlearnrec_core::checkpoint::Checkpoint;
use unlearnrec_core::data::Dataset;
use unlearnrec_core::data::synthetic::{SynthConfig, generate};
use unlearnrec_core::model::{ModelConfig, ModelKind};
use unlearnrec_core::train::{Silent, TrainConfig};
use unlearnrec_core::unlearn::baselines::sisa;
use unlearnrec_core::unlearn::{self, PretrainConfig, Unlearner};

struct Base {
    ds: Dataset,
    ckpt: Checkpoint,
    ckpt_bytes: Vec<u8>,
    unlearner_bytes: Vec<u8>,
    sharded_bytes: Vec<u8>,
}

fn base() -> &'static Base {
    static B: OnceLock<Base> = OnceLock::new();
    B.get_or_init(|| {
        let ds = generate(&SynthConfig { users: 12, items: 10, interactions: 60, ..Default::default() }).unwrap();
        let mc = ModelConfig { kind: ModelKind::LightGcn, dim: 4, layers: 1, ..Default::default() };
        let tc = TrainConfig { epochs: 1, batch_size: 64, eval_every: 1, ..Default::default() };
        let (ckpt, _) = unlearnrec_core::pipeline::train(&ds, &mc, &tc, &mut Silent).unwrap();
        let pc = PretrainConfig { epochs: 1, batch_size: 64, max_steps_per_epoch: Some(1), ..Default::default() };
        let un = unlearn::pretrain(&ckpt, &pc, &mut Silent).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unlearner.safetensors");
        un.save(&path).unwrap();
        let unlearner_bytes = std::fs::read(&path).unwrap();
        let sc = sisa::ShardConfig {
            shards: 2,
            kmeans_iters: 2,
            pretrain_epochs: 1,
            attention_epochs: 1,
            ..Default::default()
        };
        let mf = ModelConfig { kind: ModelKind::Mf, ..mc };
        let (sharded, _) = sisa::train_sharded(&ds, &mf, &tc, &sc, &mut Silent).unwrap();
        let path = dir.path().join("sharded.safetensors");
        sisa::save(&path, &sharded.checkpoint, &sharded.shards).unwrap();
        let sharded_bytes = std::fs::read(&path).unwrap();
        let ckpt_bytes = ckpt.to_bytes().unwrap();
        if let Some(out) = std::env::var_os("UNLEARNREC_FUZZ_WRITE_SEEDS") {
            write_seeds(Path::new(&out), &ckpt_bytes, &unlearner_bytes, &sharded_bytes);
        }
        Base { ds, ckpt, ckpt_bytes, unlearner_bytes, sharded_bytes }
    })
}

/// Splits a safetensors file into its JSON header and its tensor bytes.
fn split(file: &[u8]) -> (&[u8], &[u8]) {
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    (&file[8..8 + n], &file[8 + n..])
}

/// A safetensors file of `header` and `data`.
fn join(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + header.len() + data.len());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out
}

/// `file` with its metadata entry `key` replaced by `doc`.
fn with_document(file: &[u8], key: &str, doc: &str) -> Vec<u8> {
    let (header, data) = split(file);
    let mut h: serde_json::Value = serde_json::from_slice(header).unwrap();
    h["__metadata__"][key] = serde_json::Value::String(doc.to_string());
    join(&serde_json::to_vec(&h).unwrap(), data)
}

fn write_seeds(dir: &Path, ckpt: &[u8], unlearner: &[u8], sharded: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let doc = |file: &[u8], key: &str| -> Vec<u8> {
        let h: serde_json::Value = serde_json::from_slice(split(file).0).unwrap();
        h["__metadata__"][key].as_str().unwrap().as_bytes().to_vec()
    };
    let seeds: [(&str, u8, Vec<u8>); 9] = [
        ("checkpoint-file", 0, ckpt.to_vec()),
        ("unlearner-file", 0, unlearner.to_vec()),
        ("sharded-file", 0, sharded.to_vec()),
        ("checkpoint-meta", 1, doc(ckpt, "unlearnrec")),
        ("unlearner-meta", 2, doc(unlearner, "unlearnrec_unlearner")),
        ("checkpoint-header", 3, split(ckpt).0.to_vec()),
        ("unlearner-header", 4, split(unlearner).0.to_vec()),
        ("sharded-meta", 5, doc(sharded, "unlearnrec")),
        ("sharded-header", 6, split(sharded).0.to_vec()),
    ];
    for (name, mode, bytes) in seeds {
        let mut v = vec![mode];
        v.extend(bytes);
        std::fs::write(dir.join(name), v).unwrap();
    }
}

fuzz_target!(|data: &[u8]| {
    let b = base();
    let Some((&mode, rest)) = data.split_first() else { return };
    let doc = || std::str::from_utf8(rest).ok();
    let file = match mode % 7 {
        0 => rest.to_vec(),
        1 => with_document(
            &b.ckpt_bytes,
            "unlearnrec",
            match doc() {
                Some(d) => d,
                None => return,
            },
        ),
        2 => with_document(
            &b.unlearner_bytes,
            "unlearnrec_unlearner",
            match doc() {
                Some(d) => d,
                None => return,
            },
        ),
        3 => join(rest, split(&b.ckpt_bytes).1),
        4 => join(rest, split(&b.unlearner_bytes).1),
        5 => with_document(
            &b.sharded_bytes,
            "unlearnrec",
            match doc() {
                Some(d) => d,
                None => return,
            },
        ),
        _ => join(rest, split(&b.sharded_bytes).1),
    };
    let Ok(tmp) = tempfile::tempdir() else { return };
    let path = tmp.path().join("model.safetensors");
    if std::fs::write(&path, &file).is_err() {
        return;
    }
    if let Ok(ckpt) = Checkpoint::load(&path) {
        let n = ckpt.model().n_users().min(3) as u32;
        for u in 0..n {
            let _ = ckpt.recommend(u, 5);
        }
    }
    if let Ok(s) = sisa::load(&path) {
        let _ = s.checkpoint.recommend(0, 5);
    }
    if let Ok(un) = Unlearner::load(&path) {
        let _ = un.check(&b.ckpt);
        let _ = un.sha256();
    }
    let _ = unlearnrec_core::read_embeddings(&path, &b.ds, None);
});
