//! The in-batch softmax log-probability of UnlearnRec's alignment loss, fused into one candle op.
//!
//! For a batch of user rows `u_b` and item rows `i_b` (both `(B, d)`) and a temperature `τ`:
//!
//! ```text
//! M_bc = u_b·i_c / τ + 1e-8        p_b = u_b·i_b / τ        m_b = max_c M_bc
//! r_b  = exp(p_b − m_b) / (Σ_c exp(M_bc − m_b) + 1e-6·exp(min(−m_b, 80)))
//! out_b = log(r_b + 1e-6)
//! ```
//!
//! which is the reference's `log(exp(p_b) / (Σ_c exp(M_bc) + 1e-6) + 1e-6)` shifted by the row maximum so
//! that nothing overflows. Written with candle's primitive ops this costs about twenty passes over `B × B`
//! temporaries per step, forward and backward, and libm's scalar `expf` on each element; here the logits are
//! computed in blocks of rows with a GEMM and reduced at once with a vectorised `exp`; the backward pass
//! recomputes each block once and gets from it both the users' gradient rows and a partial gradient of the
//! items (added in block order). No `B × B` matrix is ever allocated.
//!
//! Backward, with `g_b = ∂L/∂out_b`, `q_b = g_b·r_b/(r_b + 1e-6)` and `P_bc = exp(M_bc − m_b)/denom_b`:
//! `∂L/∂u_b = (q_b/τ)·(i_b − Σ_c P_bc i_c)`, `∂L/∂i_c = (q_c/τ)·u_c − Σ_b (q_b/τ) P_bc u_b`.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use super::cpu_f32;
use super::linear::matmul;

/// Rows per block of the forward pass: a `ROWS × B` logit block stays in the L2 cache.
const ROWS: usize = 32;

/// Rows per block of the backward pass, where each block also yields a `(B, d)` partial gradient of the
/// items: larger blocks, fewer partials.
const BWD_ROWS: usize = 256;

/// The op; its output is `(B, 3)`: `out_b`, `m_b` and the denominator, so the backward pass need not
/// recompute the row statistics. Use [`in_batch_log_prob`] or [`in_batch_log_softmax`], which return the
/// first column.
struct InBatchLogProb {
    temp: f32,
    /// The plain log-softmax `p_b − log Σ_c exp(u_b·i_c/τ)` (InfoNCE's), without the reference's constants.
    exact: bool,
}

/// `out = alpha · A · Bᵀ` for row-major `a` `(m, d)` and `b` `(n, d)`, into row-major `out` `(m, n)`.
fn gemm_abt(a: &[f32], b: &[f32], d: usize, alpha: f32, out: &mut [f32]) {
    let (m, n) = (a.len() / d, b.len() / d);
    // Bᵀ (d × n) is B's row-major data read with swapped strides.
    matmul((out, n, 1), (a, d, 1), (b, 1, d), (m, n, d), alpha, Parallelism::None);
}

/// `out = alpha · W · B` for row-major `w` `(m, n)` and `b` `(n, d)`, into row-major `out` `(m, d)`.
fn gemm_wb(w: &[f32], b: &[f32], d: usize, alpha: f32, out: &mut [f32]) {
    let n = b.len() / d;
    let m = w.len() / n;
    matmul((out, d, 1), (w, n, 1), (b, d, 1), (m, d, n), alpha, Parallelism::None);
}

/// Lanes of the row loops: plain arrays of this width let LLVM vectorise the max and sum reductions
/// (a sequential `f32` fold may not be reordered, so it would stay scalar).
const LANES: usize = 16;

/// `exp(x)` for `x ≤ 88`, branch-free so that loops over it vectorise (libm's `expf` is a call per element
/// and was the largest cost of this op): Cephes' polynomial on `x − n·ln2` times `2ⁿ` built from its bits.
/// Relative error below 3e-7; arguments below −87.3 give ≈ 1e-38 instead of a subnormal or 0.
#[inline(always)]
fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding and subtracting it rounds to the nearest integer
    let x = x.max(-87.3);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[inline(always)]
fn row_max_impl(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    rest.iter().chain(&acc).fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

#[inline(always)]
fn exp_sum_impl(row: &[f32], shift: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += exp_fast(c[l] - shift);
        }
    }
    acc.iter().sum::<f32>() + rest.iter().map(|&x| exp_fast(x - shift)).sum::<f32>()
}

