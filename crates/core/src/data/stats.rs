//! Dataset summaries and fingerprints.

use serde::Serialize;

use super::{Dataset, Interactions};

/// Nearest-rank quantiles of a degree distribution (all 0 when there is nothing to summarise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DegreeQuantiles {
    /// The smallest degree.
    pub min: usize,
    /// 25th percentile.
    pub p25: usize,
    /// 50th percentile.
    pub median: usize,
    /// 75th percentile.
    pub p75: usize,
    /// 90th percentile.
    pub p90: usize,
    /// 99th percentile.
    pub p99: usize,
    /// The largest degree.
    pub max: usize,
}

impl DegreeQuantiles {
    /// Quantiles of `degrees` by the nearest-rank rule: the `p`-quantile is the `ceil(p * n)`-th smallest.
    pub fn of(mut degrees: Vec<usize>) -> Self {
        if degrees.is_empty() {
            return Self::default();
        }
        degrees.sort_unstable();
        let n = degrees.len();
        // The small offset keeps exact products such as 0.9 * 1000 from rounding up a rank.
        let q = |p: f64| degrees[((p * n as f64 - 1e-9).ceil() as usize).clamp(1, n) - 1];
        Self {
            min: degrees[0],
            p25: q(0.25),
            median: q(0.5),
            p75: q(0.75),
            p90: q(0.9),
            p99: q(0.99),
            max: degrees[n - 1],
        }
    }
}

/// A summary of a [`Dataset`], from [`Dataset::stats`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DatasetStats {
    /// The number of users.
    pub users: usize,
    /// The number of items.
    pub items: usize,
    /// Training interactions.
    pub train: usize,
    /// Validation interactions (0 without a validation split).
    pub valid: usize,
    /// Test interactions.
    pub test: usize,
    /// Duplicates merged while reading.
    pub duplicates: usize,
    /// `train / (users * items)` (0 for an empty id space).
    pub density: f64,
    /// Train degrees of all users, including those without training interactions.
    pub user_degree: DegreeQuantiles,
    /// Train degrees of all items, including those without training interactions.
    pub item_degree: DegreeQuantiles,
    /// Users with no training interaction.
    pub users_without_train: usize,
    /// Users with at least one test interaction (the users a test evaluation averages over).
    pub test_users: usize,
}

fn degrees(ids: &[u32], n: usize) -> Vec<usize> {
    let mut d = vec![0usize; n];
    for &id in ids {
        if let Some(slot) = d.get_mut(id as usize) {
            *slot += 1;
        }
    }
    d
}

fn distinct_users(set: &Interactions) -> usize {
    set.users().windows(2).filter(|w| w[0] != w[1]).count() + usize::from(!set.is_empty())
}

/// 64-bit FNV-1a, fed little-endian words.
pub(crate) struct Fnv(pub(crate) u64);

impl Fnv {
    pub(crate) const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(Self::PRIME);
    }

    pub(crate) fn word(&mut self, x: u64) {
        for b in x.to_le_bytes() {
            self.byte(b);
        }
    }
}

impl Dataset {
    /// Counts, density and train-degree quantiles.
    pub fn stats(&self) -> DatasetStats {
        let user_deg = degrees(self.train.users(), self.n_users());
        let users_without_train = user_deg.iter().filter(|&&d| d == 0).count();
        let cells = self.n_users() as f64 * self.n_items() as f64;
        DatasetStats {
            users: self.n_users(),
            items: self.n_items(),
            train: self.train.len(),
            valid: self.valid.as_ref().map_or(0, Interactions::len),
            test: self.test.len(),
            duplicates: self.duplicates,
            density: if cells > 0.0 { self.train.len() as f64 / cells } else { 0.0 },
            user_degree: DegreeQuantiles::of(user_deg),
            item_degree: DegreeQuantiles::of(degrees(self.train.items(), self.n_items())),
            users_without_train,
            test_users: distinct_users(&self.test),
        }
    }

