//! The grid runner: backbones and unlearners cached under `<out>/cache`, one [`ResultRow`] per cell,
//! `results.csv` rewritten atomically after every cell.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::config::{ExperimentConfig, MethodSpec, ProtocolSpec, hash_json};
use super::results::{ResultRow, read_results, write_results};
use super::{ExperimentObserver, ExperimentReport, RunOptions, plot, results, stream};
use unlearnrec_core::checkpoint::{Checkpoint, Split};
use unlearnrec_core::data::{Dataset, Interactions, LoadOptions, SynthConfig, generate};
use unlearnrec_core::error::{Error, Result};
use unlearnrec_core::eval::EvalConfig;
use unlearnrec_core::graph::Graph;
use unlearnrec_core::io::write_atomic;
use unlearnrec_core::model::ModelKind;
use unlearnrec_core::pipeline::{self, union};
use unlearnrec_core::unlearn::audit::{AuditConfig, AuditReport, audit_checkpoints};
use unlearnrec_core::unlearn::baselines::sisa::{self as sharding, ShardedCheckpoint};
use unlearnrec_core::unlearn::baselines::{Partition, train_sharded};
use unlearnrec_core::unlearn::method::{ForgetMethod, Forgotten, MethodOptions};
use unlearnrec_core::unlearn::poison::least_related_edges;
use unlearnrec_core::unlearn::protocol::{Protocol, make_request};
use unlearnrec_core::unlearn::{self, Unlearner};

/// File names under the output directory.
pub const RESULTS_CSV: &str = "results.csv";
/// The Markdown table.
pub const RESULTS_MD: &str = "results.md";
/// Quality against time.
pub const QUALITY_SVG: &str = "quality_vs_time.svg";
/// Forgetting per method.
pub const FORGETTING_SVG: &str = "forgetting.svg";

/// Loads a dataset of the experiment file: `synth` is the built-in synthetic dataset.
pub(crate) fn load_dataset(spec: &str) -> Result<Dataset> {
    if spec == "synth" {
        generate(&SynthConfig::default())
    } else {
        unlearnrec_core::data::load(Path::new(spec), &LoadOptions::default())
    }
}

/// A file-name-safe form of a name.
fn safe(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect()
}

/// Recall@20 and NDCG@20 of a checkpoint on a split.
pub(crate) fn eval20(ckpt: &Checkpoint, ds: &Dataset, split: Split) -> Result<(f64, f64)> {
    let r = ckpt.evaluate(ds, split, &EvalConfig { ks: vec![20], ..EvalConfig::default() })?;
    let g = |k: &str| r.metrics.get(k).copied().unwrap_or(f64::NAN);
    Ok((g("recall@20"), g("ndcg@20")))
}

/// A trained backbone and its cache key.
pub(crate) struct Trained {
    pub ckpt: Checkpoint,
    pub key: String,
    pub secs: f64,
}

/// Loads the backbone of (`ds`, `kind`, `seed`) from the cache, or trains and caches it.
pub(crate) fn backbone(
    cfg: &ExperimentConfig,
    cache: &Path,
    ds: &Dataset,
    kind: ModelKind,
    seed: u64,
    obs: &mut dyn ExperimentObserver,
) -> Result<Trained> {
    let model = cfg.model_config(kind);
    let train = cfg.train_config(seed);
    let key = hash_json(&(ds.fingerprint(), &model, &train));
    let path = cache.join(format!("backbone-{}-{kind}-s{seed}-{key}.safetensors", safe(&ds.name)));
    let label = format!("{} / {kind} / seed {seed}: backbone", ds.name);
    let ckpt = if path.is_file() {
        obs.cached(&label);
        let ckpt = Checkpoint::load(&path)?;
        ckpt.meta().check_dataset(ds)?;
        ckpt
    } else {
        obs.stage(&format!("{label} training"), train.epochs);
        let (ckpt, _) = pipeline::train(ds, &model, &train, obs)?;
        ckpt.save(&path)?;
        ckpt
    };
    let secs = ckpt.meta().history.as_ref().map_or(f64::NAN, |h| h.secs);
    Ok(Trained { ckpt, key, secs })
}

