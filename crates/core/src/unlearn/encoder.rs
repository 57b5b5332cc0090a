//! The Influence Encoder (docs/method.md §6): predicts the change `Δ` of the base embeddings caused by removing a
//! set of edges, from the request's influence dependency matrix `Â_Δ` in one forward pass.
//!
//! ```text
//! Hˡ  = Â_Δ Hˡ⁻¹                     l = 1..L, H⁰ learned (n_nodes × d)
//! S   = H⁰ + H¹ + … + Hᴸ
//! Wᴸ  = Â_Δᴸ (w ⊙ E_fnl)              w learned (n_nodes × 1), E_fnl the original final embeddings
//! Δ   = MLP(S − ρ·Wᴸ)                ρ = withdraw_rate (0.1); MLP = k × LeakyReLU_α(Δ·W_k + b_k)
//! Ẽ⁰  = E⁰ + Δ
//! ```
//!
//! The unlearned model is the frozen backbone run from `Ẽ⁰` on the remaining graph. As in the reference,
//! `H⁰` is added for every node, so for nodes outside the request `Δ = MLP(H⁰)`: a request-independent
//! learned offset (docs/method.md §13.3). The MLP starts at `W = I, b = 0`; it is frozen during pre-training and
//! trained during fine-tuning (docs/method.md §13.2).

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tensor::{SpMat, encoder_hops, encoder_table, linear_leaky, spmm};

/// Architecture of the encoder. Defaults are the reference's (docs/method.md §14).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncoderConfig {
    /// Propagation hops over `Â_Δ` (`None` = the backbone's layers, as the reference's `--gnn_layer`).
    pub hops: Option<usize>,
    /// Extra propagations of `S` over the remaining graph (`--unlearn_layer`).
    pub remaining_hops: usize,
    /// MLP layers (`--layer_mlp`).
    pub mlp_layers: usize,
    /// LeakyReLU negative slope (`--leaky`).
    pub leaky: f64,
    /// Weight ρ of the withdraw term (`--overall_withdraw_rate`).
    pub withdraw_rate: f64,
    /// Initial per-node withdraw weight `w` (the reference: `2·lr` = 0.002).
    pub withdraw_init: f64,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self { hops: None, remaining_hops: 0, mlp_layers: 2, leaky: 0.99, withdraw_rate: 0.1, withdraw_init: 2e-3 }
    }
}

impl EncoderConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if !(self.leaky.is_finite() && self.withdraw_rate.is_finite() && self.withdraw_init.is_finite()) {
            return Err(Error::config("encoder", "leaky, withdraw_rate and withdraw_init must be finite"));
        }
        for (name, v) in [
            ("encoder.hops", self.hops.unwrap_or(0)),
            ("encoder.remaining_hops", self.remaining_hops),
            ("encoder.mlp_layers", self.mlp_layers),
        ] {
            if v > crate::model::MAX_LAYERS {
                return Err(Error::config(name, format!("at most {}, got {v}", crate::model::MAX_LAYERS)));
            }
        }
        Ok(())
    }
}

/// The encoder's parameters.
#[derive(Clone, Debug)]
pub struct Encoder {
    /// Architecture.
    pub config: EncoderConfig,
    hops: usize,
    /// `H⁰`, `(n_nodes, d)`.
    pub h0: Var,
    /// `w`, `(n_nodes, 1)`.
    pub w: Var,
    /// `(W_k (d × d), b_k (1 × d))` per MLP layer.
    pub mlp: Vec<(Var, Var)>,
}

/// The encoder's forward outputs.
pub struct EncoderOutput {
    /// `Δ`, `(n_nodes, d)`.
    pub delta: Tensor,
    /// `H¹..Hᴸ`.
    pub h: Vec<Tensor>,
    /// `H'¹..H'ᴸ` over dropped copies of `Â_Δ` (only when dropped matrices were given).
    pub h_dropped: Vec<Tensor>,
}

/// [`Encoder::forward_rows`]'s outputs.
pub struct EncoderRowsOutput {
    /// `Δ`, `(n_nodes, d)`.
    pub delta: Tensor,
    /// The node ids whose rows `views` hold (distinct, sorted).
    pub rows: Vec<u32>,
    /// Per hop `l` (only when dropped matrices were given): the rows of `Hˡ⁺¹` and of `H'ˡ⁺¹` (the dropped
    /// copy's hop), each `(rows, d)`.
    pub views: Vec<(Tensor, Tensor)>,
}

/// [`Encoder::forward_table`]'s outputs.
pub struct EncoderTableOutput {
    /// `Ẽ⁰ = E⁰ + Δ`, `(n_nodes, d)`.
    pub e_tilde: Tensor,
    /// The node ids whose rows `views` hold (distinct, sorted).
    pub rows: Vec<u32>,
    /// As [`EncoderRowsOutput::views`].
    pub views: Vec<(Tensor, Tensor)>,
}

