//! The report in the terminal: a table per endpoint, then the levels and the workers, then
//! what waits for a person (open dead letters, failed or stuck outbox rows) with the command
//! that settles each.

use std::fmt::Write as _;

use comfy_table::{CellAlignment, Table};
use runtime::stats::gauges;

use crate::attention::{Attention, LIST_DEAD_LETTERS, LIST_OUTBOX, SHOWN};
use crate::{Report, format_ago, format_seconds};

/// The most characters of a reason or an error a row of the terminal table shows.
const REASON_CHARS: usize = 80;

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
    attention(&mut out, &report.attention, report.generated_at);
    out
}

/// The open dead letters and the failed or stuck outbox rows, each with its command; "none"
/// when there are none, so that an empty list is seen to be empty rather than missing.
pub fn attention(out: &mut String, attention: &Attention, now: chrono::DateTime<chrono::Utc>) {
    let _ = writeln!(
        out,
        "\nopen dead letters: {}{}",
        count(attention.dead_letters_total),
        oldest(attention.dead_letters_total)
    );
    if !attention.dead_letters.is_empty() {
        let mut table = Table::new();
        table.set_header(["id", "module", "endpoint", "reason", "dead", "replay with"]);
        for l in &attention.dead_letters {
            table.add_row([
                l.id.to_string(),
                plain(l.module.as_deref().unwrap_or(&l.queue)),
                plain(l.endpoint.as_deref().unwrap_or("-")),
                shorten(&plain(&l.reason), REASON_CHARS),
                format_ago(l.dead_at, now),
                l.command.clone(),
            ]);
        }
        let _ = writeln!(out, "{table}");
    }
    if attention.more_dead_letters() > 0 {
        let _ = writeln!(
            out,
            "… and {} more: {LIST_DEAD_LETTERS}",
            attention.more_dead_letters()
        );
    }
    let _ = writeln!(
        out,
        "\nfailed or stuck outbox rows: {}{}",
        count(attention.outbox_total),
        oldest(attention.outbox_total)
    );
    if !attention.outbox.is_empty() {
        let mut table = Table::new();
        table.set_header([
            "id",
            "module",
            "method",
            "subject",
            "state",
            "attempts",
            "last error",
            "created",
            "retry with",
        ]);
        for r in &attention.outbox {
            table.add_row([
                r.id.to_string(),
                r.module.clone(),
                plain(&r.method),
                plain(&r.subject),
                r.trouble.as_str().to_owned(),
                r.attempts.to_string(),
                shorten(&plain(r.last_error.as_deref().unwrap_or("-")), REASON_CHARS),
                format_ago(r.created_at, now),
                r.command.clone(),
            ]);
        }
        let _ = writeln!(out, "{table}");
    }
    if attention.more_outbox() > 0 {
        let _ = writeln!(
            out,
            "… and {} more: {LIST_OUTBOX} (failed), {LIST_OUTBOX} --state pending --older-than 1h (stuck)",
            attention.more_outbox()
        );
    }
}

fn count(n: i64) -> String {
    if n == 0 { "none".into() } else { n.to_string() }
}

fn oldest(total: i64) -> String {
    if total > SHOWN {
        format!(" (the {SHOWN} oldest)")
    } else {
        String::new()
    }
}

/// Text that came from outside (a reason, a subject) safe to print on one line: control
/// characters (escape sequences that could rewrite the screen, carriage returns that hide a
/// line, line breaks) and the characters that reorder text are shown escaped, never obeyed.
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let reorders = matches!(
            c,
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        );
        if c.is_control() || reorders {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// At most `max` characters, with an ellipsis when cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

/// The report as JSON (durations in seconds, times in RFC 3339).
pub fn json(report: &Report) -> serde_json::Result<String> {
    serde_json::to_string_pretty(report)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, Utc};

    use super::*;
    use crate::attention::{OpenDeadLetter, OutboxAttention, OutboxTrouble, retry_command};

    #[test]
    fn beyond_the_oldest_twenty_the_rest_are_counted_with_the_command_that_lists_them() {
        let now = Utc::now();
        let letters: Vec<OpenDeadLetter> = (1..=SHOWN)
            .map(|id| OpenDeadLetter {
                id,
                queue: "connector.sales".into(),
                module: Some("sales".into()),
                endpoint: Some("magento.sales.order_management.updated".into()),
                reason: "line 9 not found\r\u{1b}[2Jhidden".into(),
                dead_at: now - TimeDelta::minutes(5),
                attempts: 1,
                command: crate::attention::replay_command(id),
            })
            .collect();
        let attention = Attention {
            dead_letters: letters,
            dead_letters_total: SHOWN + 3,
            outbox: vec![OutboxAttention {
                id: 7,
                module: "sales".into(),
                method: "order.create".into(),
                subject: "000000042".into(),
                trouble: OutboxTrouble::Stuck,
                attempts: 12,
                last_error: Some("no queue bound".into()),
                created_at: now - TimeDelta::hours(3),
                command: retry_command(7, OutboxTrouble::Stuck),
            }],
            outbox_total: 1,
        };
        let mut out = String::new();
        super::attention(&mut out, &attention, now);
        assert!(
            out.contains("open dead letters: 23 (the 20 oldest)"),
            "{out}"
        );
        assert!(out.contains("omsc dead-letters replay 20"), "{out}");
        assert!(
            out.contains("… and 3 more: omsc dead-letters list"),
            "{out}"
        );
        assert!(
            !out.contains('\u{1b}'),
            "escapes are shown, not obeyed: {out}"
        );
        assert!(out.contains("failed or stuck outbox rows: 1\n"), "{out}");
        assert!(out.contains("omsc outbox retry --state pending 7"), "{out}");
        assert!(out.contains("3h ago"), "{out}");

        let mut none = String::new();
        super::attention(&mut none, &Attention::default(), now);
        assert!(none.contains("open dead letters: none"), "{none}");
        assert!(none.contains("failed or stuck outbox rows: none"), "{none}");
    }
}
