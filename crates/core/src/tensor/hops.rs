//! The influence encoder's propagation over a request's IDM as one differentiable op ([`encoder_hops`]).
//!
//! Composed from [`super::spmm`], a pre-training step keeps every hop `Hˡ = Â_Δ Hˡ⁻¹`, each partial sum of
//! `S = Σ_l Hˡ`, each hop of the withdraw term `Wᴸ = Â_Δᴸ (w ⊙ E)`, the dropped copies' hops `D_l Hˡ` of the
//! contrastive term (of which the loss reads a few rows) and `S − ρ·Wᴸ` alive for the backward pass, with as
//! many table-sized gradients: about twenty tables. The op keeps only its output — `X = S − ρ·Wᴸ` and the
//! requested rows of both views of every hop — and its backward pass is Horner's scheme over `Â_Δᵀ`:
//!
//! ```text
//! a_L = G_X + G_{P_{L−1}},   a_l = G_X + Â_Δᵀ a_{l+1} + D_lᵀ G_{R_l} + G_{P_{l−1}}   (l = L−1 … 0),   ∂/∂H⁰ = a_0
//! ∂/∂w = rowsum(E ⊙ (Â_Δᵀ)ᴸ (−ρ·G_X))
//! ```
//!
//! where `G_{R_l}` and `G_{P_l}` are the gradients of the requested rows of `D_l Hˡ` and of `Hˡ⁺¹`. Every term
//! of `a_l − G_X` comes out of `Â_Δᵀ`, a dropped copy's transpose or a view's rows, so it lives on the few rows
//! that the request and the views touch: the scheme runs on those rows alone and adds `G_X` once, in place;
//! the scheme allocates no table-sized temporary.
//!
//! [`encoder_table`] goes one step further for pre-training, where the MLP is frozen: the same op applies the
//! MLP to `X` and adds the frozen base table, returning `Ẽ⁰ = E⁰ + MLP(X)` in place of `X`. It keeps only the
//! signs of each layer's output (its activation's slope, one bit an element) and its backward pass runs the
//! layers' input gradients before Horner's scheme, so neither `X` nor `Δ` exists as a tensor of candle's
//! graph, nor their gradients and that of the sum (each a table of zeros plus an addition in candle's
//! gradient store); `Ẽ⁰` is a slice of the op's output.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::linear::with_f32;
use super::spmm::spmm_rows_vec;
use super::{GradSink, SpMat, spmm_vec};
use crate::error::{Error, Result};

struct EncoderHops {
    idm: SpMat,
    /// One dropped copy of the IDM per hop, or none.
    dropped: Vec<SpMat>,
    /// The original final embeddings `E` `(n, d)`, a constant (contiguous; shared, not copied).
    e_fnl: Tensor,
    rho: f32,
    hops: usize,
    /// The rows of each view returned (distinct node ids, sorted; empty without dropped copies).
    rows: Vec<u32>,
    /// The frozen MLP and base table applied to `X` ([`encoder_table`]), or none ([`encoder_hops`]).
    head: Option<Head>,
}

/// A frozen MLP (`LeakyReLU_α(x·W + b)` per layer, each `W` `(k, n)` row-major) and base table `E⁰`
/// `(n_nodes, d)`: the op's first rows become `E⁰ + MLP(X)`.
struct Head {
    /// Each layer's `(W, b)`, or `None` where `W` is the identity and `b` is `+0`: the activation alone, the
    /// same values to the bit without two table-sized products per layer (a new encoder's layers, which
    /// pre-training keeps frozen, are all such).
    layers: Vec<Option<(Vec<f32>, Vec<f32>)>>,
    alpha: f32,
    /// `E⁰` `(n, d)`, contiguous (shared, not copied).
    base: Tensor,
    /// The signs of each layer's output from the forward pass ([`super::linear::positive_mask`]): the
    /// backward pass reads only its activation's slope.
    saved: Mutex<Vec<Vec<u64>>>,
    /// Where `H⁰`'s gradient goes instead of candle's store, if anywhere ([`GradSink`]).
    sink: Option<GradSink>,
}

impl Head {
    /// Overwrites `x` `(n_nodes, d)` with `E⁰ + MLP(x)` (`base` = `E⁰`'s data), keeping the signs of the
    /// layers' outputs.
    fn forward(&self, x: &mut [f32], base: &[f32]) {
        let mut saved = Vec::with_capacity(self.layers.len());
        let mut y: Option<Vec<f32>> = None;
        for layer in &self.layers {
            let input: &[f32] = y.as_deref().unwrap_or(&*x);
            let out = match layer {
                Some((w, b)) => super::linear::forward(input, w, b, w.len() / b.len(), self.alpha),
                None => super::linear::activation(input, self.alpha),
            };
            saved.push(super::linear::positive_mask(&out));
            y = Some(out);
        }
        match y {
            Some(delta) => x.par_iter_mut().zip(base.par_iter().zip(&delta)).for_each(|(o, (e, d))| *o = e + d),
            None => x.par_iter_mut().zip(base).for_each(|(o, e)| *o += e),
        }
        *self.saved.lock().unwrap_or_else(|p| p.into_inner()) = saved;
    }

