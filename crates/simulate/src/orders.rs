//! Order lifecycles: orders written to the commerce database the way a storefront writes them
//! (one transaction per order), and the messages the OMS sends about each order afterwards,
//! in the real wire format: `created`, then `updated` with RECEIVED/IMPORTED,
//! ONHOLD/PENDINGREMORSETIME, LOGISTICS/READYTOSHIP, LOGISTICSCOMPLETE/FULLYSHIPPED (the lines
//! captured) and COMPLETE/FULLYSHIPPED, then `customer_shipment_done` — optionally shuffled
//! and partly duplicated, the way an at-least-once, unordered transport delivers them.

use chrono::{DateTime, Duration, TimeZone, Utc};
use protocol::lenient::format_timestamp;
use protocol::sales::{methods, product_types};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use sales::export::{
    self, AddressRow, ExportedLine, ItemRow, OrderRow, OrderRows, PaymentRow, PromotionRow,
};
use serde_json::{Value, json};

/// What to generate.
#[derive(Debug, Clone)]
pub struct OrdersSpec {
    pub seed: u64,
    pub orders: usize,
    /// Order ids are `<prefix><n>`, n from 1, nine digits.
    pub id_prefix: String,
    pub store: String,
    /// Most items per order (at least one).
    pub max_items: usize,
    /// Most units per item.
    pub max_qty: i32,
    /// Share of items that are virtual (nothing to ship).
    pub virtual_share: f64,
    /// When the first order is placed; each next one a second later.
    pub start: DateTime<Utc>,
}

impl Default for OrdersSpec {
    fn default() -> Self {
        Self {
            seed: 1,
            orders: 10,
            id_prefix: "SIM-".into(),
            store: "default".into(),
            max_items: 3,
            max_qty: 3,
            virtual_share: 0.1,
            start: Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap(),
        }
    }
}

/// A generated order: its rows, as a storefront writes them.
#[derive(Debug, Clone, PartialEq)]
pub struct SimOrder {
    pub rows: OrderRows,
}

/// One OMS message: method (routing key), envelope id, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OmsMessage {
    pub method: &'static str,
    pub id: String,
    pub body: Vec<u8>,
}

/// The statuses of the usual path, with the minute (after the order was placed) at which the
/// OMS reports each.
pub const LIFECYCLE: &[(&str, &str)] = &[
    ("RECEIVED", "IMPORTED"),
    ("ONHOLD", "PENDINGREMORSETIME"),
    ("LOGISTICS", "READYTOSHIP"),
    ("LOGISTICSCOMPLETE", "FULLYSHIPPED"),
    ("COMPLETE", "FULLYSHIPPED"),
];

pub fn generate(spec: &OrdersSpec) -> Vec<SimOrder> {
    let mut rng = SmallRng::seed_from_u64(spec.seed);
    (1..=spec.orders)
        .map(|n| {
            let id = format!("{}{n:09}", spec.id_prefix);
            let placed_at = spec.start + Duration::seconds(n as i64);
            let items = (1..=rng.random_range(1..=spec.max_items.max(1)))
                .map(|i| {
                    let is_virtual = rng.random_bool(spec.virtual_share.clamp(0.0, 1.0));
                    simple_item(
                        i as i64,
                        &format!("SKU-{:07}", rng.random_range(0..5_000)),
                        if is_virtual { "virtual" } else { "simple" },
                        rng.random_range(1..=spec.max_qty.max(1)),
                        Decimal::new(rng.random_range(100..20_000), 2),
                    )
                })
                .collect();
            SimOrder {
                rows: order_rows(&id, &spec.store, placed_at, items),
            }
        })
        .collect()
}

