//! LightGCN (He et al. 2020): layers `Eˡ = ÂˡE⁰`, summed as in the UnlearnRec reference (the paper's mean
//! through `[model] combine`); BPR plus `reg · ‖E⁰‖²` over the whole table.

use super::{Architecture, ModelKind};

/// LightGCN.
pub(super) struct LightGcn;

impl ModelKind {
    /// LightGCN.
    #[allow(non_upper_case_globals)]
    pub const LightGcn: ModelKind = ModelKind(&LightGcn);
}

impl Architecture for LightGcn {
    fn name(&self) -> &'static str {
        "lightgcn"
    }

    fn about(&self) -> &'static str {
        "LightGCN"
    }

    fn propagates(&self) -> bool {
        true
    }
}
