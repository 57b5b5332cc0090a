//! Backbone recommenders: most-popular, BPR-MF, LightGCN, SGL and SimGCL.
//!
//! All four trainable backbones have the same parameters: one base embedding table `E⁰` of shape
//! `(n_users + n_items, dim)`, users first, then items (node id of item `i` is `n_users + i`). They differ in
//! how the final embeddings are propagated from `E⁰` over the normalised adjacency `Â` and in their loss:
//!
//! | model | final embeddings | loss |
//! |---|---|---|
//! | [`ModelKind::Mf`] (`mf.rs`) | `E⁰` | BPR + reg |
//! | [`ModelKind::LightGcn`] (`lightgcn.rs`, He et al. 2020) | `Σ_{l=0..L} Âˡ E⁰` (reference) or the mean | BPR + reg |
//! | [`ModelKind::Sgl`] (`sgl.rs`, Wu et al. 2021) | mean of layers `0..L` | BPR + reg + InfoNCE of two edge-dropout views |
//! | [`ModelKind::SimGcl`] (`simgcl.rs`, Yu et al. 2022) | mean of layers `1..L` | BPR + reg + InfoNCE of two noise views |
//!
//! [`ModelKind::Pop`] (`pop.rs`) learns nothing: its one-column table holds the items' training popularity.
//!
//! Each is an [`Architecture`] in its own file, registered once in [`ARCHITECTURES`]; a [`ModelKind`] names
//! one (it is what configs and checkpoints hold, by name). Training, pre-training, unlearning and the
//! baselines ask the architecture (its propagation, regulariser, contrastive term, per-epoch state,
//! initialisation), never which model it is. Adding a model: a file implementing [`Architecture`] (with a
//! `ModelKind` constant when code or tests name it), its `mod` line and one line in [`ARCHITECTURES`].
//!
//! [`Backbone::forward`] takes `E⁰` as an argument, so the influence encoder can run the frozen backbone on a
//! revised `Ẽ⁰` and on the remaining graph.

use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::LazyLock;

use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::tensor::{BipartiteInPlace, SpMat, spmm, spmm_vec};

mod architecture;
mod lightgcn;
pub mod loss;
mod mf;
mod objective;
mod pop;
mod sgl;
mod simgcl;

pub use architecture::{Architecture, BatchRows, EpochState};
pub use objective::{Batch, LossInput, LossParts, RegTerm, combine_weights, gather_rows};
pub use sgl::SglViews;

/// Every model, once, in the order the command line lists them.
pub const ARCHITECTURES: &[&dyn Architecture] =
    &[&pop::MostPopular, &mf::Mf, &lightgcn::LightGcn, &sgl::Sgl, &simgcl::SimGcl];

/// The registered names, in registry order.
pub fn model_names() -> &'static [&'static str] {
    static NAMES: LazyLock<Vec<&'static str>> = LazyLock::new(|| ARCHITECTURES.iter().map(|a| a.name()).collect());
    &NAMES
}

/// Which recommender: a registered [`Architecture`] ([`ARCHITECTURES`]), written as its name in files.
/// Constants name the built-in ones ([`ModelKind::LightGcn`], …); [`str::parse`] takes a name or an alias.
#[derive(Clone, Copy)]
pub struct ModelKind(&'static dyn Architecture);

impl ModelKind {
    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// True for the models that propagate over the graph.
    pub fn is_graph(self) -> bool {
        self.0.propagates()
    }

    /// The model itself.
    pub fn architecture(self) -> &'static dyn Architecture {
        self.0
    }

    /// Every registered model, in registry order.
    pub fn all() -> impl Iterator<Item = ModelKind> {
        ARCHITECTURES.iter().map(|&a| ModelKind(a))
    }
}

impl PartialEq for ModelKind {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for ModelKind {}

impl Hash for ModelKind {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl std::fmt::Debug for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.name())
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.to_ascii_lowercase();
        Self::all().find(|k| k.name() == s || k.0.aliases().contains(&s.as_str())).ok_or_else(|| {
            let (last, rest) = model_names().split_last().expect("models are registered");
            Error::config("model.kind", format!("unknown model {s:?} (expected {} or {last})", rest.join(", ")))
        })
    }
}

