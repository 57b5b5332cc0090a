//! The training objective of each backbone (docs/method.md §3): BPR, the reference's regulariser, and the
//! contrastive views of SGL and SimGCL.

use candle_core::{Device, Tensor};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::loss::{bpr, info_nce, sq_norm};
use super::{Backbone, Combine, ModelKind, combine};
use crate::error::Result;
use crate::tensor::{SpMat, spmm};

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

/// The graph views of SGL-ED for one epoch: two edge-dropout subgraphs, each renormalised.
#[derive(Clone, Debug)]
pub struct SglViews {
    /// First view's adjacency.
    pub a: SpMat,
    /// Second view's adjacency.
    pub b: SpMat,
}

/// Everything a loss evaluation needs besides the model.
pub struct LossInput<'a> {
    /// The adjacency the model propagates over (the remaining graph after unlearning).
    pub adj: &'a SpMat,
    /// The base embeddings to start from (the model's own, or a revised `Ẽ⁰`).
    pub e0: &'a Tensor,
    /// The batch.
    pub batch: &'a Batch,
    /// SGL's views for this epoch (required for SGL when `ssl_reg > 0`).
    pub sgl_views: Option<&'a SglViews>,
    /// Randomness of the augmentations (SimGCL noise).
    pub rng: &'a mut ChaCha8Rng,
    /// Whether the reference's regulariser is computed on `e0` (false inside unlearning, where the
    /// reference's LightGCN regulariser is a constant of the frozen backbone).
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
        sgl_views: Option<&SglViews>,
        rng: &mut ChaCha8Rng,
    ) -> Result<LossParts> {
        let e0 = self.base().as_tensor().clone();
        self.loss(LossInput { adj, e0: &e0, batch, sgl_views, rng, with_reg: true })
    }

    /// The training loss on one batch (docs/method.md §3.1–3.4).
    ///
    /// # Errors
    /// Tensor errors; SGL without views when its contrastive weight is positive.
    pub fn loss(&self, input: LossInput<'_>) -> Result<LossParts> {
        let cfg = &self.config;
        let nu = self.n_users() as u32;
        let b = input.batch;
        let layers = self.layers(input.adj, input.e0)?;
        let fin = if cfg.kind.is_graph() { combine(&layers, cfg.combine())? } else { input.e0.clone() };
        let rows = gather_rows(&fin, &[(&b.users, 0), (&b.pos, nu), (&b.neg, nu)])?;
        let (fu, fp, fnn) = (&rows[0], &rows[1], &rows[2]);
        let bpr_t = bpr(fu, fp, fnn)?;
        let zero = Tensor::new(0f32, &Device::Cpu)?;
        let reg_t = if !input.with_reg || cfg.reg == 0.0 {
            zero.clone()
        } else {
            match cfg.kind {
                ModelKind::Pop | ModelKind::Mf | ModelKind::LightGcn => sq_norm(input.e0)?,
                ModelKind::SimGcl => {
                    let bsz = b.len() as f64;
                    ((sq_norm(fu)?.sqrt()? / bsz)? + (sq_norm(fp)?.sqrt()? / bsz)?)?
                }
                ModelKind::Sgl => {
                    let r0 = gather_rows(input.e0, &[(&b.users, 0), (&b.pos, nu), (&b.neg, nu)])?;
                    ((sq_norm(&r0[0])? + sq_norm(&r0[1])?)? + sq_norm(&r0[2])?)?
                }
            }
        };
        let ssl = match cfg.kind {
            ModelKind::SimGcl if cfg.ssl_reg > 0.0 => {
                let v1 = self.noisy_view(input.adj, input.e0, input.rng)?;
                let v2 = self.noisy_view(input.adj, input.e0, input.rng)?;
                Some(self.view_contrast(&v1, &v2, b)?)
            }
            ModelKind::Sgl if cfg.ssl_reg > 0.0 => {
                let views = input.sgl_views.ok_or_else(|| {
                    crate::Error::config("model.ssl_reg", "SGL needs edge-dropout views when ssl_reg > 0")
                })?;
                let v1 = combine(&self.layers(&views.a, input.e0)?, Combine::Mean)?;
                let v2 = combine(&self.layers(&views.b, input.e0)?, Combine::Mean)?;
                Some(self.view_contrast(&v1, &v2, b)?)
            }
            _ => None,
        };
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
            batch_users: fu.clone(),
            batch_pos: fp.clone(),
        })
    }

    /// InfoNCE of two views on the batch's distinct users plus on its distinct positive items.
    fn view_contrast(&self, v1: &Tensor, v2: &Tensor, b: &Batch) -> Result<Tensor> {
        let nu = self.n_users() as u32;
        let t = self.config.ssl_temp;
        let iu = idx(&unique(&b.users), 0)?;
        let ii = idx(&unique(&b.pos), nu)?;
        let lu = info_nce(&v1.index_select(&iu, 0)?, &v2.index_select(&iu, 0)?, t)?;
        let li = info_nce(&v1.index_select(&ii, 0)?, &v2.index_select(&ii, 0)?, t)?;
        Ok((lu + li)?)
    }

    /// SimGCL's perturbed view: `E'ˡ = Â E'ˡ⁻¹ + sign(Â E'ˡ⁻¹) ⊙ ε·normalize(U[0,1)^{N×d})`, mean of
    /// layers `1..L`. The noise is a constant for the gradient (as `sign` has zero derivative).
    fn noisy_view(&self, adj: &SpMat, e0: &Tensor, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        let mut cur = e0.clone();
        let mut acc: Option<Tensor> = None;
        for _ in 0..self.config.layers {
            let y = spmm(adj, &cur)?;
            let noise = sign_noise(&y, self.config.eps as f32, rng.next_u64())?;
            cur = (y + noise)?;
            acc = Some(match acc {
                None => cur.clone(),
                Some(a) => (a + &cur)?,
            });
        }
        let acc = acc.expect("graph models have at least one layer");
        Ok((acc / self.config.layers as f64)?)
    }
}

