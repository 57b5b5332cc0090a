//! Influence-function unlearning: one damped Newton step on the base embeddings near the request.
//!
//! In the style of SCIF (Li et al., *Selective and Collaborative Influence Function for Efficient
//! Recommendation Unlearning*, 2023) and IFRU (Zhang et al., *Recommendation Unlearning via Influence
//! Function*, 2023), only the parameters the request can reach are updated: the rows of `E⁰` of the
//! request's users and items and of their `hops`-hop neighbourhood on the training graph (`θ`; every other
//! row stays fixed). The objective is the BPR loss summed over the training edges with one fixed, seeded
//! negative per edge, `L(θ) = Σ_(u,i) softplus(s_uj − s_ui)` on the final embeddings (SGL's and SimGCL's
//! contrastive terms are left out), plus an L2 term `λ/2 ‖θ‖²` that doubles as the damping. Deleting the
//! request turns `L_full` (original graph, all edges) into `L_rem` (remaining graph, remaining edges); the
//! Newton step on the new objective from the trained `θ*`, taking the old one as stationary, is
//!
//! `θ_new = θ* − (H_rem + λI)⁻¹ (∇L_rem(θ*) − ∇L_full(θ*))`
//!
//! which for MF is `θ* + (H_rem + λI)⁻¹ ∇L_removed(θ*)`, and for graph models also carries the change of
//! the propagation. `H_rem v` is a central finite difference of candle gradients (candle has no double
//! backward). Two products are offered ([`Hessian`]): the exact one, a central finite difference of candle
//! gradients `(∇L_rem(θ* + hv) − ∇L_rem(θ* − hv)) / 2h`, and the default Gauss–Newton one,
//! `Jᵀ diag(φ''(m)) J v` with `m` the per-edge margins `s_uj − s_ui`, `φ = softplus` and `Jv` a central
//! difference of the margins (exact: they are bilinear in the embeddings). BPR on dot products is not
//! convex, so the exact Hessian is indefinite and its Newton step can run off along negative curvature;
//! Gauss–Newton is positive semi-definite and equals the Hessian wherever the margins are linear in `θ`
//! (e.g. only user rows updated in MF). The system is solved by conjugate gradients, which stop at
//! `cg_tol` relative residual, after `cg_iters` products, or on a direction of non-positive curvature. The
//! true relative residual `‖(H + λI)x − g‖ / ‖g‖` is reported as `solver_residual`.
//!
//! Guarantee: for a quadratic objective in `θ` (e.g. ridge regression on fixed items, with either Hessian)
//! the step lands exactly on the leave-out optimum (see the tests); for BPR it is the usual second-order approximation of
//! retraining the affected rows, and nothing is promised about rows outside the neighbourhood.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{D, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Prepared, deep_copy, negatives, require_embeddings};
use crate::checkpoint::Checkpoint;
use crate::data::Interactions;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::model::Backbone;
use crate::model::loss::softplus;
use crate::tensor::SpMat;
use crate::train::Observer;
use crate::unlearn::method::{ForgetMethod, MethodOptions, Plain};
use crate::unlearn::{MethodId, UnlearnReport};

/// This method in reports and provenance (its [`METHODS`](crate::unlearn::method::METHODS) entry).
pub const METHOD: MethodId = MethodId::of("influence");

/// Hyper-parameters of [`influence`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InfluenceConfig {
    /// Neighbourhood of the request whose rows are updated: 0 = its users and items, 1 = also the items of
    /// those users and the users of those items, and so on.
    pub hops: usize,
    /// `λ`: L2 weight of the objective and damping of its Hessian.
    pub damping: f64,
    /// Which Hessian-vector product.
    pub hessian: Hessian,
    /// Hessian-vector products at most in conjugate gradients.
    pub cg_iters: usize,
    /// Relative residual at which conjugate gradients stop.
    pub cg_tol: f64,
    /// Finite-difference step, relative to `1 + rms(θ)`.
    pub fd_eps: f64,
    /// Seed of the fixed negatives.
    pub seed: u64,
}

impl Default for InfluenceConfig {
    fn default() -> Self {
        Self {
            hops: 1,
            damping: 1.0,
            hessian: Hessian::GaussNewton,
            cg_iters: 100,
            cg_tol: 1e-4,
            fd_eps: 1e-2,
            seed: 1234,
        }
    }
}

