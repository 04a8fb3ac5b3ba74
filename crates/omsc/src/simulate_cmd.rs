//! `omsc simulate`: publish realistic OMS traffic and, on request, verify the end state.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use protocol::inventory::StockScope;
use simulate::publish::OmsPublisher;
use simulate::stock::{self, Storm, StormSpec};
use stock_filter::Model;

#[derive(Subcommand)]
pub enum Command {
    /// A storm of FULL, NONZERO and DELTA stock exports over several aggregates.
    Stock(StockArgs),
}

#[derive(Args)]
pub struct StockArgs {
    /// The broker to publish to (and the prefix the workers use).
    #[command(flatten)]
    broker: runtime::BrokerArgs,
    /// The commerce database (for --verify).
    #[command(flatten)]
    db: runtime::DatabaseArgs,
    /// Seed of the random traffic: the same seed gives the same messages.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stock aggregates the SKUs are spread over.
    #[arg(long, default_value_t = 3)]
    aggregates: usize,
    /// SKUs per aggregate.
    #[arg(long, default_value_t = 1_000)]
    skus: usize,
    /// Exports (each FULL, NONZERO or DELTA export has its own created_on).
    #[arg(long, default_value_t = 50)]
    exports: usize,
    /// Weights of FULL, NONZERO and DELTA exports.
    #[arg(long, value_delimiter = ',', default_value = "2,1,7")]
    mix: Vec<u32>,
    /// SKUs per message of a FULL or NONZERO export (the OMS sends at most 10,000).
    #[arg(long, default_value_t = 10_000)]
    chunk_size: usize,
    /// Most SKUs per DELTA.
    #[arg(long, default_value_t = 5)]
    delta_skus: usize,
    /// Deliver in random order.
    #[arg(long)]
    shuffle: bool,
    /// Share of messages delivered twice (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    /// Per-source stock instead of per-aggregate stock.
    #[arg(long)]
    sources: bool,
    /// After publishing, wait until stock_items equals the model and say so (exit 1 if not).
    #[arg(long)]
    verify: bool,
    /// How long --verify waits for the workers (NONZERO zeroing waits for its settle period).
    #[arg(long, default_value_t = 300)]
    verify_timeout_secs: u64,
}

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Stock(args) => stock_storm(args).await,
    }
}

async fn stock_storm(args: StockArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.mix.len() == 3,
        "--mix takes three weights: FULL,NONZERO,DELTA"
    );
    let scope = if args.sources {
        StockScope::Source
    } else {
        StockScope::Aggregate
    };
    let spec = StormSpec {
        seed: args.seed,
        aggregates: args.aggregates,
        skus: args.skus,
        exports: args.exports,
        mix: (args.mix[0], args.mix[1], args.mix[2]),
        chunk_size: args.chunk_size,
        delta_skus: args.delta_skus,
        scope,
        ..StormSpec::default()
    };
    let storm = Storm::generate(&spec);
    let deliveries = storm.deliveries(args.seed, args.shuffle, args.duplicates);
    let skus: usize = deliveries.iter().map(|s| s.stock.len()).sum();
    let exchange = format!("{}{}", args.broker.prefix, runtime::topology::OMS_EXCHANGE);
    let publisher = OmsPublisher::connect(&args.broker.amqp_url, &exchange)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to the broker: {e}"))?;
    let started = Instant::now();
    let messages = deliveries.iter().enumerate().map(|(i, s)| {
        let id = format!("sim-{}-{i}", args.seed);
        (stock::method(s.scope), stock::encode(s, &id), id)
    });
    let sent = publisher.publish_all(messages, 512).await?;
    let took = started.elapsed();
    println!(
        "sent {sent} messages ({} snapshots, {skus} SKU updates, {} duplicates) to {exchange} in {:.2}s ({:.0} messages/s)",
        storm.snapshots.len(),
        deliveries.len() - storm.snapshots.len(),
        took.as_secs_f64(),
        sent as f64 / took.as_secs_f64().max(1e-9)
    );
    if !args.verify {
        return Ok(());
    }
    let expected = Model::replay(scope, &storm.snapshots).rows();
    let client = runtime::db::connect(&args.db.database_url, "omsc-simulate").await?;
    let deadline = Instant::now() + Duration::from_secs(args.verify_timeout_secs);
    let scopes: Vec<String> = {
        let mut s: Vec<String> = storm.snapshots.iter().map(|s| s.scope_id.clone()).collect();
        s.sort();
        s.dedup();
        s
    };
    loop {
        let actual: Vec<(String, String, i64, bool)> = stock_filter::read_ledger(&client, scope)
            .await?
            .into_iter()
            .filter(|r| scopes.binary_search(&r.scope_id).is_ok())
            .map(|r| (r.scope_id, r.sku, r.quantity, r.unlimited))
            .collect();
        if actual == expected {
            println!(
                "verified: {} rows equal the model ({:.1}s after the first message)",
                expected.len(),
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            let differing = expected.iter().filter(|e| !actual.contains(e)).count();
            println!(
                "NOT verified after {}s: {differing} of {} expected rows differ ({} rows stored)",
                args.verify_timeout_secs,
                expected.len(),
                actual.len()
            );
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
