//! `unlearnrec bench --scale`: the cost curve on seeded synthetic power-law graphs (a benchmark, not a test).
//!
//! Each size runs in a child process of its own (`bench --scale-point EDGES`), so that its peak memory is
//! its own. A point generates a graph of `EDGES` training edges with Gowalla's shape (27 edges per user, 20 per
//! item, Zipf item popularity, communities), then times: building `Â`, one SpMM, one LightGCN training
//! step (median of `--repeat`), one epoch's negatives, the full-ranking evaluation (a sample of
//! `--eval-users` users, scaled to all users with test items), an encoder pre-training step (`pretrain`
//! with one epoch of 3 steps, from its report), and the unlearning of requests of each size of
//! `--request-sizes` (random training edges) from an untrained backbone with that unlearner: the zero-shot
//! encoder pass alone and the `--fast` path. The parent prints a table, the fitted exponent of each cost
//! against the edges (least squares on the log-log points), and can draw them (`--plot`).

use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, bail};
use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use unlearnrec_core::checkpoint::{Checkpoint, CheckpointMeta};
use unlearnrec_core::data::Interactions;
use unlearnrec_core::data::synthetic::{SynthConfig, generate};
use unlearnrec_core::eval::{EvalConfig, evaluate_ranking};
use unlearnrec_core::graph::{Graph, NormAdj, Relabel};
use unlearnrec_core::model::{Backbone, ModelConfig, ModelKind};
use unlearnrec_core::tensor::{SpMat, spmm};
use unlearnrec_core::train::sampler::sample_epoch;
use unlearnrec_core::train::{Silent, TrainConfig};
use unlearnrec_core::unlearn::{FinetuneConfig, PretrainConfig, pretrain, unlearn};

use super::bench::{BenchArgs, peak_rss_mib, time, train_step_ms};
use crate::util::print_json;

/// Pre-training steps timed at each point.
const PRETRAIN_STEPS: usize = 3;

/// One request size's unlearning latencies.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestCost {
    /// Removed edges.
    pub edges: usize,
    /// The zero-shot encoder pass (no fine-tuning, no calibration), ms.
    pub zero_shot_ms: f64,
    /// The `--fast` path (encoder pass and the request users' calibration), ms.
    /// `None` above `--fast-max-edges`.
    pub fast_ms: Option<f64>,
}

/// The measurements at one graph size.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScalePoint {
    /// Training edges.
    pub edges: usize,
    /// Users.
    pub users: usize,
    /// Items.
    pub items: usize,
    /// Generating the graph, s.
    pub generate_s: f64,
    /// Building `Â`, ms.
    pub norm_adj_ms: f64,
    /// One SpMM `Â·E`, ms.
    pub spmm_ms: f64,
    /// One LightGCN training step, ms.
    pub train_step_ms: f64,
    /// Training steps in one epoch (`ceil(edges / batch)`).
    pub steps_per_epoch: usize,
    /// One epoch's negatives, ms.
    pub negatives_ms: f64,
    /// One epoch: steps × step time plus its negatives, s (estimated from the step).
    pub epoch_s: f64,
    /// The users whose ranking was timed.
    pub eval_users_timed: usize,
    /// Users with test items.
    pub eval_users_all: usize,
    /// Full-ranking evaluation of all users with test items, s (the timed sample, scaled).
    pub full_eval_s: f64,
    /// One encoder pre-training step, ms.
    pub pretrain_step_ms: f64,
    /// Unlearning latency per request size.
    pub requests: Vec<RequestCost>,
    /// Peak resident memory of the point's process, MiB.
    pub peak_rss_mib: f64,
    /// Peak resident memory while generating the graph and building `Â` (the data alone), MiB.
    pub data_peak_mib: f64,
    /// Peak resident memory while training (the steps, with the data), MiB.
    pub train_peak_mib: f64,
    /// Peak resident memory while pre-training the encoder, MiB.
    pub pretrain_peak_mib: f64,
    /// Peak resident memory while unlearning the requests, MiB.
    pub unlearn_peak_mib: f64,
    /// Peak memory per training edge, bytes.
    pub bytes_per_edge: f64,
}

