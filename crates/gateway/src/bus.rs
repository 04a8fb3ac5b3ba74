//! Calls to the bus: the connector's one client for it, shared with the inventory module's
//! source sync (crate `bus-client`; what an answer means is said there).

pub use bus_client::{Answer, BusClient, Unavailable, classify};
