//! Registration with the OMS (`magento.service_bus.remote.register`).
//!
//! The registration lists the methods the connector consumes. With one process per module
//! (Kubernetes) no process knows them all, so each worker records its modules and their
//! methods (derived from the handlers: [`crate::Runtime::consumed_methods`]) in
//! `connector_modules`, and the registration is built from the union of that table. A
//! worker registers at start when the union (or the id, url, secret, labels) differs from
//! what the broker last confirmed; otherwise it sends nothing, so a fleet of replicas
//! starting together registers once. `omsc register` sends it on demand, `omsc unregister`
//! withdraws it and forgets the modules. `connector_registration` keeps what was sent, when,
//! and whether the broker confirmed it.
//!
//! Operator commands (`connector.*`) travel on the connector's own queues and are never
//! announced. The secret is sent, never logged and never stored (only its SHA-256).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::types::ShortString;
use protocol::service_bus::{Register, Unregister, methods};
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::amqp::{self, Publisher};
use crate::backoff::Backoff;
use crate::config::RegistrationConfig;
use crate::topology::Topology;

/// The connector's version, sent in the registration's labels.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A module of this process and the methods its consumer takes.
pub type ModuleMethods = (&'static str, &'static [&'static str]);

const RECORD_MODULE: &str = "
    INSERT INTO connector_modules (module, methods, version, started_at)
    VALUES ($1, $2, $3, now())
    ON CONFLICT (module) DO UPDATE
       SET methods = EXCLUDED.methods, version = EXCLUDED.version, started_at = now()";

const MODULES: &str = "SELECT module, methods FROM connector_modules ORDER BY module";

/// Serializes registrations: replicas starting together send one.
const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended('omsc.registration', 0))";

const ALREADY_CONFIRMED: &str = "
    SELECT state = 'registered' AND confirmed_at IS NOT NULL
           AND connector_id = $1 AND url = $2 AND subscribes = $3 AND labels = $4
           AND secret_sha256 = $5
      FROM connector_registration";

const RECORD: &str = "
    INSERT INTO connector_registration AS r
           (singleton, state, connector_id, url, subscribes, labels, secret_sha256,
            message_id, sent_by, attempted_at, confirmed_at, last_error)
    VALUES (true, $1, $2, $3, $4, $5, $6,
            $7, $8, now(), CASE WHEN $9::text IS NULL THEN now() END, $9)
    ON CONFLICT (singleton) DO UPDATE
       SET state = EXCLUDED.state, connector_id = EXCLUDED.connector_id, url = EXCLUDED.url,
           subscribes = EXCLUDED.subscribes, labels = EXCLUDED.labels,
           secret_sha256 = EXCLUDED.secret_sha256, message_id = EXCLUDED.message_id,
           sent_by = EXCLUDED.sent_by, attempted_at = now(),
           confirmed_at = EXCLUDED.confirmed_at, last_error = EXCLUDED.last_error";

const STATE: &str = "
    SELECT state, connector_id, url, subscribes, labels::text, message_id, sent_by,
           attempted_at, confirmed_at, last_error
      FROM connector_registration";

const FORGET_MODULES: &str = "DELETE FROM connector_modules";

#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("broker: {0}")]
    Broker(String),
    #[error("no module has recorded its methods yet: start a worker first")]
    NoModules,
}

/// What happened to a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Sent and confirmed by the broker, with this message id.
    Confirmed(String),
    /// The broker already confirmed exactly this registration; nothing was sent.
    Unchanged,
}

/// Records the modules of this process and their methods.
pub async fn record_modules(
    client: &tokio_postgres::Client,
    modules: &[ModuleMethods],
) -> Result<(), tokio_postgres::Error> {
    let statement = client.prepare(RECORD_MODULE).await?;
    for (module, methods) in modules {
        let methods: Vec<&str> = methods.to_vec();
        client
            .execute(&statement, &[module, &methods, &VERSION])
            .await?;
    }
    Ok(())
}