impl Serialize for ModelKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// A registered name, exactly (aliases are for the command line and experiment files).
impl<'de> Deserialize<'de> for ModelKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::all().find(|k| k.name() == s).ok_or_else(|| serde::de::Error::unknown_variant(&s, model_names()))
    }
}

/// How the propagated layers `E⁰..Eᴸ` are combined into the final embeddings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// `Σ_{l=0..L} Eˡ` (the UnlearnRec reference's LightGCN).
    Sum,
    /// `mean_{l=0..L} Eˡ` (the LightGCN paper, SGL).
    Mean,
    /// `mean_{l=1..L} Eˡ`, layer 0 excluded (SimGCL).
    MeanSkipFirst,
}

/// The most propagation layers a [`ModelConfig`] may have (the reference uses 1 to 4): a bound, so that a
/// corrupt file's count is an error rather than an endless propagation.
pub const MAX_LAYERS: usize = 64;

/// Hyper-parameters of a backbone. Defaults follow the reference (docs/method.md §14); `combine` defaults by kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Which model.
    pub kind: ModelKind,
    /// Embedding dimension `d` (`--latdim`).
    pub dim: usize,
    /// Propagation layers `L` (`--gnn_layer`).
    pub layers: usize,
    /// L2 weight (`--reg`); what it regularises depends on the model, as in the reference (docs/method.md §3.3).
    pub reg: f64,
    /// Weight of the BPR term (`--bpr_wei`).
    pub bpr_weight: f64,
    /// Layer combination; `None` = the model's own (LightGCN: sum, SGL: mean, SimGCL: mean of 1..L).
    pub combine: Option<Combine>,
    /// Weight of the contrastive term (SGL `--sgl_ssl_reg`, SimGCL `--ssl_reg`).
    pub ssl_reg: f64,
    /// InfoNCE temperature (SGL `--sgltemp`, SimGCL `--temp`).
    pub ssl_temp: f64,
    /// SimGCL noise magnitude `ε` (`--eps`).
    pub eps: f64,
    /// SGL edge keep rate of each view (`--sglkeepRate`).
    pub keep_rate: f64,
    /// What MF's and LightGCN's L2 term covers (`None` = the whole table, as the reference); SGL and SimGCL
    /// have their own and refuse it (docs/method.md §3.3).
    pub reg_scope: Option<RegScope>,
    /// Standard deviation of a normal initial table (the LightGCN paper's 0.1); `None` = Xavier uniform, as the
    /// reference ([`initial_table`]).
    pub init_std: Option<f64>,
}

/// What the L2 term of MF and LightGCN covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegScope {
    /// `‖E⁰‖²` over the whole table (the UnlearnRec reference).
    Table,
    /// `½ Σ_b (‖E⁰_{u_b}‖² + ‖E⁰_{i_b}‖² + ‖E⁰_{j_b}‖²) / B`: the base rows of the batch (the LightGCN paper's
    /// weight decay, with its `reg` of 1e-4).
    Batch,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            kind: ModelKind::LightGcn,
            dim: 128,
            layers: 3,
            reg: 1e-7,
            bpr_weight: 1.0,
            combine: None,
            ssl_reg: 1e-2,
            ssl_temp: 0.1,
            eps: 0.2,
            keep_rate: 0.8,
            reg_scope: None,
            init_std: None,
        }
    }
}

