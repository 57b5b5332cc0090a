//! Compressed sparse row storage.
//!
//! A 3×4 matrix with entries (0,1), (0,3), (2,0) is stored as
//!
//! ```text
//! indptr  = [0, 2, 2, 3]      row r owns indices[indptr[r]..indptr[r+1]]
//! indices = [1, 3, 0]         column ids, increasing within a row
//! values  = [a, b, c]         (SparseMat only)
//! ```

/// The pattern of a sparse matrix (no values): rows of sorted, distinct column ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Csr {
    n_cols: usize,
    indptr: Vec<usize>,
    indices: Vec<u32>,
}

impl Csr {
    /// Builds a pattern from its parts.
    ///
    /// # Panics
    /// When `indptr` is not a non-decreasing sequence starting at 0 and ending at `indices.len()`, or a row
    /// is not strictly increasing, or a column id is `>= n_cols`.
    #[track_caller]
    pub fn new(n_cols: usize, indptr: Vec<usize>, indices: Vec<u32>) -> Self {
        assert!(!indptr.is_empty() && indptr[0] == 0, "indptr must start at 0");
        assert_eq!(*indptr.last().expect("non-empty"), indices.len(), "indptr must end at nnz");
        for r in 0..indptr.len() - 1 {
            assert!(indptr[r] <= indptr[r + 1], "indptr must be non-decreasing");
            let row = &indices[indptr[r]..indptr[r + 1]];
            assert!(row.windows(2).all(|w| w[0] < w[1]), "row {r} is not strictly increasing");
            assert!(row.last().is_none_or(|&c| (c as usize) < n_cols), "row {r} has a column out of range");
        }
        Self { n_cols, indptr, indices }
    }

    /// Builds a pattern from parts that the caller guarantees valid (checked in debug builds only).
    pub(crate) fn new_unchecked(n_cols: usize, indptr: Vec<usize>, indices: Vec<u32>) -> Self {
        debug_assert_eq!(*indptr.last().unwrap_or(&0), indices.len());
        Self { n_cols, indptr, indices }
    }

    /// The number of rows.
    pub fn n_rows(&self) -> usize {
        self.indptr.len() - 1
    }

    /// The number of columns.
    pub fn n_cols(&self) -> usize {
        self.n_cols
    }

    /// The number of stored entries.
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

    /// The sorted column ids of row `r`.
    ///
    /// # Panics
    /// When `r >= n_rows`.
    pub fn row(&self, r: usize) -> &[u32] {
        &self.indices[self.indptr[r]..self.indptr[r + 1]]
    }

    /// The number of entries of row `r`.
    pub fn degree(&self, r: usize) -> usize {
        self.indptr[r + 1] - self.indptr[r]
    }

    /// True when (r, c) is stored.
    pub fn contains(&self, r: usize, c: u32) -> bool {
        r < self.n_rows() && self.row(r).binary_search(&c).is_ok()
    }
}
