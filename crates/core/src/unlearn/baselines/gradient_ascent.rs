//! NegGrad+: gradient descent on the remaining data and bounded gradient ascent on the removed edges.
//!
//! Kurmanji et al., *Towards Unbounded Machine Unlearning* (NeurIPS 2023) call this baseline NegGrad+:
//! each step minimises
//!
//! `L = L_model(batch of remaining edges) + α · mean_{(u,i)∈R} softplus(s_ui − s_uj)`
//!
//! with Adam, where `L_model` is the backbone's own training loss on the remaining graph and, for each
//! removed edge `(u, i)` of a batch of the request `R`, `j` is a seeded negative that `u` never interacted
//! with. The second term is the BPR loss with the pair's roles swapped, `−log σ(s_uj − s_ui)`: descending it
//! ascends the BPR loss of the removed edge, pushing `i` below `j`, but its gradient `σ(s_ui − s_uj)` vanishes
//! once that holds, so unlike plain ascent on `−BPR` (whose gradient tends to 1) the scores cannot diverge.
//! Scores are those of the final embeddings propagated over the remaining graph. It guarantees nothing
//! beyond lower scores on the removed edges: how far the rest of the model moves is up to `steps` and `α`.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{D, Device, Tensor};
use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Prepared, deep_copy, negatives, require_embeddings};
use crate::checkpoint::Checkpoint;
use crate::data::Interactions;
use crate::error::{Error, Result};
use crate::model::loss::softplus;
use crate::model::{Backbone, Batch, EpochState, LossInput, RegTerm};
use crate::train::sampler::{Triples, sample_epoch};
use crate::train::{Adam, AdamConfig, Observer, Schedule, Steps, Validation, driver};
use crate::unlearn::method::{ForgetMethod, MethodOptions, Plain};
use crate::unlearn::{MethodId, UnlearnReport};

/// This method in reports and provenance (its [`METHODS`](crate::unlearn::method::METHODS) entry).
pub const METHOD: MethodId = MethodId::of("gradient-ascent");

/// Hyper-parameters of [`gradient_ascent`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GradientAscentConfig {
    /// Adam steps.
    pub steps: usize,
    /// Weight `α` of the ascent term.
    pub alpha: f64,
    /// Learning rate; `None` = the checkpoint's training rate.
    pub lr: Option<f64>,
    /// Triples of remaining edges per step, and removed edges per step at most; `None` = the checkpoint's
    /// training batch size.
    pub batch_size: Option<usize>,
    /// Seed of negatives, batches and augmentations.
    pub seed: u64,
}

impl Default for GradientAscentConfig {
    fn default() -> Self {
        Self { steps: 50, alpha: 1.0, lr: None, batch_size: None, seed: 1234 }
    }
}

impl GradientAscentConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::config("gradient_ascent.steps", "must be at least 1"));
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(Error::config("gradient_ascent.alpha", "must be a finite non-negative number"));
        }
        if self.lr.is_some_and(|lr| !(lr.is_finite() && lr > 0.0)) {
            return Err(Error::config("gradient_ascent.lr", "must be positive"));
        }
        if self.batch_size == Some(0) {
            return Err(Error::config("gradient_ascent.batch_size", "must be at least 1"));
        }
        Ok(())
    }
}

/// `mean softplus(s_ui − s_uj)` over matching rows of the final embeddings of users, their removed items and
/// negative items.
fn swapped_bpr(fu: &Tensor, fp: &Tensor, fnn: &Tensor) -> Result<Tensor> {
    let sp = (fu * fp)?.sum(D::Minus1)?;
    let sn = (fu * fnn)?.sum(D::Minus1)?;
    Ok(softplus(&(sp - sn)?)?.mean_all()?)
}

