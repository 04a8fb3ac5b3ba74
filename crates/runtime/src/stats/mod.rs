//! Per-endpoint statistics for the system report: what each worker handled, per minute, kept
//! in memory and flushed to PostgreSQL once a minute and at shutdown, where the minutes of
//! every replica are merged (counts summed, latency histograms added bucket by bucket) and
//! rolled up into hours and days.
//!
//! Recording is a map update under a mutex (one lock per acknowledged batch), never a
//! database write: the hot path stays free of I/O. A flush that fails keeps its minutes for
//! the next one, so a database outage delays the figures but loses none (up to
//! [`MAX_HELD_MINUTES`] of them).

pub mod depth;
pub mod histogram;
pub mod query;
pub mod store;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

pub use histogram::{BUCKETS, Histogram};

use crate::config::StatsConfig;
use crate::metrics::Metrics;

/// Minutes a worker holds while the database cannot take them; older ones are dropped (and
/// the drop logged) so an outage of days does not grow memory without bound.
pub const MAX_HELD_MINUTES: usize = 24 * 60;

/// The resolutions the store keeps, finest first.
pub const RESOLUTIONS: [Resolution; 3] = [Resolution::Minute, Resolution::Hour, Resolution::Day];

// The flags live with the rest of the configuration (`config.rs`), which depends on nothing
// of the runtime; what they mean for the store is said here.
impl StatsConfig {
    pub fn retention(&self) -> Retention {
        Retention {
            minutes: TimeDelta::hours(i64::from(self.stats_minute_retention_hours.max(1))),
            hours_and_days: TimeDelta::days(i64::from(self.stats_retention_days.max(1))),
        }
    }
}

/// How long each resolution is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub minutes: TimeDelta,
    pub hours_and_days: TimeDelta,
}

impl Retention {
    pub fn of(&self, resolution: Resolution) -> TimeDelta {
        match resolution {
            Resolution::Minute => self.minutes,
            Resolution::Hour | Resolution::Day => self.hours_and_days,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    Minute,
    Hour,
    Day,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Minute => "minute",
            Resolution::Hour => "hour",
            Resolution::Day => "day",
        }
    }

    pub fn step(self) -> TimeDelta {
        match self {
            Resolution::Minute => TimeDelta::minutes(1),
            Resolution::Hour => TimeDelta::hours(1),
            Resolution::Day => TimeDelta::days(1),
        }
    }

    /// The start of the period that holds `at` (days are UTC days).
    pub fn floor(self, at: DateTime<Utc>) -> DateTime<Utc> {
        at.duration_trunc(self.step()).unwrap_or(at)
    }
}

/// Which way a message went: consumed from the module's queue, or relayed from its outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }

    pub fn parse(s: &str) -> Self {
        if s == "out" {
            Direction::Out
        } else {
            Direction::In
        }
    }
}

/// What a minute of one endpoint's messages with one outcome adds up to.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    pub duration: Histogram,
    pub lag_sum: f64,
    pub lag_count: i64,
    pub lag_max: Option<f64>,
    pub last_seen: DateTime<Utc>,
}

impl Tally {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self {
            duration: Histogram::new(),
            lag_sum: 0.0,
            lag_count: 0,
            lag_max: None,
            last_seen: at,
        }
    }

    pub fn observe(&mut self, at: DateTime<Utc>, took: Duration, lag: Option<f64>) {
        self.duration.observe(took.as_secs_f64());
        if let Some(lag) = lag.filter(|l| l.is_finite()) {
            self.lag_sum += lag;
            self.lag_count += 1;
            self.lag_max = Some(self.lag_max.map_or(lag, |m| m.max(lag)));
        }
        self.last_seen = self.last_seen.max(at);
    }

    pub fn merge(&mut self, other: &Tally) {
        self.duration.merge(&other.duration);
        self.lag_sum += other.lag_sum;
        self.lag_count += other.lag_count;
        self.lag_max = match (self.lag_max, other.lag_max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.last_seen = self.last_seen.max(other.last_seen);
    }
}

/// One row of `omsc_endpoint_stats` before it is written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointKey {
    pub period: DateTime<Utc>,
    pub module: Cow<'static, str>,
    pub direction: Direction,
    pub endpoint: Cow<'static, str>,
    pub outcome: &'static str,
}

/// One row of `omsc_gauge_stats` before it is written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaugeSample {
    pub max: i64,
    pub last: i64,
    pub at: DateTime<Utc>,
}

impl GaugeSample {
    fn merge(&mut self, other: &GaugeSample) {
        self.max = self.max.max(other.max);
        if other.at >= self.at {
            self.last = other.last;
            self.at = other.at;
        }
    }
}