    /// `∂L/∂X` from `∂L/∂Ẽ⁰` `g_table`: the layers' input gradients, last layer first. The signs stay (a
    /// graph may be differentiated more than once); they go with the graph.
    fn backward(&self, g_table: &[f32]) -> candle_core::Result<Vec<f32>> {
        let saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        if saved.len() != self.layers.len() {
            candle_core::bail!("encoder_table: a backward pass without its forward pass")
        }
        let mut g: Option<Vec<f32>> = None;
        for (layer, positive) in self.layers.iter().zip(saved.iter()).rev() {
            let input = g.as_deref().unwrap_or(g_table);
            g = Some(match layer {
                Some((w, b)) => {
                    let n = b.len();
                    super::linear::input_gradient(w, positive, input, w.len() / n, n, self.alpha)
                }
                None => super::linear::activation_gradient(positive, input, self.alpha),
            });
        }
        Ok(g.unwrap_or_else(|| g_table.to_vec()))
    }
}

impl EncoderHops {
    /// The output for `H⁰`, `w` and `E`'s data `e_fnl` (`base`: `E⁰`'s data, read with a head).
    fn forward(&self, h0: &[f32], w: &[f32], e_fnl: &[f32], base: &[f32], d: usize) -> Vec<f32> {
        let n = w.len();
        let a = self.idm.matrix();
        let mut out = Vec::with_capacity((n + 2 * self.hops * self.rows.len()) * d);
        out.extend_from_slice(h0);
        let k = self.rows.len();
        let (mut dropped_rows, mut hop_rows) =
            (Vec::with_capacity(self.hops * k * d), Vec::with_capacity(self.hops * k * d));
        let mut prev: Option<Vec<f32>> = None;
        for l in 0..self.hops {
            let input = prev.as_deref().unwrap_or(h0);
            if let Some(m) = self.dropped.get(l) {
                dropped_rows.extend(spmm_rows_vec(m.matrix(), input, d, &self.rows));
            }
            let next = spmm_vec(a, input, d);
            out.iter_mut().zip(&next).for_each(|(s, x)| *s += x);
            if k > 0 {
                for &r in &self.rows {
                    hop_rows.extend_from_slice(&next[r as usize * d..][..d]);
                }
            }
            prev = Some(next);
        }
        drop(prev);
        // The withdraw term (skipped at `ρ = 0`, where the caller subtracts it itself).
        if self.rho != 0.0 {
            let mut wl: Vec<f32> = Vec::with_capacity(n * d);
            for (row, &wn) in e_fnl.chunks(d).zip(w) {
                wl.extend(row.iter().map(|&e| e * wn));
            }
            for _ in 0..self.hops {
                wl = spmm_vec(a, &wl, d);
            }
            out.iter_mut().zip(&wl).for_each(|(s, x)| *s -= x * self.rho);
        }
        if let Some(head) = &self.head {
            head.forward(&mut out, base);
        }
        out.extend(dropped_rows);
        out.extend(hop_rows);
        out
    }

