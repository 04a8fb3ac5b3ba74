//! One hostile message never stops a module: a delivery whose AMQP properties are not UTF-8 is
//! dead-lettered alone while its neighbours apply, and a dead letter PostgreSQL will not take
//! as it is (a NUL, a value over an index limit) is still stored, without holding up the next.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use protocol::inventory::{SnapshotMode, StockEntry, StockScope, StockSnapshot};
use runtime::amqp::Publisher;
use simulate::stock;

use crate::helpers::{
    INVENTORY_QUEUE, PATIENCE, TestEnv, amqp, http_get, metric_value, wait_until,
};
use crate::raw_amqp::{RawProperties, RawPublisher};

fn delta(secs: i64, sku: &str, quantity: i64) -> StockSnapshot {
    StockSnapshot {
        scope: StockScope::Aggregate,
        scope_id: "EU".into(),
        mode: SnapshotMode::Delta,
        created_on: chrono::DateTime::from_timestamp(1_780_000_000 + secs, 0).unwrap(),
        stock: vec![StockEntry {
            sku: sku.into(),
            quantity,
            unlimited: false,
            inflight_backorders: None,
        }],
        batch: None,
    }
}

fn json_properties(message_id: &str) -> RawProperties {
    RawProperties {
        content_type: Some(b"application/json".to_vec()),
        message_id: Some(message_id.as_bytes().to_vec()),
        headers: Vec::new(),
    }
}

#[tokio::test]
async fn undecodable_properties_dead_letter_only_their_message() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let exchange = format!("{}oms.events", env.prefix);
    let routing_key = stock::method(StockScope::Aggregate);
    let bad_content_type = RawProperties {
        content_type: Some(b"application/\xffjson".to_vec()),
        ..json_properties("poison-content-type")
    };
    let bad_header_name = RawProperties {
        headers: vec![(b"x-\xff".to_vec(), b"value".to_vec())],
        ..json_properties("poison-header")
    };
    let messages = [
        (json_properties("good-1"), delta(1, "good-1", 1)),
        (bad_content_type, delta(2, "poison-1", 9)),
        (json_properties("good-2"), delta(3, "good-2", 2)),
        (bad_header_name, delta(4, "poison-2", 9)),
        (json_properties("good-3"), delta(5, "good-3", 3)),
    ];
    let mut raw = RawPublisher::connect("127.0.0.1:5672").await;
    let mut bodies = Vec::new();
    for (i, (properties, snapshot)) in messages.iter().enumerate() {
        let body = stock::encode(snapshot, &format!("msg-{i}"));
        raw.publish(&exchange, routing_key, properties, &body).await;
        bodies.push(body);
    }
    raw.close().await;

    wait_until("the good neighbours to apply", PATIENCE, || async {
        env.sku("EU", "good-3").await.is_some()
            && env.sku("EU", "good-2").await.is_some()
            && env.sku("EU", "good-1").await.is_some()
    })
    .await;
    assert_eq!(env.sku("EU", "good-1").await, Some((1, false)));
    assert_eq!(env.sku("EU", "good-2").await, Some((2, false)));
    assert_eq!(env.sku("EU", "good-3").await, Some((3, false)));

    let letters = env.expect_dead_letters(2).await;
    assert_eq!(
        letters[0].message_id.as_deref(),
        Some("poison-content-type")
    );
    assert_eq!(
        letters[0].reason,
        "AMQP property content_type is not valid UTF-8 (read as \"application/\u{fffd}json\")"
    );
    assert_eq!(letters[0].body, bodies[1], "the body is kept as it came");
    assert_eq!(letters[1].message_id.as_deref(), Some("poison-header"));
    assert_eq!(
        letters[1].reason,
        "AMQP header name \"x-\u{fffd}\" is not valid UTF-8"
    );
    assert!(letters.iter().all(|l| l.endpoint == "undecodable"));
    assert_eq!(env.sku("EU", "poison-1").await, None);
    assert_eq!(env.sku("EU", "poison-2").await, None);

    // Counted when each batch is acknowledged, which may come a moment after its rows and
    // its dead letters are visible.
    let counted = |labels: &'static [(&'static str, &'static str)], n: f64| {
        let worker = &worker;
        async move { worker.metric("omsc_messages_total", labels).await == n }
    };
    wait_until("the undecodable ones to be counted", PATIENCE, || {
        counted(&[("endpoint", "undecodable"), ("outcome", "dead")], 2.0)
    })
    .await;
    wait_until("the good ones to be counted", PATIENCE, || {
        counted(&[("module", "inventory"), ("outcome", "applied")], 3.0)
    })
    .await;
    // The poison never cost the consumer its connection.
    let metrics = worker.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "omsc_reconnects_total",
            &[("module", "inventory"), ("target", "broker")]
        ),
        0.0,
        "{metrics}"
    );
    assert_eq!(http_get(worker.http, "/readyz").await.0, 200);
    worker.stop().await;
    env.teardown().await;
}

