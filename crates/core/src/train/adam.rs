//! Adam (Kingma & Ba 2015) updating candle [`Var`]s in place.
//!
//! candle-nn's `AdamW` builds about ten temporary tensors per parameter per step; for a 70k × 64 table that
//! is most of a training step. This optimizer does the whole update in one rayon pass over the parameter's
//! own storage (an [`InplaceOp1`]), with moments kept as plain vectors.

use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp1, Layout, Storage, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tensor::GradSink;

/// Adam's hyper-parameters (PyTorch defaults; no weight decay, as the reference).
///
/// `weight_decay` is PyTorch Adam's (coupled L2): `wd · p` is added to the gradient before the moments. Training
/// uses it for a whole-table regulariser `reg · ‖E⁰‖²` (`wd = 2 · reg`), the same update as differentiating the
/// term but without its gradient table ([`crate::model::RegTerm::ValueOnly`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Coupled L2 weight decay (0 = none).
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

struct Slot {
    var: Var,
    m: Vec<f32>,
    v: Vec<f32>,
    /// Where fused ops put this variable's gradient beside candle's store ([`Adam::attach_sink`]).
    sink: Option<GradSink>,
}

/// Adam over a set of f32 variables.
pub struct Adam {
    cfg: AdamConfig,
    slots: Vec<Slot>,
    t: u64,
}

struct Update<'a> {
    grad: &'a [f32],
    /// A second gradient contribution added to `grad` (a [`GradSink`]'s), same length.
    grad2: Option<&'a [f32]>,
    state: Mutex<(&'a mut [f32], &'a mut [f32])>,
    lr_t: f32,
    wd: f32,
    b1: f32,
    b2: f32,
    eps_t: f32,
}

impl InplaceOp1 for Update<'_> {
    fn name(&self) -> &'static str {
        "adam-update"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(p) = storage else {
            candle_core::bail!("adam: parameters must be f32");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("adam: parameters must be contiguous");
        };
        let p = &mut p[start..end];
        let mut st = self.state.lock().expect("not poisoned");
        let (m, v) = &mut *st;
        let c = Coeffs { b1: self.b1, b2: self.b2, lr_t: self.lr_t, eps_t: self.eps_t, wd: self.wd };
        const CHUNK: usize = 1 << 14;
        p.par_chunks_mut(CHUNK).zip(m.par_chunks_mut(CHUNK)).zip(v.par_chunks_mut(CHUNK)).enumerate().for_each(
            |(k, ((p, m), v))| {
                let g = &self.grad[k * CHUNK..][..p.len()];
                let g2 = self.grad2.map(|g2| &g2[k * CHUNK..][..p.len()]);
                update_chunk_dispatch(p, m, v, g, g2, c);
            },
        );
        Ok(())
    }
}

/// The scalars of one step's update.
#[derive(Clone, Copy)]
struct Coeffs {
    b1: f32,
    b2: f32,
    lr_t: f32,
    eps_t: f32,
    wd: f32,
}

/// [`update`] over a chunk: `g` (plus `g2` when given, plus `wd · p`) is the gradient.
#[inline(always)]
fn update_chunk(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], g2: Option<&[f32]>, c: Coeffs) {
    let n = p.len();
    let (m, v, g) = (&mut m[..n], &mut v[..n], &g[..n]);
    let Coeffs { b1, b2, lr_t, eps_t, wd } = c;
    match g2 {
        Some(g2) => {
            let g2 = &g2[..n];
            for i in 0..n {
                let g = g[i] + g2[i] + wd * p[i];
                update(&mut p[i], &mut m[i], &mut v[i], g, b1, b2, lr_t, eps_t);
            }
        }
        None if wd == 0.0 => {
            for i in 0..n {
                update(&mut p[i], &mut m[i], &mut v[i], g[i], b1, b2, lr_t, eps_t);
            }
        }
        None => {
            for i in 0..n {
                let g = g[i] + wd * p[i];
                update(&mut p[i], &mut m[i], &mut v[i], g, b1, b2, lr_t, eps_t);
            }
        }
    }
}

/// [`update_chunk`] compiled for AVX2: 8-wide lanes for the square root and the division (SSE2's are 4
/// wide). Rust never fuses a product and a sum, so the results are the same to the bit.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn update_chunk_avx2(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], g2: Option<&[f32]>, c: Coeffs) {
    update_chunk(p, m, v, g, g2, c);
}