    /// Gradients of `H⁰` `(n, d)` and `w` `(n, 1)` for the gradients of `X` (`gx`, `(n, d)`, turned into
    /// `H⁰`'s) and of the views' rows (`rest`); `e_fnl` is `E`'s data.
    ///
    /// Horner's scheme with `a_l = G_X + s_l`: every term of `s_l` is a product by `Â_Δᵀ` or a dropped copy's
    /// transpose, or a view's rows, so `s_l` lives on the rows `Q` where one of those is non-empty (a
    /// request's nodes and the contrast nodes: a few thousand of a table's rows) and is kept compact; `G_X`
    /// is added once, in place, at the end. No table-sized temporary is allocated.
    fn backward(&self, mut gx: Vec<f32>, rest: &[f32], e_fnl: &[f32], n: usize, d: usize) -> (Vec<f32>, Vec<f32>) {
        let at = self.idm.transpose();
        let at = at.matrix();
        let dropped_t: Vec<SpMat> = self.dropped.iter().map(SpMat::transpose).collect();
        let k = self.rows.len();
        let (gr, gp) = rest.split_at(self.hops * k * d);
        // `Q` and each node's position in it (`NONE` outside).
        const NONE: u32 = u32::MAX;
        let mut in_q = vec![false; n];
        let nonempty = |m: &crate::graph::SparseMat, in_q: &mut [bool]| {
            m.indptr().windows(2).zip(in_q.iter_mut()).for_each(|(w, q)| *q |= w[1] > w[0]);
        };
        nonempty(at, &mut in_q);
        dropped_t.iter().for_each(|m| nonempty(m.matrix(), &mut in_q));
        self.rows.iter().for_each(|&r| in_q[r as usize] = true);
        let q: Vec<u32> = (0..n as u32).filter(|&r| in_q[r as usize]).collect();
        drop(in_q);
        let mut at_q = vec![NONE; n];
        q.iter().enumerate().for_each(|(j, &r)| at_q[r as usize] = j as u32);
        let in_q_at = |c: u32| Some(at_q[c as usize] as usize).filter(|_| at_q[c as usize] != NONE);
        // Rows `Q` of `M · y` for a matrix whose non-empty rows are all in `Q`, reading row `c` of `y` with
        // `read(c, acc_row, v)` (adds `v · y_c` into the row).
        let product = |m: &crate::graph::SparseMat, read: &(dyn Fn(u32, &mut [f32], f32) + Sync)| -> Vec<f32> {
            let mut out = vec![0f32; q.len() * d];
            if d > 0 {
                out.par_chunks_mut(d).zip(q.par_iter()).for_each(|(row, &r)| {
                    let (cols, vals) = m.row(r as usize);
                    cols.iter().zip(vals).for_each(|(&c, &v)| read(c, row, v));
                });
            }
            out
        };
        let axpy = |row: &mut [f32], src: &[f32], v: f32| row.iter_mut().zip(src).for_each(|(o, x)| *o += v * x);
        // `H^{l+1}`'s requested rows' gradient, added into `s`.
        let add_hop_rows = |s: &mut [f32], l: usize| {
            for (j, &r) in self.rows.iter().enumerate() {
                let dst = &mut s[at_q[r as usize] as usize * d..][..d];
                dst.iter_mut().zip(&gp[(l * k + j) * d..][..d]).for_each(|(x, g)| *x += g);
            }
        };
        let mut s = vec![0f32; q.len() * d];
        if self.hops > 0 {
            add_hop_rows(&mut s, self.hops - 1);
        }
        for l in (0..self.hops).rev() {
            // `Â_Δᵀ (G_X + s)`.
            let (g, s_prev) = (&gx, &s);
            let mut next = product(at, &|c, row, v| {
                axpy(row, &g[c as usize * d..][..d], v);
                if let Some(j) = in_q_at(c) {
                    axpy(row, &s_prev[j * d..][..d], v);
                }
            });
            if let Some(m) = dropped_t.get(l) {
                // `D_lᵀ G_{R_l}`: the views' rows are read at their positions among `rows`.
                let grl = &gr[l * k * d..(l + 1) * k * d];
                let back = product(m.matrix(), &|c, row, v| {
                    if let Ok(j) = self.rows.binary_search(&c) {
                        axpy(row, &grl[j * d..][..d], v);
                    }
                });
                next.iter_mut().zip(&back).for_each(|(x, b)| *x += b);
            }
            if l > 0 {
                add_hop_rows(&mut next, l - 1);
            }
            s = next;
        }
        // `∂/∂w = rowsum(E ⊙ (Â_Δᵀ)ᴸ (−ρ·G_X))`, on `Q` after the first hop.
        let gw = if self.rho == 0.0 {
            vec![0.0; n]
        } else if self.hops == 0 {
            gx.chunks(d)
                .zip(e_fnl.chunks(d))
                .map(|(g, e)| -self.rho * g.iter().zip(e).map(|(x, y)| x * y).sum::<f32>())
                .collect()
        } else {
            let (g, rho) = (&gx, self.rho);
            let mut b = product(at, &|c, row, v| axpy(row, &g[c as usize * d..][..d], -rho * v));
            for _ in 1..self.hops {
                let prev = &b;
                b = product(at, &|c, row, v| {
                    if let Some(j) = in_q_at(c) {
                        axpy(row, &prev[j * d..][..d], v);
                    }
                });
            }
            let mut gw = vec![0f32; n];
            for (j, &r) in q.iter().enumerate() {
                let e = &e_fnl[r as usize * d..][..d];
                gw[r as usize] = b[j * d..][..d].iter().zip(e).map(|(x, y)| x * y).sum();
            }
            gw
        };
        // `a_0 = G_X + s_0`, in place.
        for (j, &r) in q.iter().enumerate() {
            gx[r as usize * d..][..d].iter_mut().zip(&s[j * d..][..d]).for_each(|(x, v)| *x += v);
        }
        (gx, gw)
    }
}

