//! `unlearnrec bench`: timings of the hot paths on a dataset (a benchmark, not a test). A whole UnlearnRec
//! fine-tuning step on a real request is timed by `cargo run --release --example ftprof`.

use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use unlearnrec_core::data::Interactions;
use unlearnrec_core::eval::EvalConfig;
use unlearnrec_core::graph::{Graph, NormAdj, Relabel};
use unlearnrec_core::model::{Backbone, LossInput, ModelConfig, ModelKind, gather_rows};
use unlearnrec_core::tensor::{GradSink, SpMat, spmm};
use unlearnrec_core::train::sampler::sample_epoch;
use unlearnrec_core::train::{Adam, AdamConfig, fit_adam};
use unlearnrec_core::unlearn::objective::align_loss;
use unlearnrec_core::unlearn::{Encoder, EncoderConfig, FinetuneConfig};

use super::data::{DataOpts, ReadOpts};
use crate::util::{Ctx, print_json};

/// `unlearnrec bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Dataset (default: the built-in synthetic one; use ../shared/data/gowalla for the reference figures).
    #[arg(long = "data", value_name = "DATA", default_value = "synth")]
    data: String,
    #[command(flatten)]
    read: ReadOpts,
    /// Embedding dimension.
    #[arg(long, default_value_t = 64)]
    pub(crate) dim: usize,
    /// Propagation layers.
    #[arg(long, default_value_t = 3)]
    pub(crate) layers: usize,
    /// Training batch size.
    #[arg(long, default_value_t = 2048)]
    pub(crate) batch_size: usize,
    /// Repetitions of each timed operation (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub(crate) repeat: usize,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Number the nodes as the dataset does, instead of training's locality order (`[train] node_order`).
    #[arg(long)]
    pub(crate) dataset_order: bool,
    /// The cost curve instead: synthetic power-law graphs of each size of `--edges`, one process each
    /// (docs/benchmarks.md, "Cost against graph size").
    #[arg(long)]
    scale: bool,
    /// Training edges of each graph of `--scale`.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000usize, 1_000_000, 10_000_000])]
    pub(crate) edges: Vec<usize>,
    /// Users whose full ranking `--scale` times (scaled to all users).
    #[arg(long, default_value_t = 1000)]
    pub(crate) eval_users: usize,
    /// Request sizes (edges) whose unlearning `--scale` times; sizes above a tenth of the graph are skipped.
    #[arg(long, value_delimiter = ',', default_values_t = [10usize, 100, 1000, 10_000, 100_000])]
    pub(crate) request_sizes: Vec<usize>,
    /// `--scale` times the `--fast` path only for requests up to this many edges: its calibration ranks each
    /// request user against the whole catalogue (minutes for 10⁵ edges at 10⁷).
    #[arg(long, value_name = "EDGES", default_value_t = 10_000)]
    pub(crate) fast_max_edges: usize,
    /// Draw the `--scale` curves here (SVG, log-log).
    #[arg(long, value_name = "SVG")]
    pub(crate) plot: Option<std::path::PathBuf>,
    /// One point of `--scale` (run by it in a child process).
    #[arg(long, hide = true)]
    scale_point: Option<usize>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(crate) fn time<T>(repeat: usize, mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<f64> {
    let mut out = Vec::with_capacity(repeat);
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        std::hint::black_box(f()?);
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(out))
}

