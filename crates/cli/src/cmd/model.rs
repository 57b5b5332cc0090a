//! `unlearnrec train | eval | export | recommend`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, ValueEnum};
use unlearnrec_core::checkpoint::{Checkpoint, Split};
use unlearnrec_core::eval::{EvalConfig, Metric, RecallDenominator};
use unlearnrec_core::model::{ARCHITECTURES, ModelConfig, ModelKind};
use unlearnrec_core::pipeline::{self, RunConfig};
use unlearnrec_core::train::StopReason;
use unlearnrec_core::train::TrainConfig;
use unlearnrec_core::unlearn::baselines::sisa::{self, Aggregation, Partition, ShardConfig};

use super::data::DataOpts;
use crate::progress::TrainBars;
use crate::util::{Ctx, check_out_file, count, print_json};

/// `--model`: the registered models ([`unlearnrec_core::model::ARCHITECTURES`]) by name.
pub fn model_parser() -> impl TypedValueParser<Value = ModelKind> {
    PossibleValuesParser::new(ARCHITECTURES.iter().map(|a| PossibleValue::new(a.name()).help(a.about())))
        .map(|name| name.parse::<ModelKind>().expect("a registered name"))
}

/// `unlearnrec train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The dataset (see `unlearnrec data stats --help`).
    #[arg(long = "data", value_name = "DATA")]
    data: String,
    #[command(flatten)]
    data_opts: super::data::ReadOpts,
    /// The model to train [default: lightgcn].
    #[arg(long, value_parser = model_parser())]
    model: Option<ModelKind>,
    /// TOML file with `[model]` and `[train]` tables (flags override it; keys in docs/cli.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The recipe the flags start from: `default` stops early on validation (minutes on the bundled
    /// datasets), `reference` is the reference implementation's schedule (200 epochs, no early stopping).
    #[arg(long, value_enum, default_value = "default", conflicts_with = "config")]
    preset: PresetArg,
    #[arg(long, help = dflt("Epochs at most", TrainConfig::default().epochs))]
    epochs: Option<usize>,
    #[arg(long, help = dflt("Seed of initialisation, sampling and augmentation", TrainConfig::default().seed))]
    seed: Option<u64>,
    #[arg(long, help = dflt("Embedding dimension", ModelConfig::default().dim))]
    dim: Option<usize>,
    #[arg(long, help = dflt("Propagation layers", ModelConfig::default().layers))]
    layers: Option<usize>,
    #[arg(long, help = dflt("Learning rate (Adam)", TrainConfig::default().lr))]
    lr: Option<f64>,
    #[arg(long, help = dflt("Minibatch size", TrainConfig::default().batch_size))]
    batch_size: Option<usize>,
    #[arg(long, help = dflt("L2 regularisation weight", ModelConfig::default().reg))]
    reg: Option<f64>,
    #[arg(long, help = dflt("Validate every N epochs", TrainConfig::default().eval_every))]
    eval_every: Option<usize>,
    #[arg(long, help = dflt("Stop after N validations without improvement (0: never)", TrainConfig::default().patience))]
    patience: Option<usize>,
    /// Train N sub-models on disjoint shards of the data (SISA / RecEraser; `unlearn --method sisa`).
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// How shards are drawn: balanced k-means groups of users (RecEraser) or random edges (SISA).
    #[arg(long, value_enum, requires = "shards")]
    partition: Option<PartitionArg>,
    /// How the shards' scores are combined [default: own for the user partition, mean for random].
    #[arg(long, value_enum, requires = "shards")]
    aggregation: Option<AggregationArg>,
    /// Epochs of the attention aggregator (with `--aggregation attention`).
    #[arg(long, value_name = "N", requires = "shards")]
    attention_epochs: Option<usize>,
    /// Output checkpoint (.safetensors).
    #[arg(long)]
    out: PathBuf,
}

/// Training recipes on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PresetArg {
    /// Early stopping on validation; minutes on the bundled datasets.
    Default,
    /// The reference implementation's schedule; hours on Gowalla.
    Reference,
}

