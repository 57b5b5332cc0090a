//! SimGCL (Yu et al. 2022): LightGCN's propagation, layers `1..L` averaged, plus an InfoNCE term between two
//! views that perturb every layer with uniform noise; its regulariser is the (unsquared) norms of the batch's
//! final user and positive rows over the batch size.

use candle_core::Tensor;
use rand::RngCore;
use rand_chacha::ChaCha8Rng;

use super::loss::sq_norm;
use super::{Architecture, Backbone, BatchRows, Combine, LossInput, ModelConfig, ModelKind, combine_weights};
use crate::error::Result;
use crate::tensor::{LayerNoise, propagate_rows};

/// SimGCL.
pub(super) struct SimGcl;

impl ModelKind {
    /// SimGCL: LightGCN with a uniform-noise contrastive task.
    #[allow(non_upper_case_globals)]
    pub const SimGcl: ModelKind = ModelKind(&SimGcl);
}

impl Architecture for SimGcl {
    fn name(&self) -> &'static str {
        "simgcl"
    }

    fn about(&self) -> &'static str {
        "SimGCL (noise contrastive views)"
    }

    fn propagates(&self) -> bool {
        true
    }

    fn default_combine(&self) -> Combine {
        Combine::MeanSkipFirst
    }

    /// `(‖E_users(batch)‖_F + ‖E_pos(batch)‖_F) / B` on the final rows.
    fn regulariser(&self, _: &Backbone, input: &LossInput<'_>, rows: &BatchRows) -> Result<Tensor> {
        let bsz = input.batch.len() as f64;
        Ok(((sq_norm(&rows.users)?.sqrt()? / bsz)? + (sq_norm(&rows.pos)?.sqrt()? / bsz)?)?)
    }

    fn regularises_whole_table(&self, _: &ModelConfig) -> bool {
        false
    }

    fn takes_reg_scope(&self) -> bool {
        false
    }

    /// InfoNCE between two noisy views (layers perturbed by [`LayerNoise`], mean of layers `1..L`), the
    /// noise seeds drawn from `input.rng` at every step (one per layer, the first view's first).
    fn contrastive(&self, model: &Backbone, input: &mut LossInput<'_>) -> Result<Option<Tensor>> {
        let cfg = &model.config;
        let (ids, n_users) = model.contrast_ids(input.batch);
        let (first, scale) = combine_weights(Combine::MeanSkipFirst, cfg.layers);
        let view = |rng: &mut ChaCha8Rng| {
            let noise = LayerNoise { eps: cfg.eps as f32, seeds: (0..cfg.layers).map(|_| rng.next_u64()).collect() };
            propagate_rows(input.adj, input.e0, cfg.layers, first, scale, &ids, Some(noise), input.sink)
        };
        let v1 = view(input.rng)?;
        let v2 = view(input.rng)?;
        Ok(Some(model.view_contrast(&v1, &v2, n_users)?))
    }
}