/// `LeakyReLU_α(x) = max(x, 0) + α·min(x, 0)`.
pub fn leaky_relu(x: &Tensor, alpha: f64) -> Result<Tensor> {
    let pos = x.relu()?;
    let neg = (x - &pos)?;
    Ok((pos + (neg * alpha)?)?)
}

impl Encoder {
    /// A fresh encoder: `H⁰ = 0`, `w = withdraw_init`, `W_k = I`, `b_k = 0`.
    pub fn new(config: EncoderConfig, n_nodes: usize, dim: usize, backbone_layers: usize) -> Result<Self> {
        config.validate()?;
        let dev = Device::Cpu;
        let h0 = Var::from_tensor(&Tensor::zeros((n_nodes, dim), DType::F32, &dev)?)?;
        let w = Var::from_tensor(&Tensor::full(config.withdraw_init as f32, (n_nodes, 1), &dev)?)?;
        let mlp = (0..config.mlp_layers)
            .map(|_| -> Result<(Var, Var)> {
                Ok((
                    Var::from_tensor(&Tensor::eye(dim, DType::F32, &dev)?)?,
                    Var::from_tensor(&Tensor::zeros((1, dim), DType::F32, &dev)?)?,
                ))
            })
            .collect::<Result<_>>()?;
        let hops = config.hops.unwrap_or(backbone_layers);
        Ok(Self { config, hops, h0, w, mlp })
    }

    /// A copy with its own storage (a plain `clone` shares the variables).
    pub fn deep_copy(&self) -> Result<Self> {
        let copy = |v: &Var| -> Result<Var> { Ok(Var::from_tensor(&v.as_tensor().copy()?)?) };
        Ok(Self {
            config: self.config.clone(),
            hops: self.hops,
            h0: copy(&self.h0)?,
            w: copy(&self.w)?,
            mlp: self.mlp.iter().map(|(w, b)| Ok((copy(w)?, copy(b)?))).collect::<Result<_>>()?,
        })
    }

    /// Hops over `Â_Δ`.
    pub fn hops(&self) -> usize {
        self.hops
    }

    /// The MLP's variables (trained during fine-tuning).
    pub fn mlp_vars(&self) -> Vec<Var> {
        self.mlp.iter().flat_map(|(w, b)| [w.clone(), b.clone()]).collect()
    }

    /// `Δ` for a request with IDM `idm`, given the original final embeddings `e_fnl` `(n_nodes, d)`.
    /// `dropped`: optional dropped copies of `Â_Δ`, one per hop, for the contrastive term;
    /// `remaining`: `Â` of the remaining graph (used when `remaining_hops > 0`).
    pub fn forward(
        &self,
        idm: &SpMat,
        dropped: Option<&[SpMat]>,
        e_fnl: &Tensor,
        remaining: &SpMat,
    ) -> Result<EncoderOutput> {
        let h0 = self.h0.as_tensor();
        let mut h = Vec::with_capacity(self.hops);
        let mut h_dropped = Vec::new();
        let mut prev = h0.clone();
        let mut s = h0.clone();
        for l in 0..self.hops {
            let next = spmm(idm, &prev)?;
            if let Some(d) = dropped {
                let m = d.get(l).ok_or_else(|| Error::Shape {
                    op: "Encoder::forward",
                    expected: format!("{} dropped matrices", self.hops),
                    got: format!("{}", d.len()),
                })?;
                h_dropped.push(spmm(m, &prev)?);
            }
            s = (s + &next)?;
            h.push(next.clone());
            prev = next;
        }
        for _ in 0..self.config.remaining_hops {
            s = spmm(remaining, &s)?;
        }
        let x = (s - self.withdraw(idm, e_fnl)?)?;
        Ok(EncoderOutput { delta: self.mlp(&x)?, h, h_dropped })
    }

