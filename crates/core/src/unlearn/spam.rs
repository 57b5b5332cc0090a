//! A bandwagon shilling attack, for the spam stream scenario: fake accounts that each interact with a
//! set of *target* items (the items the attacker promotes) and with popular *filler* items (so that they
//! look like ordinary users and sit near many real ones in the graph). The stream then deletes one fake
//! account per request ([`super::scenario::Scenario::Spam`]); [`exposure`] measures how much the targets
//! still reach real users.
//!
//! Targets are drawn at random among the less popular half of the items with an edge (promoting an
//! already popular item is pointless); each fake account takes every target and `filler` items drawn from
//! the `4 · filler` most popular ones. Fake accounts are appended after the real users (internal ids
//! `n_users..`, external ids `spam-<k>`), with training edges only.

use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

use crate::data::{Dataset, IdMap, Interactions};
use crate::error::{Error, Result};
use crate::eval::audit::pair_ranks;
use crate::graph::Csr;
use crate::model::Embeddings;

/// How the fake accounts are made.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpamConfig {
    /// Fake accounts, as a share of the real users (at least one).
    pub share: f64,
    /// Target items promoted by every fake account.
    pub targets: usize,
    /// Popular filler items per fake account.
    pub filler: usize,
    /// Seed of the draws.
    pub seed: u64,
}

impl Default for SpamConfig {
    fn default() -> Self {
        Self { share: 0.01, targets: 5, filler: 20, seed: 0 }
    }
}

/// A dataset with fake accounts, and what the attack is made of.
#[derive(Clone, Debug)]
pub struct Spam {
    /// The dataset with the fake accounts appended (their edges in the training split).
    pub dataset: Dataset,
    /// The fake accounts (internal ids, sorted).
    pub fake_users: Vec<u32>,
    /// The promoted items (internal ids, sorted).
    pub targets: Vec<u32>,
}

