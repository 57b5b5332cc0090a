//! The training objective of a backbone (docs/method.md §3): BPR plus its architecture's regulariser and
//! contrastive term ([`super::Architecture`]).

use candle_core::{Device, Tensor};
use rand_chacha::ChaCha8Rng;

use super::loss::{bpr, info_nce};
use super::{Backbone, BatchRows, Combine, EpochState};
use crate::error::Result;
use crate::tensor::{GradSink, SpMat, bpr_stacked, propagate_rows, sq_norm_rows};

/// A minibatch of BPR triples over internal ids (items are item ids, not node ids).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Users.
    pub users: Vec<u32>,
    /// Positive items.
    pub pos: Vec<u32>,
    /// Negative items.
    pub neg: Vec<u32>,
}

impl Batch {
    /// The number of triples.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The node ids of the batch's users, then of its positive items, then of its negative items (item `i` is
    /// node `n_users + i`): the rows a BPR loss reads.
    pub fn node_ids(&self, n_users: u32) -> Vec<u32> {
        let mut ids = Vec::with_capacity(3 * self.len());
        ids.extend_from_slice(&self.users);
        ids.extend(self.pos.iter().chain(&self.neg).map(|&i| i + n_users));
        ids
    }
}

/// Everything a loss evaluation needs besides the model.
pub struct LossInput<'a> {
    /// The adjacency the model propagates over (the remaining graph after unlearning).
    pub adj: &'a SpMat,
    /// The base embeddings to start from (the model's own, or a revised `Ẽ⁰`).
    pub e0: &'a Tensor,
    /// The batch.
    pub batch: &'a Batch,
    /// What the model drew for this epoch ([`super::Architecture::epoch_state`]; SGL needs its views when
    /// `ssl_reg > 0`).
    pub epoch: Option<&'a EpochState>,
    /// Randomness of the augmentations (SimGCL noise).
    pub rng: &'a mut ChaCha8Rng,
    /// How the model's regulariser enters the loss.
    pub reg: RegTerm,
    /// Where the fused ops put `e0`'s gradient instead of candle's store, when `e0` is a parameter whose
    /// optimizer reads this sink ([`crate::tensor::GradSink`]; training's own steps). `None`: the store.
    pub sink: Option<&'a GradSink>,
}

/// How a loss evaluation treats the model's regulariser `reg · Ω`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegTerm {
    /// Left out (inside unlearning for a whole-table regulariser, a constant of the frozen backbone:
    /// [`super::Architecture::regularises_whole_table`]).
    Off,
    /// In the loss and its gradient.
    Differentiated,
    /// In the loss value only: the optimiser adds its gradient `2 · reg · E⁰` itself
    /// (`crate::train::AdamConfig::weight_decay`), which saves the backward two passes over the table
    /// (the gradient and its sum with the propagation's). Only for a whole-table regulariser.
    ValueOnly,
}

/// The terms of a loss evaluation. `total = bpr_weight·bpr + reg·reg_term + ssl_reg·ssl`.
pub struct LossParts {
    /// The scalar to minimise.
    pub total: Tensor,
    /// Unweighted BPR.
    pub bpr: Tensor,
    /// Unweighted regulariser (zero when not computed).
    pub reg: Tensor,
    /// Unweighted contrastive term, when the model has one.
    pub ssl: Option<Tensor>,
    /// Rows of the final (main, un-augmented) embeddings for the batch's users, `(B, dim)`.
    pub batch_users: Tensor,
    /// Rows of the final embeddings for the batch's positive items, `(B, dim)`.
    pub batch_pos: Tensor,
    /// Rows of the final embeddings for the extra node ids given to [`Backbone::loss_with`], in their order,
    /// `(extra.len(), dim)`.
    pub extra: Tensor,
}

/// Rows of `x` for several id lists at once, each shifted by its offset: one gather and cheap narrows. Every
/// `index_select` of a full-size tensor costs a full-size gradient copy in the backward, so one is better
/// than several.
pub fn gather_rows(x: &Tensor, groups: &[(&[u32], u32)]) -> Result<Vec<Tensor>> {
    let n: usize = groups.iter().map(|(v, _)| v.len()).sum();
    let mut ids = Vec::with_capacity(n);
    for (v, off) in groups {
        ids.extend(v.iter().map(|&x| x + off));
    }
    let all = x.index_select(&Tensor::from_vec(ids, n, &Device::Cpu)?, 0)?;
    let mut start = 0;
    let mut out = Vec::with_capacity(groups.len());
    for (v, _) in groups {
        out.push(all.narrow(0, start, v.len())?);
        start += v.len();
    }
    Ok(out)
}

