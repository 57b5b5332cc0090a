//! The shard layout a sharded (SISA / RecEraser) checkpoint records in its metadata
//! ([`super::Provenance::shards`]). Training and unlearning of the shards live in
//! [`sisa`](mod@crate::unlearn::baselines::sisa), which re-exports these types.

use serde::{Deserialize, Serialize};

use crate::model::ModelConfig;

/// How the training edges are split into shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partition {
    /// Balanced groups of users by k-means on pre-trained embeddings (RecEraser); an edge follows its user.
    User,
    /// Edges uniformly at random, by a seeded hash of the pair (SISA).
    Random,
}

/// How the shards' scores are combined into the served model (see [`sisa`](mod@crate::unlearn::baselines::sisa)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// The mean of the shards' scores (SISA).
    Mean,
    /// Each user is scored by the shard that holds them (user partition only).
    Own,
    /// RecEraser's attention over the shards, trained over the frozen shards.
    Attention,
}

impl Aggregation {
    /// The name used in configurations and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Own => "own",
            Self::Attention => "attention",
        }
    }
}

/// What the attention aggregator learned.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AttentionReport {
    /// Mean training loss of each epoch.
    pub losses: Vec<f64>,
    /// Validation Recall@20 after each epoch (empty without validation edges).
    pub valid_recall: Vec<f64>,
    /// The epoch whose aggregator is kept (0-based).
    pub best_epoch: usize,
    /// Mean attention weight of each shard over all users, at the kept epoch.
    pub user_weights: Vec<f64>,
    /// Wall-clock seconds of the aggregator's training.
    pub secs: f64,
}

/// What a sharded checkpoint records about its shards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// The number of shards.
    pub shards: usize,
    /// The partition.
    pub partition: Partition,
    /// The backbone of every sub-model.
    pub model: ModelConfig,
    /// The seed the shard seeds and the random partition derive from.
    pub seed: u64,
    /// The shards retrained by the last unlearning request (empty after training).
    pub last_retrained: Vec<usize>,
    /// How the shards are combined (`None` in files written before it was configurable: the partition's
    /// default).
    #[serde(default)]
    pub aggregation: Option<Aggregation>,
    /// Epochs of the attention aggregator.
    #[serde(default)]
    pub attention_epochs: usize,
    /// What the attention aggregator learned when it was last trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<AttentionReport>,
}

impl ShardMeta {
    /// The aggregation in force.
    pub fn aggregation(&self) -> Aggregation {
        self.aggregation.unwrap_or(match self.partition {
            Partition::User => Aggregation::Own,
            Partition::Random => Aggregation::Mean,
        })
    }

    /// The dimension of the served MF model.
    pub fn serving_dim(&self) -> usize {
        match self.aggregation() {
            Aggregation::Attention => self.model.dim,
            // Saturating: the counts come from a file, and no real dimension is usize::MAX.
            Aggregation::Mean | Aggregation::Own => self.shards.saturating_mul(self.model.dim),
        }
    }
}
