//! UnlearnRec's loss terms (docs/method.md §7.2): unlearning, distribution preservation (alignment) and the
//! encoder's contrastive regulariser. All in log-sum-exp form.

use candle_core::{D, Device, Tensor};

use crate::data::Interactions;
use crate::error::Result;
use crate::model::loss::softplus;

fn index(v: impl Iterator<Item = u32>) -> Result<Tensor> {
    let data: Vec<u32> = v.collect();
    let n = data.len();
    Ok(Tensor::from_vec(data, n, &Device::Cpu)?)
}

/// Row-wise dot products `e_u · e_i` of the given (user, item) edges from final embeddings `fin`
/// `(n_users + n_items, d)`; shape `(edges,)`.
pub fn edge_scores(fin: &Tensor, n_users: usize, edges: &Interactions) -> Result<Tensor> {
    let items: Vec<u32> = edges.items().iter().map(|&i| i + n_users as u32).collect();
    crate::tensor::pair_dot(fin, edges.users(), &items)
}

/// How removed edges are pushed down (`--unlearn_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnlearnLoss {
    /// `mean softplus(e_u·e_i) = −mean log σ(−e_u·e_i)` (reference v1, the default).
    V1,
    /// `mean e_u·e_i` (reference v2).
    V2,
}

/// The unlearning loss `L_u` over all request edges.
pub fn unlearn_loss(fin: &Tensor, n_users: usize, request: &Interactions, kind: UnlearnLoss) -> Result<Tensor> {
    unlearn_loss_of(&edge_scores(fin, n_users, request)?, kind)
}

/// The unlearning loss `L_u` of the request edges' scores `s`.
pub fn unlearn_loss_of(s: &Tensor, kind: UnlearnLoss) -> Result<Tensor> {
    Ok(match kind {
        UnlearnLoss::V1 => softplus(s)?.mean_all()?,
        UnlearnLoss::V2 => s.mean_all()?,
    })
}

/// The reference's in-batch log-probability of each positive (alignment v2), computed without overflow:
/// `dist_b = log( exp(p_b) / (Σ_c exp(M_bc) + 1e-6) + 1e-6 )` with `M_bc = (u_b·i_c)/τ + 1e-8` and
/// `p_b = (u_b·i_b)/τ`, shifted by the row maximum; one fused op ([`crate::tensor::in_batch_log_prob`]).
pub fn in_batch_log_prob(users: &Tensor, items: &Tensor, temp: f64) -> Result<Tensor> {
    crate::tensor::in_batch_log_prob(users, items, temp)
}

/// Distribution-preservation loss `L_a` (reference align v2) on a batch of positive (user, item) rows of
/// the unlearned model (`src_u`, `src_i`) and of the original model (`tar_u`, `tar_i`, no gradient):
/// `mean_b (dist_b^src − dist_b^tar)²`.
///
/// The reference takes the **sum** over the batch (docs/method.md §13.4), so its weight scales with the batch size;
/// this is the mean: a weight `w` here equals the reference's `w / B`.
pub fn align_loss(src_u: &Tensor, src_i: &Tensor, tar_u: &Tensor, tar_i: &Tensor, temp: f64) -> Result<Tensor> {
    let a = in_batch_log_prob(src_u, src_i, temp)?;
    let b = in_batch_log_prob(&tar_u.detach(), &tar_i.detach(), temp)?;
    Ok((a - b)?.sqr()?.mean_all()?)
}

