//! Applying what the OMS says about orders.

pub mod address;
pub mod attributes;
pub mod invoices;
pub mod lines;
pub mod shipments;
pub mod updates;
