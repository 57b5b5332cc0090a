//! Sequential stream mode: many small requests applied one after another with UnlearnRec, each on the
//! checkpoint the previous one produced. An unlearned checkpoint keeps its anchor (the last exactly
//! trained model) and everything removed since, so every request is applied from the anchor with the
//! union so far: nothing compounds. Every `checkpoint_every` requests (and after the last) the model is
//! measured against an exact retrain on the union of the requests so far and, with `seed2`, a retrain
//! with the next seed (the noise floor): quality, the removed edges' scores, the audit's strongest
//! membership attacker, their ranks, top-20 agreement and, for `spam`, the target items' exposure. With
//! `consolidate_share`, a request that takes the edges removed since the anchor past that share of the
//! anchor's edges is followed by a consolidation: an exact retrain of the current model and a new
//! unlearner, a new anchor (counted in the stream's time).

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::config::{ExperimentConfig, MethodSpec, StreamConfig, StreamScenario, StreamSplit, hash_json};
use super::results::{StreamRow, read_stream, stream_csv};
use super::runner::{Trained, backbone, eval20, request_graph, unlearner};
use super::{ExperimentObserver, RunOptions, plot};
use unlearnrec_core::checkpoint::{Checkpoint, Split};
use unlearnrec_core::data::{Dataset, Interactions};
use unlearnrec_core::error::{Error, Result};
use unlearnrec_core::graph::Graph;
use unlearnrec_core::io::write_atomic;
use unlearnrec_core::pipeline::union;
use unlearnrec_core::unlearn;
use unlearnrec_core::unlearn::audit::{AuditConfig, audit_checkpoints};
use unlearnrec_core::unlearn::forgetting::{self, forgetting_report};
use unlearnrec_core::unlearn::protocol::make_request;
use unlearnrec_core::unlearn::scenario::{self, Scenario};
use unlearnrec_core::unlearn::spam::{self, SpamConfig};

/// The stream's table.
pub const STREAM_CSV: &str = "stream.csv";
/// The stream's summary table.
pub const STREAM_MD: &str = "stream.md";
/// The stream's plot.
pub const STREAM_SVG: &str = "stream.svg";

/// The seed of request `step` (1-based) of a stream of `seed` (protocols draw one request at a time).
fn request_seed(seed: u64, step: usize) -> u64 {
    seed.wrapping_mul(1_000_003).wrapping_add(step as u64)
}

/// The injected fake accounts and their targets, for `spam`.
struct SpamSetup {
    real_users: Vec<u32>,
    targets: Vec<u32>,
}

/// Runs one stream per dataset × model × scenario × seed (skipping those already complete in
/// `stream.csv` with the same configuration hash), rewrites `stream.csv` after each and draws `stream.svg`.
pub(crate) fn run_streams(
    cfg: &ExperimentConfig,
    datasets: &[Dataset],
    out: &Path,
    cache: &Path,
    opts: &RunOptions,
    obs: &mut dyn ExperimentObserver,
) -> Result<Vec<StreamRow>> {
    let Some(scfg) = &cfg.stream else { return Ok(Vec::new()) };
    let csv = out.join(STREAM_CSV);
    let mut rows = if opts.resume { read_stream(&csv)? } else { Vec::new() };
    let mut current = Vec::new();
    for ds in datasets {
        for &kind in &cfg.models {
            for scenario in scfg.parsed()? {
                for &seed in &cfg.seeds {
                    let hash = hash_json(&serde_json::json!({
                        "dataset": ds.fingerprint(),
                        "model": cfg.model_config(kind),
                        "train": cfg.train_config(seed),
                        "unlearnrec": cfg.method_json(MethodSpec::UNLEARNREC, seed),
                        "finetune": stream_finetune(cfg, scfg, seed),
                        "scenario": scenario.name(),
                        // The other scenarios of the list do not change this stream.
                        "stream": StreamConfig { scenarios: Vec::new(), ..scfg.clone() },
                    }));
                    let key = StreamRow::empty(&ds.name, kind.name(), &scenario.name(), seed, &hash);
                    let complete = rows.iter().any(|r| {
                        r.same_stream(&key)
                            && r.config_hash == hash
                            && r.method == "unlearnrec"
                            && r.step == scfg.requests
                    });
                    let label = format!("{} / {kind} / {} / seed {seed}", ds.name, scenario.name());
                    let stream = if complete {
                        obs.cached(&format!("{label}: stream"));
                        rows.iter().filter(|r| r.same_stream(&key) && r.config_hash == hash).cloned().collect()
                    } else {
                        let stream = run_one(cfg, scfg, ds, kind, &scenario, seed, &key, cache, &label, obs)?;
                        rows.retain(|r| !r.same_stream(&key));
                        rows.extend(stream.iter().cloned());
                        write_atomic(&csv, stream_csv(&rows).as_bytes())?;
                        stream
                    };
                    current.extend(stream);
                }
            }
        }
    }
    if !csv.exists() {
        write_atomic(&csv, stream_csv(&rows).as_bytes())?;
    }
    plot::stream(&out.join(STREAM_SVG), &current)?;
    Ok(current)
}