/// `sign(y) ⊙ ε·normalize_rows(U[0,1))`, drawn in fixed 1024-row chunks, each from its own stream of
/// `seed`, so the result does not depend on the number of threads.
fn sign_noise(y: &Tensor, eps: f32, seed: u64) -> Result<Tensor> {
    let (n, d) = y.dims2()?;
    let yv = y.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; n * d];
    const ROWS: usize = 1024;
    out.par_chunks_mut(ROWS * d).zip(yv.par_chunks(ROWS * d)).enumerate().for_each(|(c, (o, yc))| {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        r.set_stream(c as u64);
        for (orow, yrow) in o.chunks_mut(d).zip(yc.chunks(d)) {
            let mut norm = 0f32;
            for x in orow.iter_mut() {
                *x = r.random::<f32>();
                norm += *x * *x;
            }
            let scale = eps / norm.sqrt().max(1e-12);
            for (x, &yy) in orow.iter_mut().zip(yrow) {
                let s = if yy > 0.0 {
                    1.0
                } else if yy < 0.0 {
                    -1.0
                } else {
                    0.0
                };
                *x *= scale * s;
            }
        }
    });
    Ok(Tensor::from_vec(out, (n, d), &Device::Cpu)?)
}

impl SglViews {
    /// Two SGL-ED views of `graph`: each keeps every user–item edge independently with probability `keep`
    /// and is renormalised (`Â` of the subgraph), as in the SGL paper; the reference instead rescales
    /// entries of `Â` by `1/keep` without renormalising (docs/method.md §13.16).
    pub fn sample(graph: &crate::graph::Graph, keep: f64, rng: &mut ChaCha8Rng) -> Result<Self> {
        let mut one = || -> Result<SpMat> {
            let all = graph.to_interactions();
            let kept: Vec<(u32, u32)> = all.iter().filter(|_| rng.random::<f64>() < keep).collect();
            let (edges, _) = crate::data::Interactions::from_pairs(kept);
            let g = crate::graph::Graph::from_interactions(graph.n_users(), graph.n_items(), &edges);
            Ok(SpMat::from_norm_adj(&crate::graph::NormAdj::from_graph(&g)))
        };
        let a = one()?;
        let b = one()?;
        Ok(Self { a, b })
    }
}
