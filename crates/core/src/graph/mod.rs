//! The interaction graph: CSR storage, the bipartite graph, the normalised adjacency and the influence
//! dependency matrix.

mod csr;

pub use csr::Csr;
