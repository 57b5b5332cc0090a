//! The membership attacker: L2-regularised logistic regression on standardised features, fitted by
//! Newton's method, and the Mann–Whitney AUC that judges it.

use serde::{Deserialize, Serialize};

use super::{Features, N_FEATURES};
use crate::{Error, Result};

/// Settings of the membership-inference attacker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttackConfig {
    /// L2 weight `λ` of the objective `mean log-loss + λ/2 ‖w‖²` (the bias is not penalised). Default 1e-3.
    pub l2: f64,
    /// Newton iterations at most. Default 200.
    pub max_iter: usize,
    /// Members (and as many non-members) sampled at most. Default 10,000.
    pub max_pairs_per_class: usize,
}

impl Default for AttackConfig {
    fn default() -> Self {
        Self { l2: 1e-3, max_iter: 200, max_pairs_per_class: 10_000 }
    }
}

impl AttackConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a negative or non-finite `l2`, a zero `max_iter` or a
    /// `max_pairs_per_class` below 2.
    pub fn validate(&self) -> Result<()> {
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(Error::config("attack.l2", "must be finite and non-negative"));
        }
        if self.max_iter == 0 || self.max_pairs_per_class < 2 {
            return Err(Error::config("attack", "max_iter must be at least 1 and max_pairs_per_class at least 2"));
        }
        Ok(())
    }
}

/// A logistic-regression membership attacker on standardised [`Features`]:
/// `p(member | x) = σ(b + w · (x − mean) / scale)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attacker {
    /// Feature means of the training set.
    pub mean: Features,
    /// Feature standard deviations of the training set (1 where a feature is constant).
    pub scale: Features,
    /// Weights on the standardised features.
    pub weights: Features,
    /// The bias `b`.
    pub bias: f64,
    /// Newton iterations run.
    pub iterations: usize,
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

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 { 1.0 / (1.0 + (-z).exp()) } else { z.exp() / (1.0 + z.exp()) }
}

/// `ln(1 + e^z)` without overflow.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

const P: usize = N_FEATURES + 1;

/// Solves `a x = b` for a symmetric positive definite `a` by Cholesky; `None` when it is not.
fn solve_spd(mut a: [[f64; P]; P], mut b: [f64; P]) -> Option<[f64; P]> {
    for j in 0..P {
        let d = a[j][j] - (0..j).map(|k| a[j][k] * a[j][k]).sum::<f64>();
        if d.is_nan() || d <= 0.0 {
            return None;
        }
        a[j][j] = d.sqrt();
        for i in j + 1..P {
            a[i][j] = (a[i][j] - (0..j).map(|k| a[i][k] * a[j][k]).sum::<f64>()) / a[j][j];
        }
    }
    for i in 0..P {
        b[i] = (b[i] - (0..i).map(|k| a[i][k] * b[k]).sum::<f64>()) / a[i][i];
    }
    for i in (0..P).rev() {
        b[i] = (b[i] - (i + 1..P).map(|k| a[k][i] * b[k]).sum::<f64>()) / a[i][i];
    }
    Some(b)
}

