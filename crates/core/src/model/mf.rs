//! BPR matrix factorisation: the final embeddings are the base table `E⁰`; BPR plus `reg · ‖E⁰‖²`. Every
//! default of [`Architecture`] is MF's.

use super::{Architecture, ModelKind};

/// BPR-MF.
pub(super) struct Mf;

impl ModelKind {
    /// BPR matrix factorisation (no propagation).
    #[allow(non_upper_case_globals)]
    pub const Mf: ModelKind = ModelKind(&Mf);
}

impl Architecture for Mf {
    fn name(&self) -> &'static str {
        "mf"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["bpr-mf", "bprmf"]
    }

    fn about(&self) -> &'static str {
        "BPR matrix factorisation"
    }

    fn propagates(&self) -> bool {
        false
    }
}