/// The registration the union of `connector_modules` asks for, or `None` if no module has
/// recorded itself.
pub async fn desired(
    client: &impl tokio_postgres::GenericClient,
    config: &RegistrationConfig,
) -> Result<Option<Register>, tokio_postgres::Error> {
    let rows = client.query(MODULES, &[]).await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut modules = Vec::new();
    let mut subscribes = BTreeSet::new();
    for row in rows {
        modules.push(row.get::<_, String>(0));
        for method in row.get::<_, Vec<String>>(1) {
            if !protocol::catalog::is_operator_command(&method) {
                subscribes.insert(method);
            }
        }
    }
    Ok(Some(Register {
        id: config.connector_id.clone(),
        url: config.callback_url.clone(),
        secret: config.registration_secret.expose().to_owned(),
        subscribes: subscribes.into_iter().collect(),
        labels: BTreeMap::from([
            ("version".to_owned(), VERSION.to_owned()),
            ("modules".to_owned(), modules.join(",")),
        ]),
    }))
}

/// Sends the registration built from `connector_modules` unless the broker already
/// confirmed the very same one (or always, with `force`), and records the outcome.
pub async fn register(
    client: &mut tokio_postgres::Client,
    publisher: &Publisher,
    topology: &Topology,
    config: &RegistrationConfig,
    sent_by: &str,
    force: bool,
) -> Result<Sent, RegistrationError> {
    let tx = client.transaction().await?;
    tx.execute(LOCK, &[]).await?;
    let Some(register) = desired(&tx, config).await? else {
        return Err(RegistrationError::NoModules);
    };
    let labels = serde_json::to_value(&register.labels).expect("labels serialize");
    // Only the hash ever reaches a query: query parameters show up in database logs and in
    // the client's trace logs.
    let secret = sha256_hex(config.registration_secret.expose());
    let unchanged = tx
        .query_opt(
            ALREADY_CONFIRMED,
            &[
                &register.id,
                &register.url,
                &register.subscribes,
                &labels,
                &secret,
            ],
        )
        .await?
        .is_some_and(|r| r.get::<_, Option<bool>>(0) == Some(true));
    if unchanged && !force {
        tx.commit().await?;
        return Ok(Sent::Unchanged);
    }
    let message_id = message_id("register");
    let published = publish(
        publisher,
        topology,
        methods::REGISTER,
        &message_id,
        register.to_message(&message_id),
    )
    .await;
    let error = published.as_ref().err().cloned();
    let state = if error.is_some() {
        "pending"
    } else {
        "registered"
    };
    tx.execute(
        RECORD,
        &[
            &state,
            &register.id,
            &register.url,
            &register.subscribes,
            &labels,
            &secret,
            &message_id,
            &sent_by,
            &error,
        ],
    )
    .await?;
    tx.commit().await?;
    match error {
        None => {
            tracing::info!(
                id = %register.id,
                methods = register.subscribes.len(),
                modules = %register.labels["modules"],
                "registered with the OMS"
            );
            Ok(Sent::Confirmed(message_id))
        }
        Some(e) => Err(RegistrationError::Broker(e)),
    }
}

