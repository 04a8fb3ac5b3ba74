//! `refund_management.updated`: refunds and their credit memos.
//!
//! A refund is known by its credit note number, or, when the OMS sends none (the
//! specification makes it optional), by a digest of its content ([`Refund::digest`]), stored
//! as `digest:<sha-256>` in place of the number. A refund line's `order_line` is a line id or
//! a line number: [`refunded_lines`] decides which line it is, with `order_item_id` when both
//! readings name a line, and never guesses. Its status is a compare-and-set on
//! `(status.date, rank)` (see [`crate::status::refund_rank`]): `PENDINGRELEASE` is recorded
//! as pending; `RELEASED` creates the credit memo, exactly the refunded lines and amounts,
//! once per credit note number however many times the release is delivered and whatever
//! arrived before it, and credits the store credit the memo gives back
//! ([`crate::store_credit::split_refund`]) under the natural key of the credit note.
//!
//! A refund the order cannot have (a line it does not have, more than a line cost, more than
//! the order's total with what earlier credit memos refunded) is dead-lettered before it
//! writes anything.

use std::collections::{BTreeMap, HashMap};

use deadpool_postgres::Transaction;
use orders::lines::{self, OrderLine};
use protocol::postsales::{Refund, RefundAttributesUpdate};
use runtime::Outcome;
use rust_decimal::Decimal;
use serde_json::{Map, Value};

use crate::status::{is_released, refund_rank};
use crate::store_credit::{self, OrderTenders, split_refund};

const ORDER_OF_CREDIT_NOTE: &str =
    "SELECT order_id FROM postsales_refunds WHERE credit_note_number = $1";

/// What other credit notes' memos refunded of each line of the order.
const REFUNDED_ELSEWHERE: &str = "
    SELECT ml.line_id, sum(ml.amount)
      FROM postsales_credit_memo_lines ml
      JOIN postsales_credit_memos m ON m.id = ml.credit_memo_id
     WHERE m.order_id = $1 AND m.credit_note_number <> $2
     GROUP BY ml.line_id";

const UPSERT: &str = "
    INSERT INTO postsales_refunds AS r (credit_note_number, order_id, rma, refund_type,
        refund_reason, requested_by, credit_note_date, amount, status, status_reason,
        status_date, status_rank, custom_attributes)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
    ON CONFLICT (credit_note_number) DO UPDATE
       SET rma = EXCLUDED.rma, refund_type = EXCLUDED.refund_type,
           refund_reason = EXCLUDED.refund_reason, requested_by = EXCLUDED.requested_by,
           credit_note_date = EXCLUDED.credit_note_date, amount = EXCLUDED.amount,
           status = EXCLUDED.status, status_reason = EXCLUDED.status_reason,
           status_date = EXCLUDED.status_date, status_rank = EXCLUDED.status_rank,
           custom_attributes = EXCLUDED.custom_attributes,
           updated_at = now()
     WHERE (r.status_date, r.status_rank) < (EXCLUDED.status_date, EXCLUDED.status_rank)";

const FORGET_LINES: &str = "DELETE FROM postsales_refund_lines WHERE credit_note_number = $1";

const LINES: &str = "
    INSERT INTO postsales_refund_lines (credit_note_number, order_id, line_id, amount,
                                        tax_amount, reason, reason_description)
    SELECT $1, $2, l.line_id, l.amount, l.tax, l.reason, l.description
      FROM unnest($3::text[], $4::numeric[], $5::numeric[], $6::text[], $7::text[])
           AS l(line_id, amount, tax, reason, description)";

const MEMO_EXISTS: &str =
    "SELECT EXISTS (SELECT 1 FROM postsales_credit_memos WHERE credit_note_number = $1)";

/// What the order's earlier credit memos gave back to the payment and as store credit.
const GIVEN_BACK: &str = "
    SELECT coalesce(sum(payment_amount), 0), coalesce(sum(store_credit_amount), 0)
      FROM postsales_credit_memos WHERE order_id = $1";

const MEMO: &str = "
    INSERT INTO postsales_credit_memos (credit_note_number, order_id, rma, refund_type,
        credit_note_date, released_at, grand_total, payment_amount, store_credit_amount,
        unrefunded_amount)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
    ON CONFLICT (credit_note_number) DO NOTHING
    RETURNING id";

