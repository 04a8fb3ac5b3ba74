//! Post-sales messages (`magento.postsales.*`): the return Commerce asks the OMS to authorize,
//! and the return and refund updates the OMS sends back. Field names follow
//! `postsales/return.xml` and `postsales/refund.xml` of the specification.
//!
//! How messages name an order line differs from the sales messages: a return line's `id` is
//! "an external identifier of the line in the order; it may not be unique" while its
//! `line_number` is "the unique identifier of the line", so return lines are found by number
//! first. A refund line names its line with `order_line`, which real senders fill with the
//! line number (the OMS mock writes `{{rma_item.line_number}}`) and others with the line id;
//! since an exported line id may be a number too, the post-sales module decides which line
//! it is against the order's exported lines, with `order_item_id` ([`RefundLine`]).

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::lenient::{self, Scalar};
use crate::money::{optional_amount, storable_amount};
use crate::sales::{LineRef, WireCustomAttribute, WireInAttribute, attributes};
use crate::{Rejection, parse_params};

/// The post-sales methods of the connector.
pub mod methods {
    /// C→O: a return requested in Commerce.
    pub const AUTHORIZE: &str = "magento.postsales.return_management.authorize";
    /// O→C: a return's status, its lines' statuses, its tracking.
    pub const RETURN_UPDATED: &str = "magento.postsales.return_management.updated";
    /// O→C: the goods of a return arrived at the source.
    pub const RETURN_RECEIVED: &str = "magento.postsales.return_management.received";
    pub const RETURN_CUSTOM_ATTRIBUTES_UPDATED: &str =
        "magento.postsales.return_management.custom_attributes_updated";
    pub const RETURN_LINE_CUSTOM_ATTRIBUTES_UPDATED: &str =
        "magento.postsales.return_management.line_custom_attributes_updated";
    /// O→C: the OMS reports a return as a duplicate (of another return of the order). The
    /// specification says nothing more: the connector records it and changes no return.
    pub const RETURN_DUPLICATED: &str = "magento.postsales.return_management.duplicated";
    /// O→C: a refund's status; on `RELEASED` Commerce issues the credit memo.
    pub const REFUND_UPDATED: &str = "magento.postsales.refund_management.updated";
    pub const REFUND_CUSTOM_ATTRIBUTES_UPDATED: &str =
        "magento.postsales.refund_management.custom_attributes_updated";

    /// Every method the post-sales module consumes.
    pub const CONSUMED: &[&str] = &[
        RETURN_UPDATED,
        RETURN_RECEIVED,
        RETURN_CUSTOM_ATTRIBUTES_UPDATED,
        RETURN_LINE_CUSTOM_ATTRIBUTES_UPDATED,
        RETURN_DUPLICATED,
        REFUND_UPDATED,
        REFUND_CUSTOM_ATTRIBUTES_UPDATED,
    ];
}

// ---------------------------------------------------------------------------------------
// Outbound: `return_management.authorize`.

/// `params` of `return_management.authorize`.
#[derive(Debug, Clone, Serialize)]
pub struct AuthorizeParams {
    #[serde(rename = "return")]
    pub return_authorize: WireReturnAuthorize,
}

/// `magento.postsales.return_authorize`.
#[derive(Debug, Clone, Serialize)]
pub struct WireReturnAuthorize {
    pub sales_channel_id: String,
    pub order_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The return's id in Commerce: every later message about the return carries it.
    pub rma: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_tracking_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_tracking_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_tracking_label_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_tracking_carrier: Option<String>,
    /// When the customer asked for the return.
    pub origin_date: String,
    pub custom_attributes: Vec<WireCustomAttribute>,
    pub lines: Vec<WireReturnLine>,
}

/// `magento.postsales.return_line`: one unit of an order line.
#[derive(Debug, Clone, Serialize)]
pub struct WireReturnLine {
    pub id: String,
    pub line_number: i32,
    pub sku: String,
    pub custom_attributes: Vec<WireCustomAttribute>,
    pub reason: String,
    pub reason_description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition_description: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Inbound: returns.

/// A status with its date: the version of a compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostsalesStatus {
    /// The status code as sent (`REQUESTED`, `APPROVED`, `PENDINGRELEASE`, `RELEASED` …).
    pub code: String,
    pub name: Option<String>,
    pub reason: Option<String>,
    pub date: DateTime<Utc>,
}

/// Where the customer sends the goods back, and how to follow them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReturnTracking {
    pub number: Option<String>,
    pub url: Option<String>,
    pub label_url: Option<String>,
    pub carrier: Option<String>,
}

/// Whether a return event reports a change (`updated`) or the goods' arrival (`received`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnEventKind {
    Updated,
    Received,
}

