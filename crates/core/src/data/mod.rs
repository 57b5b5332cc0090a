//! Datasets: interactions, splits, external id maps, readers and the synthetic generator.
//!
//! A [`Dataset`] holds the train, optional validation and test [`Interactions`] over dense internal ids
//! (`0..n_users`, `0..n_items`) together with the [`IdMap`]s that translate them back to the external ids
//! of the source files. Every user-facing input and output speaks external ids; kernels use internal ids.
//!
//! Readers ([`load`]): LightGCN/NGCF text directories (`train.txt`, optional `valid.txt`, `test.txt`),
//! delimited interaction files (CSV, TSV, `::`), and RecBole atomic `.inter` files. When the source has no
//! split of its own, [`split`] makes a seeded per-user random or temporal holdout. [`synthetic`] generates
//! seeded community-structured data, [`write`](mod@write) writes any dataset back in the three formats, and
//! [`Dataset::stats`] / [`Dataset::fingerprint`] summarise and identify one.
//!
//! ```
//! use unlearnrec_core::data::{LoadOptions, SynthConfig, generate, load, write_lightgcn};
//!
//! let ds = generate(&SynthConfig { users: 60, items: 50, interactions: 900, ..Default::default() }).unwrap();
//! let dir = tempfile::tempdir().unwrap();
//! write_lightgcn(&ds, dir.path()).unwrap();
//! let back = load(dir.path(), &LoadOptions::default()).unwrap();
//! assert_eq!((back.train.len(), back.test.len()), (ds.train.len(), ds.test.len()));
//! assert_eq!(back.fingerprint(), ds.fingerprint());
//! println!("{}", serde_json::to_string(&back.stats()).unwrap());
//! ```

use std::collections::HashMap;

mod delimited;
pub mod format;
mod lightgcn;
#[cfg(test)]
mod reader_tests;
pub mod split;
pub(crate) mod stats;
pub mod synthetic;
pub mod write;

pub use format::{Format, LoadOptions, load};
pub use split::{Holdout, SplitConfig, SplitMethod, carve_validation, holdout, resplit};
pub use stats::{DatasetStats, DegreeQuantiles};
pub use synthetic::{SynthConfig, generate};
pub use write::{temp_file_in, write_delimited, write_lightgcn, write_recbole};

/// A bijection between external ids (strings from the source files) and dense internal ids `0..len`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdMap {
    ids: Vec<String>,
    lookup: HashMap<String, u32>,
}

impl IdMap {
    /// The map whose external ids are the decimal strings `"0"..="n-1"`.
    pub fn identity(n: usize) -> Self {
        Self::from_ids((0..n).map(|i| i.to_string()).collect()).expect("decimal strings are distinct")
    }

    /// Builds a map from distinct external ids, in internal-id order. Returns the first duplicate on error.
    pub fn from_ids(ids: Vec<String>) -> Result<Self, String> {
        let mut lookup = HashMap::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            if lookup.insert(id.clone(), i as u32).is_some() {
                return Err(id.clone());
            }
        }
        Ok(Self { ids, lookup })
    }

    /// The number of ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no ids.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The internal id of an external id.
    pub fn get(&self, external: &str) -> Option<u32> {
        self.lookup.get(external).copied()
    }

    /// The external id of an internal id.
    ///
    /// # Panics
    /// When `internal >= self.len()`.
    pub fn external(&self, internal: u32) -> &str {
        &self.ids[internal as usize]
    }

    /// All external ids in internal-id order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// True when external id `i` is the decimal string of `i` for every `i`.
    pub fn is_identity(&self) -> bool {
        self.ids.iter().enumerate().all(|(i, s)| s.parse::<u64>().ok() == Some(i as u64) && !s.starts_with('+'))
    }
}

/// An id map is written as the list of its external ids in internal-id order.
impl serde::Serialize for IdMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&self.ids, s)
    }
}

