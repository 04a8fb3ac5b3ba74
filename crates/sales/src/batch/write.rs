//! Writing what a batch decided: the end state of every row it changed, one set-based
//! statement per kind of row (`unnest` arrays), all sent in one round trip.
//!
//! An update joined to its arrays also names the keys as `= ANY` of the first array: the
//! join alone let the planner hash the whole table (a sequential scan of every order or
//! line of the shop per batch); with it the rows are found by their index.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use rust_decimal::Decimal;
use tokio_postgres::types::ToSql;

use super::Batch;
use crate::status::commerce_state;

const FOREIGN_ORDERS: &str = "
    INSERT INTO sales_foreign_orders (order_id, sales_channel, messages)
    SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])
    ON CONFLICT (order_id, sales_channel) DO UPDATE
       SET messages = sales_foreign_orders.messages + EXCLUDED.messages, last_seen = now()";

const ACCEPTED: &str = "
    UPDATE sales_orders SET oms_accepted_at = now(), updated_at = now()
     WHERE id = ANY ($1::text[]) AND oms_accepted_at IS NULL";

const ORDER_STATUS: &str = "
    UPDATE sales_orders o
       SET oms_status = u.status, oms_status_reason = u.reason, oms_status_date = u.date,
           oms_status_rank = u.rank, state = u.state, updated_at = now()
      FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int2[], $6::text[])
           AS u(id, status, reason, date, rank, state)
     WHERE o.id = u.id AND o.id = ANY ($1::text[])";

const LINE_STATUS: &str = "
    UPDATE sales_order_lines l
       SET status = u.status, status_reason = u.reason, status_date = u.date,
           status_rank = u.rank
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::int2[])
           AS u(order_id, line_id, status, reason, date, rank)
     WHERE l.order_id = u.order_id AND l.line_id = u.line_id AND l.order_id = ANY ($1::text[])";

const PAYMENT_STATUS: &str = "
    UPDATE sales_order_lines l
       SET payment_status = u.status, payment_status_date = u.date, payment_status_rank = u.rank
      FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int2[])
           AS u(order_id, line_id, status, date, rank)
     WHERE l.order_id = u.order_id AND l.line_id = u.line_id AND l.order_id = ANY ($1::text[])";

const CANCEL_LINES: &str = "
    UPDATE sales_order_lines l SET cancelled_at = now()
      FROM unnest($1::text[], $2::text[]) AS u(order_id, line_id)
     WHERE l.order_id = u.order_id AND l.line_id = u.line_id AND l.cancelled_at IS NULL
       AND l.order_id = ANY ($1::text[])";

const ORDER_ATTRIBUTES: &str = "
    INSERT INTO sales_order_attributes (order_id, code, value)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
    ON CONFLICT (order_id, code) DO UPDATE SET value = EXCLUDED.value, updated_at = now()";

const LINE_ATTRIBUTES: &str = "
    INSERT INTO sales_order_line_attributes (order_id, line_id, code, value)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
    ON CONFLICT (order_id, line_id, code) DO UPDATE SET value = EXCLUDED.value, updated_at = now()";

const ADDRESSES: &str = "
    INSERT INTO sales_order_addresses (order_id, reference, address_type, first_name,
                                       last_name, address1, address2, city, state, zip,
                                       country_code, phone, email, oms_updated_at,
                                       oms_updated_by)
    SELECT u.order_id, u.reference, u.address_type, u.first_name, u.last_name, u.address1,
           u.address2, u.city, u.state, u.zip, u.country_code, u.phone, u.email, now(), u.by
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                  $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                  $13::text[], $14::text[])
           AS u(order_id, reference, address_type, first_name, last_name, address1, address2,
                city, state, zip, country_code, phone, email, by)
    ON CONFLICT (order_id, reference) DO UPDATE
       SET first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name,
           address1 = EXCLUDED.address1, address2 = EXCLUDED.address2, city = EXCLUDED.city,
           state = EXCLUDED.state, zip = EXCLUDED.zip, country_code = EXCLUDED.country_code,
           phone = EXCLUDED.phone, email = EXCLUDED.email,
           oms_updated_at = EXCLUDED.oms_updated_at, oms_updated_by = EXCLUDED.oms_updated_by";

