//! `return_management.updated`, `.received` and the custom attribute updates of a return.
//!
//! A return's status is a compare-and-set on its version (the rule of the sales module's `version`: the OMS's
//! `status.date`, then the status's place in the return's lifecycle, then the status as
//! sent), and so are its lines' statuses (they take the return's date); an older update never
//! overwrites a newer one and equal dates end at the furthest status in any arrival order.
//! The tracking (which only a message that carries tracking sets) goes by the date alone:
//! equal dates keep the first write. A receipt is a fact: the earliest receipt of a line stands, whatever the order of
//! arrival. A message about a return this Commerce never requested is about one the OMS
//! created (an agent, or goods that came back unannounced): the return is recorded with
//! origin `oms` and never exported back.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use deadpool_postgres::Transaction;
use orders::lines;
use protocol::postsales::{ReturnAttributesUpdate, ReturnEvent, ReturnEventKind};
use runtime::Outcome;

use crate::status::{NO_STATUS, return_rank, return_state};

const BLIND_ID: &str = "SELECT 'blind:' || md5($1)";

const ORDER_OF_RETURN: &str = "SELECT order_id FROM postsales_returns WHERE id = $1";

const CREATE: &str = "
    INSERT INTO postsales_returns (id, order_id, origin, requested_by, source_id)
    VALUES ($1, $2, 'oms', $3, $4)";

const ADD_LINES: &str = "
    INSERT INTO postsales_return_lines (return_id, order_id, line_id, reason)
    SELECT $1, $2, l.line_id, coalesce(l.reason, '')
      FROM unnest($3::text[], $4::text[]) AS l(line_id, reason)
    ON CONFLICT (return_id, line_id) DO NOTHING";

const STATUS: &str = "
    UPDATE postsales_returns
       SET oms_status = $2, oms_status_reason = $3, oms_status_date = $4, state = $5,
           source_id = coalesce($6, source_id), oms_status_rank = $7, updated_at = now()
     WHERE id = $1
       AND omsc_status_supersedes($4, $7, $2, $3,
                                  oms_status_date, oms_status_rank, oms_status, oms_status_reason)";

const TRACKING: &str = "
    UPDATE postsales_returns
       SET tracking_number = $3, tracking_url = $4, tracking_label_url = $5,
           tracking_carrier = $6, tracking_date = $2, updated_at = now()
     WHERE id = $1 AND (tracking_date IS NULL OR tracking_date < $2)";

const LINE_STATUS: &str = "
    UPDATE postsales_return_lines l
       SET oms_status = u.status, oms_status_date = $2, oms_condition = u.condition,
           oms_status_rank = u.rank
      FROM unnest($3::text[], $4::text[], $5::text[], $6::int2[])
           AS u(line_id, status, condition, rank)
     WHERE l.return_id = $1 AND l.line_id = u.line_id
       AND omsc_status_supersedes($2, u.rank, u.status, NULL,
                                  l.oms_status_date, l.oms_status_rank, l.oms_status, NULL)";

const RECEIVED: &str = "
    UPDATE postsales_returns SET received_at = $2, updated_at = now()
     WHERE id = $1 AND (received_at IS NULL OR received_at > $2)";

const LINES_RECEIVED: &str = "
    UPDATE postsales_return_lines l
       SET received_at = $2, received_condition = u.condition
      FROM unnest($3::text[], $4::text[]) AS u(line_id, condition)
     WHERE l.return_id = $1 AND l.line_id = u.line_id
       AND (l.received_at IS NULL OR l.received_at > $2)";

const ATTRIBUTES: &str = "
    INSERT INTO postsales_return_attributes (return_id, code, value)
    SELECT $1, a.code, a.value FROM unnest($2::text[], $3::text[]) AS a(code, value)
    ON CONFLICT (return_id, code) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
     WHERE postsales_return_attributes.value IS DISTINCT FROM EXCLUDED.value";

const LINE_ATTRIBUTES: &str = "
    INSERT INTO postsales_return_line_attributes (return_id, line_id, code, value)
    SELECT $1, a.line_id, a.code, a.value
      FROM unnest($2::text[], $3::text[], $4::text[]) AS a(line_id, code, value)
    ON CONFLICT (return_id, line_id, code) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
     WHERE postsales_return_line_attributes.value IS DISTINCT FROM EXCLUDED.value";

const LINE_IN_RETURN: &str =
    "SELECT EXISTS (SELECT 1 FROM postsales_return_lines WHERE return_id = $1 AND line_id = $2)";

/// What one event says about one line of the return.
struct LineSays<'a> {
    status: Option<&'a str>,
    reason: Option<&'a str>,
    condition: Option<&'a str>,
    attributes: &'a [(String, String)],
}