const MEMO_LINES: &str = "
    INSERT INTO postsales_credit_memo_lines (credit_memo_id, order_id, line_id, amount, tax_amount)
    SELECT $1, $2, l.line_id, l.amount, l.tax
      FROM unnest($3::text[], $4::numeric[], $5::numeric[]) AS l(line_id, amount, tax)";

const REFUND_EXISTS: &str = "
    SELECT order_id, custom_attributes @> $2 FROM postsales_refunds WHERE credit_note_number = $1";

const MERGE_ATTRIBUTES: &str = "
    UPDATE postsales_refunds SET custom_attributes = custom_attributes || $2, updated_at = now()
     WHERE credit_note_number = $1";

/// One refunded order line: the message's lines for it, added up.
#[derive(Debug, Clone)]
struct Refunded<'a> {
    line: &'a OrderLine,
    amount: Decimal,
    tax: Option<Decimal>,
    reason: Option<&'a str>,
    description: Option<&'a str>,
}

/// Applies a `refund_management.updated`.
pub async fn apply(
    tx: &Transaction<'_>,
    refund: &Refund,
) -> Result<Outcome, tokio_postgres::Error> {
    let order_id = refund.order_id.as_str();
    let number = refund.key.as_str();
    let order_lines = lines::load(tx, order_id).await?;
    let named = match refunded_lines(&order_lines, refund) {
        Ok(named) => named,
        Err(outcome) => return Ok(outcome),
    };
    let of = tx.prepare_cached(ORDER_OF_CREDIT_NOTE).await?;
    if let Some(row) = tx.query_opt(&of, &[&number]).await? {
        let owner: String = row.get(0);
        if owner != order_id {
            return Ok(Outcome::Reject(format!(
                "credit note {number} is a refund of order {owner}, not of order {order_id}"
            )));
        }
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
    if let Some(reason) = over_what_was_paid(tx, refund, &order_lines, &refunded).await? {
        return Ok(Outcome::Reject(reason));
    }

    let attributes: Map<String, Value> = refund
        .attributes
        .iter()
        .map(|(c, v)| (c.clone(), Value::from(v.as_str())))
        .collect();
    let upsert = tx.prepare_cached(UPSERT).await?;
    let won = tx
        .execute(
            &upsert,
            &[
                &number,
                &order_id,
                &refund.rma,
                &refund.refund_type,
                &refund.refund_reason,
                &refund.user,
                &refund.credit_note_date,
                &refund.total(),
                &refund.status.code,
                &refund.status.reason,
                &refund.status.date,
                &refund_rank(&refund.status.code),
                &Value::Object(attributes),
            ],
        )
        .await?
        > 0;
    if won {
        // The lines of the newest message about the refund.
        let forget = tx.prepare_cached(FORGET_LINES).await?;
        tx.execute(&forget, &[&number]).await?;
        let columns = Columns::of(&refunded);
        let add = tx.prepare_cached(LINES).await?;
        tx.execute(
            &add,
            &[
                &number,
                &order_id,
                &columns.ids,
                &columns.amounts,
                &columns.taxes,
                &columns.reasons,
                &columns.descriptions,
            ],
        )
        .await?;
    }
    let mut changed = won;
    if is_released(&refund.status.code) {
        changed |= credit_memo(tx, refund, &order_lines, &refunded).await?;
    }
    Ok(if changed {
        Outcome::Applied
    } else {
        Outcome::Stale
    })
}

/// Why the refund gives back more than was paid, if it does: more than a line cost, or more
/// than the order's total, with what other credit notes refunded.
async fn over_what_was_paid(
    tx: &Transaction<'_>,
    refund: &Refund,
    order_lines: &[OrderLine],
    refunded: &BTreeMap<&str, Refunded<'_>>,
) -> Result<Option<String>, tokio_postgres::Error> {
    let order_id = refund.order_id.as_str();
    let number = refund.key.as_str();
    let statement = tx.prepare_cached(REFUNDED_ELSEWHERE).await?;
    let elsewhere: HashMap<String, Decimal> = tx
        .query(&statement, &[&order_id, &number])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let order_total: Decimal = order_lines.iter().map(|l| l.gross_amount).sum();
    let refunded_before: Decimal = elsewhere.values().copied().sum();
    let this = refund.total();
    if this + refunded_before > order_total {
        return Ok(Some(format!(
            "credit note {number} refunds {this}, which with the {refunded_before} refunded before is over order {order_id}'s total of {order_total}"
        )));
    }
    for (line_id, r) in refunded {
        let before = elsewhere.get(*line_id).copied().unwrap_or_default();
        if r.amount + before > r.line.gross_amount {
            return Ok(Some(format!(
                "credit note {number} refunds {} of order {order_id}'s line {line_id} ({}), which cost {} ({before} refunded before)",
                r.amount, r.line.sku, r.line.gross_amount
            )));
        }
    }
    Ok(None)
}

/// Creates the refund's credit memo and credits its store credit, unless the credit note
/// already has its memo. True if it created it now.
async fn credit_memo(
    tx: &Transaction<'_>,
    refund: &Refund,
    order_lines: &[OrderLine],
    refunded: &BTreeMap<&str, Refunded<'_>>,
) -> Result<bool, tokio_postgres::Error> {
    let order_id = refund.order_id.as_str();
    let number = refund.key.as_str();
    let exists = tx.prepare_cached(MEMO_EXISTS).await?;
    if tx.query_one(&exists, &[&number]).await?.get::<_, bool>(0) {
        return Ok(false);
    }
    let order = orders::orders::tenders(tx, order_id).await?;
    let given = tx.prepare_cached(GIVEN_BACK).await?;
    let given = tx.query_one(&given, &[&order_id]).await?;
    let tenders = OrderTenders {
        lines_total: order_lines.iter().map(|l| l.gross_amount).sum(),
        gift_card: order.gift_card_amount,
        store_credit: order.store_credit_amount,
        has_customer: order.customer_id.is_some(),
        refunded_to_payment: given.get(0),
        store_credited: given.get(1),
    };
    let total = refund.total();
    let split = split_refund(total, &tenders);
    let memo = tx.prepare_cached(MEMO).await?;
    let Some(row) = tx
        .query_opt(
            &memo,
            &[
                &number,
                &order_id,
                &refund.rma,
                &refund.refund_type,
                &refund.credit_note_date,
                &refund.status.date,
                &total,
                &split.to_payment,
                &split.store_credit,
                &split.unrefunded,
            ],
        )
        .await?
    else {
        return Ok(false);
    };
    let memo_id: i64 = row.get(0);
    let columns = Columns::of(refunded);
    let lines = tx.prepare_cached(MEMO_LINES).await?;
    tx.execute(
        &lines,
        &[
            &memo_id,
            &order_id,
            &columns.ids,
            &columns.amounts,
            &columns.taxes,
        ],
    )
    .await?;
    if let Some(customer) = &order.customer_id
        && split.store_credit > Decimal::ZERO
    {
        store_credit::credit(tx, customer, number, order_id, split.store_credit).await?;
    }
    tracing::debug!(order_id, credit_note = number, %total, to_payment = %split.to_payment,
        store_credit = %split.store_credit, "credit memo");
    Ok(true)
}

/// The order line each refund line names, in the message's order. `order_line` may be a line
/// id or a line number (exported line ids can be numbers too: line id `2` may be line number
/// 3): when only one reading names a line of the order, that is the line; when both name
/// different lines, `order_item_id` (an exported line id, or the storefront's order item
/// whose units the lines are) must tell them apart. A refund that stays ambiguous, or whose
/// `order_item_id` contradicts its `order_line`, is dead-lettered with the reason; one before
/// the order's export is retried.
pub(crate) fn refunded_lines<'l>(
    order_lines: &'l [OrderLine],
    refund: &Refund,
) -> Result<Vec<&'l OrderLine>, Outcome> {
    let order_id = refund.order_id.as_str();
    let mut found = Vec::with_capacity(refund.lines.len());
    for (i, line) in refund.lines.iter().enumerate() {
        let text = line.order_line.as_str();
        if order_lines.is_empty() {
            return Err(Outcome::Retry(format!(
                "order {order_id} has not been exported yet, so it has no line {text:?}"
            )));
        }
        let by_id = order_lines.iter().find(|l| l.line_id == text);
        let by_number = text
            .parse::<i64>()
            .ok()
            .and_then(|n| order_lines.iter().find(|l| i64::from(l.line_number) == n));
        let mut candidates: Vec<&OrderLine> = by_id.into_iter().collect();
        if let Some(l) = by_number
            && !candidates.iter().any(|c| c.line_id == l.line_id)
        {
            candidates.push(l);
        }
        let at = format!("refund.lines[{i}]");
        // The item's lines, when order_item_id names lines of this order at all (an id of
        // the OMS's own says nothing about ours).
        let of_item = |l: &OrderLine, item: &str| {
            l.line_id == item || l.item_id.is_some_and(|id| id.to_string() == item)
        };
        let item = line
            .order_item_id
            .as_deref()
            .filter(|item| order_lines.iter().any(|l| of_item(l, item)));
        if let Some(item) = item {
            let before = candidates.clone();
            candidates.retain(|l| of_item(l, item));
            if candidates.is_empty() && !before.is_empty() {
                let named: Vec<String> = before.iter().map(|l| describe(l)).collect();
                return Err(Outcome::Reject(format!(
                    "{at}: order_line {text:?} names {} of order {order_id}, which is not of \
                     order_item_id {item:?}; the refund contradicts itself",
                    named.join(" or ")
                )));
            }
        }
        match candidates.as_slice() {
            [one] => found.push(*one),
            [] => {
                return Err(Outcome::Reject(match text.parse::<i64>() {
                    Ok(n) => format!(
                        "{at}: order {order_id} has no line with number {n} nor with id {text:?}: \
                         the refund names an order line this Commerce never exported"
                    ),
                    Err(_) => format!(
                        "{at}: order {order_id} has no line with id {text:?}: the refund names \
                         an order line this Commerce never exported"
                    ),
                }));
            }
            [as_id, as_number, ..] => {
                return Err(Outcome::Reject(format!(
                    "{at}: order_line {text:?} is ambiguous: as a line id it names {}, as a line \
                     number {}, and {}; refusing to guess which line is refunded",
                    describe(as_id),
                    describe(as_number),
                    match &line.order_item_id {
                        Some(item) => format!("order_item_id {item:?} is of neither"),
                        None => "the line sends no order_item_id to tell them apart".to_owned(),
                    }
                )));
            }
        }
    }
    Ok(found)
}

