//! Forgetting figures of an unlearning step (docs/method.md §10): scores of the removed edges before and after,
//! against seeded samples of non-edges and of remaining edges, the score gap and the MI-BF / MI-NG ratios.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::Interactions;
use crate::graph::Graph;
use crate::model::Embeddings;

/// Mean score of a set of edges under two models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScorePair {
    /// Mean `e_u·e_i` under the original model.
    pub before: f64,
    /// Mean `e_u·e_i` under the unlearned model.
    pub after: f64,
}

/// The forgetting figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForgettingReport {
    /// Removed edges.
    pub removed: ScorePair,
    /// A seeded sample of as many non-edges (pairs in neither the original graph nor the request).
    pub non_edges: ScorePair,
    /// A seeded sample of as many remaining edges.
    pub remaining: ScorePair,
    /// `mean s_after(non-edges) − mean s_after(removed)`: positive when removed edges now score below random
    /// non-edges (the reference's selection criterion).
    pub gap: f64,
    /// `mean σ(s_before(removed)) / mean σ(s_after(removed))` (> 1: scores fell).
    pub mi_bf: f64,
    /// `mean σ(s_after(non-edges)) / mean σ(s_after(removed))` (> 1: removed edges look like non-edges or
    /// lower).
    pub mi_ng: f64,
    /// Sample size of each set.
    pub n: usize,
}

/// Dot products of (user, item) pairs.
pub fn scores(emb: &Embeddings, pairs: impl Iterator<Item = (u32, u32)>) -> Vec<f64> {
    let d = emb.dim;
    pairs
        .map(|(u, i)| {
            let a = &emb.users[u as usize * d..(u as usize + 1) * d];
            let b = &emb.items[i as usize * d..(i as usize + 1) * d];
            a.iter().zip(b).map(|(x, y)| (*x as f64) * (*y as f64)).sum()
        })
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Seeded sample of `n` uniform (user, item) pairs that are not edges of `graph` and not in `request`.
pub fn sample_non_edges(graph: &Graph, request: &Interactions, n: usize, seed: u64) -> Vec<(u32, u32)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (nu, ni) = (graph.n_users() as u32, graph.n_items() as u32);
    let mut out = Vec::with_capacity(n);
    let mut tries = 0usize;
    while out.len() < n && tries < n * 100 + 1000 {
        tries += 1;
        let (u, i) = (rng.random_range(0..nu), rng.random_range(0..ni));
        if !graph.contains(u, i) && !request.contains(u, i) {
            out.push((u, i));
        }
    }
    out
}

/// The seed of the samples behind the forgetting figures of `request`: a stable 64-bit FNV-1a hash of its
/// pairs (as [`crate::data::Dataset::fingerprint`] hashes a dataset). Every method passes it to
/// [`forgetting_report`], so methods applied to the same request are compared on the same non-edges and
/// remaining edges, whatever their own seeds.
pub fn request_seed(request: &Interactions) -> u64 {
    let mut h = crate::data::stats::Fnv(crate::data::stats::Fnv::OFFSET_BASIS);
    h.word(request.len() as u64);
    for (u, i) in request.iter() {
        h.word((u64::from(u) << 32) | u64::from(i));
    }
    h.0
}

