//! Sparse × dense products: the slice kernel [`spmm_into`] and the differentiable candle op [`spmm`].

use std::mem::MaybeUninit;
use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::graph::{NormAdj, SparseMat};

/// Rows per rayon work item; rayon splits the chunk sequence adaptively, so this only bounds the grain.
const ROWS_PER_CHUNK: usize = 32;

/// Below this many multiply-adds the product runs on the calling thread.
const PAR_MIN_WORK: usize = 1 << 16;

/// How far ahead, in bytes of dense rows, the kernel prefetches the rows it will read: 16 entries ahead for
/// `d = 64`, 8 for `d = 128`. The product is bound by the latency of these random row reads (`x` is tens of
/// MB for real graphs), so keeping several in flight matters more than the arithmetic; on Gowalla (d = 64)
/// prefetching halves the time.
const PREFETCH_BYTES: usize = 4096;

/// Asks the CPU to start loading `row` (a row of the dense input) into the cache.
#[inline(always)]
fn prefetch_row(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // One prefetch per 64-byte cache line.
        for line in (0..row.len()).step_by(16) {
            // SAFETY: a prefetch has no architectural effect and never faults; the address lies in `row`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(row[line..].as_ptr().cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Rows `rows` of `A · x` into `out` (row `rows[k]` into `out`'s `k`-th row), with the row width known at
/// compile time so that the accumulator row stays in registers (`D = 0` means "use `d`", accumulating in
/// `scratch`). With `SLOTS`, the input is compact: column `c` of `A` reads row `slots[c]` of `x` (the
/// product of a row-sparse input whose non-zero rows are stored alone, all others pointing at one zero
/// row; no data-dependent branch per entry).
///
/// Each output row is `Σ_k A[r, c_k] · x[c_k, :]`, accumulated in storage order. Every element of `out` is
/// written (empty rows get zeros) and none is read, so `out` may start uninitialised.
#[inline(always)]
fn rows_kernel<const D: usize, const SLOTS: bool>(
    a: &SparseMat,
    x: &[f32],
    d: usize,
    rows: impl Iterator<Item = usize>,
    slots: &[u32],
    out: &mut [MaybeUninit<f32>],
    scratch: &mut [f32],
) {
    let d = if D == 0 { d } else { D };
    let (indptr, indices, values) = (a.indptr(), a.indices(), a.values());
    let last = indices.len().saturating_sub(1);
    let x_row = |c: u32| &x[c as usize * d..][..d];
    let ahead = (PREFETCH_BYTES / (4 * d)).clamp(4, 64);
    let mut acc = [0f32; D];
    let acc: &mut [f32] = if D == 0 { &mut scratch[..d] } else { &mut acc };
    for (r, o) in rows.zip(out.chunks_exact_mut(d)) {
        acc.fill(0.0);
        let source = |c: u32| if SLOTS { slots[c as usize] } else { c };
        for k in indptr[r]..indptr[r + 1] {
            prefetch_row(x_row(source(indices[(k + ahead).min(last)])));
            let (xr, v) = (x_row(source(indices[k])), values[k]);
            // Slice axpy, acc += v · x_row; with `D` fixed the loop unrolls over registers.
            for (t, &xv) in acc.iter_mut().zip(xr) {
                *t += v * xv;
            }
        }
        for (o, &t) in o.iter_mut().zip(acc.iter()) {
            o.write(t);
        }
    }
}

/// Which rows of the product a kernel call computes, and which input rows it reads.
#[derive(Clone, Copy)]
enum Rows<'a> {
    /// Rows `first..` (as many as the output holds), every input row.
    From(usize),
    /// The listed rows, every input row.
    List(&'a [u32]),
    /// Rows `first..`, column `c` reading input row `slots[c]`.
    Slots(usize, &'a [u32]),
}

/// Picks the kernel for the width `d` and the row selection.
#[inline(always)]
fn rows_by_width(a: &SparseMat, x: &[f32], d: usize, rows: Rows<'_>, out: &mut [MaybeUninit<f32>]) {
    #[inline(always)]
    fn by_rows<const D: usize>(
        a: &SparseMat,
        x: &[f32],
        d: usize,
        rows: Rows<'_>,
        out: &mut [MaybeUninit<f32>],
        scratch: &mut [f32],
    ) {
        match rows {
            Rows::From(first) => rows_kernel::<D, false>(a, x, d, first.., &[], out, scratch),
            Rows::List(list) => rows_kernel::<D, false>(a, x, d, list.iter().map(|&r| r as usize), &[], out, scratch),
            Rows::Slots(first, slots) => rows_kernel::<D, true>(a, x, d, first.., slots, out, scratch),
        }
    }
    match d {
        16 => by_rows::<16>(a, x, d, rows, out, &mut []),
        32 => by_rows::<32>(a, x, d, rows, out, &mut []),
        64 => by_rows::<64>(a, x, d, rows, out, &mut []),
        128 => by_rows::<128>(a, x, d, rows, out, &mut []),
        // One accumulator per call (a chunk of rows), not per row.
        _ => by_rows::<0>(a, x, d, rows, out, &mut vec![0.0; d]),
    }
}

/// [`rows_by_width`] compiled for AVX2 (8-wide `f32` lanes instead of SSE2's 4).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn rows_avx2(a: &SparseMat, x: &[f32], d: usize, rows: Rows<'_>, out: &mut [MaybeUninit<f32>]) {
    rows_by_width(a, x, d, rows, out)
}

/// Runs the best kernel that the CPU supports on the rows `rows` selects.
fn rows_dispatch(a: &SparseMat, x: &[f32], d: usize, rows: Rows<'_>, out: &mut [MaybeUninit<f32>]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, the only requirement of `rows_avx2`.
        return unsafe { rows_avx2(a, x, d, rows, out) };
    }
    rows_by_width(a, x, d, rows, out)
}

/// `out = A · x` into possibly uninitialised memory; every element of `out` is written. Shapes as in
/// [`spmm_into`].
#[track_caller]
fn spmm_uninit(a: &SparseMat, x: &[f32], d: usize, out: &mut [MaybeUninit<f32>]) {
    assert_eq!(x.len(), a.n_cols() * d, "spmm: x must have n_cols × d = {} × {d} entries", a.n_cols());
    assert_eq!(out.len(), a.n_rows() * d, "spmm: out must have n_rows × d = {} × {d} entries", a.n_rows());
    if d == 0 {
        return;
    }
    spmm_rows_uninit(a, x, d, 0, None, out);
}

/// Rows `first..` of `A · x` (as many as `out` holds) into possibly uninitialised `out`, reading `x` through
/// `slots` when given (see [`Rows::Slots`]).
fn spmm_rows_uninit(
    a: &SparseMat,
    x: &[f32],
    d: usize,
    first: usize,
    slots: Option<&[u32]>,
    out: &mut [MaybeUninit<f32>],
) {
    let rows = |first| slots.map_or(Rows::From(first), |s| Rows::Slots(first, s));
    if a.nnz() * d < PAR_MIN_WORK {
        rows_dispatch(a, x, d, rows(first), out);
        return;
    }
    out.par_chunks_mut(ROWS_PER_CHUNK * d)
        .enumerate()
        .for_each(|(k, chunk)| rows_dispatch(a, x, d, rows(first + k * ROWS_PER_CHUNK), chunk));
}

/// `x ← A · x` in place for a square `A` that is bipartite at `split` ([`SparseMat::is_bipartite`]: the
/// rows below `split` read only the rows at or above it, and the other way round), with one half-sized
/// temporary (the smaller half) instead of a second whole `x`. Every row is the same sum in the same order as
/// [`spmm_into`]'s, so the result is bit for bit the same. Built once per matrix (the check and the slot map
/// are `O(nnz)` and `O(n)`), applied once per layer.
pub(crate) struct BipartiteInPlace<'a> {
    a: &'a SparseMat,
    split: usize,
    /// Column `c >= split` of the upper rows reads row `c - split` of the lower half; columns below `split`
    /// never occur there and only the kernel's look-ahead prefetch reads their slot, so they point at row 0.
    slots: Vec<u32>,
    /// The temporary half, kept between layers.
    tmp: Vec<f32>,
}

