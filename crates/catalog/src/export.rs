//! The full-catalog export ("Export full catalog").
//!
//! Every catalog replica runs this exporter. Runs (rows of `catalog_export_runs`, created by
//! the `connector.catalog.export_full` command) are driven one at a time, oldest first, by
//! the replica that holds the run's lease. The exporter reads the catalog in SKU order, one
//! chunk at a time after the run's cursor (keyset pagination: no offset, no snapshot held
//! open), publishes the chunk's products to `commerce.events` with publisher confirms (at
//! most [`CONFIRM_WINDOW`] unconfirmed), and only then advances the cursor and renews the
//! lease in one statement. The next chunk is read while one is published; memory is bounded
//! by two chunks whatever the catalog's size.
//!
//! A replica that dies leaves its lease to expire; the next exporter takes the run over and
//! resumes after the cursor, so what was confirmed is not sent again and at most the chunk
//! in flight is sent twice (with the same message ids, `<run>/<sku>`). A replica that stops
//! cleanly hands the lease back at once.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Context as _;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, PublisherConfirm};
use protocol::catalog::methods;
use runtime::Shared;
use runtime::amqp::{self, OPERATION_TIMEOUT};
use runtime::backoff::Backoff;
use runtime::health::Beat;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::ExportMetrics;
use crate::products;

/// Unconfirmed messages at once: enough to keep the broker busy, few enough to bound memory.
pub const CONFIRM_WINDOW: usize = 1_000;
/// The exporter beats at least this often (readiness): every chunk, every poll (2 s) and after
/// every backoff (at most 30 s).
pub const BEAT_EVERY: Duration = Duration::from_secs(30);
/// The safety net when no notification arrives.
const POLL_EVERY: Duration = Duration::from_secs(2);
/// The notification channel a new run wakes the exporters on.
const CHANNEL: &str = "omsc_catalog_export";

/// Takes the oldest open run if nobody else holds it; runs go one at a time in request
/// order. The first taker counts the catalog (the progress bar's end).
const TAKE: &str = "
    UPDATE catalog_export_runs r
       SET lease_owner = $1,
           lease_until = now() + make_interval(secs => $2::float8),
           state = 'running',
           started_at = coalesce(r.started_at, now()),
           total = coalesce(r.total, (SELECT count(*) FROM products)),
           resumes = r.resumes + CASE WHEN r.lease_owner IS NOT NULL AND r.lease_owner <> $1
                                      THEN 1 ELSE 0 END,
           updated_at = now()
     WHERE r.id = (SELECT o.id FROM catalog_export_runs o
                    WHERE o.state IN ('pending', 'running')
                    ORDER BY o.requested_at, o.id LIMIT 1)
       AND (r.lease_until IS NULL OR r.lease_until < now() OR r.lease_owner = $1)
    RETURNING r.id, r.chunk_size, coalesce(r.total, 0), r.exported, coalesce(r.cursor_sku, '')";

/// Advances the cursor past a confirmed chunk and renews the lease, if still ours.
const ADVANCE: &str = "
    UPDATE catalog_export_runs
       SET cursor_sku = $3, exported = exported + $4, chunks = chunks + 1,
           lease_until = now() + make_interval(secs => $5::float8),
           updated_at = now(), last_error = NULL
     WHERE id = $1 AND lease_owner = $2 AND state = 'running'
    RETURNING exported";

const FINISH: &str = "
    UPDATE catalog_export_runs
       SET state = 'done', finished_at = now(), lease_owner = NULL, lease_until = NULL,
           updated_at = now()
     WHERE id = $1 AND lease_owner = $2 AND state = 'running'";

const FAILED_ATTEMPT: &str = "
    UPDATE catalog_export_runs
       SET last_error = $3, updated_at = now(),
           lease_until = now() + make_interval(secs => $4::float8)
     WHERE id = $1 AND lease_owner = $2";

/// On a clean stop: let another replica resume at once.
const RELEASE: &str = "
    UPDATE catalog_export_runs SET lease_until = now(), updated_at = now()
     WHERE id = $1 AND lease_owner = $2";

type Chunk = Vec<(
    String,
    Result<protocol::catalog::Product, products::Invalid>,
)>;

/// A run this exporter holds.
#[derive(Debug)]
struct Run {
    id: String,
    chunk_size: i64,
    total: i64,
    exported: i64,
    cursor: String,
    /// The chunk after `.0`, read while the previous one was being published.
    prefetched: Option<(String, Chunk)>,
}

async fn read_chunk(
    pool: &deadpool_postgres::Pool,
    after: &str,
    limit: i64,
) -> anyhow::Result<Chunk> {
    let client = pool.get().await?;
    products::chunk_after(&client, after, limit)
        .await
        .context("reading the next chunk")
}

enum Step {
    /// The run is done, cancelled or taken over.
    Over,
    /// Stopped for shutdown.
    Stopped,
}

