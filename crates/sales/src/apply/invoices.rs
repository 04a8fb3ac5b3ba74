//! Captures become invoices: one per capture (the lines whose payment one update reports
//! captured, grouped by the capture's date), each line invoiced once, and the shipping line
//! with the capture that leaves nothing else to invoice.
//!
//! - A line's capture is dated by the earliest capture status reported for it: the OMS
//!   requests a capture (`CAPTURE_REQUESTED` at D) and reports it done (`CAPTURED` at
//!   D + 7 s); whichever arrives first makes the invoice, and the other moves its date to D
//!   or leaves it there. A capture without any date is dated when it is recorded, until a
//!   dated report of it says earlier.
//! - An invoice is named by the first line it was made for (`first_line_id`: a line is
//!   invoiced once), not by its date: two captures of the same date are two invoices.
//! - Each line's amounts are the ones the OMS captured (`lines[].payments[]` gross, net and
//!   tax) when it sends them, the exported line's otherwise.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use protocol::sales::PaymentAmounts;
use rust_decimal::Decimal;

use super::lines::LineInfo;

/// One line's capture as an update reports it.
#[derive(Debug, Clone)]
pub struct Capture<'a> {
    pub line: &'a LineInfo,
    pub date: Option<DateTime<Utc>>,
    pub amounts: Option<PaymentAmounts>,
}

const INVOICED: &str = "SELECT line_id, invoice_id FROM sales_invoice_lines WHERE order_id = $1";

const INVOICE: &str = "
    INSERT INTO sales_invoices (order_id, captured_at, first_line_id)
    VALUES ($1, coalesce($2, now()), $3)
    RETURNING id";

const INVOICE_LINES: &str = "
    WITH added AS (
        INSERT INTO sales_invoice_lines (order_id, line_id, invoice_id, amount, net_amount,
                                         tax_amount)
        SELECT l.order_id, l.line_id, $2, coalesce(u.gross, l.gross_amount),
               coalesce(u.net, l.net_amount), coalesce(u.tax, l.tax_amount)
          FROM unnest($3::text[], $4::numeric[], $5::numeric[], $6::numeric[])
               AS u(line_id, gross, net, tax)
          JOIN sales_order_lines l ON l.order_id = $1 AND l.line_id = u.line_id
        ON CONFLICT (order_id, line_id) DO NOTHING
        RETURNING amount, tax_amount
    )
    UPDATE sales_invoices
       SET grand_total = grand_total + (SELECT coalesce(sum(amount), 0) FROM added),
           tax_amount = tax_amount + (SELECT coalesce(sum(tax_amount), 0) FROM added)
     WHERE id = $2";

/// An earlier capture report of lines already invoiced dates their invoice back.
const EARLIER_CAPTURE: &str = "
    UPDATE sales_invoices i SET captured_at = u.date
      FROM (SELECT id, min(date) AS date FROM unnest($2::int8[], $3::timestamptz[]) AS c(id, date)
             GROUP BY id) u
     WHERE i.order_id = $1 AND i.id = u.id AND i.captured_at > u.date";

const LATEST_INVOICE: &str = "
    SELECT id FROM sales_invoices WHERE order_id = $1 ORDER BY captured_at DESC, id DESC LIMIT 1";

/// Records the captures of one update (lines other than shipping). True if an invoice was
/// made, added to or dated back.
pub async fn record(
    tx: &Transaction<'_>,
    order_id: &str,
    lines: &[LineInfo],
    captured: &[Capture<'_>],
) -> Result<bool, tokio_postgres::Error> {
    if captured.is_empty() {
        return Ok(false);
    }
    let invoiced = invoiced(tx, order_id).await?;
    let mut changed = false;

    let (earlier_ids, earlier_dates): (Vec<i64>, Vec<DateTime<Utc>>) = captured
        .iter()
        .filter_map(|c| Some((*invoiced.get(&c.line.line_id)?, c.date?)))
        .unzip();
    if !earlier_ids.is_empty() {
        let statement = tx.prepare_cached(EARLIER_CAPTURE).await?;
        changed |= tx
            .execute(&statement, &[&order_id, &earlier_ids, &earlier_dates])
            .await?
            > 0;
    }

    let mut captures: BTreeMap<Option<DateTime<Utc>>, Vec<&Capture<'_>>> = BTreeMap::new();
    for capture in captured {
        if !invoiced.contains_key(&capture.line.line_id) {
            captures.entry(capture.date).or_default().push(capture);
        }
    }
    if captures.is_empty() {
        return Ok(changed);
    }
    let invoice = tx.prepare_cached(INVOICE).await?;
    for (date, group) in &captures {
        let first_line = group
            .iter()
            .map(|c| c.line.line_id.as_str())
            .min()
            .unwrap_or_default();
        let id: i64 = tx
            .query_one(&invoice, &[&order_id, date, &first_line])
            .await?
            .get(0);
        add_lines(tx, order_id, id, group).await?;
    }
    settle_shipping(tx, order_id, lines).await?;
    Ok(true)
}

async fn add_lines(
    tx: &Transaction<'_>,
    order_id: &str,
    invoice_id: i64,
    lines: &[&Capture<'_>],
) -> Result<u64, tokio_postgres::Error> {
    let ids: Vec<&str> = lines.iter().map(|c| c.line.line_id.as_str()).collect();
    let amount = |pick: fn(&PaymentAmounts) -> Decimal| -> Vec<Option<Decimal>> {
        lines.iter().map(|c| c.amounts.as_ref().map(pick)).collect()
    };
    let (gross, net, tax) = (amount(|a| a.gross), amount(|a| a.net), amount(|a| a.tax));
    let add = tx.prepare_cached(INVOICE_LINES).await?;
    tx.execute(&add, &[&order_id, &invoice_id, &ids, &gross, &net, &tax])
        .await
}

/// Once every line but the shipping is invoiced or cancelled, the shipping line joins the
/// latest invoice, at its exported amounts.
pub async fn settle_shipping(
    tx: &Transaction<'_>,
    order_id: &str,
    lines: &[LineInfo],
) -> Result<bool, tokio_postgres::Error> {
    let invoiced = invoiced(tx, order_id).await?;
    let open = lines
        .iter()
        .any(|l| !l.is_shipping() && !l.cancelled && !invoiced.contains_key(&l.line_id));
    let shipping: Vec<Capture<'_>> = lines
        .iter()
        .filter(|l| l.is_shipping() && !invoiced.contains_key(&l.line_id))
        .map(|line| Capture {
            line,
            date: None,
            amounts: None,
        })
        .collect();
    if open || shipping.is_empty() {
        return Ok(false);
    }
    let latest = tx.prepare_cached(LATEST_INVOICE).await?;
    let Some(row) = tx.query_opt(&latest, &[&order_id]).await? else {
        return Ok(false);
    };
    let id: i64 = row.get(0);
    add_lines(tx, order_id, id, &shipping.iter().collect::<Vec<_>>()).await?;
    Ok(true)
}

/// The order's invoiced lines, each with its invoice.
async fn invoiced(
    tx: &Transaction<'_>,
    order_id: &str,
) -> Result<HashMap<String, i64>, tokio_postgres::Error> {
    let statement = tx.prepare_cached(INVOICED).await?;
    Ok(tx
        .query(&statement, &[&order_id])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}