impl InfluenceConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if !(self.damping.is_finite() && self.damping >= 0.0) {
            return Err(Error::config("influence.damping", "must be a finite non-negative number"));
        }
        if self.cg_iters == 0 {
            return Err(Error::config("influence.cg_iters", "must be at least 1"));
        }
        if !(self.cg_tol.is_finite() && self.cg_tol > 0.0) {
            return Err(Error::config("influence.cg_tol", "must be positive"));
        }
        if !(self.fd_eps.is_finite() && self.fd_eps > 0.0) {
            return Err(Error::config("influence.fd_eps", "must be positive"));
        }
        Ok(())
    }
}

/// The curvature used by the Newton step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hessian {
    /// The Hessian of the remaining loss, by central differences of gradients (indefinite for BPR).
    Exact,
    /// The Gauss–Newton matrix `Jᵀ diag(φ'') J` (positive semi-definite).
    GaussNewton,
}

/// How conjugate gradients ended.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CgReport {
    /// Hessian-vector products used by the iterations.
    pub iters: usize,
    /// True relative residual `‖(H + λI)x − g‖ / ‖g‖` of the returned solution (0 when `g = 0`).
    pub residual: f64,
    /// Stopped on a direction of non-positive curvature.
    pub negative_curvature: bool,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A gradient oracle: `θ` (row-major, f32) to `∇L(θ)` (f64).
pub(crate) type Gradient<'a> = dyn FnMut(&[f32]) -> Result<Vec<f64>> + 'a;

/// `H v` at `theta` by a central difference of `grad`, with step `h = eps (1 + rms θ) / rms v`.
pub(crate) fn fd_hvp(grad: &mut Gradient<'_>, theta: &[f32], v: &[f64], eps: f64) -> Result<Vec<f64>> {
    let n = theta.len().max(1) as f64;
    let rms_v = (dot(v, v) / n).sqrt();
    if rms_v == 0.0 {
        return Ok(vec![0.0; v.len()]);
    }
    let rms_t = (theta.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>() / n).sqrt();
    let h = eps * (1.0 + rms_t) / rms_v;
    let shift = |s: f64| -> Vec<f32> { theta.iter().zip(v).map(|(&t, &d)| (t as f64 + s * h * d) as f32).collect() };
    let plus = grad(&shift(1.0))?;
    let minus = grad(&shift(-1.0))?;
    Ok(plus.iter().zip(&minus).map(|(a, b)| (a - b) / (2.0 * h)).collect())
}

/// Solves `(H + λI) x = g` by conjugate gradients, `H` given by `hvp`.
pub(crate) fn conjugate_gradient(
    g: &[f64],
    hvp: &mut dyn FnMut(&[f64]) -> Result<Vec<f64>>,
    damping: f64,
    max_iters: usize,
    tol: f64,
) -> Result<(Vec<f64>, CgReport)> {
    let gnorm = dot(g, g).sqrt();
    let mut x = vec![0.0; g.len()];
    let mut report = CgReport { iters: 0, residual: 0.0, negative_curvature: false };
    if gnorm == 0.0 {
        return Ok((x, report));
    }
    let apply = |hvp: &mut dyn FnMut(&[f64]) -> Result<Vec<f64>>, v: &[f64]| -> Result<Vec<f64>> {
        Ok(hvp(v)?.iter().zip(v).map(|(h, v)| h + damping * v).collect())
    };
    let mut r = g.to_vec();
    let mut p = r.clone();
    let mut rs = dot(&r, &r);
    while report.iters < max_iters && rs.sqrt() > tol * gnorm {
        let ap = apply(hvp, &p)?;
        report.iters += 1;
        let pap = dot(&p, &ap);
        if pap.is_nan() || pap <= 0.0 {
            report.negative_curvature = true;
            break;
        }
        let alpha = rs / pap;
        for k in 0..x.len() {
            x[k] += alpha * p[k];
            r[k] -= alpha * ap[k];
        }
        let rs_new = dot(&r, &r);
        let beta = rs_new / rs;
        rs = rs_new;
        for k in 0..p.len() {
            p[k] = r[k] + beta * p[k];
        }
    }
    // The recurrence's residual drifts from the true one; measure it.
    let ax = apply(hvp, &x)?;
    let res: Vec<f64> = ax.iter().zip(g).map(|(a, b)| a - b).collect();
    report.residual = dot(&res, &res).sqrt() / gnorm;
    Ok((x, report))
}

