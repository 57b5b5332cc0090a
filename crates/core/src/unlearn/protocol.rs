//! Request protocols: how an evaluation draws the interactions to forget.
//!
//! Every protocol draws about `fraction · |E|` edges of a graph, deterministically for a seed:
//!
//! | protocol | edges | order |
//! |---|---|---|
//! | [`Protocol::Random`] | uniform edges ([`super::random_request`]) | – |
//! | [`Protocol::Users`] | every edge of whole users | seeded random order |
//! | [`Protocol::Items`] | every edge of whole items | seeded random order |
//! | [`Protocol::Popular`] (alias `core`) | every edge of whole users | highest degree first |
//! | [`Protocol::Tail`] (alias `edge`) | every edge of whole users | lowest degree first |
//!
//! `popular` and `tail` follow CURE4Rec's *core* and *edge* user sets (Chen et al., *CURE4Rec: A Benchmark
//! for Recommendation Unlearning with Deeper Influence*, NeurIPS 2024): the active users who shape the
//! collaborative signal, and the sparse users at its fringe. Whole users (or items) are taken in their
//! order, ties between equal degrees broken by a seeded random key, until the request holds at least
//! `fraction · |E|` edges (at least one user or item), so the last one may overshoot the target.
//! Users and items without edges are never picked.
//!
//! ```
//! use unlearnrec_core::data::Interactions;
//! use unlearnrec_core::graph::Graph;
//! use unlearnrec_core::unlearn::protocol::{Protocol, make_request};
//!
//! // User 0 has 3 items, user 1 has 2, user 2 has 1.
//! let (e, _) = Interactions::from_pairs(vec![(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 2)]);
//! let g = Graph::from_interactions(3, 3, &e);
//! let core: Protocol = "core".parse().unwrap();
//! assert_eq!(core, Protocol::Popular);
//! let req = make_request(&g, core, 0.3, 7).unwrap(); // the highest-degree user: 3 edges ≥ 0.3 · 6
//! assert_eq!(req.iter().collect::<Vec<_>>(), vec![(0, 0), (0, 1), (0, 2)]);
//! ```

use std::fmt;
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::Interactions;
use crate::error::{Error, Result};
use crate::graph::{Csr, Graph};

/// The seed of `unlearnrec request make` when none is given.
pub const DEFAULT_SEED: u64 = 0;

/// How the edges of a request are drawn (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Uniformly random edges.
    Random,
    /// All edges of users drawn at random.
    Users,
    /// All edges of items drawn at random.
    Items,
    /// All edges of the highest-degree users (CURE4Rec's core set).
    #[serde(alias = "core")]
    Popular,
    /// All edges of the lowest-degree users (CURE4Rec's edge set).
    #[serde(alias = "edge")]
    Tail,
}

impl Protocol {
    /// Every protocol, in documentation order.
    pub const ALL: [Protocol; 5] =
        [Protocol::Random, Protocol::Users, Protocol::Items, Protocol::Popular, Protocol::Tail];

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Random => "random",
            Protocol::Users => "users",
            Protocol::Items => "items",
            Protocol::Popular => "popular",
            Protocol::Tail => "tail",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = Error;

    /// Parses a name (case-insensitive); `core` and `edge` are aliases of `popular` and `tail`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] listing the valid names.
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "core" => return Ok(Protocol::Popular),
            "edge" => return Ok(Protocol::Tail),
            _ => {}
        }
        Protocol::ALL.into_iter().find(|p| p.name() == lower).ok_or_else(|| {
            Error::config(
                "protocol",
                format!("unknown protocol {s:?}; expected one of random, users, items, popular (alias core), tail (alias edge)"),
            )
        })
    }
}

