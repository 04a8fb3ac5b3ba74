//! `omsc sources sync`: every source the OMS knows, read from its service bus and saved, as
//! an inventory worker does at start (`inventory::source_sync`).

use anyhow::{Context as _, bail};
use bus_client::{BusClient, BusConfig};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum Command {
    /// Read every source from the OMS's service bus (`source_repository.search`, page by
    /// page) and save it: created or updated, never deleted. Exits non-zero when the bus
    /// cannot be asked, refuses, or sends a source that is not valid (the others are saved).
    Sync {
        /// Sources asked for per page.
        #[arg(long, default_value_t = inventory::source_sync::PAGE_SIZE)]
        page_size: u64,
    },
}

pub async fn run(database_url: &str, bus: &BusConfig, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Sync { page_size } => {
            if !bus.enabled() {
                bail!(
                    "OMSC_OMS_URL is not set: there is no service bus to read the sources from \
                     (an OMS that publishes to the broker sends its sources as messages)"
                );
            }
            let pool = runtime::db::pool(database_url, "omsc-cli", 2)?;
            let client = BusClient::new(bus).context("setting up the HTTP client for the bus")?;
            let report = inventory::source_sync::sync(&pool, &client, page_size)
                .await
                .context("reading the sources from the bus")?;
            let total = report
                .total
                .map(|t| format!(" (the bus counts {t})"))
                .unwrap_or_default();
            println!(
                "{} source(s) saved from {} page(s){total}",
                report.saved, report.pages
            );
            for reason in &report.refused {
                eprintln!("refused: {reason}");
            }
            if !report.refused.is_empty() {
                bail!(
                    "{} source(s) from the bus were refused (above); the others were saved",
                    report.refused.len()
                );
            }
            Ok(())
        }
    }
}
