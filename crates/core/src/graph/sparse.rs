//! A general CSR matrix with `f32` values.

use rayon::prelude::*;

use super::par;

/// An `n_rows × n_cols` sparse matrix in CSR form with `f32` values; rows hold strictly increasing column
/// ids (see the [module docs](super) for the layout).
///
/// ```
/// use unlearnrec_core::graph::SparseMat;
///
/// let a = SparseMat::new(2, 3, vec![0, 2, 3], vec![0, 2, 1], vec![1.0, 2.0, 3.0]);
/// assert_eq!(a.to_dense(), [1.0, 0.0, 2.0, 0.0, 3.0, 0.0]);
/// assert_eq!(a.transpose().to_dense(), [1.0, 0.0, 0.0, 3.0, 2.0, 0.0]);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SparseMat {
    n_rows: usize,
    n_cols: usize,
    indptr: Vec<usize>,
    indices: Vec<u32>,
    values: Vec<f32>,
}

impl SparseMat {
    /// Builds a matrix from its parts.
    ///
    /// # Panics
    /// When `indptr` does not have `n_rows + 1` non-decreasing entries from 0 to `indices.len()`, `values`
    /// and `indices` differ in length, a row is not strictly increasing, or a column id is `>= n_cols`.
    #[track_caller]
    pub fn new(n_rows: usize, n_cols: usize, indptr: Vec<usize>, indices: Vec<u32>, values: Vec<f32>) -> Self {
        assert_eq!(indptr.len(), n_rows + 1, "indptr must have n_rows + 1 entries");
        assert_eq!(indptr[0], 0, "indptr must start at 0");
        assert_eq!(indptr[n_rows], indices.len(), "indptr must end at nnz");
        assert_eq!(values.len(), indices.len(), "values and indices differ in length");
        for r in 0..n_rows {
            assert!(indptr[r] <= indptr[r + 1], "indptr must be non-decreasing");
            let row = &indices[indptr[r]..indptr[r + 1]];
            assert!(row.windows(2).all(|w| w[0] < w[1]), "row {r} is not strictly increasing");
            assert!(row.last().is_none_or(|&c| (c as usize) < n_cols), "row {r} has a column out of range");
        }
        Self { n_rows, n_cols, indptr, indices, values }
    }

    /// Builds a matrix from parts that the caller guarantees valid (checked in debug builds only).
    pub(crate) fn new_unchecked(
        n_rows: usize,
        n_cols: usize,
        indptr: Vec<usize>,
        indices: Vec<u32>,
        values: Vec<f32>,
    ) -> Self {
        debug_assert_eq!(indptr.len(), n_rows + 1);
        debug_assert_eq!(indptr[n_rows], indices.len());
        debug_assert_eq!(values.len(), indices.len());
        Self { n_rows, n_cols, indptr, indices, values }
    }

    /// The matrix that stores the non-zero entries of a dense row-major `n_rows × n_cols` array.
    ///
    /// # Panics
    /// When `dense.len() != n_rows * n_cols` or `n_cols` does not fit in `u32`.
    #[track_caller]
    pub fn from_dense(n_rows: usize, n_cols: usize, dense: &[f32]) -> Self {
        assert_eq!(dense.len(), n_rows * n_cols, "dense array has the wrong length");
        assert!(n_cols <= u32::MAX as usize + 1, "too many columns");
        let mut indptr = Vec::with_capacity(n_rows + 1);
        let (mut indices, mut values) = (Vec::new(), Vec::new());
        indptr.push(0);
        for r in 0..n_rows {
            for (c, &v) in dense[r * n_cols..(r + 1) * n_cols].iter().enumerate() {
                if v != 0.0 {
                    indices.push(c as u32);
                    values.push(v);
                }
            }
            indptr.push(indices.len());
        }
        Self { n_rows, n_cols, indptr, indices, values }
    }

    /// The number of rows.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// The number of columns.
    pub fn n_cols(&self) -> usize {
        self.n_cols
    }

    /// The number of stored entries (explicit zeros included).
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// Row pointers, length `n_rows + 1`.
    pub fn indptr(&self) -> &[usize] {
        &self.indptr
    }

    /// Column ids of all rows, concatenated.
    pub fn indices(&self) -> &[u32] {
        &self.indices
    }