/// `text [default: value]`, for flags whose default lives in a library config.
pub fn dflt(text: &str, value: impl std::fmt::Display) -> String {
    format!("{text} [default: {value}]")
}

/// Shard partitions on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PartitionArg {
    /// Balanced groups of users, k-means on pre-trained embeddings (RecEraser).
    User,
    /// Edges at random (SISA).
    Random,
}

/// Shard aggregations on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AggregationArg {
    /// The mean of the shards' scores (SISA).
    Mean,
    /// Each user is scored by their own shard (user partition).
    Own,
    /// RecEraser's attention over the shards, trained after them.
    Attention,
}

/// `unlearnrec eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Checkpoint to evaluate.
    #[arg(long = "model")]
    model: PathBuf,
    /// The dataset the checkpoint was trained on.
    #[arg(long = "data", value_name = "DATA")]
    data: String,
    #[command(flatten)]
    data_opts: super::data::ReadOpts,
    /// Which split.
    #[arg(long, value_enum, default_value = "test")]
    split: SplitArg,
    /// Cut-offs.
    #[arg(long, value_delimiter = ',', default_value = "10,20,50")]
    ks: Vec<usize>,
    /// Recall denominator: all held-out items (reference) or min(|T|, K).
    #[arg(long, value_enum, default_value = "all")]
    recall_denominator: DenomArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Splits on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SplitArg {
    /// The dataset's test split.
    Test,
    /// The validation split used for model selection.
    Valid,
}

/// Recall denominators on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DenomArg {
    /// |T| (docs/method.md §9).
    All,
    /// min(|T|, K).
    MinK,
}

/// `unlearnrec export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Checkpoint.
    #[arg(long = "model")]
    model: PathBuf,
    /// Output .safetensors with `user_embeddings` and `item_embeddings`; ids go to `<OUT>.ids.json`.
    #[arg(long)]
    out: PathBuf,
}

