//! The BPR loss as one op over the stacked rows of a batch.
//!
//! Training gathers a batch's final rows as one `(3B + e, d)` tensor: users, then positive items, then negative
//! items (then any extra rows). candle's composition of the loss (three `narrow`s, two products, two sums, a
//! difference, the softplus's five elementwise ops, a mean) allocates a temporary per op in the forward pass and
//! in the backward pass a zero-padded copy of the whole stacked gradient per `narrow`, added together: on Gowalla
//! at batch 16,384 that is about ten passes over 12.6 MB per step, and fresh pages to fault in. This op reads
//! the rows in place and writes the stacked gradient once.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_f32;
use crate::error::{Error, Result};

/// Triples per rayon task, and per partial sum of the forward pass: fixed, so the loss does not depend on the
/// thread count.
const CHUNK: usize = 1024;

/// `softplus(x) = log(1 + eˣ)`, overflow-free.
fn softplus(x: f32) -> f64 {
    let x = f64::from(x);
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `σ(x)`, overflow-free.
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(p, q)| p * q).sum()
}

struct Bpr {
    /// The batch size `B`.
    b: usize,
}

impl Bpr {
    /// `s_neg − s_pos` of triple `k` of the stacked rows `x` of width `d`.
    fn margin(&self, x: &[f32], d: usize, k: usize) -> f32 {
        let row = |r: usize| &x[r * d..(r + 1) * d];
        let u = row(k);
        dot(u, row(2 * self.b + k)) - dot(u, row(self.b + k))
    }
}

impl CustomOp1 for Bpr {
    fn name(&self) -> &'static str {
        "bpr"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = layout.dims()[1];
        let x = cpu_f32("bpr", storage, layout, "the rows")?;
        let parts: Vec<f64> = (0..self.b.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| (c * CHUNK..((c + 1) * CHUNK).min(self.b)).map(|k| softplus(self.margin(x, d, k))).sum())
            .collect();
        let mean = parts.iter().sum::<f64>() / self.b as f64;
        Ok((CpuStorage::F32(vec![mean as f32]), Shape::from(())))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let scale = grad_res.to_scalar::<f32>()? / self.b as f32;
        let (n, d) = arg.dims2()?;
        let (storage, layout) = arg.storage_and_layout();
        let candle_core::Storage::Cpu(storage) = &*storage else { candle_core::bail!("bpr: a CPU tensor") };
        let x = cpu_f32("bpr", storage, layout, "the rows")?;
        let b = self.b;
        // The three blocks of the gradient, written by triple: ∂/∂u = g·(n − p), ∂/∂p = −g·u, ∂/∂n = g·u with
        // g = σ(s_neg − s_pos) / B.
        let mut grad = vec![0f32; n * d];
        let (gu, rest) = grad.split_at_mut(b * d);
        let (gp, rest) = rest.split_at_mut(b * d);
        let gn = &mut rest[..b * d];
        gu.par_chunks_mut(d.max(1))
            .zip(gp.par_chunks_mut(d.max(1)))
            .zip(gn.par_chunks_mut(d.max(1)))
            .enumerate()
            .with_min_len(CHUNK)
            .for_each(|(k, ((gu, gp), gn))| {
                let g = scale * sigmoid(self.margin(x, d, k));
                let (u, p, q) = (&x[k * d..][..d], &x[(b + k) * d..][..d], &x[(2 * b + k) * d..][..d]);
                for t in 0..d {
                    gu[t] = g * (q[t] - p[t]);
                    gp[t] = -g * u[t];
                    gn[t] = g * u[t];
                }
            });
        Ok(Some(Tensor::from_vec(grad, (n, d), arg.device())?))
    }
}

/// BPR, `mean_k softplus(u_k·n_k − u_k·p_k)`, of the stacked rows `x`: `(n, d)` `f32` on the CPU with `n ≥ 3B`,
/// the users' rows at `0..B`, the positive items' at `B..2B`, the negative items' at `2B..3B`; rows after `3B`
/// are not read (their gradient is zero). A scalar, differentiable with respect to `x`; the same value as
/// [`crate::model::loss::bpr`] of the three blocks, its sum in `f64` over fixed chunks (deterministic for any thread
/// count).
///
/// # Errors
/// [`Error::Shape`] when `x` is not rank 2, has fewer than `3B` rows, or `B` is 0.
pub fn bpr_stacked(x: &Tensor, b: usize) -> Result<Tensor> {
    if !matches!(x.dims(), &[n, _] if b > 0 && n >= 3 * b) {
        return Err(Error::Shape {
            op: "bpr_stacked",
            expected: format!("at least 3B rows of width d for a batch of B = {b} > 0 triples"),
            got: format!("shape {:?}", x.dims()),
        });
    }
    Ok(x.contiguous()?.apply_op1(Bpr { b })?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// Value and gradient against candle's composition ([`crate::model::loss::bpr`] of the narrowed blocks), with
    /// extra rows after the triples, margins far into both tails, and more triples than one chunk.
    #[test]
    fn matches_the_composition_in_value_and_gradient() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (b, extra, d) = (2 * CHUNK + 37, 5, 9);
        let n = 3 * b + extra;
        let mut data: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        // Triple 0's margin near +900, triple 1's near −900: softplus's two tails.
        data[..d].fill(10.0);
        data[2 * b * d..(2 * b + 1) * d].fill(10.0);
        data[(b + 1) * d..(b + 2) * d].fill(10.0);
        data[d..2 * d].fill(10.0);
        let run = |fused: bool| {
            let x = Var::from_tensor(&Tensor::from_vec(data.clone(), (n, d), &Device::Cpu).unwrap()).unwrap();
            let t = x.as_tensor();
            let loss = if fused {
                bpr_stacked(t, b).unwrap()
            } else {
                let (u, p, q) =
                    (t.narrow(0, 0, b).unwrap(), t.narrow(0, b, b).unwrap(), t.narrow(0, 2 * b, b).unwrap());
                crate::model::loss::bpr(&u, &p, &q).unwrap()
            };
            let g = (&loss * 3.0).unwrap().backward().unwrap();
            let g = g.get(t).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (loss.to_scalar::<f32>().unwrap(), g)
        };
        let (lf, gf) = run(true);
        let (lc, gc) = run(false);
        assert!(lf.is_finite() && (lf - lc).abs() <= 1e-5 * lc.abs().max(1.0), "{lf} vs {lc}");
        for (k, (x, y)) in gf.iter().zip(&gc).enumerate() {
            assert!((x - y).abs() <= 1e-6 + 1e-5 * y.abs(), "gradient {k}: {x} vs {y}");
        }
        assert!(gf[3 * b * d..].iter().all(|&v| v == 0.0), "the extra rows get no gradient");
        assert_eq!(run(true), (lf, gf), "deterministic");
    }

    #[test]
    fn shapes_that_hold_no_batch_are_errors() {
        let x = Tensor::zeros((5, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(bpr_stacked(&x, 2).is_err());
        assert!(bpr_stacked(&x, 0).is_err());
        assert!(bpr_stacked(&x.flatten_all().unwrap(), 1).is_err());
        assert!(bpr_stacked(&x, 1).is_ok());
    }
}
