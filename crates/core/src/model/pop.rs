//! Most-popular: every user gets the items with the most training interactions. Nothing is learned.

use super::{Architecture, Backbone, ModelConfig, ModelKind};
use crate::data::Interactions;
use crate::error::Result;

/// The most-popular baseline.
pub(super) struct MostPopular;

impl ModelKind {
    /// Most-popular baseline: every user gets the items with the most training interactions.
    #[allow(non_upper_case_globals)]
    pub const Pop: ModelKind = ModelKind(&MostPopular);
}

impl Architecture for MostPopular {
    fn name(&self) -> &'static str {
        "pop"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["most-popular", "mostpop"]
    }

    fn about(&self) -> &'static str {
        "Most-popular baseline"
    }

    fn propagates(&self) -> bool {
        false
    }

    fn learns_embeddings(&self) -> bool {
        false
    }

    /// [`Backbone::popularity`] of `train` (the config is not used).
    fn init(&self, _: &ModelConfig, n_users: usize, n_items: usize, train: &Interactions, _: u64) -> Result<Backbone> {
        Backbone::popularity(n_users, &crate::pipeline::popularity(n_items, train))
    }
}

impl Backbone {
    /// The most-popular model from training popularity counts (one per item): a one-column table where users
    /// hold 1 and items their popularity, so that `score = e_u · e_i` ranks by popularity through the same
    /// path as the other models.
    pub fn popularity(n_users: usize, popularity: &[f32]) -> Result<Self> {
        let config = ModelConfig { kind: ModelKind::Pop, dim: 1, layers: 0, ..ModelConfig::default() };
        let mut data = vec![1.0f32; n_users];
        data.extend_from_slice(popularity);
        Self::from_embeddings(config, n_users, popularity.len(), data)
    }
}