impl CustomOp2 for EncoderHops {
    fn name(&self) -> &'static str {
        if self.head.is_some() { "encoder_table" } else { "encoder_hops" }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let h0 = super::cpu_f32("encoder_hops", s1, l1, "H⁰")?;
        let w = super::cpu_f32("encoder_hops", s2, l2, "w")?;
        let &[n, d] = l1.dims() else { candle_core::bail!("encoder_hops: H⁰ must be (n, d), got {:?}", l1.dims()) };
        let out = with_f32(&self.e_fnl, |e| match &self.head {
            Some(head) => with_f32(&head.base, |b| self.forward(h0, w, e, b, d)),
            None => Ok(self.forward(h0, w, e, &[], d)),
        })??;
        Ok((CpuStorage::F32(out), Shape::from((n + 2 * self.hops * self.rows.len(), d))))
    }

    fn bwd(
        &self,
        arg1: &Tensor,
        _arg2: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, d) = arg1.dims2()?;
        let grad = grad_res.contiguous()?;
        // Borrowed, not copied: the gradient is table-sized.
        let (gh, gw) = with_f32(&grad, |g: &[f32]| -> candle_core::Result<_> {
            let (gx, rest) = g.split_at(n * d);
            with_f32(&self.e_fnl, |e| -> candle_core::Result<_> {
                Ok(match &self.head {
                    Some(head) => self.backward(head.backward(gx)?, rest, e, n, d),
                    None => self.backward(gx.to_vec(), rest, e, n, d),
                })
            })?
        })??;
        let dev = arg1.device();
        let gh = match self.head.as_ref().and_then(|h| h.sink.as_ref()) {
            Some(sink) => {
                sink.add_dense(gh)?;
                None
            }
            None => Some(Tensor::from_vec(gh, (n, d), dev)?),
        };
        Ok((gh, Some(Tensor::from_vec(gw, (n, 1), dev)?)))
    }
}

/// The influence encoder's hops over `idm` (`Â_Δ`, `n × n`) as one op: rows `0..n` of the result are
/// `X = Σ_{l=0..hops} Â_Δˡ H⁰ − ρ·Â_Δ^hops (w ⊙ E)`; with dropped copies `D_l` (none or one per hop,
/// `l < hops`), blocks of `rows.len()` rows follow: the rows `rows` (distinct, sorted node ids) of
/// `D_l Â_Δˡ H⁰` for each `l`, then those of `Â_Δˡ⁺¹ H⁰` for each `l` (the contrastive term's two views).
/// Differentiable with respect to `h0` `(n, d)` and `w` `(n, 1)`; `e_fnl` `(n, d)` is a constant. Keeps
/// only its output for the backward pass (module docs).
///
/// # Errors
/// [`Error::Shape`] for inputs of other shapes, a non-square IDM, a dropped copy of another size, a wrong
/// number of dropped copies, rows without dropped copies, or rows that are out of range, repeated or unsorted.
#[allow(clippy::too_many_arguments)]
pub fn encoder_hops(
    idm: &SpMat,
    dropped: &[SpMat],
    h0: &Tensor,
    w: &Tensor,
    e_fnl: &Tensor,
    rho: f64,
    hops: usize,
    rows: &[u32],
) -> Result<Tensor> {
    let op = checked_op("encoder_hops", idm, dropped, h0, w, e_fnl, rho, hops, rows)?;
    Ok(h0.contiguous()?.apply_op2(&w.contiguous()?, op)?)
}

