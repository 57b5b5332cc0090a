//! Calibrated forgetting: where an exact retrain would put each removed edge.
//!
//! A model retrained without an edge `(u, i)` has never seen it: it ranks `i` among `u`'s unseen items
//! the way it ranks any held-out interaction that is as plausible, and ranks it like a random item when
//! the retrain knows nothing of `u` (or of `i`). Pushing removed edges down by a fixed loss lands their
//! *mean* score near the retrain's but not their ranks: a membership attacker that reads ranks still
//! finds them. Calibration gives each removed edge a **target rank percentile** and fine-tuning pulls its
//! score to the score found at that percentile of its user's unseen items:
//!
//! 1. A *leave-edge-out proxy* says how plausible `(u, i)` is without the edge: the item scored against
//!    the mean final embedding of `u`'s **remaining** training items (`p_u = mean_{j ∈ N(u) ∖ R} e_j`);
//!    the removed edge itself does not enter `p_u`.
//! 2. The proxy's percentile is mapped to the model's scale on pairs the model never trained on: a
//!    seeded sample of validation edges (held-out interactions) and as many random unseen items of the
//!    same users. Over them, the proxy's percentiles and the model's give two empirical distributions,
//!    and the removed edge's proxy percentile is sent to the model quantile at the same CDF level (a
//!    monotone quantile map; one map per quartile of user degree, since held-out items of heavy and
//!    light users rank differently). A removed real interaction thus lands where held-out interactions of its
//!    plausibility rank; an injected or implausible one lands among the random items.
//! 3. An edge whose user or item keeps no training edge after the request (a retrain knows nothing of
//!    it) is spread uniformly: the cold edges, ordered by their current percentile, get the percentiles
//!    `(k + ½) / n`.
//!
//! Without validation edges the proxy percentile is used as it is. Nothing here reads the test split or
//! selects on the real request's outcome.
//!
//! Isolated nodes are a special case that needs no estimate: a user (or item) that keeps no training edge
//! is never sampled by a retrain, so a retrained model leaves its base embedding at its random
//! initialisation. [`reset_isolated`] restores such a node's initial row (the checkpoint's training seed
//! draws the same table as an exact retrain's), so an erased account holds exactly what it would after
//! retraining rather than a trained row pushed down.

use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::data::Interactions;
use crate::error::Result;
use crate::eval::audit::{for_rows, pair_percentiles, scores_at_percentiles};
use crate::graph::{Csr, Graph};
use crate::model::{Embeddings, ModelConfig, initial_table};

/// User-degree buckets, each with its own quantile map.
pub const DEGREE_BUCKETS: usize = 4;
/// Validation edges sampled at most for the quantile map (as many random unseen pairs join them).
pub const MAX_VALID_PAIRS: usize = 5_000;

/// Catalogue size above which the quantile map's percentiles are estimated against this many sampled
/// items instead of all (the standard error of a percentile is then at most `0.5 / √4096 ≈ 0.008`).
pub const PERCENTILE_ITEMS: usize = 4096;