/// `return_management.updated` or `.received`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReturnEvent {
    pub kind: ReturnEventKind,
    pub order_id: String,
    /// The return's id (Commerce's, for a return requested there). Empty for a blind return:
    /// goods that arrived without one.
    pub rma: Option<String>,
    pub sales_channel_id: Option<String>,
    pub source_id: Option<String>,
    pub user: Option<String>,
    /// `updated`: the return's status. A `received` carries none.
    pub status: Option<PostsalesStatus>,
    /// `received`: when the goods arrived (`origin_date`), if the sender says.
    pub received_at: Option<DateTime<Utc>>,
    pub tracking: ReturnTracking,
    /// `(code, value)` of the return's custom attributes.
    pub attributes: Vec<(String, String)>,
    pub lines: Vec<ReturnEventLine>,
}

/// One line of a return event.
#[derive(Debug, Clone, PartialEq)]
pub struct ReturnEventLine {
    pub line: LineRef,
    pub sku: Option<String>,
    /// The line's status (`updated`); it takes the return's status date as its version.
    pub status: Option<String>,
    pub reason: Option<String>,
    pub condition: Option<String>,
    pub condition_description: Option<String>,
    pub attributes: Vec<(String, String)>,
}

impl ReturnEvent {
    /// What identifies a blind return (no rma): its order and lines.
    pub fn content(&self) -> String {
        let mut lines: Vec<String> = self.lines.iter().map(|l| l.line.to_string()).collect();
        lines.sort();
        format!("{}|{}", self.order_id, lines.join(","))
    }
}

/// `return_management.custom_attributes_updated` (`line` empty) and
/// `line_custom_attributes_updated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnAttributesUpdate {
    pub order_id: String,
    pub rma: String,
    pub line: Option<LineRef>,
    pub attributes: Vec<(String, String)>,
}

/// `return_management.duplicated` (`magento.postsales.return_duplicate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnDuplicated {
    pub order_id: String,
    pub sales_channel_id: Option<String>,
    /// The return reported as a duplicate; the specification makes it optional.
    pub rma: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct WireReturnDuplicateParams {
    #[serde(rename = "return")]
    return_duplicate: Option<WireReturnDuplicate>,
}

#[derive(Deserialize)]
struct WireReturnDuplicate {
    sales_channel_id: Option<Scalar>,
    order_id: Option<Scalar>,
    rma: Option<Scalar>,
}

/// Parses `return_management.duplicated`.
pub fn parse_return_duplicated(params: &RawValue) -> Result<ReturnDuplicated, Rejection> {
    let wire: WireReturnDuplicateParams = parse_params(params)?;
    let r = wire
        .return_duplicate
        .ok_or_else(|| Rejection::new("\"return\" is missing"))?;
    let at = |e: Rejection| e.at("return");
    Ok(ReturnDuplicated {
        order_id: lenient::required_string(r.order_id, "order_id").map_err(at)?,
        sales_channel_id: lenient::optional_string(r.sales_channel_id, "sales_channel_id")
            .map_err(at)?,
        rma: lenient::optional_string(r.rma, "rma").map_err(at)?,
    })
}

#[derive(Deserialize)]
pub(crate) struct WireReturnParams {
    #[serde(rename = "return")]
    return_event: Option<WireReturn>,
}

#[derive(Deserialize)]
struct WireReturn {
    order_id: Option<Scalar>,
    rma: Option<Scalar>,
    sales_channel_id: Option<Scalar>,
    source_id: Option<Scalar>,
    user: Option<Scalar>,
    origin_date: Option<Scalar>,
    status: Option<WireStatus>,
    return_tracking_number: Option<Scalar>,
    return_tracking_url: Option<Scalar>,
    return_tracking_label_url: Option<Scalar>,
    return_tracking_carrier: Option<Scalar>,
    #[serde(default)]
    custom_attributes: Option<Vec<WireInAttribute>>,
    #[serde(default)]
    lines: Option<Vec<WireReturnLineIn>>,
}

#[derive(Deserialize)]
struct WireStatus {
    code: Option<Scalar>,
    name: Option<Scalar>,
    reason_code: Option<Scalar>,
    reason_name: Option<Scalar>,
    date: Option<Scalar>,
}

#[derive(Deserialize)]
struct WireReturnLineIn {
    id: Option<Scalar>,
    line_number: Option<Scalar>,
    sku: Option<Scalar>,
    status: Option<Scalar>,
    reason: Option<Scalar>,
    condition: Option<Scalar>,
    condition_description: Option<Scalar>,
    #[serde(default)]
    custom_attributes: Option<Vec<WireInAttribute>>,
}

