//! The NONZERO settler: zeroes the SKUs a NONZERO snapshot left out, once the snapshot has
//! settled. Every replica runs one; they share the work through the database.

use std::time::Duration;

use runtime::Shared;
use runtime::backoff::Backoff;
use runtime::health::Beat;
use stock_filter::StockScope;
use tokio_util::sync::CancellationToken;

use crate::StockMetrics;

/// The settler beats at least this often (readiness): every tick (at most a second) and after
/// every backoff (at most 10 s), with room for a long zeroing.
pub const BEAT_EVERY: Duration = Duration::from_secs(30);

pub async fn run(
    shared: Shared,
    settle: Duration,
    metrics: StockMetrics,
    beat: Beat,
    shutdown: CancellationToken,
) {
    // Poll often enough that a zeroing runs within a quarter of the settle period of being
    // due, and at least every second.
    let period = (settle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        beat.beat();
        match settle_due(&shared, settle, &metrics, &shutdown).await {
            Ok(()) => backoff.reset(),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %format!("{e:#}"), ?delay, "NONZERO settler cannot reach the database");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn settle_due(
    shared: &Shared,
    settle: Duration,
    metrics: &StockMetrics,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut client = shared.pool.get().await?;
    for ledger in [StockScope::Aggregate, StockScope::Source] {
        while !shutdown.is_cancelled() {
            let Some(zeroing) = stock_filter::settle_nonzero(&mut client, ledger, settle).await?
            else {
                break;
            };
            metrics
                .rows
                .with_label_values(&["zeroed"])
                .inc_by(zeroing.zeroed_rows);
            tracing::info!(
                ledger = ?zeroing.ledger,
                scope = %zeroing.scope_id,
                created_on = %zeroing.created_on,
                zeroed_rows = zeroing.zeroed_rows,
                "NONZERO snapshot settled; zeroed the SKUs it left out"
            );
        }
    }
    Ok(())
}
