//! The other modules as shipped, each its own binary beside `omsc-inventory`: orders exported
//! to the OMS through the outbox (with publisher confirms), the OMS's order lifecycle applied,
//! and a full catalog export.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use protocol::catalog::{EXPORT_CHUNK_SIZE, ExportFull, methods as catalog_methods};

use super::connector::http_status;
use super::support::{self, Scratch};
use simulate::orders::{self, OrdersSpec};

/// How long any of these scenarios may take before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(900);

/// Connections placing orders at once, as storefront requests would.
const STOREFRONT_SESSIONS: usize = 4;

#[derive(Debug, Clone)]
pub struct Orders {
    pub orders: usize,
    pub storefront_sessions: usize,
    /// Orders placed by the storefront sessions, per second (the load, not ours).
    pub place_rate: f64,
    /// Orders exported (built, published, confirmed by the broker, marked sent), per second,
    /// from the first to the last marked sent.
    pub export_rate: f64,
    pub export_secs: f64,
    /// OMS messages about those orders (created, five status updates, the shipment).
    pub lifecycle_messages: usize,
    /// Applied per second, from the worker ready to the last one handled.
    pub lifecycle_rate: f64,
    pub lifecycle_secs: f64,
    /// Messages of the lifecycle that did not apply (retried or dead-lettered): 0 expected.
    pub lifecycle_not_applied: f64,
    /// CPU seconds each party spent from the worker's start to the last order exported.
    pub export_cpu: support::CpuTimes,
    /// CPU seconds each party spent from the worker's start to the last message handled.
    pub lifecycle_cpu: support::CpuTimes,
    /// The sales worker's peak resident memory, exporting or applying (the larger).
    pub peak_rss: u64,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    pub products: usize,
    pub chunk_size: u32,
    /// Products per second, as the run records it (from its start to its end).
    pub rate: f64,
    pub secs: f64,
    pub peak_rss: u64,
}

pub(crate) fn sibling(worker: &Path, name: &str) -> PathBuf {
    worker.with_file_name(name)
}

