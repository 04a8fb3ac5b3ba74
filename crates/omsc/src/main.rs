//! omsc: the operator's command line.

mod aggregates;
mod catalog_export;
mod dead_letters;
mod outbox_cmd;
mod probe;
mod registration;
mod report_cmd;
mod returns_cmd;
mod settings;
// Only in a build with the `simulate` feature: production builds (the image) carry no
// traffic generator (docs/ARCHITECTURE.md, "Invariants").
#[cfg(feature = "simulate")]
mod simulate_cmd;
mod sources_cmd;
mod status;
mod terminal;
mod topology_cmd;

use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use omsc::modules::{self, Module};
use runtime::{BrokerArgs, DatabaseArgs};

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
    /// The system report: per endpoint, messages, failures and processing times; as a
    /// table, as JSON (`--json`) or as a web page with charts (`--serve`).
    Report {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        args: report_cmd::ReportArgs,
    },
    #[cfg(feature = "simulate")]
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
        /// How the log lines (one per replayed message) are written on standard error.
        #[arg(long, env = "OMSC_LOG_FORMAT", value_enum, default_value_t = runtime::config::LogFormat::Text)]
        log_format: runtime::config::LogFormat,
        #[command(subcommand)]
        command: dead_letters::Command,
    },
    /// What Commerce has to tell the OMS: list, show, retry or discard outbox rows.
    Outbox {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(subcommand)]
        command: outbox_cmd::Command,
    },
    /// Returns: request one of shipped lines (as a storefront does), list them.
    Returns {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(subcommand)]
        command: returns_cmd::Command,
    },
    /// The broker topology the workers declare (`definitions`: as a RabbitMQ definitions file).
    Topology {
        #[command(subcommand)]
        command: topology_cmd::Command,
    },
    /// Connector-wide switches.
    Settings {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(subcommand)]
        command: settings::Command,
    },
    /// The catalog: full exports to the OMS.
    Catalog {
        #[command(flatten)]
        runtime: runtime::RuntimeConfig,
        #[command(subcommand)]
        command: catalog_export::Command,
    },
    /// Register the connector with the OMS now: the methods of every module the workers
    /// recorded, plus the modules named here.
    Register(RegisterArgs),
    /// Withdraw the connector's registration and forget the recorded modules.
    Unregister {
        #[command(flatten)]
        runtime: runtime::RuntimeConfig,
    },
    /// The registration, the recorded modules, the outbox and the catalog exports.
    Status(DatabaseArgs),
    /// Check the service-bus connection both ways: the bus answers a query that changes
    /// nothing, the gateway answers the bus's probe, and a signed test delivery reaches the
    /// broker (its dead letter is then discarded). Exits 1 when a check fails.
    Probe(probe::ProbeArgs),
    /// Print a shell completion script for omsc (e.g. `omsc completions bash >
    /// /etc/bash_completion.d/omsc`).
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Print omsc's manual page (roff), e.g. `omsc man | man -l -`.
    Man,
    /// Sources: `sync` reads every source the OMS knows from its service bus.
    Sources {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        bus: bus_client::BusConfig,
        #[command(subcommand)]
        command: sources_cmd::Command,
    },
}

#[derive(Args)]
struct RegisterArgs {
    /// Modules to record before registering (those a worker would run).
    #[arg(value_enum)]
    modules: Vec<Module>,
    #[command(flatten)]
    settings: modules::ModuleSettings,
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
    settings: modules::ModuleSettings,
    /// The service-bus gateway runs too whenever `OMSC_OMS_URL` is set.
    #[command(flatten)]
    gateway: gateway::GatewayConfig,
}

/// Exit status of a command that failed. 1 is a command's "no" (not sellable, not verified),
/// 2 an error, as clap's own usage errors are.
const EXIT_ERROR: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
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
            report_cmd::run(&db.database_url, args).await
        }
        Command::Settings { db, command } => settings::run(&db.database_url, command).await,
        Command::Returns { db, command } => returns_cmd::run(&db.database_url, command).await,
        #[cfg(feature = "simulate")]
        Command::Simulate { command } => simulate_cmd::run(command).await,
        Command::Topology { command } => {
            let queues: Vec<_> = modules::ALL.iter().map(|m| m.queue()).collect();
            topology_cmd::run(command, &queues)
        }
        Command::DeadLetters {
            db,
            broker,
            log_format,
            command,
        } => {
            runtime::telemetry::init(log_format);
            dead_letters::run(&db.database_url, &broker.amqp_url, &broker.prefix, command).await
        }
        Command::Outbox { db, command } => outbox_cmd::run(&db.database_url, command).await,
        Command::Catalog { runtime, command } => catalog_export::run(&runtime, command).await,
        Command::Register(args) => register(args).await,
        Command::Unregister { runtime } => registration::unregister(&runtime).await,
        Command::Status(db) => status::run(&db.database_url).await,
        Command::Probe(args) => {
            if !probe::run(args).await? {
                // A check failed and said why: a "no", not an error.
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Sources { db, bus, command } => {
            runtime::telemetry::init(runtime::config::LogFormat::Text);
            sources_cmd::run(&db.database_url, &bus, command).await
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "omsc", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let modules: &[Module] = if args.all || args.modules.is_empty() {
        modules::ALL
    } else {
        &args.modules
    };
    let settings = args.settings;
    runtime::telemetry::init(settings.runtime.log_format);
    let mut app = runtime::Runtime::build(settings.runtime).await?;
    for module in modules {
        module.install(
            &mut app,
            &settings.inventory,
            &settings.catalog,
            Some(&args.gateway.bus),
        )?;
    }
    if args.gateway.enabled() {
        let gateway = gateway::install(&mut app, &args.gateway)?;
        tracing::info!(bus = %args.gateway.bus.oms_url, listening = %gateway.inbound_addr, "service-bus gateway enabled");
    }
    tracing::info!(http = %app.http_addr(), methods = app.consumed_methods().len(), "oms-connector starting");
    app.run_until(runtime::shutdown_signal()).await
}

/// The modules named on the command line are installed in a runtime that never runs, so
/// their methods come from their handlers exactly as in a worker.
async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let settings = &args.settings;
    let mut config = settings.runtime.clone();
    config.http_addr = ([127, 0, 0, 1], 0).into();
    let mut app = runtime::Runtime::build(config).await?;
    for module in &args.modules {
        module.install(&mut app, &settings.inventory, &settings.catalog, None)?;
    }
    registration::register(&settings.runtime, app.modules()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag and argument of every command says what it is for in `--help` (and so in
    /// the man page and the completions' descriptions).
    #[test]
    fn every_argument_of_every_command_has_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let command = Cli::command();
        command.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&command, "omsc", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }
}
