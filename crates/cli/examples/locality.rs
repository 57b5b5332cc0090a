//! How much the node order matters to the SpMM (issue 16, "better locality"): the same normalised adjacency
//! with its nodes renumbered by several orders, each product timed on a table in that order, interleaved.
//!
//! `cargo run --release --example locality -- [DATA] [DIM] [REPEAT]` (defaults: ../shared/data/gowalla, 64, 15;
//! `synth:EDGES` is the cost curve's synthetic graph of that many edges).
//! Orders: the dataset's own; users and items each by degree, highest first; reverse Cuthill–McKee over the
//! whole graph (a breadth-first order from a low-degree node, neighbours by degree, reversed), and the same
//! with users kept before items (training's order); a random one
//! (the control). Prints the median time of each and its ratio to the dataset's order.
use std::collections::VecDeque;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use unlearnrec_core::graph::{Graph, NormAdj, SparseMat};
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

/// Reverse Cuthill–McKee over the whole graph (every component, each from its lowest-degree node).
fn rcm(a: &SparseMat) -> Vec<u32> {
    let n = a.n_rows();
    let deg = |v: usize| a.row(v).0.len();
    let mut by_deg: Vec<usize> = (0..n).collect();
    by_deg.sort_by_key(|&v| deg(v));
    let mut seen = vec![false; n];
    let mut order = Vec::with_capacity(n);
    let mut queue = VecDeque::new();
    let mut nbrs: Vec<usize> = Vec::new();
    for &s in &by_deg {
        if seen[s] {
            continue;
        }
        seen[s] = true;
        queue.push_back(s);
        while let Some(v) = queue.pop_front() {
            order.push(v);
            nbrs.clear();
            nbrs.extend(a.row(v).0.iter().map(|&c| c as usize).filter(|&c| !seen[c]));
            nbrs.sort_by_key(|&c| deg(c));
            for &c in &nbrs {
                seen[c] = true;
                queue.push_back(c);
            }
        }
    }
    let mut new_of = vec![0u32; n];
    for (p, &v) in order.iter().rev().enumerate() {
        new_of[v] = p as u32;
    }
    new_of
}

/// `order` (a renumbering of every node) made to keep users first: users in their order, then items in theirs.
fn split(new_of: &[u32], nu: usize) -> Vec<u32> {
    let mut nodes: Vec<usize> = (0..new_of.len()).collect();
    nodes.sort_by_key(|&v| (v >= nu, new_of[v]));
    let mut out = vec![0u32; new_of.len()];
    for (p, &v) in nodes.iter().enumerate() {
        out[v] = p as u32;
    }
    out
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let data = args.next().unwrap_or_else(|| "../shared/data/gowalla".into());
    let d: usize = args.next().map_or(Ok(64), |s| s.parse())?;
    let repeat: usize = args.next().map_or(Ok(15), |s| s.parse())?;
    // `synth:EDGES`: the cost curve's synthetic power-law graph of that many edges (`bench --scale`).
    let ds = match data.strip_prefix("synth:") {
        Some(edges) => {
            let edges: usize = edges.parse()?;
            unlearnrec_core::data::synthetic::generate(&unlearnrec_core::data::synthetic::SynthConfig {
                users: (edges / 27).max(200),
                items: (edges / 20).max(200),
                interactions: edges + edges / 9,
                communities: 16,
                zipf: 1.0,
                in_community: 0.8,
                test_ratio: 0.1,
                valid_ratio: 0.0,
                seed: 1,
            })?
        }
        None => unlearnrec_core::front::load_dataset(std::path::Path::new(&data))?,
    };
    let (nu, ni) = (ds.n_users(), ds.n_items());
    let norm = NormAdj::from_graph(&Graph::from_interactions(nu, ni, &ds.train));
    let a = norm.as_sparse();
    let n = a.n_rows();
    let mut random: Vec<u32> = (0..n as u32).collect();
    random.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    let orders: Vec<(&str, SparseMat)> = vec![
        ("dataset order", a.clone()),
        ("degree (users, items)", permute(a, &by_degree(a, nu))),
        ("reverse Cuthill-McKee", permute(a, &rcm(a))),
        ("RCM, users then items", permute(a, &split(&rcm(a), nu))),
        ("random (control)", permute(a, &random)),
    ];
    let t = Instant::now();
    let relabel = unlearnrec_core::graph::Relabel::rcm(&Graph::from_interactions(nu, ni, &ds.train));
    println!("training's relabelling (RCM of the user-item graph): {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    std::hint::black_box(relabel);
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
