//! Faults in mid-stream: a worker killed, the database cut off, the broker cut off or
//! stalled, a SIGTERM. Each ends with the state of the model, nothing dead-lettered.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use protocol::inventory::{SnapshotMode, StockEntry, StockScope, StockSnapshot};
use simulate::stock::{Storm, StormSpec};
use stock_filter::Model;

use crate::helpers::{INVENTORY_QUEUE, PATIENCE, TestEnv, http_get, wait_until};
use crate::proxy::{Mode, Proxy};

/// A storm big enough to take a debug build a few seconds.
fn big_storm(seed: u64) -> Storm {
    storm(seed, 4_000, 24)
}

/// A storm that lasts long enough for a process to be stopped in the middle of it.
fn long_storm(seed: u64) -> Storm {
    storm(seed, 10_000, 40)
}

fn storm(seed: u64, skus: usize, exports: usize) -> Storm {
    Storm::generate(&StormSpec {
        seed,
        aggregates: 3,
        skus,
        exports,
        mix: (2, 1, 6),
        chunk_size: 500,
        delta_skus: 20,
        start: Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap(),
        ..StormSpec::default()
    })
}

/// A recovery figure for docs/reliability.md (`--no-capture` shows them).
fn figure(what: &str, took: Duration) {
    eprintln!("recovery figure: {what}: {:.2} s", took.as_secs_f64());
}

async fn rows(env: &TestEnv) -> i64 {
    env.db
        .query_one("SELECT count(*) FROM stock_items", &[])
        .await
        .unwrap()
        .get(0)
}

async fn wait_for_model(env: &TestEnv, storm: &Storm) {
    let expected = Model::replay(StockScope::Aggregate, &storm.snapshots).rows();
    wait_until("the table to equal the model", PATIENCE * 2, || async {
        let pending: i64 = env
            .db
            .query_one("SELECT count(*) FROM stock_nonzero_pending", &[])
            .await
            .unwrap()
            .get(0);
        pending == 0 && env.stock().await == expected
    })
    .await;
    assert_eq!(env.depth(INVENTORY_QUEUE).await, 0);
    env.assert_no_dead_letters().await;
}

#[tokio::test]
async fn a_worker_killed_mid_stream_loses_nothing() {
    let env = TestEnv::new().await;
    let storm = long_storm(11);
    let publisher = env.publisher().await;
    env.publish_snapshots(&publisher, &storm.deliveries(11, true, 0.1))
        .await;
    let mut first = env.spawn_process(&[]);
    wait_until("the first worker to write", PATIENCE, || async {
        rows(&env).await > 0
    })
    .await;
    first.kill().await.unwrap(); // SIGKILL: no drain, no goodbye
    assert!(
        env.depth(INVENTORY_QUEUE).await > 0,
        "the kill must come in mid-stream for the test to mean anything"
    );
    let restarted = Instant::now();
    let mut second = env.spawn_process(&[]);
    wait_for_model(&env, &storm).await;
    figure(
        "kill -9 mid-stream, the next worker's start to the model",
        restarted.elapsed(),
    );
    second.kill().await.unwrap();
    env.teardown().await;
}

