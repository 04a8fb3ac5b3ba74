//! What the scenarios share: throwaway databases and prefixes, publishing raw bodies,
//! running the worker binary, waiting on conditions.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use protocol::inventory::{SnapshotMode, StockEntry, StockScope, StockSnapshot};
use tokio::process::{Child, Command};

use simulate::publish::OmsPublisher;
use simulate::stock;

/// A database and a queue prefix of one scenario; dropped at the end.
pub struct Scratch {
    pub name: String,
    pub database_url: String,
    pub prefix: String,
    pub amqp_url: String,
    server: String,
}

impl Scratch {
    /// A fresh database with the connector's schema, and a fresh prefix with the inventory
    /// topology declared.
    pub async fn new(setup: &super::Setup, label: &str) -> anyhow::Result<Self> {
        let tag = format!(
            "{label}_{}_{:04x}",
            std::process::id(),
            rand::random::<u16>()
        );
        let name = format!("omsc_bench_{tag}");
        let server = setup.database_server.trim_end_matches('/').to_owned();
        let database_url = format!("{server}/{name}");
        runtime::db::migrate(&database_url).await?;
        let scratch = Self {
            name,
            database_url,
            prefix: format!("bench-{tag}."),
            amqp_url: setup.amqp_url.clone(),
            server,
        };
        let connection = runtime::amqp::connect(&scratch.amqp_url, "omsc-bench").await?;
        let channel = connection.create_channel().await?;
        runtime::Topology::new(&scratch.prefix, runtime::config::QueueType::Quorum)
            .declare(&channel, &inventory::QUEUE)
            .await?;
        let _ = connection.close(200, "declared".into()).await;
        Ok(scratch)
    }

    /// The queue standing for the OMS on the commerce exchange, where scenarios need one.
    pub fn inbox(&self) -> String {
        format!("{}oms.inbox", self.prefix)
    }

    /// A session marked as the connector's, so it may write OMS-owned tables (for seeding).
    pub async fn connector_session(&self) -> anyhow::Result<tokio_postgres::Client> {
        runtime::db::connect(&self.database_url, "omsc-bench").await
    }

    pub async fn publisher(&self) -> anyhow::Result<OmsPublisher> {
        OmsPublisher::connect(&self.amqp_url, &format!("{}oms.events", self.prefix))
            .await
            .context("connecting the publisher")
    }

    /// Queues `messages` on `oms.events`, confirmed, before a worker starts: the backlog a
    /// drain scenario measures.
    pub async fn queue_oms_messages(
        &self,
        messages: &[simulate::orders::OmsMessage],
    ) -> anyhow::Result<()> {
        self.publisher()
            .await?
            .publish_all(
                messages
                    .iter()
                    .map(|m| (m.method, m.body.clone(), m.id.clone())),
                1024,
            )
            .await?;
        Ok(())
    }

    /// Starts the worker binary on this scratch space; `http` is its metrics address.
    pub fn spawn_worker(
        &self,
        binary: &Path,
        http: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Child> {
        let mut command = Command::new(binary);
        command
            .env("DATABASE_URL", &self.database_url)
            .env("AMQP_URL", &self.amqp_url)
            .env("OMSC_PREFIX", &self.prefix)
            .env("OMSC_HTTP_ADDR", http)
            .env("RUST_LOG", "warn")
            // A scratch worker must not announce itself to the OMS.
            .env("OMSC_REGISTER", "false")
            // As the container image and `make run` start it.
            .env(
                "MALLOC_MMAP_THRESHOLD_",
                std::env::var("MALLOC_MMAP_THRESHOLD_").unwrap_or_else(|_| "131072".into()),
            )
            .kill_on_drop(true);
        for (k, v) in extra {
            command.env(k, v);
        }
        command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))
    }

    pub async fn drop_all(self) {
        if let Ok(connection) = runtime::amqp::connect(&self.amqp_url, "omsc-bench").await
            && let Ok(channel) = connection.create_channel().await
        {
            let topology = runtime::Topology::new(&self.prefix, runtime::config::QueueType::Quorum);
            let module_queues = [
                inventory::QUEUE,
                sales::QUEUE,
                postsales::QUEUE,
                catalog::QUEUE,
            ]
            .iter()
            .flat_map(|spec| topology.queues(spec))
            .map(|(queue, _)| queue);
            for queue in module_queues.chain([self.inbox()]) {
                let _ = channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            for exchange in [topology.oms_exchange(), topology.commerce_exchange()] {
                let _ = channel
                    .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
            let _ = connection.close(200, "bench done".into()).await;
        }
        if let Ok(admin) =
            runtime::db::connect(&format!("{}/postgres", self.server), "omsc-bench").await
        {
            let _ = admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    self.name
                ))
                .await;
        }
    }
}

