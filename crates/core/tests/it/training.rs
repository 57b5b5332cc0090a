//! Training, checkpoints and unlearning end to end on small synthetic data.

use unlearnrec_core::checkpoint::Checkpoint;
use unlearnrec_core::checkpoint::Split;
use unlearnrec_core::data::synthetic::{SynthConfig, generate};
use unlearnrec_core::eval::EvalConfig;
use unlearnrec_core::model::{ModelConfig, ModelKind};
use unlearnrec_core::pipeline;
use unlearnrec_core::train::{Silent, TrainConfig};

fn small() -> unlearnrec_core::data::Dataset {
    generate(&SynthConfig { users: 300, items: 200, interactions: 9000, seed: 7, ..SynthConfig::default() }).unwrap()
}

fn cfg(kind: ModelKind) -> (ModelConfig, TrainConfig) {
    (
        ModelConfig { kind, dim: 32, layers: 2, ..ModelConfig::default() },
        TrainConfig { epochs: 12, batch_size: 512, lr: 5e-3, eval_every: 4, patience: 0, ..TrainConfig::default() },
    )
}

fn recall(ckpt: &Checkpoint, ds: &unlearnrec_core::data::Dataset) -> f64 {
    ckpt.evaluate(ds, Split::Test, &EvalConfig::default()).unwrap().metrics["recall@20"]
}

#[test]
fn every_model_beats_most_popular_on_synthetic_data() {
    let ds = small();
    let (m, t) = cfg(ModelKind::Pop);
    let (pop, _) = pipeline::train(&ds, &m, &t, &mut Silent).unwrap();
    let pop_recall = recall(&pop, &ds);
    for kind in [ModelKind::Mf, ModelKind::LightGcn, ModelKind::Sgl, ModelKind::SimGcl] {
        let (m, t) = cfg(kind);
        let (ckpt, report) = pipeline::train(&ds, &m, &t, &mut Silent).unwrap();
        let r = recall(&ckpt, &ds);
        assert!(report.best_epoch.is_some(), "{kind}: never validated");
        assert!(r > pop_recall * 1.1, "{kind}: recall@20 {r:.4} vs most-popular {pop_recall:.4}");
    }
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let ds = small();
    let (m, mut t) = cfg(ModelKind::SimGcl);
    t.epochs = 2;
    let (a, _) = pipeline::train(&ds, &m, &t, &mut Silent).unwrap();
    let (b, _) = pipeline::train(&ds, &m, &t, &mut Silent).unwrap();
    assert_eq!(a.model().base_vec().unwrap(), b.model().base_vec().unwrap());
    t.seed += 1;
    let (c, _) = pipeline::train(&ds, &m, &t, &mut Silent).unwrap();
    assert_ne!(a.model().base_vec().unwrap(), c.model().base_vec().unwrap());
}

#[test]
fn checkpoints_round_trip_and_refuse_another_dataset() {
    let ds = small();
    let (m, mut t) = cfg(ModelKind::LightGcn);
    t.epochs = 1;
    let (ckpt, _) = pipeline::train(&ds, &m, &t, &mut Silent).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    ckpt.save(&p).unwrap();
    let back = Checkpoint::load(&p).unwrap();
    assert_eq!(back.model().base_vec().unwrap(), ckpt.model().base_vec().unwrap());
    assert_eq!(back.edges(), ckpt.edges());
    assert_eq!(back.valid(), ckpt.valid());
    assert_eq!(back.meta(), ckpt.meta());
    assert!((recall(&back, &ds) - recall(&ckpt, &ds)).abs() < 1e-12);
    let other =
        generate(&SynthConfig { users: 300, items: 200, interactions: 9000, seed: 8, ..SynthConfig::default() })
            .unwrap();
    let err = back.evaluate(&other, Split::Test, &EvalConfig::default()).unwrap_err().to_string();
    assert!(err.contains("checkpoint mismatch"), "{err}");
    std::fs::write(&p, b"not a checkpoint").unwrap();
    assert!(Checkpoint::load(&p).is_err());
}

#[test]
fn a_nan_loss_stops_training_and_keeps_the_last_good_state() {
    let ds = small();
    let (m, mut t) = cfg(ModelKind::Mf);
    t.lr = 1e30;
    t.epochs = 30;
    t.eval_every = 100; // never validated: the last good state is the one before the diverging epoch
    let (ckpt, report) = pipeline::train(&ds, &m, &t, &mut Silent).unwrap();
    assert!(matches!(report.stop, unlearnrec_core::train::StopReason::Diverged { .. }), "{:?}", report.stop);
    assert!(ckpt.model().base_vec().unwrap().iter().all(|x| x.is_finite()));
}

