//! PostgreSQL: the connection pool, migrations, and the one place where database errors are
//! classified into what the consume loop should do about them.

use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::redact_url;
use crate::tls;

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// What a database error means for the message being applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    /// The database cannot be reached or is going away: hold the batch, wait, reconnect.
    /// Nothing is acknowledged and nothing is dead-lettered.
    Unavailable,
    /// Lost a race (deadlock, serialization failure, lock timeout): apply the batch again.
    Transient,
    /// The statement itself failed for these messages: isolate the culprit, retry it later
    /// through the retry queue, dead-letter it if it keeps failing.
    Statement,
}

pub fn classify(error: &tokio_postgres::Error) -> DbFailure {
    if error.is_closed() {
        return DbFailure::Unavailable;
    }
    let Some(code) = error.code() else {
        // No SQLSTATE: an I/O or protocol error on the connection.
        return DbFailure::Unavailable;
    };
    if *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::LOCK_NOT_AVAILABLE
    {
        return DbFailure::Transient;
    }
    let class = &code.code()[..2];
    let unavailable = matches!(class, "08" | "53" | "57" | "58")
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT;
    if unavailable {
        DbFailure::Unavailable
    } else {
        DbFailure::Statement
    }
}

pub fn classify_pool(error: &PoolError) -> DbFailure {
    match error {
        PoolError::Backend(e) => classify(e),
        _ => DbFailure::Unavailable,
    }
}

/// A PostgreSQL server to connect to: the parsed configuration and the TLS connector its
/// URL asks for (see [`crate::tls`]).
#[derive(Clone)]
pub struct PgTarget {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
}

/// Parses the database URL and adds what every connector session needs: its name, the
/// `omsc.actor` mark that the ownership triggers check, and quick detection of dead peers.
pub fn pg_config(database_url: &str, application_name: &str) -> anyhow::Result<PgTarget> {
    let invalid = || {
        format!(
            "DATABASE_URL is not a valid PostgreSQL URL: {}",
            redact_url(database_url)
        )
    };
    check_url(database_url)?;
    let tls = tls::pg_tls(database_url).with_context(invalid)?;
    let mut config: tokio_postgres::Config = tls.url.parse().with_context(invalid)?;
    config.application_name(application_name);
    let mut options = config.get_options().unwrap_or("").to_owned();
    if !options.is_empty() {
        options.push(' ');
    }
    // Set at connection start-up, so marking a transaction costs no round trip.
    options.push_str("-c omsc.actor=connector -c idle_in_transaction_session_timeout=60000");
    config.options(&options);
    config.connect_timeout(Duration::from_secs(5));
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(20));
    config.keepalives_interval(Duration::from_secs(5));
    config.keepalives_retries(3);
    let connector = MakeRustlsConnect::new(tls::pg_client_config(&tls)?);
    Ok(PgTarget {
        config,
        tls: connector,
    })
}

/// Refuses a database URL that would be misread rather than rejected: `postgres:/x@h`
/// (one slash) or another scheme, and a password with an unencoded `@` (PostgreSQL's parser
/// ends the password at the first `@`, and takes the rest of the password as the host). A
/// `key=value` connection string is left to the parser.
pub fn check_url(database_url: &str) -> anyhow::Result<()> {
    let refuse = |why: &str| {
        anyhow::anyhow!(
            "DATABASE_URL {} is malformed: {why}; write postgres://user:password@host:port/database \
             (or key=value pairs), with / @ : % ? # in the user name or password percent-encoded \
             (@ as %40)",
            redact_url(database_url)
        )
    };
    let Some((scheme, rest)) = database_url.split_once(':') else {
        return Ok(());
    };
    let looks_like_url = !scheme.contains(['=', ' ', '\'']);
    if !looks_like_url {
        return Ok(());
    }
    if !scheme.eq_ignore_ascii_case("postgres") && !scheme.eq_ignore_ascii_case("postgresql") {
        return Err(refuse(&format!(
            "the scheme must be postgres:// or postgresql://, not {}",
            if scheme.len() > 16 { "this" } else { scheme }
        )));
    }
    let Some(rest) = rest.strip_prefix("//") else {
        return Err(refuse(&format!("{scheme}: must be followed by //")));
    };
    let query_start = rest.find(['?', '#']).unwrap_or(rest.len());
    if rest[..query_start].matches('@').count() > 1 {
        return Err(refuse("more than one @ before the query"));
    }
    Ok(())
}

pub fn pool(database_url: &str, application_name: &str, size: usize) -> anyhow::Result<Pool> {
    pool_with_timeout(database_url, application_name, size, None)
}

