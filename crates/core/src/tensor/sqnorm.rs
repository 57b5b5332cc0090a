//! The squared Frobenius norm as one op: the whole-table regulariser reads the table once forward and writes
//! its gradient once backward (candle's `sqr().sum_all()` makes two full-size temporaries each way).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// Values per partial sum: fixed, so the result does not depend on the thread count.
const CHUNK: usize = 1 << 14;

struct SqNorm;

impl CustomOp1 for SqNorm {
    fn name(&self) -> &'static str {
        "sq_norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = super::cpu_f32("sq_norm", storage, layout, "the input")?;
        // f64 partial sums of fixed chunks, added in order.
        let parts: Vec<f64> =
            x.par_chunks(CHUNK).map(|c| c.iter().map(|&v| f64::from(v) * f64::from(v)).sum()).collect();
        Ok((CpuStorage::F32(vec![parts.iter().sum::<f64>() as f32]), Shape::from(())))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let g = 2.0 * grad_res.to_scalar::<f32>()?;
        let x = arg.contiguous()?;
        let (storage, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(storage) = &*storage else { candle_core::bail!("sq_norm: a CPU tensor") };
        let x = super::cpu_f32("sq_norm", storage, layout, "the input")?;
        let mut out = Vec::with_capacity(x.len());
        x.par_iter().map(|&v| g * v).collect_into_vec(&mut out);
        Ok(Some(Tensor::from_vec(out, arg.shape(), arg.device())?))
    }
}

/// `Σ x²` over every element of an `f32` CPU tensor, a scalar; differentiable (`∂/∂x = 2x`). Partial sums in
/// `f64` over fixed chunks: deterministic for any thread count.
///
/// # Errors
/// A tensor that is not `f32` on the CPU.
pub fn sq_norm(x: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(SqNorm)?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    #[test]
    fn value_and_gradient_match_the_composition() {
        let v: Vec<f32> = (0..3 * CHUNK + 17).map(|k| ((k * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let x = Var::from_tensor(&Tensor::from_vec(v.clone(), v.len(), &Device::Cpu).unwrap()).unwrap();
        let got = sq_norm(x.as_tensor()).unwrap();
        let want: f64 = v.iter().map(|&a| f64::from(a) * f64::from(a)).sum();
        assert!((f64::from(got.to_scalar::<f32>().unwrap()) - want).abs() <= 1e-6 * want);
        let composed = x.as_tensor().sqr().unwrap().sum_all().unwrap();
        assert!((got.to_scalar::<f32>().unwrap() - composed.to_scalar::<f32>().unwrap()).abs() <= 1e-5 * want as f32);
        let g = (got * 3.0).unwrap().backward().unwrap();
        let g = g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert!(g.iter().zip(&v).all(|(g, v)| (g - 6.0 * v).abs() <= 1e-6 * v.abs().max(1.0)));
    }
}
