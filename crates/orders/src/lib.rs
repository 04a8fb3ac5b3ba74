//! The sales module's read API for orders: every query another module makes on the sales
//! tables (`sales_orders`, `sales_order_lines`, `sales_shipment_lines`, …).
//!
//! The sales module owns those tables: it writes them from the storefront's orders and the
//! OMS's messages, and its own SQL may change with it. A module that needs an order (the
//! post-sales module: a return's or a refund's order, its lines, what it was paid with) reads
//! it through this crate and holds no SQL naming a sales table, so that the sales schema has
//! one place where its readers are listed (docs/ARCHITECTURE.md, "Invariants";
//! `tests/it/boundaries_code.rs` checks it).
//!
//! Each function is one statement, as its caller issued it before: a query that needs a
//! module's own rows joined with an order's (a return with its order's store) is here whole,
//! reading the caller's rows by the key it passes, rather than split into two round trips.
//! The one write, [`record_foreign_order`], counts a message about another sales channel's
//! order where the sales module counts its own.

pub mod batch;
pub mod channel;
pub mod lines;
pub mod orders;
pub mod returns;

pub use channel::SalesChannel;
pub use orders::record_foreign_order;
