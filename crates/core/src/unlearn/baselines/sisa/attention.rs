//! RecEraser's attention-based adaptive aggregation of the shard models (Chen et al., WWW 2022, §3.4).
//!
//! Every shard `k` gives a node (user or item) a final embedding `e_k`. A per-shard transfer
//! `ẽ_k = e_k W_k + b_k` (shared by users and items) maps the shards into one space, an attention scores each
//! shard, `a_k = h · relu(ẽ_k W + b)` (one `(W, b, h)` for users, one for items, hidden size `d/2`), and the
//! aggregated embedding is `e = Σ_k softmax(a)_k ẽ_k`. A user's score of an item is the dot product of the two
//! aggregated embeddings, so the result is served as an ordinary MF table of dimension `d`.
//!
//! The shard embeddings are frozen; only the aggregator is trained, with BPR on all training edges (the
//! shards' union), Adam, seeded negative sampling, and the best epoch kept by validation Recall@20. As in
//! RecEraser's code, the embeddings are regularised by the backbone's `reg` and the transfers by `1e-5`.
//! Deviations, chosen for a careful default: the transfers start at the identity (the aggregator starts as
//! the mean of the shards rather than a random mixture), Adam instead of Adagrad, no dropout on the user
//! embedding, and the epoch is selected on validation, never on the test split.

pub use crate::checkpoint::AttentionReport;
use crate::error::Result;
use crate::eval::{EvalConfig, MetricKey, evaluate_ranking};
use crate::graph::{Csr, Graph};
use crate::model::Embeddings;
use crate::model::loss::{bpr, sq_norm};
use crate::train::adam::{Adam, AdamConfig};
use crate::train::sampler::{Triples, sample_epoch};
use crate::train::{OnDivergence, Schedule, Silent, Steps, Validation, driver};
use candle_core::{D, DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// L2 weight of the transfers `W_k, b_k` (RecEraser's code).
const TRANSFER_REG: f64 = 1e-5;

/// Training of the aggregator.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionConfig {
    /// Epochs over the training edges.
    pub epochs: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Minibatch size.
    pub batch_size: usize,
    /// L2 weight of the aggregated embeddings of a batch (the backbone's `reg`).
    pub reg: f64,
    /// Seed of the initialisation and of the negative sampling.
    pub seed: u64,
}

/// The aggregator's parameters.
struct Params {
    trans_w: Var,
    trans_b: Var,
    /// `(W, b, h)` for users, then for items.
    att: [(Var, Var, Var); 2],
}

/// Uniform Glorot initialisation of a `(rows, cols)` matrix.
fn glorot(rng: &mut ChaCha8Rng, rows: usize, cols: usize) -> Vec<f32> {
    let bound = (6.0 / (rows + cols) as f64).sqrt() as f32;
    (0..rows * cols).map(|_| rng.random_range(-bound..bound)).collect()
}

impl Params {
    fn new(k: usize, d: usize, seed: u64) -> Result<Self> {
        let dev = Device::Cpu;
        let a = (d / 2).max(1);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut eye = vec![0f32; k * d * d];
        for s in 0..k {
            for j in 0..d {
                eye[s * d * d + j * d + j] = 1.0;
            }
        }
        let trans_w = Var::from_tensor(&Tensor::from_vec(eye, (k, d, d), &dev)?)?;
        let trans_b = Var::zeros((k, 1, d), DType::F32, &dev)?;
        let mut side = || -> Result<(Var, Var, Var)> {
            Ok((
                Var::from_tensor(&Tensor::from_vec(glorot(&mut rng, d, a), (d, a), &dev)?)?,
                Var::zeros((1, a), DType::F32, &dev)?,
                // RecEraser starts h at 0.01: near-uniform attention at first.
                Var::from_tensor(&Tensor::full(0.01f32, (a, 1), &dev)?)?,
            ))
        };
        let att = [side()?, side()?];
        Ok(Self { trans_w, trans_b, att })
    }

