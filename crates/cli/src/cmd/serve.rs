//! `unlearnrec serve`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use unlearnrec_core::unlearn::FinetuneConfig;
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
    /// Abort at this point of the first batch (crash tests).
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
        limits: Limits::default(),
        drain: Duration::from_secs(10),
        retrain_every: a.retrain_every_secs.map(Duration::from_secs),
        consolidate_after_edges: a.consolidate_after_edges,
    };
    unlearnrec_serve::run(cfg, ds, |addr| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{addr}");
        let _ = out.flush();
    })?;
    Ok(ExitCode::SUCCESS)
}
