//! A delivery as the consume loop holds it: parsed once on arrival, with what is needed to
//! retry or dead-letter it later.

use std::time::Instant;

use chrono::Utc;
use lapin::Acker;
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use protocol::{Envelope, Rejection};

use crate::handler::Handler;
use crate::properties::undecodable;

/// Header: how many times the message has failed in a way that may pass.
pub const ATTEMPT_HEADER: &str = "x-omsc-attempt";
/// Header: the routing key the message first arrived with (retries and dead letters travel
/// with the name of a queue as routing key).
pub const ROUTING_KEY_HEADER: &str = "x-omsc-routing-key";
/// Header: why the message was dead-lettered, or why its last attempt failed.
pub const REASON_HEADER: &str = "x-omsc-reason";
/// Header: the method, as a closed-set endpoint label.
pub const ENDPOINT_HEADER: &str = "x-omsc-endpoint";
/// Header: the module that gave up on the message.
pub const MODULE_HEADER: &str = "x-omsc-module";
/// Header: the queue the message was consumed from (where a replay sends it back).
pub const QUEUE_HEADER: &str = "x-omsc-queue";
/// Header: when the message was dead-lettered (RFC 3339).
pub const DEAD_AT_HEADER: &str = "x-omsc-dead-at";

/// Endpoint label of a body whose envelope could not be read, sent with a routing key that
/// is not one of the module's methods.
pub const UNPARSED_ENDPOINT: &str = "unparsed";
/// Endpoint label of a method the module does not consume.
pub const UNKNOWN_ENDPOINT: &str = "unknown";
/// Endpoint label of a delivery whose AMQP properties, headers or routing key were not valid
/// UTF-8 (see `properties.rs`): refused before its body is read.
pub const UNDECODABLE_ENDPOINT: &str = "undecodable";

pub struct Incoming<M> {
    pub delivery_tag: u64,
    pub acker: Acker,
    pub received_at: Instant,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
    /// The routing key it first arrived with.
    pub routing_key: String,
    /// Failures so far (0 on first delivery).
    pub attempt: u32,
    /// The method if the module consumes it, else a fixed label.
    pub endpoint: &'static str,
    pub parsed: Result<M, Rejection>,
}

impl<M> Incoming<M> {
    /// Reads a delivery: properties, envelope, method check, module parse. Never fails; a
    /// bad message carries its rejection.
    pub fn read<H: Handler<Message = M>>(
        handler: &H,
        delivery: Delivery,
        limits: &protocol::Limits,
    ) -> Self {
        let received_at = Instant::now();
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let routing_key = header_string(&headers, ROUTING_KEY_HEADER)
            .unwrap_or_else(|| delivery.routing_key.as_str().to_owned());
        let attempt = header_u32(&headers, ATTEMPT_HEADER).unwrap_or(0);
        let (endpoint, parsed) =
            match undecodable(&delivery.properties, delivery.routing_key.as_str()) {
                Some(reason) => (UNDECODABLE_ENDPOINT, Err(Rejection::new(reason))),
                None => parse_body(handler, &delivery.data, &routing_key, limits),
            };
        Self {
            delivery_tag: delivery.delivery_tag,
            acker: delivery.acker,
            received_at,
            body: delivery.data,
            properties: delivery.properties,
            routing_key,
            attempt,
            endpoint,
            parsed,
        }
    }

    /// The AMQP `message_id`, which the log lines about this message carry.
    pub fn message_id(&self) -> Option<&str> {
        self.properties
            .message_id()
            .as_ref()
            .map(ShortString::as_str)
    }

    /// Properties for republishing to a retry queue: the original ones plus the attempt
    /// count, the original routing key and the last error.
    pub fn retry_properties(&self, attempt: u32, reason: &str) -> BasicProperties {
        let mut headers = self.base_headers();
        headers.insert(
            ATTEMPT_HEADER.into(),
            AMQPValue::LongLongInt(i64::from(attempt)),
        );
        insert_text(&mut headers, REASON_HEADER, reason);
        self.properties.clone().with_headers(headers)
    }

