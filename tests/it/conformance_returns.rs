//! Conformance for returns: the mock's `return_management.updated` template, filled in, with
//! every status of a return on the same (plain) date, delivered in order and backwards.

use chrono::{TimeZone, Utc};
use protocol::postsales::methods::RETURN_UPDATED;
use serde_json::{Value, json};
use simulate::orders::{SimOrder, order_rows, simple_item};
use simulate::postsales::SimReturn;

use crate::conformance_support::{money, table};
use crate::helpers::TestEnv;
use crate::postsales_support::{
    oms_publisher, placed_and_shipped, start_postsales, wait_authorized, wait_settled,
};
use crate::sales_support::OmsInbox;

const RETURN_TEMPLATE: &str = include_str!(
    "../../crates/protocol/fixtures/mock-templates/magento.postsales.return_management.updated.json"
);

/// The template verbatim with its placeholders filled: return `rma` of order `order_id`, its
/// one line `7` at `status`, dated 2026-05-10 (a plain date, as the mock writes it).
fn return_update(order_id: &str, rma: &str, status: &str) -> Value {
    let values = [
        ("order_item.id", "7"),
        ("rma_item.line_number", "1"),
        ("rma_item.reason", "DAMAGED"),
        ("rma_item.reason_description", "Arrived broken"),
        ("rma_item.sku", "LAMP"),
        ("rma.status", status),
        ("rma.increment_id", order_id),
        ("rma.carrier", "DHL"),
        ("rma.label", "https://labels.example/label.pdf"),
        ("rma.tracking_number", "RT-1"),
        ("rma.rma_id", rma),
        ("rma.sales_channel", "default"),
        ("rma.source", "default"),
        ("rma.date", "2026-05-10"),
    ];
    let mut text = RETURN_TEMPLATE.to_owned();
    for (k, v) in values {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    assert!(!text.contains("{{"), "unfilled placeholder in {text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn a_returns_statuses_of_one_date_end_at_the_furthest_in_any_arrival_order() {
    let env = TestEnv::new().await;
    let _inbox = OmsInbox::bind(&env).await;
    let worker = start_postsales(&env).await;
    let arrivals: [(&str, &[&str]); 2] = [
        ("RET-IN-ORDER", &["APPROVED", "RECEIVED", "CLOSED"]),
        (
            "RET-BACKWARDS",
            &["CLOSED", "RECEIVED", "APPROVED", "RECEIVED"],
        ),
    ];
    let orders: Vec<SimOrder> = arrivals
        .iter()
        .map(|(id, _)| SimOrder {
            rows: order_rows(
                id,
                "default",
                Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap(),
                vec![simple_item(7, "LAMP", "simple", 1, money(4999))],
            ),
        })
        .collect();
    placed_and_shipped(&env, &orders).await;
    for order in &orders {
        let request = SimReturn::new(order, &format!("R-{}", order.id()), &["7"]).request();
        postsales::storefront::request(&env.db, &request)
            .await
            .unwrap();
    }
    wait_authorized(&env, orders.len() as i64).await;
    let publisher = oms_publisher(&env).await;
    let mut sent = 0;
    for (id, statuses) in arrivals {
        for status in statuses {
            sent += 1;
            let params = return_update(id, &format!("R-{id}"), status);
            let body = json!({"jsonrpc": "2.0", "id": format!("ret-{sent}"),
                              "method": RETURN_UPDATED, "params": params})
            .to_string();
            publisher
                .publish_raw(RETURN_UPDATED, body.as_bytes())
                .await
                .unwrap();
            // One at a time, so the order of sending is the order of arrival.
            wait_settled(&worker, sent).await;
        }
    }
    let mut rows = vec![
        ["return", "state", "OMS status", "line status"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for row in env
        .db
        .query(
            "SELECT r.id, r.state, r.oms_status, l.oms_status
               FROM postsales_returns r JOIN postsales_return_lines l ON l.return_id = r.id
              ORDER BY r.id",
            &[],
        )
        .await
        .unwrap()
    {
        rows.push((0..4).map(|i| row.get::<_, String>(i)).collect());
    }
    assert_eq!(
        rows,
        table(
            "
            | return          | state  | OMS status | line status |
            | R-RET-BACKWARDS | closed | CLOSED     | CLOSED      |
            | R-RET-IN-ORDER  | closed | CLOSED     | CLOSED      |
            "
        )
    );
    env.assert_no_dead_letters().await;
    worker.stop().await;
    env.teardown().await;
}
