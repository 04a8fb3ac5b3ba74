//! Reading what a batch decides on: its orders (locked), their lines, invoices, shipments,
//! attributes and addresses, each in one query over every order of the batch, all sent in
//! one round trip behind the lock.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::version::Version;

use super::{Acceptance, Address, Invoice, LineState, OrderState, Stored};

/// Locks the batch's orders in id order (two replicas applying messages about one order
/// take turns and never deadlock) and reads their header.
const LOCK: &str = "
    SELECT id, store, oms_status, oms_status_reason, oms_status_date, oms_status_rank,
           oms_accepted_at IS NOT NULL, shipping_address_reference, billing_address_reference
      FROM sales_orders WHERE id = ANY ($1::text[]) ORDER BY id FOR UPDATE";

/// The transaction's clock (what `now()` writes) and the ids the batch's new invoices and
/// shipments will take, reserved in advance so that a message can name a shipment an
/// earlier message of the batch made, and the latest invoice is known before any is written.
const CLOCK_AND_IDS: &str = "
    SELECT now(),
           ARRAY(SELECT nextval('sales_invoices_id_seq') FROM generate_series(1, $1::int4)),
           ARRAY(SELECT nextval('sales_shipments_id_seq') FROM generate_series(1, $2::int4))";

const LINES: &str = "
    SELECT order_id, line_id, line_number, product_type, sku, cancelled_at IS NOT NULL,
           status, status_reason, status_date, status_rank,
           payment_status, payment_status_date, payment_status_rank
      FROM sales_order_lines WHERE order_id = ANY ($1::text[]) ORDER BY order_id, line_number";

const INVOICES: &str = "
    SELECT order_id, id, first_line_id, captured_at FROM sales_invoices
     WHERE order_id = ANY ($1::text[])";

const INVOICED: &str = "
    SELECT order_id, line_id, invoice_id FROM sales_invoice_lines
     WHERE order_id = ANY ($1::text[])";

const SHIPPED: &str = "
    SELECT order_id, line_id, shipment_id FROM sales_shipment_lines
     WHERE order_id = ANY ($1::text[])";

/// Each shipment message's key (as `apply::shipments` names a shipment) and whether the
/// order has a shipment of that key already.
const SHIPMENT_KEYS: &str = "
    SELECT k.key, EXISTS (SELECT 1 FROM sales_shipments s
                           WHERE s.order_id = u.order_id AND s.shipment_key = k.key)
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY
           AS u(order_id, shipment_id, request_id, content, n)
     CROSS JOIN LATERAL (SELECT coalesce('id:' || u.shipment_id, 'request:' || u.request_id,
                                         'content:' || md5(u.content)) AS key) k
     ORDER BY u.n";

const ORDER_ATTRIBUTES: &str = "
    SELECT order_id, code, value FROM sales_order_attributes WHERE order_id = ANY ($1::text[])";

const LINE_ATTRIBUTES: &str = "
    SELECT order_id, line_id, code, value FROM sales_order_line_attributes
     WHERE order_id = ANY ($1::text[])";

const ADDRESSES: &str = "
    SELECT order_id, reference, address_type, first_name, last_name, address1, address2, city,
           state, zip, country_code, phone, email
      FROM sales_order_addresses WHERE order_id = ANY ($1::text[])";

const EXPORT_PENDING: &str = "
    SELECT DISTINCT subject FROM outbox
     WHERE module = 'sales' AND topic = 'order.create' AND subject = ANY ($1::text[])
       AND sent_at IS NULL AND failed_at IS NULL";

/// The stores of `$1` that have orders here: one index probe per store named. (Reading the
/// orders of those stores and keeping the distinct ones read every order of the shop.)
const STORES: &str = "
    SELECT s FROM unnest($1::text[]) AS s
     WHERE EXISTS (SELECT 1 FROM sales_orders o WHERE o.store = s)
     ORDER BY s";

/// What to read: the order ids of the batch, and of the messages of each kind.
#[derive(Debug, Default)]
pub struct Wanted<'a> {
    pub orders: Vec<&'a str>,
    /// Orders whose invoices a message may change (order updates, line cancellations).
    pub invoices: Vec<&'a str>,
    /// Orders with a shipment message.
    pub shipped: Vec<&'a str>,
    pub order_attributes: Vec<&'a str>,
    pub line_attributes: Vec<&'a str>,
    pub addresses: Vec<&'a str>,
    /// `(order id, shipment id, request id, content)` of each shipment message, in order.
    pub shipments: Vec<(&'a str, Option<&'a str>, Option<&'a str>, String)>,
    /// The channels messages name, when the shop's channel is each order's store.
    pub stores: Vec<&'a str>,
    /// How many invoice ids the batch may need at most.
    pub invoice_ids: i32,
}