impl ModelConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 {
            return Err(Error::config("model.dim", "must be at least 1"));
        }
        if self.kind.is_graph() && self.layers == 0 {
            return Err(Error::config("model.layers", "a graph model needs at least 1 layer"));
        }
        if self.layers > MAX_LAYERS {
            return Err(Error::config("model.layers", format!("must be at most {MAX_LAYERS}, got {}", self.layers)));
        }
        for (name, v) in [("model.reg", self.reg), ("model.ssl_reg", self.ssl_reg), ("model.eps", self.eps)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::config(name, format!("must be a finite non-negative number, got {v}")));
            }
        }
        if !(self.ssl_temp.is_finite() && self.ssl_temp > 0.0) {
            return Err(Error::config("model.ssl_temp", "must be positive"));
        }
        if !(self.keep_rate > 0.0 && self.keep_rate <= 1.0) {
            return Err(Error::config("model.keep_rate", "must be in (0, 1]"));
        }
        if self.reg_scope.is_some() && !self.kind.architecture().takes_reg_scope() {
            return Err(Error::config("model.reg_scope", format!("{} has its own regulariser", self.kind)));
        }
        if let Some(s) = self.init_std
            && !(s.is_finite() && s > 0.0)
        {
            return Err(Error::config("model.init_std", format!("must be a finite positive number, got {s}")));
        }
        if self.combine == Some(Combine::MeanSkipFirst) && self.layers == 0 {
            return Err(Error::config("model.combine", "mean_skip_first needs at least 1 layer"));
        }
        Ok(())
    }

    /// The layer combination in effect.
    pub fn combine(&self) -> Combine {
        self.combine.unwrap_or_else(|| self.kind.architecture().default_combine())
    }

    /// Whether the model's regulariser is the whole-table `‖E⁰‖²`
    /// ([`Architecture::regularises_whole_table`]).
    pub fn regularises_whole_table(&self) -> bool {
        self.kind.architecture().regularises_whole_table(self)
    }
}

/// The initial base table of [`Backbone::new`], `n × d` values row-major, drawn from `seed`: normal with
/// standard deviation `std` when given (the LightGCN paper's initialisation), otherwise uniform in
/// `±sqrt(6 / (n + d))` (PyTorch's `xavier_uniform_` on an `(n, d)` table, the reference's). Unlearning
/// restores the rows of nodes a request isolates from it (an exact retrain with the same seed moves them only
/// by its regulariser).
pub fn initial_table(n: usize, d: usize, std: Option<f64>, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    match std {
        Some(s) => {
            let normal = rand_distr::Normal::new(0.0, s as f32).expect("a validated positive standard deviation");
            (0..n * d).map(|_| rand_distr::Distribution::sample(&normal, &mut rng)).collect()
        }
        None => {
            let bound = (6.0 / (n + d) as f64).sqrt() as f32;
            (0..n * d).map(|_| rng.random_range(-bound..bound)).collect()
        }
    }
}

/// A backbone: its configuration and base embedding table `E⁰` (a trainable [`Var`]).
///
/// For [`ModelKind::Pop`] the table has one column ([`Backbone::popularity`]).
#[derive(Clone, Debug)]
pub struct Backbone {
    /// Hyper-parameters.
    pub config: ModelConfig,
    n_users: usize,
    n_items: usize,
    emb: Var,
}

impl Backbone {
    /// A new model with the initial embeddings of [`initial_table`] (Xavier uniform unless
    /// [`ModelConfig::init_std`] asks for a normal table), drawn from `seed`.
    ///
    /// # Errors
    /// An invalid config.
    pub fn new(config: ModelConfig, n_users: usize, n_items: usize, seed: u64) -> Result<Self> {
        config.validate()?;
        let data = initial_table(n_users + n_items, config.dim, config.init_std, seed);
        Self::from_embeddings(config, n_users, n_items, data)
    }

    /// A model from a row-major `(n_users + n_items, dim)` table.
    ///
    /// # Errors
    /// An invalid config ([`ModelConfig::validate`]), or a table without `(n_users + n_items) * dim` entries.
    pub fn from_embeddings(config: ModelConfig, n_users: usize, n_items: usize, data: Vec<f32>) -> Result<Self> {
        // The configuration and sizes may come from a file: check them before they are used.
        config.validate()?;
        let n = n_users.checked_add(n_items).filter(|n| n.checked_mul(config.dim).is_some()).ok_or_else(|| {
            Error::Shape {
                op: "Backbone::from_embeddings",
                expected: format!("at most {} values", usize::MAX),
                got: format!("{n_users} users and {n_items} items of dimension {}", config.dim),
            }
        })?;
        if data.len() != n * config.dim {
            return Err(Error::Shape {
                op: "Backbone::from_embeddings",
                expected: format!("({n}, {})", config.dim),
                got: format!("{} values", data.len()),
            });
        }
        let t = Tensor::from_vec(data, (n, config.dim), &Device::Cpu)?;
        Ok(Self { config, n_users, n_items, emb: Var::from_tensor(&t)? })
    }

