//! Reading the statistics back: per-endpoint summaries over a window, their history period by
//! period, the sampled levels (outbox backlog, queue depths), the workers and the
//! registration. What `omsc report` prints and serves.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use super::{Direction, Histogram, Resolution};

/// A worker that flushed within this long is counted as running.
pub const ALIVE_WITHIN: TimeDelta = TimeDelta::minutes(3);

/// Most periods a window is cut into; the finest resolution that stays within it is chosen.
const MAX_POINTS: i64 = 200;

/// A span of time and the resolution it is read at. The window starts at the start of the
/// period that holds `to - span`, so it covers a little more than the span, never less.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub resolution: Resolution,
}

impl Window {
    /// The last `span` before `now`, at the finest resolution that gives at most 200 periods
    /// (the last hour by minute, the last day by hour, the last 30 days by day).
    pub fn last(span: TimeDelta, now: DateTime<Utc>) -> Self {
        let span = span.max(TimeDelta::minutes(1));
        let resolution = [Resolution::Minute, Resolution::Hour, Resolution::Day]
            .into_iter()
            .find(|r| span.num_seconds() / r.step().num_seconds() <= MAX_POINTS)
            .unwrap_or(Resolution::Day);
        Self::at(resolution, span, now)
    }

    /// The last `span` before `now` at `resolution`.
    pub fn at(resolution: Resolution, span: TimeDelta, now: DateTime<Utc>) -> Self {
        let from = resolution.floor(now - span + resolution.step());
        Self {
            from: from.min(resolution.floor(now)),
            to: now,
            resolution,
        }
    }

    /// The starts of the periods of the window, oldest first.
    pub fn periods(&self) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut at = self.from;
        while at <= self.to {
            out.push(at);
            at += self.resolution.step();
        }
        out
    }
}

/// Whether an outcome counts as a failure: retried or dead-lettered messages, retried or
/// failed outbox rows.
pub fn is_failure(outcome: &str) -> bool {
    matches!(outcome, "retried" | "dead" | "failed")
}

/// Whether an outcome is a message given up on: dead-lettered, or an outbox row failed.
pub fn is_dead(outcome: &str) -> bool {
    matches!(outcome, "dead" | "failed")
}

/// One endpoint over a window.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointSummary {
    pub module: String,
    pub direction: Direction,
    pub endpoint: String,
    pub messages: i64,
    pub failures: i64,
    /// Messages per outcome (applied, stale, ignored, retried, dead; or sent, nothing,
    /// retried, failed).
    pub outcomes: BTreeMap<String, i64>,
    /// Seconds.
    pub avg: Option<f64>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    /// Source lag in seconds (messages that carry a timestamp).
    pub lag_avg: Option<f64>,
    pub lag_max: Option<f64>,
    pub last_seen: DateTime<Utc>,
    #[serde(skip)]
    pub histogram: Histogram,
}

/// One period of one endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub start: DateTime<Utc>,
    pub messages: i64,
    pub failures: i64,
    pub dead: i64,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub lag_max: Option<f64>,
}

/// One endpoint period by period; every period of the window is there (zero when quiet).
#[derive(Debug, Clone, Serialize)]
pub struct EndpointSeries {
    pub module: String,
    pub direction: Direction,
    pub endpoint: String,
    pub points: Vec<Point>,
}

/// One sampled level of one module, period by period (`None` where nothing was sampled).
#[derive(Debug, Clone, Serialize)]
pub struct GaugeSeries {
    pub module: String,
    pub gauge: String,
    pub points: Vec<(DateTime<Utc>, Option<i64>)>,
}

/// The latest value of a sampled level.
#[derive(Debug, Clone, Serialize)]
pub struct GaugeLatest {
    pub module: String,
    pub gauge: String,
    pub value: i64,
    pub sampled_at: DateTime<Utc>,
}

/// A worker process's module, as last flushed.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRow {
    pub module: String,
    pub worker: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub alive: bool,
}

/// The connector's registration with the OMS, when a module keeps one.
#[derive(Debug, Clone, Serialize)]
pub struct Registration {
    /// The table it was read from.
    pub table: String,
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
}

const SUMMARY: &str = "
    SELECT module, direction, endpoint, outcome, sum(messages)::bigint, sum(duration_sum),
           max(duration_max), omsc_stats_sum_buckets(duration_buckets), sum(lag_sum),
           sum(lag_count)::bigint, max(lag_max), max(last_seen_at)
      FROM omsc_endpoint_stats
     WHERE resolution = $1 AND period_start >= $2 AND period_start <= $3
     GROUP BY module, direction, endpoint, outcome";

const SERIES: &str = "
    SELECT period_start, module, direction, endpoint, sum(messages)::bigint,
           coalesce(sum(messages) FILTER (WHERE outcome IN ('retried', 'dead', 'failed')), 0)::bigint,
           coalesce(sum(messages) FILTER (WHERE outcome IN ('dead', 'failed')), 0)::bigint,
           max(duration_max), omsc_stats_sum_buckets(duration_buckets), max(lag_max)
      FROM omsc_endpoint_stats
     WHERE resolution = $1 AND period_start >= $2 AND period_start <= $3
     GROUP BY period_start, module, direction, endpoint";