/// Parses `return_management.updated` or `.received`. A line status needs the return's
/// status date (the version that orders updates); a `received` needs no version (a line is
/// received once).
pub fn parse_return_event(
    params: &RawValue,
    kind: ReturnEventKind,
) -> Result<ReturnEvent, Rejection> {
    let wire: WireReturnParams = parse_params(params)?;
    let r = wire
        .return_event
        .ok_or_else(|| Rejection::new("\"return\" is missing"))?;
    let at = |e: Rejection| e.at("return");
    let order_id = lenient::required_string(r.order_id, "order_id").map_err(at)?;
    let rma = lenient::optional_string(r.rma, "rma").map_err(at)?;
    let status = match r.status {
        Some(s) if kind == ReturnEventKind::Updated => status(s, "status").map_err(at)?,
        _ => None,
    };
    let received_at = match kind {
        ReturnEventKind::Received => {
            lenient::optional_timestamp(r.origin_date, "origin_date").map_err(at)?
        }
        ReturnEventKind::Updated => None,
    };
    let mut lines = Vec::new();
    for (i, line) in r.lines.unwrap_or_default().into_iter().enumerate() {
        let path = format!("return.lines[{i}]");
        let at = |e: Rejection| e.at(&path);
        let line_status = lenient::optional_string(line.status, "status").map_err(at)?;
        if line_status.is_some() && status.is_none() && kind == ReturnEventKind::Updated {
            return Err(at(Rejection::new(
                "the line has a \"status\" but the return has no status date; without it an update cannot be ordered against others",
            )));
        }
        lines.push(ReturnEventLine {
            line: return_line_ref(line.id, line.line_number).map_err(at)?,
            sku: lenient::optional_string(line.sku, "sku").map_err(at)?,
            status: line_status.map(|s| s.trim().to_owned()),
            reason: lenient::optional_string(line.reason, "reason").map_err(at)?,
            condition: lenient::optional_string(line.condition, "condition").map_err(at)?,
            condition_description: lenient::optional_string(
                line.condition_description,
                "condition_description",
            )
            .map_err(at)?,
            attributes: attributes(
                line.custom_attributes.unwrap_or_default(),
                &format!("{path}.custom_attributes"),
            )?,
        });
    }
    if rma.is_none() && lines.is_empty() {
        return Err(Rejection::new(
            "return: neither \"rma\" nor \"lines\": the message names no return",
        ));
    }
    Ok(ReturnEvent {
        kind,
        order_id,
        rma,
        sales_channel_id: lenient::optional_string(r.sales_channel_id, "sales_channel_id")
            .map_err(at)?,
        source_id: lenient::optional_string(r.source_id, "source_id").map_err(at)?,
        user: lenient::optional_string(r.user, "user").map_err(at)?,
        status,
        received_at,
        tracking: ReturnTracking {
            number: lenient::optional_string(r.return_tracking_number, "return_tracking_number")
                .map_err(at)?,
            url: lenient::optional_string(r.return_tracking_url, "return_tracking_url")
                .map_err(at)?,
            label_url: lenient::optional_string(
                r.return_tracking_label_url,
                "return_tracking_label_url",
            )
            .map_err(at)?,
            carrier: lenient::optional_string(r.return_tracking_carrier, "return_tracking_carrier")
                .map_err(at)?,
        },
        attributes: attributes(
            r.custom_attributes.unwrap_or_default(),
            "return.custom_attributes",
        )?,
        lines,
    })
}

/// A return line is found by its `line_number` (unique in the order), else by its `id`.
fn return_line_ref(id: Option<Scalar>, number: Option<Scalar>) -> Result<LineRef, Rejection> {
    if let Some(n) = lenient::optional_count(number, "line_number")? {
        return Ok(LineRef::Number(n));
    }
    match lenient::optional_string(id, "id")? {
        Some(id) => Ok(LineRef::Id(id)),
        None => Err(Rejection::new(
            "names no order line: \"line_number\" and \"id\" are both missing",
        )),
    }
}

fn status(wire: WireStatus, field: &str) -> Result<Option<PostsalesStatus>, Rejection> {
    let at = |e: Rejection| e.at(field);
    let code = lenient::optional_string(wire.code, "code").map_err(at)?;
    let name = lenient::optional_string(wire.name, "name").map_err(at)?;
    let Some(code) = code.or_else(|| name.clone()) else {
        return Ok(None);
    };
    let date = date_or_timestamp(wire.date, "date")
        .map_err(at)?
        .ok_or_else(|| {
            at(Rejection::new(format!(
                "status {code:?} has no \"date\"; without it an update cannot be ordered against others"
            )))
        })?;
    let reason = match lenient::optional_string(wire.reason_code, "reason_code").map_err(at)? {
        Some(reason) => Some(reason),
        None => lenient::optional_string(wire.reason_name, "reason_name").map_err(at)?,
    };
    Ok(Some(PostsalesStatus {
        code: code.trim().to_owned(),
        name,
        reason: reason.map(|r| r.trim().to_owned()),
        date,
    }))
}

