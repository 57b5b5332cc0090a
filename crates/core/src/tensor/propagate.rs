//! The propagation of a training step as one differentiable op: [`propagate_rows`] returns only the rows of
//! the combined layers that the loss reads, and its backward pass is a Horner scheme over the transpose.
//!
//! A loss reads a few thousand rows of the final embeddings `F = s · Σ_{l=k..L} Âˡ E⁰`. Composed from
//! [`super::spmm`], a step computes all `L` layers, adds them in full, gathers the rows, and in the backward
//! pass scatters the rows' gradient into a full table, then runs `L` transposed products and the full-size
//! additions of the sum's gradient. This op instead:
//!
//! - forward: `L − 1` full products, then layer `L` only at the requested rows (it needs their
//!   neighbourhoods, not the whole graph); the layers are dropped as soon as their rows are taken;
//! - backward: `∂L/∂E⁰ = s · Σ_{l≥k} (Âᵀ)ˡ G` with `G` the rows' gradient scattered into the table, evaluated
//!   as `h ← w_l G + Âᵀ h` from `l = L` down; the first product reads only the rows of `G` that are non-zero
//!   (the batch's), so a step costs `2(L − 1)` full products plus two small ones, not `2L` plus the passes.
//!
//! SimGCL's perturbed views add noise to every layer (`E'ˡ = ÂE'ˡ⁻¹ + sign(ÂE'ˡ⁻¹) ⊙ ε·n̂ˡ`); the noise is
//! a constant for the gradient, so the backward pass is the same ([`LayerNoise`]).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::spmm::{spmm_rows_vec, spmm_slots_vec, spmm_vec};
use super::{GradSink, SpMat};
use crate::error::{Error, Result};

/// Rows of noise drawn from one ChaCha stream: row `r`'s noise comes from stream `r / NOISE_ROWS` of the
/// layer's seed, at word `(r % NOISE_ROWS) · d`, so any row can be drawn alone and the result does not
/// depend on the thread count.
pub const NOISE_ROWS: usize = 1024;

/// SimGCL's per-layer noise: layer `l` (1-based) adds `sign(y) ⊙ eps · normalize(U[0,1)^d)` to each row `y`
/// of `ÂE'ˡ⁻¹`, drawn from `seeds[l − 1]` ([`NOISE_ROWS`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNoise {
    /// The noise magnitude `ε`.
    pub eps: f32,
    /// One seed per layer.
    pub seeds: Vec<u64>,
}

/// Adds SimGCL's sign noise to rows of a layer: `rows` are the node ids of `y`'s rows (`y` holds
/// `rows.len()` rows of width `d`).
fn add_noise_rows(y: &mut [f32], d: usize, rows: &[u32], eps: f32, seed: u64) {
    y.par_chunks_mut(d * 64).zip(rows.par_chunks(64)).for_each(|(ys, rs)| {
        let mut buf = Vec::with_capacity(d);
        for (yrow, &r) in ys.chunks_mut(d).zip(rs) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream((r as usize / NOISE_ROWS) as u64);
            rng.set_word_pos(((r as usize % NOISE_ROWS) * d) as u128);
            noise_row(yrow, &mut rng, eps, &mut buf);
        }
    });
}

/// Adds the noise to every row of a full layer `y` (row `r` is node `r`), one stream per [`NOISE_ROWS`].
fn add_noise_all(y: &mut [f32], d: usize, eps: f32, seed: u64) {
    y.par_chunks_mut(NOISE_ROWS * d).enumerate().for_each(|(c, ys)| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(c as u64);
        let mut buf = Vec::with_capacity(d);
        for yrow in ys.chunks_mut(d) {
            noise_row(yrow, &mut rng, eps, &mut buf);
        }
    });
}

