//! A node order for memory locality: training renumbers users and items so that the rows one SpMM row
//! gathers lie near each other in the table ([`Relabel`]).
//!
//! The product `Â·E` reads, for every node, the rows of its neighbours: 1.6 M random 256-byte reads per
//! product on Gowalla, which bound it far below the memory bandwidth. Reverse Cuthill–McKee (a breadth-first
//! order from a low-degree node, each node's unvisited neighbours by increasing degree, the whole order
//! reversed) numbers neighbours close to each other, so that many gathered rows are still in the cache.
//! Users keep the ids before items (the model's layout), each kind in its RCM order. Measured with
//! `cargo run --release --example locality` (docs/benchmarks.md).

use std::collections::VecDeque;

use super::{Csr, Graph};
use crate::data::Interactions;

/// The user–item graph's nodes (user `u` is node `u`, item `i` node `n_users + i`) in reverse Cuthill–McKee
/// order: breadth-first over every component, each started from its lowest-degree node, each node's unvisited
/// neighbours by increasing degree (ties by id), the whole order reversed. Deterministic.
pub fn rcm_order(graph: &Graph) -> Vec<u32> {
    let (nu, ni) = (graph.n_users(), graph.n_items());
    let n = nu + ni;
    let nbrs = |v: usize| -> (&[u32], usize) {
        if v < nu { (graph.user_items().row(v), nu) } else { (graph.item_users().row(v - nu), 0) }
    };
    let deg = |v: usize| nbrs(v).0.len();
    let mut by_deg: Vec<usize> = (0..n).collect();
    by_deg.sort_by_key(|&v| (deg(v), v));
    let mut seen = vec![false; n];
    let mut order = Vec::with_capacity(n);
    let mut queue = VecDeque::new();
    let mut next: Vec<usize> = Vec::new();
    for &s in &by_deg {
        if seen[s] {
            continue;
        }
        seen[s] = true;
        queue.push_back(s);
        while let Some(v) = queue.pop_front() {
            order.push(v as u32);
            let (row, off) = nbrs(v);
            next.clear();
            next.extend(row.iter().map(|&c| c as usize + off).filter(|&c| !seen[c]));
            next.sort_by_key(|&c| (deg(c), c));
            for &c in &next {
                seen[c] = true;
                queue.push_back(c);
            }
        }
    }
    order.reverse();
    order
}

/// A renumbering of a graph's users and items (each a permutation of its own id range).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relabel {
    /// The new id of each user.
    pub user_new: Vec<u32>,
    /// The new id of each item.
    pub item_new: Vec<u32>,
}

impl Relabel {
    /// Reverse Cuthill–McKee ([`rcm_order`]), users then items (module docs). Deterministic.
    pub fn rcm(graph: &Graph) -> Relabel {
        let nu = graph.n_users();
        let (mut user_new, mut item_new) = (vec![0u32; nu], vec![0u32; graph.n_items()]);
        let (mut pu, mut pi) = (0u32, 0u32);
        for v in rcm_order(graph) {
            let v = v as usize;
            if v < nu {
                user_new[v] = pu;
                pu += 1;
            } else {
                item_new[v - nu] = pi;
                pi += 1;
            }
        }
        Relabel { user_new, item_new }
    }

    fn inverse(p: &[u32]) -> Vec<u32> {
        let mut inv = vec![0u32; p.len()];
        for (v, &q) in p.iter().enumerate() {
            inv[q as usize] = v as u32;
        }
        inv
    }

    /// `edges` with both ends renumbered.
    pub fn edges(&self, edges: &Interactions) -> Interactions {
        let pairs = edges.iter().map(|(u, i)| (self.user_new[u as usize], self.item_new[i as usize])).collect();
        Interactions::from_pairs(pairs).0
    }

    /// The graph renumbered.
    pub fn graph(&self, graph: &Graph) -> Graph {
        Graph::from_interactions(graph.n_users(), graph.n_items(), &self.edges(&graph.to_interactions()))
    }

    /// A users × items pattern renumbered.
    pub fn user_items(&self, csr: &Csr) -> Csr {
        let users = (0..csr.n_rows()).flat_map(|u| std::iter::repeat_n(u as u32, csr.degree(u))).collect();
        let edges = self.edges(&Interactions::from_sorted(users, csr.indices().to_vec()));
        Graph::from_interactions(csr.n_rows(), csr.n_cols(), &edges).user_items().clone()
    }

