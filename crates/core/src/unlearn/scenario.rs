//! Request scenarios: streams of small erasure requests, the way deletions arrive in production.
//!
//! A [`protocol`](super::protocol) draws one request of a given size; a scenario draws a *sequence* of
//! `n` requests, each the size a real deletion has:
//!
//! | scenario | one request | |
//! |---|---|---|
//! | [`Scenario::UserSubset`] | a random `fraction` (default 30 %, at least one) of one user's items | a user edits their history |
//! | [`Scenario::Account`] | every edge of one user | an account is closed |
//! | [`Scenario::SensitiveItems`] | one user's edges to a fixed set of items (a random `share`, default 2 %, of the catalogue) | a sensitive category is purged user by user |
//! | [`Scenario::Spam`] | every edge of one fake account, from a given list | a shilling attack is cleaned up |
//!
//! Each request names a different user (users are drawn without replacement, in a seeded order), so the
//! requests are disjoint. Users without an edge (or, for sensitive items, without an edge to the set)
//! are never drawn; fewer than `n` eligible users is an error naming how many there are.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

use crate::data::Interactions;
use crate::error::{Error, Result};
use crate::graph::Graph;

/// The default share of a user's items that a [`Scenario::UserSubset`] request removes.
pub const DEFAULT_SUBSET_FRACTION: f64 = 0.3;
/// The default share of the catalogue that [`Scenario::SensitiveItems`] marks sensitive.
pub const DEFAULT_SENSITIVE_SHARE: f64 = 0.02;

/// How each request of a stream is drawn (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq)]
pub enum Scenario {
    /// One user removes a random `fraction` of their items (at least one).
    UserSubset {
        /// Share of the user's training items, in (0, 1].
        fraction: f64,
    },
    /// One whole user per request.
    Account,
    /// One user's edges to a fixed random `share` of the items.
    SensitiveItems {
        /// Share of the catalogue marked sensitive, in (0, 1].
        share: f64,
    },
    /// One fake account per request, from `fake_users` (internal ids, e.g. those `data poison --spam`
    /// injected), in a seeded order.
    Spam {
        /// The fake accounts.
        fake_users: Vec<u32>,
    },
}

impl Scenario {
    /// The name used on the command line and in files.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::UserSubset { .. } => "user-subset",
            Scenario::Account => "account",
            Scenario::SensitiveItems { .. } => "sensitive-items",
            Scenario::Spam { .. } => "spam",
        }
    }
}

/// The items marked sensitive by [`Scenario::SensitiveItems`] with `share` and `seed`: a seeded random
/// `share` of the items with at least one edge (at least one item), sorted.
///
/// # Errors
/// [`Error::InvalidConfig`] for a share outside (0, 1] or a graph without edges.
pub fn sensitive_items(graph: &Graph, share: f64, seed: u64) -> Result<Vec<u32>> {
    if !(share > 0.0 && share <= 1.0) {
        return Err(Error::config("scenario.share", format!("must be in (0, 1], got {share}")));
    }
    let items: Vec<u32> = (0..graph.n_items() as u32).filter(|&i| graph.item_degree(i as usize) > 0).collect();
    if items.is_empty() {
        return Err(Error::config("scenario", "the graph has no edges"));
    }
    let k = ((share * graph.n_items() as f64).round() as usize).clamp(1, items.len());
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5e75_1717);
    let mut picked: Vec<u32> = sample(&mut rng, items.len(), k).into_iter().map(|j| items[j]).collect();
    picked.sort_unstable();
    Ok(picked)
}

