//! What answering from a checkpoint needs, computed once: [`Serving`].

use super::Checkpoint;
use crate::error::Result;
use crate::graph::Graph;
use crate::model::Embeddings;

/// A checkpoint's serving view ([`Checkpoint::serving`]): its final embeddings, the items each user has
/// seen (training and validation edges), its removed edges and the erased catalogue.
#[derive(Debug)]
pub struct Serving {
    embeddings: Embeddings,
    seen: Graph,
    removed: Graph,
    erased_items: Vec<u32>,
    /// The largest final item-embedding norm (the ranking's rounding bound needs it).
    item_norm: f64,
}

impl Serving {
    pub(super) fn new(ckpt: &Checkpoint) -> Result<Self> {
        let (nu, ni) = (ckpt.model().n_users(), ckpt.model().n_items());
        let embeddings = ckpt.final_embeddings()?;
        let seen = Graph::from_interactions(nu, ni, &ckpt.seen());
        let removed = Graph::from_interactions(nu, ni, ckpt.removed());
        let erased_items = (0..ni)
            .filter(|&i| !removed.item_users().row(i).is_empty() && seen.item_users().row(i).is_empty())
            .map(|i| i as u32)
            .collect();
        let item_norm = crate::eval::ranking::max_row_norm(&embeddings.items, embeddings.dim);
        Ok(Self { embeddings, seen, removed, erased_items, item_norm })
    }

    /// The final (propagated) embeddings.
    pub fn embeddings(&self) -> &Embeddings {
        &self.embeddings
    }

    /// The seen edges (training graph plus validation edges), both ways.
    pub fn seen(&self) -> &Graph {
        &self.seen
    }

    /// The removed edges, both ways.
    pub fn removed(&self) -> &Graph {
        &self.removed
    }

    /// Items that had interactions and lost them all to unlearning: erased from the catalogue, never
    /// recommended. Sorted.
    pub fn erased_items(&self) -> &[u32] {
        &self.erased_items
    }

    /// The top-`k` items of `user` that it has not seen and that are not erased, best first: (internal
    /// ids, scores).
    ///
    /// # Errors
    /// `k` = 0, or a user outside the model.
    pub fn top_k(&self, user: u32, k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
        let top = self.top_k_many(&[user], k)?;
        let (items, scores) = top.row(0);
        Ok((items.to_vec(), scores.to_vec()))
    }

    /// [`Serving::top_k`] of many users in one parallel pass; row `r` belongs to `users[r]`.
    ///
    /// # Errors
    /// As [`Serving::top_k`].
    pub fn top_k_many(&self, users: &[u32], k: usize) -> Result<crate::eval::TopK> {
        let emb = &self.embeddings;
        let seen = Some(self.seen.user_items());
        let (items, norm) = (&emb.items, Some(self.item_norm));
        crate::eval::ranking::recommend_with_norm(users, &emb.users, items, emb.dim, seen, &self.erased_items, k, norm)
    }
}
