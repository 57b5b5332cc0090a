//! Partial top-K selection over a row of scores.
//!
//! The selection streams over the row once and keeps the `k` best (score, item) pairs seen so far in an
//! array sorted best first, in caller-owned storage. Its last score is the threshold `t`, so the hot
//! loop is a single comparison `score > t`, tested sixteen scores at a time (compiled for AVX2 where the
//! CPU has it): once the array is full almost every item fails and costs one vector compare. A
//! survivor is checked against the mask, its position found (a branch-free count for `k <= 64`, a
//! binary search above), and the tail shifted by one, so the array stays sorted and needs no final
//! sort. On a row of `n` items in random order about `k · ln(n / k)` items survive, so the cost is
//! `O(n + k ln(n / k) · k)` with a `memmove`-sized constant on the last factor — never a full
//! `O(n log n)` sort.
//!
//! Order: higher score first; equal scores go to the lower item id (`-0.0` and `0.0` are equal). NaN
//! scores are never selected, and neither are masked items; `-inf` is an ordinary (lowest) score.

use pulp::{Arch, Simd, WithSimd};

/// Items to skip: the union of two sorted id lists, probed with non-decreasing ids.
///
/// Each probe advances a cursor instead of searching, so probing a whole row costs `O(n_probes + len)`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Mask<'a> {
    first: &'a [u32],
    second: &'a [u32],
}

impl<'a> Mask<'a> {
    /// A mask over the union of two strictly increasing id lists (either may be empty).
    pub(crate) fn new(first: &'a [u32], second: &'a [u32]) -> Self {
        Self { first, second }
    }

    /// True when `id` is masked. Successive calls must pass non-decreasing ids.
    #[inline]
    pub(crate) fn contains(&mut self, id: u32) -> bool {
        Self::probe(&mut self.first, id) | Self::probe(&mut self.second, id)
    }

    #[inline]
    fn probe(list: &mut &'a [u32], id: u32) -> bool {
        while let Some((&head, tail)) = list.split_first() {
            if head >= id {
                return head == id;
            }
            *list = tail;
        }
        false
    }
}

/// A bounded selection over caller-owned storage: the best pairs so far, sorted best first, in
/// `scores[..len]` / `items[..len]`, with capacity `k = scores.len()`.
pub(crate) struct Selector<'a> {
    scores: &'a mut [f32],
    items: &'a mut [u32],
    len: usize,
}

impl<'a> Selector<'a> {
    /// Resumes a selection whose first `len` slots hold its pairs (`len = 0` starts a new one).
    #[inline]
    pub(crate) fn resume(scores: &'a mut [f32], items: &'a mut [u32], len: usize) -> Self {
        debug_assert_eq!(scores.len(), items.len());
        debug_assert!(len <= scores.len());
        Self { scores, items, len }
    }

    /// The number of pairs kept.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Inserts `(s, id)`, dropping the last pair when full. The caller has checked that it beats the
    /// last pair (or that there is room); `id` exceeds every kept id, so it goes after equal scores.
    #[inline(always)]
    fn insert(&mut self, s: f32, id: u32) {
        let kept = &self.scores[..self.len];
        // Small k: a branch-free vectorised count (independent loads, no mispredictions); large k: a
        // binary search.
        let pos = if kept.len() <= 64 {
            kept.iter().map(|&x| u32::from(x >= s)).sum::<u32>() as usize
        } else {
            kept.partition_point(|&x| x >= s)
        };
        if self.len < self.scores.len() {
            self.len += 1;
        }
        let end = self.len - 1; // the last pair falls off when the array was full
        self.scores.copy_within(pos..end, pos + 1);
        self.items.copy_within(pos..end, pos + 1);
        self.scores[pos] = s;
        self.items[pos] = id;
    }

    /// Offers `row[j]` as item `first_item + j` for every `j`, skipping NaN and masked items.
    ///
    /// Items must be offered in increasing id order across calls (one call per tile of a row), which is
    /// what lets an equal score lose to the kept item: it always has the higher id. The loop is compiled
    /// for the best instruction set the CPU has (AVX2 on x86-64-v3) through `pulp`'s runtime dispatch.
    #[inline]
    pub(crate) fn scan(&mut self, row: &[f32], first_item: u32, mask: &mut Mask<'_>) {
        struct Scan<'s, 'a, 'm, 'r> {
            sel: &'s mut Selector<'a>,
            row: &'r [f32],
            first_item: u32,
            mask: &'s mut Mask<'m>,
        }
        impl WithSimd for Scan<'_, '_, '_, '_> {
            type Output = ();
            #[inline(always)]
            fn with_simd<S: Simd>(self, _simd: S) {
                self.sel.scan_portable(self.row, self.first_item, self.mask)
            }
        }
        Arch::new().dispatch(Scan { sel: self, row, first_item, mask });
    }

