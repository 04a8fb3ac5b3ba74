//! The stock rules of DESIGN.md, end to end: messages published to `oms.events` in the wire
//! format, consumed by real workers, checked in `stock_items`.

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use protocol::inventory::{SnapshotMode, StockEntry, StockScope, StockSnapshot};
use simulate::stock::{Storm, StormSpec};
use stock_filter::Model;

use crate::helpers::{PATIENCE, TestEnv, wait_until};

fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap() + Duration::seconds(secs)
}

fn snap(mode: SnapshotMode, aggregate: &str, secs: i64, entries: &[(&str, i64)]) -> StockSnapshot {
    StockSnapshot {
        scope: StockScope::Aggregate,
        scope_id: aggregate.into(),
        mode,
        created_on: at(secs),
        stock: entries
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

fn unlimited(mut s: StockSnapshot, sku: &str) -> StockSnapshot {
    for e in &mut s.stock {
        if e.sku == sku {
            e.unlimited = true;
        }
    }
    s
}

use SnapshotMode::{Delta, Full, NonZero};

/// Waits until the whole table is `expected` (`(aggregate, sku, quantity, unlimited)` in key
/// order). Batches commit concurrently, so one row being there says nothing of the others.
async fn wait_for_stock(env: &TestEnv, expected: &[(&str, &str, i64, bool)]) {
    let expected: Vec<(String, String, i64, bool)> = expected
        .iter()
        .map(|(a, s, q, u)| ((*a).to_owned(), (*s).to_owned(), *q, *u))
        .collect();
    wait_until(&format!("stock to be {expected:?}"), PATIENCE, || async {
        env.stock().await == expected
    })
    .await;
}

async fn wait_for_sku(env: &TestEnv, sku: &str, expected: Option<(i64, bool)>) {
    wait_until(&format!("{sku} to be {expected:?}"), PATIENCE, || async {
        env.sku("EU", sku).await == expected
    })
    .await;
}

#[tokio::test]
async fn full_then_delta_leaves_the_delta_value() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let publisher = env.publisher().await;
    let full = snap(Full, "EU", 0, &[("a", 1), ("b", 2)]);
    let delta = snap(Delta, "EU", 10, &[("a", 5)]);
    env.publish_snapshots(&publisher, &[&full, &delta]).await;
    wait_for_stock(&env, &[("EU", "a", 5, false), ("EU", "b", 2, false)]).await;
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_delta_beats_a_late_chunk_of_an_older_full() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let publisher = env.publisher().await;
    let chunk1 = snap(Full, "EU", 0, &[("a", 1), ("b", 2)]);
    let delta = snap(Delta, "EU", 10, &[("c", 9)]);
    let late_chunk2 = snap(Full, "EU", 0, &[("c", 3), ("d", 4)]);
    env.publish_snapshots(&publisher, &[&chunk1, &delta]).await;
    wait_for_sku(&env, "c", Some((9, false))).await;
    env.publish_snapshots(&publisher, &[&late_chunk2]).await;
    wait_for_sku(&env, "d", Some((4, false))).await;
    assert_eq!(
        env.sku("EU", "c").await,
        Some((9, false)),
        "the older chunk must not win"
    );
    assert!(
        worker
            .metric("omsc_stock_rows_total", &[("outcome", "stale")])
            .await
            >= 1.0
    );
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_duplicate_delivery_changes_nothing_and_is_counted_stale() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let publisher = env.publisher().await;
    let delta = snap(Delta, "EU", 5, &[("a", 5)]);
    env.publish_snapshots(&publisher, &[&delta]).await;
    wait_for_sku(&env, "a", Some((5, false))).await;
    let written_at: DateTime<Utc> = env
        .db
        .query_one("SELECT updated_at FROM stock_items WHERE sku = 'a'", &[])
        .await
        .unwrap()
        .get(0);
    env.publish_snapshots(&publisher, &[&delta]).await;
    let endpoint = "magento.inventory.aggregate_stock_management.updated";
    wait_until("the duplicate to be counted stale", PATIENCE, || async {
        worker
            .metric(
                "omsc_messages_total",
                &[("endpoint", endpoint), ("outcome", "stale")],
            )
            .await
            == 1.0
    })
    .await;
    let rewritten_at: DateTime<Utc> = env
        .db
        .query_one("SELECT updated_at FROM stock_items WHERE sku = 'a'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        written_at, rewritten_at,
        "a stale update must not rewrite the row"
    );
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn with_equal_timestamps_the_first_write_wins() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let publisher = env.publisher().await;
    let first = snap(Delta, "EU", 5, &[("a", 1)]);
    let second = snap(Delta, "EU", 5, &[("a", 2), ("z", 1)]);
    env.publish_snapshots(&publisher, &[&first]).await;
    wait_for_sku(&env, "a", Some((1, false))).await;
    env.publish_snapshots(&publisher, &[&second]).await;
    wait_for_sku(&env, "z", Some((1, false))).await;
    assert_eq!(env.sku("EU", "a").await, Some((1, false)));
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn skus_absent_from_a_full_keep_their_value() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let publisher = env.publisher().await;
    let delta = snap(Delta, "EU", 0, &[("x", 7)]);
    let full = snap(Full, "EU", 10, &[("a", 1)]);
    env.publish_snapshots(&publisher, &[&delta, &full]).await;
    wait_for_stock(&env, &[("EU", "a", 1, false), ("EU", "x", 7, false)]).await;
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn nonzero_zeroes_the_skus_it_leaves_out_except_unlimited_ones() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let publisher = env.publisher().await;
    let full = unlimited(snap(Full, "EU", 0, &[("a", 5), ("b", 6), ("u", 0)]), "u");
    let other_aggregate = snap(Full, "US", 0, &[("b", 6)]);
    let nonzero = snap(NonZero, "EU", 10, &[("a", 3)]);
    env.publish_snapshots(&publisher, &[&full, &other_aggregate, &nonzero])
        .await;
    wait_for_sku(&env, "b", Some((0, false))).await;
    assert_eq!(env.sku("EU", "a").await, Some((3, false)));
    assert_eq!(
        env.sku("EU", "u").await,
        Some((0, true)),
        "unlimited SKUs are not zeroed"
    );
    let us: Option<(i64, bool)> = env
        .db
        .query_opt(
            "SELECT quantity, unlimited FROM stock_items WHERE aggregate_id = 'US'",
            &[],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1)));
    assert_eq!(us, Some((6, false)), "other aggregates are not touched");
    let zeroed_at: Option<DateTime<Utc>> = env
        .db
        .query_one(
            "SELECT zeroed_at FROM stock_items WHERE aggregate_id = 'EU' AND sku = 'b'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(zeroed_at, Some(at(10)));
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_late_chunk_of_a_nonzero_still_wins_over_its_zeroing() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let publisher = env.publisher().await;
    let full = snap(Full, "EU", 0, &[("a", 5), ("b", 6), ("c", 7)]);
    let chunk1 = snap(NonZero, "EU", 10, &[("a", 3)]);
    let late_chunk2 = snap(NonZero, "EU", 10, &[("b", 4)]);
    env.publish_snapshots(&publisher, &[&full, &chunk1]).await;
    // The settle period passes with chunk 2 still on its way: b and c are zeroed.
    wait_for_sku(&env, "b", Some((0, false))).await;
    assert_eq!(env.sku("EU", "c").await, Some((0, false)));
    env.publish_snapshots(&publisher, &[&late_chunk2]).await;
    wait_for_sku(&env, "b", Some((4, false))).await;
    assert_eq!(env.sku("EU", "c").await, Some((0, false)));
    assert_eq!(env.sku("EU", "a").await, Some((3, false)));
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn an_old_delta_arriving_after_a_nonzero_zeroing_lands_as_zero() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let publisher = env.publisher().await;
    let full = snap(Full, "EU", 0, &[("a", 5), ("b", 6)]);
    let nonzero = snap(NonZero, "EU", 20, &[("a", 3)]);
    env.publish_snapshots(&publisher, &[&full, &nonzero]).await;
    wait_for_sku(&env, "b", Some((0, false))).await;
    // Produced between the FULL and the NONZERO, delivered last.
    let old_delta = snap(Delta, "EU", 10, &[("b", 8), ("new", 2)]);
    let marker = snap(Delta, "EU", 30, &[("marker", 1)]);
    env.publish_snapshots(&publisher, &[&old_delta, &marker])
        .await;
    wait_for_sku(&env, "marker", Some((1, false))).await;
    assert_eq!(env.sku("EU", "b").await, Some((0, false)));
    assert_eq!(
        env.sku("EU", "new").await,
        Some((0, false)),
        "a SKU first seen in an update older than the zeroing is zero too"
    );
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn source_stock_follows_the_same_rules_per_source() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let publisher = env.publisher().await;
    let mut full = snap(Full, "WH-1", 0, &[("a", 5), ("b", 6)]);
    full.scope = StockScope::Source;
    let mut delta = snap(Delta, "WH-1", 10, &[("a", 1)]);
    delta.scope = StockScope::Source;
    let mut late = snap(Full, "WH-1", 0, &[("a", 99)]);
    late.scope = StockScope::Source;
    env.publish_snapshots(&publisher, &[&full, &delta, &late])
        .await;
    wait_until("source stock", PATIENCE, || async {
        env.source_stock().await
            == vec![
                ("WH-1".into(), "a".into(), 1, false),
                ("WH-1".into(), "b".into(), 6, false),
            ]
    })
    .await;
    assert!(
        env.stock().await.is_empty(),
        "source stock never lands in aggregate stock"
    );
    worker.stop().await;
    env.teardown().await;
}