/// Applies `request` to `ckpt` with `cfg.steps` NegGrad+ steps (see the module docs) and returns the result
/// and its report (phases `graph` and `ascent`).
///
/// # Errors
/// An invalid request or configuration, a most-popular model, or a non-finite loss
/// ([`Error::Diverged`]).
pub fn gradient_ascent(
    ckpt: &Checkpoint,
    request: &Interactions,
    cfg: &GradientAscentConfig,
    obs: &mut dyn Observer,
) -> Result<(Checkpoint, UnlearnReport)> {
    cfg.validate()?;
    require_embeddings(ckpt, "gradient ascent")?;
    let t = Instant::now();
    let prep = Prepared::new(ckpt, request)?;
    let mut phases = HashMap::from([("graph".to_string(), t.elapsed().as_secs_f64())]);
    let t = Instant::now();
    let lr = cfg.lr.unwrap_or(ckpt.meta().train.lr);
    let bs = cfg.batch_size.unwrap_or(ckpt.meta().train.batch_size);
    let model = deep_copy(ckpt.model())?;
    let mut opt = Adam::new(vec![model.base().clone()], AdamConfig { lr, ..AdamConfig::default() })?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let epoch_state = model.epoch_state(&prep.remaining, &mut rng)?;
    let removed: Vec<(u32, u32)> = prep.learned.iter().collect();
    let triples = sample_epoch(prep.remaining.user_items(), cfg.seed, 0);
    let mut steps =
        AscentSteps { prep: &prep, model, cfg, bs, epoch_state, rng, removed, triples_epoch: 0, next: 0, triples };
    // One epoch of `cfg.steps` steps, never validated; a non-finite loss fails.
    driver::run(&mut steps, &mut opt, &Schedule::new(1, None), obs)?;
    let model = steps.model;
    phases.insert("ascent".to_string(), t.elapsed().as_secs_f64());
    let report = prep.report(METHOD, ckpt.model(), &model, phases, vec![])?;
    Ok((prep.finish(ckpt, model, METHOD)?, report))
}

/// [`gradient_ascent`]'s step functions: each step takes the next minibatch of the remaining edges' triples
/// (a new epoch of triples when they run out) and a batch of the removed edges with seeded negatives.
struct AscentSteps<'a> {
    prep: &'a Prepared,
    model: Backbone,
    cfg: &'a GradientAscentConfig,
    bs: usize,
    epoch_state: Option<EpochState>,
    rng: ChaCha8Rng,
    removed: Vec<(u32, u32)>,
    /// The epoch of `triples`, and its next minibatch.
    triples_epoch: u64,
    next: usize,
    triples: Triples,
}

impl Steps for AscentSteps<'_> {
    type State = Vec<f32>;
    type Detail = ();

    fn begin_epoch(&mut self, _epoch: usize) -> Result<usize> {
        Ok(self.cfg.steps)
    }

    fn loss(&mut self, _step: usize) -> Result<Tensor> {
        let (prep, cfg, bs, model) = (self.prep, self.cfg, self.bs, &self.model);
        if self.next >= self.triples.n_batches(bs) && !self.triples.all.is_empty() {
            self.triples_epoch += 1;
            self.next = 0;
            self.triples = sample_epoch(prep.remaining.user_items(), cfg.seed, self.triples_epoch);
        }
        let batch = if self.triples.all.is_empty() { Batch::default() } else { self.triples.batch(self.next, bs) };
        self.next += 1;
        // The removed edges' batch is drawn first, so that their final rows come from the same propagation.
        let nu = model.n_users() as u32;
        let mut forget_ids = Vec::new();
        if cfg.alpha > 0.0 && !self.removed.is_empty() {
            let removed = &self.removed;
            let chosen: Vec<(u32, u32)> = if removed.len() <= bs {
                removed.clone()
            } else {
                let mut k = sample(&mut self.rng, removed.len(), bs).into_vec();
                k.sort_unstable();
                k.into_iter().map(|k| removed[k]).collect()
            };
            let neg = negatives(prep.graph.user_items(), &chosen, &mut self.rng);
            let (users, pos) = chosen.into_iter().unzip();
            forget_ids = Batch { users, pos, neg }.node_ids(nu);
        }
        let e0 = model.base().as_tensor();
        let (mut total, rows) = if batch.is_empty() {
            (Tensor::new(0f32, &Device::Cpu)?, model.final_rows(&prep.adj_remaining, e0, &forget_ids)?)
        } else {
            let input = LossInput {
                adj: &prep.adj_remaining,
                e0,
                batch: &batch,
                epoch: self.epoch_state.as_ref(),
                rng: &mut self.rng,
                reg: RegTerm::Differentiated,
                sink: None,
            };
            let parts = model.loss_with(input, &forget_ids)?;
            (parts.total, parts.extra)
        };
        if !forget_ids.is_empty() {
            let m = forget_ids.len() / 3;
            let forget = swapped_bpr(&rows.narrow(0, 0, m)?, &rows.narrow(0, m, m)?, &rows.narrow(0, 2 * m, m)?)?;
            total = (total + (forget * cfg.alpha)?)?;
        }
        Ok(total)
    }

    fn validate(&mut self) -> Result<Validation<()>> {
        Err(Error::config("gradient_ascent", "has no validation"))
    }

    fn snapshot(&mut self) -> Result<Vec<f32>> {
        self.model.base_vec()
    }

    fn restore(&mut self, state: Vec<f32>) -> Result<()> {
        self.model.set_base(&state)
    }
}

