//! `unlearnrec data`: stats, synth, convert, poison.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use unlearnrec_core::checkpoint::Checkpoint;
use unlearnrec_core::data::synthetic::{SynthConfig, generate};
use unlearnrec_core::data::{self, Dataset, Format, Interactions, LoadOptions, SplitMethod};
use unlearnrec_core::unlearn::poison::least_related_edges;
use unlearnrec_core::unlearn::request::format_pairs;
use unlearnrec_core::unlearn::spam::{self, SpamConfig};

use crate::util::{Ctx, Staged, check_out_dir, check_out_file, print_json};

/// The `data` subcommands.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Print dataset statistics: users, items, interactions per split, density, degree quantiles.
    Stats(StatsArgs),
    /// Generate a seeded synthetic dataset (latent communities, power-law popularity) in LightGCN format.
    Synth(SynthArgs),
    /// Convert a dataset between formats (LightGCN text, CSV/TSV, RecBole .inter).
    Convert(ConvertArgs),
    /// Inject adversarial (least-related) edges into the training data, as the reference's attack (docs/method.md §12): the
    /// poisoned dataset plus the request that unlearns them.
    Poison(PoisonArgs),
}

/// How to read and split a dataset; shared by every command that takes a dataset.
#[derive(Debug, Clone, Default, Args)]
pub struct ReadOpts {
    /// Override format detection.
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Field delimiter of delimited files (default: detected among `::`, tab, comma, semicolon, spaces).
    #[arg(long)]
    pub delimiter: Option<String>,
    /// Whether delimited files have a header line (default: detected).
    #[arg(long)]
    pub header: Option<bool>,
    /// Keep only interactions with rating >= this value (binarises explicit ratings).
    #[arg(long)]
    pub min_rating: Option<f64>,
    /// Fraction of each user's interactions held out for test when the data has no test split.
    #[arg(long)]
    pub test_ratio: Option<f64>,
    /// Fraction of each user's interactions held out for validation when the data has no split.
    #[arg(long)]
    pub valid_ratio: Option<f64>,
    /// Holdout method when the data has no split (auto: temporal when timestamps exist, else random).
    #[arg(long, value_enum)]
    pub holdout: Option<SplitArg>,
    /// Seed of the random holdout.
    #[arg(long)]
    pub holdout_seed: Option<u64>,
}

/// A dataset argument with its reading options.
#[derive(Debug, Clone, Args)]
pub struct DataOpts {
    /// Dataset: a LightGCN directory (train.txt, test.txt), a delimited or .inter file, a directory of
    /// split files, or `synth` for the built-in synthetic dataset.
    #[arg(value_name = "DATA")]
    pub data: String,
    #[command(flatten)]
    pub read: ReadOpts,
}

/// Dataset formats on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// LightGCN/NGCF text: `user item item ...` per line.
    Lightgcn,
    /// Delimited interaction rows: user, item, optional rating, optional timestamp.
    Delimited,
    /// RecBole atomic `.inter` files.
    Recbole,
}

/// Holdout methods on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SplitArg {
    /// Temporal when timestamps exist, random otherwise.
    Auto,
    /// Seeded per-user random holdout.
    Random,
    /// Per-user latest interactions held out.
    Temporal,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Lightgcn => Format::LightGcn,
            FormatArg::Delimited => Format::Delimited,
            FormatArg::Recbole => Format::RecBole,
        }
    }
}

impl DataOpts {
    /// Options for `data` read with `read`.
    pub fn new(data: &str, read: &ReadOpts) -> Self {
        Self { data: data.to_string(), read: read.clone() }
    }

    /// Reads the dataset these options describe.
    pub fn load(&self) -> anyhow::Result<Dataset> {
        let r = &self.read;
        if self.data == "synth" {
            return generate(&SynthConfig::default()).context("generating the synthetic dataset");
        }
        let mut opts = LoadOptions {
            format: r.format.map(Format::from),
            delimiter: r.delimiter.clone(),
            header: r.header,
            min_rating: r.min_rating,
            ..LoadOptions::default()
        };
        if let Some(r) = r.test_ratio {
            opts.split.test_ratio = Some(r);
        }
        if let Some(r) = r.valid_ratio {
            opts.split.valid_ratio = Some(r);
        }
        if let Some(m) = r.holdout {
            opts.split.method = match m {
                SplitArg::Auto => SplitMethod::Auto,
                SplitArg::Random => SplitMethod::Random,
                SplitArg::Temporal => SplitMethod::Temporal,
            };
        }
        if let Some(s) = r.holdout_seed {
            opts.split.seed = s;
        }
        let path = Path::new(&self.data);
        data::load(path, &opts).with_context(|| format!("loading dataset {}", path.display()))
    }
}

/// `data stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    data: DataOpts,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// `data synth`.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output directory (created; LightGCN format).
    #[arg(long)]
    out: PathBuf,
    /// Number of users.
    #[arg(long)]
    users: Option<usize>,
    /// Number of items.
    #[arg(long)]
    items: Option<usize>,
    /// Number of distinct interactions (all splits together).
    #[arg(long)]
    interactions: Option<usize>,
    /// Number of latent communities.
    #[arg(long)]
    communities: Option<usize>,
    /// Seed.
    #[arg(long)]
    seed: Option<u64>,
}

