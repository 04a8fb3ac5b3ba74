//! Sales messages (`magento.sales.order_management.*`): the order export and cancellation
//! Commerce sends, and the status, cancellation and attribute updates the OMS sends back.
//! Field names follow `sales/order.xml` and `sales/order_management.xml` of the specification.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::lenient::{self, Scalar};
use crate::money::{self, Money};
use crate::{Rejection, parse_params};
use rust_decimal::Decimal;

/// The sales and logistics methods of the connector.
pub mod methods {
    /// C→O: a new order.
    pub const CREATE: &str = "magento.sales.order_management.create";
    /// C→O: a customer-initiated cancellation.
    pub const CANCEL: &str = "magento.sales.order_management.cancel";
    /// C→O: a customer cancels one line of an order.
    pub const CANCEL_LINE: &str = "magento.sales.order_management.cancel_line";
    /// C→O: a comment on an order, for the OMS's agents.
    pub const CREATE_COMMENT: &str = "magento.sales.order_management.create_comment";
    /// O→C: the OMS accepted the order.
    pub const CREATED: &str = "magento.sales.order_management.created";
    /// O→C: order and line statuses, per-line payment statuses.
    pub const UPDATED: &str = "magento.sales.order_management.updated";
    pub const LINE_CANCELLED: &str = "magento.sales.order_management.line_cancelled";
    pub const CUSTOM_ATTRIBUTES_UPDATED: &str =
        "magento.sales.order_management.custom_attributes_updated";
    pub const LINE_CUSTOM_ATTRIBUTES_UPDATED: &str =
        "magento.sales.order_management.line_custom_attributes_updated";
    /// O→C: the OMS changed the order's shipping address.
    pub const SHIPPING_ADDRESS_UPDATED: &str =
        "magento.sales.order_management.shipping_address_updated";
    /// O→C: one physical shipment.
    pub const SHIPMENT_DONE: &str =
        "magento.logistics.fulfillment_management.customer_shipment_done";

    /// Every method the sales module consumes.
    pub const CONSUMED: &[&str] = &[
        CREATED,
        UPDATED,
        LINE_CANCELLED,
        CUSTOM_ATTRIBUTES_UPDATED,
        LINE_CUSTOM_ATTRIBUTES_UPDATED,
        SHIPPING_ADDRESS_UPDATED,
        SHIPMENT_DONE,
    ];
}

// ---------------------------------------------------------------------------------------
// Outbound: the order export (`order_management.create`) and the cancellation.

/// `params` of `order_management.create`.
#[derive(Debug, Clone, Serialize)]
pub struct CreateParams {
    pub order: WireOrder,
}

/// `magento.sales.order`.
#[derive(Debug, Clone, Serialize)]
pub struct WireOrder {
    pub id: String,
    pub store: String,
    /// The customer's IP address; `null` when the storefront did not record it.
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    pub vat_country: String,
    pub origin: String,
    pub origin_date: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_service_agent: Option<String>,
    pub customer: WireCustomer,
    pub addresses: Vec<WireAddress>,
    pub payments: Vec<WirePayment>,
    pub lines: Vec<WireLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gift_message: Option<String>,
    pub custom_attributes: Vec<WireCustomAttribute>,
}

/// `magento.sales.order_customer`.
#[derive(Debug, Clone, Serialize)]
pub struct WireCustomer {
    pub id: String,
    #[serde(rename = "type")]
    pub customer_type: String,
    pub segment: String,
}

