//! The system report: statistics recorded by workers, merged across replicas in PostgreSQL,
//! rolled up and pruned; `omsc report` as a table and as JSON; the page in a real browser;
//! the Prometheus metrics of a real worker process.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use protocol::inventory::methods;
use runtime::stats::query::{self, Window};
use runtime::stats::{
    Direction, EndpointKey, Identity, Pending, Resolution, Retention, Stats, Tally, gauges, store,
};
use serde_json::json;

use crate::helpers::{
    PATIENCE, TestEnv, binary, http_get, http_get_with, metric_value, wait_until,
};

const STOCK: &str = methods::AGGREGATE_STOCK_UPDATED;

fn stats(worker: &str) -> Stats {
    let registry = prometheus::Registry::new();
    let metrics = runtime::metrics::Metrics::register(&registry).unwrap();
    Stats::new(
        Identity {
            worker: worker.into(),
            version: "9.9.9-test".into(),
            started_at: Utc::now(),
        },
        metrics,
    )
}

fn pool(env: &TestEnv) -> deadpool_postgres::Pool {
    runtime::db::pool(&env.database_url, "omsc-test", 2).unwrap()
}

fn key(
    minute: DateTime<Utc>,
    direction: Direction,
    endpoint: &str,
    outcome: &'static str,
) -> EndpointKey {
    EndpointKey {
        period: minute,
        module: Cow::Borrowed("inventory"),
        direction,
        endpoint: Cow::Owned(endpoint.to_owned()),
        outcome,
    }
}

/// A minute's tally of `durations` (seconds).
fn tally(at: DateTime<Utc>, durations: &[f64]) -> Tally {
    let mut t = Tally::new(at);
    for d in durations {
        t.observe(at, Duration::from_secs_f64(*d), None);
    }
    t
}

async fn write(env: &TestEnv, pending: &Pending, now: DateTime<Utc>) {
    let pool = pool(env);
    let mut client = pool.get().await.unwrap();
    let identity = Identity {
        worker: "seed/1/1".into(),
        version: "9.9.9-test".into(),
        started_at: now,
    };
    store::write(&mut client, &identity, &["inventory"], pending, now)
        .await
        .unwrap();
}

/// `(messages, sum of histogram buckets)` of every row of a resolution and endpoint.
async fn totals(env: &TestEnv, resolution: &str, endpoint: &str) -> (i64, i64) {
    let row = env
        .db
        .query_one(
            "SELECT coalesce(sum(messages), 0)::bigint,
                    coalesce((SELECT sum(b) FROM omsc_endpoint_stats s2, unnest(s2.duration_buckets) b
                               WHERE s2.resolution = $1 AND s2.endpoint = $2), 0)::bigint
               FROM omsc_endpoint_stats WHERE resolution = $1 AND endpoint = $2",
            &[&resolution, &endpoint],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn two_workers_flushing_the_same_endpoint_add_up_and_percentiles_come_from_both() {
    let env = TestEnv::new().await;
    let pool = pool(&env);
    let (a, b) = (stats("host-a/1/1"), stats("host-b/2/2"));
    a.add_module("inventory");
    b.add_module("inventory");
    {
        let mut batch = a.batch();
        for ms in [1, 2, 3] {
            batch.message(
                "inventory",
                STOCK,
                "applied",
                Duration::from_millis(ms),
                Some(0.5),
            );
        }
    }
    {
        let mut batch = b.batch();
        batch.message(
            "inventory",
            STOCK,
            "applied",
            Duration::from_millis(100),
            None,
        );
        batch.message("inventory", STOCK, "dead", Duration::from_millis(200), None);
    }
    a.flush(&pool).await.unwrap();
    b.flush(&pool).await.unwrap();
    assert!(a.take().is_empty(), "a flush empties what it wrote");

    for resolution in ["minute", "hour", "day"] {
        assert_eq!(
            totals(&env, resolution, STOCK).await,
            (5, 5),
            "{resolution} rows"
        );
    }
    let window = Window::last(TimeDelta::hours(1), Utc::now());
    let summaries = query::summaries(&env.db, &window).await.unwrap();
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    let s = &summaries[0];
    assert_eq!((s.messages, s.failures), (5, 1));
    assert_eq!(s.outcomes.get("applied"), Some(&4));
    assert_eq!(s.outcomes.get("dead"), Some(&1));
    let p50 = s.p50.unwrap();
    assert!((0.002..=0.003).contains(&p50), "p50 {p50}");
    let p99 = s.p99.unwrap();
    assert!(
        (0.15..=0.2).contains(&p99),
        "p99 {p99}: worker b's slow messages count"
    );
    assert!((s.avg.unwrap() - 0.306 / 5.0).abs() < 1e-6);
    assert!((s.lag_avg.unwrap() - 0.5).abs() < 1e-9);

    let workers = query::workers(&env.db, Utc::now() - TimeDelta::hours(1), Utc::now())
        .await
        .unwrap();
    let mut names: Vec<&str> = workers.iter().map(|w| w.worker.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["host-a/1/1", "host-b/2/2"]);
    assert!(workers.iter().all(|w| w.alive && w.version == "9.9.9-test"));
    env.teardown().await;
}

#[tokio::test]
async fn minutes_roll_up_into_hours_and_days_with_the_same_percentiles() {
    let env = TestEnv::new().await;
    let now = Utc::now();
    // Four minutes across an hour boundary: 1 × 1 ms, 2 × 10 ms, 3 × 100 ms, 4 × 1 s.
    let first = Resolution::Hour.floor(now) - TimeDelta::hours(2) + TimeDelta::minutes(58);
    let mut pending = Pending::default();
    for (i, seconds) in [0.001, 0.01, 0.1, 1.0].into_iter().enumerate() {
        let minute = first + TimeDelta::minutes(i as i64);
        pending.endpoints.insert(
            key(minute, Direction::In, STOCK, "applied"),
            tally(minute, &vec![seconds; i + 1]),
        );
    }
    write(&env, &pending, now).await;

    let hours = env
        .db
        .query(
            "SELECT period_start, messages FROM omsc_endpoint_stats
              WHERE resolution = 'hour' ORDER BY period_start",
            &[],
        )
        .await
        .unwrap();
    let hours: Vec<(DateTime<Utc>, i64)> = hours.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        hours,
        [
            (Resolution::Hour.floor(first), 3),
            (Resolution::Hour.floor(first) + TimeDelta::hours(1), 7)
        ]
    );
    assert_eq!(totals(&env, "day", STOCK).await, (10, 10));

    let mut seen = Vec::new();
    for (resolution, span) in [
        (Resolution::Minute, TimeDelta::hours(3)),
        (Resolution::Hour, TimeDelta::hours(3)),
        (Resolution::Day, TimeDelta::days(2)),
    ] {
        let window = Window::at(resolution, span, now);
        let s = query::summaries(&env.db, &window).await.unwrap();
        assert_eq!(s.len(), 1, "{resolution:?}");
        seen.push((s[0].messages, s[0].p50, s[0].p99));
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    let (_, p50, p99) = seen[0];
    assert!((0.07..=0.1).contains(&p50.unwrap()), "{p50:?}");
    assert!((0.7..=1.0).contains(&p99.unwrap()), "{p99:?}");

    let window = Window::at(Resolution::Hour, TimeDelta::hours(3), now);
    let series = query::series(&env.db, &window).await.unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].points.len(), window.periods().len());
    let busy: Vec<i64> = series[0]
        .points
        .iter()
        .map(|p| p.messages)
        .filter(|m| *m > 0)
        .collect();
    assert_eq!(busy, [3, 7]);
    env.teardown().await;
}