/// An order with the given items, paid by check, shipped flat rate (5.00) when something
/// ships.
pub fn order_rows(
    id: &str,
    store: &str,
    placed_at: DateTime<Utc>,
    items: Vec<ItemRow>,
) -> OrderRows {
    let ships = items.iter().any(|i| i.product_type == "simple");
    OrderRows {
        order: OrderRow {
            id: id.to_owned(),
            store: store.to_owned(),
            placed_at,
            origin: "FRONTEND".into(),
            ip: "203.0.113.9".into(),
            language: Some("en_US".into()),
            vat_country: None,
            currency: "USD".into(),
            customer_id: None,
            customer_segment: "B2C".into(),
            customer_service_agent: None,
            gift_message: None,
            billing_address_reference: "billing".into(),
            shipping_address_reference: ships.then(|| "shipping".into()),
            shipping_carrier: ships.then(|| "flatrate".into()),
            shipping_method: ships.then(|| "flatrate".into()),
            shipping_description: ships.then(|| "Flat Rate - Fixed".into()),
            shipping_amount: if ships {
                Decimal::new(500, 2)
            } else {
                Decimal::ZERO
            },
            shipping_tax_amount: Decimal::ZERO,
            shipping_tax_rate: Decimal::ZERO,
            shipping_discount_amount: Decimal::ZERO,
            gift_card_amount: Decimal::ZERO,
            gift_card_codes: Vec::new(),
            store_credit_amount: Decimal::ZERO,
        },
        addresses: ["billing", "shipping"]
            .into_iter()
            .map(|reference| AddressRow {
                reference: reference.into(),
                address_type: "customer".into(),
                first_name: "Grace".into(),
                last_name: "Hopper".into(),
                address1: "1 Compiler Road".into(),
                address2: None,
                city: "Arlington".into(),
                state: Some("VA".into()),
                zip: Some("22201".into()),
                country_code: "US".into(),
                phone: Some("555-0199".into()),
                email: Some("grace@example.com".into()),
            })
            .collect(),
        items,
        payment: Some(PaymentRow {
            reference: "payment".into(),
            payment_method: "ZEROPAY".into(),
            payment_submethod: Some("ZEROPAY".into()),
            processor: Some("checkmo".into()),
            gateway_id: "OFFLINE".into(),
            account: None,
            transaction_id: None,
            authorization_status: Some("AUTHORIZED".into()),
            original_auth_request_id: None,
            payment_account_unique_id: None,
        }),
        attributes: Vec::new(),
    }
}

/// An item without parent, tax or discount.
pub fn simple_item(
    item_id: i64,
    sku: &str,
    product_type: &str,
    qty: i32,
    price: Decimal,
) -> ItemRow {
    ItemRow {
        item_id,
        parent_item_id: None,
        product_type: product_type.into(),
        sku: sku.into(),
        name: format!("Product {sku}"),
        qty,
        price,
        discount_amount: Decimal::ZERO,
        tax_amount: Decimal::ZERO,
        tax_rate: Decimal::ZERO,
        tax_type: None,
        image_url: None,
        product_url: None,
        source_location: None,
        pickup_location: None,
        attributes: Vec::new(),
        promotions: Vec::new(),
    }
}

impl SimOrder {
    pub fn id(&self) -> &str {
        &self.rows.order.id
    }

    /// The lines the connector exports for this order.
    pub fn lines(&self) -> Vec<ExportedLine> {
        export::build(&self.rows)
            .expect("generated orders are valid")
            .lines
    }

    /// The lines that ship (physical units).
    pub fn shipped_lines(&self) -> Vec<ExportedLine> {
        self.lines()
            .into_iter()
            .filter(|l| l.product_type == product_types::PHYSICAL)
            .collect()
    }

    /// The OMS's messages about this order, in the order the OMS sends them: `created`,
    /// the five updates of [`LIFECYCLE`] a minute apart, the shipment.
    pub fn lifecycle(&self) -> Vec<OmsMessage> {
        let t0 = self.rows.order.placed_at;
        let at = |minute: i64| t0 + Duration::minutes(minute);
        let shipped_at = at(4);
        let mut messages = vec![self.created(at(0))];
        for (i, (status, reason)) in LIFECYCLE.iter().enumerate() {
            let minute = i as i64 + 1;
            // From LOGISTICSCOMPLETE on, the lines are shipped and their payments captured,
            // with the dates of that moment.
            let done = minute >= 4;
            let line_date = if done { shipped_at } else { at(minute) };
            let lines: Vec<LineState> = self
                .lines()
                .iter()
                .map(|l| LineState {
                    line_id: l.line_id.clone(),
                    line_number: l.line_number,
                    status: if done { "SHIPPED" } else { status }.to_owned(),
                    reason: if done { "FULLYSHIPPED" } else { reason }.to_owned(),
                    date: line_date,
                    payment_status: if done {
                        "CAPTURE_REQUESTED"
                    } else {
                        "AUTHORIZED"
                    }
                    .to_owned(),
                    payment_date: line_date,
                })
                .collect();
            messages.push(self.updated(status, reason, at(minute), &lines));
        }
        let shipped: Vec<ExportedLine> = self.shipped_lines();
        if !shipped.is_empty() {
            messages.push(self.shipment(
                &shipped.iter().collect::<Vec<_>>(),
                shipped_at,
                None,
                &format!("1Z{}", self.id()),
            ));
        }
        messages
    }

