//! The system report. Per endpoint, how many messages, how many failed, how long they took
//! (average, p50, p95, p99) and when one was last seen, over a window; as a terminal table,
//! as JSON for scripts, or as a web page with the history in charts (`serve`), which
//! `omsc report` prints or serves.
//!
//! Everything is read from the database: the statistics the workers flush (`runtime::stats`),
//! so the report covers every replica of every module and works while the workers are down;
//! and what waits for a person (`attention`: open dead letters, failed or stuck outbox rows).

pub mod attention;
pub mod html;
pub mod page;
pub mod serve;
pub mod svg;
pub mod text;

use std::net::SocketAddr;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use runtime::stats::query::{
    self, EndpointSeries, EndpointSummary, GaugeLatest, GaugeSeries, Registration, Window,
    WorkerRow,
};
use serde::Serialize;

pub use crate::attention::Attention;

/// What the table and the JSON show.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub generated_at: DateTime<Utc>,
    /// The span asked for, as typed (`1h`).
    pub since: String,
    pub window: Window,
    pub endpoints: Vec<EndpointSummary>,
    /// The latest outbox backlog and queue depths per module.
    pub levels: Vec<GaugeLatest>,
    /// Worker processes seen within the window, per module.
    pub workers: Vec<WorkerRow>,
    /// The connector's registration with the OMS; `None`: not registered (no table, or none
    /// of its rows).
    pub registration: Option<Registration>,
    /// The open dead letters and the failed or stuck outbox rows, with what settles each.
    pub attention: Attention,
}

/// The history the page draws besides the report.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    pub series: Vec<EndpointSeries>,
    pub gauges: Vec<GaugeSeries>,
}

impl Report {
    pub async fn load(
        client: &tokio_postgres::Client,
        since: TimeDelta,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Self> {
        let window = Window::last(since, now);
        let endpoints = query::summaries(client, &window)
            .await
            .context("reading endpoint statistics")?;
        let levels = query::gauges_latest(client)
            .await
            .context("reading levels")?;
        let workers = query::workers(client, window.from.min(now - query::ALIVE_WITHIN), now)
            .await
            .context("reading workers")?;
        let registration = query::registration(client)
            .await
            .context("reading the registration")?;
        let attention = Attention::load(client, now)
            .await
            .context("reading the open dead letters and the failed outbox rows")?;
        Ok(Self {
            generated_at: now,
            since: format_span(since),
            window,
            endpoints,
            levels,
            workers,
            registration,
            attention,
        })
    }

    /// The latest value of a module's level, if sampled.
    pub fn level(&self, module: &str, gauge: &str) -> Option<i64> {
        self.levels
            .iter()
            .find(|l| l.module == module && l.gauge == gauge)
            .map(|l| l.value)
    }

    /// Every module the report knows of: those with workers, traffic or levels.
    pub fn modules(&self) -> Vec<String> {
        let mut modules: Vec<String> = self
            .workers
            .iter()
            .map(|w| w.module.clone())
            .chain(self.endpoints.iter().map(|e| e.module.clone()))
            .chain(self.levels.iter().map(|l| l.module.clone()))
            .collect();
        modules.sort();
        modules.dedup();
        modules
    }
}

impl History {
    pub async fn load(client: &tokio_postgres::Client, window: &Window) -> anyhow::Result<Self> {
        Ok(Self {
            series: query::series(client, window)
                .await
                .context("reading endpoint history")?,
            gauges: query::gauge_series(client, window)
                .await
                .context("reading level history")?,
        })
    }
}

/// Refuses to serve beyond this machine without a token (unless told to, then warns), and
/// refuses a token that cannot travel in a cookie as it is.
pub fn check_exposure(
    listen: SocketAddr,
    token: Option<&str>,
    allow_without_token: bool,
) -> anyhow::Result<()> {
    if let Some(token) = token {
        // RFC 6265 cookie-octets: printable ASCII without space, `"`, `,`, `;` and `\`.
        let bad = token
            .bytes()
            .find(|b| !(0x21..=0x7e).contains(b) || matches!(b, b'"' | b',' | b';' | b'\\'));
        if let Some(b) = bad {
            anyhow::bail!(
                "the report token may not contain {:?}: use letters, digits and -._~+/= (openssl rand -hex 32)",
                char::from(b)
            );
        }
        return Ok(());
    }
    if listen.ip().is_loopback() {
        return Ok(());
    }
    anyhow::ensure!(
        allow_without_token,
        "refusing to serve the report on {listen} without a token: anyone who reaches it would read it; \
         set --token (OMSC_REPORT_TOKEN), listen on 127.0.0.1, or pass --allow-without-token"
    );
    tracing::warn!(
        %listen,
        "serving the report without a token on an address other machines may reach (--allow-without-token)"
    );
    eprintln!("warning: the report on {listen} has no token: anyone who reaches it can read it");
    Ok(())
}

/// Parses `90s`, `15m`, `1h`, `7d`, `2w` (a bare number is minutes).
pub fn parse_span(text: &str) -> Result<TimeDelta, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: i64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a span such as 15m, 1h, 7d"))?;
    let span = match unit {
        "s" => TimeDelta::try_seconds(n),
        "" | "m" | "min" => TimeDelta::try_minutes(n),
        "h" => TimeDelta::try_hours(n),
        "d" => TimeDelta::try_days(n),
        "w" => TimeDelta::try_weeks(n),
        _ => None,
    }
    .filter(|s| *s > TimeDelta::zero() && *s <= TimeDelta::days(3660))
    .ok_or_else(|| format!("{text:?} is not a span such as 15m, 1h, 7d"))?;
    Ok(span)
}