/// Random storms of FULL, NONZERO and DELTA exports over several aggregates, shuffled and
/// partly delivered twice, consumed by three workers at once: the table ends equal to the
/// model that replays the storm in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_on_shuffled_redelivered_storms_end_as_the_model() {
    let env = TestEnv::new().await;
    let workers = [
        env.start_worker().await,
        env.start_worker_with(&["--batch-messages=7"]).await,
        env.start_worker_with(&["--apply-concurrency=1", "--batch-linger-ms=0"])
            .await,
    ];
    let publisher = env.publisher().await;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 6,
        ..ProptestConfig::default()
    });
    let strategy = (
        any::<u64>(),
        1usize..4,
        20usize..60,
        4usize..14,
        0.0f64..0.5,
    );
    let mut case = 0;
    for _ in 0..6 {
        let tree = strategy.new_tree(&mut runner).unwrap();
        let (seed, aggregates, skus, exports, duplicates) = tree.current();
        case += 1;
        // Each case writes its own aggregates, one hour after the previous case.
        let spec = StormSpec {
            seed,
            aggregates,
            skus,
            exports,
            chunk_size: 17,
            delta_skus: 6,
            start: Utc.with_ymd_and_hms(2026, 1, 1, case, 0, 0).unwrap(),
            ..StormSpec::default()
        };
        let mut storm = Storm::generate(&spec);
        for s in &mut storm.snapshots {
            s.scope_id = format!("C{case}-{}", s.scope_id);
        }
        let deliveries = storm.deliveries(seed, true, duplicates);
        env.publish_snapshots(&publisher, &deliveries).await;
        let expected: Vec<_> = Model::replay(StockScope::Aggregate, &storm.snapshots)
            .rows()
            .into_iter()
            .collect();
        let prefix = format!("C{case}-");
        wait_until(
            &format!("case {case} (seed {seed}) to match the model"),
            PATIENCE,
            || async {
                let pending: i64 = env
                    .db
                    .query_one("SELECT count(*) FROM stock_nonzero_pending", &[])
                    .await
                    .unwrap()
                    .get(0);
                let actual: Vec<_> = env
                    .stock()
                    .await
                    .into_iter()
                    .filter(|r| r.0.starts_with(&prefix))
                    .collect();
                pending == 0 && actual == expected
            },
        )
        .await;
    }
    for worker in workers {
        worker.stop().await;
    }
    env.assert_no_dead_letters().await;
    env.teardown().await;
}