    /// The model kind.
    pub fn kind(&self) -> ModelKind {
        self.config.kind
    }

    /// The model's [`Architecture`].
    pub fn architecture(&self) -> &'static dyn Architecture {
        self.config.kind.architecture()
    }

    /// What the model draws on `graph` for an epoch ([`Architecture::epoch_state`]).
    ///
    /// # Errors
    /// Tensor errors.
    pub fn epoch_state(&self, graph: &Graph, rng: &mut ChaCha8Rng) -> Result<Option<EpochState>> {
        self.architecture().epoch_state(&self.config, graph, rng)
    }

    /// The number of users.
    pub fn n_users(&self) -> usize {
        self.n_users
    }

    /// The number of items.
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// The embedding dimension.
    pub fn dim(&self) -> usize {
        self.config.dim
    }

    /// The base embedding table `E⁰`, shape `(n_users + n_items, dim)`, f32.
    pub fn base(&self) -> &Var {
        &self.emb
    }

    /// The base table as a row-major vector.
    pub fn base_vec(&self) -> Result<Vec<f32>> {
        Ok(self.emb.as_tensor().flatten_all()?.to_vec1::<f32>()?)
    }

    /// Replaces the base table by `f` of it (row-major, the same length), reading the table in place: one
    /// table beside the model's rather than a copy out and a copy in (training renumbers its rows with it).
    ///
    /// # Errors
    /// A result of another length.
    pub fn map_base(&self, f: impl FnOnce(&[f32]) -> Vec<f32>) -> Result<()> {
        let new = crate::tensor::with_f32(&self.emb.as_tensor().contiguous()?, f)?;
        self.emb.set(&Tensor::from_vec(new, self.emb.shape(), &Device::Cpu)?)?;
        Ok(())
    }

    /// Replaces the base table (same shape).
    pub fn set_base(&self, data: &[f32]) -> Result<()> {
        let t = Tensor::from_slice(data, self.emb.shape(), &Device::Cpu)?;
        self.emb.set(&t)?;
        Ok(())
    }

    /// The layers `[E⁰, ÂE⁰, …, ÂᴸE⁰]` from a given `E⁰` (not necessarily this model's own).
    pub fn layers(&self, adj: &SpMat, e0: &Tensor) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(self.config.layers + 1);
        out.push(e0.clone());
        if self.architecture().propagates() {
            for l in 0..self.config.layers {
                let next = spmm(adj, &out[l])?;
                out.push(next);
            }
        }
        Ok(out)
    }

    /// Final embeddings (evaluation mode, no augmentation) from `E⁰ = e0` over `adj`, shape
    /// `(n_users + n_items, dim)`.
    pub fn forward(&self, adj: &SpMat, e0: &Tensor) -> Result<Tensor> {
        if !self.architecture().propagates() {
            return Ok(e0.clone());
        }
        let layers = self.layers(adj, e0)?;
        combine(&layers, self.config.combine())
    }

    /// Final embeddings of this model's own `E⁰` over `adj`, as row-major user and item matrices: the same
    /// values as [`Backbone::forward`] (the same sums in the same order), computed layer by layer with two
    /// tables and a half alive besides the model (the running sum, the current layer, and on the user–item
    /// graph a temporary of its smaller side for the next) instead of every layer and its tensors.
    ///
    /// # Errors
    /// [`Error::Shape`] for an adjacency of another size; tensor errors.
    pub fn final_embeddings(&self, adj: &SpMat) -> Result<Embeddings> {
        let d = self.dim();
        let mut users = self.combined_layers(adj, self.base_vec()?)?;
        let items = users.split_off(self.n_users * d);
        Ok(Embeddings { dim: d, users, items })
    }

    /// The values of [`Backbone::forward`] from `E⁰ = e0` over `adj`, `(n, d)`, outside the autograd graph,
    /// computed as [`Backbone::final_embeddings`] does (a few tables alive instead of every layer): for the
    /// final embeddings a caller reads but does not differentiate.
    ///
    /// # Errors
    /// As [`Backbone::final_embeddings`]; an `e0` of another shape.
    pub fn propagated(&self, adj: &SpMat, e0: &Tensor) -> Result<Tensor> {
        let (n, d) = (self.n_users + self.n_items, self.dim());
        if e0.dims() != [n, d] {
            return Err(Error::Shape {
                op: "propagated",
                expected: format!("({n}, {d})"),
                got: format!("{:?}", e0.dims()),
            });
        }
        let all = self.combined_layers(adj, e0.flatten_all()?.to_vec1::<f32>()?)?;
        Ok(Tensor::from_vec(all, (n, d), &Device::Cpu)?)
    }

    /// [`combine`] of the layers of `e0` over `adj`, streamed (`e0` itself for a model that does not
    /// propagate).
    fn combined_layers(&self, adj: &SpMat, e0: Vec<f32>) -> Result<Vec<f32>> {
        if !self.architecture().propagates() {
            return Ok(e0);
        }
        let (d, n, l_max) = (self.dim(), self.n_users + self.n_items, self.config.layers);
        if adj.n_rows() != n || adj.n_cols() != n {
            return Err(Error::Shape {
                op: "final_embeddings",
                expected: format!("a {n} x {n} adjacency"),
                got: format!("{} x {}", adj.n_rows(), adj.n_cols()),
            });
        }
        let (start, scale) = combine_weights(self.config.combine(), l_max);
        // Two tables and a half instead of three: `e0`'s own buffer becomes the running sum once the first
        // layer is computed from it, and on the user–item graph (bipartite) each later layer is computed in
        // place with a temporary of the smaller side. The same sums in the same order either way.
        let mut e0 = e0;
        let mut acc = if l_max == 0 {
            e0
        } else {
            let mut layer = spmm_vec(adj.matrix(), &e0, d);
            if start == 0 {
                add_assign(&mut e0, &layer);
            } else {
                e0.copy_from_slice(&layer);
            }
            let mut acc = e0;
            // Checked once, from the second layer on (the first reads `e0`, not a layer to overwrite).
            let mut in_place = if l_max > 1 { BipartiteInPlace::new(adj.matrix(), self.n_users) } else { None };
            for _ in 2..=l_max {
                match &mut in_place {
                    Some(p) => p.apply(&mut layer, d),
                    None => layer = spmm_vec(adj.matrix(), &layer, d),
                }
                add_assign(&mut acc, &layer);
            }
            acc
        };
        if scale != 1.0 {
            // As candle's division by a scalar (`combine`): `x · f32(1/n) + 0`.
            acc.par_iter_mut().for_each(|x| *x = *x * scale + 0.0);
        }
        Ok(acc)
    }
}

