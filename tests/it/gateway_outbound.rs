//! The service-bus gateway, outbound: what the connector sends reaches the bus at the right
//! path, is acknowledged only once the bus took it, waits in order while the bus is down,
//! and what the bus refuses is kept with its words. Against the real broker and database,
//! with the bus played by [`TestBus`].

use serde_json::Value;
use simulate::publish::OmsPublisher;

use crate::gateway::start_gateway_with;
use crate::gateway_bus::{Call, TestBus};
use crate::helpers::{AMQP_URL, PATIENCE, TestEnv, Worker, amqp, binary, wait_until};

use protocol::catalog::methods::PRODUCT_UPDATED;
use protocol::postsales::methods::AUTHORIZE;
use protocol::sales::methods::{CANCEL, CREATE};

/// A publisher on `commerce.events`, as the connector's relays publish, with the gateway's
/// queue declared first so that what is published before the gateway runs waits for it.
pub async fn connector_publisher(env: &TestEnv) -> OmsPublisher {
    let connection = amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let topology = runtime::Topology::new(&env.prefix, runtime::config::QueueType::Quorum);
    gateway::topology::declare(&channel, &topology)
        .await
        .unwrap();
    OmsPublisher::connect(AMQP_URL, &format!("{}commerce.events", env.prefix))
        .await
        .unwrap()
}

pub fn message(method: &str, id: &str) -> (String, Vec<u8>, String) {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":"{id}","method":"{method}","params":{{"order_id":"{}"}}}}"#,
        id.split(':').next().unwrap()
    );
    (method.to_owned(), body.into_bytes(), id.to_owned())
}

pub async fn publish(publisher: &OmsPublisher, messages: &[(String, Vec<u8>, String)]) {
    publisher
        .publish_all(
            messages
                .iter()
                .map(|(m, b, i)| (m.as_str(), b.clone(), i.clone())),
            64,
        )
        .await
        .unwrap();
}

async fn start(env: &TestEnv, bus: &TestBus, gateway_flags: &[&str]) -> Worker {
    let url = format!("--oms-url={}", bus.base);
    let mut flags = vec![url.as_str()];
    flags.extend_from_slice(gateway_flags);
    start_gateway_with(env, &[], &flags, |_| {}).await.0
}

/// The calls the bus answered 200, in the order it answered them.
fn taken(bus: &TestBus) -> Vec<Call> {
    bus.calls()
        .into_iter()
        .filter(|c| c.status == 200)
        .collect()
}

async fn wait_taken(bus: &TestBus, n: usize) {
    wait_until(&format!("{n} calls taken by the bus"), PATIENCE, || async {
        taken(bus).len() >= n
    })
    .await;
}

async fn wait_queue_empty(env: &TestEnv) {
    wait_until("connector.gateway to be empty", PATIENCE, || async {
        env.depth("connector.gateway").await == 0
    })
    .await;
}

/// Once the bus takes calls again: it took exactly `ids`, in that order, the queue is empty
/// and nothing was dead-lettered.
async fn assert_all_taken_in_order(env: &TestEnv, bus: &TestBus, ids: &[&str]) {
    wait_taken(bus, ids.len()).await;
    wait_queue_empty(env).await;
    let taken: Vec<String> = taken(bus).iter().map(Call::id).collect();
    assert_eq!(taken, ids);
    env.assert_no_dead_letters().await;
}

#[tokio::test]
async fn commands_and_events_reach_their_paths_byte_for_byte_and_are_acknowledged() {
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    let publisher = connector_publisher(&env).await;
    let messages = [
        message(CREATE, "100"),
        message(CANCEL, "100:cancel"),
        message(AUTHORIZE, "R-1"),
        message(PRODUCT_UPDATED, "catalog-1-1"),
    ];
    publish(&publisher, &messages).await;
    let worker = start(&env, &bus, &[]).await;
    wait_taken(&bus, 4).await;
    wait_queue_empty(&env).await;
    let calls = taken(&bus);
    let find = |id: &str| calls.iter().find(|c| c.id() == id).unwrap().clone();
    for (method, body, id) in &messages {
        let call = find(id);
        assert_eq!(&call.raw, body, "{id}: the bytes the connector sent");
        let expected = if method == PRODUCT_UPDATED {
            "/events"
        } else {
            "/delegate/oms"
        };
        assert_eq!(call.path, expected, "{id}");
    }
    assert_eq!(
        worker
            .metric(
                "omsc_messages_total",
                &[("module", "gateway"), ("outcome", "applied")]
            )
            .await,
        4.0
    );
    assert_eq!(
        worker
            .metric(
                "omsc_gateway_http_responses_total",
                &[("direction", "outbound"), ("class", "2xx")]
            )
            .await,
        4.0
    );
    env.assert_no_dead_letters().await;
    worker.stop().await;
    bus.stop();
    env.teardown().await;
}