fn unique(v: &[u32]) -> Vec<u32> {
    let mut u = v.to_vec();
    u.sort_unstable();
    u.dedup();
    u
}

impl Backbone {
    /// The loss training minimises on `batch`, of the model's own base embeddings over `adj`: [`Backbone::loss`]
    /// with the regulariser as [`Backbone::fit_reg_term`] says (a whole-table one in value only, its gradient
    /// added by the optimiser of `crate::train::fit_adam`). With a `sink`, the base table's gradient goes there
    /// ([`LossInput::sink`]).
    ///
    /// # Errors
    /// As [`Backbone::loss`].
    pub fn train_loss(
        &self,
        adj: &SpMat,
        batch: &Batch,
        epoch: Option<&EpochState>,
        rng: &mut ChaCha8Rng,
        sink: Option<&GradSink>,
    ) -> Result<LossParts> {
        let e0 = self.base().as_tensor().clone();
        self.loss(LossInput { adj, e0: &e0, batch, epoch, rng, reg: self.fit_reg_term(), sink })
    }

    /// How training treats the regulariser: a whole-table one is [`RegTerm::ValueOnly`], its gradient added
    /// by Adam (`crate::train::fit_adam`); any other is differentiated.
    pub fn fit_reg_term(&self) -> RegTerm {
        if self.config.reg > 0.0 && self.config.regularises_whole_table() {
            RegTerm::ValueOnly
        } else {
            RegTerm::Differentiated
        }
    }

    /// The training loss on one batch (docs/method.md §3.1–3.4).
    ///
    /// # Errors
    /// Tensor errors; SGL without views when its contrastive weight is positive.
    pub fn loss(&self, input: LossInput<'_>) -> Result<LossParts> {
        self.loss_with(input, &[])
    }

    /// [`Backbone::loss`], also returning the final embeddings' rows of the node ids `extra`
    /// ([`LossParts::extra`]) from the same propagation, for terms of their own (unlearning's).
    ///
    /// Only the rows a loss reads are propagated ([`Backbone::final_rows`]): the final table is never built.
    ///
    /// # Errors
    /// As [`Backbone::loss`]; a node id out of range.
    pub fn loss_with(&self, mut input: LossInput<'_>, extra: &[u32]) -> Result<LossParts> {
        let cfg = &self.config;
        let arch = self.architecture();
        let nu = self.n_users() as u32;
        let b = input.batch;
        let mut ids = b.node_ids(nu);
        ids.extend_from_slice(extra);
        let all = self.final_rows_into(input.adj, input.e0, &ids, input.sink)?;
        let bl = b.len();
        let rows =
            BatchRows { users: all.narrow(0, 0, bl)?, pos: all.narrow(0, bl, bl)?, neg: all.narrow(0, 2 * bl, bl)? };
        let extra = all.narrow(0, 3 * bl, extra.len())?;
        // One op over the stacked rows: the composition's narrows cost a padded copy of `all`'s gradient each.
        let bpr_t = if bl > 0 { bpr_stacked(&all, bl)? } else { bpr(&rows.users, &rows.pos, &rows.neg)? };
        let reg_t = match input.reg {
            RegTerm::Off => Tensor::new(0f32, &Device::Cpu)?,
            _ if cfg.reg == 0.0 => Tensor::new(0f32, &Device::Cpu)?,
            RegTerm::Differentiated => arch.regulariser(self, &input, &rows)?,
            RegTerm::ValueOnly => {
                if !cfg.regularises_whole_table() {
                    return Err(crate::error::Error::config(
                        "reg",
                        "only a whole-table regulariser can leave its gradient to the optimiser",
                    ));
                }
                arch.regulariser(self, &input, &rows)?.detach()
            }
        };
        let ssl = if cfg.ssl_reg > 0.0 { arch.contrastive(self, &mut input)? } else { None };
        let mut total = ((&bpr_t * cfg.bpr_weight)? + (&reg_t * cfg.reg)?)?;
        if let Some(s) = &ssl {
            total = (total + (s * cfg.ssl_reg)?)?;
        }
        Ok(LossParts { total, bpr: bpr_t, reg: reg_t, ssl, batch_users: rows.users, batch_pos: rows.pos, extra })
    }

