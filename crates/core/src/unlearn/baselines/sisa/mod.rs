//! SISA / RecEraser: exact unlearning by sharded training.
//!
//! SISA (Bourtoule et al., *Machine Unlearning*, IEEE S&P 2021) splits the training data into `K` disjoint
//! shards and trains one model per shard; forgetting an interaction retrains only the shard that held it,
//! from scratch, with that shard's seed. RecEraser (Chen et al., *Recommendation Unlearning*, WWW 2022)
//! adapts it to recommendation by partitioning **users** into balanced groups by k-means on pre-trained
//! embeddings, so each sub-model sees whole user histories.
//!
//! [`train_sharded`] trains the `K` sub-models of the chosen backbone (shard `k` uses seed
//! [`shard_seed`]`(train.seed, k)`, its own training and validation edges, and propagates over its own
//! graph):
//!
//! - [`Partition::User`]: RecEraser's balanced partition (UBP): the user embeddings of a quick MF
//!   pre-training (`pretrain_epochs`) are clustered by `kmeans_iters` rounds of balanced k-means: all
//!   (user, centroid) pairs sorted by distance are taken greedily while the centroid's group has fewer than
//!   `⌈n_users / K⌉` users, then centroids move to their group's mean. An edge belongs to its user's shard.
//! - [`Partition::Random`]: SISA's uniform split of the edges, by a seeded hash of each (user, item) pair,
//!   so an edge keeps its shard when others are removed.
//!
//! The sub-models are served as **one ordinary checkpoint**, an MF model, so that `eval`, `recommend` and
//! `export` work unchanged. How the shards' scores are combined is the [`Aggregation`]:
//!
//! - [`Aggregation::Mean`] (SISA; the default of the random partition) and [`Aggregation::Own`] (the default
//!   of the user partition: every user is served by the sub-model that learned from them): an MF model of
//!   dimension `K·d` whose item rows are the concatenated final item embeddings of the shards and whose user
//!   rows are the concatenated final user embeddings, block `k` weighted by `w_uk`, so that a plain dot
//!   product is the aggregated score `Σ_k w_uk s_k(u, i)` (`w_uk = 1/K` for the mean; 1 for the user's own
//!   shard and 0 otherwise for own);
//! - [`Aggregation::Attention`] (RecEraser): an aggregator trained over the frozen shards (see
//!   [`attention`]) gives every user and item one embedding of dimension `d`.
//!
//! The same file holds the sub-models' base embeddings (`sisa.shard.{k}`, `(n_users + n_items, d)`), the user
//! partition (`sisa.user_shard`, u32) and the checkpoint's metadata records the [`ShardMeta`]
//! ([`crate::checkpoint::Provenance::shards`]; see [`save`] and [`load`]). Other unlearning methods see a
//! sharded checkpoint as the plain MF model it serves; their output is no longer sharded.
//!
//! [`sisa`] forgets a request by retraining from scratch every shard that holds a removed training or
//! validation edge (validation edges select a shard's epoch) on its remaining edges; the other shards are
//! kept bit for bit. With attention, the aggregator is then retrained from scratch (same seed) on all
//! remaining edges, as RecEraser does. Guarantee: the result is exactly the sharded model trained without
//! the request.

pub mod attention;

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::Dtype;
use serde::{Deserialize, Serialize};

use self::attention::{AttentionConfig, AttentionReport, train_attention};
use super::{Prepared, deep_copy};
pub use crate::checkpoint::{Aggregation, Partition, ShardMeta};
use crate::checkpoint::{Checkpoint, CheckpointMeta};
use crate::data::{Dataset, Interactions};
use crate::error::{Error, Result};
use crate::graph::{Graph, NormAdj};
use crate::io::{f32_bytes, read_f32, u32_bytes};
use crate::model::{Backbone, ModelConfig, ModelKind};
use crate::tensor::SpMat;
use crate::train::{FitReport, Observer, Silent, TrainConfig, TrainData, fit};
use crate::unlearn::method::{ForgetMethod, Forgotten, MethodOptions};
use crate::unlearn::{MethodId, UnlearnReport};

/// This method in reports and provenance (its [`METHODS`](crate::unlearn::method::METHODS) entry).
pub const METHOD: MethodId = MethodId::of("sisa");

/// Sharded training hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardConfig {
    /// The number of shards `K`.
    pub shards: usize,
    /// How edges are assigned to shards.
    pub partition: Partition,
    /// Rounds of balanced k-means ([`Partition::User`]).
    pub kmeans_iters: usize,
    /// Epochs of the MF pre-training whose user embeddings are clustered ([`Partition::User`]).
    pub pretrain_epochs: usize,
    /// How the shards are combined; `None`: [`Aggregation::Own`] for the user partition,
    /// [`Aggregation::Mean`] for the random one.
    pub aggregation: Option<Aggregation>,
    /// Epochs of the attention aggregator's training ([`Aggregation::Attention`]), at the backbone's learning
    /// rate and batch size.
    pub attention_epochs: usize,
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            shards: 4,
            partition: Partition::User,
            kmeans_iters: 10,
            pretrain_epochs: 5,
            aggregation: None,
            attention_epochs: 5,
        }
    }
}

