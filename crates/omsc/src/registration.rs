//! `omsc register` and `omsc unregister`: the connector's registration with the OMS, on
//! demand. Workers register by themselves at start (unless `OMSC_REGISTER=false`); see
//! `runtime::registration` for how the fleet's registration stays the union of its modules.

use anyhow::Context as _;
use runtime::RuntimeConfig;
use runtime::registration::{self, ModuleMethods, Sent};

/// Sends the registration built from the recorded modules (plus `modules`, recorded first),
/// even if the broker already confirmed the same one: registering twice is harmless.
pub async fn register(config: &RuntimeConfig, modules: &[ModuleMethods]) -> anyhow::Result<()> {
    let mut client = runtime::db::connect(&config.db.database_url, "omsc-cli").await?;
    if !modules.is_empty() {
        registration::record_modules(&client, modules).await?;
    }
    let topology = runtime::Topology::new(&config.broker.prefix, config.queue_type);
    let (connection, publisher) = registration::open_publisher(
        &config.broker.amqp_url,
        &topology,
        config.declare_topology,
        "omsc-cli",
    )
    .await?;
    let result = registration::register(
        &mut client,
        &publisher,
        &topology,
        &config.registration,
        "omsc register",
        true,
    )
    .await;
    let _ = runtime::amqp::within("closing", connection.close(200, "done".into())).await;
    match result.context("registering with the OMS")? {
        Sent::Confirmed(message_id) => {
            println!("registered (message {message_id}), confirmed by the broker");
        }
        Sent::Unchanged => println!("already registered, confirmed by the broker"),
    }
    crate::status::print_registration(&client).await
}

pub async fn unregister(config: &RuntimeConfig) -> anyhow::Result<()> {
    let mut client = runtime::db::connect(&config.db.database_url, "omsc-cli").await?;
    let topology = runtime::Topology::new(&config.broker.prefix, config.queue_type);
    let (connection, publisher) = registration::open_publisher(
        &config.broker.amqp_url,
        &topology,
        config.declare_topology,
        "omsc-cli",
    )
    .await?;
    let result = registration::unregister(
        &mut client,
        &publisher,
        &topology,
        &config.registration,
        "omsc unregister",
    )
    .await;
    let _ = runtime::amqp::within("closing", connection.close(200, "done".into())).await;
    let message_id = result.context("unregistering from the OMS")?;
    println!(
        "unregistered {} (message {message_id}), confirmed by the broker; workers register again when they start",
        config.registration.connector_id
    );
    Ok(())
}
