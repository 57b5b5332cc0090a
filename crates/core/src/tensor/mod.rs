//! Tensor kernels for candle: the sparse × dense product `Â · E` that propagates embeddings over the graph.
//!
//! [`spmm`] is a differentiable candle op ([`SpMat`] implements [`candle_core::CustomOp1`]) whose backward
//! pass is a second product with the stored transpose, `∂L/∂x = Aᵀ · ∂L/∂(A·x)`. [`spmm_into`] is the same
//! kernel on plain slices.

mod spmm;

pub use spmm::{SpMat, spmm, spmm_into};