impl ShardConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if self.shards == 0 {
            return Err(Error::config("shards", "must be at least 1"));
        }
        if self.partition == Partition::User && (self.kmeans_iters == 0 || self.pretrain_epochs == 0) {
            return Err(Error::config("shards.kmeans_iters", "kmeans_iters and pretrain_epochs must be at least 1"));
        }
        if self.aggregation == Some(Aggregation::Own) && self.partition != Partition::User {
            return Err(Error::config("aggregation", "\"own\" needs the user partition (a user's edges in one shard)"));
        }
        if self.aggregation == Some(Aggregation::Attention) && self.attention_epochs == 0 {
            return Err(Error::config("attention_epochs", "must be at least 1 with attention aggregation"));
        }
        Ok(())
    }
}

/// The sub-models behind a sharded checkpoint.
pub struct ShardSet {
    /// The shards' description.
    pub meta: ShardMeta,
    /// The sub-models (base embeddings `E⁰` of the backbone in `meta.model`), one per shard.
    pub models: Vec<Backbone>,
    /// The shard of every user ([`Partition::User`]); empty for [`Partition::Random`].
    pub user_shard: Vec<u32>,
}

/// A sharded model: the serving checkpoint and the sub-models behind it.
pub struct ShardedCheckpoint {
    /// The serving model (MF of dimension `K·d`, see the module docs) with graph, validation and removed
    /// edges and metadata; its provenance holds `shards.meta` ([`crate::checkpoint::Provenance::shards`]).
    pub checkpoint: Checkpoint,
    /// The sub-models.
    pub shards: ShardSet,
}

