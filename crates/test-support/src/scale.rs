//! Scale-out on one machine: replicas of a module's worker as separate processes on the
//! same queue, as Kubernetes runs them, under a mixed load, with the end state checked
//! against the model. Two runs:
//!
//! - [`drain`]: the whole load is queued, then the replicas start; how long they take to
//!   handle every message, and what each replica did (messages, CPU, memory).
//! - [`rolling_restart`]: the replicas start, the load arrives in waves, and the replicas
//!   are replaced one at a time (SIGTERM, wait for the exit, start a new one, wait until it
//!   is ready) while it does; nothing may be lost or dead-lettered.
//!
//! The inventory module's load is a stock storm (FULL, NONZERO and DELTA exports, shuffled,
//! part of it delivered twice), checked against `stock_filter::Model`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use protocol::inventory::{StockScope, StockSnapshot};
use stock_filter::Model;

use crate::fleet::{Fleet, ReplicaFigures, Stopped};
use simulate::publish::OmsPublisher;
use simulate::stock::{self, Storm, StormSpec};

/// Where the fleet runs: a migrated database, a broker, a queue prefix, the worker binary.
#[derive(Debug, Clone)]
pub struct Target {
    pub database_url: String,
    pub amqp_url: String,
    pub prefix: String,
    /// The `omsc-inventory` binary.
    pub binary: PathBuf,
    /// Settings of the workers on top of the runs' own (`OMSC_PREFETCH`, …).
    pub worker_env: Vec<(String, String)>,
}

/// The load: a storm, delivered shuffled with a share of duplicates.
#[derive(Debug, Clone)]
pub struct Load {
    pub storm: StormSpec,
    pub duplicates: f64,
}

/// What a drain run measured.
#[derive(Debug, Clone)]
pub struct Drain {
    pub replicas: usize,
    pub messages: usize,
    pub sku_updates: usize,
    /// From every replica ready to every message handled.
    pub secs: f64,
    pub per_replica: Vec<ReplicaFigures>,
}

impl Drain {
    pub fn messages_per_sec(&self) -> f64 {
        self.messages as f64 / self.secs
    }
}

/// What a rolling restart did.
#[derive(Debug, Clone)]
pub struct Rolling {
    pub replicas: usize,
    pub messages: usize,
    /// Messages ready in the queue when each replica got its SIGTERM.
    pub depth_at_sigterm: Vec<u32>,
    pub stopped: Vec<Stopped>,
    /// From the first message published to the end state equal to the model (the backlog
    /// is published before the replicas start).
    pub secs: f64,
}

/// The worker's settings in these runs: a short NONZERO settle period (the end state does
/// not depend on it), no migrations (the caller migrated, as the Job does on Kubernetes).
fn worker_env(target: &Target) -> Vec<(&str, &str)> {
    let mut env = vec![
        ("DATABASE_URL", target.database_url.as_str()),
        ("AMQP_URL", target.amqp_url.as_str()),
        ("OMSC_PREFIX", target.prefix.as_str()),
        ("OMSC_MIGRATE", "false"),
        ("OMSC_NONZERO_SETTLE_SECS", "0.5"),
        ("OMSC_DRAIN_TIMEOUT_SECS", "10"),
        ("OMSC_DB_POOL_SIZE", "4"),
        ("RUST_LOG", "warn"),
    ];
    env.extend(
        target
            .worker_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    env
}

/// How the load meets the replicas in a drain run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The replicas are ready, then the load is published: a storm arriving. The broker
    /// hands deliveries round-robin, so every replica gets a share from the start.
    WhileRunning,
    /// The load is queued, then the replicas start: a backlog, as when replicas are added
    /// to a queue that grew. The time starts at the first replica's start, so it measures
    /// the replicas and not the publisher.
    Queued,
}

