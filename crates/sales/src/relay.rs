//! The sales outbox relay's side: building `order_management.create` and `.cancel` from the
//! current rows.
//!
//! The envelope id (also the AMQP `message_id`) is the order id for the export and
//! `<order id>:cancel` for a cancellation, so a resend after a crash is recognisably the same
//! message. The export is built from rows that no one but the connector may change once the
//! order is placed, so a resend also carries the same content.

use protocol::OutgoingEnvelope;
use protocol::sales::{CancelParams, methods};
use runtime::outbox::{BuildError, Built, OutboxHandler, OutboxRow, Outgoing};

use crate::export;

/// Outbox topics of the sales module (`omsc_outbox_add('sales', <topic>, <order id>)`).
pub mod topics {
    pub const ORDER_CREATE: &str = "order.create";
    pub const ORDER_CANCEL: &str = "order.cancel";
}

const CANCEL_REQUEST: &str = "
    SELECT r.requested_by FROM sales_order_cancel_requests r WHERE r.order_id = $1";

pub struct SalesOutbox;

impl OutboxHandler for SalesOutbox {
    fn module(&self) -> &'static str {
        crate::MODULE
    }

    async fn build<'a>(
        &'a self,
        client: &'a deadpool_postgres::Client,
        row: &'a OutboxRow,
    ) -> Result<Built, BuildError> {
        match row.topic.as_str() {
            topics::ORDER_CREATE => build_create(client, &row.subject).await,
            topics::ORDER_CANCEL => build_cancel(client, &row.subject).await,
            other => Err(BuildError::Invalid(format!(
                "the sales module has no outbox topic {other:?}"
            ))),
        }
    }
}

async fn build_create(
    client: &deadpool_postgres::Client,
    order_id: &str,
) -> Result<Built, BuildError> {
    let Some(rows) = export::load_order(client, order_id).await? else {
        return Ok(Built::Nothing);
    };
    let export = export::build(&rows).map_err(|e| BuildError::Invalid(e.0))?;
    export::save_lines(client, order_id, &export.lines).await?;
    Ok(Built::Message(Outgoing {
        method: methods::CREATE.into(),
        message_id: create_message_id(order_id),
        body: OutgoingEnvelope::new(Some(order_id), methods::CREATE, &export.params).to_vec(),
    }))
}

async fn build_cancel(
    client: &deadpool_postgres::Client,
    order_id: &str,
) -> Result<Built, BuildError> {
    let statement = client.prepare_cached(CANCEL_REQUEST).await?;
    let Some(request) = client.query_opt(&statement, &[&order_id]).await? else {
        return Ok(Built::Nothing);
    };
    let id = cancel_message_id(order_id);
    let params = CancelParams {
        order_id: order_id.to_owned(),
        user: request.get(0),
    };
    Ok(Built::Message(Outgoing {
        method: methods::CANCEL.into(),
        body: OutgoingEnvelope::new(Some(&id), methods::CANCEL, &params).to_vec(),
        message_id: id,
    }))
}

/// The message id of an order's export: the order id.
pub fn create_message_id(order_id: &str) -> String {
    order_id.to_owned()
}

/// The message id of an order's cancellation request.
pub fn cancel_message_id(order_id: &str) -> String {
    format!("{order_id}:cancel")
}
