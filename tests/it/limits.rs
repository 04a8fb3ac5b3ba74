//! Limits where the wire counts bytes, a message that cannot be sent failing its own outbox
//! row and not the relay, every background loop in `/readyz` (a whole connector's, a keeper
//! cut off from the broker), and stock snapshots from the future refused.

use std::time::Duration;

use chrono::{TimeZone as _, Utc};
use protocol::inventory::{SnapshotMode, StockEntry, StockScope, StockSnapshot};
use protocol::sales::methods;
use tokio_util::sync::CancellationToken;

use crate::helpers::{PATIENCE, TestEnv, http_get, wait_until};
use crate::proxy::{Mode, Proxy};
use crate::sales_support::{OmsInbox, start_sales};

const EXAMPLE: &str = include_str!("../../docs/examples/place-order.sql");
const EXAMPLE_ID: &str = "000000101";

/// 64 characters, 256 bytes: within the old character limit, over AMQP's 255 bytes.
fn emoji_id() -> String {
    "😀".repeat(64)
}

/// The documented storefront example's order (without the cancellation request that
/// follows it), placed as order `id`.
fn place_order_sql(id: &str) -> String {
    let placed = EXAMPLE.find("COMMIT;").expect("the example commits") + "COMMIT;".len();
    EXAMPLE[..placed].replace(EXAMPLE_ID, id)
}

#[tokio::test]
async fn an_order_id_or_sku_over_64_bytes_is_refused_by_the_database_naming_the_limit() {
    let env = TestEnv::new().await;
    let refused = env
        .db
        .batch_execute(&place_order_sql(&emoji_id()))
        .await
        .expect_err("an order id of 256 bytes");
    assert_eq!(
        refused.as_db_error().and_then(|e| e.constraint()),
        Some("sales_orders_id_1_to_64_bytes"),
        "{refused:?}"
    );
    env.db.batch_execute("ROLLBACK").await.unwrap();

    // 64 ASCII bytes still fit, and so do 32 two-byte characters.
    env.db
        .batch_execute(&place_order_sql(&"9".repeat(64)))
        .await
        .unwrap();
    env.db
        .batch_execute(&place_order_sql(&"é".repeat(32)))
        .await
        .unwrap();

    let sku = "😀".repeat(17);
    let refused = env
        .db
        .execute(
            "INSERT INTO products (sku, type, status, name) VALUES ($1, 'simple', 'ACTIVE', 'x')",
            &[&sku],
        )
        .await
        .expect_err("a SKU of 68 bytes");
    assert_eq!(
        refused.as_db_error().and_then(|e| e.constraint()),
        Some("products_sku_1_to_64_bytes"),
        "{refused:?}"
    );
    env.teardown().await;
}

/// A database that holds an order id the old character check let through (V12 keeps that
/// check where such a row exists): its export fails with the reason, the relay goes on.
#[tokio::test]
async fn an_order_whose_message_id_cannot_be_sent_is_failed_and_the_next_orders_go_out() {
    let env = TestEnv::new().await;
    env.db
        .batch_execute(
            "ALTER TABLE sales_orders DROP CONSTRAINT sales_orders_id_1_to_64_bytes,
                 ADD CONSTRAINT sales_orders_id_check CHECK (id <> '' AND length(id) <= 64)",
        )
        .await
        .unwrap();
    let emoji = emoji_id();
    env.db
        .batch_execute(&place_order_sql(&emoji))
        .await
        .unwrap();
    env.db
        .batch_execute(&place_order_sql("000000102"))
        .await
        .unwrap();
    let mut inbox = OmsInbox::bind(&env).await;
    let worker = start_sales(&env).await;

    let sent = inbox.next().await;
    assert_eq!(sent.routing_key, methods::CREATE);
    assert_eq!(sent.message_id, "000000102", "the order behind it went out");
    wait_until("the emoji order's row to fail", PATIENCE, || async {
        let row = env
            .db
            .query_one(
                "SELECT failed_at IS NOT NULL, coalesce(last_error, '') FROM outbox
                  WHERE module = 'sales' AND subject = $1",
                &[&emoji],
            )
            .await
            .unwrap();
        row.get::<_, bool>(0)
    })
    .await;
    let reason: String = env
        .db
        .query_one(
            "SELECT last_error FROM outbox WHERE subject = $1",
            &[&emoji],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        reason.starts_with(
            "cannot be sent: message id is 256 bytes long, over the AMQP limit of 255 bytes"
        ),
        "{reason}"
    );

    // The relay still runs: a later order goes out too, and the worker stays ready.
    env.db
        .batch_execute(&place_order_sql("000000103"))
        .await
        .unwrap();
    assert_eq!(inbox.next().await.message_id, "000000103");
    let (status, body) = http_get(worker.http, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("sales outbox relay: ready"), "{body}");
    worker.stop().await;
    env.teardown().await;
}

