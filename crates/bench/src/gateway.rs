//! The service-bus gateway (`omsc-gateway` as shipped, in its own process), side by side
//! with the broker's publish-with-confirm ceiling measured in the same scenario: every
//! message the gateway takes from the bus costs one confirmed publish, so that is the rate
//! it cannot beat.
//!
//! - Outbound first: messages of many subjects (several each, in order) are queued on
//!   `connector.gateway`, then the gateway starts and carries them to a local bus that
//!   answers at once; the window runs from the bus's first call to its last, and the bus
//!   checks that each subject's messages arrived in their order.
//! - Inbound: signed single-message POSTs (one-SKU DELTAs, the smallest real message) from
//!   64 keep-alive connections, as fast as the gateway answers; each 200 is a publish the
//!   broker confirmed. Measured in [`ROUNDS`] rounds, each one the two ceiling trials then
//!   the gateway's trial, every trial on an emptied queue: a ratio is of figures taken
//!   seconds apart, on the same broker state, and the verdict takes the median round, so
//!   one trial caught by a busy moment of the machine does not decide it.
//! - Latency: the same POSTs offered at a steady 1,000 requests/s (open loop: a request's
//!   time runs from when it was due, so a stall is not hidden by the requests it delays).
//! - The gateway's peak resident memory (VmHWM) over all three.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{TimeZone, Utc};
use lapin::BasicProperties;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use super::support::{self, CpuTimes, Scratch};
use simulate::publish::OmsPublisher;
use simulate::stock;

/// Concurrent connections of the inbound throughput trial.
const CONNECTIONS: usize = 64;
/// Rounds of (ceiling trials, inbound trial).
const ROUNDS: usize = 3;
/// Offered rate of the latency trial, requests/s.
const LATENCY_RATE: u32 = 1_000;
/// Messages per subject in the outbound trial.
const PER_SUBJECT: usize = 4;
const SECRET: &str = "bench-bus-secret";
const MIB: f64 = 1024.0 * 1024.0;

/// One round of the inbound measure.
#[derive(Debug, Clone)]
pub struct Round {
    /// `(concurrent publishers, messages/s, broker CPU µs per message)` of each ceiling trial.
    pub ceiling_trials: Vec<(usize, f64, f64)>,
    /// The gateway's inbound rate, messages/s.
    pub inbound: f64,
    /// CPU µs per message of the gateway and of the broker in the inbound trial.
    pub inbound_cpu: (f64, f64),
}

impl Round {
    /// The round's ceiling: its best confirmed publishing rate, at any concurrency.
    pub fn ceiling(&self) -> f64 {
        self.ceiling_trials.iter().map(|t| t.1).fold(0.0, f64::max)
    }

    /// The ceiling trial with as many publishers as the gateway has connections.
    fn same_concurrency(&self) -> Option<&(usize, f64, f64)> {
        self.ceiling_trials.iter().find(|t| t.0 == CONNECTIONS)
    }

    pub fn ratio(&self) -> f64 {
        self.inbound / self.ceiling()
    }
}

#[derive(Debug, Clone)]
pub struct Gateway {
    /// The inbound rounds, in the order they ran.
    pub rounds: Vec<Round>,
    pub body_bytes: usize,
    pub inbound_messages: usize,
    pub latency_requests: usize,
    pub latency_achieved: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub outbound_messages: usize,
    pub outbound_subjects: usize,
    pub outbound_rate: f64,
    pub peak_rss: u64,
}

impl Gateway {
    /// The round whose inbound ratio is the median one.
    pub fn median_round(&self) -> &Round {
        let mut rounds: Vec<&Round> = self.rounds.iter().collect();
        rounds.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
        rounds[rounds.len() / 2]
    }

    /// The publish-with-confirm ceiling the ratios are given against: the median round's.
    pub fn publish_ceiling(&self) -> f64 {
        self.median_round().ceiling()
    }
}

