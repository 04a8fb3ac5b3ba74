//! Logistics messages Commerce consumes: `fulfillment_management.customer_shipment_done`, one
//! physical shipment (field names from `logistics/fulfilment.xml`, struct
//! `magento.logistics.customer_shipment`).

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
    /// `shimpent_id`); otherwise the shipment is known by its content.
    pub shipment_id: Option<String>,
    pub source_id: Option<String>,
    pub store_id: Option<String>,
    pub method: Option<String>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub lines: Vec<LineRef>,
    pub packages: Vec<Package>,
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
}

impl Shipment {
    /// What identifies the shipment when the OMS gives no id: its order, lines and parcels.
    /// The same shipment delivered twice has the same content.
    pub fn content(&self) -> String {
        let mut lines: Vec<String> = self.lines.iter().map(|l| l.to_string()).collect();
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
struct WireParams {
    shipment: Option<WireShipment>,
}

#[derive(Deserialize)]
struct WireShipment {
    order_id: Option<Scalar>,
    shipment_id: Option<Scalar>,
    shimpent_id: Option<Scalar>,
    source_id: Option<Scalar>,
    store_id: Option<Scalar>,
    method: Option<Scalar>,
    shipment_date: Option<Scalar>,
    #[serde(default)]
    items: Option<Vec<WireItem>>,
    #[serde(default)]
    packages: Option<Vec<WirePackage>>,
}

#[derive(Deserialize)]
struct WireItem {
    order_line_id: Option<Scalar>,
    order_line_number: Option<Scalar>,
}

#[derive(Deserialize)]
struct WirePackage {
    id: Option<Scalar>,
    carrier: Option<Scalar>,
    tracking_number: Option<Scalar>,
    tracking_link: Option<Scalar>,
    tracking_comment: Option<Scalar>,
    #[serde(default)]
    items: Option<Vec<Scalar>>,
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
    let mut lines = Vec::new();
    for (i, item) in s.items.unwrap_or_default().into_iter().enumerate() {
        let line = line_ref(item.order_line_id, item.order_line_number)
            .map_err(|r| r.at(&format!("shipment.items[{i}]")))?;
        if lines.contains(&line) {
            return Err(Rejection::new(format!(
                "shipment.items[{i}]: line {line} is listed twice; a line is one unit and ships once"
            )));
        }
        lines.push(line);
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
        });
    }
    Ok(Shipment {
        order_id,
        shipment_id,
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
        assert_eq!(shipment.lines, vec![LineRef::Id("11".into())]);
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