#[inline(always)]
fn exp_scale_impl(row: &mut [f32], shift: f32, scale: f32) {
    for x in row {
        *x = scale * exp_fast(*x - shift);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn row_max_avx2(row: &[f32]) -> f32 {
    row_max_impl(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_sum_avx2(row: &[f32], shift: f32) -> f32 {
    exp_sum_impl(row, shift)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_scale_avx2(row: &mut [f32], shift: f32, scale: f32) {
    exp_scale_impl(row, shift, scale)
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `max_c row_c`.
fn row_max(row: &[f32], avx2: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: the caller checked AVX2 and FMA support (`has_avx2`).
        return unsafe { row_max_avx2(row) };
    }
    let _ = avx2;
    row_max_impl(row)
}

/// `Σ_c exp(row_c − shift)`.
fn exp_sum(row: &[f32], shift: f32, avx2: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: as in `row_max`.
        return unsafe { exp_sum_avx2(row, shift) };
    }
    let _ = avx2;
    exp_sum_impl(row, shift)
}

/// `row_c ← scale · exp(row_c − shift)`.
fn exp_scale(row: &mut [f32], shift: f32, scale: f32, avx2: bool) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: as in `row_max`.
        return unsafe { exp_scale_avx2(row, shift, scale) };
    }
    let _ = avx2;
    exp_scale_impl(row, shift, scale)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Forward pass: rows `[out, m, denom]` per batch element.
fn forward(u: &[f32], it: &[f32], d: usize, temp: f32, exact: bool) -> Vec<f32> {
    let bsz = u.len() / d;
    let inv = 1.0 / temp;
    let avx2 = has_avx2();
    let mut out = vec![0f32; bsz * 3];
    out.par_chunks_mut(ROWS * 3).zip(u.par_chunks(ROWS * d)).enumerate().for_each(|(blk, (o, ub))| {
        let rows = ub.len() / d;
        let mut logits = vec![0f32; rows * bsz];
        gemm_abt(ub, it, d, inv, &mut logits);
        for r in 0..rows {
            let b = blk * ROWS + r;
            let row = &logits[r * bsz..(r + 1) * bsz];
            let mx = row_max(row, avx2);
            let s = exp_sum(row, mx, avx2);
            let p = dot(&ub[r * d..(r + 1) * d], &it[b * d..(b + 1) * d]) * inv;
            if exact {
                // log softmax, in log form: no underflow of exp(p − m) for a far-off positive.
                o[r * 3] = p - mx - s.ln();
                o[r * 3 + 1] = mx;
                o[r * 3 + 2] = s;
                continue;
            }
            // M = logit + 1e-8, so exp(M − m) = exp(logit − max logit).
            let m = mx + 1e-8;
            let denom = s + 1e-6 * (-m).min(80.0).exp();
            let ratio = (p - m).exp() / denom;
            o[r * 3] = (ratio + 1e-6).ln();
            o[r * 3 + 1] = m;
            o[r * 3 + 2] = denom;
        }
    });
    out
}

/// Backward pass: `(∂L/∂U, ∂L/∂I)` from the forward rows `res` `(B, 3)` and `∂L/∂out` `grad` `(B,)`.
fn backward(
    u: &[f32],
    it: &[f32],
    d: usize,
    (temp, exact): (f32, bool),
    res: &[f32],
    grad: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let bsz = u.len() / d;
    let inv = 1.0 / temp;
    let avx2 = has_avx2();
    // q_b/τ, with r/(r + 1e-6) = 1 − 1e-6·exp(−out) (1 for the exact log-softmax).
    let factor = |b: usize| if exact { 1.0 } else { 1.0 - 1e-6 * (-res[b * 3]).exp() };
    let qs: Vec<f32> = (0..bsz).map(|b| grad[b] * factor(b) * inv).collect();
    let (m, den): (Vec<f32>, Vec<f32>) = (0..bsz).map(|b| (res[b * 3 + 1], res[b * 3 + 2])).unzip();
    let shift: Vec<f32> = m.iter().map(|m| if exact { *m } else { m - 1e-8 }).collect();
    let scale: Vec<f32> = qs.iter().zip(&den).map(|(q, d)| q / d).collect();
    // W_bc = q_b/τ · P_bc, in blocks of BWD_ROWS rows, each computed once:
    // ∂L/∂u_b = q_b/τ · i_b − Σ_c W_bc i_c (the block's rows), and the block's share of
    // ∂L/∂i_c = q_c/τ · u_c − Σ_b W_bc u_b, summed over blocks in block order (thread-count independent).
    let mut du = vec![0f32; bsz * d];
    let partial: Vec<Vec<f32>> = du
        .par_chunks_mut(BWD_ROWS * d)
        .zip(u.par_chunks(BWD_ROWS * d))
        .enumerate()
        .map(|(blk, (g, ub))| {
            let rows = ub.len() / d;
            let first = blk * BWD_ROWS;
            let mut w = vec![0f32; rows * bsz];
            gemm_abt(ub, it, d, inv, &mut w);
            for r in 0..rows {
                exp_scale(&mut w[r * bsz..(r + 1) * bsz], shift[first + r], scale[first + r], avx2);
            }
            gemm_wb(&w, it, d, -1.0, g);
            for r in 0..rows {
                let b = first + r;
                for (x, y) in g[r * d..(r + 1) * d].iter_mut().zip(&it[b * d..(b + 1) * d]) {
                    *x += qs[b] * y;
                }
            }
            // −Wᵀ (B × rows) · U_blk (rows × d), (B, d); Wᵀ is W's row-major data read with swapped strides.
            let mut di = vec![0f32; bsz * d];
            matmul((&mut di, d, 1), (&w, 1, bsz), (ub, d, 1), (bsz, d, rows), -1.0, Parallelism::None);
            di
        })
        .collect();
    let mut di = vec![0f32; bsz * d];
    di.par_chunks_mut(d).enumerate().for_each(|(c, g)| {
        for p in &partial {
            for (x, y) in g.iter_mut().zip(&p[c * d..(c + 1) * d]) {
                *x += y;
            }
        }
        for (x, y) in g.iter_mut().zip(&u[c * d..(c + 1) * d]) {
            *x += qs[c] * y;
        }
    });
    (du, di)
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<(&'a [f32], usize, usize)> {
    let &[b, d] = l.dims() else { candle_core::bail!("in_batch_log_prob: {what} must be (B, d), got {:?}", l.dims()) };
    Ok((cpu_f32("in_batch_log_prob", s, l, what)?, b, d))
}

impl CustomOp2 for InBatchLogProb {
    fn name(&self) -> &'static str {
        "in_batch_log_prob"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (u, b, d) = f32_slice(s1, l1, "users")?;
        let (it, b2, d2) = f32_slice(s2, l2, "items")?;
        if (b, d) != (b2, d2) {
            candle_core::bail!("in_batch_log_prob: users ({b}, {d}) and items ({b2}, {d2}) differ in shape")
        }
        Ok((CpuStorage::F32(forward(u, it, d, self.temp, self.exact)), Shape::from((b, 3))))
    }

    fn bwd(
        &self,
        arg1: &Tensor,
        arg2: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, d) = arg1.dims2()?;
        let u = arg1.flatten_all()?.to_vec1::<f32>()?;
        let it = arg2.flatten_all()?.to_vec1::<f32>()?;
        let r = res.flatten_all()?.to_vec1::<f32>()?;
        // Only the first column is an output of the loss; the statistics carry no gradient.
        let g = grad_res.narrow(1, 0, 1)?.flatten_all()?.to_vec1::<f32>()?;
        let (du, di) = backward(&u, &it, d, (self.temp, self.exact), &r, &g);
        let dev = arg1.device();
        Ok((Some(Tensor::from_vec(du, (b, d), dev)?), Some(Tensor::from_vec(di, (b, d), dev)?)))
    }
}

/// The in-batch log-probability of each positive pair `(users_b, items_b)` among the batch's items, as
/// in the module documentation; shape `(B,)`, differentiable with respect to both inputs.
///
/// # Errors
/// When the inputs are not two `(B, d)` `f32` CPU tensors of the same shape.
pub fn in_batch_log_prob(users: &Tensor, items: &Tensor, temp: f64) -> crate::Result<Tensor> {
    let u = users.contiguous()?;
    let i = items.contiguous()?;
    let out = u.apply_op2(&i, InBatchLogProb { temp: temp as f32, exact: false })?;
    Ok(out.narrow(1, 0, 1)?.squeeze(1)?)
}

/// `log softmax_c(a_b·b_c / τ)[b]` for each row `b`: the log-probability of each positive pair among the
/// batch's pairs, InfoNCE's term; shape `(B,)`, differentiable with respect to both inputs. The same fused
/// blocks as [`in_batch_log_prob`] (no `B × B` matrix allocated), without the reference's constants.
///
/// # Errors
/// When the inputs are not two `(B, d)` `f32` CPU tensors of the same shape.
pub fn in_batch_log_softmax(a: &Tensor, b: &Tensor, temp: f64) -> crate::Result<Tensor> {
    let a = a.contiguous()?;
    let b = b.contiguous()?;
    let out = a.apply_op2(&b, InBatchLogProb { temp: temp as f32, exact: true })?;
    Ok(out.narrow(1, 0, 1)?.squeeze(1)?)
}

#[cfg(test)]
mod tests {
    use candle_core::{D, Device, Var};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// The same function from candle's primitive ops (the pre-fusion implementation).
    fn reference(users: &Tensor, items: &Tensor, temp: f64) -> Tensor {
        let m = ((users.matmul(&items.t().unwrap()).unwrap() / temp).unwrap() + 1e-8).unwrap();
        let p = ((users * items).unwrap().sum(D::Minus1).unwrap() / temp).unwrap();
        let mx = m.max_keepdim(D::Minus1).unwrap().detach();
        let s = m.broadcast_sub(&mx).unwrap().exp().unwrap().sum(D::Minus1).unwrap();
        let mx = mx.squeeze(D::Minus1).unwrap();
        let tail = (mx.neg().unwrap().clamp(f64::NEG_INFINITY, 80.0).unwrap().exp().unwrap() * 1e-6).unwrap();
        let ratio = ((p - &mx).unwrap().exp().unwrap() / (s + tail).unwrap()).unwrap();
        (ratio + 1e-6).unwrap().log().unwrap()
    }

    fn random(b: usize, d: usize, scale: f32, rng: &mut ChaCha8Rng) -> Var {
        let v: Vec<f32> = (0..b * d).map(|_| rng.random_range(-scale..scale)).collect();
        Var::from_tensor(&Tensor::from_vec(v, (b, d), &Device::Cpu).unwrap()).unwrap()
    }

    fn assert_close(got: &Tensor, want: &Tensor, tol: f32, what: &str) {
        let g = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let w = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(g.len(), w.len(), "{what}: length");
        for (k, (a, b)) in g.iter().zip(&w).enumerate() {
            assert!(a.is_finite(), "{what}[{k}] = {a}");
            assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}[{k}]: fused {a} vs reference {b}");
        }
    }

    /// Value and both gradients equal the composed version, for batches that are not a multiple of the
    /// block size, at the temperature of the loss and at scores large enough to overflow `exp` unshifted.
    #[test]
    fn matches_the_composed_ops_in_value_and_gradient() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for &(b, d, scale, temp) in &[
            (1, 3, 1.0, 10.0),
            (70, 5, 1.0, 10.0),
            (33, 8, 3.0, 0.5),
            (40, 16, 40.0, 1.0),
            (BWD_ROWS + 45, 6, 1.0, 10.0),
        ] {
            let (u, i) = (random(b, d, scale, &mut rng), random(b, d, scale, &mut rng));
            // A weighted sum, so that every output row has its own upstream gradient.
            let wts = Tensor::from_vec((0..b).map(|k| 1.0 + k as f32 / b as f32).collect(), b, &Device::Cpu).unwrap();
            let fused = in_batch_log_prob(u.as_tensor(), i.as_tensor(), temp).unwrap();
            let comp = reference(u.as_tensor(), i.as_tensor(), temp);
            assert_close(&fused, &comp, 1e-5, "value");
            let gf = (&fused * &wts).unwrap().sum_all().unwrap().backward().unwrap();
            let gc = (&comp * &wts).unwrap().sum_all().unwrap().backward().unwrap();
            for (v, name) in [(&u, "users"), (&i, "items")] {
                assert_close(gf.get(v.as_tensor()).unwrap(), gc.get(v.as_tensor()).unwrap(), 1e-4, name);
            }
        }
    }

    /// The exact log-softmax against candle's composition (log-sum-exp of the logits minus the positive),
    /// in value and both gradients; far-off positives stay finite (no `exp` underflow to `log 0`).
    #[test]
    fn the_log_softmax_matches_the_composition() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for &(b, d, scale, temp) in
            &[(1, 3, 1.0, 0.2), (70, 5, 1.0, 0.2), (BWD_ROWS + 45, 8, 2.0, 0.1), (40, 4, 30.0, 1.0)]
        {
            let (u, i) = (random(b, d, scale, &mut rng), random(b, d, scale, &mut rng));
            let wts = Tensor::from_vec((0..b).map(|k| 1.0 + k as f32 / b as f32).collect(), b, &Device::Cpu).unwrap();
            let fused = in_batch_log_softmax(u.as_tensor(), i.as_tensor(), temp).unwrap();
            let logits = (u.as_tensor().matmul(&i.as_tensor().t().unwrap()).unwrap() / temp).unwrap();
            let pos = ((u.as_tensor() * i.as_tensor()).unwrap().sum(D::Minus1).unwrap() / temp).unwrap();
            let comp = (pos - crate::model::loss::logsumexp_rows(&logits).unwrap()).unwrap();
            let tol = if scale > 10.0 { 1e-3 } else { 1e-5 };
            assert_close(&fused, &comp, tol, "value");
            assert!(fused.to_vec1::<f32>().unwrap().iter().all(|x| x.is_finite() && *x <= 1e-5));
            let gf = (&fused * &wts).unwrap().sum_all().unwrap().backward().unwrap();
            let gc = (&comp * &wts).unwrap().sum_all().unwrap().backward().unwrap();
            for (v, name) in [(&u, "a"), (&i, "b")] {
                assert_close(gf.get(v.as_tensor()).unwrap(), gc.get(v.as_tensor()).unwrap(), 1e-4, name);
            }
        }
    }

    /// Scores of ~1e3 (where the reference's unshifted `exp` gives NaN) stay finite, forward and backward.
    #[test]
    fn large_scores_stay_finite() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (u, i) = (random(50, 4, 30.0, &mut rng), random(50, 4, 30.0, &mut rng));
        let out = in_batch_log_prob(u.as_tensor(), i.as_tensor(), 1.0).unwrap();
        let v = out.to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| x.is_finite() && *x <= 1e-5), "{v:?}");
        let g = out.sum_all().unwrap().backward().unwrap();
        let gu = g.get(u.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(gu.iter().all(|x| x.is_finite()));
        assert!(gu.iter().any(|x| *x != 0.0));
    }

    #[test]
    fn same_result_for_any_thread_count() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (u, i) = (random(100, 8, 2.0, &mut rng), random(100, 8, 2.0, &mut rng));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let out = in_batch_log_prob(u.as_tensor(), i.as_tensor(), 10.0).unwrap();
                let g = out.sum_all().unwrap().backward().unwrap();
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                (flat(&out), flat(g.get(u.as_tensor()).unwrap()), flat(g.get(i.as_tensor()).unwrap()))
            })
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = (x as f64).exp();
            worst = worst.max(((exp_fast(x) as f64) - want).abs() / want);
            x += 0.0137;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp_fast(0.0), 1.0);
        // Far below the range: tiny and positive, never NaN.
        assert!(exp_fast(-1e4) > 0.0 && exp_fast(-1e4) < 1e-37);
        // The dispatched row loops agree with the portable ones.
        let row: Vec<f32> = (0..101).map(|k| (k as f32 * 0.37).sin() * 5.0).collect();
        for avx2 in [false, has_avx2()] {
            assert_eq!(row_max(&row, avx2), row.iter().copied().fold(f32::NEG_INFINITY, f32::max));
            let want: f64 = row.iter().map(|&v| ((v - 5.0) as f64).exp()).sum();
            assert!((exp_sum(&row, 5.0, avx2) as f64 - want).abs() < 1e-5 * want);
        }
    }

    #[test]
    fn rejects_mismatched_shapes_and_dtypes() {
        let dev = Device::Cpu;
        let a = Tensor::zeros((4, 3), candle_core::DType::F32, &dev).unwrap();
        let b = Tensor::zeros((5, 3), candle_core::DType::F32, &dev).unwrap();
        assert!(in_batch_log_prob(&a, &b, 1.0).unwrap_err().to_string().contains("differ in shape"));
        let c = Tensor::zeros((4, 3), candle_core::DType::F64, &dev).unwrap();
        assert!(in_batch_log_prob(&c, &c, 1.0).unwrap_err().to_string().contains("must be f32"));
    }
}
