//! A gradient accumulator for one table-sized parameter, written by the fused ops directly and read by the
//! optimizer ([`crate::train::Adam::attach_sink`]).
//!
//! candle's backward pass accumulates every gradient contribution as `zeros_like(table) + g`: for a table
//! reached through a single op that is an allocation, a zero fill and an addition of the whole table per step,
//! all waste (about a tenth of a Gowalla training step). An op given a sink moves its full-size gradient into
//! it (no copy when it is the first), or adds it in place; row-sparse contributions (a regulariser on a batch's
//! rows) are kept as rows until the optimizer takes the sum. The op then returns no gradient to candle.
//!
//! The caller promises that every op given a sink reads the same parameter and that the optimizer the sink is
//! attached to steps after each backward pass (which empties it).

use std::sync::{Arc, Mutex};

use rayon::prelude::*;

/// Table rows per parallel block of [`GradSink::take`]'s row additions.
const BLOCK_ROWS: usize = 2048;

/// The accumulated parts.
#[derive(Debug, Default)]
struct Parts {
    /// The sum of the full-size contributions.
    dense: Option<Vec<f32>>,
    /// Row-sparse contributions: `rows[k]` gets `vals[k·width..(k+1)·width]` (rows may repeat).
    rows: Vec<u32>,
    vals: Vec<f32>,
    width: usize,
}

/// A shared gradient accumulator for one parameter (cheap to clone: clones share it). Module docs.
#[derive(Clone, Debug, Default)]
pub struct GradSink(Arc<Mutex<Parts>>);

impl GradSink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Parts> {
        // A panic inside an op cannot leave the parts half-written in a way that matters: the step is lost.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a full-size gradient: moved in when it is the first, added in place otherwise.
    ///
    /// # Errors
    /// A length different from an earlier contribution's.
    pub(crate) fn add_dense(&self, g: Vec<f32>) -> candle_core::Result<()> {
        let mut p = self.lock();
        match &mut p.dense {
            None => p.dense = Some(g),
            Some(acc) => {
                if acc.len() != g.len() {
                    candle_core::bail!(
                        "gradient sink: a contribution of {} values to a table of {}",
                        g.len(),
                        acc.len()
                    );
                }
                acc.par_iter_mut().zip(g.par_iter()).for_each(|(a, &b)| *a += b);
            }
        }
        Ok(())
    }

    /// Adds `vals` (`rows.len()` rows of `width` values) to the rows `rows` of the gradient (moved in when
    /// it is the first such contribution).
    ///
    /// # Errors
    /// A width different from an earlier row contribution's, or `vals` of the wrong length.
    pub(crate) fn add_rows(&self, rows: &[u32], vals: Vec<f32>, width: usize) -> candle_core::Result<()> {
        if vals.len() != rows.len() * width {
            candle_core::bail!("gradient sink: {} values for {} rows of width {width}", vals.len(), rows.len());
        }
        let mut p = self.lock();
        if !p.rows.is_empty() && p.width != width {
            candle_core::bail!("gradient sink: rows of width {width} after rows of width {}", p.width);
        }
        p.width = width;
        p.rows.extend_from_slice(rows);
        if p.vals.is_empty() {
            p.vals = vals;
        } else {
            p.vals.extend_from_slice(&vals);
        }
        Ok(())
    }

    /// True when nothing was added since the last [`GradSink::take`].
    pub fn is_empty(&self) -> bool {
        let p = self.lock();
        p.dense.is_none() && p.rows.is_empty()
    }