/// Runs `replicas` workers over the whole load, and waits until they have handled every
/// message and the stock equals the model.
pub async fn drain(
    target: &Target,
    load: &Load,
    replicas: usize,
    arrival: Arrival,
) -> anyhow::Result<Drain> {
    let storm = Storm::generate(&load.storm);
    let deliveries = storm.deliveries(load.storm.seed, true, load.duplicates);
    let publisher = declare_and_connect(target).await?;
    let mut fleet = Fleet::new("inventory", &target.binary, &worker_env(target));
    let started = if arrival == Arrival::Queued {
        publish(&publisher, &deliveries, 0).await?;
        let started = Instant::now();
        fleet.start(replicas).await?;
        started
    } else {
        fleet.start(replicas).await?;
        let started = Instant::now();
        publish(&publisher, &deliveries, 0).await?;
        started
    };
    let messages = deliveries.len();
    let deadline = started + crate::fleet::PATIENCE * 10;
    while fleet.messages().await < messages as f64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{replicas} replicas did not handle {messages} messages in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let per_replica = fleet.figures().await;
    wait_for_model(target, &storm, load.storm.scope).await?;
    fleet.stop_all().await?;
    Ok(Drain {
        replicas,
        messages,
        sku_updates: deliveries.iter().map(|s| s.stock.len()).sum(),
        secs,
        per_replica,
    })
}