    /// `Σ_b ‖E⁰_{u_b}‖² + ‖E⁰_{i_b}‖² + ‖E⁰_{j_b}‖²`: the squared norm of the batch's base rows in `e0`
    /// (SGL's regulariser, and the batch-scoped one's before its `½ / B`).
    pub(super) fn batch_base_sq_norm(&self, e0: &Tensor, b: &Batch, sink: Option<&GradSink>) -> Result<Tensor> {
        sq_norm_rows(e0, &b.node_ids(self.n_users() as u32), sink)
    }

    /// Rows `ids` (node ids, duplicates allowed) of the final embeddings from `E⁰ = e0` over `adj`
    /// (evaluation mode), `(ids.len(), dim)`, differentiable with respect to `e0`: one
    /// [`crate::tensor::propagate_rows`] for a graph model, a gather otherwise.
    ///
    /// # Errors
    /// A node id out of range; tensor errors.
    pub fn final_rows(&self, adj: &SpMat, e0: &Tensor, ids: &[u32]) -> Result<Tensor> {
        self.final_rows_into(adj, e0, ids, None)
    }

    /// [`Backbone::final_rows`] with `e0`'s gradient going to `sink` when given ([`LossInput::sink`]).
    pub(super) fn final_rows_into(
        &self,
        adj: &SpMat,
        e0: &Tensor,
        ids: &[u32],
        sink: Option<&GradSink>,
    ) -> Result<Tensor> {
        if !self.architecture().propagates() {
            let n = e0.dims()[0];
            if let Some(&r) = ids.iter().find(|&&r| r as usize >= n) {
                return Err(crate::error::Error::Shape {
                    op: "final_rows",
                    expected: format!("node ids below {n}"),
                    got: format!("node {r}"),
                });
            }
            return Ok(e0.index_select(&Tensor::from_slice(ids, ids.len(), &Device::Cpu)?, 0)?);
        }
        let (first, scale) = combine_weights(self.config.combine(), self.config.layers);
        propagate_rows(adj, e0, self.config.layers, first, scale, ids, None, sink)
    }

    /// The node ids a contrastive term reads: the batch's distinct users, then its distinct positive items
    /// (as nodes), and how many users lead.
    pub(super) fn contrast_ids(&self, b: &Batch) -> (Vec<u32>, usize) {
        let nu = self.n_users() as u32;
        let mut ids = unique(&b.users);
        let n_users = ids.len();
        ids.extend(unique(&b.pos).into_iter().map(|i| i + nu));
        (ids, n_users)
    }

    /// InfoNCE of two views' rows ([`Backbone::contrast_ids`]: `n_users` distinct users, then distinct items):
    /// over the users plus over the items (SGL's and SimGCL's contrastive term).
    pub(super) fn view_contrast(&self, v1: &Tensor, v2: &Tensor, n_users: usize) -> Result<Tensor> {
        let t = self.config.ssl_temp;
        let n_items = v1.dims()[0] - n_users;
        let lu = info_nce(&v1.narrow(0, 0, n_users)?, &v2.narrow(0, 0, n_users)?, t)?;
        let li = info_nce(&v1.narrow(0, n_users, n_items)?, &v2.narrow(0, n_users, n_items)?, t)?;
        Ok((lu + li)?)
    }
}

/// `(first layer, scale)` of a layer combination over `layers` propagated layers, for
/// [`crate::tensor::propagate_rows`]: the sum `scale · Σ_{l=first..L} Eˡ` equals [`super::combine`]'s.
/// The scale is `f32(1/n)` for a mean of `n` layers, the factor candle multiplies by for `x / n`.
pub fn combine_weights(how: Combine, layers: usize) -> (usize, f32) {
    let (first, mean) = match how {
        Combine::Sum => (0, false),
        Combine::Mean => (0, true),
        Combine::MeanSkipFirst => (1, true),
    };
    let first = first.min(layers);
    let used = layers + 1 - first;
    (first, if mean && used > 1 { (1.0 / used as f64) as f32 } else { 1.0 })
}
