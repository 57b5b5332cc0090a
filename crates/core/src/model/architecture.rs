//! The [`Architecture`] trait: everything in which one backbone differs from another (propagation, loss terms,
//! per-epoch state, initialisation), so that training, pre-training, unlearning and the baselines call the
//! model instead of asking which one it is.
//!
//! Each backbone implements it in its own file (`pop.rs`, `mf.rs`, `lightgcn.rs`, `sgl.rs`, `simgcl.rs`) and
//! is listed once in [`super::ARCHITECTURES`]. The defaults are BPR-MF's: no propagation, layers summed, the
//! whole-table L2 regulariser, no contrastive term, no per-epoch state, a seeded Xavier initialisation.

use std::any::Any;

use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;

use super::loss::sq_norm;
use super::{Backbone, Combine, LossInput, ModelConfig, RegScope};
use crate::data::Interactions;
use crate::error::Result;
use crate::graph::Graph;

/// A backbone recommender: its name, how it propagates and combines layers, its loss terms besides BPR, what
/// it draws once per epoch, and the model a training run starts from. Registered in
/// [`super::ARCHITECTURES`]; a [`super::ModelKind`] names one.
pub trait Architecture: Send + Sync + 'static {
    /// The name on the command line and in files (`[model] kind`, checkpoints, experiment grids).
    fn name(&self) -> &'static str;

    /// Other names it is parsed from (case does not matter).
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }

    /// One line on what it is (the command line's help).
    fn about(&self) -> &'static str;

    /// Whether it propagates over the graph: layers `E¹..Eᴸ` with `Eˡ = ÂEˡ⁻¹` (then `layers ≥ 1`); without,
    /// the final embeddings are `E⁰`.
    fn propagates(&self) -> bool;

    /// How the layers combine into the final embeddings when `[model] combine` is unset.
    fn default_combine(&self) -> Combine {
        Combine::Sum
    }

    /// Whether training learns its embedding table. False for most-popular, whose one-column table is
    /// counted from the training data: training leaves it as it is, and unlearning other than retraining
    /// refuses it.
    fn learns_embeddings(&self) -> bool {
        true
    }

    /// The model a training run on `train` starts from: by default [`Backbone::new`], a seeded Xavier table.
    ///
    /// # Errors
    /// An invalid config.
    fn init(
        &self,
        config: &ModelConfig,
        n_users: usize,
        n_items: usize,
        train: &Interactions,
        seed: u64,
    ) -> Result<Backbone> {
        let _ = train;
        Backbone::new(config.clone(), n_users, n_items, seed)
    }

    /// The unweighted regulariser `Ω` of a loss evaluation (docs/method.md §3.3); `rows` are the batch's
    /// rows of the final embeddings. By default `‖E⁰‖²` over the whole table, or with `[model] reg_scope =
    /// "batch"` the LightGCN paper's `½ Σ_b (‖E⁰_u‖² + ‖E⁰_i‖² + ‖E⁰_j‖²) / B` (then
    /// [`Architecture::regularises_whole_table`] must say which).
    ///
    /// # Errors
    /// Tensor errors.
    fn regulariser(&self, model: &Backbone, input: &LossInput<'_>, rows: &BatchRows) -> Result<Tensor> {
        let _ = rows;
        if model.config.reg_scope != Some(RegScope::Batch) {
            return sq_norm(input.e0);
        }
        let b = input.batch;
        if b.is_empty() {
            return Ok(Tensor::new(0f32, input.e0.device())?);
        }
        Ok((model.batch_base_sq_norm(input.e0, b, input.sink)? * (0.5 / b.len() as f64))?)
    }

    /// Whether [`Architecture::regulariser`] is the whole-table `‖E⁰‖²` for `config`. Such a term moves every
    /// row, those without edges too (unlearning puts an isolated row where an exact retrain would), and
    /// inside unlearning it acts on the frozen backbone's parameters, a constant, so it is skipped there
    /// (docs/method.md §13.5).
    fn regularises_whole_table(&self, config: &ModelConfig) -> bool {
        config.reg_scope != Some(RegScope::Batch)
    }

    /// Whether `[model] reg_scope` applies (the default regulariser); false for a model with its own.
    fn takes_reg_scope(&self) -> bool {
        true
    }

    /// What the model draws on `graph` once per epoch (once per simulated request in pre-training, once per
    /// unlearning run) and reads on every step of it through [`LossInput::epoch`]: SGL's edge-dropout views.
    /// `None` by default, drawing nothing from `rng`.
    ///
    /// # Errors
    /// Tensor errors.
    fn epoch_state(&self, config: &ModelConfig, graph: &Graph, rng: &mut ChaCha8Rng) -> Result<Option<EpochState>> {
        let _ = (config, graph, rng);
        Ok(None)
    }

    /// The unweighted contrastive term (docs/method.md §3.4), evaluated when `ssl_reg > 0`; `None` for a
    /// model without one (the default).
    ///
    /// # Errors
    /// Tensor errors; a state the model needs missing from `input`.
    fn contrastive(&self, model: &Backbone, input: &mut LossInput<'_>) -> Result<Option<Tensor>> {
        let _ = (model, input);
        Ok(None)
    }
}

