//! Line cancellations and custom attribute updates. They carry no version: a cancellation
//! is a fact (cancelled once, stays cancelled); attributes apply in arrival order.

use deadpool_postgres::Transaction;
use protocol::sales::{AttributesUpdate, LineCancelled, LineRef};
use runtime::Outcome;

use super::{invoices, lines};

const CANCEL_LINE: &str = "
    UPDATE sales_order_lines SET cancelled_at = now()
     WHERE order_id = $1 AND line_id = $2 AND cancelled_at IS NULL";

const ORDER_ATTRIBUTES: &str = "
    INSERT INTO sales_order_attributes (order_id, code, value)
    SELECT $1, a.code, a.value FROM unnest($2::text[], $3::text[]) AS a(code, value)
    ON CONFLICT (order_id, code) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
     WHERE sales_order_attributes.value IS DISTINCT FROM EXCLUDED.value";

const LINE_ATTRIBUTES: &str = "
    INSERT INTO sales_order_line_attributes (order_id, line_id, code, value)
    SELECT $1, $2, a.code, a.value FROM unnest($3::text[], $4::text[]) AS a(code, value)
    ON CONFLICT (order_id, line_id, code) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
     WHERE sales_order_line_attributes.value IS DISTINCT FROM EXCLUDED.value";

pub async fn cancel_line(
    tx: &Transaction<'_>,
    message: &LineCancelled,
) -> Result<Outcome, tokio_postgres::Error> {
    let order_id = message.order_id.as_str();
    let mut lines = lines::load(tx, order_id).await?;
    let line_ref = LineRef::Id(message.line_id.clone());
    let line_id = match lines::resolve(&lines, order_id, [&line_ref]) {
        Ok(found) => found[0].line_id.clone(),
        Err(outcome) => return Ok(outcome),
    };
    let statement = tx.prepare_cached(CANCEL_LINE).await?;
    if tx.execute(&statement, &[&order_id, &line_id]).await? == 0 {
        return Ok(Outcome::Stale);
    }
    // The cancelled line may have been the last one keeping the shipping from being invoiced.
    for line in &mut lines {
        if line.line_id == line_id {
            line.cancelled = true;
        }
    }
    invoices::settle_shipping(tx, order_id, &lines).await?;
    Ok(Outcome::Applied)
}

pub async fn update(
    tx: &Transaction<'_>,
    message: &AttributesUpdate,
) -> Result<Outcome, tokio_postgres::Error> {
    let order_id = message.order_id.as_str();
    let codes: Vec<&str> = message.attributes.iter().map(|(c, _)| c.as_str()).collect();
    let values: Vec<&str> = message.attributes.iter().map(|(_, v)| v.as_str()).collect();
    let written = match &message.line {
        None => {
            let statement = tx.prepare_cached(ORDER_ATTRIBUTES).await?;
            tx.execute(&statement, &[&order_id, &codes, &values])
                .await?
        }
        Some(line_ref) => {
            let lines = lines::load(tx, order_id).await?;
            let line_id = match lines::resolve(&lines, order_id, [line_ref]) {
                Ok(found) => found[0].line_id.clone(),
                Err(outcome) => return Ok(outcome),
            };
            let statement = tx.prepare_cached(LINE_ATTRIBUTES).await?;
            tx.execute(&statement, &[&order_id, &line_id, &codes, &values])
                .await?
        }
    };
    Ok(if written > 0 {
        Outcome::Applied
    } else {
        Outcome::Stale
    })
}
