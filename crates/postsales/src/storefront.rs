//! Requesting a return as a storefront does, and listing returns: what `omsc returns` and
//! the simulator share. It lives in the post-sales module because the module holds the SQL
//! of its own tables; the module's workers never call it.
//!
//! A return is requested by writing every row of it in one transaction; at `COMMIT` the
//! database checks that every line has shipped and is in no other open return, and queues
//! the return's authorization for the OMS (docs/schema.md, "Requesting a return").

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

/// A return as the storefront writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReturnRequest {
    /// The return's id (the RMA).
    pub id: String,
    pub order_id: String,
    /// When the customer asked; the commit's time when `None`.
    pub requested_at: Option<DateTime<Utc>>,
    pub requested_by: Option<String>,
    pub source_id: Option<String>,
    pub tracking_number: Option<String>,
    pub tracking_carrier: Option<String>,
    /// `(code, value)` custom attributes of the return.
    pub attributes: Vec<(String, String)>,
    pub lines: Vec<ReturnLineRequest>,
}

/// One returned unit: an order line as exported (`postsales_returnable_lines`).
#[derive(Debug, Clone, PartialEq)]
pub struct ReturnLineRequest {
    pub line_id: String,
    pub reason: String,
    pub reason_description: String,
    pub condition: Option<String>,
}

/// Writes a return in one transaction, as a storefront does. The commit checks it.
pub async fn request(
    client: &tokio_postgres::Client,
    request: &ReturnRequest,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("BEGIN").await?;
    match insert(client, request).await {
        Ok(()) => client.batch_execute("COMMIT").await,
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

async fn insert(
    client: &tokio_postgres::Client,
    r: &ReturnRequest,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO postsales_returns (id, order_id, requested_at, requested_by, source_id,
                                            tracking_number, tracking_carrier)
             VALUES ($1, $2, coalesce($3, now()), $4, $5, $6, $7)",
            &[
                &r.id,
                &r.order_id,
                &r.requested_at,
                &r.requested_by,
                &r.source_id,
                &r.tracking_number,
                &r.tracking_carrier,
            ],
        )
        .await?;
    for line in &r.lines {
        client
            .execute(
                "INSERT INTO postsales_return_lines (return_id, line_id, reason,
                                                     reason_description, condition)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &r.id,
                    &line.line_id,
                    &line.reason,
                    &line.reason_description,
                    &line.condition,
                ],
            )
            .await?;
    }
    for (code, value) in &r.attributes {
        client
            .execute(
                "INSERT INTO postsales_return_attributes (return_id, code, value)
                 VALUES ($1, $2, $3)",
                &[&r.id, code, value],
            )
            .await?;
    }
    Ok(())
}

/// One return as `omsc returns list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReturnSummary {
    pub id: String,
    pub order_id: String,
    pub origin: String,
    pub state: String,
    pub oms_status: Option<String>,
    pub lines: i64,
    pub received_at: Option<DateTime<Utc>>,
    /// What the credit memos of the return gave back.
    pub refunded: Decimal,
}

const LIST: &str = "
    SELECT r.id, r.order_id, r.origin, r.state, r.oms_status,
           (SELECT count(*) FROM postsales_return_lines l WHERE l.return_id = r.id),
           r.received_at,
           coalesce((SELECT sum(m.grand_total) FROM postsales_credit_memos m
                      WHERE m.rma = r.id AND m.order_id = r.order_id), 0)
      FROM postsales_returns r
     WHERE $1::text IS NULL OR r.order_id = $1
     ORDER BY r.requested_at DESC, r.id
     LIMIT $2";

/// The newest returns, of one order or of all.
pub async fn list(
    client: &tokio_postgres::Client,
    order_id: Option<&str>,
    limit: i64,
) -> Result<Vec<ReturnSummary>, tokio_postgres::Error> {
    Ok(client
        .query(LIST, &[&order_id, &limit])
        .await?
        .iter()
        .map(|r| ReturnSummary {
            id: r.get(0),
            order_id: r.get(1),
            origin: r.get(2),
            state: r.get(3),
            oms_status: r.get(4),
            lines: r.get(5),
            received_at: r.get(6),
            refunded: r.get(7),
        })
        .collect())
}
