//! The OMS message protocol: JSON-RPC 2.0 envelopes and the typed messages of the catalog.
//!
//! Lenient in, strict out: inbound parsers accept what real senders write (numbers as strings,
//! timestamps with or without a zone, empty strings for absent values, unknown keys) and reject
//! what cannot be valid with a [`Rejection`] whose text a person can act on. Outbound types emit
//! exactly the spec's field names.
//!
//! This crate does no I/O: it turns bytes into values and values into bytes, nothing else.

pub mod catalog;
pub mod common;
pub mod envelope;
pub mod inventory;
pub mod lenient;
pub mod logistics;
pub mod money;
pub mod outbound;
pub mod postsales;
#[cfg(test)]
mod properties;
mod rejection;
pub mod rows;
pub mod sales;
pub mod service_bus;
pub mod shipping;
pub mod spec;
#[cfg(test)]
mod spec_probe;

pub use envelope::{Envelope, MessageId, OutgoingEnvelope};
pub use rejection::Rejection;

/// Bounds on what a single inbound message may contain.
///
/// They protect the workers from hostile or broken senders: a body over `max_body_bytes` is
/// refused before it is parsed, a snapshot listing more than `max_snapshot_skus` SKUs is
/// refused after, and so is any message with more than `max_message_rows` lines or SKUs: a
/// list longer than that is refused while the envelope is read, before any of it is kept
/// ([`rows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_snapshot_skus: usize,
    pub max_sku_chars: usize,
    /// Lines (of an order, shipment, return or refund) or SKUs one message may carry: no list
    /// of the params may be longer (checked as the envelope is read, see [`rows`]), and the
    /// runtime checks each module's count of its rows once the message is parsed.
    pub max_message_rows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // A 10,000-SKU snapshot is about 0.5 MiB; leave generous room for long SKUs and
            // extra keys.
            max_body_bytes: 8 * 1024 * 1024,
            max_snapshot_skus: 10_000,
            max_sku_chars: 64,
            max_message_rows: 10_000,
        }
    }
}

/// Reads `params` into a wire struct; a shape serde cannot read (an array where an object
/// belongs, a string where a list belongs) is a rejection that says where.
pub(crate) fn parse_params<T: serde::de::DeserializeOwned>(
    params: &serde_json::value::RawValue,
) -> Result<T, Rejection> {
    serde_json::from_str(params.get())
        .map_err(|e| Rejection::new(format!("params are malformed: {e}")))
}
