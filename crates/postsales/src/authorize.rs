//! The return authorization: from the rows the storefront wrote to
//! `return_management.authorize`.
//!
//! [`build`] is pure: the same rows always give the same message, and nobody but the
//! connector changes a return once requested, so a resend after a crash carries the same
//! content. Each returned unit is one line of the message, named by the order line's id and
//! number as they were exported.

use deadpool_postgres::Client;
use protocol::postsales::{AuthorizeParams, WireReturnAuthorize, WireReturnLine};
use protocol::sales::WireCustomAttribute;

/// Everything the storefront wrote about one return, with what it needs of its order.
#[derive(Debug, Clone, PartialEq)]
pub struct ReturnRows {
    /// The return and its order's store, as the sales read API gives them.
    pub of: orders::returns::ReturnOfOrder,
    /// `(code, value)` in code order.
    pub attributes: Vec<(String, String)>,
    pub lines: Vec<ReturnLineRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReturnLineRow {
    pub line_id: String,
    pub line_number: i32,
    pub sku: String,
    pub reason: String,
    pub reason_description: String,
    pub condition: Option<String>,
    pub condition_description: Option<String>,
    /// `(code, value)` in code order.
    pub attributes: Vec<(String, String)>,
}

/// Builds `return_management.authorize` params from a return's rows.
pub fn build(rows: &ReturnRows) -> AuthorizeParams {
    let attributes = |list: &[(String, String)]| -> Vec<WireCustomAttribute> {
        list.iter()
            .map(|(c, v)| WireCustomAttribute::new(c, v))
            .collect()
    };
    let of = &rows.of;
    AuthorizeParams {
        return_authorize: WireReturnAuthorize {
            sales_channel_id: of.store.clone(),
            order_id: of.order_id.clone(),
            source_id: of.source_id.clone(),
            user: of.requested_by.clone(),
            rma: of.id.clone(),
            return_tracking_number: of.tracking_number.clone(),
            return_tracking_url: of.tracking_url.clone(),
            return_tracking_label_url: of.tracking_label_url.clone(),
            return_tracking_carrier: of.tracking_carrier.clone(),
            origin_date: protocol::outbound::format_datetime(&of.requested_at),
            custom_attributes: attributes(&rows.attributes),
            lines: rows
                .lines
                .iter()
                .map(|l| WireReturnLine {
                    id: l.line_id.clone(),
                    line_number: l.line_number,
                    sku: l.sku.clone(),
                    custom_attributes: attributes(&l.attributes),
                    reason: l.reason.clone(),
                    reason_description: l.reason_description.clone(),
                    condition: l.condition.clone(),
                    condition_description: l.condition_description.clone(),
                })
                .collect(),
        },
    }
}

const ATTRIBUTES: &str =
    "SELECT code, value FROM postsales_return_attributes WHERE return_id = $1 ORDER BY code";

const LINE_ATTRIBUTES: &str = "
    SELECT line_id, code, value FROM postsales_return_line_attributes
     WHERE return_id = $1 ORDER BY line_id, code";

/// Reads a return's rows; `None` when there is no such return.
pub async fn load(
    client: &Client,
    return_id: &str,
) -> Result<Option<ReturnRows>, tokio_postgres::Error> {
    let Some(r) = orders::returns::load(client, return_id).await? else {
        return Ok(None);
    };
    let statement = client.prepare_cached(ATTRIBUTES).await?;
    let attributes = client
        .query(&statement, &[&return_id])
        .await?
        .iter()
        .map(|a| (a.get(0), a.get(1)))
        .collect();
    let statement = client.prepare_cached(LINE_ATTRIBUTES).await?;
    let line_attributes: Vec<(String, String, String)> = client
        .query(&statement, &[&return_id])
        .await?
        .iter()
        .map(|a| (a.get(0), a.get(1), a.get(2)))
        .collect();
    let lines = orders::returns::lines(client, return_id)
        .await?
        .into_iter()
        .map(|l| ReturnLineRow {
            attributes: line_attributes
                .iter()
                .filter(|(id, _, _)| *id == l.line_id)
                .map(|(_, c, v)| (c.clone(), v.clone()))
                .collect(),
            line_id: l.line_id,
            line_number: l.line_number,
            sku: l.sku,
            reason: l.reason,
            reason_description: l.reason_description,
            condition: l.condition,
            condition_description: l.condition_description,
        })
        .collect();
    Ok(Some(ReturnRows {
        of: r,
        attributes,
        lines,
    }))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn rows() -> ReturnRows {
        ReturnRows {
            of: orders::returns::ReturnOfOrder {
                id: "R-101-1".into(),
                order_id: "000000101".into(),
                store: "default".into(),
                requested_at: Utc.with_ymd_and_hms(2026, 3, 10, 9, 30, 0).unwrap(),
                requested_by: Some("customer".into()),
                source_id: None,
                tracking_number: Some("RET-1".into()),
                tracking_url: None,
                tracking_label_url: None,
                tracking_carrier: Some("UPS".into()),
            },
            attributes: vec![("channel".into(), "web".into())],
            lines: vec![ReturnLineRow {
                line_id: "1-2".into(),
                line_number: 2,
                sku: "MUG-BLUE".into(),
                reason: "DAMAGED".into(),
                reason_description: "Chipped".into(),
                condition: Some("DAMAGED".into()),
                condition_description: None,
                attributes: vec![("photo".into(), "https://img.example/1".into())],
            }],
        }
    }

    #[test]
    fn an_authorization_has_exactly_the_fields_of_the_specification() {
        let params = serde_json::to_value(build(&rows())).unwrap();
        let problems =
            protocol::spec::spec().check_params(protocol::postsales::methods::AUTHORIZE, &params);
        assert!(problems.is_empty(), "{problems:#?}");
        let r = &params["return"];
        assert_eq!(r["rma"], "R-101-1");
        assert_eq!(r["sales_channel_id"], "default");
        assert_eq!(r["origin_date"], "2026-03-10T09:30:00+00:00");
        assert_eq!(r["return_tracking_number"], "RET-1");
        assert!(r.get("source_id").is_none(), "absent, not null");
        assert_eq!(r["lines"][0]["line_number"], 2);
        assert_eq!(r["lines"][0]["reason"], "DAMAGED");
        assert_eq!(r["lines"][0]["condition"], "DAMAGED");
        assert_eq!(r["lines"][0]["custom_attributes"][0]["name"], "photo");
    }

    #[test]
    fn the_same_rows_build_the_same_message() {
        let a = serde_json::to_vec(&build(&rows())).unwrap();
        let b = serde_json::to_vec(&build(&rows())).unwrap();
        assert_eq!(a, b);
    }
}
