//! Crash replay: the service as a real child process, 20 single-user forget requests over HTTP, `kill -9`
//! while the worker is applying them, a restart on the same state, and then the served model must be the
//! one an uninterrupted run of the same requests serves, bit for bit, and the one applying the union of the
//! requests once from the starting model gives. The service unlearns from the checkpoint's anchor with
//! the union of everything removed since, so the model depends on what was applied, not on how the crash
//! cut it into batches.
//!
//! The child is this test binary itself, re-executed with only [`child_serve_process`] selected and the
//! directories in environment variables: it runs [`unlearnrec_serve::run`], what `unlearnrec serve` runs,
//! on a dataset it generates from the same seed. (The CLI binary belongs to another crate, and the CLI's
//! own kill -9 test covers its argument handling.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use unlearnrec_core::checkpoint::Checkpoint;
use unlearnrec_core::data::Dataset;
use unlearnrec_core::data::synthetic::{SynthConfig, generate};
use unlearnrec_core::io::sha256_hex;
use unlearnrec_core::model::{ModelConfig, ModelKind};
use unlearnrec_core::train::{Silent, TrainConfig};
use unlearnrec_core::unlearn::{self, FinetuneConfig, PretrainConfig, Unlearner};
use unlearnrec_serve::ledger::Ledger;
use unlearnrec_serve::{BatchConfig, Limits, ServeConfig, StoreConfig, Token};

const TOKEN: &str = "crash-replay-token";
/// Set in the child: the directory with the model and the unlearner.
const SETUP_ENV: &str = "UNLEARNREC_CRASH_REPLAY_SETUP";
/// Set in the child: the directory of its ledger and state.
const RUN_ENV: &str = "UNLEARNREC_CRASH_REPLAY_RUN";
/// Set in the child: requests per batch at most.
const BATCH_ENV: &str = "UNLEARNREC_CRASH_REPLAY_BATCH";

fn dataset() -> Dataset {
    generate(&SynthConfig { users: 200, items: 150, interactions: 5000, seed: 3, ..Default::default() }).unwrap()
}

/// One fine-tuning epoch, so that a batch takes long enough to be killed in the middle of a stream.
fn finetune() -> FinetuneConfig {
    FinetuneConfig { epochs: 1, batch_size: 512, ..Default::default() }
}

/// The child side of the test: with [`SETUP_ENV`] set, serves until killed (printing the address on
/// standard output as the CLI does); otherwise, in an ordinary test run, does nothing.
#[test]
fn child_serve_process() {
    let (Ok(setup), Ok(run)) = (std::env::var(SETUP_ENV), std::env::var(RUN_ENV)) else { return };
    let (setup, run) = (PathBuf::from(setup), PathBuf::from(run));
    let cfg = ServeConfig {
        store: StoreConfig {
            model: setup.join("model.safetensors"),
            unlearner: setup.join("unlearner.safetensors"),
            db: run.join("ledger.sqlite"),
            state_dir: run.join("state"),
            finetune: finetune(),
            fault: None,
        },
        listen: "127.0.0.1:0".parse().unwrap(),
        token: Token::new(TOKEN).unwrap(),
        batch: BatchConfig { max: std::env::var(BATCH_ENV).unwrap().parse().unwrap(), wait: Duration::from_millis(20) },
        limits: Limits::default(),
        drain: Duration::from_secs(1),
        retrain_every: None,
        consolidate_after_edges: None,
        stop_timeout: Duration::from_secs(5),
        max_restarts: 3,
    };
    unlearnrec_serve::run(cfg, dataset(), |addr| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}").unwrap();
        out.flush().unwrap();
    })
    .unwrap();
}

/// Starts the child on `run` with batches of at most `batch` requests and waits for its address; its
/// standard error goes to `run/serve-{round}.log`.
fn start(setup: &Path, run: &Path, round: usize, batch: usize) -> (Child, SocketAddr) {
    let log = std::fs::File::create(run.join(format!("serve-{round}.log"))).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_serve_process", "--nocapture", "--test-threads=1"])
        .env(SETUP_ENV, setup)
        .env(RUN_ENV, run)
        .env(BATCH_ENV, batch.to_string())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // The harness prints `test child_serve_process ... ` first, on the same line.
            if let Some((_, addr)) = line.split_once("listening on http://") {
                let _ = tx.send(addr.trim().parse::<SocketAddr>().unwrap());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
        panic!("no address: {}", std::fs::read_to_string(run.join(format!("serve-{round}.log"))).unwrap_or_default())
    });
    (child, addr)
}

/// One HTTP/1.1 exchange with `Connection: close`: the status and the body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap();
    (status, resp.split_once("\r\n\r\n").unwrap().1.to_string())
}

/// `(queued, applied)` in the ledger of `run`.
fn counts(run: &Path) -> (u64, u64) {
    let (q, a, f) = Ledger::open(&run.join("ledger.sqlite")).unwrap().counts().unwrap();
    assert_eq!(f, 0, "a request failed");
    (q, a)
}

