//! Parsing and applying the inventory methods.

use std::time::Duration;

use chrono::{DateTime, SubsecRound as _, Utc};
use deadpool_postgres::Transaction;
use protocol::Rejection;
use protocol::inventory::{self, Source, StockScope, StockSnapshot, methods};
use runtime::{ApplyError, Handler, Outcome};
use serde_json::value::RawValue;
use stock_filter::BatchPlan;

use crate::StockMetrics;
use crate::sources;

/// A valid inventory message.
#[derive(Debug)]
pub enum InventoryMessage {
    /// An aggregate or a source stock snapshot, by its scope.
    Stock(StockSnapshot),
    SourceSaved(Source),
    SourceDeleted(String),
}

pub struct InventoryHandler {
    metrics: StockMetrics,
    max_clock_skew: Duration,
}

/// How far ahead of the worker's clock a snapshot may be dated unless configured otherwise.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(86_400);

impl InventoryHandler {
    pub fn new(metrics: StockMetrics) -> Self {
        Self {
            metrics,
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
        }
    }

    /// Snapshots dated more than `skew` ahead of the worker's clock are refused.
    #[must_use]
    pub fn with_max_clock_skew(mut self, skew: Duration) -> Self {
        self.max_clock_skew = skew;
        self
    }
}

/// Refuses a snapshot dated further ahead than `max_skew` of `now`. Its `created_on` is the
/// version every compare-and-set compares: applied, a FULL or DELTA from the future would win
/// over every real update of its SKUs, and a NONZERO would zero every SKU of its aggregate it
/// does not list, until the clock caught up (year 99999: never). Refused at parse, it is
/// dead-lettered at once with the reason rather than retried: waiting does not help.
pub fn refuse_future(
    snapshot: StockSnapshot,
    now: DateTime<Utc>,
    max_skew: Duration,
) -> Result<StockSnapshot, Rejection> {
    let skew = chrono::TimeDelta::from_std(max_skew).unwrap_or(chrono::TimeDelta::MAX);
    let latest = now
        .checked_add_signed(skew)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    if snapshot.created_on <= latest {
        return Ok(snapshot);
    }
    let ahead = snapshot.created_on.signed_duration_since(now);
    Err(Rejection::new(format!(
        "\"created_on\" {} is {} ahead of this worker's clock ({}), more than the allowed clock skew of {} (OMSC_MAX_CLOCK_SKEW_SECS)",
        protocol::lenient::format_timestamp(&snapshot.created_on),
        describe(ahead),
        protocol::lenient::format_timestamp(&now.trunc_subsecs(0)),
        describe(skew),
    )))
}

/// `26 h`, `97975 days`: enough to see how far off a clock is.
fn describe(span: chrono::TimeDelta) -> String {
    let secs = span.num_seconds();
    if secs < 2 * 3600 {
        format!("{secs} s")
    } else if secs < 2 * 86_400 {
        format!("{} h", secs / 3600)
    } else {
        format!("{} days", secs / 86_400)
    }
}

impl Handler for InventoryHandler {
    type Message = InventoryMessage;

