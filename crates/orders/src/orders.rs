//! Orders as a whole: locking a batch's orders, what an order was paid with, and counting
//! messages about other sales channels' orders.

use deadpool_postgres::Transaction;
use rust_decimal::Decimal;

/// Locks in id order, as the sales module's batches do, so that a sales and another
/// module's batch about one order take turns and never deadlock.
const LOCK: &str = "
    SELECT id, customer_id, store FROM sales_orders WHERE id = ANY ($1::text[])
     ORDER BY id FOR NO KEY UPDATE";

const TENDERS: &str = "
    SELECT customer_id, gift_card_amount, store_credit_amount FROM sales_orders WHERE id = $1";

const FOREIGN_ORDER: &str = "
    INSERT INTO sales_foreign_orders (order_id, sales_channel) VALUES ($1, $2)
    ON CONFLICT (order_id, sales_channel) DO UPDATE
       SET messages = sales_foreign_orders.messages + 1, last_seen = now()";

/// An order a batch locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedOrder {
    pub id: String,
    pub customer_id: Option<String>,
    /// The store the order was placed in (its sales channel unless one is configured).
    pub store: String,
}

/// Locks the orders of `ids` (sorted, without repeats) that are here, in id order, until
/// the transaction ends; an id that is not here is left out.
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
        })
        .collect())
}

/// What an order was paid with besides its payment, and by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenders {
    /// None for a guest.
    pub customer_id: Option<String>,
    /// Paid with gift cards (`sales_orders.gift_card_amount`).
    pub gift_card_amount: Decimal,
    /// Paid with store credit (`sales_orders.store_credit_amount`).
    pub store_credit_amount: Decimal,
}

/// The tenders of an order that is here (an error when it is not: callers hold its lock).
pub async fn tenders(
    tx: &Transaction<'_>,
    order_id: &str,
) -> Result<Tenders, tokio_postgres::Error> {
    let statement = tx.prepare_cached(TENDERS).await?;
    let row = tx.query_one(&statement, &[&order_id]).await?;
    Ok(Tenders {
        customer_id: row.get(0),
        gift_card_amount: row.get(1),
        store_credit_amount: row.get(2),
    })
}

/// Counts a message about an order of another sales channel in `sales_foreign_orders`,
/// under the channel it named (`''` when it named none).
pub async fn record_foreign_order(
    tx: &Transaction<'_>,
    order_id: &str,
    channel: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    let record = tx.prepare_cached(FOREIGN_ORDER).await?;
    tx.execute(&record, &[&order_id, &channel.unwrap_or("")])
        .await?;
    Ok(())
}
