//! The squared Frobenius norm as one op: the whole-table regulariser reads the table once forward and writes
//! its gradient once backward (candle's `sqr().sum_all()` makes two full-size temporaries each way); and of
//! a set of rows ([`sq_norm_rows`], a batch's regulariser), whose gradient can go to a [`GradSink`] as rows.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::GradSink;
use crate::error::{Error, Result};

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

/// The op of [`sq_norm_rows`].
struct SqNormRows {
    rows: Vec<u32>,
    sink: Option<GradSink>,
}

impl CustomOp1 for SqNormRows {
    fn name(&self) -> &'static str {
        "sq_norm_rows"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = super::cpu_f32("sq_norm_rows", storage, layout, "the table")?;
        let d = layout.dims()[1];
        // f64 partial sums over fixed runs of rows, added in order: deterministic for any thread count.
        let parts: Vec<f64> = self
            .rows
            .par_chunks((CHUNK / d.max(1)).max(1))
            .map(|rs| {
                rs.iter()
                    .map(|&r| x[r as usize * d..][..d].iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>())
                    .sum()
            })
            .collect();
        Ok((CpuStorage::F32(vec![parts.iter().sum::<f64>() as f32]), Shape::from(())))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let g = 2.0 * grad_res.to_scalar::<f32>()?;
        let x = arg.contiguous()?;
        let (storage, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(storage) = &*storage else { candle_core::bail!("sq_norm_rows: a CPU tensor") };
        let x = super::cpu_f32("sq_norm_rows", storage, layout, "the table")?;
        let d = layout.dims()[1];
        if let Some(sink) = &self.sink {
            // Written in place, in parallel: a `flat_map` collect grows its vector by doubling (a Gowalla batch's
            // 49,152 rows took ~10 ms a step that way).
            let mut vals = vec![0f32; self.rows.len() * d];
            vals.par_chunks_mut(d.max(1)).zip(self.rows.par_iter()).with_min_len(256).for_each(|(o, &r)| {
                o.iter_mut().zip(&x[r as usize * d..][..d]).for_each(|(o, &v)| *o = g * v);
            });
            sink.add_rows(&self.rows, vals, d)?;
            return Ok(None);
        }
        let mut out = vec![0f32; x.len()];
        for &r in &self.rows {
            let r = r as usize * d;
            out[r..r + d].iter_mut().zip(&x[r..r + d]).for_each(|(o, &v)| *o += g * v);
        }
        Ok(Some(Tensor::from_vec(out, arg.shape(), arg.device())?))
    }
}

/// `Σ_k ‖x[rows[k]]‖²` of a `(n, d)` `f32` CPU table, a scalar (a row counts as often as it is listed);
/// differentiable with respect to `x`, the gradient `2 · x` on the listed rows only. With a `sink`, the backward
/// pass adds that gradient there as rows and returns none to candle ([`GradSink`]), which saves a table-sized
/// gradient of zeros. The same value as `sq_norm(x.index_select(rows))`.
///
/// # Errors
/// A table that is not 2-D `f32` on the CPU; a row out of range.
pub fn sq_norm_rows(x: &Tensor, rows: &[u32], sink: Option<&GradSink>) -> Result<Tensor> {
    let &[n, _] = x.dims() else {
        return Err(Error::Shape {
            op: "sq_norm_rows",
            expected: "a (n, d) table".into(),
            got: format!("{:?}", x.dims()),
        });
    };
    if let Some(&r) = rows.iter().find(|&&r| r as usize >= n) {
        return Err(Error::Shape { op: "sq_norm_rows", expected: format!("rows below {n}"), got: format!("row {r}") });
    }
    Ok(x.contiguous()?.apply_op1(SqNormRows { rows: rows.to_vec(), sink: sink.cloned() })?)
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

    #[test]
    fn rows_value_and_gradient_match_the_gather_with_or_without_a_sink() {
        let (n, d) = (40, 7);
        let v: Vec<f32> = (0..n * d).map(|k| ((k * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let x = Var::from_tensor(&Tensor::from_vec(v.clone(), (n, d), &Device::Cpu).unwrap()).unwrap();
        let rows: Vec<u32> = vec![3, 0, 39, 3, 17, 3];
        let idx = Tensor::from_slice(&rows, rows.len(), &Device::Cpu).unwrap();
        let composed = x.as_tensor().index_select(&idx, 0).unwrap().sqr().unwrap().sum_all().unwrap();
        let want = composed.to_scalar::<f32>().unwrap();
        let g_want = (composed * 3.0).unwrap().backward().unwrap();
        let g_want = g_want.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got = sq_norm_rows(x.as_tensor(), &rows, None).unwrap();
        assert!((got.to_scalar::<f32>().unwrap() - want).abs() <= 1e-5 * want);
        let g = (got * 3.0).unwrap().backward().unwrap();
        assert_eq!(g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), g_want);
        let sink = GradSink::new();
        let got = sq_norm_rows(x.as_tensor(), &rows, Some(&sink)).unwrap();
        let g = (got * 3.0).unwrap().backward().unwrap();
        assert!(g.get(x.as_tensor()).is_none(), "no gradient beside the sink");
        assert_eq!(sink.take(n * d).unwrap().unwrap(), g_want);
        assert!(sq_norm_rows(x.as_tensor(), &[40], None).is_err());
    }
}
