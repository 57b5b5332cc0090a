//! Seeded per-user holdout splits.
//!
//! For each user with `n` interactions, `round(n * test_ratio)` are held out for test (at least one when
//! `n >= 2` and the ratio is positive) and then `round(n * valid_ratio)` for validation, always leaving at
//! least one in train. A random split draws them with a ChaCha8 stream derived from `(seed, user)`, so
//! users are processed in parallel and the result does not depend on the thread count; a temporal split
//! holds out each user's latest interactions (ties broken by item id).

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Dataset, Interactions, SplitOrigin};
use crate::error::{Error, Result};

/// How held-out interactions are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitMethod {
    /// Temporal when the source has timestamps, random otherwise.
    #[default]
    Auto,
    /// A seeded random sample of each user's interactions.
    Random,
    /// Each user's latest interactions by timestamp.
    Temporal,
}

/// How to split interactions into train, validation and test.
///
/// The ratios are `Option`s so that an explicit value can be told apart from the default: a dataset
/// directory that lacks its test file is an error unless `test_ratio` is set explicitly (see
/// [`load`](super::load)). `None` resolves to [`Self::DEFAULT_TEST_RATIO`] / [`Self::DEFAULT_VALID_RATIO`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitConfig {
    /// Fraction of each user's interactions held out for test, in `[0, 1)`.
    pub test_ratio: Option<f64>,
    /// Fraction held out for validation, in `[0, 1)`; `test_ratio + valid_ratio < 1`.
    pub valid_ratio: Option<f64>,
    /// Random or temporal.
    pub method: SplitMethod,
    /// The seed of the random split.
    pub seed: u64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self { test_ratio: None, valid_ratio: None, method: SplitMethod::Auto, seed: 2024 }
    }
}

/// Stream domains, so that different uses of one seed draw independent per-user streams.
pub(crate) const STREAM_HOLDOUT: u64 = 0;
pub(crate) const STREAM_CARVE: u64 = 1;
pub(crate) const STREAM_SYNTH_USER: u64 = 2;
pub(crate) const STREAM_SYNTH_GLOBAL: u64 = 3;

/// A ChaCha8 generator for `(seed, domain, index)`: the seed is the key, the rest selects the stream.
pub(crate) fn stream_rng(seed: u64, domain: u64, index: u32) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream((domain << 32) | u64::from(index));
    rng
}

impl SplitConfig {
    /// The test ratio used when `test_ratio` is `None`.
    pub const DEFAULT_TEST_RATIO: f64 = 0.2;
    /// The validation ratio used when `valid_ratio` is `None`.
    pub const DEFAULT_VALID_RATIO: f64 = 0.0;

    /// `test_ratio`, or the default.
    pub fn effective_test_ratio(&self) -> f64 {
        self.test_ratio.unwrap_or(Self::DEFAULT_TEST_RATIO)
    }

    /// `valid_ratio`, or the default.
    pub fn effective_valid_ratio(&self) -> f64 {
        self.valid_ratio.unwrap_or(Self::DEFAULT_VALID_RATIO)
    }

    /// Checks that both ratios are in `[0, 1)` and sum to less than 1.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        check_ratio("split.test_ratio", self.effective_test_ratio())?;
        check_ratio("split.valid_ratio", self.effective_valid_ratio())?;
        let sum = self.effective_test_ratio() + self.effective_valid_ratio();
        if sum >= 1.0 {
            return Err(Error::config("split", format!("test_ratio + valid_ratio must be below 1, got {sum}")));
        }
        Ok(())
    }
}

pub(crate) fn check_ratio(field: &str, ratio: f64) -> Result<()> {
    if (0.0..1.0).contains(&ratio) {
        Ok(())
    } else {
        Err(Error::config(field, format!("must be in [0, 1), got {ratio}")))
    }
}

/// The outcome of [`holdout`].
#[derive(Clone, Debug, PartialEq)]
pub struct Holdout {
    /// What stays in train.
    pub train: Interactions,
    /// The validation split, `Some` when the validation ratio is positive.
    pub valid: Option<Interactions>,
    /// The test split.
    pub test: Interactions,
    /// How the split was made.
    pub origin: SplitOrigin,
}

/// The number of a user's `n` interactions to hold out at `ratio`, given that `taken` are already held
/// out: `round(n * ratio)`, at least one when `n >= 2` and `ratio > 0`, leaving at least one in train.
fn held_out(n: usize, ratio: f64, taken: usize) -> usize {
    if n < 2 || ratio <= 0.0 {
        return 0;
    }
    let want = ((n as f64 * ratio).round() as usize).max(1);
    want.min(n - 1 - taken.min(n - 1))
}

