//! SimGCL (Yu et al. 2022): LightGCN's propagation, layers `1..L` averaged, plus an InfoNCE term between two
//! views that perturb every layer with uniform noise; its regulariser is the (unsquared) norms of the batch's
//! final user and positive rows over the batch size.

use candle_core::{Device, Tensor};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::loss::sq_norm;
use super::{Architecture, Backbone, BatchRows, Combine, LossInput, ModelKind};
use crate::error::Result;
use crate::tensor::{SpMat, spmm};

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

    fn regularises_whole_table(&self) -> bool {
        false
    }

    /// InfoNCE between two noisy views ([`noisy_view`]), drawn from `input.rng` at every step.
    fn contrastive(&self, model: &Backbone, input: &mut LossInput<'_>) -> Result<Option<Tensor>> {
        let v1 = noisy_view(model, input.adj, input.e0, input.rng)?;
        let v2 = noisy_view(model, input.adj, input.e0, input.rng)?;
        Ok(Some(model.view_contrast(&v1, &v2, input.batch)?))
    }
}

/// SimGCL's perturbed view: `E'ˡ = Â E'ˡ⁻¹ + sign(Â E'ˡ⁻¹) ⊙ ε·normalize(U[0,1)^{N×d})`, mean of
/// layers `1..L`. The noise is a constant for the gradient (as `sign` has zero derivative).
fn noisy_view(model: &Backbone, adj: &SpMat, e0: &Tensor, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let cfg = &model.config;
    let mut cur = e0.clone();
    let mut acc: Option<Tensor> = None;
    for _ in 0..cfg.layers {
        let y = spmm(adj, &cur)?;
        let noise = sign_noise(&y, cfg.eps as f32, rng.next_u64())?;
        cur = (y + noise)?;
        acc = Some(match acc {
            None => cur.clone(),
            Some(a) => (a + &cur)?,
        });
    }
    let acc = acc.expect("graph models have at least one layer");
    Ok((acc / cfg.layers as f64)?)
}

/// `sign(y) ⊙ ε·normalize_rows(U[0,1))`, drawn in fixed 1024-row chunks, each from its own stream of
/// `seed`, so the result does not depend on the number of threads.
fn sign_noise(y: &Tensor, eps: f32, seed: u64) -> Result<Tensor> {
    let (n, d) = y.dims2()?;
    let yv = y.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; n * d];
    const ROWS: usize = 1024;
    out.par_chunks_mut(ROWS * d).zip(yv.par_chunks(ROWS * d)).enumerate().for_each(|(c, (o, yc))| {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        r.set_stream(c as u64);
        for (orow, yrow) in o.chunks_mut(d).zip(yc.chunks(d)) {
            let mut norm = 0f32;
            for x in orow.iter_mut() {
                *x = r.random::<f32>();
                norm += *x * *x;
            }
            let scale = eps / norm.sqrt().max(1e-12);
            for (x, &yy) in orow.iter_mut().zip(yrow) {
                let s = if yy > 0.0 {
                    1.0
                } else if yy < 0.0 {
                    -1.0
                } else {
                    0.0
                };
                *x *= scale * s;
            }
        }
    });
    Ok(Tensor::from_vec(out, (n, d), &Device::Cpu)?)
}
