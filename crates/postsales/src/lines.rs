//! The exported lines of an order, as post-sales messages name them. Read from the sales
//! module's tables (`sales_order_lines`, `sales_shipment_lines`); post-sales never writes
//! them.

use deadpool_postgres::Transaction;
use rust_decimal::Decimal;
use sales::apply::lines::NamedLine;

const LINES: &str = "
    SELECT l.line_id, l.line_number, l.sku, l.gross_amount,
           EXISTS (SELECT 1 FROM sales_shipment_lines s
                    WHERE s.order_id = l.order_id AND s.line_id = l.line_id),
           l.item_id
      FROM sales_order_lines l WHERE l.order_id = $1 ORDER BY l.line_number";

#[derive(Debug, Clone)]
pub struct OrderLine {
    pub line_id: String,
    pub line_number: i32,
    pub sku: String,
    /// What the customer paid for the line, tax included: the most it can be refunded.
    pub gross_amount: Decimal,
    pub shipped: bool,
    /// The storefront's order item the line is a unit of (none for the shipping line).
    pub item_id: Option<i64>,
}

pub async fn load(
    tx: &Transaction<'_>,
    order_id: &str,
) -> Result<Vec<OrderLine>, tokio_postgres::Error> {
    let statement = tx.prepare_cached(LINES).await?;
    Ok(tx
        .query(&statement, &[&order_id])
        .await?
        .iter()
        .map(|r| OrderLine {
            line_id: r.get(0),
            line_number: r.get(1),
            sku: r.get(2),
            gross_amount: r.get(3),
            shipped: r.get(4),
            item_id: r.get(5),
        })
        .collect())
}

impl NamedLine for OrderLine {
    fn line_id(&self) -> &str {
        &self.line_id
    }
    fn line_number(&self) -> i32 {
        self.line_number
    }
}

/// Finds the lines a message names (the sales module's rule: retried before the order's
/// export, dead-lettered when the order has no such line).
pub use sales::apply::lines::resolve;
