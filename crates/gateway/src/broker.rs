//! The gateway's connection to the broker for what the bus delivers: one confirming channel
//! shared by every request, opened on first use and again after a failure.
//!
//! Every request asks for the channel, so asking is a read of a shared pointer; only opening
//! one (the first request, or the first after a failure) waits on a lock, so that requests
//! arriving together open one connection, not one each.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use lapin::types::ShortString;
use lapin::{Connection, ExchangeKind};
use runtime::Shared;
use runtime::amqp::{self, Publisher};
use tokio::sync::Mutex;

/// A live connection and its confirming channel.
struct Link {
    connection: Connection,
    publisher: Arc<Publisher>,
}

impl Link {
    fn is_live(&self) -> bool {
        self.connection.status().connected() && self.publisher.channel().status().connected()
    }
}

/// How long a request waits for a broker connection before it is answered 503: the bus
/// retries, so a quick "not now" beats holding its connection.
const CONNECT_PATIENCE: Duration = Duration::from_secs(5);

pub struct BrokerLink {
    shared: Shared,
    name: String,
    current: RwLock<Option<Arc<Link>>>,
    opening: Mutex<()>,
}

impl BrokerLink {
    pub fn new(shared: Shared, name: &str) -> Self {
        Self {
            shared,
            name: name.to_owned(),
            current: RwLock::new(None),
            opening: Mutex::new(()),
        }
    }

    fn live(&self) -> Option<Arc<Publisher>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .filter(|link| link.is_live())
            .map(|link| link.publisher.clone())
    }

    /// A publisher on a live connection, connecting if needed.
    pub async fn publisher(&self) -> anyhow::Result<Arc<Publisher>> {
        if let Some(publisher) = self.live() {
            return Ok(publisher);
        }
        let _opening = self.opening.lock().await;
        // Another request may have opened one while this one waited.
        if let Some(publisher) = self.live() {
            return Ok(publisher);
        }
        let opened = tokio::time::timeout(CONNECT_PATIENCE, self.open()).await;
        let (connection, publisher) = match opened {
            Ok(result) => result?,
            Err(_) => anyhow::bail!(
                "no broker connection within {}s",
                CONNECT_PATIENCE.as_secs()
            ),
        };
        let publisher = Arc::new(publisher);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(Link {
            connection,
            publisher: publisher.clone(),
        }));
        Ok(publisher)
    }

    /// Forgets the connection after a failure, so the next request opens a new one.
    pub async fn reset(&self) {
        let link = self
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(link) = link {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                link.connection.close(200, "reconnecting".into()),
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