const SHIPPING_REFERENCES: &str = "
    UPDATE sales_orders o SET shipping_address_reference = u.reference, updated_at = now()
      FROM unnest($1::text[], $2::text[]) AS u(id, reference)
     WHERE o.id = u.id AND o.id = ANY ($1::text[])";

/// New invoices, and stored ones dated back, by their reserved or stored ids.
const INVOICES: &str = "
    INSERT INTO sales_invoices (id, order_id, captured_at, first_line_id)
    SELECT * FROM unnest($1::int8[], $2::text[], $3::timestamptz[], $4::text[])
    ON CONFLICT (id) DO UPDATE SET captured_at = EXCLUDED.captured_at";

/// Invoiced lines at the amounts the OMS captured (the exported line's when it sent none),
/// added to their invoices' totals.
const INVOICE_LINES: &str = "
    WITH added AS (
        INSERT INTO sales_invoice_lines (order_id, line_id, invoice_id, amount, net_amount,
                                         tax_amount)
        SELECT l.order_id, l.line_id, u.invoice_id, coalesce(u.gross, l.gross_amount),
               coalesce(u.net, l.net_amount), coalesce(u.tax, l.tax_amount)
          FROM unnest($1::text[], $2::text[], $3::int8[], $4::numeric[], $5::numeric[],
                      $6::numeric[])
               AS u(order_id, line_id, invoice_id, gross, net, tax)
          JOIN sales_order_lines l ON l.order_id = u.order_id AND l.line_id = u.line_id
        ON CONFLICT (order_id, line_id) DO NOTHING
        RETURNING invoice_id, amount, tax_amount
    )
    UPDATE sales_invoices i
       SET grand_total = i.grand_total + a.amount, tax_amount = i.tax_amount + a.tax
      FROM (SELECT invoice_id, sum(amount) AS amount, sum(tax_amount) AS tax FROM added
             GROUP BY invoice_id) a
     WHERE i.id = a.invoice_id AND i.id = ANY ($3::int8[])";

const SHIPMENTS: &str = "
    INSERT INTO sales_shipments (id, order_id, shipment_key, oms_shipment_id,
                                 shipment_request_id, source_id, method, shipped_at, address)
    SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::timestamptz[], $9::jsonb[])";

const SHIPMENT_LINES: &str = "
    INSERT INTO sales_shipment_lines (order_id, line_id, shipment_id, status, status_reason)
    SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[])";

const PACKAGES: &str = "
    INSERT INTO sales_shipment_packages (shipment_id, package_id, carrier, tracking_number,
                                         tracking_link, tracking_comment, line_numbers,
                                         shipping_label_link)
    SELECT u.shipment_id, u.package_id, u.carrier, u.tracking_number, u.tracking_link,
           u.tracking_comment, u.line_numbers::int4[], u.label
      FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                  $7::text[], $8::text[])
           AS u(shipment_id, package_id, carrier, tracking_number, tracking_link,
                tracking_comment, line_numbers, label)
    ON CONFLICT (shipment_id, package_id) DO NOTHING";

type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;

/// A statement's parameters, each as the driver takes it.
macro_rules! params {
    ($($p:expr),* $(,)?) => {
        vec![$($p as &(dyn ToSql + Sync)),*]
    };
}