/// The seed of shard `k`.
pub fn shard_seed(seed: u64, k: usize) -> u64 {
    seed ^ (k as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// SplitMix64's finaliser: a well-mixed 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl ShardMeta {
    /// The shard of edge (`user`, `item`).
    fn shard_of(&self, user_shard: &[u32], user: u32, item: u32) -> usize {
        match self.partition {
            Partition::User => user_shard[user as usize] as usize,
            Partition::Random => {
                (mix(mix(self.seed) ^ ((user as u64) << 32 | item as u64)) % self.shards as u64) as usize
            }
        }
    }
}

impl ShardSet {
    /// The shard of edge (`user`, `item`).
    pub fn shard_of(&self, user: u32, item: u32) -> usize {
        self.meta.shard_of(&self.user_shard, user, item)
    }

    /// The edges of `edges` that belong to shard `k`.
    pub fn shard_edges(&self, edges: &Interactions, k: usize) -> Interactions {
        shard_edges(&self.meta, &self.user_shard, edges, k)
    }
}

fn shard_edges(meta: &ShardMeta, user_shard: &[u32], edges: &Interactions, k: usize) -> Interactions {
    let (users, items): (Vec<u32>, Vec<u32>) =
        edges.iter().filter(|&(u, i)| meta.shard_of(user_shard, u, i) == k).unzip();
    Interactions::from_sorted(users, items)
}

/// Balanced k-means (RecEraser's UBP) of the `n` rows of `emb` (`(n, dim)`, row-major) into `k` groups of at
/// most `⌈n / k⌉`: returns each row's group. The initial centroids are `k` distinct rows drawn from
/// `seed`; ties are broken by row, then group, so the result is deterministic.
///
/// # Panics
/// When `dim` or `k` is 0 or there are fewer rows than groups.
#[track_caller]
pub fn balanced_kmeans(emb: &[f32], dim: usize, k: usize, iters: usize, seed: u64) -> Vec<u32> {
    assert!(dim > 0 && k > 0, "balanced_kmeans needs dim > 0 and k > 0");
    let n = emb.len() / dim;
    assert!(n >= k, "balanced_kmeans: {n} rows for {k} groups");
    let cap = n.div_ceil(k);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut centroids: Vec<f32> =
        sample(&mut rng, n, k).into_iter().flat_map(|r| emb[r * dim..(r + 1) * dim].to_vec()).collect();
    let mut assign = vec![u32::MAX; n];
    for _ in 0..iters {
        let mut pairs: Vec<(f32, u32, u32)> = Vec::with_capacity(n * k);
        for r in 0..n {
            let x = &emb[r * dim..(r + 1) * dim];
            for c in 0..k {
                let y = &centroids[c * dim..(c + 1) * dim];
                let d2: f32 = x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum();
                pairs.push((d2, r as u32, c as u32));
            }
        }
        pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut next = vec![u32::MAX; n];
        let mut sizes = vec![0usize; k];
        for (_, r, c) in pairs {
            if next[r as usize] == u32::MAX && sizes[c as usize] < cap {
                next[r as usize] = c;
                sizes[c as usize] += 1;
            }
        }
        let done = next == assign;
        assign = next;
        if done {
            break;
        }
        let mut sums = vec![0f64; k * dim];
        for (r, &c) in assign.iter().enumerate() {
            for (s, &x) in sums[c as usize * dim..][..dim].iter_mut().zip(&emb[r * dim..(r + 1) * dim]) {
                *s += x as f64;
            }
        }
        for c in 0..k {
            if sizes[c] > 0 {
                for j in 0..dim {
                    centroids[c * dim + j] = (sums[c * dim + j] / sizes[c] as f64) as f32;
                }
            }
        }
    }
    assign
}

/// Trains one shard's sub-model from scratch: seed [`shard_seed`]`(train.seed, k)`, its own edges.
fn train_shard(
    meta: &ShardMeta,
    k: usize,
    n_users: usize,
    n_items: usize,
    edges: (&Interactions, &Interactions),
    train: &TrainConfig,
    obs: &mut dyn Observer,
) -> Result<(Backbone, FitReport)> {
    let seed = shard_seed(meta.seed, k);
    let mut model = Backbone::new(meta.model.clone(), n_users, n_items, seed)?;
    let data = TrainData::new(n_users, n_items, edges.0, edges.1);
    let report = fit(&mut model, &data, &TrainConfig { seed, ..train.clone() }, obs)?;
    report.require_converged()?;
    Ok((model, report))
}

/// The serving model of the shards (see the module docs) over the training `graph`; `valid` selects the
/// attention aggregator's epoch. Also returns what the aggregator learned, with attention.
fn serving(
    meta: &ShardMeta,
    shards: &[Backbone],
    user_shard: &[u32],
    (graph, valid): (&Interactions, &Interactions),
    train: &TrainConfig,
) -> Result<(Backbone, Option<AttentionReport>)> {
    let k_all = meta.shards;
    let (nu, ni, d) = (shards[0].n_users(), shards[0].n_items(), meta.model.dim);
    let finals = shards
        .iter()
        .enumerate()
        .map(|(k, model)| {
            let g = Graph::from_interactions(nu, ni, &shard_edges(meta, user_shard, graph, k));
            model.final_embeddings(&SpMat::from_norm_adj(&NormAdj::from_graph(&g)))
        })
        .collect::<Result<Vec<_>>>()?;
    let aggregation = meta.aggregation();
    if aggregation == Aggregation::Attention {
        let cfg = AttentionConfig {
            epochs: meta.attention_epochs,
            lr: train.lr,
            batch_size: train.batch_size,
            reg: meta.model.reg,
            seed: shard_seed(meta.seed, k_all),
        };
        let g = Graph::from_interactions(nu, ni, graph);
        let v = Graph::from_interactions(nu, ni, valid);
        let (emb, report) = train_attention(&finals, &g, v.user_items(), &cfg)?;
        let mut table = emb.users;
        table.extend(emb.items);
        let cfg = ModelConfig { kind: ModelKind::Mf, dim: d, combine: None, ..meta.model.clone() };
        return Ok((Backbone::from_embeddings(cfg, nu, ni, table)?, Some(report)));
    }
    let wide = k_all * d;
    let mut table = vec![0f32; (nu + ni) * wide];
    for (k, emb) in finals.iter().enumerate() {
        for u in 0..nu {
            let w = match aggregation {
                Aggregation::Own => f32::from(user_shard[u] as usize == k),
                _ => 1.0 / k_all as f32,
            };
            for (o, &x) in table[u * wide + k * d..][..d].iter_mut().zip(&emb.users[u * d..(u + 1) * d]) {
                *o = w * x;
            }
        }
        for i in 0..ni {
            table[(nu + i) * wide + k * d..][..d].copy_from_slice(&emb.items[i * d..(i + 1) * d]);
        }
    }
    let cfg = ModelConfig { kind: ModelKind::Mf, dim: wide, combine: None, ..meta.model.clone() };
    Ok((Backbone::from_embeddings(cfg, nu, ni, table)?, None))
}

/// Trains `shard_cfg.shards` sub-models of `model_cfg` on the shards of `ds`'s training data (see the module
/// docs) and returns the sharded checkpoint and each shard's fit report.
///
/// # Errors
/// Invalid configurations, an empty training split, the most-popular model, more shards than users for
/// the user partition, or a diverged shard.
pub fn train_sharded(
    ds: &Dataset,
    model_cfg: &ModelConfig,
    train_cfg: &TrainConfig,
    shard_cfg: &ShardConfig,
    obs: &mut dyn Observer,
) -> Result<(ShardedCheckpoint, Vec<FitReport>)> {
    model_cfg.validate()?;
    train_cfg.validate()?;
    shard_cfg.validate()?;
    if !model_cfg.kind.architecture().learns_embeddings() {
        let why = format!("sharded training needs a model with embeddings, not {}", model_cfg.kind);
        return Err(Error::config("model.kind", why));
    }
    let (nu, ni) = (ds.n_users(), ds.n_items());
    if shard_cfg.partition == Partition::User && shard_cfg.shards > nu {
        return Err(Error::config("shards", format!("{} shards for {nu} users", shard_cfg.shards)));
    }
    let (train, valid, carved) = crate::pipeline::train_valid(ds, train_cfg)?;
    if train.is_empty() {
        return Err(Error::config("data", "the training split is empty"));
    }
    let mut meta = ShardMeta {
        shards: shard_cfg.shards,
        partition: shard_cfg.partition,
        model: model_cfg.clone(),
        seed: train_cfg.seed,
        last_retrained: vec![],
        aggregation: shard_cfg.aggregation,
        attention_epochs: shard_cfg.attention_epochs,
        attention: None,
    };
    let user_shard = match shard_cfg.partition {
        Partition::Random => vec![],
        Partition::User => {
            let mf = ModelConfig { kind: ModelKind::Mf, ..model_cfg.clone() };
            let mut pre = Backbone::new(mf, nu, ni, train_cfg.seed)?;
            let cfg = TrainConfig {
                epochs: shard_cfg.pretrain_epochs,
                eval_every: shard_cfg.pretrain_epochs,
                patience: 0,
                ..train_cfg.clone()
            };
            fit(&mut pre, &TrainData::new(nu, ni, &train, &valid), &cfg, &mut Silent)?;
            let users = pre.base_vec()?[..nu * model_cfg.dim].to_vec();
            balanced_kmeans(&users, model_cfg.dim, shard_cfg.shards, shard_cfg.kmeans_iters, train_cfg.seed)
        }
    };
    let mut shards = Vec::with_capacity(meta.shards);
    let mut reports = Vec::with_capacity(meta.shards);
    for k in 0..meta.shards {
        let edges = (&shard_edges(&meta, &user_shard, &train, k), &shard_edges(&meta, &user_shard, &valid, k));
        let (model, report) = train_shard(&meta, k, nu, ni, edges, train_cfg, obs)?;
        shards.push(model);
        reports.push(report);
    }
    let model;
    (model, meta.attention) = serving(&meta, &shards, &user_shard, (&train, &valid), train_cfg)?;
    let mut ckpt_meta = CheckpointMeta::trained(ds, &model.config, train_cfg, carved, None);
    ckpt_meta.provenance.shards = Some(meta.clone());
    let checkpoint = Checkpoint::new(model, ckpt_meta, train, valid, Interactions::default())?;
    Ok((ShardedCheckpoint { checkpoint, shards: ShardSet { meta, models: shards, user_shard } }, reports))
}

/// Forgets `request` (internal ids) by retraining from scratch every shard that holds one of its edges,
/// on that shard's remaining edges with its own seed; the other shards are kept bit for bit. Returns the
/// new sharded checkpoint and the report (phases `graph`, `retrain`).
///
/// # Errors
/// An invalid request, or a diverged shard.
pub fn sisa(
    sc: &ShardedCheckpoint,
    request: &Interactions,
    obs: &mut dyn Observer,
) -> Result<(ShardedCheckpoint, UnlearnReport)> {
    sisa_of(&sc.checkpoint, &sc.shards, request, obs)
}

/// [`sisa`] of `ckpt`, which must be the serving checkpoint of `set` (its provenance records `set.meta`).
///
/// # Errors
/// [`Error::CheckpointMismatch`] for another checkpoint; otherwise as [`sisa`].
pub fn sisa_of(
    ckpt: &Checkpoint,
    set: &ShardSet,
    request: &Interactions,
    obs: &mut dyn Observer,
) -> Result<(ShardedCheckpoint, UnlearnReport)> {
    let recorded = ckpt.meta().provenance.shards.as_ref();
    if recorded != Some(&set.meta) || set.models.iter().any(|m| m.n_users() != ckpt.model().n_users()) {
        return Err(Error::CheckpointMismatch {
            expected: format!("the serving checkpoint of these {} shards", set.meta.shards),
            found: match recorded {
                Some(m) => format!("a checkpoint of {} other shards", m.shards),
                None => "a checkpoint without shards".into(),
            },
        });
    }
    let t = Instant::now();
    let prep = Prepared::new(ckpt, request)?;
    let mut phases = HashMap::from([("graph".to_string(), t.elapsed().as_secs_f64())]);
    let t = Instant::now();
    let mut affected = vec![false; set.meta.shards];
    for (u, i) in request.iter() {
        affected[set.shard_of(u, i)] = true;
    }
    let remaining = prep.remaining.to_interactions();
    let (nu, ni) = (ckpt.model().n_users(), ckpt.model().n_items());
    let mut models = Vec::with_capacity(set.meta.shards);
    for (k, old) in set.models.iter().enumerate() {
        if affected[k] {
            let edges = (&set.shard_edges(&remaining, k), &set.shard_edges(&prep.valid, k));
            models.push(train_shard(&set.meta, k, nu, ni, edges, &ckpt.meta().train, obs)?.0);
        } else {
            models.push(deep_copy(old)?);
        }
    }
    let mut meta = set.meta.clone();
    let model;
    (model, meta.attention) = serving(&meta, &models, &set.user_shard, (&remaining, &prep.valid), &ckpt.meta().train)?;
    phases.insert("retrain".to_string(), t.elapsed().as_secs_f64());
    meta.last_retrained = (0..meta.shards).filter(|&k| affected[k]).collect();
    tracing::info!(retrained = ?meta.last_retrained, shards = meta.shards, "sisa");
    let report = prep.report(METHOD, ckpt.model(), &model, phases, vec![])?;
    let mut out = prep.finish(ckpt, model, METHOD)?;
    out.provenance_mut().shards = Some(meta.clone());
    let shards = ShardSet { meta, models, user_shard: set.user_shard.clone() };
    Ok((ShardedCheckpoint { checkpoint: out, shards }, report))
}

fn shard_name(k: usize) -> String {
    format!("sisa.shard.{k}")
}

const USER_SHARD: &str = "sisa.user_shard";

/// Saves a sharded checkpoint atomically: the serving `checkpoint` as [`Checkpoint::save`] writes it, plus
/// `shards` as the tensors `sisa.shard.{k}` (f32 `(n_users + n_items, d)`) and `sisa.user_shard` (u32 `(n_users,)`, user
/// partition only).
pub fn save(path: &Path, checkpoint: &Checkpoint, shards: &ShardSet) -> Result<()> {
    let (mut tensors, json) = checkpoint.file_parts()?;
    for (k, m) in shards.models.iter().enumerate() {
        let data = f32_bytes(&m.base_vec()?);
        tensors.push((shard_name(k), Dtype::F32, vec![m.n_users() + m.n_items(), m.dim()], data));
    }
    if !shards.user_shard.is_empty() {
        let data = u32_bytes(&shards.user_shard);
        tensors.push((USER_SHARD.into(), Dtype::U32, vec![shards.user_shard.len()], data));
    }
    crate::checkpoint::write_tensors(path, &tensors, json)
}

/// Loads a checkpoint written by [`save`].
///
/// # Errors
/// I/O, a file that is not a checkpoint, or a checkpoint that is not sharded (trained without `--shards`,
/// or rewritten by another unlearning method).
pub fn load(path: &Path) -> Result<ShardedCheckpoint> {
    let checkpoint = Checkpoint::load(path)?;
    let bad = |why: String| Error::format(path, 0, format!("not a sharded checkpoint (train with --shards): {why}"));
    let meta = checkpoint.meta().provenance.shards.clone().ok_or_else(|| bad("no shard metadata".into()))?;
    meta.model.validate().map_err(|e| bad(format!("its shards' model configuration: {e}")))?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let (nu, ni, d) = (checkpoint.model().n_users(), checkpoint.model().n_items(), meta.model.dim);
    if checkpoint.model().dim() != meta.serving_dim() {
        return Err(bad(format!(
            "serving dimension {} is not {} for {} shards of dimension {d} with {} aggregation",
            checkpoint.model().dim(),
            meta.serving_dim(),
            meta.shards,
            meta.aggregation().name()
        )));
    }
    let shards = (0..meta.shards)
        .map(|k| {
            let data = read_f32(&st, &shard_name(k), &[nu + ni, d], &bad)?;
            Backbone::from_embeddings(meta.model.clone(), nu, ni, data)
        })
        .collect::<Result<Vec<_>>>()?;
    let user_shard = match meta.partition {
        Partition::Random => vec![],
        Partition::User => {
            let t = st.tensor(USER_SHARD).map_err(|e| bad(format!("{USER_SHARD}: {e}")))?;
            if t.dtype() != Dtype::U32 || t.shape() != [nu] {
                return Err(bad(format!("{USER_SHARD} has {:?} {:?}, expected U32 [{nu}]", t.dtype(), t.shape())));
            }
            let v: Vec<u32> = t.data().chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            if v.iter().any(|&k| k as usize >= meta.shards) {
                return Err(bad(format!("{USER_SHARD} names a shard beyond {}", meta.shards)));
            }
            v
        }
    };
    Ok(ShardedCheckpoint { checkpoint, shards: ShardSet { meta, models: shards, user_shard } })
}

/// [`sisa`] as a [`ForgetMethod`] (`sisa`): it forgets from the serving checkpoint of `shards` (the
/// `checkpoint` of the [`ShardedCheckpoint`] they were loaded with) and returns the new shards with it.
pub struct Sisa<'a> {
    /// The sub-models behind the checkpoint.
    pub shards: &'a ShardSet,
}

