//! Scale-out: three replicas of each module's worker as separate processes on its queue.
//! Inventory: a shuffled, partly duplicated stock storm, then a rolling restart of all three
//! while the storm keeps coming; both end at the model's state with nothing dead-lettered
//! (`make scale-out` runs the same scenarios on release builds for the figures of
//! docs/scale-out.md). Sales: exports shared by three relays, then shuffled lifecycles
//! through a rolling restart, ending as one worker given them in order. Catalog: the product
//! outbox relayed by three replicas through a rolling restart while products keep changing.
//! Post-sales: a refund stream through a rolling restart credits each credit note once.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use futures::StreamExt;
use lapin::options::BasicAckOptions;
use rust_decimal::Decimal;
use simulate::orders::{self, OmsMessage, OrdersSpec, deliveries};
use simulate::postsales::refund;
use simulate::stock::StormSpec;
use test_support::fleet::Fleet;
use test_support::scale::{self, Arrival, Load, Target};

use crate::helpers::{AMQP_URL, PATIENCE, TestEnv, binary, wait_until};
use crate::postsales_support::{
    balance, oms_publisher as postsales_publisher, paid_order, placed_and_shipped,
};
use crate::sales_support::{
    OmsInbox, end_state, oms_publisher, outcomes, place_all, publish, start_sales, wait_exported,
};

const REPLICAS: usize = 3;