/// Writes the batch's changes. Statements with nothing to write are not sent; the rest leave
/// together (every statement is prepared first, so they reach the server in this order: an
/// invoice before its lines, a shipment before its lines and parcels).
pub async fn write(tx: &Transaction<'_>, batch: &Batch<'_>) -> Result<(), tokio_postgres::Error> {
    // Foreign orders.
    let f_orders: Vec<&str> = batch.foreign.keys().map(|(o, _)| o.as_str()).collect();
    let f_channels: Vec<&str> = batch.foreign.keys().map(|(_, c)| c.as_str()).collect();
    let f_counts: Vec<i64> = batch.foreign.values().copied().collect();

    let mut orders: Vec<(&String, &super::OrderState)> = batch.orders.iter().collect();
    orders.sort_unstable_by(|a, b| a.0.cmp(b.0));

    let accepted: Vec<&str> = orders
        .iter()
        .filter(|(_, o)| o.accepted == super::Acceptance::ByBatch)
        .map(|(id, _)| id.as_str())
        .collect();

    let mut status = StatusRows::default();
    let mut lines = StatusRows::default();
    let mut payments = StatusRows::default();
    let (mut cancel_orders, mut cancel_lines) = (Vec::new(), Vec::new());
    let (mut oa_orders, mut oa_codes, mut oa_values) = (Vec::new(), Vec::new(), Vec::new());
    let (mut la_orders, mut la_lines, mut la_codes, mut la_values) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut addresses = AddressRows::default();
    let (mut ref_orders, mut refs) = (Vec::new(), Vec::new());
    let (mut inv_ids, mut inv_orders, mut inv_dates, mut inv_first) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut invoice_lines = InvoiceLineRows::default();
    for (id, order) in &orders {
        let id = id.as_str();
        if order.status_changed {
            let s = &order.status;
            let state =
                commerce_state(s.status.as_deref().unwrap_or_default(), s.reason.as_deref());
            status.push(id, None, s, Some(state));
        }
        for line in &order.lines {
            if line.status_changed {
                lines.push(id, Some(&line.line_id), &line.status, None);
            }
            if line.payment_changed {
                payments.push(id, Some(&line.line_id), &line.payment, None);
            }
        }
        for line in &order.cancelled {
            cancel_orders.push(id);
            cancel_lines.push(line.as_str());
        }
        for code in &order.attributes_changed {
            oa_orders.push(id);
            oa_codes.push(code.as_str());
            oa_values.push(order.attributes[code].as_str());
        }
        for key in &order.line_attributes_changed {
            la_orders.push(id);
            la_lines.push(key.0.as_str());
            la_codes.push(key.1.as_str());
            la_values.push(order.line_attributes[key].as_str());
        }
        let mut changed: Vec<(&String, &super::Address)> =
            order.addresses.iter().filter(|(_, a)| a.changed).collect();
        changed.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (reference, a) in changed {
            addresses.push(id, reference, a);
        }
        if let Some(reference) = &order.new_shipping_reference {
            ref_orders.push(id);
            refs.push(reference.as_str());
        }
        for invoice in order.invoices.iter().filter(|i| i.new || i.dated_back) {
            inv_ids.push(invoice.id);
            inv_orders.push(id);
            inv_dates.push(invoice.captured_at);
            inv_first.push(invoice.first_line_id.as_str());
        }
        for (line, invoice, amounts) in &order.new_invoice_lines {
            invoice_lines.order.push(id);
            invoice_lines.line.push(line.as_str());
            invoice_lines.invoice.push(*invoice);
            invoice_lines.gross.push(amounts.map(|a| a.gross));
            invoice_lines.net.push(amounts.map(|a| a.net));
            invoice_lines.tax.push(amounts.map(|a| a.tax));
        }
    }

    let mut shipments = ShipmentRows::default();
    for s in &batch.shipments {
        shipments.push(s);
    }

    let sql = [
        FOREIGN_ORDERS,
        ACCEPTED,
        ORDER_STATUS,
        LINE_STATUS,
        PAYMENT_STATUS,
        CANCEL_LINES,
        ORDER_ATTRIBUTES,
        LINE_ATTRIBUTES,
        ADDRESSES,
        SHIPPING_REFERENCES,
        INVOICES,
        INVOICE_LINES,
        SHIPMENTS,
        SHIPMENT_LINES,
        PACKAGES,
    ];
    let wanted = [
        !f_orders.is_empty(),
        !accepted.is_empty(),
        !status.order.is_empty(),
        !lines.order.is_empty(),
        !payments.order.is_empty(),
        !cancel_orders.is_empty(),
        !oa_orders.is_empty(),
        !la_orders.is_empty(),
        !addresses.order.is_empty(),
        !ref_orders.is_empty(),
        !inv_ids.is_empty(),
        !invoice_lines.order.is_empty(),
        !shipments.id.is_empty(),
        !shipments.line_shipment.is_empty(),
        !shipments.package_shipment.is_empty(),
    ];
    if !wanted.contains(&true) {
        return Ok(());
    }
    let mut statements = Vec::new();
    for (sql, wanted) in sql.iter().zip(wanted) {
        statements.push(if wanted {
            Some(tx.prepare_cached(sql).await?)
        } else {
            None
        });
    }
    let params: [Params<'_>; 15] = [
        params![&f_orders, &f_channels, &f_counts],
        params![&accepted],
        params![
            &status.order,
            &status.status,
            &status.reason,
            &status.date,
            &status.rank,
            &status.state,
        ],
        params![
            &lines.order,
            &lines.line,
            &lines.status,
            &lines.reason,
            &lines.date,
            &lines.rank,
        ],
        params![
            &payments.order,
            &payments.line,
            &payments.status,
            &payments.date,
            &payments.rank,
        ],
        params![&cancel_orders, &cancel_lines],
        params![&oa_orders, &oa_codes, &oa_values],
        params![&la_orders, &la_lines, &la_codes, &la_values],
        params![
            &addresses.order,
            &addresses.reference,
            &addresses.address_type,
            &addresses.first_name,
            &addresses.last_name,
            &addresses.address1,
            &addresses.address2,
            &addresses.city,
            &addresses.state,
            &addresses.zip,
            &addresses.country_code,
            &addresses.phone,
            &addresses.email,
            &addresses.by,
        ],
        params![&ref_orders, &refs],
        params![&inv_ids, &inv_orders, &inv_dates, &inv_first],
        params![
            &invoice_lines.order,
            &invoice_lines.line,
            &invoice_lines.invoice,
            &invoice_lines.gross,
            &invoice_lines.net,
            &invoice_lines.tax,
        ],
        params![
            &shipments.id,
            &shipments.order,
            &shipments.key,
            &shipments.oms_id,
            &shipments.request_id,
            &shipments.source_id,
            &shipments.method,
            &shipments.shipped_at,
            &shipments.address,
        ],
        params![
            &shipments.line_order,
            &shipments.line_id,
            &shipments.line_shipment,
            &shipments.line_status,
            &shipments.line_reason,
        ],
        params![
            &shipments.package_shipment,
            &shipments.package_id,
            &shipments.carrier,
            &shipments.tracking_number,
            &shipments.tracking_link,
            &shipments.tracking_comment,
            &shipments.line_numbers,
            &shipments.label,
        ],
    ];
    let writes: Vec<BoxFuture<'_, Result<u64, tokio_postgres::Error>>> = statements
        .iter()
        .zip(&params)
        .filter_map(|(statement, params)| {
            let statement = statement.as_ref()?;
            Some(tx.execute(statement, params.as_slice()).boxed())
        })
        .collect();
    futures::future::try_join_all(writes).await?;
    Ok(())
}

