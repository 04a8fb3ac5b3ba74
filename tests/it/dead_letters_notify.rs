//! `magento.common.error_management.notify`: when the connector dead-letters a message the
//! OMS sent, the OMS is told the method, the message id and the reason (and gets the body),
//! once per dead letter: not for the connector's own operator commands, not with
//! `OMSC_NOTIFY_ERRORS=false`; also for a message the broker dead-lettered after its
//! delivery limit; through the gateway, at the bus's `/delegate/oms`.

use futures::StreamExt as _;
use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicNackOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use protocol::common::methods::NOTIFY;
use serde_json::Value;

use crate::catalog::{catalog_config, commerce_inbox, spec_problems};
use crate::gateway::{post, start_gateway_with};
use crate::gateway_bus::TestBus;
use crate::helpers::{AMQP_URL, PATIENCE, TestEnv, Worker, amqp, wait_until};

const STOCK: &str = "magento.inventory.aggregate_stock_management.updated";

/// The OMS mock's stock template, verbatim, its placeholders filled in: with a negative
/// quantity, a message no worker can apply.
fn stock_update(id: &str, quantity: &str) -> Vec<u8> {
    let params = include_str!(
        "../../crates/protocol/fixtures/mock-templates/magento.inventory.aggregate_stock_management.updated.json"
    )
    .replace("{{aggregate_name}}", "EU")
    .replace("{{created_on}}", "2026-03-01 10:00:00")
    .replace("{{mode}}", "DELTA")
    .replace("{{qty}}", quantity)
    .replace("{{sku}}", "sku-1");
    format!(r#"{{"jsonrpc":"2.0","id":"{id}","method":"{STOCK}","params":{params}}}"#).into_bytes()
}

/// Publishes to `oms.events` as the OMS does, with the envelope id as message id.
async fn publish(env: &TestEnv, method: &str, id: &str, body: Vec<u8>) {
    env.publisher()
        .await
        .publish_all([(method, body, id.to_owned())], 1)
        .await
        .unwrap();
}

async fn start_inventory_and_catalog(env: &TestEnv, extra: &[&str]) -> Worker {
    let (inventory_config, catalog_config) = (env.flags(extra).1, catalog_config(&[]));
    env.start_runtime(extra, move |app| {
        inventory::install(app, &inventory_config).unwrap();
        catalog::install(app, &catalog_config).unwrap();
    })
    .await
}

async fn next(inbox: &mut lapin::Consumer) -> Value {
    let delivery = tokio::time::timeout(PATIENCE, inbox.next())
        .await
        .expect("a notification")
        .unwrap()
        .unwrap();
    delivery
        .ack(lapin::options::BasicAckOptions::default())
        .await
        .unwrap();
    serde_json::from_slice(&delivery.data).unwrap()
}

/// `(subject, sent)` of every notification row of the outbox.
async fn notification_rows(env: &TestEnv) -> Vec<(String, bool)> {
    env.db
        .query(
            "SELECT subject, sent_at IS NOT NULL FROM outbox
              WHERE module = 'errors' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The notification says which message failed, why, and carries it; it passes the
/// specification's check.
fn assert_notifies(notify: &Value, letter: &crate::helpers::DeadLetter, method: &str) {
    assert_eq!(notify["method"], NOTIFY);
    assert_eq!(notify["id"], format!("error-{}", letter.id));
    assert_eq!(spec_problems(notify), Vec::<String>::new());
    let params = &notify["params"];
    assert_eq!(params["topic"], method);
    assert_eq!(params["delivery_id"].as_str(), letter.message_id.as_deref());
    assert_eq!(params["message"], letter.reason.as_str());
    assert_eq!(
        params["payload"].as_str().unwrap().as_bytes(),
        letter.body.as_slice()
    );
}

#[tokio::test]
async fn a_bad_message_from_the_oms_is_notified_once_and_an_operator_command_never() {
    let env = TestEnv::new().await;
    let worker = start_inventory_and_catalog(&env, &[]).await;
    let (_connection, mut inbox) = commerce_inbox(&env, NOTIFY).await;

    publish(&env, STOCK, "oms-bad-1", stock_update("oms-bad-1", "-3")).await;
    // The operator's own command, malformed: dead-lettered, never reported to the OMS.
    let command = protocol::catalog::methods::EXPORT_FULL;
    publish(
        &env,
        command,
        "cmd-1",
        format!(
            r#"{{"jsonrpc":"2.0","id":"cmd-1","method":"{command}","params":{{"chunk_size":"x"}}}}"#
        )
        .into_bytes(),
    )
    .await;
    let letters = env.expect_dead_letters(2).await;
    let bad = letters
        .iter()
        .find(|l| l.message_id.as_deref() == Some("oms-bad-1"))
        .expect("the stock update's dead letter");
    assert!(bad.reason.contains("quantity"), "{bad:?}");
    let notify = next(&mut inbox).await;
    assert_notifies(&notify, bad, STOCK);
    wait_until("the notification to be marked sent", PATIENCE, || async {
        notification_rows(&env).await == [(bad.id.to_string(), true)]
    })
    .await;

    // The keeper gets the same dead letter again (as after a crash before its
    // acknowledgement): stored once, notified once. A different one after the two copies
    // shows when the keeper is through them (it stores in delivery order).
    let connection = amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let dead_queue = env.queue("connector.inventory.dead");
    for id in ["oms-bad-2", "oms-bad-2", "oms-bad-3"] {
        let mut headers = FieldTable::default();
        for (key, value) in [
            ("x-omsc-reason", "\"quantity\" is negative"),
            ("x-omsc-routing-key", STOCK),
            ("x-omsc-endpoint", STOCK),
            ("x-omsc-dead-at", "2026-03-01T10:00:00+00:00"),
        ] {
            headers.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
        }
        channel
            .basic_publish(
                "".into(),
                dead_queue.as_str().into(),
                BasicPublishOptions::default(),
                &stock_update(id, "-4"),
                BasicProperties::default()
                    .with_message_id(id.into())
                    .with_headers(headers),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let letters = env.expect_dead_letters(4).await;
    let by_id = |id: &str| {
        letters
            .iter()
            .find(|l| l.message_id.as_deref() == Some(id))
            .unwrap_or_else(|| panic!("{id} in {letters:?}"))
    };
    let (second, third) = (by_id("oms-bad-2"), by_id("oms-bad-3"));
    let mut notified = [next(&mut inbox).await, next(&mut inbox).await];
    notified.sort_by_key(|n| n["id"].as_str().unwrap().to_owned());
    assert_notifies(&notified[0], second, STOCK);
    assert_notifies(&notified[1], third, STOCK);

    // A replayed dead letter that fails again is a new dead letter, and a new notification.
    let client = runtime::db::connect(&env.database_url, "test")
        .await
        .unwrap();
    let topology = runtime::Topology::new(&env.prefix, runtime::config::QueueType::Quorum);
    let selection = runtime::dead_letters::Selection {
        ids: vec![bad.id],
        ..Default::default()
    };
    let replayed = runtime::dead_letters::replay(&client, AMQP_URL, &topology, &selection)
        .await
        .unwrap();
    assert_eq!(replayed, [bad.id]);
    wait_until("the replay to fail again", PATIENCE, || async {
        env.dead_letters()
            .await
            .iter()
            .any(|l| l.message_id.as_deref() == Some("oms-bad-1") && l.id != bad.id)
    })
    .await;
    let letters = env.expect_dead_letters(4).await;
    let again = letters
        .iter()
        .find(|l| l.message_id.as_deref() == Some("oms-bad-1"))
        .unwrap();
    assert_notifies(&next(&mut inbox).await, again, STOCK);
    wait_until("every notification to be sent", PATIENCE, || async {
        let rows = notification_rows(&env).await;
        rows.len() >= 4 && rows.iter().all(|(_, sent)| *sent)
    })
    .await;
    let subjects: Vec<String> = notification_rows(&env)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        subjects,
        [bad.id, second.id, third.id, again.id].map(|id| id.to_string()),
        "one notification per dead letter of the OMS's, none for the command"
    );
    let (_, readiness) = crate::helpers::http_get(worker.http, "/readyz").await;
    assert!(readiness.contains("errors outbox relay"), "{readiness}");
    worker.stop().await;
    let _ = connection.close(200, "done".into()).await;
    env.teardown().await;
}

#[tokio::test]
async fn with_notifications_switched_off_a_dead_letter_is_only_kept() {
    let env = TestEnv::new().await;
    let worker = start_inventory_and_catalog(&env, &["--notify-errors=false"]).await;
    publish(&env, STOCK, "oms-bad-1", stock_update("oms-bad-1", "-3")).await;
    let letters = env.expect_dead_letters(1).await;
    assert!(letters[0].reason.contains("quantity"));
    // The decision is made in the statement that stores the dead letter: stored without a
    // notification row, there will be none.
    assert_eq!(notification_rows(&env).await, []);
    let (status, readiness) = crate::helpers::http_get(worker.http, "/readyz").await;
    assert_eq!(status, 200);
    assert!(readiness.contains("catalog outbox relay"), "{readiness}");
    assert!(
        !readiness.contains("errors outbox relay"),
        "no relay for notifications runs: {readiness}"
    );
    worker.stop().await;
    env.teardown().await;
}

/// No queue takes notifications (an OMS on the broker that does not bind the method, no
/// gateway): the row is settled with nothing sent, at once, not retried for ever as a failing
/// outbox row would be, and the dead letter stays what it is.
#[tokio::test]
async fn a_notification_nobody_takes_is_settled_not_retried() {
    let env = TestEnv::new().await;
    let worker = start_inventory_and_catalog(&env, &[]).await;
    publish(&env, STOCK, "oms-bad-2", stock_update("oms-bad-2", "-3")).await;
    let letters = env.expect_dead_letters(1).await;
    let subject = letters[0].id.to_string();
    wait_until("the notification row to be settled", PATIENCE, || async {
        notification_rows(&env).await == [(subject.clone(), true)]
    })
    .await;
    let (attempts, error): (i32, Option<String>) = {
        let row = env
            .db
            .query_one(
                "SELECT attempts, last_error FROM outbox WHERE module = 'errors'",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((attempts, error), (1, None), "settled on its first attempt");
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_message_the_broker_dead_lettered_after_its_delivery_limit_is_notified() {
    let env = TestEnv::new().await;
    let body = stock_update("oms-poison-1", "5");
    // Declares the queues; no worker runs yet. A consumer that takes the message and gives
    // it back every time, as a worker that crashes on it would, until the broker gives up.
    publish(&env, STOCK, "oms-poison-1", body.clone()).await;
    let connection = amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let queue = env.queue(crate::helpers::INVENTORY_QUEUE);
    wait_until("the broker to dead-letter it", PATIENCE, || async {
        if let Some(message) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            message
                .delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        env.depth("connector.inventory.dead").await == 1
    })
    .await;

    let (_inbox_connection, mut inbox) = commerce_inbox(&env, NOTIFY).await;
    let worker = start_inventory_and_catalog(&env, &[]).await;
    let letters = env.expect_dead_letters(1).await;
    assert!(
        letters[0].reason.contains(&format!(
            "delivered more than {}",
            runtime::topology::DELIVERY_LIMIT
        )),
        "{letters:?}"
    );
    assert_eq!(letters[0].body, body);
    // The method it was sent with is kept (from the broker's death record), so a replay
    // goes the same way.
    let routing_key: Option<String> = env
        .db
        .query_one(
            "SELECT routing_key FROM dead_letters WHERE id = $1",
            &[&letters[0].id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(routing_key.as_deref(), Some(STOCK));
    let notify = next(&mut inbox).await;
    assert_notifies(&notify, &letters[0], STOCK);
    assert_eq!(notify["params"]["delivery_id"], "oms-poison-1");
    worker.stop().await;
    let _ = connection.close(200, "done".into()).await;
    env.teardown().await;
}

#[tokio::test]
async fn a_bad_message_the_bus_delivers_comes_back_to_the_bus_as_a_notification() {
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    let url = format!("--oms-url={}", bus.base);
    let (_, inventory_config) = env.flags(&[]);
    let (worker, callback) = start_gateway_with(&env, &[], &[&url], |app| {
        inventory::install(app, &inventory_config).unwrap();
    })
    .await;
    let body = stock_update("bus-bad-1", "-3");
    let reply = post(callback, &body, &[]).await;
    assert_eq!(reply.status, 200, "taken by the gateway: {reply:?}");
    let letters = env.expect_dead_letters(1).await;
    wait_until("the notification at the bus", PATIENCE, || async {
        bus.calls_of(NOTIFY).iter().any(|c| c.status == 200)
    })
    .await;
    let calls = bus.calls_of(NOTIFY);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].path, "/delegate/oms");
    assert_notifies(&calls[0].body, &letters[0], STOCK);
    assert_eq!(calls[0].body["params"]["delivery_id"], "bus-bad-1");
    // Taken by the bus: the notification was not itself dead-lettered.
    assert_eq!(env.dead_letters().await.len(), 1);
    worker.stop().await;
    bus.stop();
    env.teardown().await;
}