/// Publishes a dead letter straight to the inventory dead-letter queue, as a worker would.
async fn dead_letter(publisher: &Publisher, env: &TestEnv, properties: BasicProperties) {
    let queue = env.queue(&format!("{INVENTORY_QUEUE}.dead"));
    publisher
        .publish("", &queue, b"{\"not\":\"applied\"}", properties)
        .await
        .unwrap();
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// `omsc dead-letters show <id>` against the environment.
async fn show(env: &TestEnv, id: i64) -> String {
    env.omsc(&["dead-letters", "show", &id.to_string()], &[])
        .await
}

#[tokio::test]
async fn a_dead_letter_with_nul_is_stored_escaped_and_the_next_one_too() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let connection = amqp().await;
    let publisher = Publisher::open(&connection).await.unwrap();
    let mut headers = FieldTable::default();
    headers.insert("x-note".into(), text("a\0b"));
    headers.insert("x-omsc-reason".into(), text("refused\0here"));
    let with_nul = BasicProperties::default()
        .with_message_id(ShortString::from("id\0nul"))
        .with_headers(headers);
    dead_letter(&publisher, &env, with_nul).await;
    let mut headers = FieldTable::default();
    headers.insert("x-omsc-reason".into(), text("an ordinary failure"));
    let normal = BasicProperties::default()
        .with_message_id(ShortString::from("after"))
        .with_headers(headers);
    dead_letter(&publisher, &env, normal).await;

    let letters = env.expect_dead_letters(2).await;
    assert_eq!(letters[0].message_id.as_deref(), Some("id\\u0000nul"));
    assert_eq!(letters[0].reason, "refused\\u0000here");
    assert_eq!(letters[1].message_id.as_deref(), Some("after"));
    assert_eq!(letters[1].reason, "an ordinary failure");

    let shown = show(&env, letters[0].id).await;
    assert!(shown.contains("message id:  id\\u0000nul"), "{shown}");
    assert!(shown.contains(r#""x-note": "a\\u0000b""#), "{shown}");
    let shown = show(&env, letters[1].id).await;
    assert!(shown.contains("message id:  after"), "{shown}");
    worker.stop().await;
    env.teardown().await;
}

/// Text that no compression shrinks much, so that it stays over the index row limit.
fn incompressible(len: usize) -> String {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'!' + (state % 90) as u8)
        })
        .collect()
}

#[tokio::test]
async fn a_dead_letter_the_database_refuses_is_stored_in_a_minimal_form() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let connection = amqp().await;
    let publisher = Publisher::open(&connection).await.unwrap();
    // The endpoint goes into an index, whose rows are limited to a few kilobytes.
    let mut headers = FieldTable::default();
    headers.insert("x-omsc-reason".into(), text("the first failure"));
    headers.insert("x-omsc-endpoint".into(), text(&incompressible(20_000)));
    let refused = BasicProperties::default()
        .with_message_id(ShortString::from("too-big"))
        .with_headers(headers);
    dead_letter(&publisher, &env, refused).await;
    let mut headers = FieldTable::default();
    headers.insert("x-omsc-reason".into(), text("the second failure"));
    let normal = BasicProperties::default()
        .with_message_id(ShortString::from("after"))
        .with_headers(headers);
    dead_letter(&publisher, &env, normal).await;

    let letters = env.expect_dead_letters(2).await;
    assert!(
        letters[0].reason.starts_with(
            "the first failure (stored in a minimal form: the database refused its identity and headers: "
        ),
        "{}",
        letters[0].reason
    );
    assert!(
        letters[0].reason.contains("(54000)"),
        "{}",
        letters[0].reason
    );
    assert_eq!(letters[0].body, b"{\"not\":\"applied\"}");
    assert_eq!(letters[0].message_id, None);
    assert_eq!(letters[1].reason, "the second failure");
    assert_eq!(letters[1].message_id.as_deref(), Some("after"));
    let shown = show(&env, letters[0].id).await;
    assert!(shown.contains("stored in a minimal form"), "{shown}");
    worker.stop().await;
    env.teardown().await;
}
