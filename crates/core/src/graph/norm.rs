//! The symmetric-normalised bipartite adjacency `Â = D^{-1/2} A D^{-1/2}` and the influence dependency
//! matrix.

use std::sync::Arc;

use super::bipartite::Graph;
use super::par;
use super::sparse::SparseMat;
use crate::data::Interactions;

/// The symmetric-normalised adjacency of a bipartite user–item graph,
///
/// ```text
/// A = [[0, R], [Rᵀ, 0]]        (n_users + n_items)², binary, no self loops
/// Â = D^{-1/2} A D^{-1/2}      D = diag(row sums of A), d^{-1/2} := 0 for d = 0
/// ```
///
/// so `Â[u, U + i] = Â[U + i, u] = 1 / sqrt(d_u · d_i)` for every edge (u, i), and the rows of isolated
/// nodes are empty. Node ids are users `0..n_users` followed by items `n_users..n_users + n_items`. The
/// normalisation is computed in `f64` and stored as `f32`; the matrix is exactly symmetric.
///
/// The sparse matrix sits behind an [`Arc`] so that propagation operators can share it without a copy.
///
/// ```
/// use unlearnrec_core::data::Interactions;
/// use unlearnrec_core::graph::{Graph, NormAdj};
///
/// let (edges, _) = Interactions::from_pairs(vec![(0, 0), (0, 1), (1, 1)]);
/// let adj = NormAdj::from_graph(&Graph::from_interactions(2, 2, &edges));
/// assert_eq!(adj.n_nodes(), 4);
/// // d(user 0) = 2, d(item 1) = 2.
/// assert_eq!(adj.as_sparse().get(0, 3), 0.5);
/// assert!(adj.as_sparse().is_symmetric());
/// ```
#[derive(Clone, Debug)]
pub struct NormAdj {
    n_users: usize,
    n_items: usize,
    mat: Arc<SparseMat>,
}

impl NormAdj {
    /// `Â` of `graph`, built from its two CSR orientations in O(nnz + nodes), in parallel over rows: user
    /// row `u` is `user_items.row(u)` shifted by `n_users`, item row `i` is `item_users.row(i)`.
    pub fn from_graph(graph: &Graph) -> NormAdj {
        let (nu, ni) = (graph.n_users(), graph.n_items());
        let (ui, iu) = (graph.user_items(), graph.item_users());
        let n_edges = ui.nnz();
        let mut indptr = Vec::with_capacity(nu + ni + 1);
        indptr.extend_from_slice(ui.indptr());
        indptr.extend(iu.indptr()[1..].iter().map(|&p| p + n_edges));
        let nnz = 2 * n_edges;
        let mut indices = vec![0u32; nnz];
        let mut values = vec![0f32; nnz];
        let inv_sqrt = |du: usize, di: usize| (1.0 / ((du as f64) * (di as f64)).sqrt()) as f32;
        par::fill_rows(&indptr, &mut indices, &mut values, |rows, idx, val| {
            let mut k = 0;
            for r in rows {
                if r < nu {
                    let du = ui.degree(r);
                    for &i in ui.row(r) {
                        idx[k] = i + nu as u32;
                        val[k] = inv_sqrt(du, iu.degree(i as usize));
                        k += 1;
                    }
                } else {
                    let di = iu.degree(r - nu);
                    for &u in iu.row(r - nu) {
                        idx[k] = u;
                        val[k] = inv_sqrt(ui.degree(u as usize), di);
                        k += 1;
                    }
                }
            }
        });
        let n = nu + ni;
        NormAdj { n_users: nu, n_items: ni, mat: Arc::new(SparseMat::new_unchecked(n, n, indptr, indices, values)) }
    }

    /// The influence dependency matrix of an unlearning request (docs/method.md §5): `Â_Δ = D_Δ^{-1/2} A_Δ D_Δ^{-1/2}`,
    /// the normalised adjacency of the request edges alone, with degrees counted within the request. Rows
    /// and columns of nodes that no request edge touches are empty.
    ///
    /// # Panics
    /// When a request edge has an id out of range.
    #[track_caller]
    pub fn idm(n_users: usize, n_items: usize, request: &Interactions) -> NormAdj {
        NormAdj::from_graph(&Graph::from_interactions(n_users, n_items, request))
    }

    /// The number of users.
    pub fn n_users(&self) -> usize {
        self.n_users
    }

    /// The number of items.
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// The number of nodes, `n_users + n_items`.
    pub fn n_nodes(&self) -> usize {
        self.n_users + self.n_items
    }

    /// The matrix, `n_nodes × n_nodes`.
    pub fn as_sparse(&self) -> &SparseMat {
        &self.mat
    }

    /// The shared handle of the matrix (for operators that keep it alive).
    pub fn shared(&self) -> &Arc<SparseMat> {
        &self.mat
    }

