//! Files: checkpoints (safetensors + JSON metadata), exports and receipts.

pub mod checkpoint;
pub mod receipt;

pub use checkpoint::{Checkpoint, CheckpointMeta, DatasetInfo};
pub use receipt::Receipt;