/// A `date` or `datetime` field: a timestamp as [`lenient::required_timestamp`] reads it, or
/// a plain date (`2026-03-01`, midnight UTC).
fn date_or_timestamp(
    value: Option<Scalar>,
    field: &str,
) -> Result<Option<DateTime<Utc>>, Rejection> {
    if let Some(Scalar::Str(text)) = &value
        && let Ok(date) = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
    {
        return date
            .and_hms_opt(0, 0, 0)
            .map(|t| lenient::storable_timestamp(t.and_utc(), field))
            .transpose();
    }
    lenient::optional_timestamp(value, field)
}

#[derive(Deserialize)]
pub(crate) struct WireReturnAttributesParams {
    return_custom_attributes_modification: Option<WireReturnModification>,
    return_line_custom_attributes_modification: Option<WireReturnModification>,
}

#[derive(Deserialize)]
struct WireReturnModification {
    order_id: Option<Scalar>,
    rma: Option<Scalar>,
    line_number: Option<Scalar>,
    line_id: Option<Scalar>,
    #[serde(default)]
    custom_attributes: Option<Vec<WireInAttribute>>,
}

/// What a return's custom attribute update is about: the two methods differ only in this,
/// which names the modification's key and whether it names a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnAttributesOf {
    /// `return_management.custom_attributes_updated`: the return's own attributes.
    Return,
    /// `return_management.line_custom_attributes_updated`: one returned line's.
    Line,
}

/// Parses `return_management.custom_attributes_updated` or `line_custom_attributes_updated`.
pub fn parse_return_attributes(
    params: &RawValue,
    of: ReturnAttributesOf,
) -> Result<ReturnAttributesUpdate, Rejection> {
    let wire: WireReturnAttributesParams = parse_params(params)?;
    let line = of == ReturnAttributesOf::Line;
    let (name, modification) = if line {
        (
            "return_line_custom_attributes_modification",
            wire.return_line_custom_attributes_modification,
        )
    } else {
        (
            "return_custom_attributes_modification",
            wire.return_custom_attributes_modification,
        )
    };
    let m = modification.ok_or_else(|| Rejection::new(format!("\"{name}\" is missing")))?;
    let at = |e: Rejection| e.at(name);
    Ok(ReturnAttributesUpdate {
        order_id: lenient::required_string(m.order_id, "order_id").map_err(at)?,
        rma: lenient::required_string(m.rma, "rma").map_err(at)?,
        line: if line {
            Some(return_line_ref(m.line_id, m.line_number).map_err(at)?)
        } else {
            None
        },
        attributes: attributes(
            m.custom_attributes.unwrap_or_default(),
            &format!("{name}.custom_attributes"),
        )?,
    })
}

// ---------------------------------------------------------------------------------------
// Inbound: refunds.

/// Refund types (`refund_type`, compared without case).
pub mod refund_types {
    pub const RETURN: &str = "return";
    pub const APPEASEMENT: &str = "appeasement";
    pub const CANCELLATION: &str = "cancellation";
}

/// `refund_management.updated`.
#[derive(Debug, Clone, PartialEq)]
pub struct Refund {
    pub order_id: String,
    /// The sales channel the order is of (`sales_channel_id`, else `store_id`), when the
    /// sender says.
    pub store: Option<String>,
    /// The OMS's credit note number, when it sends one (the specification makes it
    /// optional).
    pub credit_note_number: Option<String>,
    /// What identifies the refund, one credit memo per key: the credit note number, or
    /// `digest:` and a SHA-256 of the refund's content when there is none ([`Refund::digest`]).
    pub key: String,
    pub credit_note_date: Option<DateTime<Utc>>,
    pub status: PostsalesStatus,
    /// `return`, `appeasement`, `cancellation` (lower case), or whatever else was sent.
    pub refund_type: Option<String>,
    pub rma: Option<String>,
    pub user: Option<String>,
    pub refund_reason: Option<String>,
    pub lines: Vec<RefundLine>,
    pub attributes: Vec<(String, String)>,
}