    /// [`Encoder::forward`] in one op over the IDM ([`encoder_hops`]) that keeps only `Δ`'s input and, for
    /// the contrastive term, the rows `rows` (distinct, sorted node ids) of each hop's two views: what
    /// pre-training reads, at a fraction of the memory (the same values and gradients; tested against the
    /// reference's golden vectors).
    ///
    /// # Errors
    /// [`Error::Shape`] for a wrong number of dropped matrices, or rows that are unsorted, repeated or out of
    /// range.
    pub fn forward_rows(
        &self,
        idm: &SpMat,
        dropped: Option<(&[SpMat], &[u32])>,
        e_fnl: &Tensor,
        remaining: &SpMat,
    ) -> Result<EncoderRowsOutput> {
        let n = idm.n_rows();
        let (mats, rows) = dropped.unwrap_or((&[], &[]));
        // With propagations over the remaining graph, `S` is propagated before the withdraw term is
        // subtracted: the op then returns `S` alone.
        let rho = if self.config.remaining_hops == 0 { self.config.withdraw_rate } else { 0.0 };
        let out = encoder_hops(idm, mats, self.h0.as_tensor(), self.w.as_tensor(), e_fnl, rho, self.hops, rows)?;
        let mut x = out.narrow(0, 0, n)?;
        if self.config.remaining_hops > 0 {
            for _ in 0..self.config.remaining_hops {
                x = spmm(remaining, &x)?;
            }
            x = (x - self.withdraw(idm, e_fnl)?)?;
        }
        let views = views_of(&out, n, self.hops, rows)?;
        Ok(EncoderRowsOutput { delta: self.mlp_of(&x, false)?, rows: rows.to_vec(), views })
    }

    /// `Ẽ⁰ = base + Δ` with the views of [`Encoder::forward_rows`], differentiable with respect to `H⁰` and `w`
    /// only (`base` and the MLP are constants): pre-training's forward pass. One op ([`encoder_table`]) for
    /// the hops, the MLP and the sum when the encoder has no remaining-graph hops and a slope in `[0, 1]`;
    /// [`Encoder::forward_rows`] and a sum otherwise. The same values either way. With a `sink`, the fused op
    /// puts `H⁰`'s gradient there ([`crate::tensor::GradSink`]; the caller's optimizer must take it).
    ///
    /// # Errors
    /// As [`Encoder::forward_rows`]; a base table of another shape.
    pub fn forward_table(
        &self,
        idm: &SpMat,
        dropped: Option<(&[SpMat], &[u32])>,
        e_fnl: &Tensor,
        remaining: &SpMat,
        base: &Tensor,
        sink: Option<&crate::tensor::GradSink>,
    ) -> Result<EncoderTableOutput> {
        let base = base.detach();
        if self.config.remaining_hops > 0 || !(0.0..=1.0).contains(&self.config.leaky) {
            let out = self.forward_rows(idm, dropped, e_fnl, remaining)?;
            return Ok(EncoderTableOutput { e_tilde: (base + out.delta)?, rows: out.rows, views: out.views });
        }
        let n = idm.n_rows();
        let (mats, rows) = dropped.unwrap_or((&[], &[]));
        let mlp: Vec<(Tensor, Tensor)> =
            self.mlp.iter().map(|(w, b)| (w.as_tensor().clone(), b.as_tensor().clone())).collect();
        let out = encoder_table(
            idm,
            mats,
            self.h0.as_tensor(),
            self.w.as_tensor(),
            e_fnl,
            self.config.withdraw_rate,
            self.hops,
            rows,
            &mlp,
            self.config.leaky,
            &base,
            sink,
        )?;
        let views = views_of(&out, n, self.hops, rows)?;
        Ok(EncoderTableOutput { e_tilde: out.narrow(0, 0, n)?, rows: rows.to_vec(), views })
    }

    /// The withdraw term `ρ · Â_Δᴸ (E_fnl ⊙ w)`.
    fn withdraw(&self, idm: &SpMat, e_fnl: &Tensor) -> Result<Tensor> {
        let mut wl = e_fnl.broadcast_mul(self.w.as_tensor())?;
        for _ in 0..self.hops {
            wl = spmm(idm, &wl)?;
        }
        Ok((wl * self.config.withdraw_rate)?)
    }

    /// The MLP applied to `x` `(n_nodes, d)`: one fused op per layer ([`linear_leaky`]) when the slope is in
    /// `[0, 1]` (the reference's 0.99), candle's primitive ops otherwise.
    pub fn mlp(&self, x: &Tensor) -> Result<Tensor> {
        self.mlp_of(x, true)
    }

    /// [`Encoder::mlp`], with the weights as constants unless `trainable` (pre-training freezes them: no
    /// gradient of theirs is computed).
    fn mlp_of(&self, x: &Tensor, trainable: bool) -> Result<Tensor> {
        let mut y = x.clone();
        let alpha = self.config.leaky;
        for (w, b) in &self.mlp {
            let (w, b) = if trainable {
                (w.as_tensor().clone(), b.as_tensor().clone())
            } else {
                (w.as_tensor().detach(), b.as_tensor().detach())
            };
            y = if (0.0..=1.0).contains(&alpha) {
                linear_leaky(&y, &w, &b, alpha)?
            } else {
                leaky_relu(&y.matmul(&w)?.broadcast_add(&b)?, alpha)?
            };
        }
        Ok(y)
    }

