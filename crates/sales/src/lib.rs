//! The sales module: each new order goes to the OMS once (the outbox relay), and every later
//! fact about it comes back (the consumer of `connector.sales`): statuses, cancellations,
//! custom attributes, shipments with their tracking, and captures as invoices.

pub mod apply;
mod batch;
pub mod export;
mod handler;
pub mod relay;
pub mod status;
pub mod version;

use runtime::{QueueSpec, Runtime};

// The order queries other modules share live in the read API; re-exported for this
// module's own readers.
pub use handler::{SalesHandler, SalesMessage};
pub use orders::{SalesChannel, record_foreign_order};
pub use relay::SalesOutbox;

/// The module's name: the `module` label of its metrics and its outbox rows' `module`.
pub const MODULE: &str = "sales";

/// The module's queue (contract), bound to exactly the methods the module consumes: a
/// logistics method it does not handle (carrier, warehouse) is never routed here.
pub const QUEUE: QueueSpec = QueueSpec {
    name: "connector.sales",
    oms_bindings: protocol::sales::methods::CONSUMED,
};

/// Adds the sales consumer and the sales outbox relay to a runtime, selling as the
/// runtime's sales channel (`OMSC_SALES_CHANNEL`).
pub fn install(runtime: &mut Runtime) -> anyhow::Result<()> {
    let channel = SalesChannel::new(runtime.shared().config.sales_channel.clone());
    runtime.add_consumer(QUEUE, SalesHandler::new(channel.clone()));
    runtime.add_outbox_relay(SalesOutbox::new(channel));
    Ok(())
}
