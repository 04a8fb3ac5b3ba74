//! The sales module: each new order goes to the OMS once (the outbox relay), and every later
//! fact about it comes back (the consumer of `connector.sales`): statuses, cancellations,
//! custom attributes, shipments with their tracking, and captures as invoices.

pub mod apply;
pub mod export;
mod handler;
pub mod relay;
pub mod status;
pub mod version;

use runtime::{QueueSpec, Runtime};

pub use handler::{SalesHandler, SalesMessage, record_foreign_order, store_is_ours};
pub use relay::SalesOutbox;

/// The module's name: the `module` label of its metrics and its outbox rows' `module`.
pub const MODULE: &str = "sales";

/// The module's queue (contract), bound to exactly the methods the module consumes: a
/// logistics method it does not handle (carrier, warehouse) is never routed here.
pub const QUEUE: QueueSpec = QueueSpec {
    name: "connector.sales",
    oms_bindings: protocol::sales::methods::CONSUMED,
};

/// Adds the sales consumer and the sales outbox relay to a runtime.
pub fn install(runtime: &mut Runtime) -> anyhow::Result<()> {
    runtime.add_consumer(QUEUE, SalesHandler);
    runtime.add_outbox_relay(SalesOutbox);
    Ok(())
}
