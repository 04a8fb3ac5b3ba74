//! The connector as shipped: the `omsc-inventory` binary in its own process.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use protocol::inventory::StockScope;
use stock_filter::Model;

use super::support::{self, Scratch};
use simulate::stock::{self, Storm, StormSpec};

/// How long any scenario may take before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct Throughput {
    pub messages: usize,
    pub rows: usize,
    /// Seconds between the first and last committed batch.
    pub secs: f64,
    pub publish_secs: f64,
    /// Mean messages per batch and mean seconds per batch transaction, from the worker.
    pub batches: Option<BatchShape>,
    /// CPU seconds each party spent from the worker's start to the end of the scenario.
    pub cpu: support::CpuTimes,
}

#[derive(Debug, Clone, Copy)]
pub struct BatchShape {
    pub count: f64,
    pub mean_messages: f64,
    pub mean_apply_secs: f64,
}

pub(super) async fn batch_shape(http: &str) -> Option<BatchShape> {
    let count = scrape(http, "omsc_batch_messages_count").await?;
    let messages = scrape(http, "omsc_batch_messages_sum").await?;
    let apply = scrape(http, "omsc_batch_apply_seconds_sum").await?;
    (count > 0.0).then(|| BatchShape {
        count,
        mean_messages: messages / count,
        mean_apply_secs: apply / count,
    })
}

impl Throughput {
    pub fn messages_per_sec(&self) -> f64 {
        self.messages as f64 / self.secs
    }
    pub fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.secs
    }
}

/// a. One-SKU DELTAs, each updating an existing row: the queue is filled first, then the
/// worker drains it, exactly like the broker ceiling.
pub async fn delta_stream(setup: &super::Setup) -> anyhow::Result<Throughput> {
    let scratch = Scratch::new(setup, "delta").await?;
    let n = setup.sizes.delta_messages;
    let client = scratch.connector_session().await?;
    support::seed(&client, "EU", n).await?;
    let start = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
    let snapshots: Vec<_> = (0..n)
        .map(|i| {
            support::delta(
                "EU",
                support::sku(i),
                5,
                start + chrono::Duration::microseconds(i as i64),
            )
        })
        .collect();
    let publisher = scratch.publisher().await?;
    let publish_secs = support::publish(&publisher, &snapshots)
        .await?
        .as_secs_f64();
    drop(snapshots);
    let http = support::free_address()?;
    let cpu_before = support::CpuTimes::read(0);
    let worker = scratch.spawn_worker(&setup.worker, &http, &[])?;
    let pid = worker.id().unwrap_or_default();
    let done = "source_updated_at >= '2026-06-01T00:00:00Z'";
    support::wait_until(
        "the DELTA stream to be applied",
        Duration::from_millis(100),
        PATIENCE,
        || async { Ok(support::count(&client, done).await? == n as i64) },
    )
    .await?;
    let secs = support::write_window(&client, done).await?;
    let batches = batch_shape(&http).await;
    let cpu = support::CpuTimes::read(pid).since(cpu_before);
    support::stop(worker).await?;
    scratch.drop_all().await;
    Ok(Throughput {
        messages: n,
        rows: n,
        secs,
        publish_secs,
        batches,
        cpu,
    })
}

#[derive(Debug, Clone)]
pub struct FullSnapshot {
    /// Into an empty table (the first FULL).
    pub initial: Throughput,
    /// Over every row again with a newer version (the daily FULL).
    pub resync: Throughput,
    /// The worker's peak resident memory over both.
    pub peak_rss: u64,
    pub prefetch: Option<f64>,
}

