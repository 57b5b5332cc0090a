//! A dense layer with a LeakyReLU, `y = LeakyReLU_α(x·W + b)`, fused into one candle op.
//!
//! The influence encoder's MLP runs over every node at every fine-tuning step. From candle's primitive ops
//! (matmul, broadcast add, relu, sub, mul, add) a layer costs about six passes over the `(n, d)` activations
//! forward and twice that backward, each with a fresh allocation; here the forward is one GEMM per row block
//! with the bias and activation applied in place, and the backward one pass for the activation's derivative
//! plus the three products. Partial sums of `∂W` and `∂b` are per fixed row block and added in block order,
//! so results do not depend on the number of threads.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use super::cpu_f32;

/// Rows per parallel block.
const ROWS: usize = 2048;

struct LinearLeaky {
    alpha: f32,
    /// Whether `x` takes part in the graph (`∂x` is skipped for a constant input, as the MLP's first layer
    /// in fine-tuning, where `x` is the request's fixed encoding).
    need_dx: bool,
    /// Whether `W` or `b` takes part (their gradients are skipped for constants, as the frozen MLP of
    /// pre-training).
    need_dw: bool,
}

/// `dst = alpha · lhs · rhs` for strided `f32` matrices, each given as `(data, row stride, column stride)`
/// (element `(i, j)` at `data[i·rs + j·cs]`): `lhs` is `m × k`, `rhs` `k × n`, `dst` `m × n`, overwritten.
///
/// A bounds-checked wrapper over the `gemm` crate, the GEMM behind candle's CPU matmul (so it costs no
/// extra dependency); `par` is [`Parallelism::None`] on the calling thread or `Rayon(0)` over rayon's pool.
pub(crate) fn matmul(
    dst: (&mut [f32], usize, usize),
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    par: Parallelism,
) {
    // The largest index of a `rows × cols` view is `(rows − 1)·rs + (cols − 1)·cs`.
    let fits = |len: usize, rows: usize, cols: usize, rs: usize, cs: usize| {
        rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < len
    };
    assert!(
        fits(dst.0.len(), m, n, dst.1, dst.2)
            && fits(lhs.0.len(), m, k, lhs.1, lhs.2)
            && fits(rhs.0.len(), k, n, rhs.1, rhs.2),
        "matmul: a view reaches past its slice"
    );
    // No two elements of `dst` share memory: its rows, or its columns, lie one after another.
    let (rs, cs) = (dst.1, dst.2);
    assert!(
        m * n <= 1 || (m == 1 && cs > 0) || (n == 1 && rs > 0) || (cs > 0 && rs >= n * cs) || (rs > 0 && cs >= m * rs),
        "matmul: the destination's elements overlap"
    );
    // SAFETY: every element the views address lies inside its slice, distinct elements of `dst` are distinct
    // memory (both checked above), `dst` is borrowed mutably so it overlaps neither input, and
    // `read_dst = false` means its prior contents are not read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0.as_mut_ptr(),
            dst.2 as isize,
            dst.1 as isize,
            false,
            lhs.0.as_ptr(),
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0.as_ptr(),
            rhs.2 as isize,
            rhs.1 as isize,
            0.0,
            alpha,
            false,
            false,
            false,
            par,
        )
    }
}

/// `out = x · W` for row-major `x` `(m, k)`, `w` `(k, n)`, into row-major `out` `(m, n)`.
fn gemm_xw(x: &[f32], w: &[f32], k: usize, n: usize, out: &mut [f32]) {
    let m = x.len() / k;
    matmul((out, n, 1), (x, k, 1), (w, n, 1), (m, n, k), 1.0, Parallelism::None);
}

/// `LeakyReLU_α(x·W + b)` for row-major `x` `(m, k)`, `W` `(k, n)`, `b` `(n,)`: the layer's forward pass.
pub(super) fn forward(x: &[f32], w: &[f32], b: &[f32], k: usize, alpha: f32) -> Vec<f32> {
    let n = b.len();
    let mut out = vec![0f32; x.len() / k * n];
    out.par_chunks_mut(ROWS * n).zip(x.par_chunks(ROWS * k)).for_each(|(o, xb)| {
        gemm_xw(xb, w, k, n, o);
        for row in o.chunks_mut(n) {
            for (v, bias) in row.iter_mut().zip(b) {
                let z = *v + bias;
                *v = if z > 0.0 { z } else { alpha * z };
            }
        }
    });
    out
}