    /// A per-node 0/1 mask: 1 for nodes with at least one edge (for an IDM: the request's endpoints).
    pub fn node_mask(&self) -> Vec<f32> {
        let p = self.mat.indptr();
        (0..self.n_nodes()).map(|r| if p[r + 1] > p[r] { 1.0 } else { 0.0 }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::testutil::{self, Golden};
    use proptest::prelude::*;

    fn edges(pairs: &[(u32, u32)]) -> Interactions {
        Interactions::from_pairs(pairs.to_vec()).0
    }

    /// Dense f64 `D^{-1/2} A D^{-1/2}` straight from the definition.
    fn dense_reference(nu: usize, ni: usize, e: &Interactions) -> Vec<f64> {
        let n = nu + ni;
        let mut a = vec![0.0f64; n * n];
        for (u, i) in e.iter() {
            let (u, i) = (u as usize, nu + i as usize);
            a[u * n + i] = 1.0;
            a[i * n + u] = 1.0;
        }
        let d: Vec<f64> = (0..n).map(|r| a[r * n..(r + 1) * n].iter().sum()).collect();
        let s: Vec<f64> = d.iter().map(|&x| if x > 0.0 { 1.0 / x.sqrt() } else { 0.0 }).collect();
        for r in 0..n {
            for c in 0..n {
                a[r * n + c] *= s[r] * s[c];
            }
        }
        a
    }

    fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() <= tol, "{what}[{k}]: got {g}, want {w}");
        }
    }

    #[test]
    fn small_graph_matches_definition() {
        let e = edges(&[(0, 0), (0, 1), (1, 1), (2, 1), (2, 2)]);
        let g = Graph::from_interactions(4, 3, &e);
        let adj = NormAdj::from_graph(&g);
        assert_eq!((adj.n_users(), adj.n_items(), adj.n_nodes()), (4, 3, 7));
        let m = adj.as_sparse();
        assert_eq!(m.nnz(), 10);
        // d(user 2) = 2, d(item 1) = 3.
        assert_eq!(m.get(2, 5), (1.0 / 6f64.sqrt()) as f32);
        assert_eq!(m.get(5, 2), m.get(2, 5));
        // User 3 is isolated: empty row and column.
        assert_eq!(m.row(3).0.len(), 0);
        assert_eq!(adj.node_mask(), [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]);
        assert_close(&m.to_dense(), &dense_reference(4, 3, &e), 1e-7, "Â");
    }

    #[test]
    fn idm_touches_only_request_nodes() {
        let train = edges(&[(0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (3, 2)]);
        let req = edges(&[(0, 1), (1, 1), (2, 0)]);
        let (nu, ni) = (4, 3);
        let idm = NormAdj::idm(nu, ni, &req);
        let m = idm.as_sparse();
        let touched = [true, true, true, false, true, true, false];
        for r in 0..nu + ni {
            assert_eq!(!m.row(r).0.is_empty(), touched[r], "row {r}");
            for &c in m.row(r).0 {
                assert!(touched[c as usize], "entry ({r}, {c}) touches a node outside the request");
            }
        }
        // Degrees within the request only: d(user 0) = 1, d(item 1) = 2 (users 0 and 1).
        assert_eq!(m.get(0, 5), (1.0 / 2f64.sqrt()) as f32);
        assert_eq!(m.get(2, 4), 1.0);
        assert_close(&m.to_dense(), &dense_reference(nu, ni, &req), 1e-7, "IDM");
        // Not the same as the rows of Â of the full graph.
        let full = NormAdj::from_graph(&Graph::from_interactions(nu, ni, &train));
        assert_ne!(full.as_sparse().get(0, 5), m.get(0, 5));
        assert_eq!(NormAdj::idm(nu, ni, &Interactions::default()).as_sparse().nnz(), 0);
    }

    /// Largest |eigenvalue| of a dense symmetric matrix by power iteration on `M²`.
    fn spectral_radius(m: &[f64], n: usize) -> f64 {
        let mut x: Vec<f64> = (0..n).map(|k| 1.0 + (k as f64 * 0.37).sin() * 0.5).collect();
        let mut lambda = 0.0;
        for _ in 0..500 {
            let y: Vec<f64> = (0..n).map(|r| (0..n).map(|c| m[r * n + c] * x[c]).sum()).collect();
            let z: Vec<f64> = (0..n).map(|r| (0..n).map(|c| m[r * n + c] * y[c]).sum()).collect();
            let norm = z.iter().map(|v| v * v).sum::<f64>().sqrt();
            let xn = x.iter().map(|v| v * v).sum::<f64>().sqrt();
            if norm == 0.0 {
                return 0.0;
            }
            lambda = (norm / xn).sqrt();
            x = z.iter().map(|v| v / norm).collect();
        }
        lambda
    }

    #[test]
    fn spectrum_lies_in_unit_interval() {
        let e = edges(&[(0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 2), (3, 1)]);
        let m = NormAdj::from_graph(&Graph::from_interactions(4, 3, &e)).as_sparse().to_dense();
        let m: Vec<f64> = m.iter().map(|&v| v as f64).collect();
        let rho = spectral_radius(&m, 7);
        assert!((rho - 1.0).abs() < 1e-5, "spectral radius {rho}");
    }

    fn arb_graph() -> impl Strategy<Value = (usize, usize, Vec<(u32, u32)>)> {
        (1usize..9, 1usize..9).prop_flat_map(|(nu, ni)| {
            (Just(nu), Just(ni), proptest::collection::vec((0..nu as u32, 0..ni as u32), 0..40))
        })
    }

    proptest! {
        #[test]
        fn prop_norm_adj_is_symmetric_normalisation((nu, ni, pairs) in arb_graph()) {
            let e = edges(&pairs);
            let g = Graph::from_interactions(nu, ni, &e);
            let adj = NormAdj::from_graph(&g);
            let m = adj.as_sparse();
            prop_assert!(m.is_symmetric());
            prop_assert_eq!(m.nnz(), 2 * e.len());
            let deg = |node: usize| if node < nu { g.user_degree(node) } else { g.item_degree(node - nu) };
            for r in 0..nu + ni {
                let (cols, vals) = m.row(r);
                prop_assert!(cols.windows(2).all(|w| w[0] < w[1]));
                for (&c, &v) in cols.iter().zip(vals) {
                    // Bipartite: users link to items only.
                    prop_assert_eq!(r < nu, (c as usize) >= nu);
                    let want = (1.0 / ((deg(r) as f64) * (deg(c as usize) as f64)).sqrt()) as f32;
                    prop_assert_eq!(v, want);
                }
                // D^{1/2} 1 is a fixed point: Σ_c Â[r, c] sqrt(d_c) = sqrt(d_r).
                let fixed: f64 = cols.iter().zip(vals).map(|(&c, &v)| v as f64 * (deg(c as usize) as f64).sqrt()).sum();
                prop_assert!((fixed - (deg(r) as f64).sqrt()).abs() < 1e-5);
            }
            // The IDM of the whole edge set is Â itself.
            let idm = NormAdj::idm(nu, ni, &e);
            prop_assert_eq!(idm.as_sparse(), m);
        }
    }

    #[test]
    fn large_graph_parallel_fill_matches_serial_definition() {
        // Enough edges to cross the parallel threshold.
        let (nu, ni) = (4000u32, 700u32);
        let pairs: Vec<_> = (0..nu).flat_map(|u| (0..20).map(move |k| (u, (u * 31 + k * k * 7) % ni))).collect();
        let e = edges(&pairs);
        let g = Graph::from_interactions(nu as usize, ni as usize, &e);
        let m = NormAdj::from_graph(&g);
        let m = m.as_sparse();
        assert!(m.is_symmetric());
        for (u, i) in e.iter() {
            let want = (1.0 / ((g.user_degree(u as usize) * g.item_degree(i as usize)) as f64).sqrt()) as f32;
            assert_eq!(m.get(u as usize, nu as usize + i as usize), want);
        }
    }

    #[test]
    fn golden_adjacencies() {
        let Some(golden) = Golden::load() else { return };
        let (nu, ni) = golden.sizes();
        let train = golden.edges("train_edges");
        let request = golden.edges("request_edges");
        let remaining = golden.edges("remaining_edges");
        let g = Graph::from_interactions(nu, ni, &train);
        let full = NormAdj::from_graph(&g);
        let rest = NormAdj::from_graph(&g.remove(&request));
        let idm = NormAdj::idm(nu, ni, &request);
        let n = nu + ni;
        for (key, adj) in [("A_hat_full", &full), ("A_hat_remaining", &rest), ("A_hat_request_idm", &idm)] {
            let (shape, want) = golden.tensor(&["graph", key]);
            assert_eq!(shape, [n, n], "{key} shape");
            assert_close(&adj.as_sparse().to_dense(), &want, 1e-6, key);
        }
        assert_eq!(g.remove(&request).to_interactions(), remaining);
        let (_, mask) = golden.tensor(&["graph", "request_node_mask"]);
        let mask: Vec<f32> = mask.iter().map(|&v| v as f32).collect();
        assert_eq!(idm.node_mask(), mask);
    }

    #[test]
    fn golden_loader_reads_tensors() {
        let Some(golden) = Golden::load() else { return };
        assert!(golden.get(&["graph", "no_such_key"]).is_none());
        assert!(golden.get(&["graph", "A_hat_full"]).is_some());
        let (shape, data) = golden.tensor(&["inputs", "E0"]);
        assert_eq!(shape.iter().product::<usize>(), data.len());
        let _ = testutil::golden_path();
    }
}
