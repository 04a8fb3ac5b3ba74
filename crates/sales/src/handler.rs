//! Parsing and applying the sales and logistics methods.
//!
//! Every message is about one order. A batch first locks its orders' rows in id order, so
//! two replicas applying messages about the same order take turns (and never deadlock),
//! and what a message reads of its order (lines, invoices, shipments) stays true until it
//! commits. A message about an order that is not here is retried when the order is of this
//! shop's sales channel (it may be on its way), and otherwise recorded and ignored: another
//! sales channel shares the OMS. A message that names another channel than its order's is
//! that channel's, even when the order id is one of ours ([`SalesChannel`]).

use std::collections::HashMap;

use deadpool_postgres::Transaction;
use orders::{SalesChannel, record_foreign_order};
use protocol::Rejection;
use protocol::logistics::{self, Shipment};
use protocol::sales::{
    self, AttributesOf, AttributesUpdate, LineCancelled, OrderUpdate, ShippingAddressUpdate,
    methods,
};
use runtime::{ApplyError, Handler, Outcome};
use serde_json::value::RawValue;

use crate::apply::updates::{self, UpdateKind};
use crate::apply::{address, attributes, shipments};

/// A valid sales message.
#[derive(Debug)]
pub enum SalesMessage {
    Created(OrderUpdate),
    Updated(OrderUpdate),
    LineCancelled(LineCancelled),
    AttributesUpdated(AttributesUpdate),
    ShippingAddressUpdated(ShippingAddressUpdate),
    Shipment(Shipment),
}

impl SalesMessage {
    pub fn order_id(&self) -> &str {
        match self {
            SalesMessage::Created(u) | SalesMessage::Updated(u) => &u.order_id,
            SalesMessage::LineCancelled(c) => &c.order_id,
            SalesMessage::AttributesUpdated(a) => &a.order_id,
            SalesMessage::ShippingAddressUpdated(a) => &a.order_id,
            SalesMessage::Shipment(s) => &s.order_id,
        }
    }

    /// The sales channel the message says the order is of, when it says: the order's
    /// `store`, a shipment's `store_id`, a modification's `sales_channel_id`.
    pub fn channel(&self) -> Option<&str> {
        match self {
            SalesMessage::Created(u) | SalesMessage::Updated(u) => u.store.as_deref(),
            SalesMessage::Shipment(s) => s.store_id.as_deref(),
            SalesMessage::AttributesUpdated(a) => a.sales_channel_id.as_deref(),
            SalesMessage::ShippingAddressUpdated(a) => a.sales_channel_id.as_deref(),
            SalesMessage::LineCancelled(_) => None,
        }
    }
}

const LOCK_ORDERS: &str = "
    SELECT id, store FROM sales_orders WHERE id = ANY ($1::text[]) ORDER BY id FOR UPDATE";

#[derive(Debug, Default)]
pub struct SalesHandler {
    channel: SalesChannel,
}

impl SalesHandler {
    pub fn new(channel: SalesChannel) -> Self {
        Self { channel }
    }
}

impl Handler for SalesHandler {
    type Message = SalesMessage;