    /// The encoder's output for a request minus its output for an empty request, `MLP(S − ρ·Wᴸ) − MLP(H⁰)`,
    /// on the only rows where it can differ from zero: the request's nodes (`Â_Δ`'s non-empty rows; every
    /// hop of `H` and of the withdraw term stays on them, and elsewhere `S = H⁰` and `Wᴸ = 0`). A request of
    /// a few edges thus costs its own rows instead of the MLP over the whole table, twice. Returns the nodes
    /// (sorted) and their rows `(nodes, d)`, detached; `None` with `remaining_hops`, which spread `S` over
    /// the remaining graph.
    pub fn relative_change_rows(&self, idm: &SpMat, e_fnl: &Tensor) -> Result<Option<(Vec<u32>, Tensor)>> {
        if self.config.remaining_hops > 0 {
            return Ok(None);
        }
        let m = idm.matrix();
        let (n, d) = self.h0.dims2()?;
        if m.n_rows() != n || e_fnl.dims2()? != (n, d) {
            return Err(Error::Shape {
                op: "Encoder::relative_change_rows",
                expected: format!("an IDM of {n} nodes and final embeddings ({n}, {d})"),
                got: format!("{} nodes and {:?}", m.n_rows(), e_fnl.dims()),
            });
        }
        let ptr = m.indptr();
        let nodes: Vec<u32> = (0..n).filter(|&r| ptr[r + 1] > ptr[r]).map(|r| r as u32).collect();
        if nodes.is_empty() {
            return Ok(Some((nodes, Tensor::zeros((0, d), DType::F32, &Device::Cpu)?)));
        }
        // The IDM on its nodes, numbered in id order: the same entries in the same order as the full rows; the
        // encoder's op on that sub-problem is its output on those rows.
        let (nodes, sub) = m.induced_ball(&nodes, 0);
        let idx = Tensor::from_vec(nodes.clone(), nodes.len(), &Device::Cpu)?;
        let pick = |t: &Tensor| -> Result<Tensor> { Ok(t.detach().index_select(&idx, 0)?) };
        let h0 = pick(self.h0.as_tensor())?;
        let sub = SpMat::new(std::sync::Arc::new(sub));
        let x = encoder_hops(
            &sub,
            &[],
            &h0,
            &pick(self.w.as_tensor())?,
            &pick(e_fnl)?,
            self.config.withdraw_rate,
            self.hops,
            &[],
        )?;
        Ok(Some((nodes, (self.mlp(&x)? - self.mlp(&h0)?)?)))
    }

    /// The MLP's input for a request, `S − ρ·Â_Δᴸ(E_fnl ⊙ w)`, detached: with `H⁰` and `w` frozen (fine-tuning)
    /// it is the same at every step, so [`Encoder::mlp`] of it equals `forward(..).delta` without recomputing
    /// the propagations or back-propagating into the frozen variables.
    pub fn mlp_input(&self, idm: &SpMat, e_fnl: &Tensor, remaining: &SpMat) -> Result<Tensor> {
        let h0 = self.h0.as_tensor().detach();
        let mut prev = h0.clone();
        let mut s = h0;
        for _ in 0..self.hops {
            prev = spmm(idm, &prev)?;
            s = (s + &prev)?;
        }
        for _ in 0..self.config.remaining_hops {
            s = spmm(remaining, &s)?;
        }
        Ok((s - self.withdraw(idm, &e_fnl.detach())?.detach())?.detach())
    }

    /// The MLP's input for an empty request: `H⁰` propagated over the remaining graph (no influence, nothing
    /// withdrawn), detached.
    pub fn empty_input(&self, remaining: &SpMat) -> Result<Tensor> {
        let mut s = self.h0.as_tensor().detach();
        for _ in 0..self.config.remaining_hops {
            s = spmm(remaining, &s)?;
        }
        Ok(s)
    }

    /// `MLP(H⁰)`: the request-independent offset that the encoder adds to every node.
    pub fn offset(&self) -> Result<Tensor> {
        self.mlp(self.h0.as_tensor())
    }
}

/// The views' rows of an [`encoder_hops`] output `out` over `n` nodes: per hop, the rows `rows` of `Hˡ⁺¹`
/// and of the dropped copy's hop (none without rows).
fn views_of(out: &Tensor, n: usize, hops: usize, rows: &[u32]) -> Result<Vec<(Tensor, Tensor)>> {
    let k = rows.len();
    if k == 0 {
        return Ok(Vec::new());
    }
    // One slice for all the views, sliced in turn: the backward pass of a slice pads its gradient to the
    // sliced tensor's size, which must be that small block, not the whole output, per view.
    let all = out.narrow(0, n, 2 * hops * k)?;
    (0..hops).map(|l| Ok((all.narrow(0, (hops + l) * k, k)?, all.narrow(0, l * k, k)?))).collect()
}
