//! The read API for a whole batch: what the batch's messages need of all their orders, one
//! statement each, however many messages and orders the batch has.
//!
//! The per-order functions ([`crate::orders`], [`crate::lines`]) stay for callers that handle
//! one order; these take every id at once, so a batch costs the same few round trips as a
//! single message.

use std::collections::{BTreeMap, HashMap, HashSet};

use deadpool_postgres::Transaction;
use rust_decimal::Decimal;

use crate::lines::OrderLine;

/// As [`crate::orders::lock`] (id order, the same lock mode), with what each order was paid
/// with, so that a batch that credits refunds reads its tenders in the same statement.
const LOCK: &str = "
    SELECT id, customer_id, store, gift_card_amount, store_credit_amount
      FROM sales_orders WHERE id = ANY ($1::text[])
     ORDER BY id FOR NO KEY UPDATE";

/// As [`crate::lines::load`], for every order of the batch.
const LINES: &str = "
    SELECT l.order_id, l.line_id, l.line_number, l.sku, l.gross_amount,
           EXISTS (SELECT 1 FROM sales_shipment_lines s
                    WHERE s.order_id = l.order_id AND s.line_id = l.line_id),
           l.item_id
      FROM sales_order_lines l WHERE l.order_id = ANY ($1::text[])
     ORDER BY l.order_id, l.line_number";

/// The stores of `$1` that have orders here: one index probe per store named.
const STORES_OF_OURS: &str = "
    SELECT s FROM unnest($1::text[]) AS s
     WHERE EXISTS (SELECT 1 FROM sales_orders o WHERE o.store = s)";

const FOREIGN_ORDERS: &str = "
    INSERT INTO sales_foreign_orders (order_id, sales_channel, messages)
    SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])
    ON CONFLICT (order_id, sales_channel) DO UPDATE
       SET messages = sales_foreign_orders.messages + EXCLUDED.messages, last_seen = now()";

/// An order a batch locked, with its tenders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedOrder {
    pub id: String,
    /// None for a guest.
    pub customer_id: Option<String>,
    /// The store the order was placed in (its sales channel unless one is configured).
    pub store: String,
    /// Paid with gift cards (`sales_orders.gift_card_amount`).
    pub gift_card_amount: Decimal,
    /// Paid with store credit (`sales_orders.store_credit_amount`).
    pub store_credit_amount: Decimal,
}

/// Locks the orders of `ids` (sorted, without repeats) that are here, in id order, until the
/// transaction ends; an id that is not here is left out.
pub async fn lock(
    tx: &Transaction<'_>,
    ids: &[&str],
) -> Result<Vec<LockedOrder>, tokio_postgres::Error> {
    let statement = tx.prepare_cached(LOCK).await?;
    Ok(tx
        .query(&statement, &[&ids])
        .await?
        .iter()
        .map(|r| LockedOrder {
            id: r.get(0),
            customer_id: r.get(1),
            store: r.get(2),
            gift_card_amount: r.get(3),
            store_credit_amount: r.get(4),
        })
        .collect())
}

/// The exported lines of every order of `ids`, each order's in line number order; an order
/// without lines (not exported yet) is left out.
pub async fn lines(
    tx: &Transaction<'_>,
    ids: &[&str],
) -> Result<HashMap<String, Vec<OrderLine>>, tokio_postgres::Error> {
    let statement = tx.prepare_cached(LINES).await?;
    let mut out: HashMap<String, Vec<OrderLine>> = HashMap::new();
    for r in tx.query(&statement, &[&ids]).await? {
        out.entry(r.get(0)).or_default().push(OrderLine {
            line_id: r.get(1),
            line_number: r.get(2),
            sku: r.get(3),
            gross_amount: r.get(4),
            shipped: r.get(5),
            item_id: r.get(6),
        });
    }
    Ok(out)
}

/// Which of `stores` are the store of some order of this Commerce (what
/// [`crate::SalesChannel::is_ours`] asks of one channel when none is configured).
pub async fn stores_of_ours(
    tx: &Transaction<'_>,
    stores: &[&str],
) -> Result<HashSet<String>, tokio_postgres::Error> {
    let statement = tx.prepare_cached(STORES_OF_OURS).await?;
    Ok(tx
        .query(&statement, &[&stores])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Counts messages about other sales channels' orders, as [`crate::record_foreign_order`]
/// counts each: one `(order id, channel named)` per message, in one statement.
pub async fn record_foreign_orders(
    tx: &Transaction<'_>,
    messages: &[(&str, Option<&str>)],
) -> Result<(), tokio_postgres::Error> {
    if messages.is_empty() {
        return Ok(());
    }
    // One row per pair: a statement may not update a row twice.
    let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for (order, channel) in messages {
        *counts.entry((order, channel.unwrap_or(""))).or_default() += 1;
    }
    let orders: Vec<&str> = counts.keys().map(|k| k.0).collect();
    let channels: Vec<&str> = counts.keys().map(|k| k.1).collect();
    let messages: Vec<i64> = counts.values().copied().collect();
    let statement = tx.prepare_cached(FOREIGN_ORDERS).await?;
    tx.execute(&statement, &[&orders, &channels, &messages])
        .await?;
    Ok(())
}