/// Loads the unlearner of a backbone from the cache, or pre-trains and caches it. Returns it with its
/// pre-training seconds.
pub(crate) fn unlearner(
    cfg: &ExperimentConfig,
    cache: &Path,
    trained: &Trained,
    label: &str,
    seed: u64,
    obs: &mut dyn ExperimentObserver,
) -> Result<(Unlearner, f64)> {
    let pre = cfg.pretrain_config(seed);
    let key = hash_json(&(&trained.key, &pre));
    let meta = trained.ckpt.meta();
    let path = cache.join(format!(
        "unlearner-{}-{}-s{seed}-{key}.safetensors",
        safe(&meta.dataset.name),
        trained.ckpt.model().kind()
    ));
    let un = if path.is_file() {
        obs.cached(&format!("{label}: unlearner"));
        let un = Unlearner::load(&path)?;
        un.check(&trained.ckpt)?;
        un
    } else {
        obs.stage(&format!("{label}: pre-training the unlearner"), pre.epochs);
        let un = unlearn::pretrain(&trained.ckpt, &pre, obs)?;
        un.save(&path)?;
        un
    };
    let secs = un.meta.report.as_ref().map_or(f64::NAN, |r| r.secs);
    Ok((un, secs))
}

/// A sharded model (SISA) and the seconds its training took (NaN when unknown).
pub(crate) struct Sharded {
    pub sc: ShardedCheckpoint,
    pub secs: f64,
}

/// The key of the provenance's notes (`extra`) under which the runner records a sharded model's training seconds.
const SHARDED_SECS: &str = "experiment.sharded_train_secs";

/// Loads the sharded model of (`ds`, `kind`, `seed`) with `[baselines.sisa]` from the cache, or trains
/// it with [`train_sharded`] and caches it; keyed like [`backbone`] plus the shard settings.
pub(crate) fn sharded(
    cfg: &ExperimentConfig,
    cache: &Path,
    ds: &Dataset,
    kind: ModelKind,
    seed: u64,
    obs: &mut dyn ExperimentObserver,
) -> Result<Sharded> {
    let model = cfg.model_config(kind);
    let train = cfg.train_config(seed);
    let shards = &cfg.baselines.sisa;
    let key = hash_json(&(ds.fingerprint(), &model, &train, shards));
    let path = cache.join(format!("sharded-{}-{kind}-s{seed}-{key}.safetensors", safe(&ds.name)));
    let label = format!("{} / {kind} / seed {seed}: sharded model ({} shards)", ds.name, shards.shards);
    let sc = if path.is_file() {
        obs.cached(&label);
        let sc = sharding::load(&path)?;
        sc.checkpoint.meta().check_dataset(ds)?;
        sc
    } else {
        obs.stage(&format!("{label} training"), shards.shards * train.epochs);
        let t = Instant::now();
        let (mut sc, _) = train_sharded(ds, &model, &train, shards, obs)?;
        sc.checkpoint.provenance_mut().extra.insert(SHARDED_SECS.into(), t.elapsed().as_secs_f64().to_string());
        sharding::save(&path, &sc.checkpoint, &sc.shards)?;
        sc
    };
    let secs = sc.checkpoint.meta().provenance.extra.get(SHARDED_SECS).and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
    Ok(Sharded { sc, secs })
}

/// Everything derived from one (dataset, model, seed), built on first use.
struct Slot<'a> {
    cfg: &'a ExperimentConfig,
    cache: &'a Path,
    ds: &'a Dataset,
    kind: ModelKind,
    seed: u64,
    clean: Option<Trained>,
    clean_un: Option<(Unlearner, f64)>,
    poisoned: Option<(Dataset, Interactions, Trained)>,
    poisoned_un: Option<(Unlearner, f64)>,
    clean_sharded: Option<Sharded>,
    poisoned_sharded: Option<Sharded>,
}

impl<'a> Slot<'a> {
    fn clean(&mut self, obs: &mut dyn ExperimentObserver) -> Result<&Trained> {
        if self.clean.is_none() {
            self.clean = Some(backbone(self.cfg, self.cache, self.ds, self.kind, self.seed, obs)?);
        }
        Ok(self.clean.as_ref().expect("just set"))
    }

