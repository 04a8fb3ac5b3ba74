//! deploy/rabbitmq/definitions.json, for brokers on which the workers may not declare their
//! topology: it is what `omsc topology definitions` generates from the code, and once
//! imported into a fresh virtual host, a worker's own declaration finds every queue as it
//! would declare it, and messages travel its routes.

use std::process::Command;
use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use runtime::Topology;
use runtime::config::QueueType;

use crate::helpers::{PATIENCE, binary};

fn committed() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/rabbitmq/definitions.json"
    );
    std::fs::read_to_string(path).expect("deploy/rabbitmq/definitions.json")
}

/// The gateway's part, imported only where the OMS talks through its bus.
fn committed_gateway() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/rabbitmq/gateway-definitions.json"
    );
    std::fs::read_to_string(path).expect("deploy/rabbitmq/gateway-definitions.json")
}

fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl (the broker's CLI, installed with rabbitmq-server) must run here");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A virtual host of the test's own, deleted on drop.
struct Vhost(String);

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.0])
            .output();
    }
}

#[test]
fn the_committed_definitions_are_what_the_code_declares() {
    let output = Command::new(binary("omsc"))
        .args(["topology", "definitions"])
        .env_remove("OMSC_PREFIX")
        .env_remove("OMSC_QUEUE_TYPE")
        .output()
        .unwrap();
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).unwrap();
    assert!(
        generated == committed(),
        "deploy/rabbitmq/definitions.json differs from the code's topology: run `make definitions`"
    );
    let output = Command::new(binary("omsc"))
        .args(["topology", "definitions", "--gateway"])
        .env_remove("OMSC_PREFIX")
        .env_remove("OMSC_QUEUE_TYPE")
        .output()
        .unwrap();
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).unwrap();
    assert!(
        generated == committed_gateway(),
        "deploy/rabbitmq/gateway-definitions.json differs from the gateway's topology: run `make definitions`"
    );
    // The modules' file binds nothing to commerce.events: on a broker whose OMS consumes that
    // exchange itself, a queue bound there that no gateway consumes would keep a copy of
    // every message the connector sends.
    let modules: serde_json::Value = serde_json::from_str(&committed()).unwrap();
    assert!(
        modules["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["source"] == "oms.events"),
        "only the gateway's definitions bind to commerce.events"
    );
}

#[tokio::test]
async fn imported_definitions_match_a_workers_declaration_and_route_messages() {
    let vhost = Vhost(format!(
        "omsc_it_defs_{}_{:04x}",
        std::process::id(),
        rand::random::<u16>()
    ));
    let definitions =
        committed().replace("\"vhost\": \"/\"", &format!("\"vhost\": \"{}\"", vhost.0));
    let file = std::env::temp_dir().join(format!("{}.json", vhost.0));
    std::fs::write(&file, definitions).unwrap();
    rabbitmqctl(&["add_vhost", &vhost.0]);
    rabbitmqctl(&["set_permissions", "-p", &vhost.0, "guest", ".*", ".*", ".*"]);
    rabbitmqctl(&["import_definitions", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    let gateway_definitions =
        committed_gateway().replace("\"vhost\": \"/\"", &format!("\"vhost\": \"{}\"", vhost.0));
    std::fs::write(&file, gateway_definitions).unwrap();
    rabbitmqctl(&["import_definitions", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);

    let url = format!("amqp://guest:guest@127.0.0.1:5672/{}", vhost.0);
    let connection = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    // A queue that exists with other arguments makes the broker close the channel: the
    // worker's declaration passes only over queues exactly like its own.
    let topology = Topology::new("", QueueType::Quorum);
    topology
        .declare(&channel, &inventory::QUEUE)
        .await
        .expect("the imported queues are the ones a worker declares");
    gateway::topology::declare(&channel, &topology)
        .await
        .expect("the imported gateway queues are the ones the gateway declares");

    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let publish = |exchange: String, key: String, body: &'static [u8]| {
        let channel = channel.clone();
        async move {
            let confirm = channel
                .basic_publish(
                    ShortString::from(exchange),
                    ShortString::from(key),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(!confirm.is_nack());
        }
    };
    // Polls the queue until a message is there (a condition with a deadline, like
    // helpers::wait_until, that also hands the message over).
    let take = |queue: String, timeout: Duration| {
        let channel = channel.clone();
        async move {
            let deadline = Instant::now() + timeout;
            loop {
                if let Some(message) = channel
                    .basic_get(
                        ShortString::from(queue.as_str()),
                        BasicGetOptions { no_ack: true },
                    )
                    .await
                    .unwrap()
                {
                    return message.delivery.data;
                }
                assert!(
                    Instant::now() < deadline,
                    "nothing reached {queue} in {timeout:?}"
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    };

    // The OMS's binding.
    publish(
        topology.oms_exchange(),
        "magento.inventory.aggregate_stock_management.updated".into(),
        b"routed",
    )
    .await;
    let main = topology.queue(&inventory::QUEUE);
    assert_eq!(take(main.clone(), PATIENCE).await, b"routed");

    // The retry path: a second in the first retry queue, then back to the module's queue.
    publish(
        String::new(),
        topology.retry_queue(&inventory::QUEUE, 0),
        b"retried",
    )
    .await;
    assert_eq!(
        take(main.clone(), Duration::from_secs(30)).await,
        b"retried"
    );

    // What the connector sends reaches the gateway's queue.
    publish(
        topology.commerce_exchange(),
        protocol::sales::methods::CREATE.into(),
        b"to the bus",
    )
    .await;
    assert_eq!(
        take(topology.queue(&gateway::QUEUE), PATIENCE).await,
        b"to the bus"
    );
    let _ = connection.close(200, "done".into()).await;
}
