//! The broker topology (contract): exchanges, each module's queue with its retry path and
//! dead-letter queue, and the bindings. Every name takes the configured prefix.
//!
//! ```text
//! oms.events (topic) --each inventory method--> connector.inventory --(worker)--> ack
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

/// A module's queue: its base name and the methods it is bound to on `oms.events`, one binding
/// per method the module handles (never a pattern: a pattern such as `magento.logistics.#`
/// would route methods the module does not handle to it, only to be dead-lettered as unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpec {
    /// `connector.inventory`
    pub name: &'static str,
    /// Bindings on the OMS exchange: the routing key is the method, so these are the methods
    /// the module's handler consumes ([`binding_mismatch`] checks it).
    pub oms_bindings: &'static [&'static str],
}

/// Why `spec`'s bindings are not exactly `methods` (each method bound once, nothing else
/// bound, no pattern), or `None` when they are.
pub fn binding_mismatch(spec: &QueueSpec, methods: &[&str]) -> Option<String> {
    if let Some(pattern) = spec
        .oms_bindings
        .iter()
        .find(|b| b.contains('#') || b.contains('*'))
    {
        return Some(format!(
            "binding {pattern:?} is a pattern; a queue is bound to the methods its module handles, one by one"
        ));
    }
    if let Some(unhandled) = spec.oms_bindings.iter().find(|b| !methods.contains(b)) {
        return Some(format!(
            "method {unhandled:?} is bound but not handled by the module"
        ));
    }
    if let Some(unbound) = methods.iter().find(|m| !spec.oms_bindings.contains(m)) {
        return Some(format!(
            "method {unbound:?} is handled but never bound, so it would never arrive"
        ));
    }
    None
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

    /// The exchanges, durable topics both: the OMS publishes to the first, the connector to
    /// the second.
    pub fn exchanges(&self) -> [String; 2] {
        [self.oms_exchange(), self.commerce_exchange()]
    }

    /// A module's bindings: `(queue, exchange, routing pattern)`.
    pub fn bindings(&self, spec: &QueueSpec) -> Vec<(String, String, String)> {
        spec.oms_bindings
            .iter()
            .map(|pattern| (self.queue(spec), self.oms_exchange(), (*pattern).to_owned()))
            .collect()
    }

    /// Declares the exchanges, the module's queues and its bindings. Idempotent; a queue that
    /// exists with other arguments makes the broker close the channel with an error naming it.
    ///
    /// What is declared comes from [`Topology::exchanges`], [`Topology::queues`] and
    /// [`Topology::bindings`], which [`Topology::definitions`] writes out too: the worker and
    /// `deploy/rabbitmq/definitions.json` cannot disagree.
    pub async fn declare(&self, channel: &Channel, spec: &QueueSpec) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for exchange in self.exchanges() {
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
        for (queue, exchange, pattern) in self.bindings(spec) {
            channel
                .queue_bind(
                    ShortString::from(queue),
                    ShortString::from(exchange),
                    ShortString::from(pattern),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// A queue standing for the OMS: declared with `options` and bound to `commerce.events`
    /// (declared as the workers declare it) with `pattern`, so that what the connector sends
    /// is routed and kept. For tests, the benchmark and demos; the real OMS binds its own.
    pub async fn declare_oms_listener(
        &self,
        channel: &Channel,
        queue: &str,
        options: QueueDeclareOptions,
        pattern: &str,
    ) -> lapin::Result<()> {
        let exchange = self.commerce_exchange();
        channel
            .exchange_declare(
                ShortString::from(exchange.as_str()),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(ShortString::from(queue), options, FieldTable::default())
            .await?;
        channel
            .queue_bind(
                ShortString::from(queue),
                ShortString::from(exchange),
                ShortString::from(pattern),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    /// The topology of `specs` as a RabbitMQ definitions document (the format of
    /// `rabbitmqctl import_definitions` and of the management API), for brokers on which the
    /// workers may not declare (`OMSC_DECLARE_TOPOLOGY=false`). Same order as [`declare`]:
    /// dead-letter targets before the queues that route to them.
    ///
    /// [`declare`]: Topology::declare
    pub fn definitions(&self, specs: &[QueueSpec], vhost: &str) -> serde_json::Value {
        use serde_json::json;
        let exchanges: Vec<_> = self
            .exchanges()
            .into_iter()
            .map(|name| {
                json!({
                    "name": name,
                    "vhost": vhost,
                    "type": "topic",
                    "durable": true,
                    "auto_delete": false,
                    "internal": false,
                    "arguments": {},
                })
            })
            .collect();
        let mut queues = Vec::new();
        let mut bindings = Vec::new();
        for spec in specs {
            for (name, args) in self.queues(spec) {
                queues.push(json!({
                    "name": name,
                    "vhost": vhost,
                    "durable": true,
                    "auto_delete": false,
                    "arguments": arguments_json(&args),
                }));
            }
            for (queue, exchange, pattern) in self.bindings(spec) {
                bindings.push(json!({
                    "source": exchange,
                    "vhost": vhost,
                    "destination": queue,
                    "destination_type": "queue",
                    "routing_key": pattern,
                    "arguments": {},
                }));
            }
        }
        json!({
            "exchanges": exchanges,
            "queues": queues,
            "bindings": bindings,
        })
    }
}

/// Queue arguments as JSON. The topology only uses strings and integers; anything else
/// would be a new kind of argument whose JSON form must be chosen here first.
fn arguments_json(args: &FieldTable) -> serde_json::Value {
    let map = args
        .inner()
        .iter()
        .map(|(key, value)| {
            let value = match value {
                AMQPValue::LongString(s) => serde_json::Value::from(s.to_string()),
                AMQPValue::LongLongInt(n) => serde_json::Value::from(*n),
                AMQPValue::LongInt(n) => serde_json::Value::from(*n),
                other => panic!("queue argument {key} has no JSON form yet: {other:?}"),
            };
            (key.to_string(), value)
        })
        .collect::<serde_json::Map<_, _>>();
    serde_json::Value::Object(map)
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
        oms_bindings: &["magento.inventory.aggregate_stock_management.updated"],
    };

    #[test]
    fn a_queue_is_bound_to_exactly_the_methods_its_module_handles() {
        let methods = &["magento.logistics.a", "magento.sales.b"];
        let exact = QueueSpec {
            name: "q",
            oms_bindings: &["magento.sales.b", "magento.logistics.a"],
        };
        assert_eq!(binding_mismatch(&exact, methods), None);
        let pattern = QueueSpec {
            name: "q",
            oms_bindings: &["magento.sales.b", "magento.logistics.#"],
        };
        let why = binding_mismatch(&pattern, methods).unwrap();
        assert!(
            why.contains("\"magento.logistics.#\" is a pattern"),
            "{why}"
        );
        let unhandled = QueueSpec {
            name: "q",
            oms_bindings: &[
                "magento.sales.b",
                "magento.logistics.a",
                "magento.logistics.c",
            ],
        };
        let why = binding_mismatch(&unhandled, methods).unwrap();
        assert!(
            why.contains("\"magento.logistics.c\" is bound but not handled"),
            "{why}"
        );
        let unbound = QueueSpec {
            name: "q",
            oms_bindings: &["magento.sales.b"],
        };
        let why = binding_mismatch(&unbound, methods).unwrap();
        assert!(
            why.contains("\"magento.logistics.a\" is handled but never bound"),
            "{why}"
        );
    }

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

    #[test]
    fn definitions_hold_what_declare_declares_and_every_route_leads_somewhere() {
        let topology = Topology::new("", QueueType::Quorum);
        let sales = QueueSpec {
            name: "connector.sales",
            oms_bindings: &[
                "magento.sales.order_management.updated",
                "magento.logistics.fulfillment_management.customer_shipment_done",
            ],
        };
        let doc = topology.definitions(&[SPEC, sales], "/");
        let queues = doc["queues"].as_array().unwrap();
        let declared: Vec<String> = [SPEC, sales]
            .iter()
            .flat_map(|spec| topology.queues(spec))
            .map(|(name, _)| name)
            .collect();
        let written: Vec<&str> = queues.iter().map(|q| q["name"].as_str().unwrap()).collect();
        assert_eq!(written, declared);
        for queue in queues {
            assert_eq!(queue["arguments"]["x-queue-type"], "quorum");
            if let Some(route) = queue["arguments"]["x-dead-letter-routing-key"].as_str() {
                assert!(written.contains(&route), "{route} is not defined");
            }
        }
        let retry = queues
            .iter()
            .find(|q| q["name"] == "connector.inventory.retry.10s")
            .unwrap();
        assert_eq!(retry["arguments"]["x-message-ttl"], 10_000);
        assert_eq!(
            retry["arguments"]["x-dead-letter-routing-key"],
            "connector.inventory"
        );
        let main = queues
            .iter()
            .find(|q| q["name"] == "connector.inventory")
            .unwrap();
        assert_eq!(main["arguments"]["x-delivery-limit"], DELIVERY_LIMIT);
        let bindings: Vec<(&str, &str, &str)> = doc["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["source"].as_str().unwrap(),
                    b["destination"].as_str().unwrap(),
                    b["routing_key"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            bindings,
            [
                (
                    "oms.events",
                    "connector.inventory",
                    "magento.inventory.aggregate_stock_management.updated"
                ),
                (
                    "oms.events",
                    "connector.sales",
                    "magento.sales.order_management.updated"
                ),
                (
                    "oms.events",
                    "connector.sales",
                    "magento.logistics.fulfillment_management.customer_shipment_done"
                ),
            ]
        );
        let exchanges: Vec<&str> = doc["exchanges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(exchanges, ["oms.events", "commerce.events"]);
    }
}
