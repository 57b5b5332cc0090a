//! Kernels shared by the CSR types: row blocking for parallel fills, row-wise merges and the counting-sort
//! transpose.

use std::ops::Range;

use rayon::prelude::*;

/// Below this many stored entries a fill runs on the calling thread.
const PAR_MIN_NNZ: usize = 1 << 15;

/// Consecutive row ranges that cover `0..n_rows`, each holding about `nnz / (8 · threads)` entries (at
/// least [`PAR_MIN_NNZ`] / 4), so that rayon can balance power-law rows.
pub(crate) fn row_blocks(indptr: &[usize]) -> Vec<Range<usize>> {
    let n_rows = indptr.len() - 1;
    let nnz = indptr[n_rows];
    if nnz < PAR_MIN_NNZ {
        return std::iter::once(0..n_rows).collect();
    }
    let target = (nnz / (8 * rayon::current_num_threads())).max(PAR_MIN_NNZ / 4);
    let mut blocks = Vec::with_capacity(nnz / target + 2);
    let mut start = 0;
    while start < n_rows {
        // First row end whose prefix reaches start's offset + target.
        let goal = indptr[start] + target;
        let end = (start + 1 + indptr[start + 1..].partition_point(|&p| p < goal)).min(n_rows);
        blocks.push(start..end);
        start = end;
    }
    blocks
}

/// Cuts `data` (laid out by `indptr`) into the slices owned by each block of `blocks`.
pub(crate) fn split_blocks<'a, T>(
    mut data: &'a mut [T],
    indptr: &[usize],
    blocks: &[Range<usize>],
) -> Vec<&'a mut [T]> {
    let mut out = Vec::with_capacity(blocks.len());
    for b in blocks {
        let (head, tail) = data.split_at_mut(indptr[b.end] - indptr[b.start]);
        out.push(head);
        data = tail;
    }
    out
}

/// Fills the two arrays laid out by `indptr` block by block, in parallel: `fill(rows, indices, values)`
/// writes the entries of `rows` into the two slices, which start at `indptr[rows.start]`.
pub(crate) fn fill_rows<A: Send, B: Send>(
    indptr: &[usize],
    indices: &mut [A],
    values: &mut [B],
    fill: impl Fn(Range<usize>, &mut [A], &mut [B]) + Sync,
) {
    let blocks = row_blocks(indptr);
    let a = split_blocks(indices, indptr, &blocks);
    let b = split_blocks(values, indptr, &blocks);
    if blocks.len() == 1 {
        for ((rows, a), b) in blocks.into_iter().zip(a).zip(b) {
            fill(rows, a, b);
        }
        return;
    }
    blocks.into_par_iter().zip(a).zip(b).for_each(|((rows, a), b)| fill(rows, a, b));
}

/// Row pointers from per-row counts.
pub(crate) fn prefix_sum(counts: &[usize]) -> Vec<usize> {
    let mut indptr = Vec::with_capacity(counts.len() + 1);
    let mut acc = 0;
    indptr.push(0);
    for &c in counts {
        acc += c;
        indptr.push(acc);
    }
    indptr
}

/// Per-row counts `count(r)` for `r in 0..n_rows`, in parallel when `work` (an estimate of the total cost)
/// is large.
pub(crate) fn row_counts(n_rows: usize, work: usize, count: impl Fn(usize) -> usize + Sync + Send) -> Vec<usize> {
    if work < PAR_MIN_NNZ {
        (0..n_rows).map(count).collect()
    } else {
        (0..n_rows).into_par_iter().with_min_len(256).map(count).collect()
    }
}

/// What a row-wise merge keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MergeOp {
    /// Entries of `a` absent from `b`.
    Difference,
    /// Entries of either.
    Union,
}

/// Merges two sorted, duplicate-free rows; calls `emit` for every kept column and returns their count.
#[inline]
fn merge_row(a: &[u32], b: &[u32], op: MergeOp, mut emit: impl FnMut(u32)) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        if x < y {
            emit(x);
            n += 1;
            i += 1;
        } else if y < x {
            if op == MergeOp::Union {
                emit(y);
                n += 1;
            }
            j += 1;
        } else {
            if op == MergeOp::Union {
                emit(x);
                n += 1;
            }
            i += 1;
            j += 1;
        }
    }
    for &x in &a[i..] {
        emit(x);
        n += 1;
    }
    if op == MergeOp::Union {
        for &y in &b[j..] {
            emit(y);
            n += 1;
        }
    }
    n
}

