//! Every class of bad input goes to the dead-letter queue with a reason a person can act on,
//! is counted, and the messages around it are applied as if it were not there.

use protocol::inventory::methods;
use serde_json::json;

use crate::helpers::{PATIENCE, TestEnv, wait_until};

const STOCK: &str = methods::AGGREGATE_STOCK_UPDATED;

#[allow(
    clippy::needless_pass_by_value,
    reason = "called with json! values built at the call"
)]
fn envelope(method: &str, params: serde_json::Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": "x", "method": method, "params": params})
        .to_string()
        .into_bytes()
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "called with json! values built at the call"
)]
fn snapshot(fields: serde_json::Value) -> Vec<u8> {
    envelope(STOCK, json!({ "snapshot": fields }))
}

fn good(i: usize) -> Vec<u8> {
    snapshot(json!({
        "aggregate_id": "EU", "mode": "DELTA", "created_on": format!("2026-01-01 00:00:{:02}", i),
        "stock": [{"sku": format!("good-{i}"), "quantity": i}]
    }))
}

/// `(routing key, body, words the reason must contain)`.
fn bad_inputs() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let valid = |extra: serde_json::Value| {
        let mut s = json!({"aggregate_id": "EU", "mode": "DELTA", "created_on": "2026-01-01 00:00:00",
                           "stock": [{"sku": "A", "quantity": 1}]});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                s.as_object_mut().unwrap().remove(k);
            } else {
                s[k] = v.clone();
            }
        }
        snapshot(s)
    };
    vec![
        (
            STOCK,
            b"this is not json".to_vec(),
            "body is not valid JSON",
        ),
        (
            STOCK,
            b"[1, 2, 3]".to_vec(),
            "body is JSON but not an object",
        ),
        (
            STOCK,
            br#"{"jsonrpc":"2.0","params":{}}"#.to_vec(),
            "envelope has no \"method\"",
        ),
        (
            STOCK,
            format!(r#"{{"jsonrpc":"2.0","method":"{STOCK}","params":[1]}}"#).into_bytes(),
            "\"params\" is an array",
        ),
        (
            STOCK,
            valid(json!({"mode": null})),
            "snapshot: \"mode\" is missing",
        ),
        (
            STOCK,
            valid(json!({"created_on": null})),
            "snapshot: \"created_on\" is missing",
        ),
        (
            STOCK,
            valid(json!({"stock": null})),
            "snapshot: \"stock\" is missing",
        ),
        (
            STOCK,
            valid(json!({"mode": "PARTIAL"})),
            "unknown snapshot \"mode\" \"PARTIAL\"",
        ),
        (
            STOCK,
            valid(json!({"created_on": "the day before yesterday"})),
            "\"created_on\" is not a date and time",
        ),
        (
            STOCK,
            valid(json!({"stock": [{"sku": "A", "quantity": -4}]})),
            "stock[0]: \"quantity\" is negative (-4)",
        ),
        (
            STOCK,
            valid(json!({"stock": [{"sku": "A", "quantity": "many"}]})),
            "stock[0]: \"quantity\" is not a whole number: \"many\"",
        ),
        (
            STOCK,
            valid(json!({"stock": [{"sku": "", "quantity": 1}]})),
            "stock[0]: \"sku\" is empty",
        ),
        (
            STOCK,
            valid(json!({"stock": [{"sku": "S".repeat(65), "quantity": 1}]})),
            "\"sku\" is 65 characters long, over the limit of 64",
        ),
        (
            STOCK,
            valid(json!({"stock": [{"sku": "A", "quantity": 1}], "padding": "x".repeat(300_000)})),
            "over the limit of 200000 bytes",
        ),
        (
            // The queue is bound to the methods the module handles only, so another method
            // arrives only on a handled route (a sender that mislabels its routing key).
            STOCK,
            envelope(
                "magento.inventory.aggregate_stock_management.reservation_confirmed",
                json!({"aggregate_id": "EU"}),
            ),
            "is not handled by the inventory module",
        ),
        (
            // The body is the authority: a sales message on the inventory route is not ours.
            STOCK,
            envelope(
                "magento.sales.order_management.updated",
                json!({"order": {}}),
            ),
            "\"magento.sales.order_management.updated\" is not handled by the inventory module",
        ),
        (
            methods::SOURCE_CREATED,
            envelope(
                methods::SOURCE_CREATED,
                json!({"source": {"name": "no id"}}),
            ),
            "source: \"id\" is missing",
        ),
    ]
}