/// One Newton step from `theta` for the objective changing from `full` to `rem`:
/// `θ − (H_rem + λI)⁻¹ (∇rem(θ) − ∇full(θ))`.
pub(crate) fn newton_step(
    theta: &[f32],
    full: &RowsObjective<'_>,
    rem: &RowsObjective<'_>,
    cfg: &InfluenceConfig,
) -> Result<(Vec<f32>, CgReport)> {
    let gf = full.gradient(theta)?;
    let gr = rem.gradient(theta)?;
    let g: Vec<f64> = gr.iter().zip(&gf).map(|(a, b)| a - b).collect();
    let mut hvp = |v: &[f64]| match cfg.hessian {
        Hessian::Exact => fd_hvp(&mut |t: &[f32]| rem.gradient(t), theta, v, cfg.fd_eps),
        Hessian::GaussNewton => rem.gauss_newton(theta, v, cfg.fd_eps),
    };
    let (x, report) = conjugate_gradient(&g, &mut hvp, cfg.damping, cfg.cg_iters, cfg.cg_tol)?;
    let out = theta.iter().zip(&x).map(|(&t, &d)| (t as f64 - d) as f32).collect();
    Ok((out, report))
}

/// Node ids (users, then `n_users + item`) within `hops` hops of `seeds` on `graph`, sorted.
fn neighbourhood(graph: &Graph, seeds: &[u32], hops: usize) -> Vec<u32> {
    let nu = graph.n_users() as u32;
    let mut seen = vec![false; graph.n_users() + graph.n_items()];
    let mut frontier: Vec<u32> = Vec::new();
    for &s in seeds {
        if !std::mem::replace(&mut seen[s as usize], true) {
            frontier.push(s);
        }
    }
    for _ in 0..hops {
        let mut next = Vec::new();
        for &x in &frontier {
            let neigh: Box<dyn Iterator<Item = u32>> = if x < nu {
                Box::new(graph.user_items().row(x as usize).iter().map(|&i| i + nu))
            } else {
                Box::new(graph.item_users().row((x - nu) as usize).iter().copied())
            };
            for y in neigh {
                if !std::mem::replace(&mut seen[y as usize], true) {
                    next.push(y);
                }
            }
        }
        frontier = next;
    }
    (0..seen.len() as u32).filter(|&x| seen[x as usize]).collect()
}

/// The per-edge loss `φ(m)` of a [`RowsObjective`].
pub(crate) enum PairLoss {
    /// BPR: `m = s_uj − s_ui`, `φ(m) = softplus(m)`.
    Bpr,
    /// Squared error of the positive's score: `m = s_ui`, `φ(m) = ½ (m − y)²` with one target per triple
    /// (the quadratic objective of the exactness test).
    #[cfg_attr(not(test), allow(dead_code))]
    Squared(Vec<f32>),
}

/// `Σ_e φ(m_e)` over fixed triples as a function of rows `rows` of `E⁰`, the other rows held at their
/// values in `base`, the final embeddings propagated over `adj`.
pub(crate) struct RowsObjective<'a> {
    model: &'a Backbone,
    adj: &'a SpMat,
    /// `E⁰` with the rows in `rows` zeroed, `(n, d)`.
    base: Tensor,
    rows: Tensor,
    n_rows: usize,
    /// Node ids of users, positives and negatives.
    users: Tensor,
    pos: Tensor,
    neg: Tensor,
    loss: PairLoss,
}

impl<'a> RowsObjective<'a> {
    /// The objective of `triples` (user, item, negative item) for the rows `rows` (node ids) of `base`.
    pub(crate) fn new(
        model: &'a Backbone,
        adj: &'a SpMat,
        base: &Tensor,
        rows: &[u32],
        triples: &[(u32, u32, u32)],
        loss: PairLoss,
    ) -> Result<Self> {
        let nu = model.n_users() as u32;
        let dev = &Device::Cpu;
        let n = base.dim(0)?;
        let mut mask = vec![1f32; n];
        for &r in rows {
            mask[r as usize] = 0.0;
        }
        let mask = Tensor::from_vec(mask, (n, 1), dev)?;
        let col = |f: &dyn Fn(&(u32, u32, u32)) -> u32| -> Result<Tensor> {
            Ok(Tensor::from_vec(triples.iter().map(f).collect::<Vec<u32>>(), triples.len(), dev)?)
        };
        Ok(Self {
            model,
            adj,
            base: base.broadcast_mul(&mask)?,
            rows: Tensor::from_slice(rows, rows.len(), dev)?,
            n_rows: rows.len(),
            users: col(&|t| t.0)?,
            pos: col(&|t| t.1 + nu)?,
            neg: col(&|t| t.2 + nu)?,
            loss,
        })
    }

