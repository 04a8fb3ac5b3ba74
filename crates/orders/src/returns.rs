//! A requested return with what it needs of its order, for the return's authorization.
//!
//! These statements join the post-sales module's return rows (read by the return id it
//! passes, never written here) with the order's: one round trip each, as the authorization
//! has always been read.

use chrono::{DateTime, Utc};
use deadpool_postgres::Client;

const RETURN: &str = "
    SELECT r.id, r.order_id, o.store, r.requested_at, r.requested_by, r.source_id,
           r.tracking_number, r.tracking_url, r.tracking_label_url, r.tracking_carrier
      FROM postsales_returns r JOIN sales_orders o ON o.id = r.order_id
     WHERE r.id = $1";

const LINES: &str = "
    SELECT rl.line_id, l.line_number, l.sku, rl.reason, rl.reason_description, rl.condition,
           rl.condition_description
      FROM postsales_return_lines rl
      JOIN sales_order_lines l ON l.order_id = rl.order_id AND l.line_id = rl.line_id
     WHERE rl.return_id = $1 ORDER BY l.line_number";

/// A requested return (`postsales_returns`) with its order's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnOfOrder {
    pub id: String,
    pub order_id: String,
    /// The order's store: the OMS sales channel unless one is configured.
    pub store: String,
    pub requested_at: DateTime<Utc>,
    pub requested_by: Option<String>,
    pub source_id: Option<String>,
    pub tracking_number: Option<String>,
    pub tracking_url: Option<String>,
    pub tracking_label_url: Option<String>,
    pub tracking_carrier: Option<String>,
}

/// A returned line (`postsales_return_lines`) with its order line's number and SKU, as
/// they were exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnedLine {
    pub line_id: String,
    pub line_number: i32,
    pub sku: String,
    pub reason: String,
    pub reason_description: String,
    pub condition: Option<String>,
    pub condition_description: Option<String>,
}

/// The return `return_id` with its order's store; `None` when there is no such return.
pub async fn load(
    client: &Client,
    return_id: &str,
) -> Result<Option<ReturnOfOrder>, tokio_postgres::Error> {
    let statement = client.prepare_cached(RETURN).await?;
    Ok(client
        .query_opt(&statement, &[&return_id])
        .await?
        .map(|r| ReturnOfOrder {
            id: r.get(0),
            order_id: r.get(1),
            store: r.get(2),
            requested_at: r.get(3),
            requested_by: r.get(4),
            source_id: r.get(5),
            tracking_number: r.get(6),
            tracking_url: r.get(7),
            tracking_label_url: r.get(8),
            tracking_carrier: r.get(9),
        }))
}

/// The lines of return `return_id`, in order line number order.
pub async fn lines(
    client: &Client,
    return_id: &str,
) -> Result<Vec<ReturnedLine>, tokio_postgres::Error> {
    let statement = client.prepare_cached(LINES).await?;
    Ok(client
        .query(&statement, &[&return_id])
        .await?
        .iter()
        .map(|l| ReturnedLine {
            line_id: l.get(0),
            line_number: l.get(1),
            sku: l.get(2),
            reason: l.get(3),
            reason_description: l.get(4),
            condition: l.get(5),
            condition_description: l.get(6),
        })
        .collect())
}