/// Withdraws the registration and forgets the recorded modules (a worker that starts again
/// registers again).
pub async fn unregister(
    client: &mut tokio_postgres::Client,
    publisher: &Publisher,
    topology: &Topology,
    config: &RegistrationConfig,
    sent_by: &str,
) -> Result<String, RegistrationError> {
    let tx = client.transaction().await?;
    tx.execute(LOCK, &[]).await?;
    let message_id = message_id("unregister");
    let message = Unregister {
        id: config.connector_id.clone(),
    };
    publish(
        publisher,
        topology,
        methods::UNREGISTER,
        &message_id,
        message.to_message(&message_id),
    )
    .await
    .map_err(RegistrationError::Broker)?;
    tx.execute(FORGET_MODULES, &[]).await?;
    let labels = serde_json::json!({});
    tx.execute(
        RECORD,
        &[
            &"unregistered",
            &config.connector_id,
            &config.callback_url,
            &Vec::<String>::new(),
            &labels,
            &sha256_hex(config.registration_secret.expose()),
            &message_id,
            &sent_by,
            &None::<String>,
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(message_id)
}

/// The registration as last sent, for `omsc status`.
#[derive(Debug, Clone)]
pub struct State {
    pub state: String,
    pub connector_id: String,
    pub url: String,
    pub subscribes: Vec<String>,
    pub labels: String,
    pub message_id: String,
    pub sent_by: String,
    pub attempted_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

pub async fn state(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Option<State>, tokio_postgres::Error> {
    Ok(client.query_opt(STATE, &[]).await?.map(|r| State {
        state: r.get(0),
        connector_id: r.get(1),
        url: r.get(2),
        subscribes: r.get(3),
        labels: r.get(4),
        message_id: r.get(5),
        sent_by: r.get(6),
        attempted_at: r.get(7),
        confirmed_at: r.get(8),
        last_error: r.get(9),
    }))
}

/// Opens a confirming publisher on `commerce.events`, declaring the exchange if allowed.
pub async fn open_publisher(
    amqp_url: &str,
    topology: &Topology,
    declare: bool,
    connection_name: &str,
) -> anyhow::Result<(lapin::Connection, Publisher)> {
    let connection = amqp::connect(amqp_url, connection_name).await?;
    let publisher = amqp::within("opening a channel", Publisher::open(&connection)).await?;
    if declare {
        let declare = publisher.channel().exchange_declare(
            ShortString::from(topology.commerce_exchange()),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            Default::default(),
        );
        amqp::within("declaring commerce.events", declare).await?;
    }
    Ok((connection, publisher))
}

async fn publish(
    publisher: &Publisher,
    topology: &Topology,
    method: &str,
    message_id: &str,
    body: Vec<u8>,
) -> Result<(), String> {
    let mut properties = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(message_id))
        .with_app_id(ShortString::from("oms-connector"));
    // A registration the bus's activation asked for is published within that message's
    // batch, and continues its trace.
    if let Some(headers) = crate::trace::headers(&tracing::Span::current()) {
        properties = properties.with_headers(headers);
    }
    publisher
        .publish(&topology.commerce_exchange(), method, &body, properties)
        .await
        .map_err(|e| e.to_string())
}

fn message_id(kind: &str) -> String {
    let now = Utc::now();
    format!(
        "{kind}-{}-{}-{}",
        now.format("%Y%m%dT%H%M%S"),
        now.timestamp_subsec_nanos(),
        std::process::id()
    )
}

/// The start-up registration of a worker: records its modules, then registers until the
/// broker confirms (or finds nothing changed), retrying with backoff.
pub async fn run(shared: Shared, modules: Vec<ModuleMethods>, shutdown: CancellationToken) {
    let config = shared.config.clone();
    let sent_by = modules
        .iter()
        .map(|(m, _)| *m)
        .collect::<Vec<_>>()
        .join(",");
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
    let mut recorded = false;
    while !shutdown.is_cancelled() {
        let attempt = async {
            let mut client =
                crate::db::connect(&config.db.database_url, "omsc-registration").await?;
            if !recorded {
                record_modules(&client, &modules).await?;
                recorded = true;
            }
            let (connection, publisher) = open_publisher(
                &config.broker.amqp_url,
                &shared.topology,
                config.declare_topology,
                "omsc-registration",
            )
            .await?;
            let result = register(
                &mut client,
                &publisher,
                &shared.topology,
                &config.registration,
                &sent_by,
                false,
            )
            .await;
            let _ = amqp::within("closing", publisher.channel().close(200, "done".into())).await;
            let _ = amqp::within("closing", connection.close(200, "done".into())).await;
            anyhow::Ok(result?)
        };
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = attempt => outcome,
        };
        match outcome {
            Ok(Sent::Unchanged) => {
                tracing::debug!("the OMS already has this registration");
                return;
            }
            Ok(Sent::Confirmed(_)) => return,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %format!("{e:#}"), ?delay, "cannot register with the OMS yet; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Registers again because the bus asked (`activation_management.activate`): the
/// registration built from `connector_modules`, sent even when the broker already confirmed
/// the same one (the bus may have lost it: that is why it asks), recorded as sent by the
/// activation. Used by the one consumer of activations, so a fleet answers an activation
/// with one registration. On its own connections: the registration serializes with others
/// under its advisory lock, which the consumer's batch transaction must not wait on.
/// A [`RegistrationError::NoModules`] comes back as such (downcast it): waiting does not
/// change it until a worker records its modules.
pub async fn activate(shared: &Shared, client_id: &str) -> anyhow::Result<Sent> {
    let config = &shared.config;
    let mut client = crate::db::connect(&config.db.database_url, "omsc-activation").await?;
    let (connection, publisher) = open_publisher(
        &config.broker.amqp_url,
        &shared.topology,
        config.declare_topology,
        "omsc-activation",
    )
    .await?;
    let sent_by = format!("activation (client {client_id})");
    let result = register(
        &mut client,
        &publisher,
        &shared.topology,
        &config.registration,
        &sent_by,
        true,
    )
    .await;
    let _ = amqp::within("closing", connection.close(200, "done".into())).await;
    Ok(result?)
}

/// The SHA-256 of a secret, in hex: what is stored to tell whether it changed.
fn sha256_hex(secret: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