/// `magento.common.address`.
#[derive(Debug, Clone, Serialize)]
pub struct WireAddress {
    pub reference: String,
    pub address_type: String,
    pub first_name: String,
    pub last_name: String,
    pub address1: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address2: Option<String>,
    pub city: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zip: Option<String>,
    pub country_code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// `magento.sales.order_payment`: the OMS takes exactly one transaction per order.
#[derive(Debug, Clone, Serialize)]
pub struct WirePayment {
    pub reference: String,
    pub currency: String,
    pub transactions: [WireTransaction; 1],
}

/// `magento.sales.order_payment_transaction`.
#[derive(Debug, Clone, Serialize)]
pub struct WireTransaction {
    pub payment_method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_submethod: Option<String>,
    pub amount: Money,
    pub gateway_information: WireGateway,
    pub billing_address_reference: String,
}

/// `magento.sales.order_payment_transaction_gateway`.
#[derive(Debug, Clone, Serialize)]
pub struct WireGateway {
    pub gateway_id: String,
    /// Required by the specification but unknown for offline payments: `null` then, as the
    /// captured real export writes it.
    pub account: Option<String>,
    pub transaction_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_auth_request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_account_unique_id: Option<String>,
    pub custom_attributes: Vec<WireCustomAttribute>,
}

/// Product types of an order line.
pub mod product_types {
    pub const PHYSICAL: &str = "PHYSICAL";
    pub const VIRTUAL: &str = "VIRTUAL";
    pub const BUNDLE: &str = "BUNDLE";
    pub const SHIPPING: &str = "SHIPPING";
}

/// `magento.sales.order_line`: one unit of an item, or the shipping.
#[derive(Debug, Clone, Serialize)]
pub struct WireLine {
    pub id: String,
    pub line_number: i32,
    pub product_type: &'static str,
    pub sku: String,
    pub product_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_line_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_url: Option<String>,
    pub shipping_address_reference: String,
    pub payment_reference: String,
    pub amount: WirePrice,
    pub promotions_info: WirePromotionInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pickup_location: Option<String>,
    pub custom_attributes: Vec<WireCustomAttribute>,
}

/// `magento.common.price`.
#[derive(Debug, Clone, Serialize)]
pub struct WirePrice {
    pub net_amount: Money,
    pub gross_amount: Money,
    pub tax_amount: Money,
    pub tax_rate: Money,
    pub taxes: Vec<WireTax>,
    pub currency: String,
}

/// `magento.common.price_tax`.
#[derive(Debug, Clone, Serialize)]
pub struct WireTax {
    #[serde(rename = "type")]
    pub tax_type: String,
    pub amount: Money,
    pub rate: Money,
}

/// `magento.sales.order_line_promotion_information`.
#[derive(Debug, Clone, Serialize)]
pub struct WirePromotionInfo {
    pub original_price: Money,
    pub promotions: Vec<WirePromotion>,
}

/// `magento.sales.order_line_promotion`.
#[derive(Debug, Clone, Serialize)]
pub struct WirePromotion {
    pub code: String,
    pub name: String,
    pub discount: Money,
    pub percentage: Money,
}

/// `magento.common.custom_attribute`. Senders key attributes by `name` or by
/// `attribute_code`; the connector writes both, so either kind of reader finds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WireCustomAttribute {
    pub name: String,
    pub attribute_code: String,
    pub value: String,
}

impl WireCustomAttribute {
    pub fn new(code: &str, value: &str) -> Self {
        Self {
            name: code.to_owned(),
            attribute_code: code.to_owned(),
            value: value.to_owned(),
        }
    }
}