    fn module(&self) -> &'static str {
        "inventory"
    }

    fn methods(&self) -> &'static [&'static str] {
        methods::ALL
    }

    fn parse(
        &self,
        method: &str,
        params: &RawValue,
        limits: &protocol::Limits,
    ) -> Result<InventoryMessage, Rejection> {
        // Routing is by method, never by shape: a source message (which has no `mode`) can
        // never reach the stock filter.
        match method {
            methods::AGGREGATE_STOCK_UPDATED | methods::SOURCE_STOCK_UPDATED => {
                let scope = if method == methods::AGGREGATE_STOCK_UPDATED {
                    StockScope::Aggregate
                } else {
                    StockScope::Source
                };
                let snapshot = inventory::parse_stock_snapshot(params, scope, limits)?;
                refuse_future(snapshot, Utc::now(), self.max_clock_skew)
                    .map(InventoryMessage::Stock)
            }
            methods::SOURCE_CREATED | methods::SOURCE_UPDATED => {
                inventory::parse_source(params).map(InventoryMessage::SourceSaved)
            }
            methods::SOURCE_DELETED => {
                inventory::parse_source_deleted(params).map(InventoryMessage::SourceDeleted)
            }
            other => Err(Rejection::new(format!(
                "method {other:?} is not handled by the inventory module"
            ))),
        }
    }

    fn weight(&self, message: &InventoryMessage) -> usize {
        match message {
            InventoryMessage::Stock(s) => s.stock.len(),
            _ => 1,
        }
    }

    fn produced_at(&self, message: &InventoryMessage) -> Option<DateTime<Utc>> {
        match message {
            InventoryMessage::Stock(s) => Some(s.created_on),
            _ => None,
        }
    }

    async fn apply<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        batch: &'a [&'a InventoryMessage],
    ) -> Result<Vec<Outcome>, ApplyError> {
        let mut outcomes = vec![Outcome::Applied; batch.len()];
        for ledger in [StockScope::Aggregate, StockScope::Source] {
            let mut plan = BatchPlan::new(ledger);
            let mut members = Vec::new();
            for (i, message) in batch.iter().enumerate() {
                if let InventoryMessage::Stock(s) = message
                    && s.scope == ledger
                {
                    plan.add(s, i);
                    members.push(i);
                }
            }
            if members.is_empty() {
                continue;
            }
            let plan = plan.finish();
            let applied = stock_filter::apply(tx, &plan).await?;
            self.metrics
                .rows
                .with_label_values(&["applied"])
                .inc_by(applied.written);
            self.metrics
                .rows
                .with_label_values(&["stale"])
                .inc_by(applied.stale);
            for i in members {
                // A NONZERO chunk always counts: its arrival schedules the zeroing.
                let nonzero = matches!(batch[i], InventoryMessage::Stock(s) if s.mode == inventory::SnapshotMode::NonZero);
                if !nonzero && applied.writers.binary_search(&i).is_err() {
                    outcomes[i] = Outcome::Stale;
                }
            }
        }
        // Source events carry no version: they apply in arrival order, last one wins.
        for (i, message) in batch.iter().enumerate() {
            outcomes[i] = match message {
                InventoryMessage::SourceSaved(source) => {
                    sources::save(tx, source).await?;
                    Outcome::Applied
                }
                InventoryMessage::SourceDeleted(id) => {
                    if sources::delete(tx, id).await? {
                        Outcome::Applied
                    } else {
                        Outcome::Ignored("unknown_source")
                    }
                }
                InventoryMessage::Stock(_) => continue,
            };
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;
    use protocol::inventory::SnapshotMode;

    use super::*;

    fn snapshot(mode: SnapshotMode, created_on: DateTime<Utc>) -> StockSnapshot {
        StockSnapshot {
            scope: StockScope::Aggregate,
            scope_id: "EU".into(),
            mode,
            created_on,
            stock: Vec::new(),
            batch: None,
        }
    }

    #[test]
    fn a_snapshot_from_further_ahead_than_the_skew_is_refused_whatever_its_mode() {
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap();
        let day = Duration::from_secs(86_400);
        for mode in [
            SnapshotMode::Full,
            SnapshotMode::Delta,
            SnapshotMode::NonZero,
        ] {
            let within = now + chrono::TimeDelta::hours(23);
            assert!(refuse_future(snapshot(mode, within), now, day).is_ok());
            let ahead = now + chrono::TimeDelta::hours(26);
            let refused = refuse_future(snapshot(mode, ahead), now, day).unwrap_err();
            assert_eq!(
                refused.reason(),
                "\"created_on\" 2026-12-01T02:00:00Z is 26 h ahead of this worker's clock \
                 (2026-11-30T00:00:00Z), more than the allowed clock skew of 24 h \
                 (OMSC_MAX_CLOCK_SKEW_SECS)"
            );
        }
        // The past is never refused: old snapshots are stale, not wrong.
        let old = Utc.with_ymd_and_hms(2001, 1, 1, 0, 0, 0).unwrap();
        assert!(refuse_future(snapshot(SnapshotMode::NonZero, old), now, day).is_ok());
    }

    #[test]
    fn the_year_99999_is_refused_and_an_unbounded_skew_does_not_overflow() {
        let now = Utc::now();
        let far = protocol::lenient::parse_timestamp("+99999-01-01T00:00:00Z")
            .or_else(|| DateTime::<Utc>::MAX_UTC.checked_sub_signed(chrono::TimeDelta::days(1)))
            .unwrap();
        let refused = refuse_future(
            snapshot(SnapshotMode::NonZero, far),
            now,
            DEFAULT_MAX_CLOCK_SKEW,
        )
        .unwrap_err();
        assert!(refused.reason().contains("days ahead"), "{refused}");
        assert!(refuse_future(snapshot(SnapshotMode::NonZero, far), now, Duration::MAX).is_ok());
    }
}
