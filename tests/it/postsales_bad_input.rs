//! Every class of bad post-sales input goes to the dead-letter queue with a reason a person
//! can act on, leaves no trace, and the messages around it are applied as if it were not
//! there.

use chrono::{TimeZone, Utc};
use protocol::postsales::methods;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use simulate::postsales::{SimReturn, refund};

use crate::helpers::TestEnv;
use crate::postsales_support::{
    oms_publisher, outcomes, paid_order, placed_and_shipped, wait_authorized, wait_settled,
};
use crate::sales_support::{OmsInbox, publish};

const ORDER: &str = "BAD-1";

#[allow(
    clippy::needless_pass_by_value,
    reason = "called with json! values built at the call"
)]
fn envelope(method: &str, params: Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": "x", "method": method, "params": params})
        .to_string()
        .into_bytes()
}

/// A custom attribute update of the return: applied, and visible by its code.
fn good(i: usize) -> Vec<u8> {
    envelope(
        methods::RETURN_CUSTOM_ATTRIBUTES_UPDATED,
        json!({"return_custom_attributes_modification": {"sales_channel_id": "default",
            "order_id": ORDER, "rma": "R-BAD", "user": "agent",
            "custom_attributes": [{"name": format!("good-{i}"), "value": i.to_string()}]}}),
    )
}

/// A released refund of `order` with `lines` as `(order_line, cost_gross)`.
fn released(order: &str, number: &str, lines: &[(&str, &str)]) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(line, gross)| {
            json!({"order_line": line, "reason_description": "",
                   "payments": [{"ref": "p", "details": {"cost_gross": gross}}]})
        })
        .collect();
    json!({"refund": {"client": "OMS", "order_id": order, "store_id": "default",
        "credit_note_number": number,
        "status": {"code": "RELEASED", "date": "2026-04-02 10:00:00"},
        "refund_type": "Appeasement", "lines": lines}})
}

fn refund_body(params: Value) -> Vec<u8> {
    envelope(methods::REFUND_UPDATED, params)
}

/// `(routing key, body, words the reason must contain)`.
fn bad_inputs() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let with = |mut params: Value, pointer: &str, value: Value| {
        *params.pointer_mut(pointer).unwrap() = value;
        refund_body(params)
    };
    let ok = || released(ORDER, "CN-2", &[("1", "30")]);
    vec![
        // The envelope.
        (
            methods::REFUND_UPDATED,
            b"{ not json".to_vec(),
            "body is not valid JSON",
        ),
        (
            methods::REFUND_UPDATED,
            b"[1, 2, 3]".to_vec(),
            "body is JSON but not an object",
        ),
        (
            methods::REFUND_UPDATED,
            br#"{"jsonrpc":"2.0","params":{}}"#.to_vec(),
            "envelope has no \"method\"",
        ),
        (
            methods::REFUND_UPDATED,
            format!(
                r#"{{"jsonrpc":"2.0","method":"{}","params":[1]}}"#,
                methods::REFUND_UPDATED
            )
            .into_bytes(),
            "\"params\" is an array",
        ),
        (
            methods::REFUND_UPDATED,
            refund_body(json!({"refund": {"order_id": ORDER, "padding": "x".repeat(300_000)}})),
            "over the limit of 200000 bytes",
        ),
        (
            // The queue is bound to the methods the module handles only, so another method
            // arrives only on a handled route (a sender that mislabels its routing key).
            methods::REFUND_UPDATED,
            envelope(
                "magento.postsales.return_management.reported",
                json!({"return": {"order_id": ORDER}}),
            ),
            "is not handled by the postsales module",
        ),
        (
            // The body is the authority: a sales message on a post-sales route is not ours.
            methods::REFUND_UPDATED,
            envelope(
                "magento.sales.order_management.updated",
                json!({"order": {}}),
            ),
            "\"magento.sales.order_management.updated\" is not handled by the postsales module",
        ),
        // Refunds the order cannot have.
        (
            methods::REFUND_UPDATED,
            refund_body(released("NOPE-1", "CN-9", &[("1", "10")])),
            "order NOPE-1 is not in this Commerce",
        ),
        (
            methods::REFUND_UPDATED,
            // All four lines in full, after CN-1 refunded 25 of them.
            refund_body(released(
                ORDER,
                "CN-3",
                &[("1", "30"), ("2", "25"), ("3", "25"), ("4", "5")],
            )),
            "credit note CN-3 refunds 85, which with the 25.0000 refunded before is over order BAD-1's total of 85.0000",
        ),
        (
            methods::REFUND_UPDATED,
            refund_body(released(ORDER, "CN-4", &[("1", "30.01")])),
            "refunds 30.01 of order BAD-1's line 1 (MUG), which cost 30.0000",
        ),
        (
            methods::REFUND_UPDATED,
            refund_body(released(ORDER, "CN-5", &[("42", "1")])),
            "order BAD-1 has no line with number 42",
        ),
        (
            methods::REFUND_UPDATED,
            refund_body(released("BAD-2", "CN-1", &[("1", "1")])),
            "credit note CN-1 is a refund of order BAD-1, not of order BAD-2",
        ),
        (
            // Line 1 is the mug, item 1; item 2 is the plates: the refund contradicts itself.
            methods::REFUND_UPDATED,
            {
                let mut params = ok();
                params["refund"]["lines"][0]["order_item_id"] = json!("2");
                refund_body(params)
            },
            "order_line \"1\" names line \"1\" (number 1, MUG) of order BAD-1, which is not of order_item_id \"2\"",
        ),
        (
            methods::REFUND_UPDATED,
            with(ok(), "/refund/status/date", json!(null)),
            "status \"RELEASED\" has no \"date\"",
        ),
        (
            methods::REFUND_UPDATED,
            with(
                ok(),
                "/refund/lines/0/payments/0/details/cost_gross",
                json!("-30"),
            ),
            "\"cost_gross\" is negative",
        ),
        (
            methods::REFUND_UPDATED,
            with(
                ok(),
                "/refund/lines/0/payments/0/details/cost_gross",
                json!("lots"),
            ),
            "\"cost_gross\" is not an amount",
        ),
        (
            methods::REFUND_UPDATED,
            with(ok(), "/refund/lines", json!([])),
            "\"lines\" lists no order line",
        ),
        // Returns.
        (
            methods::RETURN_UPDATED,
            envelope(methods::RETURN_UPDATED, json!({"rma": "R-BAD"})),
            "\"return\" is missing",
        ),
        (
            methods::RETURN_UPDATED,
            envelope(
                methods::RETURN_UPDATED,
                json!({"return": {"order_id": "BAD-2", "rma": "R-BAD", "sales_channel_id": "default",
                    "status": {"code": "APPROVED", "date": "2026-04-01 00:00:00"},
                    "lines": [{"line_number": 1, "status": "APPROVED"}]}}),
            ),
            "return R-BAD is of order BAD-1, not of order BAD-2",
        ),
        (
            methods::RETURN_UPDATED,
            envelope(
                methods::RETURN_UPDATED,
                json!({"return": {"order_id": ORDER, "rma": "R-BAD", "sales_channel_id": "default",
                    "status": {"code": "APPROVED", "date": "tomorrow"}, "lines": []}}),
            ),
            "\"date\" is not a date and time",
        ),
    ]
}

