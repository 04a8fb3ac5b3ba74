//! Order updates at a steady rate: the OMS's lifecycle messages about orders that were placed
//! and exported, published at the latency scenario's rate to an idle, ready `omsc-sales`; for
//! each status update, the time from its publishing to the commit of the transaction that
//! wrote the status.
//!
//! A row trigger (added to this scenario's database only) records which transaction wrote
//! which status of which order (a status is known by its date: each of an order's messages
//! carries its own); the commit of each such transaction is observed as in the stock latency
//! scenario ([`CommitListener`]). When two updates of one order meet in one batch, only the
//! later status is written: the earlier one's effect is committed by that transaction, so it
//! is timed by it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use simulate::orders::{self, LIFECYCLE, OmsMessage, OrdersSpec};

use super::connector::{CommitListener, histogram_quantiles, scrape};
use super::modules::{oms_inbox, place_orders, sibling, wait_exported, wait_ready};
use super::support::{self, Scratch};

/// How long the scenario may take before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(600);

/// Orders whose lifecycles are interleaved: a message of each, then the next of each, so
/// that one order's messages are this many messages apart, as orders placed over a day are.
const INTERLEAVED_ORDERS: usize = 200;

#[derive(Debug, Clone)]
pub struct OrderLatency {
    pub offered_rate: u32,
    pub achieved_rate: f64,
    pub orders: usize,
    /// Every message published (created, updates, shipments).
    pub messages: usize,
    /// Status updates timed.
    pub timed: usize,
    /// Publish to the commit of the transaction that wrote the status, seconds.
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// The worker's own p50/p99 time from transaction start to commit (upper bucket bounds).
    pub apply_p50: f64,
    pub apply_p99: f64,
    /// The sales worker's peak resident memory over the scenario.
    pub peak_rss: u64,
}

/// Who wrote which status (by its date) of which order.
const RECORD_STATUS_WRITES: &str = "
    CREATE TABLE bench_status_writes (
        order_id text NOT NULL, status_date timestamptz NOT NULL, xid int8 NOT NULL);
    CREATE FUNCTION bench_record_status() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.oms_status_date IS DISTINCT FROM OLD.oms_status_date
           AND NEW.oms_status_date IS NOT NULL THEN
            INSERT INTO bench_status_writes
            VALUES (NEW.id, NEW.oms_status_date, txid_current() % 4294967296);
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER bench_record_status AFTER UPDATE ON sales_orders
        FOR EACH ROW EXECUTE FUNCTION bench_record_status();";

/// A message to publish, and the status it sets when it sets one (order id, status date).
struct Timed {
    message: OmsMessage,
    update: Option<(String, DateTime<Utc>)>,
}

