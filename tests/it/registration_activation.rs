//! The bus's `magento.service_bus.activation_management.activate`: the connector registers
//! again, even though nothing changed since its last confirmed registration; a fleet answers
//! one activation with one registration; through the gateway, the new registration reaches
//! the bus; an activation without its `client_id` is dead-lettered and the OMS is told.

use futures::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use protocol::service_bus::methods;
use serde_json::Value;

use crate::catalog::{catalog_config, spec_problems};
use crate::gateway::{post, start_gateway_with};
use crate::gateway_bus::TestBus;
use crate::helpers::{PATIENCE, TestEnv, Worker, amqp, wait_until};

const SECRET: &str = "activation-secret";

fn registering() -> Vec<&'static str> {
    vec![
        "--register=true",
        "--connector-id=shop-eu",
        "--callback-url=https://shop.example/oms",
        "--registration-secret=activation-secret",
    ]
}

/// The activation as the specification writes it (`service-bus/activation.xml`): one
/// required `client_id`.
fn activation(id: &str, client_id: &str) -> Vec<u8> {
    format!(
        r#"{{"jsonrpc":"2.0","id":"{id}","method":"{}","params":{{"client_id":"{client_id}"}}}}"#,
        methods::ACTIVATE
    )
    .into_bytes()
}

/// An inventory and catalog worker that registers at start.
async fn start_replica(env: &TestEnv) -> Worker {
    let (inventory_config, catalog_config) = (env.flags(&[]).1, catalog_config(&[]));
    env.start_runtime(&registering(), move |app| {
        inventory::install(app, &inventory_config).unwrap();
        catalog::install(app, &catalog_config).unwrap();
    })
    .await
}

/// How many registrations wait in `queue`, read without taking them.
async fn waiting(channel: &lapin::Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap()
        .message_count()
}

async fn take(channel: &lapin::Channel, queue: &str) -> Value {
    let message = channel
        .basic_get(queue.into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("a registration");
    message
        .delivery
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    serde_json::from_slice(&message.delivery.data).unwrap()
}

#[tokio::test]
async fn an_activation_makes_a_fleet_register_again_once() {
    let env = TestEnv::new().await;
    let connection = amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let inbox = format!("{}oms.registrations", env.prefix);
    runtime::Topology::new(&env.prefix, runtime::config::QueueType::Quorum)
        .declare_oms_listener(
            &channel,
            &inbox,
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            methods::REGISTER,
        )
        .await
        .unwrap();

    // Two replicas of a worker with two modules: one registration at start, the second
    // replica finding it already confirmed.
    let first = start_replica(&env).await;
    wait_until("the start-up registration", PATIENCE, || async {
        waiting(&channel, &inbox).await == 1
    })
    .await;
    let second = start_replica(&env).await;
    let at_start = take(&channel, &inbox).await;
    assert_eq!(spec_problems(&at_start), Vec::<String>::new());
    let subscribes: Vec<&str> = at_start["params"]["subscribes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(
        subscribes.contains(&methods::ACTIVATE),
        "the connector announces that it takes activations: {subscribes:?}"
    );

    // The bus asks; nothing changed, yet the connector registers again, once for the fleet.
    let publisher = env.publisher().await;
    publisher
        .publish_raw(methods::ACTIVATE, &activation("act-1", "tenant-1"))
        .await
        .unwrap();
    let applied = || async {
        let mut total = 0.0;
        for worker in [&first, &second] {
            total += worker
                .metric(
                    "omsc_messages_total",
                    &[("endpoint", methods::ACTIVATE), ("outcome", "applied")],
                )
                .await;
        }
        total
    };
    wait_until("the activation to be applied", PATIENCE, || async {
        applied().await >= 1.0
    })
    .await;
    // Each registration is confirmed by the broker before the activation that asked for it
    // is acknowledged: what is in the queue now is all the activation sent.
    assert_eq!(applied().await, 1.0);
    assert_eq!(waiting(&channel, &inbox).await, 1, "one registration");
    let again = take(&channel, &inbox).await;
    assert_eq!(again["method"], methods::REGISTER);
    assert_eq!(again["params"], at_start["params"]);
    assert_ne!(again["id"], at_start["id"]);
    let row = env
        .db
        .query_one(
            "SELECT state, sent_by, message_id, confirmed_at IS NOT NULL
               FROM connector_registration",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "registered");
    assert_eq!(row.get::<_, String>(1), "activation (client tenant-1)");
    assert_eq!(row.get::<_, String>(2), again["id"].as_str().unwrap());
    assert!(row.get::<_, bool>(3));
    env.assert_no_dead_letters().await;

    first.stop().await;
    second.stop().await;
    let _ = connection.close(200, "done".into()).await;
    env.teardown().await;
}

#[tokio::test]
async fn an_activation_posted_by_the_bus_brings_a_new_registration_to_the_bus() {
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    let url = format!("--oms-url={}", bus.base);
    let config = catalog_config(&[]);
    let (worker, callback) = start_gateway_with(&env, &registering(), &[&url], |app| {
        catalog::install(app, &config).unwrap();
    })
    .await;
    let registrations = || {
        bus.calls_of(methods::REGISTER)
            .into_iter()
            .filter(|c| c.status == 200)
            .collect::<Vec<_>>()
    };
    wait_until("the start-up registration at the bus", PATIENCE, || async {
        registrations().len() == 1
    })
    .await;

    let body = activation("bus-activation-1", "tenant-9");
    let signature = gateway::signature::sign(SECRET.as_bytes(), &body);
    let reply = post(callback, &body, &[("X-Signature", &signature)]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["result"], Value::Null);

    wait_until("the new registration at the bus", PATIENCE, || async {
        registrations().len() == 2
    })
    .await;
    let calls = registrations();
    assert_eq!(calls[1].path, "/");
    assert_eq!(calls[1].body["params"], calls[0].body["params"]);
    assert_ne!(calls[1].id(), calls[0].id());
    // The bus's answer to the new registration is the one stored.
    wait_until("the bus's answer to be stored", PATIENCE, || async {
        env.db
            .query_opt(
                "SELECT 1 FROM connector_registration
                  WHERE message_id = $1 AND remote_endpoint IS NOT NULL",
                &[&calls[1].id()],
            )
            .await
            .unwrap()
            .is_some()
    })
    .await;
    env.assert_no_dead_letters().await;
    worker.stop().await;
    bus.stop();
    env.teardown().await;
}

#[tokio::test]
async fn an_activation_without_its_client_id_is_dead_lettered_and_the_oms_told() {
    let env = TestEnv::new().await;
    let worker = start_replica(&env).await;
    let (_connection, mut notifications) =
        crate::catalog::commerce_inbox(&env, protocol::common::methods::NOTIFY).await;
    let publisher = env.publisher().await;
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":"act-bad","method":"{}","params":{{}}}}"#,
        methods::ACTIVATE
    );
    publisher
        .publish_raw(methods::ACTIVATE, body.as_bytes())
        .await
        .unwrap();
    let letters = env.expect_dead_letters(1).await;
    assert!(
        letters[0].reason.contains("\"client_id\" is missing"),
        "{letters:?}"
    );
    let delivery = tokio::time::timeout(PATIENCE, notifications.next())
        .await
        .expect("a notification")
        .unwrap()
        .unwrap();
    let notify: Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(notify["params"]["topic"], methods::ACTIVATE);
    assert_eq!(notify["params"]["message"], letters[0].reason.as_str());
    assert_eq!(notify["params"]["payload"], body.as_str());
    worker.stop().await;
    env.teardown().await;
}