#[tokio::test]
async fn retention_drops_minutes_after_two_days_and_the_rest_after_thirty() {
    let env = TestEnv::new().await;
    let now = Utc::now();
    let mut pending = Pending::default();
    for age in [
        TimeDelta::days(3),
        TimeDelta::days(40),
        TimeDelta::minutes(5),
    ] {
        let minute = Resolution::Minute.floor(now - age);
        pending.endpoints.insert(
            key(minute, Direction::In, STOCK, "applied"),
            tally(minute, &[0.01]),
        );
        pending.gauges.insert(
            (minute, "inventory", gauges::QUEUE_DEAD),
            runtime::stats::GaugeSample {
                max: 1,
                last: 1,
                at: minute,
            },
        );
    }
    write(&env, &pending, now).await;
    let (config, _) = env.flags(&[]);
    let retention: Retention = config.stats.retention();
    assert_eq!(retention.hours_and_days, TimeDelta::days(30), "the default");
    assert_eq!(retention.minutes, TimeDelta::hours(48), "the default");
    let deleted = store::prune(&env.db, retention, now).await.unwrap();
    assert!(deleted > 0);

    let count = |resolution: &'static str, table: &'static str| {
        let db = &env.db;
        async move {
            let row = db
                .query_one(
                    &format!("SELECT count(*) FROM {table} WHERE resolution = $1"),
                    &[&resolution],
                )
                .await
                .unwrap();
            row.get::<_, i64>(0)
        }
    };
    for table in ["omsc_endpoint_stats", "omsc_gauge_stats"] {
        assert_eq!(
            count("minute", table).await,
            1,
            "{table}: only the recent minute"
        );
        let hours = count("hour", table).await;
        assert!(
            hours == 2,
            "{table}: 3 days and 5 minutes ago, not 40 days ({hours})"
        );
        let days = count("day", table).await;
        assert!(
            (1..=2).contains(&days),
            "{table}: the 40-day-old day is gone ({days})"
        );
        let oldest: DateTime<Utc> = env
            .db
            .query_one(&format!("SELECT min(period_start) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert!(now - oldest < TimeDelta::days(31));
    }
    env.teardown().await;
}

#[tokio::test]
async fn a_flush_that_fails_keeps_its_minutes_for_the_next_one() {
    let env = TestEnv::new().await;
    let worker = stats("host-a/1/1");
    worker.add_module("inventory");
    worker.batch().message(
        "inventory",
        STOCK,
        "applied",
        Duration::from_millis(4),
        None,
    );
    let nowhere =
        runtime::db::pool("postgres://postgres@127.0.0.1:1/none", "omsc-test", 1).unwrap();
    assert!(worker.flush(&nowhere).await.is_err());
    worker.batch().message(
        "inventory",
        STOCK,
        "applied",
        Duration::from_millis(6),
        None,
    );
    worker.flush(&pool(&env)).await.unwrap();
    assert_eq!(totals(&env, "minute", STOCK).await, (2, 2));
    env.teardown().await;
}

fn bad_snapshot() -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": "bad", "method": STOCK,
           "params": {"snapshot": {"aggregate_id": "EU", "mode": "DELTA", "stock": []}}})
    .to_string()
    .into_bytes()
}

