//! The inventory module: OMS stock snapshots (per aggregate and per source) through the stock
//! filter, and the sources themselves, into the commerce database.

mod handler;
mod settler;
pub mod source_sync;
mod sources;

use std::time::Duration;

use anyhow::Context as _;
use bus_client::BusConfig;
use clap::Args;
use prometheus::{IntCounterVec, Opts};
use runtime::{QueueSpec, Runtime};

pub use handler::{InventoryHandler, InventoryMessage};

/// The module's queue (contract), bound to exactly the methods the module consumes.
pub const QUEUE: QueueSpec = QueueSpec {
    name: "connector.inventory",
    oms_bindings: protocol::inventory::methods::ALL,
};

#[derive(Debug, Clone, Args)]
pub struct InventoryConfig {
    /// Seconds without a new chunk after which a NONZERO snapshot is complete and the SKUs it
    /// left out are zeroed. Longer is safer for slow deliveries, shorter shows zeros sooner;
    /// the end state is the same either way.
    #[arg(long, env = "OMSC_NONZERO_SETTLE_SECS", default_value_t = 30.0)]
    pub nonzero_settle_secs: f64,

    /// Seconds a stock snapshot's `created_on` may be ahead of this worker's clock. A
    /// snapshot dated further ahead is dead-lettered: applied, it would win every later
    /// compare-and-set (a NONZERO one would zero its aggregate's other SKUs for good).
    #[arg(long, env = "OMSC_MAX_CLOCK_SKEW_SECS", default_value_t = 86_400.0)]
    pub max_clock_skew_secs: f64,
}

impl InventoryConfig {
    pub fn max_clock_skew(&self) -> Duration {
        Duration::from_secs_f64(self.max_clock_skew_secs.clamp(0.0, 1e9))
    }

    pub fn nonzero_settle(&self) -> Duration {
        Duration::from_secs_f64(self.nonzero_settle_secs.max(0.0))
    }
}

/// `omsc_stock_rows_total{outcome}`: applied, stale, zeroed.
#[derive(Debug, Clone)]
pub struct StockMetrics {
    pub rows: IntCounterVec,
}

impl StockMetrics {
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let rows = IntCounterVec::new(
            Opts::new(
                "omsc_stock_rows_total",
                "Stock rows by outcome: applied, stale (older than stored), zeroed (NONZERO)",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(rows.clone()))?;
        Ok(Self { rows })
    }
}

/// Adds the inventory consumer and the NONZERO settler to a runtime.
pub fn install(runtime: &mut Runtime, config: &InventoryConfig) -> anyhow::Result<()> {
    let metrics = StockMetrics::register(&runtime.shared().registry)?;
    runtime.add_consumer(
        QUEUE,
        InventoryHandler::new(metrics.clone()).with_max_clock_skew(config.max_clock_skew()),
    );
    let settle = config.nonzero_settle();
    runtime.add_task(
        "inventory nonzero settler",
        settler::BEAT_EVERY,
        move |shared, beat, shutdown| settler::run(shared, settle, metrics, beat, shutdown),
    );
    Ok(())
}

/// [`install`], and when the OMS talks through a service bus (`bus` with `OMSC_OMS_URL`), the
/// sync of its sources at start ([`source_sync`]), in the background: the consumer does not
/// wait for it, and a failure is retried.
pub fn install_with_bus(
    runtime: &mut Runtime,
    config: &InventoryConfig,
    bus: Option<&BusConfig>,
) -> anyhow::Result<()> {
    install(runtime, config)?;
    if let Some(bus) = bus.filter(|bus| bus.enabled()) {
        let client = bus_client::BusClient::new(bus)
            .context("setting up the HTTP client for the bus (source sync)")?;
        runtime.add_once("inventory source sync", move |shared, shutdown| {
            source_sync::run_at_start(shared.pool, client, shutdown)
        });
    }
    Ok(())
}