/// b. A FULL of `full_skus` SKUs in 10,000-SKU messages, twice; e. the worker's peak memory.
pub async fn full_snapshot(setup: &super::Setup) -> anyhow::Result<FullSnapshot> {
    let scratch = Scratch::new(setup, "full").await?;
    let skus = setup.sizes.full_skus;
    let client = scratch.connector_session().await?;
    let publisher = scratch.publisher().await?;
    let http = support::free_address()?;
    let worker = scratch.spawn_worker(&setup.worker, &http, &[])?;
    let pid = worker.id().unwrap_or_default();
    let mut passes = Vec::new();
    for (pass, stamp) in [(1, "2026-06-01T00:00:00Z"), (2, "2026-06-02T00:00:00Z")] {
        let created_on = stamp.parse()?;
        let messages = support::full_export("EU", skus, created_on, pass);
        let count = messages.len();
        // Published while the worker runs: a FULL arrives on a live connector.
        let publish_secs = support::publish(&publisher, &messages).await?.as_secs_f64();
        drop(messages);
        let cpu_before = support::CpuTimes::read(pid);
        let done = format!("source_updated_at = '{stamp}'");
        support::wait_until(
            "the FULL to be applied",
            Duration::from_millis(100),
            PATIENCE,
            || async { Ok(support::count(&client, &done).await? == skus as i64) },
        )
        .await?;
        passes.push(Throughput {
            messages: count,
            rows: skus,
            secs: support::write_window(&client, &done).await?,
            publish_secs,
            batches: batch_shape(&http).await,
            cpu: support::CpuTimes::read(pid).since(cpu_before),
        });
    }
    let peak_rss = support::peak_rss(pid).unwrap_or(0);
    let prefetch = scrape(&http, "omsc_consumer_prefetch").await;
    support::stop(worker).await?;
    scratch.drop_all().await;
    let resync = passes.pop().expect("two passes");
    let initial = passes.pop().expect("two passes");
    Ok(FullSnapshot {
        initial,
        resync,
        peak_rss,
        prefetch,
    })
}

#[derive(Debug, Clone)]
pub struct Mixed {
    pub messages: usize,
    pub sku_updates: usize,
    pub rows: usize,
    /// From the worker's start to the table equal to the model (NONZERO settle included).
    pub secs: f64,
    pub settle_secs: f64,
}

/// c. FULL, NONZERO and DELTA exports over several aggregates, shuffled, 5 % delivered twice;
/// the end state is verified against the model.
pub async fn mixed_storm(setup: &super::Setup) -> anyhow::Result<Mixed> {
    let scratch = Scratch::new(setup, "mixed").await?;
    let spec = StormSpec {
        seed: 2026,
        aggregates: setup.sizes.mixed_aggregates,
        skus: setup.sizes.mixed_skus,
        exports: setup.sizes.mixed_exports,
        mix: (2, 1, 7),
        chunk_size: 10_000,
        delta_skus: 20,
        ..StormSpec::default()
    };
    let storm = Storm::generate(&spec);
    let deliveries: Vec<_> = storm
        .deliveries(2026, true, 0.05)
        .into_iter()
        .cloned()
        .collect();
    let sku_updates = deliveries.iter().map(|s| s.stock.len()).sum();
    let publisher = scratch.publisher().await?;
    support::publish(&publisher, &deliveries).await?;
    let expected = Model::replay(StockScope::Aggregate, &storm.snapshots).rows();
    let client = scratch.connector_session().await?;
    let settle_secs = 1.0;
    let http = support::free_address()?;
    let started = Instant::now();
    let worker =
        scratch.spawn_worker(&setup.worker, &http, &[("OMSC_NONZERO_SETTLE_SECS", "1")])?;
    support::wait_until(
        "the storm to equal the model",
        Duration::from_millis(250),
        PATIENCE,
        || async {
            let pending: i64 = client
                .query_one("SELECT count(*) FROM stock_nonzero_pending", &[])
                .await?
                .get(0);
            if pending > 0 {
                return Ok(false);
            }
            let actual: Vec<_> = stock_filter::read_ledger(&client, StockScope::Aggregate)
                .await?
                .into_iter()
                .map(|r| (r.scope_id, r.sku, r.quantity, r.unlimited))
                .collect();
            Ok(actual == expected)
        },
    )
    .await?;
    let secs = started.elapsed().as_secs_f64();
    support::stop(worker).await?;
    scratch.drop_all().await;
    Ok(Mixed {
        messages: deliveries.len(),
        sku_updates,
        rows: expected.len(),
        secs,
        settle_secs,
    })
}

