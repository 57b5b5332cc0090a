//! `unlearnrec request make | audit`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use unlearnrec_core::checkpoint::Checkpoint;
use unlearnrec_core::data::Dataset;
use unlearnrec_core::eval::audit::AgreementUsers;
use unlearnrec_core::graph::Graph;
use unlearnrec_core::unlearn::audit::{AuditConfig, AuditReport, audit_checkpoints};
use unlearnrec_core::unlearn::protocol::{DEFAULT_SEED, Protocol, make_request};
use unlearnrec_core::unlearn::request::{Request, RequestSpec, format_pairs};
use unlearnrec_core::unlearn::scenario::{self, Scenario};

use super::data::{DataOpts, ReadOpts};
use crate::util::{Ctx, Staged, check_out_dir, check_out_file, count, print_json};

/// The `request` subcommands.
#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// Draw a deletion request from a dataset's training edges and write it as `user,item` CSV.
    Make(MakeArgs),
}

/// `unlearnrec request make`.
#[derive(Debug, Args)]
pub struct MakeArgs {
    /// The dataset whose training edges the request is drawn from.
    #[arg(long = "data", value_name = "DATA")]
    data: String,
    #[command(flatten)]
    read: ReadOpts,
    /// How edges are drawn. One request: random, users, items, popular (alias core: highest-degree users)
    /// or tail (alias edge: lowest-degree users). A stream of single-user requests (written as one file
    /// each into the --out directory): user-subset (a --fraction of one user's items, default 0.3),
    /// account (one whole user), sensitive-items (one user's edges to a fixed random --share of the
    /// items) or spam (one fake account from --accounts).
    #[arg(long, value_parser = parse_protocol)]
    protocol: ProtocolArg,
    /// One request: target fraction of the training edges, in (0, 1) (required). user-subset: the share of
    /// each user's items, in (0, 1] [default: 0.3].
    #[arg(long)]
    fraction: Option<f64>,
    /// Streams: the number of requests.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// sensitive-items: the share of the catalogue marked sensitive, in (0, 1].
    #[arg(long, default_value_t = scenario::DEFAULT_SENSITIVE_SHARE)]
    share: f64,
    /// spam: the fake accounts, one external user id per line (`data poison --spam` writes
    /// `spam_accounts.txt`).
    #[arg(long)]
    accounts: Option<PathBuf>,
    /// Seed of the draw [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Output file (`user,item` lines in external ids, with a header); for a stream, a directory that gets
    /// `request-0001.csv`, `request-0002.csv`, ….
    #[arg(long)]
    out: PathBuf,
}

/// `--protocol`: one request of a protocol, or a stream of a scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProtocolArg {
    /// One request.
    One(Protocol),
    /// A stream of single-user requests (the scenario's name).
    Stream(&'static str),
}

const SCENARIOS: [&str; 4] = ["user-subset", "account", "sensitive-items", "spam"];

fn parse_protocol(s: &str) -> Result<ProtocolArg, String> {
    if let Some(name) = SCENARIOS.iter().find(|&&n| n == s) {
        return Ok(ProtocolArg::Stream(name));
    }
    s.parse::<Protocol>().map(ProtocolArg::One).map_err(|e| format!("{e}, or a stream: {}", SCENARIOS.join(", ")))
}

/// Users compared with the reference, on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AgreementUsersArg {
    /// Users with at least one removed edge.
    Removed,
    /// Every user.
    All,
}

/// `unlearnrec audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The checkpoint to audit (usually an unlearned one).
    #[arg(long = "model")]
    model: PathBuf,
    /// The dataset the checkpoint was trained on.
    #[arg(long = "data", value_name = "DATA")]
    data: String,
    #[command(flatten)]
    read: ReadOpts,
    /// The request: a file of `user,item` pairs (external ids) that the model should have forgotten.
    #[arg(long)]
    request: PathBuf,
    /// A reference checkpoint, typically retrained without the request: its own figures and the agreement.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// The checkpoint before unlearning: adds the removed edges' scores before and after.
    #[arg(long)]
    original: Option<PathBuf>,
    /// Seed of the attacker's samples and of the user sample [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Top-K cut-off [default: 20].
    #[arg(short, long)]
    k: Option<usize>,
    /// Users compared with the reference [default: removed].
    #[arg(long, value_enum)]
    agreement_users: Option<AgreementUsersArg>,
    /// Compare at most this many of them (a seeded sample).
    #[arg(long)]
    max_agreement_users: Option<usize>,
    /// Drop listed pairs that were never training interactions instead of failing.
    #[arg(long)]
    skip_missing: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs a `request` subcommand.