/// Reads the list [`IdMap`]'s `Serialize` writes; an id listed twice is an error.
impl<'de> serde::Deserialize<'de> for IdMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let ids = <Vec<String> as serde::Deserialize>::deserialize(d)?;
        IdMap::from_ids(ids).map_err(|dup| serde::de::Error::custom(format!("id {dup:?} is listed twice")))
    }
}

/// A set of (user, item) interactions over internal ids, sorted by user then item, without duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interactions {
    users: Vec<u32>,
    items: Vec<u32>,
}

impl Interactions {
    /// Builds the set from pairs in any order; duplicates are merged. Returns the set and the number of
    /// duplicates that were merged.
    pub fn from_pairs(mut pairs: Vec<(u32, u32)>) -> (Self, usize) {
        // Sorting 1M pairs serially takes ~30 ms; the parallel sort halves it on 2 cores.
        use rayon::slice::ParallelSliceMut;
        pairs.par_sort_unstable();
        let before = pairs.len();
        pairs.dedup();
        let dups = before - pairs.len();
        let (users, items) = pairs.into_iter().unzip();
        (Self { users, items }, dups)
    }

    /// Builds the set from parallel columns that are already sorted by (user, item) and unique.
    ///
    /// # Panics
    /// When the columns differ in length or are not strictly increasing.
    #[track_caller]
    pub fn from_sorted(users: Vec<u32>, items: Vec<u32>) -> Self {
        assert_eq!(users.len(), items.len(), "columns differ in length");
        assert!(
            users.windows(2).zip(items.windows(2)).all(|(u, i)| (u[0], i[0]) < (u[1], i[1])),
            "interactions must be sorted and unique"
        );
        Self { users, items }
    }

    /// The number of interactions.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user column.
    pub fn users(&self) -> &[u32] {
        &self.users
    }

    /// The item column.
    pub fn items(&self) -> &[u32] {
        &self.items
    }

    /// The pairs in (user, item) order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (u32, u32)> + '_ {
        self.users.iter().copied().zip(self.items.iter().copied())
    }

    /// True when (user, item) is in the set (binary search).
    pub fn contains(&self, user: u32, item: u32) -> bool {
        let lo = self.users.partition_point(|&u| u < user);
        let hi = self.users.partition_point(|&u| u <= user);
        self.items[lo..hi].binary_search(&item).is_ok()
    }

    /// The largest user and item id plus one, or (0, 0) when empty.
    pub fn id_bounds(&self) -> (usize, usize) {
        let nu = self.users.last().map_or(0, |&u| u as usize + 1);
        let ni = self.items.iter().max().map_or(0, |&i| i as usize + 1);
        (nu, ni)
    }
}

/// How the train/valid/test parts of a [`Dataset`] came about.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SplitOrigin {
    /// The source files carried the split.
    Files,
    /// A seeded per-user random holdout.
    Random {
        /// Fraction of each user's interactions held out for test.
        test_ratio: f64,
        /// Fraction held out for validation.
        valid_ratio: f64,
        /// The seed.
        seed: u64,
    },
    /// A per-user temporal holdout: each user's latest interactions are held out.
    Temporal {
        /// Fraction of each user's interactions held out for test.
        test_ratio: f64,
        /// Fraction held out for validation.
        valid_ratio: f64,
    },
    /// Generated by [`synthetic::generate`].
    Synthetic,
    /// Built in memory by [`Dataset::from_pairs`]: the caller gave the split.
    InMemory,
}

/// A dataset: interactions over dense internal ids, split into train, optional validation and test, with
/// the external id maps.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// A short name (the directory or file stem).
    pub name: String,
    /// External user ids, indexed by internal id.
    pub users: IdMap,
    /// External item ids, indexed by internal id.
    pub items: IdMap,
    /// Training interactions.
    pub train: Interactions,
    /// Validation interactions, when the source or the split has them.
    pub valid: Option<Interactions>,
    /// Test interactions.
    pub test: Interactions,
    /// Duplicate interactions merged while reading (counted, not an error).
    pub duplicates: usize,
    /// Where the split came from.
    pub split: SplitOrigin,
}

