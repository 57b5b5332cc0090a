//! One module per subcommand.

pub mod audit;
pub mod bench;
pub mod bench_scale;
pub mod data;
pub mod demo;
pub mod experiment;
pub mod model;
pub mod serve;
pub mod unlearn;
