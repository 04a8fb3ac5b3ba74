//! The one test harness of the workspace, shared by the integration tests (`tests/it`) and
//! the benchmark: waits with a deadline instead of sleeps, a minimal HTTP client for the
//! workers' probes and metrics, a process's figures from `/proc`, and the fleet and
//! scale-out drivers that run replicas of a worker as processes.
//!
//! A crate of its own so that no production crate can reach it (docs/ARCHITECTURE.md,
//! "Invariants"): it is a dev-dependency of the tests and a dependency of the bench only.

pub mod fleet;
pub mod http;
pub mod process;
pub mod scale;
pub mod wait;