    /// `order_management.created`.
    pub fn created(&self, at: DateTime<Utc>) -> OmsMessage {
        let mut order = self.wire_header("RECEIVED", "IMPORTED", at);
        order["lines"] = Value::Array(
            self.lines()
                .iter()
                .map(|l| self.wire_line(l, None))
                .collect(),
        );
        envelope(
            methods::CREATED,
            format!("{}-created", self.id()),
            json!({ "order": order }),
        )
    }

    /// `order_management.updated` with this header status and these line states.
    pub fn updated(
        &self,
        status: &str,
        reason: &str,
        at: DateTime<Utc>,
        lines: &[LineState],
    ) -> OmsMessage {
        let exported = self.lines();
        let mut order = self.wire_header(status, reason, at);
        order["lines"] = Value::Array(
            lines
                .iter()
                .map(|state| {
                    let line = exported
                        .iter()
                        .find(|l| l.line_id == state.line_id)
                        .expect("a line of the order");
                    self.wire_line(line, Some(state))
                })
                .collect(),
        );
        envelope(
            methods::UPDATED,
            format!("{}-{status}-{}", self.id(), at.timestamp()),
            json!({ "order": order }),
        )
    }

    /// `customer_shipment_done` of these lines in one parcel.
    pub fn shipment(
        &self,
        lines: &[&ExportedLine],
        at: DateTime<Utc>,
        shipment_id: Option<&str>,
        tracking_number: &str,
    ) -> OmsMessage {
        let items: Vec<Value> = lines
            .iter()
            .map(|l| {
                json!({
                    "order_line_id": l.line_id,
                    "order_line_number": l.line_number.to_string(),
                    "sku": l.sku,
                    "name": l.sku,
                    "item_type": "",
                    "image_url": "",
                    "status": "SHIPPED",
                    "status_reason": "OSREPORT",
                    "custom_details": [{"name": "imageUrl", "value": ""}],
                    "order_line_price": self.wire_price(l),
                })
            })
            .collect();
        let numbers: Vec<String> = lines.iter().map(|l| l.line_number.to_string()).collect();
        let mut shipment = json!({
            "order_id": self.id(),
            "source_id": "WH-1",
            "store_id": self.rows.order.store,
            "method": "STANDARD",
            "shipment_date": format_timestamp(&at),
            "items": items,
            "packages": [{
                "id": "",
                "carrier": "UPS ",
                "tracking_number": tracking_number,
                "tracking_link": format!("https://tracking.example/{tracking_number}"),
                "tracking_comment": "",
                "details": [],
                "items": numbers,
            }],
        });
        // The real sender's typo, as it arrives.
        shipment["shimpent_id"] = json!(shipment_id.unwrap_or(""));
        envelope(
            methods::SHIPMENT_DONE,
            format!("{}-shipment-{tracking_number}", self.id()),
            json!({ "shipment": shipment }),
        )
    }

    fn wire_header(&self, status: &str, reason: &str, at: DateTime<Utc>) -> Value {
        let o = &self.rows.order;
        json!({
            "id": o.id,
            "store": o.store,
            "status": status,
            "status_reason": reason,
            "status_date": format_timestamp(&at),
            "ip": o.ip,
            "language": o.language,
            "vat_country": "US",
            "origin": o.origin,
            "origin_date": format_timestamp(&o.placed_at),
            "customer_service_agent": "0",
            "customer": {"id": "anonymous", "type": "GUEST", "segment": "B2C"},
            "custom_attributes": [],
        })
    }

    fn wire_price(&self, line: &ExportedLine) -> Value {
        // Money as strings, as the OMS writes it.
        json!({
            "net_amount": line.net_amount.to_string(),
            "gross_amount": line.gross_amount.to_string(),
            "tax_amount": line.tax_amount.to_string(),
            "tax_rate": "0",
            "taxes": [{"type": "NO TAX", "amount": line.tax_amount.to_string(), "rate": "0"}],
            "currency": self.rows.order.currency,
        })
    }

