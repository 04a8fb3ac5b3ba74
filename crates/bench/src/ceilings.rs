//! The machine's ceilings: what the broker and PostgreSQL can do with nothing of ours in
//! the way. The connector's figures are read as fractions of these.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use futures::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;

use super::support::{self, Scratch};

#[derive(Debug, Clone)]
pub struct BrokerCeiling {
    pub messages: usize,
    pub body_bytes: usize,
    /// The best consume+ack rate, messages/s.
    pub rate: f64,
    /// `(prefetch, ack every n, messages/s)` of each trial.
    pub trials: Vec<(u16, usize, f64)>,
    /// Confirmed publishing rate while filling the queue, messages/s.
    pub publish_rate: f64,
}

/// Raw consume+ack of persistent one-SKU DELTAs on a queue declared exactly like
/// `connector.inventory` (quorum, same arguments), with a tuned prefetch and multiple-acks.
pub async fn broker(setup: &super::Setup) -> anyhow::Result<BrokerCeiling> {
    let scratch = Scratch::new(setup, "ceiling_broker").await?;
    let publisher = scratch.publisher().await?;
    let trials_config: [(u16, usize); 2] = [(1000, 100), (2000, 250)];
    let per_trial = setup.sizes.delta_messages;
    let at = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
    let body_bytes =
        simulate::stock::encode(&support::delta("EU", support::sku(1), 7, at), "bench-0").len();
    let mut trials = Vec::new();
    let mut publish_secs = 0.0;
    for (prefetch, ack_every) in trials_config {
        let snapshots: Vec<_> = (0..per_trial)
            .map(|i| support::delta("EU", support::sku(i), 7, at))
            .collect();
        publish_secs += support::publish(&publisher, &snapshots)
            .await?
            .as_secs_f64();
        let rate = drain(&scratch, prefetch, ack_every, per_trial).await?;
        trials.push((prefetch, ack_every, rate));
    }
    scratch.drop_all().await;
    Ok(BrokerCeiling {
        messages: per_trial,
        body_bytes,
        rate: trials.iter().map(|t| t.2).fold(0.0, f64::max),
        publish_rate: (per_trial * trials.len()) as f64 / publish_secs,
        trials,
    })
}

async fn drain(
    scratch: &Scratch,
    prefetch: u16,
    ack_every: usize,
    messages: usize,
) -> anyhow::Result<f64> {
    let connection = runtime::amqp::connect(&scratch.amqp_url, "omsc-bench-ceiling").await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions { global: false })
        .await?;
    let queue = format!("{}{}", scratch.prefix, inventory::QUEUE.name);
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "ceiling".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut received = 0;
    let mut first = None;
    while received < messages {
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the consumer ended"))??;
        first.get_or_insert_with(Instant::now);
        received += 1;
        if received % ack_every == 0 || received == messages {
            delivery.ack(BasicAckOptions { multiple: true }).await?;
        }
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    let _ = connection.close(200, "done".into()).await;
    Ok(messages as f64 / secs)
}

#[derive(Debug, Clone)]
pub struct PostgresCeiling {
    pub rows: usize,
    pub batch_rows: usize,
    /// Best rows/s writing new rows (a first FULL).
    pub insert_rate: f64,
    /// Best rows/s overwriting every row with a newer version (a daily FULL).
    pub update_rate: f64,
    /// `(what, connections, rows/s)` of each trial.
    pub trials: Vec<(String, usize, f64)>,
}

const TABLE: &str = "
    CREATE TABLE ceiling_stock (
        aggregate_id text COLLATE \"C\" NOT NULL,
        sku text COLLATE \"C\" NOT NULL,
        quantity bigint NOT NULL,
        unlimited boolean NOT NULL DEFAULT false,
        source_updated_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (aggregate_id, sku))";

/// The plain compare-and-set upsert: insert, or overwrite an older version.
const UPSERT: &str = "
    INSERT INTO ceiling_stock AS t (aggregate_id, sku, quantity, source_updated_at)
    SELECT $1, s, q, $4 FROM unnest($2::text[], $3::int8[]) AS u(s, q)
    ON CONFLICT (aggregate_id, sku) DO UPDATE
       SET quantity = EXCLUDED.quantity, source_updated_at = EXCLUDED.source_updated_at, updated_at = now()
     WHERE t.source_updated_at < EXCLUDED.source_updated_at";

/// The plain compare-and-set update of rows known to exist.
const UPDATE: &str = "
    UPDATE ceiling_stock AS t
       SET quantity = u.q, source_updated_at = $4, updated_at = now()
      FROM unnest($2::text[], $3::int8[]) AS u(s, q)
     WHERE t.aggregate_id = $1 AND t.sku = u.s AND t.source_updated_at < $4";

/// PostgreSQL's batched compare-and-set rate with the best statements written by hand: one
/// transaction per 10,000-row batch (a FULL chunk), on one or two connections (the machine's
/// cores), on a table shaped like `stock_items` without the connector's triggers.
pub async fn postgres(setup: &super::Setup) -> anyhow::Result<PostgresCeiling> {
    let scratch = Scratch::new(setup, "ceiling_pg").await?;
    let rows = setup.sizes.full_skus;
    let batch_rows = 10_000;
    let skus: Vec<String> = (0..rows).map(support::sku).collect();
    let mut trials = Vec::new();
    let mut version = 0;
    for connections in [1usize, 2] {
        let setup_client = scratch.connector_session().await?;
        setup_client
            .batch_execute("DROP TABLE IF EXISTS ceiling_stock")
            .await?;
        setup_client.batch_execute(TABLE).await?;
        version += 1;
        let rate = run_statement(&scratch, UPSERT, &skus, batch_rows, connections, version).await?;
        trials.push(("insert (upsert)".to_owned(), connections, rate));
        for (what, statement) in [
            ("overwrite (upsert)", UPSERT),
            ("overwrite (update)", UPDATE),
        ] {
            version += 1;
            let rate =
                run_statement(&scratch, statement, &skus, batch_rows, connections, version).await?;
            trials.push((what.to_owned(), connections, rate));
        }
    }
    scratch.drop_all().await;
    let best = |prefix: &str| {
        trials
            .iter()
            .filter(|t| t.0.starts_with(prefix))
            .map(|t| t.2)
            .fold(0.0, f64::max)
    };
    Ok(PostgresCeiling {
        rows,
        batch_rows,
        insert_rate: best("insert"),
        update_rate: best("overwrite"),
        trials,
    })
}

async fn run_statement(
    scratch: &Scratch,
    statement: &str,
    skus: &[String],
    batch_rows: usize,
    connections: usize,
    version: i64,
) -> anyhow::Result<f64> {
    let created_on =
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::hours(version);
    let chunks: Vec<&[String]> = skus.chunks(batch_rows).collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..connections {
        let mine: Vec<Vec<String>> = chunks
            .iter()
            .enumerate()
            .filter(|(i, _)| i % connections == worker)
            .map(|(_, c)| c.to_vec())
            .collect();
        let mut client = scratch.connector_session().await?;
        let statement = statement.to_owned();
        tasks.push(tokio::spawn(async move {
            let prepared = client.prepare(&statement).await?;
            for chunk in mine {
                let quantities: Vec<i64> = (0..chunk.len() as i64).map(|q| q + version).collect();
                let tx = client.transaction().await?;
                tx.execute(&prepared, &[&"EU", &chunk, &quantities, &created_on])
                    .await?;
                tx.commit().await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(skus.len() as f64 / started.elapsed().as_secs_f64())
}