/// One refunded order line with what is refunded of it: the sum of its payments.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundLine {
    /// `order_line` as sent, trimmed: a line id or a line number.
    pub order_line: String,
    /// `order_item_id`, when sent: the order item (or exported line) the refunded line is of,
    /// which tells a line id from a line number when both would name a line.
    pub order_item_id: Option<String>,
    pub reason: Option<String>,
    pub reason_description: Option<String>,
    /// `cost_gross`: what the customer gets back for the line.
    pub amount: Decimal,
    /// `cost_vat`, when sent.
    pub tax: Option<Decimal>,
}

impl Refund {
    /// The refund's total: what its lines give back.
    pub fn total(&self) -> Decimal {
        self.lines.iter().map(|l| l.amount).sum()
    }

    /// The key of a refund without a credit note number: a SHA-256 of what stays the same
    /// across its status updates (order, RMA, type, and each line's reference and amounts,
    /// in any order), so its `PENDINGRELEASE` and its `RELEASED` are one refund and one
    /// credit memo. Status, dates and reasons are left out: they change between messages.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut lines: Vec<String> = self
            .lines
            .iter()
            .map(|l| {
                format!(
                    "{}/{}/{}/{}",
                    l.order_line,
                    l.order_item_id.as_deref().unwrap_or(""),
                    l.amount.normalize(),
                    l.tax.map(|t| t.normalize().to_string()).unwrap_or_default()
                )
            })
            .collect();
        lines.sort();
        let content = format!(
            "{}|{}|{}|{}",
            self.order_id,
            self.rma.as_deref().unwrap_or(""),
            self.refund_type.as_deref().unwrap_or(""),
            lines.join(",")
        );
        let hash = Sha256::digest(content.as_bytes());
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        format!("digest:{hex}")
    }
}

/// `refund_management.custom_attributes_updated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundAttributesUpdate {
    pub order_id: String,
    pub credit_note_number: String,
    pub attributes: Vec<(String, String)>,
}

#[derive(Deserialize)]
pub(crate) struct WireRefundParams {
    refund: Option<WireRefund>,
}

#[derive(Deserialize)]
struct WireRefund {
    order_id: Option<Scalar>,
    store_id: Option<Scalar>,
    sales_channel_id: Option<Scalar>,
    credit_note_number: Option<Scalar>,
    credit_note_date: Option<Scalar>,
    status: Option<WireStatus>,
    refund_type: Option<Scalar>,
    rma: Option<Scalar>,
    user: Option<Scalar>,
    refund_reason: Option<Scalar>,
    #[serde(default)]
    lines: Option<Vec<WireRefundLine>>,
    #[serde(default)]
    custom_attributes: Option<Vec<WireInAttribute>>,
}

#[derive(Deserialize)]
struct WireRefundLine {
    order_line: Option<Scalar>,
    order_item_id: Option<Scalar>,
    reason: Option<Scalar>,
    reason_description: Option<Scalar>,
    #[serde(default)]
    payments: Option<Vec<WireRefundPayment>>,
}

#[derive(Deserialize)]
struct WireRefundPayment {
    details: Option<WireRefundDetails>,
}

#[derive(Deserialize)]
struct WireRefundDetails {
    cost_gross: Option<Scalar>,
    cost_vat: Option<Scalar>,
}

