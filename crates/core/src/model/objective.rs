//! The training objective of a backbone (docs/method.md §3): BPR plus its architecture's regulariser and
//! contrastive term ([`super::Architecture`]).

use candle_core::{Device, Tensor};
use rand_chacha::ChaCha8Rng;

use super::loss::{bpr, info_nce};
use super::{Backbone, BatchRows, EpochState, combine};
use crate::error::Result;
use crate::tensor::SpMat;

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
    /// Whether the model's regulariser is computed (false inside unlearning for a whole-table regulariser,
    /// a constant of the frozen backbone: [`super::Architecture::regularises_whole_table`]).
    pub with_reg: bool,
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
    /// The final (main, un-augmented) embeddings, shape `(n_users + n_items, dim)`.
    pub final_emb: Tensor,
    /// Rows of `final_emb` for the batch's users, `(B, dim)` (reuse them rather than gathering again: every
    /// gather adds a full-size gradient pass in the backward).
    pub batch_users: Tensor,
    /// Rows of `final_emb` for the batch's positive items, `(B, dim)`.
    pub batch_pos: Tensor,
}

fn idx(v: &[u32], offset: u32) -> Result<Tensor> {
    let data: Vec<u32> = v.iter().map(|&x| x + offset).collect();
    Ok(Tensor::from_vec(data, v.len(), &Device::Cpu)?)
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
    /// The training loss on `batch` of the model's own base embeddings over `adj`, regulariser included:
    /// [`Backbone::loss`] as training and the gradient baselines minimise it.
    ///
    /// # Errors
    /// As [`Backbone::loss`].
    pub fn train_loss(
        &self,
        adj: &SpMat,
        batch: &Batch,
        epoch: Option<&EpochState>,
        rng: &mut ChaCha8Rng,
    ) -> Result<LossParts> {
        let e0 = self.base().as_tensor().clone();
        self.loss(LossInput { adj, e0: &e0, batch, epoch, rng, with_reg: true })
    }

    /// The training loss on one batch (docs/method.md §3.1–3.4).
    ///
    /// # Errors
    /// Tensor errors; SGL without views when its contrastive weight is positive.
    pub fn loss(&self, mut input: LossInput<'_>) -> Result<LossParts> {
        let cfg = &self.config;
        let arch = self.architecture();
        let nu = self.n_users() as u32;
        let b = input.batch;
        let layers = self.layers(input.adj, input.e0)?;
        let fin = if arch.propagates() { combine(&layers, cfg.combine())? } else { input.e0.clone() };
        let [users, pos, neg] =
            <[Tensor; 3]>::try_from(gather_rows(&fin, &[(&b.users, 0), (&b.pos, nu), (&b.neg, nu)])?)
                .expect("three groups");
        let rows = BatchRows { users, pos, neg };
        let bpr_t = bpr(&rows.users, &rows.pos, &rows.neg)?;
        let reg_t = if !input.with_reg || cfg.reg == 0.0 {
            Tensor::new(0f32, &Device::Cpu)?
        } else {
            arch.regulariser(self, &input, &rows)?
        };
        let ssl = if cfg.ssl_reg > 0.0 { arch.contrastive(self, &mut input)? } else { None };
        let mut total = ((&bpr_t * cfg.bpr_weight)? + (&reg_t * cfg.reg)?)?;
        if let Some(s) = &ssl {
            total = (total + (s * cfg.ssl_reg)?)?;
        }
        Ok(LossParts {
            total,
            bpr: bpr_t,
            reg: reg_t,
            ssl,
            final_emb: fin,
            batch_users: rows.users,
            batch_pos: rows.pos,
        })
    }

    /// InfoNCE of two views on the batch's distinct users plus on its distinct positive items (SGL's and
    /// SimGCL's contrastive term).
    pub(super) fn view_contrast(&self, v1: &Tensor, v2: &Tensor, b: &Batch) -> Result<Tensor> {
        let nu = self.n_users() as u32;
        let t = self.config.ssl_temp;
        let iu = idx(&unique(&b.users), 0)?;
        let ii = idx(&unique(&b.pos), nu)?;
        let lu = info_nce(&v1.index_select(&iu, 0)?, &v2.index_select(&iu, 0)?, t)?;
        let li = info_nce(&v1.index_select(&ii, 0)?, &v2.index_select(&ii, 0)?, t)?;
        Ok((lu + li)?)
    }
}
