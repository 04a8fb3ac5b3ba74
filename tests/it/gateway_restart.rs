//! The real `omsc-gateway` process killed with SIGKILL mid-stream and started again, in both
//! directions. Inbound: the bus keeps POSTing (and, like the bus, sends again what was not
//! answered 200); every request answered 200 is in the broker at least once. Outbound: what
//! was queued for the bus while the gateway was dead is delivered after the restart, nothing
//! is lost, and only what was in flight at the kill may reach the bus twice.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::gateway_bus::TestBus;
use crate::gateway_outbound::{connector_publisher, message, publish};
use crate::helpers::{PATIENCE, TestEnv, wait_until};

use protocol::sales::methods::{CANCEL, CREATE};

const SECRET: &str = "bus-secret";
const METHOD: &str = "magento.test.gateway_restart.updated";

fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The real `omsc-gateway` process, with `prefetch` deliveries held at most: with the
/// default (1000) every queued message of the outbound test would be in flight at once.
fn spawn_gateway(
    env: &TestEnv,
    addr: SocketAddr,
    bus: &TestBus,
    prefetch: u16,
) -> tokio::process::Child {
    env.spawn_binary_with_args(
        "omsc-gateway",
        &[],
        &[
            ("OMSC_GATEWAY_ADDR", &addr.to_string()),
            ("OMSC_REGISTRATION_SECRET", SECRET),
            ("OMSC_OMS_URL", &bus.base),
            ("OMSC_PREFETCH", &prefetch.to_string()),
        ],
    )
}

/// One signed POST as the bus sends it; the HTTP status, or `None` when the gateway could
/// not be reached or the answer was cut off.
async fn try_post(addr: SocketAddr, body: &[u8]) -> Option<u16> {
    let signature = gateway::signature::sign(SECRET.as_bytes(), body);
    let mut request = format!(
        "POST /oms-callback HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Signature: {signature}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(&request).await.ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw);
        text.lines().next()?.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
}

/// A queue of the test's own on `oms.events`, bound to [`METHOD`], and what it received:
/// message id → (deliveries, the bodies' bytes as published).
async fn record_oms(
    env: &TestEnv,
) -> (
    lapin::Connection,
    Arc<Mutex<HashMap<String, (usize, Vec<u8>)>>>,
) {
    let (connection, mut consumer) = crate::gateway::listen_on_oms(env, METHOD).await;
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let id = delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default();
            let mut seen = record.lock().unwrap();
            let entry = seen.entry(id).or_insert((0, delivery.data.clone()));
            entry.0 += 1;
        }
    });
    (connection, seen)
}

