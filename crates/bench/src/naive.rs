//! A naive peer, for comparison: the design a typical team writes from the vendor's
//! description of the stock filter. One transaction per message; per SKU, `SELECT … FOR
//! UPDATE`, then `UPDATE` or `INSERT`; one acknowledgement per message.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;

use super::support::{self, Scratch};

#[derive(Debug, Clone)]
pub struct Naive {
    pub messages: usize,
    pub rate: f64,
}

const TABLE: &str = "
    CREATE TABLE naive_stock (
        aggregate_id text NOT NULL,
        sku text NOT NULL,
        quantity bigint NOT NULL,
        source_updated_at timestamptz NOT NULL,
        PRIMARY KEY (aggregate_id, sku));
    INSERT INTO naive_stock
    SELECT 'EU', 'SKU-' || lpad(i::text, 7, '0'), 10, '2020-01-01T00:00:00Z'
      FROM generate_series(0, 199999) AS i;";

pub async fn run(setup: &super::Setup) -> anyhow::Result<Naive> {
    let scratch = Scratch::new(setup, "naive").await?;
    let client = scratch.connector_session().await?;
    client.batch_execute(TABLE).await?;
    let messages = setup.sizes.naive_messages;
    let start = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
    let snapshots: Vec<_> = (0..messages)
        .map(|i| {
            support::delta(
                "EU",
                support::sku(i),
                5,
                start + chrono::Duration::milliseconds(i as i64),
            )
        })
        .collect();
    let publisher = scratch.publisher().await?;
    support::publish(&publisher, &snapshots).await?;

    let connection = runtime::amqp::connect(&scratch.amqp_url, "omsc-bench-naive").await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(50, BasicQosOptions { global: false })
        .await?;
    let queue = format!("{}{}", scratch.prefix, inventory::QUEUE.name);
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "naive".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut db = scratch.connector_session().await?;
    let mut first = None;
    for _ in 0..messages {
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the consumer ended"))??;
        first.get_or_insert_with(Instant::now);
        let body: serde_json::Value = serde_json::from_slice(&delivery.data)?;
        let snapshot = &body["params"]["snapshot"];
        let aggregate = snapshot["aggregate_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let created_on: DateTime<Utc> = snapshot["created_on"]
            .as_str()
            .unwrap_or_default()
            .parse()?;
        let tx = db.transaction().await?;
        for entry in snapshot["stock"].as_array().into_iter().flatten() {
            let sku = entry["sku"].as_str().unwrap_or_default();
            let quantity = entry["quantity"].as_i64().unwrap_or_default();
            let current = tx
                .query_opt(
                    "SELECT source_updated_at FROM naive_stock WHERE aggregate_id = $1 AND sku = $2 FOR UPDATE",
                    &[&aggregate, &sku],
                )
                .await?;
            match current {
                Some(row) if row.get::<_, DateTime<Utc>>(0) < created_on => {
                    tx.execute(
                        "UPDATE naive_stock SET quantity = $3, source_updated_at = $4 WHERE aggregate_id = $1 AND sku = $2",
                        &[&aggregate, &sku, &quantity, &created_on],
                    )
                    .await?;
                }
                Some(_) => {}
                None => {
                    tx.execute(
                        "INSERT INTO naive_stock VALUES ($1, $2, $3, $4)",
                        &[&aggregate, &sku, &quantity, &created_on],
                    )
                    .await?;
                }
            }
        }
        tx.commit().await?;
        delivery.ack(BasicAckOptions::default()).await?;
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    let _ = connection.close(200, "done".into()).await;
    scratch.drop_all().await;
    Ok(Naive {
        messages,
        rate: messages as f64 / secs,
    })
}
