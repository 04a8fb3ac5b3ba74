//! omsc-gateway: carries JSON-RPC messages between the OMS service bus and the broker.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "omsc-gateway",
    version,
    about = "The OMS service bus (JSON-RPC over HTTP) to and from the broker"
)]
struct Cli {
    #[command(flatten)]
    runtime: runtime::RuntimeConfig,
    #[command(flatten)]
    gateway: gateway::GatewayConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    runtime::serve(cli.runtime, |app| {
        let installed = gateway::install(app, &cli.gateway)?;
        tracing::info!(http = %app.http_addr(), bus = %installed.inbound_addr, "omsc-gateway starting");
        Ok(())
    })
    .await
}
