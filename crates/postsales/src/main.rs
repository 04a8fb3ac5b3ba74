//! omsc-postsales: exports requested returns and consumes `connector.postsales` (one replica
//! of the post-sales module).

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "omsc-postsales",
    version,
    about = "Returns to the OMS, and what the OMS says about returns and refunds into the commerce database"
)]
struct Cli {
    #[command(flatten)]
    runtime: runtime::RuntimeConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    runtime::serve(cli.runtime, postsales::install).await
}
