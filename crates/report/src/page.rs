//! The report as one server-rendered HTML page: the modules (workers, versions, backlog,
//! registration), the endpoint table, and per module and per endpoint the history in inline
//! SVG charts. No script and no external asset: it loads anywhere, offline, in a second.
//!
//! For every reader: it reloads itself (every minute, or every five at hourly resolution)
//! unless paused, and stays paused as one moves between ranges (the pause is in every
//! link); it fits a phone's width (wide tables scroll inside their own box, charts shrink);
//! chart lines differ in dashes and markers, not only colour (`svg`); every table has a
//! caption and its header cells a scope.

use std::fmt::Write as _;

use runtime::stats::gauges;
use runtime::stats::query::EndpointSeries;

use crate::attention::{LIST_DEAD_LETTERS, LIST_OUTBOX, SHOWN, STUCK_AFTER};
use crate::html::esc;
use crate::svg::{Chart, Line, MARKERS, Unit};
use crate::{History, Report, format_ago, format_seconds, text};

/// Whether the page reloads itself. `?refresh=off` pauses it; the page's own links keep
/// the pause, so that it holds until the reader resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Reload every minute (every five at hourly or daily resolution).
    On,
    /// Never reload.
    Paused,
}

impl Refresh {
    /// The query parameter that pauses.
    pub const PAUSE: &str = "refresh=off";

    /// What `?refresh=` asked for: `off` pauses, anything else (or nothing) refreshes.
    pub fn from_query(value: Option<&str>) -> Self {
        if value == Some("off") {
            Self::Paused
        } else {
            Self::On
        }
    }

    /// A link to the page over `span`, keeping this state.
    fn link(self, span: &str) -> String {
        match self {
            Self::On => format!("?since={span}"),
            Self::Paused => format!("?since={span}&{}", Self::PAUSE),
        }
    }
}

/// The ranges offered on the page: the last hour by minute, the last day by hour, a week by
/// hour, 30 days by day.
pub const RANGES: [(&str, &str); 4] = [
    ("1h", "last hour"),
    ("1d", "last day"),
    ("7d", "last 7 days"),
    ("30d", "last 30 days"),
];

const P50: &str = "#1f77b4";
const P95: &str = "#ff7f0e";
const P99: &str = "#d62728";
const MESSAGES: &str = "#2c7a4b";
const FAILURES: &str = "#d62728";
const DEAD: &str = "#7b2cbf";
const QUEUE: &str = "#1f77b4";
const OUTBOX: &str = "#ff7f0e";

