//! The service-bus gateway, inbound: what the bus POSTs reaches the broker (and the modules)
//! byte for byte, only confirmed messages are acknowledged, and every bad request gets a
//! clear JSON-RPC error. Against the real broker and database.

use clap::Parser;
use futures::StreamExt as _;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{PATIENCE, TestEnv, Worker, amqp, wait_until};
use crate::proxy::{Mode, Proxy};

#[derive(Parser)]
struct GatewayFlags {
    #[command(flatten)]
    gateway: gateway::GatewayConfig,
}

pub fn gateway_config(extra: &[&str]) -> gateway::GatewayConfig {
    let mut args = vec!["omsc-gateway", "--gateway-addr=127.0.0.1:0"];
    args.extend_from_slice(extra);
    GatewayFlags::try_parse_from(args)
        .unwrap_or_else(|e| panic!("bad gateway flags: {e}"))
        .gateway
}

/// A runtime with the gateway (and the inventory module when `inventory`), and the address
/// the bus delivers to.
pub async fn start_gateway(
    env: &TestEnv,
    runtime_flags: &[&str],
    gateway_flags: &[&str],
    inventory: bool,
) -> (Worker, SocketAddr) {
    let (_, inventory_config) = env.flags(runtime_flags);
    start_gateway_with(env, runtime_flags, gateway_flags, |app| {
        if inventory {
            inventory::install(app, &inventory_config).unwrap();
        }
    })
    .await
}

/// A runtime with the gateway and whatever `modules` adds, and the address the bus
/// delivers to.
pub async fn start_gateway_with(
    env: &TestEnv,
    runtime_flags: &[&str],
    gateway_flags: &[&str],
    modules: impl FnOnce(&mut runtime::Runtime),
) -> (Worker, SocketAddr) {
    let config = gateway_config(gateway_flags);
    let mut addr = None;
    let worker = env
        .start_runtime(runtime_flags, |app| {
            modules(app);
            addr = Some(gateway::install(app, &config).unwrap().inbound_addr);
        })
        .await;
    (worker, addr.expect("installed"))
}

/// An HTTP response as a test reads it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Sends raw bytes and reads the whole response (the request says `Connection: close`).
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_reply(&mut stream).await
}

async fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// POSTs `body` with `headers`.
pub async fn post(addr: SocketAddr, body: &[u8], headers: &[(&str, &str)]) -> Reply {
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let mut request = format!(
        "POST /callback HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    exchange(addr, &request).await
}

/// A queue of the test's own on `oms.events`, bound to `method`: it sees what the gateway
/// publishes.
pub(crate) async fn listen_on_oms(
    env: &TestEnv,
    method: &str,
) -> (lapin::Connection, lapin::Consumer) {
    let connection = amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let topology = runtime::Topology::new(&env.prefix, runtime::config::QueueType::Quorum);
    channel
        .exchange_declare(
            topology.oms_exchange().as_str().into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.name().clone(),
            topology.oms_exchange().as_str().into(),
            method.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            "test".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    (connection, consumer)
}

async fn next_delivery(consumer: &mut lapin::Consumer) -> lapin::message::Delivery {
    tokio::time::timeout(PATIENCE, consumer.next())
        .await
        .expect("a delivery in time")
        .expect("the consumer is open")
        .unwrap()
}

const METHOD: &str = "magento.test.gateway_probe.updated";

fn request(id: &str, method: &str) -> String {
    // Spacing and key order as a sender might choose: the broker must carry them unchanged.
    format!(
        r#"{{ "jsonrpc": "2.0","method":"{method}", "params": {{"n": 1.50, "s": "é"}}, "id": "{id}", "client":"FAKE" }}"#
    )
}

#[tokio::test]
async fn a_probe_is_answered_with_the_service_bus_header() {
    let env = TestEnv::new().await;
    let (worker, addr) = start_gateway(&env, &[], &[], false).await;
    let reply = exchange(
        addr,
        format!("OPTIONS /any/path HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-magento-service-bus"), Some("*"));
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_request_is_published_byte_for_byte_and_answered_after_the_confirm() {
    let env = TestEnv::new().await;
    let (_listener, mut consumer) = listen_on_oms(&env, METHOD).await;
    let (worker, addr) = start_gateway(&env, &[], &[], false).await;
    let body = request("req-1", METHOD);
    let reply = post(addr, body.as_bytes(), &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.json(),
        json!({"jsonrpc": "2.0", "id": "req-1", "result": null})
    );
    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(delivery.data, body.as_bytes());
    assert_eq!(delivery.routing_key.as_str(), METHOD);
    assert_eq!(
        delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str()),
        Some("req-1")
    );
    assert_eq!(*delivery.properties.delivery_mode(), Some(2), "persistent");

    // No id: the message id is a digest of the body, the same each time it is sent.
    let anonymous = format!(r#"{{"jsonrpc":"2.0","method":"{METHOD}","params":{{}}}}"#);
    for _ in 0..2 {
        let reply = post(addr, anonymous.as_bytes(), &[]).await;
        assert_eq!(reply.json()["result"], Value::Null, "{reply:?}");
    }
    let first = next_delivery(&mut consumer).await;
    let second = next_delivery(&mut consumer).await;
    let id = first.properties.message_id().clone().unwrap();
    assert!(id.as_str().starts_with("sha256:"), "{id}");
    assert_eq!(second.properties.message_id().clone().unwrap(), id);
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_stock_delta_posted_to_the_gateway_reaches_stock_items() {
    let env = TestEnv::new().await;
    let (worker, addr) = start_gateway(&env, &[], &[], true).await;
    // The OMS mock's own template, filled in as the mock fills it.
    let params = include_str!(
        "../../crates/protocol/fixtures/mock-templates/magento.inventory.aggregate_stock_management.updated.json"
    )
    .replace("{{aggregate_name}}", "EU")
    .replace("{{created_on}}", "2026-03-01 12:00:00")
    .replace("{{mode}}", "DELTA")
    .replace("{{qty}}", "17")
    .replace("{{sku}}", "24-MB01");
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":"delta-1","method":"{}","params":{params}}}"#,
        protocol::inventory::methods::AGGREGATE_STOCK_UPDATED
    );
    let reply = post(addr, body.as_bytes(), &[]).await;
    assert_eq!(reply.json()["result"], Value::Null, "{reply:?}");
    wait_until("the delta in stock_items", PATIENCE, || async {
        env.sku("EU", "24-MB01").await == Some((17, false))
    })
    .await;
    env.assert_no_dead_letters().await;
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_method_no_module_consumes_is_answered_32601_and_kept_as_a_dead_letter() {
    let env = TestEnv::new().await;
    let (worker, addr) = start_gateway(&env, &[], &[], false).await;
    let body = request("lost-1", "magento.nothing.consumes.this");
    let reply = post(addr, body.as_bytes(), &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let answer = reply.json();
    assert_eq!(answer["id"], "lost-1");
    assert_eq!(answer["error"]["code"], -32601, "{answer}");
    let letters = env.expect_dead_letters(1).await;
    assert_eq!(letters[0].body, body.as_bytes());
    assert_eq!(letters[0].message_id.as_deref(), Some("lost-1"));
    assert!(
        letters[0].reason.contains("magento.nothing.consumes.this"),
        "{}",
        letters[0].reason
    );
    assert_eq!(
        worker
            .metric(
                "omsc_messages_total",
                &[
                    ("module", "gateway.inbound"),
                    ("endpoint", "magento.nothing.consumes.this"),
                    ("outcome", "dead")
                ]
            )
            .await,
        1.0
    );
    // This gateway has no bus to send to (no OMSC_OMS_URL): its queue is declared for the
    // dead letters, but not bound to commerce.events, where nothing would drain it.
    let connection = amqp().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = channel
        .basic_publish(
            env.queue("commerce.events").into(),
            protocol::sales::methods::CREATE.into(),
            lapin::options::BasicPublishOptions::default(),
            b"{}",
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(!confirm.is_nack());
    assert_eq!(env.depth_if_declared("connector.gateway").await, Some(0));
    let _ = connection.close(200, "done".into()).await;
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_batch_is_answered_element_by_element() {
    let env = TestEnv::new().await;
    let (_listener, mut consumer) = listen_on_oms(&env, METHOD).await;
    let (worker, addr) = start_gateway(&env, &[], &[], false).await;
    let body = format!(
        r#"[{}, {{"jsonrpc":"2.0","id":"b-2","params":{{}}}}, {}, 7]"#,
        request("b-1", METHOD),
        request("b-3", "magento.nothing.consumes.this")
    );
    let reply = post(addr, body.as_bytes(), &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let answers = reply.json();
    let answers = answers.as_array().expect("an array of answers");
    assert_eq!(answers.len(), 4);
    assert_eq!(
        answers[0],
        json!({"jsonrpc":"2.0","id":"b-1","result":null})
    );
    assert_eq!(answers[1]["id"], "b-2");
    assert_eq!(answers[1]["error"]["code"], -32600);
    assert_eq!(answers[2]["error"]["code"], -32601);
    assert_eq!(answers[3]["error"]["code"], -32600);
    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(delivery.data, request("b-1", METHOD).as_bytes());
    env.expect_dead_letters(1).await;
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn signatures_are_checked_when_a_secret_is_set() {
    let env = TestEnv::new().await;
    let (_listener, mut consumer) = listen_on_oms(&env, METHOD).await;
    let (worker, addr) =
        start_gateway(&env, &["--registration-secret=bus-secret"], &[], false).await;
    let body = request("signed-1", METHOD);
    let right = gateway::signature::sign(b"bus-secret", body.as_bytes());
    let wrong_secret = gateway::signature::sign(b"another-secret", body.as_bytes());
    let other_body = gateway::signature::sign(b"bus-secret", b"{}");
    for (header, what) in [
        (None, "missing"),
        (Some(wrong_secret.as_str()), "signed with another secret"),
        (Some(other_body.as_str()), "signature of another body"),
        (Some("sha1=zz"), "malformed"),
    ] {
        let headers: Vec<(&str, &str)> = header.map(|h| ("X-Signature", h)).into_iter().collect();
        let reply = post(addr, body.as_bytes(), &headers).await;
        assert_eq!(reply.status, 401, "{what}: {reply:?}");
        assert!(reply.json()["error"]["message"].is_string(), "{what}");
    }
    let reply = post(addr, body.as_bytes(), &[("X-Signature", &right)]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // Only the signed request reached the broker.
    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(
        delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str()),
        Some("signed-1")
    );
    assert_eq!(
        worker
            .metric(
                "omsc_gateway_http_responses_total",
                &[("direction", "inbound"), ("class", "4xx")]
            )
            .await,
        4.0
    );
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn bad_requests_get_a_json_rpc_error_each() {
    let env = TestEnv::new().await;
    let (worker, addr) = start_gateway(&env, &["--max-message-bytes=2048"], &[], false).await;
    let cases: &[(&str, &[u8], u16, i64)] = &[
        ("not JSON", b"{\"jsonrpc\": \"2.0\", ", 400, -32700),
        ("not an object", b"\"hello\"", 400, -32600),
        (
            "no method",
            br#"{"jsonrpc":"2.0","id":"x","params":{}}"#,
            400,
            -32600,
        ),
        (
            "params not an object",
            br#"{"jsonrpc":"2.0","id":"y","method":"m.a.b","params":[1,2]}"#,
            400,
            -32602,
        ),
        ("empty batch", b"[]", 400, -32600),
    ];
    for (what, body, status, code) in cases {
        let reply = post(addr, body, &[]).await;
        assert_eq!(reply.status, *status, "{what}: {reply:?}");
        let answer = reply.json();
        assert_eq!(answer["error"]["code"], *code, "{what}: {answer}");
        assert_eq!(answer["jsonrpc"], "2.0", "{what}");
    }
    // Over the size bound, declared: refused before a byte of the body is read.
    let large = format!(
        r#"{{"jsonrpc":"2.0","id":"big","method":"m.a.b","params":{{"pad":"{}"}}}}"#,
        "x".repeat(4096)
    );
    let reply = post(addr, large.as_bytes(), &[]).await;
    assert_eq!(reply.status, 413, "{reply:?}");
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2048")
    );
    // Over the size bound, chunked (no length announced): refused once the bound is passed.
    let mut chunked = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..4 {
        chunked.extend_from_slice(format!("400\r\n{}\r\n", "y".repeat(1024)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let reply = exchange(addr, &chunked).await;
    assert_eq!(reply.status, 413, "{reply:?}");
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_slow_client_is_cut_off_and_a_burst_beyond_the_bound_is_turned_away() {
    let env = TestEnv::new().await;
    let (worker, addr) = start_gateway(
        &env,
        &[],
        &["--read-timeout-secs=2", "--max-concurrent=1"],
        false,
    )
    .await;
    // A client that announces a body and sends half of it, then nothing.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(
        format!("POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"jsonrpc\":")
            .as_bytes(),
    )
    .await
    .unwrap();
    // While it holds the one permit, another request is turned away at once.
    wait_until("the slow request to hold the permit", PATIENCE, || async {
        let reply = post(addr, request("burst", METHOD).as_bytes(), &[]).await;
        reply.status == 503 && reply.header("retry-after").is_some()
    })
    .await;
    let reply = read_reply(&mut slow).await;
    assert_eq!(reply.status, 408, "{reply:?}");
    assert_eq!(reply.json()["error"]["code"], -32000);
    // The permit is back: a normal request goes through (to nothing bound: -32601).
    let reply = post(addr, request("after", METHOD).as_bytes(), &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    worker.stop().await;
    env.teardown().await;
}

/// A gateway whose broker connection goes through a proxy: a request accepted, then the
/// proxy set to `fault` and a request `id` answered 503 with `Retry-After`, then the proxy
/// open again and `id` sent until it is taken, and its delivery read. What a test may go on
/// with.
struct BrokerFault {
    env: TestEnv,
    worker: Worker,
    addr: SocketAddr,
    _listener: lapin::Connection,
    consumer: lapin::Consumer,
    /// The gateway's way to the broker, open: dropping it would cut the gateway off.
    _proxy: Proxy,
}

async fn refused_during_then_taken_after(fault: Mode, id: &str) -> BrokerFault {
    let env = TestEnv::new().await;
    let (listener, mut consumer) = listen_on_oms(&env, METHOD).await;
    let proxy = Proxy::to_broker().await;
    let amqp_flag = format!("--amqp-url={}", proxy.amqp_url());
    let (worker, addr) = start_gateway(&env, &[&amqp_flag], &[], false).await;
    let reply = post(addr, request("before", METHOD).as_bytes(), &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    next_delivery(&mut consumer).await;

    proxy.set(fault);
    let reply = post(addr, request(id, METHOD).as_bytes(), &[]).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.header("retry-after").is_some(), "{reply:?}");
    assert_eq!(reply.json()["id"], id);

    proxy.set(Mode::Open);
    wait_until("the gateway to take requests again", PATIENCE, || async {
        post(addr, request(id, METHOD).as_bytes(), &[]).await.status == 200
    })
    .await;
    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(
        delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str()),
        Some(id)
    );
    BrokerFault {
        env,
        worker,
        addr,
        _listener: listener,
        consumer,
        _proxy: proxy,
    }
}

#[tokio::test]
async fn with_the_broker_down_the_bus_is_told_to_retry_and_nothing_is_acknowledged() {
    let mut fault = refused_during_then_taken_after(Mode::Cut, "down-1").await;
    let addr = fault.addr;
    // The refused attempt was never published: the next message is the next one sent.
    let reply = post(addr, request("up-2", METHOD).as_bytes(), &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let mut ids = Vec::new();
    while ids.last().map(String::as_str) != Some("up-2") {
        let delivery = next_delivery(&mut fault.consumer).await;
        ids.push(
            delivery
                .properties
                .message_id()
                .clone()
                .unwrap()
                .to_string(),
        );
    }
    assert!(
        ids.iter().all(|id| id == "down-1" || id == "up-2"),
        "{ids:?}"
    );
    fault.worker.stop().await;
    fault.env.teardown().await;
}

#[tokio::test]
async fn a_confirm_that_never_comes_is_answered_503_and_the_bus_tries_again() {
    // The connection stays open but nothing moves: the publish is never confirmed, and the
    // gateway gives up on it after the broker operations' timeout.
    let fault = refused_during_then_taken_after(Mode::Stalled, "stalled").await;
    fault.worker.stop().await;
    fault.env.teardown().await;
}

#[tokio::test]
async fn the_report_shows_what_the_gateway_carried_each_way_per_method() {
    use crate::gateway_bus::TestBus;
    use crate::gateway_outbound::{connector_publisher, message, publish};
    use protocol::sales::methods::{CANCEL, CREATE};

    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    let publisher = connector_publisher(&env).await;
    let (_listener, mut consumer) = listen_on_oms(&env, METHOD).await;
    let url = format!("--oms-url={}", bus.base);
    let (worker, addr) = start_gateway_with(&env, &[], &[&url], |_| {}).await;
    for id in ["in-1", "in-2"] {
        let reply = post(addr, request(id, METHOD).as_bytes(), &[]).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        next_delivery(&mut consumer).await;
    }
    let unknown = post(
        addr,
        request("in-3", "magento.test.nobody.listens").as_bytes(),
        &[],
    )
    .await;
    assert_eq!(unknown.json()["error"]["code"], -32601, "{unknown:?}");
    publish(
        &publisher,
        &[message(CREATE, "450"), message(CANCEL, "450:cancel")],
    )
    .await;
    wait_until("the bus to take both messages", PATIENCE, || async {
        bus.calls().iter().filter(|c| c.status == 200).count() == 2
    })
    .await;
    // Stopping flushes the worker's statistics, which the report reads.
    worker.stop().await;
    let report: Value =
        serde_json::from_str(&crate::report::run_omsc(&env, &["report", "--json"]).await).unwrap();
    let endpoints = report["endpoints"].as_array().unwrap();
    let row = |module: &str, endpoint: &str| {
        endpoints
            .iter()
            .find(|e| e["module"] == module && e["endpoint"] == endpoint)
            .unwrap_or_else(|| panic!("no report row for {module} {endpoint}: {endpoints:#?}"))
            .clone()
    };
    let inbound = row(gateway::inbound::MODULE, METHOD);
    assert_eq!(inbound["messages"], 2, "{inbound}");
    assert_eq!(inbound["outcomes"]["applied"], 2, "{inbound}");
    assert!(inbound["p99"].as_f64().unwrap() > 0.0, "{inbound}");
    let unrouted = row(gateway::inbound::MODULE, "magento.test.nobody.listens");
    assert_eq!(unrouted["outcomes"]["dead"], 1, "{unrouted}");
    for method in [CREATE, CANCEL] {
        let outbound = row("gateway", method);
        assert_eq!(outbound["messages"], 1, "{outbound}");
        assert_eq!(outbound["outcomes"]["applied"], 1, "{outbound}");
    }
    bus.stop();
    env.teardown().await;
}