/// What the batch found.
pub struct Loaded {
    pub now: DateTime<Utc>,
    pub orders: HashMap<String, OrderState>,
    pub invoice_ids: Vec<i64>,
    pub shipment_ids: Vec<i64>,
    /// Per shipment message (in order): its key, and whether it is stored already.
    pub shipment_keys: Vec<(String, bool)>,
    /// The stores among [`Wanted::stores`] that are an order's.
    pub stores: HashSet<String>,
}

pub async fn load(
    tx: &Transaction<'_>,
    wanted: &Wanted<'_>,
) -> Result<Loaded, tokio_postgres::Error> {
    // Every statement is prepared first, so that the queries leave together and reach the
    // server in this order: the lock first, the reads behind it.
    let sql = [
        LOCK,
        CLOCK_AND_IDS,
        LINES,
        INVOICES,
        INVOICED,
        SHIPPED,
        SHIPMENT_KEYS,
        ORDER_ATTRIBUTES,
        LINE_ATTRIBUTES,
        ADDRESSES,
        EXPORT_PENDING,
        STORES,
    ];
    let statements = futures::future::try_join_all(sql.map(|s| tx.prepare_cached(s))).await?;
    let [
        lock,
        clock,
        lines,
        invoices,
        invoiced,
        shipped,
        keys,
        order_attributes,
        line_attributes,
        addresses,
        pending,
        stores,
    ] = <[_; 12]>::try_from(statements).expect("twelve statements");
    let shipments = u32::try_from(wanted.shipments.len()).map_or(i32::MAX, |n| n as i32);
    let key_orders: Vec<&str> = wanted.shipments.iter().map(|s| s.0).collect();
    let key_ids: Vec<Option<&str>> = wanted.shipments.iter().map(|s| s.1).collect();
    let key_requests: Vec<Option<&str>> = wanted.shipments.iter().map(|s| s.2).collect();
    let key_contents: Vec<&str> = wanted.shipments.iter().map(|s| s.3.as_str()).collect();
    let ids: [&(dyn ToSql + Sync); 1] = [&wanted.orders];
    let clock_params: [&(dyn ToSql + Sync); 2] = [&wanted.invoice_ids, &shipments];
    let invoice_params: [&(dyn ToSql + Sync); 1] = [&wanted.invoices];
    let shipped_params: [&(dyn ToSql + Sync); 1] = [&wanted.shipped];
    let key_params: [&(dyn ToSql + Sync); 4] =
        [&key_orders, &key_ids, &key_requests, &key_contents];
    let order_attribute_params: [&(dyn ToSql + Sync); 1] = [&wanted.order_attributes];
    let line_attribute_params: [&(dyn ToSql + Sync); 1] = [&wanted.line_attributes];
    let address_params: [&(dyn ToSql + Sync); 1] = [&wanted.addresses];
    let store_params: [&(dyn ToSql + Sync); 1] = [&wanted.stores];
    let (
        lock_rows,
        clock_rows,
        line_rows,
        invoice_rows,
        invoiced_rows,
        shipped_rows,
        key_rows,
        order_attribute_rows,
        line_attribute_rows,
        address_rows,
        pending_rows,
        store_rows,
    ) = futures::try_join!(
        tx.query(&lock, &ids),
        tx.query(&clock, &clock_params),
        tx.query(&lines, &ids),
        read_if(tx, !wanted.invoices.is_empty(), &invoices, &invoice_params),
        read_if(tx, !wanted.invoices.is_empty(), &invoiced, &invoice_params),
        read_if(tx, !wanted.shipped.is_empty(), &shipped, &shipped_params),
        read_if(tx, !wanted.shipments.is_empty(), &keys, &key_params),
        read_if(
            tx,
            !wanted.order_attributes.is_empty(),
            &order_attributes,
            &order_attribute_params
        ),
        read_if(
            tx,
            !wanted.line_attributes.is_empty(),
            &line_attributes,
            &line_attribute_params
        ),
        read_if(
            tx,
            !wanted.addresses.is_empty(),
            &addresses,
            &address_params
        ),
        read_if(tx, !wanted.addresses.is_empty(), &pending, &address_params),
        read_if(tx, !wanted.stores.is_empty(), &stores, &store_params),
    )?;

    let mut orders: HashMap<String, OrderState> = lock_rows
        .iter()
        .map(|r| {
            let reason: Option<String> = r.get(3);
            let status: Option<String> = r.get(2);
            let stored = Stored {
                version: Version::new(
                    r.get(4),
                    r.get(5),
                    status.as_deref().unwrap_or_default(),
                    reason.as_deref(),
                ),
                status,
                reason,
            };
            (
                r.get(0),
                OrderState {
                    store: r.get(1),
                    status: stored,
                    accepted: if r.get(6) {
                        Acceptance::Stored
                    } else {
                        Acceptance::Not
                    },
                    shipping_reference: r.get(7),
                    billing_reference: r.get(8),
                    ..OrderState::default()
                },
            )
        })
        .collect();
    for r in &line_rows {
        let Some(order) = orders.get_mut(r.get::<_, &str>(0)) else {
            continue;
        };
        let status: Option<String> = r.get(6);
        let reason: Option<String> = r.get(7);
        let payment: Option<String> = r.get(10);
        order.lines.push(LineState {
            line_id: r.get(1),
            line_number: r.get(2),
            product_type: r.get(3),
            sku: r.get(4),
            cancelled: r.get(5),
            status: Stored {
                version: Version::new(
                    r.get(8),
                    r.get(9),
                    status.as_deref().unwrap_or_default(),
                    reason.as_deref(),
                ),
                status,
                reason,
            },
            payment: Stored {
                version: Version::new(
                    r.get(11),
                    r.get(12),
                    payment.as_deref().unwrap_or_default(),
                    None,
                ),
                status: payment,
                reason: None,
            },
            payment_changed: false,
            status_changed: false,
        });
    }
    for r in &invoice_rows {
        if let Some(order) = orders.get_mut(r.get::<_, &str>(0)) {
            order.invoices.push(Invoice {
                id: r.get(1),
                first_line_id: r.get(2),
                captured_at: r.get(3),
                new: false,
                dated_back: false,
            });
        }
    }
    for r in &invoiced_rows {
        if let Some(order) = orders.get_mut(r.get::<_, &str>(0)) {
            order.invoiced.insert(r.get(1), r.get(2));
        }
    }
    for r in &shipped_rows {
        if let Some(order) = orders.get_mut(r.get::<_, &str>(0)) {
            order.shipped.insert(r.get(1), r.get(2));
        }
    }
    for r in &order_attribute_rows {
        if let Some(order) = orders.get_mut(r.get::<_, &str>(0)) {
            order.attributes.insert(r.get(1), r.get(2));
        }
    }
    for r in &line_attribute_rows {
        if let Some(order) = orders.get_mut(r.get::<_, &str>(0)) {
            order.line_attributes.insert((r.get(1), r.get(2)), r.get(3));
        }
    }
    for r in &address_rows {
        if let Some(order) = orders.get_mut(r.get::<_, &str>(0)) {
            order.addresses.insert(
                r.get(1),
                Address {
                    address_type: r.get(2),
                    first_name: r.get(3),
                    last_name: r.get(4),
                    address1: r.get(5),
                    address2: r.get(6),
                    city: r.get(7),
                    state: r.get(8),
                    zip: r.get(9),
                    country_code: r.get(10),
                    phone: r.get(11),
                    email: r.get(12),
                    updated_by: None,
                    changed: false,
                },
            );
        }
    }
    for r in &pending_rows {
        if let Some(order) = orders.get_mut(r.get::<_, &str>(0)) {
            order.export_pending = true;
        }
    }
    let clock = clock_rows.first().expect("one row");
    Ok(Loaded {
        now: clock.get(0),
        invoice_ids: clock.get(1),
        shipment_ids: clock.get(2),
        orders,
        shipment_keys: key_rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        stores: store_rows.iter().map(|r| r.get(0)).collect(),
    })
}

/// A read sent only when a message of the batch needs it.
async fn read_if(
    tx: &Transaction<'_>,
    needed: bool,
    statement: &tokio_postgres::Statement,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    if needed {
        tx.query(statement, params).await
    } else {
        Ok(Vec::new())
    }
}