fn delta(i: usize) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": format!("d{i}"), "method": STOCK,
           "params": {"snapshot": {"aggregate_id": "EU", "mode": "DELTA",
                                   "created_on": format!("2026-01-01 00:00:{:02}", i),
                                   "stock": [{"sku": format!("sku-{i}"), "quantity": i}]}}})
    .to_string()
    .into_bytes()
}

pub async fn run_omsc(env: &TestEnv, args: &[&str]) -> String {
    env.omsc(args, &[]).await
}

#[tokio::test]
async fn the_report_shows_a_workers_real_traffic_as_a_table_and_as_json() {
    let env = TestEnv::new().await;
    // One endpoint: the dead letter's notification to the OMS would be a second (outbound)
    // one, and is the subject of dead_letters_notify.rs.
    let worker = env
        .start_worker_with(&["--stats-flush-secs=0.2", "--notify-errors=false"])
        .await;
    let publisher = env.publisher().await;
    let mut messages: Vec<(&str, Vec<u8>, String)> =
        (0..6).map(|i| (STOCK, delta(i), format!("d{i}"))).collect();
    messages.push((STOCK, bad_snapshot(), "bad".into()));
    publisher.publish_all(messages, 16).await.unwrap();
    env.expect_dead_letters(1).await;
    wait_until("the report to count all 7 messages", PATIENCE, || async {
        let window = Window::last(TimeDelta::hours(1), Utc::now());
        let s = query::summaries(&env.db, &window).await.unwrap();
        s.len() == 1 && s[0].messages == 7
    })
    .await;

    let table = run_omsc(&env, &["report", "--since", "1h"]).await;
    let row = table
        .lines()
        .find(|l| l.contains(STOCK))
        .unwrap_or_else(|| panic!("no row for {STOCK}:\n{table}"));
    let cells: Vec<&str> = row
        .split('|')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(&cells[..5], ["inventory", "in", STOCK, "7", "1"], "{table}");
    assert!(
        cells[5].ends_with("ms") || cells[5].ends_with(" s"),
        "avg {}",
        cells[5]
    );
    assert!(cells[10].ends_with("ago)"), "last seen {}", cells[10]);
    assert!(table.contains("inventory: 1 worker(s) running"), "{table}");
    assert!(table.contains("\nregistration"), "{table}");

    let json: serde_json::Value =
        serde_json::from_str(&run_omsc(&env, &["report", "--since", "7d", "--json"]).await)
            .unwrap();
    assert_eq!(json["since"], "7d");
    assert_eq!(json["window"]["resolution"], "hour");
    let endpoint = &json["endpoints"][0];
    assert_eq!(endpoint["endpoint"], STOCK);
    assert_eq!(endpoint["direction"], "in");
    assert_eq!(endpoint["messages"], 7);
    assert_eq!(endpoint["failures"], 1);
    assert_eq!(endpoint["outcomes"]["applied"], 6);
    assert_eq!(endpoint["outcomes"]["dead"], 1);
    for q in ["avg", "p50", "p95", "p99"] {
        assert!(endpoint[q].as_f64().unwrap() > 0.0, "{q}: {endpoint}");
    }
    assert!(endpoint["p50"].as_f64() <= endpoint["p99"].as_f64());
    assert!(
        endpoint["lag_avg"].as_f64().unwrap() > 0.0,
        "deltas of 2026-01-01 lag"
    );
    worker.stop().await;
    env.teardown().await;
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    test_support::http::free_address().unwrap().port()
}