/// `y += sign(y) ⊙ eps · u/‖u‖` with `u` the next `d` uniform draws (one 32-bit word each).
fn noise_row(y: &mut [f32], rng: &mut ChaCha8Rng, eps: f32, u: &mut Vec<f32>) {
    u.clear();
    let mut norm = 0f32;
    for _ in 0..y.len() {
        let v = rng.random::<f32>();
        norm += v * v;
        u.push(v);
    }
    let scale = eps / norm.sqrt().max(1e-12);
    for (yy, &v) in y.iter_mut().zip(u.iter()) {
        let s = if *yy > 0.0 {
            1.0
        } else if *yy < 0.0 {
            -1.0
        } else {
            0.0
        };
        *yy += v * (scale * s);
    }
}

/// The op of [`propagate_rows`].
#[derive(Clone, Debug)]
struct Propagation {
    adj: SpMat,
    layers: usize,
    /// The first layer summed (0 or 1).
    first: usize,
    scale: f32,
    /// The requested rows' distinct node ids, sorted (each is propagated and accumulated once).
    distinct: Vec<u32>,
    /// For each requested row, its index in `distinct`.
    slot: Vec<u32>,
    noise: Option<Arc<LayerNoise>>,
    /// Where the backward pass puts the table's gradient instead of returning it ([`GradSink`]).
    sink: Option<GradSink>,
}

impl Propagation {
    fn forward(&self, x: &[f32], d: usize) -> Vec<f32> {
        let (distinct, l_max) = (&self.distinct[..], self.layers);
        // The sum of the layers at the distinct rows; a batch repeats its popular items, whose neighbourhoods
        // are the largest, so each is propagated (layer L) and accumulated once.
        let mut acc = vec![0f32; distinct.len() * d];
        let add_rows = |acc: &mut [f32], layer: &[f32]| {
            acc.par_chunks_mut(d * 64).zip(distinct.par_chunks(64)).for_each(|(a, rs)| {
                for (arow, &r) in a.chunks_mut(d).zip(rs) {
                    for (a, &b) in arow.iter_mut().zip(&layer[r as usize * d..][..d]) {
                        *a += b;
                    }
                }
            });
        };
        if self.first == 0 {
            add_rows(&mut acc, x);
        }
        // Layers 1..L-1 in full (the next one reads them), layer L at the requested rows only.
        let mut prev: Option<Vec<f32>> = None;
        for l in 1..l_max {
            let input = prev.as_deref().unwrap_or(x);
            let mut next = spmm_vec(self.adj.matrix(), input, d);
            if let Some(noise) = &self.noise {
                add_noise_all(&mut next, d, noise.eps, noise.seeds[l - 1]);
            }
            if l >= self.first {
                add_rows(&mut acc, &next);
            }
            prev = Some(next);
        }
        if l_max >= 1 {
            let input = prev.as_deref().unwrap_or(x);
            let mut last = spmm_rows_vec(self.adj.matrix(), input, d, distinct);
            drop(prev);
            if let Some(noise) = &self.noise {
                add_noise_rows(&mut last, d, distinct, noise.eps, noise.seeds[l_max - 1]);
            }
            acc.par_iter_mut().zip(last.par_iter()).for_each(|(a, &b)| *a += b);
        }
        let mut out = vec![0f32; self.slot.len() * d];
        out.par_chunks_mut(d).zip(self.slot.par_iter()).for_each(|(o, &k)| {
            for (o, &a) in o.iter_mut().zip(&acc[k as usize * d..][..d]) {
                *o = a * self.scale;
            }
        });
        out
    }

