//! The operator CLI's library half: what `omsc` does that tests and benchmarks also use.

pub mod modules;