#[derive(Default)]
struct StatusRows<'a> {
    order: Vec<&'a str>,
    line: Vec<&'a str>,
    status: Vec<Option<&'a str>>,
    reason: Vec<Option<&'a str>>,
    date: Vec<Option<DateTime<Utc>>>,
    rank: Vec<i16>,
    state: Vec<&'static str>,
}

impl<'a> StatusRows<'a> {
    fn push(
        &mut self,
        order: &'a str,
        line: Option<&'a str>,
        stored: &'a super::Stored,
        state: Option<&'static str>,
    ) {
        self.order.push(order);
        if let Some(line) = line {
            self.line.push(line);
        }
        self.status.push(stored.status.as_deref());
        self.reason.push(stored.reason.as_deref());
        self.date.push(stored.version.date);
        self.rank.push(stored.version.rank);
        if let Some(state) = state {
            self.state.push(state);
        }
    }
}

#[derive(Default)]
struct AddressRows<'a> {
    order: Vec<&'a str>,
    reference: Vec<&'a str>,
    address_type: Vec<&'a str>,
    first_name: Vec<&'a str>,
    last_name: Vec<&'a str>,
    address1: Vec<&'a str>,
    address2: Vec<Option<&'a str>>,
    city: Vec<&'a str>,
    state: Vec<Option<&'a str>>,
    zip: Vec<Option<&'a str>>,
    country_code: Vec<&'a str>,
    phone: Vec<Option<&'a str>>,
    email: Vec<Option<&'a str>>,
    by: Vec<Option<&'a str>>,
}