/// Each pair's rank percentile among the `items` (sorted ids) that its user has not seen: the share of
/// them that score strictly above the pair (an unbiased estimate of [`pair_percentiles`] when `items` is a
/// uniform sample). Pairs must be in range; 0 for a user who has seen every sampled item.
fn sampled_percentiles(emb: &Embeddings, seen: &Csr, pairs: &[(u32, u32)], items: &[u32]) -> Vec<f64> {
    let d = emb.dim;
    fn row(table: &[f32], k: u32, d: usize) -> &[f32] {
        &table[k as usize * d..(k as usize + 1) * d]
    }
    // Pair indices grouped by user; the users' rows and the sampled items' rows as a small model, so that
    // the audit's blocked GEMM scores every user against the sample.
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.sort_by_key(|&j| pairs[j].0);
    let groups: Vec<&[usize]> = order.chunk_by(|&a, &b| pairs[a].0 == pairs[b].0).collect();
    let sub = Embeddings {
        dim: d,
        users: groups.iter().flat_map(|g| row(&emb.users, pairs[g[0]].0, d).iter().copied()).collect(),
        items: items.iter().flat_map(|&i| row(&emb.items, i, d).iter().copied()).collect(),
    };
    let local: Vec<u32> = (0..groups.len() as u32).collect();
    let per_user = for_rows(&[&sub], items.len(), &local, |k, rows| {
        let group = groups[k as usize];
        let u = pairs[group[0]].0;
        let masked = if (u as usize) < seen.n_rows() { seen.row(u as usize) } else { &[] };
        // Both lists are sorted: one merge finds the sampled items the user has not seen.
        let mut open = Vec::with_capacity(items.len());
        let mut seen_it = masked.iter().peekable();
        for (&i, &x) in items.iter().zip(rows[0]) {
            while seen_it.next_if(|&&m| m < i).is_some() {}
            if seen_it.peek() != Some(&&i) {
                open.push(x);
            }
        }
        let urow = row(&emb.users, u, d);
        group
            .iter()
            .map(|&j| {
                let s: f32 = urow.iter().zip(row(&emb.items, pairs[j].1, d)).map(|(x, y)| x * y).sum();
                let above = open.iter().filter(|&&x| x > s).count();
                (j, above as f64 / open.len().max(1) as f64)
            })
            .collect::<Vec<_>>()
    });
    let mut out = vec![0.0; pairs.len()];
    for (j, p) in per_user.into_iter().flatten() {
        out[j] = p;
    }
    out
}

/// Target percentiles and scores of a request's edges.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Targets {
    /// Target rank percentile of each request edge (request order), in `[0, 1]`.
    pub percentiles: Vec<f64>,
    /// The score at that percentile of the user's unseen items under the model (request order).
    pub scores: Vec<f32>,
    /// Edges spread uniformly because their user or item keeps no training edge.
    pub cold: usize,
    /// Pairs behind the quantile map (validation edges plus as many random unseen items).
    pub valid_pairs: usize,
}

/// The leave-edge-out proxy of `users`: their rows are the mean final embedding of the user's items in
/// `remaining` (zero for a user without one); other users' rows are zero (never read); item rows are the
/// model's.
fn proxy(fin: &Embeddings, remaining: &Graph, users: &[u32]) -> Embeddings {
    let d = fin.dim;
    let mean_row = |u: u32| -> Vec<f32> {
        let mut row = vec![0f32; d];
        let items = remaining.user_items().row(u as usize);
        for &i in items {
            for (a, b) in row.iter_mut().zip(&fin.items[i as usize * d..(i as usize + 1) * d]) {
                *a += b;
            }
        }
        if !items.is_empty() {
            let n = items.len() as f32;
            row.iter_mut().for_each(|x| *x /= n);
        }
        row
    };
    let mut users: Vec<u32> = users.to_vec();
    users.sort_unstable();
    users.dedup();
    let rows: Vec<Vec<f32>> = users.par_iter().map(|&u| mean_row(u)).collect();
    let mut table = vec![0f32; remaining.n_users() * d];
    for (&u, row) in users.iter().zip(&rows) {
        table[u as usize * d..(u as usize + 1) * d].copy_from_slice(row);
    }
    Embeddings { dim: d, users: table, items: fin.items.clone() }
}

/// The optimisation an exact retrain runs, as far as a node without any edge sees it: Adam (the
/// trainer's defaults) for `epochs` epochs of `steps_per_epoch` steps at `lr`, multiplied by `lr_decay`
/// after each epoch (floored at `lr · 1e-4`), where the only gradient such a node's row gets is that of a
/// whole-table L2 term `reg · ‖E⁰‖²` (MF and LightGCN; SGL's and SimGCL's regularisers only touch the
/// batch, so `reg` is 0 for them and the row keeps its initial value).
#[derive(Clone, Debug, PartialEq)]
pub struct IdleSchedule {
    /// Weight of the whole-table L2 term (0: the row never moves).
    pub reg: f64,
    /// Learning rate of the first epoch.
    pub lr: f64,
    /// Per-epoch learning-rate factor.
    pub lr_decay: f64,
    /// Optimiser steps per epoch.
    pub steps_per_epoch: usize,
    /// Epochs up to the state a retrain keeps.
    pub epochs: usize,
}

