//! omsc: the operator's command line.

mod aggregates;
mod bench_cmd;
mod dead_letters;
mod settings;
mod simulate_cmd;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "omsc",
    version,
    about = "oms-connector: the Commerce side of an OMS integration"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the database if needed and apply pending migrations.
    Migrate(DatabaseArgs),
    /// Run modules in this process: `--all` (every module) or the ones named.
    Run(RunArgs),
    /// Stock aggregates and the websites that sell from them.
    Aggregates {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(subcommand)]
        command: aggregates::Command,
    },
    /// Measure the connector against the machine's ceilings (writes docs/benchmarks.md).
    Bench(bench_cmd::BenchArgs),
    /// The system report: per endpoint, messages, failures and processing times; as a
    /// table, as JSON (`--json`) or as a web page with charts (`--serve`).
    Report {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        args: omsc::report::ReportArgs,
    },
    /// Publish realistic OMS traffic (for demos and load tests) and verify the end state.
    Simulate {
        #[command(subcommand)]
        command: simulate_cmd::Command,
    },
    /// Messages that could not be applied: list, show, replay, discard.
    DeadLetters {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(subcommand)]
        command: dead_letters::Command,
    },
    /// Connector-wide switches.
    Settings {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(subcommand)]
        command: settings::Command,
    },
}

#[derive(Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL of the commerce database.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/omsc",
        hide_env_values = true
    )]
    pub database_url: String,
}

#[derive(Args)]
pub struct BrokerArgs {
    /// RabbitMQ connection URL.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_url: String,
    /// Prefix of every exchange and queue name.
    #[arg(long, env = "OMSC_PREFIX", default_value = "")]
    pub prefix: String,
}

#[derive(Args)]
struct RunArgs {
    /// Run every module.
    #[arg(long, conflicts_with = "modules")]
    all: bool,
    /// Modules to run.
    #[arg(value_enum)]
    modules: Vec<Module>,
    #[command(flatten)]
    runtime: runtime::RuntimeConfig,
    #[command(flatten)]
    inventory: inventory::InventoryConfig,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Module {
    Inventory,
    Sales,
}

const ALL_MODULES: &[Module] = &[Module::Inventory, Module::Sales];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Migrate(db) => {
            runtime::telemetry::init(runtime::config::LogFormat::Text);
            let applied = runtime::db::migrate(&db.database_url).await?;
            if applied.is_empty() {
                println!(
                    "database is up to date ({} migrations)",
                    runtime::db::known_migrations().len()
                );
            }
            for name in applied {
                println!("applied {name}");
            }
            Ok(())
        }
        Command::Run(args) => run(args).await,
        Command::Aggregates { db, command } => aggregates::run(&db.database_url, command).await,
        Command::Report { db, args } => {
            runtime::telemetry::init(runtime::config::LogFormat::Text);
            omsc::report::run(&db.database_url, args).await
        }
        Command::Settings { db, command } => settings::run(&db.database_url, command).await,
        Command::Simulate { command } => simulate_cmd::run(command).await,
        Command::Bench(args) => bench_cmd::run(args).await,
        Command::DeadLetters {
            db,
            broker,
            command,
        } => dead_letters::run(&db.database_url, &broker.amqp_url, &broker.prefix, command).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let modules: &[Module] = if args.all || args.modules.is_empty() {
        ALL_MODULES
    } else {
        &args.modules
    };
    runtime::telemetry::init(args.runtime.log_format);
    let mut app = runtime::Runtime::build(args.runtime).await?;
    for module in modules {
        match module {
            Module::Inventory => inventory::install(&mut app, &args.inventory)?,
            Module::Sales => sales::install(&mut app)?,
        }
    }
    tracing::info!(http = %app.http_addr(), methods = app.consumed_methods().len(), "oms-connector starting");
    app.run_until(runtime::shutdown_signal()).await
}
