//! Integration tests of the library: one binary, topical modules.

mod golden;
mod training;
