//! Waiting for the database and the broker before anything starts, and telling a problem that
//! passes from one that never will.
//!
//! A server that is down, restarting or out of connections, a network that is cut: these
//! pass. The worker waits with a growing backoff and says so once per attempt. A wrong
//! password, an unknown role or database, a virtual host the user may not open: these never
//! pass by waiting. The worker says so once and exits with an error, unless it is told to
//! retry forever (`--retry-forever`, `OMSC_RETRY_FOREVER`) for an orchestrator that would
//! rather keep it running while someone fixes the secret.

use std::future::Future;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::RuntimeConfig;
use crate::{amqp, db};

/// Whether waiting can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The server is unreachable or busy: wait and try again.
    Passing,
    /// The server answered and refused the configuration: waiting will not help.
    Permanent,
}

/// Migrates (or, without `--migrate`, connects to) the database, then opens and closes a
/// broker connection. `Ok(false)`: shutdown was requested while waiting. `Err`: one of them
/// refused the configuration for good.
pub async fn wait_until_reachable(
    config: &RuntimeConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let database_url = config.db.database_url.clone();
    let migrate = config.migrate;
    let database = wait_for(
        "the database",
        config.retry_forever,
        shutdown,
        || {
            let url = database_url.clone();
            async move {
                if migrate {
                    for name in db::migrate(&url).await? {
                        tracing::info!(migration = %name, "applied migration");
                    }
                } else {
                    db::connect(&url, "omsc-startup").await?;
                }
                anyhow::Ok(())
            }
        },
        classify_database,
    )
    .await?;
    if !database {
        return Ok(false);
    }
    let amqp_url = config.broker.amqp_url.clone();
    wait_for(
        "the broker",
        config.retry_forever,
        shutdown,
        || {
            let url = amqp_url.clone();
            async move {
                let connection = amqp::connect(&url, "omsc-startup").await?;
                let _ =
                    amqp::within("closing", connection.close(200, "start-up check".into())).await;
                anyhow::Ok(())
            }
        },
        classify_broker,
    )
    .await
}

/// Tries `attempt` until it succeeds, shutdown is requested (`Ok(false)`), or it fails in a
/// way `classify` calls permanent and `retry_forever` is off (`Err`).
async fn wait_for<F, Fut>(
    what: &str,
    retry_forever: bool,
    shutdown: &CancellationToken,
    mut attempt: F,
    classify: fn(&anyhow::Error) -> Verdict,
) -> anyhow::Result<bool>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut passing = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    // A refusal that someone has to fix is retried more slowly: it is not going anywhere.
    let mut permanent = Backoff::new(Duration::from_secs(5), Duration::from_secs(60));
    let mut failed = false;
    loop {
        let error = match attempt().await {
            Ok(()) => {
                if failed {
                    tracing::info!("{what} is reachable; starting");
                }
                return Ok(true);
            }
            Err(e) => e,
        };
        failed = true;
        let delay = match classify(&error) {
            Verdict::Permanent if !retry_forever => {
                // One line: the operator reads it once, at the end of the output.
                anyhow::bail!(
                    "{what} refused the connector's configuration ({}), which waiting will not \
                     change; fix it and start again (--retry-forever, OMSC_RETRY_FOREVER: keep \
                     trying instead)",
                    one_line(&error)
                );
            }
            Verdict::Permanent => {
                let delay = permanent.next_delay();
                tracing::error!(error = %format!("{error:#}"), ?delay, "{what} refused the connector's configuration; retrying as --retry-forever says");
                delay
            }
            Verdict::Passing => {
                let delay = passing.next_delay();
                tracing::warn!(error = %format!("{error:#}"), ?delay, "cannot reach {what} yet; retrying");
                delay
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return Ok(false),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// The outermost context and the root cause, each once (a client error's text often
/// repeats its cause's).
fn one_line(error: &anyhow::Error) -> String {
    let outer = error.to_string();
    let root = error.root_cause().to_string();
    if outer.contains(&root) {
        outer
    } else {
        format!("{outer}: {root}")
    }
}

/// Authentication (class 28: wrong password, unknown role, no `pg_hba.conf` entry), an
/// unknown database (3D000: `migrate` creates it when it may, so this is one it may not), or
/// a missing privilege (42501) are permanent; everything else, an I/O error above all, passes.
pub fn classify_database(error: &anyhow::Error) -> Verdict {
    let code = error
        .chain()
        .find_map(|e| e.downcast_ref::<tokio_postgres::Error>())
        .and_then(tokio_postgres::Error::code);
    match code {
        Some(code)
            if code.code().starts_with("28")
                || *code == SqlState::INVALID_CATALOG_NAME
                || *code == SqlState::INSUFFICIENT_PRIVILEGE =>
        {
            Verdict::Permanent
        }
        _ => Verdict::Passing,
    }
}

/// Access refused (403: a wrong user or password), not allowed (530: a virtual host that does
/// not exist or the user may not open), an invalid path, a protocol the broker does not speak
/// or a refused login are permanent; an I/O error or a timeout passes.
pub fn classify_broker(error: &anyhow::Error) -> Verdict {
    let Some(error) = error.chain().find_map(|e| e.downcast_ref::<lapin::Error>()) else {
        return Verdict::Passing;
    };
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) if matches!(amqp.get_id(), 402 | 403 | 530) => {
            Verdict::Permanent
        }
        lapin::ErrorKind::InvalidProtocolVersion(_) | lapin::ErrorKind::AuthProviderError(_) => {
            Verdict::Permanent
        }
        _ => Verdict::Passing,
    }
}