const GAUGES: &str = "
    SELECT period_start, module, gauge, value_max
      FROM omsc_gauge_stats
     WHERE resolution = $1 AND period_start >= $2 AND period_start <= $3";

const GAUGES_LATEST: &str = "
    SELECT DISTINCT ON (module, gauge) module, gauge, value_last, sampled_at
      FROM omsc_gauge_stats
     WHERE resolution = 'minute'
     ORDER BY module, gauge, sampled_at DESC";

const WORKERS: &str = "
    SELECT module, worker, version, started_at, last_seen_at
      FROM omsc_workers
     WHERE last_seen_at >= $1
     ORDER BY module, last_seen_at DESC";

/// The connector's own registration table, by name, and only the columns meant to be shown:
/// no digest of the secret. A table of the shop's that merely has "registration" in its name
/// (customer sign-ups, say) is never read.
const REGISTRATION_TABLE: &str = "connector_registration";

const REGISTRATION: &str = "
    SELECT jsonb_build_object(
               'state', state, 'connector_id', connector_id, 'url', url,
               'subscribes', subscribes, 'labels', labels, 'message_id', message_id,
               'sent_by', sent_by, 'attempted_at', attempted_at, 'confirmed_at', confirmed_at,
               'last_error', last_error)
      FROM connector_registration";

/// Per endpoint over `window`, sorted by module, direction, endpoint.
pub async fn summaries(
    client: &tokio_postgres::Client,
    window: &Window,
) -> Result<Vec<EndpointSummary>, tokio_postgres::Error> {
    let rows = client
        .query(
            SUMMARY,
            &[&window.resolution.as_str(), &window.from, &window.to],
        )
        .await?;
    let mut by_endpoint: BTreeMap<(String, Direction, String), EndpointSummary> = BTreeMap::new();
    let mut lags: BTreeMap<(String, Direction, String), (f64, i64)> = BTreeMap::new();
    for row in rows {
        let module: String = row.get(0);
        let direction = Direction::parse(row.get(1));
        let endpoint: String = row.get(2);
        let outcome: String = row.get(3);
        let messages: i64 = row.get(4);
        let histogram = Histogram {
            buckets: row.get(7),
            count: messages,
            sum: row.get(5),
            max: row.get(6),
        };
        let lag_sum: f64 = row.get(8);
        let lag_count: i64 = row.get(9);
        let lag_max: Option<f64> = row.get(10);
        let last_seen: DateTime<Utc> = row.get(11);
        let key = (module.clone(), direction, endpoint.clone());
        let summary = by_endpoint
            .entry(key.clone())
            .or_insert_with(|| EndpointSummary {
                module,
                direction,
                endpoint,
                messages: 0,
                failures: 0,
                outcomes: BTreeMap::new(),
                avg: None,
                p50: None,
                p95: None,
                p99: None,
                max: None,
                lag_avg: None,
                lag_max: None,
                last_seen,
                histogram: Histogram::new(),
            });
        summary.messages += messages;
        if is_failure(&outcome) {
            summary.failures += messages;
        }
        *summary.outcomes.entry(outcome).or_default() += messages;
        summary.histogram.merge(&histogram);
        summary.last_seen = summary.last_seen.max(last_seen);
        summary.lag_max = max_opt(summary.lag_max, lag_max);
        let lag = lags.entry(key).or_default();
        lag.0 += lag_sum;
        lag.1 += lag_count;
    }
    let mut out = Vec::with_capacity(by_endpoint.len());
    for (key, mut s) in by_endpoint {
        s.avg = s.histogram.mean();
        s.p50 = s.histogram.quantile(0.50);
        s.p95 = s.histogram.quantile(0.95);
        s.p99 = s.histogram.quantile(0.99);
        s.max = (s.histogram.count > 0).then_some(s.histogram.max);
        s.lag_avg = lags
            .get(&key)
            .filter(|(_, count)| *count > 0)
            .map(|(sum, count)| sum / *count as f64);
        out.push(s);
    }
    Ok(out)
}

/// Every endpoint period by period over `window`, every period present.
pub async fn series(
    client: &tokio_postgres::Client,
    window: &Window,
) -> Result<Vec<EndpointSeries>, tokio_postgres::Error> {
    let rows = client
        .query(
            SERIES,
            &[&window.resolution.as_str(), &window.from, &window.to],
        )
        .await?;
    let periods = window.periods();
    let mut by_endpoint: BTreeMap<(String, Direction, String), BTreeMap<DateTime<Utc>, Point>> =
        BTreeMap::new();
    for row in rows {
        let start: DateTime<Utc> = row.get(0);
        let messages: i64 = row.get(4);
        let histogram = Histogram {
            buckets: row.get(8),
            count: messages,
            sum: 0.0,
            max: row.get(7),
        };
        let point = Point {
            start,
            messages,
            failures: row.get(5),
            dead: row.get(6),
            p50: histogram.quantile(0.50),
            p95: histogram.quantile(0.95),
            p99: histogram.quantile(0.99),
            lag_max: row.get(9),
        };
        by_endpoint
            .entry((row.get(1), Direction::parse(row.get(2)), row.get(3)))
            .or_default()
            .insert(start, point);
    }
    Ok(by_endpoint
        .into_iter()
        .map(
            |((module, direction, endpoint), mut points)| EndpointSeries {
                module,
                direction,
                endpoint,
                points: periods
                    .iter()
                    .map(|&start| points.remove(&start).unwrap_or_else(|| quiet(start)))
                    .collect(),
            },
        )
        .collect())
}

