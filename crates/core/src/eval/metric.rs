//! Typed metric keys: [`Metric`] at a cut-off K is a [`MetricKey`], written `name@K` (`recall@20`) in every
//! file and JSON output, and [`Metrics`] maps keys to values.
//!
//! A [`Metrics`] map iterates, serialises and compares its keys in the byte order of their `name@K` strings,
//! so its JSON is the same as that of the string-keyed map it replaces (`ndcg@20` before `recall@10`,
//! `recall@10` before `recall@5`). Lookups take a typed key or its string (`metrics.get("recall@20")`,
//! `metrics["recall@20"]`); [`Metrics::require`] makes a missing value an error instead of a default.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// A ranking metric (see the [module docs](super) for the definitions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    /// `recall`.
    Recall,
    /// `ndcg`.
    Ndcg,
    /// `precision`.
    Precision,
    /// `hit` (hit rate).
    Hit,
    /// `mrr` (mean reciprocal rank).
    Mrr,
}

impl Metric {
    /// Every metric, in the order they are computed (that of [`super::METRIC_NAMES`]).
    pub const ALL: [Metric; 5] = [Metric::Recall, Metric::Ndcg, Metric::Precision, Metric::Hit, Metric::Mrr];

    /// The name in keys and files: `recall`, `ndcg`, `precision`, `hit`, `mrr`.
    pub const fn name(self) -> &'static str {
        match self {
            Metric::Recall => "recall",
            Metric::Ndcg => "ndcg",
            Metric::Precision => "precision",
            Metric::Hit => "hit",
            Metric::Mrr => "mrr",
        }
    }

    /// This metric at cut-off `k`.
    pub const fn at(self, k: usize) -> MetricKey {
        MetricKey { metric: self, k }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Metric {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Metric::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
            Error::config("metric", format!("unknown metric {s:?} (one of {})", names.join(", ")))
        })
    }
}

/// A metric at a cut-off: `recall@20` is `MetricKey { metric: Metric::Recall, k: 20 }`.
///
/// Displayed, parsed and serialised as `name@k`; ordered as those strings are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MetricKey {
    /// The metric.
    pub metric: Metric,
    /// The cut-off K (at least 1).
    pub k: usize,
}

impl MetricKey {
    /// `recall@20`, the reference's selection and reporting metric.
    pub const RECALL_20: MetricKey = Metric::Recall.at(20);
    /// `ndcg@20`.
    pub const NDCG_20: MetricKey = Metric::Ndcg.at(20);
}

impl fmt::Display for MetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.metric.name(), self.k)
    }
}

impl FromStr for MetricKey {
    type Err = Error;

    /// Parses `name@k` with `name` a [`Metric`] name and `k ≥ 1`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::config("metric", format!("expected name@k such as recall@20, got {s:?}"));
        let (name, k) = s.split_once('@').ok_or_else(bad)?;
        let metric: Metric = name.parse().map_err(|_| bad())?;
        let k: usize = k.parse().map_err(|_| bad())?;
        if k == 0 {
            return Err(bad());
        }
        Ok(metric.at(k))
    }
}

/// The decimal digits of `k`, written into `buf`.
fn digits(mut k: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (k % 10) as u8;
        k /= 10;
        if k == 0 {
            return &buf[at..];
        }
    }
}

/// The order of the `name@k` strings: by name, then by the digits of `k` as text (no metric name is a prefix
/// of another, so the names decide before the `@`).
impl Ord for MetricKey {
    fn cmp(&self, other: &Self) -> Ordering {
        let (mut a, mut b) = ([0u8; 20], [0u8; 20]);
        self.metric.name().cmp(other.metric.name()).then_with(|| digits(self.k, &mut a).cmp(digits(other.k, &mut b)))
    }
}

impl PartialOrd for MetricKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Serialize for MetricKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MetricKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = MetricKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a metric key name@k such as recall@20")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<MetricKey, E> {
                v.parse().map_err(|e: Error| {
                    E::custom(match e {
                        Error::InvalidConfig { reason, .. } => reason,
                        e => e.to_string(),
                    })
                })
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// What [`Metrics`] can be looked up by: a [`MetricKey`], or its `name@k` string (a string that is not the
/// canonical form of a key finds nothing, as in a string-keyed map).
pub trait MetricLookup {
    /// The key, when there is one.
    fn metric_key(&self) -> Option<MetricKey>;
}

impl MetricLookup for MetricKey {
    fn metric_key(&self) -> Option<MetricKey> {
        Some(*self)
    }
}

impl MetricLookup for str {
    fn metric_key(&self) -> Option<MetricKey> {
        self.parse::<MetricKey>().ok().filter(|k| k.to_string() == self)
    }
}

impl MetricLookup for String {
    fn metric_key(&self) -> Option<MetricKey> {
        self.as_str().metric_key()
    }
}

/// Values by [`MetricKey`] (means by default; per-user vectors in [`super::PerUserMetrics`]), iterated and
/// serialised in the order of the keys' strings: a JSON object `{"ndcg@20": …, "recall@20": …}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metrics<V = f64>(BTreeMap<MetricKey, V>);

impl<V> Default for Metrics<V> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

