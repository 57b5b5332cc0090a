//! The roofline of a LightGCN training step (docs/benchmarks.md, "Roofline"): the machine's limits — memory
//! bandwidth measured by a STREAM-style triad over arrays far larger than the caches, compute from the clock
//! (AVX2 + FMA: 32 f32 flops per cycle per core) — against the bytes and flops each operation must move and do
//! at least, and the time it takes.
//!
//! `cargo run --release --example roofline -- [DATA] [DIM] [BATCH] [REPEAT]` (defaults: ../shared/data/gowalla,
//! 64, 2048, 7). Medians of `REPEAT` runs; the triad is the best of them, as STREAM reports. The graph is numbered
//! in training's locality order unless `UNLEARNREC_DATASET_ORDER` is set.
use std::time::Instant;

use rand::SeedableRng;
use rayon::prelude::*;
use unlearnrec_core::eval::{EvalConfig, evaluate_ranking};
use unlearnrec_core::graph::{Graph, NormAdj, Relabel};
use unlearnrec_core::model::{Backbone, LossInput, ModelConfig, ModelKind, RegTerm};
use unlearnrec_core::tensor::{GradSink, SpMat, spmm};
use unlearnrec_core::train::sampler::sample_epoch;
use unlearnrec_core::train::{Adam, AdamConfig, fit_adam};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn timed(repeat: usize, mut f: impl FnMut()) -> Vec<f64> {
    (0..repeat.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect()
}

/// Best triad bandwidth (bytes/s): `a = b + 3·c` over three arrays of `n` f32, counting 12 bytes per element.
fn triad(n: usize, repeat: usize) -> f64 {
    let b = vec![1.0f32; n];
    let c = vec![2.0f32; n];
    let mut a = vec![0.0f32; n];
    let times = timed(repeat, || {
        a.par_chunks_mut(1 << 16).zip(b.par_chunks(1 << 16)).zip(c.par_chunks(1 << 16)).for_each(|((a, b), c)| {
            for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
                *a = b + 3.0 * c;
            }
        });
        std::hint::black_box(&a);
    });
    12.0 * n as f64 / times.into_iter().fold(f64::INFINITY, f64::min)
}