    /// The poisoned dataset, the injected edges and the backbone trained on them.
    fn poisoned(&mut self, obs: &mut dyn ExperimentObserver) -> Result<&(Dataset, Interactions, Trained)> {
        if self.poisoned.is_none() {
            let (ratio, seed, ds) = (self.cfg.poison_ratio, self.seed, self.ds);
            let clean = self.clean(obs)?;
            let emb = clean.ckpt.final_embeddings()?;
            let mut known = union(&ds.train, &ds.test);
            if let Some(v) = &ds.valid {
                known = union(&known, v);
            }
            let poison = least_related_edges(&emb, &known, ratio, seed)?;
            let poisoned =
                Dataset { name: format!("{}-poisoned", ds.name), train: union(&ds.train, &poison), ..ds.clone() };
            let trained = backbone(self.cfg, self.cache, &poisoned, self.kind, self.seed, obs)?;
            self.poisoned = Some((poisoned, poison, trained));
        }
        Ok(self.poisoned.as_ref().expect("just set"))
    }

    fn unlearner(&mut self, adversarial: bool, obs: &mut dyn ExperimentObserver) -> Result<&(Unlearner, f64)> {
        let label = format!("{} / {} / seed {}", self.ds.name, self.kind, self.seed);
        if adversarial {
            if self.poisoned_un.is_none() {
                self.poisoned(obs)?;
                let trained = &self.poisoned.as_ref().expect("just set").2;
                let label = format!("{label} (poisoned)");
                self.poisoned_un = Some(unlearner(self.cfg, self.cache, trained, &label, self.seed, obs)?);
            }
            Ok(self.poisoned_un.as_ref().expect("just set"))
        } else {
            if self.clean_un.is_none() {
                self.clean(obs)?;
                let trained = self.clean.as_ref().expect("just set");
                self.clean_un = Some(unlearner(self.cfg, self.cache, trained, &label, self.seed, obs)?);
            }
            Ok(self.clean_un.as_ref().expect("just set"))
        }
    }

    /// The sharded model of the clean (or, under `adversarial`, the poisoned) training data.
    fn sharded(&mut self, adversarial: bool, obs: &mut dyn ExperimentObserver) -> Result<&Sharded> {
        let (cfg, cache, kind, seed) = (self.cfg, self.cache, self.kind, self.seed);
        if adversarial {
            if self.poisoned_sharded.is_none() {
                self.poisoned(obs)?;
                let ds = &self.poisoned.as_ref().expect("just set").0;
                self.poisoned_sharded = Some(sharded(cfg, cache, ds, kind, seed, obs)?);
            }
            Ok(self.poisoned_sharded.as_ref().expect("just set"))
        } else {
            if self.clean_sharded.is_none() {
                self.clean_sharded = Some(sharded(cfg, cache, self.ds, kind, seed, obs)?);
            }
            Ok(self.clean_sharded.as_ref().expect("just set"))
        }
    }
}

/// The graph a protocol draws from: training edges for uniform edges; training and validation edges
/// for whole users or items (their validation edges are theirs too).
pub(crate) fn request_graph(ckpt: &Checkpoint, protocol: Protocol) -> Graph {
    match protocol {
        Protocol::Random => ckpt.train_graph(),
        _ => Graph::from_interactions(ckpt.model().n_users(), ckpt.model().n_items(), &ckpt.seen()),
    }
}

/// What a cell's method starts from.
struct Start<'a> {
    /// The backbone.
    ckpt: &'a Checkpoint,
    /// The pre-trained unlearner, when a cell of the group needs it.
    un: Option<&'a Unlearner>,
    /// The sharded model, when a cell of the group is `sisa`.
    sharded: Option<&'a ShardedCheckpoint>,
}

/// The checkpoint `method` forgets from and the method with its options, built through the registry
/// ([`unlearnrec_core::unlearn::method`]) from [`ExperimentConfig::method_options`] (the presets are
/// options there; the cell's seed is the backbone's training seed) with the group's unlearner and shards.
/// A method that needs shards forgets from the sharded model's serving checkpoint.
fn method_for<'a>(
    cfg: &ExperimentConfig,
    method: MethodSpec,
    start: &Start<'a>,
    seed: u64,
) -> Result<(&'a Checkpoint, Box<dyn ForgetMethod + 'a>)> {
    let opts = MethodOptions {
        unlearner: start.un,
        shards: start.sharded.map(|s| &s.shards),
        ..cfg.method_options(method, seed)
    };
    let from = match start.sharded {
        Some(sc) if method.needs_shards() => &sc.checkpoint,
        _ => start.ckpt,
    };
    Ok((from, (method.method().info().build)(&opts)?))
}