    /// `s · Σ_{l≥first} (Aᵀ)ˡ G` for the rows' gradient `g` (`(rows, d)`).
    fn backward(&self, g: &[f32], d: usize) -> Vec<f32> {
        let (n, distinct) = (self.adj.n_cols(), &self.distinct[..]);
        let at = self.adj.transpose();
        // `s · G` stored compactly: its distinct rows (duplicates summed), then a zero row; `slots` maps every
        // node to its row there.
        let zero = distinct.len() as u32;
        let mut slots = vec![zero; n];
        for (k, &r) in distinct.iter().enumerate() {
            slots[r as usize] = k as u32;
        }
        let mut compact = vec![0f32; (distinct.len() + 1) * d];
        for (grow, &k) in g.chunks(d).zip(&self.slot) {
            for (a, &b) in compact[k as usize * d..][..d].iter_mut().zip(grow) {
                *a += self.scale * b;
            }
        }
        // In parallel over the table's rows (each distinct row is one of them): added `layers + 1` times.
        let add_g = |h: &mut [f32]| {
            h.par_chunks_mut(d.max(1)).zip(slots.par_iter()).with_min_len(1024).for_each(|(hrow, &k)| {
                if k != zero {
                    hrow.iter_mut().zip(&compact[k as usize * d..][..d]).for_each(|(a, &b)| *a += b);
                }
            });
        };
        if self.layers == 0 {
            let mut h = vec![0f32; n * d];
            add_g(&mut h);
            return h;
        }
        // Layer L's term `Aᵀ G` first, gathering from the compact table (it stays in the cache), then Horner.
        let mut h = spmm_slots_vec(at.matrix(), &compact, d, &slots);
        for l in (0..self.layers).rev() {
            if l >= self.first {
                add_g(&mut h);
            }
            if l > 0 {
                h = spmm_vec(at.matrix(), &h, d);
            }
        }
        h
    }
}