    fn vars(&self) -> Vec<Var> {
        let mut v = vec![self.trans_w.clone(), self.trans_b.clone()];
        for (w, b, h) in &self.att {
            v.extend([w.clone(), b.clone(), h.clone()]);
        }
        v
    }

    /// Aggregates rows `idx` (all rows when `None`) of the shard embeddings `all` `(K, n, d)` with the
    /// attention of `side` (0 users, 1 items): the `(B, d)` embeddings and the `(K, B)` weights.
    fn aggregate(&self, all: &Tensor, idx: Option<&Tensor>, side: usize) -> Result<(Tensor, Tensor)> {
        let x = match idx {
            Some(i) => all.index_select(i, 1)?,
            None => all.clone(),
        };
        let x = x.matmul(self.trans_w.as_tensor())?.broadcast_add(self.trans_b.as_tensor())?;
        let (k, b, d) = x.dims3()?;
        let (w, bias, h) = &self.att[side];
        let logits = x
            .reshape((k * b, d))?
            .matmul(w.as_tensor())?
            .broadcast_add(bias.as_tensor())?
            .relu()?
            .matmul(h.as_tensor())?
            .reshape((k, b))?;
        // softmax over the shards in max-subtracted form (cannot overflow).
        let weights = candle_nn::ops::softmax(&logits, 0)?;
        let out = x.broadcast_mul(&weights.unsqueeze(D::Minus1)?)?.sum(0)?;
        Ok((out, weights))
    }

    /// The aggregated embeddings of every user and item, and the mean user weight of each shard.
    fn embed_all(&self, users: &Tensor, items: &Tensor) -> Result<(Embeddings, Vec<f64>)> {
        let (u, wu) = self.aggregate(users, None, 0)?;
        let (i, _) = self.aggregate(items, None, 1)?;
        let mean_w = wu.mean(1)?.to_vec1::<f32>()?.into_iter().map(f64::from).collect();
        let dim = u.dim(1)?;
        let emb =
            Embeddings { dim, users: u.flatten_all()?.to_vec1::<f32>()?, items: i.flatten_all()?.to_vec1::<f32>()? };
        Ok((emb, mean_w))
    }
}

/// Stacks one side of the shards' embeddings into a `(K, n, d)` tensor.
fn stack(shards: &[Embeddings], users: bool) -> Result<Tensor> {
    let d = shards[0].dim;
    let data: Vec<f32> = shards.iter().flat_map(|e| if users { &e.users } else { &e.items }).copied().collect();
    let n = data.len() / (shards.len() * d);
    Ok(Tensor::from_vec(data, (shards.len(), n, d), &Device::Cpu)?)
}

/// Trains RecEraser's aggregator over the frozen final embeddings of the `shards` (same users, items and
/// dimension) on the training `graph`, selecting the epoch by Recall@20 on `valid` (the last epoch when
/// `valid` is empty). Returns the aggregated embeddings and what was learned. Deterministic in `cfg.seed`.
///
/// # Errors
/// Tensor errors; a non-finite loss stops training and keeps the best epoch so far (the initial, mean-like
/// aggregator when it happens in the first epoch).
pub fn train_attention(
    shards: &[Embeddings],
    graph: &Graph,
    valid: &Csr,
    cfg: &AttentionConfig,
) -> Result<(Embeddings, AttentionReport)> {
    let start = std::time::Instant::now();
    let params = Params::new(shards.len(), shards[0].dim, cfg.seed)?;
    let mut opt = Adam::new(params.vars(), AdamConfig { lr: cfg.lr, ..AdamConfig::default() })?;
    let has_valid = valid.nnz() > 0;
    let mut steps = AttentionSteps {
        params,
        users: stack(shards, true)?,
        items: stack(shards, false)?,
        graph,
        valid,
        cfg,
        triples: Triples::default(),
        validated: None,
        kept: None,
    };
    // The initial (mean-like) aggregator and every epoch are validated, the best kept; without validation
    // edges the last epoch is. A non-finite loss stops training and keeps the best (or last) state so far.
    let schedule = Schedule {
        validate_initial: has_valid,
        on_divergence: OnDivergence::KeepLastGood,
        ..Schedule::new(cfg.epochs, has_valid.then_some(1))
    };
    let out = driver::run(&mut steps, &mut opt, &schedule, &mut Silent)?;
    let (best, user_weights) = match steps.kept.take() {
        Some(kept) => kept,
        None => steps.params.embed_all(&steps.users, &steps.items)?,
    };
    let report = AttentionReport {
        losses: out.history.iter().map(|r| r.loss).collect(),
        valid_recall: out.after_epochs().map(|(_, c)| c.score).collect(),
        best_epoch: match out.best() {
            Some(b) => b.epoch.unwrap_or(0),
            None => out.history.len().saturating_sub(1),
        },
        user_weights,
        secs: start.elapsed().as_secs_f64(),
    };
    Ok((best, report))
}

