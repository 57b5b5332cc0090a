//! The interaction graph: CSR storage, the bipartite graph, the normalised adjacency and the influence
//! dependency matrix.
//!
//! - [`Csr`]: a pattern (rows of sorted column ids); [`SparseMat`]: CSR with `f32` values.
//! - [`Graph`]: the user–item graph as CSR both ways, with `remove` (unlearning) and `add`.
//! - [`Relabel`]: a renumbering of users and items for memory locality (training's node order).
//! - [`NormAdj`]: `Â = D^{-1/2} A D^{-1/2}` of the bipartite adjacency `A = [[0, R], [Rᵀ, 0]]`, users first,
//!   and, through [`NormAdj::idm`], the influence dependency matrix `Â_Δ` of a request.

mod bipartite;
mod csr;
mod norm;
mod order;
mod par;
mod sparse;
#[cfg(test)]
pub(crate) mod testutil;

pub use bipartite::Graph;
pub use csr::Csr;
pub use norm::NormAdj;
pub use order::{Relabel, rcm_order};
pub use sparse::SparseMat;

#[cfg(test)]
mod timing {
    //! Release-mode timings on Gowalla: `cargo test --release -p unlearnrec-core graph::timing -- --ignored
    //! --nocapture`.

    use std::time::Instant;

    use super::*;
    use crate::data::Interactions;

    #[test]
    #[ignore = "timing; run in release with --nocapture"]
    fn gowalla_build_and_remove_timing() {
        let Some((nu, ni, edges)) = testutil::gowalla_train() else { return };
        println!("gowalla: {nu} users, {ni} items, {} edges", edges.len());
        let best = |f: &mut dyn FnMut()| {
            (0..7)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .fold(f64::INFINITY, f64::min)
        };
        let mut g = None;
        let t_graph = best(&mut || g = Some(Graph::from_interactions(nu, ni, &edges)));
        let g = g.expect("built");
        let mut adj = None;
        let t_adj = best(&mut || adj = Some(NormAdj::from_graph(&g)));
        let adj = adj.expect("built");
        assert_eq!(adj.as_sparse().nnz(), 2 * edges.len());
        // Every 100th edge: 1 % of the graph.
        let (u, i): (Vec<u32>, Vec<u32>) = edges.iter().step_by(100).unzip();
        let req = Interactions::from_sorted(u, i);
        let mut rest = None;
        let t_remove = best(&mut || rest = Some(g.remove(&req)));
        let rest = rest.expect("built");
        assert_eq!(rest.n_edges(), g.n_edges() - req.len());
        let mut sink = None;
        let t_rest_adj = best(&mut || sink = Some(NormAdj::from_graph(&rest)));
        let t_idm = best(&mut || sink = Some(NormAdj::idm(nu, ni, &req)));
        assert!(sink.is_some());
        println!(
            "best of 7 on {} threads: Graph::from_interactions {t_graph:.1} ms, NormAdj::from_graph {t_adj:.1} ms, \
             remove 1 % ({} edges) {t_remove:.1} ms, Â of the remaining graph {t_rest_adj:.1} ms, IDM {t_idm:.1} ms",
            rayon::current_num_threads(),
            req.len()
        );
    }
}
