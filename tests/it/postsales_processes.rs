//! Post-sales in real processes: `omsc-postsales` killed with SIGKILL in the middle of a
//! refund stream loses nothing and credits nothing twice; `omsc run --all` runs the module.

use std::collections::BTreeMap;

use chrono::{Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use simulate::orders::{OmsMessage, SimOrder, deliveries};
use simulate::postsales::{SimReturn, refund};

use crate::helpers::{PATIENCE, TestEnv, wait_until};
use crate::postsales_support::{balance, oms_publisher, paid_order, placed_and_shipped};
use crate::sales_support::{OmsInbox, publish};

const QUEUE: &str = "connector.postsales";

async fn count(env: &TestEnv, sql: &str) -> i64 {
    env.db.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_postsales_worker_killed_during_a_refund_stream_credits_each_credit_note_once() {
    let env = TestEnv::new().await;
    let n = 400;
    let gift_card = Decimal::new(2000, 2);
    // Every other order paid 20.00 by gift card: its full refund gives 20.00 of store credit.
    let orders: Vec<SimOrder> = (0..n)
        .map(|i| {
            let paid_by_gift_card = if i % 2 == 0 { gift_card } else { Decimal::ZERO };
            paid_order(
                &format!("KILL-{i:04}"),
                Some(&format!("C-{:02}", i % 40)),
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
            let cn = format!("CN-{}", order.id());
            ["PENDINGRELEASE", "RELEASED"]
                .iter()
                .enumerate()
                .map(|(k, status)| {
                    refund(
                        order,
                        &cn,
                        None,
                        "Cancellation",
                        status,
                        at + Duration::hours(k as i64),
                        &amounts,
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let publisher = oms_publisher(&env).await;
    publish(&publisher, &deliveries(&messages, 3, true, 0.3)).await;

    let mut first = env.spawn_binary("omsc-postsales", &[]);
    wait_until("the first worker to credit", PATIENCE, || async {
        count(&env, "SELECT count(*) FROM postsales_credit_memos").await > 0
    })
    .await;
    first.kill().await.unwrap(); // SIGKILL: no drain, no goodbye
    assert!(
        env.depth(QUEUE).await > 0,
        "the kill must come in mid-stream for the test to mean anything"
    );
    let restarted = std::time::Instant::now();
    let mut second = env.spawn_binary("omsc-postsales", &[]);
    wait_until("every credit note released", PATIENCE * 2, || async {
        count(
            &env,
            "SELECT count(*) FROM postsales_refunds WHERE status = 'RELEASED'",
        )
        .await
            == n
            && env.depth(QUEUE).await == 0
    })
    .await;
    eprintln!(
        "recovery figure: kill -9 during a refund stream, the next worker's start to every credit note released: {:.2} s",
        restarted.elapsed().as_secs_f64()
    );
    second.kill().await.unwrap();

    // One credit memo per credit note, each exactly its order's lines.
    let memos = count(
        &env,
        "SELECT count(DISTINCT credit_note_number) FROM postsales_credit_memos",
    )
    .await;
    assert_eq!(memos, n);
    assert_eq!(
        count(&env, "SELECT count(*) FROM postsales_credit_memos").await,
        n
    );
    assert_eq!(
        count(&env, "SELECT count(*) FROM postsales_credit_memo_lines").await,
        n * 4
    );
    let total: Decimal = env
        .db
        .query_one("SELECT sum(grand_total) FROM postsales_credit_memos", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, Decimal::new(8500, 2) * Decimal::from(n));
    // Store credit once per credit note: each customer has 20.00 per gift-card order.
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
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM store_credit_transactions WHERE kind = 'refund'"
        )
        .await,
        n / 2
    );
    env.assert_no_dead_letters().await;
    env.teardown().await;
}

#[tokio::test]
async fn omsc_run_all_runs_the_post_sales_module() {
    let env = TestEnv::new().await;
    let mut inbox = OmsInbox::bind(&env).await;
    let order = paid_order("ALL-1", Some("C-1"), Decimal::new(2000, 2), Decimal::ZERO);
    placed_and_shipped(&env, std::slice::from_ref(&order)).await;
    let publisher = oms_publisher(&env).await;
    let mut process = env.spawn_binary_with_args("omsc", &["run", "--all"], &[]);

    // Out: a requested return is authorized.
    let r = SimReturn::new(&order, "R-ALL-1", &["1", "2-1", "2-2"]);
    postsales::storefront::request(&env.db, &r.request())
        .await
        .unwrap();
    let sent = inbox.next().await;
    assert_eq!(sent.routing_key, protocol::postsales::methods::AUTHORIZE);
    assert_eq!(sent.message_id, "R-ALL-1");

    // In: the return's path ends in a credit memo and store credit.
    publish(&publisher, &r.lifecycle().iter().collect::<Vec<_>>()).await;
    wait_until("the credit memo", PATIENCE, || async {
        count(&env, "SELECT count(*) FROM postsales_credit_memos").await == 1
    })
    .await;
    assert_eq!(balance(&env, "C-1").await, Decimal::new(1500, 2));
    process.kill().await.unwrap();
    env.assert_no_dead_letters().await;
    env.teardown().await;
}