    fn wire_line(&self, line: &ExportedLine, state: Option<&LineState>) -> Value {
        let mut wire = json!({
            "id": line.line_id,
            "line_number": line.line_number.to_string(),
            "product_type": line.product_type,
            "sku": line.sku,
            "product_name": line.sku,
            "shipping_address_reference": "",
            "amount": self.wire_price(line),
            "promotions_info": {"original_price": line.gross_amount.to_string(), "promotions": []},
            "custom_attributes": [{"name": "imageUrl", "value": ""}],
        });
        if let Some(state) = state {
            wire["status"] = json!(state.status);
            wire["status_reason"] = json!(state.reason);
            wire["status_date"] = json!(format_timestamp(&state.date));
            let mut payment = self.wire_price(line);
            payment["payment_reference"] = json!("");
            payment["status"] = json!(state.payment_status);
            payment["status_date"] = json!(format_timestamp(&state.payment_date));
            wire["payments"] = json!([payment]);
        }
        wire
    }
}

/// What an update says about one line.
#[derive(Debug, Clone)]
pub struct LineState {
    pub line_id: String,
    pub line_number: i32,
    pub status: String,
    pub reason: String,
    pub date: DateTime<Utc>,
    pub payment_status: String,
    pub payment_date: DateTime<Utc>,
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "called with json! values built at the call"
)]
fn envelope(method: &'static str, id: String, params: Value) -> OmsMessage {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
        .to_string()
        .into_bytes();
    OmsMessage { method, id, body }
}

/// The messages to send: each once, then `duplicate_share` of them again, the whole shuffled
/// when `shuffle` is set.
pub fn deliveries(
    messages: &[OmsMessage],
    seed: u64,
    shuffle: bool,
    duplicate_share: f64,
) -> Vec<&OmsMessage> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x0dde5);
    let mut out: Vec<&OmsMessage> = messages.iter().collect();
    for m in messages {
        if rng.random_bool(duplicate_share.clamp(0.0, 1.0)) {
            out.push(m);
        }
    }
    if shuffle {
        out.shuffle(&mut rng);
    }
    out
}