#[tokio::test]
async fn stock_is_read_only_for_everyone_but_the_connector() {
    let env = TestEnv::new().await;
    let insert = "INSERT INTO stock_items (aggregate_id, sku, quantity, source_updated_at)
                  VALUES ('EU', 'hand', 1, now())";
    let err = env.db.execute(insert, &[]).await.unwrap_err();
    let message = err.as_db_error().unwrap().message().to_owned();
    assert_eq!(
        message,
        "stock_items is owned by the OMS: only the connector writes it"
    );
    let err = env
        .db
        .execute("UPDATE source_stock_items SET quantity = 1", &[])
        .await
        .unwrap_err();
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("source_stock_items is owned by the OMS")
    );

    env.db
        .execute(
            "INSERT INTO omsc_settings VALUES ('hand_edits', 'allow')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        env.db.execute(insert, &[]).await.unwrap(),
        1,
        "the development flag allows hand edits"
    );
    env.teardown().await;
}

#[tokio::test]
async fn a_website_sells_from_the_aggregate_mapped_to_it() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let publisher = env.publisher().await;
    let eu = snap(Full, "EU", 0, &[("a", 5), ("b", 0)]);
    let us = unlimited(snap(Full, "US", 0, &[("a", 0)]), "a");
    env.publish_snapshots(&publisher, &[&eu, &us]).await;
    wait_until("both aggregates", PATIENCE, || async {
        env.stock().await.len() == 3
    })
    .await;
    env.db
        .batch_execute(
            "INSERT INTO websites (code) VALUES ('de'), ('com');
             INSERT INTO website_stock_aggregates VALUES ('de', 'EU'), ('com', 'US');",
        )
        .await
        .unwrap();
    let sellable = |website: &'static str, sku: &'static str, qty: i64| {
        let db = &env.db;
        async move {
            db.query_one("SELECT is_sellable($1, $2, $3)", &[&website, &sku, &qty])
                .await
                .unwrap()
                .get::<_, bool>(0)
        }
    };
    assert!(sellable("de", "a", 5).await);
    assert!(!sellable("de", "a", 6).await);
    assert!(!sellable("de", "b", 1).await);
    assert!(sellable("com", "a", 1000).await, "unlimited");
    assert!(!sellable("com", "b", 1).await, "never reported");
    assert!(!sellable("fr", "a", 1).await, "unmapped website");
    worker.stop().await;
    env.teardown().await;
}
