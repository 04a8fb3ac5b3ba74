//! `order_management.created` and `.updated`: the order's status, its lines' statuses and
//! payment statuses, each a compare-and-set on its `status_date` (an older update never
//! overwrites a newer one; equal dates: the first write wins), then the captures.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use futures::FutureExt as _;
use protocol::sales::{OrderUpdate, StatusChange};
use runtime::Outcome;
use tokio_postgres::types::ToSql;

use super::{invoices, lines};
use crate::status::{commerce_state, is_capture};

const ACCEPTED: &str = "
    UPDATE sales_orders SET oms_accepted_at = now(), updated_at = now()
     WHERE id = $1 AND oms_accepted_at IS NULL";

const ORDER_STATUS: &str = "
    UPDATE sales_orders
       SET oms_status = $2, oms_status_reason = $3, oms_status_date = $4, state = $5,
           updated_at = now()
     WHERE id = $1 AND (oms_status_date IS NULL OR oms_status_date < $4)";

const LINE_STATUS: &str = "
    UPDATE sales_order_lines l
       SET status = u.status, status_reason = u.reason, status_date = u.date
      FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[])
           AS u(line_id, status, reason, date)
     WHERE l.order_id = $1 AND l.line_id = u.line_id
       AND (l.status_date IS NULL OR l.status_date < u.date)";

const PAYMENT_STATUS: &str = "
    UPDATE sales_order_lines l
       SET payment_status = u.status, payment_status_date = u.date
      FROM unnest($2::text[], $3::text[], $4::timestamptz[]) AS u(line_id, status, date)
     WHERE l.order_id = $1 AND l.line_id = u.line_id
       AND (l.payment_status_date IS NULL OR l.payment_status_date < u.date)";

/// Applies a `created` (`accepted`: the OMS took the order) or an `updated`.
pub async fn apply(
    tx: &Transaction<'_>,
    update: &OrderUpdate,
    accepted: bool,
) -> Result<Outcome, tokio_postgres::Error> {
    let order_id = update.order_id.as_str();
    let lines = lines::load(tx, order_id).await?;
    let named = match lines::resolve(&lines, order_id, update.lines.iter().map(|l| &l.line)) {
        Ok(named) => named,
        Err(outcome) => return Ok(outcome),
    };
    // One change per line: the newest, when a message names a line twice.
    let mut line_status: BTreeMap<&str, &StatusChange> = BTreeMap::new();
    let mut payment_status: BTreeMap<&str, &StatusChange> = BTreeMap::new();
    let mut captured: Vec<(&lines::LineInfo, DateTime<Utc>)> = Vec::new();
    for (line, info) in update.lines.iter().zip(&named) {
        if let Some(s) = &line.status {
            newest(&mut line_status, &info.line_id, s);
        }
        if let Some(p) = &line.payment {
            newest(&mut payment_status, &info.line_id, p);
            if is_capture(&p.status)
                && !info.is_shipping()
                && !captured.iter().any(|(l, _)| l.line_id == info.line_id)
            {
                captured.push((info, p.date));
            }
        }
    }

    // The four updates touch different columns and do not read each other's results: they
    // leave in one round trip. Every statement is prepared first, so none of them waits on a
    // preparation and they reach the server in this order.
    let accept = tx.prepare_cached(ACCEPTED).await?;
    let order_status = tx.prepare_cached(ORDER_STATUS).await?;
    let line_statement = tx.prepare_cached(LINE_STATUS).await?;
    let payment_statement = tx.prepare_cached(PAYMENT_STATUS).await?;
    let state = update
        .status
        .as_ref()
        .map(|status| commerce_state(&status.status, status.reason.as_deref()));
    let line_ids: Vec<&str> = line_status.keys().copied().collect();
    let line_statuses: Vec<&str> = line_status.values().map(|s| s.status.as_str()).collect();
    let line_reasons: Vec<Option<&str>> =
        line_status.values().map(|s| s.reason.as_deref()).collect();
    let line_dates: Vec<DateTime<Utc>> = line_status.values().map(|s| s.date).collect();
    let payment_ids: Vec<&str> = payment_status.keys().copied().collect();
    let payment_statuses: Vec<&str> = payment_status.values().map(|s| s.status.as_str()).collect();
    let payment_dates: Vec<DateTime<Utc>> = payment_status.values().map(|s| s.date).collect();
    let accept_params: [&(dyn ToSql + Sync); 1] = [&order_id];
    let status_params: Option<[&(dyn ToSql + Sync); 5]> = match (&update.status, &state) {
        (Some(status), Some(state)) => Some([
            &order_id,
            &status.status,
            &status.reason,
            &status.date,
            state,
        ]),
        _ => None,
    };
    let line_params: [&(dyn ToSql + Sync); 5] = [
        &order_id,
        &line_ids,
        &line_statuses,
        &line_reasons,
        &line_dates,
    ];
    let payment_params: [&(dyn ToSql + Sync); 4] =
        [&order_id, &payment_ids, &payment_statuses, &payment_dates];
    let writes = [
        accepted.then(|| tx.execute(&accept, &accept_params).boxed()),
        status_params
            .as_ref()
            .map(|params| tx.execute(&order_status, params).boxed()),
        (!line_ids.is_empty()).then(|| tx.execute(&line_statement, &line_params).boxed()),
        (!payment_ids.is_empty()).then(|| tx.execute(&payment_statement, &payment_params).boxed()),
    ];
    let mut changed = futures::future::try_join_all(writes.into_iter().flatten())
        .await?
        .iter()
        .any(|&rows| rows > 0);
    changed |= invoices::record(tx, order_id, &lines, &captured).await?;
    Ok(if changed {
        Outcome::Applied
    } else {
        Outcome::Stale
    })
}

fn newest<'a>(map: &mut BTreeMap<&'a str, &'a StatusChange>, line: &'a str, s: &'a StatusChange) {
    match map.get(line) {
        Some(existing) if existing.date >= s.date => {}
        _ => {
            map.insert(line, s);
        }
    }
}