/// Parses `refund_management.updated`. Money arrives as strings or numbers and is read
/// exactly; a negative amount cannot be refunded.
pub fn parse_refund(params: &RawValue) -> Result<Refund, Rejection> {
    let wire: WireRefundParams = parse_params(params)?;
    let r = wire
        .refund
        .ok_or_else(|| Rejection::new("\"refund\" is missing"))?;
    let at = |e: Rejection| e.at("refund");
    let order_id = lenient::required_string(r.order_id, "order_id").map_err(at)?;
    let credit_note_number =
        lenient::optional_string(r.credit_note_number, "credit_note_number").map_err(at)?;
    let status = r
        .status
        .ok_or_else(|| Rejection::new("\"status\" is missing"))
        .and_then(|s| status(s, "status"))
        .map_err(at)?
        .ok_or_else(|| {
            at(Rejection::new(
                "status: \"code\" and \"name\" are both missing",
            ))
        })?;
    // The channel by its own name first: the OMS mock fills `store_id` with the return's
    // source, so `store_id` only stands in when `sales_channel_id` is missing.
    let store =
        match lenient::optional_string(r.sales_channel_id, "sales_channel_id").map_err(at)? {
            Some(channel) => Some(channel),
            None => lenient::optional_string(r.store_id, "store_id").map_err(at)?,
        };
    let mut lines = Vec::new();
    for (i, line) in r.lines.unwrap_or_default().into_iter().enumerate() {
        let path = format!("refund.lines[{i}]");
        let at = |e: Rejection| e.at(&path);
        let order_line = lenient::required_string(line.order_line, "order_line")
            .map_err(at)?
            .trim()
            .to_owned();
        let order_item_id = lenient::optional_string(line.order_item_id, "order_item_id")
            .map_err(at)?
            .map(|id| id.trim().to_owned());
        let payments = line.payments.unwrap_or_default();
        if payments.is_empty() {
            return Err(at(Rejection::new(
                "\"payments\" is empty: the line says nothing about what is refunded",
            )));
        }
        let (mut amount, mut tax) = (Decimal::ZERO, None::<Decimal>);
        for (j, payment) in payments.into_iter().enumerate() {
            let path = format!("{path}.payments[{j}].details");
            let at = |e: Rejection| e.at(&path);
            let details = payment
                .details
                .ok_or_else(|| Rejection::new(format!("{path}: \"details\" is missing")))?;
            let gross = optional_amount(details.cost_gross, "cost_gross")
                .map_err(at)?
                .ok_or_else(|| at(Rejection::new("\"cost_gross\" is missing")))?;
            if gross.is_sign_negative() && !gross.is_zero() {
                return Err(at(Rejection::new(format!(
                    "\"cost_gross\" is negative ({gross}); a refund gives money back"
                ))));
            }
            amount += gross;
            if let Some(vat) = optional_amount(details.cost_vat, "cost_vat").map_err(at)? {
                tax = Some(tax.unwrap_or_default() + vat);
            }
        }
        // Each payment fits its column; their sum must too.
        let amount = storable_amount(amount, "cost_gross").map_err(at)?;
        let tax = tax
            .map(|tax| storable_amount(tax, "cost_vat"))
            .transpose()
            .map_err(at)?;
        lines.push(RefundLine {
            order_line,
            order_item_id,
            reason: lenient::optional_string(line.reason, "reason").map_err(at)?,
            reason_description: lenient::optional_string(
                line.reason_description,
                "reason_description",
            )
            .map_err(at)?,
            amount,
            tax,
        });
    }
    if lines.is_empty() {
        return Err(Rejection::new(
            "refund: \"lines\" lists no order line; a credit memo is made of the refunded lines",
        ));
    }
    let mut refund = Refund {
        order_id,
        store,
        credit_note_number,
        key: String::new(),
        credit_note_date: date_or_timestamp(r.credit_note_date, "credit_note_date").map_err(at)?,
        status,
        refund_type: lenient::optional_string(r.refund_type, "refund_type")
            .map_err(at)?
            .map(|t| t.trim().to_lowercase()),
        rma: lenient::optional_string(r.rma, "rma").map_err(at)?,
        user: lenient::optional_string(r.user, "user").map_err(at)?,
        refund_reason: lenient::optional_string(r.refund_reason, "refund_reason").map_err(at)?,
        lines,
        attributes: attributes(
            r.custom_attributes.unwrap_or_default(),
            "refund.custom_attributes",
        )?,
    };
    refund.key = match &refund.credit_note_number {
        Some(number) => number.clone(),
        None => refund.digest(),
    };
    Ok(refund)
}

#[derive(Deserialize)]
pub(crate) struct WireRefundAttributesParams {
    refund_custom_attributes_modification: Option<WireRefundModification>,
}

#[derive(Deserialize)]
struct WireRefundModification {
    order_id: Option<Scalar>,
    credit_note_number: Option<Scalar>,
    #[serde(default)]
    custom_attributes: Option<Vec<WireInAttribute>>,
}

