//! `order_management.created` and `.updated`: the order's status, its lines' statuses and
//! payment statuses, each a compare-and-set on its version ([`crate::version`]: the
//! `status_date`, then the status's place in the lifecycle, so an older update never
//! overwrites a newer one, and updates of equal dates or without dates end at the furthest
//! status whatever their order of arrival), then the captures.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use futures::FutureExt as _;
use protocol::sales::{OrderUpdate, StatusChange};
use runtime::Outcome;
use tokio_postgres::types::ToSql;

use super::{invoices, lines};
use crate::status::{commerce_state, is_capture, lifecycle_rank, payment_rank};
use crate::version::Version;

const ACCEPTED: &str = "
    UPDATE sales_orders SET oms_accepted_at = now(), updated_at = now()
     WHERE id = $1 AND oms_accepted_at IS NULL";

const ORDER_STATUS: &str = "
    UPDATE sales_orders
       SET oms_status = $2, oms_status_reason = $3, oms_status_date = $4, oms_status_rank = $5,
           state = $6, updated_at = now()
     WHERE id = $1
       AND omsc_status_supersedes($4, $5, $2, $3,
                                  oms_status_date, oms_status_rank, oms_status, oms_status_reason)";

const LINE_STATUS: &str = "
    UPDATE sales_order_lines l
       SET status = u.status, status_reason = u.reason, status_date = u.date,
           status_rank = u.rank
      FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::int2[])
           AS u(line_id, status, reason, date, rank)
     WHERE l.order_id = $1 AND l.line_id = u.line_id
       AND omsc_status_supersedes(u.date, u.rank, u.status, u.reason,
                                  l.status_date, l.status_rank, l.status, l.status_reason)";

const PAYMENT_STATUS: &str = "
    UPDATE sales_order_lines l
       SET payment_status = u.status, payment_status_date = u.date, payment_status_rank = u.rank
      FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::int2[])
           AS u(line_id, status, date, rank)
     WHERE l.order_id = $1 AND l.line_id = u.line_id
       AND omsc_status_supersedes(u.date, u.rank, u.status, NULL,
                                  l.payment_status_date, l.payment_status_rank, l.payment_status,
                                  NULL)";

/// Which of the two methods an order update came in: they carry the same statuses, and only
/// the first also says that the OMS took the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// `order_management.created`: the OMS accepted the order, which sets
    /// `sales_orders.oms_accepted_at` once.
    Created,
    /// `order_management.updated`: statuses only.
    Updated,
}

/// Applies a `created` or an `updated`.
pub async fn apply(
    tx: &Transaction<'_>,
    update: &OrderUpdate,
    kind: UpdateKind,
) -> Result<Outcome, tokio_postgres::Error> {
    let order_id = update.order_id.as_str();
    let lines = lines::load(tx, order_id).await?;
    let named = match lines::resolve(&lines, order_id, update.lines.iter().map(|l| &l.line)) {
        Ok(named) => named,
        Err(outcome) => return Ok(outcome),
    };
    // One change per line: the newest, when a message names a line twice.
    let mut line_status: BTreeMap<&str, Versioned<'_>> = BTreeMap::new();
    let mut payment_status: BTreeMap<&str, Versioned<'_>> = BTreeMap::new();
    let mut captured: Vec<invoices::Capture<'_>> = Vec::new();
    for (line, info) in update.lines.iter().zip(&named) {
        if let Some(s) = &line.status {
            newest(
                &mut line_status,
                &info.line_id,
                s,
                lifecycle_rank(&s.status),
            );
        }
        if let Some(p) = &line.payment {
            newest(
                &mut payment_status,
                &info.line_id,
                p,
                payment_rank(&p.status),
            );
            if is_capture(&p.status)
                && !info.is_shipping()
                && !captured.iter().any(|c| c.line.line_id == info.line_id)
            {
                captured.push(invoices::Capture {
                    line: info,
                    date: p.date,
                    amounts: line.payment_amounts,
                });
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
    let order_rank = update.status.as_ref().map(|s| lifecycle_rank(&s.status));
    let line_statuses: Vec<&str> = line_status
        .values()
        .map(|s| s.change.status.as_str())
        .collect();
    let line_reasons: Vec<Option<&str>> = line_status
        .values()
        .map(|s| s.change.reason.as_deref())
        .collect();
    let line_dates: Vec<Option<DateTime<Utc>>> =
        line_status.values().map(|s| s.version.date).collect();
    let line_ranks: Vec<i16> = line_status.values().map(|s| s.version.rank).collect();
    let payment_ids: Vec<&str> = payment_status.keys().copied().collect();
    let payment_statuses: Vec<&str> = payment_status
        .values()
        .map(|s| s.change.status.as_str())
        .collect();
    let payment_dates: Vec<Option<DateTime<Utc>>> =
        payment_status.values().map(|s| s.version.date).collect();
    let payment_ranks: Vec<i16> = payment_status.values().map(|s| s.version.rank).collect();
    let accept_params: [&(dyn ToSql + Sync); 1] = [&order_id];
    let status_params: Option<[&(dyn ToSql + Sync); 6]> =
        match (&update.status, &state, &order_rank) {
            (Some(status), Some(state), Some(rank)) => Some([
                &order_id,
                &status.status,
                &status.reason,
                &status.date,
                rank,
                state,
            ]),
            _ => None,
        };
    let line_params: [&(dyn ToSql + Sync); 6] = [
        &order_id,
        &line_ids,
        &line_statuses,
        &line_reasons,
        &line_dates,
        &line_ranks,
    ];
    let payment_params: [&(dyn ToSql + Sync); 5] = [
        &order_id,
        &payment_ids,
        &payment_statuses,
        &payment_dates,
        &payment_ranks,
    ];
    let writes = [
        (kind == UpdateKind::Created).then(|| tx.execute(&accept, &accept_params).boxed()),
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

/// A status change with its version.
struct Versioned<'a> {
    change: &'a StatusChange,
    version: Version,
}

fn newest<'a>(
    map: &mut BTreeMap<&'a str, Versioned<'a>>,
    line: &'a str,
    change: &'a StatusChange,
    rank: i16,
) {
    let version = Version::new(change.date, rank, &change.status, change.reason.as_deref());
    match map.get(line) {
        Some(existing) if !version.supersedes(&existing.version) => {}
        _ => {
            map.insert(line, Versioned { change, version });
        }
    }
}