impl<'a> BipartiteInPlace<'a> {
    /// The in-place product of `a` split at `split`, or `None` when `a` is not square and bipartite there.
    pub(crate) fn new(a: &'a SparseMat, split: usize) -> Option<Self> {
        let n = a.n_rows();
        a.is_bipartite(split).then(|| Self {
            a,
            split,
            slots: (0..n).map(|c| if c >= split { (c - split) as u32 } else { 0 }).collect(),
            tmp: Vec::new(),
        })
    }

    /// `x ← A · x`.
    ///
    /// # Panics
    /// When `x.len() != a.n_rows() * d`.
    pub(crate) fn apply(&mut self, x: &mut [f32], d: usize) {
        let (a, split) = (self.a, self.split);
        let n = a.n_rows();
        assert_eq!(x.len(), n * d, "spmm: x must have n_rows × d = {n} × {d} entries");
        if d == 0 || split == 0 || split == n {
            // One side is empty: no entries, so the product is zero.
            x.fill(0.0);
            return;
        }
        // The lower rows read the upper half of `x` directly (their columns are below `split`, and the
        // look-ahead stays among them: these rows are the matrix's last); the upper rows read the lower half
        // through the slots.
        let (upper, lower) = (split * d, (n - split) * d);
        let tmp = &mut self.tmp;
        tmp.clear();
        if lower <= upper {
            // The lower half's product into `tmp` (reads the upper half), then the upper half's in place
            // (reads the lower half, still the input), then `tmp` into the lower half.
            tmp.reserve(lower);
            spmm_rows_uninit(a, &x[..upper], d, split, None, &mut tmp.spare_capacity_mut()[..lower]);
            // SAFETY: the product wrote all `lower` elements.
            unsafe { tmp.set_len(lower) };
            let (xu, xl) = x.split_at_mut(upper);
            spmm_rows_uninit(a, xl, d, 0, Some(&self.slots), uninit_view(xu));
            xl.copy_from_slice(tmp);
        } else {
            tmp.reserve(upper);
            spmm_rows_uninit(a, &x[upper..], d, 0, Some(&self.slots), &mut tmp.spare_capacity_mut()[..upper]);
            // SAFETY: the product wrote all `upper` elements.
            unsafe { tmp.set_len(upper) };
            let (xu, xl) = x.split_at_mut(upper);
            spmm_rows_uninit(a, xu, d, split, None, uninit_view(xl));
            xu.copy_from_slice(tmp);
        }
    }
}