/// The audit's columns of a row (NaN figures are left out, as every metric of a row):
///
/// * `mia_auc`, `removed_called_members`: the strongest membership attacker's held-out AUC and the
///   fraction of removed edges it calls members;
/// * `removed_vs_held_out_auc`: the strongest distinguisher's AUC of telling the removed edges from
///   held-out non-members of the same users (absent when the request was too small for that game);
/// * `removed_median_rank`, `removed_top20`: the removed items' median rank and the fraction of them
///   still in their user's top 20 (the audit's K);
/// * per attacker `<name>` (with `+` written `_`, e.g. `gbt_difference`): `mia_auc_<name>` and
///   `removed_called_members_<name>` when it played the membership game,
///   `removed_vs_held_out_auc_<name>` when it played the distinguishing game;
/// * `agreement_top20`, `agreement_kl`: agreement with the reference (the group's retrained model).
fn audit_columns(m: &mut BTreeMap<String, f64>, a: &AuditReport) {
    let mut put = |k: String, v: f64| {
        if !v.is_nan() {
            m.insert(k, v);
        }
    };
    put("mia_auc".into(), a.mia.auc);
    put("removed_called_members".into(), a.mia.removed_member_fraction);
    if let Some(v) = a.mia.removed_vs_held_out_auc {
        put("removed_vs_held_out_auc".into(), v);
    }
    put("removed_median_rank".into(), a.rank.median_rank);
    put("removed_top20".into(), a.rank.top_k_fraction);
    for att in &a.mia.attackers {
        let name = att.name.replace('+', "_");
        if let Some(mem) = &att.membership {
            put(format!("mia_auc_{name}"), mem.auc);
            put(format!("removed_called_members_{name}"), mem.removed_member_fraction);
        }
        if let Some(v) = att.removed_vs_held_out_auc {
            put(format!("removed_vs_held_out_auc_{name}"), v);
        }
    }
    if let Some(r) = &a.reference {
        put("agreement_top20".into(), r.agreement.top_k_overlap);
        put("agreement_kl".into(), r.agreement.kl);
    }
}

/// One (dataset, model, protocol, fraction, seed) of the grid; its cells are the methods.
struct Group {
    dataset: usize,
    kind: ModelKind,
    seed: u64,
    protocol: ProtocolSpec,
    fraction: Option<f64>,
}

fn groups(cfg: &ExperimentConfig) -> Vec<Group> {
    let mut out = Vec::new();
    for dataset in 0..cfg.datasets.len() {
        for &kind in &cfg.models {
            for &seed in &cfg.seeds {
                for &protocol in &cfg.protocols {
                    let fractions: Vec<Option<f64>> = match protocol {
                        ProtocolSpec::Adversarial => vec![None],
                        _ => cfg.fractions.iter().map(|&f| Some(f)).collect(),
                    };
                    for fraction in fractions {
                        out.push(Group { dataset, kind, seed, protocol, fraction });
                    }
                }
            }
        }
    }
    out
}

/// The hash of everything that determines a cell's row.
fn cell_hash(cfg: &ExperimentConfig, ds: &Dataset, g: &Group, method: MethodSpec) -> String {
    let poison = (g.protocol == ProtocolSpec::Adversarial).then_some(cfg.poison_ratio);
    hash_json(&serde_json::json!({
        "dataset": ds.fingerprint(),
        "model": cfg.model_config(g.kind),
        "train": cfg.train_config(g.seed),
        "protocol": g.protocol.name(),
        "fraction": g.fraction,
        "poison_ratio": poison,
        "method": method.name(),
        "method_config": cfg.method_json(method, g.seed),
        "audit": cfg.audit,
        "metrics": "test recall/ndcg@20",
    }))
}

/// Replaces the row of the same cell (if any) by `row`.
fn upsert(rows: &mut Vec<ResultRow>, row: ResultRow) {
    match rows.iter().position(|r| r.same_cell(&row)) {
        Some(k) => rows[k] = row,
        None => rows.push(row),
    }
}

