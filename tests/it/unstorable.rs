//! What the database cannot hold is refused when the message is read: a NUL in a text, a date
//! outside years 1–9999, a quantity beyond a bigint, an amount beyond numeric(20, 4). Each is
//! dead-lettered at once with a reason naming the field: no attempt in the database, no trip
//! through the retry tiers (which take some 41 minutes to give up).

use protocol::inventory::methods as stock_methods;
use protocol::postsales::methods as postsales_methods;
use protocol::sales::methods as sales_methods;
use serde_json::{Value, json};

use crate::helpers::{DeadLetter, TestEnv, Worker};

#[allow(
    clippy::needless_pass_by_value,
    reason = "called with json! values built at the call"
)]
fn envelope(method: &str, params: Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": "x", "method": method, "params": params})
        .to_string()
        .into_bytes()
}

/// Publishes `bad` as `(routing key, body, words the reason must contain)`, waits for their
/// dead letters and checks each reason, and that none of them was ever retried.
async fn expect_refused_at_once(
    env: &TestEnv,
    worker: &Worker,
    module: &str,
    publisher: &simulate::publish::OmsPublisher,
    bad: &[(&str, Vec<u8>, &str)],
) -> Vec<DeadLetter> {
    let messages = bad
        .iter()
        .enumerate()
        .map(|(i, (key, body, _))| (*key, body.clone(), format!("bad-{i}")));
    publisher.publish_all(messages, 16).await.unwrap();
    let letters = env.expect_dead_letters(bad.len()).await;
    for (_, body, expected) in bad {
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
    let attempts: Vec<i32> = env
        .db
        .query("SELECT attempts FROM dead_letters ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        attempts,
        vec![0; bad.len()],
        "dead-lettered on first reading"
    );
    let retried = worker
        .metric(
            "omsc_messages_total",
            &[("module", module), ("outcome", "retried")],
        )
        .await;
    assert_eq!(retried, 0.0, "nothing went through the retry tiers");
    letters
}

#[tokio::test]
async fn stock_the_database_cannot_hold_is_dead_lettered_at_once() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let publisher = env.publisher().await;
    let stock = stock_methods::AGGREGATE_STOCK_UPDATED;
    let snapshot = |created_on: &str, quantity: Value| {
        envelope(
            stock,
            json!({"snapshot": {"aggregate_id": "EU", "mode": "DELTA", "created_on": created_on,
                                "stock": [{"sku": "A", "quantity": quantity}]}}),
        )
    };
    let bad = [
        (
            stock,
            snapshot("-5000-01-01 00:00:00", json!(1)),
            "snapshot: \"created_on\" is out of range: -5000-01-01T00:00:00Z",
        ),
        (
            stock,
            snapshot("+10000-01-01 00:00:00", json!(1)),
            "snapshot: \"created_on\" is out of range",
        ),
        (
            stock,
            snapshot("2026-01-01 00:00:00", json!("99999999999999999999")),
            "snapshot: stock[0]: \"quantity\" is out of range",
        ),
        (
            stock_methods::SOURCE_CREATED,
            envelope(
                stock_methods::SOURCE_CREATED,
                json!({"source": {"id": "WH-1", "name": "North\u{0}"}}),
            ),
            "source: contains a NUL character",
        ),
    ];
    expect_refused_at_once(&env, &worker, "inventory", &publisher, &bad).await;
    assert!(env.stock().await.is_empty());
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn sales_updates_the_database_cannot_hold_are_dead_lettered_at_once() {
    let env = TestEnv::new().await;
    let _inbox = crate::sales_support::OmsInbox::bind(&env).await;
    let worker = env
        .start_runtime(&[], |app| sales::install(app).unwrap())
        .await;
    let publisher = crate::sales_support::oms_publisher(&env).await;
    let attributes = |value: &str| {
        envelope(
            sales_methods::LINE_CUSTOM_ATTRIBUTES_UPDATED,
            json!({"line_custom_attributes_modification": {"sales_channel_id": "default",
                "order_id": "O-1", "line_id": "1",
                "custom_attributes": [{"name": "gift", "value": value}]}}),
        )
    };
    let bad = [
        (
            sales_methods::LINE_CUSTOM_ATTRIBUTES_UPDATED,
            attributes("wrapped\u{0}"),
            "line_custom_attributes_modification.custom_attributes[0]: \"value\" contains a NUL character",
        ),
        (
            sales_methods::UPDATED,
            envelope(
                sales_methods::UPDATED,
                json!({"order": {"id": "O-1", "status": "SHIPPED",
                                 "status_date": "-5000-06-01 00:00:00"}}),
            ),
            "order: \"status_date\" is out of range",
        ),
    ];
    expect_refused_at_once(&env, &worker, "sales", &publisher, &bad).await;
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn refunds_the_database_cannot_hold_are_dead_lettered_at_once() {
    let env = TestEnv::new().await;
    let _inbox = crate::sales_support::OmsInbox::bind(&env).await;
    let worker = env
        .start_runtime(&[], |app| postsales::install(app).unwrap())
        .await;
    let publisher = crate::postsales_support::oms_publisher(&env).await;
    let refund = |gross: &str, date: &str| {
        envelope(
            postsales_methods::REFUND_UPDATED,
            json!({"refund": {"order_id": "O-1", "store_id": "default",
                "credit_note_number": "CN-1", "credit_note_date": date,
                "status": {"code": "RELEASED", "date": "2026-04-02 10:00:00"},
                "refund_type": "Appeasement",
                "lines": [{"order_line": "1",
                           "payments": [{"details": {"cost_gross": gross}}]}]}}),
        )
    };
    let bad = [
        (
            postsales_methods::REFUND_UPDATED,
            refund("100000000000000000", "2026-04-02"),
            "refund.lines[0].payments[0].details: \"cost_gross\" is out of range",
        ),
        (
            postsales_methods::REFUND_UPDATED,
            refund("10", "-5000-04-02"),
            "\"credit_note_date\" is out of range",
        ),
        (
            postsales_methods::RETURN_CUSTOM_ATTRIBUTES_UPDATED,
            envelope(
                postsales_methods::RETURN_CUSTOM_ATTRIBUTES_UPDATED,
                json!({"return_custom_attributes_modification": {"order_id": "O-1",
                    "rma": "R-1", "custom_attributes": [{"name": "note", "value": "\u{0}"}]}}),
            ),
            "\"value\" contains a NUL character",
        ),
    ];
    expect_refused_at_once(&env, &worker, "postsales", &publisher, &bad).await;
    worker.stop().await;
    env.teardown().await;
}
