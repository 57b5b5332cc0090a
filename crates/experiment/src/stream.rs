//! Sequential stream mode: many small requests applied one after another with UnlearnRec (each on the
//! checkpoint the previous one produced), tracking quality and the forgetting of every edge removed so
//! far, against an exact retrain without all of them every `retrain_every` requests.

use std::path::Path;
use std::time::Instant;

use super::config::{ExperimentConfig, MethodSpec, StreamSplit, hash_json};
use super::results::{StreamRow, read_stream, stream_csv};
use super::runner::{backbone, eval20, request_graph, unlearner};
use super::{ExperimentObserver, RunOptions, plot};
use unlearnrec_core::checkpoint::{Checkpoint, Split};
use unlearnrec_core::data::{Dataset, Interactions};
use unlearnrec_core::error::Result;
use unlearnrec_core::io::write_atomic;
use unlearnrec_core::pipeline::union;
use unlearnrec_core::unlearn::forgetting::{self, forgetting_report};
use unlearnrec_core::unlearn::protocol::make_request;
use unlearnrec_core::unlearn::{self, ForgettingReport};

/// The stream's table.
pub const STREAM_CSV: &str = "stream.csv";
/// The stream's plot.
pub const STREAM_SVG: &str = "stream.svg";

/// The seed of request `step` (1-based) of a stream of `seed`.
fn request_seed(seed: u64, step: usize) -> u64 {
    seed.wrapping_mul(1_000_003).wrapping_add(step as u64)
}

/// Runs one stream per dataset × model × seed (skipping those already complete in `stream.csv` with the
/// same configuration hash), rewrites `stream.csv` after each and draws `stream.svg`.
pub(crate) fn run_streams(
    cfg: &ExperimentConfig,
    datasets: &[Dataset],
    out: &Path,
    cache: &Path,
    opts: &RunOptions,
    obs: &mut dyn ExperimentObserver,
) -> Result<Vec<StreamRow>> {
    let Some(scfg) = &cfg.stream else { return Ok(Vec::new()) };
    let protocol = scfg.protocol()?;
    let csv = out.join(STREAM_CSV);
    let mut rows = if opts.resume { read_stream(&csv)? } else { Vec::new() };
    let mut current = Vec::new();
    for ds in datasets {
        for &kind in &cfg.models {
            for &seed in &cfg.seeds {
                let hash = hash_json(&serde_json::json!({
                    "dataset": ds.fingerprint(),
                    "model": cfg.model_config(kind),
                    "train": cfg.train_config(seed),
                    "unlearnrec": cfg.method_json(MethodSpec::UNLEARNREC, seed),
                    "stream": scfg,
                }));
                let mine = |r: &StreamRow| r.dataset == ds.name && r.model == kind.name() && r.seed == seed;
                let complete = rows
                    .iter()
                    .any(|r| mine(r) && r.config_hash == hash && r.method == "unlearnrec" && r.step == scfg.requests);
                let label = format!("{} / {kind} / seed {seed}", ds.name);
                if complete {
                    obs.cached(&format!("{label}: stream"));
                    current.extend(rows.iter().filter(|r| mine(r) && r.config_hash == hash).cloned());
                    continue;
                }
                let trained = backbone(cfg, cache, ds, kind, seed, obs)?;
                let (un, _) = unlearner(cfg, cache, &trained, &label, seed, obs)?;
                obs.stream(&label, scfg.requests);
                let key = StreamRow {
                    dataset: ds.name.clone(),
                    model: kind.name().to_string(),
                    seed,
                    config_hash: hash,
                    step: 0,
                    method: "original".into(),
                    edges: 0,
                    recall: f64::NAN,
                    ndcg: f64::NAN,
                    removed_score: f64::NAN,
                    non_edge_score: f64::NAN,
                    mi_ng: f64::NAN,
                    secs: 0.0,
                    total_secs: 0.0,
                };
                let split = match scfg.split {
                    StreamSplit::Valid => Split::Valid,
                    StreamSplit::Test => Split::Test,
                };
                let orig = &trained.ckpt;
                let orig_emb = orig.final_embeddings()?;
                let orig_graph = orig.train_graph();
                let measure = |ckpt: &Checkpoint, removed: &Interactions| -> Result<(f64, f64, ForgettingReport)> {
                    let (recall, ndcg) = eval20(ckpt, ds, split)?;
                    // The sample of the edges removed so far, the same for UnlearnRec and the retrain.
                    let seed = forgetting::request_seed(removed);
                    let f = forgetting_report(&orig_emb, &ckpt.final_embeddings()?, &orig_graph, removed, seed);
                    Ok((recall, ndcg, f))
                };
                let (recall, ndcg) = eval20(orig, ds, split)?;
                let mut stream = vec![StreamRow { recall, ndcg, ..key.clone() }];
                let ft = cfg.finetune_config(MethodSpec::UNLEARNREC, seed);
                let mut removed = Interactions::default();
                let mut cur: Option<Checkpoint> = None;
                let mut total = 0.0;
                for step in 1..=scfg.requests {
                    let base = cur.as_ref().unwrap_or(orig);
                    let request = make_request(
                        &request_graph(base, protocol),
                        protocol,
                        scfg.fraction,
                        request_seed(seed, step),
                    )?;
                    obs.stage(&format!("{label}: stream request {step}/{}", scfg.requests), ft.epochs);
                    let t = Instant::now();
                    let (next, _) = unlearn::unlearn(base, &un, &request, &ft, obs)?;
                    let secs = t.elapsed().as_secs_f64();
                    total += secs;
                    removed = union(&removed, &request);
                    let (recall, ndcg, f) = measure(&next, &removed)?;
                    let row = StreamRow {
                        step,
                        method: "unlearnrec".into(),
                        edges: removed.len(),
                        recall,
                        ndcg,
                        removed_score: f.removed.after,
                        non_edge_score: f.non_edges.after,
                        mi_ng: f.mi_ng,
                        secs,
                        total_secs: total,
                        ..key.clone()
                    };
                    if step == 1 {
                        stream[0].removed_score = f.removed.before;
                        stream[0].non_edge_score = f.non_edges.before;
                    }
                    obs.stream_step(&row);
                    stream.push(row);
                    cur = Some(next);
                    if step % scfg.retrain_every == 0 {
                        obs.stage(&format!("{label}: stream retrain after {step} requests"), cfg.train.epochs);
                        let t = Instant::now();
                        let (re, _) = unlearn::retrain(orig, &removed, obs)?;
                        let secs = t.elapsed().as_secs_f64();
                        let (recall, ndcg, f) = measure(&re, &removed)?;
                        let row = StreamRow {
                            step,
                            method: "retrain".into(),
                            edges: removed.len(),
                            recall,
                            ndcg,
                            removed_score: f.removed.after,
                            non_edge_score: f.non_edges.after,
                            mi_ng: f.mi_ng,
                            secs,
                            total_secs: f64::NAN,
                            ..key.clone()
                        };
                        obs.stream_step(&row);
                        stream.push(row);
                    }
                }
                rows.retain(|r| !mine(r));
                rows.extend(stream.iter().cloned());
                write_atomic(&csv, stream_csv(&rows).as_bytes())?;
                current.extend(stream);
            }
        }
    }
    if !csv.exists() {
        write_atomic(&csv, stream_csv(&rows).as_bytes())?;
    }
    plot::stream(&out.join(STREAM_SVG), &current)?;
    Ok(current)
}
