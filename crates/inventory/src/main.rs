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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    runtime::telemetry::init(cli.runtime.log_format);
    let mut app = runtime::Runtime::build(cli.runtime).await?;
    inventory::install(&mut app, &cli.inventory)?;
    app.run_until(runtime::shutdown_signal()).await
}