#[tokio::test]
async fn a_worker_process_serves_the_metrics_of_design_and_flushes_its_minutes_on_sigterm() {
    let env = TestEnv::new().await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut process = env.spawn_binary(
        "omsc-inventory",
        &[
            ("OMSC_HTTP_ADDR", &addr.to_string()),
            ("OMSC_REVISION", "4d2c0ffee123"),
        ],
    );
    wait_until("the worker to be ready", PATIENCE, || async {
        http_get(addr, "/readyz").await.0 == 200
    })
    .await;
    let publisher = env.publisher().await;
    let messages = (0..3).map(|i| (STOCK, delta(i), format!("d{i}")));
    publisher.publish_all(messages, 16).await.unwrap();
    let handled = [("endpoint", STOCK), ("module", "inventory")];
    wait_until("3 messages in /metrics", PATIENCE, || async {
        metric_value(
            &http_get(addr, "/metrics").await.1,
            "omsc_messages_total",
            &handled,
        ) == 3.0
    })
    .await;
    wait_until("the queue depths to be sampled", PATIENCE, || async {
        http_get(addr, "/metrics").await.1.contains(
            r#"omsc_queue_messages{module="inventory",queue="connector.inventory.dead"} 0"#,
        )
    })
    .await;
    let text = http_get(addr, "/metrics").await.1;
    for expected in [
        r#"omsc_message_duration_seconds_bucket{endpoint="magento.inventory.aggregate_stock_management.updated",module="inventory",le="0.005"}"#,
        r#"omsc_message_duration_seconds_count{endpoint="magento.inventory.aggregate_stock_management.updated",module="inventory"} 3"#,
        r#"omsc_source_lag_seconds{endpoint="magento.inventory.aggregate_stock_management.updated",module="inventory"}"#,
        r#"omsc_last_message_timestamp_seconds{endpoint="magento.inventory.aggregate_stock_management.updated",module="inventory"}"#,
        r#"omsc_stock_rows_total{outcome="applied"} 3"#,
        r#"omsc_ready{module="inventory"} 1"#,
        r#"omsc_queue_messages{module="inventory",queue="connector.inventory"} 0"#,
        "# TYPE omsc_message_duration_seconds histogram",
        "# TYPE omsc_source_lag_seconds gauge",
        // The process, as every Prometheus exporter serves it, and what build runs.
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_open_fds gauge",
        r#"omsc_build_info{revision="4d2c0ffee123",version=""#,
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
    assert!(metric_value(&text, "process_resident_memory_bytes", &[]) > 1e6);
    let last = metric_value(&text, "omsc_last_message_timestamp_seconds", &handled);
    assert!(
        (Utc::now().timestamp() as f64 - last).abs() < 120.0,
        "{last}"
    );

    // The default flush is a minute away: only the flush at shutdown can have written them.
    assert_eq!(totals(&env, "minute", STOCK).await, (0, 0));
    let status = crate::helpers::sigterm(&mut process, PATIENCE).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(totals(&env, "minute", STOCK).await, (3, 3));
    env.teardown().await;
}

/// Prometheus' naming rules, read off what a whole connector (`omsc run --all`) serves once
/// a message went through: a counter's name ends in `_total` and nothing else's does, and
/// every per-endpoint series carries `module` (the dashboard filters on it).
#[tokio::test]
async fn every_served_metric_is_named_for_its_type_and_endpoint_series_carry_the_module() {
    let env = TestEnv::new().await;
    let (_process, addr) = env.spawn_ready_connector().await;
    let publisher = env.publisher().await;
    publisher
        .publish_all([(STOCK, delta(0), "d0".to_owned())], 1)
        .await
        .unwrap();
    let handled = [("endpoint", STOCK), ("module", "inventory")];
    wait_until("the message in /metrics", PATIENCE, || async {
        metric_value(
            &http_get(addr, "/metrics").await.1,
            "omsc_messages_total",
            &handled,
        ) == 1.0
    })
    .await;
    let text = http_get(addr, "/metrics").await.1;

    let mut wrong = Vec::new();
    let mut families = 0;
    for line in text.lines().filter(|l| l.starts_with("# TYPE omsc_")) {
        let mut words = line.split_whitespace().skip(2);
        let (name, kind) = (words.next().unwrap(), words.next().unwrap());
        families += 1;
        if (kind == "counter") != name.ends_with("_total") {
            wrong.push(format!("{name} is a {kind}"));
        }
    }
    for line in text.lines().filter(|l| l.contains("endpoint=\"")) {
        if !line.starts_with('#') && !line.contains("module=\"") {
            wrong.push(format!("no module label: {line}"));
        }
    }
    assert!(families >= 10, "too few families to judge:\n{text}");
    assert!(
        text.contains("# TYPE omsc_catalog_export_run_products gauge"),
        "{text}"
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
    env.teardown().await;
}

/// Chromium, as Debian installs it (`scripts/browser.sh` does when run as root).
fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM").map(PathBuf::from).or_else(|| {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    });
    path.expect("Chromium is missing: run scripts/browser.sh (make test does)")
}

/// Headless Chromium on `url` with `extra` flags, killed when dropped, and its profile.
struct Browser {
    /// `None` once taken to wait for its output.
    child: Option<tokio::process::Child>,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Starts headless Chromium on `url` with `extra` flags.
fn spawn_browser(url: &str, extra: &[String]) -> Browser {
    let profile = std::env::temp_dir().join(format!(
        "omsc-chromium-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let mut command = tokio::process::Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    Browser {
        child: Some(command.spawn().unwrap()),
        profile,
    }
}

/// Runs headless Chromium on `url` with `extra` flags; returns its standard output.
async fn browse(url: &str, extra: &[String]) -> String {
    let mut browser = spawn_browser(url, extra);
    let child = browser.child.take().unwrap();
    let output = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("Chromium did not finish within 90 s")
        .unwrap();
    drop(browser);
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Measures, in the browser, what the page is for a reader: `html` (the report page) served
/// as it is by a server of this test's, which adds one script at its end (the report's own
/// server forbids scripts and frames), in a frame `width` px wide (a browser window can be
/// no narrower than 500 px). Returns what the script found.
async fn measure_in_browser(html: &str, width: u32) -> serde_json::Value {
    const MEASURE: &str = r#"<script>(function () {
  const d = document.documentElement;
  const r = {inner: innerWidth, scroll: d.scrollWidth};
  const tables = [...document.querySelectorAll('table')];
  r.tables = tables.length;
  r.uncaptioned = tables.filter(t => !t.caption || !t.caption.textContent.trim()).map(t => t.id || '?');
  const ths = [...document.querySelectorAll('th')];
  r.headers = ths.length;
  r.unscoped = ths.filter(h => !['col', 'row'].includes(h.getAttribute('scope'))).map(h => h.textContent);
  r.charts = 0; r.lines = 0; r.confusable = []; r.unlegended = [];
  const look = e => { const s = getComputedStyle(e); return s.strokeDasharray + ' ' + s.markerMid; };
  for (const svg of document.querySelectorAll('svg.chart')) {
    r.charts++;
    const looks = new Map();
    for (const p of svg.querySelectorAll('polyline[data-series]')) looks.set(p.dataset.series, look(p));
    const seen = new Map();
    for (const [name, l] of looks) {
      r.lines++;
      if (seen.has(l)) r.confusable.push(svg.getAttribute('aria-label') + ': ' + seen.get(l) + ' ~ ' + name);
      seen.set(l, name);
      const key = svg.querySelector('g.key[data-legend="' + CSS.escape(name) + '"] polyline');
      if (!key || look(key) !== l) r.unlegended.push(name);
    }
  }
  const out = parent.document.createElement('pre');
  out.id = 'measured';
  out.textContent = JSON.stringify(r);
  parent.document.body.append(out);
})();</script>"#;
    let instrumented = html.replace("</body>", &format!("{MEASURE}</body>"));
    assert_ne!(instrumented, html, "no </body> in the page");
    let frame = format!(
        r#"<!doctype html><html><body style="margin:0"><iframe src="/page" style="width:{width}px;height:900px;border:0"></iframe></body></html>"#
    );
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(move || async move { axum::response::Html(frame) }),
        )
        .route(
            "/page",
            axum::routing::get(move || async move { axum::response::Html(instrumented) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let dom = browse(
        &format!("http://{addr}/"),
        &["--window-size=1000,1000".into(), "--dump-dom".into()],
    )
    .await;
    server.abort();
    let start = dom
        .find(r#"<pre id="measured">"#)
        .unwrap_or_else(|| panic!("the measuring script did not run: {dom}"))
        + r#"<pre id="measured">"#.len();
    let end = start + dom[start..].find("</pre>").unwrap();
    serde_json::from_str(&dom[start..end]).unwrap_or_else(|e| panic!("{e}: {}", &dom[start..end]))
}

/// The points drawn for `series` in the charts of `html` (every polyline of that series).
fn points(html: &str, series: &str) -> usize {
    let marker = format!(r#"data-series="{series}" points=""#);
    html.match_indices(&marker)
        .map(|(at, _)| {
            let rest = &html[at + marker.len()..];
            let end = rest.find('"').unwrap();
            rest[..end].split_whitespace().count()
        })
        .sum()
}

/// The part of the page that holds the charts of one endpoint.
fn charts_of<'a>(html: &'a str, endpoint: &str) -> &'a str {
    let marker = format!(r#"class="cards endpoint-charts" data-endpoint="{endpoint}""#);
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no charts for {endpoint}"));
    let rest = &html[start + marker.len()..];
    let end = rest.find("endpoint-charts").unwrap_or(rest.len());
    &rest[..end]
}

#[tokio::test]
async fn the_report_page_draws_every_endpoint_in_a_real_browser() {
    let env = TestEnv::new().await;
    let now = Utc::now();
    let minute = |ago: i64| Resolution::Minute.floor(now) - TimeDelta::minutes(ago);
    let mut pending = Pending::default();
    for ago in [40, 12, 3] {
        pending.endpoints.insert(
            key(minute(ago), Direction::In, STOCK, "applied"),
            tally(minute(ago), &[0.002, 0.004, 0.03]),
        );
    }
    pending.endpoints.insert(
        key(minute(12), Direction::In, STOCK, "dead"),
        tally(minute(12), &[0.001]),
    );
    pending.endpoints.insert(
        key(minute(5), Direction::Out, "order.create", "sent"),
        tally(minute(5), &[1.5]),
    );
    pending.gauges.insert(
        (minute(3), "inventory", gauges::QUEUE_DEAD),
        runtime::stats::GaugeSample {
            max: 1,
            last: 1,
            at: minute(3),
        },
    );
    write(&env, &pending, now).await;

    // What waits for a person, with text long enough to test a phone's width.
    env.db
        .batch_execute(&format!(
            "INSERT INTO dead_letters (queue, module, endpoint, reason, headers, body, dead_at,
                                       fingerprint)
             VALUES ('connector.inventory', 'inventory', '{STOCK}',
                     'snapshot: stock[0].quantity is not a number: \"{}\"', '{{}}', '\\x00',
                     now() - interval '5 minutes', 'f-1');
             SELECT omsc_outbox_add('sales', 'order.create', '000000042');
             UPDATE outbox SET failed_at = now(), attempts = 40,
                               last_error = 'no queue is bound to order.create on commerce.events'
              WHERE module = 'sales'",
            "9".repeat(120)
        ))
        .await
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Counts the pages served, to see the browser reload one or not.
    let pages = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&pages);
    let app = report::serve::router(pool(&env), Some("s3cret".into()), TimeDelta::hours(1)).layer(
        axum::middleware::map_response(move |response: axum::response::Response| {
            let counted = Arc::clone(&counted);
            async move {
                let html = response
                    .headers()
                    .get(axum::http::header::CONTENT_TYPE)
                    .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
                if html {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                response
            }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let (status, _) = http_get(addr, "/").await;
    assert_eq!(status, 401, "the token is required");
    // A browser's ?token= is traded for a cookie and a redirect without it.
    let (status, _) = http_get(addr, "/?since=1h&token=s3cret").await;
    assert_eq!(status, 303, "the token leaves the address");
    let (status, page) = http_get_with(addr, "/", &[("Cookie", "omsc_report_token=s3cret")]).await;
    assert_eq!(status, 200);
    assert!(page.contains("not registered"));
    assert!(!page.contains("s3cret"), "the token is never in the page");
    let (status, _) = http_get_with(addr, "/", &[("Authorization", "Bearer s3cret")]).await;
    assert_eq!(status, 200, "scripts send the token as a bearer");
    let (status, _) = http_get_with(addr, "/", &[("Cookie", "omsc_report_token=guess")]).await;
    assert_eq!(status, 401);

    env.db
        .batch_execute(
            "INSERT INTO connector_registration (state, connector_id, url, subscribes, labels,
                                                 secret_sha256, message_id, sent_by)
             VALUES ('registered', 'commerce-1', 'https://shop.example/oms', '{a.b}', '{}',
                     'hush', 'm-1', 'omsc')",
        )
        .await
        .unwrap();
    let url = format!("http://{addr}/?since=1h&token=s3cret");
    let dom = browse(&url, &["--dump-dom".into()]).await;

    assert!(dom.contains("oms-connector · system report"), "{dom}");
    for endpoint in [STOCK, "order.create"] {
        let row = format!(r#"data-endpoint="{endpoint}"><td>inventory</td>"#);
        assert!(dom.contains(&row), "no table row for {endpoint}");
    }
    assert!(
        dom.contains("https://shop.example/oms"),
        "the registration is shown"
    );
    assert!(!dom.contains("hush"), "secrets are not");
    assert!(
        !dom.contains("s3cret"),
        "the token is not in the page the browser got"
    );

    let periods = Window::last(TimeDelta::hours(1), now).periods().len();
    assert_eq!(periods, 60);
    let stock = charts_of(&dom, STOCK);
    assert_eq!(
        points(stock, "messages"),
        periods,
        "throughput: one point a minute"
    );
    assert_eq!(points(stock, "failures"), periods);
    for q in ["p50", "p95", "p99"] {
        assert_eq!(
            points(stock, q),
            3,
            "{q}: one point per minute with traffic"
        );
    }
    let export = charts_of(&dom, "order.create");
    assert_eq!(points(export, "messages"), periods);
    assert_eq!(points(export, "p99"), 1);
    assert!(
        dom.contains(r#"data-series="dead-letter queue""#),
        "the dead-letter queue is drawn"
    );
    assert!(
        dom.contains("omsc dead-letters replay 1") && dom.contains("omsc outbox retry 1"),
        "what waits for a person is listed with its command"
    );

    // The refresh: on by default, with a control that pauses it.
    assert!(
        dom.contains(r#"<meta http-equiv="refresh" content="60">"#),
        "the page refreshes itself"
    );
    assert!(
        dom.contains(r#"<a id="refresh" href="?since=1h&amp;refresh=off">pause</a>"#),
        "a control pauses the refresh"
    );
    let paused_url = format!("http://{addr}/?since=1h&refresh=off&token=s3cret");
    let paused = browse(&paused_url, &["--dump-dom".into()]).await;
    assert!(paused.contains("refresh paused"), "{paused}");
    assert!(!paused.contains(r#"http-equiv="refresh""#), "{paused}");
    for span in ["1h", "1d", "7d", "30d"] {
        assert!(
            paused.contains(&format!(r#"href="?since={span}&amp;refresh=off""#)),
            "moving to {span} keeps the pause"
        );
    }
    assert!(paused.contains(r#"<a id="refresh" href="?since=1h">resume</a>"#));
    // In the browser's own time, two refresh periods: the paused page is not loaded again,
    // the page that refreshes is.
    let before = pages.load(Ordering::SeqCst);
    browse(
        &paused_url,
        &["--virtual-time-budget=130000".into(), "--dump-dom".into()],
    )
    .await;
    assert_eq!(
        pages.load(Ordering::SeqCst) - before,
        1,
        "a paused page stays put"
    );
    let before = pages.load(Ordering::SeqCst);
    let refreshing = spawn_browser(
        &url,
        &["--virtual-time-budget=130000".into(), "--dump-dom".into()],
    );
    wait_until("the page to reload itself", PATIENCE, || async {
        pages.load(Ordering::SeqCst) - before >= 2
    })
    .await;
    drop(refreshing);

    // On a phone's width, in the browser: nothing scrolls sideways; every table has a
    // caption and every header cell a scope; in each chart, no two lines share both dash
    // pattern and marker, and the legend shows each line's.
    let (_, page) = http_get_with(addr, "/", &[("Authorization", "Bearer s3cret")]).await;
    let measured = measure_in_browser(&page, 375).await;
    assert_eq!(
        measured["inner"], 375,
        "the window is a phone's: {measured}"
    );
    assert!(
        measured["scroll"].as_i64().unwrap() <= measured["inner"].as_i64().unwrap(),
        "the page scrolls sideways at 375 px: {measured}"
    );
    assert!(measured["tables"].as_i64().unwrap() >= 5, "{measured}");
    assert_eq!(measured["uncaptioned"], json!([]), "{measured}");
    assert!(measured["headers"].as_i64().unwrap() >= 30, "{measured}");
    assert_eq!(measured["unscoped"], json!([]), "{measured}");
    assert!(measured["charts"].as_i64().unwrap() >= 5, "{measured}");
    assert!(measured["lines"].as_i64().unwrap() >= 10, "{measured}");
    assert_eq!(measured["confusable"], json!([]), "{measured}");
    assert_eq!(measured["unlegended"], json!([]), "{measured}");

    let shots = std::env::temp_dir().join(format!("omsc-report-{}.png", rand::random::<u32>()));
    browse(
        &url,
        &[
            format!("--screenshot={}", shots.display()),
            "--window-size=1400,2000".into(),
            "--hide-scrollbars".into(),
        ],
    )
    .await;
    let png = std::fs::read(&shots).unwrap();
    let _ = std::fs::remove_file(&shots);
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );

    server.abort();
    env.teardown().await;
}

/// An outbox module whose rows have nothing left to send.
struct Settled;

impl runtime::outbox::OutboxHandler for Settled {
    fn module(&self) -> &'static str {
        "probe"
    }

    async fn build<'a>(
        &'a self,
        _client: &'a deadpool_postgres::Client,
        _row: &'a runtime::outbox::OutboxRow,
    ) -> Result<runtime::outbox::Built, runtime::outbox::BuildError> {
        Ok(runtime::outbox::Built::Nothing)
    }
}

#[tokio::test]
async fn outbox_rows_are_reported_as_outbound_with_their_backlog() {
    let env = TestEnv::new().await;
    env.db
        .batch_execute(
            "SELECT omsc_outbox_add('probe', 'order.create', 'o-1');
             SELECT omsc_outbox_add('probe', 'order.create', 'o-2');
             SELECT omsc_outbox_add('probe', 'order.cancel', 'o-1');",
        )
        .await
        .unwrap();
    let (config, _) = env.flags(&["--stats-flush-secs=0.2"]);
    let mut app = runtime::Runtime::build(config).await.unwrap();
    app.add_outbox_relay(Settled);
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    let relay = tokio::spawn(app.run_until(async move { token.cancelled().await }));

    let outbound = |s: &query::EndpointSummary| (s.direction, s.endpoint.clone(), s.messages);
    wait_until("both topics to be reported", PATIENCE, || async {
        let window = Window::last(TimeDelta::hours(1), Utc::now());
        let s = query::summaries(&env.db, &window).await.unwrap();
        s.iter().map(outbound).collect::<Vec<_>>()
            == [
                (Direction::Out, "order.cancel".to_owned(), 1),
                (Direction::Out, "order.create".to_owned(), 2),
            ]
    })
    .await;
    let window = Window::last(TimeDelta::hours(1), Utc::now());
    let summaries = query::summaries(&env.db, &window).await.unwrap();
    assert!(
        summaries
            .iter()
            .all(|s| s.module == "probe" && s.outcomes.get("nothing") == Some(&s.messages))
    );
    assert!(
        summaries.iter().all(|s| s.p50.is_some()),
        "a row's age is its latency"
    );
    wait_until("the backlog to be sampled", PATIENCE, || async {
        let levels = query::gauges_latest(&env.db).await.unwrap();
        levels
            .iter()
            .any(|l| l.module == "probe" && l.gauge == gauges::OUTBOX_PENDING && l.value == 0)
    })
    .await;
    stop.cancel();
    relay.await.unwrap().unwrap();
    env.teardown().await;
}

/// An outbox module whose rows can never become a message: the relay gives each up at once.
struct Unbuildable;

impl runtime::outbox::OutboxHandler for Unbuildable {
    fn module(&self) -> &'static str {
        "probe"
    }

    async fn build<'a>(
        &'a self,
        _client: &'a deadpool_postgres::Client,
        _row: &'a runtime::outbox::OutboxRow,
    ) -> Result<runtime::outbox::Built, runtime::outbox::BuildError> {
        Err(runtime::outbox::BuildError::Invalid(
            "the order has no lines to export".into(),
        ))
    }
}

/// Runs the command a report shows (`omsc …`) against the environment.
async fn run_shown(env: &TestEnv, command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(words[0], "omsc", "{command}");
    let output = tokio::process::Command::new(binary("omsc"))
        .args(&words[1..])
        .env("DATABASE_URL", &env.database_url)
        .env("AMQP_URL", crate::helpers::AMQP_URL)
        .env("OMSC_PREFIX", &env.prefix)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn the_report_lists_what_needs_a_person_with_the_command_that_settles_it() {
    let env = TestEnv::new().await;
    // A dead letter, as a worker stores it.
    let worker = env.start_worker_with(&["--notify-errors=false"]).await;
    let publisher = env.publisher().await;
    publisher
        .publish_all([(STOCK, bad_snapshot(), "bad".to_owned())], 1)
        .await
        .unwrap();
    let letter = env.expect_dead_letters(1).await.remove(0);
    worker.stop().await;

    // An outbox row the relay gives up on, and one nobody has sent for two hours.
    env.db
        .batch_execute(
            "SELECT omsc_outbox_add('probe', 'order.create', '000000042');
             SELECT omsc_outbox_add('idle', 'return.authorize', 'R-7');",
        )
        .await
        .unwrap();
    let ids = |module: &'static str| {
        let db = &env.db;
        async move {
            db.query_one("SELECT id FROM outbox WHERE module = $1", &[&module])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let (failed, stuck) = (ids("probe").await, ids("idle").await);
    env.db
        .execute(
            "UPDATE outbox SET created_at = now() - interval '2 hours' WHERE id = $1",
            &[&stuck],
        )
        .await
        .unwrap();
    let (config, _) = env.flags(&[]);
    let mut app = runtime::Runtime::build(config).await.unwrap();
    app.add_outbox_relay(Unbuildable);
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    let relay = tokio::spawn(app.run_until(async move { token.cancelled().await }));
    wait_until("the relay to give the row up", PATIENCE, || async {
        env.db
            .query_one(
                "SELECT failed_at IS NOT NULL FROM outbox WHERE id = $1",
                &[&failed],
            )
            .await
            .unwrap()
            .get::<_, bool>(0)
    })
    .await;
    stop.cancel();
    relay.await.unwrap().unwrap();

    let replay = format!("omsc dead-letters replay {}", letter.id);
    let retry_failed = format!("omsc outbox retry {failed}");
    let retry_stuck = format!("omsc outbox retry --state pending {stuck}");

    // The terminal: each row with its reason and its command.
    let table = run_omsc(&env, &["report"]).await;
    assert!(table.contains("open dead letters: 1\n"), "{table}");
    let row = table
        .lines()
        .find(|l| l.contains(&replay))
        .unwrap_or_else(|| panic!("no row with {replay}:\n{table}"));
    let shown_reason: String = letter.reason.chars().take(40).collect();
    assert!(row.contains(&shown_reason), "{row}");
    assert!(row.contains("inventory") && row.contains(STOCK), "{row}");
    assert!(
        table.contains("failed or stuck outbox rows: 2\n"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.contains(&retry_failed) && !l.contains("--state"))
        .unwrap_or_else(|| panic!("no row with {retry_failed}:\n{table}"));
    for cell in [
        "order.create",
        "000000042",
        "failed",
        "the order has no lines",
    ] {
        assert!(row.contains(cell), "{cell} in {row}");
    }
    let row = table
        .lines()
        .find(|l| l.contains(&retry_stuck))
        .unwrap_or_else(|| panic!("no row with {retry_stuck}:\n{table}"));
    for cell in ["return.authorize", "R-7", "stuck", "2h ago"] {
        assert!(row.contains(cell), "{cell} in {row}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&run_omsc(&env, &["report", "--json"]).await).unwrap();
    assert_eq!(json["attention"]["dead_letters"][0]["command"], replay);
    assert_eq!(json["attention"]["outbox_total"], 2);

    // The page, in a browser: the same rows and commands.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = report::serve::router(pool(&env), None, TimeDelta::hours(1));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let dom = browse(&format!("http://{addr}/"), &["--dump-dom".into()]).await;
    let row = |marker: String| {
        let start = dom
            .find(&marker)
            .unwrap_or_else(|| panic!("no {marker} in the page"));
        let rest = &dom[start..];
        rest[..rest.find("</tr>").unwrap()].to_owned()
    };
    let letter_row = row(format!(r#"data-dead-letter="{}""#, letter.id));
    assert!(
        letter_row.contains(&format!("<code>{replay}</code>")),
        "{letter_row}"
    );
    assert!(letter_row.contains(&shown_reason), "{letter_row}");
    let failed_row = row(format!(r#"data-outbox-row="{failed}""#));
    assert!(
        failed_row.contains(&format!("<code>{retry_failed}</code>"))
            && failed_row.contains("the order has no lines to export"),
        "{failed_row}"
    );
    let stuck_row = row(format!(r#"data-outbox-row="{stuck}""#));
    assert!(
        stuck_row.contains(&format!("<code>{retry_stuck}</code>")),
        "{stuck_row}"
    );
    server.abort();

    // The commands do what the report says: afterwards nothing waits.
    for command in [&replay, &retry_failed, &retry_stuck] {
        run_shown(&env, command).await;
    }
    let table = run_omsc(&env, &["report"]).await;
    assert!(table.contains("open dead letters: none"), "{table}");
    assert!(
        table.contains("failed or stuck outbox rows: none"),
        "{table}"
    );
    env.teardown().await;
}