/// The best [`update_chunk`] the CPU supports.
fn update_chunk_dispatch(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], g2: Option<&[f32]>, c: Coeffs) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, the only requirement of `update_chunk_avx2`.
        return unsafe { update_chunk_avx2(p, m, v, g, g2, c) };
    }
    update_chunk(p, m, v, g, g2, c);
}

/// One element's Adam update in the bias-folded form of [`Adam::step`] (`lr_t`, `eps_t` from
/// [`step_scalars`]).
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn update(p: &mut f32, m: &mut f32, v: &mut f32, g: f32, b1: f32, b2: f32, lr_t: f32, eps_t: f32) {
    *m = b1 * *m + (1.0 - b1) * g;
    *v = b2 * *v + (1.0 - b2) * g * g;
    *p -= lr_t * *m / (v.sqrt() + eps_t);
}

/// The step size and epsilon of step `t` (1-based) with the bias corrections folded in:
/// `lr·sqrt(1-b2ᵗ)/(1-b1ᵗ)` and `eps·sqrt(1-b2ᵗ)`.
pub(crate) fn step_scalars(cfg: &AdamConfig, t: i32) -> (f32, f32) {
    let c1 = 1.0 - cfg.beta1.powi(t);
    let c2 = (1.0 - cfg.beta2.powi(t)).sqrt();
    ((cfg.lr * c2 / c1) as f32, (cfg.eps * c2) as f32)
}