pub async fn run(setup: &super::Setup) -> anyhow::Result<Gateway> {
    let scratch = Scratch::new(setup, "gateway").await?;
    let result = measure(setup, &scratch).await;
    if let Ok(connection) = runtime::amqp::connect(&scratch.amqp_url, "omsc-bench").await
        && let Ok(channel) = connection.create_channel().await
    {
        let topology = runtime::Topology::new(&scratch.prefix, runtime::config::QueueType::Quorum);
        for (queue, _) in topology.queues(&gateway::QUEUE) {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = connection.close(200, "bench done".into()).await;
    }
    scratch.drop_all().await;
    result
}

async fn measure(setup: &super::Setup, scratch: &Scratch) -> anyhow::Result<Gateway> {
    let messages = (setup.sizes.delta_messages / 4).max(1_000);
    let at = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
    let routing_key = stock::method(support::delta("EU", support::sku(0), 7, at).scope);
    let body = |i: usize, prefix: &str| {
        stock::encode(
            &support::delta("EU", support::sku(i), 7, at),
            &format!("{prefix}-{i}"),
        )
    };
    let body_bytes = body(0, "gw").len();

    // Outbound: queued first, for the gateway to drain.
    let bus = LocalBus::start().await?;
    let subjects = (messages / PER_SUBJECT).max(1);
    let outbound_messages = subjects * PER_SUBJECT;
    {
        let connection = runtime::amqp::connect(&scratch.amqp_url, "omsc-bench").await?;
        let channel = connection.create_channel().await?;
        let topology = runtime::Topology::new(&scratch.prefix, runtime::config::QueueType::Quorum);
        gateway::topology::declare(&channel, &topology).await?;
        let _ = connection.close(200, "declared".into()).await;
    }
    let commerce = OmsPublisher::connect(
        &scratch.amqp_url,
        &format!("{}commerce.events", scratch.prefix),
    )
    .await?;
    let outbound = (0..PER_SUBJECT).flat_map(|k| {
        (0..subjects).map(move |s| {
            let method = if k == 0 {
                protocol::sales::methods::CREATE
            } else {
                protocol::sales::methods::CANCEL
            };
            let id = format!("B{s:07}:{k}");
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":"{id}","method":"{method}","params":{{"order_id":"B{s:07}"}}}}"#
            );
            (method, body.into_bytes(), id)
        })
    });
    commerce.publish_all(outbound, 1024).await?;

    let gateway_addr: SocketAddr = support::free_address()?.parse()?;
    let http = support::free_address()?;
    let binary = setup
        .worker
        .parent()
        .map(|d| d.join("omsc-gateway"))
        .context("locating omsc-gateway")?;
    let worker = scratch.spawn_worker(
        &binary,
        &http,
        &[
            ("OMSC_GATEWAY_ADDR", &gateway_addr.to_string()),
            ("OMSC_REGISTRATION_SECRET", SECRET),
            ("OMSC_OMS_URL", &bus.base),
        ],
    )?;
    let pid = worker.id().context("the gateway's pid")?;
    support::wait_until(
        "the bus to receive every queued message",
        Duration::from_millis(20),
        Duration::from_secs(600),
        || async { Ok(bus.received() >= outbound_messages) },
    )
    .await?;
    let outbound_rate = bus.verify(outbound_messages, PER_SUBJECT)?;

    // Inbound throughput, in rounds beside the ceiling. The ceiling: the same bodies
    // published to the same exchange and queue as the gateway publishes them (persistent,
    // mandatory, one shared confirming channel, each publish awaiting its own confirm), by
    // as many concurrent publishers as the gateway has connections, and by four times as
    // many. Every trial starts on an empty queue.
    let mut rounds = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let mut ceiling_trials = Vec::new();
        for publishers in [CONNECTIONS, 4 * CONNECTIONS] {
            let bodies: Vec<Vec<u8>> = (0..messages)
                .map(|i| body(i, &format!("ceiling{round}-{publishers}")))
                .collect();
            purge_inventory_queues(scratch).await?;
            let before = CpuTimes::read(pid);
            let rate = publish_ceiling(scratch, routing_key, bodies, publishers).await?;
            let (_, broker, _) = CpuTimes::read(pid).since(before).per_item_micros(messages);
            ceiling_trials.push((publishers, rate, broker));
        }
        let requests: Vec<Vec<u8>> = (0..messages)
            .map(|i| signed_request(gateway_addr, &body(i, &format!("in{round}"))))
            .collect();
        purge_inventory_queues(scratch).await?;
        let before = CpuTimes::read(pid);
        let inbound = inbound_trial(gateway_addr, requests).await?;
        let (gateway, broker, _) = CpuTimes::read(pid).since(before).per_item_micros(messages);
        rounds.push(Round {
            ceiling_trials,
            inbound,
            inbound_cpu: (gateway, broker),
        });
    }
    purge_inventory_queues(scratch).await?;

    // Latency at a steady offered rate.
    let latency_requests = (setup.sizes.latency_secs as usize * LATENCY_RATE as usize).max(1);
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..latency_requests)
            .map(|i| signed_request(gateway_addr, &body(i, "lat")))
            .collect(),
    );
    let pool: Arc<Mutex<Vec<Conn>>> = Arc::new(Mutex::new(Vec::new()));
    let interval = Duration::from_secs_f64(1.0 / f64::from(LATENCY_RATE));
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(latency_requests);
    for i in 0..latency_requests {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due).await;
        let requests = requests.clone();
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let free = pool.lock().unwrap().pop();
            let mut conn = match free {
                Some(c) => c,
                None => Conn::open(gateway_addr).await?,
            };
            let status = conn.send(&requests[i]).await?;
            let took = due.elapsed().as_secs_f64();
            anyhow::ensure!(status == 200, "the gateway answered {status}");
            pool.lock().unwrap().push(conn);
            anyhow::Ok(took)
        }));
    }
    let mut latencies = Vec::with_capacity(latency_requests);
    for task in tasks {
        latencies.push(task.await??);
    }
    let latency_achieved = latency_requests as f64 / started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);

    let peak_rss = support::peak_rss(pid).unwrap_or(0);
    support::stop(worker).await?;
    bus.stop();
    Ok(Gateway {
        rounds,
        body_bytes,
        inbound_messages: messages,
        latency_requests,
        latency_achieved,
        p50: support::percentile(&latencies, 50.0),
        p99: support::percentile(&latencies, 99.0),
        max: latencies.last().copied().unwrap_or(0.0),
        outbound_messages,
        outbound_subjects: subjects,
        outbound_rate,
        peak_rss,
    })
}