#[tokio::test]
async fn what_the_bus_refuses_is_dead_lettered_with_its_words() {
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    bus.refuse("200", "customer 42 is unknown to the OMS");
    let publisher = connector_publisher(&env).await;
    publish(
        &publisher,
        &[message(CREATE, "200"), message(CREATE, "201")],
    )
    .await;
    let worker = start(&env, &bus, &[]).await;
    let letters = env.expect_dead_letters(1).await;
    assert_eq!(letters[0].message_id.as_deref(), Some("200"));
    assert!(
        letters[0]
            .reason
            .contains("customer 42 is unknown to the OMS"),
        "{}",
        letters[0].reason
    );
    wait_queue_empty(&env).await;
    assert_eq!(taken(&bus).iter().filter(|c| c.id() == "201").count(), 1);
    worker.stop().await;
    bus.stop();
    env.teardown().await;
}

#[tokio::test]
async fn with_the_bus_down_nothing_is_lost_nothing_taken_is_sent_again_and_order_holds() {
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    bus.set_down(true);
    let publisher = connector_publisher(&env).await;
    let mut messages = Vec::new();
    for n in 0..10 {
        messages.push(message(CREATE, &format!("3{n:02}")));
    }
    for n in 0..10 {
        messages.push(message(CANCEL, &format!("3{n:02}:cancel")));
    }
    publish(&publisher, &messages).await;
    let worker = start(&env, &bus, &[]).await;
    // Down long enough that every order was tried and refused at least once.
    wait_until("the bus to turn calls away", PATIENCE, || async {
        bus.calls().iter().filter(|c| c.status == 503).count() >= 20
    })
    .await;
    assert!(taken(&bus).is_empty());
    assert_eq!(
        env.depth("connector.gateway").await,
        0,
        "held, not requeued"
    );
    bus.set_down(false);
    wait_taken(&bus, messages.len()).await;
    wait_queue_empty(&env).await;
    let calls = bus.calls();
    let taken: Vec<String> = taken(&bus).iter().map(Call::id).collect();
    let mut unique = taken.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), taken.len(), "taken twice: {taken:?}");
    assert_eq!(taken.len(), messages.len());
    for n in 0..10 {
        let create = format!("3{n:02}");
        let cancel = format!("{create}:cancel");
        let create_taken = calls
            .iter()
            .position(|c| c.id() == create && c.status == 200)
            .unwrap();
        let first_cancel = calls.iter().position(|c| c.id() == cancel).unwrap();
        assert!(
            create_taken < first_cancel,
            "the cancellation of {create} went out before its creation was taken"
        );
    }
    env.assert_no_dead_letters().await;
    worker.stop().await;
    bus.stop();
    env.teardown().await;
}

#[tokio::test]
async fn a_message_held_past_its_hold_takes_the_retry_queues_then_the_dead_letters_and_replays() {
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    bus.set_down(true);
    let publisher = connector_publisher(&env).await;
    publish(&publisher, &[message(CREATE, "460")]).await;
    // Held 0.3 s, then the 1 s retry queue, then held again: the second attempt is the last.
    let url = format!("--oms-url={}", bus.base);
    let (worker, _) = start_gateway_with(
        &env,
        &["--max-attempts=2"],
        &[&url, "--hold-secs=0.3"],
        |_| {},
    )
    .await;
    let letters = env.expect_dead_letters(1).await;
    assert_eq!(letters[0].message_id.as_deref(), Some("460"));
    assert!(
        letters[0].reason.contains("gave up after 2 attempts") && letters[0].reason.contains("503"),
        "{}",
        letters[0].reason
    );
    let refused = bus.calls().iter().filter(|c| c.status == 503).count();
    assert!(refused >= 2, "tried in both attempts: {refused} calls");
    assert!(taken(&bus).is_empty());
    for (outcome, count) in [("retried", 1.0), ("dead", 1.0)] {
        assert_eq!(
            worker
                .metric(
                    "omsc_messages_total",
                    &[("module", "gateway"), ("outcome", outcome)]
                )
                .await,
            count,
            "one retry, then the give-up, counted as a dead letter"
        );
    }

    // The bus is back: the operator replays it, and it goes out once.
    bus.set_down(false);
    env.omsc(&["dead-letters", "replay", &letters[0].id.to_string()], &[])
        .await;
    wait_taken(&bus, 1).await;
    wait_queue_empty(&env).await;
    assert_eq!(taken(&bus)[0].id(), "460");
    env.assert_no_dead_letters().await;
    worker.stop().await;
    bus.stop();
    env.teardown().await;
}