/// A pool whose statements are cancelled by the server after `statement_timeout` (SQLSTATE
/// 57014, which [`classify`] counts as the database being unavailable: the batch is held and
/// tried again, and readiness says why).
pub fn pool_with_timeout(
    database_url: &str,
    application_name: &str,
    size: usize,
    statement_timeout: Option<Duration>,
) -> anyhow::Result<Pool> {
    let mut target = pg_config(database_url, application_name)?;
    if let Some(timeout) = statement_timeout.filter(|t| !t.is_zero()) {
        let options = format!(
            "{} -c statement_timeout={}",
            target.config.get_options().unwrap_or(""),
            timeout.as_millis()
        );
        target.config.options(options.trim_start());
    }
    let manager = Manager::from_config(
        target.config,
        target.tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .context("building the PostgreSQL pool")
}

/// Opens one connection outside the pool, for migrations and tools.
pub async fn connect(
    database_url: &str,
    application_name: &str,
) -> anyhow::Result<tokio_postgres::Client> {
    let target = pg_config(database_url, application_name)?;
    connect_with(&target)
        .await
        .with_context(|| format!("connecting to {}", redact_url(database_url)))
}

async fn connect_with(target: &PgTarget) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = target.config.connect(target.tls.clone()).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

/// Wakes on PostgreSQL notifications: `LISTEN channel` on a connection of its own named
/// `application_name`, reconnected with backoff until `shutdown`. The receiver gets a wake for
/// each notification whose payload `wanted` accepts, and one each time the `LISTEN` is in
/// place again: notifications sent while nobody listened are lost, so the owner looks once
/// more then. Wakes that come while one is waiting merge (the channel holds one): a wake
/// means "look now", never "one more thing to do", and the owner still polls as a safety net.
pub fn listen(
    database_url: &str,
    application_name: &'static str,
    channel: &'static str,
    wanted: impl Fn(&str) -> bool + Send + Sync + 'static,
    shutdown: &CancellationToken,
) -> mpsc::Receiver<()> {
    let (wake, woken) = mpsc::channel(1);
    let url = database_url.to_owned();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        while !shutdown.is_cancelled() {
            let listening = listen_once(&url, application_name, channel, &wanted, &wake, &shutdown);
            if let Err(e) = listening.await {
                tracing::debug!(channel, error = %format!("{e:#}"), "listener reconnects");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    });
    woken
}

async fn listen_once(
    url: &str,
    application_name: &str,
    channel: &str,
    wanted: &impl Fn(&str) -> bool,
    wake: &mpsc::Sender<()>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let target = pg_config(url, application_name)?;
    let (client, mut connection) = target.config.connect(target.tls).await?;
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("LISTEN {channel}");
    let listen = client.batch_execute(&statement);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            result = &mut listen, if !listening => {
                result?;
                listening = true;
                let _ = wake.try_send(());
            }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(n))) if wanted(n.payload()) => {
                    let _ = wake.try_send(());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
        }
    }
}

/// Creates the database if it does not exist, then applies pending migrations under an
/// advisory lock, so that replicas starting together migrate once.
pub async fn migrate(database_url: &str) -> anyhow::Result<Vec<String>> {
    ensure_database(database_url).await?;
    let mut client = connect(database_url, "omsc-migrate").await?;
    client
        .execute(
            "SELECT pg_advisory_lock(hashtextextended('omsc.migrations', 0))",
            &[],
        )
        .await
        .context("taking the migration lock")?;
    let report = embedded::migrations::runner()
        .run_async(&mut client)
        .await
        .context("applying migrations");
    if report.is_ok() {
        grant_storefront(&client).await;
    }
    client
        .execute(
            "SELECT pg_advisory_unlock(hashtextextended('omsc.migrations', 0))",
            &[],
        )
        .await
        .context("releasing the migration lock")?;
    Ok(report?
        .applied_migrations()
        .iter()
        .map(|m| format!("V{}__{}", m.version(), m.name()))
        .collect())
}

/// Makes the storefront role's grants again after every migration run: tables created since
/// get them, and a role a DBA created after the first migration gets them at the next start.
/// A connector role that may not grant leaves that to a DBA; it says so and goes on.
async fn grant_storefront(client: &tokio_postgres::Client) {
    let exists = client
        .query_one(
            "SELECT to_regproc('omsc_grant_storefront') IS NOT NULL",
            &[],
        )
        .await;
    if !matches!(exists, Ok(ref row) if row.get::<_, bool>(0)) {
        return;
    }
    if let Err(e) = client.batch_execute("SELECT omsc_grant_storefront()").await {
        tracing::warn!(
            error = %e,
            "could not grant the omsc_storefront role its privileges; a DBA runs SELECT omsc_grant_storefront()"
        );
    }
}

/// The migrations this build carries, `V<version>__<name>`.
pub fn known_migrations() -> Vec<String> {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| format!("V{}__{}", m.version(), m.name()))
        .collect()
}

async fn ensure_database(database_url: &str) -> anyhow::Result<()> {
    let config = pg_config(database_url, "omsc-migrate")?;
    match connect_with(&config).await {
        Ok(_) => return Ok(()),
        Err(e) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {}
        Err(e) => {
            return Err(e).with_context(|| format!("connecting to {}", redact_url(database_url)));
        }
    }
    let name = config
        .config
        .get_dbname()
        .context("DATABASE_URL names no database")?
        .to_owned();
    let mut admin = config.clone();
    admin.config.dbname("postgres");
    let client = connect_with(&admin)
        .await
        .context("connecting to the postgres database to create the commerce database")?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match client
        .batch_execute(&format!("CREATE DATABASE {quoted}"))
        .await
    {
        Ok(()) => {
            tracing::info!(database = %name, "created the database");
            Ok(())
        }
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating database {name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_database_url_is_refused_without_its_password() {
        for (url, why) in [
            ("postgres:/app:Secret1@db/omsc", "must be followed by //"),
            ("mysql://app:Secret1@db/omsc", "not mysql"),
            ("postgres://app:p@Secret1@db/omsc", "more than one @"),
        ] {
            let error = format!("{:#}", check_url(url).unwrap_err());
            assert!(error.contains(why), "{url}: {error}");
            assert!(!error.contains("Secret1"), "{url}: {error}");
        }
        for url in [
            "postgres://postgres@127.0.0.1:5432/omsc",
            "postgresql://app:Se/c:r%40t%25%20@db/omsc?sslmode=require&application_name=a@b",
            "host=db user=app password='a:b@c/d'",
            "host=db password=x://y@z@w",
        ] {
            check_url(url).unwrap_or_else(|e| panic!("{url}: {e:#}"));
            pg_config(url, "test").unwrap_or_else(|e| panic!("{url}: {e:#}"));
        }
    }
}