/// Runs the grid (and the stream, when configured) under `out`; see the [module docs](super).
///
/// # Errors
/// [`Error::InvalidConfig`] for an invalid configuration, or an output directory that already holds
/// results while `opts.resume` is false (checked before anything is written); the errors of loading,
/// training and unlearning. Cells finished before an error stay in `results.csv`.
pub fn run(
    cfg: &ExperimentConfig,
    out: &Path,
    opts: &RunOptions,
    obs: &mut dyn ExperimentObserver,
) -> Result<ExperimentReport> {
    cfg.validate()?;
    let csv_path = out.join(RESULTS_CSV);
    if !opts.resume && (csv_path.exists() || out.join(stream::STREAM_CSV).exists()) {
        return Err(Error::config(
            "out",
            format!("{} already holds results of an earlier run; resume it or choose another directory", out.display()),
        ));
    }
    let datasets: Vec<Dataset> = cfg.datasets.iter().map(|d| load_dataset(d)).collect::<Result<_>>()?;
    // A user partition needs a user per shard: checked before anything is written.
    let shards = &cfg.baselines.sisa;
    if cfg.methods.iter().any(|m| m.needs_shards())
        && shards.partition == Partition::User
        && let Some(ds) = datasets.iter().find(|ds| ds.n_users() < shards.shards)
    {
        return Err(Error::config(
            "baselines.sisa.shards",
            format!("{} shards for the {} users of {}", shards.shards, ds.n_users(), ds.name),
        ));
    }
    let mut rows = if opts.resume { read_results(&csv_path)? } else { Vec::new() };
    let cache = out.join("cache");
    std::fs::create_dir_all(&cache).map_err(|e| Error::io(&cache, e))?;
    let groups = groups(cfg);
    let hashes: Vec<Vec<String>> = groups
        .iter()
        .map(|g| cfg.methods.iter().map(|&m| cell_hash(cfg, &datasets[g.dataset], g, m)).collect())
        .collect();
    let key_row = |g: &Group, m: MethodSpec, hash: &str| ResultRow {
        dataset: datasets[g.dataset].name.clone(),
        model: g.kind.name().to_string(),
        protocol: g.protocol.name().to_string(),
        fraction: g.fraction,
        method: m.name().to_string(),
        seed: g.seed,
        config_hash: hash.to_string(),
        metrics: BTreeMap::new(),
    };
    let finished = |rows: &[ResultRow], key: &ResultRow| {
        rows.iter().find(|r| r.same_cell(key) && r.config_hash == key.config_hash).cloned()
    };
    let total = groups.len() * cfg.methods.len();
    let done_before = groups
        .iter()
        .zip(&hashes)
        .flat_map(|(g, hs)| cfg.methods.iter().zip(hs).map(move |(&m, h)| (g, m, h)))
        .filter(|(g, m, h)| finished(&rows, &key_row(g, *m, h)).is_some())
        .count();
    obs.grid(total, done_before);
    let (mut ran, mut skipped) = (0, 0);
    let mut grid_rows = Vec::new();
    let mut slot: Option<Slot<'_>> = None;
    for (g, hs) in groups.iter().zip(&hashes) {
        let ds = &datasets[g.dataset];
        let mut todo = Vec::new();
        for (&m, h) in cfg.methods.iter().zip(hs) {
            let key = key_row(g, m, h);
            match finished(&rows, &key) {
                Some(r) => {
                    obs.cell(&r, true);
                    skipped += 1;
                    grid_rows.push(r);
                }
                None => todo.push((m, key)),
            }
        }
        if todo.is_empty() {
            continue;
        }
        if slot.as_ref().is_none_or(|s| !std::ptr::eq(s.ds, ds) || s.kind != g.kind || s.seed != g.seed) {
            slot = Some(Slot {
                cfg,
                cache: &cache,
                ds,
                kind: g.kind,
                seed: g.seed,
                clean: None,
                clean_un: None,
                poisoned: None,
                poisoned_un: None,
                clean_sharded: None,
                poisoned_sharded: None,
            });
        }
        let s = slot.as_mut().expect("just set");
        ran += run_group(cfg, s, g, todo, obs, &mut |row| {
            upsert(&mut rows, row.clone());
            write_results(&csv_path, &rows)?;
            grid_rows.push(row.clone());
            write_atomic(&out.join(RESULTS_MD), results::markdown(&results::aggregate(&grid_rows)).as_bytes())
        })?;
    }
    drop(slot);
    // Rows in grid order, whatever order the cells ran in.
    let order = |r: &ResultRow| {
        groups
            .iter()
            .zip(&hashes)
            .flat_map(|(g, hs)| cfg.methods.iter().zip(hs).map(move |(&m, h)| (g, m, h)))
            .position(|(g, m, h)| r.same_cell(&key_row(g, m, h)))
    };
    grid_rows.sort_by_key(|r| order(r));
    let summaries = results::aggregate(&grid_rows);
    let markdown = results::markdown(&summaries);
    let mut files = vec![csv_path.clone()];
    write_atomic(&out.join(RESULTS_MD), markdown.as_bytes())?;
    files.push(out.join(RESULTS_MD));
    plot::quality_vs_time(&out.join(QUALITY_SVG), &summaries)?;
    plot::forgetting(&out.join(FORGETTING_SVG), &summaries)?;
    files.extend([out.join(QUALITY_SVG), out.join(FORGETTING_SVG)]);
    let (stream_rows, stream_markdown) = match &cfg.stream {
        Some(_) => {
            let r = stream::run_streams(cfg, &datasets, out, &cache, opts, obs)?;
            let md = results::stream_markdown(&r);
            write_atomic(&out.join(stream::STREAM_MD), md.as_bytes())?;
            files.extend([out.join(stream::STREAM_CSV), out.join(stream::STREAM_MD), out.join(stream::STREAM_SVG)]);
            (r, md)
        }
        None => (Vec::new(), String::new()),
    };
    Ok(ExperimentReport {
        rows: grid_rows,
        summaries,
        markdown,
        ran,
        skipped,
        stream: stream_rows,
        stream_markdown,
        files,
    })
}

