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
        for (&r, v) in p.rows.iter().zip(p.vals.chunks(w.max(1))) {
            let Some(row) = g.get_mut(r as usize * w..(r as usize + 1) * w) else {
                candle_core::bail!("gradient sink: row {r} outside a table of {len} values of width {w}");
            };
            row.iter_mut().zip(v).for_each(|(a, &b)| *a += b);
        }
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
