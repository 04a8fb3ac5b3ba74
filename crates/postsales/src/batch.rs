//! A whole batch of post-sales messages in a constant number of round trips.
//!
//! The one-by-one path ([`crate::returns`], [`crate::refunds`], [`crate::duplicates`]) issues
//! a few statements per message; here the batch reads everything its messages name once
//! (orders with their tenders, the orders' lines, returns with their lines and attributes,
//! refunds, the orders' credit memos: one statement each, sent together), decides every
//! message's effect in memory with the same rules, outcomes and reasons, and writes what
//! changed with one set-based statement per table (`unnest` arrays). The batch's orders are
//! locked first, as on the one-by-one path, so nothing read here changes before the commit.
//!
//! Messages are decided in arrival order, each against the state the ones before it left:
//! exactly what applying them one by one in one transaction does. Statuses are
//! compare-and-sets on their versions, so for them arrival order and version order end
//! alike; the unversioned custom attribute updates are defined by arrival order, which this
//! keeps. The one-by-one path stays as the model the property test compares this with
//! (`tests/it/postsales_batch.rs`).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use deadpool_postgres::Transaction;
use orders::SalesChannel;
use orders::batch::LockedOrder;
use orders::lines::{self, OrderLine};
use protocol::postsales::{
    Refund, RefundAttributesUpdate, ReturnAttributesUpdate, ReturnEvent, ReturnEventKind,
};
use runtime::Outcome;
use rust_decimal::Decimal;
use serde_json::{Map, Value};

use crate::handler::{LOCK_ACCOUNTS, PostsalesMessage};
use crate::refunds::refunded_lines;
use crate::status::{NO_STATUS, is_released, refund_rank, return_rank, return_state};
use crate::store_credit::{OrderTenders, split_refund};

// Reads ---------------------------------------------------------------------------------

const BLIND_IDS: &str = "SELECT c, 'blind:' || md5(c) FROM unnest($1::text[]) AS c";

const RETURNS: &str = "
    SELECT id, order_id, source_id, state, oms_status, oms_status_reason, oms_status_date,
           oms_status_rank, tracking_number, tracking_url, tracking_label_url, tracking_carrier,
           tracking_date, received_at
      FROM postsales_returns WHERE id = ANY ($1::text[])";

const RETURN_LINES: &str = "
    SELECT return_id, line_id, oms_status, oms_status_date, oms_status_rank, oms_condition,
           received_at, received_condition
      FROM postsales_return_lines WHERE return_id = ANY ($1::text[])";

/// The returns' own attributes (no line) and their lines'.
const RETURN_ATTRIBUTES: &str = "
    SELECT return_id, NULL::text, code, value
      FROM postsales_return_attributes WHERE return_id = ANY ($1::text[])
    UNION ALL
    SELECT return_id, line_id, code, value
      FROM postsales_return_line_attributes WHERE return_id = ANY ($1::text[])";

const REFUNDS: &str = "
    SELECT credit_note_number, order_id, rma, refund_type, refund_reason, requested_by,
           credit_note_date, amount, status, status_reason, status_date, status_rank,
           custom_attributes
      FROM postsales_refunds WHERE credit_note_number = ANY ($1::text[])";

/// The orders' credit memos with their lines (a memo always has lines).
const MEMOS: &str = "
    SELECT m.order_id, m.credit_note_number, m.payment_amount, m.store_credit_amount,
           l.line_id, l.amount
      FROM postsales_credit_memos m
      LEFT JOIN postsales_credit_memo_lines l ON l.credit_memo_id = m.id
     WHERE m.order_id = ANY ($1::text[])";

// Writes ---------------------------------------------------------------------------------

const INSERT_RETURNS: &str = "
    INSERT INTO postsales_returns (id, order_id, origin, requested_by, source_id, state,
        oms_status, oms_status_reason, oms_status_date, oms_status_rank, tracking_number,
        tracking_url, tracking_label_url, tracking_carrier, tracking_date, received_at)
    SELECT r.id, r.order_id, 'oms', r.requested_by, r.source_id, r.state, r.oms_status,
           r.oms_status_reason, r.oms_status_date, r.oms_status_rank, r.tracking_number,
           r.tracking_url, r.tracking_label_url, r.tracking_carrier, r.tracking_date,
           r.received_at
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                  $7::text[], $8::timestamptz[], $9::int2[], $10::text[], $11::text[],
                  $12::text[], $13::text[], $14::timestamptz[], $15::timestamptz[])
           AS r(id, order_id, requested_by, source_id, state, oms_status, oms_status_reason,
                oms_status_date, oms_status_rank, tracking_number, tracking_url,
                tracking_label_url, tracking_carrier, tracking_date, received_at)";

/// The updates from arrays name their keys as `= ANY` of the first array too (see
/// `sales::batch::write`): the join alone let the planner hash every row of the table.
const UPDATE_RETURNS: &str = "
    UPDATE postsales_returns r
       SET source_id = u.source_id, state = u.state, oms_status = u.oms_status,
           oms_status_reason = u.oms_status_reason, oms_status_date = u.oms_status_date,
           oms_status_rank = u.oms_status_rank, tracking_number = u.tracking_number,
           tracking_url = u.tracking_url, tracking_label_url = u.tracking_label_url,
           tracking_carrier = u.tracking_carrier, tracking_date = u.tracking_date,
           received_at = u.received_at, updated_at = now()
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                  $6::timestamptz[], $7::int2[], $8::text[], $9::text[], $10::text[],
                  $11::text[], $12::timestamptz[], $13::timestamptz[])
           AS u(id, source_id, state, oms_status, oms_status_reason, oms_status_date,
                oms_status_rank, tracking_number, tracking_url, tracking_label_url,
                tracking_carrier, tracking_date, received_at)
     WHERE r.id = u.id AND r.id = ANY ($1::text[])";

const INSERT_RETURN_LINES: &str = "
    INSERT INTO postsales_return_lines (return_id, order_id, line_id, reason, oms_status,
        oms_status_date, oms_status_rank, oms_condition, received_at, received_condition)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::timestamptz[], $7::int2[], $8::text[], $9::timestamptz[],
                         $10::text[])";

const UPDATE_RETURN_LINES: &str = "
    UPDATE postsales_return_lines l
       SET oms_status = u.oms_status, oms_status_date = u.oms_status_date,
           oms_status_rank = u.oms_status_rank, oms_condition = u.oms_condition,
           received_at = u.received_at, received_condition = u.received_condition
      FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int2[],
                  $6::text[], $7::timestamptz[], $8::text[])
           AS u(return_id, line_id, oms_status, oms_status_date, oms_status_rank,
                oms_condition, received_at, received_condition)
     WHERE l.return_id = u.return_id AND l.line_id = u.line_id
       AND l.return_id = ANY ($1::text[])";

