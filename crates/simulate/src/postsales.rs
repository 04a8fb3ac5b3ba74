//! Post-sales traffic: returns requested the way a storefront requests them, and the
//! messages the OMS sends about each return and refund in the real wire format (money as
//! strings, as the OMS writes it): `return_management.updated` REQUESTED then APPROVED,
//! `return_management.received`, and `refund_management.updated` PENDINGRELEASE then
//! RELEASED.

use chrono::{DateTime, Duration, Utc};
use protocol::outbound::format_datetime;
use protocol::postsales::methods;
use rust_decimal::Decimal;
use sales::export::ExportedLine;
use serde_json::{Value, json};

use crate::orders::{OmsMessage, SimOrder};
use postsales::storefront::{ReturnLineRequest, ReturnRequest};

/// A return of some shipped lines of an order, and the refund that follows it.
#[derive(Debug, Clone)]
pub struct SimReturn {
    pub order: SimOrder,
    /// The return's id: Commerce's, and the `rma` of every message about it.
    pub rma: String,
    pub lines: Vec<ExportedLine>,
    /// When the customer asked; the OMS's messages follow at fixed offsets.
    pub requested_at: DateTime<Utc>,
}

impl SimReturn {
    /// A return of `lines` (ids) of `order`, requested a week after the order was placed.
    pub fn new(order: &SimOrder, rma: &str, line_ids: &[&str]) -> Self {
        let lines = order
            .lines()
            .into_iter()
            .filter(|l| line_ids.contains(&l.line_id.as_str()))
            .collect();
        Self {
            order: order.clone(),
            rma: rma.to_owned(),
            lines,
            requested_at: order.rows.order.placed_at + Duration::days(7),
        }
    }

    /// The credit note number of the return's refund.
    pub fn credit_note(&self) -> String {
        format!("CN-{}", self.rma)
    }

    /// What the customer gets back for the returned lines.
    pub fn refund_total(&self) -> Decimal {
        self.lines.iter().map(|l| l.gross_amount).sum()
    }

    /// The rows the storefront writes to request the return.
    pub fn request(&self) -> ReturnRequest {
        ReturnRequest {
            id: self.rma.clone(),
            order_id: self.order.id().to_owned(),
            requested_at: Some(self.requested_at),
            requested_by: Some("customer".into()),
            source_id: None,
            tracking_number: None,
            tracking_carrier: None,
            attributes: vec![("channel".into(), "web".into())],
            lines: self
                .lines
                .iter()
                .map(|l| ReturnLineRequest {
                    line_id: l.line_id.clone(),
                    reason: "DAMAGED".into(),
                    reason_description: "Arrived damaged".into(),
                    condition: Some("DAMAGED".into()),
                })
                .collect(),
        }
    }

    /// The OMS's messages about the return, in the order it sends them: updated REQUESTED
    /// (an hour after the request), APPROVED (two hours), received (two days), and the refund
    /// PENDINGRELEASE then RELEASED (the next hours).
    pub fn lifecycle(&self) -> Vec<OmsMessage> {
        let at = |hours: i64| self.requested_at + Duration::hours(hours);
        let amounts: Vec<(&ExportedLine, Decimal)> =
            self.lines.iter().map(|l| (l, l.gross_amount)).collect();
        vec![
            self.updated("REQUESTED", at(1), None),
            self.updated("APPROVED", at(2), Some("RT-1")),
            self.received(at(48)),
            self.refund(&self.credit_note(), "PENDINGRELEASE", at(49), &amounts),
            self.refund(&self.credit_note(), "RELEASED", at(50), &amounts),
        ]
    }

    /// `return_management.updated` with this status for the return and each of its lines.
    pub fn updated(&self, status: &str, at: DateTime<Utc>, tracking: Option<&str>) -> OmsMessage {
        let lines: Vec<Value> = self
            .lines
            .iter()
            .map(|l| {
                json!({
                    "id": l.line_id, "line_number": l.line_number, "sku": l.sku,
                    "status": status, "reason": "DAMAGED", "reason_description": "Arrived damaged",
                    "condition": "DAMAGED", "custom_attributes": [],
                })
            })
            .collect();
        let mut r = json!({
            "sales_channel_id": self.order.rows.order.store,
            "order_id": self.order.id(),
            "source_id": "WH-1",
            "user": "OMS",
            "rma": self.rma,
            "status": {"code": status, "name": status, "reason_code": "CSRREQUEST",
                       "reason_name": "Customer request", "date": format_datetime(&at)},
            "custom_attributes": [{"name": "last_status", "value": status}],
            "lines": lines,
        });
        if let Some(number) = tracking {
            r["return_tracking_number"] = json!(number);
            r["return_tracking_carrier"] = json!("DHL");
            r["return_tracking_label_url"] = json!(format!("https://labels.example/{number}"));
        }
        envelope(
            methods::RETURN_UPDATED,
            format!("{}-{status}-{}", self.rma, at.timestamp()),
            json!({ "return": r }),
        )
    }

