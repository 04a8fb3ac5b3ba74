//! The gateway's connection to the broker for what the bus delivers: one confirming channel
//! shared by every request, opened on first use and again after a failure.

use std::time::Duration;

use lapin::types::ShortString;
use lapin::{Connection, ExchangeKind};
use runtime::Shared;
use runtime::amqp::{self, Publisher};
use tokio::sync::Mutex;

/// How long a request waits for a broker connection before it is answered 503: the bus
/// retries, so a quick "not now" beats holding its connection.
const CONNECT_PATIENCE: Duration = Duration::from_secs(5);

pub struct BrokerLink {
    shared: Shared,
    name: String,
    state: Mutex<Option<(Connection, Publisher)>>,
}

impl BrokerLink {
    pub fn new(shared: Shared, name: &str) -> Self {
        Self {
            shared,
            name: name.to_owned(),
            state: Mutex::new(None),
        }
    }

    /// A publisher on a live connection, connecting if needed.
    pub async fn publisher(&self) -> anyhow::Result<Publisher> {
        let mut state = self.state.lock().await;
        if let Some((connection, publisher)) = state.as_ref()
            && connection.status().connected()
            && publisher.channel().status().connected()
        {
            return Ok(publisher.clone());
        }
        *state = None;
        let opened = tokio::time::timeout(CONNECT_PATIENCE, self.open()).await;
        let (connection, publisher) = match opened {
            Ok(result) => result?,
            Err(_) => anyhow::bail!(
                "no broker connection within {}s",
                CONNECT_PATIENCE.as_secs()
            ),
        };
        *state = Some((connection, publisher.clone()));
        Ok(publisher)
    }

    /// Forgets the connection after a failure, so the next request opens a new one.
    pub async fn reset(&self) {
        if let Some((connection, _)) = self.state.lock().await.take() {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                connection.close(200, "reconnecting".into()),
            )
            .await;
        }
    }

    async fn open(&self) -> anyhow::Result<(Connection, Publisher)> {
        let config = &self.shared.config;
        let connection = amqp::connect(&config.broker.amqp_url, &self.name).await?;
        let publisher = amqp::within("opening a channel", Publisher::open(&connection)).await?;
        if config.declare_topology {
            // The exchange the modules' queues are bound to, and the gateway's own queues
            // (the dead-letter queue takes the requests no module consumes), but not their
            // bindings to commerce.events: those are the outbound consumer's to declare. A
            // gateway without a bus to send to (no OMSC_OMS_URL) would otherwise bind a queue
            // that nothing consumes, and it would keep a copy of everything the connector
            // sends.
            let topology = &self.shared.topology;
            let declare = publisher.channel().exchange_declare(
                ShortString::from(topology.oms_exchange()),
                ExchangeKind::Topic,
                lapin::options::ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                Default::default(),
            );
            amqp::within("declaring oms.events", declare).await?;
            amqp::within(
                "declaring the gateway's queues",
                topology.declare(publisher.channel(), &crate::QUEUE),
            )
            .await?;
        }
        Ok((connection, publisher))
    }
}