/// The median time of one training step of `model` on `batch` (forward, BPR, backward, Adam), ms.
pub(crate) fn train_step_ms(
    model: &Backbone,
    adj: &SpMat,
    batch: &unlearnrec_core::model::Batch,
    epoch: Option<&unlearnrec_core::model::EpochState>,
    repeat: usize,
) -> anyhow::Result<f64> {
    // Training's own step: its Adam and its regulariser term (a whole-table one folded into Adam).
    let mut opt = Adam::new(vec![model.base().clone()], fit_adam(model, AdamConfig::default().lr))?;
    let sink = GradSink::new();
    opt.attach_sink(model.base(), sink.clone())?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    time(repeat, || {
        let e0 = model.base().as_tensor().clone();
        let input =
            LossInput { adj, e0: &e0, batch, epoch, rng: &mut rng, reg: model.fit_reg_term(), sink: Some(&sink) };
        let parts = model.loss(input)?;
        opt.step(&parts.total.backward()?)?;
        Ok(())
    })
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs `bench`.
pub fn run(a: BenchArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    if let Some(edges) = a.scale_point {
        print_json(&super::bench_scale::point(&a, edges)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if a.scale {
        return super::bench_scale::run(&a);
    }
    let t = Instant::now();
    let ds = DataOpts::new(&a.data, &a.read).load()?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let (nu, ni) = (ds.n_users(), ds.n_items());
    // Training's node order (`[train] node_order`), unless asked for the dataset's.
    let (train, test) = if a.dataset_order {
        (ds.train.clone(), ds.test.clone())
    } else {
        let r = Relabel::rcm(&Graph::from_interactions(nu, ni, &ds.train));
        (r.edges(&ds.train), r.edges(&ds.test))
    };
    let graph = Graph::from_interactions(nu, ni, &train);
    let adj_ms = time(a.repeat, || Ok(NormAdj::from_graph(&graph)))?;
    let norm = NormAdj::from_graph(&graph);
    let req: Interactions = {
        let (u, i): (Vec<u32>, Vec<u32>) = train.iter().step_by(100).unzip();
        Interactions::from_sorted(u, i)
    };
    let remove_ms = time(a.repeat, || Ok(graph.remove(&req)))?;
    let adj = SpMat::from_norm_adj(&norm);
    let cfg = ModelConfig { kind: ModelKind::LightGcn, dim: a.dim, layers: a.layers, ..ModelConfig::default() };
    let model = Backbone::new(cfg, nu, ni, 1)?;
    let e0 = model.base().as_tensor().clone();
    let spmm_ms = time(a.repeat, || Ok(spmm(&adj, &e0)?))?;
    let triples = sample_epoch(graph.user_items(), 1, 0);
    let batch = triples.batch(0, a.batch_size);
    let step_ms = train_step_ms(&model, &adj, &batch, None, a.repeat)?;
    // The contrastive models on the same table: SGL's views drawn once (as once per epoch), SimGCL's noise at
    // every step.
    let mut contrastive_ms = Vec::new();
    for kind in [ModelKind::Sgl, ModelKind::SimGcl] {
        let cfg = ModelConfig { kind, dim: a.dim, layers: a.layers, ..ModelConfig::default() };
        let m = Backbone::from_embeddings(cfg, nu, ni, model.base_vec()?)?;
        let state = m.epoch_state(&graph, &mut ChaCha8Rng::seed_from_u64(2))?;
        contrastive_ms.push((kind, train_step_ms(&m, &adj, &batch, state.as_ref(), a.repeat)?));
    }
    // The two terms that a fine-tuning step of UnlearnRec adds to a training step: the encoder MLP over all
    // nodes (its input is the request's fixed encoding) and the alignment loss on the batch.
    let enc = Encoder::new(EncoderConfig::default(), nu + ni, a.dim, a.layers)?;
    let x = e0.detach();
    let mlp_ms = time(a.repeat, || Ok(enc.mlp(&x)?.sum_all()?.backward()?))?;
    let rows = gather_rows(model.base().as_tensor(), &[(&batch.users, 0), (&batch.pos, nu as u32)])?;
    let target = gather_rows(&x, &[(&batch.users, 0), (&batch.pos, nu as u32)])?;
    let align_ms = time(a.repeat, || {
        Ok(align_loss(&rows[0], &rows[1], &target[0], &target[1], FinetuneConfig::default().align_temp)?.backward()?)
    })?;
    let sample_ms = time(a.repeat, || Ok(sample_epoch(graph.user_items(), 1, 0)))?;
    let emb = model.final_embeddings(&adj)?;
    let test = Graph::from_interactions(nu, ni, &test);
    let eval_cfg = EvalConfig::default();
    let eval_ms = time(a.repeat.min(3), || {
        Ok(unlearnrec_core::eval::evaluate_ranking(
            &emb.users,
            &emb.items,
            emb.dim,
            graph.user_items(),
            test.user_items(),
            &eval_cfg,
        )?)
    })?;
    let out = serde_json::json!({
        "dataset": ds.name,
        "users": nu, "items": ni, "train_edges": ds.train.len(), "dim": a.dim, "layers": a.layers,
        "threads": rayon::current_num_threads(),
        "node_order": if a.dataset_order { "dataset" } else { "rcm" },
        "load_ms": load_ms,
        "norm_adj_ms": adj_ms,
        "remove_1pct_ms": remove_ms,
        "spmm_ms": spmm_ms,
        "train_step_ms": step_ms,
        "train_step_spmms": step_ms / spmm_ms,
        "sgl_step_ms": contrastive_ms[0].1,
        "simgcl_step_ms": contrastive_ms[1].1,
        "encoder_mlp_ms": mlp_ms,
        "align_loss_ms": align_ms,
        "batch_size": a.batch_size,
        "negative_sampling_epoch_ms": sample_ms,
        "full_eval_ms": eval_ms,
        "eval_ks": eval_cfg.ks,
        "peak_rss_mib": peak_rss_mib(),
    });
    if a.json {
        print_json(&out)?;
    } else {
        println!(
            "{}: {nu} users, {ni} items, {} train edges, d={}, L={}, {} threads, {} node order",
            ds.name,
            ds.train.len(),
            a.dim,
            a.layers,
            rayon::current_num_threads(),
            if a.dataset_order { "the dataset's" } else { "training's (RCM)" }
        );
        println!("  load dataset                 {load_ms:9.1} ms (once)");
        println!("  build Â                      {adj_ms:9.1} ms");
        println!("  remove 1 % of edges          {remove_ms:9.1} ms");
        println!("  SpMM Â·E                     {spmm_ms:9.1} ms");
        println!("  LightGCN step (batch {:>5})  {step_ms:9.1} ms = {:.1} SpMMs", a.batch_size, step_ms / spmm_ms);
        for (kind, ms) in &contrastive_ms {
            println!(
                "  {:<8} step (batch {:>5})  {ms:9.1} ms = {:.1} SpMMs",
                kind.to_string(),
                a.batch_size,
                ms / spmm_ms
            );
        }
        println!("  encoder MLP fwd+bwd (all)    {mlp_ms:9.1} ms");
        println!("  alignment loss (batch {:>5}) {align_ms:9.1} ms", a.batch_size);
        println!("  negatives for one epoch      {sample_ms:9.1} ms");
        println!("  full-ranking eval (all users){eval_ms:9.1} ms");
        if let Some(m) = peak_rss_mib() {
            println!("  peak memory                  {m:9.1} MiB");
        }
    }
    Ok(ExitCode::SUCCESS)
}
