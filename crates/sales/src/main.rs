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
    runtime::telemetry::init(cli.runtime.log_format);
    let mut app = runtime::Runtime::build(cli.runtime).await?;
    sales::install(&mut app)?;
    app.run_until(runtime::shutdown_signal()).await
}