/// `params` of `order_management.cancel`.
#[derive(Debug, Clone, Serialize)]
pub struct CancelParams {
    pub order_id: String,
    /// The sales channel the connector sells as (optional in the specification, always sent:
    /// the OMS keys orders by channel and id).
    pub sales_channel_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `params` of `order_management.cancel_line`: one line (one unit) of an order.
#[derive(Debug, Clone, Serialize)]
pub struct CancelLineParams {
    pub order_id: String,
    pub sales_channel_id: String,
    pub line_number: i32,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `params` of `order_management.create_comment`.
#[derive(Debug, Clone, Serialize)]
pub struct CreateCommentParams {
    pub order_comment: WireOrderComment,
}

/// `magento.sales.order_comment`.
#[derive(Debug, Clone, Serialize)]
pub struct WireOrderComment {
    pub order_id: String,
    pub sales_channel_id: String,
    /// RFC 3339 ([`crate::outbound::format_datetime`]).
    pub created_date: String,
    pub user: String,
    pub comment: String,
}

// ---------------------------------------------------------------------------------------
// Inbound.

/// A status with its reason and the date it changed. The date is optional in the
/// specification and some senders leave it out; how updates with and without dates are
/// ordered is the applying module's rule (docs/schema.md, "Status versions").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// As sent (statuses drift between senders; see [`normalize_status`]).
    pub status: String,
    pub reason: Option<String>,
    pub date: Option<DateTime<Utc>>,
}

/// The amounts of a line payment (`lines[].payments[]`), when the sender gives them: what
/// was captured for the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentAmounts {
    pub gross: Decimal,
    pub net: Decimal,
    pub tax: Decimal,
}

/// `order_management.created` or `.updated`, as far as Commerce uses them.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderUpdate {
    pub order_id: String,
    pub store: Option<String>,
    /// The header status; `None` when the message carries none.
    pub status: Option<StatusChange>,
    pub lines: Vec<LineUpdate>,
}

/// One line of an update. It names its line by `id`, or by `line_number` when the id is
/// missing.
#[derive(Debug, Clone, PartialEq)]
pub struct LineUpdate {
    pub line: LineRef,
    pub status: Option<StatusChange>,
    /// The payment status of the line (the OMS takes one payment per order, so one per line).
    pub payment: Option<StatusChange>,
    /// The amounts of that payment, when the message carries all three.
    pub payment_amounts: Option<PaymentAmounts>,
}

/// How a message names an order line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineRef {
    Id(String),
    Number(i64),
}

impl std::fmt::Display for LineRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineRef::Id(id) => write!(f, "id {id:?}"),
            LineRef::Number(n) => write!(f, "number {n}"),
        }
    }
}

/// `order_management.line_cancelled`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineCancelled {
    pub order_id: String,
    pub line_id: String,
}

/// `custom_attributes_updated`, and `line_custom_attributes_updated` with `line` set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributesUpdate {
    pub order_id: String,
    pub sales_channel_id: Option<String>,
    pub line: Option<LineRef>,
    /// `(code, value)`, one per code (the last one sent wins).
    pub attributes: Vec<(String, String)>,
}

/// `shipping_address_updated`: the OMS changed where an order ships. The message carries no
/// date, so updates of one order apply in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippingAddressUpdate {
    pub order_id: String,
    pub sales_channel_id: Option<String>,
    /// The line the OMS says it modified (`line_number`, a string in the specification).
    pub line_number: Option<i64>,
    pub user: Option<String>,
    pub address: NewShippingAddress,
}

/// `magento.sales.shipping_address`, as far as an order address holds it (the coordinates,
/// company and custom attributes have no place in an order address and are not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewShippingAddress {
    pub reference: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub address1: String,
    pub address2: Option<String>,
    pub city: String,
    pub state: Option<String>,
    pub zip: Option<String>,
    /// Two letters, upper case.
    pub country_code: String,
    pub phone: Option<String>,
    pub email: Option<String>,
}