impl CustomOp1 for Propagation {
    fn name(&self) -> &'static str {
        "propagate_rows"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = super::cpu_f32("propagate_rows", storage, layout, "the table")?;
        let d = layout.dims()[1];
        Ok((CpuStorage::F32(self.forward(x, d)), Shape::from((self.slot.len(), d))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let d = grad_res.dims()[1];
        let grad_res = grad_res.contiguous()?;
        let h = {
            let (storage, layout) = grad_res.storage_and_layout();
            let candle_core::Storage::Cpu(storage) = &*storage else {
                candle_core::bail!("propagate_rows: a CPU gradient")
            };
            self.backward(super::cpu_f32("propagate_rows", storage, layout, "the gradient")?, d)
        };
        if let Some(sink) = &self.sink {
            sink.add_dense(h)?;
            return Ok(None);
        }
        Ok(Some(Tensor::from_vec(h, (self.adj.n_cols(), d), grad_res.device())?))
    }
}

/// Rows `rows` (node ids, duplicates allowed) of the combined layers `scale · Σ_{l=first..L} Eˡ` with
/// `E⁰ = e0` and `Eˡ = adj · Eˡ⁻¹` (plus `noise`'s term per layer when given), shape `(rows.len(), d)`;
/// differentiable with respect to `e0` (module docs). `adj` must be square. With a `sink`, the backward pass
/// adds `e0`'s gradient there and returns none to candle ([`GradSink`]).
///
/// # Errors
/// [`Error::Shape`] for a non-square matrix, an `e0` that is not `(n, d)` f32 on the CPU, a row out of range,
/// `first > 1`, or noise without one seed per layer.
#[allow(clippy::too_many_arguments)] // the op's parameters, each a plain value
pub fn propagate_rows(
    adj: &SpMat,
    e0: &Tensor,
    layers: usize,
    first: usize,
    scale: f32,
    rows: &[u32],
    noise: Option<LayerNoise>,
    sink: Option<&GradSink>,
) -> Result<Tensor> {
    let n = adj.n_rows();
    let err = |expected: String, got: String| Error::Shape { op: "propagate_rows", expected, got };
    if adj.n_cols() != n {
        return Err(err("a square matrix".into(), format!("{n}×{}", adj.n_cols())));
    }
    let &[rows_e0, _] = e0.dims() else { return Err(err(format!("({n}, d)"), format!("{:?}", e0.dims()))) };
    if rows_e0 != n || e0.dtype() != DType::F32 || !e0.device().is_cpu() {
        return Err(err(format!("({n}, d) f32 on the CPU"), format!("{:?} {:?}", e0.dims(), e0.dtype())));
    }
    if let Some(&r) = rows.iter().find(|&&r| r as usize >= n) {
        return Err(err(format!("rows below {n}"), format!("row {r}")));
    }
    if first > 1 || (first == 1 && layers == 0) {
        return Err(err("first layer 0, or 1 with at least one layer".into(), format!("{first} of {layers}")));
    }
    if let Some(z) = &noise
        && z.seeds.len() != layers
    {
        return Err(err(format!("{layers} noise seeds"), format!("{}", z.seeds.len())));
    }
    let mut distinct = rows.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let slot = rows.iter().map(|r| distinct.binary_search(r).expect("a requested row") as u32).collect();
    let op = Propagation {
        adj: adj.clone(),
        layers,
        first,
        scale,
        distinct,
        slot,
        noise: noise.map(Arc::new),
        sink: sink.cloned(),
    };
    Ok(e0.contiguous()?.apply_op1(op)?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::graph::{Graph, NormAdj};
    use crate::tensor::spmm;

    fn graph(n_users: usize, n_items: usize, seed: u64) -> SpMat {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut pairs = Vec::new();
        for u in 0..n_users as u32 {
            for _ in 0..rng.random_range(0..6) {
                pairs.push((u, rng.random_range(0..n_items as u32)));
            }
        }
        let (edges, _) = crate::data::Interactions::from_pairs(pairs);
        SpMat::from_norm_adj(&NormAdj::from_graph(&Graph::from_interactions(n_users, n_items, &edges)))
    }

    fn table(n: usize, d: usize, seed: u64) -> Var {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
        Var::from_tensor(&Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap()).unwrap()
    }

    /// The composition the op replaces: every layer in full by `spmm` (noise added in full), summed, scaled,
    /// gathered.
    fn composed(
        adj: &SpMat,
        e0: &Tensor,
        layers: usize,
        first: usize,
        scale: f32,
        rows: &[u32],
        noise: Option<&LayerNoise>,
    ) -> Tensor {
        let (n, d) = e0.dims2().unwrap();
        let mut all = vec![e0.clone()];
        for l in 1..=layers {
            let mut y = spmm(adj, &all[l - 1]).unwrap();
            if let Some(z) = noise {
                let mut yv = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let base = yv.clone();
                add_noise_all(&mut yv, d, z.eps, z.seeds[l - 1]);
                let delta: Vec<f32> = yv.iter().zip(&base).map(|(a, b)| a - b).collect();
                y = (y + Tensor::from_vec(delta, (n, d), &Device::Cpu).unwrap()).unwrap();
            }
            all.push(y);
        }
        let mut acc = all[first].clone();
        for t in &all[first + 1..] {
            acc = (acc + t).unwrap();
        }
        let acc = (acc * scale as f64).unwrap();
        acc.index_select(&Tensor::from_slice(rows, rows.len(), &Device::Cpu).unwrap(), 0).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (k, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-5 + 1e-5 * w.abs(), "{what}[{k}]: {g} vs {w}");
        }
    }

    #[test]
    fn forward_and_gradient_match_the_composition() {
        let (nu, ni) = (70, 50);
        let adj = graph(nu, ni, 1);
        let n = nu + ni;
        // Duplicates, isolated-looking rows, users and items; d = 64 (unrolled) and 5 (generic kernel).
        let rows: Vec<u32> = vec![0, 3, 3, 71, 119, 5, 80, 80, 0, 69];
        for d in [5, 64] {
            let e0 = table(n, d, 2);
            let weight = Tensor::from_vec(
                (0..rows.len() * d).map(|k| ((k * 7 % 13) as f32 - 6.0) / 6.0).collect::<Vec<_>>(),
                (rows.len(), d),
                &Device::Cpu,
            )
            .unwrap();
            for (layers, first, scale) in
                [(3, 0, 1.0), (3, 0, 0.25), (3, 1, 1.0 / 3.0), (1, 0, 0.5), (2, 1, 0.5), (0, 0, 1.0)]
            {
                for noise in [None, Some(LayerNoise { eps: 0.2, seeds: (0..layers as u64).map(|s| 40 + s).collect() })]
                {
                    if noise.is_some() && layers == 0 {
                        continue;
                    }
                    let what = format!("d={d} L={layers} first={first} noise={}", noise.is_some());
                    let got =
                        propagate_rows(&adj, e0.as_tensor(), layers, first, scale, &rows, noise.clone(), None).unwrap();
                    let want = composed(&adj, e0.as_tensor(), layers, first, scale, &rows, noise.as_ref());
                    assert_close(&flat(&got), &flat(&want), &format!("forward {what}"));
                    let g_got = (got * &weight).unwrap().sum_all().unwrap().backward().unwrap();
                    let g_want = (want * &weight).unwrap().sum_all().unwrap().backward().unwrap();
                    let (a, b) = (g_got.get(e0.as_tensor()).unwrap(), g_want.get(e0.as_tensor()).unwrap());
                    assert_close(&flat(a), &flat(b), &format!("gradient {what}"));
                    // The same gradient through a sink, and none left in candle's store.
                    let sink = GradSink::new();
                    let sunk =
                        propagate_rows(&adj, e0.as_tensor(), layers, first, scale, &rows, noise.clone(), Some(&sink))
                            .unwrap();
                    let g_sunk = (sunk * &weight).unwrap().sum_all().unwrap().backward().unwrap();
                    assert!(g_sunk.get(e0.as_tensor()).is_none(), "{what}: a gradient returned beside the sink");
                    let taken = sink.take(n * d).unwrap().expect("the sink holds the gradient");
                    assert_eq!(taken, flat(a), "{what}: the sink's gradient");
                }
            }
        }
    }

    #[test]
    fn the_result_and_gradient_do_not_depend_on_the_thread_count() {
        let adj = graph(3000, 2000, 4);
        let e0 = table(5000, 64, 5);
        let rows: Vec<u32> = (0..4000).map(|k| (k * 7919 % 5000) as u32).collect();
        let noise = LayerNoise { eps: 0.1, seeds: vec![1, 2, 3] };
        let run = || {
            let r = propagate_rows(&adj, e0.as_tensor(), 3, 1, 1.0 / 3.0, &rows, Some(noise.clone()), None).unwrap();
            let g = r.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            (flat(&r), flat(g.get(e0.as_tensor()).unwrap()))
        };
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert!(pool.install(run) == run());
    }

    #[test]
    fn any_row_of_the_noise_can_be_drawn_alone() {
        let (n, d) = (2 * NOISE_ROWS + 17, 3);
        let base: Vec<f32> = (0..n * d).map(|k| (k % 5) as f32 - 2.0).collect();
        let mut all = base.clone();
        add_noise_all(&mut all, d, 0.3, 9);
        assert_ne!(all, base);
        let rows: Vec<u32> = vec![0, 1, 1023, 1024, 1025, 2047, 2048, (n - 1) as u32, 5];
        let mut some: Vec<f32> = rows.iter().flat_map(|&r| base[r as usize * d..][..d].to_vec()).collect();
        add_noise_rows(&mut some, d, &rows, 0.3, 9);
        let want: Vec<f32> = rows.iter().flat_map(|&r| all[r as usize * d..][..d].to_vec()).collect();
        assert_eq!(some, want);
        // Zero entries get no noise (sign 0), non-zero ones move by at most eps.
        assert!(all.iter().zip(&base).all(|(a, b)| if *b == 0.0 { a == b } else { (a - b).abs() <= 0.3 + 1e-6 }));
    }

    #[test]
    fn bad_arguments_are_shape_errors() {
        let adj = graph(6, 4, 3);
        let e0 = table(10, 4, 1);
        assert!(propagate_rows(&adj, e0.as_tensor(), 2, 0, 1.0, &[10], None, None).is_err());
        assert!(propagate_rows(&adj, table(9, 4, 1).as_tensor(), 2, 0, 1.0, &[1], None, None).is_err());
        assert!(propagate_rows(&adj, e0.as_tensor(), 2, 2, 1.0, &[1], None, None).is_err());
        let noise = LayerNoise { eps: 0.1, seeds: vec![1] };
        assert!(propagate_rows(&adj, e0.as_tensor(), 2, 0, 1.0, &[1], Some(noise), None).is_err());
        assert!(propagate_rows(&adj, e0.as_tensor(), 2, 0, 1.0, &[], None, None).unwrap().dims2().unwrap() == (0, 4));
    }
}
