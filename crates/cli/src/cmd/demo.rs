//! `unlearnrec demo`: train, pre-train the encoder, unlearn a random 1 % request, retrain, compare.

use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use unlearnrec_core::checkpoint::Split;
use unlearnrec_core::eval::{EvalConfig, MetricKey};
use unlearnrec_core::model::{ModelConfig, ModelKind};
use unlearnrec_core::pipeline;
use unlearnrec_core::train::TrainConfig;
use unlearnrec_core::unlearn::{self, FinetuneConfig, PretrainConfig};

use super::data::{DataOpts, ReadOpts};
use super::model::model_parser;
use crate::progress::TrainBars;
use crate::util::{Ctx, print_json};

/// `unlearnrec demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Dataset (default: the built-in synthetic one).
    #[arg(long = "data", value_name = "DATA", default_value = "synth")]
    data: String,
    #[command(flatten)]
    read: ReadOpts,
    /// Backbone.
    #[arg(long, default_value = "lightgcn", value_parser = model_parser())]
    model: ModelKind,
    /// Fraction of the training edges to forget.
    #[arg(long, default_value_t = 0.01)]
    fraction: f64,
    /// Backbone training epochs (the retrain uses the same).
    #[arg(long, default_value_t = 40)]
    epochs: usize,
    /// Encoder pre-training epochs.
    #[arg(long, default_value_t = 20)]
    pretrain_epochs: usize,
    /// Fine-tuning epochs after the encoder pass.
    #[arg(long, default_value_t = 1)]
    finetune_epochs: usize,
    /// Seed.
    #[arg(long, default_value_t = 2025)]
    seed: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

struct Row {
    method: &'static str,
    recall: f64,
    ndcg: f64,
    removed: f64,
    non_edges: f64,
    mi_ng: f64,
    secs: f64,
}

/// Runs `demo`.
pub fn run(a: DemoArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let ds = DataOpts::new(&a.data, &a.read).load()?;
    let model = ModelConfig { kind: a.model, dim: 64, ..ModelConfig::default() };
    anyhow::ensure!(model.kind.architecture().learns_embeddings(), "the demo needs a model with embeddings");
    let train = TrainConfig {
        epochs: a.epochs,
        batch_size: 1024,
        lr: 5e-3,
        eval_every: 5,
        patience: 0,
        seed: a.seed,
        ..TrainConfig::reference()
    };
    eprintln!(
        "[1/4] training {} on {} ({} users, {} items, {} interactions)",
        model.kind,
        ds.name,
        ds.n_users(),
        ds.n_items(),
        ds.train.len()
    );
    let t = Instant::now();
    let mut bars = TrainBars::new(ctx.quiet, train.epochs);
    let (orig, _) = pipeline::train(&ds, &model, &train, &mut bars)?;
    bars.finish();
    let train_secs = t.elapsed().as_secs_f64();
    eprintln!("[2/4] pre-training the influence encoder ({})", crate::util::count(a.pretrain_epochs, "epoch"));
    let pre = PretrainConfig {
        epochs: a.pretrain_epochs,
        batch_size: 1024,
        lr: 5e-3,
        sim_every: 5,
        seed: a.seed,
        ..PretrainConfig::reference()
    };
    let t = Instant::now();
    let mut bars = TrainBars::new(ctx.quiet, pre.epochs);
    let un = unlearn::pretrain(&orig, &pre, &mut bars)?;
    bars.finish();
    let pretrain_secs = t.elapsed().as_secs_f64();
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    let request = unlearn::random_request(&orig.train_graph(), a.fraction, &mut rng);
    eprintln!("[3/4] unlearning a random request of {} interactions ({:.1} %)", request.len(), a.fraction * 100.0);
    let ft = FinetuneConfig { epochs: a.finetune_epochs, seed: a.seed, ..FinetuneConfig::default() };
    let zero = FinetuneConfig { epochs: 0, ..ft.clone() };
    let mut quiet = TrainBars::new(true, 0);
    let (zs, zs_rep) = unlearn::unlearn(&orig, &un, &request, &zero, &mut quiet)?;
    let mut bars = TrainBars::new(ctx.quiet, ft.epochs);
    let (ftm, ft_rep) = unlearn::unlearn(&orig, &un, &request, &ft, &mut bars)?;
    bars.finish();
    eprintln!("[4/4] retraining from scratch on the remaining data ({})", crate::util::count(train.epochs, "epoch"));
    let mut bars = TrainBars::new(ctx.quiet, train.epochs);
    let (re, re_rep) = unlearn::retrain(&orig, &request, &mut bars)?;
    bars.finish();
    let cfg = EvalConfig { ks: vec![20], ..EvalConfig::default() };
    let test = |c: &unlearnrec_core::checkpoint::Checkpoint| -> anyhow::Result<(f64, f64)> {
        let r = c.evaluate(&ds, Split::Test, &cfg)?;
        Ok((r.metrics.require(MetricKey::RECALL_20)?, r.metrics.require(MetricKey::NDCG_20)?))
    };
    let mut rows = Vec::new();
    let (r, n) = test(&orig)?;
    let f0 = &re_rep.forgetting;
    rows.push(Row {
        method: "original",
        recall: r,
        ndcg: n,
        removed: f0.removed.before,
        non_edges: f0.non_edges.before,
        mi_ng: f64::NAN,
        secs: train_secs,
    });
    for (name, c, rep) in
        [("unlearnrec zero-shot", &zs, &zs_rep), ("unlearnrec + fine-tune", &ftm, &ft_rep), ("retrain", &re, &re_rep)]
    {
        let (r, n) = test(c)?;
        let f = &rep.forgetting;
        rows.push(Row {
            method: name,
            recall: r,
            ndcg: n,
            removed: f.removed.after,
            non_edges: f.non_edges.after,
            mi_ng: f.mi_ng,
            secs: rep.phase_secs.values().sum(),
        });
    }
    if a.json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| serde_json::json!({"method": r.method, "recall@20": r.recall, "ndcg@20": r.ndcg, "removed_mean_score": r.removed, "non_edge_mean_score": r.non_edges, "mi_ng": r.mi_ng, "secs": r.secs}))
            .collect();
        print_json(
            &serde_json::json!({"dataset": ds.name, "model": model.kind, "request_edges": request.len(), "pretrain_secs": pretrain_secs, "rows": v}),
        )?;
    } else {
        println!(
            "{} on {}, request: {} random interactions; encoder pre-training took {pretrain_secs:.1}s (once per model)",
            model.kind,
            ds.name,
            request.len()
        );
        println!("| method | Recall@20 | NDCG@20 | removed-edge score | non-edge score | MI-NG | time (s) |");
        println!("|---|---|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {:.4} | {:.4} | {:.3} | {:.3} | {} | {:.2} |",
                r.method,
                r.recall,
                r.ndcg,
                r.removed,
                r.non_edges,
                if r.mi_ng.is_nan() { "–".to_string() } else { format!("{:.3}", r.mi_ng) },
                r.secs
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
