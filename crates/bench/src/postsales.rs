//! The post-sales module as shipped (`omsc-postsales`): the OMS's messages about returns
//! and their refunds, drained from a filled queue by one worker.
//!
//! Every return is of an order that is placed, exported and shipped, and was requested by
//! the storefront (so the messages find what they find in production: the order's lines, a
//! requested return). Each return then gets the OMS's whole path (`SimReturn::lifecycle`:
//! updated REQUESTED and APPROVED, received, the refund PENDINGRELEASE then RELEASED), the
//! returns interleaved as a busy OMS sends them. The run counts only if every return and
//! refund ends as that path says and nothing was retried or dead-lettered.

use std::time::Duration;

use simulate::orders::{self, OrdersSpec};
use simulate::postsales::SimReturn;

use super::support::{self, CpuTimes, Scratch};

/// How long the scenario may take before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(900);

/// Connections placing orders and requesting returns at once.
const STOREFRONT_SESSIONS: usize = 4;

#[derive(Debug, Clone)]
pub struct Postsales {
    /// Returns (one per order), each with its refund.
    pub returns: usize,
    /// OMS messages about them (five per return).
    pub messages: usize,
    /// Handled per second, from the worker ready to the last one handled.
    pub rate: f64,
    pub secs: f64,
    /// Messages that did not apply (retried or dead-lettered): 0 expected.
    pub not_applied: f64,
    /// Mean messages per batch and mean seconds per batch transaction, from the worker.
    pub batches: Option<super::connector::BatchShape>,
    /// CPU seconds each party spent from the worker's start to the end of the drain.
    pub cpu: CpuTimes,
}

impl Postsales {
    /// CPU per message of the worker, the broker and PostgreSQL, in microseconds.
    pub fn cpu_per_message(&self) -> (f64, f64, f64) {
        self.cpu.per_item_micros(self.messages)
    }
}

