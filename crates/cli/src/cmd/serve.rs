//! `unlearnrec serve`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use unlearnrec_core::unlearn::FinetuneConfig;
use unlearnrec_serve::api::Rate;
use unlearnrec_serve::store::FaultPoint;
use unlearnrec_serve::{BatchConfig, Limits, ServeConfig, StoreConfig, Token};

use super::data::{DataOpts, ReadOpts};
use crate::util::Ctx;

/// `unlearnrec serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The checkpoint to serve first (version 0 of the ledger; later versions live in --state-dir).
    #[arg(long)]
    model: PathBuf,
    /// The pre-trained unlearner of that checkpoint.
    #[arg(long)]
    unlearner: PathBuf,
    /// The dataset the checkpoint was trained on.
    #[arg(long = "data", value_name = "DATA")]
    data: String,
    #[command(flatten)]
    read: ReadOpts,
    /// The SQLite ledger (created if missing).
    #[arg(long)]
    db: PathBuf,
    /// Address to listen on (port 0: any free port; the address is printed on standard output).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// File holding the bearer token of the forget routes (default: a random token kept in
    /// STATE_DIR/token, created with mode 0600).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Directory of the versioned checkpoints and remaining data (default: <DB>.state).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Requests per batch at most.
    #[arg(long)]
    batch_max: Option<usize>,
    /// Milliseconds to wait for more requests once one is queued.
    #[arg(long)]
    batch_wait_ms: Option<u64>,
    /// Fine-tuning epochs after the encoder pass (default 1, as `unlearn`; 0 for zero-shot latency).
    #[arg(long)]
    finetune_epochs: Option<usize>,
    /// The fast path for streams of small requests: no fine-tuning epoch, a quarter of the encoder's
    /// change, 50 calibration steps at twice the rate (--finetune-epochs still overrides the epochs).
    #[arg(long)]
    fast: bool,
    /// Consolidate every this many seconds when a batch was applied since the last consolidation: retrain
    /// the backbone exactly (from scratch, the checkpoint's own configuration and seed) on the current
    /// version's remaining data in the background, pre-train a fresh unlearner for it (the configuration the
    /// unlearner in use records), and swap both in as the next version, with the edges removed meanwhile
    /// applied on top (default: off).
    #[arg(long, value_name = "S")]
    retrain_every_secs: Option<u64>,
    /// Also consolidate as soon as at least N edges (training and validation) were removed since the served
    /// model's anchor, its last exactly trained model (default: off).
    #[arg(long, value_name = "N")]
    consolidate_after_edges: Option<usize>,
    /// At most N forget requests queued in the ledger; a new one past it gets 429 with Retry-After (a repeat
    /// of a recorded request is still answered).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_queue: u64,
    /// Rate limit of the forget routes per bearer token, requests per second (a token bucket; past it, 429
    /// with Retry-After) (default: off).
    #[arg(long, value_name = "R")]
    rate_limit: Option<u32>,
    /// The rate limit's burst: requests a token may send at once (default: the rate).
    #[arg(long, value_name = "B")]
    rate_burst: Option<u32>,
    /// Largest request body, bytes (past it, 413).
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    max_body_bytes: usize,
    /// On SIGTERM or ctrl-c: seconds in-flight HTTP requests may take to finish, then seconds the worker and
    /// the consolidation thread may take to stop (fine-tuning and consolidations stop at their next
    /// minibatch); past either, the process exits anyway and the batch in flight stays queued.
    #[arg(long, value_name = "S", default_value_t = 10)]
    shutdown_timeout_secs: u64,
    /// Restarts of the worker after a panic (1 s, 2 s, 4 s ... apart; /v1/health answers 503 meanwhile);
    /// one more panic stops the service with a non-zero exit status. The panicked batch stays queued.
    #[arg(long, value_name = "N", default_value_t = 3)]
    max_worker_restarts: u32,
    /// Inject a fault in the batch path (crash and fault tests).
    #[arg(long, hide = true)]
    fault_point: Option<FaultPoint>,
}

fn read_or_create_token(explicit: Option<&Path>, state_dir: &Path) -> anyhow::Result<Token> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let p = state_dir.join("token");
            if !p.exists() {
                use rand::Rng;
                let bytes: [u8; 32] = rand::rng().random();
                let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                std::fs::create_dir_all(state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(&p).with_context(|| format!("creating {}", p.display()))?;
                writeln!(f, "{text}").with_context(|| format!("writing {}", p.display()))?;
                eprintln!("wrote a new bearer token to {}", p.display());
            }
            p
        }
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading the token {}", path.display()))?;
    Token::new(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Runs `serve`.
pub fn run(a: ServeArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let state_dir = a.state_dir.clone().unwrap_or_else(|| {
        let mut s = a.db.clone().into_os_string();
        s.push(".state");
        s.into()
    });
    let token = read_or_create_token(a.token_file.as_deref(), &state_dir)?;
    let mut finetune = if a.fast { FinetuneConfig::fast() } else { FinetuneConfig::default() };
    if let Some(e) = a.finetune_epochs {
        finetune.epochs = e;
    }
    let d = BatchConfig::default();
    let batch =
        BatchConfig { max: a.batch_max.unwrap_or(d.max), wait: a.batch_wait_ms.map_or(d.wait, Duration::from_millis) };
    anyhow::ensure!(batch.max >= 1, "--batch-max must be at least 1");
    anyhow::ensure!(a.retrain_every_secs != Some(0), "--retrain-every-secs must be at least 1");
    anyhow::ensure!(a.consolidate_after_edges != Some(0), "--consolidate-after-edges must be at least 1");
    anyhow::ensure!(a.max_queue >= 1, "--max-queue must be at least 1");
    anyhow::ensure!(a.rate_limit != Some(0), "--rate-limit must be at least 1");
    anyhow::ensure!(a.rate_burst != Some(0), "--rate-burst must be at least 1");
    anyhow::ensure!(a.rate_burst.is_none() || a.rate_limit.is_some(), "--rate-burst needs --rate-limit");
    anyhow::ensure!(a.max_body_bytes >= 64, "--max-body-bytes must be at least 64");
    let rate = a.rate_limit.map(|r| Rate { per_sec: r, burst: a.rate_burst.unwrap_or(r) });
    let limits = Limits { body_bytes: a.max_body_bytes, max_queue: Some(a.max_queue), rate, ..Limits::default() };
    let shutdown = Duration::from_secs(a.shutdown_timeout_secs);
    let ds = DataOpts::new(&a.data, &a.read).load()?;
    let cfg = ServeConfig {
        store: StoreConfig {
            model: a.model,
            unlearner: a.unlearner,
            db: a.db,
            state_dir,
            finetune,
            fault: a.fault_point,
        },
        listen: a.listen,
        token,
        batch,
        limits,
        drain: shutdown,
        retrain_every: a.retrain_every_secs.map(Duration::from_secs),
        consolidate_after_edges: a.consolidate_after_edges,
        stop_timeout: shutdown,
        max_restarts: a.max_worker_restarts,
    };
    unlearnrec_serve::run(cfg, ds, |addr| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{addr}");
        let _ = out.flush();
    })?;
    Ok(ExitCode::SUCCESS)
}