/// Every training recipe in `examples/` (the files that are not experiment or stream grids) parses as a
/// `train --config` file and passes validation, so a recipe the docs point at cannot rot.
#[test]
fn every_training_recipe_in_examples_parses_and_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".toml") || name.starts_with("exp-") || name.starts_with("stream-") {
            continue;
        }
        let cfg = unlearnrec_core::pipeline::RunConfig::from_toml_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        cfg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        seen += 1;
    }
    assert!(seen >= 4, "expected the recipes of issue 16 in {}, found {seen}", dir.display());
}

/// A whole-table regulariser left to Adam's weight decay (training's path) takes the same steps as the
/// same term differentiated through the loss; the reported loss includes it either way.
#[test]
fn a_whole_table_regulariser_in_adam_equals_the_differentiated_term() {
    use rand::SeedableRng;
    use unlearnrec_core::graph::{Graph, NormAdj};
    use unlearnrec_core::model::{Backbone, LossInput, RegTerm};
    use unlearnrec_core::tensor::SpMat;
    use unlearnrec_core::train::sampler::sample_epoch;
    use unlearnrec_core::train::{Adam, fit_adam};

    let ds = small();
    let g = Graph::from_interactions(ds.n_users(), ds.n_items(), &ds.train);
    let adj = SpMat::from_norm_adj(&NormAdj::from_graph(&g));
    let triples = sample_epoch(g.user_items(), 1, 0);
    for kind in [ModelKind::Mf, ModelKind::LightGcn] {
        // A strong term, so that a missing or doubled gradient shows.
        let m = ModelConfig { kind, dim: 16, layers: 2, reg: 0.05, ..ModelConfig::default() };
        let model = Backbone::new(m.clone(), ds.n_users(), ds.n_items(), 3).unwrap();
        assert_eq!(model.fit_reg_term(), RegTerm::ValueOnly);
        // `weight_decay: None` is training's Adam for the model (`fit_adam`).
        let run = |reg: RegTerm, weight_decay: Option<f64>| {
            let mine = Backbone::new(m.clone(), ds.n_users(), ds.n_items(), 3).unwrap();
            let mut cfg = fit_adam(&mine, 0.01);
            cfg.weight_decay = weight_decay.unwrap_or(cfg.weight_decay);
            let mut opt = Adam::new(vec![mine.base().clone()], cfg).unwrap();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
            let mut losses = vec![];
            for step in 0..6 {
                let batch = triples.batch(step, 256);
                let e0 = mine.base().as_tensor().clone();
                let parts = mine
                    .loss(LossInput { adj: &adj, e0: &e0, batch: &batch, epoch: None, rng: &mut rng, reg, sink: None })
                    .unwrap();
                losses.push(parts.total.to_scalar::<f32>().unwrap());
                opt.step(&parts.total.backward().unwrap()).unwrap();
            }
            (mine.base_vec().unwrap(), losses)
        };
        let max_diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let (folded, lf) = run(RegTerm::ValueOnly, None);
        let (plain, lp) = run(RegTerm::Differentiated, Some(0.0));
        for (a, b) in lf.iter().zip(&lp) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{kind}: loss {a} vs {b}");
        }
        let worst = max_diff(&folded, &plain);
        assert!(worst < 1e-5, "{kind}: tables differ by {worst}");
        // Without the decay the folded loss would not regularise at all: the tables part.
        let off = max_diff(&run(RegTerm::ValueOnly, Some(0.0)).0, &plain);
        assert!(off > 1e-4, "{kind}: the decay made no difference ({off})");
    }
}

