//! The bipartite user–item graph, stored as CSR both ways.

use super::csr::Csr;
use super::par::{self, MergeOp};
use crate::data::Interactions;

/// The bipartite interaction graph: `user_items` (`n_users × n_items`) and its transpose `item_users`
/// (`n_items × n_users`), both with sorted rows.
///
/// ```
/// use unlearnrec_core::data::Interactions;
/// use unlearnrec_core::graph::Graph;
///
/// let (edges, _) = Interactions::from_pairs(vec![(0, 1), (1, 1), (1, 0)]);
/// let g = Graph::from_interactions(2, 3, &edges);
/// assert_eq!(g.n_edges(), 3);
/// assert_eq!(g.item_users().row(1), &[0, 1]);
/// assert_eq!(g.item_degree(2), 0);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Graph {
    n_users: usize,
    n_items: usize,
    user_items: Csr,
    item_users: Csr,
}

/// The rows of `edges` as an `n_users × n_items` pattern, dropping pairs with an id out of range when
/// `lenient`, panicking on them otherwise.
#[track_caller]
fn pattern(n_users: usize, n_items: usize, edges: &Interactions, lenient: bool) -> Csr {
    let (users, items) = (edges.users(), edges.items());
    // `users` is sorted: everything from the first out-of-range user on is out of range.
    let n_in = users.partition_point(|&u| (u as usize) < n_users);
    if !lenient {
        if let Some(&u) = users.get(n_in) {
            panic!("user id {u} is out of range (there are {n_users})");
        }
        if let Some(&i) = items.iter().find(|&&i| i as usize >= n_items) {
            panic!("item id {i} is out of range (there are {n_items})");
        }
    }
    let mut counts = vec![0usize; n_users];
    let mut indices = Vec::with_capacity(n_in);
    for (&u, &i) in users[..n_in].iter().zip(&items[..n_in]) {
        if (i as usize) < n_items {
            counts[u as usize] += 1;
            indices.push(i);
        }
    }
    Csr::new_unchecked(n_items, par::prefix_sum(&counts), indices)
}

/// The transpose of a pattern with `n_cols` columns.
fn transpose_pattern(a: &Csr) -> Csr {
    let unit = vec![(); a.nnz()];
    let (indptr, indices, _) = par::transpose(a.n_cols(), a.indptr(), a.indices(), &unit);
    Csr::new_unchecked(a.n_rows(), indptr, indices)
}

/// Row-wise merge of two patterns of the same shape.
fn merge(a: &Csr, b: &Csr, op: MergeOp) -> Csr {
    let (indptr, indices) = par::merge_patterns(a.indptr(), a.indices(), b.indptr(), b.indices(), op);
    Csr::new_unchecked(a.n_cols(), indptr, indices)
}

impl Graph {
    /// Builds the graph of `edges` over `n_users` users and `n_items` items in O(nnz + n_users + n_items);
    /// the transpose comes from a counting sort.
    ///
    /// # Panics
    /// When an edge has a user id `>= n_users` or an item id `>= n_items`, or `n_users + n_items` does not
    /// fit in a `u32` node id.
    #[track_caller]
    pub fn from_interactions(n_users: usize, n_items: usize, edges: &Interactions) -> Graph {
        assert!(n_users + n_items <= u32::MAX as usize, "{n_users} users and {n_items} items overflow u32 node ids");
        let user_items = pattern(n_users, n_items, edges, false);
        let item_users = transpose_pattern(&user_items);
        Graph { n_users, n_items, user_items, item_users }
    }

    /// The number of users (rows of [`Graph::user_items`]).
    pub fn n_users(&self) -> usize {
        self.n_users
    }

    /// The number of items (rows of [`Graph::item_users`]).
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// The number of user–item edges.
    pub fn n_edges(&self) -> usize {
        self.user_items.nnz()
    }

