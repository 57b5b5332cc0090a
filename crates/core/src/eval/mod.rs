//! Recommendation accuracy: full-ranking evaluation and top-K recommendation lists.
//!
//! A model is judged by its final embeddings: user `u` scores item `i` with `s(u, i) = e_u · e_i`, all
//! items are ranked (full ranking, no sampled negatives), and the user's **current** training items are
//! excluded from the ranking — after unlearning, that is the remaining history: forgotten edges are not
//! masked (docs/method.md §9). Only users with at least one held-out item are evaluated, and the per-user values
//! are averaged. With `R_u` the top-K list (rank `r` from 0) and `T_u` the held-out items:
//!
//! * `recall@K` = `#(R_u ∩ T_u) / #T_u` (or `/ min(#T_u, K)`, see [`RecallDenominator`]);
//! * `ndcg@K` = `Σ_{r: R_u[r] ∈ T_u} 1/log2(r+2)` ÷ `Σ_{r < min(#T_u, K)} 1/log2(r+2)`;
//! * `precision@K` = `#(R_u ∩ T_u) / K`;
//! * `hit@K` = `1[#(R_u ∩ T_u) > 0]`;
//! * `mrr@K` = `1 / (r₁ + 1)` for the first hit rank `r₁ < K`, else 0.
//!
//! The reference computes Recall@20 and NDCG@20 with the `|T_u|` denominator; those are the defaults here
//! too, next to K = 10 and 50.
//!
//! * [`evaluate_ranking`] / [`evaluate_ranking_per_user`]: the averages (and per-user values) as a
//!   [`RankingReport`];
//! * [`recommend`]: top-K lists for a batch of users as a [`TopK`];
//! * [`top_k`] / [`top_k_into`]: partial selection over one score row.
//!
//! Scoring never materialises the `n_users × n_items` matrix: users go in blocks of
//! [`EvalConfig::chunk_users`], items in tiles of [`ITEM_TILE`], each tile a GEMM (the `gemm` crate) into a per-thread
//! buffer that is scanned at once by a threshold test feeding a sorted best-K array per user. The GEMM
//! selects a few items past K; those within its rounding bound of the K-th are re-scored exactly (f64) and
//! ranked by the exact scores, so a user's list and scores are the same whatever the block, the thread
//! count or the entry point (`eval`, `recommend`, the service, Python).
//! Gowalla-sized full evaluation (29,858 × 40,981, dim 64, K ≤ 50) takes about 2.2 s on one core
//! (about two thirds of it the GEMM, near the core's peak), so about 1.1–1.2 s on two idle cores; the
//! `timing_full_eval` test (ignored by default) measures it.
//!
//! ```
//! use unlearnrec_core::eval::{EvalConfig, evaluate_ranking, recommend};
//! use unlearnrec_core::graph::Csr;
//!
//! // 2 users, 3 items, dim 2.
//! let users = [1.0, 0.0, 0.0, 1.0];
//! let items = [0.9, 0.1, 0.5, 0.5, 0.1, 0.9];
//! let seen = Csr::new(3, vec![0, 1, 1], vec![0]); // user 0 has seen item 0
//! let truth = Csr::new(3, vec![0, 1, 2], vec![1, 2]); // held out: user 0 → 1, user 1 → 2
//! let config = EvalConfig { ks: vec![1], ..Default::default() };
//! let report = evaluate_ranking(&users, &items, 2, &seen, &truth, &config).unwrap();
//! assert_eq!(report.get("recall", 1), Some(1.0));
//!
//! let top = recommend(&[0, 1], &users, &items, 2, Some(&seen), &[], 2).unwrap();
//! assert_eq!(top.row(0).0, &[1, 2]);
//! assert_eq!(top.row(1).0, &[2, 1]);
//! ```

pub mod audit;
mod metric;
pub(crate) mod ranking;
mod topk;

use serde::{Deserialize, Serialize};

pub use metric::{Metric, MetricKey, MetricLookup, Metrics};
pub use ranking::{
    DEFAULT_CHUNK_USERS, ITEM_TILE, METRIC_NAMES, PerUserMetrics, RankingReport, RecallDenominator, evaluate_ranking,
    evaluate_ranking_per_user, recommend,
};
pub use topk::{TopK, top_k, top_k_into};

use crate::{Error, Result};

/// Settings of [`evaluate_ranking`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// The cut-offs K, each `>= 1`, without repeats. Default `[10, 20, 50]`.
    pub ks: Vec<usize>,
    /// The Recall@K denominator. Default [`RecallDenominator::All`] (`|T_u|`, as the reference).
    pub recall_denominator: RecallDenominator,
    /// Users per block: the rows of one GEMM and one rayon task. Does not change the result (near-ties
    /// that the GEMM's rounding would order differently are re-ranked by exact scores). Default
    /// [`DEFAULT_CHUNK_USERS`].
    pub chunk_users: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self { ks: vec![10, 20, 50], recall_denominator: RecallDenominator::All, chunk_users: DEFAULT_CHUNK_USERS }
    }
}

impl EvalConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `ks` is empty, has a 0 or a repeat, or `chunk_users` is 0.
    pub fn validate(&self) -> Result<()> {
        if self.ks.is_empty() {
            return Err(Error::config("ks", "needs at least one cut-off"));
        }
        if self.ks.contains(&0) {
            return Err(Error::config("ks", "cut-offs must be at least 1"));
        }
        let mut sorted = self.ks.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::config("ks", "cut-offs must not repeat"));
        }
        if self.chunk_users == 0 {
            return Err(Error::config("chunk_users", "must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_round_trips() {
        let c = EvalConfig::default();
        c.validate().unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<EvalConfig>(&json).unwrap(), c);
        let partial: EvalConfig = serde_json::from_str(r#"{"recall_denominator":"min_k"}"#).unwrap();
        assert_eq!(partial.recall_denominator, RecallDenominator::MinK);
        assert_eq!(partial.ks, vec![10, 20, 50]);
        assert!(serde_json::from_str::<EvalConfig>(r#"{"k":3}"#).is_err());
    }

    #[test]
    fn validate_rejects_bad_settings() {
        let bad = |c: EvalConfig| matches!(c.validate(), Err(Error::InvalidConfig { .. }));
        assert!(bad(EvalConfig { ks: vec![], ..Default::default() }));
        assert!(bad(EvalConfig { ks: vec![5, 0], ..Default::default() }));
        assert!(bad(EvalConfig { ks: vec![5, 10, 5], ..Default::default() }));
        assert!(bad(EvalConfig { chunk_users: 0, ..Default::default() }));
        assert!(EvalConfig { ks: vec![1], ..Default::default() }.validate().is_ok());
    }
}