/// A status name in the form statuses are compared in: upper case, letters and digits only,
/// so `PENDING_REMORSE_TIME` and `PendingRemorseTime` are `PENDINGREMORSETIME`.
pub fn normalize_status(status: &str) -> String {
    status
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

#[derive(Deserialize)]
pub(crate) struct WireUpdateParams {
    order: Option<WireInOrder>,
}

#[derive(Deserialize)]
struct WireInOrder {
    id: Option<Scalar>,
    store: Option<Scalar>,
    status: Option<Scalar>,
    status_reason: Option<Scalar>,
    status_date: Option<Scalar>,
    #[serde(default)]
    lines: Option<Vec<WireInLine>>,
}

#[derive(Deserialize)]
struct WireInLine {
    id: Option<Scalar>,
    line_number: Option<Scalar>,
    status: Option<Scalar>,
    status_reason: Option<Scalar>,
    status_date: Option<Scalar>,
    #[serde(default)]
    payments: Option<Vec<WireInLinePayment>>,
}

#[derive(Deserialize)]
struct WireInLinePayment {
    status: Option<Scalar>,
    status_date: Option<Scalar>,
    gross_amount: Option<Scalar>,
    net_amount: Option<Scalar>,
    tax_amount: Option<Scalar>,
}

/// Parses `created` or `updated`. A line or payment status without a date takes the
/// line's, then the order's; a status may have no date at all (the specification makes
/// `status_date` optional, and real senders leave it out).
pub fn parse_order_update(params: &RawValue) -> Result<OrderUpdate, Rejection> {
    let wire: WireUpdateParams = parse_params(params)?;
    let order = wire
        .order
        .ok_or_else(|| Rejection::new("\"order\" is missing"))?;
    let at = |r: Rejection| r.at("order");
    let order_id = lenient::required_string(order.id, "id").map_err(at)?;
    let store = lenient::optional_string(order.store, "store").map_err(at)?;
    let order_date = lenient::optional_timestamp(order.status_date, "status_date").map_err(at)?;
    let status = status_change(order.status, order.status_reason, order_date, "").map_err(at)?;
    let mut lines = Vec::new();
    for (i, line) in order.lines.unwrap_or_default().into_iter().enumerate() {
        let at = |r: Rejection| r.at(&format!("order.lines[{i}]"));
        let line_ref = line_ref(line.id, line.line_number).map_err(at)?;
        let line_date = lenient::optional_timestamp(line.status_date, "status_date")
            .map_err(at)?
            .or(order_date);
        let status = status_change(line.status, line.status_reason, line_date, "").map_err(at)?;
        let mut payment = None;
        let mut payment_amounts = None;
        for (j, p) in line.payments.unwrap_or_default().into_iter().enumerate() {
            let at = |r: Rejection| r.at(&format!("order.lines[{i}].payments[{j}]"));
            let date = lenient::optional_timestamp(p.status_date, "status_date")
                .map_err(at)?
                .or(line_date);
            let amounts =
                payment_amounts_of(p.gross_amount, p.net_amount, p.tax_amount).map_err(at)?;
            if let Some(change) = status_change(p.status, None, date, "").map_err(at)?
                && payment.is_none()
            {
                payment = Some(change);
                payment_amounts = amounts;
            }
        }
        lines.push(LineUpdate {
            line: line_ref,
            status,
            payment,
            payment_amounts,
        });
    }
    Ok(OrderUpdate {
        order_id,
        store,
        status,
        lines,
    })
}

fn status_change(
    status: Option<Scalar>,
    reason: Option<Scalar>,
    date: Option<DateTime<Utc>>,
    prefix: &str,
) -> Result<Option<StatusChange>, Rejection> {
    let Some(status) = lenient::optional_string(status, &format!("{prefix}status"))? else {
        return Ok(None);
    };
    let reason = lenient::optional_string(reason, &format!("{prefix}status_reason"))?;
    Ok(Some(StatusChange {
        status: status.trim().to_owned(),
        reason: reason.map(|r| r.trim().to_owned()),
        date,
    }))
}

/// The three amounts of a line payment, or none when the sender leaves any of them out
/// (the exported amounts stand in for them then).
fn payment_amounts_of(
    gross: Option<Scalar>,
    net: Option<Scalar>,
    tax: Option<Scalar>,
) -> Result<Option<PaymentAmounts>, Rejection> {
    let gross = money::optional_amount(gross, "gross_amount")?;
    let net = money::optional_amount(net, "net_amount")?;
    let tax = money::optional_amount(tax, "tax_amount")?;
    Ok(match (gross, net, tax) {
        (Some(gross), Some(net), Some(tax)) => Some(PaymentAmounts { gross, net, tax }),
        _ => None,
    })
}

pub(crate) fn line_ref(id: Option<Scalar>, number: Option<Scalar>) -> Result<LineRef, Rejection> {
    if let Some(id) = lenient::optional_string(id, "id")? {
        return Ok(LineRef::Id(id));
    }
    match lenient::optional_count(number, "line_number")? {
        Some(n) => Ok(LineRef::Number(n)),
        None => Err(Rejection::new(
            "names no order line: \"id\" and \"line_number\" are both missing",
        )),
    }
}

#[derive(Deserialize)]
pub(crate) struct WireLineCancelled {
    order_id: Option<Scalar>,
    order_line_id: Option<Scalar>,
}

pub fn parse_line_cancelled(params: &RawValue) -> Result<LineCancelled, Rejection> {
    let wire: WireLineCancelled = parse_params(params)?;
    Ok(LineCancelled {
        order_id: lenient::required_string(wire.order_id, "order_id")?,
        line_id: lenient::required_string(wire.order_line_id, "order_line_id")?,
    })
}

#[derive(Deserialize)]
pub(crate) struct WireShippingAddressParams {
    shipping_address_modification: Option<WireShippingAddressModification>,
}

#[derive(Deserialize)]
struct WireShippingAddressModification {
    sales_channel_id: Option<Scalar>,
    order_id: Option<Scalar>,
    line_number: Option<Scalar>,
    user: Option<Scalar>,
    new_shipping_address: Option<WireShippingAddress>,
}

#[derive(Deserialize)]
struct WireShippingAddress {
    reference: Option<Scalar>,
    first_name: Option<Scalar>,
    last_name: Option<Scalar>,
    address1: Option<Scalar>,
    address2: Option<Scalar>,
    city: Option<Scalar>,
    state: Option<Scalar>,
    zip: Option<Scalar>,
    country_code: Option<Scalar>,
    phone: Option<Scalar>,
    email: Option<Scalar>,
}

/// Parses `shipping_address_updated`. What an order address cannot do without (names, first
/// line, city, a two-letter country) is required; the rest may be missing.
pub fn parse_shipping_address_update(
    params: &RawValue,
) -> Result<ShippingAddressUpdate, Rejection> {
    let wire: WireShippingAddressParams = parse_params(params)?;
    let name = "shipping_address_modification";
    let m = wire
        .shipping_address_modification
        .ok_or_else(|| Rejection::new(format!("\"{name}\" is missing")))?;
    let at = |r: Rejection| r.at(name);
    let order_id = lenient::required_string(m.order_id, "order_id").map_err(at)?;
    let sales_channel_id =
        lenient::optional_string(m.sales_channel_id, "sales_channel_id").map_err(at)?;
    let line_number = lenient::optional_count(m.line_number, "line_number").map_err(at)?;
    let user = lenient::optional_string(m.user, "user").map_err(at)?;
    let a = m.new_shipping_address.ok_or_else(|| {
        at(Rejection::new(
            "\"new_shipping_address\" is missing: the message changes nothing",
        ))
    })?;
    let at = |r: Rejection| r.at(&format!("{name}.new_shipping_address"));
    let sent = lenient::required_string(a.country_code, "country_code").map_err(at)?;
    let country_code = sent.trim().to_ascii_uppercase();
    if country_code.len() != 2 || !country_code.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(at(Rejection::new(format!(
            "\"country_code\" must be a two-letter country code, got {sent:?}"
        ))));
    }
    let address = NewShippingAddress {
        reference: lenient::optional_string(a.reference, "reference").map_err(at)?,
        first_name: lenient::required_string(a.first_name, "first_name").map_err(at)?,
        last_name: lenient::required_string(a.last_name, "last_name").map_err(at)?,
        address1: lenient::required_string(a.address1, "address1").map_err(at)?,
        address2: lenient::optional_string(a.address2, "address2").map_err(at)?,
        city: lenient::required_string(a.city, "city").map_err(at)?,
        state: lenient::optional_string(a.state, "state").map_err(at)?,
        zip: lenient::optional_string(a.zip, "zip").map_err(at)?,
        country_code,
        phone: lenient::optional_string(a.phone, "phone").map_err(at)?,
        email: lenient::optional_string(a.email, "email").map_err(at)?,
    };
    Ok(ShippingAddressUpdate {
        order_id,
        sales_channel_id,
        line_number,
        user,
        address,
    })
}

