//! The membership attackers and the Mann–Whitney AUC that judges them.
//!
//! Two classifiers, each fitted on feature rows of members (label 1) and non-members (label 0):
//!
//! * [`Logistic`]: L2-regularised logistic regression on standardised features, fitted by Newton's
//!   method: the linear attacker.
//! * [`Gbt`]: gradient-boosted regression trees on the log-loss (second-order boosting with
//!   histogram splits on training-set quantile bins, XGBoost's gain and leaf values): the non-linear
//!   attacker, which finds thresholds, interactions and non-monotone effects (an over-forgotten pair
//!   whose score fell *below* the held-out pairs' is as recognisable as a remembered one).
//!
//! We looked for a maintained gradient-boosting crate first: `gbdt` (exact greedy splits, last
//! released 2020-era, pulls `regex`) and `forust-ml` (no declared licence) did not fit; the ~150 lines
//! below are deterministic (no sampling, ties broken by order), which an audit needs.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Which classifier an attacker uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Classifier {
    /// [`Logistic`] regression.
    Logistic,
    /// [`Gbt`]: gradient-boosted trees.
    Gbt,
}

impl Classifier {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Logistic => "logistic",
            Self::Gbt => "gbt",
        }
    }
}

/// Settings of the membership-inference attackers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttackConfig {
    /// L2 weight `λ` of the logistic objective `mean log-loss + λ/2 ‖w‖²` (the bias is not penalised).
    /// Default 1e-3.
    pub l2: f64,
    /// Newton iterations at most. Default 200.
    pub max_iter: usize,
    /// Members (and as many non-members) sampled at most. Default 10,000.
    pub max_pairs_per_class: usize,
    /// Boosting rounds of the tree attacker. Default 150.
    pub trees: usize,
    /// Depth of each tree. Default 3.
    pub depth: usize,
    /// Shrinkage of each tree's leaf values. Default 0.1.
    pub learning_rate: f64,
    /// Quantile bins per feature for the split search. Default 64.
    pub bins: usize,
    /// Fewest training rows in a leaf. Default 20.
    pub min_leaf: usize,
    /// Which classifiers to run. Default both.
    pub classifiers: Vec<Classifier>,
}

impl Default for AttackConfig {
    fn default() -> Self {
        Self {
            l2: 1e-3,
            max_iter: 200,
            max_pairs_per_class: 10_000,
            trees: 150,
            depth: 3,
            learning_rate: 0.1,
            bins: 64,
            min_leaf: 20,
            classifiers: vec![Classifier::Logistic, Classifier::Gbt],
        }
    }
}

impl AttackConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a negative or non-finite `l2`, a zero `max_iter`, a
    /// `max_pairs_per_class` below 2, a tree setting out of range or no classifier.
    pub fn validate(&self) -> Result<()> {
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(Error::config("attack.l2", "must be finite and non-negative"));
        }
        if self.max_iter == 0 || self.max_pairs_per_class < 2 {
            return Err(Error::config("attack", "max_iter must be at least 1 and max_pairs_per_class at least 2"));
        }
        if self.depth == 0 || self.depth > 8 || self.bins < 2 || self.bins > 1024 || self.min_leaf == 0 {
            return Err(Error::config("attack", "depth must be in 1..=8, bins in 2..=1024, min_leaf at least 1"));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return Err(Error::config("attack.learning_rate", "must be in (0, 1]"));
        }
        if self.classifiers.is_empty() {
            return Err(Error::config("attack.classifiers", "must name at least one classifier"));
        }
        Ok(())
    }
}

/// A fitted attacker: `p(member | x)` for a feature row `x`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Attacker {
    /// A logistic regression.
    Logistic(Logistic),
    /// Gradient-boosted trees.
    Gbt(Gbt),
}

impl Attacker {
    /// Fits `kind` on `members` (label 1) and `non_members` (label 0); every row has the same length.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for bad settings, an empty class or rows of unequal length.
    pub fn fit(kind: Classifier, members: &[Vec<f64>], non_members: &[Vec<f64>], cfg: &AttackConfig) -> Result<Self> {
        cfg.validate()?;
        if members.is_empty() || non_members.is_empty() {
            return Err(Error::config("attack", "needs at least one member and one non-member"));
        }
        let f = members[0].len();
        if f == 0 || members.iter().chain(non_members).any(|x| x.len() != f) {
            return Err(Error::config("attack", "feature rows must be non-empty and of one length"));
        }
        let xs: Vec<(&[f64], f64)> =
            members.iter().map(|x| (&x[..], 1.0)).chain(non_members.iter().map(|x| (&x[..], 0.0))).collect();
        Ok(match kind {
            Classifier::Logistic => Self::Logistic(Logistic::fit(&xs, cfg)),
            Classifier::Gbt => Self::Gbt(Gbt::fit(&xs, cfg)),
        })
    }