impl Adam {
    /// An optimizer for `vars` (each must be f32 and contiguous).
    pub fn new(vars: Vec<Var>, cfg: AdamConfig) -> Result<Self> {
        if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
            return Err(Error::config("lr", format!("must be positive, got {}", cfg.lr)));
        }
        if !(cfg.weight_decay.is_finite() && cfg.weight_decay >= 0.0) {
            return Err(Error::config("weight_decay", format!("must be >= 0, got {}", cfg.weight_decay)));
        }
        let slots = vars
            .into_iter()
            .map(|var| {
                let n = var.elem_count();
                Slot { var, m: vec![0.0; n], v: vec![0.0; n], sink: None }
            })
            .collect();
        Ok(Self { cfg, slots, t: 0 })
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        self.cfg.lr
    }

    /// Sets the learning rate.
    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// Reads `var`'s gradient from `sink` too, at every step, added to candle's store's: the fused ops given
    /// the sink ([`crate::model::LossInput::sink`]) write it there. Each step empties the sink.
    ///
    /// # Errors
    /// A variable this optimizer does not update.
    pub fn attach_sink(&mut self, var: &Var, sink: GradSink) -> Result<()> {
        let id = var.as_tensor().id();
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.var.as_tensor().id() == id)
            .ok_or_else(|| Error::config("optimizer", "a gradient sink for a variable it does not update"))?;
        slot.sink = Some(sink);
        Ok(())
    }

    /// One step with the gradients in `grads` plus those in the attached sinks (variables without a gradient
    /// are left alone, moments too).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.t += 1;
        let t = self.t as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        // Bias corrections folded into the step size and epsilon (the "efficient" form of the paper):
        // p -= lr·sqrt(1-b2ᵗ)/(1-b1ᵗ) · m / (sqrt(v) + eps·sqrt(1-b2ᵗ)).
        let (lr_t, eps_t) = step_scalars(&self.cfg, t);
        for slot in &mut self.slots {
            let sunk = match &slot.sink {
                Some(sink) => sink.take(slot.m.len())?,
                None => None,
            };
            let stored = grads.get(slot.var.as_tensor()).map(Tensor::contiguous).transpose()?;
            let guard = stored.as_ref().map(Tensor::storage_and_layout);
            let stored: Option<&[f32]> = match &guard {
                Some((gs, gl)) => {
                    let Storage::Cpu(CpuStorage::F32(gv)) = &**gs else {
                        return Err(Error::config("optimizer", "gradients must be f32 on the CPU"));
                    };
                    let (s, e) = gl.contiguous_offsets().expect("contiguous() was called");
                    Some(&gv[s..e])
                }
                None => None,
            };
            let (grad, grad2) = match (stored, sunk.as_deref()) {
                (None, None) => continue,
                (Some(g), None) | (None, Some(g)) => (g, None),
                (Some(g), Some(g2)) => (g, Some(g2)),
            };
            if grad.len() != slot.m.len() {
                return Err(Error::config("optimizer", "a gradient of another size than its variable"));
            }
            let up = Update {
                grad,
                grad2,
                state: Mutex::new((&mut slot.m, &mut slot.v)),
                lr_t,
                wd: self.cfg.weight_decay as f32,
                b1: b1 as f32,
                b2: b2 as f32,
                eps_t,
            };
            slot.var.as_tensor().inplace_op1(&up)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// The dispatched update (AVX2 where the CPU has it) and the portable one agree to the bit, with and
    /// without a second gradient and weight decay.
    #[test]
    fn the_dispatched_update_is_the_portable_one() {
        let n = 1003;
        let x = |k: usize, s: usize| ((k * s % 211) as f32 - 105.0) / 37.0;
        let c = Coeffs { b1: 0.9, b2: 0.999, lr_t: 1e-3, eps_t: 1e-8, wd: 0.0 };
        for (g2, wd) in [(false, 0.0), (false, 0.01), (true, 0.0), (true, 0.01)] {
            let g: Vec<f32> = (0..n).map(|k| x(k, 7)).collect();
            let g2: Option<Vec<f32>> = g2.then(|| (0..n).map(|k| x(k, 13)).collect());
            let c = Coeffs { wd, ..c };
            let run = |dispatch: bool| {
                let (mut p, mut m, mut v): (Vec<f32>, Vec<f32>, Vec<f32>) =
                    ((0..n).map(|k| x(k, 3)).collect(), (0..n).map(|k| x(k, 5) / 10.0).collect(), vec![0.5; n]);
                for _ in 0..3 {
                    if dispatch {
                        update_chunk_dispatch(&mut p, &mut m, &mut v, &g, g2.as_deref(), c);
                    } else {
                        update_chunk(&mut p, &mut m, &mut v, &g, g2.as_deref(), c);
                    }
                }
                (p, m, v)
            };
            assert_eq!(run(true), run(false));
        }
    }

    /// Reference Adam in f64, textbook form.
    fn reference(x0: f64, grads: impl Fn(f64) -> f64, steps: usize, lr: f64) -> f64 {
        let (mut x, mut m, mut v) = (x0, 0.0, 0.0);
        for t in 1..=steps {
            let g = grads(x);
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            let mh = m / (1.0 - 0.9f64.powi(t as i32));
            let vh = v / (1.0 - 0.999f64.powi(t as i32));
            x -= lr * mh / (vh.sqrt() + 1e-8);
        }
        x
    }

    #[test]
    fn matches_textbook_adam_on_a_quadratic() {
        let var = Var::from_tensor(&Tensor::new(&[3.0f32, -2.0], &Device::Cpu).unwrap()).unwrap();
        let mut opt = Adam::new(vec![var.clone()], AdamConfig { lr: 0.1, ..AdamConfig::default() }).unwrap();
        for _ in 0..50 {
            // loss = sum((x - 1)^2)
            let loss = (var.as_tensor() - 1.0).unwrap().sqr().unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        let got = var.as_tensor().to_vec1::<f32>().unwrap();
        let want = [reference(3.0, |x| 2.0 * (x - 1.0), 50, 0.1), reference(-2.0, |x| 2.0 * (x - 1.0), 50, 0.1)];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-4, "{g} vs {w}");
        }
    }

    #[test]
    fn weight_decay_is_the_l2_terms_gradient_added() {
        // loss = sum((x - 1)^2) + 0.5 * 0.3 * sum(x^2), the L2 part left to the optimiser as wd = 0.3.
        let var = Var::from_tensor(&Tensor::new(&[3.0f32, -2.0], &Device::Cpu).unwrap()).unwrap();
        let cfg = AdamConfig { lr: 0.1, weight_decay: 0.3, ..AdamConfig::default() };
        let mut opt = Adam::new(vec![var.clone()], cfg).unwrap();
        for _ in 0..50 {
            let loss = (var.as_tensor() - 1.0).unwrap().sqr().unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        let got = var.as_tensor().to_vec1::<f32>().unwrap();
        let g = |x: f64| 2.0 * (x - 1.0) + 0.3 * x;
        let want = [reference(3.0, g, 50, 0.1), reference(-2.0, g, 50, 0.1)];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-4, "{g} vs {w}");
        }
    }

    #[test]
    fn rejects_a_bad_learning_rate() {
        assert!(Adam::new(vec![], AdamConfig { lr: -1.0, ..AdamConfig::default() }).is_err());
    }
}