/// Queues half the load (a backlog), starts `replicas` workers, publishes the other half
/// in waves, one during each replacement of a rolling restart (the SIGTERM comes while the
/// wave is going out), and waits until the stock equals the model.
pub async fn rolling_restart(
    target: &Target,
    load: &Load,
    replicas: usize,
) -> anyhow::Result<Rolling> {
    let storm = Storm::generate(&load.storm);
    let deliveries = storm.deliveries(load.storm.seed, true, load.duplicates);
    let (backlog, rest) = deliveries.split_at(deliveries.len() / 2);
    let mut waves: Vec<&[&StockSnapshot]> = vec![backlog];
    waves.extend(rest.chunks(rest.len().div_ceil(replicas).max(1)));
    let publisher = declare_and_connect(target).await?;
    let started = Instant::now();
    publish(&publisher, waves[0], 0).await?;
    let mut fleet = Fleet::new("inventory", &target.binary, &worker_env(target));
    fleet.start(replicas).await?;
    let mut depth_at_sigterm = Vec::new();
    let mut sent = waves[0].len();
    let mut stopped = Vec::new();
    for i in 0..replicas {
        let wave: &[&StockSnapshot] = waves.get(i + 1).copied().unwrap_or_default();
        let first_id = sent;
        sent += wave.len();
        // The wave goes out while the oldest replica is replaced: the SIGTERM comes under
        // load, as soon as the queue holds messages (or once the wave is out, should the
        // replicas keep up with the publisher).
        let published = std::sync::atomic::AtomicBool::new(false);
        let publishing = async {
            let result = publish(&publisher, wave, first_id).await;
            published.store(true, std::sync::atomic::Ordering::SeqCst);
            result
        };
        let replacing = async {
            // A replica that is ready has not necessarily committed a batch yet (a loaded
            // machine may take a while): the SIGTERM waits until the oldest one has, so it
            // always comes to a replica at work.
            crate::wait::try_wait_until(
                "the oldest replica to handle a message",
                Duration::from_millis(5),
                crate::fleet::PATIENCE,
                || async { Ok(fleet.oldest_messages().await > 0.0) },
            )
            .await?;
            let depth = loop {
                let depth = queue_depth(target).await?;
                if depth > 0 || published.load(std::sync::atomic::Ordering::SeqCst) {
                    break depth;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            let replaced = fleet.replace_oldest().await?;
            Ok::<_, anyhow::Error>((depth, replaced))
        };
        let (published, replaced) = tokio::join!(publishing, replacing);
        published?;
        let (depth, replaced) = replaced?;
        depth_at_sigterm.push(depth);
        stopped.push(replaced);
    }
    for wave in waves.iter().skip(replicas + 1) {
        publish(&publisher, wave, sent).await?;
        sent += wave.len();
    }
    wait_for_model(target, &storm, load.storm.scope).await?;
    let secs = started.elapsed().as_secs_f64();
    fleet.stop_all().await?;
    Ok(Rolling {
        replicas,
        messages: deliveries.len(),
        depth_at_sigterm,
        stopped,
        secs,
    })
}

async fn declare_and_connect(target: &Target) -> anyhow::Result<OmsPublisher> {
    let connection = runtime::amqp::connect(&target.amqp_url, "omsc-scale").await?;
    let channel = connection.create_channel().await?;
    runtime::Topology::new(&target.prefix, runtime::config::QueueType::Quorum)
        .declare(&channel, &inventory::QUEUE)
        .await?;
    let _ = connection.close(200, "declared".into()).await;
    OmsPublisher::connect(&target.amqp_url, &format!("{}oms.events", target.prefix))
        .await
        .context("connecting the publisher")
}

/// Publishes snapshots in the wire format, confirmed; ids continue from `first_id`.
async fn publish(
    publisher: &OmsPublisher,
    snapshots: &[&StockSnapshot],
    first_id: usize,
) -> anyhow::Result<()> {
    let messages = snapshots.iter().enumerate().map(|(i, s)| {
        let id = format!("scale-{}", first_id + i);
        (stock::method(s.scope), stock::encode(s, &id), id)
    });
    publisher.publish_all(messages, 512).await?;
    Ok(())
}

/// Messages ready in a queue of the target (`connector.inventory` or one of its siblings).
pub async fn depth(target: &Target, queue: &str) -> anyhow::Result<u32> {
    let connection = runtime::amqp::connect(&target.amqp_url, "omsc-scale").await?;
    let channel = connection.create_channel().await?;
    let queue = channel
        .queue_declare(
            format!("{}{queue}", target.prefix).as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let _ = connection.close(200, "depth read".into()).await;
    Ok(queue.message_count())
}

async fn queue_depth(target: &Target) -> anyhow::Result<u32> {
    depth(target, inventory::QUEUE.name).await
}

/// Waits until the stock of the storm's scopes equals the model's replay, no NONZERO
/// zeroing is pending, and nothing is queued or dead-lettered.
pub async fn wait_for_model(
    target: &Target,
    storm: &Storm,
    scope: StockScope,
) -> anyhow::Result<()> {
    let expected = Model::replay(scope, &storm.snapshots).rows();
    let client = runtime::db::connect(&target.database_url, "omsc-scale").await?;
    let deadline = Instant::now() + crate::fleet::PATIENCE * 5;
    loop {
        let actual: Vec<(String, String, i64, bool)> = stock_filter::read_ledger(&client, scope)
            .await?
            .into_iter()
            .map(|r| (r.scope_id, r.sku, r.quantity, r.unlimited))
            .collect();
        let pending: i64 = client
            .query_one("SELECT count(*) FROM stock_nonzero_pending", &[])
            .await?
            .get(0);
        if actual == expected && pending == 0 && queue_depth(target).await? == 0 {
            // Dead letters wait in `<queue>.dead` until the workers' keeper moves them into
            // the dead_letters table: neither may hold any.
            let queued = depth(target, &format!("{}.dead", inventory::QUEUE.name)).await?;
            let kept: i64 = client
                .query_one("SELECT count(*) FROM dead_letters", &[])
                .await?
                .get(0);
            anyhow::ensure!(
                queued == 0 && kept == 0,
                "messages were dead-lettered ({queued} queued, {kept} kept)"
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            let differing = expected.iter().filter(|e| !actual.contains(e)).count();
            anyhow::bail!(
                "the stock did not reach the model: {differing} of {} rows differ, {pending} zeroings pending",
                expected.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