const UPSERT_RETURN_ATTRIBUTES: &str = "
    INSERT INTO postsales_return_attributes (return_id, code, value)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
    ON CONFLICT (return_id, code) DO UPDATE SET value = EXCLUDED.value, updated_at = now()";

const UPSERT_LINE_ATTRIBUTES: &str = "
    INSERT INTO postsales_return_line_attributes (return_id, line_id, code, value)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
    ON CONFLICT (return_id, line_id, code) DO UPDATE SET value = EXCLUDED.value, updated_at = now()";

const UPSERT_REFUNDS: &str = "
    INSERT INTO postsales_refunds AS r (credit_note_number, order_id, rma, refund_type,
        refund_reason, requested_by, credit_note_date, amount, status, status_reason,
        status_date, status_rank, custom_attributes)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::timestamptz[], $8::numeric[], $9::text[], $10::text[],
                         $11::timestamptz[], $12::int2[], $13::jsonb[])
    ON CONFLICT (credit_note_number) DO UPDATE
       SET rma = EXCLUDED.rma, refund_type = EXCLUDED.refund_type,
           refund_reason = EXCLUDED.refund_reason, requested_by = EXCLUDED.requested_by,
           credit_note_date = EXCLUDED.credit_note_date, amount = EXCLUDED.amount,
           status = EXCLUDED.status, status_reason = EXCLUDED.status_reason,
           status_date = EXCLUDED.status_date, status_rank = EXCLUDED.status_rank,
           custom_attributes = EXCLUDED.custom_attributes, updated_at = now()";

const FORGET_REFUND_LINES: &str =
    "DELETE FROM postsales_refund_lines WHERE credit_note_number = ANY ($1::text[])";

const INSERT_REFUND_LINES: &str = "
    INSERT INTO postsales_refund_lines (credit_note_number, order_id, line_id, amount,
                                        tax_amount, reason, reason_description)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::numeric[], $5::numeric[],
                         $6::text[], $7::text[])";

/// The memos and their lines in one statement: each line finds its memo's new id by the
/// credit note number.
const INSERT_MEMOS: &str = "
    WITH memo AS (
        INSERT INTO postsales_credit_memos (credit_note_number, order_id, rma, refund_type,
            credit_note_date, released_at, grand_total, payment_amount, store_credit_amount,
            unrefunded_amount)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                             $5::timestamptz[], $6::timestamptz[], $7::numeric[],
                             $8::numeric[], $9::numeric[], $10::numeric[])
        RETURNING id, credit_note_number, order_id)
    INSERT INTO postsales_credit_memo_lines (credit_memo_id, order_id, line_id, amount, tax_amount)
    SELECT memo.id, memo.order_id, l.line_id, l.amount, l.tax
      FROM memo
      JOIN unnest($11::text[], $12::text[], $13::numeric[], $14::numeric[])
           AS l(credit_note_number, line_id, amount, tax)
        ON l.credit_note_number = memo.credit_note_number";

/// As [`crate::store_credit::credit`], for every credit of the batch.
const CREDITS: &str = "
    INSERT INTO store_credit_transactions (customer_id, natural_key, kind, amount, order_id,
                                           credit_note_number)
    SELECT c.customer_id, 'refund:' || c.credit_note_number, 'refund', c.amount, c.order_id,
           c.credit_note_number
      FROM unnest($1::text[], $2::text[], $3::numeric[], $4::text[])
           AS c(customer_id, credit_note_number, amount, order_id)
    ON CONFLICT (customer_id, natural_key) DO NOTHING";

const DUPLICATES: &str = "
    INSERT INTO postsales_return_duplicates (order_id, rma, messages)
    SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])
    ON CONFLICT (order_id, rma) DO UPDATE
       SET messages = postsales_return_duplicates.messages + EXCLUDED.messages,
           last_seen = now()";

// State ----------------------------------------------------------------------------------

/// A return as stored, and as the batch leaves it.
#[derive(Debug, Clone)]
struct ReturnRow {
    order_id: String,
    /// Created by this batch (origin `oms`).
    new: bool,
    dirty: bool,
    requested_by: Option<String>,
    source_id: Option<String>,
    state: String,
    oms_status: Option<String>,
    oms_status_reason: Option<String>,
    oms_status_date: Option<DateTime<Utc>>,
    oms_status_rank: i16,
    tracking_number: Option<String>,
    tracking_url: Option<String>,
    tracking_label_url: Option<String>,
    tracking_carrier: Option<String>,
    tracking_date: Option<DateTime<Utc>>,
    received_at: Option<DateTime<Utc>>,
}

/// A returned line as stored, and as the batch leaves it.
#[derive(Debug, Clone, Default)]
struct LineRow {
    order_id: String,
    /// Written only when the batch adds the line.
    reason: String,
    new: bool,
    dirty: bool,
    oms_status: Option<String>,
    oms_status_date: Option<DateTime<Utc>>,
    oms_status_rank: i16,
    oms_condition: Option<String>,
    received_at: Option<DateTime<Utc>>,
    received_condition: Option<String>,
}

#[derive(Debug, Clone)]
struct Attribute {
    value: String,
    dirty: bool,
}

#[derive(Debug, Clone)]
struct RefundRow {
    order_id: String,
    dirty: bool,
    rma: Option<String>,
    refund_type: Option<String>,
    refund_reason: Option<String>,
    requested_by: Option<String>,
    credit_note_date: Option<DateTime<Utc>>,
    amount: Decimal,
    status: String,
    status_reason: Option<String>,
    status_date: DateTime<Utc>,
    status_rank: i16,
    custom_attributes: Map<String, Value>,
    /// The lines of the newest message, when this batch replaced them.
    lines: Option<Vec<RefundLineRow>>,
}

#[derive(Debug, Clone)]
struct RefundLineRow {
    line_id: String,
    amount: Decimal,
    tax: Option<Decimal>,
    reason: Option<String>,
    description: Option<String>,
}

/// A credit memo: what the refund checks and the split read of it, and, when the batch
/// creates it, its row.
#[derive(Debug, Clone)]
struct Memo {
    order_id: String,
    payment_amount: Decimal,
    store_credit_amount: Decimal,
    lines: Vec<MemoLine>,
    new: Option<NewMemo>,
}

/// A memo line: the order line, the amount and the tax.
type MemoLine = (String, Decimal, Option<Decimal>);

