//! The unlearning audit: one [`AuditReport`] of a model against a request, gathering the
//! [`crate::eval::audit`] metrics (ranks of the removed items, membership inference, agreement with a
//! reference) and, when the model before unlearning is at hand, the [`ForgettingReport`].
//!
//! [`audit_checkpoints`] is the entry point of `unlearnrec audit`; [`audit`] does the same from embeddings
//! and edge sets. The audited model may be unlearned (the request is in its `removed` edges) or not (the
//! request is still in its graph, the baseline of how much it remembers): either way the request is
//! dropped from its seen items and its training graph before anything is measured.
//!
//! ```
//! use unlearnrec_core::data::synthetic::{SynthConfig, generate};
//! use unlearnrec_core::graph::Graph;
//! use unlearnrec_core::model::{ModelConfig, ModelKind};
//! use unlearnrec_core::pipeline;
//! use unlearnrec_core::train::{Silent, TrainConfig};
//! use unlearnrec_core::unlearn::audit::{AuditConfig, audit_checkpoints};
//! use unlearnrec_core::unlearn::protocol::{Protocol, make_request};
//!
//! let ds = generate(&SynthConfig { users: 60, items: 40, interactions: 900, ..Default::default() }).unwrap();
//! let model = ModelConfig { kind: ModelKind::Mf, dim: 8, ..Default::default() };
//! let train = TrainConfig { epochs: 1, ..Default::default() };
//! let (ckpt, _) = pipeline::train(&ds, &model, &train, &mut Silent).unwrap();
//! let request = make_request(&ckpt.train_graph(), Protocol::Users, 0.05, 1).unwrap();
//! let report = audit_checkpoints(&ckpt, &request, &ds.test, None, None, &AuditConfig::default()).unwrap();
//! assert_eq!(report.rank.count, request.len());
//! assert!((0.0..=1.0).contains(&report.mia.auc));
//! ```

use serde::{Deserialize, Serialize};

use super::forgetting::{ForgettingReport, forgetting_report};
use crate::checkpoint::Checkpoint;
use crate::data::Interactions;
use crate::error::{Error, Result};
use crate::eval::audit::{
    AgreementReport, AgreementUsers, AttackConfig, AuditData, DEFAULT_K, MiaReport, RankReport, agreement,
    agreement_users, membership_inference, rank_report,
};
use crate::graph::Graph;
use crate::model::Embeddings;

/// Settings of an audit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// The top-K cut-off of the rank and agreement figures. Default [`DEFAULT_K`] (20).
    pub k: usize,
    /// Seed of the attacker's samples and the agreement users' sample. Default 0. (The forgetting figures'
    /// non-edge sample is seeded by the request itself, as in every method's report.)
    pub seed: u64,
    /// The membership attacker.
    pub attack: AttackConfig,
    /// Users compared with the reference. Default: those with a removed edge.
    pub agreement_users: AgreementUsers,
    /// A seeded sample of at most this many of them (all when `None`, the default).
    pub max_agreement_users: Option<usize>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            k: DEFAULT_K,
            seed: 0,
            attack: AttackConfig::default(),
            agreement_users: AgreementUsers::Removed,
            max_agreement_users: None,
        }
    }
}

impl AuditConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for `k = 0`, `max_agreement_users = Some(0)` or bad attacker settings.
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 {
            return Err(Error::config("audit.k", "must be at least 1"));
        }
        if self.max_agreement_users == Some(0) {
            return Err(Error::config("audit.max_agreement_users", "must be at least 1"));
        }
        self.attack.validate()
    }
}

/// The reference model's own figures and its agreement with the audited model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReferenceReport {
    /// Ranks of the removed items under the reference.
    pub rank: RankReport,
    /// An attacker trained on the reference's own features.
    pub mia: MiaReport,
    /// Agreement of the audited model with the reference (the audited model's seen items masked).
    pub agreement: AgreementReport,
    /// Over which users the agreement was measured, in words. Erased users (every edge removed) are left
    /// out: both models score them from an untrained embedding, so their top-K lists mean nothing; when
    /// every user of the request was erased, the agreement is measured over every other user instead.
    #[serde(default)]
    pub agreement_over: String,
}

/// Everything an audit measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    /// Removed edges audited.
    pub removed: usize,
    /// Distinct users among them.
    pub users: usize,
    /// Distinct items among them.
    pub items: usize,
    /// Ranks of the removed items under the audited model.
    pub rank: RankReport,
    /// Membership inference against the audited model.
    pub mia: MiaReport,
    /// Scores before and after, when the model before unlearning was given.
    pub forgetting: Option<ForgettingReport>,
    /// Figures of the reference model, when one was given.
    pub reference: Option<ReferenceReport>,
}