/// The reference's `contrastLoss` (docs/method.md §7.2) in log-sum-exp form: rows `z = normalize(x + 1e-8)` of the
/// full matrices, picked by `nodes` (duplicates kept), then
/// `−mean_s log( exp(z1_s·z2_s/τ) / (Σ_t exp(z1_s·z2_t/τ) + 1e-8) )`.
///
/// The log-softmax is the fused in-batch op ([`crate::tensor::in_batch_log_softmax`]): no `k × k` matrix of
/// logits exists, where the composition kept about five per call alive until the backward pass (six calls a
/// pre-training step, 4 MB each at 1,000 nodes). The reference's `1e-8` in the denominator is left out: it
/// changes each term by `log(1 + 1e-8·e^{−lse}) ≤ 1e-8·e^{1/τ}` (the rows are unit vectors, so the
/// log-sum-exp is at least the positive logit, at least `−1/τ`): below 3e-8 at pre-training's `τ = 1`.
pub fn contrast_loss(x1: &Tensor, x2: &Tensor, nodes: &[u32], temp: f64) -> Result<Tensor> {
    let (z1, z2) = unit_rows(x1, x2, nodes)?;
    Ok(crate::tensor::in_batch_log_softmax(&z1, &z2, temp)?.mean_all()?.neg()?)
}

/// The rows `nodes` of `x1` and `x2`, each `normalize(x + 1e-8)` (normalising rows after picking them is the
/// same as picking rows of the normalised matrices).
fn unit_rows(x1: &Tensor, x2: &Tensor, nodes: &[u32]) -> Result<(Tensor, Tensor)> {
    let norm = |x: &Tensor| -> Result<Tensor> {
        let x = (x + 1e-8)?;
        let n = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::INFINITY)?;
        Ok(x.broadcast_div(&n)?)
    };
    let idx = index(nodes.iter().copied())?;
    Ok((norm(&x1.index_select(&idx, 0)?)?, norm(&x2.index_select(&idx, 0)?)?))
}

#[cfg(test)]
mod tests {
    use candle_core::Var;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::model::loss::logsumexp_rows;

    /// The reference's log-softmax composed from candle's ops, its `1e-8` included, on the same unit rows.
    fn composed(x1: &Tensor, x2: &Tensor, nodes: &[u32], temp: f64) -> Tensor {
        let (z1, z2) = unit_rows(x1, x2, nodes).unwrap();
        let logits = (z1.matmul(&z2.t().unwrap()).unwrap() / temp).unwrap();
        let pos = ((&z1 * &z2).unwrap().sum(D::Minus1).unwrap() / temp).unwrap();
        let lse = logsumexp_rows(&logits).unwrap();
        let corr = ((lse.neg().unwrap().exp().unwrap() * 1e-8).unwrap() + 1.0).unwrap().log().unwrap();
        ((lse + corr).unwrap() - pos).unwrap().mean_all().unwrap()
    }

    #[test]
    fn the_fused_contrast_loss_matches_the_composed_formula_and_its_gradients() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (n, d) = (40usize, 8usize);
        for (nodes, temp) in [
            ((0..n as u32).step_by(3).collect::<Vec<_>>(), 1.0),
            (vec![1, 1, 7, 30, 2, 39, 7], 0.2),
            (vec![5], 0.5),
            ((0..n as u32).collect(), 0.1),
        ] {
            let v = |rng: &mut ChaCha8Rng| (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>();
            let x1 = Var::from_vec(v(&mut rng), (n, d), &Device::Cpu).unwrap();
            let x2 = Var::from_vec(v(&mut rng), (n, d), &Device::Cpu).unwrap();
            let got = contrast_loss(x1.as_tensor(), x2.as_tensor(), &nodes, temp).unwrap();
            let want = composed(x1.as_tensor(), x2.as_tensor(), &nodes, temp);
            let (a, b) = (got.to_scalar::<f32>().unwrap(), want.to_scalar::<f32>().unwrap());
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "loss at τ {temp}: {a} vs {b}");
            let (gg, gw) = (got.backward().unwrap(), want.backward().unwrap());
            for x in [&x1, &x2] {
                let flat = |g: &candle_core::backprop::GradStore| {
                    g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
                };
                let (p, q) = (flat(&gg), flat(&gw));
                // One node is its own softmax: a constant loss.
                assert_eq!(p.iter().any(|&g| g != 0.0), nodes.len() > 1, "gradient at τ {temp}");
                for (k, (p, q)) in p.iter().zip(&q).enumerate() {
                    assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "gradient [{k}] at τ {temp}: {p} vs {q}");
                }
            }
        }
    }
}
