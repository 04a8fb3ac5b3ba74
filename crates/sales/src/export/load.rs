//! Reading an order's rows, and keeping its exported lines.

use std::collections::{BTreeMap, HashMap};

use deadpool_postgres::Client;

use super::{AddressRow, ExportedLine, ItemRow, OrderRow, OrderRows, PaymentRow, PromotionRow};

const ORDER: &str = "
    SELECT id, store, placed_at, origin, ip, language, vat_country, currency, customer_id,
           customer_segment, customer_service_agent, gift_message, billing_address_reference,
           shipping_address_reference, shipping_carrier, shipping_method, shipping_description,
           shipping_amount, shipping_tax_amount, shipping_tax_rate, shipping_discount_amount,
           gift_card_amount, gift_card_codes, store_credit_amount
      FROM sales_orders WHERE id = ANY ($1::text[])";

const ADDRESSES: &str = "
    SELECT reference, address_type, first_name, last_name, address1, address2, city, state,
           zip, country_code, phone, email, order_id
      FROM sales_order_addresses WHERE order_id = ANY ($1::text[]) ORDER BY order_id, reference";

const ITEMS: &str = "
    SELECT item_id, parent_item_id, product_type, sku, name, qty, price, discount_amount,
           tax_amount, tax_rate, tax_type, image_url, product_url, source_location,
           pickup_location, order_id
      FROM sales_order_items WHERE order_id = ANY ($1::text[]) ORDER BY order_id, item_id";

const PAYMENT: &str = "
    SELECT reference, payment_method, payment_submethod, processor, gateway_id, account,
           transaction_id, authorization_status, original_auth_request_id,
           payment_account_unique_id, order_id
      FROM sales_order_payments WHERE order_id = ANY ($1::text[])";

const ATTRIBUTES: &str = "
    SELECT code, value, order_id FROM sales_order_attributes
     WHERE order_id = ANY ($1::text[]) ORDER BY order_id, code";

const ITEM_ATTRIBUTES: &str = "
    SELECT item_id, code, value, order_id FROM sales_order_item_attributes
     WHERE order_id = ANY ($1::text[]) ORDER BY order_id, item_id, code";

const PROMOTIONS: &str = "
    SELECT item_id, code, name, discount_amount, percentage, order_id
      FROM sales_order_item_promotions
     WHERE order_id = ANY ($1::text[]) ORDER BY order_id, item_id, code";

/// Keeps the exported lines; a line already kept is left as it is (its statuses are the
/// OMS's by now), so building an export again changes nothing.
const SAVE_LINES: &str = "
    INSERT INTO sales_order_lines (order_id, line_id, line_number, item_id, parent_line_id,
                                   product_type, sku, gross_amount, net_amount, tax_amount)
    SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::int8[], $5::text[], $6::text[],
                         $7::text[], $8::numeric[], $9::numeric[], $10::numeric[])
    ON CONFLICT (order_id, line_id) DO NOTHING";

const SAVE_LINE_ATTRIBUTES: &str = "
    INSERT INTO sales_order_line_attributes (order_id, line_id, code, value)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
    ON CONFLICT (order_id, line_id, code) DO NOTHING";

/// The rows of an order, or `None` when there is no such order.
pub async fn load_order(
    client: &Client,
    order_id: &str,
) -> Result<Option<OrderRows>, tokio_postgres::Error> {
    Ok(load_orders(client, &[order_id]).await?.remove(order_id))
}