/// [`encoder_hops`] followed by a frozen MLP and base table, in one op: rows `0..n` of the result are
/// `Ẽ⁰ = E⁰ + MLP(X)` (`base` `(n, d)`; `mlp` the layers `(W (k, n), b (n,) or (1, n))`, each
/// `LeakyReLU_α(x·W + b)` with `α = alpha` in `[0, 1]`, the last of width `d`), the views' rows follow as in
/// [`encoder_hops`]. Differentiable with respect to `h0` and `w` only: pre-training's encoder, whose MLP
/// and backbone are frozen. Keeps only its output and the signs of each layer's output for the backward
/// pass. With a `sink`, `h0`'s gradient goes there ([`GradSink`]) and none to candle's store.
///
/// # Errors
/// Those of [`encoder_hops`]; [`Error::Shape`] for layers or a base table that do not fit, or a slope outside
/// `[0, 1]`.
#[allow(clippy::too_many_arguments)]
pub fn encoder_table(
    idm: &SpMat,
    dropped: &[SpMat],
    h0: &Tensor,
    w: &Tensor,
    e_fnl: &Tensor,
    rho: f64,
    hops: usize,
    rows: &[u32],
    mlp: &[(Tensor, Tensor)],
    alpha: f64,
    base: &Tensor,
    sink: Option<&GradSink>,
) -> Result<Tensor> {
    let mut op = checked_op("encoder_table", idm, dropped, h0, w, e_fnl, rho, hops, rows)?;
    let err = |expected: String, got: String| Error::Shape { op: "encoder_table", expected, got };
    let d = h0.dims2()?.1;
    if base.dims() != h0.dims() {
        return Err(err(format!("a base table {:?}", h0.dims()), format!("{:?}", base.dims())));
    }
    if !(0.0..=1.0).contains(&alpha) {
        return Err(err("a slope in [0, 1]".into(), alpha.to_string()));
    }
    let mut width = d;
    let mut layers = Vec::with_capacity(mlp.len());
    for (k, (wt, b)) in mlp.iter().enumerate() {
        let (wk, wn) = wt.dims2()?;
        if wk != width || b.elem_count() != wn {
            return Err(err(
                format!("layer {k}: W ({width}, n) and b (n,)"),
                format!("W {:?}, b {:?}", wt.dims(), b.dims()),
            ));
        }
        let (wv, bv) = (flat_f32(wt)?, flat_f32(b)?);
        let identity = wk == wn
            && bv.iter().all(|x| x.to_bits() == 0)
            && wv.iter().enumerate().all(|(e, &x)| x == if e / wn == e % wn { 1.0 } else { 0.0 });
        layers.push((!identity).then_some((wv, bv)));
        width = wn;
    }
    if width != d {
        return Err(err(format!("an MLP ending at width {d}"), format!("width {width}")));
    }
    op.head = Some(Head {
        layers,
        alpha: alpha as f32,
        base: base.detach().contiguous()?,
        saved: Mutex::new(Vec::new()),
        sink: sink.cloned(),
    });
    Ok(h0.contiguous()?.apply_op2(&w.contiguous()?, op)?)
}

fn flat_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.detach().flatten_all()?.to_vec1::<f32>()?)
}