/// [`gradient_ascent`] with [`MethodOptions::gradient_ascent`] as a [`ForgetMethod`] (`gradient-ascent`).
pub(crate) fn build<'a>(o: &MethodOptions<'a>) -> Result<Box<dyn ForgetMethod + 'a>> {
    Ok(Box::new(Plain { name: METHOD.name(), cfg: o.gradient_ascent.clone(), run: gradient_ascent, epochs: |_, _| 1 }))
}

#[cfg(test)]
mod tests {
    use super::super::finetune::tests::{spread_request, trained};
    use super::*;
    use crate::model::ModelKind;
    use crate::train::Silent;

    #[test]
    fn removed_edges_scores_fall() {
        for kind in [ModelKind::Mf, ModelKind::LightGcn] {
            let (_, ckpt) = trained(kind, 40);
            let req = spread_request(&ckpt, 20);
            let cfg = GradientAscentConfig::default();
            let (out, rep) = gradient_ascent(&ckpt, &req, &cfg, &mut Silent).unwrap();
            assert!(req.iter().all(|(u, i)| !out.edges().contains(u, i)));
            assert_eq!(rep.method, METHOD);
            let f = &rep.forgetting;
            eprintln!(
                "{kind}: removed {:.3} -> {:.3}, remaining {:.3} -> {:.3}, non-edges {:.3} -> {:.3}, recall@20 {:.4}",
                f.removed.before,
                f.removed.after,
                f.remaining.before,
                f.remaining.after,
                f.non_edges.before,
                f.non_edges.after,
                rep.valid["recall@20"]
            );
            assert!(f.removed.after < f.removed.before - 0.1, "{kind}: {f:?}");
            // The removed edges fall relative to the edges that stay.
            assert!(f.removed.after - f.remaining.after < f.removed.before - f.remaining.before, "{kind}: {f:?}");
            let (again, _) = gradient_ascent(&ckpt, &req, &cfg, &mut Silent).unwrap();
            assert_eq!(again.model().base_vec().unwrap(), out.model().base_vec().unwrap());
        }
    }

    #[test]
    fn ascent_is_bounded() {
        // A large weight and many steps: the swapped BPR term saturates instead of diverging.
        let (_, ckpt) = trained(ModelKind::Mf, 5);
        let req = spread_request(&ckpt, 10);
        let cfg = GradientAscentConfig { steps: 300, alpha: 100.0, lr: Some(0.05), ..GradientAscentConfig::default() };
        let (out, _) = gradient_ascent(&ckpt, &req, &cfg, &mut Silent).unwrap();
        assert!(out.model().base_vec().unwrap().iter().all(|x| x.is_finite() && x.abs() < 1e3));
    }
}