#[derive(Debug, Clone)]
pub struct Latency {
    pub offered_rate: u32,
    pub achieved_rate: f64,
    pub messages: usize,
    /// Publish to the commit of the transaction that wrote the message, seconds.
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// The worker's own p50/p99 time from transaction start to commit (upper bucket bounds).
    pub apply_p50: f64,
    pub apply_p99: f64,
    /// The machine's floor: p50/p99 of a one-row transaction committed alone, seconds.
    pub commit_floor_p50: f64,
    pub commit_floor_p99: f64,
    /// The broker's part: publish → delivery to a plain consumer at the same load, seconds.
    pub delivery_floor_p50: f64,
    pub delivery_floor_p99: f64,
}

/// d. One-SKU DELTAs at a steady offered rate; for each, the time from publish (its
/// `created_on`, taken just before publishing) to the commit of the transaction that wrote
/// it. Commits are observed by a listener: a statement trigger in the scenario's database
/// notifies the transaction id, and PostgreSQL delivers a notification only at commit.
pub async fn latency(setup: &super::Setup) -> anyhow::Result<Latency> {
    let scratch = Scratch::new(setup, "latency").await?;
    let client = scratch.connector_session().await?;
    let (commit_floor_p50, commit_floor_p99) = commit_floor(&client).await?;
    let (delivery_floor_p50, delivery_floor_p99) = delivery_floor(&scratch, setup).await?;
    let commits = CommitListener::start(&scratch.database_url, &client, "stock_items").await?;
    let http = support::free_address()?;
    let worker = scratch.spawn_worker(&setup.worker, &http, &[])?;
    support::wait_until(
        "the worker to be ready",
        Duration::from_millis(50),
        PATIENCE,
        || async { Ok(http_status(&http, "/readyz").await == Some(200)) },
    )
    .await?;
    let rate = setup.sizes.latency_rate;
    let total = (u64::from(rate) * setup.sizes.latency_secs) as usize;
    let (achieved_rate, _) = publish_steady(&scratch, rate, total, "lat").await?;
    support::wait_until(
        "every message to be applied",
        Duration::from_millis(100),
        PATIENCE,
        || async { Ok(support::count(&client, "true").await? == total as i64) },
    )
    .await?;
    let writers = client
        .query("SELECT DISTINCT xmin::text::int8 FROM stock_items", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let committed = commits.finish(writers).await?;
    let mut latencies: Vec<f64> = client
        .query(
            "SELECT xmin::text::int8, extract(epoch FROM source_updated_at)::float8 FROM stock_items",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            let xid: i64 = r.get(0);
            let published: f64 = r.get(1);
            committed
                .get(&xid)
                .map_or(f64::NAN, |commit| commit - published)
        })
        .collect();
    anyhow::ensure!(
        latencies.iter().all(|l| l.is_finite()),
        "a row was written by a transaction whose commit was not observed"
    );
    latencies.sort_by(f64::total_cmp);
    let (apply_p50, apply_p99) = histogram_quantiles(&http, "omsc_batch_apply_seconds").await;
    support::stop(worker).await?;
    scratch.drop_all().await;
    Ok(Latency {
        offered_rate: rate,
        achieved_rate,
        messages: total,
        p50: support::percentile(&latencies, 50.0),
        p99: support::percentile(&latencies, 99.0),
        max: latencies.last().copied().unwrap_or(f64::NAN),
        apply_p50,
        apply_p99,
        commit_floor_p50,
        commit_floor_p99,
        delivery_floor_p50,
        delivery_floor_p99,
    })
}

/// Publishes `total` one-SKU DELTAs (to distinct SKUs, stamped with the time of publishing)
/// at a steady `rate`, with confirms; returns the achieved rate and when each left.
async fn publish_steady(
    scratch: &Scratch,
    rate: u32,
    total: usize,
    label: &str,
) -> anyhow::Result<(f64, Vec<Instant>)> {
    let method = stock::method(StockScope::Aggregate);
    support::publish_steady(scratch, rate, total, |i| {
        let snapshot = support::delta("EU", support::sku(i), 3, Utc::now());
        support::Steady {
            method,
            body: stock::encode(&snapshot, &format!("{label}-{i}")),
            id: None,
        }
    })
    .await
}