/// One model to audit: its final embeddings and edge sets.
#[derive(Clone, Copy, Debug)]
pub struct AuditedModel<'a> {
    /// Final embeddings.
    pub embeddings: &'a Embeddings,
    /// Its seen items, remaining graph, held-out and removed edges.
    pub data: AuditData<'a>,
}

/// The model before unlearning, for the [`ForgettingReport`].
#[derive(Clone, Copy, Debug)]
pub struct OriginalModel<'a> {
    /// Final embeddings before unlearning.
    pub embeddings: &'a Embeddings,
    /// The graph before unlearning (non-edges are sampled outside it).
    pub graph: &'a Graph,
}

/// Audits `model` on its removed edges (`model.data.removed`): [`rank_report`] and
/// [`membership_inference`]; with `original`, the [`forgetting_report`] of original → model; with
/// `reference`, the reference's own rank and attacker figures and its [`agreement`] with the model.
///
/// # Errors
/// [`Error::InvalidConfig`] for bad settings; [`Error::InvalidRequest`] for an empty request; the errors
/// of the metrics (mismatched shapes, ids out of range, too few held-out edges for the attacker).
pub fn audit(
    model: &AuditedModel<'_>,
    original: Option<&OriginalModel<'_>>,
    reference: Option<&AuditedModel<'_>>,
    cfg: &AuditConfig,
) -> Result<AuditReport> {
    cfg.validate()?;
    let removed = model.data.removed;
    if removed.is_empty() {
        return Err(Error::InvalidRequest("the request is empty".into()));
    }
    let pairs: Vec<(u32, u32)> = removed.iter().collect();
    let rank = rank_report(model.embeddings, model.data.seen, &pairs, cfg.k)?;
    let orig_emb = original.map(|o| o.embeddings);
    let mia = membership_inference(model.embeddings, orig_emb, &model.data, &cfg.attack, cfg.seed)?;
    // The forgetting figures are those `unlearn` reports: over the request's training edges (a user's
    // validation edges were never trained on), with the same per-request non-edge sample.
    let forgetting = original.map(|o| {
        let (learned, _) =
            crate::data::Interactions::from_pairs(removed.iter().filter(|&(u, i)| o.graph.contains(u, i)).collect());
        forgetting_report(o.embeddings, model.embeddings, o.graph, &learned, super::forgetting::request_seed(&learned))
    });
    let reference = match reference {
        None => None,
        Some(r) => {
            let n_users = model.data.remaining.n_users();
            let remaining = model.data.remaining.user_items();
            let kept = |u: &u32| !remaining.row(*u as usize).is_empty();
            let mut users = agreement_users(n_users, removed, cfg.agreement_users, cfg.max_agreement_users, cfg.seed);
            let before = users.len();
            users.retain(kept);
            let erased = before - users.len();
            let agreement_over = match cfg.agreement_users {
                AgreementUsers::All => format!("every user ({erased} erased left out)"),
                AgreementUsers::Removed if users.is_empty() => {
                    users = agreement_users(n_users, removed, AgreementUsers::All, cfg.max_agreement_users, cfg.seed);
                    users.retain(kept);
                    format!("every user still served (all {erased} users of the request were erased)")
                }
                AgreementUsers::Removed if erased > 0 => {
                    format!("users with removed edges ({erased} erased left out)")
                }
                AgreementUsers::Removed => "users with removed edges".to_string(),
            };
            Some(ReferenceReport {
                rank: rank_report(r.embeddings, r.data.seen, &pairs, cfg.k)?,
                mia: membership_inference(r.embeddings, orig_emb, &r.data, &cfg.attack, cfg.seed)?,
                agreement: agreement(model.embeddings, r.embeddings, model.data.seen, &users, cfg.k)?,
                agreement_over,
            })
        }
    };
    let distinct = |v: &[u32]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v.dedup();
        v.len()
    };
    Ok(AuditReport {
        removed: removed.len(),
        users: distinct(removed.users()),
        items: distinct(removed.items()),
        rank,
        mia,
        forgetting,
        reference,
    })
}

/// A checkpoint's audit sets for a request: seen = (graph ∪ valid) ∖ request, remaining = graph ∖ request.
struct Sets {
    emb: Embeddings,
    seen: Graph,
    remaining: Graph,
}

impl Sets {
    fn of(ckpt: &Checkpoint, request: &Interactions) -> Result<Self> {
        let (nu, ni) = (ckpt.model().n_users(), ckpt.model().n_items());
        let seen = Graph::from_interactions(nu, ni, &ckpt.seen().difference(request).0);
        let remaining = Graph::from_interactions(nu, ni, &ckpt.edges().difference(request).0);
        Ok(Self { emb: ckpt.final_embeddings()?, seen, remaining })
    }