#[tokio::test]
async fn a_backlog_of_many_subjects_is_sent_with_a_bounded_number_of_calls_at_once() {
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    // A bus that takes its time, so that calls overlap whenever the gateway lets them.
    bus.set_delay(std::time::Duration::from_millis(20));
    let publisher = connector_publisher(&env).await;
    // Each order its own subject, so each its own lane: only the bound keeps them apart.
    let messages: Vec<_> = (0..120)
        .map(|n| message(CREATE, &format!("5{n:03}")))
        .collect();
    publish(&publisher, &messages).await;
    let worker = start(&env, &bus, &["--bus-concurrency=4"]).await;
    wait_taken(&bus, messages.len()).await;
    wait_queue_empty(&env).await;
    let most = bus.most_in_flight();
    assert!(
        most <= 4,
        "{most} calls in flight at once, over the bound of 4"
    );
    assert!(
        most >= 2,
        "the lanes never called side by side (at most {most} at once)"
    );
    let mut ids: Vec<String> = taken(&bus).iter().map(Call::id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), messages.len(), "each message taken once");
    env.assert_no_dead_letters().await;
    worker.stop().await;
    bus.stop();
    env.teardown().await;
}

#[tokio::test]
async fn an_oauth_token_is_fetched_once_and_renewed_after_a_401() {
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    bus.require_token();
    let publisher = connector_publisher(&env).await;
    let worker = start(
        &env,
        &bus,
        &["--oauth-client-id=shop", "--oauth-client-secret=s3cret&x"],
    )
    .await;
    publish(
        &publisher,
        &[message(CREATE, "400"), message(CREATE, "401")],
    )
    .await;
    wait_taken(&bus, 2).await;
    assert_eq!(bus.tokens(), ["token-1"], "one token, cached");
    bus.revoke("token-1");
    publish(&publisher, &[message(CREATE, "402")]).await;
    wait_taken(&bus, 3).await;
    assert_eq!(bus.tokens(), ["token-1", "token-2"]);
    let last = taken(&bus).pop().unwrap();
    assert_eq!(last.id(), "402");
    assert_eq!(last.authorization.as_deref(), Some("Bearer token-2"));
    env.assert_no_dead_letters().await;
    worker.stop().await;
    bus.stop();
    env.teardown().await;
}

#[tokio::test]
async fn a_token_from_the_configured_url_is_replaced_before_it_expires() {
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    bus.require_token();
    bus.set_token_path("/auth/issue");
    // A token that expires at once: a client that waited for the bus's 401 would be told
    // "no valid token" on every call but the first.
    bus.set_token_lifetime(0.000_001);
    let publisher = connector_publisher(&env).await;
    let token_url = format!("--oauth-url={}/auth/issue", bus.base);
    let worker = start(
        &env,
        &bus,
        &[
            "--oauth-client-id=shop",
            "--oauth-client-secret=s",
            &token_url,
        ],
    )
    .await;
    // One order, so one call at a time: two lanes fetching tokens side by side would each
    // make the other's stale.
    let messages = [
        message(CREATE, "410"),
        message(CANCEL, "410:cancel"),
        message(CANCEL, "410:cancel-again"),
    ];
    publish(&publisher, &messages).await;
    wait_taken(&bus, messages.len()).await;
    let calls = bus.calls();
    assert!(
        calls.iter().all(|c| c.status == 200),
        "every call carried a live token: {:?}",
        calls.iter().map(|c| (c.id(), c.status)).collect::<Vec<_>>()
    );
    assert_eq!(
        bus.tokens().len(),
        messages.len(),
        "a fresh token for each call, fetched before the old one expired"
    );
    let mut used: Vec<_> = calls
        .iter()
        .filter_map(|c| c.authorization.clone())
        .collect();
    used.sort();
    used.dedup();
    assert_eq!(used.len(), messages.len(), "{used:?}");
    assert!(
        calls.iter().all(|c| c.path != "/oauth/token"),
        "the default token URL was never asked"
    );
    env.assert_no_dead_letters().await;
    worker.stop().await;
    bus.stop();
    env.teardown().await;
}