#[tokio::test]
async fn every_bad_message_is_dead_lettered_with_its_reason_and_the_rest_applied() {
    let env = TestEnv::new().await;
    let worker = env.start_worker_with(&["--max-message-bytes=200000"]).await;
    let publisher = env.publisher().await;
    let bad = bad_inputs();
    let mut messages = Vec::new();
    for (i, (routing_key, body, _)) in bad.iter().enumerate() {
        messages.push((STOCK, good(i), format!("good-{i}")));
        messages.push((*routing_key, body.clone(), format!("bad-{i}")));
    }
    messages.push((STOCK, good(bad.len()), "last".into()));
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
    for i in 0..=bad.len() {
        let sku = format!("good-{i}");
        assert_eq!(env.sku("EU", &sku).await, Some((i as i64, false)), "{sku}");
    }
    let dead = worker
        .metric(
            "omsc_messages_total",
            &[("module", "inventory"), ("outcome", "dead")],
        )
        .await;
    assert_eq!(dead, bad.len() as f64);
    // Bodies that cannot be read are counted under the endpoint their routing key names.
    let unreadable = worker
        .metric(
            "omsc_messages_total",
            &[("endpoint", STOCK), ("outcome", "dead")],
        )
        .await;
    assert!(
        unreadable >= 5.0,
        "not JSON, not an object, no method, params an array, too big"
    );
    assert_eq!(
        worker
            .metric("omsc_messages_total", &[("endpoint", "unparsed")])
            .await,
        0.0
    );
    for letter in &letters {
        if letter
            .reason
            .contains("is not handled by the inventory module")
        {
            assert_eq!(letter.endpoint, "unknown");
        }
    }
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_ten_thousand_sku_snapshot_fits_the_default_size_limit() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let publisher = env.publisher().await;
    let stock: Vec<_> = (0..10_000)
        .map(|i| json!({"sku": format!("{i:0>40}"), "quantity": "123"}))
        .collect();
    let body = snapshot(json!({"aggregate_id": "EU", "mode": "FULL",
                               "created_on": "2026-01-01T00:00:00+02:00", "stock": stock}));
    assert!(
        body.len() > 500_000,
        "a realistic worst case: long SKUs, quantities as strings"
    );
    publisher.publish_raw(STOCK, &body).await.unwrap();
    wait_until("10,000 rows", PATIENCE, || async {
        env.stock().await.len() == 10_000
    })
    .await;
    env.assert_no_dead_letters().await;
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn source_messages_never_reach_the_stock_filter() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let publisher = env.publisher().await;
    let template = include_str!(
        "../../crates/protocol/fixtures/mock-templates/magento.inventory.source_repository.search.json"
    )
    .replace("{{aggregate_id}}", "EU")
    .replace("{{source_id}}", "WH-1");
    let search: serde_json::Value = serde_json::from_str(&template).unwrap();
    let mut source = search["items"][0].clone();
    publisher
        .publish_raw(
            methods::SOURCE_CREATED,
            &envelope(methods::SOURCE_CREATED, json!({ "source": source })),
        )
        .await
        .unwrap();
    // Source messages carry no version: two changes of one source in flight at once may be
    // applied in either order. Like the OMS, send the update once the creation is applied.
    wait_until("the created source", PATIENCE, || async {
        env.db
            .query_opt("SELECT 1 FROM sources WHERE source_id = 'WH-1'", &[])
            .await
            .unwrap()
            .is_some()
    })
    .await;
    source["configurations"]["capabilities"]["services"] = json!(["STORE_PICKUP"]);
    source["aggregate_ids"] = json!(["EU", "US"]);
    publisher
        .publish_raw(
            methods::SOURCE_UPDATED,
            &envelope(methods::SOURCE_UPDATED, json!({ "source": source })),
        )
        .await
        .unwrap();
    let row = || async {
        env.db
            .query_opt(
                "SELECT s.store_pickup, array_agg(a.aggregate_id ORDER BY a.aggregate_id), s.deleted_at IS NOT NULL
                   FROM sources s JOIN source_aggregates a USING (source_id)
                  WHERE s.source_id = 'WH-1' GROUP BY s.source_id",
                &[],
            )
            .await
            .unwrap()
            .map(|r| (r.get::<_, bool>(0), r.get::<_, Vec<String>>(1), r.get::<_, bool>(2)))
    };
    wait_until("the updated source", PATIENCE, || async {
        row().await == Some((true, vec!["EU".into(), "US".into()], false))
    })
    .await;
    publisher
        .publish_raw(
            methods::SOURCE_DELETED,
            &envelope(methods::SOURCE_DELETED, json!({ "source_id": "WH-1" })),
        )
        .await
        .unwrap();
    wait_until("the deleted source", PATIENCE, || async {
        row().await.is_some_and(|r| r.2)
    })
    .await;
    env.assert_no_dead_letters().await;
    assert!(env.stock().await.is_empty());
    worker.stop().await;
    env.teardown().await;
}