/// Draws a request of about `fraction · |E|` edges of `graph` by `protocol`, deterministically for `seed`.
///
/// `random` takes exactly `round(fraction · |E|)` edges (at least one); the others take whole users or
/// items until the request reaches `fraction · |E|` edges (see the [module docs](self)). The result is
/// sorted and holds only edges of `graph`.
///
/// # Errors
/// [`Error::InvalidConfig`] when `fraction` is not in `(0, 1)`; [`Error::InvalidRequest`] when the graph
/// has no edges.
pub fn make_request(graph: &Graph, protocol: Protocol, fraction: f64, seed: u64) -> Result<Interactions> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::config("fraction", format!("must be in (0, 1), got {fraction}")));
    }
    if graph.n_edges() == 0 {
        return Err(Error::InvalidRequest("the graph has no edges to draw a request from".into()));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let target = fraction * graph.n_edges() as f64;
    let (rows, by_user) = match protocol {
        Protocol::Random => return Ok(super::random_request(graph, fraction, &mut rng)),
        Protocol::Items => (whole_rows(graph.item_users(), Order::Random, target, &mut rng), false),
        Protocol::Users => (whole_rows(graph.user_items(), Order::Random, target, &mut rng), true),
        Protocol::Popular => (whole_rows(graph.user_items(), Order::Descending, target, &mut rng), true),
        Protocol::Tail => (whole_rows(graph.user_items(), Order::Ascending, target, &mut rng), true),
    };
    let csr = if by_user { graph.user_items() } else { graph.item_users() };
    let pairs = rows
        .into_iter()
        .flat_map(|r| csr.row(r as usize).iter().map(move |&c| if by_user { (r, c) } else { (c, r) }))
        .collect();
    Ok(Interactions::from_pairs(pairs).0)
}

#[derive(Clone, Copy)]
enum Order {
    Random,
    Descending,
    Ascending,
}

