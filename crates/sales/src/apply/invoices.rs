//! Captures become invoices: one per capture (the lines whose payment the OMS captured at
//! one moment), each line invoiced once, and the shipping line with the capture that
//! leaves nothing else to invoice.
//!
//! A capture is identified by the order and its date (the line payment's `status_date`), so
//! the invoices are the same whatever order the updates arrive in: an update that reports
//! two earlier captures at once still makes two invoices.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;

use super::lines::LineInfo;

const INVOICED: &str = "SELECT line_id FROM sales_invoice_lines WHERE order_id = $1";

const INVOICE: &str = "
    INSERT INTO sales_invoices (order_id, captured_at) VALUES ($1, $2)
    ON CONFLICT (order_id, captured_at) DO UPDATE SET captured_at = EXCLUDED.captured_at
    RETURNING id";

const INVOICE_LINES: &str = "
    WITH added AS (
        INSERT INTO sales_invoice_lines (order_id, line_id, invoice_id, amount)
        SELECT l.order_id, l.line_id, $2, l.gross_amount
          FROM sales_order_lines l
         WHERE l.order_id = $1 AND l.line_id = ANY ($3::text[])
        ON CONFLICT (order_id, line_id) DO NOTHING
        RETURNING amount
    )
    UPDATE sales_invoices
       SET grand_total = grand_total + (SELECT coalesce(sum(amount), 0) FROM added)
     WHERE id = $2";

const LATEST_INVOICE: &str = "
    SELECT id FROM sales_invoices WHERE order_id = $1 ORDER BY captured_at DESC LIMIT 1";

/// Records the captures of one update: `captured` are the lines (not shipping) whose payment
/// the update reports captured, with the capture's date. True if an invoice was added to.
pub async fn record(
    tx: &Transaction<'_>,
    order_id: &str,
    lines: &[LineInfo],
    captured: &[(&LineInfo, DateTime<Utc>)],
) -> Result<bool, tokio_postgres::Error> {
    if captured.is_empty() {
        return Ok(false);
    }
    let invoiced = invoiced(tx, order_id).await?;
    let mut captures: BTreeMap<DateTime<Utc>, Vec<&str>> = BTreeMap::new();
    for (line, date) in captured {
        if !invoiced.contains(&line.line_id) {
            captures.entry(*date).or_default().push(&line.line_id);
        }
    }
    if captures.is_empty() {
        return Ok(false);
    }
    let invoice = tx.prepare_cached(INVOICE).await?;
    let add = tx.prepare_cached(INVOICE_LINES).await?;
    for (date, line_ids) in &captures {
        let id: i64 = tx.query_one(&invoice, &[&order_id, date]).await?.get(0);
        tx.execute(&add, &[&order_id, &id, line_ids]).await?;
    }
    settle_shipping(tx, order_id, lines).await?;
    Ok(true)
}

/// Once every line but the shipping is invoiced or cancelled, the shipping line joins the
/// latest invoice.
pub async fn settle_shipping(
    tx: &Transaction<'_>,
    order_id: &str,
    lines: &[LineInfo],
) -> Result<bool, tokio_postgres::Error> {
    let invoiced = invoiced(tx, order_id).await?;
    let open = lines
        .iter()
        .any(|l| !l.is_shipping() && !l.cancelled && !invoiced.contains(&l.line_id));
    let shipping: Vec<&str> = lines
        .iter()
        .filter(|l| l.is_shipping() && !invoiced.contains(&l.line_id))
        .map(|l| l.line_id.as_str())
        .collect();
    if open || shipping.is_empty() {
        return Ok(false);
    }
    let latest = tx.prepare_cached(LATEST_INVOICE).await?;
    let Some(row) = tx.query_opt(&latest, &[&order_id]).await? else {
        return Ok(false);
    };
    let id: i64 = row.get(0);
    let add = tx.prepare_cached(INVOICE_LINES).await?;
    tx.execute(&add, &[&order_id, &id, &shipping]).await?;
    Ok(true)
}

async fn invoiced(
    tx: &Transaction<'_>,
    order_id: &str,
) -> Result<HashSet<String>, tokio_postgres::Error> {
    let statement = tx.prepare_cached(INVOICED).await?;
    Ok(tx
        .query(&statement, &[&order_id])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
