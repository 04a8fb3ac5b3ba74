//! omsc-catalog: consumes `connector.catalog` (operator commands), relays product and
//! shipping-method exports, and drives full-catalog exports (one replica of the module).

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "omsc-catalog",
    version,
    about = "Products and shipping methods of the commerce database to the OMS"
)]
struct Cli {
    #[command(flatten)]
    runtime: runtime::RuntimeConfig,
    #[command(flatten)]
    catalog: catalog::CatalogConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    runtime::serve(cli.runtime, |app| catalog::install(app, &cli.catalog)).await
}