/// The fine-tuning of each request: the fast path or `[finetune]`, with the stream's epochs.
fn stream_finetune(cfg: &ExperimentConfig, scfg: &StreamConfig, seed: u64) -> unlearn::FinetuneConfig {
    let ft = if scfg.fast {
        unlearn::FinetuneConfig { seed, ..unlearn::FinetuneConfig::fast() }
    } else {
        cfg.finetune_config(MethodSpec::UNLEARNREC, seed)
    };
    unlearn::FinetuneConfig { epochs: scfg.finetune_epochs.unwrap_or(ft.epochs), ..ft }
}

/// The key of the provenance's notes under which a cached retrain records its seconds.
const RETRAIN_SECS: &str = "experiment.retrain_secs";

/// An exact retrain of `orig` without `removed` with training `seed`, from the cache (keyed by the backbone
/// and the removed edges' content) or trained and cached.
fn cached_retrain(
    cache: &Path,
    trained: &Trained,
    removed: &Interactions,
    seed: u64,
    label: &str,
    obs: &mut dyn ExperimentObserver,
) -> Result<(Checkpoint, f64)> {
    let orig = &trained.ckpt;
    let key = hash_json(&(&trained.key, seed, forgetting::request_seed(removed), removed.len()));
    let path: PathBuf = cache.join(format!("stream-retrain-{}-{key}.safetensors", orig.model().kind()));
    if path.is_file() {
        obs.cached(label);
        let ckpt = Checkpoint::load(&path)?;
        if ckpt.removed() != removed {
            return Err(Error::InvalidCheckpoint(format!("{} removed other edges than the stream's", path.display())));
        }
        let secs = ckpt.meta().provenance.extra.get(RETRAIN_SECS).and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
        return Ok((ckpt, secs));
    }
    obs.stage(label, orig.meta().train.epochs);
    let t = Instant::now();
    let (mut ckpt, _) = unlearn::retrain_seeded(orig, removed, seed, obs)?;
    let secs = t.elapsed().as_secs_f64();
    ckpt.provenance_mut().extra.insert(RETRAIN_SECS.into(), secs.to_string());
    ckpt.save(&path)?;
    Ok((ckpt, secs))
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    cfg: &ExperimentConfig,
    scfg: &StreamConfig,
    ds: &Dataset,
    kind: unlearnrec_core::model::ModelKind,
    scenario: &StreamScenario,
    seed: u64,
    key: &StreamRow,
    cache: &Path,
    label: &str,
    obs: &mut dyn ExperimentObserver,
) -> Result<Vec<StreamRow>> {
    // Spam: the backbone is trained on the data with one fake account per request.
    let (data, spam) = match scenario {
        StreamScenario::Scenario(Scenario::Spam { .. }) => {
            let share = scfg.requests as f64 / ds.n_users() as f64;
            let sc = SpamConfig { share: share.min(1.0), targets: scfg.spam_targets, filler: scfg.spam_filler, seed };
            let s = spam::inject(ds, &sc)?;
            let real_users = (0..ds.n_users() as u32).collect();
            (s.dataset, Some((s.fake_users, SpamSetup { real_users, targets: s.targets })))
        }
        _ => (ds.clone(), None),
    };
    let trained = backbone(cfg, cache, &data, kind, seed, obs)?;
    let (mut un, _) = unlearner(cfg, cache, &trained, label, seed, obs)?;
    let orig = &trained.ckpt;
    // The scenarios draw every request up front (disjoint users); a protocol draws each from the
    // current graph.
    // A user's history is everything the model has seen of them: training and validation edges (an account
    // closure removes both; validation edges the model never trained on still leave its seen items).
    let (nu, ni) = (orig.model().n_users(), orig.model().n_items());
    let history = Graph::from_interactions(nu, ni, &orig.seen());
    let drawn: Option<Vec<Interactions>> = match scenario {
        StreamScenario::Scenario(Scenario::Spam { .. }) => {
            let fakes = spam.as_ref().map(|(f, _)| f.clone()).unwrap_or_default();
            let n = scfg.requests.min(fakes.len());
            Some(scenario::stream(&history, &Scenario::Spam { fake_users: fakes }, n, seed)?)
        }
        StreamScenario::Scenario(s) => Some(scenario::stream(&history, s, scfg.requests, seed)?),
        StreamScenario::Protocol(..) => None,
    };
    let n = drawn.as_ref().map_or(scfg.requests, Vec::len);
    obs.stream(label, n);
    let split = match scfg.split {
        StreamSplit::Valid => Split::Valid,
        StreamSplit::Test => Split::Test,
    };
    let orig_emb = orig.final_embeddings()?;
    let orig_graph = orig.train_graph();
    let spam_setup = spam.as_ref().map(|(_, s)| s);
    // Quality and forgetting of `ckpt` after `removed`; with `reference`, the audit too.
    let measure = |ckpt: &Checkpoint, removed: &Interactions, row: &mut StreamRow| -> Result<()> {
        (row.recall, row.ndcg) = eval20(ckpt, &data, split)?;
        let emb = ckpt.final_embeddings()?;
        if let Some(s) = spam_setup {
            let (nu, ni) = (ckpt.model().n_users(), ckpt.model().n_items());
            let seen = Graph::from_interactions(nu, ni, &ckpt.seen());
            let e = spam::exposure(&emb, seen.user_items(), &s.real_users, &s.targets, 20)?;
            (row.exposure_share, row.exposure_rank) = (e.share_in_top_k, e.mean_rank);
        }
        // The backbone's row (nothing removed yet) has no removed-edge figures.
        if !removed.is_empty() {
            let f = forgetting_report(&orig_emb, &emb, &orig_graph, removed, forgetting::request_seed(removed));
            (row.removed_score, row.non_edge_score, row.mi_ng) = (f.removed.after, f.non_edges.after, f.mi_ng);
        }
        Ok(())
    };
    let audit =
        |ckpt: &Checkpoint, removed: &Interactions, reference: &Checkpoint, row: &mut StreamRow| -> Result<()> {
            let acfg = AuditConfig { seed, ..AuditConfig::default() };
            let a = audit_checkpoints(ckpt, removed, &data.test, Some(reference), Some(orig), &acfg)?;
            (row.members, row.mia_auc, row.median_rank) =
                (a.mia.removed_member_fraction, a.mia.auc, a.rank.median_rank);
            row.agreement_top20 = a.reference.map_or(f64::NAN, |r| r.agreement.top_k_overlap);
            Ok(())
        };
    let mut original = StreamRow { method: "original".into(), secs: 0.0, total_secs: 0.0, ..key.clone() };
    measure(orig, &Interactions::default(), &mut original)?;
    let mut stream = vec![original];
    let ft = stream_finetune(cfg, scfg, seed);
    let pre = cfg.pretrain_config(seed);
    let mut removed = Interactions::default();
    let mut cur: Option<Checkpoint> = None;
    let (mut total, mut consolidations) = (0.0, 0);
    for step in 1..=n {
        let base = cur.as_ref().unwrap_or(orig);
        let request = match (&drawn, scenario) {
            (Some(d), _) => d[step - 1].clone(),
            (None, StreamScenario::Protocol(p, fraction)) => {
                make_request(&request_graph(base, *p), *p, *fraction, request_seed(seed, step))?
            }
            (None, StreamScenario::Scenario(_)) => unreachable!("scenarios are drawn up front"),
        };
        obs.stage(&format!("{label}: stream request {step}/{n}"), ft.epochs);
        let t = Instant::now();
        let (mut next, _) = unlearn::unlearn(base, &un, &request, &ft, obs)?;
        let mut secs = t.elapsed().as_secs_f64();
        removed = union(&removed, &request);
        // Consolidation: past the share, the current model is retrained exactly and the unlearner
        // pre-trained for it; the retrain is the new anchor.
        let since = next.anchor().map_or(0, |a| a.since_train.len() + a.since_valid.len());
        let anchor_edges = next.edges().len() + since;
        if scfg.consolidate_share > 0.0 && since as f64 > scfg.consolidate_share * anchor_edges as f64 {
            obs.stage(&format!("{label}: consolidation after request {step}"), orig.meta().train.epochs);
            let t = Instant::now();
            next = unlearn::refit(&next, obs)?;
            un = unlearn::pretrain(&next, &pre, obs)?;
            secs += t.elapsed().as_secs_f64();
            consolidations += 1;
        }
        total += secs;
        let mut row = StreamRow {
            step,
            method: "unlearnrec".into(),
            edges: removed.len(),
            consolidations,
            secs,
            total_secs: total,
            ..key.clone()
        };
        measure(&next, &removed, &mut row)?;
        if step % scfg.checkpoint_every == 0 || step == n {
            let what = format!("{label}: exact retrain on the union after {step} requests");
            let (re, re_secs) = cached_retrain(cache, &trained, &removed, orig.meta().train.seed, &what, obs)?;
            audit(&next, &removed, &re, &mut row)?;
            obs.stream_step(&row);
            stream.push(row);
            let mut rrow =
                StreamRow { step, method: "retrain".into(), edges: removed.len(), secs: re_secs, ..key.clone() };
            measure(&re, &removed, &mut rrow)?;
            audit(&re, &removed, &re, &mut rrow)?;
            obs.stream_step(&rrow);
            stream.push(rrow);
            if scfg.seed2 {
                let s2 = MethodSpec::second_retrain_seed(orig.meta().train.seed);
                let what = format!("{label}: second-seed retrain after {step} requests");
                let (r2, r2_secs) = cached_retrain(cache, &trained, &removed, s2, &what, obs)?;
                let mut row2 = StreamRow {
                    step,
                    method: "retrain-seed2".into(),
                    edges: removed.len(),
                    secs: r2_secs,
                    ..key.clone()
                };
                measure(&r2, &removed, &mut row2)?;
                audit(&r2, &removed, &re, &mut row2)?;
                obs.stream_step(&row2);
                stream.push(row2);
            }
        } else {
            obs.stream_step(&row);
            stream.push(row);
        }
        cur = Some(next);
    }
    Ok(stream)
}