/// Requests/s of `requests` sent from [`CONNECTIONS`] keep-alive connections, each waiting
/// for its answer (which must be 200) before it sends the next.
async fn inbound_trial(gateway: SocketAddr, requests: Vec<Vec<u8>>) -> anyhow::Result<f64> {
    let count = requests.len();
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let requests = requests.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(gateway).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(request) = requests.get(i) else {
                    return anyhow::Ok(());
                };
                let status = conn.send(request).await?;
                anyhow::ensure!(status == 200, "the gateway answered {status}");
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Empties the queues the DELTAs are routed to, so that each trial starts as the first did.
async fn purge_inventory_queues(scratch: &Scratch) -> anyhow::Result<()> {
    let connection = runtime::amqp::connect(&scratch.amqp_url, "omsc-bench-purge").await?;
    let channel = connection.create_channel().await?;
    let topology = runtime::Topology::new(&scratch.prefix, runtime::config::QueueType::Quorum);
    for (queue, _) in topology.queues(&inventory::QUEUE) {
        channel
            .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
            .await?;
    }
    let _ = connection.close(200, "purged".into()).await;
    Ok(())
}

/// Confirmed publishes/s of `bodies` by `publishers` concurrent tasks on one channel.
async fn publish_ceiling(
    scratch: &Scratch,
    routing_key: &str,
    bodies: Vec<Vec<u8>>,
    publishers: usize,
) -> anyhow::Result<f64> {
    let connection = runtime::amqp::connect(&scratch.amqp_url, "omsc-bench-ceiling").await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let exchange = format!("{}oms.events", scratch.prefix);
    let count = bodies.len();
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..publishers {
        let (channel, bodies, next) = (channel.clone(), bodies.clone(), next.clone());
        let (exchange, routing_key) = (exchange.clone(), routing_key.to_owned());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return anyhow::Ok(());
                };
                let confirm = channel
                    .basic_publish(
                        exchange.as_str().into(),
                        routing_key.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        body,
                        BasicProperties::default()
                            .with_content_type("application/json".into())
                            .with_message_id(format!("ceiling-{i}").into())
                            .with_delivery_mode(2),
                    )
                    .await?
                    .await?;
                anyhow::ensure!(confirm.is_ack(), "the broker refused a publish");
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let _ = connection.close(200, "done".into()).await;
    Ok(rate)
}

/// A POST of `body` as the bus sends it: signed, on a keep-alive connection.
fn signed_request(addr: SocketAddr, body: &[u8]) -> Vec<u8> {
    let signature = gateway::signature::sign(SECRET.as_bytes(), body);
    let mut request = format!(
        "POST /oms-callback HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Signature: {signature}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// One keep-alive HTTP/1.1 connection to the gateway, the load generator's own (a client
/// library would measure itself as much as the gateway).
struct Conn {
    stream: BufReader<TcpStream>,
    line: String,
}

impl Conn {
    async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
            line: String::new(),
        })
    }

    /// Sends one request and reads its whole answer; the answer's status.
    async fn send(&mut self, request: &[u8]) -> anyhow::Result<u16> {
        self.stream.get_mut().write_all(request).await?;
        self.line.clear();
        self.stream.read_line(&mut self.line).await?;
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("not an HTTP answer: {:?}", self.line))?;
        let mut length = 0usize;
        loop {
            self.line.clear();
            anyhow::ensure!(
                self.stream.read_line(&mut self.line).await? > 0,
                "the gateway closed the connection"
            );
            let line = self.line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok(status)
    }
}