/// The op of [`encoder_hops`] after checking its arguments (`op` names it in errors).
#[allow(clippy::too_many_arguments)]
fn checked_op(
    op: &'static str,
    idm: &SpMat,
    dropped: &[SpMat],
    h0: &Tensor,
    w: &Tensor,
    e_fnl: &Tensor,
    rho: f64,
    hops: usize,
    rows: &[u32],
) -> Result<EncoderHops> {
    let n = idm.n_rows();
    let err = |expected: String, got: String| Error::Shape { op, expected, got };
    let (hn, d) = h0.dims2()?;
    if idm.n_cols() != n || hn != n {
        return Err(err(
            format!("a square {n}×{n} IDM and H⁰ ({n}, d)"),
            format!("{:?} and {:?}", (n, idm.n_cols()), h0.dims()),
        ));
    }
    if w.dims() != [n, 1] || e_fnl.dims() != [n, d] {
        return Err(err(format!("w ({n}, 1) and E ({n}, {d})"), format!("{:?} and {:?}", w.dims(), e_fnl.dims())));
    }
    if !(dropped.is_empty() || dropped.len() == hops) || dropped.iter().any(|m| m.n_rows() != n || m.n_cols() != n) {
        return Err(err(format!("no dropped copies or {hops} of {n}×{n}"), format!("{} copies", dropped.len())));
    }
    if dropped.is_empty() && !rows.is_empty() {
        return Err(err(
            "no rows without dropped copies (the views are their hops)".into(),
            format!("{} rows", rows.len()),
        ));
    }
    if rows.windows(2).any(|p| p[0] >= p[1]) || rows.last().is_some_and(|&r| r as usize >= n) {
        return Err(err(format!("distinct sorted rows below {n}"), format!("{} rows", rows.len())));
    }
    for t in [h0, w, e_fnl] {
        if t.dtype() != DType::F32 || !t.device().is_cpu() {
            return Err(err("f32 tensors on the CPU".into(), format!("{:?}", t.dtype())));
        }
    }
    Ok(EncoderHops {
        idm: idm.clone(),
        dropped: dropped.to_vec(),
        e_fnl: e_fnl.detach().contiguous()?,
        rho: rho as f32,
        hops,
        rows: rows.to_vec(),
        head: None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::data::Interactions;
    use crate::graph::{NormAdj, SparseMat};
    use crate::tensor::spmm;

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn random(n: usize, scale: f32, rng: &mut ChaCha8Rng) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-scale..scale)).collect()
    }

    /// The same quantities composed from `spmm` (as the encoder computed them before the op).
    #[allow(clippy::too_many_arguments)]
    fn composed(
        idm: &SpMat,
        dropped: &[SpMat],
        h0: &Tensor,
        w: &Tensor,
        e: &Tensor,
        rho: f64,
        hops: usize,
        rows: &[u32],
    ) -> Tensor {
        let (mut prev, mut s) = (h0.clone(), h0.clone());
        let (mut parts, mut hop_parts) = (Vec::new(), Vec::new());
        let idx = Tensor::from_vec(rows.to_vec(), rows.len(), &Device::Cpu).unwrap();
        for l in 0..hops {
            let next = spmm(idm, &prev).unwrap();
            if let Some(m) = dropped.get(l) {
                parts.push(spmm(m, &prev).unwrap().index_select(&idx, 0).unwrap());
                hop_parts.push(next.index_select(&idx, 0).unwrap());
            }
            s = (s + &next).unwrap();
            prev = next;
        }
        let mut wl = e.broadcast_mul(w).unwrap();
        for _ in 0..hops {
            wl = spmm(idm, &wl).unwrap();
        }
        let x = (s - (wl * rho).unwrap()).unwrap();
        Tensor::cat(&[vec![x], parts, hop_parts].concat(), 0).unwrap()
    }

    #[test]
    fn output_and_gradients_match_the_composition() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (nu, ni, d) = (9usize, 7usize, 5usize);
        let n = nu + ni;
        let pairs: Vec<(u32, u32)> =
            (0..20).map(|_| (rng.random_range(0..nu as u32), rng.random_range(0..ni as u32))).collect();
        let request = Interactions::from_pairs(pairs).0;
        // A request on most nodes, and one on four (the backward pass keeps its sums on the rows that the
        // request and the views touch: here a few of the table's).
        let small = Interactions::from_pairs(vec![(1, 2), (1, 5), (4, 2)]).0;
        let idms = [request, small].map(|r| SpMat::from_norm_adj(&NormAdj::idm(nu, ni, &r)));
        let e = Tensor::from_vec(random(n * d, 1.0, &mut rng), (n, d), &Device::Cpu).unwrap();
        let rows: Vec<u32> = vec![0, 2, 3, 10, 12];
        // ρ = 0 skips the withdraw term (its gradient is then zero).
        for (idm, (hops, with_dropped, rho)) in idms.iter().flat_map(|idm| {
            [(0, false, 0.3), (1, true, 0.3), (2, false, 0.0), (3, true, 0.3), (2, true, 0.0)].map(|c| (idm, c))
        }) {
            let dropped: Vec<SpMat> = if with_dropped {
                (0..hops).map(|_| SpMat::new(Arc::new(idm.matrix().drop_entries(0.6, &mut rng)))).collect()
            } else {
                Vec::new()
            };
            let rows: &[u32] = if with_dropped { &rows } else { &[] };
            let h0 = Var::from_vec(random(n * d, 1.0, &mut rng), (n, d), &Device::Cpu).unwrap();
            let w = Var::from_vec(random(n, 1.0, &mut rng), (n, 1), &Device::Cpu).unwrap();
            let probe = Tensor::from_vec(
                random((n + 2 * dropped.len() * rows.len()) * d, 1.0, &mut rng),
                (n + 2 * dropped.len() * rows.len(), d),
                &Device::Cpu,
            )
            .unwrap();
            let got = encoder_hops(idm, &dropped, h0.as_tensor(), w.as_tensor(), &e, rho, hops, rows).unwrap();
            let want = composed(idm, &dropped, h0.as_tensor(), w.as_tensor(), &e, rho, hops, rows);
            let close = |a: &Tensor, b: &Tensor, what: &str| {
                let (a, b) = (flat(a), flat(b));
                assert_eq!(a.len(), b.len(), "{what}");
                for (k, (x, y)) in a.iter().zip(&b).enumerate() {
                    assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{what} (hops {hops}) [{k}]: {x} vs {y}");
                }
            };
            close(&got, &want, "output");
            let g_got = (&got * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            let g_want = (&want * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            close(g_got.get(&h0).unwrap(), g_want.get(&h0).unwrap(), "∂/∂H⁰");
            match g_want.get(&w) {
                Some(want) => close(g_got.get(&w).unwrap(), want, "∂/∂w"),
                // candle's composition drops the gradient of a term scaled by 0.
                None => assert!(flat(g_got.get(&w).unwrap()).iter().all(|&x| x == 0.0), "∂/∂w at ρ = 0"),
            }
        }
    }

    #[test]
    fn bad_arguments_are_shape_errors() {
        let idm = SpMat::new(Arc::new(SparseMat::from_dense(2, 2, &[0.0, 1.0, 1.0, 0.0])));
        let h0 = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((2, 1), DType::F32, &Device::Cpu).unwrap();
        let e = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let bad = |r: Result<Tensor>| assert!(matches!(r, Err(Error::Shape { op: "encoder_hops", .. })), "{r:?}");
        bad(encoder_hops(&idm, &[], &h0, &h0, &e, 0.1, 1, &[]));
        bad(encoder_hops(&idm, &[], &h0, &w, &w, 0.1, 1, &[]));
        bad(encoder_hops(&idm, std::slice::from_ref(&idm), &h0, &w, &e, 0.1, 2, &[]));
        bad(encoder_hops(&idm, std::slice::from_ref(&idm), &h0, &w, &e, 0.1, 1, &[1, 0]));
        bad(encoder_hops(&idm, &[], &h0, &w, &e, 0.1, 1, &[0]));
        bad(encoder_hops(&idm, std::slice::from_ref(&idm), &h0, &w, &e, 0.1, 1, &[2]));
        assert!(encoder_hops(&idm, std::slice::from_ref(&idm), &h0, &w, &e, 0.1, 1, &[0, 1]).is_ok());
    }

    /// The encoder table op's inputs on a 9 × 7 graph, d = 4: a 20-pair request's IDM, `E`, a base table, two
    /// hops with a dropped copy each, four view rows; and the generator, to draw the rest from.
    struct TableCase {
        rng: ChaCha8Rng,
        n: usize,
        d: usize,
        idm: SpMat,
        e: Tensor,
        base: Tensor,
        hops: usize,
        dropped: Vec<SpMat>,
        rows: Vec<u32>,
    }

    fn table_case(seed: u64) -> TableCase {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (nu, ni, d) = (9usize, 7usize, 4usize);
        let n = nu + ni;
        let pairs: Vec<(u32, u32)> =
            (0..20).map(|_| (rng.random_range(0..nu as u32), rng.random_range(0..ni as u32))).collect();
        let idm = SpMat::from_norm_adj(&NormAdj::idm(nu, ni, &Interactions::from_pairs(pairs).0));
        let e = Tensor::from_vec(random(n * d, 1.0, &mut rng), (n, d), &Device::Cpu).unwrap();
        let base = Tensor::from_vec(random(n * d, 1.0, &mut rng), (n, d), &Device::Cpu).unwrap();
        let hops = 2;
        let dropped: Vec<SpMat> =
            (0..hops).map(|_| SpMat::new(Arc::new(idm.matrix().drop_entries(0.6, &mut rng)))).collect();
        let rows: Vec<u32> = vec![1, 4, 9, 15];
        TableCase { rng, n, d, idm, e, base, hops, dropped, rows }
    }

    #[test]
    fn identity_layers_give_the_products_values_to_the_bit() {
        let TableCase { mut rng, n, d, idm, e, base, hops, dropped, rows } = table_case(9);
        let eye = Tensor::eye(d, DType::F32, &Device::Cpu).unwrap();
        // A bias of −0 is the same layer, but it is not taken for the identity: its products run.
        let (plus, minus) = (
            Tensor::zeros(d, DType::F32, &Device::Cpu).unwrap(),
            Tensor::from_vec(vec![-0.0f32; d], d, &Device::Cpu).unwrap(),
        );
        let other = (
            Tensor::from_vec(random(d * d, 1.0, &mut rng), (d, d), &Device::Cpu).unwrap(),
            Tensor::from_vec(random(d, 0.5, &mut rng), d, &Device::Cpu).unwrap(),
        );
        let bits = |t: &Tensor| flat(t).iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for alpha in [0.0, 0.2, 0.99] {
            // Rows of zeros in `H⁰` (both signs) reach the layers as exact zeros outside the request.
            let mut h = random(n * d, 1.0, &mut rng);
            h[..d].fill(0.0);
            h[d..2 * d].fill(-0.0);
            let h0 = Var::from_vec(h, (n, d), &Device::Cpu).unwrap();
            let w = Var::from_vec(random(n, 1.0, &mut rng), (n, 1), &Device::Cpu).unwrap();
            let run = |bias: &Tensor| {
                let mlp = [(eye.clone(), bias.clone()), other.clone(), (eye.clone(), bias.clone())];
                let out = encoder_table(
                    &idm,
                    &dropped,
                    h0.as_tensor(),
                    w.as_tensor(),
                    &e,
                    0.3,
                    hops,
                    &rows,
                    &mlp,
                    alpha,
                    &base,
                    None,
                )
                .unwrap();
                let probe = Tensor::from_vec(
                    (0..out.elem_count()).map(|k| (k % 7) as f32 - 3.0).collect::<Vec<_>>(),
                    out.dims(),
                    &Device::Cpu,
                )
                .unwrap();
                let g = (&out * &probe).unwrap().sum_all().unwrap().backward().unwrap();
                (bits(&out), bits(g.get(&h0).unwrap()), bits(g.get(&w).unwrap()))
            };
            let (fast, slow) = (run(&plus), run(&minus));
            assert!(fast.0 == slow.0, "output (α {alpha})");
            assert!(fast.1 == slow.1, "∂/∂H⁰ (α {alpha})");
            assert!(fast.2 == slow.2, "∂/∂w (α {alpha})");
        }
    }

    #[test]
    fn the_table_op_matches_hops_then_the_mlp_then_the_base() {
        let TableCase { mut rng, n, d, idm, e, base, hops, dropped, rows } = table_case(8);
        // Layers d → 3 → d; no layer at all adds the base to X.
        let layer = |k: usize, m: usize, rng: &mut ChaCha8Rng| {
            let w = Tensor::from_vec(random(k * m, 1.0, rng), (k, m), &Device::Cpu).unwrap();
            (w, Tensor::from_vec(random(m, 0.5, rng), m, &Device::Cpu).unwrap())
        };
        let two = vec![layer(d, 3, &mut rng), layer(3, d, &mut rng)];
        for (mlp, rho, alpha, with_sink) in
            [(&two[..], 0.3, 0.2, false), (&two[..], 0.0, 0.99, true), (&[][..], 0.3, 0.5, true)]
        {
            let h0 = Var::from_vec(random(n * d, 1.0, &mut rng), (n, d), &Device::Cpu).unwrap();
            let w = Var::from_vec(random(n, 1.0, &mut rng), (n, 1), &Device::Cpu).unwrap();
            let out_rows = n + 2 * hops * rows.len();
            let probe = Tensor::from_vec(random(out_rows * d, 1.0, &mut rng), (out_rows, d), &Device::Cpu).unwrap();
            let sink = GradSink::new();
            let got = encoder_table(
                &idm,
                &dropped,
                h0.as_tensor(),
                w.as_tensor(),
                &e,
                rho,
                hops,
                &rows,
                mlp,
                alpha,
                &base,
                with_sink.then_some(&sink),
            )
            .unwrap();
            let hopped = encoder_hops(&idm, &dropped, h0.as_tensor(), w.as_tensor(), &e, rho, hops, &rows).unwrap();
            let mut x = hopped.narrow(0, 0, n).unwrap();
            for (wt, b) in mlp {
                x = crate::tensor::linear_leaky(&x, wt, b, alpha).unwrap();
            }
            let want = Tensor::cat(&[(&base + x).unwrap(), hopped.narrow(0, n, out_rows - n).unwrap()], 0).unwrap();
            let what = format!("{} layers, ρ {rho}, α {alpha}", mlp.len());
            let close = |a: &[f32], b: &[f32], part: &str| {
                assert_eq!(a.len(), b.len(), "{part} ({what})");
                for (k, (x, y)) in a.iter().zip(b).enumerate() {
                    assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{part} ({what}) [{k}]: {x} vs {y}");
                }
            };
            close(&flat(&got), &flat(&want), "output");
            let g_got = (&got * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            let g_want = (&want * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            let gh = if with_sink {
                assert!(g_got.get(&h0).is_none(), "H⁰'s gradient went to candle's store too ({what})");
                sink.take(n * d).unwrap().expect("the sink holds H⁰'s gradient")
            } else {
                assert!(sink.is_empty());
                flat(g_got.get(&h0).unwrap())
            };
            close(&gh, &flat(g_want.get(&h0).unwrap()), "∂/∂H⁰");
            if rho != 0.0 {
                close(&flat(g_got.get(&w).unwrap()), &flat(g_want.get(&w).unwrap()), "∂/∂w");
            }
        }
        // Shapes the head does not fit.
        let (h0, w) = (
            Tensor::zeros((n, d), DType::F32, &Device::Cpu).unwrap(),
            Tensor::zeros((n, 1), DType::F32, &Device::Cpu).unwrap(),
        );
        let call = |mlp: &[(Tensor, Tensor)], alpha: f64, base: &Tensor| {
            encoder_table(&idm, &[], &h0, &w, &e, 0.1, 1, &[], mlp, alpha, base, None)
        };
        let bad = |r: Result<Tensor>| assert!(matches!(r, Err(Error::Shape { op: "encoder_table", .. })), "{r:?}");
        bad(call(&two[..1], 0.5, &base));
        bad(call(&two[1..], 0.5, &base));
        bad(call(&two, 1.5, &base));
        bad(call(&two, 0.5, &e.narrow(0, 0, n - 1).unwrap()));
        assert!(call(&two, 0.5, &base).is_ok());
    }
}
