//! Parsing and applying the sales and logistics methods.
//!
//! Every message is about one order. A batch first locks its orders' rows in id order, so
//! two replicas applying messages about the same order take turns (and never deadlock),
//! and what a message reads of its order (lines, invoices, shipments) stays true until it
//! commits. A message about an order that is not here is retried when the order is of one
//! of this Commerce's stores (it may be on its way), and otherwise recorded and ignored:
//! another sales channel shares the OMS.

use std::collections::HashSet;

use deadpool_postgres::Transaction;
use protocol::Rejection;
use protocol::logistics::{self, Shipment};
use protocol::sales::{self, AttributesUpdate, LineCancelled, OrderUpdate, methods};
use runtime::{ApplyError, Handler, Outcome};
use serde_json::value::RawValue;

use crate::apply::{attributes, shipments, updates};

/// A valid sales message.
#[derive(Debug)]
pub enum SalesMessage {
    Created(OrderUpdate),
    Updated(OrderUpdate),
    LineCancelled(LineCancelled),
    AttributesUpdated(AttributesUpdate),
    Shipment(Shipment),
}

impl SalesMessage {
    pub fn order_id(&self) -> &str {
        match self {
            SalesMessage::Created(u) | SalesMessage::Updated(u) => &u.order_id,
            SalesMessage::LineCancelled(c) => &c.order_id,
            SalesMessage::AttributesUpdated(a) => &a.order_id,
            SalesMessage::Shipment(s) => &s.order_id,
        }
    }

    /// The store the message says the order is of, when it says.
    pub fn store(&self) -> Option<&str> {
        match self {
            SalesMessage::Created(u) | SalesMessage::Updated(u) => u.store.as_deref(),
            SalesMessage::Shipment(s) => s.store_id.as_deref(),
            SalesMessage::LineCancelled(_) | SalesMessage::AttributesUpdated(_) => None,
        }
    }
}

const LOCK_ORDERS: &str = "
    SELECT id FROM sales_orders WHERE id = ANY ($1::text[]) ORDER BY id FOR UPDATE";

const STORE_IS_OURS: &str = "SELECT EXISTS (SELECT 1 FROM sales_orders WHERE store = $1)";

const FOREIGN_ORDER: &str = "
    INSERT INTO sales_foreign_orders (order_id) VALUES ($1)
    ON CONFLICT (order_id) DO UPDATE
       SET messages = sales_foreign_orders.messages + 1, last_seen = now()";

#[derive(Debug, Default)]
pub struct SalesHandler;

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
        params: Option<&RawValue>,
        _limits: &protocol::Limits,
    ) -> Result<SalesMessage, Rejection> {
        let params = || params.ok_or_else(|| Rejection::new("envelope has no \"params\""));
        match method {
            methods::CREATED => sales::parse_order_update(params()?).map(SalesMessage::Created),
            methods::UPDATED => sales::parse_order_update(params()?).map(SalesMessage::Updated),
            methods::LINE_CANCELLED => {
                sales::parse_line_cancelled(params()?).map(SalesMessage::LineCancelled)
            }
            methods::CUSTOM_ATTRIBUTES_UPDATED => sales::parse_attributes_update(params()?, false)
                .map(SalesMessage::AttributesUpdated),
            methods::LINE_CUSTOM_ATTRIBUTES_UPDATED => {
                sales::parse_attributes_update(params()?, true).map(SalesMessage::AttributesUpdated)
            }
            methods::SHIPMENT_DONE => {
                logistics::parse_shipment(params()?).map(SalesMessage::Shipment)
            }
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
        let mut ids: Vec<&str> = batch.iter().map(|m| m.order_id()).collect();
        ids.sort_unstable();
        ids.dedup();
        let lock = tx.prepare_cached(LOCK_ORDERS).await?;
        let known: HashSet<String> = tx
            .query(&lock, &[&ids])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut outcomes = Vec::with_capacity(batch.len());
        for message in batch {
            let outcome = if known.contains(message.order_id()) {
                apply_one(tx, message).await?
            } else {
                unknown_order(tx, message).await?
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
        SalesMessage::Created(u) => updates::apply(tx, u, true).await,
        SalesMessage::Updated(u) => updates::apply(tx, u, false).await,
        SalesMessage::LineCancelled(c) => attributes::cancel_line(tx, c).await,
        SalesMessage::AttributesUpdated(a) => attributes::update(tx, a).await,
        SalesMessage::Shipment(s) => shipments::apply(tx, s).await,
    }
}

async fn unknown_order(
    tx: &Transaction<'_>,
    message: &SalesMessage,
) -> Result<Outcome, tokio_postgres::Error> {
    let order_id = message.order_id();
    if let Some(store) = message.store()
        && store_is_ours(tx, store).await?
    {
        return Ok(Outcome::Retry(format!(
            "order {order_id} of store {store} is not in this Commerce yet; waiting for it"
        )));
    }
    record_foreign_order(tx, order_id).await?;
    Ok(Outcome::Ignored("foreign_order"))
}

/// Whether any order of this Commerce is of `store`: how a message about an order that is not
/// here is told from one about another sales channel's order.
pub async fn store_is_ours(
    tx: &Transaction<'_>,
    store: &str,
) -> Result<bool, tokio_postgres::Error> {
    let ours = tx.prepare_cached(STORE_IS_OURS).await?;
    Ok(tx.query_one(&ours, &[&store]).await?.get(0))
}

/// Counts a message about an order of another sales channel in `sales_foreign_orders`.
pub async fn record_foreign_order(
    tx: &Transaction<'_>,
    order_id: &str,
) -> Result<(), tokio_postgres::Error> {
    let record = tx.prepare_cached(FOREIGN_ORDER).await?;
    tx.execute(&record, &[&order_id]).await?;
    Ok(())
}