/// A runtime started without waiting for readiness, which these tests expect to lose.
struct Unready {
    token: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    http: std::net::SocketAddr,
}

async fn start_unready(env: &TestEnv, install: impl FnOnce(&mut runtime::Runtime)) -> Unready {
    let (config, _) = env.flags(&[]);
    let mut app = runtime::Runtime::build(config).await.unwrap();
    install(&mut app);
    let http = app.http_addr();
    let token = CancellationToken::new();
    let stop = token.clone();
    let handle = tokio::spawn(app.run_until(async move { stop.cancelled().await }));
    Unready {
        token,
        handle,
        http,
    }
}

async fn wait_for_line(http: std::net::SocketAddr, path: &str, line: &str) -> (u16, String) {
    wait_until(&format!("{path} to say {line:?}"), PATIENCE, || async {
        http_get(http, path).await.1.lines().any(|l| l == line)
    })
    .await;
    http_get(http, path).await
}

#[tokio::test]
async fn a_background_loop_that_stops_or_stops_beating_makes_the_process_not_ready() {
    let env = TestEnv::new().await;
    let worker = start_unready(&env, |app| {
        sales::install(app).unwrap();
        app.add_task(
            "probe loop",
            Duration::from_secs(60),
            |_shared, beat, _shutdown| async move {
                beat.beat();
                panic!("the probe loop gives up");
            },
        );
        app.add_task(
            "silent loop",
            Duration::from_millis(200),
            |_shared, _beat, shutdown| async move { shutdown.cancelled().await },
        );
    })
    .await;

    wait_for_line(
        worker.http,
        "/readyz",
        "probe loop: not ready (stopped: panicked: the probe loop gives up)",
    )
    .await;
    // The probe loop's end can show before the silent loop has missed its first beat (0.2 s
    // after it started): wait for both before reading the lines.
    wait_until("the silent loop to miss its beat", PATIENCE, || async {
        let (_, body) = http_get(worker.http, "/readyz").await;
        body.lines()
            .any(|l| l.starts_with("silent loop: not ready (no beat for "))
    })
    .await;
    let (status, body) = http_get(worker.http, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    // Every loop of the module has its line; the ones that run are ready.
    for running in [
        "sales outbox relay: ready (running)",
        "statistics flusher: ready (running)",
        "connector.sales dead-letter keeper: ready (running)",
    ] {
        assert!(body.lines().any(|l| l == running), "{running}: {body}");
    }
    let silent = body
        .lines()
        .find(|l| l.starts_with("silent loop: "))
        .unwrap_or_default()
        .to_owned();
    assert!(
        silent.starts_with("silent loop: not ready (no beat for ")
            && silent.ends_with(" s, period 0.2 s)"),
        "{body}"
    );
    // A loop that ended will not come back: the process is not alive either.
    let (status, body) = wait_for_line(
        worker.http,
        "/healthz",
        "probe loop: stopped (panicked: the probe loop gives up)",
    )
    .await;
    assert_eq!(status, 503, "{body}");

    worker.token.cancel();
    worker.handle.await.unwrap().unwrap();
    env.teardown().await;
}

/// A whole connector (`omsc run --all`, a real process) names each of its background loops
/// in `/readyz`, each ready: the NONZERO settler and the full-export driver (which beat every
/// 30 s), every outbox relay, every module's dead-letter keeper and the statistics flusher.
#[tokio::test]
async fn a_whole_connector_names_each_of_its_loops_ready_in_readyz() {
    let env = TestEnv::new().await;
    let (mut process, addr) = env.spawn_ready_connector().await;
    let (_, body) = http_get(addr, "/readyz").await;
    let mut expected = vec![
        "inventory nonzero settler: ready (running)".to_owned(),
        "catalog full export: ready (running)".to_owned(),
        "errors outbox relay: ready (running)".to_owned(),
        "statistics flusher: ready (running)".to_owned(),
    ];
    for module in omsc::modules::ALL {
        expected.push(format!(
            "{} dead-letter keeper: ready (running)",
            module.queue().name
        ));
        if module.relays_an_outbox() {
            expected.push(format!("{} outbox relay: ready (running)", module.name()));
        }
    }
    for line in &expected {
        assert!(body.lines().any(|l| l == line), "{line}: {body}");
    }
    let status = crate::helpers::sigterm(&mut process, PATIENCE).await;
    assert!(status.success(), "{status:?}");
    env.teardown().await;
}

/// A dead-letter keeper waits on its queue for as long as nothing is dead-lettered, so it has
/// no beat to miss: cut off from the broker, it says itself not ready while it reconnects,
/// and ready again once it consumes.
#[tokio::test]
async fn a_dead_letter_keeper_cut_off_from_the_broker_is_not_ready_until_it_is_back() {
    const KEEPER: &str = "connector.inventory dead-letter keeper: ";
    let env = TestEnv::new().await;
    let proxy = Proxy::to_broker().await;
    let worker = env
        .start_worker_with(&[&format!("--amqp-url={}", proxy.amqp_url())])
        .await;
    let ready = format!("{KEEPER}ready (running)");
    wait_for_line(worker.http, "/readyz", &ready).await;

    proxy.set(Mode::Cut);
    let reconnecting = format!("{KEEPER}not ready (reconnecting: ");
    wait_until("the keeper to say it reconnects", PATIENCE, || async {
        let (_, body) = http_get(worker.http, "/readyz").await;
        body.lines().any(|l| l.starts_with(&reconnecting))
    })
    .await;
    let (status, body) = http_get(worker.http, "/readyz").await;
    assert_eq!(status, 503, "{body}");

    proxy.set(Mode::Open);
    wait_for_line(worker.http, "/readyz", &ready).await;
    worker.wait_ready().await;
    worker.stop().await;
    env.teardown().await;
}

fn snapshot(
    mode: SnapshotMode,
    created_on: chrono::DateTime<Utc>,
    skus: &[(&str, i64)],
) -> StockSnapshot {
    StockSnapshot {
        scope: StockScope::Aggregate,
        scope_id: "EU".into(),
        mode,
        created_on,
        stock: skus
            .iter()
            .map(|(sku, quantity)| StockEntry {
                sku: (*sku).into(),
                quantity: *quantity,
                unlimited: false,
                inflight_backorders: None,
            })
            .collect(),
        batch: None,
    }
}

#[tokio::test]
async fn a_nonzero_from_the_year_99999_is_dead_lettered_and_zeroes_nothing() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let publisher = env.publisher().await;
    let t0 = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let full = snapshot(SnapshotMode::Full, t0, &[("A", 5), ("B", 7)]);
    env.publish_snapshots(&publisher, &[&full]).await;
    wait_until("the FULL snapshot", PATIENCE, || async {
        env.sku("EU", "B").await == Some((7, false))
    })
    .await;

    // The year 99999, written as a sender would; then a DELTA only two days ahead.
    let far = "+99999-03-01 00:00:00";
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": "from-the-future", "method": protocol::inventory::methods::AGGREGATE_STOCK_UPDATED,
        "params": {"snapshot": {"aggregate_id": "EU", "mode": "NONZERO", "created_on": far,
                                "stock": [{"sku": "A", "quantity": 1}]}}
    });
    let ahead = snapshot(
        SnapshotMode::Delta,
        Utc::now() + chrono::TimeDelta::days(2),
        &[("B", 1)],
    );
    publisher
        .publish_all(
            [
                (
                    protocol::inventory::methods::AGGREGATE_STOCK_UPDATED,
                    body.to_string().into_bytes(),
                    "from-the-future".to_owned(),
                ),
                (
                    protocol::inventory::methods::AGGREGATE_STOCK_UPDATED,
                    simulate::stock::encode(&ahead, "two-days-ahead"),
                    "two-days-ahead".to_owned(),
                ),
            ],
            8,
        )
        .await
        .unwrap();
    let letters = env.expect_dead_letters(2).await;
    let reason = |id: &str| {
        letters
            .iter()
            .find(|l| l.message_id.as_deref() == Some(id))
            .map(|l| l.reason.clone())
            .unwrap_or_else(|| panic!("no dead letter {id}: {letters:?}"))
    };
    // The year may be refused as a year before it is refused as the future; either way the
    // reason names the field.
    assert!(
        reason("from-the-future").contains("\"created_on\""),
        "{letters:?}"
    );
    assert!(
        reason("two-days-ahead").contains("ahead of this worker's clock")
            && reason("two-days-ahead").contains("OMSC_MAX_CLOCK_SKEW_SECS"),
        "{letters:?}"
    );
    // Dead-lettered at parse: nothing was scheduled, nothing written.
    let pending: i64 = env
        .db
        .query_one("SELECT count(*) FROM stock_nonzero_pending", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 0);
    assert_eq!(env.sku("EU", "B").await, Some((7, false)));

    // A NONZERO from the present still zeroes what it leaves out.
    let nonzero = snapshot(
        SnapshotMode::NonZero,
        t0 + chrono::TimeDelta::hours(1),
        &[("A", 3)],
    );
    env.publish_snapshots(&publisher, &[&nonzero]).await;
    wait_until("B zeroed by the present NONZERO", PATIENCE, || async {
        env.sku("EU", "B").await == Some((0, false))
    })
    .await;
    assert_eq!(env.sku("EU", "A").await, Some((3, false)));
    worker.stop().await;
    env.teardown().await;
}