/// Measures one point (the child process).
pub fn point(a: &BenchArgs, edges: usize) -> anyhow::Result<ScalePoint> {
    let mut phase = PhasePeaks::default();
    let t = Instant::now();
    let mut ds = generate(&SynthConfig::power_law(edges)).context("generating the graph")?;
    let generate_s = t.elapsed().as_secs_f64();
    let (nu, ni) = (ds.n_users(), ds.n_items());
    // Training's node order (`[train] node_order = "rcm"`; the generator numbers nodes at random), unless
    // `--dataset-order`.
    let t = Instant::now();
    if !a.dataset_order {
        let r = Relabel::rcm(&Graph::from_interactions(nu, ni, &ds.train));
        ds.train = r.edges(&ds.train);
        ds.test = r.edges(&ds.test);
    }
    let relabel_ms = t.elapsed().as_secs_f64() * 1e3;
    let graph = Graph::from_interactions(nu, ni, &ds.train);
    // Each figure goes to standard error as it is measured (the parent passes it through), so that a point
    // that is stopped or runs out of memory still shows what it measured.
    eprintln!(
        "  {} edges, {nu} users × {ni} items generated in {generate_s:.1} s, renumbered in {relabel_ms:.0} ms",
        ds.train.len()
    );
    let norm_adj_ms = time(1, || Ok(NormAdj::from_graph(&graph)))?;
    let adj = SpMat::from_norm_adj(&NormAdj::from_graph(&graph));
    let data_peak_mib = phase.end();
    let cfg = ModelConfig { kind: ModelKind::LightGcn, dim: a.dim, layers: a.layers, ..ModelConfig::default() };
    let model = Backbone::new(cfg.clone(), nu, ni, 1)?;
    let e0 = model.base().as_tensor().clone();
    let spmm_ms = time(a.repeat, || Ok(spmm(&adj, &e0)?))?;
    eprintln!("  build Â {norm_adj_ms:.1} ms, SpMM {spmm_ms:.2} ms");
    let t = Instant::now();
    let triples = sample_epoch(graph.user_items(), 1, 0);
    let negatives_ms = t.elapsed().as_secs_f64() * 1e3;
    let batch = triples.batch(0, a.batch_size);
    let train_step_ms = train_step_ms(&model, &adj, &batch, None, a.repeat)?;
    let train_peak_mib = phase.end();
    let steps_per_epoch = ds.train.len().div_ceil(a.batch_size.max(1));
    let epoch_s = (steps_per_epoch as f64 * train_step_ms + negatives_ms) / 1e3;
    // Full ranking: every k-th user with test items, scaled to all of them.
    let test = Graph::from_interactions(nu, ni, &ds.test);
    let with_test: Vec<u32> = (0..nu as u32).filter(|&u| !test.user_items().row(u as usize).is_empty()).collect();
    let stride = with_test.len().div_ceil(a.eval_users.max(1)).max(1);
    let timed: Vec<u32> = with_test.iter().copied().step_by(stride).collect();
    let sampled: Vec<(u32, u32)> =
        timed.iter().flat_map(|&u| test.user_items().row(u as usize).iter().map(move |&i| (u, i))).collect();
    let truth = Graph::from_interactions(nu, ni, &Interactions::from_pairs(sampled).0);
    let emb = model.final_embeddings(&adj)?;
    let eval_cfg = EvalConfig::default();
    let eval_ms = time(1, || {
        Ok(evaluate_ranking(&emb.users, &emb.items, emb.dim, graph.user_items(), truth.user_items(), &eval_cfg)?)
    })?;
    let full_eval_s = eval_ms / 1e3 * with_test.len() as f64 / timed.len().max(1) as f64;
    eprintln!("  train step {train_step_ms:.1} ms, epoch {epoch_s:.1} s, full ranking {full_eval_s:.2} s");
    drop((emb, truth, test, triples, adj));
    // Pre-training and unlearning, from the untrained backbone as a checkpoint.
    let meta = CheckpointMeta::trained(&ds, &cfg, &TrainConfig::default(), false, None);
    let none = Interactions::default();
    let ckpt = Checkpoint::new(model, meta, ds.train.clone(), none.clone(), none)?;
    let pre = PretrainConfig { epochs: 1, max_steps_per_epoch: Some(PRETRAIN_STEPS), ..PretrainConfig::default() };
    phase.end();
    let unlearner = pretrain(&ckpt, &pre, &mut Silent)?;
    let pretrain_peak_mib = phase.end();
    let pretrain_step_ms =
        unlearner.meta.report.as_ref().map_or(f64::NAN, |r| r.secs_per_epoch * 1e3 / PRETRAIN_STEPS as f64);
    eprintln!("  pre-training step {pretrain_step_ms:.1} ms (peak {pretrain_peak_mib:.0} MiB)");
    let zero_shot =
        FinetuneConfig { epochs: 0, calibration_steps: 0, report_validation: false, ..FinetuneConfig::default() };
    let fast = FinetuneConfig::fast();
    let mut requests = Vec::new();
    let train: Vec<(u32, u32)> = ds.train.iter().collect();
    for &size in a.request_sizes.iter().filter(|&&s| s > 0 && s <= train.len() / 10) {
        let mut rng = ChaCha8Rng::seed_from_u64(size as u64);
        let req = Interactions::from_pairs(sample(&mut rng, train.len(), size).iter().map(|k| train[k]).collect()).0;
        let reps = a.repeat.min(3);
        let zero_shot_ms = time(reps, || Ok(unlearn(&ckpt, &unlearner, &req, &zero_shot, &mut Silent)?))?;
        let fast_ms = if size <= a.fast_max_edges {
            let ms = time(reps, || Ok(unlearn(&ckpt, &unlearner, &req, &fast, &mut Silent)?))?;
            eprintln!("  unlearn {size} edges: zero-shot {zero_shot_ms:.1} ms, fast {ms:.1} ms");
            Some(ms)
        } else {
            eprintln!("  unlearn {size} edges: zero-shot {zero_shot_ms:.1} ms (fast not timed: --fast-max-edges)");
            None
        };
        requests.push(RequestCost { edges: size, zero_shot_ms, fast_ms });
    }
    let unlearn_peak_mib = phase.end();
    let peak = phase.overall;
    Ok(ScalePoint {
        edges: ds.train.len(),
        users: nu,
        items: ni,
        generate_s,
        norm_adj_ms,
        spmm_ms,
        train_step_ms,
        steps_per_epoch,
        negatives_ms,
        epoch_s,
        eval_users_timed: timed.len(),
        eval_users_all: with_test.len(),
        full_eval_s,
        pretrain_step_ms,
        requests,
        peak_rss_mib: peak,
        data_peak_mib,
        train_peak_mib,
        pretrain_peak_mib,
        unlearn_peak_mib,
        bytes_per_edge: peak * 1024.0 * 1024.0 / ds.train.len() as f64,
    })
}

