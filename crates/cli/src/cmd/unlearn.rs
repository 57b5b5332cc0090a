//! `unlearnrec pretrain | unlearn`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use clap::builder::{PossibleValue, PossibleValuesParser};
use unlearnrec_core::checkpoint::Checkpoint;
use unlearnrec_core::eval::MetricKey;
use unlearnrec_core::unlearn::baselines::{FinetuneOnlyConfig, GradientAscentConfig, InfluenceConfig, sisa};
use unlearnrec_core::unlearn::method::{METHODS, MethodId, MethodOptions, method_info};
use unlearnrec_core::unlearn::request::{Request, RequestSpec};
use unlearnrec_core::unlearn::{self, FinetuneConfig, PretrainConfig, Unlearner};

use super::data::{DataOpts, ReadOpts};
use super::model::dflt;
use crate::progress::TrainBars;
use crate::util::{Ctx, Staged, check_out_dir, check_out_file, count};
use unlearnrec_core::unlearn::receipt;

/// `unlearnrec pretrain`.
#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// The trained backbone checkpoint.
    #[arg(long = "model")]
    model: PathBuf,
    /// The dataset the checkpoint was trained on.
    #[arg(long = "data", value_name = "DATA")]
    data: String,
    #[command(flatten)]
    read: ReadOpts,
    /// TOML file with a `[pretrain]` table (flags override it; keys in docs/cli.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The schedule the flags start from: `default` (about a minute on the bundled datasets) or
    /// `reference` (the reference implementation's: 200 epochs of up to 2501 steps; hours).
    #[arg(long, value_enum, default_value = "default", conflicts_with = "config")]
    preset: super::model::PresetArg,
    #[arg(long, help = dflt("Epochs", PretrainConfig::default().epochs))]
    epochs: Option<usize>,
    #[arg(long, help = dflt("Simulated request size (fraction of edges)", PretrainConfig::default().drop_rate))]
    drop_rate: Option<f64>,
    #[arg(long, help = dflt("Minibatch size", PretrainConfig::default().batch_size))]
    batch_size: Option<usize>,
    #[arg(long, help = dflt("Steps per epoch at most", PretrainConfig::default().max_steps_per_epoch.unwrap_or(0)))]
    max_steps: Option<usize>,
    #[arg(long, help = dflt("Seed", PretrainConfig::default().seed))]
    seed: Option<u64>,
    /// Output unlearner (.safetensors).
    #[arg(long)]
    out: PathBuf,
}

/// `--method`: the registered methods ([`unlearnrec_core::unlearn::method::METHODS`]) and their aliases.
fn method_parser() -> PossibleValuesParser {
    PossibleValuesParser::new(METHODS.iter().map(|m| PossibleValue::new(m.name).help(m.about).aliases(m.aliases)))
}