fn request(id: &str) -> Vec<u8> {
    format!(r#"{{"jsonrpc":"2.0","id":"{id}","method":"{METHOD}","params":{{"n":1}}}}"#)
        .into_bytes()
}

#[tokio::test]
async fn inbound_every_request_answered_200_survives_a_kill_9_of_the_gateway() {
    const SENDERS: usize = 8;
    const PER_SENDER: usize = 60;
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    let (_connection, seen) = record_oms(&env).await;
    let addr = free_addr();
    let mut gateway = spawn_gateway(&env, addr, &bus, 1000);

    // The bus: SENDERS connections POSTing one request after another, each sent again
    // until it is answered 200.
    let answered = Arc::new(Mutex::new(Vec::<String>::new()));
    let failures = Arc::new(Mutex::new(0usize));
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let answered = answered.clone();
        let failures = failures.clone();
        senders.push(tokio::spawn(async move {
            for n in 0..PER_SENDER {
                let id = format!("in-{s}-{n}");
                let body = request(&id);
                loop {
                    if try_post(addr, &body).await == Some(200) {
                        answered.lock().unwrap().push(id);
                        break;
                    }
                    *failures.lock().unwrap() += 1;
                    // The bus's retry interval, not a wait for anything.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    let count = |n: usize| {
        let answered = answered.clone();
        move || {
            let answered = answered.clone();
            async move { answered.lock().unwrap().len() >= n }
        }
    };
    wait_until(
        "a third of the requests answered",
        PATIENCE,
        count(SENDERS * PER_SENDER / 3),
    )
    .await;
    gateway.kill().await.unwrap();
    let at_kill = answered.lock().unwrap().len();
    let mut gateway = spawn_gateway(&env, addr, &bus, 1000);
    for sender in senders {
        tokio::time::timeout(PATIENCE, sender)
            .await
            .expect("the senders to finish")
            .unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert_eq!(answered.len(), SENDERS * PER_SENDER);
    assert!(at_kill < answered.len(), "killed mid-stream");
    assert!(
        *failures.lock().unwrap() > 0,
        "requests were turned away while the gateway was dead"
    );
    wait_until("every answered request in the broker", PATIENCE, || async {
        let seen = seen.lock().unwrap();
        answered.iter().all(|id| seen.contains_key(id))
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    for id in &answered {
        let (deliveries, body) = &seen[id];
        assert!(*deliveries >= 1);
        assert_eq!(body, &request(id), "{id}: the bytes the bus sent");
    }
    gateway.kill().await.unwrap();
    bus.stop();
    env.teardown().await;
}

#[tokio::test]
async fn outbound_what_was_queued_while_the_gateway_was_killed_reaches_the_bus_after_restart() {
    const ORDERS: usize = 200;
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    // Not instant, so that calls are in flight when the gateway dies.
    bus.set_delay(Duration::from_millis(200));
    let publisher = connector_publisher(&env).await;
    let creates: Vec<_> = (0..ORDERS)
        .map(|n| message(CREATE, &format!("5{n:03}")))
        .collect();
    let cancels: Vec<_> = (0..ORDERS)
        .map(|n| message(CANCEL, &format!("5{n:03}:cancel")))
        .collect();
    publish(&publisher, &creates).await;
    let addr = free_addr();
    // 16 calls in flight at most, so that the stream takes seconds and the kill lands in it.
    let mut gateway = spawn_gateway(&env, addr, &bus, 16);
    let taken = |bus: &TestBus| -> Vec<String> {
        bus.calls()
            .iter()
            .filter(|c| c.status == 200)
            .map(|c| c.id())
            .collect()
    };
    wait_until("a quarter of the creations taken", PATIENCE, || async {
        taken(&bus).len() >= ORDERS / 4
    })
    .await;
    gateway.kill().await.unwrap();
    let taken_before: HashSet<String> = taken(&bus).into_iter().collect();
    assert!(taken_before.len() < ORDERS, "killed mid-stream");
    // Queued while the gateway is dead.
    publish(&publisher, &cancels).await;
    let mut gateway = spawn_gateway(&env, addr, &bus, 16);
    let all: HashSet<String> = creates
        .iter()
        .chain(&cancels)
        .map(|m| m.2.clone())
        .collect();
    wait_until("everything taken by the bus", PATIENCE, || async {
        let taken: HashSet<String> = taken(&bus).into_iter().collect();
        all.is_subset(&taken)
    })
    .await;
    wait_until("connector.gateway to be empty", PATIENCE, || async {
        env.depth("connector.gateway").await == 0
    })
    .await;
    // Sent twice only what the bus took while the gateway died before it could acknowledge.
    let taken = taken(&bus);
    let mut times: HashMap<&str, usize> = HashMap::new();
    for id in &taken {
        *times.entry(id).or_default() += 1;
    }
    for (id, n) in &times {
        if *n > 1 {
            assert!(
                taken_before.contains(*id),
                "{id} taken {n} times, not in flight at the kill"
            );
        }
    }
    assert!(
        taken.len() - all.len() <= taken_before.len(),
        "at most what was taken before the kill is sent again"
    );
    // Per-subject order held across the restart: no cancellation before its creation.
    let calls = bus.calls();
    for create in &creates {
        let id = &create.2;
        let created = calls
            .iter()
            .position(|c| &c.id() == id && c.status == 200)
            .unwrap();
        let first_cancel = calls
            .iter()
            .position(|c| c.id() == format!("{id}:cancel"))
            .unwrap();
        assert!(
            created < first_cancel,
            "the cancellation of {id} went out before its creation was taken"
        );
    }
    env.assert_no_dead_letters().await;
    gateway.kill().await.unwrap();
    bus.stop();
    env.teardown().await;
}