    /// A stable 64-bit FNV-1a hash of `(n_users, n_items, train pairs, test pairs)` as 16 hex digits.
    ///
    /// It identifies the training graph and test set a model was fitted and evaluated on (checkpoints
    /// record it); external ids, the validation split and the name do not enter it.
    pub fn fingerprint(&self) -> String {
        let mut h = Fnv(Fnv::OFFSET_BASIS);
        h.word(self.n_users() as u64);
        h.word(self.n_items() as u64);
        for part in [&self.train, &self.test] {
            h.word(part.len() as u64);
            for (u, i) in part.iter() {
                h.word((u64::from(u) << 32) | u64::from(i));
            }
        }
        format!("{:016x}", h.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::{SynthConfig, generate};
    use crate::data::{IdMap, SplitOrigin};

    fn tiny() -> Dataset {
        // Users 0..4, items 0..3; user 3 has no train interactions.
        let train = Interactions::from_pairs(vec![(0, 0), (0, 1), (0, 2), (1, 0), (2, 0), (2, 1)]).0;
        let test = Interactions::from_pairs(vec![(1, 2), (3, 0), (3, 1)]).0;
        Dataset {
            name: "tiny".into(),
            users: IdMap::identity(4),
            items: IdMap::identity(3),
            train,
            valid: None,
            test,
            duplicates: 2,
            split: SplitOrigin::Files,
        }
    }

    #[test]
    fn stats_of_a_hand_built_dataset() {
        let s = tiny().stats();
        assert_eq!((s.users, s.items, s.train, s.valid, s.test, s.duplicates), (4, 3, 6, 0, 3, 2));
        assert!((s.density - 0.5).abs() < 1e-12);
        // User train degrees 3, 1, 2, 0 -> sorted 0 1 2 3.
        assert_eq!(s.user_degree, DegreeQuantiles { min: 0, p25: 0, median: 1, p75: 2, p90: 3, p99: 3, max: 3 });
        // Item train degrees 3, 2, 1.
        assert_eq!(s.item_degree, DegreeQuantiles { min: 1, p25: 1, median: 2, p75: 3, p90: 3, p99: 3, max: 3 });
        assert_eq!(s.users_without_train, 1);
        assert_eq!(s.test_users, 2);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["user_degree"]["median"], 1);
    }

    #[test]
    fn quantiles_match_a_sorted_reference() {
        let v: Vec<usize> = (0..1000).map(|k| (k * 7919) % 1000).collect();
        let q = DegreeQuantiles::of(v);
        assert_eq!((q.min, q.p25, q.median, q.p75, q.p90, q.p99, q.max), (0, 249, 499, 749, 899, 989, 999));
        assert_eq!(DegreeQuantiles::of(Vec::new()), DegreeQuantiles::default());
    }

    #[test]
    fn fingerprint_is_stable_and_sensitive() {
        let a = tiny();
        let fp = a.fingerprint();
        assert_eq!(fp.len(), 16);
        assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(fp, a.clone().fingerprint());
        let mut b = a.clone();
        b.train = Interactions::from_pairs(vec![(0, 0), (0, 1), (0, 2), (1, 0), (2, 0), (2, 2)]).0;
        assert_ne!(b.fingerprint(), fp);
        let mut c = a.clone();
        c.items = IdMap::identity(4);
        assert_ne!(c.fingerprint(), fp);
        // Moving a pair from train to test changes it too (the lengths separate the parts).
        let mut d = a.clone();
        d.train = Interactions::from_pairs(vec![(0, 0), (0, 1), (0, 2), (1, 0), (2, 0)]).0;
        d.test = Interactions::from_pairs(vec![(1, 2), (2, 1), (3, 0), (3, 1)]).0;
        assert_ne!(d.fingerprint(), fp);
        // Names and external ids do not enter it.
        let mut e = a.clone();
        e.name = "other".into();
        e.users = IdMap::from_ids(vec!["a".into(), "b".into(), "c".into(), "d".into()]).unwrap();
        assert_eq!(e.fingerprint(), fp);
    }

    #[test]
    fn fnv_matches_the_reference_vectors() {
        // FNV-1a 64 test vectors (draft-eastlake-fnv): "" , "a", "foobar".
        for (input, expect) in
            [("", 0xcbf2_9ce4_8422_2325u64), ("a", 0xaf63_dc4c_8601_ec8c), ("foobar", 0x8594_4171_f739_67e8)]
        {
            let mut h = Fnv(Fnv::OFFSET_BASIS);
            input.bytes().for_each(|b| h.byte(b));
            assert_eq!(h.0, expect, "{input:?}");
        }
    }

    #[test]
    fn synthetic_stats_agree_with_the_parts() {
        let ds = generate(&SynthConfig { users: 100, items: 90, interactions: 1500, ..Default::default() }).unwrap();
        let s = ds.stats();
        assert_eq!(s.train + s.valid + s.test, 1500);
        assert_eq!(s.users_without_train, 0, "every user keeps at least one train interaction");
        assert!(s.user_degree.min >= 1 && s.user_degree.max >= s.user_degree.p99);
    }
}