/// `(∂x, ∂W, ∂b)` from the input `x` `(m, k)`, `W` `(k, n)`, the output `y` and `∂L/∂y`, in one parallel
/// pass over fixed row blocks (`∂x` empty when not needed).
fn backward(op: &LinearLeaky, x: &[f32], w: &[f32], y: &[f32], g: &[f32], k: usize, n: usize) -> [Vec<f32>; 3] {
    let (alpha, need_dx, need_dw) = (op.alpha, op.need_dx, op.need_dw);
    let m = x.len() / k;
    let mut dx = vec![0f32; if need_dx { m * k } else { 0 }];
    let dx_blocks: Vec<&mut [f32]> = if need_dx {
        dx.chunks_mut(ROWS * k).collect()
    } else {
        x.chunks(ROWS * k).map(|_| <&mut [f32]>::default()).collect()
    };
    let parts: Vec<(Vec<f32>, Vec<f32>)> = dx_blocks
        .into_par_iter()
        .zip(x.par_chunks(ROWS * k))
        .zip(y.par_chunks(ROWS * n).zip(g.par_chunks(ROWS * n)))
        .map(|((dxb, xb), (yb, gb))| {
            let rows = xb.len() / k;
            let gz = pre_activation_gradient(gb, yb, alpha);
            if need_dx {
                input_gradient_block(&gz, w, k, n, dxb);
            }
            if !need_dw {
                return (Vec::new(), Vec::new());
            }
            // This block's share of ∂W (k × n) = xᵀ (k × rows) · ∂z (rows × n).
            let mut dw = vec![0f32; k * n];
            matmul((&mut dw, n, 1), (xb, 1, k), (&gz, n, 1), (k, n, rows), 1.0, Parallelism::None);
            let mut db = vec![0f32; n];
            for row in gz.chunks(n) {
                for (a, v) in db.iter_mut().zip(row) {
                    *a += v;
                }
            }
            (dw, db)
        })
        .collect();
    // Partial sums added in block order: the same result for any number of threads.
    let mut dw = vec![0f32; k * n];
    let mut db = vec![0f32; n];
    for (pw, pb) in &parts {
        dw.iter_mut().zip(pw).for_each(|(a, v)| *a += v);
        db.iter_mut().zip(pb).for_each(|(a, v)| *a += v);
    }
    [dx, dw, db]
}

/// `∂L/∂z` from the output `y` and `∂L/∂y`: the slope is 1 where `y > 0` (⇔ `z > 0` for `α ≥ 0`), else `α`.
fn pre_activation_gradient(g: &[f32], y: &[f32], alpha: f32) -> Vec<f32> {
    g.iter().zip(y).map(|(&g, &y)| if y > 0.0 { g } else { alpha * g }).collect()
}

/// `dx (rows × k) = ∂z (rows × n) · Wᵀ (n × k)`; `Wᵀ` is `W`'s row-major data read with swapped strides.
fn input_gradient_block(gz: &[f32], w: &[f32], k: usize, n: usize, dx: &mut [f32]) {
    matmul((dx, k, 1), (gz, n, 1), (w, 1, n), (gz.len() / n, k, n), 1.0, Parallelism::None);
}

/// The signs of a layer's output `y`, one bit per element (`y > 0`, element `e` at bit `e % 64` of word
/// `e / 64`): all that the backward pass of a constant layer needs from its forward pass ([`input_gradient`]),
/// a 32nd of the output's bytes.
pub(super) fn positive_mask(y: &[f32]) -> Vec<u64> {
    y.par_chunks(64).map(|c| c.iter().enumerate().fold(0u64, |m, (j, &v)| m | (u64::from(v > 0.0) << j))).collect()
}

/// `∂L/∂z_e` from `∂L/∂y_e` `g` and the output's sign bits: `g` where `y_e > 0`, else `α·g`.
fn sloped(positive: &[u64], e: usize, g: f32, alpha: f32) -> f32 {
    if positive[e / 64] >> (e % 64) & 1 == 1 { g } else { alpha * g }
}

/// The layer's input gradient `∂x` `(m, k)` from its weights `W` `(k, n)`, the signs of its output
/// ([`positive_mask`] of `y` `(m, n)`) and `∂L/∂y` (the backward pass of a layer whose weights are constants),
/// over the same row blocks as [`backward`]: the slope is 1 where `y > 0` (⇔ `z > 0` for `α ≥ 0`), else `α`.
pub(super) fn input_gradient(w: &[f32], positive: &[u64], g: &[f32], k: usize, n: usize, alpha: f32) -> Vec<f32> {
    assert_eq!(positive.len(), g.len().div_ceil(64), "linear: one sign bit per output element");
    let mut dx = vec![0f32; g.len() / n * k];
    dx.par_chunks_mut(ROWS * k).zip(g.par_chunks(ROWS * n)).enumerate().for_each(|(blk, (dxb, gb))| {
        let first = blk * ROWS * n;
        let gz: Vec<f32> = gb.iter().enumerate().map(|(j, &g)| sloped(positive, first + j, g, alpha)).collect();
        input_gradient_block(&gz, w, k, n, dxb)
    });
    dx
}

