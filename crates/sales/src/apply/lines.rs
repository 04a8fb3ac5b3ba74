//! The exported lines of an order, as inbound messages name them.

use deadpool_postgres::Transaction;
use protocol::sales::LineRef;
use runtime::Outcome;

const LINES: &str = "
    SELECT line_id, line_number, product_type, sku, cancelled_at IS NOT NULL
      FROM sales_order_lines WHERE order_id = $1 ORDER BY line_number";

#[derive(Debug, Clone)]
pub struct LineInfo {
    pub line_id: String,
    pub line_number: i32,
    pub product_type: String,
    pub sku: String,
    pub cancelled: bool,
}

impl LineInfo {
    pub fn is_shipping(&self) -> bool {
        self.product_type == protocol::sales::product_types::SHIPPING
    }
}

pub async fn load(
    tx: &Transaction<'_>,
    order_id: &str,
) -> Result<Vec<LineInfo>, tokio_postgres::Error> {
    let statement = tx.prepare_cached(LINES).await?;
    Ok(tx
        .query(&statement, &[&order_id])
        .await?
        .iter()
        .map(|r| LineInfo {
            line_id: r.get(0),
            line_number: r.get(1),
            product_type: r.get(2),
            sku: r.get(3),
            cancelled: r.get(4),
        })
        .collect())
}

/// An exported order line as a module reads it: what a message may name it by.
pub trait NamedLine {
    fn line_id(&self) -> &str;
    fn line_number(&self) -> i32;
}

impl NamedLine for LineInfo {
    fn line_id(&self) -> &str {
        &self.line_id
    }
    fn line_number(&self) -> i32 {
        self.line_number
    }
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
