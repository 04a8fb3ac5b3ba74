//! Broker → bus: the consumer of `connector.gateway`, POSTing each message to the bus.
//!
//! Why not the runtime's batching consume loop: it applies batches of parsed messages in
//! database transactions, several batches at once, and acknowledges with one multiple-ack
//! per batch in delivery order. A call to the bus is one HTTP request per message, needs the
//! message's exact bytes (its id included), and must keep one order only: per subject. So
//! the gateway keeps *lanes*: the messages of one subject (an order, a return, the
//! registration) go through one lane, one after the other, in delivery order; lanes run
//! side by side. A cancellation therefore never overtakes its order's creation, while a
//! slow answer about one order never holds up the others. Each message is acknowledged on
//! its own once settled; the prefetch bounds what is held, and `OMSC_GATEWAY_BUS_CONCURRENCY`
//! how many lanes call the bus at once (and so the connections to it).
//!
//! Settling a message:
//! - taken by the bus: acknowledged (the registration's answer is stored first);
//! - refused (JSON-RPC error, 4xx): dead-lettered with the bus's words, then acknowledged;
//! - the bus unavailable (5xx, timeout, refused connection): the lane holds the message and
//!   tries again with backoff, for up to `OMSC_GATEWAY_HOLD_SECS`, so order is kept through
//!   an outage; past that it takes the retry queues like any module's message (and, after
//!   `OMSC_MAX_ATTEMPTS`, the dead letters). A later message of the same subject that
//!   arrives while it waits in a retry queue may then go first: the hold is long enough that
//!   this takes an outage longer than it.
//!
//! A crash between the bus's answer and the acknowledgement sends that message again with
//! the same JSON-RPC id: at least once, as everywhere in the connector.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt as _;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use protocol::service_bus;
use runtime::Shared;
use runtime::amqp::{self, Publisher};
use runtime::backoff::Backoff;
use runtime::incoming::{ATTEMPT_HEADER, Incoming, ROUTING_KEY_HEADER, header_string, header_u32};
use runtime::topology::Topology;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::bus::{Answer, BusClient};
use crate::topology::{OUTBOUND_METHODS, QUEUE};

/// The module label of what the gateway carries to the bus.
pub const MODULE: &str = "gateway";

/// A session that lasted this long resets the reconnection backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

const STORE_REMOTE_ENDPOINT: &str = "
    UPDATE connector_registration
       SET remote_endpoint = $1, remote_endpoint_at = now()";

/// Where on the bus a method goes: the registration to the bus itself, the product event to
/// every subscriber, and the commands for the OMS (the orders, the returns, the error
/// notifications: a `command` in the specification) to the OMS application.
pub fn path_of(method: &str) -> &'static str {
    match method {
        service_bus::methods::REGISTER | service_bus::methods::UNREGISTER => "/",
        protocol::catalog::methods::PRODUCT_UPDATED => "/events",
        _ => "/delegate/oms",
    }
}

/// The subject whose order a message keeps: the registration for (un)registrations, else
/// what the message id names (the connector's ids are `<order>`, `<order>:cancel`,
/// `<return>`, `catalog-<row>-<version>`; the part before the first `:`).
pub fn subject_of(method: &str, message_id: Option<&str>, body: &[u8]) -> String {
    if method == service_bus::methods::REGISTER || method == service_bus::methods::UNREGISTER {
        return "registration".into();
    }
    let id = message_id.map(str::to_owned).or_else(|| {
        serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| match &v["id"] {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
    });
    match id {
        Some(id) => id.split(':').next().unwrap_or_default().to_owned(),
        // Nothing names a subject: one lane for all such messages, in order.
        None => String::new(),
    }
}

/// How long a lane holds a message for an unavailable bus, and how many lanes call at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub hold: Duration,
    pub concurrent_calls: usize,
}

/// What the lanes share.
struct Context {
    shared: Shared,
    client: Arc<BusClient>,
    publisher: Publisher,
    hold: Duration,
    /// One permit per call in flight; a lane waits for one only while it calls, never
    /// while it backs off from an unavailable bus.
    calls: Arc<Semaphore>,
    shutdown: CancellationToken,
}

