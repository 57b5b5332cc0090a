//! Tensor kernels for candle: the sparse × dense product `Â · E` that propagates embeddings over the graph,
//! and two fused ops of UnlearnRec's fine-tuning step: the in-batch softmax of the alignment loss
//! ([`in_batch_log_prob`]) and the encoder MLP's layer ([`linear_leaky`]); and the row-pair dot products
//! behind every per-edge score ([`pair_dot`]).
//!
//! [`spmm`] is a differentiable candle op ([`SpMat`] implements [`candle_core::CustomOp1`]) whose backward
//! pass is a second product with the stored transpose, `∂L/∂x = Aᵀ · ∂L/∂(A·x)`. [`spmm_into`] is the same
//! kernel on plain slices.

mod bpr;
mod hops;
mod inbatch;
mod linear;
mod pairdot;
mod propagate;
mod sink;
mod spmm;
mod sqnorm;

pub use bpr::bpr_stacked;
pub use hops::{encoder_hops, encoder_table};
pub use inbatch::{in_batch_log_prob, in_batch_log_softmax};
pub use linear::linear_leaky;
pub(crate) use linear::{matmul, with_f32};
pub use pairdot::pair_dot;
pub use propagate::{LayerNoise, NOISE_ROWS, propagate_rows};
pub(crate) use spmm::{BipartiteInPlace, spmm_vec};

pub use sink::GradSink;
pub use spmm::{SpMat, spmm, spmm_into};
pub use sqnorm::{sq_norm, sq_norm_rows};

/// The contiguous `f32` data of a custom op's CPU input; errors name the op and the input.
fn cpu_f32<'a>(
    op: &str,
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let candle_core::CpuStorage::F32(data) = s else { candle_core::bail!("{op}: {what} must be f32") };
    let Some((start, end)) = l.contiguous_offsets() else { candle_core::bail!("{op}: {what} must be contiguous") };
    Ok(&data[start..end])
}