/// The gauges sampled into the report.
pub mod gauges {
    /// Outbox rows neither sent nor failed.
    pub const OUTBOX_PENDING: &str = "outbox_pending";
    /// Outbox rows given up on.
    pub const OUTBOX_FAILED: &str = "outbox_failed";
    /// Messages waiting in the module's queue.
    pub const QUEUE_READY: &str = "queue_ready";
    /// Messages in the module's dead-letter queue.
    pub const QUEUE_DEAD: &str = "queue_dead";
}

/// A gauge row's key: period, module, gauge.
pub type GaugeKey = (DateTime<Utc>, &'static str, &'static str);
/// The endpoint rows of one resolution, in write order.
pub type EndpointRows = BTreeMap<EndpointKey, Tally>;
/// The gauge rows of one resolution, in write order.
pub type GaugeRows = BTreeMap<GaugeKey, GaugeSample>;

/// What a worker has recorded and not flushed yet, per minute.
#[derive(Debug, Default, Clone)]
pub struct Pending {
    pub endpoints: HashMap<EndpointKey, Tally>,
    pub gauges: HashMap<GaugeKey, GaugeSample>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty() && self.gauges.is_empty()
    }

    fn absorb(&mut self, other: Pending) {
        for (key, tally) in other.endpoints {
            match self.endpoints.get_mut(&key) {
                Some(mine) => mine.merge(&tally),
                None => {
                    self.endpoints.insert(key, tally);
                }
            }
        }
        for (key, sample) in other.gauges {
            self.gauges
                .entry(key)
                .and_modify(|s| s.merge(&sample))
                .or_insert(sample);
        }
    }

    /// Drops the oldest minutes beyond `keep`; returns how many were dropped.
    fn bound(&mut self, keep: usize) -> usize {
        let minutes: BTreeSet<DateTime<Utc>> = self
            .endpoints
            .keys()
            .map(|k| k.period)
            .chain(self.gauges.keys().map(|k| k.0))
            .collect();
        if minutes.len() <= keep {
            return 0;
        }
        let cutoff = *minutes.iter().nth(minutes.len() - keep).expect("in range");
        self.endpoints.retain(|k, _| k.period >= cutoff);
        self.gauges.retain(|k, _| k.0 >= cutoff);
        minutes.len() - keep
    }

    /// The rows of each resolution: the minutes as recorded, merged into their hours and
    /// days. Sorted, so that every worker upserts in the same order (no deadlocks).
    pub fn rows(&self) -> Vec<(Resolution, EndpointRows, GaugeRows)> {
        RESOLUTIONS
            .iter()
            .map(|&resolution| {
                let mut endpoints: BTreeMap<EndpointKey, Tally> = BTreeMap::new();
                for (key, tally) in &self.endpoints {
                    let key = EndpointKey {
                        period: resolution.floor(key.period),
                        ..key.clone()
                    };
                    match endpoints.get_mut(&key) {
                        Some(mine) => mine.merge(tally),
                        None => {
                            endpoints.insert(key, tally.clone());
                        }
                    }
                }
                let mut gauges = BTreeMap::new();
                for (&(minute, module, gauge), sample) in &self.gauges {
                    gauges
                        .entry((resolution.floor(minute), module, gauge))
                        .and_modify(|s: &mut GaugeSample| s.merge(sample))
                        .or_insert(*sample);
                }
                (resolution, endpoints, gauges)
            })
            .collect()
    }
}

/// A process's statistics recorder. Cheap to clone; every clone records into the same
/// minutes.
#[derive(Clone)]
pub struct Stats {
    inner: Arc<Mutex<Pending>>,
    modules: Arc<Mutex<BTreeSet<&'static str>>>,
    identity: Arc<Identity>,
    metrics: Metrics,
}

/// Who flushes: the row of `omsc_workers`.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `host/pid/start`: unique per process run.
    pub worker: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
}

impl Identity {
    pub fn of_this_process() -> Self {
        let started_at = Utc::now();
        Self {
            worker: format!(
                "{}/{}/{}",
                crate::host::host_name(),
                std::process::id(),
                started_at.timestamp_millis()
            ),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at,
        }
    }
}

impl Stats {
    pub fn new(identity: Identity, metrics: Metrics) -> Self {
        Self {
            inner: Arc::default(),
            modules: Arc::default(),
            identity: Arc::new(identity),
            metrics,
        }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Declares a module this process runs (shown in the report with its version).
    pub fn add_module(&self, module: &'static str) {
        lock(&self.modules).insert(module);
    }

    pub fn modules(&self) -> Vec<&'static str> {
        lock(&self.modules).iter().copied().collect()
    }