/// `a += b` elementwise, in parallel blocks.
fn add_assign(a: &mut [f32], b: &[f32]) {
    a.par_chunks_mut(1 << 14).zip(b.par_chunks(1 << 14)).for_each(|(a, b)| {
        for (x, y) in a.iter_mut().zip(b) {
            *x += y;
        }
    });
}

/// Final user and item embeddings, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    /// The dimension.
    pub dim: usize,
    /// `(n_users, dim)`.
    pub users: Vec<f32>,
    /// `(n_items, dim)`.
    pub items: Vec<f32>,
}

/// Combines layers `E⁰..Eᴸ`.
pub fn combine(layers: &[Tensor], how: Combine) -> Result<Tensor> {
    let (start, scale) = combine_weights(how, layers.len() - 1);
    let mut acc = layers[start].clone();
    for t in &layers[start + 1..] {
        acc = (acc + t)?;
    }
    if scale != 1.0 {
        acc = (acc * f64::from(scale))?;
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_embeddings_stream_the_same_values_as_the_composed_forward() {
        use crate::graph::NormAdj;
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        // More users than items and fewer (the in-place layers keep the smaller side aside), and an adjacency
        // with self-loops (not bipartite: every layer in a new buffer).
        for (nu, ni) in [(40u32, 30u32), (30, 40)] {
            let pairs: Vec<(u32, u32)> = (0..300).map(|_| (rng.random_range(0..nu), rng.random_range(0..ni))).collect();
            let g = Graph::from_interactions(nu as usize, ni as usize, &crate::data::Interactions::from_pairs(pairs).0);
            let adj = SpMat::from_norm_adj(&NormAdj::from_graph(&g));
            let n = (nu + ni) as usize;
            let mut dense = adj.matrix().to_dense();
            (0..n).for_each(|r| dense[r * n + r] = 0.5);
            let looped = SpMat::new(std::sync::Arc::new(crate::graph::SparseMat::from_dense(n, n, &dense)));
            assert!(adj.matrix().is_bipartite(nu as usize) && !looped.matrix().is_bipartite(nu as usize));
            let mf = Backbone::new(
                ModelConfig { kind: ModelKind::Mf, dim: 7, ..Default::default() },
                nu as usize,
                ni as usize,
                9,
            )
            .unwrap();
            let e = mf.final_embeddings(&adj).unwrap();
            assert_eq!([e.users, e.items].concat(), mf.base_vec().unwrap());
            for adj in [&adj, &looped] {
                for kind in [ModelKind::LightGcn, ModelKind::SimGcl] {
                    for combine in [Combine::Sum, Combine::Mean, Combine::MeanSkipFirst] {
                        for layers in 1..=3 {
                            let cfg =
                                ModelConfig { kind, dim: 7, layers, combine: Some(combine), ..Default::default() };
                            let at = format!("{nu}x{ni} {kind} {combine:?} L={layers}");
                            let m = match Backbone::new(cfg, nu as usize, ni as usize, 9) {
                                Ok(m) => m,
                                Err(e) => panic!("{at}: {e}"),
                            };
                            let want = m.forward(adj, m.base().as_tensor()).unwrap().flatten_all().unwrap();
                            let got = m.final_embeddings(adj).unwrap();
                            let got: Vec<f32> = got.users.iter().chain(&got.items).copied().collect();
                            assert_eq!(got, want.to_vec1::<f32>().unwrap(), "{at}");
                            let p = m.propagated(adj, m.base().as_tensor()).unwrap().flatten_all().unwrap();
                            assert_eq!(p.to_vec1::<f32>().unwrap(), got, "{at}");
                        }
                    }
                }
            }
        }
        let small = Graph::from_interactions(3, 3, &crate::data::Interactions::default());
        let m = Backbone::new(ModelConfig::default(), 40, 30, 9).unwrap();
        assert!(m.final_embeddings(&SpMat::from_norm_adj(&NormAdj::from_graph(&small))).is_err());
    }

    /// Crash inputs of the `checkpoint` fuzz target (fuzz/regressions/checkpoint): a checkpoint's metadata
    /// with `layers` of 10⁹ loaded, then hung propagating them (usize::MAX: an overflow); users and items
    /// of width 0 whose counts overflow their sum panicked. Both are errors of the loader now.
    #[test]
    fn from_embeddings_checks_the_config_and_sizes_it_is_given() {
        let cfg = ModelConfig { kind: ModelKind::LightGcn, dim: 2, layers: 1, ..Default::default() };
        assert!(Backbone::from_embeddings(cfg.clone(), 1, 1, vec![0.0; 4]).is_ok());
        for layers in [MAX_LAYERS + 1, 1_000_000_000, usize::MAX] {
            let err = Backbone::from_embeddings(ModelConfig { layers, ..cfg.clone() }, 1, 1, vec![0.0; 4]);
            assert!(err.unwrap_err().to_string().contains("model.layers"), "{layers}");
        }
        assert!(Backbone::from_embeddings(ModelConfig { dim: 0, ..cfg.clone() }, usize::MAX, 1, vec![]).is_err());
        assert!(Backbone::from_embeddings(cfg.clone(), usize::MAX, 1, vec![]).is_err());
        assert!(Backbone::from_embeddings(cfg, usize::MAX / 2, 0, vec![]).is_err());
    }

    #[test]
    fn kind_round_trips_through_its_name() {
        for k in [ModelKind::Pop, ModelKind::Mf, ModelKind::LightGcn, ModelKind::Sgl, ModelKind::SimGcl] {
            assert_eq!(k.name().parse::<ModelKind>().unwrap(), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
        }
        assert!("gcn".parse::<ModelKind>().is_err());
    }

    #[test]
    fn config_validation_names_the_field() {
        let c = ModelConfig { dim: 0, ..ModelConfig::default() };
        assert!(c.validate().unwrap_err().to_string().contains("model.dim"));
        let c = ModelConfig { keep_rate: 0.0, ..ModelConfig::default() };
        assert!(c.validate().unwrap_err().to_string().contains("keep_rate"));
        for bad in [0.0, -0.1, f64::NAN, f64::INFINITY] {
            let c = ModelConfig { init_std: Some(bad), ..ModelConfig::default() };
            assert!(c.validate().unwrap_err().to_string().contains("model.init_std"), "{bad}");
        }
    }

    #[test]
    fn init_is_seeded_and_bounded() {
        let cfg = ModelConfig { dim: 8, ..ModelConfig::default() };
        let a = Backbone::new(cfg.clone(), 10, 5, 7).unwrap().base_vec().unwrap();
        let b = Backbone::new(cfg.clone(), 10, 5, 7).unwrap().base_vec().unwrap();
        let c = Backbone::new(cfg, 10, 5, 8).unwrap().base_vec().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let bound = (6.0f32 / 23.0).sqrt();
        assert!(a.iter().all(|x| x.abs() <= bound));
    }

    #[test]
    fn map_base_replaces_the_table_by_a_function_of_it() {
        let m = Backbone::new(ModelConfig { dim: 3, ..ModelConfig::default() }, 4, 2, 7).unwrap();
        let before = m.base_vec().unwrap();
        let reversed: Vec<f32> = before.chunks(3).rev().flatten().copied().collect();
        m.map_base(|t| t.chunks(3).rev().flatten().copied().collect()).unwrap();
        assert_eq!(m.base_vec().unwrap(), reversed);
        assert!(m.map_base(|t| t[..3].to_vec()).is_err(), "a table of another length");
        assert_eq!(m.base_vec().unwrap(), reversed, "a refused table leaves the model as it was");
    }

    #[test]
    fn a_normal_init_has_the_standard_deviation_asked_for() {
        let cfg = ModelConfig { dim: 64, init_std: Some(0.1), ..ModelConfig::default() };
        let a = Backbone::new(cfg.clone(), 300, 200, 7).unwrap().base_vec().unwrap();
        assert_eq!(a, Backbone::new(cfg.clone(), 300, 200, 7).unwrap().base_vec().unwrap());
        assert_ne!(a, Backbone::new(cfg, 300, 200, 8).unwrap().base_vec().unwrap());
        let n = a.len() as f64;
        let mean = a.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let std = (a.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n).sqrt();
        // 32,000 draws: the sample mean's standard error is 0.1 / 179 and the deviation's 0.1 / 253.
        assert!(mean.abs() < 0.003, "mean {mean}");
        assert!((std - 0.1).abs() < 0.002, "std {std}");
        // Unlike Xavier's bounded table (±0.11 here), a normal one has tails beyond 3 standard deviations.
        assert!(a.iter().any(|x| x.abs() > 0.3));
    }
}
