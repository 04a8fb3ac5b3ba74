//! Waiting for a condition with a deadline: the tests and the benchmark synchronise on what
//! they can observe, never on a sleep of a guessed length.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`wait_until`] checks: short against the seconds a worker takes, long enough
/// not to load the database with its own queries.
pub const EVERY: Duration = Duration::from_millis(25);

/// Waits until `condition` holds, checking every [`EVERY`]; panics (fails the test) after
/// `timeout`, naming `what` it waited for.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let result = try_wait_until(what, EVERY, timeout, || {
        let check = condition();
        async move { Ok(check.await) }
    })
    .await;
    if let Err(e) = result {
        panic!("{e:#}");
    }
}

/// Waits until `condition` holds, checking every `every`; an error after `timeout`, or the
/// first error of the condition itself. For the benchmark, which reports rather than panics.
pub async fn try_wait_until<F, Fut>(
    what: &str,
    every: Duration,
    timeout: Duration,
    mut condition: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await? {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}