    /// Starts recording the messages of one acknowledged batch: tallied locally, merged
    /// under one lock when the recorder is dropped.
    pub fn batch(&self) -> BatchRecorder<'_> {
        BatchRecorder {
            stats: self,
            now: Utc::now(),
            tallies: Vec::new(),
        }
    }

    /// Records an outbox row settled by a relay: `age` is how long it waited since it was
    /// written.
    pub fn outbox(&self, module: &'static str, topic: &str, outcome: &'static str, age: Duration) {
        let now = Utc::now();
        let key = EndpointKey {
            period: Resolution::Minute.floor(now),
            module: Cow::Borrowed(module),
            direction: Direction::Out,
            endpoint: Cow::Owned(topic.to_owned()),
            outcome,
        };
        lock(&self.inner)
            .endpoints
            .entry(key)
            .or_insert_with(|| Tally::new(now))
            .observe(now, age, None);
    }

    /// Records a module's outbox backlog: rows waiting and rows given up on.
    pub fn outbox_levels(&self, module: &'static str, pending: i64, failed: i64) {
        self.gauge(module, gauges::OUTBOX_PENDING, pending);
        self.gauge(module, gauges::OUTBOX_FAILED, failed);
    }

    /// Records a sampled level (outbox backlog, queue depth).
    pub fn gauge(&self, module: &'static str, gauge: &'static str, value: i64) {
        let now = Utc::now();
        let sample = GaugeSample {
            max: value,
            last: value,
            at: now,
        };
        lock(&self.inner)
            .gauges
            .entry((Resolution::Minute.floor(now), module, gauge))
            .and_modify(|s| s.merge(&sample))
            .or_insert(sample);
    }

    /// Takes everything recorded so far (for a flush).
    pub fn take(&self) -> Pending {
        std::mem::take(&mut *lock(&self.inner))
    }

    /// Gives back what a failed flush took, to be flushed with the next one.
    pub fn restore(&self, pending: Pending) {
        let mut inner = lock(&self.inner);
        inner.absorb(pending);
        let dropped = inner.bound(MAX_HELD_MINUTES);
        if dropped > 0 {
            tracing::warn!(
                minutes = dropped,
                "the database took no statistics for too long; dropped the oldest minutes"
            );
        }
    }

    /// Writes what was recorded to the database. On failure nothing is lost: the minutes
    /// stay for the next flush.
    pub async fn flush(&self, pool: &deadpool_postgres::Pool) -> Result<usize, store::StoreError> {
        let pending = self.take();
        let modules = self.modules();
        let result = async {
            let mut client = pool.get().await?;
            store::write(&mut client, &self.identity, &modules, &pending, Utc::now()).await
        }
        .await;
        match result {
            Ok(rows) => Ok(rows),
            Err(e) => {
                self.restore(pending);
                Err(e)
            }
        }
    }
}

/// Records the messages of one batch. A batch has few distinct endpoints and outcomes
/// (usually one of each), so they are tallied in a small list and merged into the minute's
/// map under one lock, with one gauge update per endpoint, when the recorder is dropped.
pub struct BatchRecorder<'a> {
    stats: &'a Stats,
    now: DateTime<Utc>,
    tallies: Vec<(&'static str, &'static str, &'static str, Tally)>,
}

impl BatchRecorder<'_> {
    /// One message of an endpoint, its outcome label, how long it took from receipt to
    /// acknowledgement and its source lag in seconds, if it carries a timestamp.
    pub fn message(
        &mut self,
        module: &'static str,
        endpoint: &'static str,
        outcome: &'static str,
        took: Duration,
        lag: Option<f64>,
    ) {
        let now = self.now;
        let found = self
            .tallies
            .iter_mut()
            .find(|(m, e, o, _)| *e == endpoint && *o == outcome && *m == module);
        let tally = match found {
            Some((_, _, _, tally)) => tally,
            None => {
                self.tallies
                    .push((module, endpoint, outcome, Tally::new(now)));
                &mut self.tallies.last_mut().expect("just pushed").3
            }
        };
        tally.observe(now, took, lag);
    }
}

impl Drop for BatchRecorder<'_> {
    fn drop(&mut self) {
        if self.tallies.is_empty() {
            return;
        }
        let minute = Resolution::Minute.floor(self.now);
        let mut succeeded: Vec<(&'static str, &'static str)> = Vec::new();
        {
            let mut pending = lock(&self.stats.inner);
            for (module, endpoint, outcome, tally) in self.tallies.drain(..) {
                if matches!(outcome, "applied" | "stale" | "ignored")
                    && !succeeded.contains(&(module, endpoint))
                {
                    succeeded.push((module, endpoint));
                }
                let key = EndpointKey {
                    period: minute,
                    module: Cow::Borrowed(module),
                    direction: Direction::In,
                    endpoint: Cow::Borrowed(endpoint),
                    outcome,
                };
                match pending.endpoints.get_mut(&key) {
                    Some(mine) => mine.merge(&tally),
                    None => {
                        pending.endpoints.insert(key, tally);
                    }
                }
            }
        }
        let at = self.now.timestamp_millis() as f64 / 1000.0;
        for (module, endpoint) in succeeded {
            self.stats
                .metrics
                .last_message
                .with_label_values(&[module, endpoint])
                .set(at);
        }
    }
}