pub async fn run(setup: &super::Setup) -> anyhow::Result<OrderLatency> {
    let scratch = Scratch::new(setup, "order-latency").await?;
    let binary = sibling(&setup.worker, "omsc-sales");
    let rate = setup.sizes.latency_rate;
    let total = (u64::from(rate) * setup.sizes.latency_secs) as usize;
    let generated = orders::generate(&OrdersSpec {
        seed: 2027,
        orders: 1,
        virtual_share: 0.0,
        ..OrdersSpec::default()
    });
    let per_order = generated[0].lifecycle().len().max(1);
    let count = total.div_ceil(per_order);
    let generated = orders::generate(&OrdersSpec {
        seed: 2027,
        orders: count,
        virtual_share: 0.0,
        ..OrdersSpec::default()
    });
    let client = scratch.connector_session().await?;
    place_orders(&scratch, &generated).await?;
    oms_inbox(&scratch).await?;
    let http = support::free_address()?;
    let worker = scratch.spawn_worker(&binary, &http, &[])?;
    let pid = worker.id().unwrap_or_default();
    wait_ready(&http).await?;
    wait_exported(&client, count).await?;

    client.batch_execute(RECORD_STATUS_WRITES).await?;
    let commits = CommitListener::start(&scratch.database_url, &client, "sales_orders").await?;
    let stream = interleaved(&generated);
    let messages = stream.len();
    let handled_before = scrape(&http, "omsc_messages_total").await.unwrap_or(0.0);
    // When each message left, in seconds since the epoch, as the commits are seen.
    let mut published = Vec::with_capacity(messages);
    let (achieved_rate, _) = support::publish_steady(&scratch, rate, messages, |i| {
        published.push(Utc::now().timestamp_micros() as f64 / 1e6);
        let message = &stream[i].message;
        support::Steady {
            method: message.method,
            body: message.body.clone(),
            id: Some(message.id.clone()),
        }
    })
    .await?;
    support::wait_until(
        "every order update to be handled",
        Duration::from_millis(100),
        PATIENCE,
        || async {
            let handled = scrape(&http, "omsc_messages_total").await.unwrap_or(0.0);
            Ok(handled - handled_before >= messages as f64)
        },
    )
    .await?;

    // For each order, the transactions that wrote its statuses, by status date.
    let mut writes: HashMap<String, Vec<(DateTime<Utc>, i64)>> = HashMap::new();
    for row in client
        .query(
            "SELECT order_id, status_date, xid FROM bench_status_writes",
            &[],
        )
        .await?
    {
        writes
            .entry(row.get(0))
            .or_default()
            .push((row.get(1), row.get(2)));
    }
    let writers: HashSet<i64> = writes.values().flatten().map(|(_, xid)| *xid).collect();
    let committed = commits.finish(writers).await?;
    let mut latencies = Vec::new();
    for (timed, at) in stream.iter().zip(&published) {
        let Some((order_id, date)) = &timed.update else {
            continue;
        };
        // The write of this status, or of the first later one (the batch that held both);
        // dates are a minute apart, and stored to the microsecond.
        let earliest = *date - chrono::Duration::seconds(1);
        let writer = writes
            .get(order_id)
            .and_then(|w| {
                w.iter()
                    .filter(|(d, _)| *d >= earliest)
                    .min_by_key(|(d, _)| *d)
            })
            .and_then(|(_, xid)| committed.get(xid));
        let Some(commit) = writer else {
            anyhow::bail!("order {order_id}: no committed write of its status of {date} or later");
        };
        latencies.push(commit - at);
    }
    latencies.sort_by(f64::total_cmp);
    let (apply_p50, apply_p99) = histogram_quantiles(&http, "omsc_batch_apply_seconds").await;
    let peak_rss = support::peak_rss(pid).unwrap_or(0);
    support::stop(worker).await?;
    scratch.drop_all().await;
    Ok(OrderLatency {
        offered_rate: rate,
        achieved_rate,
        orders: count,
        messages,
        timed: latencies.len(),
        p50: support::percentile(&latencies, 50.0),
        p99: support::percentile(&latencies, 99.0),
        max: latencies.last().copied().unwrap_or(f64::NAN),
        apply_p50,
        apply_p99,
        peak_rss,
    })
}

/// The orders' lifecycles, [`INTERLEAVED_ORDERS`] at a time, each order's in its own order.
fn interleaved(generated: &[orders::SimOrder]) -> Vec<Timed> {
    let mut stream = Vec::new();
    for group in generated.chunks(INTERLEAVED_ORDERS) {
        let lifecycles: Vec<Vec<OmsMessage>> = group.iter().map(|o| o.lifecycle()).collect();
        let steps = lifecycles.iter().map(Vec::len).max().unwrap_or(0);
        for step in 0..steps {
            for (order, lifecycle) in group.iter().zip(&lifecycles) {
                if let Some(message) = lifecycle.get(step) {
                    // The creation (minute 0), then one update a minute per LIFECYCLE status;
                    // the shipment sets no status.
                    let update = (step <= LIFECYCLE.len()).then(|| {
                        let date =
                            order.rows.order.placed_at + chrono::Duration::minutes(step as i64);
                        (order.id().to_owned(), date)
                    });
                    stream.push(Timed {
                        message: message.clone(),
                        update,
                    });
                }
            }
        }
    }
    stream
}