/// Runs the consumer until `shutdown`, one broker session after another.
pub async fn run(
    shared: Shared,
    client: Arc<BusClient>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    shared.health.register(MODULE);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    while !shutdown.is_cancelled() {
        let started = Instant::now();
        match session(&shared, &client, limits, &shutdown).await {
            Ok(()) => break,
            Err(e) => {
                if started.elapsed() > HEALTHY_SESSION {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                if !runtime::consume::wait_to_reconnect(&shared, MODULE, &e, delay, &shutdown).await
                {
                    break;
                }
            }
        }
    }
    shared.health.set(MODULE, false, "stopped");
}

/// A lane's report to the session.
enum LaneEvent {
    /// One message of the subject settled (acknowledged).
    Settled(String),
    /// The lane stopped with messages unsettled (shutting down); they return to the queue.
    Abandoned(String),
    /// A message could not be settled: the session ends and the broker redelivers.
    Failed(anyhow::Error),
}

async fn session(
    shared: &Shared,
    client: &Arc<BusClient>,
    limits: Limits,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let config = &shared.config;
    let name = format!("omsc-gateway-outbound-{}", std::process::id());
    let connection = amqp::connect(&config.broker.amqp_url, &name)
        .await
        .context("connecting to the broker")?;
    let result = consume(shared, client, limits, &connection, shutdown).await;
    if connection.status().connected() {
        let _ = amqp::within("closing", connection.close(200, "session ends".into())).await;
    }
    result
}

async fn consume(
    shared: &Shared,
    client: &Arc<BusClient>,
    limits: Limits,
    connection: &lapin::Connection,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let config = &shared.config;
    let topology = &shared.topology;
    if config.declare_topology {
        let setup = amqp::within("opening a channel", connection.create_channel()).await?;
        amqp::within(
            "declaring the gateway's queues",
            crate::topology::declare(&setup, topology),
        )
        .await?;
        let _ = amqp::within("closing", setup.close(200, "declared".into())).await;
    }
    let publisher = amqp::within("opening a channel", Publisher::open(connection)).await?;
    let channel = amqp::within("opening a channel", connection.create_channel()).await?;
    let queue = topology.queue(&QUEUE);
    let prefetch = config.consume.prefetch.max(1);
    amqp::within(
        "setting the prefetch",
        channel.basic_qos(prefetch, BasicQosOptions { global: false }),
    )
    .await?;
    let tag = format!("omsc-gateway-{}", std::process::id());
    let mut consumer = amqp::within(
        "subscribing",
        channel.basic_consume(
            ShortString::from(queue.as_str()),
            ShortString::from(tag.as_str()),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .with_context(|| format!("subscribing to {queue}"))?;
    shared.health.set(MODULE, true, "consuming");
    shared.metrics.ready.with_label_values(&[MODULE]).set(1);
    tracing::info!(module = MODULE, %queue, bus = %client.url("/"), "carrying messages to the bus");

    let lane_stop = CancellationToken::new();
    let _stop_lanes_on_exit = lane_stop.clone().drop_guard();
    let context = Arc::new(Context {
        shared: shared.clone(),
        client: client.clone(),
        publisher,
        hold: limits.hold,
        calls: Arc::new(Semaphore::new(limits.concurrent_calls.max(1))),
        shutdown: lane_stop.clone(),
    });
    let (events, mut settled) = mpsc::unbounded_channel::<LaneEvent>();
    // Per subject: the lane's sender and the messages it holds. A lane's channel carries
    // boxed deliveries: a channel allocates its slots in blocks of 32, and 32 deliveries
    // in place (their properties included) are some 20 KiB, for each of up to a prefetch's
    // worth of lanes.
    let mut lanes: HashMap<String, (mpsc::UnboundedSender<Box<Delivery>>, usize)> = HashMap::new();
    let mut stopping: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let result = loop {
        shared.health.beat(MODULE);
        if let Some(since) = stopping {
            if lanes.is_empty() {
                break Ok(());
            }
            if since.elapsed() > config.consume.drain_timeout() {
                tracing::warn!(
                    module = MODULE,
                    subjects = lanes.len(),
                    "drain timed out; unacknowledged messages return to the queue"
                );
                break Ok(());
            }
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled(), if stopping.is_none() => {
                stopping = Some(Instant::now());
                shared.health.set(MODULE, false, "draining");
                let cancel = channel.basic_cancel(ShortString::from(tag.as_str()), BasicCancelOptions::default());
                let _ = amqp::within("cancelling the consumer", cancel).await;
                // A lane holding a message for an unavailable bus gives up at once; its
                // message returns to the queue.
                lane_stop.cancel();
            }
            Some(event) = settled.recv() => match event {
                LaneEvent::Settled(subject) => {
                    if let Some((_, held)) = lanes.get_mut(&subject) {
                        *held -= 1;
                        if *held == 0 {
                            // Dropping the sender ends the lane's task.
                            lanes.remove(&subject);
                        }
                    }
                }
                LaneEvent::Abandoned(subject) => {
                    lanes.remove(&subject);
                }
                LaneEvent::Failed(e) => break Err(e),
            },
            next = consumer.next(), if stopping.is_none() => {
                let delivery = match next {
                    Some(delivery) => delivery.context("the consumer failed")?,
                    None => break Err(anyhow::anyhow!("the broker cancelled the consumer of {queue}")),
                };
                let method = routing_key(&delivery);
                let message_id = delivery.properties.message_id().as_ref().map(|m| m.as_str());
                let subject = subject_of(&method, message_id, &delivery.data);
                let (lane, held) = lanes.entry(subject.clone()).or_insert_with(|| {
                    let (sender, receiver) = mpsc::unbounded_channel();
                    tokio::spawn(lane_task(context.clone(), subject.clone(), receiver, events.clone()));
                    (sender, 0)
                });
                *held += 1;
                if lane.send(Box::new(delivery)).is_err() {
                    break Err(anyhow::anyhow!("the lane of {subject:?} stopped"));
                }
            }
            _ = tick.tick() => {}
        }
    };
    shared.metrics.ready.with_label_values(&[MODULE]).set(0);
    let _ = amqp::within("closing", channel.close(200, "done".into())).await;
    let _ = amqp::within(
        "closing",
        context.publisher.channel().close(200, "done".into()),
    )
    .await;
    result
}

fn routing_key(delivery: &Delivery) -> String {
    let headers = delivery.properties.headers().clone().unwrap_or_default();
    header_string(&headers, ROUTING_KEY_HEADER)
        .unwrap_or_else(|| delivery.routing_key.as_str().to_owned())
}

/// Carries one subject's messages, one after the other.
async fn lane_task(
    context: Arc<Context>,
    subject: String,
    mut deliveries: mpsc::UnboundedReceiver<Box<Delivery>>,
    events: mpsc::UnboundedSender<LaneEvent>,
) {
    while let Some(delivery) = deliveries.recv().await {
        match context.carry(*delivery).await {
            Ok(true) => {
                let _ = events.send(LaneEvent::Settled(subject.clone()));
            }
            // Stopping: the message stays unacknowledged and returns to the queue, and so
            // do the lane's later ones.
            Ok(false) => {
                let _ = events.send(LaneEvent::Abandoned(subject));
                return;
            }
            Err(e) => {
                let _ = events.send(LaneEvent::Failed(e));
                return;
            }
        }
    }
}

/// How one message ended.
enum Settle {
    Sent,
    Dead(String),
    Retry(String),
}

impl Settle {
    fn outcome(&self) -> &'static str {
        match self {
            Settle::Sent => "applied",
            Settle::Dead(_) => "dead",
            Settle::Retry(_) => "retried",
        }
    }
}

impl Context {
    /// Sends one message and settles it. `Ok(false)`: stopped before it was settled.
    async fn carry(&self, delivery: Delivery) -> anyhow::Result<bool> {
        let received_at = Instant::now();
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let method = routing_key(&delivery);
        let endpoint = OUTBOUND_METHODS
            .iter()
            .copied()
            .find(|m| *m == method)
            .unwrap_or(runtime::incoming::UNKNOWN_ENDPOINT);
        let max_bytes = self.shared.config.consume.max_message_bytes;
        let settle = if endpoint == runtime::incoming::UNKNOWN_ENDPOINT {
            Settle::Dead(format!(
                "the gateway does not carry method {method:?} to the bus"
            ))
        } else if delivery.data.len() > max_bytes {
            Settle::Dead(format!(
                "the message is {} bytes, more than the {max_bytes} of OMSC_MAX_MESSAGE_BYTES",
                delivery.data.len()
            ))
        } else {
            // The message's trace context goes to the bus with it.
            let trace = runtime::trace::http_from_amqp(&headers);
            match self
                .send(endpoint, Bytes::from(delivery.data.clone()), &trace)
                .await
            {
                Some(settle) => settle,
                None => return Ok(false),
            }
        };
        let incoming = Incoming::<()> {
            delivery_tag: delivery.delivery_tag,
            acker: delivery.acker,
            received_at,
            body: delivery.data,
            properties: delivery.properties,
            routing_key: method,
            attempt: header_u32(&headers, ATTEMPT_HEADER).unwrap_or(0),
            endpoint,
            parsed: Ok(()),
        };
        let settle = self.give_up_on_the_last_attempt(&incoming, settle);
        self.publish_failure(&incoming, &settle).await?;
        amqp::within(
            "acknowledging",
            incoming.acker.ack(BasicAckOptions::default()),
        )
        .await?;
        self.record(&incoming, &settle);
        Ok(true)
    }

    /// Calls the bus, holding the message while the bus is unavailable. `None`: stopping.
    async fn send(
        &self,
        method: &'static str,
        body: Bytes,
        trace: &[(&str, String)],
    ) -> Option<Settle> {
        let path = path_of(method);
        let held_since = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut said = false;
        loop {
            let answer = {
                let _permit = tokio::select! {
                    () = self.shutdown.cancelled() => return None,
                    permit = self.calls.acquire() => permit.ok()?,
                };
                // Boxed, so that the call's state (the HTTP client's futures, several KiB)
                // exists only while a permit is held: a lane waiting for a permit, or for
                // its next message, stays small however many lanes the prefetch opens.
                Box::pin(self.client.call_with_headers(path, body.clone(), trace)).await
            };
            let failure = match answer {
                Ok(Answer::Taken(result)) => match self.after_taken(method, &result).await {
                    Ok(()) => {
                        if said {
                            tracing::info!(module = MODULE, down_for = ?held_since.elapsed(), "the bus takes messages again");
                            self.shared.health.set(MODULE, true, "consuming");
                        }
                        return Some(Settle::Sent);
                    }
                    Err(e) => e,
                },
                Ok(Answer::Refused(reason)) => return Some(Settle::Dead(reason)),
                Err(unavailable) => unavailable.0,
            };
            if held_since.elapsed() >= self.hold {
                return Some(Settle::Retry(failure));
            }
            if !said {
                said = true;
                tracing::warn!(module = MODULE, method, reason = %failure, "the bus is unavailable; holding the message");
                self.shared
                    .health
                    .set(MODULE, true, format!("holding: {failure}"));
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// What follows the bus taking a message: the registration's answer is stored.
    async fn after_taken(&self, method: &str, result: &Value) -> Result<(), String> {
        if method != service_bus::methods::REGISTER {
            return Ok(());
        }
        let client = self
            .shared
            .pool
            .get()
            .await
            .map_err(|e| format!("storing the bus's registration answer: {e}"))?;
        client
            .execute(STORE_REMOTE_ENDPOINT, &[result])
            .await
            .map_err(|e| format!("storing the bus's registration answer: {e}"))?;
        tracing::info!(module = MODULE, "the bus took the registration");
        Ok(())
    }

    /// A retry on the last attempt is a dead letter, and is counted as one.
    fn give_up_on_the_last_attempt(&self, incoming: &Incoming<()>, settle: Settle) -> Settle {
        let attempt = incoming.attempt + 1;
        match settle {
            Settle::Retry(reason) if attempt >= self.shared.config.consume.max_attempts.max(1) => {
                Settle::Dead(format!("gave up after {attempt} attempts: {reason}"))
            }
            other => other,
        }
    }

    /// Sends a refused message (or one given up on) to the dead letters and an unavailable
    /// one to its retry queue, confirmed before the acknowledgement.
    async fn publish_failure(
        &self,
        incoming: &Incoming<()>,
        settle: &Settle,
    ) -> anyhow::Result<()> {
        let topology: &Topology = &self.shared.topology;
        let queue = topology.queue(&QUEUE);
        let (routing_key, properties) = match settle {
            Settle::Sent => return Ok(()),
            Settle::Dead(reason) => (
                topology.dead_queue(&QUEUE),
                incoming.dead_properties(reason, MODULE, &queue),
            ),
            Settle::Retry(reason) => {
                let attempt = incoming.attempt + 1;
                (
                    topology.retry_queue(&QUEUE, Topology::retry_tier(attempt)),
                    incoming.retry_properties(attempt, reason),
                )
            }
        };
        self.publisher
            .publish("", &routing_key, &incoming.body, properties)
            .await
            .context("publishing a retry or dead letter")?;
        Ok(())
    }

    fn record(&self, incoming: &Incoming<()>, settle: &Settle) {
        let took = incoming.received_at.elapsed();
        let metrics = &self.shared.metrics;
        metrics
            .messages
            .with_label_values(&[MODULE, incoming.endpoint, settle.outcome()])
            .inc();
        metrics
            .message_duration
            .with_label_values(&[MODULE, incoming.endpoint])
            .observe(took.as_secs_f64());
        self.shared
            .stats
            .batch()
            .message(MODULE, incoming.endpoint, settle.outcome(), took, None);
        // Named as the runtime's consumers name theirs: the message id, routing key, module
        // and the attempt that failed (counting from 1).
        let message_id = incoming.message_id().unwrap_or("-");
        let routing_key = incoming.routing_key.as_str();
        let attempt = incoming.attempt + 1;
        match settle {
            Settle::Dead(reason) => tracing::warn!(
                module = MODULE,
                endpoint = incoming.endpoint,
                message_id,
                routing_key,
                attempt,
                %reason,
                "dead-lettered"
            ),
            Settle::Retry(reason) => tracing::info!(
                module = MODULE,
                endpoint = incoming.endpoint,
                message_id,
                routing_key,
                attempt,
                %reason,
                "will retry"
            ),
            Settle::Sent => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_method_goes_to_its_path_on_the_bus() {
        assert_eq!(path_of(service_bus::methods::REGISTER), "/");
        assert_eq!(path_of(service_bus::methods::UNREGISTER), "/");
        assert_eq!(path_of(protocol::sales::methods::CREATE), "/delegate/oms");
        assert_eq!(path_of(protocol::sales::methods::CANCEL), "/delegate/oms");
        assert_eq!(
            path_of(protocol::sales::methods::CANCEL_LINE),
            "/delegate/oms"
        );
        assert_eq!(
            path_of(protocol::sales::methods::CREATE_COMMENT),
            "/delegate/oms"
        );
        assert_eq!(
            path_of(protocol::postsales::methods::AUTHORIZE),
            "/delegate/oms"
        );
        assert_eq!(
            path_of(protocol::catalog::methods::PRODUCT_UPDATED),
            "/events"
        );
        assert_eq!(path_of(protocol::common::methods::NOTIFY), "/delegate/oms");
    }

    #[test]
    fn an_order_and_its_cancellation_share_a_subject() {
        let create = subject_of(protocol::sales::methods::CREATE, Some("000000123"), b"");
        let cancel = subject_of(
            protocol::sales::methods::CANCEL,
            Some("000000123:cancel"),
            b"",
        );
        assert_eq!(create, cancel);
        for (method, id) in [
            (
                protocol::sales::methods::CANCEL_LINE,
                "000000123:cancel_line:7-2",
            ),
            (
                protocol::sales::methods::CREATE_COMMENT,
                "000000123:comment:41",
            ),
        ] {
            assert_eq!(subject_of(method, Some(id), b""), create, "{method}");
        }
        assert_ne!(
            create,
            subject_of(protocol::sales::methods::CREATE, Some("000000124"), b"")
        );
        assert_eq!(
            subject_of(
                protocol::sales::methods::CANCEL,
                None,
                br#"{"id":"9:cancel"}"#
            ),
            "9"
        );
        assert_eq!(
            subject_of(service_bus::methods::UNREGISTER, Some("x"), b""),
            "registration"
        );
    }
}