/// `returns` orders placed, exported and shipped; a return of each requested; the OMS's
/// messages about all of them waiting in the queue; then one worker drains it.
pub async fn run(setup: &super::Setup) -> anyhow::Result<Postsales> {
    let scratch = Scratch::new(setup, "postsales").await?;
    let count = setup.sizes.returns;
    let client = scratch.connector_session().await?;
    client
        .batch_execute("INSERT INTO store_views (code, locale, channel) VALUES ('default', 'en_US', 'base') ON CONFLICT DO NOTHING")
        .await?;
    let generated = orders::generate(&OrdersSpec {
        seed: 2027,
        orders: count,
        virtual_share: 0.0,
        ..OrdersSpec::default()
    });
    let returns: Vec<SimReturn> = generated
        .iter()
        .map(|order| {
            let shipped: Vec<String> = order
                .shipped_lines()
                .into_iter()
                .map(|l| l.line_id)
                .collect();
            let ids: Vec<&str> = shipped.iter().map(String::as_str).collect();
            SimReturn::new(order, &format!("R-{}", order.id()), &ids)
        })
        .collect();

    // The storefront places the orders; the sales module exported and shipped them (its
    // rows written here as it leaves them); the storefront requests the returns.
    let mut sessions = Vec::new();
    for session in 0..STOREFRONT_SESSIONS {
        let mine: Vec<SimReturn> = returns
            .iter()
            .skip(session)
            .step_by(STOREFRONT_SESSIONS)
            .cloned()
            .collect();
        let database_url = scratch.database_url.clone();
        sessions.push(tokio::spawn(async move {
            let storefront = runtime::db::connect(&database_url, "storefront").await?;
            let pool = runtime::db::pool(&database_url, "omsc-bench", 1)?;
            let connector = pool.get().await?;
            for r in &mine {
                orders::place(&storefront, &r.order.rows).await?;
                sales::export::save_lines(&connector, r.order.id(), &r.order.lines()).await?;
                let shipped: Vec<&str> = r.lines.iter().map(|l| l.line_id.as_str()).collect();
                connector
                    .execute(
                        "WITH s AS (
                             INSERT INTO sales_shipments (order_id, shipment_key, source_id, method, shipped_at)
                             VALUES ($1, 'bench:' || $1, 'WH-1', 'STANDARD', $2) RETURNING id)
                         INSERT INTO sales_shipment_lines (order_id, line_id, shipment_id)
                         SELECT $1, l, s.id FROM s, unnest($3::text[]) AS l",
                        &[
                            &r.order.id(),
                            &(r.order.rows.order.placed_at + chrono::Duration::days(1)),
                            &shipped,
                        ],
                    )
                    .await?;
                postsales::storefront::request(&storefront, &r.request()).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for session in sessions {
        session.await??;
    }
    // The exports and authorizations went out long ago: the worker's relays have nothing to
    // send, so the run measures the inbound path alone.
    client
        .execute(
            "UPDATE outbox SET sent_at = now() WHERE sent_at IS NULL AND module IN ('sales', 'postsales')",
            &[],
        )
        .await?;

    declare_queue(&scratch).await?;
    let messages: Vec<_> = interleaved(&returns);
    let total = messages.len();
    scratch.queue_oms_messages(&messages).await?;
    drop(messages);

    let drained = scratch
        .drain(
            &setup.worker.with_file_name("omsc-postsales"),
            total,
            PATIENCE,
        )
        .await?;
    let (secs, cpu, not_applied) = (drained.secs, drained.cpu, drained.not_applied);
    let batches = super::connector::batch_shape(&drained.http).await;
    let ended = client
        .query_one(
            "SELECT (SELECT count(*) FROM postsales_returns
                      WHERE oms_status = 'APPROVED' AND received_at IS NOT NULL),
                    (SELECT count(*) FROM postsales_return_lines
                      WHERE oms_status = 'APPROVED' AND received_condition = 'OPENED'),
                    (SELECT count(*) FROM postsales_return_lines),
                    (SELECT count(*) FROM postsales_refunds WHERE status = 'RELEASED'),
                    (SELECT count(*) FROM postsales_credit_memos)",
            &[],
        )
        .await?;
    support::stop(drained.worker).await?;
    scratch.drop_all().await;
    let (approved, lines_done, lines, released, memos): (i64, i64, i64, i64, i64) = (
        ended.get(0),
        ended.get(1),
        ended.get(2),
        ended.get(3),
        ended.get(4),
    );
    let n = count as i64;
    anyhow::ensure!(
        not_applied == 0.0,
        "{not_applied} post-sales messages were retried or dead-lettered"
    );
    anyhow::ensure!(
        approved == n && released == n && memos == n && lines_done == lines,
        "of {n} returns {approved} ended approved and received, {released} refunds released, \
         {memos} credit memos; {lines_done} of {lines} returned lines approved and received"
    );
    Ok(Postsales {
        returns: count,
        messages: total,
        rate: total as f64 / secs,
        secs,
        not_applied,
        batches,
        cpu,
    })
}

/// The post-sales queue, bound as the worker binds it, so the messages wait for it.
async fn declare_queue(scratch: &Scratch) -> anyhow::Result<()> {
    let connection = runtime::amqp::connect(&scratch.amqp_url, "omsc-bench").await?;
    let channel = connection.create_channel().await?;
    runtime::Topology::new(&scratch.prefix, runtime::config::QueueType::Quorum)
        .declare(&channel, &postsales::QUEUE)
        .await?;
    let _ = connection.close(200, "declared".into()).await;
    Ok(())
}

/// Every return's messages in its own order, the returns interleaved: the first message of
/// every return, then the second of every return, and so on, as an OMS working through many
/// returns at once sends them (and as no batch could gather one return's path alone).
fn interleaved(returns: &[SimReturn]) -> Vec<simulate::orders::OmsMessage> {
    let paths: Vec<Vec<_>> = returns.iter().map(SimReturn::lifecycle).collect();
    let longest = paths.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|step| paths.iter().filter_map(move |p| p.get(step).cloned()))
        .collect()
}
