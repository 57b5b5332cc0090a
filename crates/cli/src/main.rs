//! `unlearnrec`: train graph recommenders and make them forget.
//!
//! This binary only parses flags, calls one library entry point per command and formats the result; all
//! logic lives in `unlearnrec-core`.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

// Training allocates and frees embedding-sized buffers every step; glibc's malloc returns them to the
// kernel and pays page faults on each reuse (2-3x slower steps), mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cmd;
mod progress;
mod util;

/// Train graph recommenders, then make them forget interactions, users or items in seconds, with an audit
/// that proves it (UnlearnRec).
#[derive(Debug, Parser)]
#[command(name = "unlearnrec", version, propagate_version = true)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). Logs go to standard error.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors on standard error; no progress bars.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train, pre-train the encoder, forget a random 1 % request, retrain, and compare in one table.
    Demo(cmd::demo::DemoArgs),
    /// Inspect, generate and convert datasets.
    #[command(subcommand)]
    Data(cmd::data::DataCommand),
    /// Train a recommender (pop, mf, lightgcn, sgl, simgcl) and write a checkpoint.
    Train(cmd::model::TrainArgs),
    /// Full-ranking evaluation of a checkpoint (Recall, NDCG, Precision, Hit, MRR at several K).
    Eval(cmd::model::EvalArgs),
    /// Export the final embeddings as safetensors for Python or a vector index.
    Export(cmd::model::ExportArgs),
    /// Top-k unseen items for one user.
    Recommend(cmd::model::RecommendArgs),
    /// Make a checkpoint of base embeddings trained elsewhere (e.g. a PyTorch LightGCN) on a dataset.
    Import(cmd::model::ImportArgs),
    /// Pre-train the influence encoder of a trained model on simulated deletions.
    Pretrain(cmd::unlearn::PretrainArgs),
    /// Forget interactions, users or items (UnlearnRec, or exact retraining) and write a new checkpoint.
    Unlearn(cmd::unlearn::UnlearnArgs),
    /// Draw deletion requests by a protocol (random, users, items, popular, tail).
    #[command(subcommand)]
    Request(cmd::audit::RequestCommand),
    /// Audit forgetting: ranks of the removed items, membership inference, agreement with a reference.
    Audit(cmd::audit::AuditArgs),
    /// Run a grid of datasets × models × protocols × methods × seeds (cached, resumable) into CSV,
    /// Markdown and SVG plots.
    Experiment(cmd::experiment::ExperimentArgs),
    /// Serve recommendations and forget requests over HTTP, with a durable ledger of requests.
    Serve(cmd::serve::ServeArgs),
    /// Time the hot paths (Â, removal, SpMM, a training step, full-ranking evaluation) on a dataset.
    Bench(cmd::bench::BenchArgs),
}

/// Parses the command line; negative numbers are values (`--lr -1` reaches the range check), everywhere.
fn parse() -> Result<Cli, clap::Error> {
    fn allow_negative(cmd: clap::Command) -> clap::Command {
        cmd.allow_negative_numbers(true).mut_subcommands(allow_negative)
    }
    let matches = allow_negative(Cli::command()).try_get_matches()?;
    Cli::from_arg_matches(&matches)
}

fn main() -> ExitCode {
    // candle's CPU ops run on their own spin-waiting thread pool beside rayon's (ours: SpMM, Adam, ranking,
    // sampling). On a small machine the two pools fight for the cores and spinning wastes most of a step
    // (pre-training ran 5x slower), so candle runs single-threaded unless the user says otherwise.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: first statement of main, before any thread exists.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    util::init_logging(cli.verbose, cli.quiet);
    let ctx = util::Ctx { quiet: cli.quiet };
    let result = match cli.command {
        Command::Demo(a) => cmd::demo::run(a, &ctx),
        Command::Data(c) => cmd::data::run(c, &ctx),
        Command::Train(a) => cmd::model::train(a, &ctx),
        Command::Eval(a) => cmd::model::eval(a, &ctx),
        Command::Export(a) => cmd::model::export(a, &ctx),
        Command::Recommend(a) => cmd::model::recommend(a, &ctx),
        Command::Import(a) => cmd::model::import(a, &ctx),
        Command::Bench(a) => cmd::bench::run(a, &ctx),
        Command::Serve(a) => cmd::serve::run(a, &ctx),
        Command::Pretrain(a) => cmd::unlearn::pretrain(a, &ctx),
        Command::Unlearn(a) => cmd::unlearn::run(a, &ctx),
        Command::Request(c) => cmd::audit::request(c, &ctx),
        Command::Audit(a) => cmd::audit::run(a, &ctx),
        Command::Experiment(a) => cmd::experiment::run(a, &ctx),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", util::render_error(&err));
            ExitCode::from(2)
        }
    }
}