    /// The items of each user: an `n_users × n_items` pattern.
    pub fn user_items(&self) -> &Csr {
        &self.user_items
    }

    /// The users of each item: an `n_items × n_users` pattern, the transpose of [`Graph::user_items`].
    pub fn item_users(&self) -> &Csr {
        &self.item_users
    }

    /// The number of items of `user`.
    ///
    /// # Panics
    /// When `user >= n_users`.
    pub fn user_degree(&self, user: usize) -> usize {
        self.user_items.degree(user)
    }

    /// The number of users of `item`.
    ///
    /// # Panics
    /// When `item >= n_items`.
    pub fn item_degree(&self, item: usize) -> usize {
        self.item_users.degree(item)
    }

    /// True when (`user`, `item`) is an edge.
    pub fn contains(&self, user: u32, item: u32) -> bool {
        self.user_items.contains(user as usize, item)
    }

    /// The edges as sorted (user, item) interactions.
    pub fn to_interactions(&self) -> Interactions {
        let mut users = Vec::with_capacity(self.n_edges());
        for u in 0..self.n_users {
            users.extend(std::iter::repeat_n(u as u32, self.user_items.degree(u)));
        }
        Interactions::from_sorted(users, self.user_items.indices().to_vec())
    }

    /// The graph without `edges`: O(nnz) merges per row, parallel over rows, on both orientations.
    ///
    /// Edges that are not in the graph (ids out of range included) are ignored; callers validate requests.
    pub fn remove(&self, edges: &Interactions) -> Graph {
        let req = pattern(self.n_users, self.n_items, edges, true);
        let req_t = transpose_pattern(&req);
        Graph {
            n_users: self.n_users,
            n_items: self.n_items,
            user_items: merge(&self.user_items, &req, MergeOp::Difference),
            item_users: merge(&self.item_users, &req_t, MergeOp::Difference),
        }
    }