/// Splits `all` per user into train, validation and test.
///
/// `timestamps`, when given, has one entry per interaction of `all` (in its order) and enables the
/// temporal method; `cfg.method == Auto` picks temporal exactly when timestamps are given.
///
/// # Errors
/// [`Error::InvalidConfig`] for bad ratios or a temporal split without timestamps; [`Error::Shape`] when
/// `timestamps` has the wrong length.
pub fn holdout(all: &Interactions, timestamps: Option<&[f64]>, cfg: &SplitConfig) -> Result<Holdout> {
    cfg.validate()?;
    if let Some(ts) = timestamps
        && ts.len() != all.len()
    {
        return Err(Error::Shape {
            op: "holdout",
            expected: format!("{} timestamps", all.len()),
            got: ts.len().to_string(),
        });
    }
    let (test_ratio, valid_ratio) = (cfg.effective_test_ratio(), cfg.effective_valid_ratio());
    let temporal = match (cfg.method, timestamps) {
        (SplitMethod::Temporal, None) => {
            return Err(Error::config("split.method", "a temporal split needs timestamps and the source has none"));
        }
        (SplitMethod::Random, _) | (SplitMethod::Auto, None) => None,
        (SplitMethod::Temporal | SplitMethod::Auto, Some(ts)) => Some(ts),
    };
    let labels: Vec<u8> = user_runs(all.users())
        .into_par_iter()
        .flat_map_iter(|(start, end)| {
            let n = end - start;
            let n_test = held_out(n, test_ratio, 0);
            let n_valid = held_out(n, valid_ratio, n_test);
            let mut order: Vec<usize> = (0..n).collect();
            match temporal {
                Some(ts) => {
                    // Latest last: by time, then item id.
                    let items = &all.items()[start..end];
                    order.sort_unstable_by(|&a, &b| {
                        ts[start + a].total_cmp(&ts[start + b]).then(items[a].cmp(&items[b]))
                    });
                    order.reverse();
                }
                None => {
                    let mut rng = stream_rng(cfg.seed, STREAM_HOLDOUT, all.users()[start]);
                    // `partial_shuffle` leaves its uniform sample at the *end* of the slice; bring it to the
                    // front, where the labelling below takes it.
                    let (picked, _) = order.partial_shuffle(&mut rng, n_test + n_valid);
                    let picked = picked.to_vec();
                    order[..picked.len()].copy_from_slice(&picked);
                }
            }
            let mut labels = vec![TRAIN; n];
            for (rank, &k) in order.iter().take(n_test + n_valid).enumerate() {
                labels[k] = if rank < n_test { TEST } else { VALID };
            }
            labels
        })
        .collect();
    let [train, valid, test] = partition(all, &labels);
    let origin = if temporal.is_some() {
        SplitOrigin::Temporal { test_ratio, valid_ratio }
    } else {
        SplitOrigin::Random { test_ratio, valid_ratio, seed: cfg.seed }
    };
    Ok(Holdout { train, valid: (valid_ratio > 0.0).then_some(valid), test, origin })
}

const TRAIN: u8 = 0;
const VALID: u8 = 1;
const TEST: u8 = 2;

/// `[start, end)` of each user's run in a sorted user column.
fn user_runs(users: &[u32]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = 0;
    for k in 1..=users.len() {
        if k == users.len() || users[k] != users[start] {
            runs.push((start, k));
            start = k;
        }
    }
    runs
}

/// Splits `all` by label into `[train, valid, test]`; subsequences of a sorted set stay sorted.
fn partition(all: &Interactions, labels: &[u8]) -> [Interactions; 3] {
    let mut cols: [(Vec<u32>, Vec<u32>); 3] = Default::default();
    for ((u, i), &l) in all.iter().zip(labels) {
        cols[usize::from(l)].0.push(u);
        cols[usize::from(l)].1.push(i);
    }
    cols.map(|(u, i)| Interactions::from_sorted(u, i))
}

