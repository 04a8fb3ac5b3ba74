//! Realistic OMS traffic in the real wire format, for demos (`omsc simulate`), load tests,
//! benchmarks and the property tests. It says what it sent and can verify the end state.
//!
//! A crate of its own so that no production build carries it: the workers never depend on
//! it, and `omsc` only behind its non-default `simulate` feature (docs/ARCHITECTURE.md).

pub mod orders;
pub mod postsales;
pub mod publish;
pub mod stock;