/// Runs the exporter until `shutdown`.
pub async fn run(
    shared: Shared,
    lease: Duration,
    metrics: ExportMetrics,
    beat: Beat,
    shutdown: CancellationToken,
) {
    let owner = format!(
        "{}:{}:{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "omsc".to_owned()),
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    );
    // Any notification on the channel is a new run.
    let mut wake = runtime::db::listen(
        &shared.config.db.database_url,
        "omsc-catalog-export-listener",
        CHANNEL,
        |_| true,
        &shutdown,
    );
    let mut exporter = Exporter {
        shared,
        lease,
        metrics,
        owner,
        beat,
        publisher: None,
    };
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    while !shutdown.is_cancelled() {
        exporter.beat.beat();
        let delay = match exporter.take().await {
            Ok(Some(run)) => {
                tracing::info!(run = %run.id, total = run.total, exported = run.exported, "driving full catalog export");
                match exporter.drive(run, &shutdown).await {
                    Ok(_) => {
                        backoff.reset();
                        continue;
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(error = %format!("{e:#}"), ?delay, "full catalog export waits");
                        delay
                    }
                }
            }
            Ok(None) => {
                backoff.reset();
                exporter.close_publisher().await;
                POLL_EVERY
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %format!("{e:#}"), ?delay, "full catalog exporter cannot reach the database");
                delay
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = wake.recv() => {}
            () = tokio::time::sleep(delay) => {}
        }
    }
    exporter.close_publisher().await;
    tracing::info!("full catalog exporter stopped");
}

struct Exporter {
    shared: Shared,
    lease: Duration,
    metrics: ExportMetrics,
    owner: String,
    beat: Beat,
    publisher: Option<(lapin::Connection, lapin::Channel)>,
}

impl Exporter {
    async fn take(&self) -> anyhow::Result<Option<Run>> {
        let client = self.shared.pool.get().await?;
        let row = client
            .query_opt(TAKE, &[&self.owner, &self.lease.as_secs_f64()])
            .await?;
        Ok(row.map(|r| Run {
            id: r.get(0),
            chunk_size: i64::from(r.get::<_, i32>(1)),
            total: r.get(2),
            exported: r.get(3),
            cursor: r.get(4),
            prefetched: None,
        }))
    }