/// The figures for `request`, removed from `original` (the graph before), comparing embeddings `before`
/// and `after`. The non-edge and remaining-edge samples are drawn from `seed`: callers pass
/// [`request_seed`]`(request)`, so that every method applied to one request is measured on one sample
/// (the original model's `non_edges.before` and `remaining.before` are then the same for all).
pub fn forgetting_report(
    before: &Embeddings,
    after: &Embeddings,
    original: &Graph,
    request: &Interactions,
    seed: u64,
) -> ForgettingReport {
    let n = request.len();
    let non = sample_non_edges(original, request, n, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xa5a5);
    let all = original.to_interactions();
    let mut remaining = Vec::with_capacity(n);
    if all.len() > request.len() {
        while remaining.len() < n {
            let k = rng.random_range(0..all.len());
            let (u, i) = (all.users()[k], all.items()[k]);
            if !request.contains(u, i) {
                remaining.push((u, i));
            }
        }
    }
    let pair = |pairs: &[(u32, u32)]| -> (Vec<f64>, Vec<f64>) {
        (scores(before, pairs.iter().copied()), scores(after, pairs.iter().copied()))
    };
    let (rb, ra) = pair(&request.iter().collect::<Vec<_>>());
    let (nb, na) = pair(&non);
    let (kb, ka) = pair(&remaining);
    let sig_mean = |v: &[f64]| mean(&v.iter().map(|&x| sigmoid(x)).collect::<Vec<_>>());
    ForgettingReport {
        removed: ScorePair { before: mean(&rb), after: mean(&ra) },
        non_edges: ScorePair { before: mean(&nb), after: mean(&na) },
        remaining: ScorePair { before: mean(&kb), after: mean(&ka) },
        gap: mean(&na) - mean(&ra),
        mi_bf: sig_mean(&rb) / sig_mean(&ra),
        mi_ng: sig_mean(&na) / sig_mean(&ra),
        n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emb(users: Vec<f32>, items: Vec<f32>) -> Embeddings {
        Embeddings { dim: 1, users, items }
    }

    #[test]
    fn figures_on_a_constructed_case() {
        // 2 users, 3 items; graph edges (0,0), (0,1), (1,1); request (0,0).
        let (g, _) = Interactions::from_pairs(vec![(0, 0), (0, 1), (1, 1)]);
        let graph = Graph::from_interactions(2, 3, &g);
        let (req, _) = Interactions::from_pairs(vec![(0, 0)]);
        let before = emb(vec![1.0, 1.0], vec![3.0, 2.0, 0.0]);
        let after = emb(vec![1.0, 1.0], vec![-2.0, 2.0, 0.0]);
        let r = forgetting_report(&before, &after, &graph, &req, 1);
        assert_eq!(r.n, 1);
        assert_eq!(r.removed, ScorePair { before: 3.0, after: -2.0 });
        // Non-edges are (0,2), (1,0) or (1,2): score 0 in both models... except (1,0) which moves 3 → -2.
        assert!(r.non_edges.after == 0.0 || r.non_edges.after == -2.0);
        assert_eq!(r.remaining, ScorePair { before: 2.0, after: 2.0 });
        assert!((r.mi_bf - sigmoid(3.0) / sigmoid(-2.0)).abs() < 1e-12);
        assert!((r.gap - (r.non_edges.after + 2.0)).abs() < 1e-12);
    }

    #[test]
    fn request_seed_depends_on_the_pairs_only() {
        let (a, _) = Interactions::from_pairs(vec![(0, 1), (2, 3)]);
        let (b, _) = Interactions::from_pairs(vec![(2, 3), (0, 1), (0, 1)]);
        assert_eq!(request_seed(&a), request_seed(&b));
        assert_ne!(request_seed(&a), request_seed(&Interactions::from_pairs(vec![(0, 1), (2, 4)]).0));
        assert_ne!(request_seed(&a), request_seed(&Interactions::from_pairs(vec![(0, 1)]).0));
    }

    #[test]
    fn non_edges_avoid_graph_and_request() {
        let (g, _) = Interactions::from_pairs(
            (0..20).flat_map(|u| (0..10).filter(move |i| (u + i) % 3 == 0).map(move |i| (u, i))).collect(),
        );
        let graph = Graph::from_interactions(20, 10, &g);
        let (req, _) = Interactions::from_pairs(vec![(0, 1), (1, 1)]);
        let s = sample_non_edges(&graph, &req, 200, 9);
        assert_eq!(s.len(), 200);
        assert!(s.iter().all(|&(u, i)| !graph.contains(u, i) && !req.contains(u, i)));
        assert_eq!(s, sample_non_edges(&graph, &req, 200, 9));
    }
}