    fn is_empty(&self) -> bool {
        self.users.dims1().is_ok_and(|n| n == 0)
    }

    fn var(&self, theta: &[f32]) -> Result<Var> {
        Ok(Var::from_tensor(&Tensor::from_slice(theta, (self.n_rows, self.model.dim()), &Device::Cpu)?)?)
    }

    /// The margins `m_e`, shape `(E,)`.
    fn margins(&self, theta: &Tensor) -> Result<Tensor> {
        let e0 = self.base.index_add(&self.rows, theta, 0)?;
        let fin = self.model.forward(self.adj, &e0)?;
        let fu = fin.index_select(&self.users, 0)?;
        let sp = (&fu * fin.index_select(&self.pos, 0)?)?.sum(D::Minus1)?;
        Ok(match self.loss {
            PairLoss::Bpr => ((&fu * fin.index_select(&self.neg, 0)?)?.sum(D::Minus1)? - sp)?,
            PairLoss::Squared(_) => sp,
        })
    }

    fn grad_of(&self, scalar: &Tensor, var: &Var, len: usize) -> Result<Vec<f64>> {
        let grads = scalar.backward()?;
        match grads.get(var.as_tensor()) {
            Some(g) => Ok(g.flatten_all()?.to_vec1::<f32>()?.into_iter().map(f64::from).collect()),
            None => Ok(vec![0.0; len]),
        }
    }

    /// `∇_θ Σ_e φ(m_e)`.
    pub(crate) fn gradient(&self, theta: &[f32]) -> Result<Vec<f64>> {
        if self.is_empty() {
            return Ok(vec![0.0; theta.len()]);
        }
        let var = self.var(theta)?;
        let m = self.margins(var.as_tensor())?;
        let loss = match &self.loss {
            PairLoss::Bpr => softplus(&m)?.sum_all()?,
            PairLoss::Squared(y) => {
                let y = Tensor::from_slice(y, y.len(), &Device::Cpu)?;
                ((m - y)?.sqr()?.sum_all()? * 0.5)?
            }
        };
        self.grad_of(&loss, &var, theta.len())
    }

    /// The Gauss–Newton product `Jᵀ diag(φ''(m)) J v` at `theta`, with `Jv` a central difference of the
    /// margins of step `h = eps (1 + rms θ) / rms v`.
    pub(crate) fn gauss_newton(&self, theta: &[f32], v: &[f64], eps: f64) -> Result<Vec<f64>> {
        if self.is_empty() {
            return Ok(vec![0.0; theta.len()]);
        }
        let n = theta.len().max(1) as f64;
        let rms_v = (dot(v, v) / n).sqrt();
        if rms_v == 0.0 {
            return Ok(vec![0.0; v.len()]);
        }
        let rms_t = (theta.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>() / n).sqrt();
        let h = eps * (1.0 + rms_t) / rms_v;
        let at = |s: f64| -> Result<Vec<f32>> {
            let t: Vec<f32> = theta.iter().zip(v).map(|(&t, &d)| (t as f64 + s * h * d) as f32).collect();
            Ok(self.margins(&Tensor::from_vec(t, (self.n_rows, self.model.dim()), &Device::Cpu)?)?.to_vec1::<f32>()?)
        };
        let (plus, minus) = (at(1.0)?, at(-1.0)?);
        let var = self.var(theta)?;
        let m = self.margins(var.as_tensor())?;
        let mv = m.to_vec1::<f32>()?;
        let w: Vec<f32> = mv
            .iter()
            .zip(plus.iter().zip(&minus))
            .map(|(&m, (&p, &q))| {
                let jv = (p as f64 - q as f64) / (2.0 * h);
                let curv = match self.loss {
                    PairLoss::Bpr => {
                        let s = 1.0 / (1.0 + (-(m as f64)).exp());
                        s * (1.0 - s)
                    }
                    PairLoss::Squared(_) => 1.0,
                };
                (curv * jv) as f32
            })
            .collect();
        let w = Tensor::from_vec(w, mv.len(), &Device::Cpu)?;
        self.grad_of(&(m * w)?.sum_all()?, &var, theta.len())
    }
}