/// A line as a reason names it: `line "1-2" (number 2, MUG)`.
fn describe(line: &OrderLine) -> String {
    format!(
        "line {:?} (number {}, {})",
        line.line_id, line.line_number, line.sku
    )
}

/// The refunded lines as parallel arrays, for `unnest`.
struct Columns<'a> {
    ids: Vec<&'a str>,
    amounts: Vec<Decimal>,
    taxes: Vec<Option<Decimal>>,
    reasons: Vec<Option<&'a str>>,
    descriptions: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    fn of(refunded: &'a BTreeMap<&str, Refunded<'_>>) -> Self {
        Self {
            ids: refunded.keys().copied().collect(),
            amounts: refunded.values().map(|r| r.amount).collect(),
            taxes: refunded.values().map(|r| r.tax).collect(),
            reasons: refunded.values().map(|r| r.reason).collect(),
            descriptions: refunded.values().map(|r| r.description).collect(),
        }
    }
}

/// Applies `refund_management.custom_attributes_updated` (no version: merged in arrival
/// order). A refund that is not here yet may be on its way: retried.
pub async fn apply_attributes(
    tx: &Transaction<'_>,
    update: &RefundAttributesUpdate,
) -> Result<Outcome, tokio_postgres::Error> {
    let number = update.credit_note_number.as_str();
    let attributes = Value::Object(
        update
            .attributes
            .iter()
            .map(|(c, v)| (c.clone(), Value::from(v.as_str())))
            .collect(),
    );
    let exists = tx.prepare_cached(REFUND_EXISTS).await?;
    let Some(row) = tx.query_opt(&exists, &[&number, &attributes]).await? else {
        return Ok(Outcome::Retry(format!(
            "refund {number} of order {} is not in this Commerce yet; waiting for it",
            update.order_id
        )));
    };
    let owner: String = row.get(0);
    if owner != update.order_id {
        return Ok(Outcome::Reject(format!(
            "credit note {number} is a refund of order {owner}, not of order {}",
            update.order_id
        )));
    }
    if row.get::<_, bool>(1) {
        return Ok(Outcome::Stale);
    }
    let merge = tx.prepare_cached(MERGE_ATTRIBUTES).await?;
    tx.execute(&merge, &[&number, &attributes]).await?;
    Ok(Outcome::Applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of an order exported with two mugs (item 1: lines `1-1`, `1-2`), a shirt
    /// (item 2: line `2`, number 3) and shipping: the line id `2` is line number 3.
    fn order() -> Vec<OrderLine> {
        let line = |id: &str, number: i32, sku: &str, item: Option<i64>| OrderLine {
            line_id: id.into(),
            line_number: number,
            sku: sku.into(),
            gross_amount: Decimal::TEN,
            shipped: true,
            item_id: item,
        };
        vec![
            line("1-1", 1, "MUG", Some(1)),
            line("1-2", 2, "MUG", Some(1)),
            line("2", 3, "SHIRT", Some(2)),
            line("SHIPPING", 4, "UPS-GND", None),
        ]
    }

    fn refund(order_line: &str, order_item_id: Option<&str>) -> Refund {
        let mut line = serde_json::json!({"order_line": order_line, "reason_description": "",
            "payments": [{"ref": "", "details": {"cost_gross": "1"}}]});
        if let Some(item) = order_item_id {
            line["order_item_id"] = item.into();
        }
        let params = serde_json::json!({"refund": {"order_id": "9", "store_id": "default",
            "status": {"code": "RELEASED", "date": "2026-01-01"}, "lines": [line]}});
        let raw = serde_json::value::RawValue::from_string(params.to_string()).unwrap();
        protocol::postsales::parse_refund(&raw).unwrap()
    }

    fn line_of(order_line: &str, order_item_id: Option<&str>) -> Result<String, String> {
        let lines = order();
        match refunded_lines(&lines, &refund(order_line, order_item_id)) {
            Ok(found) => Ok(found[0].line_id.clone()),
            Err(Outcome::Reject(reason)) => Err(reason),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_reading_that_names_no_line_is_no_reading() {
        assert_eq!(line_of("1-2", None).unwrap(), "1-2", "an id only");
        assert_eq!(line_of("3", None).unwrap(), "2", "a number only");
        assert_eq!(line_of("SHIPPING", None).unwrap(), "SHIPPING");
        assert_eq!(
            line_of("2", Some("1-2")).unwrap(),
            "1-2",
            "order_item_id as the exported line id"
        );
    }

    #[test]
    fn order_item_id_tells_a_line_id_from_a_line_number() {
        // `2` is line id "2" (the shirt) and line number 2 (the second mug).
        assert_eq!(line_of("2", Some("1")).unwrap(), "1-2", "the mug's item");
        assert_eq!(line_of("2", Some("2")).unwrap(), "2", "the shirt's item");
        assert_eq!(line_of("2", Some("1-2")).unwrap(), "1-2");
    }

    #[test]
    fn an_ambiguous_or_self_contradicting_refund_line_is_refused_not_guessed() {
        let reason = line_of("2", None).unwrap_err();
        assert_eq!(
            reason,
            "refund.lines[0]: order_line \"2\" is ambiguous: as a line id it names line \"2\" \
             (number 3, SHIRT), as a line number line \"1-2\" (number 2, MUG), and the line \
             sends no order_item_id to tell them apart; refusing to guess which line is refunded"
        );
        // An item id of the OMS's own names no line of ours, so it cannot decide.
        let reason = line_of("2", Some("OMS-77")).unwrap_err();
        assert!(
            reason.contains("order_item_id \"OMS-77\" is of neither"),
            "{reason}"
        );
        let reason = line_of("1-1", Some("2")).unwrap_err();
        assert!(
            reason.contains(
                "names line \"1-1\" (number 1, MUG) of order 9, which is not of order_item_id \"2\""
            ),
            "{reason}"
        );
        let reason = line_of("42", None).unwrap_err();
        assert!(
            reason.contains("order 9 has no line with number 42 nor with id \"42\""),
            "{reason}"
        );
    }

    #[test]
    fn a_refund_before_the_orders_export_waits_for_it() {
        let outcome = refunded_lines(&[], &refund("1", None)).unwrap_err();
        assert!(matches!(outcome, Outcome::Retry(_)), "{outcome:?}");
    }
}
