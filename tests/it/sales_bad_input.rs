//! Every class of bad sales input goes to the dead-letter queue with a reason a person can act
//! on, and the messages around it are applied as if it were not there.

use chrono::{TimeZone, Utc};
use protocol::sales::methods;
use rust_decimal::Decimal;
use serde_json::json;
use simulate::orders::{SimOrder, order_rows, simple_item};

use crate::helpers::{PATIENCE, TestEnv, wait_until};
use crate::sales_support::{OmsInbox, oms_publisher, outcomes, place_all, wait_exported};

const ORDER: &str = "BAD-1";

#[allow(
    clippy::needless_pass_by_value,
    reason = "called with json! values built at the call"
)]
fn envelope(method: &str, params: serde_json::Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": "x", "method": method, "params": params})
        .to_string()
        .into_bytes()
}

/// A line attribute update: applied, and visible by its code.
fn good(i: usize) -> Vec<u8> {
    envelope(
        methods::LINE_CUSTOM_ATTRIBUTES_UPDATED,
        json!({"line_custom_attributes_modification": {"sales_channel_id": "default", "order_id": ORDER,
            "user": "u", "line_id": "1", "line_number": "1",
            "custom_attributes": [{"name": format!("good-{i}"), "value": i.to_string()}]}}),
    )
}

fn shipment(items: serde_json::Value) -> Vec<u8> {
    shipment_tracked(items, "T")
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "called with json! values built at the call"
)]
fn shipment_tracked(items: serde_json::Value, tracking: &str) -> Vec<u8> {
    envelope(
        methods::SHIPMENT_DONE,
        json!({"shipment": {"order_id": ORDER, "store_id": "default", "source_id": "WH-1",
            "method": "STANDARD", "items": items,
            "packages": [{"id": "P", "carrier": "DHL", "tracking_number": tracking, "items": [1]}]}}),
    )
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "called with json! values built at the call"
)]
fn update(order: serde_json::Value) -> Vec<u8> {
    envelope(methods::UPDATED, json!({ "order": order }))
}

/// `(routing key, body, words the reason must contain)`.
fn bad_inputs() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    vec![
        (
            methods::UPDATED,
            b"{ not json".to_vec(),
            "body is not valid JSON",
        ),
        (
            methods::UPDATED,
            format!(
                r#"{{"jsonrpc":"2.0","method":"{}","params":[1]}}"#,
                methods::UPDATED
            )
            .into_bytes(),
            "\"params\" is an array",
        ),
        (
            methods::UPDATED,
            envelope(methods::UPDATED, json!({})),
            "\"order\" is missing",
        ),
        (
            methods::UPDATED,
            update(json!({"status": "COMPLETE", "status_date": "2026-01-01 00:00:00"})),
            "order: \"id\" is missing",
        ),
        (
            methods::UPDATED,
            update(json!({"id": ORDER, "lines": [{"id": "1", "payments": [
                {"status": "CAPTURED", "gross_amount": "lots", "net_amount": 1, "tax_amount": 0}]}]})),
            "order.lines[0].payments[0]: \"gross_amount\" is not an amount: \"lots\"",
        ),
        (
            methods::UPDATED,
            update(json!({"id": ORDER, "status": "COMPLETE", "status_date": "soon"})),
            "\"status_date\" is not a date and time",
        ),
        (
            methods::UPDATED,
            update(
                json!({"id": ORDER, "status": "LOGISTICS", "status_date": "2026-01-01 00:00:00",
                          "lines": [{"id": "no-such-line", "status": "SHIPPED"}]}),
            ),
            "order BAD-1 has no line with id \"no-such-line\"",
        ),
        (
            methods::UPDATED,
            update(json!({"id": ORDER, "status_date": "2026-01-01 00:00:00",
                          "lines": "all of them"})),
            "params are malformed",
        ),
        (
            methods::SHIPMENT_DONE,
            // Another parcel with the line already shipped: not a repeat, one unit too many.
            shipment_tracked(json!([{"order_line_id": "1"}]), "T-AGAIN"),
            "ships more units than were ordered",
        ),
        (
            methods::SHIPMENT_DONE,
            shipment(json!([{"order_line_id": "2"}, {"order_line_number": 2}])),
            "listed twice",
        ),
        (
            methods::SHIPMENT_DONE,
            shipment(json!([])),
            "lists no order line",
        ),
        (
            methods::SHIPMENT_DONE,
            shipment(json!([{"order_line_number": 42}])),
            "has no line with number 42",
        ),
        (
            methods::SHIPMENT_DONE,
            shipment(serde_json::Value::Array(
                (1..=101).map(|n| json!({"order_line_number": n})).collect(),
            )),
            "shipment.items has more than 100 rows; the limit is OMSC_MAX_MESSAGE_ROWS",
        ),
        (
            methods::LINE_CANCELLED,
            envelope(methods::LINE_CANCELLED, json!({"order_id": ORDER})),
            "\"order_line_id\" is missing",
        ),
        (
            methods::LINE_CANCELLED,
            envelope(
                methods::LINE_CANCELLED,
                json!({"order_id": ORDER, "order_line_id": "9-9"}),
            ),
            "has no line with id \"9-9\"",
        ),
        (
            methods::CUSTOM_ATTRIBUTES_UPDATED,
            envelope(
                methods::CUSTOM_ATTRIBUTES_UPDATED,
                json!({"order_id": ORDER}),
            ),
            "\"custom_attributes_modification\" is missing",
        ),
        (
            // The queue is bound to the methods the module handles only, so another method
            // arrives only on a handled route (a sender that mislabels its routing key).
            methods::UPDATED,
            envelope(
                "magento.sales.order_management.reported",
                json!({"order": {}}),
            ),
            "is not handled by the sales module",
        ),
        (
            methods::UPDATED,
            update(json!({"id": ORDER, "padding": "x".repeat(300_000)})),
            "over the limit of 200000 bytes",
        ),
    ]
}