/// Applies a `return_management.updated` or `.received`.
pub async fn apply_event(
    tx: &Transaction<'_>,
    event: &ReturnEvent,
) -> Result<Outcome, tokio_postgres::Error> {
    let order_id = event.order_id.as_str();
    let order_lines = lines::load(tx, order_id).await?;
    let named = match lines::resolve(&order_lines, order_id, event.lines.iter().map(|l| &l.line)) {
        Ok(named) => named,
        Err(outcome) => return Ok(outcome),
    };
    // One entry per line (the last one, when a message names a line twice).
    let mut said: BTreeMap<&str, LineSays<'_>> = BTreeMap::new();
    for (line, info) in event.lines.iter().zip(&named) {
        said.insert(
            &info.line_id,
            LineSays {
                status: line.status.as_deref(),
                reason: line.reason.as_deref(),
                condition: line.condition.as_deref(),
                attributes: &line.attributes,
            },
        );
    }

    let return_id = match &event.rma {
        Some(rma) => rma.clone(),
        None => {
            let blind = tx.prepare_cached(BLIND_ID).await?;
            tx.query_one(&blind, &[&event.content()]).await?.get(0)
        }
    };
    let of = tx.prepare_cached(ORDER_OF_RETURN).await?;
    let mut changed = false;
    match tx.query_opt(&of, &[&return_id]).await? {
        Some(row) => {
            let owner: String = row.get(0);
            if owner != order_id {
                return Ok(Outcome::Reject(format!(
                    "return {return_id} is of order {owner}, not of order {order_id}"
                )));
            }
        }
        None => {
            let create = tx.prepare_cached(CREATE).await?;
            tx.execute(
                &create,
                &[&return_id, &order_id, &event.user, &event.source_id],
            )
            .await?;
            changed = true;
        }
    }
    if !said.is_empty() {
        let ids: Vec<&str> = said.keys().copied().collect();
        let reasons: Vec<Option<&str>> = said.values().map(|l| l.reason).collect();
        let add = tx.prepare_cached(ADD_LINES).await?;
        changed |= tx
            .execute(&add, &[&return_id, &order_id, &ids, &reasons])
            .await?
            > 0;
    }
    changed |= match event.kind {
        ReturnEventKind::Updated => updated(tx, &return_id, event, &said).await?,
        ReturnEventKind::Received => received(tx, &return_id, event, &said).await?,
    };
    Ok(if changed {
        Outcome::Applied
    } else {
        Outcome::Stale
    })
}

