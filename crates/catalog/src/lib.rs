//! The catalog module: what Commerce tells the OMS about its catalog.
//!
//! - Product saves (and shipping methods switched on or off) reach the outbox by trigger; the
//!   module's relay ([`CatalogRelay`]) builds each message from the current rows.
//! - Operator commands arrive on `connector.catalog`: `connector.catalog.export_full` creates
//!   an export run and is acknowledged at once; the run itself is driven by the exporter task
//!   of whichever replica holds its lease ([`export`]), chunk by chunk, resumable.
//! - The service bus's `activation_management.activate` arrives there too: the connector
//!   registers again (`command.rs` says why this queue).

mod command;
pub mod export;
pub mod products;
mod relay;
pub mod runs;
pub mod shipping;

use std::time::Duration;

use clap::Args;
use prometheus::{IntCounter, IntGauge, Opts};
use runtime::{QueueSpec, Runtime};

pub use command::{CONSUMED, CatalogCommand, CommandHandler};
pub use relay::CatalogRelay;

/// The module's queue (contract): commands to the connector (the operator's, and the
/// service bus's activation), bound to exactly the commands the module handles.
pub const QUEUE: QueueSpec = QueueSpec {
    name: "connector.catalog",
    oms_bindings: CONSUMED,
};

/// The module's name: its metrics label and its outbox rows' `module`.
pub const MODULE: &str = "catalog";

#[derive(Debug, Clone, Args)]
pub struct CatalogConfig {
    /// Seconds a replica holds a full export without confirming a chunk before another
    /// replica takes it over (after a crash). Longer than a chunk takes to publish.
    #[arg(long, env = "OMSC_CATALOG_EXPORT_LEASE_SECS", default_value_t = 60.0)]
    pub export_lease_secs: f64,
}

impl CatalogConfig {
    pub fn export_lease(&self) -> Duration {
        Duration::from_secs_f64(self.export_lease_secs.max(1.0))
    }
}

/// Progress of full exports, for dashboards: label-free, this process's own run.
#[derive(Debug, Clone)]
pub struct ExportMetrics {
    /// `omsc_catalog_export_products_total`: products published by full exports.
    pub products: IntCounter,
    /// `omsc_catalog_export_chunks_total`: chunks confirmed by the broker.
    pub chunks: IntCounter,
    /// `omsc_catalog_export_exported`: products exported so far by the run this process drives.
    pub exported: IntGauge,
    /// `omsc_catalog_export_run_products`: products in the catalog when that run started (a
    /// gauge: it is not a running count, so its name has no `_total`).
    pub total: IntGauge,
}

impl ExportMetrics {
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            products: IntCounter::with_opts(Opts::new(
                "omsc_catalog_export_products_total",
                "Products published by full-catalog exports",
            ))?,
            chunks: IntCounter::with_opts(Opts::new(
                "omsc_catalog_export_chunks_total",
                "Chunks of full-catalog exports confirmed by the broker",
            ))?,
            exported: IntGauge::with_opts(Opts::new(
                "omsc_catalog_export_exported",
                "Products exported so far by the full export this process drives",
            ))?,
            total: IntGauge::with_opts(Opts::new(
                "omsc_catalog_export_run_products",
                "Products in the catalog when the full export this process drives started",
            ))?,
        };
        registry.register(Box::new(metrics.products.clone()))?;
        registry.register(Box::new(metrics.chunks.clone()))?;
        registry.register(Box::new(metrics.exported.clone()))?;
        registry.register(Box::new(metrics.total.clone()))?;
        Ok(metrics)
    }
}

/// Adds the command consumer, the outbox relay and the full-export driver to a runtime.
pub fn install(runtime: &mut Runtime, config: &CatalogConfig) -> anyhow::Result<()> {
    let metrics = ExportMetrics::register(&runtime.shared().registry)?;
    runtime.add_consumer(QUEUE, CommandHandler::new(runtime.shared().clone()));
    runtime.add_outbox_relay(CatalogRelay);
    let lease = config.export_lease();
    runtime.add_task(
        "catalog full export",
        export::BEAT_EVERY,
        move |shared, beat, shutdown| export::run(shared, lease, metrics, beat, shutdown),
    );
    Ok(())
}