/// Row-wise merge of two patterns with the same number of rows, in O(nnz(a) + nnz(b)), parallel over rows:
/// first the kept counts, then the fill. `b` rows past `a`'s are ignored.
pub(crate) fn merge_patterns(
    a_indptr: &[usize],
    a_indices: &[u32],
    b_indptr: &[usize],
    b_indices: &[u32],
    op: MergeOp,
) -> (Vec<usize>, Vec<u32>) {
    let n_rows = a_indptr.len() - 1;
    debug_assert_eq!(b_indptr.len() - 1, n_rows);
    let a_row = |r: usize| &a_indices[a_indptr[r]..a_indptr[r + 1]];
    let b_row = |r: usize| &b_indices[b_indptr[r]..b_indptr[r + 1]];
    let work = a_indices.len() + b_indices.len();
    let counts = row_counts(n_rows, work, |r| {
        let (a, b) = (a_row(r), b_row(r));
        if b.is_empty() { a.len() } else { merge_row(a, b, op, |_| ()) }
    });
    let indptr = prefix_sum(&counts);
    let mut indices = vec![0u32; indptr[n_rows]];
    let mut unit = vec![(); indptr[n_rows]];
    fill_rows(&indptr, &mut indices, &mut unit, |rows, out, _| {
        let mut k = 0;
        for r in rows {
            let (a, b) = (a_row(r), b_row(r));
            if b.is_empty() {
                out[k..k + a.len()].copy_from_slice(a);
                k += a.len();
            } else {
                merge_row(a, b, op, |c| {
                    out[k] = c;
                    k += 1;
                });
            }
        }
    });
    (indptr, indices)
}

/// The transpose of an `n_rows × n_cols` CSR matrix by counting sort, O(nnz + n_rows + n_cols). Rows of the
/// result are sorted because the source rows are visited in order. Pass `&[(); nnz]` for a pattern.
pub(crate) fn transpose<V: Copy + Default + Send>(
    n_cols: usize,
    indptr: &[usize],
    indices: &[u32],
    values: &[V],
) -> (Vec<usize>, Vec<u32>, Vec<V>) {
    let n_rows = indptr.len() - 1;
    let nnz = indices.len();
    let mut next = vec![0usize; n_cols + 1];
    for &c in indices {
        next[c as usize + 1] += 1;
    }
    for c in 0..n_cols {
        next[c + 1] += next[c];
    }
    let t_indptr = next.clone();
    let mut t_indices = vec![0u32; nnz];
    let mut t_values = vec![V::default(); nnz];
    for r in 0..n_rows {
        for k in indptr[r]..indptr[r + 1] {
            let c = indices[k] as usize;
            let dst = next[c];
            next[c] += 1;
            t_indices[dst] = r as u32;
            t_values[dst] = values[k];
        }
    }
    (t_indptr, t_indices, t_values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_blocks_cover_rows_in_order() {
        // 10 000 rows with 1..=7 entries each: enough to make several blocks.
        let counts: Vec<usize> = (0..10_000).map(|r| 1 + r % 7).collect();
        let indptr = prefix_sum(&counts);
        let blocks = row_blocks(&indptr);
        assert!(blocks.len() > 1);
        assert_eq!(blocks[0].start, 0);
        assert_eq!(blocks.last().unwrap().end, 10_000);
        assert!(blocks.windows(2).all(|w| w[0].end == w[1].start && w[0].start < w[0].end));
    }

    #[test]
    fn merge_rows_difference_and_union() {
        let (a, b) = ([1u32, 3, 5, 7], [0u32, 3, 7, 9]);
        let mut out = vec![];
        assert_eq!(merge_row(&a, &b, MergeOp::Difference, |c| out.push(c)), 2);
        assert_eq!(out, [1, 5]);
        out.clear();
        assert_eq!(merge_row(&a, &b, MergeOp::Union, |c| out.push(c)), 6);
        assert_eq!(out, [0, 1, 3, 5, 7, 9]);
    }

    #[test]
    fn transpose_small() {
        // [[0, a, b], [c, 0, 0]]
        let (p, i, v) = transpose(3, &[0, 2, 3], &[1, 2, 0], &[1.0f32, 2.0, 3.0]);
        assert_eq!(p, [0, 1, 2, 3]);
        assert_eq!(i, [1, 0, 0]);
        assert_eq!(v, [3.0, 1.0, 2.0]);
    }
}