/// The broker's part of the latency: the same steady load to the same queue, consumed by a
/// plain consumer that only acknowledges (no worker, no database). Publish → delivery p50
/// and p99, seconds. One queue and one consumer keep the order, so the k-th delivery is the
/// k-th message published.
async fn delivery_floor(scratch: &Scratch, setup: &super::Setup) -> anyhow::Result<(f64, f64)> {
    use futures::StreamExt as _;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    let rate = setup.sizes.latency_rate;
    let total = (u64::from(rate) * setup.sizes.latency_secs.min(10)) as usize;
    let connection = runtime::amqp::connect(&scratch.amqp_url, "omsc-bench-floor").await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(1000, BasicQosOptions { global: false })
        .await?;
    let queue = format!("{}{}", scratch.prefix, inventory::QUEUE.name);
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "delivery-floor".into(),
            BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await?;
    let receiver = tokio::spawn(async move {
        let mut received = Vec::with_capacity(total);
        while received.len() < total {
            let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("the consumer ended"))??;
            received.push(Instant::now());
            delivery.ack(BasicAckOptions::default()).await?;
        }
        let _ = connection.close(200, "done".into()).await;
        Ok::<_, anyhow::Error>(received)
    });
    let (_, sent) = publish_steady(scratch, rate, total, "floor").await?;
    let received = receiver.await??;
    let mut times: Vec<f64> = sent
        .iter()
        .zip(&received)
        .map(|(s, r)| r.saturating_duration_since(*s).as_secs_f64())
        .collect();
    times.sort_by(f64::total_cmp);
    Ok((
        support::percentile(&times, 50.0),
        support::percentile(&times, 99.0),
    ))
}

/// Commit times, as seen by a session that listens for the notification a statement trigger
/// on the watched table sends with its transaction id (delivered only when that commits).
pub(crate) struct CommitListener {
    seen: tokio::sync::mpsc::UnboundedReceiver<(i64, f64)>,
    /// The listening session; its connection is driven by a task until it is dropped.
    _listener: tokio_postgres::Client,
}

const NOTIFY_COMMITS: &str = "
    CREATE OR REPLACE FUNCTION bench_notify_commit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('bench_commits', (txid_current() % 4294967296)::text);
        RETURN NULL;
    END $$;";

impl CommitListener {
    /// Starts listening for the commits of the transactions that write `table`.
    pub(crate) async fn start(
        database_url: &str,
        client: &tokio_postgres::Client,
        table: &str,
    ) -> anyhow::Result<Self> {
        use futures::StreamExt as _;
        client.batch_execute(NOTIFY_COMMITS).await?;
        client
            .batch_execute(&format!(
                "CREATE TRIGGER bench_notify_commit AFTER INSERT OR UPDATE ON {table}
                     FOR EACH STATEMENT EXECUTE FUNCTION bench_notify_commit()"
            ))
            .await?;
        let (listener, mut connection) =
            tokio_postgres::connect(database_url, tokio_postgres::NoTls).await?;
        let (tx, seen) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let tokio_postgres::AsyncMessage::Notification(n) = message {
                    let at = Utc::now().timestamp_micros() as f64 / 1e6;
                    if let Ok(xid) = n.payload().parse::<i64>() {
                        let _ = tx.send((xid, at));
                    }
                }
            }
        });
        listener.batch_execute("LISTEN bench_commits").await?;
        Ok(Self {
            seen,
            _listener: listener,
        })
    }

    /// The commit time of each of the `writers` (transaction ids, as `xmin::text::int8`).
    /// It waits for the commit of each writer itself, not for as many commits as there are
    /// writers: a transaction whose statement wrote nothing (all stale) or whose rows were
    /// overwritten later notifies too, and counting it would stop the wait one writer early.
    pub(crate) async fn finish(
        mut self,
        writers: std::collections::HashSet<i64>,
    ) -> anyhow::Result<std::collections::HashMap<i64, f64>> {
        anyhow::ensure!(!writers.is_empty(), "nothing was written");
        let mut committed = std::collections::HashMap::new();
        while !writers.iter().all(|xid| committed.contains_key(xid)) {
            let next = tokio::time::timeout(Duration::from_secs(30), self.seen.recv()).await;
            match next {
                Ok(Some((xid, at))) => {
                    committed.entry(xid).or_insert(at);
                }
                _ => anyhow::bail!(
                    "saw {} of {} writers' commits before the listener went quiet",
                    writers.iter().filter(|x| committed.contains_key(x)).count(),
                    writers.len()
                ),
            }
        }
        Ok(committed)
    }
}

