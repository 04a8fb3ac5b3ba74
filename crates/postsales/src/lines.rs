//! The exported lines of an order, as post-sales messages name them. Read from the sales
//! module's tables (`sales_order_lines`, `sales_shipment_lines`); post-sales never writes
//! them.

use deadpool_postgres::Transaction;
use protocol::sales::LineRef;
use runtime::Outcome;
use rust_decimal::Decimal;

const LINES: &str = "
    SELECT l.line_id, l.line_number, l.sku, l.gross_amount,
           EXISTS (SELECT 1 FROM sales_shipment_lines s
                    WHERE s.order_id = l.order_id AND s.line_id = l.line_id)
      FROM sales_order_lines l WHERE l.order_id = $1 ORDER BY l.line_number";

#[derive(Debug, Clone)]
pub struct OrderLine {
    pub line_id: String,
    pub line_number: i32,
    pub sku: String,
    /// What the customer paid for the line, tax included: the most it can be refunded.
    pub gross_amount: Decimal,
    pub shipped: bool,
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
        })
        .collect())
}

/// Finds the lines a message names, in the message's order. A line that is not there makes
/// the message fail: retried when the order has no lines yet (its export has not been
/// built), dead-lettered when the order has lines and this one is not among them.
pub fn resolve<'l>(
    lines: &'l [OrderLine],
    order_id: &str,
    refs: impl IntoIterator<Item = &'l LineRef>,
) -> Result<Vec<&'l OrderLine>, Outcome> {
    let mut found = Vec::new();
    for r in refs {
        let line = lines.iter().find(|l| match r {
            LineRef::Id(id) => &l.line_id == id,
            LineRef::Number(n) => i64::from(l.line_number) == *n,
        });
        match line {
            Some(line) => found.push(line),
            None if lines.is_empty() => {
                return Err(Outcome::Retry(format!(
                    "order {order_id} has not been exported yet, so it has no line {r}"
                )));
            }
            None => {
                return Err(Outcome::Reject(format!(
                    "order {order_id} has no line with {r}: the message names an order line this Commerce never exported"
                )));
            }
        }
    }
    Ok(found)
}