    #[inline(always)]
    fn scan_portable(&mut self, row: &[f32], first_item: u32, mask: &mut Mask<'_>) {
        const LANES: usize = 16;
        let cap = self.scores.len();
        let n = row.len();
        let mut j = 0;
        // Fill phase: every non-NaN, unmasked item enters until the array is full.
        while self.len < cap {
            if j == n {
                return;
            }
            let s = row[j];
            let id = first_item + j as u32;
            if !s.is_nan() && !mask.contains(id) {
                self.insert(s, id);
            }
            j += 1;
        }
        if cap == 0 {
            return;
        }
        // Threshold phase. NaN fails `s > t`, and so does a tie (the later item has the higher id).
        let mut t = self.scores[cap - 1];
        let (blocks, tail) = row[j..].as_chunks::<LANES>();
        let mut base = first_item + j as u32;
        for block in blocks {
            if block.iter().fold(false, |any, &s| any | (s > t)) {
                for (o, &s) in block.iter().enumerate() {
                    // `t` may have risen since the block test.
                    if s > t {
                        let id = base + o as u32;
                        if !mask.contains(id) {
                            self.insert(s, id);
                            t = self.scores[cap - 1];
                        }
                    }
                }
            }
            base += LANES as u32;
        }
        for (o, &s) in tail.iter().enumerate() {
            if s > t {
                let id = base + o as u32;
                if !mask.contains(id) {
                    self.insert(s, id);
                    t = self.scores[cap - 1];
                }
            }
        }
    }

    /// Ends the selection and returns the number of pairs kept (already sorted, best first).
    pub(crate) fn finish(self) -> usize {
        self.len
    }
}

/// Writes the `k` best items of `scores` into `items[..n]` / `top_scores[..n]` and returns `n`.
///
/// Item `j` has score `scores[j]`. The result is ordered by score descending, equal scores by item id
/// ascending. Items in `mask` (strictly increasing ids; ids `>= scores.len()` are ignored) and items
/// with a NaN score are never selected, so `n = min(k, available)` where `available` counts the other
/// items. Slots past `n` are left as they were. No allocation and no full sort: the outputs themselves
/// hold the sorted best-so-far, behind a threshold test on the hot loop.
///
/// # Panics
/// When `items` or `top_scores` is shorter than `k`, when `mask` is not strictly increasing, or when
/// `scores` has more than `u32::MAX` entries.
#[track_caller]
pub fn top_k_into(scores: &[f32], mask: &[u32], k: usize, items: &mut [u32], top_scores: &mut [f32]) -> usize {
    assert!(items.len() >= k && top_scores.len() >= k, "output buffers are shorter than k = {k}");
    assert!(mask.windows(2).all(|w| w[0] < w[1]), "mask must be strictly increasing");
    assert!(u32::try_from(scores.len()).is_ok(), "more than u32::MAX items");
    let k = k.min(scores.len());
    let mut sel = Selector::resume(&mut top_scores[..k], &mut items[..k], 0);
    sel.scan(scores, 0, &mut Mask::new(mask, &[]));
    sel.finish()
}

/// The `k` best items of `scores` and their scores, best first; see [`top_k_into`].
///
/// # Panics
/// As [`top_k_into`], for an unsorted `mask` or more than `u32::MAX` items.
#[track_caller]
pub fn top_k(scores: &[f32], mask: &[u32], k: usize) -> (Vec<u32>, Vec<f32>) {
    let k = k.min(scores.len());
    let mut items = vec![0; k];
    let mut top_scores = vec![0.0; k];
    let n = top_k_into(scores, mask, k, &mut items, &mut top_scores);
    items.truncate(n);
    top_scores.truncate(n);
    (items, top_scores)
}

/// Top-K lists for a batch of rows (users), row-major with a fixed stride `k`.
///
/// Row `r` occupies `items[r * k..(r + 1) * k]` and `scores[r * k..(r + 1) * k]`; its first `lens[r]`
/// entries are valid, best first (score descending, ties by lower item id). A row is shorter than `k`
/// when fewer than `k` items are left after masking; the padding holds item `u32::MAX` and score NaN.
/// [`TopK::row`] returns the valid part only.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopK {
    /// The row stride: the number of items asked for per row.
    pub k: usize,
    /// Item ids, `n_rows × k`, row-major.
    pub items: Vec<u32>,
    /// Scores (`u · i`), `n_rows × k`, row-major.
    pub scores: Vec<f32>,
    /// The number of valid entries in each row (`<= k`).
    pub lens: Vec<usize>,
}

impl TopK {
    /// The padding item id of rows shorter than `k`.
    pub const PAD_ITEM: u32 = u32::MAX;

    /// The number of rows.
    pub fn n_rows(&self) -> usize {
        self.lens.len()
    }

