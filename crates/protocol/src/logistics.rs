//! Logistics messages Commerce consumes: `fulfillment_management.customer_shipment_done`, one
//! physical shipment (field names from `logistics/fulfilment.xml`, struct
//! `magento.logistics.customer_shipment`).
//!
//! Read as real senders write it (TRANSPORT.md, "What real senders do"): the id as
//! `shipment_request_id` (the specification's replacement for `shipment_id`), `shipment_id`,
//! or the `shimpent_id` typo; items naming their line by `order_line_id` and
//! `order_line_number` both; packages listing line numbers, as numbers or strings; empty
//! strings where a value is absent.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::lenient::{self, Scalar};
use crate::sales::{LineRef, line_ref};
use crate::{Rejection, parse_params};

/// One physical shipment, validated: it lists at least one line, each line once.
#[derive(Debug, Clone, PartialEq)]
pub struct Shipment {
    pub order_id: String,
    /// The OMS's id, when the sender gives one (`shipment_id`, or the real sender's typo
    /// `shimpent_id`); otherwise the shipment is known by its request id or its content.
    pub shipment_id: Option<String>,
    /// The shipment request this shipment fulfils (`shipment_request_id`, which the
    /// specification has in place of the deprecated `shipment_id`).
    pub shipment_request_id: Option<String>,
    pub source_id: Option<String>,
    pub store_id: Option<String>,
    pub method: Option<String>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub lines: Vec<ShippedLine>,
    pub packages: Vec<Package>,
    /// Where the shipment goes (`magento.common.address`): the fields the sender filled in,
    /// by their spec names; `None` when it sent no address or only empty fields.
    pub address: Option<BTreeMap<String, String>>,
}

/// An order line of a shipment, with the status the OMS gives it (`SHIPPED` …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippedLine {
    pub line: LineRef,
    pub status: Option<String>,
    pub status_reason: Option<String>,
}

/// A parcel with its tracking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// As sent; `None` when the sender left it empty.
    pub id: Option<String>,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub tracking_link: Option<String>,
    pub tracking_comment: Option<String>,
    /// The order line numbers in the parcel.
    pub line_numbers: Vec<i64>,
    /// Where to print the parcel's shipping label.
    pub shipping_label_link: Option<String>,
}

impl Shipment {
    /// What identifies the shipment when the OMS gives no id: its order, lines and parcels.
    /// The same shipment delivered twice has the same content.
    pub fn content(&self) -> String {
        let mut lines: Vec<String> = self.lines.iter().map(|l| l.line.to_string()).collect();
        lines.sort();
        let mut packages: Vec<String> = self
            .packages
            .iter()
            .map(|p| {
                format!(
                    "{}/{}/{}",
                    p.id.as_deref().unwrap_or(""),
                    p.carrier.as_deref().unwrap_or(""),
                    p.tracking_number.as_deref().unwrap_or("")
                )
            })
            .collect();
        packages.sort();
        format!(
            "{}|{}|{}",
            self.order_id,
            lines.join(","),
            packages.join(",")
        )
    }
}

#[derive(Deserialize)]
pub(crate) struct WireParams {
    shipment: Option<WireShipment>,
}

#[derive(Deserialize)]
struct WireShipment {
    order_id: Option<Scalar>,
    shipment_id: Option<Scalar>,
    shimpent_id: Option<Scalar>,
    shipment_request_id: Option<Scalar>,
    source_id: Option<Scalar>,
    store_id: Option<Scalar>,
    method: Option<Scalar>,
    shipment_date: Option<Scalar>,
    #[serde(default)]
    items: Option<Vec<WireItem>>,
    #[serde(default)]
    packages: Option<Vec<WirePackage>>,
    address: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct WireItem {
    order_line_id: Option<Scalar>,
    order_line_number: Option<Scalar>,
    status: Option<Scalar>,
    status_reason: Option<Scalar>,
}

#[derive(Deserialize)]
struct WirePackage {
    id: Option<Scalar>,
    carrier: Option<Scalar>,
    tracking_number: Option<Scalar>,
    tracking_link: Option<Scalar>,
    tracking_comment: Option<Scalar>,
    shipping_label_link: Option<Scalar>,
    #[serde(default)]
    items: Option<Vec<Scalar>>,
}

/// The address's text fields that are filled in. Its custom attributes (a list) are not kept.
fn address(
    wire: Option<BTreeMap<String, serde_json::Value>>,
) -> Result<Option<BTreeMap<String, String>>, Rejection> {
    let mut kept = BTreeMap::new();
    for (name, value) in wire.unwrap_or_default() {
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null | serde_json::Value::Array(_) => continue,
            serde_json::Value::Number(n) => n.to_string(),
            other => {
                return Err(Rejection::new(format!(
                    "shipment.address.{name}: {other} is not a text"
                )));
            }
        };
        let text = text.trim();
        if !text.is_empty() {
            kept.insert(name, text.to_owned());
        }
    }
    Ok((!kept.is_empty()).then_some(kept))
}