/// A bus on this machine that answers every call at once with a JSON-RPC result, and
/// records when each message arrived.
struct LocalBus {
    base: String,
    calls: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl LocalBus {
    async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let calls: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let recorded = calls.clone();
        let router = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let recorded = recorded.clone();
            async move {
                let id = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                let answer = format!(r#"{{"jsonrpc":"2.0","id":"{id}","result":null}}"#);
                recorded.lock().unwrap().push((Instant::now(), id));
                ([("content-type", "application/json")], answer)
            }
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            base: format!("http://{addr}"),
            calls,
            stop,
        })
    }

    fn received(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// Checks that every message came once and each subject's in its order; the rate from
    /// the first call to the last.
    fn verify(&self, expected: usize, per_subject: usize) -> anyhow::Result<f64> {
        let calls = self.calls.lock().unwrap();
        anyhow::ensure!(
            calls.len() == expected,
            "the bus received {} calls for {expected} messages",
            calls.len()
        );
        let mut next: HashMap<&str, usize> = HashMap::new();
        for (_, id) in calls.iter() {
            let (subject, k) = id.split_once(':').context("an id without a sequence")?;
            let k: usize = k.parse()?;
            let expected_k = next.entry(subject).or_default();
            anyhow::ensure!(
                k == *expected_k,
                "{subject}: message {k} arrived where {expected_k} was due"
            );
            *expected_k += 1;
        }
        anyhow::ensure!(next.values().all(|&n| n == per_subject));
        let secs = calls
            .last()
            .zip(calls.first())
            .map_or(0.0, |(l, f)| l.0.duration_since(f.0).as_secs_f64());
        Ok(expected as f64 / secs.max(1e-9))
    }

    fn stop(self) {
        let _ = self.stop.send(());
    }
}

