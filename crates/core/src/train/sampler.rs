//! Per-epoch BPR triples: a seeded shuffle of the training edges and one rejection-sampled negative each.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::graph::Csr;
use crate::model::Batch;

/// Edges handled per random stream; fixed so that results do not depend on the thread count.
const CHUNK: usize = 8192;
/// Rejection attempts before a dense user's negative is found by a scan.
const MAX_TRIES: usize = 64;

/// The BPR triples of one epoch, in shuffled order.
#[derive(Clone, Debug, Default)]
pub struct Triples {
    /// All triples; minibatches are consecutive slices.
    pub all: Batch,
}

impl Triples {
    /// Minibatch `k` of size `batch_size`.
    pub fn batch(&self, k: usize, batch_size: usize) -> Batch {
        let lo = k * batch_size;
        let hi = ((k + 1) * batch_size).min(self.all.len());
        Batch {
            users: self.all.users[lo..hi].to_vec(),
            pos: self.all.pos[lo..hi].to_vec(),
            neg: self.all.neg[lo..hi].to_vec(),
        }
    }

    /// The number of minibatches.
    pub fn n_batches(&self, batch_size: usize) -> usize {
        self.all.len().div_ceil(batch_size)
    }
}

/// Shuffles the edges of `seen` (users × items) and draws for each edge (u, i) a negative item `j` uniformly
/// among the items `u` has not interacted with (rejection against `seen`). Users who have interacted with
/// every item get no triples. Deterministic in `(seed, epoch)`.
pub fn sample_epoch(seen: &Csr, seed: u64, epoch: u64) -> Triples {
    let n_items = seen.n_cols() as u32;
    let mut order: Vec<(u32, u32)> = Vec::with_capacity(seen.nnz());
    for u in 0..seen.n_rows() {
        if seen.degree(u) < n_items as usize {
            order.extend(seen.row(u).iter().map(|&i| (u as u32, i)));
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_0000_0000_0000);
    rng.set_stream(epoch);
    order.shuffle(&mut rng);
    let stream_seed: u64 = rng.random();
    let mut neg = vec![0u32; order.len()];
    neg.par_chunks_mut(CHUNK).zip(order.par_chunks(CHUNK)).enumerate().for_each(|(c, (out, edges))| {
        let mut r = ChaCha8Rng::seed_from_u64(stream_seed);
        r.set_stream(c as u64);
        for (o, &(u, _)) in out.iter_mut().zip(edges) {
            let row = seen.row(u as usize);
            *o = draw_negative(row, n_items, &mut r);
        }
    });
    let (users, pos) = order.into_iter().unzip();
    Triples { all: Batch { users, pos, neg } }
}

/// An epoch of user-uniform triples (the LightGCN paper's sampler): as many as [`sample_epoch`]'s, each a
/// uniform user among those with a training item and an unseen item left, a uniform item of theirs, and a
/// seeded negative. Drawn in fixed chunks, each from its own stream of `(seed, epoch)`, so the result does not
/// depend on the thread count.
pub fn sample_epoch_by_users(seen: &Csr, seed: u64, epoch: u64) -> Triples {
    let n_items = seen.n_cols() as u32;
    let users: Vec<u32> = (0..seen.n_rows())
        .filter(|&u| seen.degree(u) > 0 && seen.degree(u) < n_items as usize)
        .map(|u| u as u32)
        .collect();
    let n: usize = users.iter().map(|&u| seen.degree(u as usize)).sum();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x05e7_0000_0000_0000);
    rng.set_stream(epoch);
    let stream_seed: u64 = rng.random();
    let (mut us, mut pos, mut neg) = (vec![0u32; n], vec![0u32; n], vec![0u32; n]);
    us.par_chunks_mut(CHUNK).zip(pos.par_chunks_mut(CHUNK)).zip(neg.par_chunks_mut(CHUNK)).enumerate().for_each(
        |(c, ((u_out, p_out), n_out))| {
            let mut r = ChaCha8Rng::seed_from_u64(stream_seed);
            r.set_stream(c as u64);
            for ((uo, po), no) in u_out.iter_mut().zip(p_out.iter_mut()).zip(n_out.iter_mut()) {
                let u = users[r.random_range(0..users.len())];
                let row = seen.row(u as usize);
                *uo = u;
                *po = row[r.random_range(0..row.len())];
                *no = draw_negative(row, n_items, &mut r);
            }
        },
    );
    Triples { all: Batch { users: us, pos, neg } }
}

/// A uniform item not in the sorted `row` (which must miss at least one item).
fn draw_negative(row: &[u32], n_items: u32, r: &mut ChaCha8Rng) -> u32 {
    for _ in 0..MAX_TRIES {
        let j = r.random_range(0..n_items);
        if row.binary_search(&j).is_err() {
            return j;
        }
    }
    // A very dense user: pick the k-th unseen item for a uniform k.
    let free = n_items as usize - row.len();
    kth_free(row, r.random_range(0..free) as u32)
}