/// Flushes every `config.flush_every()` until `shutdown`, and prunes what is past retention
/// about once an hour. The last flush, after the consumers drained, is the caller's
/// ([`Stats::flush`]).
pub async fn run_flusher(
    stats: Stats,
    pool: deadpool_postgres::Pool,
    config: StatsConfig,
    beat: crate::health::Beat,
    shutdown: CancellationToken,
) {
    let every = config.flush_every();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        beat.beat();
        if let Err(e) = stats.flush(&pool).await {
            tracing::warn!(error = %e, "cannot write statistics yet; keeping them for the next flush");
            continue;
        }
        if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
            match prune_now(&pool, config.retention()).await {
                Ok(deleted) if deleted > 0 => {
                    tracing::debug!(rows = deleted, "pruned old statistics");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot prune statistics"),
            }
            last_prune = Some(tokio::time::Instant::now());
        }
    }
}

async fn prune_now(
    pool: &deadpool_postgres::Pool,
    retention: Retention,
) -> Result<u64, store::StoreError> {
    let client = pool.get().await?;
    store::prune(&client, retention, Utc::now()).await
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panic elsewhere while holding the lock leaves nothing half-done to fear.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(minute: DateTime<Utc>, endpoint: &'static str) -> EndpointKey {
        EndpointKey {
            period: minute,
            module: Cow::Borrowed("inventory"),
            direction: Direction::In,
            endpoint: Cow::Borrowed(endpoint),
            outcome: "applied",
        }
    }

    fn tally(at: DateTime<Utc>, seconds: &[f64]) -> Tally {
        let mut t = Tally::new(at);
        for s in seconds {
            t.observe(at, Duration::from_secs_f64(*s), Some(1.0));
        }
        t
    }

    #[test]
    fn minutes_roll_up_into_their_hour_and_day() {
        let t0: DateTime<Utc> = "2026-03-01T10:58:00Z".parse().unwrap();
        let mut pending = Pending::default();
        for (i, minute) in [0, 1, 2, 3].iter().enumerate() {
            let at = t0 + TimeDelta::minutes(*minute);
            pending
                .endpoints
                .insert(key(at, "m"), tally(at, &vec![0.001; i + 1]));
        }
        let rows = pending.rows();
        let (_, minutes, _) = &rows[0];
        let (_, hours, _) = &rows[1];
        let (_, days, _) = &rows[2];
        assert_eq!(minutes.len(), 4);
        assert_eq!(
            hours.len(),
            2,
            "10:58 and 10:59 in one hour, 11:00 and 11:01 in the next"
        );
        let counts: Vec<i64> = hours.values().map(|t| t.duration.count).collect();
        assert_eq!(counts, vec![1 + 2, 3 + 4]);
        assert_eq!(days.len(), 1);
        assert_eq!(days.values().next().unwrap().duration.count, 10);
        assert_eq!(days.values().next().unwrap().lag_count, 10);
    }

    #[test]
    fn holding_is_bounded_to_the_newest_minutes() {
        let t0: DateTime<Utc> = "2026-03-01T10:00:00Z".parse().unwrap();
        let mut pending = Pending::default();
        for m in 0..10 {
            let at = t0 + TimeDelta::minutes(m);
            pending.endpoints.insert(key(at, "m"), tally(at, &[0.01]));
        }
        assert_eq!(pending.bound(4), 6);
        let mut left: Vec<_> = pending.endpoints.keys().map(|k| k.period).collect();
        left.sort();
        assert_eq!(left.first().copied(), Some(t0 + TimeDelta::minutes(6)));
        assert_eq!(left.len(), 4);
    }

    #[test]
    fn gauges_keep_the_highest_and_the_latest_value() {
        let t0: DateTime<Utc> = "2026-03-01T10:00:00Z".parse().unwrap();
        let mut a = GaugeSample {
            max: 5,
            last: 5,
            at: t0,
        };
        a.merge(&GaugeSample {
            max: 9,
            last: 2,
            at: t0 + TimeDelta::seconds(10),
        });
        assert_eq!((a.max, a.last), (9, 2));
        a.merge(&GaugeSample {
            max: 1,
            last: 1,
            at: t0,
        });
        assert_eq!(
            (a.max, a.last),
            (9, 2),
            "an older sample does not replace the latest"
        );
    }
}
