//! Receipts: a JSON record proving what was forgotten, how and with what effect.

use serde::{Deserialize, Serialize};

use crate::data::{IdMap, Interactions};
use crate::io::sha256_hex;
use crate::unlearn::{ForgettingReport, MethodId, UnlearnReport};

/// A receipt of one unlearning request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// The request's id ([`crate::unlearn::request::Request::id`]: the first 16 hex digits of the SHA-256 of
    /// the canonical request as asked), which the service's ledger and `GET /v1/forget/{id}` use too.
    pub request_id: String,
    /// UTC time, RFC 3339.
    pub utc: String,
    /// The method.
    pub method: MethodId,
    /// Removed interactions: `train_edges + valid_edges`.
    pub edges: usize,
    /// Of them, training edges: the ones the model learned from, over which `forgetting` is measured
    /// (`forgetting.n`).
    #[serde(default)]
    pub train_edges: usize,
    /// Of them, validation edges: held out of training, removed so that they no longer select models.
    #[serde(default)]
    pub valid_edges: usize,
    /// Distinct users touched.
    pub users: usize,
    /// Distinct items touched.
    pub items: usize,
    /// SHA-256 of the canonical list of removed pairs: `user\titem\n` lines of external ids, sorted
    /// byte-wise.
    pub request_sha256: String,
    /// SHA-256 of the checkpoint file before ([`crate::io::sha256_hex`] of its bytes, as the service's
    /// ledger records it).
    pub checkpoint_before_sha256: String,
    /// SHA-256 of the checkpoint file after.
    pub checkpoint_after_sha256: String,
    /// Seconds per phase.
    pub phase_secs: std::collections::HashMap<String, f64>,
    /// Relative residual of the influence method's linear solve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solver_residual: Option<f64>,
    /// Forgetting figures.
    pub forgetting: ForgettingReport,
    /// Validation Recall@20 / NDCG@20 after unlearning.
    pub valid: crate::eval::Metrics,
}

/// The canonical form of a request: `user\titem\n` lines in external ids, sorted byte-wise.
pub fn canonical_request(req: &Interactions, users: &IdMap, items: &IdMap) -> String {
    let mut lines: Vec<String> =
        req.iter().map(|(u, i)| format!("{}\t{}\n", users.external(u), items.external(i))).collect();
    lines.sort_unstable();
    lines.concat()
}

/// Seconds since the epoch as RFC 3339 UTC (`YYYY-MM-DDTHH:MM:SSZ`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Builds the receipt of an applied request: `request_id` is the id of the request as asked
/// ([`crate::unlearn::request::Request::id`]), `req` what it removed, `before` and `after` the bytes of the
/// checkpoint files.
pub fn build(
    request_id: &str,
    req: &Interactions,
    users: &IdMap,
    items: &IdMap,
    report: &UnlearnReport,
    before: &[u8],
    after: &[u8],
) -> Receipt {
    let sha = sha256_hex(canonical_request(req, users, items).as_bytes());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Receipt {
        request_id: request_id.to_string(),
        utc: rfc3339(now),
        method: report.method,
        edges: report.edges,
        train_edges: report.forgetting.n,
        valid_edges: report.edges.saturating_sub(report.forgetting.n),
        users: report.users,
        items: report.items,
        request_sha256: sha,
        checkpoint_before_sha256: sha256_hex(before),
        checkpoint_after_sha256: sha256_hex(after),
        phase_secs: report.phase_secs.clone(),
        solver_residual: report.solver_residual,
        forgetting: report.forgetting.clone(),
        valid: report.valid.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_708_799), "2026-11-26T15:59:59Z");
    }

    #[test]
    fn canonical_request_is_order_independent() {
        let users = IdMap::from_ids(vec!["b".into(), "a".into()]).unwrap();
        let items = IdMap::from_ids(vec!["x".into(), "y".into()]).unwrap();
        let (r, _) = Interactions::from_pairs(vec![(0, 1), (1, 0)]);
        assert_eq!(canonical_request(&r, &users, &items), "a\tx\nb\ty\n");
    }
}
