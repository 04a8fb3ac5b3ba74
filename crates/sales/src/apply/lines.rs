//! The exported lines of an order, as inbound messages name them.

use deadpool_postgres::Transaction;
pub use orders::lines::{NamedLine, resolve};

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

impl NamedLine for LineInfo {
    fn line_id(&self) -> &str {
        &self.line_id
    }
    fn line_number(&self) -> i32 {
        self.line_number
    }
}
