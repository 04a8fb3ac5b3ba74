//! omsc-sales: exports new orders and consumes `connector.sales` (one replica of the sales
//! module).

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "omsc-sales",
    version,
    about = "Orders to the OMS, and what the OMS says about them into the commerce database"
)]
struct Cli {
    #[command(flatten)]
    runtime: runtime::RuntimeConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    runtime::serve(cli.runtime, sales::install).await
}