    fn module(&self) -> &'static str {
        crate::MODULE
    }

    fn methods(&self) -> &'static [&'static str] {
        methods::CONSUMED
    }

    fn parse(
        &self,
        method: &str,
        params: &RawValue,
        _limits: &protocol::Limits,
    ) -> Result<SalesMessage, Rejection> {
        match method {
            methods::CREATED => sales::parse_order_update(params).map(SalesMessage::Created),
            methods::UPDATED => sales::parse_order_update(params).map(SalesMessage::Updated),
            methods::LINE_CANCELLED => {
                sales::parse_line_cancelled(params).map(SalesMessage::LineCancelled)
            }
            methods::CUSTOM_ATTRIBUTES_UPDATED => {
                sales::parse_attributes_update(params, AttributesOf::Order)
                    .map(SalesMessage::AttributesUpdated)
            }
            methods::LINE_CUSTOM_ATTRIBUTES_UPDATED => {
                sales::parse_attributes_update(params, AttributesOf::Line)
                    .map(SalesMessage::AttributesUpdated)
            }
            methods::SHIPPING_ADDRESS_UPDATED => sales::parse_shipping_address_update(params)
                .map(SalesMessage::ShippingAddressUpdated),
            methods::SHIPMENT_DONE => logistics::parse_shipment(params).map(SalesMessage::Shipment),
            other => Err(Rejection::new(format!(
                "method {other:?} is not handled by the sales module"
            ))),
        }
    }

    fn weight(&self, message: &SalesMessage) -> usize {
        match message {
            SalesMessage::Created(u) | SalesMessage::Updated(u) => u.lines.len().max(1),
            SalesMessage::Shipment(s) => s.lines.len(),
            _ => 1,
        }
    }

    fn produced_at(&self, message: &SalesMessage) -> Option<chrono::DateTime<chrono::Utc>> {
        match message {
            SalesMessage::Created(u) | SalesMessage::Updated(u) => {
                u.status.as_ref().and_then(|s| s.date)
            }
            _ => None,
        }
    }

    async fn apply<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        batch: &'a [&'a SalesMessage],
    ) -> Result<Vec<Outcome>, ApplyError> {
        Ok(crate::batch::apply(tx, &self.channel, batch).await?)
    }
}

impl SalesHandler {
    /// Applies a batch one message after another, each with its own statements (about three
    /// round trips a message): the model [`Handler::apply`] is checked against. The batch
    /// path decides every message with the same rules in memory and writes once; both give
    /// the same outcomes and the same rows.
    pub async fn apply_one_by_one(
        &self,
        tx: &Transaction<'_>,
        batch: &[&SalesMessage],
    ) -> Result<Vec<Outcome>, ApplyError> {
        let mut ids: Vec<&str> = batch.iter().map(|m| m.order_id()).collect();
        ids.sort_unstable();
        ids.dedup();
        let lock = tx.prepare_cached(LOCK_ORDERS).await?;
        // Each known order's store.
        let known: HashMap<String, String> = tx
            .query(&lock, &[&ids])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mut outcomes = Vec::with_capacity(batch.len());
        for message in batch {
            let outcome = match known.get(message.order_id()) {
                Some(store) if self.channel.is_foreign(message.channel(), store) => {
                    record_foreign_order(tx, message.order_id(), message.channel()).await?;
                    Outcome::Ignored("foreign_order")
                }
                Some(_) => apply_one(tx, message).await?,
                None => unknown_order(tx, &self.channel, message).await?,
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }
}

async fn apply_one(
    tx: &Transaction<'_>,
    message: &SalesMessage,
) -> Result<Outcome, tokio_postgres::Error> {
    match message {
        SalesMessage::Created(u) => updates::apply(tx, u, UpdateKind::Created).await,
        SalesMessage::Updated(u) => updates::apply(tx, u, UpdateKind::Updated).await,
        SalesMessage::LineCancelled(c) => attributes::cancel_line(tx, c).await,
        SalesMessage::AttributesUpdated(a) => attributes::update(tx, a).await,
        SalesMessage::ShippingAddressUpdated(a) => address::apply(tx, a).await,
        SalesMessage::Shipment(s) => shipments::apply(tx, s).await,
    }
}

async fn unknown_order(
    tx: &Transaction<'_>,
    channel: &SalesChannel,
    message: &SalesMessage,
) -> Result<Outcome, tokio_postgres::Error> {
    let order_id = message.order_id();
    if let Some(said) = message.channel()
        && channel.is_ours(tx, said).await?
    {
        return Ok(Outcome::Retry(format!(
            "order {order_id} of sales channel {said} is not in this Commerce yet; waiting for it"
        )));
    }
    record_foreign_order(tx, order_id, message.channel()).await?;
    Ok(Outcome::Ignored("foreign_order"))
}
