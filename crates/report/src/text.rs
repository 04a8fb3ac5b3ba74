//! The report in the terminal: a table per endpoint, then the levels and the workers.

use std::fmt::Write as _;

use comfy_table::{CellAlignment, Table};
use runtime::stats::gauges;

use crate::{Report, format_ago, format_seconds};

/// The columns of the endpoint table.
pub const COLUMNS: [&str; 11] = [
    "module",
    "dir",
    "endpoint",
    "messages",
    "failures",
    "avg",
    "p50",
    "p95",
    "p99",
    "lag",
    "last seen",
];

/// The report as text: the endpoint table, then one line per module for its queue, dead
/// letters and outbox, its workers, and the registration.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "System report: the last {} (since {} UTC, by {})",
        report.since,
        report.window.from.format("%Y-%m-%d %H:%M"),
        report.window.resolution.as_str()
    );
    if report.endpoints.is_empty() {
        let _ = writeln!(out, "no messages in the last {}", report.since);
    } else {
        let mut table = Table::new();
        table.set_header(COLUMNS);
        for e in &report.endpoints {
            let ms = |v: Option<f64>| v.map(format_seconds).unwrap_or_else(|| "-".into());
            table.add_row([
                e.module.clone(),
                e.direction.as_str().to_owned(),
                e.endpoint.clone(),
                e.messages.to_string(),
                e.failures.to_string(),
                ms(e.avg),
                ms(e.p50),
                ms(e.p95),
                ms(e.p99),
                ms(e.lag_avg),
                format!(
                    "{} ({})",
                    e.last_seen.format("%Y-%m-%d %H:%M:%S"),
                    format_ago(e.last_seen, report.generated_at)
                ),
            ]);
        }
        for column in 3..10 {
            if let Some(c) = table.column_mut(column) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
        let _ = writeln!(out, "{table}");
        let _ = writeln!(
            out,
            "in: consumed from the module's queue (failures: retried or dead-lettered); \
             out: relayed from its outbox (failures: retried or given up); lag: now - the \
             message's own timestamp"
        );
    }
    for module in report.modules() {
        let level = |gauge| {
            report
                .level(&module, gauge)
                .map_or_else(|| "-".to_owned(), |v| v.to_string())
        };
        let running: Vec<_> = report
            .workers
            .iter()
            .filter(|w| w.module == module && w.alive)
            .collect();
        let mut versions: Vec<&str> = running.iter().map(|w| w.version.as_str()).collect();
        versions.sort_unstable();
        versions.dedup();
        let _ = writeln!(
            out,
            "{module}: {} worker(s) running{}; queue {}, dead letters {}, outbox pending {}, outbox failed {}",
            running.len(),
            if versions.is_empty() {
                String::new()
            } else {
                format!(" (version {})", versions.join(", "))
            },
            level(gauges::QUEUE_READY),
            level(gauges::QUEUE_DEAD),
            level(gauges::OUTBOX_PENDING),
            level(gauges::OUTBOX_FAILED),
        );
    }
    match &report.registration {
        Some(r) => {
            let _ = writeln!(out, "registration ({}): {} row(s)", r.table, r.rows.len());
        }
        None => {
            let _ = writeln!(out, "registration: not registered");
        }
    }
    out
}

/// The report as JSON (durations in seconds, times in RFC 3339).
pub fn json(report: &Report) -> serde_json::Result<String> {
    serde_json::to_string_pretty(report)
}