/// `LeakyReLU_α(x)` elementwise: [`forward`]'s values for a layer whose `W` is the identity and `b` zero, to the
/// bit (`x·I` sums `x_j` and exact zeros; `+ 0.0` gives a `−0` input the sign the product gives it).
pub(super) fn activation(x: &[f32], alpha: f32) -> Vec<f32> {
    x.par_iter()
        .map(|&v| {
            let z = v + 0.0;
            if z > 0.0 { z } else { alpha * z }
        })
        .collect()
}

/// [`input_gradient`] of such a layer, to the bit: the activation's slope times `∂L/∂y`.
pub(super) fn activation_gradient(positive: &[u64], g: &[f32], alpha: f32) -> Vec<f32> {
    assert_eq!(positive.len(), g.len().div_ceil(64), "linear: one sign bit per output element");
    g.par_iter().enumerate().map(|(e, &g)| sloped(positive, e, g, alpha) + 0.0).collect()
}

/// Runs `f` on the contiguous `f32` data of a CPU tensor without copying it.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else { candle_core::bail!("expected a CPU tensor") };
    Ok(f(cpu_f32("with_f32", cpu, layout, "tensor")?))
}

fn f32_data<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    cpu_f32("linear_leaky", s, l, what)
}

impl CustomOp3 for LinearLeaky {
    fn name(&self) -> &'static str {
        "linear_leaky"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (&[m, k], &[k2, n]) = (l1.dims(), l2.dims()) else {
            candle_core::bail!("linear_leaky: x and W must be 2-D, got {:?} and {:?}", l1.dims(), l2.dims())
        };
        if k != k2 || l3.shape().elem_count() != n {
            candle_core::bail!(
                "linear_leaky: shapes x {:?}, W {:?}, b {:?} do not fit",
                l1.dims(),
                l2.dims(),
                l3.dims()
            )
        }
        let out = forward(f32_data(s1, l1, "x")?, f32_data(s2, l2, "W")?, f32_data(s3, l3, "b")?, k, self.alpha);
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, k) = x.dims2()?;
        let (_, n) = w.dims2()?;
        let grad = grad.contiguous()?;
        // Borrow the four (n_nodes × d)-sized buffers rather than copying them out.
        let [dx, dw, db] = with_f32(x, |xs| {
            with_f32(w, |ws| with_f32(res, |ys| with_f32(&grad, |gs| backward(self, xs, ws, ys, gs, k, n))))
        })????;
        let dev = x.device();
        Ok((
            if self.need_dx { Some(Tensor::from_vec(dx, x.shape(), dev)?) } else { None },
            if self.need_dw { Some(Tensor::from_vec(dw, w.shape(), dev)?) } else { None },
            if self.need_dw { Some(Tensor::from_vec(db, b.shape(), dev)?) } else { None },
        ))
    }
}