impl Dataset {
    /// A dataset built in memory from internal-id pairs (`(user, item)`, users in `0..n_users`, items in
    /// `0..n_items`): the training split, an optional validation split and the test split, as a caller
    /// that already holds its data (numpy arrays, a sparse matrix) has them. External ids are the internal
    /// ids as text unless [`Dataset::with_ids`] names them. Duplicate pairs within a split are merged and
    /// counted in [`Dataset::duplicates`].
    ///
    /// # Errors
    /// [`crate::Error::IdOutOfRange`] for the first pair outside the bounds; [`crate::Error::InvalidConfig`]
    /// for an empty training split or a pair that is in two splits.
    ///
    /// ```
    /// use unlearnrec_core::data::Dataset;
    ///
    /// let ds = Dataset::from_pairs("toy", 3, 4, vec![(0, 0), (0, 1), (1, 2), (2, 3)], None, vec![(1, 0)])?;
    /// assert_eq!((ds.n_users(), ds.n_items(), ds.train.len(), ds.test.len()), (3, 4, 4, 1));
    /// let ds = ds.with_ids(vec!["ann".into(), "bob".into(), "cy".into()], (0..4).map(|i| format!("i{i}")).collect())?;
    /// assert_eq!(ds.users.get("bob"), Some(1));
    /// # Ok::<(), unlearnrec_core::Error>(())
    /// ```
    pub fn from_pairs(
        name: &str,
        n_users: usize,
        n_items: usize,
        train: Vec<(u32, u32)>,
        valid: Option<Vec<(u32, u32)>>,
        test: Vec<(u32, u32)>,
    ) -> Result<Self, crate::Error> {
        let check = |pairs: &[(u32, u32)]| -> Result<(), crate::Error> {
            if let Some(&(u, i)) = pairs.iter().find(|&&(u, i)| u as usize >= n_users || i as usize >= n_items) {
                let (kind, id, n) =
                    if u as usize >= n_users { ("user", u as u64, n_users) } else { ("item", i as u64, n_items) };
                return Err(crate::Error::IdOutOfRange { kind, id, n });
            }
            Ok(())
        };
        check(&train)?;
        check(&test)?;
        if let Some(v) = &valid {
            check(v)?;
        }
        let (train, d1) = Interactions::from_pairs(train);
        let (test, d2) = Interactions::from_pairs(test);
        let (valid, d3) = match valid {
            Some(v) => {
                let (v, d) = Interactions::from_pairs(v);
                (Some(v), d)
            }
            None => (None, 0),
        };
        if train.is_empty() {
            return Err(crate::Error::config("data", "the training split is empty"));
        }
        let overlap = |a: &Interactions, b: &Interactions, what: &str| -> Result<(), crate::Error> {
            match a.iter().find(|&(u, i)| b.contains(u, i)) {
                Some((u, i)) => Err(crate::Error::config("data", format!("pair ({u}, {i}) is in both {what}"))),
                None => Ok(()),
            }
        };
        overlap(&test, &train, "train and test")?;
        if let Some(v) = &valid {
            overlap(v, &train, "train and valid")?;
            overlap(v, &test, "valid and test")?;
        }
        Ok(Dataset {
            name: name.to_string(),
            users: IdMap::identity(n_users),
            items: IdMap::identity(n_items),
            train,
            valid,
            test,
            duplicates: d1 + d2 + d3,
            split: SplitOrigin::InMemory,
        })
    }