/// Moves a per-user random fraction `ratio` of `ds.train` into a new validation split (for datasets that
/// ship without one, or with an empty one). Counts follow the module's rule; the split origin and ids are unchanged.
///
/// # Errors
/// [`Error::InvalidConfig`] when `ratio` is not in `[0, 1)` or `ds` already has a non-empty validation
/// split.
pub fn carve_validation(ds: &Dataset, ratio: f64, seed: u64) -> Result<Dataset> {
    check_ratio("valid_ratio", ratio)?;
    if ds.valid.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(Error::config("valid_ratio", "the dataset already has a validation split"));
    }
    let labels: Vec<u8> = user_runs(ds.train.users())
        .into_par_iter()
        .flat_map_iter(|(start, end)| {
            let n = end - start;
            let n_valid = held_out(n, ratio, 0);
            let mut order: Vec<usize> = (0..n).collect();
            let mut rng = stream_rng(seed, STREAM_CARVE, ds.train.users()[start]);
            // The uniform sample is the *first* slice `partial_shuffle` returns (the end of `order`).
            let (picked, _) = order.partial_shuffle(&mut rng, n_valid);
            let mut labels = vec![TRAIN; n];
            for &k in picked.iter() {
                labels[k] = VALID;
            }
            labels
        })
        .collect();
    let [train, valid, _] = partition(&ds.train, &labels);
    Ok(Dataset { train, valid: (ratio > 0.0).then_some(valid), ..ds.clone() })
}