    /// Values of all rows, concatenated, aligned with [`SparseMat::indices`].
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Whether the matrix is square and bipartite at `split`: rows below `split` only have columns at or
    /// above it and the other rows only columns below it (the user–item adjacency with `split = n_users`).
    pub fn is_bipartite(&self, split: usize) -> bool {
        self.n_rows == self.n_cols
            && split <= self.n_rows
            && (0..self.n_rows).all(|r| {
                let cols = &self.indices[self.indptr[r]..self.indptr[r + 1]];
                cols.iter().all(|&c| ((c as usize) < split) == (r >= split))
            })
    }

    /// The column ids and values of row `r`.
    ///
    /// # Panics
    /// When `r >= n_rows`.
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let span = self.indptr[r]..self.indptr[r + 1];
        (&self.indices[span.clone()], &self.values[span])
    }

    /// The entry at (`r`, `c`), 0 when not stored or out of range.
    pub fn get(&self, r: usize, c: usize) -> f32 {
        if r >= self.n_rows {
            return 0.0;
        }
        let (cols, vals) = self.row(r);
        u32::try_from(c).ok().and_then(|c| cols.binary_search(&c).ok()).map_or(0.0, |k| vals[k])
    }

    /// The dense row-major `n_rows × n_cols` array (for tests and tiny matrices).
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.n_rows * self.n_cols];
        for r in 0..self.n_rows {
            let (cols, vals) = self.row(r);
            for (&c, &v) in cols.iter().zip(vals) {
                out[r * self.n_cols + c as usize] = v;
            }
        }
        out
    }

    /// The transpose, by counting sort in O(nnz + n_rows + n_cols).
    pub fn transpose(&self) -> SparseMat {
        let (indptr, indices, values) = par::transpose(self.n_cols, &self.indptr, &self.indices, &self.values);
        SparseMat::new_unchecked(self.n_cols, self.n_rows, indptr, indices, values)
    }

    /// True when the matrix is square and equals its transpose exactly (same pattern, bitwise-equal
    /// values). O(nnz log(max degree)), parallel over rows.
    pub fn is_symmetric(&self) -> bool {
        if self.n_rows != self.n_cols {
            return false;
        }
        (0..self.n_rows).into_par_iter().with_min_len(256).all(|r| {
            let (cols, vals) = self.row(r);
            cols.iter().zip(vals).all(|(&c, &v)| {
                let (tc, tv) = self.row(c as usize);
                tc.binary_search(&(r as u32)).is_ok_and(|k| tv[k].to_bits() == v.to_bits())
            })
        })
    }

    /// Random edge dropout (the reference's `SpAdjDropEdge`): keeps each stored entry independently with
    /// probability `keep` and divides the kept values by `keep`, without renormalising. One uniform draw per
    /// stored entry, in storage order. The result is generally not symmetric even when `self` is.
    ///
    /// # Panics
    /// When `keep` is not in `(0, 1]`.
    #[track_caller]
    pub fn drop_entries(&self, keep: f32, rng: &mut impl rand::Rng) -> SparseMat {
        assert!(keep > 0.0 && keep <= 1.0, "keep rate {keep} is not in (0, 1]");
        let mut indptr = Vec::with_capacity(self.n_rows + 1);
        let mut indices = Vec::with_capacity(self.nnz());
        let mut values = Vec::with_capacity(self.nnz());
        indptr.push(0);
        for r in 0..self.n_rows {
            let (cols, vals) = self.row(r);
            for (&c, &v) in cols.iter().zip(vals) {
                if rng.random::<f32>() < keep {
                    indices.push(c);
                    values.push(v / keep);
                }
            }
            indptr.push(indices.len());
        }
        SparseMat::new_unchecked(self.n_rows, self.n_cols, indptr, indices, values)
    }

    /// The sub-matrix induced on the nodes within `radius` hops of `seeds` (a square matrix read as a
    /// graph, hops following stored entries of rows). Returns the nodes, the seeds first in their given
    /// order (duplicates dropped) and then the others by hop and id, and the induced matrix in that order,
    /// with the original values.
    ///
    /// For a symmetric matrix `A` and a vector `x` that is zero outside the seeds, the seeds' rows of `Aˡ x`
    /// are the same on the sub-matrix for every `l ≤ 2 · radius + 1`: a walk between two seeds of that
    /// length never goes further than `radius` hops from them.
    ///
    /// # Panics
    /// When the matrix is not square or a seed is `>= n_rows`.
    #[track_caller]
    pub fn induced_ball(&self, seeds: &[u32], radius: usize) -> (Vec<u32>, SparseMat) {
        assert_eq!(self.n_rows, self.n_cols, "induced_ball needs a square matrix");
        const ABSENT: u32 = u32::MAX;
        let mut pos = vec![ABSENT; self.n_rows];
        let mut nodes: Vec<u32> = Vec::with_capacity(seeds.len());
        for &s in seeds {
            assert!((s as usize) < self.n_rows, "seed {s} is out of range");
            if pos[s as usize] == ABSENT {
                pos[s as usize] = nodes.len() as u32;
                nodes.push(s);
            }
        }
        let mut frontier = 0..nodes.len();
        for _ in 0..radius {
            let mut next: Vec<u32> = Vec::new();
            for k in frontier.clone() {
                let (cols, _) = self.row(nodes[k] as usize);
                for &c in cols {
                    if pos[c as usize] == ABSENT {
                        pos[c as usize] = 0; // marked; numbered below in id order
                        next.push(c);
                    }
                }
            }
            next.sort_unstable();
            let start = nodes.len();
            for c in next {
                pos[c as usize] = nodes.len() as u32;
                nodes.push(c);
            }
            frontier = start..nodes.len();
        }
        let mut indptr = Vec::with_capacity(nodes.len() + 1);
        let mut indices = Vec::new();
        let mut values = Vec::new();
        let mut row: Vec<(u32, f32)> = Vec::new();
        indptr.push(0);
        for &n in &nodes {
            let (cols, vals) = self.row(n as usize);
            row.clear();
            row.extend(
                cols.iter().zip(vals).filter(|&(&c, _)| pos[c as usize] != ABSENT).map(|(&c, &v)| (pos[c as usize], v)),
            );
            row.sort_unstable_by_key(|&(c, _)| c);
            indices.extend(row.iter().map(|&(c, _)| c));
            values.extend(row.iter().map(|&(_, v)| v));
            indptr.push(indices.len());
        }
        let n = nodes.len();
        (nodes, SparseMat::new_unchecked(n, n, indptr, indices, values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn example() -> SparseMat {
        // [[0, 1, 0, 2], [0, 0, 0, 0], [3, 0, 4, 0]]
        SparseMat::new(3, 4, vec![0, 2, 2, 4], vec![1, 3, 0, 2], vec![1.0, 2.0, 3.0, 4.0])
    }

    #[test]
    fn dense_round_trip_and_get() {
        let a = example();
        let dense = a.to_dense();
        assert_eq!(dense, [0.0, 1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 4.0, 0.0]);
        assert_eq!(SparseMat::from_dense(3, 4, &dense), a);
        assert_eq!((a.get(0, 3), a.get(1, 1), a.get(2, 0), a.get(7, 0)), (2.0, 0.0, 3.0, 0.0));
        assert_eq!(a.nnz(), 4);
    }

    #[test]
    fn transpose_matches_dense() {
        let a = example();
        let t = a.transpose();
        assert_eq!((t.n_rows(), t.n_cols()), (4, 3));
        let (d, dt) = (a.to_dense(), t.to_dense());
        for r in 0..3 {
            for c in 0..4 {
                assert_eq!(d[r * 4 + c], dt[c * 3 + r]);
            }
        }
        assert_eq!(t.transpose(), a);
    }

    #[test]
    fn is_symmetric_detects_value_and_pattern_asymmetry() {
        let sym = SparseMat::from_dense(3, 3, &[0.0, 1.0, 2.0, 1.0, 0.0, 0.0, 2.0, 0.0, 5.0]);
        assert!(sym.is_symmetric());
        let val = SparseMat::from_dense(3, 3, &[0.0, 1.0, 2.0, 1.0, 0.0, 0.0, 2.5, 0.0, 5.0]);
        assert!(!val.is_symmetric());
        let pat = SparseMat::from_dense(3, 3, &[0.0, 1.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 5.0]);
        assert!(!pat.is_symmetric());
        assert!(!example().is_symmetric());
    }

    #[test]
    #[should_panic(expected = "not strictly increasing")]
    fn new_rejects_unsorted_rows() {
        SparseMat::new(1, 3, vec![0, 2], vec![2, 1], vec![1.0, 1.0]);
    }

    #[test]
    fn drop_entries_keeps_a_rescaled_subset() {
        let n = 300;
        let dense: Vec<f32> = (0..n * n).map(|k| if k % 3 == 0 { 0.5 } else { 0.0 }).collect();
        let a = SparseMat::from_dense(n, n, &dense);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let d = a.drop_entries(0.8, &mut rng);
        let kept = d.nnz() as f64 / a.nnz() as f64;
        assert!((kept - 0.8).abs() < 0.01, "kept fraction {kept}");
        for r in 0..n {
            let (cols, vals) = d.row(r);
            assert!(cols.windows(2).all(|w| w[0] < w[1]));
            for (&c, &v) in cols.iter().zip(vals) {
                assert_eq!(v, 0.5 / 0.8);
                assert_eq!(a.get(r, c as usize), 0.5);
            }
        }
        // Dropping is independent per stored entry, so a symmetric input loses its symmetry.
        let sym = SparseMat::from_dense(n, n, &vec![1.0; n * n]);
        assert!(sym.is_symmetric());
        assert!(!sym.drop_entries(0.9, &mut rng).is_symmetric());
        // Same seed, same draw.
        let again = a.drop_entries(0.8, &mut ChaCha8Rng::seed_from_u64(7));
        assert_eq!(again, d);
        // keep = 1 keeps everything unchanged.
        assert_eq!(a.drop_entries(1.0, &mut rng), a);
    }
    /// Dense `A x` for a square matrix.
    fn mul(a: &SparseMat, x: &[f32]) -> Vec<f32> {
        (0..a.n_rows()).map(|r| a.row(r).0.iter().zip(a.row(r).1).map(|(&c, &v)| v * x[c as usize]).sum()).collect()
    }

    #[test]
    fn induced_ball_keeps_the_seeds_short_walks() {
        use rand::Rng;
        // A random symmetric sparse graph of 60 nodes (a chain so that balls grow hop by hop, plus chords).
        let n = 60;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut dense = vec![0f32; n * n];
        for k in 0..n {
            let mut link = |a: usize, b: usize, v: f32| {
                dense[a * n + b] = v;
                dense[b * n + a] = v;
            };
            if k + 1 < n {
                link(k, k + 1, 0.3 + 0.01 * k as f32);
            }
            if rng.random::<f32>() < 0.2 {
                link(k, rng.random_range(0..n), rng.random::<f32>());
            }
        }
        let a = SparseMat::from_dense(n, n, &dense);
        assert!(a.is_symmetric());
        let seeds = [17u32, 40, 17, 5];
        for radius in 0..3 {
            let (nodes, sub) = a.induced_ball(&seeds, radius);
            assert_eq!(&nodes[..3], &[17, 40, 5], "seeds first, deduplicated");
            assert_eq!(sub.n_rows(), nodes.len());
            // Every stored entry of the sub-matrix is the original one.
            for (r, &nr) in nodes.iter().enumerate() {
                let (cols, vals) = sub.row(r);
                for (&c, &v) in cols.iter().zip(vals) {
                    assert_eq!(v, a.get(nr as usize, nodes[c as usize] as usize));
                }
            }
            // x: random values on the seeds, zero elsewhere.
            let mut x = vec![0f32; n];
            let mut xs = vec![0f32; nodes.len()];
            for (k, &s) in nodes[..3].iter().enumerate() {
                x[s as usize] = 1.0 + k as f32;
                xs[k] = 1.0 + k as f32;
            }
            let (mut full, mut local) = (x, xs);
            for l in 1..=2 * radius + 2 {
                full = mul(&a, &full);
                local = mul(&sub, &local);
                let same = nodes[..3].iter().enumerate().all(|(k, &s)| (full[s as usize] - local[k]).abs() < 1e-5);
                if l <= 2 * radius + 1 {
                    assert!(same, "radius {radius}, power {l}");
                } else if radius > 0 {
                    // One step further a walk can leave the ball: the guarantee is tight on this graph.
                    assert!(!same, "radius {radius}, power {l}: expected a difference");
                }
            }
        }
    }
}