    /// The valid items and scores of row `r`, best first.
    ///
    /// # Panics
    /// When `r >= n_rows()`.
    #[track_caller]
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let start = r * self.k;
        let len = self.lens[r];
        (&self.items[start..start + len], &self.scores[start..start + len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// The reference: a full sort of the unmasked, non-NaN items.
    fn reference(scores: &[f32], mask: &[u32], k: usize) -> (Vec<u32>, Vec<f32>) {
        let mut all: Vec<(f32, u32)> = scores
            .iter()
            .enumerate()
            .filter(|&(j, s)| !s.is_nan() && mask.binary_search(&(j as u32)).is_err())
            .map(|(j, &s)| (s, j as u32))
            .collect();
        all.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
        all.truncate(k);
        all.into_iter().map(|(s, j)| (j, s)).unzip()
    }

    fn random_row(rng: &mut StdRng, n: usize) -> Vec<f32> {
        // Few distinct values (many ties), some NaN and infinities.
        (0..n)
            .map(|_| match rng.random_range(0..20) {
                0 => f32::NAN,
                1 => f32::NEG_INFINITY,
                2 => f32::INFINITY,
                3..=9 => rng.random_range(0..6) as f32,
                _ => rng.random::<f32>(),
            })
            .collect()
    }

    #[test]
    fn matches_full_sort_on_random_rows() {
        let mut rng = StdRng::seed_from_u64(7);
        for case in 0..600 {
            let n = rng.random_range(0..300);
            let row = random_row(&mut rng, n);
            let density = rng.random::<f64>();
            let mask: Vec<u32> = (0..n as u32).filter(|_| rng.random_bool(density * 0.5)).collect();
            let k = rng.random_range(0..n + 5);
            let (items, scores) = top_k(&row, &mask, k);
            let (ri, rs) = reference(&row, &mask, k);
            assert_eq!(items, ri, "case {case}: n={n} k={k}");
            assert_eq!(
                scores.iter().map(|s| s.to_bits()).collect::<Vec<_>>(),
                rs.iter().map(|s| s.to_bits()).collect::<Vec<_>>(),
                "case {case}"
            );
        }
    }

    #[test]
    fn scanning_in_tiles_equals_one_pass() {
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..200 {
            let n = rng.random_range(1..500);
            let row = random_row(&mut rng, n);
            let seen: Vec<u32> = (0..n as u32).filter(|_| rng.random_bool(0.1)).collect();
            let exclude: Vec<u32> = (0..n as u32 + 10).filter(|_| rng.random_bool(0.05)).collect();
            let mut union: Vec<u32> = seen.iter().chain(&exclude).copied().collect();
            union.sort_unstable();
            union.dedup();
            let k = rng.random_range(1..40);
            let (ri, _) = reference(&row, &union, k);
            let (mut s, mut i) = (vec![0.0; k], vec![0; k]);
            let mut mask = Mask::new(&seen, &exclude);
            let mut len = 0;
            let tile = rng.random_range(1..64);
            for (t, chunk) in row.chunks(tile).enumerate() {
                let mut sel = Selector::resume(&mut s, &mut i, len);
                sel.scan(chunk, (t * tile) as u32, &mut mask);
                len = sel.len();
            }
            let n_out = Selector::resume(&mut s, &mut i, len).finish();
            assert_eq!(&i[..n_out], &ri[..]);
        }
    }

    #[test]
    fn ties_go_to_the_lower_item_id() {
        let row = [1.0, 3.0, 3.0, 2.0, 3.0, 3.0];
        assert_eq!(top_k(&row, &[], 3).0, vec![1, 2, 4]);
        assert_eq!(top_k(&row, &[2], 3).0, vec![1, 4, 5]);
        // -0.0 and 0.0 are the same score.
        assert_eq!(top_k(&[-0.0, 0.0, -1.0], &[], 1).0, vec![0]);
        assert_eq!(top_k(&[-1.0, 0.0, -0.0], &[], 1).0, vec![1]);
    }

    #[test]
    fn nan_and_masked_items_are_never_selected() {
        let row = [f32::NAN, 0.5, f32::NAN, f32::NEG_INFINITY, 9.0];
        let (items, scores) = top_k(&row, &[4], 10);
        assert_eq!(items, vec![1, 3]);
        assert_eq!(scores, vec![0.5, f32::NEG_INFINITY]);
    }

    #[test]
    fn k_larger_than_available_returns_all_available() {
        let row: Vec<f32> = (0..40).map(|j| (j % 7) as f32).collect();
        let mask: Vec<u32> = (0..40).filter(|j| j % 3 == 0).collect();
        let (items, _) = top_k(&row, &mask, 100);
        assert_eq!(items.len(), 40 - mask.len());
        assert_eq!(items, reference(&row, &mask, 100).0);
        assert_eq!(top_k(&row, &[], 0).0, Vec::<u32>::new());
        assert_eq!(top_k(&[], &[], 3).0, Vec::<u32>::new());
    }

    #[test]
    fn into_leaves_slots_past_n_untouched() {
        let mut items = [77; 4];
        let mut scores = [-1.0; 4];
        let n = top_k_into(&[0.25, 0.75], &[], 4, &mut items, &mut scores);
        assert_eq!(n, 2);
        assert_eq!(items, [1, 0, 77, 77]);
        assert_eq!(scores, [0.75, 0.25, -1.0, -1.0]);
    }

    #[test]
    #[should_panic(expected = "strictly increasing")]
    fn unsorted_mask_panics() {
        top_k(&[1.0, 2.0], &[1, 0], 1);
    }
}