impl IdleSchedule {
    /// Runs the schedule on the values `x` (each an independent scalar: Adam is element-wise), in the f32
    /// arithmetic of the trainer's Adam. Returns the steps run by the chunk that ran the most.
    ///
    /// A retrain's schedule can be 10⁶ steps (200 epochs of 5,000 batches on a graph of 10⁷ edges), so the
    /// values go in chunks, in parallel, through blocks of steps, and a chunk stops once every value in it is
    /// at rest ([`at_rest`]): its moments no longer change and no remaining step can move it — the
    /// regulariser alone pulls a value geometrically towards zero until its update underflows, within
    /// thousands of steps. The result is bit for bit that of running every step.
    pub fn apply(&self, x: &mut [f32]) -> usize {
        use rayon::prelude::*;
        const CHUNK: usize = 64;
        const BLOCK: usize = 4096;
        if self.reg == 0.0 || x.is_empty() {
            return 0;
        }
        let adam = crate::train::AdamConfig::default();
        let (b1, b2) = (adam.beta1 as f32, adam.beta2 as f32);
        let two_reg = (2.0 * self.reg) as f32;
        let total = self.epochs.saturating_mul(self.steps_per_epoch);
        // Per chunk: the moments, and the steps it ran before coming to rest (`None`: still moving).
        let mut state: Vec<(Vec<f32>, Vec<f32>, Option<usize>)> =
            x.chunks(CHUNK).map(|c| (vec![0f32; c.len()], vec![0f32; c.len()], None)).collect();
        // The block's step sizes, and bounds over every step after each of them (see `at_rest`).
        let mut scalars: Vec<((f32, f32), (f32, f32))> = Vec::with_capacity(BLOCK.min(total));
        let (mut lr, mut t) = (self.lr, 0usize);
        while t < total && state.iter().any(|c| c.2.is_none()) {
            scalars.clear();
            let first = t;
            while scalars.len() < BLOCK && t < total {
                t += 1;
                let ti = i32::try_from(t).unwrap_or(i32::MAX);
                let cfg = crate::train::AdamConfig { lr, ..adam.clone() };
                let now = crate::train::adam::step_scalars(&cfg, ti);
                // Later steps: the rate never grows (decay ≤ 1), 1/(1 − b1ᵗ) shrinks and sqrt(1 − b2ᵗ) grows
                // towards 1, so lr/(1 − b1ᵗ) and eps·sqrt(1 − b2ᵗ) bound their step size and epsilon.
                let c1 = 1.0 - adam.beta1.powi(ti);
                let c2 = (1.0 - adam.beta2.powi(ti)).sqrt();
                scalars.push((now, ((lr / c1) as f32, (adam.eps * c2) as f32)));
                if t % self.steps_per_epoch.max(1) == 0 && self.lr_decay < 1.0 {
                    lr = (lr * self.lr_decay).max(self.lr * 1e-4);
                }
            }
            x.par_chunks_mut(CHUNK).zip(state.par_iter_mut()).filter(|(_, c)| c.2.is_none()).for_each(
                |(p, (m, v, rest))| {
                    for (k, &((lr_t, eps_t), bound)) in scalars.iter().enumerate() {
                        for ((p, m), v) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()) {
                            let g = two_reg * *p;
                            crate::train::adam::update(p, m, v, g, b1, b2, lr_t, eps_t);
                        }
                        if k % 16 == 15
                            && p.iter()
                                .zip(m.iter())
                                .zip(v.iter())
                                .all(|((&p, &m), &v)| at_rest(p, m, v, two_reg, b1, b2, bound))
                        {
                            *rest = Some(first + k + 1);
                            break;
                        }
                    }
                },
            );
        }
        state.iter().map(|c| c.2.unwrap_or(t)).max().unwrap_or(0)
    }
}

