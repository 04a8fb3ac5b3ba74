//! The gateway's queue: `connector.gateway`, bound to `commerce.events` for every method the
//! connector sends, with the retry and dead-letter queues every module queue has.
//!
//! The runtime's [`QueueSpec`] describes bindings on `oms.events` (what the OMS sends); the
//! gateway's queue is the one queue on the other exchange, so its spec has none there and
//! its `commerce.events` bindings are declared here.

use lapin::Channel;
use lapin::options::QueueBindOptions;
use lapin::types::{FieldTable, ShortString};
use protocol::service_bus;
use runtime::{QueueSpec, Topology};

/// The gateway's queue (contract).
pub const QUEUE: QueueSpec = QueueSpec {
    name: "connector.gateway",
    oms_bindings: &[],
};

/// Every method the connector sends to the OMS: what the gateway carries to the bus.
pub const OUTBOUND_METHODS: &[&str] = &[
    service_bus::methods::REGISTER,
    service_bus::methods::UNREGISTER,
    protocol::sales::methods::CREATE,
    protocol::sales::methods::CANCEL,
    protocol::sales::methods::CANCEL_LINE,
    protocol::sales::methods::CREATE_COMMENT,
    protocol::postsales::methods::AUTHORIZE,
    protocol::catalog::methods::PRODUCT_UPDATED,
    protocol::common::methods::NOTIFY,
];

/// `(queue, exchange, routing key)` of the gateway's bindings on `commerce.events`.
pub fn bindings(topology: &Topology) -> Vec<(String, String, String)> {
    OUTBOUND_METHODS
        .iter()
        .map(|method| {
            (
                topology.queue(&QUEUE),
                topology.commerce_exchange(),
                (*method).to_owned(),
            )
        })
        .collect()
}

/// Declares the exchanges, the gateway's queues and their bindings (idempotent).
pub async fn declare(channel: &Channel, topology: &Topology) -> lapin::Result<()> {
    topology.declare(channel, &QUEUE).await?;
    for (queue, exchange, key) in bindings(topology) {
        channel
            .queue_bind(
                ShortString::from(queue),
                ShortString::from(exchange),
                ShortString::from(key),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// The gateway's part of a RabbitMQ definitions document: its queues and its bindings, in
/// the form of [`Topology::definitions`].
pub fn definitions(topology: &Topology, vhost: &str) -> serde_json::Value {
    let mut doc = topology.definitions(&[QUEUE], vhost);
    let bindings = doc["bindings"].as_array_mut().expect("bindings are a list");
    for (queue, exchange, key) in self::bindings(topology) {
        bindings.push(serde_json::json!({
            "source": exchange,
            "vhost": vhost,
            "destination": queue,
            "destination_type": "queue",
            "routing_key": key,
            "arguments": {},
        }));
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime::config::QueueType;

    #[test]
    fn the_gateway_takes_every_method_the_connector_sends_and_nothing_from_the_oms() {
        let topology = Topology::new("t.", QueueType::Quorum);
        let doc = definitions(&topology, "/");
        let bindings = doc["bindings"].as_array().unwrap();
        assert_eq!(bindings.len(), OUTBOUND_METHODS.len());
        for binding in bindings {
            assert_eq!(binding["source"], "t.commerce.events");
            assert_eq!(binding["destination"], "t.connector.gateway");
        }
        assert!(
            doc["queues"]
                .as_array()
                .unwrap()
                .iter()
                .any(|q| q["name"] == "t.connector.gateway.dead")
        );
    }
}