#[derive(Deserialize)]
pub(crate) struct WireAttributesParams {
    custom_attributes_modification: Option<WireModification>,
    line_custom_attributes_modification: Option<WireModification>,
}

#[derive(Deserialize)]
struct WireModification {
    order_id: Option<Scalar>,
    sales_channel_id: Option<Scalar>,
    line_id: Option<Scalar>,
    line_number: Option<Scalar>,
    #[serde(default)]
    custom_attributes: Option<Vec<WireInAttribute>>,
}

/// A custom attribute as senders write it: keyed by `name`, `attribute_code` or both.
#[derive(Deserialize)]
pub(crate) struct WireInAttribute {
    name: Option<Scalar>,
    attribute_code: Option<Scalar>,
    value: Option<Scalar>,
}

pub(crate) fn attributes(
    wire: Vec<WireInAttribute>,
    path: &str,
) -> Result<Vec<(String, String)>, Rejection> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, a) in wire.into_iter().enumerate() {
        let at = |r: Rejection| r.at(&format!("{path}[{i}]"));
        let code = match lenient::optional_string(a.attribute_code, "attribute_code").map_err(at)? {
            Some(code) => code,
            None => lenient::optional_string(a.name, "name")
                .map_err(at)?
                .ok_or_else(|| {
                    at(Rejection::new(
                        "\"name\" and \"attribute_code\" are both missing",
                    ))
                })?,
        };
        let value = lenient::value_text(a.value, "value").map_err(at)?;
        match out.iter_mut().find(|(c, _)| *c == code) {
            Some(existing) => existing.1 = value,
            None => out.push((code, value)),
        }
    }
    Ok(out)
}