/// The shortest way to write a span in days, hours, minutes or seconds (`1h`, `7d`, `90m`).
pub fn format_span(span: TimeDelta) -> String {
    let s = span.num_seconds();
    for (unit, secs) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s >= secs && s % secs == 0 {
            return format!("{}{unit}", s / secs);
        }
    }
    format!("{s}s")
}

/// A duration for people: `0.4 ms`, `12 ms`, `1.50 s`, `3.2 min`.
pub fn format_seconds(seconds: f64) -> String {
    if seconds < 0.01 {
        format!("{:.1} ms", seconds * 1000.0)
    } else if seconds < 1.0 {
        format!("{:.0} ms", seconds * 1000.0)
    } else if seconds < 120.0 {
        format!("{seconds:.2} s")
    } else if seconds < 7200.0 {
        format!("{:.1} min", seconds / 60.0)
    } else if seconds < 172_800.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else {
        format!("{:.1} d", seconds / 86_400.0)
    }
}

/// How long ago, for "last seen": `12s ago`, `5m ago`, `3h ago`, `2d ago`.
pub fn format_ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - at).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..172_800 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_people_write_them() {
        assert_eq!(parse_span("90s"), Ok(TimeDelta::seconds(90)));
        assert_eq!(parse_span("15m"), Ok(TimeDelta::minutes(15)));
        assert_eq!(parse_span("1h"), Ok(TimeDelta::hours(1)));
        assert_eq!(parse_span("7d"), Ok(TimeDelta::days(7)));
        assert_eq!(parse_span("2w"), Ok(TimeDelta::weeks(2)));
        assert_eq!(parse_span("30"), Ok(TimeDelta::minutes(30)));
        assert!(parse_span("1y").is_err());
        assert!(parse_span("0h").is_err());
        assert!(parse_span("h").is_err());
        assert_eq!(format_span(TimeDelta::hours(24)), "1d");
        assert_eq!(format_span(TimeDelta::weeks(1)), "7d");
        assert_eq!(format_span(TimeDelta::minutes(90)), "90m");
    }

    #[test]
    fn the_report_is_served_beyond_this_machine_only_with_a_token() {
        let open: SocketAddr = "0.0.0.0:9465".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:9465".parse().unwrap();
        let error = check_exposure(open, None, false).unwrap_err().to_string();
        assert!(error.contains("without a token"), "{error}");
        assert!(check_exposure("[::]:9465".parse().unwrap(), None, false).is_err());
        assert!(check_exposure(open, None, true).is_ok());
        assert!(check_exposure(local, None, false).is_ok());
        assert!(check_exposure(open, Some("0123abcdef"), false).is_ok());
        let error = check_exposure(local, Some("a; Domain=evil"), false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("';'"), "{error}");
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(format_seconds(0.000_42), "0.4 ms");
        assert_eq!(format_seconds(0.012), "12 ms");
        assert_eq!(format_seconds(1.5), "1.50 s");
        assert_eq!(format_seconds(600.0), "10.0 min");
    }
}