#[tokio::test]
async fn the_database_cut_off_mid_stream_holds_the_messages_until_it_is_back() {
    let env = TestEnv::new().await;
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let via_proxy = env
        .database_url
        .replace("127.0.0.1:5432", &proxy.addr.to_string());
    let worker = env
        .start_worker_with(&[&format!("--database-url={via_proxy}")])
        .await;
    let storm = big_storm(12);
    let deliveries = storm.deliveries(12, true, 0.1);
    let (before, after) = deliveries.split_at(deliveries.len() / 3);
    let publisher = env.publisher().await;
    env.publish_snapshots(&publisher, before).await;
    wait_until("progress before the cut", PATIENCE, || async {
        rows(&env).await > 0
    })
    .await;

    proxy.set(Mode::Cut);
    let cut = Instant::now();
    env.publish_snapshots(&publisher, after).await;
    wait_until("the worker to notice the outage", PATIENCE, || async {
        http_get(worker.http, "/readyz").await.0 == 503
    })
    .await;
    figure("database cut, noticed (readiness 503)", cut.elapsed());
    let (_, readiness) = http_get(worker.http, "/readyz").await;
    assert!(readiness.contains("database unavailable"), "{readiness}");

    proxy.set(Mode::Open);
    let back = Instant::now();
    wait_for_model(&env, &storm).await;
    figure("database cut, back to the model", back.elapsed());
    worker.wait_ready().await;
    assert!(
        worker
            .metric("omsc_reconnects_total", &[("target", "database")])
            .await
            >= 1.0
    );
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn the_broker_cut_off_mid_stream_is_reconnected_and_redelivers() {
    let env = TestEnv::new().await;
    let proxy = Proxy::to_broker().await;
    let worker = env
        .start_worker_with(&[&format!("--amqp-url={}", proxy.amqp_url())])
        .await;
    let storm = big_storm(13);
    let deliveries = storm.deliveries(13, true, 0.1);
    let (before, after) = deliveries.split_at(deliveries.len() / 3);
    let publisher = env.publisher().await;
    env.publish_snapshots(&publisher, before).await;
    wait_until("progress before the cut", PATIENCE, || async {
        rows(&env).await > 0
    })
    .await;

    proxy.set(Mode::Cut);
    let cut = Instant::now();
    wait_until("the worker to notice", PATIENCE, || async {
        http_get(worker.http, "/readyz").await.0 == 503
    })
    .await;
    figure("broker cut, noticed (readiness 503)", cut.elapsed());
    env.publish_snapshots(&publisher, after).await;
    proxy.set(Mode::Open);
    let back = Instant::now();
    wait_for_model(&env, &storm).await;
    figure("broker cut, back to the model", back.elapsed());
    assert!(
        worker
            .metric("omsc_reconnects_total", &[("target", "broker")])
            .await
            >= 1.0
    );
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_stalled_broker_connection_is_noticed_by_heartbeat_and_replaced() {
    let env = TestEnv::new().await;
    let proxy = Proxy::to_broker().await;
    let via_proxy = format!("{}?heartbeat=1", proxy.amqp_url());
    let worker = env
        .start_worker_with(&[&format!("--amqp-url={via_proxy}")])
        .await;
    proxy.set(Mode::Stalled);
    let stalled = Instant::now();
    wait_until("the stall to be noticed", PATIENCE, || async {
        http_get(worker.http, "/readyz").await.0 == 503
    })
    .await;
    figure(
        "broker stalled (heartbeat 1 s), noticed (readiness 503)",
        stalled.elapsed(),
    );
    proxy.set(Mode::Open);
    let back = Instant::now();
    worker.wait_ready().await;
    figure("broker stalled, consuming again", back.elapsed());
    let storm = Storm::generate(&StormSpec {
        seed: 14,
        ..StormSpec::default()
    });
    let publisher = env.publisher().await;
    env.publish_snapshots(&publisher, &storm.deliveries(14, true, 0.2))
        .await;
    wait_for_model(&env, &storm).await;
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn sigterm_mid_stream_finishes_the_batch_in_hand_and_exits_zero() {
    let env = TestEnv::new().await;
    let storm = long_storm(15);
    let publisher = env.publisher().await;
    env.publish_snapshots(&publisher, &storm.deliveries(15, true, 0.0))
        .await;
    let mut worker = env.spawn_process(&[]);
    wait_until("the worker to write", PATIENCE, || async {
        rows(&env).await > 0
    })
    .await;
    let signalled = Instant::now();
    let exit = crate::helpers::sigterm(&mut worker, Duration::from_secs(10)).await;
    assert!(exit.success(), "exit status {exit}");
    let took = signalled.elapsed();
    // Whatever it did not acknowledge is back in the queue: a new worker finishes the job.
    assert!(
        env.depth(INVENTORY_QUEUE).await > 0,
        "SIGTERM came in mid-stream"
    );
    let mut next = env.spawn_process(&[]);
    wait_for_model(&env, &storm).await;
    next.kill().await.unwrap();
    figure("SIGTERM mid-stream, signal to exit 0", took);
    env.teardown().await;
}

#[tokio::test]
async fn a_batch_stuck_behind_a_foreign_lock_shows_in_readiness_and_applies_once_it_is_released() {
    let env = TestEnv::new().await;
    let worker = env.start_worker_with(&["--statement-timeout-secs=1"]).await;
    let publisher = env.publisher().await;
    let t0 = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
    let delta = |quantity, secs| StockSnapshot {
        scope: StockScope::Aggregate,
        scope_id: "EU".into(),
        mode: SnapshotMode::Delta,
        created_on: t0 + chrono::Duration::seconds(secs),
        stock: vec![StockEntry {
            sku: "LOCKED".into(),
            quantity,
            unlimited: false,
            inflight_backorders: None,
        }],
        batch: None,
    };
    let first = delta(1, 1);
    env.publish_snapshots(&publisher, &[&first]).await;
    wait_until("the first DELTA", PATIENCE, || async {
        rows(&env).await == 1
    })
    .await;

    // Someone else holds the row, as a long report or a forgotten psql session would.
    let holder = runtime::db::connect(&env.database_url, "omsc-test-holder")
        .await
        .unwrap();
    holder
        .batch_execute("BEGIN; SELECT * FROM stock_items WHERE sku = 'LOCKED' FOR UPDATE")
        .await
        .unwrap();
    let second = delta(7, 2);
    env.publish_snapshots(&publisher, &[&second]).await;
    wait_until("the worker to say it is stuck", PATIENCE, || async {
        let (status, body) = http_get(worker.http, "/readyz").await;
        status == 503 && body.contains("statement timeout")
    })
    .await;

    holder.batch_execute("COMMIT").await.unwrap();
    wait_until(
        "the DELTA to apply once the lock is gone",
        PATIENCE,
        || async {
            env.db
                .query_one("SELECT quantity FROM stock_items WHERE sku = 'LOCKED'", &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 7
        },
    )
    .await;
    worker.wait_ready().await;
    assert_eq!(
        worker
            .metric("omsc_messages_total", &[("outcome", "dead")])
            .await,
        0.0,
        "nothing was dead-lettered"
    );
    worker.stop().await;
    env.teardown().await;
}