/// Non-empty rows of `csr` in `order` (ties by a seeded random key), taken until their degrees sum to at
/// least `target` (at least one row).
fn whole_rows(csr: &Csr, order: Order, target: f64, rng: &mut ChaCha8Rng) -> Vec<u32> {
    let mut rows: Vec<u32> = (0..csr.n_rows() as u32).filter(|&r| csr.degree(r as usize) > 0).collect();
    match order {
        Order::Random => rows.shuffle(rng),
        Order::Descending | Order::Ascending => {
            let mut keyed: Vec<(usize, u64, u32)> =
                rows.iter().map(|&r| (csr.degree(r as usize), rng.random::<u64>(), r)).collect();
            match order {
                Order::Descending => keyed.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1))),
                _ => keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1))),
            }
            rows = keyed.into_iter().map(|k| k.2).collect();
        }
    }
    let mut taken = 0usize;
    let mut out = Vec::new();
    for r in rows {
        if !out.is_empty() && taken as f64 >= target {
            break;
        }
        taken += csr.degree(r as usize);
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 60 users with degrees 1..=12 (cycling), over 40 items.
    fn graph() -> Graph {
        let pairs = (0..60u32).flat_map(|u| (0..(u % 12 + 1)).map(move |k| (u, (u * 7 + k * 3) % 40))).collect();
        let (e, _) = Interactions::from_pairs(pairs);
        Graph::from_interactions(60, 40, &e)
    }

    fn users_of(req: &Interactions) -> Vec<u32> {
        let mut u = req.users().to_vec();
        u.dedup();
        u
    }

    #[test]
    fn sizes_are_close_to_the_fraction() {
        let g = graph();
        let max_degree = (0..60).map(|u| g.user_degree(u)).max().unwrap();
        let max_pop = (0..40).map(|i| g.item_degree(i)).max().unwrap();
        for p in Protocol::ALL {
            for fraction in [0.05, 0.2, 0.5] {
                let req = make_request(&g, p, fraction, 11).unwrap();
                let target = fraction * g.n_edges() as f64;
                let slack = match p {
                    Protocol::Random => 1,
                    Protocol::Items => max_pop,
                    _ => max_degree,
                } as f64;
                let n = req.len() as f64;
                assert!(n >= target.floor() && n <= target + slack, "{p} {fraction}: {n} vs {target}");
                assert!(req.iter().all(|(u, i)| g.contains(u, i)));
            }
        }
    }

    #[test]
    fn requests_are_deterministic_for_a_seed() {
        let g = graph();
        for p in Protocol::ALL {
            assert_eq!(make_request(&g, p, 0.1, 5).unwrap(), make_request(&g, p, 0.1, 5).unwrap(), "{p}");
        }
        let a = make_request(&g, Protocol::Users, 0.1, 5).unwrap();
        let b = make_request(&g, Protocol::Users, 0.1, 6).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn users_protocol_removes_every_edge_of_the_chosen_users() {
        let g = graph();
        let req = make_request(&g, Protocol::Users, 0.15, 2).unwrap();
        let users = users_of(&req);
        let expected: usize = users.iter().map(|&u| g.user_degree(u as usize)).sum();
        assert_eq!(req.len(), expected);
        assert!(users.len() > 1);
        // Items: every edge of the chosen items.
        let req = make_request(&g, Protocol::Items, 0.15, 2).unwrap();
        let mut items = req.items().to_vec();
        items.sort_unstable();
        items.dedup();
        assert_eq!(req.len(), items.iter().map(|&i| g.item_degree(i as usize)).sum::<usize>());
    }

    #[test]
    fn popular_takes_the_highest_and_tail_the_lowest_degree_users() {
        let g = graph();
        let degree = |u: u32| g.user_degree(u as usize);
        let pop = users_of(&make_request(&g, Protocol::Popular, 0.1, 3).unwrap());
        let min_picked = pop.iter().map(|&u| degree(u)).min().unwrap();
        let max_other = (0..60u32).filter(|u| !pop.contains(u)).map(degree).max().unwrap();
        assert!(min_picked >= max_other, "picked {min_picked}, left {max_other}");
        assert_eq!(min_picked, 12);
        let tail = users_of(&make_request(&g, Protocol::Tail, 0.1, 3).unwrap());
        let max_picked = tail.iter().map(|&u| degree(u)).max().unwrap();
        let min_other = (0..60u32).filter(|u| !tail.contains(u)).map(degree).min().unwrap();
        assert!(max_picked <= min_other, "picked {max_picked}, left {min_other}");
        assert_eq!(tail.iter().filter(|&&u| degree(u) == 1).count(), 5); // all five degree-1 users
        // Ties among equal degrees are broken by the seed.
        let other = users_of(&make_request(&g, Protocol::Tail, 0.005, 4).unwrap());
        let again = users_of(&make_request(&g, Protocol::Tail, 0.005, 4).unwrap());
        assert_eq!(other, again);
    }

    #[test]
    fn at_least_one_user_or_item_is_taken() {
        let g = graph();
        let req = make_request(&g, Protocol::Tail, 1e-9, 0).unwrap();
        assert_eq!(req.len(), 1);
        let req = make_request(&g, Protocol::Popular, 1e-9, 0).unwrap();
        assert_eq!(req.len(), 12);
    }

    #[test]
    fn invalid_fractions_and_names_are_errors() {
        let g = graph();
        for f in [0.0, 1.0, 1.5, -0.1, f64::NAN] {
            let err = make_request(&g, Protocol::Random, f, 0).unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { .. }), "{f}: {err}");
            assert!(err.to_string().contains("fraction"));
        }
        let empty = Graph::from_interactions(2, 2, &Interactions::default());
        assert!(matches!(make_request(&empty, Protocol::Users, 0.5, 0), Err(Error::InvalidRequest(_))));
        let err = "hubs".parse::<Protocol>().unwrap_err().to_string();
        assert!(err.contains("hubs") && err.contains("popular") && err.contains("edge"), "{err}");
    }

    #[test]
    fn names_parse_and_serialise_in_lowercase() {
        for p in Protocol::ALL {
            assert_eq!(p.name().parse::<Protocol>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert_eq!("Core".parse::<Protocol>().unwrap(), Protocol::Popular);
        assert_eq!("edge".parse::<Protocol>().unwrap(), Protocol::Tail);
        assert_eq!(serde_json::from_str::<Protocol>("\"core\"").unwrap(), Protocol::Popular);
        assert_eq!(serde_json::from_str::<Protocol>("\"edge\"").unwrap(), Protocol::Tail);
    }
}