/// Whether a value `p` with moments `m`, `v` stays exactly where it is for every later step of the
/// regulariser's schedule, given bounds `(lr_hi, eps_lo)` on the later steps' step sizes and epsilons: its
/// gradient `2·reg·p` leaves `m` unchanged (and `v` too, or `m` is 0), and even the largest later update —
/// with `lr_hi`, `eps_lo` and `v` taken as 0 when it still moves — rounds away against `p`. Every f32
/// operation of the update is monotone in its inputs, so a smaller update rounds away too.
fn at_rest(p: f32, m: f32, v: f32, two_reg: f32, b1: f32, b2: f32, (lr_hi, eps_lo): (f32, f32)) -> bool {
    let g = two_reg * p;
    let m_next = b1 * m + (1.0 - b1) * g;
    let v_next = b2 * v + (1.0 - b2) * g * g;
    if m_next.to_bits() != m.to_bits() {
        return false;
    }
    if m == 0.0 {
        return true;
    }
    let v_lo = if v_next.to_bits() == v.to_bits() { v } else { 0.0 };
    let mut q = p;
    q -= lr_hi * m / (v_lo.sqrt() + eps_lo);
    q.to_bits() == p.to_bits()
}

/// Restores the base rows (`base`, row-major `(n_users + n_items, dim)`) of the nodes that had a training
/// edge in `before` and have none in `remaining` to what an exact retrain with the checkpoint's training
/// seed `seed` holds there: their values in [`initial_table`] (a retrain never samples an isolated node),
/// moved by `idle` (the regulariser's pull over the retrain's steps) when given. Returns the number of rows
/// restored. Nodes without an edge in `before` were never trained and keep their rows.
///
/// # Panics
/// When `base` does not hold `(n_users + n_items) * dim` values of the graphs' shape (a caller bug).
pub fn reset_isolated(
    base: &mut [f32],
    config: &ModelConfig,
    before: &Graph,
    remaining: &Graph,
    seed: u64,
    idle: Option<&IdleSchedule>,
) -> usize {
    let (nu, ni) = (remaining.n_users(), remaining.n_items());
    let dim = config.dim;
    assert_eq!(base.len(), (nu + ni) * dim, "base table shape");
    let isolated: Vec<usize> = (0..nu)
        .filter(|&u| before.user_degree(u) > 0 && remaining.user_degree(u) == 0)
        .chain((0..ni).filter(|&i| before.item_degree(i) > 0 && remaining.item_degree(i) == 0).map(|i| nu + i))
        .collect();
    if isolated.is_empty() {
        return 0;
    }
    let init = initial_table(nu + ni, dim, config.init_std, seed);
    let mut rows: Vec<f32> = isolated.iter().flat_map(|&r| init[r * dim..(r + 1) * dim].iter().copied()).collect();
    if let Some(idle) = idle {
        idle.apply(&mut rows);
    }
    for (k, &row) in isolated.iter().enumerate() {
        base[row * dim..(row + 1) * dim].copy_from_slice(&rows[k * dim..(k + 1) * dim]);
    }
    isolated.len()
}

/// The value at CDF level `c` in `[0, 1]` of the sorted sample `v` (linear interpolation).
fn quantile(v: &[f64], c: f64) -> f64 {
    let x = c.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (x - lo as f64)
}

/// The CDF level of `x` in the sorted sample `v`: the share below it, ties counting half.
fn cdf(v: &[f64], x: f64) -> f64 {
    let below = v.partition_point(|&y| y < x);
    let upto = v.partition_point(|&y| y <= x);
    (below + upto) as f64 / (2 * v.len()) as f64
}