impl<'a> AddressRows<'a> {
    fn push(&mut self, order: &'a str, reference: &'a str, a: &'a super::Address) {
        self.order.push(order);
        self.reference.push(reference);
        self.address_type.push(&a.address_type);
        self.first_name.push(&a.first_name);
        self.last_name.push(&a.last_name);
        self.address1.push(&a.address1);
        self.address2.push(a.address2.as_deref());
        self.city.push(&a.city);
        self.state.push(a.state.as_deref());
        self.zip.push(a.zip.as_deref());
        self.country_code.push(&a.country_code);
        self.phone.push(a.phone.as_deref());
        self.email.push(a.email.as_deref());
        self.by.push(a.updated_by.as_deref());
    }
}

#[derive(Default)]
struct InvoiceLineRows<'a> {
    order: Vec<&'a str>,
    line: Vec<&'a str>,
    invoice: Vec<i64>,
    gross: Vec<Option<Decimal>>,
    net: Vec<Option<Decimal>>,
    tax: Vec<Option<Decimal>>,
}

#[derive(Default)]
struct ShipmentRows<'a> {
    id: Vec<i64>,
    order: Vec<&'a str>,
    key: Vec<&'a str>,
    oms_id: Vec<Option<&'a str>>,
    request_id: Vec<Option<&'a str>>,
    source_id: Vec<Option<&'a str>>,
    method: Vec<Option<&'a str>>,
    shipped_at: Vec<Option<DateTime<Utc>>>,
    address: Vec<Option<serde_json::Value>>,
    line_order: Vec<&'a str>,
    line_id: Vec<&'a str>,
    line_shipment: Vec<i64>,
    line_status: Vec<Option<&'a str>>,
    line_reason: Vec<Option<&'a str>>,
    package_shipment: Vec<i64>,
    package_id: Vec<String>,
    carrier: Vec<Option<&'a str>>,
    tracking_number: Vec<Option<&'a str>>,
    tracking_link: Vec<Option<&'a str>>,
    tracking_comment: Vec<Option<&'a str>>,
    /// Each parcel's line numbers as an array literal (`{1,2}`): arrays of arrays must be
    /// rectangular, parcels are not.
    line_numbers: Vec<String>,
    label: Vec<Option<&'a str>>,
}

impl<'a> ShipmentRows<'a> {
    fn push(&mut self, s: &'a super::NewShipment<'a>) {
        let shipment = s.shipment;
        self.id.push(s.id);
        self.order.push(&shipment.order_id);
        self.key.push(&s.key);
        self.oms_id.push(shipment.shipment_id.as_deref());
        self.request_id
            .push(shipment.shipment_request_id.as_deref());
        self.source_id.push(shipment.source_id.as_deref());
        self.method.push(shipment.method.as_deref());
        self.shipped_at.push(shipment.shipped_at);
        self.address.push(
            shipment
                .address
                .as_ref()
                .map(|a| serde_json::to_value(a).expect("a map of texts is JSON")),
        );
        for (line_id, line) in s.line_ids.iter().zip(&shipment.lines) {
            self.line_order.push(&shipment.order_id);
            self.line_id.push(line_id);
            self.line_shipment.push(s.id);
            self.line_status.push(line.status.as_deref());
            self.line_reason.push(line.status_reason.as_deref());
        }
        // A parcel id repeated in one shipment keeps its first parcel, as one insert per
        // parcel with `ON CONFLICT DO NOTHING` did.
        let mut seen = std::collections::HashSet::new();
        for (i, p) in shipment.packages.iter().enumerate() {
            let package_id = p.id.clone().unwrap_or_else(|| format!("#{}", i + 1));
            if !seen.insert(package_id.clone()) {
                continue;
            }
            let numbers: Vec<String> = p
                .line_numbers
                .iter()
                .map(|n| i32::try_from(*n).unwrap_or(i32::MAX).to_string())
                .collect();
            self.package_shipment.push(s.id);
            self.package_id.push(package_id);
            self.carrier.push(p.carrier.as_deref());
            self.tracking_number.push(p.tracking_number.as_deref());
            self.tracking_link.push(p.tracking_link.as_deref());
            self.tracking_comment.push(p.tracking_comment.as_deref());
            self.line_numbers.push(format!("{{{}}}", numbers.join(",")));
            self.label.push(p.shipping_label_link.as_deref());
        }
    }
}
