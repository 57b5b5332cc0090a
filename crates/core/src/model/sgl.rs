//! SGL-ED (Wu et al. 2021): LightGCN's propagation, layers `0..L` averaged, plus an InfoNCE term between two
//! edge-dropout views of the graph drawn once per epoch ([`SglViews`]); its regulariser is the squared norm
//! of the batch's base rows.

use candle_core::Tensor;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{
    Architecture, Backbone, BatchRows, Combine, EpochState, LossInput, ModelConfig, ModelKind, combine_weights,
};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::tensor::{SpMat, propagate_rows};

/// SGL-ED.
pub(super) struct Sgl;

impl ModelKind {
    /// SGL-ED: LightGCN with an edge-dropout contrastive task.
    #[allow(non_upper_case_globals)]
    pub const Sgl: ModelKind = ModelKind(&Sgl);
}

impl Architecture for Sgl {
    fn name(&self) -> &'static str {
        "sgl"
    }

    fn about(&self) -> &'static str {
        "SGL (edge-dropout contrastive views)"
    }

    fn propagates(&self) -> bool {
        true
    }

    fn default_combine(&self) -> Combine {
        Combine::Mean
    }

    /// `Σ_b ‖E⁰_{u_b}‖² + ‖E⁰_{i_b}‖² + ‖E⁰_{j_b}‖²`: base rows of the batch.
    fn regulariser(&self, model: &Backbone, input: &LossInput<'_>, _: &BatchRows) -> Result<Tensor> {
        model.batch_base_sq_norm(input.e0, input.batch, input.sink)
    }

    fn regularises_whole_table(&self, _: &ModelConfig) -> bool {
        false
    }

    fn takes_reg_scope(&self) -> bool {
        false
    }

    /// The epoch's [`SglViews`] when the contrastive term is on (`ssl_reg > 0`).
    fn epoch_state(&self, config: &ModelConfig, graph: &Graph, rng: &mut ChaCha8Rng) -> Result<Option<EpochState>> {
        if config.ssl_reg > 0.0 {
            Ok(Some(EpochState::new(SglViews::sample(graph, config.keep_rate, rng)?)))
        } else {
            Ok(None)
        }
    }

    /// InfoNCE between the means of layers `0..L` propagated over the epoch's two views.
    fn contrastive(&self, model: &Backbone, input: &mut LossInput<'_>) -> Result<Option<Tensor>> {
        let views = input
            .epoch
            .and_then(EpochState::get::<SglViews>)
            .ok_or_else(|| Error::config("model.ssl_reg", "SGL needs edge-dropout views when ssl_reg > 0"))?;
        let (ids, n_users) = model.contrast_ids(input.batch);
        let layers = model.config.layers;
        let (first, scale) = combine_weights(Combine::Mean, layers);
        let v1 = propagate_rows(&views.a, input.e0, layers, first, scale, &ids, None, input.sink)?;
        let v2 = propagate_rows(&views.b, input.e0, layers, first, scale, &ids, None, input.sink)?;
        Ok(Some(model.view_contrast(&v1, &v2, n_users)?))
    }
}

/// The graph views of SGL-ED for one epoch: two edge-dropout subgraphs, each renormalised.
#[derive(Clone, Debug)]
pub struct SglViews {
    /// First view's adjacency.
    pub a: SpMat,
    /// Second view's adjacency.
    pub b: SpMat,
}

impl SglViews {
    /// Two SGL-ED views of `graph`: each keeps every user–item edge independently with probability `keep`
    /// and is renormalised (`Â` of the subgraph), as in the SGL paper; the reference instead rescales
    /// entries of `Â` by `1/keep` without renormalising (docs/method.md §13.16).
    pub fn sample(graph: &Graph, keep: f64, rng: &mut ChaCha8Rng) -> Result<Self> {
        let mut one = || -> Result<SpMat> {
            let all = graph.to_interactions();
            let kept: Vec<(u32, u32)> = all.iter().filter(|_| rng.random::<f64>() < keep).collect();
            let (edges, _) = crate::data::Interactions::from_pairs(kept);
            let g = Graph::from_interactions(graph.n_users(), graph.n_items(), &edges);
            Ok(SpMat::from_norm_adj(&crate::graph::NormAdj::from_graph(&g)))
        };
        let a = one()?;
        let b = one()?;
        Ok(Self { a, b })
    }
}