    /// Properties for the dead-letter queue: everything a person needs to understand the
    /// failure and replay the message.
    pub fn dead_properties(&self, reason: &str, module: &str, queue: &str) -> BasicProperties {
        let mut headers = self.base_headers();
        headers.insert(
            ATTEMPT_HEADER.into(),
            AMQPValue::LongLongInt(i64::from(self.attempt)),
        );
        insert_text(&mut headers, REASON_HEADER, reason);
        insert_text(&mut headers, ENDPOINT_HEADER, self.endpoint);
        insert_text(&mut headers, MODULE_HEADER, module);
        insert_text(&mut headers, QUEUE_HEADER, queue);
        insert_text(&mut headers, DEAD_AT_HEADER, &Utc::now().to_rfc3339());
        self.properties.clone().with_headers(headers)
    }

    fn base_headers(&self) -> FieldTable {
        let mut headers = self.properties.headers().clone().unwrap_or_default();
        insert_text(&mut headers, ROUTING_KEY_HEADER, &self.routing_key);
        headers
    }
}

fn parse_body<H: Handler>(
    handler: &H,
    body: &[u8],
    routing_key: &str,
    limits: &protocol::Limits,
) -> (&'static str, Result<H::Message, Rejection>) {
    let envelope = match Envelope::parse(body, limits) {
        Ok(e) => e,
        Err(rejection) => {
            // The body cannot be read; the routing key still says which endpoint it was sent
            // to, which is what a person looking at the failures wants to know.
            let endpoint = handler
                .methods()
                .iter()
                .copied()
                .find(|m| *m == routing_key)
                .unwrap_or(UNPARSED_ENDPOINT);
            return (endpoint, Err(rejection));
        }
    };
    let Some(endpoint) = handler
        .methods()
        .iter()
        .copied()
        .find(|m| *m == envelope.method)
    else {
        return (
            UNKNOWN_ENDPOINT,
            Err(Rejection::new(format!(
                "method {:?} is not handled by the {} module",
                envelope.method,
                handler.module()
            ))),
        );
    };
    if routing_key != endpoint && !routing_key.is_empty() {
        // The body is the authority (PROTOCOL.md); the mismatch is worth a look, not a reject.
        tracing::warn!(
            routing_key,
            method = endpoint,
            "routing key and method disagree; following the method"
        );
    }
    let parsed = envelope
        .require_params()
        .and_then(|params| handler.parse(endpoint, params, limits))
        .and_then(|message| {
            // One bound for every module: the lines of an order, a shipment, a return or a
            // refund, the SKUs of a snapshot. A message over it is refused whole, before it
            // can make a transaction of unbounded size.
            let rows = handler.weight(&message);
            if rows > limits.max_message_rows {
                Err(Rejection::new(format!(
                    "the message carries {rows} lines or SKUs, more than the {} one message may carry",
                    limits.max_message_rows
                )))
            } else {
                Ok(message)
            }
        });
    (endpoint, parsed)
}

pub fn header_string(headers: &FieldTable, key: &str) -> Option<String> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

pub fn header_u32(headers: &FieldTable, key: &str) -> Option<u32> {
    let value = match headers.inner().get(key)? {
        AMQPValue::ShortShortInt(v) => i64::from(*v),
        AMQPValue::ShortShortUInt(v) => i64::from(*v),
        AMQPValue::ShortInt(v) => i64::from(*v),
        AMQPValue::ShortUInt(v) => i64::from(*v),
        AMQPValue::LongInt(v) => i64::from(*v),
        AMQPValue::LongUInt(v) => i64::from(*v),
        AMQPValue::LongLongInt(v) => *v,
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).trim().parse().ok()?,
        _ => return None,
    };
    u32::try_from(value).ok()
}

fn insert_text(headers: &mut FieldTable, key: &str, value: &str) {
    headers.insert(
        ShortString::from(key),
        AMQPValue::LongString(LongString::from(value)),
    );
}