/// A durable queue on the commerce exchange standing for the OMS: every message the
/// connector sends there is routed (the relay publishes with `mandatory`) and kept.
pub(crate) async fn oms_inbox(scratch: &Scratch) -> anyhow::Result<()> {
    let connection = runtime::amqp::connect(&scratch.amqp_url, "omsc-bench").await?;
    let channel = connection.create_channel().await?;
    runtime::Topology::new(&scratch.prefix, runtime::config::QueueType::Quorum)
        .declare_oms_listener(
            &channel,
            &scratch.inbox(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            "#",
        )
        .await?;
    let _ = connection.close(200, "declared".into()).await;
    Ok(())
}

pub(crate) async fn wait_ready(http: &str) -> anyhow::Result<()> {
    support::wait_until(
        "the worker to be ready",
        Duration::from_millis(20),
        PATIENCE,
        || async { Ok(http_status(http, "/readyz").await == Some(200)) },
    )
    .await
}

/// Orders placed by a storefront while the sales worker is down pile up in the outbox; the
/// worker then exports them all. Then the OMS's lifecycle of every order waits in the
/// module's queue and a fresh worker applies it.
/// Places `generated` orders as a storefront does, from [`STOREFRONT_SESSIONS`] sessions at
/// once; returns the orders placed per second.
pub(crate) async fn place_orders(
    scratch: &Scratch,
    generated: &[orders::SimOrder],
) -> anyhow::Result<f64> {
    let client = scratch.connector_session().await?;
    client
        .batch_execute("INSERT INTO store_views (code, locale, channel) VALUES ('default', 'en_US', 'base') ON CONFLICT DO NOTHING")
        .await?;
    let started = Instant::now();
    let mut sessions = Vec::new();
    for session in 0..STOREFRONT_SESSIONS {
        let mine: Vec<_> = generated
            .iter()
            .skip(session)
            .step_by(STOREFRONT_SESSIONS)
            .map(|o| o.rows.clone())
            .collect();
        let storefront = runtime::db::connect(&scratch.database_url, "storefront").await?;
        sessions.push(tokio::spawn(async move {
            for rows in &mine {
                orders::place(&storefront, rows).await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        }));
    }
    for session in sessions {
        session.await??;
    }
    Ok(generated.len() as f64 / started.elapsed().as_secs_f64())
}

/// Waits until `count` order exports are marked sent.
pub(crate) async fn wait_exported(
    client: &tokio_postgres::Client,
    count: usize,
) -> anyhow::Result<()> {
    support::wait_until(
        "every order to be exported",
        Duration::from_millis(100),
        PATIENCE,
        || async {
            let sent: i64 = client
                .query_one(
                    "SELECT count(*) FROM outbox WHERE module = 'sales' AND topic = 'order.create' AND sent_at IS NOT NULL",
                    &[],
                )
                .await?
                .get(0);
            Ok(sent == count as i64)
        },
    )
    .await
}

pub async fn orders(setup: &super::Setup) -> anyhow::Result<Orders> {
    let scratch = Scratch::new(setup, "orders").await?;
    let binary = sibling(&setup.worker, "omsc-sales");
    let count = setup.sizes.orders;
    let spec = OrdersSpec {
        seed: 2026,
        orders: count,
        virtual_share: 0.0,
        ..OrdersSpec::default()
    };
    let generated = orders::generate(&spec);
    let client = scratch.connector_session().await?;
    let place_rate = place_orders(&scratch, &generated).await?;

    oms_inbox(&scratch).await?;
    let http = support::free_address()?;
    let cpu_before = support::CpuTimes::read(0);
    let worker = scratch.spawn_worker(&binary, &http, &[])?;
    let pid = worker.id().unwrap_or_default();
    wait_exported(&client, count).await?;
    let export_cpu = support::CpuTimes::read(pid).since(cpu_before);
    let export_rss = support::peak_rss(pid).unwrap_or(0);
    let export_secs: f64 = client
        .query_one(
            "SELECT extract(epoch FROM max(sent_at) - min(sent_at))::float8
               FROM outbox WHERE module = 'sales' AND topic = 'order.create'",
            &[],
        )
        .await?
        .get(0);
    support::stop(worker).await?;

    // The OMS answers: every order's lifecycle, in order, waiting in the queue.
    let messages: Vec<_> = generated.iter().flat_map(|o| o.lifecycle()).collect();
    let lifecycle_messages = messages.len();
    scratch.queue_oms_messages(&messages).await?;
    drop(messages);
    let drained = scratch.drain(&binary, lifecycle_messages, PATIENCE).await?;
    let complete: i64 = client
        .query_one(
            "SELECT count(*) FROM sales_orders WHERE oms_status = 'COMPLETE'",
            &[],
        )
        .await?
        .get(0);
    support::stop(drained.worker).await?;
    scratch.drop_all().await;
    anyhow::ensure!(
        complete == count as i64,
        "{complete} of {count} orders reached COMPLETE"
    );
    Ok(Orders {
        orders: count,
        storefront_sessions: STOREFRONT_SESSIONS,
        place_rate,
        export_rate: count as f64 / export_secs.max(f64::EPSILON),
        export_secs,
        lifecycle_messages,
        lifecycle_rate: lifecycle_messages as f64 / drained.secs,
        lifecycle_secs: drained.secs,
        lifecycle_not_applied: drained.not_applied,
        export_cpu,
        lifecycle_cpu: drained.cpu,
        peak_rss: export_rss.max(drained.peak_rss),
    })
}

/// A full catalog export of `products` products, as `omsc catalog export --full` asks for it.
pub async fn catalog(setup: &super::Setup) -> anyhow::Result<Catalog> {
    let scratch = Scratch::new(setup, "catalog").await?;
    let products = setup.sizes.products;
    let client = scratch.connector_session().await?;
    client
        .batch_execute(&format!(
            "INSERT INTO store_views (code, locale, channel) VALUES ('default', 'en_US', 'base');
             INSERT INTO products (sku, type, name, price, currency)
             SELECT format('P-%s', lpad(i::text, 7, '0')), 'simple', format('Product %s', i),
                    (i % 1000) + 0.99, 'EUR'
               FROM generate_series(1, {products}) i;
             INSERT INTO product_attributes (sku, code, value)
             SELECT format('P-%s', lpad(i::text, 7, '0')), 'color', 'red'
               FROM generate_series(1, {products}, 7) i;
             ANALYZE;"
        ))
        .await?;
    oms_inbox(&scratch).await?;
    let http = support::free_address()?;
    let worker = scratch.spawn_worker(&sibling(&setup.worker, "omsc-catalog"), &http, &[])?;
    let pid = worker.id().unwrap_or_default();
    wait_ready(&http).await?;
    let run_id = "bench-export".to_owned();
    let command = ExportFull {
        run_id: run_id.clone(),
        requested_by: "omsc bench".into(),
        chunk_size: EXPORT_CHUNK_SIZE,
    };
    let publisher = scratch.publisher().await?;
    publisher
        .publish_all(
            [(
                catalog_methods::EXPORT_FULL,
                command.to_message(),
                run_id.clone(),
            )],
            1,
        )
        .await?;
    support::wait_until(
        "the export to finish",
        Duration::from_millis(100),
        PATIENCE,
        || async {
            Ok(catalog::runs::one(&client, &run_id)
                .await?
                .is_some_and(|p| p.is_over()))
        },
    )
    .await?;
    let peak_rss = support::peak_rss(pid).unwrap_or(0);
    let progress = catalog::runs::one(&client, &run_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the export run is gone"))?;
    support::stop(worker).await?;
    scratch.drop_all().await;
    anyhow::ensure!(
        progress.state == "done" && progress.exported == products as i64,
        "the export ended {} with {} of {products} products",
        progress.state,
        progress.exported
    );
    let rate = progress.rate().unwrap_or(f64::NAN);
    Ok(Catalog {
        products,
        chunk_size: EXPORT_CHUNK_SIZE,
        rate,
        secs: products as f64 / rate,
        peak_rss,
    })
}