/// The rows of the final embeddings for a batch's users, positive and negative items, each `(B, dim)`.
pub struct BatchRows {
    /// Users.
    pub users: Tensor,
    /// Positive items.
    pub pos: Tensor,
    /// Negative items.
    pub neg: Tensor,
}

/// What [`Architecture::epoch_state`] drew, for the model that drew it ([`EpochState::get`] with its own
/// type).
pub struct EpochState(Box<dyn Any + Send + Sync>);

impl EpochState {
    /// Wraps a model's state.
    pub fn new<T: Any + Send + Sync>(state: T) -> Self {
        Self(Box::new(state))
    }

    /// The state, when it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for EpochState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EpochState")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand::SeedableRng;

    use super::*;
    use crate::data::synthetic::{SynthConfig, generate};
    use crate::graph::NormAdj;
    use crate::model::{ARCHITECTURES, ModelKind, RegScope, model_names};
    use crate::tensor::SpMat;
    use crate::train::sampler::sample_epoch;
    use crate::train::{Silent, TrainConfig, TrainData, fit};

    fn tiny() -> crate::data::Dataset {
        generate(&SynthConfig { users: 30, items: 20, interactions: 300, ..SynthConfig::default() }).unwrap()
    }

    fn scalar(t: &Tensor) -> f32 {
        t.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn names_round_trip_through_the_registry() {
        let mut taken = HashSet::new();
        for &arch in ARCHITECTURES {
            let kind: ModelKind = arch.name().parse().unwrap();
            assert_eq!(
                (kind.name(), kind.architecture().name(), kind.to_string()),
                (arch.name(), arch.name(), arch.name().into())
            );
            assert_eq!(arch.name().to_ascii_uppercase().parse::<ModelKind>().unwrap(), kind);
            for alias in arch.aliases() {
                assert_eq!(alias.parse::<ModelKind>().unwrap(), kind, "{alias}");
            }
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", arch.name()));
            assert_eq!(serde_json::from_str::<ModelKind>(&json).unwrap(), kind);
            for name in std::iter::once(&arch.name()).chain(arch.aliases()) {
                assert!(taken.insert(*name), "{name} is registered twice");
            }
            assert!(!arch.about().is_empty());
        }
        assert_eq!(model_names(), ModelKind::all().map(ModelKind::name).collect::<Vec<_>>());
        for kind in [ModelKind::Pop, ModelKind::Mf, ModelKind::LightGcn, ModelKind::Sgl, ModelKind::SimGcl] {
            assert!(ModelKind::all().any(|k| k == kind), "{kind} is not registered");
        }
        let err = "gcn".parse::<ModelKind>().unwrap_err().to_string();
        assert!(model_names().iter().all(|n| err.contains(n)), "{err}");
        // Files hold the names only.
        assert!(serde_json::from_str::<ModelKind>("\"most-popular\"").is_err());
    }

    #[test]
    fn every_registered_model_trains_on_a_tiny_graph() {
        let ds = tiny();
        let (nu, ni) = (ds.n_users(), ds.n_items());
        let data = TrainData::new(nu, ni, &ds.train, &Interactions::default());
        let train = TrainConfig { epochs: 2, batch_size: 64, max_steps_per_epoch: Some(2), ..TrainConfig::default() };
        for kind in ModelKind::all() {
            let arch = kind.architecture();
            let cfg = ModelConfig { kind, dim: 4, layers: 2, ..ModelConfig::default() };
            let mut model = arch.init(&cfg, nu, ni, &ds.train, 1).unwrap();
            assert_eq!(model.kind(), kind);
            let before = model.base_vec().unwrap();
            let report = fit(&mut model, &data, &train, &mut Silent).unwrap();
            let after = model.base_vec().unwrap();
            if arch.learns_embeddings() {
                assert_eq!(report.history.len(), 2, "{kind}");
                assert!(report.history.iter().all(|r| r.loss.is_finite() && r.loss > 0.0), "{kind}: {report:?}");
                assert_ne!(before, after, "{kind}: training moved nothing");
            } else {
                assert!(report.history.is_empty(), "{kind}");
                assert_eq!(before, after, "{kind}: training moved a table it does not learn");
            }
            let emb = model.final_embeddings(&data.adj).unwrap();
            assert_eq!((emb.users.len(), emb.items.len()), (nu * model.dim(), ni * model.dim()));
            assert!(emb.users.iter().chain(&emb.items).all(|x| x.is_finite()), "{kind}");
        }
    }

    #[test]
    fn only_sgl_draws_an_epoch_state_and_its_loss_needs_it() {
        let ds = tiny();
        let (nu, ni) = (ds.n_users(), ds.n_items());
        let graph = Graph::from_interactions(nu, ni, &ds.train);
        let adj = SpMat::from_norm_adj(&NormAdj::from_graph(&graph));
        let fresh = || ChaCha8Rng::seed_from_u64(3);
        for kind in ModelKind::all() {
            let model = Backbone::new(ModelConfig { kind, dim: 4, layers: 2, ..ModelConfig::default() }, nu, ni, 1);
            let mut rng = fresh();
            let state = model.unwrap().epoch_state(&graph, &mut rng).unwrap();
            assert_eq!(state.is_some(), kind == ModelKind::Sgl, "{kind}");
            // Drawing the views advances the training stream; no state draws nothing.
            assert_eq!(rng != fresh(), state.is_some(), "{kind}");
        }
        let cfg = ModelConfig { kind: ModelKind::Sgl, dim: 4, layers: 2, ssl_reg: 0.5, ..ModelConfig::default() };
        let sgl = Backbone::new(cfg.clone(), nu, ni, 1).unwrap();
        let off = Backbone::from_embeddings(ModelConfig { ssl_reg: 0.0, ..cfg }, nu, ni, sgl.base_vec().unwrap());
        let off = off.unwrap();
        let mut rng = fresh();
        assert!(off.epoch_state(&graph, &mut rng).unwrap().is_none());
        assert!(rng == fresh());
        let batch = sample_epoch(graph.user_items(), 1, 0).batch(0, 64);
        let state = sgl.epoch_state(&graph, &mut rng).unwrap();
        let views = state.as_ref().and_then(EpochState::get::<super::super::SglViews>).expect("SGL's views");
        let nnz = |m: &SpMat| m.matrix().nnz();
        assert!(nnz(&views.a) < nnz(&adj) && nnz(&views.b) < nnz(&adj));
        let with = sgl.train_loss(&adj, &batch, state.as_ref(), &mut rng, None).unwrap();
        let without = off.train_loss(&adj, &batch, None, &mut rng, None).unwrap();
        let ssl = scalar(with.ssl.as_ref().expect("SGL's contrastive term"));
        assert!(without.ssl.is_none());
        assert!(ssl > 0.0);
        assert_eq!(scalar(&with.bpr), scalar(&without.bpr));
        assert!((scalar(&with.total) - scalar(&without.total) - 0.5 * ssl).abs() < 1e-5);
        // Another draw of the views gives another contrastive term.
        let other = sgl.epoch_state(&graph, &mut rng).unwrap();
        let again = sgl.train_loss(&adj, &batch, other.as_ref(), &mut rng, None).unwrap();
        assert_ne!(scalar(again.ssl.as_ref().unwrap()), ssl);
        let err = sgl.train_loss(&adj, &batch, None, &mut rng, None).err().expect("SGL without its views");
        assert!(err.to_string().contains("ssl_reg"), "{err}");
    }

    #[test]
    fn a_whole_table_regulariser_sees_rows_without_edges() {
        // One more user than the data has: a node without edges, in no batch and no view.
        let ds = tiny();
        let (nu, ni) = (ds.n_users() + 1, ds.n_items());
        let graph = Graph::from_interactions(nu, ni, &ds.train);
        let adj = SpMat::from_norm_adj(&NormAdj::from_graph(&graph));
        let batch = sample_epoch(graph.user_items(), 1, 0).batch(0, 64);
        let scoped = [ModelKind::Mf, ModelKind::LightGcn].map(|kind| (kind, Some(RegScope::Batch)));
        for (kind, reg_scope) in ModelKind::all().map(|k| (k, None)).chain(scoped) {
            let cfg = ModelConfig { kind, dim: 4, layers: 2, reg: 1.0, reg_scope, ..ModelConfig::default() };
            let model = Backbone::new(cfg, nu, ni, 1).unwrap();
            let reg = || {
                let mut rng = ChaCha8Rng::seed_from_u64(3);
                let state = model.epoch_state(&graph, &mut rng).unwrap();
                scalar(&model.train_loss(&adj, &batch, state.as_ref(), &mut rng, None).unwrap().reg)
            };
            let before = reg();
            let mut table = model.base_vec().unwrap();
            table[(nu - 1) * 4] += 1.0;
            model.set_base(&table).unwrap();
            let after = reg();
            let whole = model.config.regularises_whole_table();
            assert_eq!(before != after, whole, "{kind} {reg_scope:?}: {before} vs {after}");
        }
    }

    #[test]
    fn the_batch_scope_is_half_the_batch_base_rows_squared_norm_over_the_batch() {
        let ds = tiny();
        let (nu, ni) = (ds.n_users(), ds.n_items());
        let graph = Graph::from_interactions(nu, ni, &ds.train);
        let adj = SpMat::from_norm_adj(&NormAdj::from_graph(&graph));
        let batch = sample_epoch(graph.user_items(), 1, 0).batch(0, 64);
        let cfg = ModelConfig { dim: 4, layers: 2, reg_scope: Some(RegScope::Batch), ..ModelConfig::default() };
        let model = Backbone::new(cfg.clone(), nu, ni, 1).unwrap();
        let table = model.base_vec().unwrap();
        let row = |node: usize| table[node * 4..][..4].iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
        let mut want = 0.0;
        for k in 0..batch.len() {
            want += row(batch.users[k] as usize) + row(nu + batch.pos[k] as usize) + row(nu + batch.neg[k] as usize);
        }
        want *= 0.5 / batch.len() as f64;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let got = f64::from(scalar(&model.train_loss(&adj, &batch, None, &mut rng, None).unwrap().reg));
        assert!((got - want).abs() <= 1e-5 * want, "{got} vs {want}");
        assert!(!cfg.regularises_whole_table());
        for kind in [ModelKind::Sgl, ModelKind::SimGcl] {
            let err = ModelConfig { kind, ..cfg.clone() }.validate().unwrap_err().to_string();
            assert!(err.contains("reg_scope"), "{err}");
        }
    }
}