/// A worker started on a filled queue and timed until it handled every message.
pub struct Drained {
    /// The worker, still running (for the caller's last reads of its metrics).
    pub worker: Child,
    /// Its metrics address.
    pub http: String,
    /// From the worker ready to its last message handled.
    pub secs: f64,
    /// CPU each party spent from the worker's start to its last message handled.
    pub cpu: CpuTimes,
    /// The worker's peak resident memory.
    pub peak_rss: u64,
    /// Messages it retried or dead-lettered (0 expected of a well-formed lifecycle).
    pub not_applied: f64,
}

impl Scratch {
    /// Starts `binary` on the scenario's filled queue and waits until its
    /// `omsc_messages_total` reaches `total`.
    pub async fn drain(
        &self,
        binary: &Path,
        total: usize,
        patience: Duration,
    ) -> anyhow::Result<Drained> {
        use super::connector::{http_get, http_status, scrape};
        let http = free_address()?;
        let cpu_before = CpuTimes::read(0);
        let worker = self.spawn_worker(binary, &http, &[])?;
        let pid = worker.id().unwrap_or_default();
        wait_until(
            "the worker to be ready",
            Duration::from_millis(20),
            patience,
            || async { Ok(http_status(&http, "/readyz").await == Some(200)) },
        )
        .await?;
        let ready = Instant::now();
        wait_until(
            "the queued messages to be handled",
            Duration::from_millis(20),
            patience,
            || async {
                let handled = scrape(&http, "omsc_messages_total").await.unwrap_or(0.0);
                Ok(handled >= total as f64)
            },
        )
        .await?;
        let secs = ready.elapsed().as_secs_f64();
        let cpu = CpuTimes::read(pid).since(cpu_before);
        let peak_rss = peak_rss(pid).unwrap_or(0);
        let body = http_get(&http, "/metrics").await.unwrap_or_default();
        let not_applied = body
            .lines()
            .filter(|l| {
                l.starts_with("omsc_messages_total")
                    && (l.contains("outcome=\"retried\"") || l.contains("outcome=\"dead\""))
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .fold(0.0, |sum, n| sum + n);
        Ok(Drained {
            worker,
            http,
            secs,
            cpu,
            peak_rss,
            not_applied,
        })
    }
}

/// One message of a steady stream: its method (the routing key), body and message id.
pub struct Steady {
    pub method: &'static str,
    pub body: Vec<u8>,
    pub id: Option<String>,
}

/// Publishes `total` messages to the scenario's `oms.events` at a steady `rate`, persistent
/// and confirmed (the confirms are awaited aside, so they do not pace the stream). The i-th
/// is built by `message(i)` when it is due, so a timestamp in it is its publishing time.
/// Returns the achieved rate and when each message left.
pub async fn publish_steady(
    scratch: &Scratch,
    rate: u32,
    total: usize,
    mut message: impl FnMut(usize) -> Steady,
) -> anyhow::Result<(f64, Vec<Instant>)> {
    let connection = runtime::amqp::connect(&scratch.amqp_url, "omsc-bench-latency").await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(Default::default()).await?;
    let exchange = format!("{}oms.events", scratch.prefix);
    let (confirms_tx, mut confirms_rx) = tokio::sync::mpsc::unbounded_channel();
    let confirmer = tokio::spawn(async move {
        while let Some(confirm) = confirms_rx.recv().await {
            let confirm: lapin::PublisherConfirm = confirm;
            confirm.await?;
        }
        Ok::<_, lapin::Error>(())
    });
    let mut sent = Vec::with_capacity(total);
    let started = tokio::time::Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    for i in 0..total {
        tokio::time::sleep_until(started + interval.mul_f64(i as f64)).await;
        let Steady { method, body, id } = message(i);
        let mut properties = lapin::BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        if let Some(id) = id {
            properties = properties.with_message_id(id.into());
        }
        sent.push(Instant::now());
        let confirm = channel
            .basic_publish(
                exchange.as_str().into(),
                method.into(),
                lapin::options::BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await?;
        let _ = confirms_tx.send(confirm);
    }
    let achieved_rate = total as f64 / started.elapsed().as_secs_f64();
    drop(confirms_tx);
    confirmer.await??;
    let _ = connection.close(200, "done".into()).await;
    Ok((achieved_rate, sent))
}

/// Stops a worker the way Kubernetes does (SIGTERM), and kills it if it does not stop.
pub async fn stop(mut worker: Child) -> anyhow::Result<()> {
    if let Some(pid) = worker.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    match tokio::time::timeout(Duration::from_secs(20), worker.wait()).await {
        Ok(status) => {
            status?;
        }
        Err(_) => worker.kill().await?,
    }
    Ok(())
}

/// A free local port for a worker's HTTP server.
pub fn free_address() -> anyhow::Result<String> {
    Ok(test_support::http::free_address()?.to_string())
}

pub use test_support::process::peak_rss;
pub use test_support::wait::try_wait_until as wait_until;

pub fn sku(i: usize) -> String {
    stock::sku_name(i)
}

/// A one-SKU DELTA: the smallest stock message, the bulk of a busy day.
pub fn delta(
    aggregate: &str,
    sku: String,
    quantity: i64,
    created_on: DateTime<Utc>,
) -> StockSnapshot {
    StockSnapshot {
        scope: StockScope::Aggregate,
        scope_id: aggregate.to_owned(),
        mode: SnapshotMode::Delta,
        created_on,
        stock: vec![StockEntry {
            sku,
            quantity,
            unlimited: false,
            inflight_backorders: None,
        }],
        batch: None,
    }
}

/// The messages of one FULL export of `skus` SKUs in chunks of 10,000.
pub fn full_export(
    aggregate: &str,
    skus: usize,
    created_on: DateTime<Utc>,
    quantity: i64,
) -> Vec<StockSnapshot> {
    (0..skus)
        .step_by(10_000)
        .map(|start| StockSnapshot {
            scope: StockScope::Aggregate,
            scope_id: aggregate.to_owned(),
            mode: SnapshotMode::Full,
            created_on,
            stock: (start..(start + 10_000).min(skus))
                .map(|i| StockEntry {
                    sku: sku(i),
                    quantity: quantity + (i % 97) as i64,
                    unlimited: false,
                    inflight_backorders: None,
                })
                .collect(),
            batch: None,
        })
        .collect()
}

/// Publishes snapshots in the wire format, confirmed, `window` unconfirmed at a time.
pub async fn publish(
    publisher: &OmsPublisher,
    snapshots: &[StockSnapshot],
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let messages = snapshots.iter().enumerate().map(|(i, s)| {
        let id = format!("bench-{i}");
        (stock::method(s.scope), stock::encode(s, &id), id)
    });
    publisher.publish_all(messages, 1024).await?;
    Ok(started.elapsed())
}

/// Seconds between the first and the last transaction that wrote rows matching `filter`.
pub async fn write_window(client: &tokio_postgres::Client, filter: &str) -> anyhow::Result<f64> {
    let row = client
        .query_one(
            &format!("SELECT extract(epoch FROM max(updated_at) - min(updated_at))::float8 FROM stock_items WHERE {filter}"),
            &[],
        )
        .await?;
    Ok(row.get::<_, Option<f64>>(0).unwrap_or(0.0))
}

pub async fn count(client: &tokio_postgres::Client, filter: &str) -> anyhow::Result<i64> {
    Ok(client
        .query_one(
            &format!("SELECT count(*) FROM stock_items WHERE {filter}"),
            &[],
        )
        .await?
        .get(0))
}

/// Percentile (0–100) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Seeds `stock_items` with `skus` rows of one aggregate at an old version, as a daily
/// stream of DELTAs finds them, without timing it.
pub async fn seed(
    client: &tokio_postgres::Client,
    aggregate: &str,
    skus: usize,
) -> anyhow::Result<()> {
    client
        .execute(
            "INSERT INTO stock_items (aggregate_id, sku, quantity, source_updated_at)
             SELECT $1, 'SKU-' || lpad(i::text, 7, '0'), 10, '2020-01-01T00:00:00Z'
               FROM generate_series(0, $2::int - 1) AS i",
            &[&aggregate, &(skus as i32)],
        )
        .await?;
    client.batch_execute("ANALYZE stock_items").await?;
    Ok(())
}

/// CPU seconds spent so far by the worker, the broker (`beam.smp`) and PostgreSQL (every
/// `postgres` process), read from /proc: where the time of a scenario went.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    pub worker: f64,
    pub broker: f64,
    pub database: f64,
}

impl CpuTimes {
    pub fn read(worker_pid: u32) -> Self {
        // SAFETY-free: sysconf is not exposed by std; Linux reports stat times in USER_HZ,
        // which is 100 on every architecture the project runs on.
        const TICKS_PER_SEC: f64 = 100.0;
        let mut times = CpuTimes::default();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return times;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // comm is in parentheses and may contain spaces; the fields follow the last ')'.
            let Some((head, tail)) = stat.rsplit_once(')') else {
                continue;
            };
            let comm = head.split_once('(').map_or("", |(_, c)| c);
            let fields: Vec<&str> = tail.split_whitespace().collect();
            let ticks = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| f.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            // utime and stime are fields 14 and 15 of stat, 12 and 13 after the comm.
            let secs = (ticks(11) + ticks(12)) / TICKS_PER_SEC;
            if pid == worker_pid {
                times.worker += secs;
            } else if comm == "beam.smp" {
                times.broker += secs;
            } else if comm == "postgres" {
                times.database += secs;
            }
        }
        times
    }

    /// CPU per item (`items` messages or orders) of the worker, the broker and PostgreSQL,
    /// in microseconds.
    pub fn per_item_micros(&self, items: usize) -> (f64, f64, f64) {
        let per = |secs: f64| secs / items.max(1) as f64 * 1e6;
        (per(self.worker), per(self.broker), per(self.database))
    }

    pub fn since(self, before: CpuTimes) -> CpuTimes {
        CpuTimes {
            worker: self.worker - before.worker,
            broker: self.broker - before.broker,
            database: self.database - before.database,
        }
    }
}