    /// Exports chunk after chunk until the run is over, lost, or shutdown. A failure
    /// (database, broker) is recorded on the run and returned; the lease is kept, so this
    /// exporter resumes it after its backoff unless it dies.
    async fn drive(&mut self, mut run: Run, shutdown: &CancellationToken) -> anyhow::Result<Step> {
        self.metrics.total.set(run.total);
        self.metrics.exported.set(run.exported);
        loop {
            if shutdown.is_cancelled() {
                let client = self.shared.pool.get().await?;
                client.execute(RELEASE, &[&run.id, &self.owner]).await?;
                return Ok(Step::Stopped);
            }
            self.beat.beat();
            match self.chunk(&mut run).await {
                Ok(Some(step)) => return Ok(step),
                Ok(None) => {}
                Err(e) => {
                    let reason = format!("{e:#}");
                    if let Ok(client) = self.shared.pool.get().await {
                        let _ = client
                            .execute(
                                FAILED_ATTEMPT,
                                &[&run.id, &self.owner, &reason, &self.lease.as_secs_f64()],
                            )
                            .await;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// One chunk: read, publish with confirms, advance. `Some` when the run is over. While a
    /// chunk is being published the next one is read, so the database and the broker work
    /// at the same time; at most two chunks are held.
    async fn chunk(&mut self, run: &mut Run) -> anyhow::Result<Option<Step>> {
        let chunk = match run.prefetched.take() {
            Some((after, chunk)) if after == run.cursor => chunk,
            _ => read_chunk(&self.shared.pool, &run.cursor, run.chunk_size).await?,
        };
        let Some((last_sku, _)) = chunk.last() else {
            self.finish(run).await?;
            return Ok(Some(Step::Over));
        };
        let last_sku = last_sku.clone();
        let full = chunk.len() as i64 >= run.chunk_size;
        let pool = self.shared.pool.clone();
        let next = async {
            if full {
                read_chunk(&pool, &last_sku, run.chunk_size).await.map(Some)
            } else {
                Ok(None)
            }
        };
        // Each chunk is a span; its messages carry its context when spans are exported.
        let span = tracing::info_span!("export chunk", run = %run.id, products = chunk.len());
        let publishing = self.publish(&run.id, chunk).instrument(span);
        let (published, next) = tokio::join!(publishing, next);
        let published = published?;
        let client = self.shared.pool.get().await?;
        let advanced = client
            .query_opt(
                ADVANCE,
                &[
                    &run.id,
                    &self.owner,
                    &last_sku,
                    &published,
                    &self.lease.as_secs_f64(),
                ],
            )
            .await?;
        let Some(advanced) = advanced else {
            tracing::warn!(run = %run.id, "full catalog export was taken over or cancelled; leaving it");
            return Ok(Some(Step::Over));
        };
        run.exported = advanced.get(0);
        self.metrics.chunks.inc();
        self.metrics.products.inc_by(published as u64);
        self.metrics.exported.set(run.exported);
        if !full {
            self.finish(run).await?;
            return Ok(Some(Step::Over));
        }
        run.prefetched = next?.map(|chunk| (last_sku.clone(), chunk));
        run.cursor = last_sku;
        Ok(None)
    }

    async fn finish(&self, run: &Run) -> anyhow::Result<()> {
        let client = self.shared.pool.get().await?;
        client.execute(FINISH, &[&run.id, &self.owner]).await?;
        tracing::info!(run = %run.id, exported = run.exported, "full catalog export done");
        Ok(())
    }

    /// Publishes a chunk and waits until the broker confirmed all of it. Returns how many
    /// products were published (a product that cannot be exported is skipped and logged).
    async fn publish(
        &mut self,
        run_id: &str,
        chunk: Vec<(
            String,
            Result<protocol::catalog::Product, products::Invalid>,
        )>,
    ) -> anyhow::Result<i64> {
        let channel = self.channel().await?;
        let exchange = self.shared.topology.commerce_exchange();
        let mut unconfirmed: VecDeque<PublisherConfirm> = VecDeque::with_capacity(CONFIRM_WINDOW);
        let mut published = 0;
        let headers = runtime::trace::headers(&tracing::Span::current());
        for (sku, product) in chunk {
            let product = match product {
                Ok(product) => product,
                Err(invalid) => {
                    tracing::warn!(run = %run_id, %sku, reason = %invalid, "product skipped by the full export");
                    continue;
                }
            };
            let message_id = format!("{run_id}/{sku}");
            // SKUs are at most 64 bytes (V12); one saved before that limit may be longer.
            let amqp_message_id = match amqp::short_string("message id", &message_id) {
                Ok(id) => id,
                Err(too_long) => {
                    tracing::warn!(run = %run_id, %sku, reason = %too_long, "product skipped by the full export");
                    continue;
                }
            };
            let body = product.to_message(&message_id);
            let mut properties = BasicProperties::default()
                .with_content_type(ShortString::from("application/json"))
                .with_message_id(amqp_message_id)
                .with_app_id(ShortString::from("oms-connector"))
                .with_delivery_mode(2);
            if let Some(headers) = &headers {
                properties = properties.with_headers(headers.clone());
            }
            let publish = channel.basic_publish(
                ShortString::from(exchange.as_str()),
                ShortString::from(methods::PRODUCT_UPDATED),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &body,
                properties,
            );
            let confirm = amqp::within("publishing", publish).await;
            let confirm = match confirm {
                Ok(confirm) => confirm,
                Err(e) => {
                    self.publisher = None;
                    return Err(e);
                }
            };
            unconfirmed.push_back(confirm);
            published += 1;
            if unconfirmed.len() >= CONFIRM_WINDOW
                && let Some(oldest) = unconfirmed.pop_front()
            {
                self.confirmed(oldest, &exchange).await?;
            }
        }
        while let Some(oldest) = unconfirmed.pop_front() {
            self.confirmed(oldest, &exchange).await?;
        }
        Ok(published)
    }

    async fn confirmed(&mut self, confirm: PublisherConfirm, exchange: &str) -> anyhow::Result<()> {
        let outcome = match tokio::time::timeout(OPERATION_TIMEOUT, confirm).await {
            Ok(Ok(confirmation)) => {
                if confirmation.is_nack() {
                    Err(anyhow::anyhow!(
                        "the broker refused a product message (nack)"
                    ))
                } else if confirmation.take_message().is_some() {
                    Err(anyhow::anyhow!(
                        "no queue took the product messages published to {exchange:?} with routing key {}",
                        methods::PRODUCT_UPDATED
                    ))
                } else {
                    Ok(())
                }
            }
            Ok(Err(e)) => Err(anyhow::anyhow!("broker error: {e}")),
            Err(_) => Err(anyhow::anyhow!(
                "the broker did not confirm within {}s",
                OPERATION_TIMEOUT.as_secs()
            )),
        };
        if outcome.is_err() {
            self.close_publisher().await;
        }
        outcome
    }

    async fn channel(&mut self) -> anyhow::Result<lapin::Channel> {
        if let Some((connection, channel)) = &self.publisher
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let (connection, publisher) = runtime::registration::open_publisher(
            &self.shared.config.broker.amqp_url,
            &self.shared.topology,
            self.shared.config.declare_topology,
            "omsc-catalog-export",
        )
        .await?;
        let channel = publisher.channel().clone();
        self.publisher = Some((connection, channel.clone()));
        Ok(channel)
    }

    async fn close_publisher(&mut self) {
        if let Some((connection, channel)) = self.publisher.take() {
            let _ = amqp::within("closing", channel.close(200, "export idle".into())).await;
            let _ = amqp::within("closing", connection.close(200, "export idle".into())).await;
        }
    }
}