/// Applies `request` to `ckpt` with one influence-function Newton step (see the module docs) and returns
/// the result and its report (phases `graph`, `influence`, and `solver_residual`, the relative residual of the
/// linear solve, not a time).
///
/// # Errors
/// An invalid request or configuration, a most-popular model, or a non-finite update.
pub fn influence(
    ckpt: &Checkpoint,
    request: &Interactions,
    cfg: &InfluenceConfig,
    _obs: &mut dyn Observer,
) -> Result<(Checkpoint, UnlearnReport)> {
    cfg.validate()?;
    require_embeddings(ckpt, "the influence method")?;
    let t = Instant::now();
    let prep = Prepared::new(ckpt, request)?;
    let mut phases = HashMap::from([("graph".to_string(), t.elapsed().as_secs_f64())]);
    let t = Instant::now();
    let model = deep_copy(ckpt.model())?;
    let nu = model.n_users() as u32;
    let d = model.dim();
    // The rows to update, and the nodes whose final embeddings depend on them.
    let mut seeds: Vec<u32> = prep.learned.users().to_vec();
    seeds.extend(prep.learned.items().iter().map(|&i| i + nu));
    let rows = neighbourhood(&prep.graph, &seeds, cfg.hops);
    let reach = if model.kind().is_graph() { model.config.layers } else { 0 };
    let region = neighbourhood(&prep.graph, &rows, reach);
    let mut in_region = vec![false; model.n_users() + model.n_items()];
    for &x in &region {
        in_region[x as usize] = true;
    }
    // Fixed seeded negatives for every training edge that touches the region.
    let pairs: Vec<(u32, u32)> = prep.graph.to_interactions().iter().collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let neg = negatives(prep.graph.user_items(), &pairs, &mut rng);
    let touches = |&(u, i, j): &(u32, u32, u32)| {
        in_region[u as usize] || in_region[(i + nu) as usize] || in_region[(j + nu) as usize]
    };
    let full: Vec<(u32, u32, u32)> = pairs.iter().zip(&neg).map(|(&(u, i), &j)| (u, i, j)).filter(touches).collect();
    let rem: Vec<(u32, u32, u32)> = full.iter().copied().filter(|&(u, i, _)| !prep.learned.contains(u, i)).collect();
    let e0 = model.base().as_tensor();
    let obj_full = RowsObjective::new(&model, &prep.adj, e0, &rows, &full, PairLoss::Bpr)?;
    let obj_rem = RowsObjective::new(&model, &prep.adj_remaining, e0, &rows, &rem, PairLoss::Bpr)?;
    let idx = Tensor::from_slice(&rows, rows.len(), &Device::Cpu)?;
    let theta = e0.index_select(&idx, 0)?.flatten_all()?.to_vec1::<f32>()?;
    let (updated, cg) = newton_step(&theta, &obj_full, &obj_rem, cfg)?;
    if updated.iter().any(|x| !x.is_finite()) {
        return Err(Error::Diverged { epoch: 0, loss: f64::NAN });
    }
    tracing::info!(rows = rows.len(), edges = full.len(), iters = cg.iters, residual = cg.residual, "influence step");
    if cg.negative_curvature {
        tracing::warn!("conjugate gradients met non-positive curvature; consider a larger damping");
    }
    let mut base = model.base_vec()?;
    for (k, &r) in rows.iter().enumerate() {
        base[r as usize * d..(r as usize + 1) * d].copy_from_slice(&updated[k * d..(k + 1) * d]);
    }
    model.set_base(&base)?;
    phases.insert("influence".to_string(), t.elapsed().as_secs_f64());
    let mut report = prep.report(METHOD, ckpt.model(), &model, phases, vec![])?;
    report.solver_residual = Some(cg.residual);
    Ok((prep.finish(ckpt, model, METHOD)?, report))
}