#[tokio::test]
async fn with_credentials_the_bus_refuses_messages_wait_in_order_and_none_is_dead_lettered() {
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    bus.require_token();
    bus.set_deny(true);
    let publisher = connector_publisher(&env).await;
    let worker = start(
        &env,
        &bus,
        &["--oauth-client-id=shop", "--oauth-client-secret=rotated"],
    )
    .await;
    let messages = [message(CREATE, "420"), message(CANCEL, "420:cancel")];
    publish(&publisher, &messages).await;
    wait_until(
        "the bus to refuse the credentials more than once",
        PATIENCE,
        || async { bus.calls().iter().filter(|c| c.status == 401).count() >= 3 },
    )
    .await;
    assert!(taken(&bus).is_empty());
    assert!(
        bus.calls().iter().all(|c| c.id() == "420"),
        "the cancellation waits behind its order's creation"
    );
    env.assert_no_dead_letters().await;
    // The operator mends the credentials.
    bus.set_deny(false);
    assert_all_taken_in_order(&env, &bus, &["420", "420:cancel"]).await;
    worker.stop().await;
    bus.stop();
    env.teardown().await;
}

#[tokio::test]
async fn a_bus_that_is_not_listening_yet_is_called_again_until_it_is() {
    let env = TestEnv::new().await;
    let bus_addr = test_support::http::free_address().unwrap();
    let publisher = connector_publisher(&env).await;
    let url = format!("--oms-url=http://{bus_addr}/api");
    let (worker, _) = start_gateway_with(&env, &[], &[&url], |_| {}).await;
    let messages = [message(CREATE, "430"), message(CANCEL, "430:cancel")];
    publish(&publisher, &messages).await;
    wait_until("a refused connection to be counted", PATIENCE, || async {
        worker
            .metric(
                "omsc_gateway_http_responses_total",
                &[("direction", "outbound"), ("class", "none")],
            )
            .await
            >= 1.0
    })
    .await;
    env.assert_no_dead_letters().await;
    let bus = TestBus::start_on(&bus_addr.to_string()).await;
    assert_all_taken_in_order(&env, &bus, &["430", "430:cancel"]).await;
    worker.stop().await;
    bus.stop();
    env.teardown().await;
}

#[tokio::test]
async fn the_registration_reaches_the_bus_and_its_answer_is_stored() {
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    let url = format!("--oms-url={}", bus.base);
    let (_, inventory_config) = env.flags(&[]);
    let (worker, _) = start_gateway_with(
        &env,
        &[
            "--register=true",
            "--callback-url=https://shop.example/oms-callback",
            "--registration-secret=bus-secret",
        ],
        &[url.as_str()],
        |app| inventory::install(app, &inventory_config).unwrap(),
    )
    .await;
    wait_until("the registration answer stored", PATIENCE, || async {
        env.db
            .query_one(
                "SELECT remote_endpoint IS NOT NULL FROM connector_registration",
                &[],
            )
            .await
            .map(|r| r.get::<_, bool>(0))
            .unwrap_or(false)
    })
    .await;
    let stored: Value = env
        .db
        .query_one("SELECT remote_endpoint FROM connector_registration", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored["peer_url"], "https://shop.example/oms-callback");
    assert_eq!(stored["id"], "oms-connector");
    let registrations = bus.calls_of(protocol::service_bus::methods::REGISTER);
    assert_eq!(registrations[0].path, "/");
    assert_eq!(registrations[0].body["params"]["secret"], "bus-secret");
    let output = tokio::process::Command::new(binary("omsc"))
        .arg("status")
        .env("DATABASE_URL", &env.database_url)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let status = String::from_utf8_lossy(&output.stdout);
    assert!(
        status.contains("/delegate/oms-connector"),
        "omsc status shows the bus's answer: {status}"
    );
    worker.stop().await;
    bus.stop();
    env.teardown().await;
}