/// `n` requests of `scenario` over the training edges of `graph`, deterministically for `seed` (see the
/// [module docs](self)).
///
/// # Errors
/// [`Error::InvalidConfig`] for `n = 0`, a fraction or share outside (0, 1], a fake account out of range,
/// or fewer eligible users than `n` (the message says how many there are).
pub fn stream(graph: &Graph, scenario: &Scenario, n: usize, seed: u64) -> Result<Vec<Interactions>> {
    if n == 0 {
        return Err(Error::config("scenario.requests", "must be at least 1"));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rows = graph.user_items();
    let sensitive = match scenario {
        Scenario::SensitiveItems { share } => sensitive_items(graph, *share, seed)?,
        _ => Vec::new(),
    };
    let edges_to = |u: u32| -> Vec<u32> {
        rows.row(u as usize).iter().copied().filter(|i| sensitive.binary_search(i).is_ok()).collect()
    };
    let mut users: Vec<u32> = match scenario {
        Scenario::UserSubset { fraction } => {
            if !(*fraction > 0.0 && *fraction <= 1.0) {
                return Err(Error::config("scenario.fraction", format!("must be in (0, 1], got {fraction}")));
            }
            (0..graph.n_users() as u32).filter(|&u| graph.user_degree(u as usize) > 0).collect()
        }
        Scenario::Account => (0..graph.n_users() as u32).filter(|&u| graph.user_degree(u as usize) > 0).collect(),
        Scenario::SensitiveItems { .. } => (0..graph.n_users() as u32).filter(|&u| !edges_to(u).is_empty()).collect(),
        Scenario::Spam { fake_users } => {
            if let Some(&u) = fake_users.iter().find(|&&u| u as usize >= graph.n_users()) {
                return Err(Error::config("scenario.fake_users", format!("user {u} is out of range")));
            }
            let mut f = fake_users.clone();
            f.sort_unstable();
            f.dedup();
            f.retain(|&u| graph.user_degree(u as usize) > 0);
            f
        }
    };
    if users.len() < n {
        return Err(Error::config(
            "scenario.requests",
            format!("{n} requests of `{}` need {n} eligible users; the graph has {}", scenario.name(), users.len()),
        ));
    }
    users.shuffle(&mut rng);
    users.truncate(n);
    let requests = users
        .into_iter()
        .map(|u| {
            let items: Vec<u32> = match scenario {
                Scenario::UserSubset { fraction } => {
                    let row = rows.row(u as usize);
                    let k = ((fraction * row.len() as f64).round() as usize).clamp(1, row.len());
                    sample(&mut rng, row.len(), k).into_iter().map(|j| row[j]).collect()
                }
                Scenario::Account | Scenario::Spam { .. } => rows.row(u as usize).to_vec(),
                Scenario::SensitiveItems { .. } => edges_to(u),
            };
            Interactions::from_pairs(items.into_iter().map(|i| (u, i)).collect()).0
        })
        .collect();
    Ok(requests)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 30 users; user `u` has the items `0..(u % 10 + 1)` plus item `20 + u % 5`; users 28 and 29 have none.
    fn graph() -> Graph {
        let pairs: Vec<(u32, u32)> =
            (0..28u32).flat_map(|u| (0..(u % 10 + 1)).map(move |i| (u, i)).chain([(u, 20 + u % 5)])).collect();
        Graph::from_interactions(30, 40, &Interactions::from_pairs(pairs).0)
    }

    #[test]
    fn each_scenario_draws_disjoint_single_user_requests_of_its_size() {
        let g = graph();
        let all = |reqs: &[Interactions]| -> Vec<u32> {
            let mut u: Vec<u32> = reqs.iter().map(|r| r.users()[0]).collect();
            u.sort_unstable();
            u.dedup();
            u
        };
        // User subset: one user each, 30 % of their items (at least one), all real edges.
        let reqs = stream(&g, &Scenario::UserSubset { fraction: 0.3 }, 12, 5).unwrap();
        assert_eq!(all(&reqs).len(), 12);
        for r in &reqs {
            let u = r.users()[0];
            assert!(r.users().iter().all(|&x| x == u));
            let deg = g.user_degree(u as usize);
            assert_eq!(r.len(), ((0.3 * deg as f64).round() as usize).clamp(1, deg), "user {u}");
            assert!(r.iter().all(|(u, i)| g.user_items().row(u as usize).contains(&i)));
        }
        // Account: every edge of the user; never an edgeless user.
        let reqs = stream(&g, &Scenario::Account, 28, 5).unwrap();
        assert_eq!(all(&reqs).len(), 28);
        assert!(reqs.iter().all(|r| r.len() == g.user_degree(r.users()[0] as usize)));
        let err = stream(&g, &Scenario::Account, 29, 5).unwrap_err().to_string();
        assert!(err.contains("the graph has 28"), "{err}");
        // Sensitive items: only edges to the fixed set.
        let set = sensitive_items(&g, 0.1, 5).unwrap();
        assert_eq!(set.len(), 4);
        let reqs = stream(&g, &Scenario::SensitiveItems { share: 0.1 }, 3, 5).unwrap();
        assert!(reqs.iter().all(|r| !r.is_empty() && r.items().iter().all(|i| set.binary_search(i).is_ok())));
        // Spam: exactly the fake accounts, each whole.
        let fake = vec![3, 7, 11];
        let reqs = stream(&g, &Scenario::Spam { fake_users: fake.clone() }, 3, 5).unwrap();
        assert_eq!(all(&reqs), fake);
        assert!(stream(&g, &Scenario::Spam { fake_users: vec![31] }, 1, 5).is_err());
        // Seeded: same seed, same stream; another seed, another one.
        let a = stream(&g, &Scenario::UserSubset { fraction: 0.5 }, 10, 1).unwrap();
        assert_eq!(a, stream(&g, &Scenario::UserSubset { fraction: 0.5 }, 10, 1).unwrap());
        assert_ne!(a, stream(&g, &Scenario::UserSubset { fraction: 0.5 }, 10, 2).unwrap());
        assert!(stream(&g, &Scenario::UserSubset { fraction: 0.0 }, 1, 1).is_err());
        assert!(stream(&g, &Scenario::Account, 0, 1).is_err());
    }
}
