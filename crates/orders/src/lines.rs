//! The exported lines of an order, as inbound messages name them (by line id or line number).

use deadpool_postgres::Transaction;
use protocol::sales::LineRef;
use runtime::Outcome;
use rust_decimal::Decimal;

/// An exported order line as a module reads it: what a message may name it by.
pub trait NamedLine {
    fn line_id(&self) -> &str;
    fn line_number(&self) -> i32;
}

/// Finds the lines a message names, in the message's order. A line that is not there makes
/// the message fail: retried when the order has no lines yet (its export has not been
/// built), dead-lettered when the order has lines and this one is not among them. Shared by
/// the sales and post-sales modules.
pub fn resolve<'l, L: NamedLine>(
    lines: &'l [L],
    order_id: &str,
    refs: impl IntoIterator<Item = &'l LineRef>,
) -> Result<Vec<&'l L>, Outcome> {
    let mut found = Vec::new();
    for r in refs {
        let line = lines.iter().find(|l| match r {
            LineRef::Id(id) => l.line_id() == id,
            LineRef::Number(n) => i64::from(l.line_number()) == *n,
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

const LINES: &str = "
    SELECT l.line_id, l.line_number, l.sku, l.gross_amount,
           EXISTS (SELECT 1 FROM sales_shipment_lines s
                    WHERE s.order_id = l.order_id AND s.line_id = l.line_id),
           l.item_id
      FROM sales_order_lines l WHERE l.order_id = $1 ORDER BY l.line_number";

/// An exported line with what a return or a refund needs of it.
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

/// The order's exported lines in line number order (none before its export is built).
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