#[tokio::test]
async fn omsc_run_all_with_a_bus_url_registers_there_and_serves_the_callback() {
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    let gateway_addr = test_support::http::free_address().unwrap();
    let callback = format!("http://{gateway_addr}/oms-callback");
    let mut omsc = env
        .binary_command(
            "omsc",
            &["run", "--all"],
            &[
                ("OMSC_OMS_URL", bus.base.as_str()),
                ("OMSC_GATEWAY_ADDR", &gateway_addr.to_string()),
                ("OMSC_CALLBACK_URL", &callback),
                ("OMSC_REGISTER", "true"),
            ],
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = omsc.stderr.take().unwrap();
    let logs = tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    wait_until("the registration at the bus", PATIENCE, || async {
        !bus.calls_of(protocol::service_bus::methods::REGISTER)
            .is_empty()
    })
    .await;
    let registration = &bus.calls_of(protocol::service_bus::methods::REGISTER)[0];
    assert_eq!(registration.body["params"]["url"], callback.as_str());
    let subscribes = registration.body["params"]["subscribes"].to_string();
    assert!(
        subscribes.contains(protocol::sales::methods::UPDATED),
        "{subscribes}"
    );
    wait_until("the gateway to answer the bus's probe", PATIENCE, || async {
        let Ok(mut stream) = tokio::net::TcpStream::connect(gateway_addr).await else {
            return false;
        };
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let probe = format!("OPTIONS /oms-callback HTTP/1.1\r\nHost: {gateway_addr}\r\nConnection: close\r\n\r\n");
        if stream.write_all(probe.as_bytes()).await.is_err() {
            return false;
        }
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply).await;
        reply.starts_with("HTTP/1.1 200") && reply.to_lowercase().contains("x-magento-service-bus: *")
    })
    .await;
    omsc.kill().await.unwrap();
    // No OMSC_REGISTRATION_SECRET: the gateway takes unsigned requests, and says so once.
    let logs = logs.await.unwrap();
    assert_eq!(
        logs.matches("OMSC_REGISTRATION_SECRET is not set").count(),
        1,
        "{logs}"
    );
    bus.stop();
    env.teardown().await;
}

#[tokio::test]
async fn omsc_probe_checks_the_bus_the_callback_and_a_signed_delivery_and_leaves_nothing() {
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    bus.set_sources(vec![
        serde_json::json!({"source_code": "EU", "name": "Europe"}),
    ]);
    let url = format!("--oms-url={}", bus.base);
    let (worker, addr) = start_gateway_with(
        &env,
        &["--registration-secret=bus-secret"],
        &[url.as_str()],
        |_| {},
    )
    .await;
    let callback = format!("http://{addr}/oms-callback");
    let probe = |secret: &'static str| {
        env.binary_command(
            "omsc",
            &["probe"],
            &[
                ("OMSC_OMS_URL", bus.base.as_str()),
                ("OMSC_CALLBACK_URL", callback.as_str()),
                ("OMSC_REGISTRATION_SECRET", secret),
            ],
        )
        .output()
    };

    let output = probe("bus-secret").await.unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "ok   the bus: ",
        "ok   the gateway's probe: ",
        "ok   a test delivery: a signed delivery of magento.connector.probe reached the broker",
        "ok   its dead letter: stored and discarded (1)",
    ] {
        assert!(said.lines().any(|l| l.starts_with(line)), "{line}\n{said}");
    }
    assert!(said.contains("(1 sources known)"), "{said}");
    env.assert_no_dead_letters().await;

    // Another secret than the gateway's: the delivery is refused, and the probe says why.
    let output = probe("not-the-secret").await.unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.lines().any(|l| l
            .starts_with("FAIL a test delivery: the gateway refused the signature")
            && l.contains("OMSC_REGISTRATION_SECRET here differs")),
        "{said}"
    );
    assert!(
        !said.contains("not-the-secret") && !said.contains("bus-secret"),
        "{said}"
    );
    env.assert_no_dead_letters().await;

    // A callback URL that is not the gateway.
    let output = env
        .binary_command(
            "omsc",
            &["probe"],
            &[("OMSC_CALLBACK_URL", &format!("{}/elsewhere", bus.base))],
        )
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains("FAIL the gateway's probe: "), "{said}");
    worker.stop().await;
    bus.stop();
    env.teardown().await;
}