#[tokio::test]
async fn every_bad_post_sales_message_is_dead_lettered_with_its_reason_and_the_rest_applied() {
    let env = TestEnv::new().await;
    let _inbox = OmsInbox::bind(&env).await;
    let worker = env
        .start_runtime(&["--max-message-bytes=200000"], |app| {
            postsales::install(app).unwrap();
        })
        .await;
    let d = |cents| Decimal::new(cents, 2);
    let order = paid_order(ORDER, Some("C-1"), d(0), d(0));
    let other = paid_order("BAD-2", Some("C-2"), d(0), d(0));
    placed_and_shipped(&env, &[order.clone(), other]).await;
    let r = SimReturn::new(&order, "R-BAD", &["1"]);
    postsales::storefront::request(&env.db, &r.request())
        .await
        .unwrap();
    wait_authorized(&env, 1).await;
    let publisher = oms_publisher(&env).await;
    // CN-1 refunds a plate first, so that more than the order's total can be refunded.
    let plate = order.lines().remove(1);
    let first = refund(
        &order,
        "CN-1",
        None,
        "Appeasement",
        "RELEASED",
        Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap(),
        &[(&plate, plate.gross_amount)],
    );
    publish(&publisher, &[&first]).await;
    wait_settled(&worker, 1).await;

    let bad = bad_inputs();
    let mut messages = Vec::new();
    for (i, (routing_key, body, _)) in bad.iter().enumerate() {
        messages.push((
            methods::RETURN_CUSTOM_ATTRIBUTES_UPDATED,
            good(i),
            format!("good-{i}"),
        ));
        messages.push((*routing_key, body.clone(), format!("bad-{i}")));
    }
    messages.push((
        methods::RETURN_CUSTOM_ATTRIBUTES_UPDATED,
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
    wait_settled(&worker, 1 + bad.len() + 1).await;
    let counts: (i64, i64, i64, i64) = {
        let row = env
            .db
            .query_one(
                "SELECT (SELECT count(*) FROM postsales_return_attributes
                          WHERE return_id = 'R-BAD' AND code LIKE 'good-%'),
                        (SELECT count(*) FROM postsales_refunds),
                        (SELECT count(*) FROM postsales_credit_memos),
                        (SELECT count(*) FROM postsales_returns)",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2), row.get(3))
    };
    assert_eq!(
        counts,
        (bad.len() as i64 + 1, 1, 1, 1),
        "every good message applied; no bad message left a trace"
    );
    let status: Option<String> = env
        .db
        .query_one("SELECT oms_status FROM postsales_returns", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, None);
    assert_eq!(outcomes(&worker, "dead").await, bad.len() as f64);
    worker.stop().await;
    env.teardown().await;
}