pub fn request(c: RequestCommand, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let RequestCommand::Make(a) = c;
    let protocol = match a.protocol {
        ProtocolArg::One(p) => p,
        ProtocolArg::Stream(name) => return request_stream(&a, name, ctx),
    };
    let Some(fraction) = a.fraction else { bail!("--protocol {protocol} needs --fraction") };
    check_out_file(&a.out, "--out")?;
    let ds = DataOpts::new(&a.data, &a.read).load()?;
    let graph = Graph::from_interactions(ds.n_users(), ds.n_items(), &ds.train);
    let seed = a.seed.unwrap_or(DEFAULT_SEED);
    let req = make_request(&graph, protocol, fraction, seed)?;
    let text = format_pairs(&req, &ds.users, &ds.items);
    unlearnrec_core::io::write_atomic(&a.out, text.as_bytes())
        .with_context(|| format!("writing {}", a.out.display()))?;
    if !ctx.quiet {
        eprintln!(
            "request ({protocol} protocol, fraction {fraction}, seed {seed}): {} interactions of {} ({:.2} %), {} users, {} items; wrote {}",
            req.len(),
            graph.n_edges(),
            100.0 * req.len() as f64 / graph.n_edges() as f64,
            distinct(req.users()),
            distinct(req.items()),
            a.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn distinct(v: &[u32]) -> usize {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.dedup();
    v.len()
}

/// `request make` of a stream scenario: one file per request in the `--out` directory, written together.
fn request_stream(a: &MakeArgs, name: &str, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    check_out_dir(&a.out, "--out")?;
    let ds = DataOpts::new(&a.data, &a.read).load()?;
    let graph = Graph::from_interactions(ds.n_users(), ds.n_items(), &ds.train);
    let seed = a.seed.unwrap_or(DEFAULT_SEED);
    let scenario = match name {
        "user-subset" => Scenario::UserSubset { fraction: a.fraction.unwrap_or(scenario::DEFAULT_SUBSET_FRACTION) },
        "account" => Scenario::Account,
        "sensitive-items" => Scenario::SensitiveItems { share: a.share },
        _ => {
            let Some(path) = &a.accounts else { bail!("--protocol spam needs --accounts (the fake accounts' ids)") };
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let fake_users = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(n, l)| {
                    ds.users.get(l.trim()).with_context(|| {
                        format!("{}:{}: unknown user {:?} in the dataset", path.display(), n + 1, l.trim())
                    })
                })
                .collect::<anyhow::Result<Vec<u32>>>()?;
            Scenario::Spam { fake_users }
        }
    };
    let requests = scenario::stream(&graph, &scenario, a.requests, seed)?;
    let mut staged = Staged::default();
    let dir = staged.dir(&a.out)?;
    for (k, r) in requests.iter().enumerate() {
        let file = dir.join(format!("request-{:04}.csv", k + 1));
        std::fs::write(&file, format_pairs(r, &ds.users, &ds.items))
            .with_context(|| format!("writing {}", file.display()))?;
    }
    staged.commit()?;
    if !ctx.quiet {
        let edges: usize = requests.iter().map(|r| r.len()).sum();
        eprintln!(
            "{} requests ({name}, seed {seed}), one user each: {edges} interactions of {} ({:.2} %); wrote {}",
            requests.len(),
            graph.n_edges(),
            100.0 * edges as f64 / graph.n_edges() as f64,
            a.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn load_for(path: &Path, ds: &Dataset, what: &str) -> anyhow::Result<Checkpoint> {
    let ckpt = Checkpoint::load(path).with_context(|| format!("loading {what} {}", path.display()))?;
    ckpt.meta().check_dataset(ds).with_context(|| format!("{what} {}", path.display()))?;
    Ok(ckpt)
}

/// Runs `audit`.
pub fn run(a: AuditArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mut cfg = AuditConfig::default();
    if let Some(s) = a.seed {
        cfg.seed = s;
    }
    if let Some(k) = a.k {
        cfg.k = k;
    }
    if let Some(u) = a.agreement_users {
        cfg.agreement_users = match u {
            AgreementUsersArg::Removed => AgreementUsers::Removed,
            AgreementUsersArg::All => AgreementUsers::All,
        };
    }
    cfg.max_agreement_users = a.max_agreement_users;
    cfg.validate()?;
    let ds = DataOpts::new(&a.data, &a.read).load()?;
    let ckpt = load_for(&a.model, &ds, "checkpoint")?;
    let reference = a.reference.as_deref().map(|p| load_for(p, &ds, "reference checkpoint")).transpose()?;
    let original = a.original.as_deref().map(|p| load_for(p, &ds, "original checkpoint")).transpose()?;
    let (users, items) = (ckpt.users(), ckpt.items());
    // The request's pairs were training (or validation) edges before unlearning: still seen, or removed.
    let before = unlearnrec_core::pipeline::union(&ckpt.seen(), ckpt.removed());
    let graph = Graph::from_interactions(ckpt.model().n_users(), ckpt.model().n_items(), &before);
    let spec = RequestSpec { file: Some(a.request.clone()), ..RequestSpec::default() };
    let (req, rr) = Request::read(&spec, users, items)?.resolve_in(users, items, &graph, a.skip_missing)?;
    if rr.missing > 0 {
        eprintln!("warning: skipped {} pair(s) that were never training interactions", rr.missing);
    }
    let report = audit_checkpoints(&ckpt, &req, &ds.test, reference.as_ref(), original.as_ref(), &cfg)?;
    if a.json {
        print_json(&report)?;
    } else {
        print_table(&a.model, &report);
    }
    Ok(ExitCode::SUCCESS)
}

fn game(x: Option<f64>) -> String {
    x.map_or_else(|| "–".to_string(), |v| format!("{v:.3}"))
}

fn print_table(model: &Path, r: &AuditReport) {
    println!(
        "audit of {}: {} removed ({}, {})",
        model.display(),
        count(r.removed, "interaction"),
        count(r.users, "user"),
        count(r.items, "item")
    );
    let k = r.rank.k;
    println!(
        "| model | mean rank | median rank | in top-{k} | strongest attacker | its AUC | removed called members | strongest distinguisher | removed vs held-out AUC |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut rows = vec![("audited", &r.rank, &r.mia)];
    if let Some(x) = &r.reference {
        rows.push(("reference", &x.rank, &x.mia));
    }
    for (name, rank, mia) in &rows {
        println!(
            "| {name} | {:.1} | {:.1} | {:.3} | {} | {:.3} | {:.3} | {} | {} |",
            rank.mean_rank,
            rank.median_rank,
            rank.top_k_fraction,
            mia.strongest,
            mia.auc,
            mia.removed_member_fraction,
            mia.strongest_distinguisher.as_deref().unwrap_or("–"),
            game(mia.removed_vs_held_out_auc)
        );
    }
    println!(
        "every attacker (membership: AUC of members vs held-out non-members, removed edges called members at the median threshold; difference attackers play only the removed-vs-held-out game):"
    );
    println!(
        "| model | attacker | AUC | removed called members | non-members called members | removed vs held-out AUC |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, _, mia) in &rows {
        for a in &mia.attackers {
            let (auc, removed, non) = match &a.membership {
                Some(m) => (
                    format!("{:.3}", m.auc),
                    format!("{:.3}", m.removed_member_fraction),
                    format!("{:.3}", m.non_member_fraction),
                ),
                None => ("–".into(), "–".into(), "–".into()),
            };
            println!("| {name} | {} | {auc} | {removed} | {non} | {} |", a.name, game(a.removed_vs_held_out_auc));
        }
    }
    if let Some(x) = &r.reference {
        let g = &x.agreement;
        println!(
            "agreement with the reference over {}, {}: top-{} overlap {:.3}, KL(reference ‖ audited) {:.4}",
            count(g.users, "user"),
            x.agreement_over,
            g.k,
            g.top_k_overlap,
            g.kl
        );
    }
    if let Some(f) = &r.forgetting {
        println!(
            "forgetting (original -> audited): removed-edge mean score {:.3} -> {:.3} (non-edges {:.3}), gap {:.3}, MI-BF {:.3}, MI-NG {:.3}",
            f.removed.before, f.removed.after, f.non_edges.after, f.gap, f.mi_bf, f.mi_ng
        );
    }
}