/// Builds [`Sisa`] from [`MethodOptions::shards`].
pub(crate) fn build<'a>(o: &MethodOptions<'a>) -> Result<Box<dyn ForgetMethod + 'a>> {
    let shards = o.shards.ok_or_else(|| {
        Error::config("model", "sisa needs a sharded model (a checkpoint trained with --shards, see sisa::load)")
    })?;
    Ok(Box::new(Sisa { shards }))
}

impl ForgetMethod for Sisa<'_> {
    fn name(&self) -> &'static str {
        METHOD.name()
    }

    fn epochs(&self, ckpt: &Checkpoint) -> usize {
        ckpt.meta().train.epochs
    }

    fn forget(&self, ckpt: &Checkpoint, request: &Interactions, obs: &mut dyn Observer) -> Result<Forgotten> {
        let (out, report) = sisa_of(ckpt, self.shards, request, obs)?;
        Ok(Forgotten { checkpoint: out.checkpoint, report, shards: Some(out.shards) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::{SynthConfig, generate};

    fn setup(kind: ModelKind, partition: Partition) -> (Dataset, ShardedCheckpoint) {
        setup_with(kind, ShardConfig { shards: 3, partition, ..ShardConfig::default() })
    }

    fn setup_with(kind: ModelKind, shards: ShardConfig) -> (Dataset, ShardedCheckpoint) {
        let ds =
            generate(&SynthConfig { users: 90, items: 70, interactions: 2000, seed: 7, ..Default::default() }).unwrap();
        let model = ModelConfig { kind, dim: 8, layers: 2, reg: 1e-4, ..ModelConfig::default() };
        let train = TrainConfig { epochs: 6, batch_size: 128, lr: 1e-2, eval_every: 3, ..TrainConfig::default() };
        let (sc, reports) = train_sharded(&ds, &model, &train, &shards, &mut Silent).unwrap();
        assert_eq!(reports.len(), 3);
        (ds, sc)
    }

    fn dot(emb: &crate::model::Embeddings, u: u32, i: u32) -> f32 {
        let d = emb.dim;
        emb.users[u as usize * d..][..d].iter().zip(&emb.items[i as usize * d..][..d]).map(|(a, b)| a * b).sum()
    }

    /// Shard `k`'s final embeddings over its own graph.
    fn shard_final(sc: &ShardedCheckpoint, k: usize) -> crate::model::Embeddings {
        let m = &sc.shards.models[k];
        let g = Graph::from_interactions(m.n_users(), m.n_items(), &sc.shards.shard_edges(sc.checkpoint.edges(), k));
        m.final_embeddings(&SpMat::from_norm_adj(&NormAdj::from_graph(&g))).unwrap()
    }

    /// Forgets the `nth` training edge of a 3-shard model: exactly its shard is retrained and the others are
    /// kept bit for bit. Returns the result and the retrained shard.
    fn forget_one_edge(sc: &ShardedCheckpoint, nth: usize) -> (ShardedCheckpoint, usize) {
        let edge = sc.checkpoint.edges().iter().nth(nth).unwrap();
        let req = Interactions::from_pairs(vec![edge]).0;
        let (out, _) = sisa(sc, &req, &mut Silent).unwrap();
        let k = sc.shards.shard_of(edge.0, edge.1);
        assert_eq!(out.shards.meta.last_retrained, vec![k]);
        for j in (0..3).filter(|&j| j != k) {
            assert_eq!(out.shards.models[j].base_vec().unwrap(), sc.shards.models[j].base_vec().unwrap());
        }
        (out, k)
    }

    #[test]
    fn balanced_kmeans_finds_separated_groups_within_capacity() {
        let mut emb = vec![];
        for c in 0..3 {
            for p in 0..10 {
                let (x, y) = [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)][c];
                emb.extend([x + (p as f32) * 0.01, y - (p as f32) * 0.02]);
            }
        }
        let a = balanced_kmeans(&emb, 2, 3, 10, 1);
        assert_eq!(a, balanced_kmeans(&emb, 2, 3, 10, 1));
        for c in 0..3 {
            let g = a[c * 10];
            assert!(a[c * 10..(c + 1) * 10].iter().all(|&x| x == g), "{a:?}");
        }
        let b = balanced_kmeans(&emb, 2, 4, 10, 2);
        for k in 0..4 {
            assert!(b.iter().filter(|&&x| x == k).count() <= 8, "{b:?}");
        }
    }

    #[test]
    fn user_partition_retrains_only_the_users_shard_exactly() {
        let (_, sc) = setup(ModelKind::LightGcn, Partition::User);
        let (meta, ckpt) = (&sc.shards.meta, &sc.checkpoint);
        let (nu, ni) = (ckpt.model().n_users(), ckpt.model().n_items());
        assert_eq!(ckpt.model().dim(), 3 * 8);
        // Balanced groups, and the serving model's scores are the user's own shard's scores.
        for k in 0..3u32 {
            assert!(sc.shards.user_shard.iter().filter(|&&x| x == k).count() <= nu.div_ceil(3));
        }
        let served = ckpt.final_embeddings().unwrap();
        for (u, i) in [(0u32, 0u32), (5, 17), (40, 3)] {
            let own = shard_final(&sc, sc.shards.user_shard[u as usize] as usize);
            assert!((dot(&served, u, i) - dot(&own, u, i)).abs() < 1e-4);
        }
        // Forget user 11's training and validation interactions.
        let user = 11u32;
        let req = Interactions::from_pairs(ckpt.seen().iter().filter(|&(u, _)| u == user).collect()).0;
        let (out, rep) = sisa(&sc, &req, &mut Silent).unwrap();
        let k_u = sc.shards.user_shard[user as usize] as usize;
        assert_eq!(out.shards.meta.last_retrained, vec![k_u]);
        assert_eq!(rep.method, METHOD);
        assert!(
            req.iter().all(|(u, i)| !out.checkpoint.edges().contains(u, i) && !out.checkpoint.valid().contains(u, i))
        );
        for k in (0..3).filter(|&k| k != k_u) {
            assert_eq!(
                out.shards.models[k].base_vec().unwrap(),
                sc.shards.models[k].base_vec().unwrap(),
                "shard {k} changed"
            );
        }
        // The affected shard is that shard retrained from scratch, with its seed, on its remaining edges.
        let seed = shard_seed(meta.seed, k_u);
        let rest = |e: &Interactions| {
            let e = e.difference(&req).0;
            Interactions::from_pairs(
                e.iter().filter(|&(u, _)| sc.shards.user_shard[u as usize] as usize == k_u).collect(),
            )
            .0
        };
        let mut fresh = Backbone::new(meta.model.clone(), nu, ni, seed).unwrap();
        let data = TrainData::new(nu, ni, &rest(ckpt.edges()), &rest(ckpt.valid()));
        fit(&mut fresh, &data, &TrainConfig { seed, ..ckpt.meta().train.clone() }, &mut Silent).unwrap();
        assert_eq!(out.shards.models[k_u].base_vec().unwrap(), fresh.base_vec().unwrap());
        // Saved and loaded as one file; a plain checkpoint load serves the same model.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sharded.safetensors");
        save(&path, &out.checkpoint, &out.shards).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.shards.meta, out.shards.meta);
        assert_eq!(back.shards.user_shard, out.shards.user_shard);
        for (a, b) in back.shards.models.iter().zip(&out.shards.models) {
            assert_eq!(a.base_vec().unwrap(), b.base_vec().unwrap());
        }
        let plain = Checkpoint::load(&path).unwrap();
        assert_eq!(plain.model().base_vec().unwrap(), out.checkpoint.model().base_vec().unwrap());
        assert!(plain.is_erased_user(user));
        // A file rewritten without the shard tensors is refused.
        plain.save(&path).unwrap();
        assert!(load(&path).err().unwrap().to_string().contains("sharded"));
    }

    #[test]
    fn random_partition_serves_the_mean_and_retrains_the_hashed_shards() {
        let (_, sc) = setup(ModelKind::Mf, Partition::Random);
        let ckpt = &sc.checkpoint;
        assert!(sc.shards.user_shard.is_empty());
        let sizes: Vec<usize> = (0..3).map(|k| sc.shards.shard_edges(ckpt.edges(), k).len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), ckpt.edges().len());
        assert!(sizes.iter().all(|&s| s > ckpt.edges().len() / 5), "{sizes:?}");
        let served = ckpt.final_embeddings().unwrap();
        for (u, i) in [(0u32, 0u32), (5, 17), (40, 3)] {
            let mean = (0..3).map(|k| dot(&shard_final(&sc, k), u, i)).sum::<f32>() / 3.0;
            assert!((dot(&served, u, i) - mean).abs() < 1e-4);
        }
        let (out, k) = forget_one_edge(&sc, 0);
        assert_ne!(out.shards.models[k].base_vec().unwrap(), sc.shards.models[k].base_vec().unwrap());
    }

    #[test]
    fn attention_aggregation_is_served_at_dim_d_and_retrained_after_unlearning() {
        let cfg = ShardConfig {
            shards: 3,
            partition: Partition::Random,
            aggregation: Some(Aggregation::Attention),
            attention_epochs: 3,
            ..ShardConfig::default()
        };
        let (_, sc) = setup_with(ModelKind::LightGcn, cfg);
        let ckpt = &sc.checkpoint;
        assert_eq!(ckpt.model().dim(), 8, "attention serves one embedding of the shards' dimension");
        let att = sc.shards.meta.attention.as_ref().expect("attention report");
        assert_eq!(att.losses.len(), 3);
        assert!((att.user_weights.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{att:?}");
        // Forget one edge: one shard is retrained, the others are kept bit for bit, and the aggregator is
        // retrained from scratch on the remaining edges with the same seed.
        let (out, _) = forget_one_edge(&sc, 10);
        let (nu, ni) = (ckpt.model().n_users(), ckpt.model().n_items());
        let remaining = out.checkpoint.edges();
        assert_eq!(remaining.len() + 1, ckpt.edges().len());
        let finals: Vec<_> = (0..3).map(|j| shard_final(&out, j)).collect();
        let acfg = AttentionConfig {
            epochs: 3,
            lr: ckpt.meta().train.lr,
            batch_size: ckpt.meta().train.batch_size,
            reg: sc.shards.meta.model.reg,
            seed: shard_seed(sc.shards.meta.seed, 3),
        };
        let g = Graph::from_interactions(nu, ni, remaining);
        let v = Graph::from_interactions(nu, ni, out.checkpoint.valid());
        let (expect, _) = train_attention(&finals, &g, v.user_items(), &acfg).unwrap();
        let served = out.checkpoint.final_embeddings().unwrap();
        assert_eq!(served.users, expect.users);
        assert_eq!(served.items, expect.items);
        assert_ne!(served.users, ckpt.final_embeddings().unwrap().users);
        // Saved and loaded with the narrower serving model.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attention.safetensors");
        save(&path, &out.checkpoint, &out.shards).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.shards.meta, out.shards.meta);
        assert_eq!(back.shards.meta.aggregation(), Aggregation::Attention);
    }

    #[test]
    fn own_aggregation_needs_the_user_partition() {
        let cfg =
            ShardConfig { partition: Partition::Random, aggregation: Some(Aggregation::Own), ..ShardConfig::default() };
        assert!(cfg.validate().unwrap_err().to_string().contains("user partition"));
        let cfg =
            ShardConfig { aggregation: Some(Aggregation::Attention), attention_epochs: 0, ..ShardConfig::default() };
        assert!(cfg.validate().unwrap_err().to_string().contains("attention_epochs"));
        // Metadata written before aggregation was configurable keeps its partition's aggregation.
        let meta = ShardMeta {
            shards: 2,
            partition: Partition::Random,
            model: ModelConfig::default(),
            seed: 1,
            last_retrained: vec![],
            aggregation: Some(Aggregation::Attention),
            attention_epochs: 4,
            attention: None,
        };
        let mut json = serde_json::to_value(&meta).unwrap();
        let obj = json.as_object_mut().unwrap();
        assert!(obj.remove("aggregation").is_some() && obj.remove("attention_epochs").is_some());
        let old: ShardMeta = serde_json::from_value(json).unwrap();
        assert_eq!(old.aggregation(), Aggregation::Mean);
        assert_eq!(old.serving_dim(), 2 * meta.model.dim);
        assert_eq!(meta.serving_dim(), meta.model.dim);
    }

    /// Crash input of the `checkpoint` fuzz target (fuzz/regressions/checkpoint/sharded-shards-overflow): a
    /// sharded checkpoint whose metadata declares 2⁶⁴ − 1 shards overflowed `shards × dim` (a panic in
    /// builds with overflow checks). It is an error naming the serving dimension now.
    #[test]
    fn a_shard_count_that_overflows_the_serving_dimension_is_an_error() {
        let (_, sc) = setup(ModelKind::Mf, Partition::Random);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sharded.safetensors");
        save(&path, &sc.checkpoint, &sc.shards).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let key = crate::checkpoint::META_KEY;
        // As a format-2 file, which has no seal to break: a forged file need not carry one.
        let text = crate::io::unseal(header["__metadata__"][key].as_str().unwrap()).unwrap().1;
        let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        doc["format"] = 2.into();
        doc["provenance"]["shards"]["shards"] = u64::MAX.into();
        header["__metadata__"][key] = doc.to_string().into();
        let h = serde_json::to_vec(&header).unwrap();
        let mut file = (h.len() as u64).to_le_bytes().to_vec();
        file.extend(&h);
        file.extend(&bytes[8 + n..]);
        std::fs::write(&path, &file).unwrap();
        let err = load(&path).err().expect("an error").to_string();
        assert!(err.contains("serving dimension"), "{err}");
    }
}