/// The gateway's targets and whether this run met them.
pub fn verdicts(g: &Gateway) -> Vec<super::report::Verdict> {
    let inbound = g.median_round().ratio();
    let outbound = g.outbound_rate / g.publish_ceiling();
    let p99 = g.p99 * 1000.0;
    vec![
        super::report::Verdict {
            what: "Gateway inbound (64 connections) vs the broker's publish-with-confirm ceiling (median of rounds)",
            target: "≥ 0.50 ×".into(),
            measured: format!("{inbound:.3} ×"),
            met: inbound >= 0.5,
        },
        super::report::Verdict {
            what: "Gateway p99 HTTP latency at 1,000 requests/s",
            target: "≤ 10 ms".into(),
            measured: format!("{p99:.1} ms"),
            met: p99 <= 10.0,
        },
        super::report::Verdict {
            what: "Gateway outbound (order per subject kept) vs the publish-with-confirm ceiling",
            target: "≥ 0.10 ×".into(),
            measured: format!("{outbound:.2} ×"),
            met: outbound >= 0.1,
        },
        super::report::Verdict {
            what: "Peak RSS of the gateway",
            target: "≤ 64 MiB".into(),
            measured: format!("{:.1} MiB", g.peak_rss as f64 / MIB),
            met: (g.peak_rss as f64) <= 64.0 * MIB,
        },
    ]
}

/// The gateway's section of `docs/benchmarks.md`.
pub fn markdown(g: &Gateway) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## The service-bus gateway (`omsc-gateway` as shipped)\n"
    );
    let median = g.median_round();
    let _ = writeln!(
        out,
        "- **Ceiling**: the same {}-byte one-SKU DELTAs published to the same exchange and queue as the gateway publishes them (persistent, mandatory, one confirming channel, each publish awaiting its confirm), by concurrent publishers, {} each: **{:.0} messages/s** in the median round (best of {}).",
        g.body_bytes,
        g.inbound_messages,
        median.ceiling(),
        median
            .ceiling_trials
            .iter()
            .map(|(w, r, _)| format!("{w} publishers: {r:.0}"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let _ = writeln!(
        out,
        "- **Inbound**: {} signed single-message POSTs from {CONNECTIONS} keep-alive connections, each answered 200 only after the broker's confirm: **{:.0} messages/s** ({:.3} × the ceiling) in the median of {} rounds; each round is its ceiling trials then the gateway's, each trial on an emptied queue. Rounds: {}.",
        g.inbound_messages,
        median.inbound,
        median.ratio(),
        g.rounds.len(),
        g.rounds
            .iter()
            .map(|r| {
                let same = r.same_concurrency().map_or(0.0, |t| t.1);
                format!(
                    "{:.0}/s = {:.3} × its ceiling of {:.0} ({:.2} × its {CONNECTIONS}-publisher trial)",
                    r.inbound,
                    r.ratio(),
                    r.ceiling(),
                    r.inbound / same
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    );
    let (gateway_cpu, broker_cpu) = median.inbound_cpu;
    let ceiling_broker_cpu = median
        .ceiling_trials
        .iter()
        .map(|(w, _, cpu)| format!("{cpu:.1} µs with {w} publishers"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        out,
        "  CPU per message in the median round: gateway {gateway_cpu:.1} µs, broker {broker_cpu:.1} µs; the broker's in the ceiling trials: {ceiling_broker_cpu}. The gateway holds at most {CONNECTIONS} messages awaiting confirms (one per connection), so it is compared with the {CONNECTIONS}-publisher trial as well as with the best one."
    );
    let _ = writeln!(
        out,
        "- **Latency** at an offered {LATENCY_RATE} requests/s ({:.0} achieved, {} requests, timed from when each was due): p50 **{:.1} ms**, p99 **{:.1} ms**, max {:.1} ms.",
        g.latency_achieved,
        g.latency_requests,
        g.p50 * 1000.0,
        g.p99 * 1000.0,
        g.max * 1000.0
    );
    let _ = writeln!(
        out,
        "- **Outbound**: {} messages of {} subjects ({PER_SUBJECT} each), queued first, carried to a local bus that answers at once, every subject's messages in their order: **{:.0} messages/s** ({:.2} × the ceiling) from the bus's first call to its last.",
        g.outbound_messages,
        g.outbound_subjects,
        g.outbound_rate,
        g.outbound_rate / g.publish_ceiling()
    );
    let _ = writeln!(
        out,
        "- **Peak resident memory** of the gateway over the three: **{:.1} MiB** (VmHWM).",
        g.peak_rss as f64 / MIB
    );
    out
}
