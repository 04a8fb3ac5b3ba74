//! A trace crosses the broker: a sales worker (a real process) exports its spans over
//! OTLP/HTTP (JSON) to a collector in the test; the order it exports carries the outbox
//! round's context in `traceparent`, and a message the OMS sends with a `traceparent` is
//! applied in a batch span of the OMS's trace. By default spans leave as protobuf, and the
//! last ones at shutdown. Without an exporter, the header the OMS sent
//! stays on what the connector keeps of the message and on the error notification about it,
//! and the gateway carries it between
//! the bus's HTTP and the broker both ways.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use futures::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use protocol::sales::methods;
use serde_json::Value;
use simulate::orders::{self, OrdersSpec, SimOrder};

use crate::gateway::{post, start_gateway_with};
use crate::gateway_bus::TestBus;
use crate::gateway_outbound::message;
use crate::helpers::{PATIENCE, TestEnv, amqp, wait_until};
use crate::sales_support::start_sales;

/// The OMS's trace and the span that sent its message, as its `traceparent` names them.
const OMS_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const OMS_SPAN: &str = "00f067aa0ba902b7";

/// What the collector received: every request (content type, body), and every span of the
/// JSON ones with the name of its service.
#[derive(Default)]
struct Exports {
    requests: Vec<(String, Bytes)>,
    spans: Vec<(String, Value)>,
}

type Received = Arc<Mutex<Exports>>;

/// An OTLP/HTTP receiver.
struct Collector {
    url: String,
    received: Received,
}

impl Collector {
    async fn start() -> Self {
        let received = Received::default();
        let app = Router::new()
            .route("/v1/traces", axum::routing::post(receive))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}"),
            received,
        }
    }

    /// The first span received that `matches`, with its service's name.
    fn find(&self, matches: impl Fn(&Value) -> bool) -> Option<(String, Value)> {
        self.received
            .lock()
            .unwrap()
            .spans
            .iter()
            .find(|(_, span)| matches(span))
            .cloned()
    }

    fn requests(&self) -> Vec<(String, Bytes)> {
        self.received.lock().unwrap().requests.clone()
    }
}

/// Takes one export request (`ExportTraceServiceRequest`); reads the spans of one in OTLP's
/// JSON mapping.
async fn receive(
    State(received): State<Received>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut exports = received.lock().unwrap();
    exports.requests.push((content_type.clone(), body.clone()));
    if content_type != "application/json" {
        // An empty ExportTraceServiceResponse, in protobuf.
        return ([(header::CONTENT_TYPE, content_type)], Bytes::new()).into_response();
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let received = &mut exports.spans;
    for resource in request["resourceSpans"].as_array().into_iter().flatten() {
        let service = resource["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .and_then(|a| a["value"]["stringValue"].as_str())
            .unwrap_or_default()
            .to_owned();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                received.push((service.clone(), span.clone()));
            }
        }
    }
    ([(header::CONTENT_TYPE, "application/json")], "{}").into_response()
}

/// A span's string attribute.
fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?["value"]["stringValue"]
        .as_str()
}

/// The OMS's side of the broker: its inbox on `commerce.events` and a confirming channel on
/// `oms.events` that publishes with headers.
struct Oms {
    _connection: Connection,
    channel: Channel,
    inbox: lapin::Consumer,
    exchange: String,
}

/// One message the connector sent, with its headers.
struct Sent {
    routing_key: String,
    headers: FieldTable,
}

impl Sent {
    fn traceparent(&self) -> Option<String> {
        match self.headers.inner().get("traceparent")? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        }
    }
}

impl Oms {
    async fn connect(env: &TestEnv) -> Self {
        let (connection, channel, inbox) = crate::helpers::oms_listener(env, "#", None).await;
        let topology = runtime::Topology::new(&env.prefix, runtime::config::QueueType::Quorum);
        topology.declare(&channel, &sales::QUEUE).await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Self {
            _connection: connection,
            channel,
            inbox,
            exchange: topology.oms_exchange(),
        }
    }

    async fn next(&mut self) -> Sent {
        let delivery = tokio::time::timeout(PATIENCE, self.inbox.next())
            .await
            .expect("a message from the connector")
            .unwrap()
            .unwrap();
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        Sent {
            routing_key: delivery.routing_key.as_str().to_owned(),
            headers: delivery.properties.headers().clone().unwrap_or_default(),
        }
    }

    /// Publishes a message as the OMS does, with `traceparent` in its headers.
    async fn send(&self, method: &str, message_id: &str, body: &[u8], traceparent: &str) {
        publish_traced(
            &self.channel,
            &self.exchange,
            method,
            message_id,
            body,
            traceparent,
        )
        .await;
    }
}

