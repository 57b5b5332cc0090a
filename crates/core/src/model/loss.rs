//! Loss terms, all in log-sum-exp form so that large scores cannot overflow `exp()`.

use candle_core::{D, Tensor};

use crate::error::Result;

/// `softplus(x) = log(1 + eˣ) = max(x, 0) + log(1 + e^{-|x|})`, elementwise and overflow-free.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    let pos = x.relu()?;
    let tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok((pos + tail)?)
}

/// BPR: `mean_b −log σ(s_ub,pb − s_ub,nb) = mean_b softplus(s_neg − s_pos)`.
///
/// `users`, `pos`, `neg`: `(B, d)` rows of the final embeddings. The reference adds `1e-10` inside the log;
/// the softplus form differs from it by less than `1e-10` and never returns infinity.
pub fn bpr(users: &Tensor, pos: &Tensor, neg: &Tensor) -> Result<Tensor> {
    let sp = (users * pos)?.sum(D::Minus1)?;
    let sn = (users * neg)?.sum(D::Minus1)?;
    Ok(softplus(&(sn - sp)?)?.mean_all()?)
}

/// Squared Frobenius norm of a tensor, a scalar (one fused op: [`crate::tensor::sq_norm`]).
pub fn sq_norm(x: &Tensor) -> Result<Tensor> {
    crate::tensor::sq_norm(x)
}

/// Rows L2-normalised: `x / max(‖x‖, 1e-12)`.
pub fn l2_normalize_rows(x: &Tensor) -> Result<Tensor> {
    let n = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::INFINITY)?;
    Ok(x.broadcast_div(&n)?)
}

/// InfoNCE between two views over the same nodes: `z₁, z₂` rows L2-normalised, then
/// `−mean_s log softmax_t(z₁ₛ·z₂ₜ / τ)[s]` (the denominator includes the positive), with the log-softmax fused
/// ([`crate::tensor::in_batch_log_softmax`]: logits in blocks, never an `S × S` matrix). `a`, `b`: `(S, d)`
/// rows of the two views for the same `S` distinct nodes.
pub fn info_nce(a: &Tensor, b: &Tensor, temp: f64) -> Result<Tensor> {
    let za = l2_normalize_rows(a)?;
    let zb = l2_normalize_rows(b)?;
    Ok(crate::tensor::in_batch_log_softmax(&za, &zb, temp)?.mean_all()?.neg()?)
}

/// `log Σ_c exp(x_rc)` for every row `r` of a 2-D tensor, shape `(rows,)`, shifted by the row maximum
/// (a constant for the gradient) so that it never overflows.
pub fn logsumexp_rows(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let s = x.broadcast_sub(&m)?.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok((s + m)?.squeeze(D::Minus1)?)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn t(v: &[f32], shape: (usize, usize)) -> Tensor {
        Tensor::from_slice(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn softplus_is_finite_and_exact_at_extremes() {
        let x = Tensor::new(&[-1000f32, -1.0, 0.0, 1.0, 1000.0], &Device::Cpu).unwrap();
        let y = softplus(&x).unwrap().to_vec1::<f32>().unwrap();
        let want = [0.0f32, (1.0f32 + (-1.0f32).exp()).ln(), 2f32.ln(), 1.0 + (1.0f32 + (-1.0f32).exp()).ln(), 1000.0];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn bpr_matches_the_reference_formula() {
        let u = t(&[1.0, 2.0, -1.0, 0.5], (2, 2));
        let p = t(&[0.3, 0.1, 2.0, 1.0], (2, 2));
        let n = t(&[-0.2, 0.4, 0.0, -1.0], (2, 2));
        let got = bpr(&u, &p, &n).unwrap().to_scalar::<f32>().unwrap() as f64;
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let d0 = (0.3 + 0.2) - (-0.2 + 0.8);
        let d1 = (-2.0 + 0.5) - (0.0 - 0.5);
        let want = -((sig(d0) + 1e-10).ln() + (sig(d1) + 1e-10).ln()) / 2.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn info_nce_is_stable_and_matches_a_direct_computation() {
        let a = t(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], (3, 2));
        let b = t(&[0.9, 0.1, 0.2, 1.0, 1.0, 0.8], (3, 2));
        let got = info_nce(&a, &b, 0.5).unwrap().to_scalar::<f32>().unwrap() as f64;
        let norm = |v: [f64; 2]| {
            let n = (v[0] * v[0] + v[1] * v[1]).sqrt();
            [v[0] / n, v[1] / n]
        };
        let za = [norm([1.0, 0.0]), norm([0.0, 1.0]), norm([1.0, 1.0])];
        let zb = [norm([0.9, 0.1]), norm([0.2, 1.0]), norm([1.0, 0.8])];
        let mut want = 0.0;
        for (s, a) in za.iter().enumerate() {
            let dot = |t: usize| (a[0] * zb[t][0] + a[1] * zb[t][1]) / 0.5;
            let den: f64 = (0..3).map(|t| dot(t).exp()).sum();
            want -= (dot(s).exp() / den).ln();
        }
        want /= 3.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // A tiny temperature must not overflow.
        let v = info_nce(&a, &b, 1e-4).unwrap().to_scalar::<f32>().unwrap();
        assert!(v.is_finite());
    }
}
