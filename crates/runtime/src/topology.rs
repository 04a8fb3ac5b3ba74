//! The broker topology (contract): exchanges, each module's queue with its retry path and
//! dead-letter queue, and the bindings. Every name takes the configured prefix.
//!
//! ```text
//! oms.events (topic) --magento.inventory.#--> connector.inventory --(worker)--> ack
//!                                                   |  ^
//!          worker republishes a failure that may pass |  | TTL expires, dead-lettered back
//!                                                   v  |
//!                                   connector.inventory.retry.{1s,10s,1m,10m}
//!
//! worker dead-letters what cannot be applied, with the reason in a header
//!                                   --> connector.inventory.dead
//! ```
//!
//! The main queue also dead-letters, broker-side, a message delivered more than
//! [`DELIVERY_LIMIT`] times (a message that kills the worker process each time), so the
//! broker never drops a poison message and one never blocks the queue.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::config::QueueType;

/// Delays of the retry path: attempt n waits `RETRY_DELAYS[min(n, len) - 1]`.
pub const RETRY_DELAYS: &[(&str, u32)] = &[
    ("1s", 1_000),
    ("10s", 10_000),
    ("1m", 60_000),
    ("10m", 600_000),
];

/// Broker-side redelivery limit of the main queues (quorum queues only). Redeliveries happen
/// when a worker dies or loses its connection with messages in hand; the worker itself never
/// rejects, so only a message that repeatedly takes a worker down reaches this.
pub const DELIVERY_LIMIT: i64 = 50;

/// The exchange the OMS publishes to.
pub const OMS_EXCHANGE: &str = "oms.events";
/// The exchange the connector publishes to.
pub const COMMERCE_EXCHANGE: &str = "commerce.events";

/// A module's queue: its base name and the routing patterns it is bound to on `oms.events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpec {
    /// `connector.inventory`
    pub name: &'static str,
    /// Bindings on the OMS exchange, e.g. `magento.inventory.#`.
    pub oms_bindings: &'static [&'static str],
}

/// Names with the prefix applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub prefix: String,
    pub queue_type: QueueType,
}

impl Topology {
    pub fn new(prefix: &str, queue_type: QueueType) -> Self {
        Self {
            prefix: prefix.to_owned(),
            queue_type,
        }
    }

    pub fn oms_exchange(&self) -> String {
        format!("{}{OMS_EXCHANGE}", self.prefix)
    }

    pub fn commerce_exchange(&self) -> String {
        format!("{}{COMMERCE_EXCHANGE}", self.prefix)
    }

    pub fn queue(&self, spec: &QueueSpec) -> String {
        format!("{}{}", self.prefix, spec.name)
    }

    pub fn dead_queue(&self, spec: &QueueSpec) -> String {
        format!("{}{}.dead", self.prefix, spec.name)
    }

    pub fn retry_queue(&self, spec: &QueueSpec, tier: usize) -> String {
        let (label, _) = RETRY_DELAYS[tier.min(RETRY_DELAYS.len() - 1)];
        format!("{}{}.retry.{label}", self.prefix, spec.name)
    }

    /// The retry tier for the `attempt`-th retry (1-based).
    pub fn retry_tier(attempt: u32) -> usize {
        (attempt.max(1) as usize - 1).min(RETRY_DELAYS.len() - 1)
    }

    /// Every queue of a module with its declare arguments, in declaration order
    /// (dead-letter targets before the queues that route to them).
    pub fn queues(&self, spec: &QueueSpec) -> Vec<(String, FieldTable)> {
        let main = self.queue(spec);
        let dead = self.dead_queue(spec);
        let mut queues = vec![(dead.clone(), self.base_args())];
        let mut main_args = self.base_args();
        insert_str(&mut main_args, "x-dead-letter-exchange", "");
        insert_str(&mut main_args, "x-dead-letter-routing-key", &dead);
        if self.queue_type == QueueType::Quorum {
            main_args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(DELIVERY_LIMIT),
            );
            self.at_least_once(&mut main_args);
        }
        queues.push((main.clone(), main_args));
        for (tier, (_, ttl)) in RETRY_DELAYS.iter().enumerate() {
            let mut args = self.base_args();
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(i64::from(*ttl)),
            );
            insert_str(&mut args, "x-dead-letter-exchange", "");
            insert_str(&mut args, "x-dead-letter-routing-key", &main);
            if self.queue_type == QueueType::Quorum {
                self.at_least_once(&mut args);
            }
            queues.push((self.retry_queue(spec, tier), args));
        }
        queues
    }

    fn base_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        let kind = match self.queue_type {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        };
        insert_str(&mut args, "x-queue-type", kind);
        args
    }

    /// Broker-side dead-lettering that cannot lose a message on the way (RabbitMQ ≥ 3.10).
    fn at_least_once(&self, args: &mut FieldTable) {
        insert_str(args, "x-dead-letter-strategy", "at-least-once");
        insert_str(args, "x-overflow", "reject-publish");
    }

    /// Declares the exchanges, the module's queues and its bindings. Idempotent; a queue that
    /// exists with other arguments makes the broker close the channel with an error naming it.
    pub async fn declare(&self, channel: &Channel, spec: &QueueSpec) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for exchange in [self.oms_exchange(), self.commerce_exchange()] {
            channel
                .exchange_declare(
                    ShortString::from(exchange),
                    ExchangeKind::Topic,
                    durable,
                    FieldTable::default(),
                )
                .await?;
        }
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        for (name, args) in self.queues(spec) {
            channel
                .queue_declare(ShortString::from(name), durable, args)
                .await?;
        }
        for pattern in spec.oms_bindings {
            channel
                .queue_bind(
                    ShortString::from(self.queue(spec)),
                    ShortString::from(self.oms_exchange()),
                    ShortString::from(*pattern),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }
}

fn insert_str(args: &mut FieldTable, key: &str, value: &str) {
    args.insert(
        ShortString::from(key),
        AMQPValue::LongString(LongString::from(value)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: QueueSpec = QueueSpec {
        name: "connector.inventory",
        oms_bindings: &["magento.inventory.#"],
    };

    #[test]
    fn names_take_the_prefix_and_default_to_the_contract() {
        let plain = Topology::new("", QueueType::Quorum);
        assert_eq!(plain.queue(&SPEC), "connector.inventory");
        assert_eq!(plain.dead_queue(&SPEC), "connector.inventory.dead");
        assert_eq!(plain.oms_exchange(), "oms.events");
        let prefixed = Topology::new("t1.", QueueType::Quorum);
        assert_eq!(
            prefixed.retry_queue(&SPEC, 0),
            "t1.connector.inventory.retry.1s"
        );
        assert_eq!(prefixed.commerce_exchange(), "t1.commerce.events");
    }

    #[test]
    fn retries_climb_the_tiers_and_stay_on_the_last() {
        assert_eq!(Topology::retry_tier(1), 0);
        assert_eq!(Topology::retry_tier(2), 1);
        assert_eq!(Topology::retry_tier(4), 3);
        assert_eq!(Topology::retry_tier(9), 3);
    }

    #[test]
    fn every_queue_but_the_dead_one_has_a_dead_letter_route() {
        let topology = Topology::new("", QueueType::Quorum);
        let queues = topology.queues(&SPEC);
        assert_eq!(queues.len(), 2 + RETRY_DELAYS.len());
        for (name, args) in &queues {
            let has_route = args.inner().contains_key("x-dead-letter-routing-key");
            assert_eq!(has_route, !name.ends_with(".dead"), "{name}");
        }
    }
}