fn target(env: &TestEnv, worker_env: &[(&str, &str)]) -> Target {
    Target {
        database_url: env.database_url.clone(),
        amqp_url: AMQP_URL.to_owned(),
        prefix: env.prefix.clone(),
        binary: binary("omsc-inventory"),
        worker_env: worker_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

/// FULL, NONZERO and DELTA exports over four aggregates, shuffled, a fifth delivered twice.
fn mixed_load(seed: u64, skus: usize, exports: usize, mix: (u32, u32, u32)) -> Load {
    Load {
        storm: StormSpec {
            seed,
            aggregates: 4,
            skus,
            exports,
            mix,
            chunk_size: 250,
            delta_skus: 10,
            start: Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
            ..StormSpec::default()
        },
        duplicates: 0.2,
    }
}

#[tokio::test]
async fn three_replicas_share_a_shuffled_duplicated_storm_and_reach_the_model() {
    let env = TestEnv::new().await;
    let run = scale::drain(
        &target(&env, &[]),
        &mixed_load(21, 2_000, 300, (1, 1, 8)),
        REPLICAS,
        Arrival::WhileRunning,
    )
    .await
    .unwrap();
    assert_eq!(run.per_replica.len(), REPLICAS);
    for replica in &run.per_replica {
        assert!(
            replica.messages > 0.0,
            "every replica takes a share of the queue: {:?}",
            run.per_replica
        );
    }
    let handled: f64 = run.per_replica.iter().map(|r| r.messages).sum();
    assert!(
        handled >= run.messages as f64,
        "{handled} < {}",
        run.messages
    );
    eprintln!(
        "{REPLICAS} replicas: {} messages in {:.2}s ({:.0}/s); {:?}",
        run.messages,
        run.secs,
        run.messages_per_sec(),
        run.per_replica
    );
    env.teardown().await;
}

#[tokio::test]
async fn a_rolling_restart_under_load_loses_nothing() {
    let env = TestEnv::new().await;
    // A prefetch of 50 keeps most of each wave in the queue rather than in the replicas'
    // hands, so every SIGTERM comes with messages both in hand and waiting.
    let target = target(&env, &[("OMSC_PREFETCH", "50")]);
    let run = scale::rolling_restart(&target, &mixed_load(22, 1_000, 6_000, (1, 1, 18)), REPLICAS)
        .await
        .unwrap();
    assert_eq!(run.stopped.len(), REPLICAS, "every replica was replaced");
    for stopped in &run.stopped {
        assert!(
            stopped.figures.messages > 0.0,
            "{} was working when it got SIGTERM",
            stopped.figures.name
        );
        assert!(
            stopped.status.success(),
            "{} exited with {} after SIGTERM",
            stopped.figures.name,
            stopped.status
        );
        // OMSC_DRAIN_TIMEOUT_SECS (10) plus the runtime's 2 s margin: inside the 30 s grace
        // period of the Kubernetes Deployment.
        assert!(
            stopped.drain.as_secs_f64() < 12.5,
            "{} took {:?} to drain",
            stopped.figures.name,
            stopped.drain
        );
    }
    assert!(
        run.depth_at_sigterm.iter().all(|&depth| depth > 0),
        "each SIGTERM must come with messages waiting, or the test proves nothing: {:?}",
        run.depth_at_sigterm
    );
    eprintln!(
        "rolling restart of {REPLICAS} replicas under {} messages: {:.2}s, depths at SIGTERM {:?}, drains {:?}",
        run.messages,
        run.secs,
        run.depth_at_sigterm,
        run.stopped.iter().map(|s| s.drain).collect::<Vec<_>>()
    );
    env.teardown().await;
}

/// The sales module the same way: orders placed as a storefront places them, exported by
/// three `omsc-sales` replicas sharing the outbox, then the OMS's lifecycle messages about
/// them, shuffled and half of them twice, with every replica replaced one at a time while
/// they arrive. The end state equals that of one worker given the messages in order.
#[tokio::test]
async fn three_sales_replicas_through_a_rolling_restart_end_as_one_worker_in_order() {
    let orders = orders::generate(&OrdersSpec {
        seed: 23,
        orders: 60,
        virtual_share: 0.2,
        ..OrdersSpec::default()
    });
    let messages: Vec<OmsMessage> = orders.iter().flat_map(|o| o.lifecycle()).collect();

    // The reference: one in-process worker, the messages in order.
    let expected = {
        let env = TestEnv::new().await;
        let _inbox = OmsInbox::bind(&env).await;
        let worker = start_sales(&env).await;
        place_all(&env, &orders).await;
        wait_exported(&env, orders.len() as i64).await;
        let publisher = oms_publisher(&env).await;
        publish(&publisher, &deliveries(&messages, 23, false, 0.0)).await;
        let settled =
            || async { outcomes(&worker, "applied").await + outcomes(&worker, "stale").await };
        wait_until("every message settled", PATIENCE, || async {
            settled().await == messages.len() as f64
        })
        .await;
        let state = end_state(&env).await;
        worker.stop().await;
        env.teardown().await;
        state
    };

    let env = TestEnv::new().await;
    let _inbox = OmsInbox::bind(&env).await;
    let publisher = oms_publisher(&env).await;
    let prefix = env.prefix.clone();
    let mut fleet = Fleet::new(
        "sales",
        &binary("omsc-sales"),
        &[
            ("DATABASE_URL", env.database_url.as_str()),
            ("AMQP_URL", AMQP_URL),
            ("OMSC_PREFIX", prefix.as_str()),
            ("OMSC_MIGRATE", "false"),
            ("OMSC_DB_POOL_SIZE", "4"),
            ("RUST_LOG", "warn"),
        ],
    );
    fleet.start(REPLICAS).await.unwrap();
    place_all(&env, &orders).await;
    wait_exported(&env, orders.len() as i64).await;
    let shuffled = deliveries(&messages, 23, true, 0.5);
    let (first, rest) = shuffled.split_at(shuffled.len() / 2);
    publish(&publisher, first).await;
    let mut stopped = Vec::new();
    for wave in rest.chunks(rest.len().div_ceil(REPLICAS)) {
        publish(&publisher, wave).await;
        stopped.push(fleet.replace_oldest().await.unwrap());
    }
    for s in &stopped {
        assert!(
            s.status.success(),
            "{} exited with {} after SIGTERM",
            s.figures.name,
            s.status
        );
    }
    let handled_before_sigterm: f64 = stopped.iter().map(|s| s.figures.messages).sum();
    assert!(
        handled_before_sigterm > 0.0,
        "the replicas were replaced while they consumed: {stopped:?}"
    );
    eprintln!("sales replicas replaced: {stopped:?}");
    wait_until("the end state of the in-order run", PATIENCE, || async {
        end_state(&env).await == expected
    })
    .await;
    env.assert_no_dead_letters().await;
    assert_eq!(env.depth("connector.sales").await, 0);
    fleet.stop_all().await.unwrap();
    env.teardown().await;
}

/// The catalog module: three `omsc-catalog` replicas relay the product outbox while a
/// storefront keeps saving products, and every replica is replaced one at a time meanwhile.
/// The OMS ends with every product's latest state, and no row is left or failed.
#[tokio::test]
async fn three_catalog_replicas_through_a_rolling_restart_export_every_products_latest_state() {
    const PRODUCTS: usize = 300;
    let env = TestEnv::new().await;
    let (_connection, mut inbox) =
        crate::catalog::commerce_inbox(&env, protocol::catalog::methods::PRODUCT_UPDATED).await;
    // The OMS's view: the last price received per SKU.
    let received = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::<String, f64>::new()));
    let collector = {
        let received = received.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = inbox.next().await {
                delivery.ack(BasicAckOptions::default()).await.unwrap();
                let message: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
                let product = &message["params"]["product"];
                let sku = product["sku"].as_str().unwrap().to_owned();
                let price = product["price"]["amount"].as_f64().unwrap();
                received.lock().unwrap().insert(sku, price);
            }
        })
    };
    let save_all = |price: i32| {
        let db = &env.db;
        async move {
            db.execute(
                "INSERT INTO products (sku, type, name, price, currency)
                 SELECT 'SCALE-' || lpad(i::text, 5, '0'), 'simple', 'Product ' || i, $1, 'EUR'
                   FROM generate_series(1, $2::int) AS i
                 ON CONFLICT (sku) DO UPDATE SET price = excluded.price",
                &[&rust_decimal::Decimal::from(price), &(PRODUCTS as i32)],
            )
            .await
            .unwrap();
        }
    };
    let prefix = env.prefix.clone();
    let mut fleet = Fleet::new(
        "catalog",
        &binary("omsc-catalog"),
        &[
            ("DATABASE_URL", env.database_url.as_str()),
            ("AMQP_URL", AMQP_URL),
            ("OMSC_PREFIX", prefix.as_str()),
            ("OMSC_MIGRATE", "false"),
            ("OMSC_DB_POOL_SIZE", "4"),
            ("RUST_LOG", "warn"),
        ],
    );
    fleet.start(REPLICAS).await.unwrap();
    save_all(1).await;
    let mut stopped = Vec::new();
    let mut pending_at_sigterm = Vec::new();
    for wave in 0..REPLICAS as i32 {
        save_all(2 + wave).await;
        pending_at_sigterm.push(crate::catalog::pending(&env).await);
        stopped.push(fleet.replace_oldest().await.unwrap());
    }
    assert!(
        pending_at_sigterm.iter().all(|&rows| rows > 0),
        "each SIGTERM must come while rows wait to be sent: {pending_at_sigterm:?}"
    );
    eprintln!("catalog outbox rows pending at each SIGTERM: {pending_at_sigterm:?}");
    let last_price = 1.0 + REPLICAS as f64;
    for s in &stopped {
        assert!(
            s.status.success(),
            "{} exited with {} after SIGTERM",
            s.figures.name,
            s.status
        );
    }
    // A row is marked sent after the broker confirmed its message: wait for both.
    wait_until(
        "every product's latest state at the OMS and every row sent",
        PATIENCE,
        || async {
            let all_latest = {
                let received = received.lock().unwrap();
                received.len() == PRODUCTS && received.values().all(|&p| p == last_price)
            };
            all_latest && crate::catalog::pending(&env).await == 0
        },
    )
    .await;
    let failed: i64 = env
        .db
        .query_one(
            "SELECT count(*) FROM outbox WHERE module = 'catalog' AND failed_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failed, 0, "no outbox row failed");
    fleet.stop_all().await.unwrap();
    collector.abort();
    env.teardown().await;
}