/// The machine's commit latency with nothing else to do: one-row transactions committed one
/// after another, the floor under any publish → commit figure (the WAL flush of the commit).
async fn commit_floor(client: &tokio_postgres::Client) -> anyhow::Result<(f64, f64)> {
    client
        .batch_execute("CREATE TABLE bench_commit_floor (id int PRIMARY KEY, n int8 NOT NULL); INSERT INTO bench_commit_floor VALUES (1, 0)")
        .await?;
    let update = client
        .prepare("UPDATE bench_commit_floor SET n = n + 1 WHERE id = 1")
        .await?;
    let mut times = Vec::with_capacity(2_000);
    for _ in 0..2_000 {
        let started = Instant::now();
        client.batch_execute("BEGIN").await?;
        client.execute(&update, &[]).await?;
        client.batch_execute("COMMIT").await?;
        times.push(started.elapsed().as_secs_f64());
    }
    client
        .batch_execute("DROP TABLE bench_commit_floor")
        .await?;
    times.sort_by(f64::total_cmp);
    Ok((
        support::percentile(&times, 50.0),
        support::percentile(&times, 99.0),
    ))
}

/// The status of a GET; `None` when nothing answers.
pub(super) async fn http_status(addr: &str, path: &str) -> Option<u16> {
    Some(test_support::http::get(addr, path).await.0).filter(|&status| status != 0)
}

/// The body of a GET; `None` when nothing answers.
pub(super) async fn http_get(addr: &str, path: &str) -> Option<String> {
    let (status, body) = test_support::http::get(addr, path).await;
    (status != 0).then_some(body)
}

/// The first sample of a metric, summed over its series.
pub(super) async fn scrape(addr: &str, name: &str) -> Option<f64> {
    let body = http_get(addr, "/metrics").await?;
    let values: Vec<f64> = body
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// p50 and p99 of a Prometheus histogram, as the upper bounds of their buckets.
pub(crate) async fn histogram_quantiles(addr: &str, name: &str) -> (f64, f64) {
    match http_get(addr, "/metrics").await {
        Some(body) => quantiles(&body, name),
        None => (f64::NAN, f64::NAN),
    }
}

fn quantiles(body: &str, name: &str) -> (f64, f64) {
    let prefix = format!("{name}_bucket");
    let mut buckets: Vec<(f64, f64)> = body
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            // The last `le="…"` (a label such as `module="…"` also contains `le="`).
            let le = l.rsplit("le=\"").next()?.split('"').next()?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count: f64 = l.rsplit_once(' ')?.1.trim().parse().ok()?;
            Some((bound, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    let quantile = |q: f64| {
        buckets
            .iter()
            .find(|(_, count)| *count >= q * total)
            .map_or(f64::NAN, |(bound, _)| *bound)
    };
    (quantile(0.5), quantile(0.99))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_the_upper_bounds_of_the_buckets_that_reach_them() {
        let body = "# HELP x\nx_bucket{module=\"m\",le=\"0.001\"} 10\nx_bucket{module=\"m\",le=\"0.002\"} 60\n\
                    x_bucket{module=\"m\",le=\"0.005\"} 99\nx_bucket{module=\"m\",le=\"+Inf\"} 100\nx_sum 1\n";
        assert_eq!(quantiles(body, "x"), (0.002, 0.005));
    }
}