/// [`train_attention`]'s step functions: BPR on the aggregated embeddings of the epoch's triples; a state is
/// validated and kept as its aggregated embeddings and mean shard weights.
struct AttentionSteps<'a> {
    params: Params,
    /// The shards' user and item embeddings, `(K, n, d)`.
    users: Tensor,
    items: Tensor,
    graph: &'a Graph,
    valid: &'a Csr,
    cfg: &'a AttentionConfig,
    triples: Triples,
    /// The aggregation of the last validation.
    validated: Option<(Embeddings, Vec<f64>)>,
    /// The aggregation restored at the end.
    kept: Option<(Embeddings, Vec<f64>)>,
}

impl Steps for AttentionSteps<'_> {
    type State = (Embeddings, Vec<f64>);
    type Detail = ();

    fn begin_epoch(&mut self, epoch: usize) -> Result<usize> {
        self.triples = sample_epoch(self.graph.user_items(), self.cfg.seed, epoch as u64);
        Ok(self.triples.n_batches(self.cfg.batch_size))
    }

    fn loss(&mut self, step: usize) -> Result<Tensor> {
        let (params, cfg) = (&self.params, self.cfg);
        let b = self.triples.batch(step, cfg.batch_size);
        let len = b.len();
        let idx = |v: Vec<u32>| Tensor::from_vec(v, len, &Device::Cpu);
        let (u, _) = params.aggregate(&self.users, Some(&idx(b.users)?), 0)?;
        let (p, _) = params.aggregate(&self.items, Some(&idx(b.pos)?), 1)?;
        let (q, _) = params.aggregate(&self.items, Some(&idx(b.neg)?), 1)?;
        let emb_reg = ((sq_norm(&u)? + sq_norm(&p)?)? + sq_norm(&q)?)?;
        let trans_reg = (sq_norm(params.trans_w.as_tensor())? + sq_norm(params.trans_b.as_tensor())?)?;
        Ok(((bpr(&u, &p, &q)? + (emb_reg * (cfg.reg / (2.0 * len as f64)))?)? + (trans_reg * (TRANSFER_REG / 2.0))?)?)
    }

    fn validate(&mut self) -> Result<Validation<()>> {
        let (emb, w) = self.params.embed_all(&self.users, &self.items)?;
        let eval_cfg = EvalConfig { ks: vec![20], ..EvalConfig::default() };
        let r = evaluate_ranking(&emb.users, &emb.items, emb.dim, self.graph.user_items(), self.valid, &eval_cfg)?;
        self.validated = Some((emb, w));
        Ok(Validation { score: r.metrics.require(MetricKey::RECALL_20)?, eligible: true, metrics: None, detail: () })
    }

    fn snapshot(&mut self) -> Result<Self::State> {
        match self.validated.take() {
            Some(v) => Ok(v),
            None => self.params.embed_all(&self.users, &self.items),
        }
    }

    fn restore(&mut self, state: Self::State) -> Result<()> {
        self.kept = Some(state);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Interactions;
    use crate::eval::evaluate_ranking;

    /// Users and items on a few taste clusters: a user likes the items of its cluster.
    fn world(n: usize, d: usize, seed: u64) -> (Embeddings, Graph, Csr) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let clusters = 4;
        let mut centre = vec![0f32; clusters * d];
        for c in 0..clusters {
            centre[c * d + c % d] = 3.0;
        }
        let node = |rng: &mut ChaCha8Rng, c: usize| -> Vec<f32> {
            (0..d).map(|j| centre[c * d + j] + rng.random_range(-0.3f32..0.3)).collect()
        };
        let (mut users, mut items) = (vec![], vec![]);
        for u in 0..n {
            users.extend(node(&mut rng, u % clusters));
        }
        for i in 0..n {
            items.extend(node(&mut rng, i % clusters));
        }
        let (mut tu, mut ti, mut vu, mut vi) = (vec![], vec![], vec![], vec![]);
        for u in 0..n as u32 {
            for i in (0..n as u32).filter(|i| i % clusters as u32 == u % clusters as u32) {
                if rng.random_bool(0.3) {
                    vu.push(u);
                    vi.push(i);
                } else if rng.random_bool(0.5) {
                    tu.push(u);
                    ti.push(i);
                }
            }
        }
        let graph = Graph::from_interactions(n, n, &Interactions::from_pairs(tu.into_iter().zip(ti).collect()).0);
        let valid = Graph::from_interactions(n, n, &Interactions::from_pairs(vu.into_iter().zip(vi).collect()).0);
        (Embeddings { dim: d, users, items }, graph, valid.user_items().clone())
    }

    fn noise(n: usize, d: usize, seed: u64) -> Embeddings {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut v = |len| (0..len).map(|_| rng.random_range(-3f32..3.0)).collect::<Vec<f32>>();
        Embeddings { dim: d, users: v(n * d), items: v(n * d) }
    }

    fn recall(e: &Embeddings, g: &Graph, valid: &Csr) -> f64 {
        let c = EvalConfig { ks: vec![20], ..EvalConfig::default() };
        evaluate_ranking(&e.users, &e.items, e.dim, g.user_items(), valid, &c).unwrap().get("recall", 20).unwrap()
    }

    #[test]
    fn attention_learns_to_trust_the_informative_shard_and_beats_the_mean() {
        let (n, d) = (120, 8);
        let (good, graph, valid) = world(n, d, 3);
        let shards = vec![noise(n, d, 11), good.clone(), noise(n, d, 12)];
        let mean = Embeddings {
            dim: d,
            users: (0..n * d).map(|j| shards.iter().map(|s| s.users[j]).sum::<f32>() / 3.0).collect(),
            items: (0..n * d).map(|j| shards.iter().map(|s| s.items[j]).sum::<f32>() / 3.0).collect(),
        };
        let cfg = AttentionConfig { epochs: 15, lr: 0.01, batch_size: 256, reg: 1e-4, seed: 5 };
        let (agg, rep) = train_attention(&shards, &graph, &valid, &cfg).unwrap();
        assert_eq!(rep.losses.len(), 15);
        assert!(rep.losses.last().unwrap() < &rep.losses[0], "{:?}", rep.losses);
        let w = &rep.user_weights;
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{w:?}");
        assert!(w[1] > w[0] && w[1] > w[2], "attention should favour the informative shard: {w:?}");
        let (r_agg, r_mean, r_good) =
            (recall(&agg, &graph, &valid), recall(&mean, &graph, &valid), recall(&good, &graph, &valid));
        assert!(r_agg > r_mean + 0.05, "attention {r_agg} vs mean {r_mean} (informative shard alone {r_good})");
        // Deterministic in the seed.
        let (again, rep2) = train_attention(&shards, &graph, &valid, &cfg).unwrap();
        assert_eq!(again, agg);
        assert_eq!(
            (rep2.losses, rep2.valid_recall, rep2.user_weights),
            (rep.losses, rep.valid_recall, rep.user_weights)
        );
    }
}