    /// The union of the graph and `edges`; edges already present are kept once.
    ///
    /// # Panics
    /// When an edge has an id out of range.
    #[track_caller]
    pub fn add(&self, edges: &Interactions) -> Graph {
        let req = pattern(self.n_users, self.n_items, edges, false);
        let req_t = transpose_pattern(&req);
        Graph {
            n_users: self.n_users,
            n_items: self.n_items,
            user_items: merge(&self.user_items, &req, MergeOp::Union),
            item_users: merge(&self.item_users, &req_t, MergeOp::Union),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn edges(pairs: &[(u32, u32)]) -> Interactions {
        Interactions::from_pairs(pairs.to_vec()).0
    }

    /// Checks both orientations against each other and the CSR invariants.
    fn check_consistent(g: &Graph) {
        let (ui, iu) = (g.user_items(), g.item_users());
        assert_eq!((ui.n_rows(), ui.n_cols()), (g.n_users(), g.n_items()));
        assert_eq!((iu.n_rows(), iu.n_cols()), (g.n_items(), g.n_users()));
        // Csr::new validates sortedness and ranges.
        let _ = Csr::new(ui.n_cols(), ui.indptr().to_vec(), ui.indices().to_vec());
        let _ = Csr::new(iu.n_cols(), iu.indptr().to_vec(), iu.indices().to_vec());
        assert_eq!(ui.nnz(), iu.nnz());
        for u in 0..g.n_users() {
            for &i in ui.row(u) {
                assert!(iu.contains(i as usize, u as u32), "({u}, {i}) missing from item_users");
            }
        }
    }

    #[test]
    fn from_interactions_builds_both_orientations() {
        let e = edges(&[(0, 0), (0, 2), (2, 1), (2, 2), (1, 2)]);
        let g = Graph::from_interactions(4, 3, &e);
        check_consistent(&g);
        assert_eq!(g.n_edges(), 5);
        assert_eq!(g.user_items().row(0), &[0, 2]);
        assert_eq!(g.user_items().row(3), &[] as &[u32]);
        assert_eq!(g.item_users().row(2), &[0, 1, 2]);
        assert_eq!((g.user_degree(2), g.item_degree(1)), (2, 1));
        assert_eq!(g.to_interactions(), e);
    }

    #[test]
    #[should_panic(expected = "item id 3 is out of range")]
    fn from_interactions_rejects_item_out_of_range() {
        Graph::from_interactions(2, 3, &edges(&[(0, 3)]));
    }

    #[test]
    #[should_panic(expected = "user id 2 is out of range")]
    fn from_interactions_rejects_user_out_of_range() {
        Graph::from_interactions(2, 3, &edges(&[(0, 0), (2, 0)]));
    }

    #[test]
    fn remove_ignores_absent_edges() {
        let e = edges(&[(0, 0), (1, 1)]);
        let g = Graph::from_interactions(2, 2, &e);
        let absent = edges(&[(0, 1), (1, 0), (5, 0), (0, 9)]);
        assert_eq!(g.remove(&absent), g);
        assert_eq!(g.remove(&Interactions::default()), g);
    }

    #[test]
    fn remove_and_add_small() {
        let g = Graph::from_interactions(3, 3, &edges(&[(0, 0), (0, 1), (1, 1), (2, 0), (2, 2)]));
        let r = g.remove(&edges(&[(0, 1), (2, 0)]));
        check_consistent(&r);
        assert_eq!(r.to_interactions(), edges(&[(0, 0), (1, 1), (2, 2)]));
        assert_eq!(r.item_users().row(0), &[0]);
        assert_eq!(r.add(&edges(&[(0, 1), (2, 0)])), g);
        assert_eq!(g.add(&edges(&[(0, 0)])), g);
    }

    /// A large graph crosses the parallel thresholds of the merge and fill kernels.
    #[test]
    fn remove_and_add_large_parallel() {
        let (nu, ni) = (3000u32, 500u32);
        let all: Vec<_> = (0..nu).flat_map(|u| (0..40).map(move |k| (u, (u * 7 + k * 13) % ni))).collect();
        let g = Graph::from_interactions(nu as usize, ni as usize, &edges(&all));
        check_consistent(&g);
        let req: Vec<_> = all.iter().copied().filter(|&(u, i)| (u + i) % 5 == 0).collect();
        let req = edges(&req);
        let r = g.remove(&req);
        check_consistent(&r);
        assert_eq!(r.n_edges(), g.n_edges() - req.len());
        assert!(req.iter().all(|(u, i)| !r.contains(u, i)));
        assert_eq!(r.add(&req), g);
    }

    fn arb_graph() -> impl Strategy<Value = (usize, usize, Vec<(u32, u32)>, Vec<bool>)> {
        (1usize..8, 1usize..8).prop_flat_map(|(nu, ni)| {
            let pairs = proptest::collection::vec((0..nu as u32, 0..ni as u32), 0..30);
            let flags = proptest::collection::vec(any::<bool>(), 30);
            (Just(nu), Just(ni), pairs, flags)
        })
    }

    proptest! {
        #[test]
        fn prop_remove_then_add_restores((nu, ni, pairs, flags) in arb_graph()) {
            let e = edges(&pairs);
            let g = Graph::from_interactions(nu, ni, &e);
            check_consistent(&g);
            prop_assert_eq!(g.to_interactions(), e.clone());
            let req: Vec<_> = e.iter().zip(&flags).filter(|(_, f)| **f).map(|(p, _)| p).collect();
            let req = edges(&req);
            let r = g.remove(&req);
            check_consistent(&r);
            prop_assert_eq!(r.n_edges(), g.n_edges() - req.len());
            for (u, i) in e.iter() {
                prop_assert_eq!(r.contains(u, i), !req.contains(u, i));
            }
            prop_assert_eq!(r.add(&req), g.clone());
            // Removing what is already gone changes nothing.
            prop_assert_eq!(r.remove(&req), r);
        }
    }
}
