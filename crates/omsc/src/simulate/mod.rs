//! `omsc simulate`: realistic OMS traffic in the real wire format, for demos, load tests,
//! benchmarks and the property tests. It says what it sent and can verify the end state.

pub mod orders;
pub mod postsales;
pub mod publish;
pub mod stock;
