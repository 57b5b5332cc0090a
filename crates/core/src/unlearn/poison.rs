//! The adversarial request protocol of the reference (docs/method.md §12, `make_noise_dataset.py`): a model trained on
//! clean data scores every pair; a random `ratio` of the users each get an edge to their **least related**
//! item (`argmin_j e_u·e_j`) and a random `ratio` of the items an edge from their least related user. The
//! edges are injected into the training data before the backbone is trained; unlearning them must restore
//! the clean model.
//!
//! Deviation from the reference, on purpose: the argmin runs over pairs that are not already interactions
//! (training, validation or test) and not already picked, so every injected edge is new and a test pair is
//! never planted in training. The reference searched all items and let scipy collapse the collisions.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::data::Interactions;
use crate::error::{Error, Result};
use crate::model::Embeddings;

/// For each row of `a` (n×d) listed in `rows`, the column of `b` (m×d) with the lowest dot product for
/// which `taken(row, col)` is false; `None` when every column is taken.
fn argmin_rows(
    a: &[f32],
    b: &[f32],
    d: usize,
    rows: &[u32],
    taken: &(dyn Fn(u32, u32) -> bool + Sync),
) -> Vec<Option<u32>> {
    rows.par_iter()
        .map(|&r| {
            let x = &a[r as usize * d..(r as usize + 1) * d];
            let mut best: Option<(f32, u32)> = None;
            for (c, y) in b.chunks_exact(d).enumerate() {
                let s: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
                if best.is_none_or(|(bs, _)| s < bs) && !taken(r, c as u32) {
                    best = Some((s, c as u32));
                }
            }
            best.map(|(_, c)| c)
        })
        .collect()
}

/// The least-related edges of `ratio` of the users and `ratio` of the items under `emb`, avoiding the pairs
/// of `existing` (every known interaction). Users and items are drawn from `seed`; the result is sorted and
/// de-duplicated.
///
/// # Errors
/// [`Error::Config`] when `ratio` is not in (0, 1] or the embeddings' shapes do not match `existing`.
pub fn least_related_edges(emb: &Embeddings, existing: &Interactions, ratio: f64, seed: u64) -> Result<Interactions> {
    if !(ratio > 0.0 && ratio <= 1.0) {
        return Err(Error::config("poison.ratio", format!("must be in (0, 1], got {ratio}")));
    }
    let d = emb.dim;
    let (nu, ni) = (emb.users.len() / d.max(1), emb.items.len() / d.max(1));
    let (bu, bi) = existing.id_bounds();
    if d == 0 || bu > nu || bi > ni {
        return Err(Error::config("poison", "the embeddings do not cover the dataset's users and items"));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pick = |n: usize| -> Vec<u32> {
        let mut v: Vec<u32> = (0..n as u32).collect();
        v.shuffle(&mut rng);
        v.truncate(((ratio * n as f64) as usize).max(1));
        v.sort_unstable();
        v
    };
    let users = pick(nu);
    let items = pick(ni);
    let by_user = argmin_rows(&emb.users, &emb.items, d, &users, &|u, i| existing.contains(u, i));
    let mut pairs: Vec<(u32, u32)> = users.iter().zip(&by_user).filter_map(|(&u, i)| i.map(|i| (u, i))).collect();
    let (first, _) = Interactions::from_pairs(pairs.clone());
    let by_item =
        argmin_rows(&emb.items, &emb.users, d, &items, &|i, u| existing.contains(u, i) || first.contains(u, i));
    pairs.extend(items.iter().zip(&by_item).filter_map(|(&i, u)| u.map(|u| (u, i))));
    Ok(Interactions::from_pairs(pairs).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emb(users: Vec<f32>, items: Vec<f32>) -> Embeddings {
        Embeddings { dim: 1, users, items }
    }

    #[test]
    fn picks_the_lowest_scoring_new_pair() {
        // Both users embed as 1; items score 3, -1, -2, 0.
        let e = emb(vec![1.0, 1.0], vec![3.0, -1.0, -2.0, 0.0]);
        let (existing, _) = Interactions::from_pairs(vec![(0, 2), (1, 0)]);
        let adv = least_related_edges(&e, &existing, 1.0, 7).unwrap();
        // User pass: user 0 -> item 1 (item 2 is its own), user 1 -> item 2. Item pass (ties go to user 0):
        // item 0 -> (0,0); item 1 -> (1,1) since (0,1) is picked; item 2 -> none left; item 3 -> (0,3).
        for &(u, i) in &[(0, 1), (1, 2), (0, 0), (1, 1), (0, 3)] {
            assert!(adv.contains(u, i), "missing ({u}, {i}) in {:?}", adv.iter().collect::<Vec<_>>());
        }
        assert!(adv.iter().all(|(u, i)| !existing.contains(u, i)));
    }

    #[test]
    fn ratio_and_seed_choose_the_nodes() {
        let users: Vec<f32> = (0..40).map(|k| (k as f32 * 0.37).sin()).collect();
        let items: Vec<f32> = (0..30).map(|k| (k as f32 * 0.91).cos()).collect();
        let e = emb(users, items);
        let (existing, _) = Interactions::from_pairs(vec![(0, 0)]);
        let a = least_related_edges(&e, &existing, 0.5, 3).unwrap();
        let b = least_related_edges(&e, &existing, 0.5, 3).unwrap();
        assert_eq!(a, b);
        // 20 users' edges and at most 15 items' edges, some possibly shared.
        assert!(a.len() >= 20 && a.len() <= 35, "{}", a.len());
        assert!(least_related_edges(&e, &existing, 0.0, 3).is_err());
        assert!(least_related_edges(&e, &existing, 1.5, 3).is_err());
    }
}
