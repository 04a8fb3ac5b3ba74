//! omsc-inventory: consumes `connector.inventory` (one replica of the inventory module).

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "omsc-inventory",
    version,
    about = "OMS stock and sources into the commerce database"
)]
struct Cli {
    #[command(flatten)]
    runtime: runtime::RuntimeConfig,
    #[command(flatten)]
    inventory: inventory::InventoryConfig,
    /// The OMS's service bus, when it talks through one: its sources are read at start.
    #[command(flatten)]
    bus: bus_client::BusConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    runtime::telemetry::init(cli.runtime.log_format);
    let mut app = runtime::Runtime::build(cli.runtime).await?;
    inventory::install_with_bus(&mut app, &cli.inventory, Some(&cli.bus))?;
    app.run_until(runtime::shutdown_signal()).await
}
