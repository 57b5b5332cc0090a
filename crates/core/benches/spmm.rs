//! SpMM and adjacency timings: `cargo bench -p unlearnrec-core --bench spmm`.
//!
//! Uses Gowalla's `train.txt` (LightGCN format) from `$UNLEARNREC_DATA/gowalla` (default `shared/data/gowalla`) when
//! present, and always a synthetic 70k-node bipartite graph with 2M stored entries (1M edges, skewed
//! degrees). Prints the best of several runs.

use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use unlearnrec_core::data::Interactions;
use unlearnrec_core::graph::{Graph, NormAdj};
use unlearnrec_core::tensor::{SpMat, spmm, spmm_into};

fn best_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn gowalla() -> Option<(usize, usize, Interactions)> {
    let root = std::env::var("UNLEARNREC_DATA")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data").into());
    let ds = unlearnrec_core::data::load(&std::path::Path::new(&root).join("gowalla"), &Default::default()).ok()?;
    Some((ds.n_users(), ds.n_items(), ds.train))
}

/// `n_edges` distinct edges over `n_users × n_items`, items drawn with a skew (squared uniform) so that
/// item degrees follow a heavy-tailed profile.
fn synthetic(n_users: usize, n_items: usize, n_edges: usize) -> Interactions {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut pairs = Vec::with_capacity(n_edges + n_edges / 8);
    loop {
        while pairs.len() < n_edges + n_edges / 8 {
            let u = rng.random_range(0..n_users as u32);
            let r: f64 = rng.random();
            pairs.push((u, ((r * r) * n_items as f64) as u32));
        }
        let (edges, _) = Interactions::from_pairs(pairs.clone());
        if edges.len() >= n_edges {
            let (u, i): (Vec<u32>, Vec<u32>) = edges.iter().take(n_edges).unzip();
            return Interactions::from_sorted(u, i);
        }
        pairs = edges.iter().collect();
    }
}

fn run(name: &str, n_users: usize, n_items: usize, edges: &Interactions) {
    let t_graph = best_ms(5, || drop(Graph::from_interactions(n_users, n_items, edges)));
    let g = Graph::from_interactions(n_users, n_items, edges);
    let t_adj = best_ms(5, || drop(NormAdj::from_graph(&g)));
    let adj = NormAdj::from_graph(&g);
    let (u, i): (Vec<u32>, Vec<u32>) = edges.iter().step_by(100).unzip();
    let req = Interactions::from_sorted(u, i);
    let t_remove = best_ms(5, || drop(g.remove(&req)));
    println!(
        "{name}: {} nodes, {} edges, Â nnz {}: Graph {t_graph:.1} ms, Â {t_adj:.1} ms, remove 1 % {t_remove:.1} ms",
        adj.n_nodes(),
        edges.len(),
        adj.as_sparse().nnz()
    );
    let n = adj.n_nodes();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for d in [32, 64, 128] {
        let x: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut out = vec![0.0; n * d];
        let t_into = best_ms(15, || spmm_into(adj.as_sparse(), &x, d, &mut out));
        let op = SpMat::from(&adj);
        let xt = Tensor::from_vec(x, (n, d), &Device::Cpu).expect("tensor");
        let t_op = best_ms(15, || drop(spmm(&op, &xt).expect("spmm")));
        println!("  d = {d:3}: spmm_into {t_into:6.1} ms, spmm op {t_op:6.1} ms");
    }
    // A dropped (asymmetric) copy needs its own transpose for the backward pass.
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let t_drop = best_ms(5, || drop(adj.as_sparse().drop_entries(0.8, &mut rng)));
    let dropped = Arc::new(adj.as_sparse().drop_entries(0.8, &mut rng));
    let t_prep = best_ms(5, || drop(SpMat::new(dropped.clone())));
    println!("  drop_entries(0.8) {t_drop:.1} ms, SpMat::new (transpose) {t_prep:.1} ms");
}

fn main() {
    println!("rayon threads: {}", rayon::current_num_threads());
    match gowalla() {
        Some((nu, ni, edges)) => run("gowalla", nu, ni, &edges),
        None => println!("gowalla not found; set UNLEARNREC_DATA"),
    }
    run("synthetic", 30_000, 40_000, &synthetic(30_000, 40_000, 1_000_000));
}