pub fn parse_shipment(params: &RawValue) -> Result<Shipment, Rejection> {
    let wire: WireParams = parse_params(params)?;
    let s = wire
        .shipment
        .ok_or_else(|| Rejection::new("\"shipment\" is missing"))?;
    let at = |r: Rejection| r.at("shipment");
    let order_id = lenient::required_string(s.order_id, "order_id").map_err(at)?;
    let shipment_id = match lenient::optional_string(s.shipment_id, "shipment_id").map_err(at)? {
        Some(id) => Some(id),
        None => lenient::optional_string(s.shimpent_id, "shimpent_id").map_err(at)?,
    };
    let mut lines: Vec<ShippedLine> = Vec::new();
    for (i, item) in s.items.unwrap_or_default().into_iter().enumerate() {
        let at = |r: Rejection| r.at(&format!("shipment.items[{i}]"));
        let line = line_ref(item.order_line_id, item.order_line_number).map_err(at)?;
        if lines.iter().any(|l| l.line == line) {
            return Err(Rejection::new(format!(
                "shipment.items[{i}]: line {line} is listed twice; a line is one unit and ships once"
            )));
        }
        lines.push(ShippedLine {
            line,
            status: lenient::optional_string(item.status, "status").map_err(at)?,
            status_reason: lenient::optional_string(item.status_reason, "status_reason")
                .map_err(at)?,
        });
    }
    if lines.is_empty() {
        return Err(Rejection::new("shipment: \"items\" lists no order line"));
    }
    let mut packages = Vec::new();
    for (i, p) in s.packages.unwrap_or_default().into_iter().enumerate() {
        let at = |r: Rejection| r.at(&format!("shipment.packages[{i}]"));
        let mut line_numbers = Vec::new();
        for number in p.items.unwrap_or_default() {
            line_numbers.push(lenient::required_count(Some(number), "items[]").map_err(at)?);
        }
        packages.push(Package {
            id: lenient::optional_string(p.id, "id").map_err(at)?,
            carrier: lenient::optional_string(p.carrier, "carrier")
                .map_err(at)?
                .map(|c| c.trim().to_owned()),
            tracking_number: lenient::optional_string(p.tracking_number, "tracking_number")
                .map_err(at)?,
            tracking_link: lenient::optional_string(p.tracking_link, "tracking_link")
                .map_err(at)?,
            tracking_comment: lenient::optional_string(p.tracking_comment, "tracking_comment")
                .map_err(at)?,
            line_numbers,
            shipping_label_link: lenient::optional_string(
                p.shipping_label_link,
                "shipping_label_link",
            )
            .map_err(at)?,
        });
    }
    Ok(Shipment {
        order_id,
        shipment_id,
        shipment_request_id: lenient::optional_string(s.shipment_request_id, "shipment_request_id")
            .map_err(at)?,
        address: address(s.address)?,
        source_id: lenient::optional_string(s.source_id, "source_id").map_err(at)?,
        store_id: lenient::optional_string(s.store_id, "store_id").map_err(at)?,
        method: lenient::optional_string(s.method, "method").map_err(at)?,
        shipped_at: lenient::optional_timestamp(s.shipment_date, "shipment_date").map_err(at)?,
        lines,
        packages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> String {
        include_str!(
            "../fixtures/mock-templates/magento.logistics.fulfillment_management.customer_shipment_done.json"
        )
        .replace("{{order.increment_id}}", "000000007")
        .replace("{{order_item.id}}", "11")
        .replace("{{order_item.line_number}}", "1")
        .replace("{{order_item.net_amount}}", "10.00")
        .replace("{{order_item.gross_amount}}", "10.00")
        .replace("{{order_item.taxes_amount}}", "0")
        .replace("{{order_item.taxes_rate}}", "0")
        .replace("{{source_id}}", "WH-1")
        .replace("{{order.store}}", "default")
    }

    fn parse(text: &str) -> Result<Shipment, Rejection> {
        parse_shipment(&RawValue::from_string(text.to_owned()).unwrap())
    }

    #[test]
    fn the_mock_template_parses_once_filled_in() {
        let text = template();
        let text = text.replace("{{", "x").replace("}}", "");
        let shipment = parse(&text).unwrap();
        assert_eq!(shipment.order_id, "000000007");
        assert_eq!(shipment.shipment_id, None);
        assert_eq!(
            shipment.lines,
            vec![ShippedLine {
                line: LineRef::Id("11".into()),
                status: Some("SHIPPED".into()),
                status_reason: Some("OSREPORT".into()),
            }]
        );
        let address = shipment.address.unwrap();
        assert_eq!(
            address.get("country_code").map(String::as_str),
            Some("xorder.country_code")
        );
        assert!(
            !address.contains_key("reference") && !address.contains_key("latitude"),
            "empty fields are absent, not empty: {address:?}"
        );
        let package = &shipment.packages[0];
        assert_eq!(package.carrier.as_deref(), Some("DHL"));
        assert_eq!(package.tracking_number.as_deref(), Some("1234567890"));
        assert_eq!(package.line_numbers, vec![1]);
        assert_eq!(package.id, None);
    }

    #[test]
    fn the_real_senders_typo_names_the_shipment() {
        let text = serde_json::json!({"shipment": {"order_id": "1", "shimpent_id": "S-9",
            "items": [{"order_line_number": 1}], "packages": []}})
        .to_string();
        assert_eq!(parse(&text).unwrap().shipment_id.as_deref(), Some("S-9"));
    }

    #[test]
    fn the_specifications_request_id_and_label_link_are_read() {
        let text = serde_json::json!({"shipment": {"order_id": "1", "shipment_request_id": "RQ-4",
            "items": [{"order_line_id": "a", "order_line_number": "1", "status": "SHIPPED"}],
            "packages": [{"id": "P1", "items": ["1"],
                          "shipping_label_link": "https://labels.example/P1.pdf"}],
            "address": {"first_name": "Ada", "zip": 12345, "custom_attributes": []}}})
        .to_string();
        let shipment = parse(&text).unwrap();
        assert_eq!(shipment.shipment_request_id.as_deref(), Some("RQ-4"));
        assert_eq!(shipment.shipment_id, None);
        assert_eq!(
            shipment.packages[0].shipping_label_link.as_deref(),
            Some("https://labels.example/P1.pdf")
        );
        assert_eq!(shipment.packages[0].line_numbers, vec![1]);
        assert_eq!(shipment.lines[0].status.as_deref(), Some("SHIPPED"));
        let address = shipment.address.unwrap();
        assert_eq!(address["zip"], "12345");
        assert_eq!(address.len(), 2);
        let bad = serde_json::json!({"shipment": {"order_id": "1",
            "items": [{"order_line_id": "a"}], "address": {"city": {"name": "x"}}}})
        .to_string();
        assert_eq!(
            parse(&bad).unwrap_err().reason(),
            "shipment.address.city: {\"name\":\"x\"} is not a text"
        );
    }

    #[test]
    fn a_shipment_without_lines_or_with_a_line_twice_is_refused() {
        let empty = serde_json::json!({"shipment": {"order_id": "1", "items": []}}).to_string();
        assert!(
            parse(&empty)
                .unwrap_err()
                .reason()
                .contains("lists no order line")
        );
        let twice = serde_json::json!({"shipment": {"order_id": "1",
            "items": [{"order_line_id": "a"}, {"order_line_id": "a"}]}})
        .to_string();
        assert!(parse(&twice).unwrap_err().reason().contains("listed twice"));
    }

    #[test]
    fn the_same_shipment_has_the_same_content_whatever_the_order_of_its_lists() {
        let a = serde_json::json!({"shipment": {"order_id": "1",
            "items": [{"order_line_id": "a"}, {"order_line_id": "b"}],
            "packages": [{"id": "p1", "items": [1]}, {"id": "p2", "items": [2]}]}});
        let b = serde_json::json!({"shipment": {"order_id": "1", "shipment_date": "2026-01-01 00:00:00",
            "items": [{"order_line_id": "b"}, {"order_line_id": "a"}],
            "packages": [{"id": "p2", "items": [2]}, {"id": "p1", "items": [1]}]}});
        assert_eq!(
            parse(&a.to_string()).unwrap().content(),
            parse(&b.to_string()).unwrap().content()
        );
    }
}