/// `data convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    #[command(flatten)]
    data: DataOpts,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Output format.
    #[arg(long = "to", value_enum)]
    to: OutFormat,
}

/// `data poison`.
#[derive(Debug, Args)]
pub struct PoisonArgs {
    #[command(flatten)]
    data: DataOpts,
    /// A checkpoint trained on the clean dataset; its final embeddings choose the least related pairs
    /// (required unless --spam).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Inject fake accounts instead (a bandwagon shilling attack): a --spam-share of the users, each
    /// interacting with --spam-targets less popular items and --spam-filler popular ones. Writes the
    /// dataset, `spam_accounts.txt` (the fake accounts' ids, the `request make --protocol spam --accounts`
    /// file) and `spam_targets.txt` (the promoted items' ids).
    #[arg(long, conflicts_with = "model")]
    spam: bool,
    /// Fake accounts as a share of the users, in (0, 1].
    #[arg(long, default_value_t = 0.01, requires = "spam")]
    spam_share: f64,
    /// Promoted items per fake account.
    #[arg(long, default_value_t = 5, requires = "spam")]
    spam_targets: usize,
    /// Popular filler items per fake account.
    #[arg(long, default_value_t = 20, requires = "spam")]
    spam_filler: usize,
    /// Fraction of the users that get an adversarial edge, and of the items (reference: 0.5 on Gowalla,
    /// 1 on ML-1M).
    #[arg(long, default_value_t = 0.5)]
    ratio: f64,
    /// Seed of the choice of users and items.
    #[arg(long, default_value_t = 2025)]
    seed: u64,
    /// Output directory of the poisoned dataset (LightGCN format; validation and test splits unchanged).
    #[arg(long)]
    out: PathBuf,
    /// Where to write the request (the injected edges as `user,item` external ids; default
    /// `<OUT>/adversarial.csv`).
    #[arg(long)]
    request: Option<PathBuf>,
}

impl OutFormat {
    fn name(self) -> &'static str {
        match self {
            OutFormat::Lightgcn => "LightGCN text",
            OutFormat::Csv => "CSV",
            OutFormat::Tsv => "TSV",
            OutFormat::Recbole => "RecBole .inter",
        }
    }
}

/// Output formats of `data convert`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutFormat {
    /// LightGCN text (train.txt, valid.txt, test.txt, plus user_list.txt/item_list.txt for string ids).
    Lightgcn,
    /// train.csv, valid.csv, test.csv with a `user,item` header.
    Csv,
    /// train.tsv, valid.tsv, test.tsv.
    Tsv,
    /// RecBole benchmark files `{name}.train.inter`, `.valid.inter`, `.test.inter`.
    Recbole,
}

/// Runs a `data` subcommand.
pub fn run(cmd: DataCommand, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    match cmd {
        DataCommand::Stats(a) => stats(a),
        DataCommand::Synth(a) => synth(a),
        DataCommand::Convert(a) => convert(a),
        DataCommand::Poison(a) => poison(a),
    }
}

