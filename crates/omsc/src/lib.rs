//! The operator CLI's library half: what `omsc` does that tests and benchmarks also use.

pub mod bench;
pub mod fleet;
pub mod report;
pub mod scale;