/// `LeakyReLU_α(x · W + b)` for `x` `(m, k)`, `W` `(k, n)` and `b` `(1, n)` (or `(n,)`), `f32` on the CPU;
/// differentiable in all three. `α` must be in `[0, 1]` (the backward reads the slope off the output).
///
/// # Errors
/// Shapes that do not fit, another dtype, or `α` outside `[0, 1]`.
pub fn linear_leaky(x: &Tensor, w: &Tensor, b: &Tensor, alpha: f64) -> crate::Result<Tensor> {
    if !(0.0..=1.0).contains(&alpha) {
        return Err(crate::Error::config("encoder.leaky", "the fused MLP layer needs a slope in [0, 1]"));
    }
    let op = LinearLeaky { alpha: alpha as f32, need_dx: x.track_op(), need_dw: w.track_op() || b.track_op() };
    Ok(x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, op)?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn var(shape: (usize, usize), rng: &mut ChaCha8Rng) -> Var {
        let v: Vec<f32> = (0..shape.0 * shape.1).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// Forward and the three gradients equal candle's composition, across row blocks (m > ROWS, not a
    /// multiple of it) and for the slopes 0, 0.5 and 1.
    #[test]
    fn matches_the_composed_ops() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for &(m, k, n, alpha) in &[(5, 3, 4, 0.5), (ROWS + 37, 8, 6, 0.0), (ROWS * 2 + 1, 6, 6, 1.0)] {
            let (x, w, b) = (var((m, k), &mut rng), var((k, n), &mut rng), var((1, n), &mut rng));
            let up =
                Tensor::from_vec((0..m * n).map(|i| (i % 7) as f32 - 3.0).collect(), (m, n), &Device::Cpu).unwrap();
            let fused = linear_leaky(x.as_tensor(), w.as_tensor(), b.as_tensor(), alpha).unwrap();
            let z = x.as_tensor().matmul(w.as_tensor()).unwrap().broadcast_add(b.as_tensor()).unwrap();
            let pos = z.relu().unwrap();
            let comp = (&pos + ((&z - &pos).unwrap() * alpha).unwrap()).unwrap();
            let close = |a: &[f32], c: &[f32], what: &str| {
                assert_eq!(a.len(), c.len());
                for (i, (p, q)) in a.iter().zip(c).enumerate() {
                    assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()), "{what}[{i}]: fused {p} vs composed {q}");
                }
            };
            close(&flat(&fused), &flat(&comp), "y");
            let gf = (&fused * &up).unwrap().sum_all().unwrap().backward().unwrap();
            let gc = (&comp * &up).unwrap().sum_all().unwrap().backward().unwrap();
            for (v, what) in [(&x, "dx"), (&w, "dW"), (&b, "db")] {
                close(&flat(gf.get(v.as_tensor()).unwrap()), &flat(gc.get(v.as_tensor()).unwrap()), what);
            }
        }
    }

    /// A constant input gets no gradient (its product is skipped); the weights' gradients are unchanged.
    #[test]
    fn constant_input_skips_its_gradient_only() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (x, w, b) = (var((ROWS + 3, 5), &mut rng), var((5, 5), &mut rng), var((1, 5), &mut rng));
        let grads = |x: &Tensor| {
            linear_leaky(x, w.as_tensor(), b.as_tensor(), 0.9)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        };
        let (gv, gc) = (grads(x.as_tensor()), grads(&x.as_tensor().detach()));
        assert!(gv.get(x.as_tensor()).is_some());
        assert!(gc.get(x.as_tensor()).is_none());
        for v in [&w, &b] {
            assert_eq!(flat(gv.get(v.as_tensor()).unwrap()), flat(gc.get(v.as_tensor()).unwrap()));
        }
    }

    #[test]
    fn constant_weights_skip_their_gradients_only() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let (x, w, b) = (var((ROWS + 3, 5), &mut rng), var((5, 5), &mut rng), var((1, 5), &mut rng));
        let grads = |w: &Tensor, b: &Tensor| {
            linear_leaky(x.as_tensor(), w, b, 0.9).unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap()
        };
        let (gv, gc) = (grads(w.as_tensor(), b.as_tensor()), grads(&w.as_tensor().detach(), &b.as_tensor().detach()));
        assert!(gv.get(w.as_tensor()).is_some() && gv.get(b.as_tensor()).is_some());
        assert!(gc.get(w.as_tensor()).is_none() && gc.get(b.as_tensor()).is_none());
        assert_eq!(flat(gv.get(x.as_tensor()).unwrap()), flat(gc.get(x.as_tensor()).unwrap()));
    }

    #[test]
    fn same_result_for_any_thread_count() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (x, w, b) = (var((ROWS * 3 + 5, 8), &mut rng), var((8, 8), &mut rng), var((1, 8), &mut rng));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let y = linear_leaky(x.as_tensor(), w.as_tensor(), b.as_tensor(), 0.99).unwrap();
                let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
                (flat(&y), flat(g.get(w.as_tensor()).unwrap()), flat(g.get(b.as_tensor()).unwrap()))
            })
        };
        assert_eq!(run(1), run(4));
    }

    #[test]
    fn rejects_bad_shapes_and_slopes() {
        let dev = Device::Cpu;
        let z = |s: (usize, usize)| Tensor::zeros(s, candle_core::DType::F32, &dev).unwrap();
        assert!(linear_leaky(&z((4, 3)), &z((2, 2)), &z((1, 2)), 0.5).unwrap_err().to_string().contains("do not fit"));
        assert!(linear_leaky(&z((4, 3)), &z((3, 2)), &z((1, 5)), 0.5).is_err());
        assert!(linear_leaky(&z((4, 3)), &z((3, 2)), &z((1, 2)), -0.1).unwrap_err().to_string().contains("[0, 1]"));
    }
}

#[cfg(test)]
mod timing {
    use std::time::Instant;

    use candle_core::{Device, Var};

    use super::*;

    /// Development aid: `cargo test --release -p unlearnrec-core linear_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn linear_timing() {
        let (m, k) = (70_839, 64);
        let x = Tensor::from_vec((0..m * k).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect(), (m, k), &Device::Cpu)
            .unwrap();
        let w = Var::from_tensor(&Tensor::eye(k, candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::zeros((1, k), candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap();
        for _ in 0..5 {
            let t = Instant::now();
            let y = linear_leaky(&x, w.as_tensor(), b.as_tensor(), 0.99).unwrap();
            let t1 = t.elapsed();
            let g = y.sum_all().unwrap().backward().unwrap();
            let t2 = t.elapsed();
            std::hint::black_box(g);
            let z = x.matmul(w.as_tensor()).unwrap();
            let t3 = t.elapsed();
            std::hint::black_box(z);
            println!("fused fwd {t1:?} bwd {:?}; candle matmul {:?}", t2 - t1, t3 - t2);
        }
    }
}
