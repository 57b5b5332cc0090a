//! Baseline unlearning methods that UnlearnRec is compared with. Each takes a [`Checkpoint`] and a request
//! (internal ids, checked with [`check_request`]) and returns the unlearned checkpoint and an
//! [`UnlearnReport`], like [`super::retrain`]:
//!
//! | method | module | what changes | guarantee |
//! |---|---|---|---|
//! | [`retrain`](super::method::MethodId::RETRAIN) | [`super::retrain`] | everything, from scratch | exact |
//! | [`finetune`](finetune::METHOD) | [`finetune`](mod@finetune) | `E⁰`, a few epochs on the remaining data | none (isolates the encoder) |
//! | [`gradient-ascent`](gradient_ascent::METHOD) | [`gradient_ascent`](mod@gradient_ascent) | `E⁰`, NegGrad+ steps | none; removed scores fall |
//! | [`influence`](influence::METHOD) | [`influence`](mod@influence) | rows of `E⁰` near the request, one Newton step | exact for a quadratic loss |
//! | [`sisa`](sisa::METHOD) | [`sisa`](mod@sisa) | the shards that held removed edges, retrained | exact for the sharded model |
//!
//! The result's graph is always the remaining graph (so `eval`, `recommend` and `export` treat forgotten
//! items as unseen), its validation edges lose the request, and the report's forgetting figures compare
//! the final embeddings before (original graph) and after (remaining graph).
//!
//! ```
//! use unlearnrec_core::data::Interactions;
//! use unlearnrec_core::data::synthetic::{SynthConfig, generate};
//! use unlearnrec_core::model::{ModelConfig, ModelKind};
//! use unlearnrec_core::train::{Silent, TrainConfig};
//! use unlearnrec_core::unlearn::baselines::gradient_ascent::{GradientAscentConfig, gradient_ascent};
//!
//! let ds = generate(&SynthConfig { users: 40, items: 30, interactions: 500, ..Default::default() }).unwrap();
//! let model = ModelConfig { kind: ModelKind::Mf, dim: 8, ..ModelConfig::default() };
//! let train = TrainConfig { epochs: 2, batch_size: 128, lr: 1e-2, ..TrainConfig::default() };
//! let (ckpt, _) = unlearnrec_core::pipeline::train(&ds, &model, &train, &mut Silent).unwrap();
//! let request = Interactions::from_pairs(ckpt.edges().iter().take(5).collect()).0;
//! let cfg = GradientAscentConfig { steps: 5, ..GradientAscentConfig::default() };
//! let (out, report) = gradient_ascent(&ckpt, &request, &cfg, &mut Silent).unwrap();
//! assert!(request.iter().all(|(u, i)| !out.edges().contains(u, i)));
//! assert!(report.phase_secs.contains_key("ascent"));
//! ```

use std::collections::HashMap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{MethodId, UnlearnReport, check_request, finish, forgetting_report, request_seed, touched, valid_metrics};
use crate::checkpoint::Checkpoint;
use crate::data::Interactions;
use crate::error::{Error, Result};
use crate::eval::MetricKey;
use crate::graph::{Csr, Graph, NormAdj};
use crate::model::Backbone;
use crate::tensor::SpMat;

pub mod finetune;
pub mod gradient_ascent;
pub mod influence;
pub mod sisa;

pub use finetune::{FinetuneOnlyConfig, finetune};
pub use gradient_ascent::{GradientAscentConfig, gradient_ascent};
pub use influence::{InfluenceConfig, influence};
pub use sisa::{Partition, ShardConfig, ShardSet, ShardedCheckpoint, Sisa, sisa, train_sharded};

/// A checked request and the graphs around it.
pub(crate) struct Prepared {
    /// The request as given (training and validation edges).
    pub request: Interactions,
    /// The part of the request that is in the training graph.
    pub learned: Interactions,
    /// The training graph before.
    pub graph: Graph,
    /// `Â` of `graph`.
    pub adj: SpMat,
    /// The training graph without the request.
    pub remaining: Graph,
    /// `Â` of `remaining`.
    pub adj_remaining: SpMat,
    /// The validation edges without the request.
    pub valid: Interactions,
    /// `valid` as a users × items pattern.
    pub valid_csr: Csr,
}

