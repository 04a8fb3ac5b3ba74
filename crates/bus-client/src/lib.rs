//! The connector's client for the OMS service bus (JSON-RPC 2.0 over HTTP): where the bus is
//! and how to log in to it ([`BusConfig`]), and [`BusClient`], which POSTs a request to a
//! path under the bus's base URL and says what the answer means.
//!
//! One client for every caller: the gateway carries the connector's messages with it, and
//! the inventory module asks the bus for its sources with it (`omsc sources sync`). It is
//! apart from both so that the inventory module takes the client without the gateway's
//! server side, and both get the same TLS stack (the rustls the broker and database
//! connections use), the same OAuth handling and the same reading of answers.

mod client;
pub mod config;

pub use client::{Answer, BusClient, ResponseObserver, Unavailable, classify};
pub use config::BusConfig;
