//! The post-sales module: each return the storefront requests goes to the OMS once (the
//! outbox relay, `return_management.authorize`), and what the OMS says afterwards comes back
//! (the consumer of `connector.postsales`): return statuses and receipts, refunds and, on
//! their release, one credit memo per credit note with the store credit it gives back.

pub mod authorize;
pub mod duplicates;
mod handler;
pub mod refunds;
pub mod relay;
pub mod returns;
pub mod status;
pub mod store_credit;
pub mod storefront;

use runtime::{QueueSpec, Runtime};

pub use handler::{PostsalesHandler, PostsalesMessage};
pub use relay::PostsalesOutbox;

/// The module's name: the `module` label of its metrics and its outbox rows' `module`.
pub const MODULE: &str = "postsales";

/// The module's queue (contract), bound to exactly the methods the module consumes.
pub const QUEUE: QueueSpec = QueueSpec {
    name: "connector.postsales",
    oms_bindings: protocol::postsales::methods::CONSUMED,
};

/// Adds the post-sales consumer and the post-sales outbox relay to a runtime, as the
/// runtime's sales channel (`OMSC_SALES_CHANNEL`).
pub fn install(runtime: &mut Runtime) -> anyhow::Result<()> {
    let channel = orders::SalesChannel::new(runtime.shared().config.sales_channel.clone());
    runtime.add_consumer(QUEUE, PostsalesHandler::new(channel.clone()));
    runtime.add_outbox_relay(PostsalesOutbox::new(channel));
    Ok(())
}