fn quiet(start: DateTime<Utc>) -> Point {
    Point {
        start,
        messages: 0,
        failures: 0,
        dead: 0,
        p50: None,
        p95: None,
        p99: None,
        lag_max: None,
    }
}

/// Every sampled level period by period over `window` (the highest value of each period).
pub async fn gauge_series(
    client: &tokio_postgres::Client,
    window: &Window,
) -> Result<Vec<GaugeSeries>, tokio_postgres::Error> {
    let rows = client
        .query(
            GAUGES,
            &[&window.resolution.as_str(), &window.from, &window.to],
        )
        .await?;
    let mut by_gauge: BTreeMap<(String, String), BTreeMap<DateTime<Utc>, i64>> = BTreeMap::new();
    for row in rows {
        by_gauge
            .entry((row.get(1), row.get(2)))
            .or_default()
            .insert(row.get(0), row.get(3));
    }
    let periods = window.periods();
    Ok(by_gauge
        .into_iter()
        .map(|((module, gauge), values)| GaugeSeries {
            module,
            gauge,
            points: periods
                .iter()
                .map(|start| (*start, values.get(start).copied()))
                .collect(),
        })
        .collect())
}

/// The latest sample of every level.
pub async fn gauges_latest(
    client: &tokio_postgres::Client,
) -> Result<Vec<GaugeLatest>, tokio_postgres::Error> {
    Ok(client
        .query(GAUGES_LATEST, &[])
        .await?
        .iter()
        .map(|r| GaugeLatest {
            module: r.get(0),
            gauge: r.get(1),
            value: r.get(2),
            sampled_at: r.get(3),
        })
        .collect())
}

/// The workers seen since `since`, newest first per module; `alive` when seen within
/// [`ALIVE_WITHIN`] of `now`.
pub async fn workers(
    client: &tokio_postgres::Client,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<WorkerRow>, tokio_postgres::Error> {
    Ok(client
        .query(WORKERS, &[&since])
        .await?
        .iter()
        .map(|r| {
            let last_seen: DateTime<Utc> = r.get(4);
            WorkerRow {
                module: r.get(0),
                worker: r.get(1),
                version: r.get(2),
                started_at: r.get(3),
                last_seen,
                alive: now - last_seen <= ALIVE_WITHIN,
            }
        })
        .collect())
}

/// The connector's registration with the OMS; `None` when it never registered (or the
/// database predates the table).
pub async fn registration(
    client: &tokio_postgres::Client,
) -> Result<Option<Registration>, tokio_postgres::Error> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1::text) IS NOT NULL",
            &[&REGISTRATION_TABLE],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let rows: Vec<_> = client
        .query(REGISTRATION, &[])
        .await?
        .iter()
        .filter_map(|r| match r.get::<_, serde_json::Value>(0) {
            serde_json::Value::Object(map) => Some(map),
            _ => None,
        })
        .collect();
    Ok((!rows.is_empty()).then(|| Registration {
        table: REGISTRATION_TABLE.to_owned(),
        rows,
    }))
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn an_hour_is_read_by_minute_a_day_by_hour_a_month_by_day() {
        let now = at("2026-03-01T10:30:20Z");
        let hour = Window::last(TimeDelta::hours(1), now);
        assert_eq!(hour.resolution, Resolution::Minute);
        assert_eq!(hour.periods().len(), 60);
        assert_eq!(hour.from, at("2026-03-01T09:31:00Z"));
        let day = Window::last(TimeDelta::days(1), now);
        assert_eq!(day.resolution, Resolution::Hour);
        assert_eq!(day.periods().len(), 24);
        let month = Window::last(TimeDelta::days(30), now);
        assert_eq!(month.resolution, Resolution::Day);
        assert_eq!(month.periods().len(), 30);
        assert_eq!(*month.periods().last().unwrap(), at("2026-03-01T00:00:00Z"));
        let week = Window::last(TimeDelta::days(7), now);
        assert_eq!(week.resolution, Resolution::Hour);
        assert_eq!(week.periods().len(), 168);
    }

    #[test]
    fn failures_are_retries_and_give_ups() {
        for outcome in ["retried", "dead", "failed"] {
            assert!(is_failure(outcome));
        }
        for outcome in ["applied", "stale", "ignored", "sent", "nothing"] {
            assert!(!is_failure(outcome));
        }
    }
}