/// Places an order as a storefront does: every row in one transaction. The commit checks the
/// order and queues its export.
pub async fn place(
    client: &tokio_postgres::Client,
    rows: &OrderRows,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("BEGIN").await?;
    match insert(client, rows).await {
        Ok(()) => client.batch_execute("COMMIT").await,
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// Writes an order's rows in the caller's transaction, without committing: for a storefront
/// that does more in the placing transaction (redeems a gift card).
pub async fn insert(
    client: &tokio_postgres::Client,
    rows: &OrderRows,
) -> Result<(), tokio_postgres::Error> {
    let o = &rows.order;
    client
        .execute(
            "INSERT INTO sales_orders (id, store, placed_at, origin, ip, language, vat_country,
                currency, customer_id, customer_segment, customer_service_agent, gift_message,
                billing_address_reference, shipping_address_reference, shipping_carrier,
                shipping_method, shipping_description, shipping_amount, shipping_tax_amount,
                shipping_tax_rate, shipping_discount_amount, gift_card_amount, gift_card_codes,
                store_credit_amount)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,
                     $21,$22,$23,$24)",
            &[
                &o.id,
                &o.store,
                &o.placed_at,
                &o.origin,
                &o.ip,
                &o.language,
                &o.vat_country,
                &o.currency,
                &o.customer_id,
                &o.customer_segment,
                &o.customer_service_agent,
                &o.gift_message,
                &o.billing_address_reference,
                &o.shipping_address_reference,
                &o.shipping_carrier,
                &o.shipping_method,
                &o.shipping_description,
                &o.shipping_amount,
                &o.shipping_tax_amount,
                &o.shipping_tax_rate,
                &o.shipping_discount_amount,
                &o.gift_card_amount,
                &o.gift_card_codes,
                &o.store_credit_amount,
            ],
        )
        .await?;
    for a in &rows.addresses {
        client
            .execute(
                "INSERT INTO sales_order_addresses (order_id, reference, address_type, first_name,
                    last_name, address1, address2, city, state, zip, country_code, phone, email)
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
                &[
                    &o.id,
                    &a.reference,
                    &a.address_type,
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
                ],
            )
            .await?;
    }
    // Parents before children (the foreign key), in item order otherwise.
    let mut items: Vec<&ItemRow> = rows.items.iter().collect();
    items.sort_by_key(|i| (i.parent_item_id.is_some(), i.item_id));
    for i in items {
        client
            .execute(
                "INSERT INTO sales_order_items (order_id, item_id, parent_item_id, product_type,
                    sku, name, qty, price, discount_amount, tax_amount, tax_rate, tax_type,
                    image_url, product_url, source_location, pickup_location)
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)",
                &[
                    &o.id,
                    &i.item_id,
                    &i.parent_item_id,
                    &i.product_type,
                    &i.sku,
                    &i.name,
                    &i.qty,
                    &i.price,
                    &i.discount_amount,
                    &i.tax_amount,
                    &i.tax_rate,
                    &i.tax_type,
                    &i.image_url,
                    &i.product_url,
                    &i.source_location,
                    &i.pickup_location,
                ],
            )
            .await?;
        for (code, value) in &i.attributes {
            client
                .execute(
                    "INSERT INTO sales_order_item_attributes (order_id, item_id, code, value)
                     VALUES ($1, $2, $3, $4)",
                    &[&o.id, &i.item_id, code, value],
                )
                .await?;
        }
        for PromotionRow {
            code,
            name,
            discount_amount,
            percentage,
        } in &i.promotions
        {
            client
                .execute(
                    "INSERT INTO sales_order_item_promotions (order_id, item_id, code, name,
                        discount_amount, percentage) VALUES ($1, $2, $3, $4, $5, $6)",
                    &[&o.id, &i.item_id, code, name, discount_amount, percentage],
                )
                .await?;
        }
    }
    if let Some(p) = &rows.payment {
        client
            .execute(
                "INSERT INTO sales_order_payments (order_id, reference, payment_method,
                    payment_submethod, processor, gateway_id, account, transaction_id,
                    authorization_status, original_auth_request_id, payment_account_unique_id)
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
                &[
                    &o.id,
                    &p.reference,
                    &p.payment_method,
                    &p.payment_submethod,
                    &p.processor,
                    &p.gateway_id,
                    &p.account,
                    &p.transaction_id,
                    &p.authorization_status,
                    &p.original_auth_request_id,
                    &p.payment_account_unique_id,
                ],
            )
            .await?;
    }
    for (code, value) in &rows.attributes {
        client
            .execute(
                "INSERT INTO sales_order_attributes (order_id, code, value) VALUES ($1, $2, $3)",
                &[&o.id, code, value],
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_orders() {
        let spec = OrdersSpec::default();
        assert_eq!(generate(&spec), generate(&spec));
    }

    #[test]
    fn a_lifecycle_is_created_five_updates_and_a_shipment_each_of_which_parses() {
        let order = &generate(&OrdersSpec {
            virtual_share: 0.0,
            ..OrdersSpec::default()
        })[0];
        let messages = order.lifecycle();
        let methods: Vec<&str> = messages.iter().map(|m| m.method).collect();
        assert_eq!(methods[0], methods::CREATED);
        assert_eq!(&methods[1..6], &[methods::UPDATED; 5]);
        assert_eq!(methods[6], methods::SHIPMENT_DONE);
        for m in &messages {
            let envelope =
                protocol::Envelope::parse(&m.body, &protocol::Limits::default()).unwrap();
            let params = envelope.params.unwrap();
            match m.method {
                methods::SHIPMENT_DONE => {
                    let s = protocol::logistics::parse_shipment(params).unwrap();
                    assert_eq!(s.lines.len(), order.shipped_lines().len());
                }
                _ => {
                    let u = protocol::sales::parse_order_update(params).unwrap();
                    assert_eq!(u.order_id, order.id());
                }
            }
        }
    }

    #[test]
    fn deliveries_duplicate_and_shuffle_on_request() {
        let order = &generate(&OrdersSpec::default())[0];
        let messages = order.lifecycle();
        assert_eq!(deliveries(&messages, 3, false, 0.0).len(), messages.len());
        assert_eq!(
            deliveries(&messages, 3, true, 1.0).len(),
            2 * messages.len()
        );
    }
}