/// The rows of each order of `ids` that is here, by id: seven queries whatever the number of
/// orders, sent in one round trip (the client pipelines them).
pub async fn load_orders(
    client: &Client,
    ids: &[&str],
) -> Result<HashMap<String, OrderRows>, tokio_postgres::Error> {
    let statements = futures::future::try_join_all(
        [
            ORDER,
            ADDRESSES,
            ITEMS,
            PAYMENT,
            ATTRIBUTES,
            ITEM_ATTRIBUTES,
            PROMOTIONS,
        ]
        .map(|sql| client.prepare_cached(sql)),
    )
    .await?;
    let [
        order,
        addresses,
        items,
        payment,
        attributes,
        item_attributes,
        promotions,
    ] = <[_; 7]>::try_from(statements).expect("seven statements");
    let ids: &[&(dyn tokio_postgres::types::ToSql + Sync)] = &[&ids];
    let (orders, addresses, items, payments, attributes, item_attributes, promotions) = futures::try_join!(
        client.query(&order, ids),
        client.query(&addresses, ids),
        client.query(&items, ids),
        client.query(&payment, ids),
        client.query(&attributes, ids),
        client.query(&item_attributes, ids),
        client.query(&promotions, ids),
    )?;
    // Each query is ordered by order id first, then as an order's rows always were.
    let mut item_attributes_by_item: BTreeMap<(String, i64), Vec<(String, String)>> =
        BTreeMap::new();
    for r in &item_attributes {
        item_attributes_by_item
            .entry((r.get(3), r.get(0)))
            .or_default()
            .push((r.get(1), r.get(2)));
    }
    let mut promotions_by_item: BTreeMap<(String, i64), Vec<PromotionRow>> = BTreeMap::new();
    for r in &promotions {
        promotions_by_item
            .entry((r.get(5), r.get(0)))
            .or_default()
            .push(PromotionRow {
                code: r.get(1),
                name: r.get(2),
                discount_amount: r.get(3),
                percentage: r.get(4),
            });
    }
    let mut out: HashMap<String, OrderRows> = orders
        .iter()
        .map(|o| {
            let rows = OrderRows {
                order: OrderRow {
                    id: o.get(0),
                    store: o.get(1),
                    placed_at: o.get(2),
                    origin: o.get(3),
                    ip: o.get(4),
                    language: o.get(5),
                    vat_country: o.get(6),
                    currency: o.get(7),
                    customer_id: o.get(8),
                    customer_segment: o.get(9),
                    customer_service_agent: o.get(10),
                    gift_message: o.get(11),
                    billing_address_reference: o.get(12),
                    shipping_address_reference: o.get(13),
                    shipping_carrier: o.get(14),
                    shipping_method: o.get(15),
                    shipping_description: o.get(16),
                    shipping_amount: o.get(17),
                    shipping_tax_amount: o.get(18),
                    shipping_tax_rate: o.get(19),
                    shipping_discount_amount: o.get(20),
                    gift_card_amount: o.get(21),
                    gift_card_codes: o.get(22),
                    store_credit_amount: o.get(23),
                },
                addresses: Vec::new(),
                items: Vec::new(),
                payment: None,
                attributes: Vec::new(),
            };
            (rows.order.id.clone(), rows)
        })
        .collect();
    for r in &addresses {
        if let Some(rows) = out.get_mut(r.get::<_, &str>(12)) {
            rows.addresses.push(AddressRow {
                reference: r.get(0),
                address_type: r.get(1),
                first_name: r.get(2),
                last_name: r.get(3),
                address1: r.get(4),
                address2: r.get(5),
                city: r.get(6),
                state: r.get(7),
                zip: r.get(8),
                country_code: r.get(9),
                phone: r.get(10),
                email: r.get(11),
            });
        }
    }
    for r in &items {
        let order_id: String = r.get(15);
        let item_id: i64 = r.get(0);
        let key = (order_id, item_id);
        let item = ItemRow {
            item_id,
            parent_item_id: r.get(1),
            product_type: r.get(2),
            sku: r.get(3),
            name: r.get(4),
            qty: r.get(5),
            price: r.get(6),
            discount_amount: r.get(7),
            tax_amount: r.get(8),
            tax_rate: r.get(9),
            tax_type: r.get(10),
            image_url: r.get(11),
            product_url: r.get(12),
            source_location: r.get(13),
            pickup_location: r.get(14),
            attributes: item_attributes_by_item.remove(&key).unwrap_or_default(),
            promotions: promotions_by_item.remove(&key).unwrap_or_default(),
        };
        if let Some(rows) = out.get_mut(&key.0) {
            rows.items.push(item);
        }
    }
    for r in &payments {
        if let Some(rows) = out.get_mut(r.get::<_, &str>(10)) {
            rows.payment = Some(PaymentRow {
                reference: r.get(0),
                payment_method: r.get(1),
                payment_submethod: r.get(2),
                processor: r.get(3),
                gateway_id: r.get(4),
                account: r.get(5),
                transaction_id: r.get(6),
                authorization_status: r.get(7),
                original_auth_request_id: r.get(8),
                payment_account_unique_id: r.get(9),
            });
        }
    }
    for r in &attributes {
        if let Some(rows) = out.get_mut(r.get::<_, &str>(2)) {
            rows.attributes.push((r.get(0), r.get(1)));
        }
    }
    Ok(out)
}

/// Keeps the lines of an export (before it is published, so that whatever the OMS says
/// about them finds them).
pub async fn save_lines(
    client: &Client,
    order_id: &str,
    lines: &[ExportedLine],
) -> Result<(), tokio_postgres::Error> {
    save_lines_of(client, &[(order_id, lines)]).await
}

/// Keeps the lines of the exports of several orders: two statements whatever their number.
pub async fn save_lines_of(
    client: &Client,
    exports: &[(&str, &[ExportedLine])],
) -> Result<(), tokio_postgres::Error> {
    let lines = || {
        exports
            .iter()
            .flat_map(|(o, lines)| lines.iter().map(move |l| (*o, l)))
    };
    let orders: Vec<&str> = lines().map(|(o, _)| o).collect();
    let ids: Vec<&str> = lines().map(|(_, l)| l.line_id.as_str()).collect();
    let numbers: Vec<i32> = lines().map(|(_, l)| l.line_number).collect();
    let items: Vec<Option<i64>> = lines().map(|(_, l)| l.item_id).collect();
    let parents: Vec<Option<&str>> = lines().map(|(_, l)| l.parent_line_id.as_deref()).collect();
    let types: Vec<&str> = lines().map(|(_, l)| l.product_type).collect();
    let skus: Vec<&str> = lines().map(|(_, l)| l.sku.as_str()).collect();
    let gross: Vec<_> = lines().map(|(_, l)| l.gross_amount).collect();
    let net: Vec<_> = lines().map(|(_, l)| l.net_amount).collect();
    let tax: Vec<_> = lines().map(|(_, l)| l.tax_amount).collect();
    let (mut a_orders, mut a_lines, mut a_codes, mut a_values) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (order_id, line) in lines() {
        for (code, value) in &line.attributes {
            a_orders.push(order_id);
            a_lines.push(line.line_id.as_str());
            a_codes.push(code.as_str());
            a_values.push(value.as_str());
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    let save = client.prepare_cached(SAVE_LINES).await?;
    client
        .execute(
            &save,
            &[
                &orders, &ids, &numbers, &items, &parents, &types, &skus, &gross, &net, &tax,
            ],
        )
        .await?;
    if !a_lines.is_empty() {
        let save = client.prepare_cached(SAVE_LINE_ATTRIBUTES).await?;
        client
            .execute(&save, &[&a_orders, &a_lines, &a_codes, &a_values])
            .await?;
    }
    Ok(())
}