/// An initialised slice viewed as possibly uninitialised, for the kernels that write every element.
fn uninit_view(s: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and the kernels only write initialised values
    // through the view, so the slice stays initialised.
    unsafe { &mut *(s as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// `A · x` into a fresh vector for an `x` stored compactly: column `c` of `A` reads row `slots[c]` of `x`.
/// A row-sparse input is its non-zero rows plus one zero row that every other column points at: the product
/// scans the matrix's indices and gathers from a table that stays in the cache.
///
/// # Panics
/// When `slots` does not have one entry per column of `A`, or points outside `x`.
pub(crate) fn spmm_slots_vec(a: &SparseMat, x: &[f32], d: usize, slots: &[u32]) -> Vec<f32> {
    assert_eq!(slots.len(), a.n_cols(), "spmm: slots must have n_cols = {} entries", a.n_cols());
    assert!(slots.iter().all(|&s| (s as usize + 1) * d <= x.len()), "spmm: a slot is outside the input");
    let len = a.n_rows() * d;
    let mut out = Vec::with_capacity(len);
    if d > 0 {
        spmm_rows_uninit(a, x, d, 0, Some(slots), &mut out.spare_capacity_mut()[..len]);
    }
    // SAFETY: every element of the `len` was written above (or `len` is 0).
    unsafe { out.set_len(len) };
    out
}

/// Rows `rows` of `A · x` (duplicates allowed), `(rows.len(), d)` row-major: a product that reads only the
/// neighbourhoods of the rows it is asked for.
///
/// # Panics
/// When `x.len() != a.n_cols() * d` or a row is out of range.
pub(crate) fn spmm_rows_vec(a: &SparseMat, x: &[f32], d: usize, rows: &[u32]) -> Vec<f32> {
    assert_eq!(x.len(), a.n_cols() * d, "spmm: x must have n_cols × d = {} × {d} entries", a.n_cols());
    assert!(rows.iter().all(|&r| (r as usize) < a.n_rows()), "spmm: a row is out of range");
    let len = rows.len() * d;
    let mut out = Vec::with_capacity(len);
    if d > 0 {
        let spare = &mut out.spare_capacity_mut()[..len];
        let work: usize = rows.iter().map(|&r| a.indptr()[r as usize + 1] - a.indptr()[r as usize]).sum();
        if work * d < PAR_MIN_WORK {
            rows_dispatch(a, x, d, Rows::List(rows), spare);
        } else {
            spare
                .par_chunks_mut(ROWS_PER_CHUNK * d)
                .zip(rows.par_chunks(ROWS_PER_CHUNK))
                .for_each(|(chunk, list)| rows_dispatch(a, x, d, Rows::List(list), chunk));
        }
    }
    // SAFETY: every element of the `len` was written above (or `len` is 0).
    unsafe { out.set_len(len) };
    out
}

/// `out = A · x` for a row-major `x` of shape `(a.n_cols(), d)` and `out` of shape `(a.n_rows(), d)`.
///
/// Parallel over chunks of rows with rayon; each output row is `Σ_k A[r, c_k] · x[c_k, :]`, accumulated in
/// storage order (so the result does not depend on the thread count). `out` is overwritten.
///
/// # Panics
/// When `x.len() != a.n_cols() * d` or `out.len() != a.n_rows() * d`.
///
/// ```
/// use unlearnrec_core::graph::SparseMat;
/// use unlearnrec_core::tensor::spmm_into;
///
/// let a = SparseMat::from_dense(2, 2, &[0.0, 2.0, 1.0, 0.0]);
/// let mut out = [0.0; 4];
/// spmm_into(&a, &[1.0, 2.0, 3.0, 4.0], 2, &mut out);
/// assert_eq!(out, [6.0, 8.0, 1.0, 2.0]);
/// ```
#[track_caller]
pub fn spmm_into(a: &SparseMat, x: &[f32], d: usize, out: &mut [f32]) {
    spmm_uninit(a, x, d, uninit_view(out));
}

/// `A · x` into a fresh vector, without zeroing it first.
pub(crate) fn spmm_vec(a: &SparseMat, x: &[f32], d: usize) -> Vec<f32> {
    let len = a.n_rows() * d;
    let mut out = Vec::with_capacity(len);
    spmm_uninit(a, x, d, &mut out.spare_capacity_mut()[..len]);
    // SAFETY: `spmm_uninit` returned normally, having written all `len` elements.
    unsafe { out.set_len(len) };
    out
}

/// A sparse matrix prepared for [`spmm`]: the matrix and its transpose (for the backward pass), both shared.
///
/// It is also the candle [`CustomOp1`]: `x.apply_op1(sp.clone())` computes `A · x` with `x` contiguous, `f32`,
/// on the CPU. Prefer [`spmm`], which checks the input and makes it contiguous.
#[derive(Clone, Debug)]
pub struct SpMat {
    mat: Arc<SparseMat>,
    transposed: Arc<SparseMat>,
}

impl SpMat {
    /// Prepares a general matrix; computes and stores its transpose (O(nnz)).
    pub fn new(mat: Arc<SparseMat>) -> SpMat {
        let transposed = Arc::new(mat.transpose());
        SpMat { mat, transposed }
    }

    /// Prepares a symmetric matrix, sharing it as its own transpose.
    ///
    /// # Errors
    /// [`Error::Shape`] when the matrix is not exactly symmetric (checked in O(nnz log degree)).
    pub fn symmetric(mat: Arc<SparseMat>) -> Result<SpMat> {
        if !mat.is_symmetric() {
            return Err(Error::Shape {
                op: "SpMat::symmetric",
                expected: "a symmetric matrix".into(),
                got: format!("an asymmetric {}×{} matrix", mat.n_rows(), mat.n_cols()),
            });
        }
        Ok(SpMat { transposed: mat.clone(), mat })
    }

    /// The normalised adjacency `Â`, which is symmetric by construction: no transpose is stored or checked.
    pub fn from_norm_adj(adj: &NormAdj) -> SpMat {
        SpMat { mat: adj.shared().clone(), transposed: adj.shared().clone() }
    }

    /// The matrix `A`.
    pub fn matrix(&self) -> &SparseMat {
        &self.mat
    }

    /// The operator of `Aᵀ` (shares both matrices; no copy).
    pub fn transpose(&self) -> SpMat {
        SpMat { mat: self.transposed.clone(), transposed: self.mat.clone() }
    }

    /// True when the transpose is the matrix itself (symmetric matrices).
    pub fn is_self_transpose(&self) -> bool {
        Arc::ptr_eq(&self.mat, &self.transposed)
    }

    /// The number of rows of `A` (rows of the product).
    pub fn n_rows(&self) -> usize {
        self.mat.n_rows()
    }

    /// The number of columns of `A` (rows of the dense input).
    pub fn n_cols(&self) -> usize {
        self.mat.n_cols()
    }
}

impl From<&NormAdj> for SpMat {
    fn from(adj: &NormAdj) -> SpMat {
        SpMat::from_norm_adj(adj)
    }
}

impl CustomOp1 for SpMat {
    fn name(&self) -> &'static str {
        "spmm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("spmm: the dense input must be f32, got {:?}", storage.dtype())
        };
        let &[rows, d] = layout.dims() else {
            candle_core::bail!("spmm: the dense input must have rank 2, got shape {:?}", layout.dims())
        };
        if rows != self.mat.n_cols() {
            candle_core::bail!("spmm: the dense input must have {} rows, got shape ({rows}, {d})", self.mat.n_cols())
        }
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("spmm: the dense input must be contiguous (call .contiguous() first)")
        };
        let out = spmm_vec(&self.mat, &data[start..end], d);
        Ok((CpuStorage::F32(out), Shape::from((self.mat.n_rows(), d))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // d(A·x) = A·dx, so grad_x = Aᵀ · grad_out; the transposed op is differentiable in turn.
        Ok(Some(grad_res.contiguous()?.apply_op1(self.transpose())?))
    }
}

/// `A · x`: the sparse matrix times a dense `(a.n_cols(), d)` `f32` CPU tensor, giving `(a.n_rows(), d)`.
///
/// Differentiable with respect to `x` (the gradient is `Aᵀ · grad`, through the stored transpose). A
/// non-contiguous `x` (a transpose or a column slice) is copied to a contiguous layout first.
///
/// # Errors
/// [`Error::Shape`] when `x` is not `(a.n_cols(), d)`, is not `f32`, or is not on the CPU.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use unlearnrec_core::graph::SparseMat;
/// use unlearnrec_core::tensor::{SpMat, spmm};
/// use std::sync::Arc;
///
/// let a = SpMat::new(Arc::new(SparseMat::from_dense(1, 2, &[2.0, 3.0])));
/// let x = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &Device::Cpu)?;
/// assert_eq!(spmm(&a, &x)?.to_vec2::<f32>()?, [[2.0, 3.0]]);
/// # Ok::<(), unlearnrec_core::Error>(())
/// ```
pub fn spmm(a: &SpMat, x: &Tensor) -> Result<Tensor> {
    let shape_err = |expected: String| Error::Shape {
        op: "spmm",
        expected,
        got: format!("{:?} {:?} on {:?}", x.dims(), x.dtype(), x.device().location()),
    };
    let &[rows, _] = x.dims() else {
        return Err(shape_err(format!("({}, d)", a.n_cols())));
    };
    if rows != a.n_cols() {
        return Err(shape_err(format!("({}, d)", a.n_cols())));
    }
    if x.dtype() != DType::F32 {
        return Err(shape_err("dtype f32".into()));
    }
    if !x.device().is_cpu() {
        return Err(shape_err("a CPU tensor".into()));
    }
    Ok(x.contiguous()?.apply_op1(a.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Interactions;
    use crate::graph::Graph;
    use crate::graph::testutil::Golden;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A random `n_rows × n_cols` matrix with about `density` of its entries stored.
    fn random_sparse(n_rows: usize, n_cols: usize, density: f64, seed: u64) -> SparseMat {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dense: Vec<f32> = (0..n_rows * n_cols)
            .map(|_| if rng.random::<f64>() < density { rng.random_range(-1.0f32..1.0) } else { 0.0 })
            .collect();
        SparseMat::from_dense(n_rows, n_cols, &dense)
    }

    /// A random square matrix, bipartite at `split` (entries only between the rows below `split` and the
    /// columns at or above it, and the other way round).
    fn random_bipartite(n: usize, split: usize, density: f64, seed: u64) -> SparseMat {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dense: Vec<f32> = (0..n * n)
            .map(|k| {
                let (r, c) = (k / n, k % n);
                if (r < split) != (c < split) && rng.random::<f64>() < density {
                    rng.random_range(-1.0f32..1.0)
                } else {
                    0.0
                }
            })
            .collect();
        SparseMat::from_dense(n, n, &dense)
    }

    /// The in-place product equals the plain one bit for bit, with either side the smaller, at the widths
    /// with their own kernels and a generic one, serial and parallel, and repeated with one temporary.
    #[test]
    fn bipartite_in_place_product_is_the_plain_product() {
        for (n, split, density) in [(9, 4, 0.5), (9, 5, 0.5), (700, 200, 0.05), (700, 500, 0.05), (6, 6, 0.0)] {
            let a = random_bipartite(n, split, density, n as u64 + split as u64);
            let mut product = BipartiteInPlace::new(&a, split).unwrap_or_else(|| panic!("{n} {split}"));
            for d in [1, 5, 16, 64, 128] {
                let mut x = random_dense(n * d, d as u64);
                for round in 0..2 {
                    let want = spmm_vec(&a, &x, d);
                    product.apply(&mut x, d);
                    assert_eq!(x, want, "n {n} split {split} d {d} round {round}");
                }
            }
        }
        // Not bipartite: a diagonal entry, or the wrong split.
        let mut dense = random_bipartite(8, 3, 0.6, 1).to_dense();
        assert!(!SparseMat::from_dense(8, 8, &dense).is_bipartite(4));
        dense[2 * 8 + 2] = 1.0;
        let looped = SparseMat::from_dense(8, 8, &dense);
        assert!(!looped.is_bipartite(3) && BipartiteInPlace::new(&looped, 3).is_none());
        assert!(!random_sparse(4, 5, 0.5, 2).is_bipartite(2), "not square");
    }

    fn random_dense(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// `A · x` in f64 from the dense form of `A`.
    fn dense_product(a: &SparseMat, x: &[f32], d: usize) -> Vec<f64> {
        let ad = a.to_dense();
        let (n, m) = (a.n_rows(), a.n_cols());
        let mut out = vec![0.0f64; n * d];
        for r in 0..n {
            for c in 0..m {
                let v = ad[r * m + c] as f64;
                if v != 0.0 {
                    for j in 0..d {
                        out[r * d + j] += v * x[c * d + j] as f64;
                    }
                }
            }
        }
        out
    }

    fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() <= tol * (1.0 + w.abs()), "{what}[{k}]: got {g}, want {w}");
        }
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn spmm_into_matches_dense_for_all_widths() {
        // Widths with and without a fixed-width kernel; sizes below and above the parallel threshold.
        for &(n_rows, n_cols, density) in &[(7, 5, 0.4), (300, 200, 0.05), (1200, 900, 0.02)] {
            let a = random_sparse(n_rows, n_cols, density, n_rows as u64);
            for d in [1, 3, 16, 32, 64, 70, 128] {
                let x = random_dense(n_cols * d, d as u64);
                // `out` starts as garbage: spmm_into overwrites it.
                let mut out = vec![f32::NAN; n_rows * d];
                spmm_into(&a, &x, d, &mut out);
                assert_close(&out, &dense_product(&a, &x, d), 1e-5, &format!("{n_rows}×{n_cols}, d={d}"));
            }
        }
    }

    #[test]
    fn spmm_into_is_independent_of_thread_count() {
        let a = random_sparse(2000, 2000, 0.01, 3);
        let x = random_dense(2000 * 64, 4);
        let mut many = vec![0.0; 2000 * 64];
        spmm_into(&a, &x, 64, &mut many);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let mut one = vec![0.0; 2000 * 64];
        pool.install(|| spmm_into(&a, &x, 64, &mut one));
        assert_eq!(many, one);
    }

    #[test]
    fn compact_and_row_subset_products_equal_the_full_one() {
        for d in [7, 64] {
            let a = random_sparse(900, 600, 0.02, 5);
            let mut x = random_dense(600 * d, 6);
            // x is zero outside the masked rows, as in a backward pass from a batch.
            let mask: Vec<bool> = (0..600).map(|r| r % 7 == 3 || r == 0).collect();
            for (r, row) in x.chunks_mut(d).enumerate() {
                if !mask[r] {
                    row.fill(0.0);
                }
            }
            let mut full = vec![0.0; 900 * d];
            spmm_into(&a, &x, d, &mut full);
            // The same input stored compactly: its non-zero rows, then one zero row for the others.
            let kept: Vec<usize> = (0..600).filter(|&r| mask[r]).collect();
            let mut compact: Vec<f32> = kept.iter().flat_map(|&r| x[r * d..][..d].to_vec()).collect();
            compact.extend(vec![0.0; d]);
            let mut slots = vec![kept.len() as u32; 600];
            for (k, &r) in kept.iter().enumerate() {
                slots[r] = k as u32;
            }
            assert_eq!(spmm_slots_vec(&a, &compact, d, &slots), full, "slots, d = {d}");
            let identity: Vec<u32> = (0..600).collect();
            assert_eq!(spmm_slots_vec(&a, &x, d, &identity), full, "identity slots, d = {d}");
            let rows: Vec<u32> = vec![899, 0, 5, 5, 451, 17];
            let want: Vec<f32> = rows.iter().flat_map(|&r| full[r as usize * d..][..d].to_vec()).collect();
            assert_eq!(spmm_rows_vec(&a, &x, d, &rows), want, "rows, d = {d}");
            // Enough rows to run in parallel, in any thread count, with the same sums.
            let many: Vec<u32> = (0..900).rev().chain(0..900).collect();
            let want: Vec<f32> = many.iter().flat_map(|&r| full[r as usize * d..][..d].to_vec()).collect();
            let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
            assert_eq!(pool.install(|| spmm_rows_vec(&a, &x, d, &many)), want);
            assert_eq!(spmm_rows_vec(&a, &x, d, &many), want);
            assert_eq!(pool.install(|| spmm_slots_vec(&a, &compact, d, &slots)), full);
        }
    }

    #[test]
    fn empty_rows_and_empty_matrices_give_zeros() {
        // Rows 1 and 3 are empty; the op writes fresh, uninitialised memory, so zeros must be written.
        let a = SpMat::new(Arc::new(SparseMat::from_dense(
            4,
            3,
            &[1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0],
        )));
        let empty = SpMat::new(Arc::new(SparseMat::from_dense(5, 3, &[0.0; 15])));
        for d in [2, 16, 64, 128] {
            let x = random_dense(3 * d, d as u64);
            let xt = Tensor::from_vec(x.clone(), (3, d), &Device::Cpu).unwrap();
            assert_close(&flat(&spmm(&a, &xt).unwrap()), &dense_product(a.matrix(), &x, d), 1e-6, "empty rows");
            assert!(flat(&spmm(&empty, &xt).unwrap()).iter().all(|&v| v == 0.0));
            let mut out = vec![f32::NAN; 5 * d];
            spmm_into(empty.matrix(), &x, d, &mut out);
            assert!(out.iter().all(|&v| v == 0.0));
        }
    }

    #[test]
    #[should_panic(expected = "x must have")]
    fn spmm_into_checks_lengths() {
        let a = random_sparse(3, 4, 0.5, 1);
        spmm_into(&a, &[0.0; 8], 4, &mut [0.0; 12]);
    }

    #[test]
    fn spmm_forward_matches_dense_non_square() {
        let a = SpMat::new(Arc::new(random_sparse(40, 25, 0.2, 9)));
        let x = random_dense(25 * 6, 10);
        let xt = Tensor::from_vec(x.clone(), (25, 6), &Device::Cpu).unwrap();
        let y = spmm(&a, &xt).unwrap();
        assert_eq!(y.dims(), [40, 6]);
        assert_close(&flat(&y), &dense_product(a.matrix(), &x, 6), 1e-5, "forward");
    }

    /// Gradient of `sum(spmm(A, x) ⊙ W)` with respect to x is `Aᵀ W`.
    fn check_backward_linear(a: &SpMat, d: usize, seed: u64) {
        let x = Var::from_vec(random_dense(a.n_cols() * d, seed), (a.n_cols(), d), &Device::Cpu).unwrap();
        let w = random_dense(a.n_rows() * d, seed + 1);
        let wt = Tensor::from_vec(w.clone(), (a.n_rows(), d), &Device::Cpu).unwrap();
        let loss = (spmm(a, x.as_tensor()).unwrap() * &wt).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let gx = grads.get(x.as_tensor()).expect("gradient of x");
        assert_eq!(gx.dims(), [a.n_cols(), d]);
        let at = a.matrix().transpose();
        assert_close(&flat(gx), &dense_product(&at, &w, d), 1e-5, "backward");
    }

    #[test]
    fn spmm_backward_is_transpose_product_non_square() {
        check_backward_linear(&SpMat::new(Arc::new(random_sparse(30, 50, 0.1, 21))), 5, 22);
        check_backward_linear(&SpMat::new(Arc::new(random_sparse(50, 30, 0.1, 23))), 64, 24);
    }

    fn small_norm_adj() -> NormAdj {
        let pairs = vec![(0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 3), (3, 3), (4, 2), (4, 0)];
        let (e, _) = Interactions::from_pairs(pairs);
        NormAdj::from_graph(&Graph::from_interactions(5, 4, &e))
    }

    #[test]
    fn spmm_backward_on_dropped_asymmetric_matrix() {
        let adj = small_norm_adj();
        let sym = SpMat::from(&adj);
        assert!(sym.is_self_transpose());
        check_backward_linear(&sym, 4, 30);
        // A dropped copy is asymmetric: its backward must use the real transpose.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let dropped = loop {
            let m = adj.as_sparse().drop_entries(0.7, &mut rng);
            if !m.is_symmetric() {
                break m;
            }
        };
        let op = SpMat::new(Arc::new(dropped));
        assert!(!op.is_self_transpose());
        assert!(SpMat::symmetric(Arc::new(op.matrix().clone())).is_err());
        assert!(SpMat::symmetric(adj.shared().clone()).is_ok());
        check_backward_linear(&op, 4, 31);
    }

    /// A nonlinear loss through two propagation layers, against central finite differences.
    #[test]
    fn spmm_backward_matches_finite_differences() {
        let a = SpMat::new(Arc::new(random_sparse(12, 12, 0.3, 40)));
        let (n, d) = (12, 3);
        let x0 = random_dense(n * d, 41);
        let w = Tensor::from_vec(random_dense(n * d, 42), (n, d), &Device::Cpu).unwrap();
        let loss_of = |x: &Tensor| -> Tensor {
            let h1 = spmm(&a, x).unwrap();
            let h2 = spmm(&a, &h1.tanh().unwrap()).unwrap();
            (h2.sqr().unwrap() * &w).unwrap().sum_all().unwrap()
        };
        let x = Var::from_vec(x0.clone(), (n, d), &Device::Cpu).unwrap();
        let grads = loss_of(x.as_tensor()).backward().unwrap();
        let g = flat(grads.get(x.as_tensor()).unwrap());
        let eps = 1e-2f32;
        for k in 0..n * d {
            let mut xp = x0.clone();
            xp[k] += eps;
            let mut xm = x0.clone();
            xm[k] -= eps;
            let f =
                |v: Vec<f32>| loss_of(&Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap()).to_scalar::<f32>().unwrap();
            let fd = (f(xp) - f(xm)) / (2.0 * eps);
            assert!(
                (fd - g[k]).abs() <= 2e-3 * (1.0 + g[k].abs()),
                "∂L/∂x[{k}]: autograd {}, finite differences {fd}",
                g[k]
            );
        }
    }

    #[test]
    fn spmm_handles_non_contiguous_input() {
        let a = SpMat::new(Arc::new(random_sparse(9, 7, 0.4, 50)));
        let base = Tensor::from_vec(random_dense(7 * 10, 51), (7, 10), &Device::Cpu).unwrap();
        let want = |t: &Tensor| dense_product(a.matrix(), &flat(&t.contiguous().unwrap()), t.dims()[1]);
        // A transposed view and a column slice are strided.
        let t = Tensor::from_vec(random_dense(4 * 7, 52), (4, 7), &Device::Cpu).unwrap().t().unwrap();
        let cols = base.narrow(1, 2, 5).unwrap();
        for x in [&t, &cols] {
            assert!(!x.is_contiguous());
            assert_close(&flat(&spmm(&a, x).unwrap()), &want(x), 1e-5, "strided input");
            // The raw op refuses strided input instead of reading it wrongly.
            let err = x.apply_op1_no_bwd(&a).unwrap_err().to_string();
            assert!(err.contains("contiguous"), "{err}");
        }
        // A row slice is contiguous with a start offset, which the raw op honours.
        let big = Tensor::from_vec(random_dense(10 * 3, 53), (10, 3), &Device::Cpu).unwrap();
        let rows = big.narrow(0, 2, 7).unwrap();
        assert!(rows.is_contiguous());
        assert_close(&flat(&rows.apply_op1_no_bwd(&a).unwrap()), &want(&rows), 1e-5, "offset input");
        // Gradients flow through the strided view back to the base tensor.
        let v = Var::from_tensor(&base).unwrap();
        let loss = spmm(&a, &v.as_tensor().narrow(1, 2, 5).unwrap()).unwrap().sum_all().unwrap();
        let g = flat(loss.backward().unwrap().get(v.as_tensor()).unwrap());
        let col_sums: Vec<f64> = (0..7).map(|c| (0..9).map(|r| a.matrix().get(r, c) as f64).sum()).collect();
        for r in 0..7 {
            for c in 0..10 {
                let want = if (2..7).contains(&c) { col_sums[r] } else { 0.0 };
                assert!((g[r * 10 + c] as f64 - want).abs() < 1e-5, "grad[{r}, {c}]");
            }
        }
    }

    #[test]
    fn spmm_rejects_bad_inputs() {
        let a = SpMat::new(Arc::new(random_sparse(4, 3, 0.5, 60)));
        let dev = Device::Cpu;
        let wrong_rows = Tensor::zeros((4, 2), DType::F32, &dev).unwrap();
        let rank1 = Tensor::zeros(3, DType::F32, &dev).unwrap();
        let f64s = Tensor::zeros((3, 2), DType::F64, &dev).unwrap();
        for x in [&wrong_rows, &rank1, &f64s] {
            assert!(matches!(spmm(&a, x), Err(Error::Shape { op: "spmm", .. })), "{:?}", x.shape());
        }
        let err = f64s.apply_op1_no_bwd(&a).unwrap_err().to_string();
        assert!(err.contains("f32"), "{err}");
        assert_eq!(spmm(&a, &Tensor::zeros((3, 0), DType::F32, &dev).unwrap()).unwrap().dims(), [4, 0]);
    }

    #[test]
    fn golden_lightgcn_layers() {
        let Some(golden) = Golden::load() else { return };
        let (nu, ni) = golden.sizes();
        let g = Graph::from_interactions(nu, ni, &golden.edges("train_edges"));
        let rest = g.remove(&golden.edges("request_edges"));
        let (shape, e0) = golden.tensor(&["inputs", "E0"]);
        let e0: Vec<f32> = e0.iter().map(|&v| v as f32).collect();
        for (graph, key) in [(&g, "full_layers"), (&rest, "remaining_layers")] {
            let op = SpMat::from(&NormAdj::from_graph(graph));
            let mut e = Tensor::from_vec(e0.clone(), (shape[0], shape[1]), &Device::Cpu).unwrap();
            for layer in 1..=3 {
                e = spmm(&op, &e).unwrap();
                let (want_shape, want) = golden.tensor_in_list(&["lightgcn", key], layer);
                assert_eq!(e.dims(), want_shape.as_slice());
                assert_close(&flat(&e), &want, 1e-5, &format!("{key}[{layer}]"));
            }
        }
    }

    /// Release-mode timing: `cargo test --release -p unlearnrec-core tensor::spmm -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing; run in release with --nocapture"]
    fn gowalla_spmm_timing() {
        let Some((nu, ni, edges)) = crate::graph::testutil::gowalla_train() else { return };
        let adj = NormAdj::from_graph(&Graph::from_interactions(nu, ni, &edges));
        let op = SpMat::from(&adj);
        let n = adj.n_nodes();
        let d = 64;
        let x = random_dense(n * d, 1);
        let mut out = vec![0.0; n * d];
        let best = |f: &mut dyn FnMut()| {
            f();
            (0..15)
                .map(|_| {
                    let t = std::time::Instant::now();
                    f();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .fold(f64::INFINITY, f64::min)
        };
        let t_into = best(&mut || spmm_into(adj.as_sparse(), &x, d, &mut out));
        let xt = Tensor::from_vec(x.clone(), (n, d), &Device::Cpu).unwrap();
        let t_op = best(&mut || drop(spmm(&op, &xt).unwrap()));
        println!(
            "gowalla Â {n}×{n}, nnz {}, d = {d}, {} threads: spmm_into {t_into:.1} ms, spmm op {t_op:.1} ms (best of 15)",
            adj.as_sparse().nnz(),
            rayon::current_num_threads()
        );
    }
}
