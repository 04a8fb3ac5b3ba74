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
    runtime::serve(cli.runtime, |app| {
        inventory::install_with_bus(app, &cli.inventory, Some(&cli.bus))
    })
    .await
}