    fn model<'a>(&'a self, held_out: &'a Interactions, removed: &'a Interactions) -> AuditedModel<'a> {
        AuditedModel {
            embeddings: &self.emb,
            data: AuditData { seen: self.seen.user_items(), remaining: &self.remaining, held_out, removed },
        }
    }
}

/// Refuses a checkpoint made from another dataset than `model`'s.
fn check_same_dataset(model: &Checkpoint, other: &Checkpoint, what: &str) -> Result<()> {
    let (a, b) = (&model.meta().dataset, &other.meta().dataset);
    if a.fingerprint != b.fingerprint || a.n_users != b.n_users || a.n_items != b.n_items {
        return Err(Error::CheckpointMismatch {
            expected: format!(
                "a {what} checkpoint of the audited model's dataset {:?} ({} users, {} items, fingerprint {})",
                a.name, a.n_users, a.n_items, a.fingerprint
            ),
            found: format!(
                "one trained on {:?} ({} users, {} items, fingerprint {})",
                b.name, b.n_users, b.n_items, b.fingerprint
            ),
        });
    }
    Ok(())
}

/// The training edges a checkpoint's lineage started from: its graph, validation and removed edges.
fn universe(c: &Checkpoint) -> Interactions {
    crate::pipeline::union(&crate::pipeline::union(c.edges(), c.valid()), c.removed())
}

/// Refuses an `original` that is not an ancestor of `model`: another backbone, other training edges
/// before unlearning, or edges removed from it that `model` has not removed.
fn check_parent(model: &Checkpoint, original: &Checkpoint) -> Result<()> {
    let (m, o) = (model.model(), original.model());
    let mismatch = |why: String| Error::CheckpointMismatch {
        expected: "an original checkpoint that the audited model was unlearned from".into(),
        found: why,
    };
    if m.kind() != o.kind() || m.dim() != o.dim() {
        return Err(mismatch(format!("a {} (d={}) for a {} (d={}) model", o.kind(), o.dim(), m.kind(), m.dim())));
    }
    if universe(model) != universe(original) {
        return Err(mismatch("one trained on other interactions than the audited model's before unlearning".into()));
    }
    if let Some((u, i)) = original.removed().iter().find(|&(u, i)| !model.removed().contains(u, i)) {
        return Err(mismatch(format!(
            "one that had already forgotten ({}, {}), which the audited model has not",
            model.users().external(u),
            model.items().external(i)
        )));
    }
    Ok(())
}