    /// Node `v` (users first, then items) renumbered.
    pub fn node(&self, v: u32) -> u32 {
        let nu = self.user_new.len();
        if (v as usize) < nu { self.user_new[v as usize] } else { nu as u32 + self.item_new[v as usize - nu] }
    }

    /// A row-major node table (`(n_users + n_items, dim)`) with its rows moved to their new ids.
    pub fn rows_to_new(&self, table: &[f32], dim: usize) -> Vec<f32> {
        self.move_rows(table, dim, false)
    }

    /// The inverse of [`Relabel::rows_to_new`].
    pub fn rows_to_old(&self, table: &[f32], dim: usize) -> Vec<f32> {
        self.move_rows(table, dim, true)
    }

    fn move_rows(&self, table: &[f32], dim: usize, back: bool) -> Vec<f32> {
        let nu = self.user_new.len();
        let n = nu + self.item_new.len();
        assert_eq!(table.len(), n * dim, "a node table of the relabelled graph's shape");
        let (u, i) = if back {
            (Self::inverse(&self.user_new), Self::inverse(&self.item_new))
        } else {
            (self.user_new.clone(), self.item_new.clone())
        };
        let mut out = vec![0f32; table.len()];
        for v in 0..n {
            let to = if v < nu { u[v] as usize } else { nu + i[v - nu] as usize };
            out[to * dim..(to + 1) * dim].copy_from_slice(&table[v * dim..(v + 1) * dim]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph() -> Graph {
        let pairs = vec![(0, 0), (0, 3), (1, 1), (2, 1), (2, 2), (3, 3), (4, 0), (4, 2), (4, 3), (5, 4)];
        Graph::from_interactions(7, 6, &Interactions::from_pairs(pairs).0)
    }

    fn identity(n_users: usize, n_items: usize) -> Relabel {
        Relabel { user_new: (0..n_users as u32).collect(), item_new: (0..n_items as u32).collect() }
    }

    fn is_permutation(p: &[u32]) -> bool {
        let mut s = p.to_vec();
        s.sort_unstable();
        s.iter().enumerate().all(|(k, &v)| v as usize == k)
    }

    #[test]
    fn rcm_is_a_deterministic_permutation_of_each_kind() {
        let g = graph();
        let r = Relabel::rcm(&g);
        assert!(is_permutation(&r.user_new) && is_permutation(&r.item_new), "{r:?}");
        assert_eq!(r, Relabel::rcm(&g));
        assert_ne!(r, identity(7, 6), "this graph's order is not already RCM's");
    }

    #[test]
    fn relabelling_keeps_the_graph_and_moves_rows_both_ways() {
        let g = graph();
        let r = Relabel::rcm(&g);
        let h = r.graph(&g);
        assert_eq!(h.n_edges(), g.n_edges());
        for (u, i) in g.to_interactions().iter() {
            assert!(h.contains(r.user_new[u as usize], r.item_new[i as usize]));
        }
        assert_eq!(r.user_items(g.user_items()), *h.user_items());
        let dim = 3;
        let table: Vec<f32> = (0..13 * dim).map(|k| k as f32).collect();
        let moved = r.rows_to_new(&table, dim);
        for v in 0..13u32 {
            let to = r.node(v) as usize;
            assert_eq!(&moved[to * dim..(to + 1) * dim], &table[v as usize * dim..(v as usize + 1) * dim]);
        }
        assert_eq!(r.rows_to_old(&moved, dim), table);
    }

    #[test]
    fn neighbours_end_up_closer_than_in_a_shuffled_order() {
        // A long path user 0 – item 0 – user 1 – item 1 – … numbered in a scrambled order: RCM puts each
        // user next to its items (bandwidth 1 in the users-then-items layout's own kinds).
        let n = 50u32;
        let scramble = |k: u32| (k * 17) % n;
        let mut pairs = Vec::new();
        for k in 0..n {
            pairs.push((scramble(k), scramble(k)));
            if k + 1 < n {
                pairs.push((scramble(k + 1), scramble(k)));
            }
        }
        let g = Graph::from_interactions(n as usize, n as usize, &Interactions::from_pairs(pairs).0);
        let spread = |r: &Relabel| -> u64 {
            g.to_interactions()
                .iter()
                .map(|(u, i)| u64::from(r.user_new[u as usize].abs_diff(r.item_new[i as usize])))
                .sum()
        };
        let r = Relabel::rcm(&g);
        assert!(
            spread(&r) * 4 < spread(&identity(n as usize, n as usize)),
            "{} vs {}",
            spread(&r),
            spread(&identity(n as usize, n as usize))
        );
    }
}