/// Target percentiles and scores (see the [module docs](self)) of `request` (edges of the model before
/// removal) for the model with final embeddings `fin`, whose remaining training graph is `remaining`,
/// seen items `seen` (remaining training plus validation edges) and validation edges `valid`.
///
/// # Errors
/// The errors of the rank computations (shapes, ids out of range).
pub fn targets(
    fin: &Embeddings,
    remaining: &Graph,
    seen: &Csr,
    valid: &Interactions,
    request: &Interactions,
    seed: u64,
) -> Result<Targets> {
    let pairs: Vec<(u32, u32)> = request.iter().collect();
    let warm = |u: u32, i: u32| remaining.user_degree(u as usize) > 0 && remaining.item_degree(i as usize) > 0;
    // The quantile map, from validation edges of users with a history.
    let pool: Vec<(u32, u32)> = valid
        .iter()
        .filter(|&(u, i)| (u as usize) < remaining.n_users() && (i as usize) < remaining.n_items() && warm(u, i))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sampled: Vec<(u32, u32)> = if pool.len() > MAX_VALID_PAIRS {
        let mut idx = sample(&mut rng, pool.len(), MAX_VALID_PAIRS).into_vec();
        idx.sort_unstable();
        idx.into_iter().map(|j| pool[j]).collect()
    } else {
        pool
    };
    // As many unseen random items of the same users: the map must reach implausible pairs too.
    let n_items = remaining.n_items() as u32;
    let unseen: Vec<(u32, u32)> = sampled
        .iter()
        .filter_map(|&(u, _)| {
            let row = if (u as usize) < seen.n_rows() { seen.row(u as usize) } else { &[] };
            (row.len() < n_items as usize).then(|| {
                loop {
                    let j = rng.random_range(0..n_items);
                    if row.binary_search(&j).is_err() {
                        break (u, j);
                    }
                }
            })
        })
        .collect();
    sampled.extend(unseen);
    // On a large catalogue the map's percentiles are estimated against a seeded sample of items (the map
    // needs their distribution, not each pair's exact rank); the request's own pairs stay exact below.
    let items_sample: Option<Vec<u32>> = (remaining.n_items() > PERCENTILE_ITEMS).then(|| {
        let mut v: Vec<u32> =
            sample(&mut rng, remaining.n_items(), PERCENTILE_ITEMS).into_iter().map(|i| i as u32).collect();
        v.sort_unstable();
        v
    });
    let map_percentiles = |emb: &Embeddings| match &items_sample {
        None => pair_percentiles(emb, seen, &sampled),
        Some(items) => Ok(sampled_percentiles(emb, seen, &sampled, items)),
    };
    // The proxy is read at the sampled pairs' users and the request's only.
    let px = proxy(fin, remaining, &sampled.iter().chain(&pairs).map(|&(u, _)| u).collect::<Vec<_>>());
    let (sample_proxy, sample_model) = (map_percentiles(&px)?, map_percentiles(fin)?);
    // One quantile map per user-degree bucket (held-out items of heavy and light users rank differently),
    // with bucket edges at the sample's degree quantiles.
    let degree = |u: u32| remaining.user_degree(u as usize);
    let mut degs: Vec<usize> = sampled.iter().map(|&(u, _)| degree(u)).collect();
    degs.sort_unstable();
    let mut edges: Vec<usize> =
        (1..DEGREE_BUCKETS).filter_map(|b| degs.get(b * degs.len() / DEGREE_BUCKETS).copied()).collect();
    edges.dedup();
    let bucket = |u: u32| edges.partition_point(|&e| e <= degree(u));
    let mut maps: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); edges.len() + 1];
    for ((&(u, _), &p), &m) in sampled.iter().zip(&sample_proxy).zip(&sample_model) {
        let b = &mut maps[bucket(u)];
        b.0.push(p);
        b.1.push(m);
    }
    for (p, m) in &mut maps {
        p.sort_by(f64::total_cmp);
        m.sort_by(f64::total_cmp);
    }
    let proxy_p = pair_percentiles(&px, seen, &pairs)?;
    let model_p = pair_percentiles(fin, seen, &pairs)?;
    let mut q: Vec<f64> = pairs
        .iter()
        .zip(&proxy_p)
        .map(|(&(u, i), &p)| {
            let (vp, vm) = &maps[bucket(u)];
            if !warm(u, i) {
                f64::NAN
            } else if vp.is_empty() {
                p
            } else {
                quantile(vm, cdf(vp, p))
            }
        })
        .collect();
    // Cold edges: uniform percentiles in the order of their current ones.
    let mut cold: Vec<usize> = (0..pairs.len()).filter(|&j| q[j].is_nan()).collect();
    cold.sort_by(|&a, &b| model_p[a].total_cmp(&model_p[b]).then(a.cmp(&b)));
    let n_cold = cold.len();
    for (k, &j) in cold.iter().enumerate() {
        q[j] = (k as f64 + 0.5) / n_cold as f64;
    }
    let scores =
        scores_at_percentiles(fin, seen, &pairs.iter().zip(&q).map(|(&(u, _), &q)| (u, q)).collect::<Vec<_>>())?;
    Ok(Targets { percentiles: q, scores, cold: n_cold, valid_pairs: sampled.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_isolated_restores_the_initial_rows_of_nodes_the_request_isolates() {
        let (nu, ni, d) = (3usize, 3usize, 2usize);
        // User 0: {0, 1}; user 1: {1}; user 2: none. Item 2: none.
        let before = Graph::from_interactions(nu, ni, &Interactions::from_pairs(vec![(0, 0), (0, 1), (1, 1)]).0);
        // Erase user 0: user 0 and item 0 lose every edge; item 1 keeps user 1's.
        let remaining = Graph::from_interactions(nu, ni, &Interactions::from_pairs(vec![(1, 1)]).0);
        let trained = vec![5.0f32; (nu + ni) * d];
        for init_std in [None, Some(0.1)] {
            let config = ModelConfig { dim: d, init_std, ..ModelConfig::default() };
            let mut base = trained.clone();
            assert_eq!(reset_isolated(&mut base, &config, &before, &remaining, 7, None), 2);
            // Exactly the rows a model initialised with the same seed starts from (and a retrain keeps).
            let init = crate::model::Backbone::new(config.clone(), nu, ni, 7).unwrap().base_vec().unwrap();
            for (row, reset) in [(0, true), (1, false), (2, false), (3, true), (4, false), (5, false)] {
                let want = if reset { &init } else { &trained };
                assert_eq!(&base[row * d..(row + 1) * d], &want[row * d..(row + 1) * d], "row {row} ({init_std:?})");
            }
            // Nothing isolated: nothing changes.
            let mut same = trained.clone();
            assert_eq!(reset_isolated(&mut same, &config, &before, &before, 7, None), 0);
            assert_eq!(same, trained);
        }
    }

    /// The schedule run step by step over the whole slice: what [`IdleSchedule::apply`] must equal.
    fn idle_reference(s: &IdleSchedule, x: &mut [f32]) {
        let adam = crate::train::AdamConfig::default();
        let (b1, b2) = (adam.beta1 as f32, adam.beta2 as f32);
        let (mut m, mut v) = (vec![0f32; x.len()], vec![0f32; x.len()]);
        let (mut lr, mut t) = (s.lr, 0i32);
        for _ in 0..s.epochs {
            for _ in 0..s.steps_per_epoch {
                t += 1;
                let (lr_t, eps_t) =
                    crate::train::adam::step_scalars(&crate::train::AdamConfig { lr, ..adam.clone() }, t);
                for ((p, m), v) in x.iter_mut().zip(&mut m).zip(&mut v) {
                    crate::train::adam::update(p, m, v, (2.0 * s.reg) as f32 * *p, b1, b2, lr_t, eps_t);
                }
            }
            if s.lr_decay < 1.0 {
                lr = (lr * s.lr_decay).max(s.lr * 1e-4);
            }
        }
    }

    #[test]
    fn the_idle_schedule_in_chunks_with_early_rest_equals_every_step() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let x0: Vec<f32> = (0..1000).map(|_| rng.random_range(-0.05f32..0.05)).collect();
        for (reg, lr, lr_decay, steps_per_epoch, epochs) in [
            (1e-7, 5e-3, 1.0, 300, 40), // the values reach rest: the early stop is taken
            (1e-4, 1e-3, 0.9, 700, 9),  // a block boundary inside an epoch, a decaying rate
            (1e-2, 1e-3, 1.0, 50, 3),   // large gradients: nothing at rest
            (0.0, 1e-3, 1.0, 10, 10),
        ] {
            let s = IdleSchedule { reg, lr, lr_decay, steps_per_epoch, epochs };
            let (mut fast, mut slow) = (x0.clone(), x0.clone());
            let ran = s.apply(&mut fast);
            idle_reference(&s, &mut slow);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&slow), "reg {reg}");
            if reg == 1e-7 {
                assert!(ran < steps_per_epoch * epochs / 2, "came to rest after {ran} steps");
            }
        }
    }

    #[test]
    fn sampled_percentiles_estimate_the_exact_ones() {
        use rand_distr::{Distribution, StandardNormal};
        let (nu, ni, d) = (50usize, 3000usize, 8usize);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut draw = |n: usize| -> Vec<f32> { (0..n * d).map(|_| StandardNormal.sample(&mut rng)).collect() };
        let emb = Embeddings { dim: d, users: draw(nu), items: draw(ni) };
        let seen_pairs: Vec<(u32, u32)> =
            (0..nu as u32).flat_map(|u| (0..40).map(move |k| (u, (u * 7 + k * 13) % ni as u32))).collect();
        let seen = Graph::from_interactions(nu, ni, &Interactions::from_pairs(seen_pairs).0);
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let pairs: Vec<(u32, u32)> =
            (0..400).map(|_| (rng.random_range(0..nu as u32), rng.random_range(0..ni as u32))).collect();
        let exact = pair_percentiles(&emb, seen.user_items(), &pairs).unwrap();
        // Every item as the "sample": the exact percentiles (but for the pair's own item, at most 1 / n off).
        let all: Vec<u32> = (0..ni as u32).collect();
        let full = sampled_percentiles(&emb, seen.user_items(), &pairs, &all);
        for (a, b) in exact.iter().zip(&full) {
            assert!((a - b).abs() <= 1.0 / (ni - 40) as f64 + 1e-12, "{a} vs {b}");
        }
        // A sample of 500 items: within a few standard errors (0.5 / √500 ≈ 0.022).
        let mut some: Vec<u32> = sample(&mut rng, ni, 500).into_iter().map(|i| i as u32).collect();
        some.sort_unstable();
        let est = sampled_percentiles(&emb, seen.user_items(), &pairs, &some);
        let worst = exact.iter().zip(&est).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let mean = exact.iter().zip(&est).map(|(a, b)| (a - b).abs()).sum::<f64>() / pairs.len() as f64;
        assert!(worst < 0.1 && mean < 0.025, "worst {worst}, mean {mean}");
        assert!(est.iter().zip(&exact).any(|(a, b)| a != b), "a sample is an estimate");
    }

    #[test]
    fn quantile_and_cdf() {
        let v = [0.0, 0.1, 0.2, 0.3, 0.4];
        assert_eq!(quantile(&v, 0.0), 0.0);
        assert_eq!(quantile(&v, 1.0), 0.4);
        assert!((quantile(&v, 0.5) - 0.2).abs() < 1e-12);
        assert!((quantile(&v, 0.125) - 0.05).abs() < 1e-12);
        assert_eq!(cdf(&v, -1.0), 0.0);
        assert_eq!(cdf(&v, 1.0), 1.0);
        assert!((cdf(&v, 0.2) - 0.5).abs() < 1e-12);
    }

    /// Users like the items of their own group (4 groups); the model memorises its training edges on
    /// top of that (+3), and the request holds real edges (own group), injected ones (another group)
    /// and every edge of one user.
    #[test]
    fn real_edges_land_where_held_out_ones_rank_injected_and_cold_ones_lower() {
        let (nu, ni, d) = (80usize, 120usize, 4usize);
        let group = |x: usize| x % 4;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut train = Vec::new();
        let mut valid = Vec::new();
        for u in 0..nu {
            let own: Vec<usize> = (0..ni).filter(|&i| group(i) == group(u)).collect();
            for (k, &i) in own.iter().enumerate() {
                match (k + u) % 5 {
                    0 | 1 => train.push((u as u32, i as u32)),
                    2 => valid.push((u as u32, i as u32)),
                    _ => {}
                }
            }
        }
        // Injected edges: each of users 0..20 gets one item of another group.
        let injected: Vec<(u32, u32)> =
            (0..20u32).map(|u| (u, ((u as usize + 1) % 4 + 4 * u as usize) as u32 % ni as u32)).collect();
        train.extend(&injected);
        let train = Interactions::from_pairs(train).0;
        let valid = Interactions::from_pairs(valid).0;
        // Request: 20 real edges of users 20..40, the injected ones, and all of user 79's edges.
        let mut req: Vec<(u32, u32)> = (20..40u32)
            .map(|u| (u, train.iter().find(|&(x, i)| x == u && group(i as usize) == group(u as usize)).unwrap().1))
            .collect();
        req.extend(&injected);
        req.extend(train.iter().filter(|&(u, _)| u == 79));
        let request = Interactions::from_pairs(req).0;
        let remaining = Graph::from_interactions(nu, ni, &train.difference(&request).0);
        // Final embeddings: the group taste plus noise (the targets read the proxy and the held-out scale).
        let mut emb = |n: usize, g: &dyn Fn(usize) -> usize| -> Vec<f32> {
            (0..n * d).map(|k| (if k % d == g(k / d) { 2.0 } else { 0.0 }) + rng.random_range(-0.3f32..0.3)).collect()
        };
        let fin = Embeddings { dim: d, users: emb(nu, &group), items: emb(ni, &group) };
        let seen_pairs = crate::pipeline::union(&remaining.to_interactions(), &valid);
        let seen = Graph::from_interactions(nu, ni, &seen_pairs);
        let t = targets(&fin, &remaining, seen.user_items(), &valid, &request, 3).unwrap();
        assert_eq!(t.percentiles.len(), request.len());
        assert!(t.percentiles.iter().all(|q| (0.0..=1.0).contains(q)));
        // User 79's edges, and any edge whose item nobody else trained on.
        let cold_n = request
            .iter()
            .filter(|&(u, i)| remaining.user_degree(u as usize) == 0 || remaining.item_degree(i as usize) == 0)
            .count();
        assert!(cold_n >= train.iter().filter(|&(u, _)| u == 79).count());
        assert_eq!(t.cold, cold_n);
        assert!(t.valid_pairs > 100);
        let pairs: Vec<(u32, u32)> = request.iter().collect();
        let mean = |f: &dyn Fn(u32, u32) -> bool| {
            let v: Vec<f64> = pairs.iter().zip(&t.percentiles).filter(|(p, _)| f(p.0, p.1)).map(|(_, &q)| q).collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        let real = mean(&|u, i| u != 79 && group(u as usize) == group(i as usize));
        let inj = mean(&|u, i| injected.contains(&(u, i)));
        let cold = mean(&|u, _| u == 79);
        // Held-out own-group items rank in the top quarter; injected ones far below; cold ones at ½.
        assert!(real < 0.25, "real {real}");
        assert!(inj > 0.5, "injected {inj}");
        assert!((cold - 0.5).abs() < 0.05, "cold {cold}");
        // The target scores follow the percentiles within a user (higher percentile, lower score).
        let s79: Vec<(f64, f32)> = pairs
            .iter()
            .zip(&t.percentiles)
            .zip(&t.scores)
            .filter(|((p, _), _)| p.0 == 79)
            .map(|((_, &q), &s)| (q, s))
            .collect();
        for a in &s79 {
            for b in &s79 {
                if a.0 < b.0 {
                    assert!(a.1 >= b.1, "{s79:?}");
                }
            }
        }
        // Deterministic.
        assert_eq!(t, targets(&fin, &remaining, seen.user_items(), &valid, &request, 3).unwrap());
    }
}