async fn updated(
    tx: &Transaction<'_>,
    return_id: &str,
    event: &ReturnEvent,
    said: &BTreeMap<&str, LineSays<'_>>,
) -> Result<bool, tokio_postgres::Error> {
    let Some(status) = &event.status else {
        // No version: only the custom attributes, in arrival order.
        return attributes(tx, return_id, event, said).await;
    };
    let statement = tx.prepare_cached(STATUS).await?;
    let won = tx
        .execute(
            &statement,
            &[
                &return_id,
                &status.code,
                &status.reason,
                &status.date,
                &return_state(&status.code).as_str(),
                &event.source_id,
                &return_rank(&status.code),
            ],
        )
        .await?
        > 0;
    let mut changed = won;
    let t = &event.tracking;
    if t.number.is_some() || t.url.is_some() || t.label_url.is_some() || t.carrier.is_some() {
        let statement = tx.prepare_cached(TRACKING).await?;
        changed |= tx
            .execute(
                &statement,
                &[
                    &return_id,
                    &status.date,
                    &t.number,
                    &t.url,
                    &t.label_url,
                    &t.carrier,
                ],
            )
            .await?
            > 0;
    }
    let with_status: Vec<(&str, &LineSays<'_>)> = said
        .iter()
        .filter(|(_, l)| l.status.is_some())
        .map(|(id, l)| (*id, l))
        .collect();
    if !with_status.is_empty() {
        let ids: Vec<&str> = with_status.iter().map(|(id, _)| *id).collect();
        let statuses: Vec<Option<&str>> = with_status.iter().map(|(_, l)| l.status).collect();
        let conditions: Vec<Option<&str>> = with_status.iter().map(|(_, l)| l.condition).collect();
        let ranks: Vec<i16> = statuses
            .iter()
            .map(|s| s.map(return_rank).unwrap_or(NO_STATUS))
            .collect();
        let statement = tx.prepare_cached(LINE_STATUS).await?;
        changed |= tx
            .execute(
                &statement,
                &[
                    &return_id,
                    &status.date,
                    &ids,
                    &statuses,
                    &conditions,
                    &ranks,
                ],
            )
            .await?
            > 0;
    }
    // Attributes travel with the status: only the newest update's stand.
    if won {
        changed |= attributes(tx, return_id, event, said).await?;
    }
    Ok(changed)
}

async fn received(
    tx: &Transaction<'_>,
    return_id: &str,
    event: &ReturnEvent,
    said: &BTreeMap<&str, LineSays<'_>>,
) -> Result<bool, tokio_postgres::Error> {
    let at: DateTime<Utc> = event
        .received_at
        .unwrap_or_else(|| Utc::now().trunc_subsecs(6));
    let statement = tx.prepare_cached(RECEIVED).await?;
    let mut changed = tx.execute(&statement, &[&return_id, &at]).await? > 0;
    if !said.is_empty() {
        let ids: Vec<&str> = said.keys().copied().collect();
        let conditions: Vec<Option<&str>> = said.values().map(|l| l.condition).collect();
        let statement = tx.prepare_cached(LINES_RECEIVED).await?;
        changed |= tx
            .execute(&statement, &[&return_id, &at, &ids, &conditions])
            .await?
            > 0;
    }
    changed |= attributes(tx, return_id, event, said).await?;
    Ok(changed)
}

/// The return's and its lines' custom attributes of an event.
async fn attributes(
    tx: &Transaction<'_>,
    return_id: &str,
    event: &ReturnEvent,
    said: &BTreeMap<&str, LineSays<'_>>,
) -> Result<bool, tokio_postgres::Error> {
    let mut changed = false;
    if !event.attributes.is_empty() {
        changed |= header_attributes(tx, return_id, &event.attributes).await?;
    }
    let (mut ids, mut codes, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for (line_id, line) in said {
        for (code, value) in line.attributes {
            ids.push(*line_id);
            codes.push(code.as_str());
            values.push(value.as_str());
        }
    }
    if !ids.is_empty() {
        let statement = tx.prepare_cached(LINE_ATTRIBUTES).await?;
        changed |= tx
            .execute(&statement, &[&return_id, &ids, &codes, &values])
            .await?
            > 0;
    }
    Ok(changed)
}

async fn header_attributes(
    tx: &Transaction<'_>,
    return_id: &str,
    attributes: &[(String, String)],
) -> Result<bool, tokio_postgres::Error> {
    let codes: Vec<&str> = attributes.iter().map(|(c, _)| c.as_str()).collect();
    let values: Vec<&str> = attributes.iter().map(|(_, v)| v.as_str()).collect();
    let statement = tx.prepare_cached(ATTRIBUTES).await?;
    Ok(tx
        .execute(&statement, &[&return_id, &codes, &values])
        .await?
        > 0)
}

/// Applies `custom_attributes_updated` or `line_custom_attributes_updated` (no version: in
/// arrival order). A return or line that is not here yet may be on its way (the OMS created
/// the return and its `updated` is behind): retried.
pub async fn apply_attributes(
    tx: &Transaction<'_>,
    update: &ReturnAttributesUpdate,
) -> Result<Outcome, tokio_postgres::Error> {
    let order_id = update.order_id.as_str();
    let rma = update.rma.as_str();
    let of = tx.prepare_cached(ORDER_OF_RETURN).await?;
    match tx.query_opt(&of, &[&rma]).await? {
        None => {
            return Ok(Outcome::Retry(format!(
                "return {rma} of order {order_id} is not in this Commerce yet; waiting for it"
            )));
        }
        Some(row) if row.get::<_, String>(0) != order_id => {
            let owner: String = row.get(0);
            return Ok(Outcome::Reject(format!(
                "return {rma} is of order {owner}, not of order {order_id}"
            )));
        }
        Some(_) => {}
    }
    let changed = match &update.line {
        None => header_attributes(tx, rma, &update.attributes).await?,
        Some(line_ref) => {
            let order_lines = lines::load(tx, order_id).await?;
            let line_id = match lines::resolve(&order_lines, order_id, [line_ref]) {
                Ok(found) => found[0].line_id.clone(),
                Err(outcome) => return Ok(outcome),
            };
            let in_return = tx.prepare_cached(LINE_IN_RETURN).await?;
            if !tx
                .query_one(&in_return, &[&rma, &line_id])
                .await?
                .get::<_, bool>(0)
            {
                return Ok(Outcome::Retry(format!(
                    "return {rma} has no line {line_id} yet; waiting for the update that adds it"
                )));
            }
            let ids = vec![line_id.as_str(); update.attributes.len()];
            let codes: Vec<&str> = update.attributes.iter().map(|(c, _)| c.as_str()).collect();
            let values: Vec<&str> = update.attributes.iter().map(|(_, v)| v.as_str()).collect();
            let statement = tx.prepare_cached(LINE_ATTRIBUTES).await?;
            tx.execute(&statement, &[&rma, &ids, &codes, &values])
                .await?
                > 0
        }
    };
    Ok(if changed {
        Outcome::Applied
    } else {
        Outcome::Stale
    })
}