/// `unlearnrec recommend`.
#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// Checkpoint.
    #[arg(long = "model")]
    model: PathBuf,
    /// External user id.
    #[arg(long)]
    user: String,
    /// Number of items.
    #[arg(short, default_value_t = 20)]
    k: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `unlearnrec import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The dataset the embeddings were trained on (its training split is the model's graph).
    #[arg(long = "data", value_name = "DATA")]
    data: String,
    #[command(flatten)]
    data_opts: super::data::ReadOpts,
    /// safetensors file with f32 `user_embedding` (users × dim) and `item_embedding` (items × dim): the base
    /// (layer-0) tables, e.g. from `safetensors.torch.save_file` (docs/python.md).
    #[arg(long)]
    embeddings: PathBuf,
    /// JSON `{"users": [...], "items": [...]}`: the external id of each row (the format `export` writes);
    /// without it, row r is the external id r (the LightGCN text format's integer ids).
    #[arg(long)]
    ids: Option<PathBuf>,
    /// The backbone that propagates them [default: lightgcn].
    #[arg(long, value_parser = model_parser())]
    model: Option<ModelKind>,
    /// TOML file with `[model]` and `[train]` tables (flags override it); `dim` comes from the file.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, help = dflt("Propagation layers", ModelConfig::default().layers))]
    layers: Option<usize>,
    /// Share of each user's training edges carved out as validation when the data has no validation split,
    /// as `train` carves them (seeded by --seed) [default: 0: the graph keeps every training edge].
    #[arg(long, value_name = "R")]
    carve_valid: Option<f64>,
    #[arg(long, help = dflt("Seed of the validation edges and of retraining baselines", TrainConfig::default().seed))]
    seed: Option<u64>,
    /// Output checkpoint (.safetensors).
    #[arg(long)]
    out: PathBuf,
}

/// Runs `import`.
pub fn import(a: ImportArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mut cfg = match &a.config {
        Some(p) => RunConfig::from_toml_file(p)?,
        None => RunConfig { train: TrainConfig { valid_ratio: 0.0, ..TrainConfig::default() }, ..RunConfig::default() },
    };
    if let Some(k) = a.model {
        cfg.model.kind = k;
    }
    set(&mut cfg.model.layers, a.layers);
    set(&mut cfg.train.valid_ratio, a.carve_valid);
    set(&mut cfg.train.seed, a.seed);
    check_out_file(&a.out, "--out")?;
    let ds = DataOpts::new(&a.data, &a.data_opts).load()?;
    let ids: Option<(Vec<String>, Vec<String>)> = match &a.ids {
        Some(p) => {
            #[derive(serde::Deserialize)]
            struct Ids {
                users: Vec<String>,
                items: Vec<String>,
            }
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let ids: Ids = serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
            Some((ids.users, ids.items))
        }
        None => None,
    };
    let (users, items, dim) =
        unlearnrec_core::read_embeddings(&a.embeddings, &ds, ids.as_ref().map(|(u, i)| (u.as_slice(), i.as_slice())))?;
    cfg.model.dim = dim;
    let ckpt = unlearnrec_core::from_embeddings(&ds, &cfg.model, &cfg.train, &users, &items)?;
    ckpt.save(&a.out).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "imported {} embeddings (d={dim}) of {} users and {} items over {}; wrote {}",
        cfg.model.kind,
        ds.n_users(),
        ds.n_items(),
        count(ckpt.edges().len(), "training edge"),
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `train`.
pub fn train(a: TrainArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mut cfg = match (&a.config, a.preset) {
        (Some(p), _) => RunConfig::from_toml_file(p)?,
        (None, PresetArg::Default) => RunConfig::default(),
        (None, PresetArg::Reference) => RunConfig { train: TrainConfig::reference(), ..RunConfig::default() },
    };
    if let Some(k) = a.model {
        cfg.model.kind = k;
    }
    let (m, t) = (&mut cfg.model, &mut cfg.train);
    set(&mut t.epochs, a.epochs);
    set(&mut t.seed, a.seed);
    set(&mut m.dim, a.dim);
    set(&mut m.layers, a.layers);
    set(&mut t.lr, a.lr);
    set(&mut t.batch_size, a.batch_size);
    set(&mut m.reg, a.reg);
    set(&mut t.eval_every, a.eval_every);
    set(&mut t.patience, a.patience);
    cfg.validate()?;
    check_out_file(&a.out, "--out")?;
    let ds = DataOpts::new(&a.data, &a.data_opts).load()?;
    tracing::info!(model = %cfg.model.kind, users = ds.n_users(), items = ds.n_items(), "training");
    let mut bars = TrainBars::new(ctx.quiet, cfg.train.epochs);
    if let Some(n) = a.shards {
        let mut sc = ShardConfig { shards: n, ..ShardConfig::default() };
        if let Some(p) = a.partition {
            sc.partition = match p {
                PartitionArg::User => Partition::User,
                PartitionArg::Random => Partition::Random,
            };
        }
        sc.aggregation = a.aggregation.map(|g| match g {
            AggregationArg::Mean => Aggregation::Mean,
            AggregationArg::Own => Aggregation::Own,
            AggregationArg::Attention => Aggregation::Attention,
        });
        set(&mut sc.attention_epochs, a.attention_epochs);
        sc.validate()?;
        let (sharded, reports) = sisa::train_sharded(&ds, &cfg.model, &cfg.train, &sc, &mut bars)?;
        bars.finish();
        sisa::save(&a.out, &sharded.checkpoint, &sharded.shards)
            .with_context(|| format!("writing {}", a.out.display()))?;
        let secs: f64 = reports.iter().map(|r| r.secs).sum();
        let meta = &sharded.shards.meta;
        eprintln!(
            "trained {n} {} shards of {} in {secs:.1}s ({} aggregation); wrote {}",
            match sc.partition {
                Partition::User => "user-partitioned",
                Partition::Random => "randomly partitioned",
            },
            cfg.model.kind,
            meta.aggregation().name(),
            a.out.display()
        );
        if let Some(att) = &meta.attention {
            let w: Vec<String> = att.user_weights.iter().map(|w| format!("{w:.3}")).collect();
            eprintln!(
                "attention: trained in {:.1}s, kept epoch {} of {}, mean user weight per shard [{}]",
                att.secs,
                att.best_epoch + 1,
                att.losses.len(),
                w.join(", ")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (ckpt, report) = pipeline::train(&ds, &cfg.model, &cfg.train, &mut bars)?;
    bars.finish();
    if let StopReason::Diverged { epoch, loss } = report.stop {
        bail!(
            "training diverged at epoch {} (loss {loss}); nothing written to {} (try a lower --lr)",
            epoch + 1,
            a.out.display()
        );
    }
    ckpt.save(&a.out).with_context(|| format!("writing {}", a.out.display()))?;
    let best = report.best_metric.map_or("n/a".into(), |m| format!("{m:.4}"));
    eprintln!(
        "trained {} in {:.1}s ({}, best valid {} {} at epoch {}); wrote {}",
        cfg.model.kind,
        report.secs,
        count(report.history.len(), "epoch"),
        cfg.train.select_metric,
        best,
        report.best_epoch.map_or("-".into(), |e| (e + 1).to_string()),
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}

/// Runs `eval`.
pub fn eval(a: EvalArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let ckpt = Checkpoint::load(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    let ds = DataOpts::new(&a.data, &a.data_opts).load()?;
    let cfg = EvalConfig {
        ks: a.ks.clone(),
        recall_denominator: match a.recall_denominator {
            DenomArg::All => RecallDenominator::All,
            DenomArg::MinK => RecallDenominator::MinK,
        },
        ..EvalConfig::default()
    };
    let split = match a.split {
        SplitArg::Test => Split::Test,
        SplitArg::Valid => Split::Valid,
    };
    let r = ckpt.evaluate(&ds, split, &cfg)?;
    if a.json {
        print_json(&unlearnrec_core::eval_json(&r)?)?;
    } else {
        println!(
            "{} on {} ({}, recall denominator {})",
            ckpt.meta().model.kind,
            match a.split {
                SplitArg::Test => "test",
                SplitArg::Valid => "valid",
            },
            count(r.n_users_evaluated, "user"),
            match r.recall_denominator {
                RecallDenominator::All => "|T|",
                RecallDenominator::MinK => "min(|T|, K)",
            }
        );
        for k in &r.ks {
            let g = |m: Metric| r.metrics.get(&m.at(*k)).copied().unwrap_or(f64::NAN);
            println!(
                "  @{k:<3} recall {:.4}  ndcg {:.4}  precision {:.4}  hit {:.4}  mrr {:.4}",
                g(Metric::Recall),
                g(Metric::Ndcg),
                g(Metric::Precision),
                g(Metric::Hit),
                g(Metric::Mrr)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `export`.
pub fn export(a: ExportArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    check_out_file(&a.out, "--out")?;
    let ckpt = Checkpoint::load(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    pipeline::export(&ckpt, &a.out)?;
    eprintln!("wrote {} and {}", a.out.display(), pipeline::ids_path(&a.out).display());
    Ok(ExitCode::SUCCESS)
}

/// Runs `recommend`.
pub fn recommend(a: RecommendArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    if a.k == 0 {
        bail!("-k must be at least 1");
    }
    let ckpt = Checkpoint::load(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    let user = ckpt.user(&a.user)?;
    let recs = ckpt.recommend(user, a.k)?;
    if a.json {
        let items: Vec<_> = recs.iter().map(|(i, s)| serde_json::json!({"item": i, "score": s})).collect();
        print_json(&serde_json::json!({"user": a.user, "items": items}))?;
    } else {
        for (rank, (item, score)) in recs.iter().enumerate() {
            println!("{:>3}  {item}  {score:.4}", rank + 1);
        }
    }
    Ok(ExitCode::SUCCESS)
}