/// Appends fake accounts to `ds` (see the [module docs](self)).
///
/// # Errors
/// [`Error::InvalidConfig`] for a share outside (0, 1], no targets, or a catalogue too small for the targets
/// and filler asked for.
pub fn inject(ds: &Dataset, cfg: &SpamConfig) -> Result<Spam> {
    if !(cfg.share > 0.0 && cfg.share <= 1.0) {
        return Err(Error::config("spam.share", format!("must be in (0, 1], got {}", cfg.share)));
    }
    if cfg.targets == 0 {
        return Err(Error::config("spam.targets", "must be at least 1"));
    }
    let (nu, ni) = (ds.n_users(), ds.n_items());
    let mut pop = vec![0usize; ni];
    for (_, i) in ds.train.iter() {
        pop[i as usize] += 1;
    }
    // Items with an edge, most popular first (ties by id).
    let mut by_pop: Vec<u32> = (0..ni as u32).filter(|&i| pop[i as usize] > 0).collect();
    by_pop.sort_by(|&a, &b| pop[b as usize].cmp(&pop[a as usize]).then(a.cmp(&b)));
    let pool_size = (4 * cfg.filler).min(by_pop.len() / 2);
    let lower = &by_pop[by_pop.len() / 2..];
    if lower.len() < cfg.targets || pool_size < cfg.filler {
        return Err(Error::config(
            "spam",
            format!(
                "{} items with an edge are too few for {} targets and {} filler items",
                by_pop.len(),
                cfg.targets,
                cfg.filler
            ),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut targets: Vec<u32> = sample(&mut rng, lower.len(), cfg.targets).into_iter().map(|j| lower[j]).collect();
    targets.sort_unstable();
    let pool: Vec<u32> = by_pop[..pool_size].iter().copied().filter(|i| targets.binary_search(i).is_err()).collect();
    let n_fake = ((cfg.share * nu as f64).round() as usize).max(1);
    let mut pairs: Vec<(u32, u32)> = ds.train.iter().collect();
    let fake_users: Vec<u32> = (nu..nu + n_fake).map(|u| u as u32).collect();
    for &u in &fake_users {
        pairs.extend(targets.iter().map(|&t| (u, t)));
        let k = cfg.filler.min(pool.len());
        pairs.extend(sample(&mut rng, pool.len(), k).into_iter().map(|j| (u, pool[j])));
    }
    let mut users = ds.users.ids().to_vec();
    users.extend((1..=n_fake).map(|k| format!("spam-{k}")));
    let users = IdMap::from_ids(users)
        .map_err(|id| Error::config("spam", format!("the dataset already has a user named {id:?}")))?;
    let mut dataset = ds.clone();
    dataset.name = format!("{}-spam", ds.name);
    dataset.users = users;
    dataset.train = Interactions::from_pairs(pairs).0;
    Ok(Spam { dataset, fake_users, targets })
}

/// How far the promoted items reach real users.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Exposure {
    /// Share of the real users whose top `k` (over their unseen items) holds a target.
    pub share_in_top_k: f64,
    /// Mean rank of the targets over real users and targets (each user's unseen items; a target the user
    /// has seen is left out).
    pub mean_rank: f64,
}

/// The targets' [`Exposure`] among `real_users` under `emb`, with each user's `seen` items masked.
///
/// # Errors
/// As [`pair_ranks`] (ids out of range, shapes).
pub fn exposure(emb: &Embeddings, seen: &Csr, real_users: &[u32], targets: &[u32], k: usize) -> Result<Exposure> {
    let seen_row = |u: u32| if (u as usize) < seen.n_rows() { seen.row(u as usize) } else { &[][..] };
    let pairs: Vec<(u32, u32)> = real_users
        .iter()
        .flat_map(|&u| targets.iter().filter(move |t| seen_row(u).binary_search(t).is_err()).map(move |&t| (u, t)))
        .collect();
    let ranks = pair_ranks(emb, seen, &pairs)?;
    let mut best = std::collections::BTreeMap::<u32, usize>::new();
    for (&(u, _), &r) in pairs.iter().zip(&ranks) {
        let e = best.entry(u).or_insert(usize::MAX);
        *e = (*e).min(r);
    }
    let hit = best.values().filter(|&&r| r <= k).count();
    Ok(Exposure {
        share_in_top_k: hit as f64 / real_users.len().max(1) as f64,
        mean_rank: ranks.iter().sum::<usize>() as f64 / ranks.len().max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::{SynthConfig, generate};
    use crate::graph::Graph;

    #[test]
    fn fake_accounts_take_the_targets_and_popular_filler() {
        let ds = generate(&SynthConfig { users: 200, items: 120, interactions: 3000, ..Default::default() }).unwrap();
        let cfg = SpamConfig { share: 0.05, targets: 3, filler: 6, seed: 4 };
        let s = inject(&ds, &cfg).unwrap();
        assert_eq!(s.fake_users, (200..210).collect::<Vec<u32>>());
        assert_eq!(s.dataset.n_users(), 210);
        assert_eq!(s.dataset.users.external(205), "spam-6");
        assert_eq!(s.targets.len(), 3);
        // Real users' edges are untouched; each fake account has every target and 6 filler items.
        let fake = |u: u32| s.fake_users.binary_search(&u).is_ok();
        let real: Vec<(u32, u32)> = s.dataset.train.iter().filter(|&(u, _)| !fake(u)).collect();
        assert_eq!(real, ds.train.iter().collect::<Vec<_>>());
        let g = Graph::from_interactions(210, 120, &s.dataset.train);
        for &u in &s.fake_users {
            let row = g.user_items().row(u as usize);
            assert_eq!(row.len(), 9, "user {u}");
            assert!(s.targets.iter().all(|t| row.contains(t)));
        }
        // Targets come from the less popular half; seeded.
        assert_eq!(s.targets, inject(&ds, &cfg).unwrap().targets);
        assert!(inject(&ds, &SpamConfig { share: 0.0, ..cfg.clone() }).is_err());
        assert!(inject(&ds, &SpamConfig { targets: 500, ..cfg }).is_err());
    }

    #[test]
    fn exposure_counts_users_with_a_target_in_their_top_k() {
        // dim 1: users 1, -1; items score 3, 2, 1, 0 for user 0 and the reverse order for user 1.
        let e = Embeddings { dim: 1, users: vec![1.0, -1.0], items: vec![3.0, 2.0, 1.0, 0.0] };
        let seen = Csr::new(4, vec![0, 0, 0], vec![]);
        // Target item 1: rank 2 for user 0, rank 3 for user 1.
        let x = exposure(&e, &seen, &[0, 1], &[1], 2).unwrap();
        assert_eq!(x.share_in_top_k, 0.5);
        assert_eq!(x.mean_rank, 2.5);
        let x = exposure(&e, &seen, &[0, 1], &[1, 3], 1).unwrap();
        assert_eq!(x.share_in_top_k, 0.5); // user 1 ranks item 3 first
    }
}