/// The trace id of a `traceparent`, as the 16 bytes protobuf carries.
fn trace_id_bytes(traceparent: &str) -> Vec<u8> {
    let hex = traceparent.split('-').nth(1).expect("a trace id");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn one_order() -> SimOrder {
    orders::generate(&OrdersSpec {
        orders: 1,
        id_prefix: "TRACE-".into(),
        ..OrdersSpec::default()
    })
    .remove(0)
}

#[tokio::test]
async fn a_trace_crosses_the_broker_from_the_storefront_and_from_the_oms() {
    let env = TestEnv::new().await;
    let collector = Collector::start().await;
    let mut oms = Oms::connect(&env).await;
    let order = one_order();
    orders::place(&env.db, &order.rows).await.unwrap();
    let mut worker = env.spawn_binary(
        "omsc-sales",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            // Export every 100 ms instead of every 5 s: the test waits for the spans.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );

    // Storefront → OMS: the export carries the context of the outbox round that sent it.
    let create = oms.next().await;
    assert_eq!(create.routing_key, methods::CREATE);
    let traceparent = create
        .traceparent()
        .expect("the exported order carries a traceparent header");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00", "W3C version: {traceparent}");
    assert_eq!(parts[3], "01", "sampled: {traceparent}");
    let (trace_id, span_id) = (parts[1].to_owned(), parts[2].to_owned());
    wait_until(
        "the outbox round that sent the order is exported",
        PATIENCE,
        || async {
            collector
                .find(|s| s["name"] == "outbox round" && s["traceId"] == trace_id.as_str())
                .is_some()
        },
    )
    .await;
    let (service, round) = collector
        .find(|s| s["name"] == "outbox round" && s["traceId"] == trace_id.as_str())
        .unwrap();
    assert_eq!(
        service, "omsc-sales",
        "the service is named after the binary"
    );
    assert_eq!(
        round["spanId"],
        span_id.as_str(),
        "the message's parent is the round"
    );
    assert_eq!(attribute(&round, "module"), Some("sales"));

    // OMS → Commerce: a message with a traceparent is applied in a span of the OMS's trace.
    let created = order.created(chrono::Utc::now());
    oms.send(
        created.method,
        &created.id,
        &created.body,
        &format!("00-{OMS_TRACE}-{OMS_SPAN}-01"),
    )
    .await;
    wait_until(
        "the batch of the OMS's message is exported in the OMS's trace",
        PATIENCE,
        || async {
            collector
                .find(|s| s["name"] == "batch" && s["traceId"] == OMS_TRACE)
                .is_some()
        },
    )
    .await;
    let (_, batch) = collector
        .find(|s| s["name"] == "batch" && s["traceId"] == OMS_TRACE)
        .unwrap();
    assert_eq!(
        batch["parentSpanId"], OMS_SPAN,
        "a one-message batch is the child of the message's span"
    );
    assert_eq!(attribute(&batch, "module"), Some("sales"));
    assert_eq!(
        attribute(&batch, "queue"),
        Some(env.queue("connector.sales").as_str())
    );

    worker.kill().await.unwrap();
    env.teardown().await;
}

#[tokio::test]
async fn spans_leave_as_protobuf_by_default_and_the_last_ones_at_shutdown() {
    let env = TestEnv::new().await;
    let collector = Collector::start().await;
    let mut oms = Oms::connect(&env).await;
    let order = one_order();
    orders::place(&env.db, &order.rows).await.unwrap();
    let mut worker = env.spawn_binary(
        "omsc-sales",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str()),
            // Nothing leaves on the schedule during the test: only the flush at shutdown.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    );
    let create = oms.next().await;
    let traceparent = create
        .traceparent()
        .expect("the exported order carries a traceparent header");
    assert!(
        collector.requests().is_empty(),
        "nothing is exported before the schedule or the shutdown"
    );

    let status = crate::helpers::sigterm(&mut worker, PATIENCE).await;
    assert!(status.success(), "{status}");

    let trace_id = trace_id_bytes(&traceparent);
    let requests = collector.requests();
    let round = requests.iter().find(|(_, body)| {
        let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        has(b"outbox round") && has(&trace_id)
    });
    let (content_type, _) = round.expect("the outbox round was exported at shutdown");
    assert_eq!(content_type, "application/x-protobuf");
    env.teardown().await;
}

#[tokio::test]
async fn a_collector_that_is_down_holds_nothing_up() {
    let env = TestEnv::new().await;
    let mut oms = Oms::connect(&env).await;
    let orders = orders::generate(&OrdersSpec {
        orders: 2,
        id_prefix: "DOWN-".into(),
        ..OrdersSpec::default()
    });
    orders::place(&env.db, &orders[0].rows).await.unwrap();
    // Nothing listens there: every export fails.
    let nowhere = format!("http://{}", test_support::http::free_address().unwrap());
    let mut worker = env.spawn_binary(
        "omsc-sales",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", nowhere.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    let first = oms.next().await;
    assert_eq!(first.routing_key, methods::CREATE);
    assert!(first.traceparent().is_some());
    // Exports have failed meanwhile; the next order goes out all the same, and so does the
    // shutdown.
    orders::place(&env.db, &orders[1].rows).await.unwrap();
    let second = oms.next().await;
    assert_eq!(second.routing_key, methods::CREATE);
    assert_ne!(first.traceparent(), second.traceparent());
    let status = crate::helpers::sigterm(&mut worker, PATIENCE).await;
    assert!(status.success(), "{status}");
    env.teardown().await;
}

#[tokio::test]
async fn without_an_exporter_nothing_is_added_and_the_omss_header_is_kept() {
    let env = TestEnv::new().await;
    let mut oms = Oms::connect(&env).await;
    let order = one_order();
    orders::place(&env.db, &order.rows).await.unwrap();
    // In this process no exporter is set up: the worker runs as it does without one.
    let worker = start_sales(&env).await;

    let create = oms.next().await;
    assert_eq!(create.routing_key, methods::CREATE);
    assert_eq!(
        create.traceparent(),
        None,
        "no trace context is made up without an exporter"
    );

    // A message the connector cannot take keeps the OMS's traceparent on its dead letter,
    // and the notification that tells the OMS about it carries it too.
    let traceparent = format!("00-{OMS_TRACE}-{OMS_SPAN}-01");
    oms.send(methods::CREATED, "not-json", b"{", &traceparent)
        .await;
    let letters = env.expect_dead_letters(1).await;
    let row = env
        .db
        .query_one(
            "SELECT headers->>'traceparent' FROM dead_letters WHERE id = $1",
            &[&letters[0].id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), Some(traceparent.clone()));
    // The OMS is told about it in its own trace.
    let notification = oms.next().await;
    assert_eq!(notification.routing_key, protocol::common::methods::NOTIFY);
    assert_eq!(notification.traceparent(), Some(traceparent));

    worker.stop().await;
    env.teardown().await;
}

/// Publishes `body` to `exchange` with `traceparent` in its headers, confirmed.
async fn publish_traced(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    message_id: &str,
    body: &[u8],
    traceparent: &str,
) {
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(LongString::from(traceparent)),
    );
    let confirm = channel
        .basic_publish(
            ShortString::from(exchange),
            ShortString::from(routing_key),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default()
                .with_content_type("application/json".into())
                .with_message_id(ShortString::from(message_id))
                .with_delivery_mode(2)
                .with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack(), "the broker took the message");
}

#[tokio::test]
async fn the_gateway_carries_traceparent_between_the_bus_and_the_broker_both_ways() {
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    let (_listener, mut on_oms) =
        crate::gateway::listen_on_oms(&env, "magento.test.trace_probe.updated").await;
    let url = format!("--oms-url={}", bus.base);
    let (worker, addr) = start_gateway_with(&env, &[], &[url.as_str()], |_| {}).await;

    // Bus → broker: the request's traceparent is on the message published to oms.events.
    let inbound = format!("00-{OMS_TRACE}-{OMS_SPAN}-01");
    let body =
        br#"{"jsonrpc":"2.0","id":"t-1","method":"magento.test.trace_probe.updated","params":{}}"#;
    let reply = post(addr, body, &[("traceparent", inbound.as_str())]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let delivery = tokio::time::timeout(PATIENCE, on_oms.next())
        .await
        .expect("the request on oms.events")
        .unwrap()
        .unwrap();
    let headers = delivery.properties.headers().clone().unwrap_or_default();
    assert_eq!(
        Sent {
            routing_key: String::new(),
            headers
        }
        .traceparent(),
        Some(inbound)
    );

    // Broker → bus: a message's traceparent is on the call to the bus (the gateway, ready,
    // has bound its queue to commerce.events).
    let outbound = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let (method, body, id) = message(methods::CREATE, "T-100");
    let connection = amqp().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let exchange = format!("{}commerce.events", env.prefix);
    publish_traced(&channel, &exchange, &method, &id, &body, outbound).await;
    wait_until("the bus takes the order", PATIENCE, || async {
        bus.calls()
            .iter()
            .any(|c| c.id() == "T-100" && c.status == 200)
    })
    .await;
    let call = bus.calls().into_iter().find(|c| c.id() == "T-100").unwrap();
    assert_eq!(call.traceparent.as_deref(), Some(outbound));

    worker.stop().await;
    bus.stop();
    env.teardown().await;
}
