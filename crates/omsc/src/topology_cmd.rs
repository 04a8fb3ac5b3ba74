//! `omsc topology`: the broker topology of the connector's modules, as the workers declare it.

use clap::{Args, Subcommand};
use runtime::QueueSpec;
use runtime::config::QueueType;

#[derive(Subcommand)]
pub enum Command {
    /// Print the RabbitMQ definitions (exchanges, queues, bindings) of every module, for
    /// `rabbitmqctl import_definitions` on brokers where the workers may not declare them
    /// (`OMSC_DECLARE_TOPOLOGY=false`). `deploy/rabbitmq/definitions.json` is this output.
    Definitions(DefinitionsArgs),
}

#[derive(Args)]
pub struct DefinitionsArgs {
    /// Prefix of every exchange and queue name, as the workers' `OMSC_PREFIX`.
    #[arg(long, env = "OMSC_PREFIX", default_value = "")]
    prefix: String,
    /// Queue type, as the workers' `OMSC_QUEUE_TYPE`.
    #[arg(long, env = "OMSC_QUEUE_TYPE", value_enum, default_value_t = QueueType::Quorum)]
    queue_type: QueueType,
    /// The virtual host the definitions are for.
    #[arg(long, default_value = "/")]
    vhost: String,
    /// Only the service-bus gateway's queues and bindings (`connector.gateway`, bound to
    /// `commerce.events`), for a broker whose OMS talks through its bus. Kept apart because
    /// on any other broker nothing would consume that queue, and it would keep a copy of
    /// every message the connector sends.
    #[arg(long)]
    gateway: bool,
}

/// Prints the definitions of `queues` (every module's queue).
pub fn run(command: Command, queues: &[QueueSpec]) -> anyhow::Result<()> {
    match command {
        Command::Definitions(args) => {
            let topology = runtime::Topology::new(&args.prefix, args.queue_type);
            let doc = if args.gateway {
                gateway::topology::definitions(&topology, &args.vhost)
            } else {
                topology.definitions(queues, &args.vhost)
            };
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(())
        }
    }
}