fn stats(a: StatsArgs) -> anyhow::Result<ExitCode> {
    let ds = a.data.load()?;
    let st = ds.stats();
    if a.json {
        print_json(&st)?;
    } else {
        print!("{}", format_stats(&ds.name, &st)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn format_stats(name: &str, st: &data::DatasetStats) -> anyhow::Result<String> {
    use std::fmt::Write;
    let q = |d: &data::DegreeQuantiles| {
        format!(
            "min {} p25 {} median {} p75 {} p90 {} p99 {} max {}",
            d.min, d.p25, d.median, d.p75, d.p90, d.p99, d.max
        )
    };
    let mut out = String::new();
    writeln!(out, "dataset          {name}")?;
    writeln!(out, "users            {}", st.users)?;
    writeln!(out, "items            {}", st.items)?;
    writeln!(out, "train            {}", st.train)?;
    writeln!(out, "valid            {}", st.valid)?;
    writeln!(out, "test             {}", st.test)?;
    writeln!(out, "density          {:.6}", st.density)?;
    writeln!(out, "duplicates       {} (merged)", st.duplicates)?;
    writeln!(out, "test users       {}", st.test_users)?;
    writeln!(out, "users w/o train  {}", st.users_without_train)?;
    writeln!(out, "user degree      {}", q(&st.user_degree))?;
    writeln!(out, "item degree      {}", q(&st.item_degree))?;
    Ok(out)
}

fn synth(a: SynthArgs) -> anyhow::Result<ExitCode> {
    let d = SynthConfig::default();
    let cfg = SynthConfig {
        users: a.users.unwrap_or(d.users),
        items: a.items.unwrap_or(d.items),
        interactions: a.interactions.unwrap_or(d.interactions),
        communities: a.communities.unwrap_or(d.communities),
        seed: a.seed.unwrap_or(d.seed),
        ..d
    };
    check_out_dir(&a.out, "--out")?;
    let ds = generate(&cfg)?;
    create_out_dir(&a.out)?;
    data::write_lightgcn(&ds, &a.out)?;
    let st = ds.stats();
    eprintln!(
        "wrote {} users, {} items, {} train / {} valid / {} test interactions to {}",
        st.users,
        st.items,
        st.train,
        st.valid,
        st.test,
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn convert(a: ConvertArgs) -> anyhow::Result<ExitCode> {
    check_out_dir(&a.out, "--out")?;
    let ds = a.data.load()?;
    create_out_dir(&a.out)?;
    match a.to {
        OutFormat::Lightgcn => data::write_lightgcn(&ds, &a.out)?,
        OutFormat::Csv => data::write_delimited(&ds, &a.out, b',')?,
        OutFormat::Tsv => data::write_delimited(&ds, &a.out, b'\t')?,
        OutFormat::Recbole => data::write_recbole(&ds, &a.out)?,
    }
    let st = ds.stats();
    eprintln!(
        "converted {} ({} users, {} items; {} train / {} valid / {} test interactions) to {} in {}",
        ds.name,
        st.users,
        st.items,
        st.train,
        st.valid,
        st.test,
        a.to.name(),
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn poison(a: PoisonArgs) -> anyhow::Result<ExitCode> {
    check_out_dir(&a.out, "--out")?;
    if let Some(r) = &a.request {
        check_out_file(r, "--request")?;
    }
    let ds = a.data.load()?;
    if a.spam {
        return poison_spam(&a, ds);
    }
    let Some(model) = &a.model else { bail!("data poison needs --model (or --spam)") };
    let ckpt = Checkpoint::load(model).with_context(|| format!("loading {}", model.display()))?;
    ckpt.meta().check_dataset(&ds)?;
    let emb = ckpt.final_embeddings()?;
    let mut known = ds.train.iter().chain(ds.test.iter()).collect::<Vec<_>>();
    if let Some(v) = &ds.valid {
        known.extend(v.iter());
    }
    let (known, _) = Interactions::from_pairs(known);
    let adv = least_related_edges(&emb, &known, a.ratio, a.seed)?;
    let (train, _) = Interactions::from_pairs(ds.train.iter().chain(adv.iter()).collect());
    let poisoned = Dataset { name: format!("{}-poisoned", ds.name), train, ..ds };
    let request = a.request.clone().unwrap_or_else(|| a.out.join("adversarial.csv"));
    // The poisoned dataset and its request land together.
    let body = format_pairs(&adv, &poisoned.users, &poisoned.items);
    let mut staged = Staged::default();
    let dir_tmp = staged.dir(&a.out)?;
    data::write_lightgcn(&poisoned, &dir_tmp).with_context(|| format!("writing {}", a.out.display()))?;
    let req_tmp = match &a.request {
        Some(r) => staged.file(r)?,
        None => dir_tmp.join("adversarial.csv"),
    };
    std::fs::write(&req_tmp, body.as_bytes()).with_context(|| format!("writing {}", request.display()))?;
    staged.commit()?;
    eprintln!(
        "injected {} adversarial edges ({:.2} % of {} training edges); wrote {} and the request {}",
        adv.len(),
        100.0 * adv.len() as f64 / (poisoned.train.len() - adv.len()) as f64,
        poisoned.train.len() - adv.len(),
        a.out.display(),
        request.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `data poison --spam`: the dataset with fake accounts and the two id lists, landed together.
fn poison_spam(a: &PoisonArgs, ds: Dataset) -> anyhow::Result<ExitCode> {
    let cfg = SpamConfig { share: a.spam_share, targets: a.spam_targets, filler: a.spam_filler, seed: a.seed };
    let s = spam::inject(&ds, &cfg)?;
    let lines = |ids: &[u32], map: &unlearnrec_core::data::IdMap| -> String {
        ids.iter().map(|&x| format!("{}\n", map.external(x))).collect()
    };
    let mut staged = Staged::default();
    let dir_tmp = staged.dir(&a.out)?;
    data::write_lightgcn(&s.dataset, &dir_tmp).with_context(|| format!("writing {}", a.out.display()))?;
    std::fs::write(dir_tmp.join("spam_accounts.txt"), lines(&s.fake_users, &s.dataset.users))
        .with_context(|| format!("writing {}", a.out.join("spam_accounts.txt").display()))?;
    std::fs::write(dir_tmp.join("spam_targets.txt"), lines(&s.targets, &s.dataset.items))
        .with_context(|| format!("writing {}", a.out.join("spam_targets.txt").display()))?;
    staged.commit()?;
    let injected = s.dataset.train.len() - ds.train.len();
    eprintln!(
        "injected {} fake accounts ({injected} edges: {} targets and {} filler items each); wrote {} with spam_accounts.txt and spam_targets.txt",
        s.fake_users.len(),
        s.targets.len(),
        a.spam_filler,
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn create_out_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_file() {
        bail!("output {} is a file, expected a directory", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}
