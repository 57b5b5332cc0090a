//! Fine-tuning only: the backbone continues training on the remaining data, without the influence encoder.
//!
//! This is UnlearnRec's second stage alone (Chen, Xia, Huang, SIGIR 2025, ablation "w/o encoder"), so the
//! two together isolate what the encoder contributes. The backbone's own loss (BPR, its regulariser and its
//! contrastive term) is minimised with Adam at the checkpoint's learning rate and batch size over the
//! remaining graph, whose negatives may now be the forgotten items; the epoch with the best validation
//! Recall@20 is kept. It guarantees nothing about the removed edges: it forgets only as far as further
//! training on other data overwrites them.

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Prepared, deep_copy, require_embeddings};
use crate::checkpoint::Checkpoint;
use crate::data::Interactions;
use crate::error::{Error, Result};
use crate::eval::MetricKey;
use crate::train::{Observer, TrainConfig, TrainData, fit};
use crate::unlearn::method::{ForgetMethod, MethodOptions, Plain};
use crate::unlearn::{MethodId, UnlearnReport};

/// This method in reports and provenance (its [`METHODS`](crate::unlearn::method::METHODS) entry).
pub const METHOD: MethodId = MethodId::of("finetune");

/// Hyper-parameters of [`finetune`]; learning rate, batch size and step cap come from the checkpoint's
/// training configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FinetuneOnlyConfig {
    /// Epochs over the remaining edges (UnlearnRec's default fine-tuning: 1).
    pub epochs: usize,
    /// Seed of negatives and augmentations.
    pub seed: u64,
}

impl Default for FinetuneOnlyConfig {
    fn default() -> Self {
        Self { epochs: 1, seed: 1234 }
    }
}

impl FinetuneOnlyConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::config("finetune.epochs", "must be at least 1"));
        }
        Ok(())
    }
}

/// Fine-tunes `ckpt`'s backbone on its graph without `request` for `cfg.epochs` epochs (the loop of
/// [`fit`], validating after every epoch and keeping the best one) and returns the result with its report
/// (phases `graph` and `finetune`; `valid_recall` per epoch).
///
/// # Errors
/// An invalid request or configuration, a most-popular model, or a diverged loss.
pub fn finetune(
    ckpt: &Checkpoint,
    request: &Interactions,
    cfg: &FinetuneOnlyConfig,
    obs: &mut dyn Observer,
) -> Result<(Checkpoint, UnlearnReport)> {
    cfg.validate()?;
    require_embeddings(ckpt, "fine-tuning")?;
    let t = Instant::now();
    let prep = Prepared::new(ckpt, request)?;
    let mut phases = HashMap::from([("graph".to_string(), t.elapsed().as_secs_f64())]);
    let t = Instant::now();
    let data =
        TrainData { graph: prep.remaining.clone(), adj: prep.adj_remaining.clone(), valid: prep.valid_csr.clone() };
    let train =
        TrainConfig { epochs: cfg.epochs, eval_every: 1, patience: 0, seed: cfg.seed, ..ckpt.meta().train.clone() };
    let mut model = deep_copy(ckpt.model())?;
    let fit_report = fit(&mut model, &data, &train, obs)?;
    fit_report.require_converged()?;
    phases.insert("finetune".to_string(), t.elapsed().as_secs_f64());
    let recall = fit_report
        .history
        .iter()
        .filter_map(|r| r.valid.as_ref())
        .map(|v| v.require(MetricKey::RECALL_20))
        .collect::<Result<Vec<f64>>>()?;
    let report = prep.report(METHOD, ckpt.model(), &model, phases, recall)?;
    Ok((prep.finish(ckpt, model, METHOD)?, report))
}

/// [`finetune`] with [`MethodOptions::finetune_only`] as a [`ForgetMethod`] (`finetune`).
pub(crate) fn build<'a>(o: &MethodOptions<'a>) -> Result<Box<dyn ForgetMethod + 'a>> {
    Ok(Box::new(Plain { name: METHOD.name(), cfg: o.finetune_only.clone(), run: finetune, epochs: |c, _| c.epochs }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::Dataset;
    use crate::data::synthetic::{SynthConfig, generate};
    use crate::model::{ModelConfig, ModelKind};
    use crate::train::Silent;

    /// A small trained model on synthetic data.
    pub(crate) fn trained(kind: ModelKind, epochs: usize) -> (Dataset, Checkpoint) {
        let ds = generate(&SynthConfig { users: 120, items: 90, interactions: 3000, seed: 5, ..Default::default() })
            .unwrap();
        let model = ModelConfig { kind, dim: 16, layers: 2, reg: 1e-4, ..ModelConfig::default() };
        // Validated at the last epoch only, so the checkpoint is the trained state (not an early one whose
        // scores further training would inflate everywhere).
        let train = TrainConfig { epochs, batch_size: 256, lr: 1e-2, eval_every: epochs, ..TrainConfig::default() };
        let (ckpt, _) = crate::pipeline::train(&ds, &model, &train, &mut Silent).unwrap();
        (ds, ckpt)
    }

    /// Every `k`-th training edge: a random-looking request spread over users and items.
    pub(crate) fn spread_request(ckpt: &Checkpoint, k: usize) -> Interactions {
        Interactions::from_pairs(ckpt.edges().iter().step_by(k).collect()).0
    }

    #[test]
    fn finetune_forgets_the_graph_and_does_not_raise_removed_scores() {
        for kind in [ModelKind::Mf, ModelKind::LightGcn] {
            let (_, ckpt) = trained(kind, 40);
            let req = spread_request(&ckpt, 20);
            let (out, rep) = finetune(&ckpt, &req, &FinetuneOnlyConfig::default(), &mut Silent).unwrap();
            assert!(req.iter().all(|(u, i)| !out.edges().contains(u, i)), "{kind}: request left in the graph");
            assert_eq!(out.edges().len(), ckpt.edges().len() - req.len());
            assert_eq!(out.removed(), &req);
            assert_eq!(rep.method, METHOD);
            assert_eq!(rep.valid_recall.len(), 1);
            assert!(rep.phase_secs.contains_key("finetune"));
            let f = &rep.forgetting;
            eprintln!(
                "{kind}: removed {:.3} -> {:.3}, non-edges {:.3} -> {:.3}",
                f.removed.before, f.removed.after, f.non_edges.before, f.non_edges.after
            );
            assert!(f.removed.after <= f.removed.before, "{kind}: removed-edge score rose: {f:?}");
            // Deterministic for a seed.
            let (again, _) = finetune(&ckpt, &req, &FinetuneOnlyConfig::default(), &mut Silent).unwrap();
            assert_eq!(again.model().base_vec().unwrap(), out.model().base_vec().unwrap());
        }
    }

    #[test]
    fn finetune_refuses_zero_epochs_and_popularity() {
        let (_, ckpt) = trained(ModelKind::Mf, 1);
        let req = spread_request(&ckpt, 50);
        let cfg = FinetuneOnlyConfig { epochs: 0, ..FinetuneOnlyConfig::default() };
        assert!(finetune(&ckpt, &req, &cfg, &mut Silent).is_err());
        let (_, pop) = trained(ModelKind::Pop, 1);
        assert!(finetune(&pop, &req, &FinetuneOnlyConfig::default(), &mut Silent).is_err());
    }
}