/// What a custom attribute update is about: the two methods differ only in this, which
/// names the modification's key and whether it names a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributesOf {
    /// `custom_attributes_updated`: the order's own attributes.
    Order,
    /// `line_custom_attributes_updated`: one line's, which it names.
    Line,
}

/// Parses `custom_attributes_updated` or `line_custom_attributes_updated`.
pub fn parse_attributes_update(
    params: &RawValue,
    of: AttributesOf,
) -> Result<AttributesUpdate, Rejection> {
    let wire: WireAttributesParams = parse_params(params)?;
    let line = of == AttributesOf::Line;
    let (name, modification) = if line {
        (
            "line_custom_attributes_modification",
            wire.line_custom_attributes_modification,
        )
    } else {
        (
            "custom_attributes_modification",
            wire.custom_attributes_modification,
        )
    };
    let m = modification.ok_or_else(|| Rejection::new(format!("\"{name}\" is missing")))?;
    let at = |r: Rejection| r.at(name);
    let order_id = lenient::required_string(m.order_id, "order_id").map_err(at)?;
    let sales_channel_id =
        lenient::optional_string(m.sales_channel_id, "sales_channel_id").map_err(at)?;
    let line = if line {
        Some(line_ref(m.line_id, m.line_number).map_err(at)?)
    } else {
        None
    };
    let attributes = attributes(
        m.custom_attributes.unwrap_or_default(),
        &format!("{name}.custom_attributes"),
    )?;
    Ok(AttributesUpdate {
        order_id,
        sales_channel_id,
        line,
        attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(
        clippy::needless_pass_by_value,
        reason = "called with json! values built at the call"
    )]
    fn raw(v: serde_json::Value) -> Box<RawValue> {
        RawValue::from_string(v.to_string()).unwrap()
    }

    #[test]
    fn the_mock_update_template_parses_once_filled_in() {
        let text =
            include_str!("../fixtures/mock-templates/magento.sales.order_management.updated.json")
                .replace("{{order.origin_date}}", "2026-01-01T10:00:00+01:00")
                .replace("{{order.increment_id}}", "000000001")
                .replace("{{order_item.id}}", "1")
                .replace("{{order_item.line_number}}", "1")
                .replace("{{order_item.status}}", "SHIPPED")
                .replace("{{order_item.gross_amount}}", "11.90")
                .replace("{{order_item.net_amount}}", "10.00")
                .replace("{{order_item.taxes_amount}}", "1.90");
        let text = regex_free_fill(&text);
        let update = parse_order_update(&RawValue::from_string(text).unwrap()).unwrap();
        assert_eq!(update.order_id, "000000001");
        let status = update.status.unwrap();
        assert_eq!(
            (status.status.as_str(), status.reason.as_deref()),
            ("COMPLETE", Some("FULLYSHIPPED"))
        );
        assert_eq!(
            status.date.unwrap().to_rfc3339(),
            "2026-01-01T09:00:00+00:00"
        );
        assert_eq!(update.lines.len(), 1);
        assert_eq!(update.lines[0].line, LineRef::Id("1".into()));
        assert_eq!(
            update.lines[0].payment.as_ref().unwrap().status,
            "CAPTURE_REQUESTED"
        );
        assert_eq!(
            update.lines[0].payment_amounts,
            Some(PaymentAmounts {
                gross: Decimal::new(1190, 2),
                net: Decimal::new(1000, 2),
                tax: Decimal::new(190, 2),
            })
        );
    }

    /// Fills the remaining `{{…}}` placeholders with a plain word.
    fn regex_free_fill(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find("}}").unwrap() + start + 2;
            out.push('x');
            rest = &rest[end..];
        }
        out.push_str(rest);
        out
    }

    #[test]
    fn a_status_without_a_date_is_read_without_one() {
        let update = parse_order_update(&raw(serde_json::json!({"order": {
            "id": "1", "status": "COMPLETE", "status_reason": "FULLYSHIPPED",
            "lines": [{"id": "8", "status": "SHIPPED",
                       "payments": [{"status": "CAPTURED", "gross_amount": 12}]}]}})))
        .unwrap();
        let status = update.status.unwrap();
        assert_eq!((status.status.as_str(), status.date), ("COMPLETE", None));
        let line = &update.lines[0];
        assert_eq!(line.status.as_ref().unwrap().date, None);
        assert_eq!(line.payment.as_ref().unwrap().date, None);
        assert_eq!(
            line.payment_amounts, None,
            "a payment without all three amounts leaves the exported ones to stand"
        );
    }

    #[test]
    fn line_payments_take_the_line_date_when_they_have_none() {
        let update = parse_order_update(&raw(serde_json::json!({"order": {
            "id": "1", "status_date": "2026-01-01 00:00:00",
            "lines": [{"line_number": "2", "status": "SHIPPED", "status_date": "2026-01-02 00:00:00",
                       "payments": [{"status": "CAPTURED"}]}]}})))
        .unwrap();
        let line = &update.lines[0];
        assert_eq!(line.line, LineRef::Number(2));
        assert_eq!(
            line.payment.as_ref().unwrap().date,
            line.status.as_ref().unwrap().date
        );
        assert!(update.status.is_none());
    }

    #[test]
    fn attributes_accept_name_or_attribute_code_and_the_last_value_wins() {
        let update = parse_attributes_update(
            &raw(serde_json::json!({"custom_attributes_modification": {
                "order_id": "1", "sales_channel_id": "web", "user": "u",
                "custom_attributes": [
                    {"name": "a", "value": "1"},
                    {"attribute_code": "b", "value": 2},
                    {"name": "a", "attribute_code": "a", "value": "3"}]}})),
            AttributesOf::Order,
        )
        .unwrap();
        assert_eq!(
            update.attributes,
            vec![("a".into(), "3".into()), ("b".into(), "2".into())]
        );
    }

    #[test]
    fn a_shipping_address_update_in_the_specifications_shape_parses() {
        let update = parse_shipping_address_update(&raw(serde_json::json!({
            "shipping_address_modification": {
                "sales_channel_id": "default", "order_id": "000000101", "line_number": "2",
                "user": "agent.smith", "force": false,
                "new_shipping_address": {
                    "reference": "", "first_name": "Ada", "last_name": "Lovelace",
                    "company_name": "Analytical Engines", "address1": "12 St James's Square",
                    "city": "London", "zip": "SW1Y 4JH", "country_code": "gb",
                    "email": "ada@example.com", "latitude": "51.5", "longitude": "-0.13",
                    "custom_attributes": []}}})))
        .unwrap();
        assert_eq!(update.order_id, "000000101");
        assert_eq!(update.sales_channel_id.as_deref(), Some("default"));
        assert_eq!(update.line_number, Some(2));
        assert_eq!(update.user.as_deref(), Some("agent.smith"));
        assert_eq!(update.address.reference, None, "an empty reference is none");
        assert_eq!(update.address.country_code, "GB");
        assert_eq!(update.address.address2, None);
    }

    #[test]
    fn a_shipping_address_update_without_what_an_address_needs_is_refused() {
        let refused = |address: serde_json::Value| {
            parse_shipping_address_update(&raw(serde_json::json!({
                "shipping_address_modification": {"order_id": "1", "new_shipping_address": address}})))
            .unwrap_err()
            .to_string()
        };
        let full = serde_json::json!({"first_name": "A", "last_name": "B", "address1": "C",
                                      "city": "D", "country_code": "DE"});
        let mut no_city = full.clone();
        no_city["city"] = serde_json::json!("");
        assert!(refused(no_city).contains("city"));
        let mut country = full;
        country["country_code"] = serde_json::json!("Germany");
        assert!(refused(country).contains("two-letter"));
        let none = parse_shipping_address_update(&raw(serde_json::json!({
            "shipping_address_modification": {"order_id": "1"}})))
        .unwrap_err();
        assert!(none.to_string().contains("new_shipping_address"), "{none}");
    }

    #[test]
    fn the_order_commands_go_out_as_the_specification_says() {
        let spec = crate::spec::spec();
        let cancel = serde_json::to_value(CancelParams {
            order_id: "1".into(),
            sales_channel_id: "default".into(),
            user: None,
        })
        .unwrap();
        assert_eq!(
            spec.check_params(methods::CANCEL, &cancel),
            Vec::<String>::new()
        );
        let line = serde_json::to_value(CancelLineParams {
            order_id: "1".into(),
            sales_channel_id: "default".into(),
            line_number: 2,
            reason: "changed my mind".into(),
            user: Some("customer@example.com".into()),
        })
        .unwrap();
        assert_eq!(
            spec.check_params(methods::CANCEL_LINE, &line),
            Vec::<String>::new()
        );
        let comment = serde_json::to_value(CreateCommentParams {
            order_comment: WireOrderComment {
                order_id: "1".into(),
                sales_channel_id: "default".into(),
                created_date: "2026-03-01T10:00:00+00:00".into(),
                user: "customer@example.com".into(),
                comment: "Please ring twice".into(),
            },
        })
        .unwrap();
        assert_eq!(
            spec.check_params(methods::CREATE_COMMENT, &comment),
            Vec::<String>::new()
        );
    }

    #[test]
    fn statuses_compare_without_separators_or_case() {
        assert_eq!(
            normalize_status("PENDING_REMORSE_TIME"),
            "PENDINGREMORSETIME"
        );
        assert_eq!(normalize_status("pendingRemorseTime"), "PENDINGREMORSETIME");
    }
}