/// [`audit`] of checkpoint `model` on `request` (internal ids), with `held_out` (the dataset's test split)
/// as the attacker's non-members; `reference` (e.g. the model retrained without the request) and
/// `original` (the model before unlearning) are optional. Each checkpoint's seen items and training graph
/// lose the request first.
///
/// # Errors
/// [`Error::CheckpointMismatch`] when `reference` or `original` come from another dataset, or `original`
/// is not an ancestor of `model` (another backbone or other training edges);
/// [`Error::IdOutOfRange`] for request ids outside the model; the errors of [`audit`].
pub fn audit_checkpoints(
    model: &Checkpoint,
    request: &Interactions,
    held_out: &Interactions,
    reference: Option<&Checkpoint>,
    original: Option<&Checkpoint>,
    cfg: &AuditConfig,
) -> Result<AuditReport> {
    cfg.validate()?;
    for (other, what) in reference.map(|r| (r, "reference")).into_iter().chain(original.map(|o| (o, "original"))) {
        check_same_dataset(model, other, what)?;
    }
    if let Some(o) = original {
        check_parent(model, o)?;
    }
    let (nu, ni) = request.id_bounds();
    if nu > model.model().n_users() || ni > model.model().n_items() {
        return Err(if nu > model.model().n_users() {
            Error::IdOutOfRange { kind: "user", id: nu as u64 - 1, n: model.model().n_users() }
        } else {
            Error::IdOutOfRange { kind: "item", id: ni as u64 - 1, n: model.model().n_items() }
        });
    }
    let sets = Sets::of(model, request)?;
    let ref_sets = reference.map(|r| Sets::of(r, request)).transpose()?;
    let orig = original.map(|o| -> Result<_> { Ok((o.final_embeddings()?, o.train_graph())) }).transpose()?;
    let orig_model = orig.as_ref().map(|(e, g)| OriginalModel { embeddings: e, graph: g });
    let ref_model = ref_sets.as_ref().map(|s| s.model(held_out, request));
    audit(&sets.model(held_out, request), orig_model.as_ref(), ref_model.as_ref(), cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::{SynthConfig, generate};
    use crate::model::{ModelConfig, ModelKind};
    use crate::pipeline;
    use crate::train::{Silent, TrainConfig};
    use crate::unlearn::protocol::{Protocol, make_request};

    fn trained(seed: u64) -> (crate::data::Dataset, Checkpoint) {
        let ds = generate(&SynthConfig { users: 80, items: 60, interactions: 1600, ..Default::default() }).unwrap();
        let model = ModelConfig { kind: ModelKind::Mf, dim: 8, ..Default::default() };
        let train = TrainConfig { epochs: 2, seed, ..Default::default() };
        let (ckpt, _) = pipeline::train(&ds, &model, &train, &mut Silent).unwrap();
        (ds, ckpt)
    }

    #[test]
    fn audit_of_a_model_against_itself_and_a_reference() {
        let (ds, ckpt) = trained(1);
        let (_, other) = trained(2);
        let request = make_request(&ckpt.train_graph(), Protocol::Random, 0.05, 3).unwrap();
        let cfg = AuditConfig::default();
        let r = audit_checkpoints(&ckpt, &request, &ds.test, Some(&ckpt), Some(&ckpt), &cfg).unwrap();
        assert_eq!(r.removed, request.len());
        assert_eq!(r.rank.count, request.len());
        let reference = r.reference.as_ref().unwrap();
        assert_eq!(reference.agreement.top_k_overlap, 1.0);
        assert_eq!(reference.agreement.kl, 0.0);
        assert_eq!(reference.rank, r.rank);
        assert_eq!(reference.mia, r.mia);
        let f = r.forgetting.as_ref().unwrap();
        assert_eq!(f.removed.before, f.removed.after);
        // Deterministic, and JSON round-trips.
        assert_eq!(r, audit_checkpoints(&ckpt, &request, &ds.test, Some(&ckpt), Some(&ckpt), &cfg).unwrap());
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<AuditReport>(&json).unwrap(), r);
        // Another model: the agreement is imperfect.
        let r2 = audit_checkpoints(&ckpt, &request, &ds.test, Some(&other), None, &cfg).unwrap();
        let a = &r2.reference.unwrap().agreement;
        assert!(a.top_k_overlap < 1.0 && a.kl > 0.0, "{a:?}");
        assert!(r2.forgetting.is_none());
    }

    #[test]
    fn an_original_that_is_not_the_audited_models_parent_is_refused() {
        let (ds, ckpt) = trained(1);
        let request = make_request(&ckpt.train_graph(), Protocol::Random, 0.05, 3).unwrap();
        let other = make_request(&ckpt.train_graph(), Protocol::Random, 0.05, 4).unwrap().difference(&request).0;
        let (unlearned, _) = crate::unlearn::retrain(&ckpt, &request, &mut Silent).unwrap();
        let cfg = AuditConfig::default();
        // The parent is accepted, and so is the model itself (nothing removed since).
        audit_checkpoints(&unlearned, &request, &ds.test, None, Some(&ckpt), &cfg).unwrap();
        audit_checkpoints(&unlearned, &request, &ds.test, None, Some(&unlearned), &cfg).unwrap();
        // A sibling that forgot other edges.
        let (sibling, _) = crate::unlearn::retrain(&ckpt, &other, &mut Silent).unwrap();
        let err = audit_checkpoints(&unlearned, &request, &ds.test, None, Some(&sibling), &cfg).unwrap_err();
        assert!(
            matches!(err, Error::CheckpointMismatch { .. }) && err.to_string().contains("already forgotten"),
            "{err}"
        );
        // Another backbone on the same data.
        let lg = ModelConfig { kind: ModelKind::LightGcn, dim: 8, ..Default::default() };
        let (other_kind, _) =
            pipeline::train(&ds, &lg, &TrainConfig { epochs: 1, seed: 1, ..Default::default() }, &mut Silent).unwrap();
        let err = audit_checkpoints(&unlearned, &request, &ds.test, None, Some(&other_kind), &cfg).unwrap_err();
        assert!(err.to_string().contains("lightgcn"), "{err}");
    }

    #[test]
    fn a_reference_of_another_dataset_is_refused() {
        let (ds, ckpt) = trained(1);
        let other_ds =
            generate(&SynthConfig { users: 80, items: 60, interactions: 1500, ..Default::default() }).unwrap();
        let model = ModelConfig { kind: ModelKind::Mf, dim: 8, ..Default::default() };
        let train = TrainConfig { epochs: 1, ..Default::default() };
        let (other, _) = pipeline::train(&other_ds, &model, &train, &mut Silent).unwrap();
        let request = make_request(&ckpt.train_graph(), Protocol::Random, 0.05, 3).unwrap();
        let err =
            audit_checkpoints(&ckpt, &request, &ds.test, Some(&other), None, &AuditConfig::default()).unwrap_err();
        assert!(matches!(err, Error::CheckpointMismatch { .. }), "{err}");
        assert!(err.to_string().contains("reference"), "{err}");
        let empty = audit_checkpoints(&ckpt, &Interactions::default(), &ds.test, None, None, &AuditConfig::default());
        assert!(matches!(empty, Err(Error::InvalidRequest(_))));
    }
}