impl Prepared {
    /// Checks `request` against `ckpt` and builds both graphs.
    pub fn new(ckpt: &Checkpoint, request: &Interactions) -> Result<Self> {
        let learned = check_request(ckpt, request)?;
        let graph = ckpt.train_graph();
        let adj = SpMat::from_norm_adj(&NormAdj::from_graph(&graph));
        let remaining = graph.remove(&learned);
        let adj_remaining = SpMat::from_norm_adj(&NormAdj::from_graph(&remaining));
        let valid = super::remaining_valid(ckpt, request);
        let valid_csr = Graph::from_interactions(graph.n_users(), graph.n_items(), &valid).user_items().clone();
        Ok(Self { request: request.clone(), learned, graph, adj, remaining, adj_remaining, valid, valid_csr })
    }

    /// The report of `method` turning `before` (on the original graph) into `after` (on the remaining one);
    /// its forgetting figures are drawn from [`request_seed`], like every method's.
    pub fn report(
        &self,
        method: MethodId,
        before: &Backbone,
        after: &Backbone,
        phase_secs: HashMap<String, f64>,
        mut valid_recall: Vec<f64>,
    ) -> Result<UnlearnReport> {
        let forgetting = forgetting_report(
            &before.final_embeddings(&self.adj)?,
            &after.final_embeddings(&self.adj_remaining)?,
            &self.graph,
            &self.learned,
            request_seed(&self.learned),
        );
        let valid = valid_metrics(after, &self.adj_remaining, &self.remaining, &self.valid_csr)?;
        if valid_recall.is_empty() {
            valid_recall.push(valid.require(MetricKey::RECALL_20)?);
        }
        let (users, items) = touched(&self.request);
        Ok(UnlearnReport {
            method,
            edges: self.request.len(),
            users,
            items,
            phase_secs,
            solver_residual: None,
            valid_recall,
            forgetting,
            valid,
        })
    }

    /// The unlearned checkpoint holding `model`, with `method` recorded in its provenance.
    ///
    /// # Errors
    /// A model that does not fit the checkpoint.
    pub fn finish(&self, ckpt: &Checkpoint, model: Backbone, method: MethodId) -> Result<Checkpoint> {
        finish(ckpt, model, &self.request, &self.remaining, method)
    }
}

/// Refuses a model that learns no embeddings (most-popular): there is nothing to update.
pub(crate) fn require_embeddings(ckpt: &Checkpoint, method: &str) -> Result<()> {
    if !ckpt.model().architecture().learns_embeddings() {
        return Err(Error::config(
            "model",
            format!("{method} needs a model with embeddings; {} has none (use retrain)", ckpt.model().kind()),
        ));
    }
    Ok(())
}

/// An independent copy of a model (a [`Backbone`] clone shares its parameter storage).
pub(crate) fn deep_copy(model: &Backbone) -> Result<Backbone> {
    Backbone::from_embeddings(model.config.clone(), model.n_users(), model.n_items(), model.base_vec()?)
}

/// One negative item per `(user, item)` pair, uniform among the items the user has no edge with in `seen`
/// (rejection, then a scan for very dense users). A user with every item gets the pair's own item.
pub(crate) fn negatives(seen: &Csr, pairs: &[(u32, u32)], rng: &mut ChaCha8Rng) -> Vec<u32> {
    let n_items = seen.n_cols() as u32;
    pairs
        .iter()
        .map(|&(u, i)| {
            let row = seen.row(u as usize);
            if row.len() >= n_items as usize {
                return i;
            }
            for _ in 0..64 {
                let j = rng.random_range(0..n_items);
                if row.binary_search(&j).is_err() {
                    return j;
                }
            }
            let start = rng.random_range(0..n_items);
            (0..n_items).map(|k| (start + k) % n_items).find(|j| row.binary_search(j).is_err()).unwrap_or(i)
        })
        .collect()
}