    /// `return_management.received`: every line of the return arrived at `at`.
    pub fn received(&self, at: DateTime<Utc>) -> OmsMessage {
        let lines: Vec<Value> = self
            .lines
            .iter()
            .map(|l| {
                json!({
                    "id": l.line_id, "line_number": l.line_number, "sku": l.sku,
                    "reason": "DAMAGED", "reason_description": "Arrived damaged",
                    "condition": "OPENED",
                })
            })
            .collect();
        envelope(
            methods::RETURN_RECEIVED,
            format!("{}-received", self.rma),
            json!({"return": {
                "sales_channel_id": self.order.rows.order.store,
                "order_id": self.order.id(),
                "source_id": "WH-1",
                "user": "WAREHOUSE",
                "rma": self.rma,
                "origin_date": format_datetime(&at),
                "lines": lines,
            }}),
        )
    }

    /// `refund_management.updated` for the return's order.
    pub fn refund(
        &self,
        credit_note: &str,
        status: &str,
        at: DateTime<Utc>,
        amounts: &[(&ExportedLine, Decimal)],
    ) -> OmsMessage {
        refund(
            &self.order,
            credit_note,
            Some(&self.rma),
            "Return",
            status,
            at,
            amounts,
        )
    }
}

/// `refund_management.updated`: `amounts` of these lines, with money as strings.
pub fn refund(
    order: &SimOrder,
    credit_note: &str,
    rma: Option<&str>,
    refund_type: &str,
    status: &str,
    at: DateTime<Utc>,
    amounts: &[(&ExportedLine, Decimal)],
) -> OmsMessage {
    let lines: Vec<Value> = amounts
        .iter()
        .map(|(l, amount)| {
            json!({
                "order_line": l.line_number.to_string(),
                "order_item_id": l.item_id.map(|i| i.to_string()).unwrap_or_default(),
                "reason": "DAMAGED",
                "reason_description": "Arrived damaged",
                "payments": [{
                    "ref": "payment",
                    "details": {
                        "cost_gross": amount.to_string(),
                        "cost_net": amount.to_string(),
                        "cost_vat": "0",
                        "vat_rate": "0",
                        "vat_detail": [{"amount": "0", "rate": "0", "type": "VAT"}],
                    },
                    "status": {"code": "REFUNDED", "name": "REFUNDED"},
                }],
            })
        })
        .collect();
    let mut r = json!({
        "client": "OMS",
        "order_id": order.id(),
        "store_id": order.rows.order.store,
        "sales_channel_id": order.rows.order.store,
        "credit_note_number": credit_note,
        "credit_note_date": at.format("%Y-%m-%d").to_string(),
        "status": {"code": status, "name": status, "reason_code": "REQUESTED",
                   "reason_name": "REQUESTED", "date": format_datetime(&at)},
        "refund_type": refund_type,
        "user": "LOGISTICS",
        "refund_reason": "RELEASESUCCESS",
        "lines": lines,
        "custom_attributes": [],
    });
    if let Some(rma) = rma {
        r["rma"] = json!(rma);
    }
    envelope(
        methods::REFUND_UPDATED,
        format!("{credit_note}-{status}-{}", at.timestamp()),
        json!({ "refund": r }),
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::{OrdersSpec, generate};

    fn a_return() -> SimReturn {
        let order = generate(&OrdersSpec {
            virtual_share: 0.0,
            ..OrdersSpec::default()
        })
        .remove(0);
        let first = order.shipped_lines()[0].line_id.clone();
        SimReturn::new(&order, "R-1", &[&first])
    }

    #[test]
    fn every_message_of_a_return_lifecycle_matches_the_specification_and_parses() {
        let r = a_return();
        let messages = r.lifecycle();
        let methods: Vec<&str> = messages.iter().map(|m| m.method).collect();
        assert_eq!(
            methods,
            [
                methods::RETURN_UPDATED,
                methods::RETURN_UPDATED,
                methods::RETURN_RECEIVED,
                methods::REFUND_UPDATED,
                methods::REFUND_UPDATED
            ]
        );
        for m in &messages {
            let body: Value = serde_json::from_slice(&m.body).unwrap();
            let problems = protocol::spec::spec().check_params(m.method, &body["params"]);
            assert!(problems.is_empty(), "{}: {problems:#?}", m.method);
            let envelope =
                protocol::Envelope::parse(&m.body, &protocol::Limits::default()).unwrap();
            let params = envelope.params.unwrap();
            match m.method {
                methods::REFUND_UPDATED => {
                    let refund = protocol::postsales::parse_refund(params).unwrap();
                    assert_eq!(refund.total(), r.refund_total());
                }
                method => {
                    let kind = if method == methods::RETURN_RECEIVED {
                        protocol::postsales::ReturnEventKind::Received
                    } else {
                        protocol::postsales::ReturnEventKind::Updated
                    };
                    let event = protocol::postsales::parse_return_event(params, kind).unwrap();
                    assert_eq!(event.rma.as_deref(), Some("R-1"));
                }
            }
        }
    }
}