    /// `p(member | x)`.
    pub fn probability(&self, x: &[f64]) -> f64 {
        match self {
            Self::Logistic(m) => m.probability(x),
            Self::Gbt(m) => m.probability(x),
        }
    }

    /// [`Attacker::probability`] of each row.
    pub fn probabilities(&self, xs: &[Vec<f64>]) -> Vec<f64> {
        xs.iter().map(|x| self.probability(x)).collect()
    }
}

/// The area under the ROC curve of scores of `positives` against `negatives`: the Mann–Whitney
/// `U / (n_pos · n_neg)`, where `U` counts the (positive, negative) pairs ordered correctly and ties half.
/// NaN for an empty side. O(n log n).
pub fn auc(positives: &[f64], negatives: &[f64]) -> f64 {
    let (np, nn) = (positives.len(), negatives.len());
    if np == 0 || nn == 0 {
        return f64::NAN;
    }
    let mut all: Vec<(f64, bool)> =
        positives.iter().map(|&s| (s, true)).chain(negatives.iter().map(|&s| (s, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of the positives' (1-based, tie-averaged) ranks.
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < all.len() {
        let end = start + all[start..].iter().take_while(|x| x.0.total_cmp(&all[start].0).is_eq()).count();
        let mid = (start + 1 + end) as f64 / 2.0;
        rank_sum += mid * all[start..end].iter().filter(|x| x.1).count() as f64;
        start = end;
    }
    (rank_sum - (np * (np + 1)) as f64 / 2.0) / (np as f64 * nn as f64)
}

/// The fraction of `p` above `threshold`, ties counting half (a discrete attacker's many equal
/// probabilities then split evenly instead of all falling on one side).
pub fn fraction_above(p: &[f64], threshold: f64) -> f64 {
    if p.is_empty() {
        return f64::NAN;
    }
    let above = p.iter().filter(|&&x| x > threshold).count() as f64;
    let tied = p.iter().filter(|&&x| x == threshold).count() as f64;
    (above + tied / 2.0) / p.len() as f64
}

/// The median of `p` (mean of the two middle values for an even count); NaN when empty.
pub fn median(p: &[f64]) -> f64 {
    if p.is_empty() {
        return f64::NAN;
    }
    let mut v = p.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 { 1.0 / (1.0 + (-z).exp()) } else { z.exp() / (1.0 + z.exp()) }
}

/// `ln(1 + e^z)` without overflow.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// Solves `a x = b` for a symmetric positive definite `a` (row-major `p × p`) by Cholesky; `None`
/// when it is not.
fn solve_spd(mut a: Vec<f64>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let p = b.len();
    for j in 0..p {
        let d = a[j * p + j] - (0..j).map(|k| a[j * p + k] * a[j * p + k]).sum::<f64>();
        if d.is_nan() || d <= 0.0 {
            return None;
        }
        a[j * p + j] = d.sqrt();
        for i in j + 1..p {
            a[i * p + j] = (a[i * p + j] - (0..j).map(|k| a[i * p + k] * a[j * p + k]).sum::<f64>()) / a[j * p + j];
        }
    }
    for i in 0..p {
        b[i] = (b[i] - (0..i).map(|k| a[i * p + k] * b[k]).sum::<f64>()) / a[i * p + i];
    }
    for i in (0..p).rev() {
        b[i] = (b[i] - (i + 1..p).map(|k| a[k * p + i] * b[k]).sum::<f64>()) / a[i * p + i];
    }
    Some(b)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A logistic-regression attacker on standardised features: `p(member | x) = σ(b + w · (x − mean) / scale)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Logistic {
    /// Feature means of the training set.
    pub mean: Vec<f64>,
    /// Feature standard deviations of the training set (1 where a feature is constant).
    pub scale: Vec<f64>,
    /// Weights on the standardised features.
    pub weights: Vec<f64>,
    /// The bias `b`.
    pub bias: f64,
    /// Newton iterations run.
    pub iterations: usize,
}

impl Logistic {
    /// Newton's method with backtracking on `mean log-loss + λ/2 ‖w‖²` from zero weights, until the
    /// Newton decrement is below 1e-12 or `cfg.max_iter` iterations. Deterministic.
    fn fit(xs: &[(&[f64], f64)], cfg: &AttackConfig) -> Self {
        let nf = xs[0].0.len();
        let p = nf + 1;
        let n = xs.len() as f64;
        let mut mean = vec![0.0; nf];
        let mut scale = vec![1.0; nf];
        for f in 0..nf {
            mean[f] = xs.iter().map(|(x, _)| x[f]).sum::<f64>() / n;
            let var = xs.iter().map(|(x, _)| (x[f] - mean[f]).powi(2)).sum::<f64>() / n;
            if var.sqrt() > 1e-12 && var.is_finite() {
                scale[f] = var.sqrt();
            }
        }
        // Design rows [1, x̃].
        let rows: Vec<(Vec<f64>, f64)> = xs
            .iter()
            .map(|(x, y)| {
                let mut r = vec![1.0; p];
                for f in 0..nf {
                    r[f + 1] = (x[f] - mean[f]) / scale[f];
                }
                (r, *y)
            })
            .collect();
        let lambda = cfg.l2;
        let objective = |t: &[f64]| -> f64 {
            let loss = rows.iter().map(|(r, y)| softplus(dot(t, r)) - y * dot(t, r)).sum::<f64>() / n;
            loss + lambda / 2.0 * t[1..].iter().map(|w| w * w).sum::<f64>()
        };
        let mut theta = vec![0.0; p];
        let mut value = objective(&theta);
        let mut iterations = 0;
        while iterations < cfg.max_iter {
            iterations += 1;
            let mut g = vec![0.0; p];
            let mut h = vec![0.0; p * p];
            for (r, y) in &rows {
                let q = sigmoid(dot(&theta, r));
                let w = q * (1.0 - q);
                for a in 0..p {
                    g[a] += (q - y) * r[a];
                    for b in 0..p {
                        h[a * p + b] += w * r[a] * r[b];
                    }
                }
            }
            // Mean over the rows, plus the L2 term on the weights (and a jitter on the whole diagonal).
            for a in 0..p {
                g[a] /= n;
                for b in 0..p {
                    h[a * p + b] /= n;
                }
                h[a * p + a] += 1e-10;
                if a > 0 {
                    g[a] += lambda * theta[a];
                    h[a * p + a] += lambda;
                }
            }
            let Some(step) = solve_spd(h, g.clone()) else { break };
            let decrement = dot(&g, &step);
            if decrement.is_nan() || decrement <= 1e-12 {
                break;
            }
            let mut t = 1.0;
            let accepted = loop {
                let cand: Vec<f64> = theta.iter().zip(&step).map(|(a, s)| a - t * s).collect();
                let v = objective(&cand);
                if v <= value - 1e-4 * t * decrement {
                    theta = cand;
                    value = v;
                    break true;
                }
                t /= 2.0;
                if t < 1e-12 {
                    break false;
                }
            };
            if !accepted {
                break;
            }
        }
        Logistic { mean, scale, weights: theta[1..].to_vec(), bias: theta[0], iterations }
    }

    /// `p(member | x)`.
    pub fn probability(&self, x: &[f64]) -> f64 {
        let z = self.bias
            + (0..self.weights.len()).map(|f| self.weights[f] * (x[f] - self.mean[f]) / self.scale[f]).sum::<f64>();
        sigmoid(z)
    }
}

/// One node of a regression tree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Node {
    /// Rows with `x[feature] <= threshold` go to `left`, the others (NaN included) to `right`.
    Split {
        /// The feature tested.
        feature: usize,
        /// The threshold (a bin's upper edge).
        threshold: f64,
        /// Index of the left child.
        left: usize,
        /// Index of the right child.
        right: usize,
    },
    /// A leaf's contribution to the log-odds (already shrunk by the learning rate).
    Leaf(f64),
}

/// A gradient-boosted trees attacker: `p(member | x) = σ(base + Σ_t tree_t(x))`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gbt {
    /// The starting log-odds (the training set's class ratio).
    pub base: f64,
    /// The trees, each a node list rooted at index 0.
    pub trees: Vec<Vec<Node>>,
}

/// L2 weight on the leaf values (XGBoost's `λ`).
const GBT_LAMBDA: f64 = 1.0;

impl Gbt {
    fn fit(xs: &[(&[f64], f64)], cfg: &AttackConfig) -> Self {
        let nf = xs[0].0.len();
        let n = xs.len();
        // Per-feature bin edges: training-set quantiles, deduplicated; bin b holds x <= edges[b].
        let edges: Vec<Vec<f64>> = (0..nf)
            .map(|f| {
                let mut v: Vec<f64> = xs.iter().map(|(x, _)| x[f]).filter(|x| !x.is_nan()).collect();
                v.sort_by(f64::total_cmp);
                let mut e: Vec<f64> = (1..cfg.bins)
                    .filter_map(|b| v.get((b * v.len() / cfg.bins).min(v.len().saturating_sub(1))).copied())
                    .collect();
                e.dedup();
                e
            })
            .collect();
        // The bin of each value: the first edge >= x (NaN and values above every edge: the last bin).
        let binned: Vec<Vec<u16>> =
            xs.iter().map(|(x, _)| (0..nf).map(|f| edges[f].partition_point(|&e| e < x[f]) as u16).collect()).collect();
        let y: Vec<f64> = xs.iter().map(|(_, y)| *y).collect();
        let pos = y.iter().sum::<f64>();
        let base = ((pos + 0.5) / (n as f64 - pos + 0.5)).ln();
        let mut f_val = vec![base; n];
        let mut trees = Vec::with_capacity(cfg.trees);
        let mut g = vec![0.0; n];
        let mut h = vec![0.0; n];
        for _ in 0..cfg.trees {
            for j in 0..n {
                let p = sigmoid(f_val[j]);
                g[j] = p - y[j];
                h[j] = (p * (1.0 - p)).max(1e-12);
            }
            let mut nodes = Vec::new();
            let rows: Vec<usize> = (0..n).collect();
            grow(&mut nodes, rows, 0, &binned, &edges, &g, &h, cfg);
            for (j, (x, _)) in xs.iter().enumerate() {
                f_val[j] += predict(&nodes, x);
            }
            trees.push(nodes);
        }
        Gbt { base, trees }
    }

    /// `p(member | x)`.
    pub fn probability(&self, x: &[f64]) -> f64 {
        sigmoid(self.base + self.trees.iter().map(|t| predict(t, x)).sum::<f64>())
    }
}

fn predict(nodes: &[Node], x: &[f64]) -> f64 {
    let mut k = 0;
    loop {
        match nodes[k] {
            Node::Leaf(v) => return v,
            Node::Split { feature, threshold, left, right } => {
                k = if x[feature] <= threshold { left } else { right };
            }
        }
    }
}

/// Grows the subtree of `rows` at `depth` into `nodes` and returns its root's index.
#[allow(clippy::too_many_arguments)]
fn grow(
    nodes: &mut Vec<Node>,
    rows: Vec<usize>,
    depth: usize,
    binned: &[Vec<u16>],
    edges: &[Vec<f64>],
    g: &[f64],
    h: &[f64],
    cfg: &AttackConfig,
) -> usize {
    let (gs, hs) = rows.iter().fold((0.0, 0.0), |(a, b), &j| (a + g[j], b + h[j]));
    let score = |g: f64, h: f64| g * g / (h + GBT_LAMBDA);
    let me = nodes.len();
    nodes.push(Node::Leaf(-cfg.learning_rate * gs / (hs + GBT_LAMBDA)));
    if depth >= cfg.depth || rows.len() < 2 * cfg.min_leaf {
        return me;
    }
    // Best split over every feature's bin boundaries: (gain, feature, bin).
    let mut best: Option<(f64, usize, usize)> = None;
    for (f, e) in edges.iter().enumerate() {
        let nb = e.len() + 1;
        let mut hist = vec![(0.0, 0.0, 0usize); nb];
        for &j in &rows {
            let b = &mut hist[binned[j][f] as usize];
            b.0 += g[j];
            b.1 += h[j];
            b.2 += 1;
        }
        let (mut gl, mut hl, mut nl) = (0.0, 0.0, 0usize);
        for (b, &(bg, bh, bn)) in hist.iter().enumerate().take(nb - 1) {
            gl += bg;
            hl += bh;
            nl += bn;
            if nl < cfg.min_leaf || rows.len() - nl < cfg.min_leaf {
                continue;
            }
            let gain = score(gl, hl) + score(gs - gl, hs - hl) - score(gs, hs);
            if gain > 1e-12 && best.is_none_or(|(bg, _, _)| gain > bg) {
                best = Some((gain, f, b));
            }
        }
    }
    let Some((_, feature, bin)) = best else { return me };
    let (l, r): (Vec<usize>, Vec<usize>) = rows.into_iter().partition(|&j| binned[j][feature] as usize <= bin);
    let left = grow(nodes, l, depth + 1, binned, edges, g, h, cfg);
    let right = grow(nodes, r, depth + 1, binned, edges, g, h, cfg);
    nodes[me] = Node::Split { feature, threshold: edges[feature][bin], left, right };
    me
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal};

    use super::*;

    fn normal_rows(rng: &mut ChaCha8Rng, n: usize, nf: usize, shift: f64) -> Vec<Vec<f64>> {
        let d = Normal::new(0.0, 1.0).unwrap();
        (0..n).map(|_| (0..nf).map(|f| d.sample(rng) + if f == 0 { shift } else { 0.0 }).collect()).collect()
    }

    fn held_out_auc(kind: Classifier, m: &[Vec<f64>], nm: &[Vec<f64>]) -> f64 {
        let (hm, hn) = (m.len() / 2, nm.len() / 2);
        let a = Attacker::fit(kind, &m[..hm], &nm[..hn], &AttackConfig::default()).unwrap();
        auc(&a.probabilities(&m[hm..]), &a.probabilities(&nm[hn..]))
    }

    #[test]
    fn both_attackers_separate_separable_features() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (m, nm) = (normal_rows(&mut rng, 400, 6, 10.0), normal_rows(&mut rng, 400, 6, -10.0));
        for kind in [Classifier::Logistic, Classifier::Gbt] {
            let value = held_out_auc(kind, &m, &nm);
            assert!(value > 0.99, "{kind:?}: {value}");
            let a = Attacker::fit(kind, &m[..200], &nm[..200], &AttackConfig::default()).unwrap();
            assert!(a.probability(&m[300]) > 0.5 && a.probability(&nm[300]) < 0.5, "{kind:?}");
            assert_eq!(a, Attacker::fit(kind, &m[..200], &nm[..200], &AttackConfig::default()).unwrap());
        }
    }

    #[test]
    fn both_attackers_on_identical_distributions_stay_near_chance() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (m, nm) = (normal_rows(&mut rng, 4000, 6, 0.0), normal_rows(&mut rng, 4000, 6, 0.0));
        for kind in [Classifier::Logistic, Classifier::Gbt] {
            let value = held_out_auc(kind, &m, &nm);
            assert!((value - 0.5).abs() < 0.04, "{kind:?}: {value}");
        }
    }

    #[test]
    fn trees_find_a_non_monotone_effect_that_a_linear_attacker_cannot() {
        // Members sit in a band |x0| < 1, non-members outside it: no single direction separates them.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut draw = |inside: bool| -> Vec<f64> {
            loop {
                let x: f64 = rng.random_range(-3.0..3.0);
                if (x.abs() < 1.0) == inside {
                    return vec![x, rng.random_range(-1.0..1.0)];
                }
            }
        };
        let m: Vec<Vec<f64>> = (0..2000).map(|_| draw(true)).collect();
        let nm: Vec<Vec<f64>> = (0..2000).map(|_| draw(false)).collect();
        let lin = held_out_auc(Classifier::Logistic, &m, &nm);
        let gbt = held_out_auc(Classifier::Gbt, &m, &nm);
        assert!(gbt > 0.97, "gbt {gbt}");
        assert!(lin < 0.7, "logistic {lin}");
    }

    #[test]
    fn constant_and_mismatched_features() {
        let m = vec![vec![1.0, 2.0]; 50];
        let nm = vec![vec![1.0, 2.0]; 50];
        for kind in [Classifier::Logistic, Classifier::Gbt] {
            let a = Attacker::fit(kind, &m, &nm, &AttackConfig::default()).unwrap();
            assert!((a.probability(&[1.0, 2.0]) - 0.5).abs() < 1e-9, "{kind:?}");
        }
        assert!(Attacker::fit(Classifier::Gbt, &m, &[vec![1.0]], &AttackConfig::default()).is_err());
        assert!(Attacker::fit(Classifier::Gbt, &m, &[], &AttackConfig::default()).is_err());
        let bad = AttackConfig { depth: 0, ..AttackConfig::default() };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn auc_counts_ties_half() {
        assert_eq!(auc(&[3.0, 4.0], &[1.0, 2.0]), 1.0);
        assert_eq!(auc(&[1.0, 2.0], &[3.0, 4.0]), 0.0);
        assert_eq!(auc(&[1.0], &[1.0]), 0.5);
        // Pairs: (2 vs 1) win, (2 vs 2) tie, (2 vs 3) loss, (3 vs 1) win, (3 vs 2) win, (3 vs 3) tie → 4/6.
        assert!((auc(&[2.0, 3.0], &[1.0, 2.0, 3.0]) - 4.0 / 6.0).abs() < 1e-12);
        assert!(auc(&[], &[1.0]).is_nan());
    }

    #[test]
    fn fraction_above_the_median_counts_ties_half() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(fraction_above(&[1.0, 2.0, 3.0, 4.0], 2.5), 0.5);
        assert_eq!(fraction_above(&[0.5; 10], 0.5), 0.5);
        assert_eq!(fraction_above(&[0.1, 0.9], 0.5), 0.5);
    }
}