/// The post-sales module: three `omsc-postsales` replicas under a refund stream (shuffled,
/// a third delivered twice), replaced one at a time while it arrives. Every credit note is
/// released once: one credit memo each, store credit credited once per gift-card order.
#[tokio::test]
async fn three_postsales_replicas_through_a_rolling_restart_credit_each_credit_note_once() {
    const ORDERS: usize = 200;
    let env = TestEnv::new().await;
    let gift_card = Decimal::new(2000, 2);
    let orders: Vec<orders::SimOrder> = (0..ORDERS)
        .map(|i| {
            let paid_by_gift_card = if i % 2 == 0 { gift_card } else { Decimal::ZERO };
            paid_order(
                &format!("SCALE-{i:04}"),
                Some(&format!("C-{:02}", i % 20)),
                paid_by_gift_card,
                Decimal::ZERO,
            )
        })
        .collect();
    placed_and_shipped(&env, &orders).await;
    let at = Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap();
    let messages: Vec<OmsMessage> = orders
        .iter()
        .flat_map(|order| {
            let lines = order.lines();
            let amounts: Vec<_> = lines.iter().map(|l| (l, l.gross_amount)).collect();
            let credit_note = format!("CN-{}", order.id());
            ["PENDINGRELEASE", "RELEASED"]
                .iter()
                .enumerate()
                .map(|(k, status)| {
                    refund(
                        order,
                        &credit_note,
                        None,
                        "Cancellation",
                        status,
                        at + chrono::Duration::hours(k as i64),
                        &amounts,
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let shuffled = deliveries(&messages, 24, true, 0.3);
    let (backlog, rest) = shuffled.split_at(shuffled.len() / 2);
    let publisher = postsales_publisher(&env).await;
    publish(&publisher, backlog).await;

    let prefix = env.prefix.clone();
    let mut fleet = Fleet::new(
        "postsales",
        &binary("omsc-postsales"),
        &[
            ("DATABASE_URL", env.database_url.as_str()),
            ("AMQP_URL", AMQP_URL),
            ("OMSC_PREFIX", prefix.as_str()),
            ("OMSC_MIGRATE", "false"),
            ("OMSC_DB_POOL_SIZE", "4"),
            ("RUST_LOG", "warn"),
        ],
    );
    fleet.start(REPLICAS).await.unwrap();
    let mut stopped = Vec::new();
    for wave in rest.chunks(rest.len().div_ceil(REPLICAS)) {
        publish(&publisher, wave).await;
        stopped.push(fleet.replace_oldest().await.unwrap());
    }
    for s in &stopped {
        assert!(
            s.status.success(),
            "{} exited with {} after SIGTERM",
            s.figures.name,
            s.status
        );
    }
    let handled_before_sigterm: f64 = stopped.iter().map(|s| s.figures.messages).sum();
    assert!(
        handled_before_sigterm > 0.0,
        "the replicas were replaced while they consumed: {stopped:?}"
    );
    let count = |sql: &'static str| {
        let db = &env.db;
        async move { db.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    wait_until("every credit note released", PATIENCE * 2, || async {
        count("SELECT count(*) FROM postsales_refunds WHERE status = 'RELEASED'").await
            == ORDERS as i64
            && env.depth("connector.postsales").await == 0
    })
    .await;
    assert_eq!(
        count("SELECT count(DISTINCT credit_note_number) FROM postsales_credit_memos").await,
        ORDERS as i64
    );
    assert_eq!(
        count("SELECT count(*) FROM postsales_credit_memos").await,
        ORDERS as i64,
        "one credit memo per credit note"
    );
    let mut expected: BTreeMap<String, Decimal> = BTreeMap::new();
    for (i, order) in orders.iter().enumerate() {
        if i % 2 == 0 {
            *expected
                .entry(order.rows.order.customer_id.clone().unwrap())
                .or_default() += gift_card;
        }
    }
    for (customer, credit) in &expected {
        assert_eq!(&balance(&env, customer).await, credit, "{customer}");
    }
    env.assert_no_dead_letters().await;
    fleet.stop_all().await.unwrap();
    env.teardown().await;
}