/// The retrained model of a group without the request (the audit's reference), cached.
fn reference_path(cache: &Path, trained: &Trained, g: &Group) -> PathBuf {
    let key = hash_json(&(&trained.key, g.protocol.name(), g.fraction, g.seed));
    cache.join(format!(
        "retrained-{}-{}-{}-s{}-{key}.safetensors",
        safe(&trained.ckpt.meta().dataset.name),
        g.kind,
        g.protocol,
        g.seed
    ))
}

/// Runs the cells `todo` of group `g`; `done` is called with each row as soon as it exists. Returns how
/// many ran.
fn run_group(
    cfg: &ExperimentConfig,
    slot: &mut Slot<'_>,
    g: &Group,
    mut todo: Vec<(MethodSpec, ResultRow)>,
    obs: &mut dyn ExperimentObserver,
    done: &mut dyn FnMut(&ResultRow) -> Result<()>,
) -> Result<usize> {
    let adversarial = g.protocol == ProtocolSpec::Adversarial;
    let needs_unlearner = todo.iter().any(|(m, _)| m.needs_unlearner());
    // Build what the cells need (from the cache when there), then only read it.
    if adversarial {
        slot.poisoned(obs)?;
    } else {
        slot.clean(obs)?;
    }
    if needs_unlearner {
        slot.unlearner(adversarial, obs)?;
    }
    if todo.iter().any(|(m, _)| m.needs_shards()) {
        slot.sharded(adversarial, obs)?;
    }
    let slot = &*slot;
    let clean = slot.clean.as_ref().expect("built above");
    let clean_recall = if adversarial { Some(eval20(&clean.ckpt, slot.ds, Split::Test)?.0) } else { None };
    let unlearner = if adversarial { slot.poisoned_un.as_ref() } else { slot.clean_un.as_ref() };
    let (un, pretrain_secs) = match unlearner.filter(|_| needs_unlearner) {
        Some((u, secs)) => (Some(u), *secs),
        None => (None, f64::NAN),
    };
    let (ds, trained, request): (&Dataset, &Trained, Interactions) = match (&slot.poisoned, g.protocol) {
        (Some((ds, poison, trained)), ProtocolSpec::Adversarial) => (ds, trained, poison.clone()),
        (_, ProtocolSpec::Standard(p)) => {
            let fraction = g.fraction.expect("standard protocols have a fraction");
            (slot.ds, clean, make_request(&request_graph(&clean.ckpt, p), p, fraction, g.seed)?)
        }
        (None, ProtocolSpec::Adversarial) => unreachable!("built above"),
    };
    let (orig_recall, orig_ndcg) = eval20(&trained.ckpt, ds, Split::Test)?;
    let sharded = if adversarial { slot.poisoned_sharded.as_ref() } else { slot.clean_sharded.as_ref() };
    let sharded = match sharded {
        Some(s) => Some((s, eval20(&s.sc.checkpoint, ds, Split::Test)?)),
        None => None,
    };
    let start = Start { ckpt: &trained.ckpt, un, sharded: sharded.map(|(s, _)| &s.sc) };
    let cache = slot.cache;
    let label = |m: MethodSpec| {
        let frac = g.fraction.map_or(String::new(), |f| format!(" {f}"));
        format!("{} / {} / {}{frac} / seed {}: {m}", slot.ds.name, g.kind, g.protocol, g.seed)
    };
    // The audit compares with the retrained model: retrain first. `retrain-seed2` is never the
    // reference: it is audited against it like every other method (the noise floor).
    let mut reference: Option<Checkpoint> = None;
    let ref_path = reference_path(cache, trained, g);
    if cfg.audit {
        todo.sort_by_key(|(m, _)| *m != MethodSpec::RETRAIN);
        if todo.first().is_none_or(|(m, _)| *m != MethodSpec::RETRAIN) {
            reference = Some(if ref_path.is_file() {
                obs.cached(&label(MethodSpec::RETRAIN));
                Checkpoint::load(&ref_path)?
            } else {
                obs.stage(&format!("{} (audit reference)", label(MethodSpec::RETRAIN)), cfg.train.epochs);
                let (r, _) = unlearn::retrain(&trained.ckpt, &request, obs)?;
                r.save(&ref_path)?;
                r
            });
        }
    }
    let mut ran = 0;
    for (method, mut row) in todo {
        let (from, forget) = method_for(cfg, method, &start, g.seed)?;
        obs.stage(&label(method), forget.epochs(from));
        let t = Instant::now();
        let Forgotten { checkpoint: model, report, .. } = forget.forget(from, &request, obs)?;
        let wall = t.elapsed().as_secs_f64();
        let (recall, ndcg) = eval20(&model, ds, Split::Test)?;
        let f = &report.forgetting;
        // SISA unlearns its own sharded model, whose quality before unlearning is not the backbone's
        // (`original_*`): its figures get their own columns, and it is the audit's model before.
        let (before, sharded_recall, sharded_ndcg, sharded_secs) = match (method, sharded) {
            (m, Some((s, (recall, ndcg)))) if m.needs_shards() => (&s.sc.checkpoint, recall, ndcg, s.secs),
            _ => (&trained.ckpt, f64::NAN, f64::NAN, f64::NAN),
        };
        let phase_sum: f64 = report.phase_secs.values().sum();
        let m = &mut row.metrics;
        for (k, v) in [
            ("edges", report.edges as f64),
            ("users", report.users as f64),
            ("items", report.items as f64),
            ("recall@20", recall),
            ("ndcg@20", ndcg),
            ("valid_recall@20", report.valid.get("recall@20").copied().unwrap_or(f64::NAN)),
            ("original_recall@20", orig_recall),
            ("original_ndcg@20", orig_ndcg),
            ("clean_recall@20", clean_recall.unwrap_or(f64::NAN)),
            ("removed_before", f.removed.before),
            ("removed_after", f.removed.after),
            ("non_edges_after", f.non_edges.after),
            ("remaining_after", f.remaining.after),
            ("gap", f.gap),
            ("mi_bf", f.mi_bf),
            ("mi_ng", f.mi_ng),
            ("unlearn_secs", if report.phase_secs.is_empty() { wall } else { phase_sum }),
            ("wall_secs", wall),
            ("pretrain_secs", if method.needs_unlearner() { pretrain_secs } else { f64::NAN }),
            ("backbone_secs", trained.secs),
            ("sharded_recall@20", sharded_recall),
            ("sharded_ndcg@20", sharded_ndcg),
            ("sharded_train_secs", sharded_secs),
        ] {
            if !v.is_nan() {
                m.insert(k.to_string(), v);
            }
        }
        if cfg.audit {
            if method == MethodSpec::RETRAIN {
                model.save(&ref_path)?;
            }
            let reference = reference.as_ref().unwrap_or(&model);
            let acfg = AuditConfig { seed: g.seed, ..AuditConfig::default() };
            let a = audit_checkpoints(&model, &request, &ds.test, Some(reference), Some(before), &acfg)?;
            audit_columns(m, &a);
        }
        if method == MethodSpec::RETRAIN && cfg.audit {
            reference = Some(model);
        }
        done(&row)?;
        obs.cell(&row, false);
        ran += 1;
    }
    Ok(ran)
}