/// `unlearnrec unlearn`.
#[derive(Debug, Args)]
pub struct UnlearnArgs {
    /// The checkpoint to unlearn from (possibly already unlearned).
    #[arg(long = "model")]
    model: PathBuf,
    /// The pre-trained unlearner (required for --method unlearnrec).
    #[arg(long)]
    unlearner: Option<PathBuf>,
    /// The dataset the checkpoint was trained on.
    #[arg(long = "data", value_name = "DATA")]
    data: String,
    #[command(flatten)]
    read: ReadOpts,
    /// File of `user,item` pairs (external ids) to forget.
    #[arg(long)]
    request: Option<PathBuf>,
    /// Forget all interactions of this user (repeatable).
    #[arg(long = "user")]
    users: Vec<String>,
    /// Forget all interactions of this item (repeatable).
    #[arg(long = "item")]
    items: Vec<String>,
    /// Drop listed pairs that are not training interactions instead of failing.
    #[arg(long)]
    skip_missing: bool,
    /// Method.
    #[arg(long, default_value = "unlearnrec", value_parser = method_parser())]
    method: String,
    /// Fine-tuning epochs after the encoder pass (0: zero-shot only), or of --method finetune.
    #[arg(long)]
    finetune_epochs: Option<usize>,
    /// The fast path for streams of small requests: no fine-tuning epoch, a quarter of the encoder's
    /// change, 50 calibration steps at twice the rate (instead of the [finetune] defaults or --config's).
    #[arg(long, conflicts_with = "config")]
    fast: bool,
    /// Adam steps of --method gradient-ascent.
    #[arg(long)]
    steps: Option<usize>,
    /// Neighbourhood hops of the rows --method influence updates.
    #[arg(long)]
    hops: Option<usize>,
    /// Training seed of --method retrain [default: the checkpoint's own]. Another seed gives a second
    /// exact retrain: its distance to the first is the noise floor of "indistinguishable from retraining"
    /// (the `retrain-seed2` method of `unlearnrec experiment` is the checkpoint's seed + 1).
    #[arg(long)]
    seed: Option<u64>,
    /// TOML file with a `[finetune]` table.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output checkpoint.
    #[arg(long)]
    out: PathBuf,
    /// Write a JSON receipt here.
    #[arg(long)]
    receipt: Option<PathBuf>,
    /// Write the remaining training data (LightGCN format) to this directory.
    #[arg(long)]
    write_data: Option<PathBuf>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct UnlearnToml {
    pretrain: PretrainConfig,
    finetune: FinetuneConfig,
}

fn read_toml(path: &std::path::Path) -> anyhow::Result<UnlearnToml> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Runs `pretrain`.
pub fn pretrain(a: PretrainArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mut cfg = match (&a.config, a.preset) {
        (Some(p), _) => read_toml(p)?.pretrain,
        (None, super::model::PresetArg::Default) => PretrainConfig::default(),
        (None, super::model::PresetArg::Reference) => PretrainConfig::reference(),
    };
    if let Some(v) = a.epochs {
        cfg.epochs = v;
    }
    if let Some(v) = a.drop_rate {
        cfg.drop_rate = v;
    }
    if let Some(v) = a.batch_size {
        cfg.batch_size = v;
    }
    if let Some(v) = a.max_steps {
        cfg.max_steps_per_epoch = Some(v);
    }
    if let Some(v) = a.seed {
        cfg.seed = v;
    }
    cfg.validate()?;
    check_out_file(&a.out, "--out")?;
    let ckpt = Checkpoint::load(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    let ds = DataOpts::new(&a.data, &a.read).load()?;
    ckpt.meta().check_dataset(&ds)?;
    let mut bars = TrainBars::new(ctx.quiet, cfg.epochs);
    let un = unlearn::pretrain(&ckpt, &cfg, &mut bars)?;
    bars.finish();
    un.save(&a.out).with_context(|| format!("writing {}", a.out.display()))?;
    if let Some(r) = &un.meta.report {
        let kept = r.history.iter().rfind(|h| h.kept);
        eprintln!(
            "pre-trained the encoder in {:.1}s ({:.2}s/epoch); kept state: epoch {}, validation gap {:.4}, recall@20 {:.4} (backbone {:.4}); wrote {}",
            r.secs,
            r.secs_per_epoch,
            kept.and_then(|k| k.epoch).map_or("init".into(), |e| (e + 1).to_string()),
            kept.map_or(f64::NAN, |k| k.gap),
            kept.map_or(f64::NAN, |k| k.recall),
            r.backbone_recall,
            a.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `unlearn`.
pub fn run(a: UnlearnArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    if a.request.is_none() && a.users.is_empty() && a.items.is_empty() {
        bail!("nothing to forget: give --request FILE, --user ID or --item ID");
    }
    let info = method_info(&a.method)?;
    if a.seed.is_some() && info.name != MethodId::RETRAIN.name() {
        bail!("--seed sets the training seed of --method retrain only");
    }
    check_out_file(&a.out, "--out")?;
    if let Some(p) = &a.receipt {
        check_out_file(p, "--receipt")?;
    }
    if let Some(d) = &a.write_data {
        check_out_dir(d, "--write-data")?;
    }
    let mut ft = match &a.config {
        Some(p) => read_toml(p)?.finetune,
        None if a.fast => FinetuneConfig::fast(),
        None => FinetuneConfig::default(),
    };
    if let Some(e) = a.finetune_epochs {
        ft.epochs = e;
    }
    let before_bytes = std::fs::read(&a.model).with_context(|| format!("reading {}", a.model.display()))?;
    let ckpt = Checkpoint::load(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    let ds = DataOpts::new(&a.data, &a.read).load()?;
    ckpt.meta().check_dataset(&ds)?;
    let (users, items) = (ckpt.users(), ckpt.items());
    // A user's or item's interactions include the validation edges carved from its training data.
    let spec = RequestSpec { file: a.request.clone(), users: a.users.clone(), items: a.items.clone() };
    let request = Request::read(&spec, users, items)?;
    let (req, rr) = request.resolve(&ckpt, a.skip_missing)?;
    if rr.missing > 0 {
        tracing::warn!("skipped {} pair(s) that are not training interactions", rr.missing);
        eprintln!("warning: skipped {} pair(s) that are not training interactions", rr.missing);
    }
    let un = match (&a.unlearner, info.needs_unlearner) {
        (Some(path), true) => Some(Unlearner::load(path).with_context(|| format!("loading {}", path.display()))?),
        (None, true) => bail!("--method {} needs --unlearner FILE (see `unlearnrec pretrain`)", info.name),
        (_, false) => None,
    };
    let sharded = if info.needs_shards {
        Some(sisa::load(&a.model).with_context(|| format!("loading {}", a.model.display()))?)
    } else {
        None
    };
    // Every method's options from the flags; each method reads its own.
    let (fo, ga, inf) = (FinetuneOnlyConfig::default(), GradientAscentConfig::default(), InfluenceConfig::default());
    let opts = MethodOptions {
        unlearner: un.as_ref(),
        finetune: ft,
        retrain_seed: a.seed,
        finetune_only: FinetuneOnlyConfig { epochs: a.finetune_epochs.unwrap_or(fo.epochs), ..fo },
        gradient_ascent: GradientAscentConfig { steps: a.steps.unwrap_or(ga.steps), ..ga },
        influence: InfluenceConfig { hops: a.hops.unwrap_or(inf.hops), ..inf },
        shards: sharded.as_ref().map(|s| &s.shards),
    };
    let method = (info.build)(&opts)?;
    let mut bars = TrainBars::new(ctx.quiet, method.epochs(&ckpt));
    let started = std::time::Instant::now();
    let out = method.forget(&ckpt, &req, &mut bars)?;
    // The whole library call (the report's phases leave out the forgetting and validation figures).
    let secs = started.elapsed().as_secs_f64();
    let report = &out.report;
    bars.finish();
    // The checkpoint, its receipt and the remaining data land together or not at all.
    let mut staged = Staged::default();
    let ckpt_tmp = staged.file(&a.out)?;
    out.save(&ckpt_tmp).with_context(|| format!("writing {}", a.out.display()))?;
    if let Some(dir) = &a.write_data {
        let rest = out.checkpoint.remaining_dataset(&ds);
        let tmp = staged.dir(dir)?;
        unlearnrec_core::data::write_lightgcn(&rest, &tmp).with_context(|| format!("writing {}", dir.display()))?;
    }
    let after_bytes = std::fs::read(&ckpt_tmp).with_context(|| format!("reading back {}", a.out.display()))?;
    let rec = receipt::build(&request.id(), &req, users, items, report, &before_bytes, &after_bytes);
    if let Some(p) = &a.receipt {
        let tmp = staged.file(p)?;
        std::fs::write(&tmp, serde_json::to_string_pretty(&rec)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    staged.commit()?;
    let f = &report.forgetting;
    // The fast path reports no validation figures.
    let valid = match report.valid.get(&MetricKey::RECALL_20) {
        Some(r) => format!(", valid recall@20 {r:.4}"),
        None => String::new(),
    };
    eprintln!(
        "forgot {} ({}, {}) with {} in {:.2}s; removed-edge mean score {:.3} -> {:.3} (non-edges {:.3}), gap {:.3}, MI-BF {:.3}, MI-NG {:.3}{}; wrote {}",
        count(report.edges, "interaction"),
        count(report.users, "user"),
        count(report.items, "item"),
        report.method,
        secs,
        f.removed.before,
        f.removed.after,
        f.non_edges.after,
        f.gap,
        f.mi_bf,
        f.mi_ng,
        valid,
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