#[derive(Debug, Clone)]
struct NewMemo {
    rma: Option<String>,
    refund_type: Option<String>,
    credit_note_date: Option<DateTime<Utc>>,
    released_at: DateTime<Utc>,
    grand_total: Decimal,
    unrefunded: Decimal,
}

/// Everything the batch reads, changed in memory message by message.
#[derive(Default)]
struct State {
    orders: HashMap<String, LockedOrder>,
    lines: HashMap<String, Vec<OrderLine>>,
    blind_ids: HashMap<String, String>,
    returns: HashMap<String, ReturnRow>,
    return_lines: BTreeMap<(String, String), LineRow>,
    return_attributes: BTreeMap<(String, String), Attribute>,
    line_attributes: BTreeMap<(String, String, String), Attribute>,
    refunds: BTreeMap<String, RefundRow>,
    /// By credit note number.
    memos: BTreeMap<String, Memo>,
    /// (customer, credit note number, order, amount).
    credits: Vec<(String, String, String, Decimal)>,
    duplicates: BTreeMap<(String, String), i64>,
    foreign: Vec<(String, Option<String>)>,
}

/// PostgreSQL keeps microseconds: a time is compared as it will be stored.
fn stored(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// `omsc_status_supersedes` (migration V13): date (a missing one first), rank, then status
/// and reason bytewise.
fn supersedes(
    new: (Option<DateTime<Utc>>, i16, Option<&str>, Option<&str>),
    old: (Option<DateTime<Utc>>, i16, Option<&str>, Option<&str>),
) -> bool {
    let key = |v: (Option<DateTime<Utc>>, i16, Option<&str>, Option<&str>)| {
        (
            v.0,
            v.1,
            v.2.unwrap_or("").as_bytes().to_vec(),
            v.3.unwrap_or("").as_bytes().to_vec(),
        )
    };
    key(new) > key(old)
}

fn outcome(changed: bool) -> Outcome {
    if changed {
        Outcome::Applied
    } else {
        Outcome::Stale
    }
}

/// Applies a batch; the outcomes are those of applying its messages one by one, in order.
pub(crate) async fn apply(
    tx: &Transaction<'_>,
    channel: &SalesChannel,
    batch: &[&PostsalesMessage],
) -> Result<Vec<Outcome>, tokio_postgres::Error> {
    let mut ids: Vec<&str> = batch.iter().map(|m| m.order_id()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut state = State {
        orders: orders::batch::lock(tx, &ids)
            .await?
            .into_iter()
            .map(|o| (o.id.clone(), o))
            .collect(),
        ..State::default()
    };

    // Which messages reach their order; the rest are another channel's or bad input.
    enum Route {
        Apply,
        Foreign,
        Unknown,
    }
    let routes: Vec<Route> = batch
        .iter()
        .map(|m| match state.orders.get(m.order_id()) {
            Some(o) if channel.is_foreign(m.channel(), &o.store) => Route::Foreign,
            Some(_) => Route::Apply,
            None => Route::Unknown,
        })
        .collect();
    let applied: Vec<&PostsalesMessage> = batch
        .iter()
        .zip(&routes)
        .filter(|(_, r)| matches!(r, Route::Apply))
        .map(|(m, _)| *m)
        .collect();

    // The accounts a release of this batch may credit, locked in one order.
    let releasing: HashSet<&str> = applied
        .iter()
        .filter_map(|m| match m {
            PostsalesMessage::Refund(r) if is_released(&r.status.code) => Some(r.order_id.as_str()),
            _ => None,
        })
        .collect();
    let mut customers: Vec<&str> = state
        .orders
        .values()
        .filter(|o| releasing.contains(o.id.as_str()))
        .filter_map(|o| o.customer_id.as_deref())
        .collect();
    customers.sort_unstable();
    customers.dedup();
    if !customers.is_empty() {
        let lock = tx.prepare_cached(LOCK_ACCOUNTS).await?;
        tx.execute(&lock, &[&customers]).await?;
    }
    let unknown_channels: Vec<&str> = batch
        .iter()
        .zip(&routes)
        .filter(|(_, r)| matches!(r, Route::Unknown))
        .filter_map(|(m, _)| m.channel())
        .collect();
    let ours: HashSet<String> = match channel.configured() {
        Some(c) => HashSet::from([c.to_owned()]),
        None if unknown_channels.is_empty() => HashSet::new(),
        None => orders::batch::stores_of_ours(tx, &unknown_channels).await?,
    };

    load(tx, &mut state, &applied).await?;

    let mut outcomes = Vec::with_capacity(batch.len());
    for (message, route) in batch.iter().zip(&routes) {
        let order_id = message.order_id();
        let outcome = match route {
            Route::Apply => match message {
                PostsalesMessage::Return(e) => return_event(&mut state, e),
                PostsalesMessage::ReturnAttributes(a) => return_attributes(&mut state, a),
                PostsalesMessage::ReturnDuplicated(d) => {
                    let key = (d.order_id.clone(), d.rma.clone().unwrap_or_default());
                    *state.duplicates.entry(key).or_default() += 1;
                    Outcome::Applied
                }
                PostsalesMessage::Refund(r) => refund(&mut state, r),
                PostsalesMessage::RefundAttributes(a) => refund_attributes(&mut state, a),
            },
            Route::Foreign => {
                state
                    .foreign
                    .push((order_id.to_owned(), message.channel().map(str::to_owned)));
                Outcome::Ignored("foreign_order")
            }
            Route::Unknown => match message.channel() {
                Some(said) if !ours.contains(said) => {
                    state
                        .foreign
                        .push((order_id.to_owned(), Some(said.to_owned())));
                    Outcome::Ignored("foreign_order")
                }
                _ => Outcome::Reject(format!(
                    "order {order_id} is not in this Commerce: a return or refund is only ever about an order placed here, which is in the database before it is exported"
                )),
            },
        };
        outcomes.push(outcome);
    }
    write(tx, &state).await?;
    Ok(outcomes)
}

/// Reads what the messages name, each kind in one statement, the statements sent together.
async fn load(
    tx: &Transaction<'_>,
    state: &mut State,
    applied: &[&PostsalesMessage],
) -> Result<(), tokio_postgres::Error> {
    let mut order_ids: Vec<&str> = applied.iter().map(|m| m.order_id()).collect();
    order_ids.sort_unstable();
    order_ids.dedup();
    let blind: Vec<String> = applied
        .iter()
        .filter_map(|m| match m {
            PostsalesMessage::Return(e) if e.rma.is_none() => Some(e.content()),
            _ => None,
        })
        .collect();
    if !blind.is_empty() {
        let statement = tx.prepare_cached(BLIND_IDS).await?;
        state.blind_ids = tx
            .query(&statement, &[&blind])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    }
    let mut return_ids: Vec<String> = Vec::new();
    let mut credit_notes: Vec<&str> = Vec::new();
    let mut refund_orders: Vec<&str> = Vec::new();
    for m in applied {
        match m {
            PostsalesMessage::Return(e) => return_ids.push(match &e.rma {
                Some(rma) => rma.clone(),
                None => state.blind_ids[&e.content()].clone(),
            }),
            PostsalesMessage::ReturnAttributes(a) => return_ids.push(a.rma.clone()),
            PostsalesMessage::Refund(r) => {
                credit_notes.push(&r.key);
                refund_orders.push(&r.order_id);
            }
            PostsalesMessage::RefundAttributes(a) => credit_notes.push(&a.credit_note_number),
            PostsalesMessage::ReturnDuplicated(_) => {}
        }
    }
    return_ids.sort_unstable();
    return_ids.dedup();
    let return_ids: Vec<&str> = return_ids.iter().map(String::as_str).collect();
    for list in [&mut credit_notes, &mut refund_orders] {
        list.sort_unstable();
        list.dedup();
    }

    let (lines, returns, return_lines, attributes, refunds, memos) = tokio::try_join!(
        orders::batch::lines(tx, &order_ids),
        query(tx, RETURNS, &return_ids),
        query(tx, RETURN_LINES, &return_ids),
        query(tx, RETURN_ATTRIBUTES, &return_ids),
        query(tx, REFUNDS, &credit_notes),
        query(tx, MEMOS, &refund_orders),
    )?;
    state.lines = lines;
    for r in returns {
        state.returns.insert(
            r.get(0),
            ReturnRow {
                order_id: r.get(1),
                new: false,
                dirty: false,
                requested_by: None,
                source_id: r.get(2),
                state: r.get(3),
                oms_status: r.get(4),
                oms_status_reason: r.get(5),
                oms_status_date: r.get(6),
                oms_status_rank: r.get(7),
                tracking_number: r.get(8),
                tracking_url: r.get(9),
                tracking_label_url: r.get(10),
                tracking_carrier: r.get(11),
                tracking_date: r.get(12),
                received_at: r.get(13),
            },
        );
    }
    for r in return_lines {
        let return_id: String = r.get(0);
        let order_id = state
            .returns
            .get(&return_id)
            .map(|ret| ret.order_id.clone())
            .unwrap_or_default();
        state.return_lines.insert(
            (return_id, r.get(1)),
            LineRow {
                order_id,
                reason: String::new(),
                new: false,
                dirty: false,
                oms_status: r.get(2),
                oms_status_date: r.get(3),
                oms_status_rank: r.get(4),
                oms_condition: r.get(5),
                received_at: r.get(6),
                received_condition: r.get(7),
            },
        );
    }
    for r in attributes {
        let attribute = Attribute {
            value: r.get(3),
            dirty: false,
        };
        match r.get::<_, Option<String>>(1) {
            None => {
                state
                    .return_attributes
                    .insert((r.get(0), r.get(2)), attribute);
            }
            Some(line) => {
                state
                    .line_attributes
                    .insert((r.get(0), line, r.get(2)), attribute);
            }
        }
    }
    for r in refunds {
        let attributes = match r.get::<_, Value>(12) {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        state.refunds.insert(
            r.get(0),
            RefundRow {
                order_id: r.get(1),
                dirty: false,
                rma: r.get(2),
                refund_type: r.get(3),
                refund_reason: r.get(4),
                requested_by: r.get(5),
                credit_note_date: r.get(6),
                amount: r.get(7),
                status: r.get(8),
                status_reason: r.get(9),
                status_date: r.get(10),
                status_rank: r.get(11),
                custom_attributes: attributes,
                lines: None,
            },
        );
    }
    for r in memos {
        let memo = state.memos.entry(r.get(1)).or_insert_with(|| Memo {
            order_id: r.get(0),
            payment_amount: r.get(2),
            store_credit_amount: r.get(3),
            lines: Vec::new(),
            new: None,
        });
        if let Some(line_id) = r.get::<_, Option<String>>(4) {
            memo.lines.push((line_id, r.get(5), None));
        }
    }
    Ok(())
}

async fn query(
    tx: &Transaction<'_>,
    sql: &str,
    keys: &[&str],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let statement = tx.prepare_cached(sql).await?;
    tx.query(&statement, &[&keys]).await
}

/// What one event says about one line of the return.
struct LineSays<'a> {
    status: Option<&'a str>,
    reason: Option<&'a str>,
    condition: Option<&'a str>,
    attributes: &'a [(String, String)],
}

/// [`crate::returns::apply_event`] in memory.
fn return_event(state: &mut State, event: &ReturnEvent) -> Outcome {
    let order_id = event.order_id.as_str();
    let no_lines = Vec::new();
    let order_lines = state.lines.get(order_id).unwrap_or(&no_lines);
    let named = match lines::resolve(order_lines, order_id, event.lines.iter().map(|l| &l.line)) {
        Ok(named) => named,
        Err(outcome) => return outcome,
    };
    let mut said: BTreeMap<String, LineSays<'_>> = BTreeMap::new();
    for (line, info) in event.lines.iter().zip(&named) {
        said.insert(
            info.line_id.clone(),
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
        None => state.blind_ids[&event.content()].clone(),
    };
    let mut changed = false;
    match state.returns.get(&return_id) {
        Some(r) if r.order_id != order_id => {
            return Outcome::Reject(format!(
                "return {return_id} is of order {}, not of order {order_id}",
                r.order_id
            ));
        }
        Some(_) => {}
        None => {
            state.returns.insert(
                return_id.clone(),
                ReturnRow {
                    order_id: order_id.to_owned(),
                    new: true,
                    dirty: true,
                    requested_by: event.user.clone(),
                    source_id: event.source_id.clone(),
                    state: "requested".into(),
                    oms_status: None,
                    oms_status_reason: None,
                    oms_status_date: None,
                    oms_status_rank: NO_STATUS,
                    tracking_number: None,
                    tracking_url: None,
                    tracking_label_url: None,
                    tracking_carrier: None,
                    tracking_date: None,
                    received_at: None,
                },
            );
            changed = true;
        }
    }
    for (line_id, line) in &said {
        let key = (return_id.clone(), line_id.clone());
        if let Entry::Vacant(vacant) = state.return_lines.entry(key) {
            vacant.insert(LineRow {
                order_id: order_id.to_owned(),
                reason: line.reason.unwrap_or("").to_owned(),
                new: true,
                dirty: true,
                ..LineRow::default()
            });
            changed = true;
        }
    }
    changed |= match event.kind {
        ReturnEventKind::Updated => updated(state, &return_id, event, &said),
        ReturnEventKind::Received => received(state, &return_id, event, &said),
    };
    outcome(changed)
}

fn updated(
    state: &mut State,
    return_id: &str,
    event: &ReturnEvent,
    said: &BTreeMap<String, LineSays<'_>>,
) -> bool {
    let Some(status) = &event.status else {
        return attributes(state, return_id, event, said);
    };
    let date = stored(status.date);
    let rank = return_rank(&status.code);
    let row = state
        .returns
        .get_mut(return_id)
        .expect("the return is here");
    let won = supersedes(
        (
            Some(date),
            rank,
            Some(&status.code),
            status.reason.as_deref(),
        ),
        (
            row.oms_status_date,
            row.oms_status_rank,
            row.oms_status.as_deref(),
            row.oms_status_reason.as_deref(),
        ),
    );
    if won {
        row.oms_status = Some(status.code.clone());
        row.oms_status_reason = status.reason.clone();
        row.oms_status_date = Some(date);
        row.state = return_state(&status.code).as_str().to_owned();
        if event.source_id.is_some() {
            row.source_id = event.source_id.clone();
        }
        row.oms_status_rank = rank;
        row.dirty = true;
    }
    let mut changed = won;
    let t = &event.tracking;
    if (t.number.is_some() || t.url.is_some() || t.label_url.is_some() || t.carrier.is_some())
        && row.tracking_date.is_none_or(|d| d < date)
    {
        row.tracking_number = t.number.clone();
        row.tracking_url = t.url.clone();
        row.tracking_label_url = t.label_url.clone();
        row.tracking_carrier = t.carrier.clone();
        row.tracking_date = Some(date);
        row.dirty = true;
        changed = true;
    }
    for (line_id, line) in said {
        let Some(line_status) = line.status else {
            continue;
        };
        let line_rank = return_rank(line_status);
        let row = state
            .return_lines
            .get_mut(&(return_id.to_owned(), line_id.clone()))
            .expect("the line was added");
        if supersedes(
            (Some(date), line_rank, Some(line_status), None),
            (
                row.oms_status_date,
                row.oms_status_rank,
                row.oms_status.as_deref(),
                None,
            ),
        ) {
            row.oms_status = Some(line_status.to_owned());
            row.oms_status_date = Some(date);
            row.oms_condition = line.condition.map(str::to_owned);
            row.oms_status_rank = line_rank;
            row.dirty = true;
            changed = true;
        }
    }
    // Attributes travel with the status: only the newest update's stand.
    if won {
        changed |= attributes(state, return_id, event, said);
    }
    changed
}

fn received(
    state: &mut State,
    return_id: &str,
    event: &ReturnEvent,
    said: &BTreeMap<String, LineSays<'_>>,
) -> bool {
    let at = stored(event.received_at.unwrap_or_else(Utc::now));
    let row = state
        .returns
        .get_mut(return_id)
        .expect("the return is here");
    let mut changed = false;
    if row.received_at.is_none_or(|r| r > at) {
        row.received_at = Some(at);
        row.dirty = true;
        changed = true;
    }
    for (line_id, line) in said {
        let row = state
            .return_lines
            .get_mut(&(return_id.to_owned(), line_id.clone()))
            .expect("the line was added");
        if row.received_at.is_none_or(|r| r > at) {
            row.received_at = Some(at);
            row.received_condition = line.condition.map(str::to_owned);
            row.dirty = true;
            changed = true;
        }
    }
    changed |= attributes(state, return_id, event, said);
    changed
}

/// The return's and its lines' custom attributes of an event.
fn attributes(
    state: &mut State,
    return_id: &str,
    event: &ReturnEvent,
    said: &BTreeMap<String, LineSays<'_>>,
) -> bool {
    let mut changed = header_attributes(state, return_id, &event.attributes);
    for (line_id, line) in said {
        for (code, value) in line.attributes {
            changed |= set_attribute(
                &mut state.line_attributes,
                (return_id.to_owned(), line_id.clone(), code.clone()),
                value,
            );
        }
    }
    changed
}

fn header_attributes(state: &mut State, return_id: &str, attributes: &[(String, String)]) -> bool {
    let mut changed = false;
    for (code, value) in attributes {
        changed |= set_attribute(
            &mut state.return_attributes,
            (return_id.to_owned(), code.clone()),
            value,
        );
    }
    changed
}

/// An upsert that writes only a new or different value (and so counts only those).
fn set_attribute<K: Ord>(map: &mut BTreeMap<K, Attribute>, key: K, value: &str) -> bool {
    match map.get_mut(&key) {
        Some(a) if a.value == value => false,
        Some(a) => {
            a.value = value.to_owned();
            a.dirty = true;
            true
        }
        None => {
            map.insert(
                key,
                Attribute {
                    value: value.to_owned(),
                    dirty: true,
                },
            );
            true
        }
    }
}

/// [`crate::returns::apply_attributes`] in memory.
fn return_attributes(state: &mut State, update: &ReturnAttributesUpdate) -> Outcome {
    let order_id = update.order_id.as_str();
    let rma = update.rma.as_str();
    match state.returns.get(rma) {
        None => {
            return Outcome::Retry(format!(
                "return {rma} of order {order_id} is not in this Commerce yet; waiting for it"
            ));
        }
        Some(r) if r.order_id != order_id => {
            return Outcome::Reject(format!(
                "return {rma} is of order {}, not of order {order_id}",
                r.order_id
            ));
        }
        Some(_) => {}
    }
    let changed = match &update.line {
        None => header_attributes(state, rma, &update.attributes),
        Some(line_ref) => {
            let no_lines = Vec::new();
            let order_lines = state.lines.get(order_id).unwrap_or(&no_lines);
            let line_id = match lines::resolve(order_lines, order_id, [line_ref]) {
                Ok(found) => found[0].line_id.clone(),
                Err(outcome) => return outcome,
            };
            if !state
                .return_lines
                .contains_key(&(rma.to_owned(), line_id.clone()))
            {
                return Outcome::Retry(format!(
                    "return {rma} has no line {line_id} yet; waiting for the update that adds it"
                ));
            }
            let mut changed = false;
            for (code, value) in &update.attributes {
                changed |= set_attribute(
                    &mut state.line_attributes,
                    (rma.to_owned(), line_id.clone(), code.clone()),
                    value,
                );
            }
            changed
        }
    };
    outcome(changed)
}

/// One refunded order line: the message's lines for it, added up.
struct Refunded<'a> {
    line: &'a OrderLine,
    amount: Decimal,
    tax: Option<Decimal>,
    reason: Option<&'a str>,
    description: Option<&'a str>,
}

/// [`crate::refunds::apply`] in memory.
fn refund(state: &mut State, refund: &Refund) -> Outcome {
    let order_id = refund.order_id.as_str();
    let number = refund.key.as_str();
    let no_lines = Vec::new();
    let order_lines = state.lines.get(order_id).unwrap_or(&no_lines);
    let named = match refunded_lines(order_lines, refund) {
        Ok(named) => named,
        Err(outcome) => return outcome,
    };
    if let Some(r) = state.refunds.get(number)
        && r.order_id != order_id
    {
        return Outcome::Reject(format!(
            "credit note {number} is a refund of order {}, not of order {order_id}",
            r.order_id
        ));
    }
    let mut refunded: BTreeMap<&str, Refunded<'_>> = BTreeMap::new();
    for (line, info) in refund.lines.iter().zip(&named) {
        let entry = refunded.entry(&info.line_id).or_insert(Refunded {
            line: info,
            amount: Decimal::ZERO,
            tax: None,
            reason: line.reason.as_deref(),
            description: line.reason_description.as_deref(),
        });
        entry.amount += line.amount;
        if let Some(tax) = line.tax {
            entry.tax = Some(entry.tax.unwrap_or_default() + tax);
        }
    }
    // What other credit notes' memos refunded of each line of the order.
    let mut elsewhere: HashMap<&str, Decimal> = HashMap::new();
    for (cn, memo) in &state.memos {
        if memo.order_id == order_id && cn != number {
            for (line_id, amount, _) in &memo.lines {
                *elsewhere.entry(line_id.as_str()).or_default() += *amount;
            }
        }
    }
    let order_total: Decimal = order_lines.iter().map(|l| l.gross_amount).sum();
    let refunded_before: Decimal = elsewhere.values().copied().sum();
    let this = refund.total();
    if this + refunded_before > order_total {
        return Outcome::Reject(format!(
            "credit note {number} refunds {this}, which with the {refunded_before} refunded before is over order {order_id}'s total of {order_total}"
        ));
    }
    for (line_id, r) in &refunded {
        let before = elsewhere.get(*line_id).copied().unwrap_or_default();
        if r.amount + before > r.line.gross_amount {
            return Outcome::Reject(format!(
                "credit note {number} refunds {} of order {order_id}'s line {line_id} ({}), which cost {} ({before} refunded before)",
                r.amount, r.line.sku, r.line.gross_amount
            ));
        }
    }

    let date = stored(refund.status.date);
    let rank = refund_rank(&refund.status.code);
    let won = match state.refunds.get(number) {
        None => true,
        Some(r) => (r.status_date, r.status_rank) < (date, rank),
    };
    if won {
        let lines: Vec<RefundLineRow> = refunded
            .iter()
            .map(|(line_id, r)| RefundLineRow {
                line_id: (*line_id).to_owned(),
                amount: r.amount,
                tax: r.tax,
                reason: r.reason.map(str::to_owned),
                description: r.description.map(str::to_owned),
            })
            .collect();
        state.refunds.insert(
            number.to_owned(),
            RefundRow {
                order_id: order_id.to_owned(),
                dirty: true,
                rma: refund.rma.clone(),
                refund_type: refund.refund_type.clone(),
                refund_reason: refund.refund_reason.clone(),
                requested_by: refund.user.clone(),
                credit_note_date: refund.credit_note_date.map(stored),
                amount: this,
                status: refund.status.code.clone(),
                status_reason: refund.status.reason.clone(),
                status_date: date,
                status_rank: rank,
                custom_attributes: refund
                    .attributes
                    .iter()
                    .map(|(c, v)| (c.clone(), Value::from(v.as_str())))
                    .collect(),
                lines: Some(lines),
            },
        );
    }
    let mut changed = won;
    if is_released(&refund.status.code) && !state.memos.contains_key(number) {
        let order = &state.orders[order_id];
        let (mut refunded_to_payment, mut store_credited) = (Decimal::ZERO, Decimal::ZERO);
        for memo in state.memos.values().filter(|m| m.order_id == order_id) {
            refunded_to_payment += memo.payment_amount;
            store_credited += memo.store_credit_amount;
        }
        let tenders = OrderTenders {
            lines_total: order_total,
            gift_card: order.gift_card_amount,
            store_credit: order.store_credit_amount,
            has_customer: order.customer_id.is_some(),
            refunded_to_payment,
            store_credited,
        };
        let split = split_refund(this, &tenders);
        if let Some(customer) = &order.customer_id
            && split.store_credit > Decimal::ZERO
        {
            state.credits.push((
                customer.clone(),
                number.to_owned(),
                order_id.to_owned(),
                split.store_credit,
            ));
        }
        tracing::debug!(order_id, credit_note = number, total = %this, to_payment = %split.to_payment,
            store_credit = %split.store_credit, "credit memo");
        state.memos.insert(
            number.to_owned(),
            Memo {
                order_id: order_id.to_owned(),
                payment_amount: split.to_payment,
                store_credit_amount: split.store_credit,
                lines: refunded
                    .iter()
                    .map(|(line_id, r)| ((*line_id).to_owned(), r.amount, r.tax))
                    .collect(),
                new: Some(NewMemo {
                    rma: refund.rma.clone(),
                    refund_type: refund.refund_type.clone(),
                    credit_note_date: refund.credit_note_date.map(stored),
                    released_at: date,
                    grand_total: this,
                    unrefunded: split.unrefunded,
                }),
            },
        );
        changed = true;
    }
    outcome(changed)
}

/// [`crate::refunds::apply_attributes`] in memory.
fn refund_attributes(state: &mut State, update: &RefundAttributesUpdate) -> Outcome {
    let number = update.credit_note_number.as_str();
    let Some(row) = state.refunds.get_mut(number) else {
        return Outcome::Retry(format!(
            "refund {number} of order {} is not in this Commerce yet; waiting for it",
            update.order_id
        ));
    };
    if row.order_id != update.order_id {
        return Outcome::Reject(format!(
            "credit note {number} is a refund of order {}, not of order {}",
            row.order_id, update.order_id
        ));
    }
    let contained = update
        .attributes
        .iter()
        .all(|(c, v)| row.custom_attributes.get(c) == Some(&Value::from(v.as_str())));
    if contained {
        return Outcome::Stale;
    }
    for (c, v) in &update.attributes {
        row.custom_attributes
            .insert(c.clone(), Value::from(v.as_str()));
    }
    row.dirty = true;
    Outcome::Applied
}

/// Writes what the batch changed: one statement per table and kind of change, in the order
/// the foreign keys need (returns before their lines, lines before their attributes,
/// refunds before their memos).
async fn write(tx: &Transaction<'_>, state: &State) -> Result<(), tokio_postgres::Error> {
    write_returns(tx, state).await?;
    write_refunds(tx, state).await?;
    if !state.duplicates.is_empty() {
        let orders: Vec<&str> = state.duplicates.keys().map(|k| k.0.as_str()).collect();
        let rmas: Vec<&str> = state.duplicates.keys().map(|k| k.1.as_str()).collect();
        let counts: Vec<i64> = state.duplicates.values().copied().collect();
        let statement = tx.prepare_cached(DUPLICATES).await?;
        tx.execute(&statement, &[&orders, &rmas, &counts]).await?;
    }
    let foreign: Vec<(&str, Option<&str>)> = state
        .foreign
        .iter()
        .map(|(o, c)| (o.as_str(), c.as_deref()))
        .collect();
    orders::batch::record_foreign_orders(tx, &foreign).await?;
    Ok(())
}

async fn write_returns(tx: &Transaction<'_>, state: &State) -> Result<(), tokio_postgres::Error> {
    let mut ids: Vec<&str> = state
        .returns
        .iter()
        .filter(|(_, r)| r.dirty)
        .map(|(id, _)| id.as_str())
        .collect();
    ids.sort_unstable();
    let (new, old): (Vec<&str>, Vec<&str>) = ids.into_iter().partition(|id| state.returns[*id].new);
    if !new.is_empty() {
        let rows: Vec<&ReturnRow> = new.iter().map(|id| &state.returns[*id]).collect();
        let statement = tx.prepare_cached(INSERT_RETURNS).await?;
        tx.execute(
            &statement,
            &[
                &new,
                &column(&rows, |r| r.order_id.as_str()),
                &column(&rows, |r| r.requested_by.as_deref()),
                &column(&rows, |r| r.source_id.as_deref()),
                &column(&rows, |r| r.state.as_str()),
                &column(&rows, |r| r.oms_status.as_deref()),
                &column(&rows, |r| r.oms_status_reason.as_deref()),
                &column(&rows, |r| r.oms_status_date),
                &column(&rows, |r| r.oms_status_rank),
                &column(&rows, |r| r.tracking_number.as_deref()),
                &column(&rows, |r| r.tracking_url.as_deref()),
                &column(&rows, |r| r.tracking_label_url.as_deref()),
                &column(&rows, |r| r.tracking_carrier.as_deref()),
                &column(&rows, |r| r.tracking_date),
                &column(&rows, |r| r.received_at),
            ],
        )
        .await?;
    }
    if !old.is_empty() {
        let rows: Vec<&ReturnRow> = old.iter().map(|id| &state.returns[*id]).collect();
        let statement = tx.prepare_cached(UPDATE_RETURNS).await?;
        tx.execute(
            &statement,
            &[
                &old,
                &column(&rows, |r| r.source_id.as_deref()),
                &column(&rows, |r| r.state.as_str()),
                &column(&rows, |r| r.oms_status.as_deref()),
                &column(&rows, |r| r.oms_status_reason.as_deref()),
                &column(&rows, |r| r.oms_status_date),
                &column(&rows, |r| r.oms_status_rank),
                &column(&rows, |r| r.tracking_number.as_deref()),
                &column(&rows, |r| r.tracking_url.as_deref()),
                &column(&rows, |r| r.tracking_label_url.as_deref()),
                &column(&rows, |r| r.tracking_carrier.as_deref()),
                &column(&rows, |r| r.tracking_date),
                &column(&rows, |r| r.received_at),
            ],
        )
        .await?;
    }

    let dirty: Vec<(&(String, String), &LineRow)> =
        state.return_lines.iter().filter(|(_, l)| l.dirty).collect();
    let (new, old): (Vec<_>, Vec<_>) = dirty.into_iter().partition(|(_, l)| l.new);
    if !new.is_empty() {
        let statement = tx.prepare_cached(INSERT_RETURN_LINES).await?;
        tx.execute(
            &statement,
            &[
                &column(&new, |(k, _)| k.0.as_str()),
                &column(&new, |(_, l)| l.order_id.as_str()),
                &column(&new, |(k, _)| k.1.as_str()),
                &column(&new, |(_, l)| l.reason.as_str()),
                &column(&new, |(_, l)| l.oms_status.as_deref()),
                &column(&new, |(_, l)| l.oms_status_date),
                &column(&new, |(_, l)| l.oms_status_rank),
                &column(&new, |(_, l)| l.oms_condition.as_deref()),
                &column(&new, |(_, l)| l.received_at),
                &column(&new, |(_, l)| l.received_condition.as_deref()),
            ],
        )
        .await?;
    }
    if !old.is_empty() {
        let statement = tx.prepare_cached(UPDATE_RETURN_LINES).await?;
        tx.execute(
            &statement,
            &[
                &column(&old, |(k, _)| k.0.as_str()),
                &column(&old, |(k, _)| k.1.as_str()),
                &column(&old, |(_, l)| l.oms_status.as_deref()),
                &column(&old, |(_, l)| l.oms_status_date),
                &column(&old, |(_, l)| l.oms_status_rank),
                &column(&old, |(_, l)| l.oms_condition.as_deref()),
                &column(&old, |(_, l)| l.received_at),
                &column(&old, |(_, l)| l.received_condition.as_deref()),
            ],
        )
        .await?;
    }

    let dirty: Vec<_> = state
        .return_attributes
        .iter()
        .filter(|(_, a)| a.dirty)
        .collect();
    if !dirty.is_empty() {
        let statement = tx.prepare_cached(UPSERT_RETURN_ATTRIBUTES).await?;
        tx.execute(
            &statement,
            &[
                &column(&dirty, |(k, _)| k.0.as_str()),
                &column(&dirty, |(k, _)| k.1.as_str()),
                &column(&dirty, |(_, a)| a.value.as_str()),
            ],
        )
        .await?;
    }
    let dirty: Vec<_> = state
        .line_attributes
        .iter()
        .filter(|(_, a)| a.dirty)
        .collect();
    if !dirty.is_empty() {
        let statement = tx.prepare_cached(UPSERT_LINE_ATTRIBUTES).await?;
        tx.execute(
            &statement,
            &[
                &column(&dirty, |(k, _)| k.0.as_str()),
                &column(&dirty, |(k, _)| k.1.as_str()),
                &column(&dirty, |(k, _)| k.2.as_str()),
                &column(&dirty, |(_, a)| a.value.as_str()),
            ],
        )
        .await?;
    }
    Ok(())
}

async fn write_refunds(tx: &Transaction<'_>, state: &State) -> Result<(), tokio_postgres::Error> {
    let dirty: Vec<(&String, &RefundRow)> = state.refunds.iter().filter(|(_, r)| r.dirty).collect();
    if !dirty.is_empty() {
        let statement = tx.prepare_cached(UPSERT_REFUNDS).await?;
        tx.execute(
            &statement,
            &[
                &column(&dirty, |(n, _)| n.as_str()),
                &column(&dirty, |(_, r)| r.order_id.as_str()),
                &column(&dirty, |(_, r)| r.rma.as_deref()),
                &column(&dirty, |(_, r)| r.refund_type.as_deref()),
                &column(&dirty, |(_, r)| r.refund_reason.as_deref()),
                &column(&dirty, |(_, r)| r.requested_by.as_deref()),
                &column(&dirty, |(_, r)| r.credit_note_date),
                &column(&dirty, |(_, r)| r.amount),
                &column(&dirty, |(_, r)| r.status.as_str()),
                &column(&dirty, |(_, r)| r.status_reason.as_deref()),
                &column(&dirty, |(_, r)| r.status_date),
                &column(&dirty, |(_, r)| r.status_rank),
                &column(&dirty, |(_, r)| Value::Object(r.custom_attributes.clone())),
            ],
        )
        .await?;
    }
    let replaced: Vec<(&String, &RefundRow, &Vec<RefundLineRow>)> = dirty
        .iter()
        .filter_map(|(n, r)| r.lines.as_ref().map(|l| (*n, *r, l)))
        .collect();
    if !replaced.is_empty() {
        let numbers = column(&replaced, |(n, _, _)| n.as_str());
        let forget = tx.prepare_cached(FORGET_REFUND_LINES).await?;
        tx.execute(&forget, &[&numbers]).await?;
        let lines: Vec<(&str, &str, &RefundLineRow)> = replaced
            .iter()
            .flat_map(|(n, r, lines)| {
                lines
                    .iter()
                    .map(move |l| (n.as_str(), r.order_id.as_str(), l))
            })
            .collect();
        if !lines.is_empty() {
            let statement = tx.prepare_cached(INSERT_REFUND_LINES).await?;
            tx.execute(
                &statement,
                &[
                    &column(&lines, |l| l.0),
                    &column(&lines, |l| l.1),
                    &column(&lines, |l| l.2.line_id.as_str()),
                    &column(&lines, |l| l.2.amount),
                    &column(&lines, |l| l.2.tax),
                    &column(&lines, |l| l.2.reason.as_deref()),
                    &column(&lines, |l| l.2.description.as_deref()),
                ],
            )
            .await?;
        }
    }

    let memos: Vec<(&String, &Memo, &NewMemo)> = state
        .memos
        .iter()
        .filter_map(|(n, m)| m.new.as_ref().map(|new| (n, m, new)))
        .collect();
    if !memos.is_empty() {
        let lines: Vec<(&str, &MemoLine)> = memos
            .iter()
            .flat_map(|(n, m, _)| m.lines.iter().map(move |l| (n.as_str(), l)))
            .collect();
        let statement = tx.prepare_cached(INSERT_MEMOS).await?;
        tx.execute(
            &statement,
            &[
                &column(&memos, |(n, _, _)| n.as_str()),
                &column(&memos, |(_, m, _)| m.order_id.as_str()),
                &column(&memos, |(_, _, x)| x.rma.as_deref()),
                &column(&memos, |(_, _, x)| x.refund_type.as_deref()),
                &column(&memos, |(_, _, x)| x.credit_note_date),
                &column(&memos, |(_, _, x)| x.released_at),
                &column(&memos, |(_, _, x)| x.grand_total),
                &column(&memos, |(_, m, _)| m.payment_amount),
                &column(&memos, |(_, m, _)| m.store_credit_amount),
                &column(&memos, |(_, _, x)| x.unrefunded),
                &column(&lines, |(n, _)| *n),
                &column(&lines, |(_, l)| l.0.as_str()),
                &column(&lines, |(_, l)| l.1),
                &column(&lines, |(_, l)| l.2),
            ],
        )
        .await?;
    }
    if !state.credits.is_empty() {
        let c = &state.credits;
        let statement = tx.prepare_cached(CREDITS).await?;
        tx.execute(
            &statement,
            &[
                &column(c, |c| c.0.as_str()),
                &column(c, |c| c.1.as_str()),
                &column(c, |c| c.3),
                &column(c, |c| c.2.as_str()),
            ],
        )
        .await?;
    }
    Ok(())
}

/// One column of rows, for `unnest`.
fn column<'a, R, T>(rows: &'a [R], f: impl Fn(&'a R) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_supersedes_as_the_database_function_compares() {
        let day = |d: u32| {
            Some(
                chrono::NaiveDate::from_ymd_opt(2026, 3, d)
                    .unwrap()
                    .and_hms_opt(0, 0, 0)
                    .unwrap()
                    .and_utc(),
            )
        };
        assert!(supersedes(
            (day(2), 1, Some("A"), None),
            (day(1), 6, Some("Z"), None)
        ));
        assert!(supersedes(
            (day(1), 2, Some("A"), None),
            (day(1), 1, Some("Z"), None)
        ));
        assert!(supersedes(
            (day(1), 2, Some("B"), None),
            (day(1), 2, Some("A"), None)
        ));
        assert!(supersedes(
            (day(1), 2, Some("B"), Some("x")),
            (day(1), 2, Some("B"), None)
        ));
        assert!(!supersedes(
            (day(1), 2, Some("B"), None),
            (day(1), 2, Some("B"), None)
        ));
        assert!(supersedes(
            (None, 1, Some("A"), None),
            (None, 0, None, None)
        ));
        assert!(!supersedes(
            (None, 1, Some("A"), None),
            (day(1), 0, None, None)
        ));
    }

    #[test]
    fn times_compare_as_stored() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(stored(t).timestamp_subsec_nanos(), 123_456_000);
    }
}