/// [`influence`] with [`MethodOptions::influence`] as a [`ForgetMethod`] (`influence`).
pub(crate) fn build<'a>(o: &MethodOptions<'a>) -> Result<Box<dyn ForgetMethod + 'a>> {
    Ok(Box::new(Plain { name: METHOD.name(), cfg: o.influence.clone(), run: influence, epochs: |_, _| 0 }))
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::super::finetune::tests::{spread_request, trained};
    use super::*;
    use crate::graph::NormAdj;
    use crate::model::{ModelConfig, ModelKind};
    use crate::train::Silent;

    /// Solves the small dense system `a x = b` (Gaussian elimination with partial pivoting).
    fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
        let n = b.len();
        for c in 0..n {
            let p = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap();
            a.swap(c, p);
            b.swap(c, p);
            let pivot = a[c].clone();
            for r in c + 1..n {
                let f = a[r][c] / pivot[c];
                for (x, y) in a[r][c..].iter_mut().zip(&pivot[c..]) {
                    *x -= f * y;
                }
                b[r] -= f * b[c];
            }
        }
        let mut x = vec![0.0; n];
        for r in (0..n).rev() {
            x[r] = (b[r] - (r + 1..n).map(|k| a[r][k] * x[k]).sum::<f64>()) / a[r][r];
        }
        x
    }

    /// Ridge regression of each user on fixed item embeddings: `argmin_e Σ_i ½ (e·v_i − y_ui)² + λ/2 ‖e‖²`
    /// over the observations not in `skip`, for every user, row-major.
    fn ridge(items: &[f32], obs: &[(u32, u32, f32)], n_users: usize, lambda: f64, skip: &[(u32, u32)]) -> Vec<f64> {
        let d = 3;
        let mut out = vec![];
        for u in 0..n_users as u32 {
            let mut a = vec![vec![0.0; d]; d];
            let mut b = vec![0.0; d];
            for &(_, i, y) in obs.iter().filter(|o| o.0 == u && !skip.contains(&(o.0, o.1))) {
                let v = &items[i as usize * d..][..d];
                for r in 0..d {
                    for c in 0..d {
                        a[r][c] += v[r] as f64 * v[c] as f64;
                    }
                    b[r] += v[r] as f64 * y as f64;
                }
            }
            for (r, row) in a.iter_mut().enumerate() {
                row[r] += lambda;
            }
            out.extend(solve(a, b));
        }
        out
    }

    #[test]
    fn one_newton_step_is_the_leave_out_ridge_solution() {
        // Tiny MF (4 users, 6 items, d = 3) with a squared loss on the scores and only the user rows
        // updated: the objective is quadratic in θ, so one Newton step lands on the leave-out optimum.
        let (n_users, n_items, lambda) = (4usize, 6usize, 0.3);
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let items: Vec<f32> = (0..n_items * 3).map(|_| rng.random_range(-1.0..1.0)).collect();
        let obs: Vec<(u32, u32, f32)> = (0..n_users as u32)
            .flat_map(|u| (0..n_items as u32).filter(move |i| (u + i) % 3 != 0).map(move |i| (u, i, (i % 2) as f32)))
            .collect();
        let removed = [(0u32, 1u32), (0, 2), (2, 5)];
        let before = ridge(&items, &obs, n_users, lambda, &[]);
        let want = ridge(&items, &obs, n_users, lambda, &removed);
        let mut table: Vec<f32> = before.iter().map(|&x| x as f32).collect();
        table.extend(&items);
        let cfg = ModelConfig { kind: ModelKind::Mf, dim: 3, ..ModelConfig::default() };
        let model = Backbone::from_embeddings(cfg, n_users, n_items, table).unwrap();
        let adj = SpMat::from_norm_adj(&NormAdj::from_graph(&Graph::from_interactions(
            n_users,
            n_items,
            &Interactions::default(),
        )));
        let rows: Vec<u32> = (0..n_users as u32).collect();
        let kept: Vec<(u32, u32, f32)> = obs.iter().copied().filter(|o| !removed.contains(&(o.0, o.1))).collect();
        let objective = |obs: &[(u32, u32, f32)]| {
            let triples: Vec<_> = obs.iter().map(|&(u, i, _)| (u, i, i)).collect();
            let y = PairLoss::Squared(obs.iter().map(|o| o.2).collect());
            RowsObjective::new(&model, &adj, model.base().as_tensor(), &rows, &triples, y).unwrap()
        };
        let (full, rem) = (objective(&obs), objective(&kept));
        let theta: Vec<f32> = model.base_vec().unwrap()[..n_users * 3].to_vec();
        let moved = before.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(moved > 0.05, "the removal should matter: {moved}");
        for hessian in [Hessian::Exact, Hessian::GaussNewton] {
            let cfg = InfluenceConfig { damping: lambda, hessian, cg_tol: 1e-10, ..InfluenceConfig::default() };
            let (got, cg) = newton_step(&theta, &full, &rem, &cfg).unwrap();
            assert!(!cg.negative_curvature && cg.residual < 1e-4, "{hessian:?}: {cg:?}");
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((*g as f64 - w).abs() < 1e-4, "{hessian:?} user {} col {}: {g} vs {w}", k / 3, k % 3);
            }
            // User 3 lost nothing and keeps its embedding exactly.
            assert_eq!(&got[9..12], &theta[9..12]);
        }
    }

    #[test]
    fn conjugate_gradient_solves_a_spd_system() {
        let a = [[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]];
        let g = [1.0, -2.0, 0.5];
        let mut hvp = |v: &[f64]| Ok((0..3).map(|r| (0..3).map(|c| a[r][c] * v[c]).sum()).collect());
        let (x, rep) = conjugate_gradient(&g, &mut hvp, 0.5, 10, 1e-12).unwrap();
        let damped = (0..3).map(|r| (0..3).map(|c| a[r][c] + if r == c { 0.5 } else { 0.0 }).collect()).collect();
        let want = solve(damped, g.to_vec());
        assert!(rep.iters <= 3 && rep.residual < 1e-10, "{rep:?}");
        for (a, b) in x.iter().zip(want) {
            assert!((a - b).abs() < 1e-10);
        }
        // An indefinite matrix is detected.
        let mut neg = |v: &[f64]| Ok(v.iter().map(|x| -x).collect());
        let (_, rep) = conjugate_gradient(&g, &mut neg, 0.5, 10, 1e-12).unwrap();
        assert!(rep.negative_curvature);
    }

    #[test]
    fn neighbourhood_grows_by_hops() {
        let (e, _) = Interactions::from_pairs(vec![(0, 0), (1, 0), (1, 1), (2, 2)]);
        let g = Graph::from_interactions(3, 3, &e);
        assert_eq!(neighbourhood(&g, &[0], 0), vec![0]);
        assert_eq!(neighbourhood(&g, &[0], 1), vec![0, 3]);
        assert_eq!(neighbourhood(&g, &[0], 2), vec![0, 1, 3]);
        assert_eq!(neighbourhood(&g, &[0], 3), vec![0, 1, 3, 4]);
    }

    #[test]
    fn influence_step_lowers_removed_scores_and_touches_only_the_neighbourhood() {
        for kind in [ModelKind::Mf, ModelKind::LightGcn] {
            let (_, ckpt) = trained(kind, 40);
            let req = spread_request(&ckpt, 20);
            let cfg = InfluenceConfig { hops: 0, ..InfluenceConfig::default() };
            let (out, rep) = influence(&ckpt, &req, &cfg, &mut Silent).unwrap();
            assert!(req.iter().all(|(u, i)| !out.edges().contains(u, i)));
            let f = &rep.forgetting;
            eprintln!(
                "{kind}: removed {:.3} -> {:.3}, remaining {:.3} -> {:.3}, non-edges {:.3} -> {:.3}, recall@20 {:.4}, cg residual {:.2e}",
                f.removed.before,
                f.removed.after,
                f.remaining.before,
                f.remaining.after,
                f.non_edges.before,
                f.non_edges.after,
                rep.valid["recall@20"],
                rep.solver_residual.unwrap()
            );
            assert!(rep.solver_residual.unwrap() < 1e-3, "{:?}", rep.phase_secs);
            assert!(f.removed.after < f.removed.before, "{kind}: {f:?}");
            // hops = 0: only rows of the request's users and items move.
            let (a, b) = (ckpt.model().base_vec().unwrap(), out.model().base_vec().unwrap());
            let nu = ckpt.model().n_users() as u32;
            let d = ckpt.model().dim();
            for x in 0..(a.len() / d) as u32 {
                let in_req = if x < nu { req.users().contains(&x) } else { req.items().contains(&(x - nu)) };
                if !in_req {
                    assert_eq!(a[x as usize * d..][..d], b[x as usize * d..][..d], "row {x} moved");
                }
            }
            let (again, _) = influence(&ckpt, &req, &cfg, &mut Silent).unwrap();
            assert_eq!(again.model().base_vec().unwrap(), b);
        }
    }
}