pub fn parse_refund_attributes(params: &RawValue) -> Result<RefundAttributesUpdate, Rejection> {
    let wire: WireRefundAttributesParams = parse_params(params)?;
    let name = "refund_custom_attributes_modification";
    let m = wire
        .refund_custom_attributes_modification
        .ok_or_else(|| Rejection::new(format!("\"{name}\" is missing")))?;
    let at = |e: Rejection| e.at(name);
    Ok(RefundAttributesUpdate {
        order_id: lenient::required_string(m.order_id, "order_id").map_err(at)?,
        credit_note_number: lenient::required_string(m.credit_note_number, "credit_note_number")
            .map_err(at)?,
        attributes: attributes(
            m.custom_attributes.unwrap_or_default(),
            &format!("{name}.custom_attributes"),
        )?,
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[allow(
        clippy::needless_pass_by_value,
        reason = "called with json! values built at the call"
    )]
    fn raw(v: serde_json::Value) -> Box<RawValue> {
        RawValue::from_string(v.to_string()).unwrap()
    }

    fn fill(template: &str, values: &[(&str, &str)]) -> Box<RawValue> {
        let mut text = template.to_owned();
        for (k, v) in values {
            text = text.replace(&format!("{{{{{k}}}}}"), v);
        }
        assert!(!text.contains("{{"), "unfilled placeholder in {text}");
        RawValue::from_string(text).unwrap()
    }

    #[test]
    fn the_mock_refund_template_parses_with_its_money_as_strings() {
        let params = fill(
            include_str!(
                "../fixtures/mock-templates/magento.postsales.refund_management.updated.json"
            ),
            &[
                ("rma.date", "2026-04-02 10:00:00"),
                ("rma.credit_note", "CN-1"),
                ("order_item.id", "7"),
                ("rma_item.line_number", "2"),
                ("rma_item.gross_amount", "49.99"),
                ("rma_item.net_amount", "41.66"),
                ("rma_item.taxes_amount", "8.33"),
                ("rma_item.taxes_rate", "20"),
                ("rma_item.reason", "DAMAGED"),
                ("rma_item.reason_description", "Arrived broken"),
                ("rma.increment_id", "000000042"),
                ("rma.rma_id", "R-42"),
                ("rma.sales_channel", "default"),
                ("rma.source", "default"),
            ],
        );
        let refund = parse_refund(&params).unwrap();
        assert_eq!(refund.order_id, "000000042");
        assert_eq!(refund.credit_note_number.as_deref(), Some("CN-1"));
        assert_eq!(refund.key, "CN-1");
        assert_eq!(refund.status.code, "RELEASED");
        assert_eq!(refund.refund_type.as_deref(), Some(refund_types::RETURN));
        assert_eq!(refund.rma.as_deref(), Some("R-42"));
        assert_eq!(refund.lines.len(), 1);
        assert_eq!(refund.lines[0].order_line, "2");
        assert_eq!(refund.lines[0].order_item_id.as_deref(), Some("7"));
        assert_eq!(refund.lines[0].amount, Decimal::from_str("49.99").unwrap());
        assert_eq!(
            refund.lines[0].tax,
            Some(Decimal::from_str("8.33").unwrap())
        );
        assert_eq!(
            refund.credit_note_date.unwrap().to_rfc3339(),
            "2026-04-02T10:00:00+00:00"
        );
    }

    #[test]
    fn the_mock_return_template_parses_and_finds_lines_by_number() {
        let params = fill(
            include_str!(
                "../fixtures/mock-templates/magento.postsales.return_management.updated.json"
            ),
            &[
                ("order_item.id", "1"),
                ("rma_item.line_number", "2"),
                ("rma_item.reason", "TOO_SMALL"),
                ("rma_item.reason_description", "Too small"),
                ("rma_item.sku", "MUG"),
                ("rma.status", "APPROVED"),
                ("rma.increment_id", "000000042"),
                ("rma.carrier", "DHL"),
                ("rma.label", "https://labels.example/1"),
                ("rma.tracking_number", "RT-1"),
                ("rma.rma_id", "R-42"),
                ("rma.sales_channel", "default"),
                ("rma.source", "WH-1"),
                ("rma.date", "2026-04-01T09:00:00+02:00"),
            ],
        );
        let event = parse_return_event(&params, ReturnEventKind::Updated).unwrap();
        assert_eq!(event.rma.as_deref(), Some("R-42"));
        let status = event.status.unwrap();
        assert_eq!(status.code, "APPROVED");
        assert_eq!(status.reason.as_deref(), Some("CSRREQUEST"));
        assert_eq!(status.date.to_rfc3339(), "2026-04-01T07:00:00+00:00");
        assert_eq!(event.lines[0].line, LineRef::Number(2));
        assert_eq!(event.lines[0].status.as_deref(), Some("APPROVED"));
        assert_eq!(event.tracking.number.as_deref(), Some("RT-1"));
        assert_eq!(event.tracking.carrier.as_deref(), Some("DHL"));
    }

    #[test]
    fn a_refund_without_credit_note_number_is_known_by_a_digest_of_what_stays_the_same() {
        let refund = |status: &str, date: &str, lines: serde_json::Value| {
            parse_refund(&raw(serde_json::json!({"refund": {
                "order_id": "1", "store_id": "default", "rma": "R-1", "refund_type": "Return",
                "status": {"code": status, "date": date}, "lines": lines}})))
            .unwrap()
        };
        let line = |order_line: &str, gross: serde_json::Value| {
            serde_json::json!({"order_line": order_line, "reason_description": "",
                               "payments": [{"ref": "", "details": {"cost_gross": gross}}]})
        };
        let pending = refund(
            "PENDINGRELEASE",
            "2026-01-01",
            serde_json::json!([line("1", "10.50".into()), line("2", "1".into())]),
        );
        assert_eq!(pending.credit_note_number, None);
        assert!(pending.key.starts_with("digest:"), "{}", pending.key);
        // The same refund released later, its lines in another order, money as numbers.
        let released = refund(
            "RELEASED",
            "2026-01-03",
            serde_json::json!([line("2", 1.into()), line("1", 10.5.into())]),
        );
        assert_eq!(released.key, pending.key);
        let other = refund(
            "RELEASED",
            "2026-01-03",
            serde_json::json!([line("2", 1.into()), line("1", 10.4.into())]),
        );
        assert_ne!(other.key, pending.key);
    }

    #[test]
    fn a_refund_with_negative_or_unreadable_money_is_refused() {
        let refund = |number: serde_json::Value, gross: serde_json::Value| {
            parse_refund(&raw(serde_json::json!({"refund": {
                "order_id": "1", "store_id": "default", "credit_note_number": number,
                "status": {"code": "RELEASED", "date": "2026-01-01"},
                "lines": [{"order_line": "1", "reason_description": "",
                           "payments": [{"ref": "", "details": {"cost_gross": gross}}]}]}})))
        };
        let err = refund(serde_json::json!("CN"), serde_json::json!("-5")).unwrap_err();
        assert!(err.reason().contains("negative"), "{err}");
        let err = refund(serde_json::json!("CN"), serde_json::json!("lots")).unwrap_err();
        assert!(err.reason().contains("not an amount"), "{err}");
        let ok = refund(serde_json::json!("CN"), serde_json::json!(12.5)).unwrap();
        assert_eq!(ok.total(), Decimal::new(125, 1));
        assert_eq!(
            ok.status.date.to_rfc3339(),
            "2026-01-01T00:00:00+00:00",
            "a plain date is midnight UTC"
        );
    }

    #[test]
    fn a_refund_line_keeps_its_order_line_and_item_as_sent() {
        let refund = parse_refund(&raw(serde_json::json!({"refund": {
            "order_id": "1", "credit_note_number": "CN",
            "status": {"code": "PENDINGRELEASE", "date": "2026-01-01 10:00:00"},
            "lines": [
                {"order_line": "3", "payments": [{"details": {"cost_gross": "1"}}]},
                {"order_line": "1-2", "payments": [{"details": {"cost_gross": "1"}},
                                                    {"details": {"cost_gross": "0.5"}}]}]}})))
        .unwrap();
        assert_eq!(refund.lines[0].order_line, "3");
        assert_eq!(refund.lines[1].order_line, "1-2");
        assert_eq!(refund.lines[1].order_item_id, None);
        assert_eq!(refund.lines[1].amount, Decimal::new(15, 1));
    }

    #[test]
    fn a_line_status_without_a_return_status_date_is_refused() {
        let err = parse_return_event(
            &raw(serde_json::json!({"return": {"order_id": "1", "rma": "R",
                "lines": [{"line_number": 1, "status": "APPROVED"}]}})),
            ReturnEventKind::Updated,
        )
        .unwrap_err();
        assert!(err.reason().contains("no status date"), "{err}");
    }

    #[test]
    fn a_duplicated_return_in_the_specifications_shape_parses() {
        let duplicated = parse_return_duplicated(&raw(serde_json::json!({"return": {
            "sales_channel_id": "default", "order_id": "000000101", "rma": "R-7"}})))
        .unwrap();
        assert_eq!(
            duplicated,
            ReturnDuplicated {
                order_id: "000000101".into(),
                sales_channel_id: Some("default".into()),
                rma: Some("R-7".into()),
            }
        );
        let without_order = parse_return_duplicated(&raw(serde_json::json!({"return": {
            "sales_channel_id": "default"}})))
        .unwrap_err();
        assert!(
            without_order.to_string().contains("order_id"),
            "{without_order}"
        );
    }

    #[test]
    fn a_refunds_channel_is_its_sales_channel_id_before_its_store_id() {
        let refund = |extra: serde_json::Value| {
            let mut r = serde_json::json!({"order_id": "1", "credit_note_number": "CN",
                "status": {"code": "PENDING", "date": "2026-01-01"},
                "lines": [{"order_line": "1", "payments": [{"details": {"cost_gross": 1}}]}]});
            for (k, v) in extra.as_object().unwrap() {
                r[k] = v.clone();
            }
            parse_refund(&raw(serde_json::json!({ "refund": r })))
                .unwrap()
                .store
        };
        assert_eq!(
            refund(serde_json::json!({"store_id": "SRC-1", "sales_channel_id": "web"})),
            Some("web".into())
        );
        assert_eq!(
            refund(serde_json::json!({"store_id": "web"})),
            Some("web".into())
        );
        assert_eq!(refund(serde_json::json!({})), None);
    }
}