    /// The same dataset with external ids (`users[u]` is internal user `u`'s id).
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] when a list's length is not the number of users (items) or an id repeats.
    pub fn with_ids(mut self, users: Vec<String>, items: Vec<String>) -> Result<Self, crate::Error> {
        for (kind, ids, n) in [("user_ids", &users, self.n_users()), ("item_ids", &items, self.n_items())] {
            if ids.len() != n {
                return Err(crate::Error::config(kind, format!("{} ids for {n} entries", ids.len())));
            }
        }
        self.users =
            IdMap::from_ids(users).map_err(|e| crate::Error::config("user_ids", format!("duplicate id {e:?}")))?;
        self.items =
            IdMap::from_ids(items).map_err(|e| crate::Error::config("item_ids", format!("duplicate id {e:?}")))?;
        Ok(self)
    }

    /// The number of users.
    pub fn n_users(&self) -> usize {
        self.users.len()
    }

    /// The number of items.
    pub fn n_items(&self) -> usize {
        self.items.len()
    }
}

impl Interactions {
    /// The interactions of `self` that are not in `other`, and how many were removed (a linear merge
    /// of the two sorted sets).
    pub fn difference(&self, other: &Interactions) -> (Interactions, usize) {
        let mut users = Vec::with_capacity(self.len());
        let mut items = Vec::with_capacity(self.len());
        let mut theirs = other.iter().peekable();
        for pair in self.iter() {
            while theirs.next_if(|&p| p < pair).is_some() {}
            if theirs.peek() != Some(&pair) {
                users.push(pair.0);
                items.push(pair.1);
            }
        }
        let removed = self.len() - users.len();
        (Interactions { users, items }, removed)
    }

    /// The interactions in `self` or `other` (a linear merge of the two sorted sets).
    pub fn union(&self, other: &Interactions) -> Interactions {
        let mut users = Vec::with_capacity(self.len() + other.len());
        let mut items = Vec::with_capacity(self.len() + other.len());
        let (mut a, mut b) = (self.iter().peekable(), other.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&x), Some(&y)) if x == y => {
                    b.next();
                    a.next()
                }
                (Some(&x), Some(&y)) if y < x => b.next(),
                (Some(_), _) => a.next(),
                (None, _) => b.next(),
            };
            let Some((u, i)) = next else { break };
            users.push(u);
            items.push(i);
        }
        Interactions { users, items }
    }
}

#[cfg(test)]
mod in_memory_tests {
    use super::*;
    use crate::Error;

    #[test]
    fn from_pairs_checks_bounds_overlaps_and_ids() {
        let ds =
            Dataset::from_pairs("m", 2, 3, vec![(0, 0), (1, 2), (0, 0)], Some(vec![(0, 1)]), vec![(1, 1)]).unwrap();
        assert_eq!((ds.train.len(), ds.duplicates, ds.split.clone()), (2, 1, SplitOrigin::InMemory));
        assert_eq!(ds.users.external(1), "1");
        let err = Dataset::from_pairs("m", 2, 3, vec![(0, 3)], None, vec![]).unwrap_err();
        assert!(matches!(err, Error::IdOutOfRange { kind: "item", id: 3, n: 3 }), "{err}");
        let err = Dataset::from_pairs("m", 2, 3, vec![(2, 0)], None, vec![]).unwrap_err();
        assert!(matches!(err, Error::IdOutOfRange { kind: "user", id: 2, n: 2 }), "{err}");
        let err = Dataset::from_pairs("m", 2, 3, vec![(0, 0)], None, vec![(0, 0)]).unwrap_err();
        assert!(err.to_string().contains("(0, 0) is in both train and test"), "{err}");
        assert!(Dataset::from_pairs("m", 2, 3, vec![], None, vec![(0, 0)]).is_err());
        let named =
            ds.clone().with_ids(vec!["a".into(), "b".into()], vec!["x".into(), "y".into(), "z".into()]).unwrap();
        assert_eq!((named.users.get("b"), named.items.external(2)), (Some(1), "z"));
        assert!(ds.clone().with_ids(vec!["a".into()], vec![]).is_err());
        let err = ds.with_ids(vec!["a".into(), "a".into()], vec!["x".into(), "y".into(), "z".into()]).unwrap_err();
        assert!(err.to_string().contains("duplicate id \"a\""), "{err}");
    }
}