    /// The accumulated gradient of a table of `len` values (`None` when nothing was added), leaving the sink
    /// empty. Row contributions are added in their order, after the full-size ones.
    ///
    /// # Errors
    /// A contribution that does not fit a table of `len` values.
    pub fn take(&self, len: usize) -> candle_core::Result<Option<Vec<f32>>> {
        let p = std::mem::take(&mut *self.lock());
        if p.dense.is_none() && p.rows.is_empty() {
            return Ok(None);
        }
        let mut g = p.dense.unwrap_or_else(|| vec![0f32; len]);
        if g.len() != len {
            candle_core::bail!("gradient sink: a gradient of {} values for a table of {len}", g.len());
        }
        let w = p.width;
        if w == 0 {
            return Ok(Some(g));
        }
        if let Some(&r) = p.rows.iter().find(|&&r| (r as usize + 1) * w > len) {
            candle_core::bail!("gradient sink: row {r} outside a table of {len} values of width {w}");
        }
        // Blocks of the table's rows in parallel, each adding its contributions in their order (a stable
        // bucketing): every value gets the same additions in the same order as a serial loop, for any thread
        // count.
        let blocks = len.div_ceil(BLOCK_ROWS * w);
        let mut start = vec![0usize; blocks + 1];
        for &r in &p.rows {
            start[r as usize / BLOCK_ROWS + 1] += 1;
        }
        for b in 0..blocks {
            start[b + 1] += start[b];
        }
        let mut next = start.clone();
        let mut order = vec![0u32; p.rows.len()];
        for (k, &r) in p.rows.iter().enumerate() {
            let b = r as usize / BLOCK_ROWS;
            order[next[b]] = k as u32;
            next[b] += 1;
        }
        g.par_chunks_mut(BLOCK_ROWS * w).enumerate().for_each(|(b, block)| {
            for &k in &order[start[b]..start[b + 1]] {
                let r = p.rows[k as usize] as usize - b * BLOCK_ROWS;
                let v = &p.vals[k as usize * w..][..w];
                block[r * w..][..w].iter_mut().zip(v).for_each(|(a, &b)| *a += b);
            }
        });
        Ok(Some(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_and_row_contributions_add_up() {
        let s = GradSink::new();
        assert!(s.is_empty());
        assert_eq!(s.take(6).unwrap(), None);
        s.add_rows(&[2, 0, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2).unwrap();
        assert_eq!(s.take(6).unwrap(), Some(vec![3.0, 4.0, 0.0, 0.0, 6.0, 8.0]));
        assert!(s.is_empty(), "take empties the sink");
        s.add_dense(vec![1.0; 6]).unwrap();
        s.add_dense(vec![0.5; 6]).unwrap();
        s.add_rows(&[1], vec![10.0, 20.0], 2).unwrap();
        assert_eq!(s.take(6).unwrap(), Some(vec![1.5, 1.5, 11.5, 21.5, 1.5, 1.5]));
    }

    /// Rows over several blocks, repeated and out of order: the same sums, to the bit, as adding them one
    /// by one in their order.
    #[test]
    fn row_contributions_over_many_blocks_add_up_in_order() {
        let (n, w) = (3 * BLOCK_ROWS + 5, 3);
        let rows: Vec<u32> = (0..20_000u32).map(|k| k.wrapping_mul(2_654_435_761) % n as u32).collect();
        let vals: Vec<f32> = (0..rows.len() * w).map(|k| ((k * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let mut want = vec![0.25f32; n * w + 1];
        for (&r, v) in rows.iter().zip(vals.chunks(w)) {
            want[r as usize * w..][..w].iter_mut().zip(v).for_each(|(a, &b)| *a += b);
        }
        let s = GradSink::new();
        s.add_dense(vec![0.25; n * w + 1]).unwrap();
        s.add_rows(&rows[..7], vals[..7 * w].to_vec(), w).unwrap();
        s.add_rows(&rows[7..], vals[7 * w..].to_vec(), w).unwrap();
        assert_eq!(s.take(n * w + 1).unwrap().unwrap(), want);
    }

    #[test]
    fn contributions_that_do_not_fit_are_refused() {
        let s = GradSink::new();
        s.add_dense(vec![0.0; 4]).unwrap();
        assert!(s.add_dense(vec![0.0; 5]).is_err());
        assert!(s.take(6).is_err(), "a dense gradient of another size");
        assert!(s.add_rows(&[0], vec![1.0], 2).is_err());
        s.add_rows(&[3], vec![1.0, 1.0], 2).unwrap();
        assert!(s.take(6).is_err(), "row 3 of width 2 is outside 6 values");
        s.add_rows(&[0], vec![1.0, 1.0], 2).unwrap();
        assert!(s.add_rows(&[0], vec![1.0, 1.0, 1.0], 3).is_err(), "another width");
    }
}