fn clock_hz() -> f64 {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("cpu MHz"))?.split(':').nth(1)?.trim().parse::<f64>().ok())
        .map_or(2.45e9, |mhz| mhz * 1e6)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let data = args.next().unwrap_or_else(|| "../shared/data/gowalla".into());
    let dim: usize = args.next().map_or(Ok(64), |s| s.parse())?;
    let batch_size: usize = args.next().map_or(Ok(2048), |s| s.parse())?;
    let repeat: usize = args.next().map_or(Ok(7), |s| s.parse())?;
    let threads = rayon::current_num_threads();
    let bw = triad(1 << 26, repeat);
    let peak = clock_hz() * 32.0 * threads as f64;
    println!(
        "machine: {threads} threads, triad {:.1} GB/s (best of {repeat}, 3 x 256 MiB), compute peak {:.0} GFLOP/s \
         ({:.2} GHz x 32 flops/cycle x {threads})",
        bw / 1e9,
        peak / 1e9,
        clock_hz() / 1e9
    );
    let ds = unlearnrec_core::front::load_dataset(std::path::Path::new(&data))?;
    let (nu, ni) = (ds.n_users(), ds.n_items());
    let n = nu + ni;
    // Training's node order (`[train] node_order = "rcm"`); `UNLEARNREC_DATASET_ORDER=1` keeps the dataset's.
    let dataset_order = std::env::var_os("UNLEARNREC_DATASET_ORDER").is_some();
    let relabel = (!dataset_order).then(|| Relabel::rcm(&Graph::from_interactions(nu, ni, &ds.train)));
    let renumber = |e: &unlearnrec_core::data::Interactions| relabel.as_ref().map_or_else(|| e.clone(), |r| r.edges(e));
    let graph = Graph::from_interactions(nu, ni, &renumber(&ds.train));
    let norm = NormAdj::from_graph(&graph);
    let nnz = norm.shared().nnz();
    let adj = SpMat::from_norm_adj(&norm);
    let cfg = ModelConfig { kind: ModelKind::LightGcn, dim, layers: 3, ..ModelConfig::default() };
    let model = Backbone::new(cfg, nu, ni, 1)?;
    let (d, nf, nnzf) = (dim as f64, n as f64, nnz as f64);
    println!(
        "data: {} ({nu} users x {ni} items, {} train edges, nnz = {nnz}), d = {dim}, batch {batch_size}, {} node order",
        ds.name,
        ds.train.len(),
        if dataset_order { "the dataset's" } else { "training's (RCM)" }
    );
    // Least bytes of one SpMM: the matrix once (4-byte index, 4-byte value, 8-byte row pointer), the input
    // once (its gathers hitting the cache at best), the output written once.
    let spmm_bytes = nnzf * 8.0 + nf * 8.0 + 2.0 * nf * d * 4.0;
    let mut rows: Vec<(&str, f64, f64, f64)> = Vec::new();
    let e0 = model.base().as_tensor().clone();
    let spmm_s = median(timed(repeat, || {
        std::hint::black_box(spmm(&adj, &e0).unwrap());
    }));
    rows.push(("SpMM Â·E", spmm_bytes, 2.0 * nnzf * d, spmm_s));
    // Adam over the whole table: read parameter, gradient and two moments; write parameter and moments.
    let mut opt = Adam::new(vec![model.base().clone()], fit_adam(&model, AdamConfig::default().lr))?;
    let grads = model.base().as_tensor().sqr()?.sum_all()?.backward()?;
    let t = median(timed(repeat, || opt.step(&grads).unwrap()));
    rows.push(("Adam over the table", nf * d * 4.0 * 7.0, nf * d * 12.0, t));
    // The whole step: forward over L layers, BPR on the batch, backward, Adam. Its floor: 2L SpMMs and Adam.
    let triples = sample_epoch(graph.user_items(), 1, 0);
    let batch = triples.batch(0, batch_size);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    // Training's step hands the table's gradient to its Adam through a sink.
    let sink = GradSink::new();
    opt.attach_sink(model.base(), sink.clone())?;
    let loss = |reg: RegTerm, sink: Option<&GradSink>, rng: &mut rand_chacha::ChaCha8Rng| {
        let e0 = model.base().as_tensor().clone();
        model.loss(LossInput { adj: &adj, e0: &e0, batch: &batch, epoch: None, rng, reg, sink }).unwrap().total
    };
    // Training's step (its whole-table regulariser's gradient added by Adam), interleaved with the same step
    // with the term differentiated (as before 4a8504b).
    let mut plain = Adam::new(vec![model.base().clone()], AdamConfig::default())?;
    let (mut t_fold, mut t_diff) = (vec![], vec![]);
    for _ in 0..repeat {
        for (reg, times) in [(model.fit_reg_term(), &mut t_fold), (RegTerm::Differentiated, &mut t_diff)] {
            let t = Instant::now();
            let o = if reg == RegTerm::Differentiated { &mut plain } else { &mut opt };
            let total = loss(reg, (reg != RegTerm::Differentiated).then_some(&sink), &mut rng);
            o.step(&total.backward().unwrap()).unwrap();
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let (step_s, diff_s) = (median(t_fold), median(t_diff));
    // Its phases: the forward (propagation and loss), the forward with the backward, Adam alone above.
    let fwd_s = median(timed(repeat, || {
        std::hint::black_box(loss(model.fit_reg_term(), Some(&sink), &mut rng).to_scalar::<f32>().unwrap());
    }));
    let fwd_bwd_s = median(timed(repeat, || {
        std::hint::black_box(loss(model.fit_reg_term(), Some(&sink), &mut rng).backward().unwrap());
        std::hint::black_box(sink.take(nf as usize * d as usize).unwrap());
    }));
    let fwd_floor = 2.0 * spmm_bytes;
    rows.push(("step: forward (floor: 2 SpMMs)", fwd_floor, 2.0 * 2.0 * nnzf * d, fwd_s));
    rows.push(("step: backward (floor: 3 SpMMs)", 3.0 * spmm_bytes, 3.0 * 2.0 * nnzf * d, fwd_bwd_s - fwd_s));
    rows.push((
        "training step (floor: 6 SpMMs + Adam)",
        6.0 * spmm_bytes + nf * d * 4.0 * 7.0,
        6.0 * 2.0 * nnzf * d + nf * d * 12.0,
        step_s,
    ));
    // Full ranking: the score GEMM of every user with test items against every item.
    let emb = model.final_embeddings(&adj)?;
    let test = Graph::from_interactions(nu, ni, &renumber(&ds.test));
    let t = median(timed(repeat.min(3), || {
        std::hint::black_box(
            evaluate_ranking(
                &emb.users,
                &emb.items,
                dim,
                graph.user_items(),
                test.user_items(),
                &EvalConfig::default(),
            )
            .unwrap(),
        );
    }));
    let users = (0..nu).filter(|&u| !test.user_items().row(u).is_empty()).count() as f64;
    let bytes = (users / 512.0).ceil() * ni as f64 * d * 4.0 + users * d * 4.0;
    rows.push(("full-ranking evaluation", bytes, 2.0 * users * ni as f64 * d, t));
    println!();
    println!("| operation | bytes (MB) | GFLOP | time (ms) | GB/s | GFLOP/s | flop/byte | bound | % of bound |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|---:|");
    for (name, bytes, flops, t) in &rows {
        let intensity = flops / bytes;
        let (bound, limit_s) = if intensity < peak / bw { ("memory", bytes / bw) } else { ("compute", flops / peak) };
        println!(
            "| {name} | {:.1} | {:.3} | {:.2} | {:.1} | {:.1} | {intensity:.2} | {bound} | {:.0} % |",
            bytes / 1e6,
            flops / 1e9,
            t * 1e3,
            bytes / t / 1e9,
            flops / t / 1e9,
            100.0 * limit_s / t
        );
    }
    println!();
    println!(
        "training step = {:.1} SpMMs of the same graph and width (forward {:.1}, backward {:.1}, Adam {:.1}); \
         with the regulariser differentiated {:.2} ms = {:.1} SpMMs against {:.2} ms (interleaved)",
        step_s / spmm_s,
        fwd_s / spmm_s,
        (fwd_bwd_s - fwd_s) / spmm_s,
        rows[1].3 / spmm_s,
        diff_s * 1e3,
        diff_s / spmm_s,
        step_s * 1e3
    );
    Ok(())
}