/// Waits until every request is applied and the child serves the ledger's current version; returns that
/// version's checkpoint file.
fn drained(run: &Path, addr: SocketAddr, n: u64) -> PathBuf {
    let t = Instant::now();
    loop {
        // The counts first: once they say all applied, the version read after them holds the last batch (read
        // the other way round, the last batch could commit in between and an older version pass the test).
        let all_applied = counts(run) == (0, n);
        let current = Ledger::open(&run.join("ledger.sqlite")).unwrap().current().unwrap();
        let (_, health) = http(addr, "GET", "/v1/health", "");
        let served: serde_json::Value = serde_json::from_str(&health).unwrap();
        if all_applied && served["model_version"] == current.version {
            assert_eq!(sha256_hex(&std::fs::read(&current.checkpoint).unwrap()), current.sha256);
            return current.checkpoint;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "not drained: {:?}", counts(run));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SHA-256 of a checkpoint's bytes without the service's version stamp (`provenance.serve`), which counts
/// the batches: the rest of the file (embeddings, anchor, edges, metadata) is what the requests determine.
fn content_sha(ckpt: Checkpoint) -> String {
    let mut ckpt = ckpt;
    ckpt.provenance_mut().serve = None;
    sha256_hex(&ckpt.to_bytes().unwrap())
}

fn post_all(addr: SocketAddr, bodies: &[String]) {
    for b in bodies {
        let (st, resp) = http(addr, "POST", "/v1/forget", b);
        assert_eq!(st, 202, "{resp}");
    }
}

#[test]
fn a_kill_9_while_applying_then_a_restart_serves_the_model_of_an_uninterrupted_run() {
    let setup = tempfile::tempdir().unwrap();
    let ds = dataset();
    let mc = ModelConfig { kind: ModelKind::LightGcn, dim: 16, layers: 2, ..Default::default() };
    let tc = TrainConfig { epochs: 2, batch_size: 512, eval_every: 1, ..Default::default() };
    let (ckpt, _) = unlearnrec_core::pipeline::train(&ds, &mc, &tc, &mut Silent).unwrap();
    ckpt.save(&setup.path().join("model.safetensors")).unwrap();
    let pc = PretrainConfig { epochs: 1, batch_size: 512, max_steps_per_epoch: Some(4), ..Default::default() };
    let un = unlearn::pretrain(&ckpt, &pc, &mut Silent).unwrap();
    un.save(&setup.path().join("unlearner.safetensors")).unwrap();
    let mut users = ds.train.users().to_vec();
    users.dedup();
    let users: Vec<u32> = users.into_iter().step_by(7).take(20).collect();
    assert_eq!(users.len(), 20);
    let bodies: Vec<String> = users.iter().map(|&u| format!("{{\"user\": \"{}\"}}", ds.users.external(u))).collect();

    // An uninterrupted run.
    let clean = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(setup.path(), clean.path(), 0, 2);
    post_all(addr, &bodies);
    let clean_file = drained(clean.path(), addr, 20);
    child.kill().unwrap();
    child.wait().unwrap();

    // The same requests, with a kill -9 in the middle of the stream, and a restart that takes the rest in
    // one batch.
    let crashed = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(setup.path(), crashed.path(), 1, 2);
    post_all(addr, &bodies);
    let t = Instant::now();
    let at_kill = loop {
        let (queued, applied) = counts(crashed.path());
        if applied >= 8 {
            child.kill().unwrap();
            break (queued, applied);
        }
        assert!(t.elapsed() < Duration::from_secs(60), "nothing applied");
        std::thread::sleep(Duration::from_millis(2));
    };
    child.wait().unwrap();
    let (queued, applied) = counts(crashed.path());
    assert!(queued > 0, "the kill came after the last batch ({at_kill:?} at the kill, {applied} applied after)");
    let (mut child, addr) = start(setup.path(), crashed.path(), 2, 20);
    let crashed_file = drained(crashed.path(), addr, 20);
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!(
        "killed with {queued} of 20 requests queued; versions: uninterrupted {}, crashed {}",
        Ledger::open(&clean.path().join("ledger.sqlite")).unwrap().current().unwrap().version,
        Ledger::open(&crashed.path().join("ledger.sqlite")).unwrap().current().unwrap().version
    );

    // The same model: bit for bit, but for the version stamp when the batching differed.
    let (a, b) = (Checkpoint::load(&clean_file).unwrap(), Checkpoint::load(&crashed_file).unwrap());
    let union = ckpt.seen().iter().filter(|(u, _)| users.contains(u)).collect::<Vec<_>>();
    assert_eq!(a.removed().iter().collect::<Vec<_>>(), union);
    assert_eq!(a.anchor().unwrap().base, ckpt.model().base_vec().unwrap());
    if a.meta().provenance.serve == b.meta().provenance.serve {
        assert_eq!(std::fs::read(&clean_file).unwrap(), std::fs::read(&crashed_file).unwrap());
    }
    let (sha_a, sha_b) = (content_sha(a), content_sha(b));
    assert_eq!(sha_a, sha_b, "the crashed run serves another model than the uninterrupted one");
    // And the model of the union applied once from the starting model.
    let union = unlearnrec_core::data::Interactions::from_pairs(union).0;
    let un = Unlearner::load(&setup.path().join("unlearner.safetensors")).unwrap();
    let (once, _) = unlearn::unlearn(&ckpt, &un, &union, &finetune(), &mut Silent).unwrap();
    assert_eq!(content_sha(once), sha_a, "the served model is not the union applied once from the anchor");
}