/// The `k`-th (0-based) item id not in the sorted `row`.
fn kth_free(row: &[u32], mut k: u32) -> u32 {
    let mut prev = 0u32;
    for &s in row {
        let gap = s - prev;
        if k < gap {
            return prev + k;
        }
        k -= gap;
        prev = s + 1;
    }
    prev + k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Interactions;
    use crate::graph::Graph;

    fn toy() -> Csr {
        let (edges, _) = Interactions::from_pairs(vec![(0, 0), (0, 1), (1, 2), (2, 0), (2, 1), (2, 2), (2, 3), (3, 1)]);
        Graph::from_interactions(4, 5, &edges).user_items().clone()
    }

    #[test]
    fn negatives_are_never_seen_and_positives_cover_every_edge_once() {
        let seen = toy();
        let t = sample_epoch(&seen, 1, 0);
        assert_eq!(t.all.len(), seen.nnz());
        let mut pos: Vec<_> = t.all.users.iter().zip(&t.all.pos).map(|(&u, &i)| (u, i)).collect();
        pos.sort();
        let mut want = vec![];
        for u in 0..4 {
            want.extend(seen.row(u).iter().map(|&i| (u as u32, i)));
        }
        assert_eq!(pos, want);
        for (&u, &j) in t.all.users.iter().zip(&t.all.neg) {
            assert!(!seen.contains(u as usize, j), "negative ({u},{j}) is a training edge");
            assert!(j < 5);
        }
    }

    #[test]
    fn deterministic_per_seed_and_epoch() {
        let seen = toy();
        assert_eq!(sample_epoch(&seen, 3, 1).all, sample_epoch(&seen, 3, 1).all);
        assert_ne!(sample_epoch(&seen, 3, 1).all, sample_epoch(&seen, 3, 2).all);
    }

    #[test]
    fn dense_rows_fall_back_to_an_exact_draw() {
        let row: Vec<u32> = (0..1000).filter(|&i| i != 517).collect();
        let mut r = ChaCha8Rng::seed_from_u64(0);
        for _ in 0..5 {
            assert_eq!(draw_negative(&row, 1000, &mut r), 517);
        }
    }

    #[test]
    fn kth_free_enumerates_the_complement_in_order() {
        let row = [1u32, 2, 4];
        let got: Vec<u32> = (0..4).map(|k| kth_free(&row, k)).collect();
        assert_eq!(got, vec![0, 3, 5, 6]);
        assert_eq!(kth_free(&[], 3), 3);
    }

    #[test]
    fn user_uniform_triples_are_seen_pairs_with_unseen_negatives_and_weigh_users_equally() {
        // User 0 has 1 item, user 1 has 40: edge sampling draws user 1 forty times as often, user sampling
        // about as often as user 0.
        let mut pairs = vec![(0u32, 0u32)];
        pairs.extend((0..40).map(|i| (1u32, i)));
        let (edges, _) = Interactions::from_pairs(pairs);
        let seen = Graph::from_interactions(3, 50, &edges).user_items().clone();
        let mut count = [0usize; 3];
        for epoch in 0..200 {
            let t = sample_epoch_by_users(&seen, 7, epoch);
            assert_eq!(t.all.len(), seen.nnz());
            for k in 0..t.all.len() {
                let (u, i, j) = (t.all.users[k], t.all.pos[k], t.all.neg[k]);
                assert!(seen.contains(u as usize, i) && !seen.contains(u as usize, j), "({u}, {i}, {j})");
                count[u as usize] += 1;
            }
        }
        assert_eq!(count[2], 0, "a user without items is never drawn");
        let share = count[0] as f64 / (count[0] + count[1]) as f64;
        assert!((share - 0.5).abs() < 0.03, "user 0's share {share}");
        assert_eq!(sample_epoch_by_users(&seen, 7, 3).all, sample_epoch_by_users(&seen, 7, 3).all);
        assert_ne!(sample_epoch_by_users(&seen, 7, 3).all, sample_epoch_by_users(&seen, 7, 4).all);
        // More edges than one chunk, so that several chunks run in parallel.
        let (many, _) =
            Interactions::from_pairs((0..500u32).flat_map(|u| (0..40u32).map(move |i| (u, i * 3))).collect());
        let big = Graph::from_interactions(500, 150, &many).user_items().clone();
        assert!(big.nnz() > 2 * CHUNK);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert_eq!(pool.install(|| sample_epoch_by_users(&big, 1, 0).all), sample_epoch_by_users(&big, 1, 0).all);
    }
}