impl<V> Metrics<V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key` (a [`MetricKey`] or its string), if present.
    pub fn get<Q: MetricLookup + ?Sized>(&self, key: &Q) -> Option<&V> {
        self.0.get(&key.metric_key()?)
    }

    /// Whether `key` has a value.
    pub fn contains<Q: MetricLookup + ?Sized>(&self, key: &Q) -> bool {
        self.get(key).is_some()
    }

    /// Sets the value of `key`, returning the previous one.
    pub fn insert(&mut self, key: MetricKey, value: V) -> Option<V> {
        self.0.insert(key, value)
    }

    /// The entries, in key order.
    pub fn iter(&self) -> std::collections::btree_map::Iter<'_, MetricKey, V> {
        self.0.iter()
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &MetricKey> {
        self.0.keys()
    }

    /// The values, in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.values()
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<V: Clone> Metrics<V> {
    /// The value of `key`.
    ///
    /// # Errors
    /// [`Error::MissingMetric`] when it was not computed.
    pub fn require(&self, key: MetricKey) -> Result<V> {
        self.0.get(&key).cloned().ok_or(Error::MissingMetric { key })
    }
}

impl<V, Q: MetricLookup + ?Sized> std::ops::Index<&Q> for Metrics<V> {
    type Output = V;

    /// # Panics
    /// When `key` has no value.
    fn index(&self, key: &Q) -> &V {
        match key.metric_key() {
            Some(k) => self.0.get(&k).unwrap_or_else(|| panic!("no metric {k}")),
            None => panic!("not a metric key"),
        }
    }
}

impl<V> FromIterator<(MetricKey, V)> for Metrics<V> {
    fn from_iter<I: IntoIterator<Item = (MetricKey, V)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl<V> IntoIterator for Metrics<V> {
    type Item = (MetricKey, V);
    type IntoIter = std::collections::btree_map::IntoIter<MetricKey, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a, V> IntoIterator for &'a Metrics<V> {
    type Item = (&'a MetricKey, &'a V);
    type IntoIter = std::collections::btree_map::Iter<'a, MetricKey, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_print_parse_and_serialise_as_their_strings() {
        for m in Metric::ALL {
            for k in [1, 5, 10, 20, 50, 100, 12345] {
                let key = m.at(k);
                let s = key.to_string();
                assert_eq!(s, format!("{}@{k}", m.name()));
                assert_eq!(s.parse::<MetricKey>().unwrap(), key);
                assert_eq!(serde_json::to_string(&key).unwrap(), format!("\"{s}\""));
                assert_eq!(serde_json::from_str::<MetricKey>(&format!("\"{s}\"")).unwrap(), key);
            }
        }
        for bad in ["recall", "recall@", "recall@0", "recall@x", "auc@20", "@20", "Recall@20", ""] {
            assert!(bad.parse::<MetricKey>().is_err(), "{bad:?}");
            assert!(serde_json::from_str::<MetricKey>(&format!("\"{bad}\"")).is_err(), "{bad:?}");
        }
        let err = serde_json::from_str::<MetricKey>("\"auc@20\"").unwrap_err().to_string();
        assert!(err.contains("expected name@k such as recall@20, got \"auc@20\""), "{err}");
    }

    #[test]
    fn keys_order_as_their_strings() {
        let mut keys: Vec<MetricKey> =
            Metric::ALL.iter().flat_map(|m| [1, 3, 5, 10, 20, 50, 100, 200].map(|k| m.at(k))).collect();
        keys.sort();
        let mut strings: Vec<String> = keys.iter().map(ToString::to_string).collect();
        let printed = strings.clone();
        strings.sort();
        assert_eq!(printed, strings);
        assert!(Metric::Recall.at(10) < Metric::Recall.at(5));
        assert!(MetricKey::NDCG_20 < MetricKey::RECALL_20);
    }

    #[test]
    fn metrics_serialise_as_the_string_keyed_map() {
        let pairs = [("recall@5", 0.5), ("recall@20", 0.25), ("ndcg@20", 0.125), ("hit@100", 1.0), ("mrr@20", 0.75)];
        let typed: Metrics = pairs.iter().map(|(k, v)| (k.parse().unwrap(), *v)).collect();
        let strings: BTreeMap<String, f64> = pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let json = serde_json::to_string(&typed).unwrap();
        assert_eq!(json, serde_json::to_string(&strings).unwrap());
        assert_eq!(serde_json::from_str::<Metrics>(&json).unwrap(), typed);
        let order: Vec<String> = typed.keys().map(ToString::to_string).collect();
        assert_eq!(order, strings.keys().cloned().collect::<Vec<_>>());
    }

    #[test]
    fn lookups_by_key_or_string_and_required_values() {
        let m: Metrics = [(MetricKey::RECALL_20, 0.3), (MetricKey::NDCG_20, 0.2)].into_iter().collect();
        assert_eq!(m.get("recall@20"), Some(&0.3));
        assert_eq!(m.get(&"ndcg@20".to_string()), Some(&0.2));
        assert_eq!(m.get(&MetricKey::RECALL_20), Some(&0.3));
        assert_eq!(m["recall@20"], 0.3);
        assert_eq!(m[&MetricKey::NDCG_20], 0.2);
        // Only the canonical string finds a key, as in a string-keyed map.
        assert_eq!(m.get("recall@020"), None);
        assert_eq!(m.get("recall@+20"), None);
        assert_eq!(m.get("precision@20"), None);
        assert_eq!(m.require(MetricKey::RECALL_20).unwrap(), 0.3);
        let err = m.require(Metric::Hit.at(20)).unwrap_err();
        assert!(matches!(err, Error::MissingMetric { key } if key == Metric::Hit.at(20)), "{err}");
        assert_eq!(err.to_string(), "metric hit@20 was not computed");
    }
}