const STYLE: &str = "
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d1d1f;background:#f6f7f9}
header{background:#1d2733;color:#fff;padding:12px 24px;display:flex;gap:24px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:18px;margin:0}header nav a{color:#cfe3ff;margin-right:12px;text-decoration:none}
header nav a.on{color:#fff;font-weight:600;border-bottom:2px solid #fff}
header .muted{color:#c3ccd6}header a#refresh{color:#fff;font-weight:600}
main{padding:8px 24px 32px}h2{font-size:16px;margin:24px 0 8px}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0001}
th,td{padding:5px 10px;border-bottom:1px solid #eee;text-align:left;white-space:nowrap}
th{background:#eef1f5;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.failing td{background:#fff3f3}td.wrap{white-space:normal;min-width:14em;max-width:40em;overflow-wrap:anywhere}
caption{text-align:left;font-weight:600;padding:4px 0}code{font:12px ui-monospace,monospace;background:#f0f2f5;padding:1px 4px;white-space:nowrap}.muted{color:#777}.bad{color:#b00020;font-weight:600}.ok{color:#2c7a4b}
.scroll{overflow-x:auto;max-width:100%}.more{margin:4px 0 0}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;box-shadow:0 1px 2px #0001;padding:8px 12px;width:460px;max-width:100%;box-sizing:border-box}
svg.chart{display:block;max-width:100%;height:auto}
.card h3{font-size:13px;margin:0 0 4px;font-weight:600;word-break:break-all}
.chart .axis{font-size:10px;fill:#666}.chart .legend{font-size:10px;fill:#333}
@media (max-width:600px){header{padding:10px 12px;gap:8px}main{padding:4px 12px 24px}.card{padding:6px}}
";

/// The whole page. Its links never carry the access token: a browser that opened the page with
/// `?token=` holds it in a cookie instead (see `serve`).
pub fn render(report: &Report, history: &History, refresh: Refresh) -> String {
    let mut html = String::with_capacity(64 * 1024);
    let every = if report.window.resolution == runtime::stats::Resolution::Minute {
        60
    } else {
        300
    };
    let reload = match refresh {
        Refresh::On => format!(r#"<meta http-equiv="refresh" content="{every}">"#),
        Refresh::Paused => String::new(),
    };
    let _ = write!(
        html,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">{reload}<title>oms-connector system report</title><style>{STYLE}</style></head><body>"#
    );
    let _ = write!(
        html,
        r#"<header><h1>oms-connector · system report</h1><nav>"#
    );
    for (span, label) in RANGES {
        let class = if span == report.since {
            " class=\"on\""
        } else {
            ""
        };
        let _ = write!(
            html,
            r#"<a{class} href="{}">{label}</a>"#,
            esc(&refresh.link(span))
        );
    }
    let since = esc(&report.since);
    let control = match refresh {
        Refresh::On => format!(
            r#"refreshes every {every} s · <a id="refresh" href="?since={since}&amp;{}">pause</a>"#,
            Refresh::PAUSE
        ),
        Refresh::Paused => {
            format!(r#"refresh paused · <a id="refresh" href="?since={since}">resume</a>"#)
        }
    };
    let _ = write!(
        html,
        r#"</nav><span class="muted">{} UTC · by {} · window from {}</span><span class="muted">{control}</span></header><main>{MARKERS}"#,
        report.generated_at.format("%Y-%m-%d %H:%M:%S"),
        report.window.resolution.as_str(),
        report.window.from.format("%Y-%m-%d %H:%M")
    );
    modules(&mut html, report);
    attention(&mut html, report);
    endpoints(&mut html, report);
    module_charts(&mut html, report, history);
    endpoint_charts(&mut html, report, history);
    html.push_str("</main></body></html>");
    html
}

fn modules(html: &mut String, report: &Report) {
    html.push_str(r#"<h2>Modules</h2><div class="scroll"><table id="modules"><caption>Workers and backlog per module</caption>"#);
    header(
        html,
        &[
            "module",
            "workers running",
            "version",
            "last flush",
            "queue",
            "dead letters",
            "outbox pending",
            "outbox failed",
        ],
    );
    html.push_str("<tbody>");
    let modules = report.modules();
    if modules.is_empty() {
        html.push_str(r#"<tr><td colspan="8" class="muted">no worker has reported yet</td></tr>"#);
    }
    for module in &modules {
        let seen: Vec<_> = report
            .workers
            .iter()
            .filter(|w| &w.module == module)
            .collect();
        let running = seen.iter().filter(|w| w.alive).count();
        let mut versions: Vec<&str> = seen.iter().map(|w| w.version.as_str()).collect();
        versions.sort_unstable();
        versions.dedup();
        let last = seen
            .iter()
            .map(|w| w.last_seen)
            .max()
            .map(|t| format_ago(t, report.generated_at))
            .unwrap_or_else(|| "-".into());
        let level = |gauge| {
            report
                .level(module, gauge)
                .map_or_else(|| "-".to_owned(), |v| v.to_string())
        };
        let bad = |gauge| report.level(module, gauge).is_some_and(|v| v > 0);
        let running_class = if running == 0 { "bad" } else { "ok" };
        let _ = write!(
            html,
            r#"<tr><td>{}</td><td class="n {running_class}">{running}</td><td>{}</td><td>{last}</td><td class="n">{}</td><td class="n{}">{}</td><td class="n">{}</td><td class="n{}">{}</td></tr>"#,
            esc(module),
            esc(&versions.join(", ")),
            level(gauges::QUEUE_READY),
            if bad(gauges::QUEUE_DEAD) { " bad" } else { "" },
            level(gauges::QUEUE_DEAD),
            level(gauges::OUTBOX_PENDING),
            if bad(gauges::OUTBOX_FAILED) {
                " bad"
            } else {
                ""
            },
            level(gauges::OUTBOX_FAILED),
        );
    }
    html.push_str("</tbody></table></div>");
    html.push_str(r#"<h2>Registration</h2><div id="registration">"#);
    match &report.registration {
        None => html.push_str(r#"<p class="muted">not registered</p>"#),
        Some(registration) => {
            let mut columns: Vec<&String> = registration
                .rows
                .iter()
                .flat_map(|r| r.keys())
                .filter(|k| !k.contains("secret") && !k.contains("password"))
                .collect();
            columns.sort();
            columns.dedup();
            html.push_str(
                r#"<div class="scroll"><table><caption>The connector's registration with the OMS</caption>"#,
            );
            let columns_text: Vec<&str> = columns.iter().map(|c| c.as_str()).collect();
            header(html, &columns_text);
            html.push_str("<tbody>");
            for row in &registration.rows {
                html.push_str("<tr>");
                for c in &columns {
                    let value = match row.get(*c) {
                        None | Some(serde_json::Value::Null) => String::new(),
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                    };
                    let _ = write!(html, "<td>{}</td>", esc(&value));
                }
                html.push_str("</tr>");
            }
            let _ = write!(
                html,
                r#"</tbody></table></div><p class="muted">from table {}</p>"#,
                esc(&registration.table)
            );
        }
    }
    html.push_str("</div>");
}

/// The open dead letters and the failed or stuck outbox rows, oldest first, each with the
/// command that settles it (in `<code>`, to copy); "N more" beyond the listed ones.
fn attention(html: &mut String, report: &Report) {
    let a = &report.attention;
    let now = report.generated_at;
    let summary = |total: i64| match total {
        0 => "none".to_owned(),
        n if n > SHOWN => format!("{n}, the {SHOWN} oldest"),
        n => n.to_string(),
    };
    html.push_str(r#"<h2 id="attention">Waiting for a person</h2>"#);
    let _ = write!(
        html,
        r#"<div class="scroll"><table id="dead-letters"><caption>Open dead letters: <span class="{}">{}</span></caption>"#,
        if a.dead_letters_total > 0 {
            "bad"
        } else {
            "ok"
        },
        summary(a.dead_letters_total)
    );
    header(
        html,
        &["id", "module", "endpoint", "reason", "dead", "replay with"],
    );
    html.push_str("<tbody>");
    if a.dead_letters.is_empty() {
        html.push_str(r#"<tr><td colspan="6" class="muted">none</td></tr>"#);
    }
    for l in &a.dead_letters {
        let _ = write!(
            html,
            r#"<tr data-dead-letter="{id}"><td class="n">{id}</td><td>{}</td><td>{}</td><td class="wrap">{}</td><td>{}</td><td><code>{}</code></td></tr>"#,
            esc(l.module.as_deref().unwrap_or(&l.queue)),
            esc(l.endpoint.as_deref().unwrap_or("-")),
            esc(&l.reason),
            format_ago(l.dead_at, now),
            esc(&l.command),
            id = l.id,
        );
    }
    html.push_str("</tbody></table></div>");
    if a.more_dead_letters() > 0 {
        let _ = write!(
            html,
            r#"<p class="more">… and {} more: <code>{LIST_DEAD_LETTERS}</code></p>"#,
            a.more_dead_letters()
        );
    }
    let _ = write!(
        html,
        r#"<div class="scroll"><table id="outbox-attention"><caption>Outbox rows failed, or pending for over {} h: <span class="{}">{}</span></caption>"#,
        STUCK_AFTER.num_hours(),
        if a.outbox_total > 0 { "bad" } else { "ok" },
        summary(a.outbox_total)
    );
    header(
        html,
        &[
            "id",
            "module",
            "method",
            "subject",
            "state",
            "attempts",
            "last error",
            "created",
            "retry with",
        ],
    );
    html.push_str("<tbody>");
    if a.outbox.is_empty() {
        html.push_str(r#"<tr><td colspan="9" class="muted">none</td></tr>"#);
    }
    for r in &a.outbox {
        let _ = write!(
            html,
            r#"<tr data-outbox-row="{id}"><td class="n">{id}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="n">{}</td><td class="wrap">{}</td><td>{}</td><td><code>{}</code></td></tr>"#,
            esc(&r.module),
            esc(&r.method),
            esc(&r.subject),
            r.trouble.as_str(),
            r.attempts,
            esc(r.last_error.as_deref().unwrap_or("-")),
            format_ago(r.created_at, now),
            esc(&r.command),
            id = r.id,
        );
    }
    html.push_str("</tbody></table></div>");
    if a.more_outbox() > 0 {
        let _ = write!(
            html,
            r#"<p class="more">… and {} more: <code>{LIST_OUTBOX}</code> (failed), <code>{LIST_OUTBOX} --state pending --older-than 1h</code> (stuck)</p>"#,
            a.more_outbox()
        );
    }
}

/// A table's header row: every cell a column header (`scope="col"`), so that a screen reader
/// names the column of each cell it reads.
fn header(html: &mut String, columns: &[&str]) {
    html.push_str("<thead><tr>");
    for column in columns {
        let _ = write!(html, r#"<th scope="col">{}</th>"#, esc(column));
    }
    html.push_str("</tr></thead>");
}

fn endpoints(html: &mut String, report: &Report) {
    let _ = write!(
        html,
        r#"<h2>Endpoints, the last {since}</h2><div class="scroll"><table id="endpoints"><caption>Messages per endpoint over the last {since}: in, consumed from the module's queue; out, relayed from its outbox</caption>"#,
        since = esc(&report.since)
    );
    header(html, &text::COLUMNS);
    html.push_str("<tbody>");
    if report.endpoints.is_empty() {
        let _ = write!(
            html,
            r#"<tr><td colspan="{}" class="muted">no messages in this window</td></tr>"#,
            text::COLUMNS.len()
        );
    }
    for e in &report.endpoints {
        let ms = |v: Option<f64>| v.map(format_seconds).unwrap_or_else(|| "-".into());
        let outcomes: Vec<String> = e
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = write!(
            html,
            r#"<tr class="endpoint{}" data-endpoint="{}"><td>{}</td><td>{}</td><td>{}</td><td class="n" title="{}">{}</td><td class="n{}">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td>{}</td></tr>"#,
            if e.failures > 0 { " failing" } else { "" },
            esc(&e.endpoint),
            esc(&e.module),
            e.direction.as_str(),
            esc(&e.endpoint),
            esc(&outcomes.join(", ")),
            e.messages,
            if e.failures > 0 { " bad" } else { "" },
            e.failures,
            ms(e.avg),
            ms(e.p50),
            ms(e.p95),
            ms(e.p99),
            ms(e.lag_avg),
            format_ago(e.last_seen, report.generated_at),
        );
    }
    html.push_str("</tbody></table></div>");
}

fn module_charts(html: &mut String, report: &Report, history: &History) {
    let modules = report.modules();
    if modules.is_empty() {
        return;
    }
    let periods = report.window.periods();
    html.push_str(r#"<h2>Failures, dead letters and backlog</h2><div class="cards">"#);
    for module in &modules {
        let of_module: Vec<&EndpointSeries> = history
            .series
            .iter()
            .filter(|s| &s.module == module)
            .collect();
        let sum = |f: fn(&runtime::stats::query::Point) -> i64| -> Vec<Option<f64>> {
            (0..periods.len())
                .map(|i| Some(of_module.iter().map(|s| f(&s.points[i])).sum::<i64>() as f64))
                .collect()
        };
        let gauge = |name: &str| -> Option<Vec<Option<f64>>> {
            history
                .gauges
                .iter()
                .find(|g| &g.module == module && g.gauge == name)
                .map(|g| g.points.iter().map(|(_, v)| v.map(|v| v as f64)).collect())
        };
        let mut failure_lines = vec![
            Line {
                name: "failures",
                color: FAILURES,
                values: sum(|p| p.failures),
            },
            Line {
                name: "given up",
                color: DEAD,
                values: sum(|p| p.dead),
            },
        ];
        if let Some(values) = gauge(gauges::QUEUE_DEAD) {
            failure_lines.push(Line {
                name: "dead-letter queue",
                color: "#555",
                values,
            });
        }
        card(
            html,
            &format!("{module}: failures and dead letters"),
            Chart {
                label: format!("{module} failures and dead letters"),
                periods: periods.clone(),
                resolution: report.window.resolution,
                unit: Unit::Count,
                lines: failure_lines,
            },
        );
        let mut backlog = Vec::new();
        for (name, gauge_name, color) in [
            ("queue", gauges::QUEUE_READY, QUEUE),
            ("outbox pending", gauges::OUTBOX_PENDING, OUTBOX),
            ("outbox failed", gauges::OUTBOX_FAILED, FAILURES),
        ] {
            if let Some(values) = gauge(gauge_name) {
                backlog.push(Line {
                    name,
                    color,
                    values,
                });
            }
        }
        if !backlog.is_empty() {
            card(
                html,
                &format!("{module}: backlog (highest per period)"),
                Chart {
                    label: format!("{module} backlog"),
                    periods: periods.clone(),
                    resolution: report.window.resolution,
                    unit: Unit::Count,
                    lines: backlog,
                },
            );
        }
    }
    html.push_str("</div>");
}

fn endpoint_charts(html: &mut String, report: &Report, history: &History) {
    if history.series.is_empty() {
        return;
    }
    let periods = report.window.periods();
    html.push_str(r#"<h2>Endpoints over time</h2>"#);
    for series in &history.series {
        let _ = write!(
            html,
            r#"<div class="cards endpoint-charts" data-endpoint="{}">"#,
            esc(&series.endpoint)
        );
        let pick = |f: fn(&runtime::stats::query::Point) -> Option<f64>| {
            series.points.iter().map(f).collect::<Vec<_>>()
        };
        card(
            html,
            &format!(
                "{} · {} {}: latency",
                series.module,
                series.direction.as_str(),
                series.endpoint
            ),
            Chart {
                label: format!("{} latency", series.endpoint),
                periods: periods.clone(),
                resolution: report.window.resolution,
                unit: Unit::Seconds,
                lines: vec![
                    Line {
                        name: "p50",
                        color: P50,
                        values: pick(|p| p.p50),
                    },
                    Line {
                        name: "p95",
                        color: P95,
                        values: pick(|p| p.p95),
                    },
                    Line {
                        name: "p99",
                        color: P99,
                        values: pick(|p| p.p99),
                    },
                ],
            },
        );
        card(
            html,
            &format!(
                "{} · {} {}: messages per {}",
                series.module,
                series.direction.as_str(),
                series.endpoint,
                report.window.resolution.as_str()
            ),
            Chart {
                label: format!("{} throughput", series.endpoint),
                periods: periods.clone(),
                resolution: report.window.resolution,
                unit: Unit::Count,
                lines: vec![
                    Line {
                        name: "messages",
                        color: MESSAGES,
                        values: pick(|p| Some(p.messages as f64)),
                    },
                    Line {
                        name: "failures",
                        color: FAILURES,
                        values: pick(|p| Some(p.failures as f64)),
                    },
                ],
            },
        );
        html.push_str("</div>");
    }
}

fn card(html: &mut String, title: &str, chart: Chart) {
    let _ = write!(
        html,
        r#"<div class="card"><h3>{}</h3>{}</div>"#,
        esc(title),
        chart.render()
    );
}