/// Merges all splits of `ds` and splits them again with `cfg` (random: a dataset keeps no timestamps).
///
/// # Errors
/// [`Error::InvalidConfig`] for bad ratios or a temporal method.
pub fn resplit(ds: &Dataset, cfg: &SplitConfig) -> Result<Dataset> {
    let parts = [Some(&ds.train), ds.valid.as_ref(), Some(&ds.test)];
    let pairs: Vec<(u32, u32)> = parts.into_iter().flatten().flat_map(Interactions::iter).collect();
    let (all, _) = Interactions::from_pairs(pairs);
    let h = holdout(&all, None, cfg)?;
    Ok(Dataset { train: h.train, valid: h.valid, test: h.test, split: h.origin, ..ds.clone() })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use proptest::prelude::*;

    use super::*;

    fn random_set(n_users: u32, n_items: u32, density: f64, seed: u64) -> Interactions {
        use rand::Rng;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let pairs =
            (0..n_users).flat_map(|u| (0..n_items).map(move |i| (u, i))).filter(|_| rng.random_bool(density)).collect();
        Interactions::from_pairs(pairs).0
    }

    fn per_user(set: &Interactions) -> BTreeMap<u32, usize> {
        let mut m = BTreeMap::new();
        for u in set.users() {
            *m.entry(*u).or_default() += 1;
        }
        m
    }

    fn cfg(test: f64, valid: f64, method: SplitMethod, seed: u64) -> SplitConfig {
        SplitConfig { test_ratio: Some(test), valid_ratio: Some(valid), method, seed }
    }

    /// Checks disjointness, union and the per-user counts against an independent restatement of the rule.
    fn check_holdout(all: &Interactions, h: &Holdout, test: f64, valid: f64) {
        let empty = Interactions::default();
        let v = h.valid.as_ref().unwrap_or(&empty);
        let mut union: Vec<(u32, u32)> = h.train.iter().chain(v.iter()).chain(h.test.iter()).collect();
        let n_parts = union.len();
        union.sort_unstable();
        union.dedup();
        assert_eq!(union.len(), n_parts, "parts overlap");
        assert_eq!(union, all.iter().collect::<Vec<_>>(), "union differs from the input");
        let (tr, va, te) = (per_user(&h.train), per_user(v), per_user(&h.test));
        for (u, n) in per_user(all) {
            let expect_test =
                if n >= 2 && test > 0.0 { ((n as f64 * test).round() as usize).clamp(1, n - 1) } else { 0 };
            let room = n - 1 - expect_test.min(n - 1);
            let expect_valid =
                if n >= 2 && valid > 0.0 { ((n as f64 * valid).round() as usize).max(1).min(room) } else { 0 };
            assert_eq!(te.get(&u).copied().unwrap_or(0), expect_test, "user {u} with {n}");
            assert_eq!(va.get(&u).copied().unwrap_or(0), expect_valid, "user {u} with {n}");
            assert!(tr.get(&u).copied().unwrap_or(0) >= 1, "user {u} keeps one in train");
        }
    }

    #[test]
    fn random_split_respects_ratios_and_is_deterministic() {
        let all = random_set(300, 60, 0.2, 1);
        let c = cfg(0.2, 0.1, SplitMethod::Auto, 7);
        let a = holdout(&all, None, &c).unwrap();
        check_holdout(&all, &a, 0.2, 0.1);
        assert_eq!(a, holdout(&all, None, &c).unwrap());
        let b = holdout(&all, None, &SplitConfig { seed: 8, ..c.clone() }).unwrap();
        assert_ne!(a.test, b.test, "another seed gives another split");
        assert_eq!(a.origin, SplitOrigin::Random { test_ratio: 0.2, valid_ratio: 0.1, seed: 7 });
        // Independent of the thread count.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert_eq!(pool.install(|| holdout(&all, None, &c)).unwrap(), a);
    }

    #[test]
    fn small_users_keep_one_in_train() {
        let all = Interactions::from_pairs(vec![(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]).0;
        let h = holdout(&all, None, &cfg(0.1, 0.1, SplitMethod::Random, 0)).unwrap();
        check_holdout(&all, &h, 0.1, 0.1);
        assert_eq!(per_user(&h.train), BTreeMap::from([(0, 1), (1, 1), (2, 1)]));
        let h = holdout(&all, None, &cfg(0.0, 0.0, SplitMethod::Random, 0)).unwrap();
        assert_eq!(h.train, all);
        assert!(h.test.is_empty() && h.valid.is_none());
    }

    #[test]
    fn temporal_split_takes_the_latest_with_item_ties() {
        // User 0: items 0..10 at time 10 - item, so items 0 and 1 are the latest.
        // User 1: items 0..5 all at time 3: ties broken by item id, so item 4 is "latest".
        let mut pairs = Vec::new();
        let mut ts = Vec::new();
        for i in 0..10 {
            pairs.push((0, i));
            ts.push(10.0 - f64::from(i));
        }
        for i in 0..5 {
            pairs.push((1, i));
            ts.push(3.0);
        }
        let all = Interactions::from_sorted(pairs.iter().map(|p| p.0).collect(), pairs.iter().map(|p| p.1).collect());
        let h = holdout(&all, Some(&ts), &cfg(0.2, 0.1, SplitMethod::Auto, 0)).unwrap();
        check_holdout(&all, &h, 0.2, 0.1);
        assert_eq!(h.test.iter().collect::<Vec<_>>(), [(0, 0), (0, 1), (1, 4)]);
        assert_eq!(h.valid.unwrap().iter().collect::<Vec<_>>(), [(0, 2), (1, 3)]);
        assert_eq!(h.origin, SplitOrigin::Temporal { test_ratio: 0.2, valid_ratio: 0.1 });
        let r = holdout(&all, Some(&ts), &cfg(0.2, 0.1, SplitMethod::Random, 0)).unwrap();
        assert!(matches!(r.origin, SplitOrigin::Random { .. }));
        assert!(holdout(&all, Some(&ts[1..]), &cfg(0.2, 0.1, SplitMethod::Auto, 0)).is_err());
        assert!(holdout(&all, None, &cfg(0.2, 0.1, SplitMethod::Temporal, 0)).is_err());
    }

    #[test]
    fn config_validation() {
        assert!(SplitConfig::default().validate().is_ok());
        assert_eq!(SplitConfig::default().effective_test_ratio(), 0.2);
        assert_eq!(SplitConfig::default().effective_valid_ratio(), 0.0);
        for (t, v) in [(1.0, 0.0), (-0.1, 0.0), (0.5, 0.5), (0.2, f64::NAN), (0.9, 0.2)] {
            assert!(cfg(t, v, SplitMethod::Auto, 0).validate().is_err(), "{t} {v}");
        }
        let json = serde_json::to_string(&cfg(0.1, 0.0, SplitMethod::Temporal, 3)).unwrap();
        assert!(json.contains("\"temporal\""));
        assert_eq!(serde_json::from_str::<SplitConfig>(&json).unwrap(), cfg(0.1, 0.0, SplitMethod::Temporal, 3));
    }

    /// Held-out items must be a uniform sample of each user's items, not biased to low item ids (the
    /// shuffled part of `partial_shuffle` is the end of the slice; taking the front once gave a biased
    /// split in which popularity beat every model on validation).
    #[test]
    fn held_out_items_are_uniform_over_item_ids() {
        // 400 users who each have all 100 items: every held-out item id is uniform on 0..100, mean 49.5.
        let all = Interactions::from_pairs((0..400u32).flat_map(|u| (0..100u32).map(move |i| (u, i))).collect()).0;
        let mean = |set: &Interactions| set.items().iter().map(|&i| f64::from(i)).sum::<f64>() / set.len() as f64;
        let h = holdout(&all, None, &cfg(0.1, 0.1, SplitMethod::Random, 5)).unwrap();
        // Standard error of a mean of 4000 uniform ids: 28.9 / sqrt(4000) = 0.46.
        assert!((mean(&h.test) - 49.5).abs() < 2.5, "test mean id {}", mean(&h.test));
        assert!((mean(h.valid.as_ref().unwrap()) - 49.5).abs() < 2.5);
        let ds = Dataset {
            name: "x".into(),
            users: crate::data::IdMap::identity(400),
            items: crate::data::IdMap::identity(100),
            train: all.clone(),
            valid: None,
            test: Interactions::default(),
            duplicates: 0,
            split: SplitOrigin::Files,
        };
        let carved = carve_validation(&ds, 0.1, 9).unwrap();
        assert!((mean(carved.valid.as_ref().unwrap()) - 49.5).abs() < 2.5);
    }

    #[test]
    fn carve_validation_moves_train_only() {
        let all = random_set(200, 50, 0.3, 3);
        let h = holdout(&all, None, &cfg(0.2, 0.0, SplitMethod::Random, 1)).unwrap();
        let ds = Dataset {
            name: "x".into(),
            users: crate::data::IdMap::identity(200),
            items: crate::data::IdMap::identity(50),
            train: h.train.clone(),
            valid: None,
            test: h.test.clone(),
            duplicates: 3,
            split: h.origin.clone(),
        };
        let carved = carve_validation(&ds, 0.25, 9).unwrap();
        assert_eq!(carved.test, ds.test);
        assert_eq!(carved.split, ds.split);
        assert_eq!(carved.duplicates, 3);
        let v = carved.valid.clone().unwrap();
        let moved: HashSet<(u32, u32)> = v.iter().collect();
        assert!(moved.iter().all(|&(u, i)| ds.train.contains(u, i) && !carved.train.contains(u, i)));
        assert_eq!(carved.train.len() + v.len(), ds.train.len());
        let fake = Holdout {
            train: carved.train.clone(),
            valid: Some(v),
            test: Interactions::default(),
            origin: ds.split.clone(),
        };
        check_holdout(&ds.train, &fake, 0.0, 0.25);
        assert_eq!(carve_validation(&ds, 0.25, 9).unwrap().valid, carved.valid);
        assert!(carve_validation(&carved, 0.1, 9).is_err());
        let empty_valid = Dataset { valid: Some(Interactions::default()), ..ds.clone() };
        assert_eq!(carve_validation(&empty_valid, 0.25, 9).unwrap().valid, carved.valid);
        assert!(carve_validation(&ds, 1.0, 9).is_err());
    }

    #[test]
    fn resplit_keeps_every_interaction() {
        let all = random_set(100, 40, 0.3, 4);
        let h = holdout(&all, None, &cfg(0.3, 0.0, SplitMethod::Random, 1)).unwrap();
        let ds = Dataset {
            name: "x".into(),
            users: crate::data::IdMap::identity(100),
            items: crate::data::IdMap::identity(40),
            train: h.train,
            valid: None,
            test: h.test,
            duplicates: 0,
            split: h.origin,
        };
        let c = cfg(0.1, 0.1, SplitMethod::Auto, 5);
        let r = resplit(&ds, &c).unwrap();
        let again =
            Holdout { train: r.train.clone(), valid: r.valid.clone(), test: r.test.clone(), origin: r.split.clone() };
        check_holdout(&all, &again, 0.1, 0.1);
        assert!(resplit(&ds, &cfg(0.1, 0.0, SplitMethod::Temporal, 5)).is_err());
    }

    proptest! {
        #[test]
        fn holdout_partitions_any_input(
            pairs in proptest::collection::vec((0u32..30, 0u32..30), 0..300),
            test in 0.0f64..0.6,
            valid in 0.0f64..0.39,
            seed in any::<u64>(),
            temporal in any::<bool>(),
        ) {
            let all = Interactions::from_pairs(pairs).0;
            let ts: Vec<f64> = all.iter().map(|(u, i)| f64::from((u * 7 + i * 13) % 5)).collect();
            let c = cfg(test, valid, if temporal { SplitMethod::Temporal } else { SplitMethod::Random }, seed);
            let h = holdout(&all, Some(&ts), &c).unwrap();
            check_holdout(&all, &h, test, valid);
            prop_assert_eq!(&h, &holdout(&all, Some(&ts), &c).unwrap());
        }
    }
}