impl Attacker {
    /// Fits the attacker on `members` (label 1) and `non_members` (label 0): features standardised with
    /// the training set's mean and standard deviation, then Newton's method with backtracking on
    /// `mean log-loss + λ/2 ‖w‖²` from zero weights, until the Newton decrement is below 1e-12 or
    /// `cfg.max_iter` iterations. Deterministic.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for bad settings or an empty class.
    pub fn fit(members: &[Features], non_members: &[Features], cfg: &AttackConfig) -> Result<Self> {
        cfg.validate()?;
        if members.is_empty() || non_members.is_empty() {
            return Err(Error::config("attack", "needs at least one member and one non-member"));
        }
        let xs: Vec<(&Features, f64)> =
            members.iter().map(|x| (x, 1.0)).chain(non_members.iter().map(|x| (x, 0.0))).collect();
        let n = xs.len() as f64;
        let mut mean = [0.0; N_FEATURES];
        let mut scale = [0.0; N_FEATURES];
        for f in 0..N_FEATURES {
            mean[f] = xs.iter().map(|(x, _)| x[f]).sum::<f64>() / n;
            let var = xs.iter().map(|(x, _)| (x[f] - mean[f]).powi(2)).sum::<f64>() / n;
            scale[f] = if var.sqrt() > 1e-12 && var.is_finite() { var.sqrt() } else { 1.0 };
        }
        // Design rows [1, x̃].
        let rows: Vec<([f64; P], f64)> = xs
            .iter()
            .map(|(x, y)| {
                let mut r = [1.0; P];
                for f in 0..N_FEATURES {
                    r[f + 1] = (x[f] - mean[f]) / scale[f];
                }
                (r, *y)
            })
            .collect();
        let lambda = cfg.l2;
        let objective = |t: &[f64; P]| -> f64 {
            let loss = rows.iter().map(|(r, y)| softplus(dot(t, r)) - y * dot(t, r)).sum::<f64>() / n;
            loss + lambda / 2.0 * t[1..].iter().map(|w| w * w).sum::<f64>()
        };
        let mut theta = [0.0; P];
        let mut value = objective(&theta);
        let mut iterations = 0;
        while iterations < cfg.max_iter {
            iterations += 1;
            let mut g = [0.0; P];
            let mut h = [[0.0; P]; P];
            for (r, y) in &rows {
                let p = sigmoid(dot(&theta, r));
                let w = p * (1.0 - p);
                for ((ga, ha), ra) in g.iter_mut().zip(h.iter_mut()).zip(r) {
                    *ga += (p - y) * ra;
                    for (hab, rb) in ha.iter_mut().zip(r) {
                        *hab += w * ra * rb;
                    }
                }
            }
            // Mean over the rows, plus the L2 term on the weights (and a jitter on the whole diagonal).
            for (a, (ga, ha)) in g.iter_mut().zip(h.iter_mut()).enumerate() {
                *ga /= n;
                ha.iter_mut().for_each(|x| *x /= n);
                ha[a] += 1e-10;
                if a > 0 {
                    *ga += lambda * theta[a];
                    ha[a] += lambda;
                }
            }
            let Some(step) = solve_spd(h, g) else { break };
            let decrement = dot(&g, &step);
            if decrement.is_nan() || decrement <= 1e-12 {
                break;
            }
            let mut t = 1.0;
            loop {
                let cand: [f64; P] = std::array::from_fn(|a| theta[a] - t * step[a]);
                let v = objective(&cand);
                if v <= value - 1e-4 * t * decrement {
                    theta = cand;
                    value = v;
                    break;
                }
                t /= 2.0;
                if t < 1e-12 {
                    break;
                }
            }
            if t < 1e-12 {
                break;
            }
        }
        Ok(Attacker { mean, scale, weights: std::array::from_fn(|f| theta[f + 1]), bias: theta[0], iterations })
    }

    /// `p(member | x)`.
    pub fn probability(&self, x: &Features) -> f64 {
        let z =
            self.bias + (0..N_FEATURES).map(|f| self.weights[f] * (x[f] - self.mean[f]) / self.scale[f]).sum::<f64>();
        sigmoid(z)
    }

    /// [`Attacker::probability`] of each row.
    pub fn probabilities(&self, xs: &[Features]) -> Vec<f64> {
        xs.iter().map(|x| self.probability(x)).collect()
    }
}

fn dot(a: &[f64; P], b: &[f64; P]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal};

    use super::*;

    fn normal_rows(rng: &mut ChaCha8Rng, n: usize, shift: f64) -> Vec<Features> {
        let d = Normal::new(0.0, 1.0).unwrap();
        (0..n).map(|_| std::array::from_fn(|f| d.sample(rng) + if f == 0 { shift } else { 0.0 })).collect()
    }

    #[test]
    fn attacker_separates_separable_features() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (m, nm) = (normal_rows(&mut rng, 400, 10.0), normal_rows(&mut rng, 400, -10.0));
        let a = Attacker::fit(&m[..200], &nm[..200], &AttackConfig::default()).unwrap();
        assert!(a.weights.iter().chain([&a.bias]).all(|w| w.is_finite()));
        let value = auc(&a.probabilities(&m[200..]), &a.probabilities(&nm[200..]));
        assert!(value > 0.999, "{value}");
        assert!(a.probability(&m[300]) > 0.5 && a.probability(&nm[300]) < 0.5);
        assert_eq!(a, Attacker::fit(&m[..200], &nm[..200], &AttackConfig::default()).unwrap());
    }

    #[test]
    fn attacker_on_identical_distributions_is_near_chance() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (m, nm) = (normal_rows(&mut rng, 4000, 0.0), normal_rows(&mut rng, 4000, 0.0));
        let a = Attacker::fit(&m[..2000], &nm[..2000], &AttackConfig::default()).unwrap();
        let value = auc(&a.probabilities(&m[2000..]), &a.probabilities(&nm[2000..]));
        assert!((value - 0.5).abs() < 0.04, "{value}");
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
}
