//! `omsc-bench`: the connector measured against the machine's own ceilings, in one run.
//!
//! Every scenario gets its own database and queue prefix. The connector is the shipped
//! `omsc-inventory` binary in its own process, fed by the simulator in the real wire format;
//! its processing window is read from the rows it committed (`updated_at` is the start of
//! the transaction that wrote a row), so start-up does not count and nothing is guessed.

mod ceilings;
mod connector;
mod gateway;
mod modules;
mod naive;
mod order_latency;
mod postsales;
mod report;
pub mod scale_out;
mod support;

use std::path::PathBuf;

pub use report::Report;

/// How big the run is.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// One-SKU DELTA messages in the stream (and messages in the broker ceiling).
    pub delta_messages: usize,
    /// SKUs of the FULL snapshot (in 10,000-SKU messages).
    pub full_skus: usize,
    /// Messages the naive peer gets (it is slow; its rate does not depend on the count).
    pub naive_messages: usize,
    /// Aggregates and SKUs per aggregate of the mixed storm.
    pub mixed_aggregates: usize,
    pub mixed_skus: usize,
    pub mixed_exports: usize,
    /// Seconds of steady load for the latency scenario, and its rate.
    pub latency_secs: u64,
    pub latency_rate: u32,
    /// Orders placed, exported and taken through their lifecycle by the sales module.
    pub orders: usize,
    /// Products in the catalog module's full export.
    pub products: usize,
    /// Returns (each with its refund) whose OMS messages the post-sales module applies.
    pub returns: usize,
}

impl Sizes {
    pub fn full() -> Self {
        Self {
            delta_messages: 200_000,
            full_skus: 1_000_000,
            naive_messages: 20_000,
            mixed_aggregates: 8,
            mixed_skus: 20_000,
            mixed_exports: 60,
            latency_secs: 30,
            latency_rate: 2_000,
            orders: 20_000,
            products: 200_000,
            returns: 5_000,
        }
    }

    pub fn quick() -> Self {
        Self {
            delta_messages: 10_000,
            full_skus: 100_000,
            naive_messages: 2_000,
            mixed_aggregates: 3,
            mixed_skus: 5_000,
            mixed_exports: 20,
            latency_secs: 5,
            latency_rate: 2_000,
            orders: 300,
            products: 10_000,
            returns: 300,
        }
    }
}

/// Where things are. The other modules' binaries (`omsc-sales`, `omsc-catalog`) are taken
/// from beside `worker`.
#[derive(Debug, Clone)]
pub struct Setup {
    pub amqp_url: String,
    /// A URL to the server; each scenario uses its own database on it.
    pub database_server: String,
    /// The `omsc-inventory` binary to measure.
    pub worker: PathBuf,
    pub sizes: Sizes,
    /// Scenarios to run (`broker`, `postgres`, `naive`, `delta`, `full`, `mixed`, `latency`,
    /// `orders`, `order-latency`, `catalog`, `gateway`, `postsales`); empty: all.
    pub only: Vec<String>,
}

impl Setup {
    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

/// Asks PostgreSQL to write out its dirty pages now, so that a scenario does not pay for the
/// checkpoint its predecessor made due (a 1M-row FULL writes gigabytes of WAL). Needs the
/// right to CHECKPOINT; without it the scenarios run as they come.
async fn quiet_database(setup: &Setup) {
    let admin = format!("{}/postgres", setup.database_server.trim_end_matches('/'));
    if let Ok(client) = runtime::db::connect(&admin, "omsc-bench").await
        && let Err(e) = client.batch_execute("CHECKPOINT").await
    {
        eprintln!("(no CHECKPOINT between scenarios: {e})");
    }
}

/// PostgreSQL's `autovacuum` setting, which decides whether the tables a scenario grows get
/// statistics while it runs.
async fn autovacuum(setup: &Setup) -> Option<String> {
    let admin = format!("{}/postgres", setup.database_server.trim_end_matches('/'));
    let client = runtime::db::connect(&admin, "omsc-bench").await.ok()?;
    let row = client.query_one("SHOW autovacuum", &[]).await.ok()?;
    Some(row.get(0))
}

/// Runs every measurement and returns the figures.
pub async fn run(setup: &Setup) -> anyhow::Result<Report> {
    let mut report = Report::new(setup);
    report.autovacuum = autovacuum(setup).await;
    if setup.wants("broker") {
        quiet_database(setup).await;
        eprintln!("ceilings: broker consume+ack …");
        report.broker = Some(ceilings::broker(setup).await?);
    }
    if setup.wants("postgres") {
        quiet_database(setup).await;
        eprintln!("ceilings: PostgreSQL batched compare-and-set …");
        report.postgres = Some(ceilings::postgres(setup).await?);
    }
    if setup.wants("naive") {
        quiet_database(setup).await;
        eprintln!("naive peer …");
        report.naive = Some(naive::run(setup).await?);
    }
    if setup.wants("delta") {
        quiet_database(setup).await;
        eprintln!("connector: DELTA stream …");
        report.delta = Some(connector::delta_stream(setup).await?);
    }
    if setup.wants("full") {
        quiet_database(setup).await;
        eprintln!("connector: FULL snapshot …");
        report.full = Some(connector::full_snapshot(setup).await?);
    }
    if setup.wants("mixed") {
        quiet_database(setup).await;
        eprintln!("connector: mixed storm …");
        report.mixed = Some(connector::mixed_storm(setup).await?);
    }
    if setup.wants("latency") {
        quiet_database(setup).await;
        eprintln!("connector: latency at a steady load …");
        report.latency = Some(connector::latency(setup).await?);
    }
    if setup.wants("orders") {
        quiet_database(setup).await;
        eprintln!("sales: orders exported, lifecycle applied …");
        report.orders = Some(modules::orders(setup).await?);
    }
    if setup.wants("order-latency") {
        quiet_database(setup).await;
        eprintln!("sales: order updates at a steady load …");
        report.order_latency = Some(order_latency::run(setup).await?);
    }
    if setup.wants("postsales") {
        quiet_database(setup).await;
        eprintln!("post-sales: returns and refunds applied …");
        report.postsales = Some(postsales::run(setup).await?);
    }
    if setup.wants("catalog") {
        quiet_database(setup).await;
        eprintln!("catalog: full export …");
        report.catalog = Some(modules::catalog(setup).await?);
    }
    if setup.wants("gateway") {
        quiet_database(setup).await;
        eprintln!("gateway: inbound, latency and outbound against the publish ceiling …");
        report.gateway = Some(gateway::run(setup).await?);
    }
    Ok(report)
}