/// Peak resident memory per phase: Linux's `VmHWM`, reset between phases by writing 5 to
/// `/proc/self/clear_refs` (NaN where that is not possible).
#[derive(Default)]
struct PhasePeaks {
    overall: f64,
}

impl PhasePeaks {
    /// The peak since the last call (or the start), and a reset for the next phase.
    fn end(&mut self) -> f64 {
        let peak = peak_rss_mib().unwrap_or(f64::NAN);
        self.overall = self.overall.max(peak);
        if std::fs::write("/proc/self/clear_refs", "5").is_err() {
            return if self.overall == peak { peak } else { f64::NAN };
        }
        peak
    }
}

/// The least-squares slope of `log y` against `log x` (the exponent of `y ∝ x^b`); `None` with fewer than two
/// usable points.
pub fn exponent(points: &[(f64, f64)]) -> Option<f64> {
    let logs: Vec<(f64, f64)> =
        points.iter().filter(|p| p.0 > 0.0 && p.1 > 0.0 && p.1.is_finite()).map(|p| (p.0.ln(), p.1.ln())).collect();
    if logs.len() < 2 {
        return None;
    }
    let n = logs.len() as f64;
    let (mx, my) = (logs.iter().map(|p| p.0).sum::<f64>() / n, logs.iter().map(|p| p.1).sum::<f64>() / n);
    let sxx: f64 = logs.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = logs.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

type Column = (&'static str, fn(&ScalePoint) -> f64);

/// The costs of the table, the fit and the plot.
const COLUMNS: [Column; 12] = [
    ("build Â (ms)", |p| p.norm_adj_ms),
    ("SpMM (ms)", |p| p.spmm_ms),
    ("train step (ms)", |p| p.train_step_ms),
    ("epoch (s)", |p| p.epoch_s),
    ("full eval (s)", |p| p.full_eval_s),
    ("pretrain step (ms)", |p| p.pretrain_step_ms),
    ("unlearn 100 edges, fast (ms)", |p| request_ms(p, 100, true)),
    ("unlearn 100 edges, zero-shot (ms)", |p| request_ms(p, 100, false)),
    ("peak memory (MiB)", |p| p.peak_rss_mib),
    ("peak memory, training (MiB)", |p| p.train_peak_mib),
    ("peak memory, pre-training (MiB)", |p| p.pretrain_peak_mib),
    ("peak memory, unlearning (MiB)", |p| p.unlearn_peak_mib),
];

fn request_ms(p: &ScalePoint, edges: usize, fast: bool) -> f64 {
    p.requests
        .iter()
        .find(|r| r.edges == edges)
        .map_or(f64::NAN, |r| if fast { r.fast_ms.unwrap_or(f64::NAN) } else { r.zero_shot_ms })
}

/// Runs every point in a child process, prints the table and the exponents, draws the plot.
pub fn run(a: &BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(p) = &a.plot
        && let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        bail!("--plot {}: the directory {} does not exist", p.display(), dir.display());
    }
    let exe = std::env::current_exe().context("finding this executable")?;
    let sizes: Vec<String> = a.request_sizes.iter().map(usize::to_string).collect();
    let mut points = Vec::new();
    for &edges in &a.edges {
        eprintln!("bench --scale: {edges} edges …");
        let out = Command::new(&exe)
            .args(["bench", "--scale-point", &edges.to_string(), "--json"])
            .args(["--dim", &a.dim.to_string(), "--layers", &a.layers.to_string()])
            .args(["--batch-size", &a.batch_size.to_string(), "--repeat", &a.repeat.to_string()])
            .args(["--eval-users", &a.eval_users.to_string(), "--request-sizes", &sizes.join(",")])
            .args(["--fast-max-edges", &a.fast_max_edges.to_string()])
            // The point's progress (and any error) goes straight to our standard error.
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", exe.display()))?;
        if !out.status.success() {
            eprintln!(
                "bench --scale: {edges} edges failed ({}); its figures so far are above; stopping here",
                out.status
            );
            break;
        }
        let p: ScalePoint = serde_json::from_slice(&out.stdout).context("reading a point's JSON")?;
        eprintln!("  peak {:.0} MiB", p.peak_rss_mib);
        points.push(p);
    }
    if points.is_empty() {
        bail!("no size could be measured");
    }
    let fits: Vec<(&str, Option<f64>)> = COLUMNS
        .iter()
        .map(|(name, f)| (*name, exponent(&points.iter().map(|p| (p.edges as f64, f(p))).collect::<Vec<_>>())))
        .collect();
    if let Some(path) = &a.plot {
        let series: Vec<(String, Vec<(f64, f64)>)> = COLUMNS
            .iter()
            .zip(&fits)
            .filter(|((name, _), _)| !name.starts_with("build"))
            .map(|((name, f), (_, b))| {
                let label = match b {
                    Some(b) => format!("{name}: exponent {b:.2}"),
                    None => (*name).to_string(),
                };
                (label, points.iter().map(|p| (p.edges as f64, f(p))).collect())
            })
            .collect();
        let title = format!("cost against graph size (d={}, {} layers, batch {})", a.dim, a.layers, a.batch_size);
        unlearnrec_experiment::plot::log_log(path, &title, "training edges", "time or memory", &series)?;
    }
    if a.json {
        let fits: serde_json::Map<String, serde_json::Value> =
            fits.iter().map(|(n, b)| (n.to_string(), serde_json::json!(b))).collect();
        print_json(
            &serde_json::json!({ "points": points, "exponents": fits, "threads": rayon::current_num_threads() }),
        )?;
    } else {
        print_table(&points, &fits);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(points: &[ScalePoint], fits: &[(&str, Option<f64>)]) {
    let head: Vec<String> = points.iter().map(|p| format!("{:.0e}", p.edges as f64)).collect();
    println!("| edges | {} | exponent |", head.join(" | "));
    println!("|---|{}---|", "---:|".repeat(points.len()));
    let row = |name: &str, vals: Vec<String>, fit: String| println!("| {name} | {} | {fit} |", vals.join(" | "));
    row("users × items", points.iter().map(|p| format!("{} × {}", p.users, p.items)).collect(), String::new());
    for ((name, f), (_, b)) in COLUMNS.iter().zip(fits) {
        let fit = b.map_or("–".into(), |b| format!("{b:.2}"));
        row(name, points.iter().map(|p| fmt(f(p))).collect(), fit);
    }
    row("bytes per edge (whole run)", points.iter().map(|p| fmt(p.bytes_per_edge)).collect(), String::new());
    let per_edge = |p: &ScalePoint| p.train_peak_mib * 1024.0 * 1024.0 / p.edges as f64;
    row("bytes per edge, training", points.iter().map(|p| fmt(per_edge(p))).collect(), String::new());
    let sizes: Vec<usize> = {
        let mut s: Vec<usize> = points.iter().flat_map(|p| p.requests.iter().map(|r| r.edges)).collect();
        s.sort_unstable();
        s.dedup();
        s
    };
    // (100 edges is in the rows above.)
    for s in sizes.into_iter().filter(|&s| s != 100) {
        for fast in [false, true] {
            let name = format!("unlearn {s} edges, {} (ms)", if fast { "fast" } else { "zero-shot" });
            let vals = points.iter().map(|p| fmt(request_ms(p, s, fast))).collect();
            row(&name, vals, String::new());
        }
    }
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponent_of_a_power_law_is_its_power() {
        let pts: Vec<(f64, f64)> = [1e5, 1e6, 1e7].iter().map(|&x: &f64| (x, 3.0 * x.powf(1.3))).collect();
        assert!((exponent(&pts).unwrap() - 1.3).abs() < 1e-9);
        assert_eq!(exponent(&pts[..1]), None);
        assert_eq!(exponent(&[(1.0, 2.0), (1.0, 3.0)]), None);
    }
}