#[test]
fn training_through_a_gradient_sink_equals_training_through_candles_store() {
    use rand::SeedableRng;
    use unlearnrec_core::graph::{Graph, NormAdj};
    use unlearnrec_core::model::{Backbone, LossInput, RegScope};
    use unlearnrec_core::tensor::{GradSink, SpMat};
    use unlearnrec_core::train::sampler::sample_epoch;
    use unlearnrec_core::train::{Adam, fit_adam};

    let ds = small();
    let g = Graph::from_interactions(ds.n_users(), ds.n_items(), &ds.train);
    let adj = SpMat::from_norm_adj(&NormAdj::from_graph(&g));
    let triples = sample_epoch(g.user_items(), 1, 0);
    let configs = [
        ModelConfig { kind: ModelKind::LightGcn, reg: 0.05, ..ModelConfig::default() },
        ModelConfig {
            kind: ModelKind::LightGcn,
            reg: 0.05,
            reg_scope: Some(RegScope::Batch),
            ..ModelConfig::default()
        },
        ModelConfig { kind: ModelKind::Sgl, ..ModelConfig::default() },
        ModelConfig { kind: ModelKind::SimGcl, ..ModelConfig::default() },
        ModelConfig { kind: ModelKind::Mf, reg: 0.05, reg_scope: Some(RegScope::Batch), ..ModelConfig::default() },
    ];
    for m in configs {
        let m = ModelConfig { dim: 16, layers: 2, ..m };
        let what = format!("{} (reg scope {:?})", m.kind, m.reg_scope);
        let run = |with_sink: bool| {
            let mine = Backbone::new(m.clone(), ds.n_users(), ds.n_items(), 3).unwrap();
            let mut opt = Adam::new(vec![mine.base().clone()], fit_adam(&mine, 0.01)).unwrap();
            let sink = GradSink::new();
            if with_sink {
                opt.attach_sink(mine.base(), sink.clone()).unwrap();
            }
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
            let state = mine.epoch_state(&g, &mut rng).unwrap();
            let (mut losses, mut stored) = (vec![], 0);
            for step in 0..6 {
                let batch = triples.batch(step, 256);
                let e0 = mine.base().as_tensor().clone();
                let input = LossInput {
                    adj: &adj,
                    e0: &e0,
                    batch: &batch,
                    epoch: state.as_ref(),
                    rng: &mut rng,
                    reg: mine.fit_reg_term(),
                    sink: with_sink.then_some(&sink),
                };
                let parts = mine.loss(input).unwrap();
                losses.push(parts.total.to_scalar::<f32>().unwrap());
                let grads = parts.total.backward().unwrap();
                stored += usize::from(grads.get(mine.base().as_tensor()).is_some());
                opt.step(&grads).unwrap();
                assert!(sink.is_empty(), "{what}: the step left the sink full");
            }
            (mine.base_vec().unwrap(), losses, stored)
        };
        let (sunk, ls, stored_sunk) = run(true);
        let (plain, lp, stored_plain) = run(false);
        assert_eq!(stored_plain, 6, "{what}");
        if m.kind.is_graph() {
            // Every contribution to a graph model's table went through the sink.
            assert_eq!(stored_sunk, 0, "{what}: a gradient beside the sink");
        }
        for (a, b) in ls.iter().zip(&lp) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{what}: loss {a} vs {b}");
        }
        let worst = sunk.iter().zip(&plain).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-6, "{what}: tables differ by {worst}");
        assert!(plain != Backbone::new(m.clone(), ds.n_users(), ds.n_items(), 3).unwrap().base_vec().unwrap());
    }
}

/// Training in the locality order (the default) takes the same steps as in the dataset's order and hands
/// back the table in the dataset's order.
#[test]
fn the_locality_order_trains_the_same_model_as_the_datasets_order() {
    use unlearnrec_core::model::RegScope;
    use unlearnrec_core::train::{NodeOrder, TrainData, fit};

    let ds = small();
    let data = TrainData::new(ds.n_users(), ds.n_items(), &ds.train, ds.valid.as_ref().unwrap());
    for m in [
        ModelConfig { kind: ModelKind::LightGcn, dim: 16, layers: 3, ..ModelConfig::default() },
        ModelConfig {
            kind: ModelKind::LightGcn,
            dim: 16,
            layers: 2,
            reg_scope: Some(RegScope::Batch),
            ..ModelConfig::default()
        },
    ] {
        let run = |node_order: NodeOrder| {
            let mut model = unlearnrec_core::model::Backbone::new(m.clone(), ds.n_users(), ds.n_items(), 5).unwrap();
            let t = TrainConfig {
                epochs: 4,
                batch_size: 512,
                eval_every: 2,
                patience: 0,
                node_order,
                ..TrainConfig::default()
            };
            let report = fit(&mut model, &data, &t, &mut Silent).unwrap();
            (model.base_vec().unwrap(), report)
        };
        let (rcm, r1) = run(NodeOrder::Rcm);
        let (plain, r2) = run(NodeOrder::Dataset);
        assert_eq!(r1.best_epoch, r2.best_epoch);
        let (a, b) = (r1.best_metric.unwrap(), r2.best_metric.unwrap());
        assert!((a - b).abs() < 1e-4, "validation {a} vs {b}");
        let scale = plain.iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = rcm.iter().zip(&plain).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-4 * scale, "tables differ by {worst} (scale {scale})");
    }
}