#[tokio::test]
async fn every_bad_sales_message_is_dead_lettered_with_its_reason_and_the_rest_applied() {
    let env = TestEnv::new().await;
    let _inbox = OmsInbox::bind(&env).await;
    let worker = env
        .start_runtime(
            &["--max-message-bytes=200000", "--max-message-rows=100"],
            |app| sales::install(app).unwrap(),
        )
        .await;
    let order = SimOrder {
        rows: order_rows(
            ORDER,
            "default",
            Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap(),
            vec![
                simple_item(1, "A", "simple", 1, Decimal::new(1000, 2)),
                simple_item(2, "B", "simple", 1, Decimal::new(2000, 2)),
            ],
        ),
    };
    place_all(&env, std::slice::from_ref(&order)).await;
    wait_exported(&env, 1).await;
    let publisher = oms_publisher(&env).await;
    // Line 1 ships first, so that shipping it again is a shipment of more than was ordered.
    publisher
        .publish_raw(
            methods::SHIPMENT_DONE,
            &shipment(json!([{"order_line_id": "1"}])),
        )
        .await
        .unwrap();
    wait_until("the first shipment", PATIENCE, || async {
        outcomes(&worker, "applied").await == 1.0
    })
    .await;

    let bad = bad_inputs();
    let mut messages = Vec::new();
    for (i, (routing_key, body, _)) in bad.iter().enumerate() {
        messages.push((
            methods::LINE_CUSTOM_ATTRIBUTES_UPDATED,
            good(i),
            format!("good-{i}"),
        ));
        messages.push((*routing_key, body.clone(), format!("bad-{i}")));
    }
    messages.push((
        methods::LINE_CUSTOM_ATTRIBUTES_UPDATED,
        good(bad.len()),
        "last".into(),
    ));
    publisher.publish_all(messages, 64).await.unwrap();

    let letters = env.expect_dead_letters(bad.len()).await;
    for (_, body, expected) in &bad {
        let letter = letters
            .iter()
            .find(|l| &l.body == body)
            .unwrap_or_else(|| panic!("no dead letter for the input expecting {expected:?}"));
        assert!(
            letter.reason.contains(expected),
            "reason {:?} does not say {expected:?}",
            letter.reason
        );
    }
    let attributes: i64 = env
        .db
        .query_one(
            "SELECT count(*) FROM sales_order_line_attributes WHERE order_id = $1 AND code LIKE 'good-%'",
            &[&ORDER],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(attributes, bad.len() as i64 + 1);
    let shipped: i64 = env
        .db
        .query_one("SELECT count(*) FROM sales_shipment_lines", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(shipped, 1, "no bad message left a trace");
    assert_eq!(outcomes(&worker, "dead").await, bad.len() as f64);
    worker.stop().await;
    env.teardown().await;
}
