//! `shipping_address_updated`: the OMS changed where an order ships (an agent corrected it,
//! the customer asked). The new address replaces the order's shipping address row, so a
//! storefront reads it where it always did (`sales_orders.shipping_address_reference`).
//!
//! The message carries no date, so the updates of one order apply in arrival order: the one
//! applied last wins. An update repeated is `stale`.
//!
//! Two things keep the rest of the order as it was:
//! - The billing address never changes. When the order ships to its billing address (one
//!   row for both), the new address becomes a row of its own and the order's shipping
//!   reference points at it.
//! - The export is built from these rows and may be sent again after a crash until it is
//!   marked sent; an update applies only once the export is confirmed (the OMS cannot have
//!   changed an order it has not received), so a resend always carries what was placed.

use deadpool_postgres::Transaction;
use protocol::sales::{LineRef, ShippingAddressUpdate};
use runtime::Outcome;

use super::lines;

/// The reference of the shipping address split from a shared billing address.
const SPLIT_REFERENCE: &str = "oms-shipping";

const EXPORT_PENDING: &str = "
    SELECT EXISTS (SELECT 1 FROM outbox
                    WHERE module = 'sales' AND topic = 'order.create' AND subject = $1
                      AND sent_at IS NULL AND failed_at IS NULL)";

const REFERENCES: &str = "
    SELECT shipping_address_reference, billing_address_reference FROM sales_orders WHERE id = $1";

const UPDATE_ADDRESS: &str = "
    UPDATE sales_order_addresses
       SET first_name = $3, last_name = $4, address1 = $5, address2 = $6, city = $7,
           state = $8, zip = $9, country_code = $10, phone = $11, email = $12,
           oms_updated_at = now(), oms_updated_by = $13
     WHERE order_id = $1 AND reference = $2
       AND (first_name, last_name, address1, address2, city, state, zip, country_code, phone,
            email)
           IS DISTINCT FROM ($3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

const SPLIT_ADDRESS: &str = "
    INSERT INTO sales_order_addresses (order_id, reference, address_type, first_name,
                                       last_name, address1, address2, city, state, zip,
                                       country_code, phone, email, oms_updated_at,
                                       oms_updated_by)
    SELECT $1, $2, b.address_type, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now(), $13
      FROM sales_order_addresses b WHERE b.order_id = $1 AND b.reference = $14
    ON CONFLICT (order_id, reference) DO UPDATE
       SET first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name,
           address1 = EXCLUDED.address1, address2 = EXCLUDED.address2, city = EXCLUDED.city,
           state = EXCLUDED.state, zip = EXCLUDED.zip, country_code = EXCLUDED.country_code,
           phone = EXCLUDED.phone, email = EXCLUDED.email,
           oms_updated_at = EXCLUDED.oms_updated_at, oms_updated_by = EXCLUDED.oms_updated_by";

const POINT_SHIPPING: &str = "
    UPDATE sales_orders SET shipping_address_reference = $2, updated_at = now() WHERE id = $1";

pub async fn apply(
    tx: &Transaction<'_>,
    message: &ShippingAddressUpdate,
) -> Result<Outcome, tokio_postgres::Error> {
    let order_id = message.order_id.as_str();
    let pending = tx.prepare_cached(EXPORT_PENDING).await?;
    if tx
        .query_one(&pending, &[&order_id])
        .await?
        .get::<_, bool>(0)
    {
        return Ok(Outcome::Retry(format!(
            "order {order_id}: its export is not confirmed yet, so its address changes wait"
        )));
    }
    if let Some(number) = message.line_number {
        let lines = lines::load(tx, order_id).await?;
        if let Err(outcome) = lines::resolve(&lines, order_id, [&LineRef::Number(number)]) {
            return Ok(outcome);
        }
    }
    let references = tx.prepare_cached(REFERENCES).await?;
    let row = tx.query_one(&references, &[&order_id]).await?;
    let (shipping, billing): (Option<String>, String) = (row.get(0), row.get(1));
    let Some(shipping) = shipping else {
        return Ok(Outcome::Reject(format!(
            "order {order_id} ships nothing (it has no shipping address), so its shipping address cannot change"
        )));
    };
    let a = &message.address;
    let values: [&(dyn tokio_postgres::types::ToSql + Sync); 11] = [
        &a.first_name,
        &a.last_name,
        &a.address1,
        &a.address2,
        &a.city,
        &a.state,
        &a.zip,
        &a.country_code,
        &a.phone,
        &a.email,
        &message.user,
    ];
    if shipping != billing {
        let update = tx.prepare_cached(UPDATE_ADDRESS).await?;
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            vec![&order_id, &shipping];
        params.extend(values);
        let changed = tx.execute(&update, &params).await?;
        return Ok(if changed > 0 {
            Outcome::Applied
        } else {
            Outcome::Stale
        });
    }
    // One row for billing and shipping: the new shipping address gets its own.
    let split = if billing == SPLIT_REFERENCE {
        format!("{SPLIT_REFERENCE}-1")
    } else {
        SPLIT_REFERENCE.to_owned()
    };
    let insert = tx.prepare_cached(SPLIT_ADDRESS).await?;
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&order_id, &split];
    params.extend(values);
    params.push(&billing);
    tx.execute(&insert, &params).await?;
    let point = tx.prepare_cached(POINT_SHIPPING).await?;
    tx.execute(&point, &[&order_id, &split]).await?;
    Ok(Outcome::Applied)
}
