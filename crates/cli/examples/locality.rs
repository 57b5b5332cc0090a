//! How much the node order matters to the SpMM (issue 16, "better locality"): the same normalised adjacency
//! with its nodes renumbered by several orders, each product timed on a table in that order, interleaved.
//!
//! `cargo run --release --example locality -- [DATA] [DIM] [REPEAT]` (defaults: ../shared/data/gowalla, 64, 15;
//! `synth:EDGES` is the cost curve's synthetic graph of that many edges).
//! Orders: the dataset's own; users and items each by degree, highest first; reverse Cuthill–McKee over the
//! whole graph (a breadth-first order from a low-degree node, neighbours by degree, reversed), and the same
//! with users kept before items (training's order); a random one
//! (the control). Prints the median time of each and its ratio to the dataset's order.
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use unlearnrec_core::data::synthetic::SynthConfig;
use unlearnrec_core::graph::{Graph, NormAdj, Relabel, SparseMat, rcm_order};
use unlearnrec_core::tensor::spmm_into;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `a` with node `v` renumbered `new_of[v]` (rows and columns).
fn permute(a: &SparseMat, new_of: &[u32]) -> SparseMat {
    let n = a.n_rows();
    let mut old_of = vec![0u32; n];
    for (v, &p) in new_of.iter().enumerate() {
        old_of[p as usize] = v as u32;
    }
    let mut indptr = Vec::with_capacity(n + 1);
    indptr.push(0);
    let (mut indices, mut values) = (Vec::with_capacity(a.nnz()), Vec::with_capacity(a.nnz()));
    let mut row: Vec<(u32, f32)> = Vec::new();
    for &old in &old_of {
        let (c, v) = a.row(old as usize);
        row.clear();
        row.extend(c.iter().zip(v).map(|(&c, &v)| (new_of[c as usize], v)));
        row.sort_unstable_by_key(|e| e.0);
        indices.extend(row.iter().map(|e| e.0));
        values.extend(row.iter().map(|e| e.1));
        indptr.push(indices.len());
    }
    SparseMat::new(n, n, indptr, indices, values)
}

/// Users by degree then items by degree, highest first (users keep the first ids).
fn by_degree(a: &SparseMat, nu: usize) -> Vec<u32> {
    let n = a.n_rows();
    let deg = |v: usize| a.row(v).0.len();
    let mut users: Vec<usize> = (0..nu).collect();
    let mut items: Vec<usize> = (nu..n).collect();
    users.sort_by_key(|&v| std::cmp::Reverse(deg(v)));
    items.sort_by_key(|&v| std::cmp::Reverse(deg(v)));
    let mut new_of = vec![0u32; n];
    for (p, &v) in users.iter().chain(&items).enumerate() {
        new_of[v] = p as u32;
    }
    new_of
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let data = args.next().unwrap_or_else(|| "../shared/data/gowalla".into());
    let d: usize = args.next().map_or(Ok(64), |s| s.parse())?;
    let repeat: usize = args.next().map_or(Ok(15), |s| s.parse())?;
    // `synth:EDGES`: the cost curve's synthetic power-law graph of that many edges (`bench --scale`).
    let ds = match data.strip_prefix("synth:") {
        Some(edges) => unlearnrec_core::data::synthetic::generate(&SynthConfig::power_law(edges.parse()?))?,
        None => unlearnrec_core::front::load_dataset(std::path::Path::new(&data))?,
    };
    let (nu, ni) = (ds.n_users(), ds.n_items());
    let graph = Graph::from_interactions(nu, ni, &ds.train);
    let norm = NormAdj::from_graph(&graph);
    let a = norm.as_sparse();
    let n = a.n_rows();
    let mut random: Vec<u32> = (0..n as u32).collect();
    random.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    // The position of each node in RCM's order; and training's renumbering (timed: it runs once per `fit`).
    let mut rcm = vec![0u32; n];
    for (p, &v) in rcm_order(&graph).iter().enumerate() {
        rcm[v as usize] = p as u32;
    }
    let t = Instant::now();
    let relabel = Relabel::rcm(&graph);
    println!("training's relabelling (RCM of the user-item graph): {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    let training: Vec<u32> = (0..n as u32).map(|v| relabel.node(v)).collect();
    let orders: Vec<(&str, SparseMat)> = vec![
        ("dataset order", a.clone()),
        ("degree (users, items)", permute(a, &by_degree(a, nu))),
        ("reverse Cuthill-McKee", permute(a, &rcm)),
        ("RCM, users then items", permute(a, &training)),
        ("random (control)", permute(a, &random)),
    ];
    let x: Vec<f32> = (0..n * d).map(|k| ((k * 2654435761usize) % 1000) as f32 / 1000.0 - 0.5).collect();
    let mut out = vec![0f32; n * d];
    let mut times = vec![Vec::with_capacity(repeat); orders.len()];
    for _ in 0..repeat {
        for (k, (_, m)) in orders.iter().enumerate() {
            let t = Instant::now();
            spmm_into(m, &x, d, &mut out);
            times[k].push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(&out);
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base = med(&mut times[0].clone());
    println!(
        "{} ({nu} users x {ni} items, nnz {}), d = {d}, {} threads, medians of {repeat} interleaved runs:",
        ds.name,
        a.nnz(),
        rayon::current_num_threads()
    );
    for ((name, _), t) in orders.iter().zip(&mut times) {
        let m = med(t);
        println!("  {name:<24} {m:8.2} ms  ({:.2} x the dataset's order)", m / base);
    }
    Ok(())
}
