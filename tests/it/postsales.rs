//! What the OMS says about returns and refunds: a return's whole path delivered in any order
//! and twice, the real payloads, statuses newest first, returns the OMS created, and where
//! refunded money goes (payment, store credit, neither).

use chrono::{Duration, TimeZone, Utc};
use protocol::postsales::methods::{REFUND_UPDATED, RETURN_UPDATED};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use simulate::orders::{OmsMessage, SimOrder, deliveries, order_rows, simple_item};
use simulate::postsales::{SimReturn, refund};

use crate::helpers::{PATIENCE, TestEnv, wait_until};
use crate::postsales_support::{
    balance, end_state, oms_publisher, outcomes, paid_order, placed_and_shipped, rows_of,
    start_postsales, wait_authorized, wait_settled,
};
use crate::sales_support::{OmsInbox, publish};

fn d(cents: i64) -> Decimal {
    Decimal::new(cents, 2)
}

/// Four orders and their returns: all of a part-gift-card order, one line of an order paid
/// by card, one line of a part-gift-card order, all of a guest's part-gift-card order.
fn four_returns() -> Vec<SimReturn> {
    let everything = ["1", "2-1", "2-2"];
    [
        (
            paid_order("RET-A", Some("C-A"), d(2000), d(0)),
            &everything[..],
        ),
        (paid_order("RET-B", Some("C-B"), d(0), d(0)), &["1"][..]),
        (
            paid_order("RET-C", Some("C-C"), d(2000), d(0)),
            &["2-1"][..],
        ),
        (paid_order("RET-D", None, d(1000), d(0)), &everything[..]),
    ]
    .into_iter()
    .map(|(order, lines)| SimReturn::new(&order, &format!("R-{}", order.id()), lines))
    .collect()
}

/// Requests the returns, sends `messages` in the given order, waits until every one is
/// settled; returns the end state.
async fn run_returns(returns: &[SimReturn], messages: &[&OmsMessage]) -> Vec<String> {
    let env = TestEnv::new().await;
    let _inbox = OmsInbox::bind(&env).await;
    let worker = start_postsales(&env).await;
    let orders: Vec<SimOrder> = returns.iter().map(|r| r.order.clone()).collect();
    placed_and_shipped(&env, &orders).await;
    for r in returns {
        postsales::storefront::request(&env.db, &r.request())
            .await
            .unwrap();
    }
    wait_authorized(&env, returns.len() as i64).await;
    let publisher = oms_publisher(&env).await;
    publish(&publisher, messages).await;
    wait_settled(&worker, messages.len()).await;
    env.assert_no_dead_letters().await;
    let state = end_state(&env).await;
    worker.stop().await;
    env.teardown().await;
    state
}

#[tokio::test]
async fn a_return_and_its_refund_delivered_shuffled_and_twice_end_as_in_order() {
    let returns = four_returns();
    let messages: Vec<OmsMessage> = returns.iter().flat_map(|r| r.lifecycle()).collect();
    let in_order = run_returns(&returns, &deliveries(&messages, 7, false, 0.0)).await;
    let shuffled = run_returns(&returns, &deliveries(&messages, 7, true, 1.0)).await;
    assert_eq!(in_order, shuffled);

    // And the end state is the one the path describes: approved, received, refunded once.
    let returned = rows_of(&in_order, "return");
    assert_eq!(returned.len(), 4);
    for row in &returned {
        assert!(
            row.contains("| commerce | authorized | APPROVED |"),
            "{row}"
        );
    }
    let received = rows_of(&in_order, "return line")
        .iter()
        .filter(|r| r.ends_with("| OPENED"))
        .count();
    assert_eq!(received, 3 + 1 + 1 + 3, "every returned unit received");
    let refunds = rows_of(&in_order, "refund");
    assert!(
        refunds.iter().all(|r| r.contains("| RELEASED |")),
        "{refunds:#?}"
    );
    // grand total | to the payment | store credit | unrefunded
    let memos: Vec<String> = rows_of(&in_order, "credit memo")
        .iter()
        .map(|r| r.split(" | ").skip(6).take(4).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        memos,
        [
            "80.0000 65.0000 15.0000 0.0000", // all of 85 less shipping; the card paid 65
            "30.0000 30.0000 0.0000 0.0000",  // one line, paid by card
            "25.0000 25.0000 0.0000 0.0000",  // a partial return: no store credit
            "80.0000 75.0000 0.0000 5.0000",  // a guest has no store credit account
        ]
    );
    assert_eq!(
        rows_of(&in_order, "store credit"),
        ["store credit | C-A | 15.0000"]
    );
    assert_eq!(
        rows_of(&in_order, "store credit transaction"),
        [
            "store credit transaction | C-A | refund:CN-R-RET-A | refund | 15.0000 | RET-A | CN-R-RET-A"
        ]
    );
}

fn render(template: &str, values: &[(&str, &str)]) -> Value {
    let mut text = template.to_owned();
    for (k, v) in values {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    assert!(!text.contains("{{"), "unfilled placeholder in {text}");
    serde_json::from_str(&text).unwrap()
}

fn envelope(method: &str, id: &str, params: &Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": id, "client": "FAKE", "method": method, "params": params})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn the_mock_templates_rendered_with_values_update_the_return_and_credit_it_once() {
    let env = TestEnv::new().await;
    let _inbox = OmsInbox::bind(&env).await;
    let worker = start_postsales(&env).await;
    let order = SimOrder {
        rows: order_rows(
            "000000042",
            "default",
            Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap(),
            vec![simple_item(7, "LAMP", "simple", 1, d(4999))],
        ),
    };
    placed_and_shipped(&env, std::slice::from_ref(&order)).await;
    let request = SimReturn::new(&order, "R-42", &["7"]).request();
    postsales::storefront::request(&env.db, &request)
        .await
        .unwrap();
    wait_authorized(&env, 1).await;
    let values = [
        ("order_item.id", "7"),
        ("rma_item.line_number", "1"),
        ("rma_item.reason", "DAMAGED"),
        ("rma_item.reason_description", "Arrived broken"),
        ("rma_item.sku", "LAMP"),
        ("rma_item.gross_amount", "49.99"),
        ("rma_item.net_amount", "41.66"),
        ("rma_item.taxes_amount", "8.33"),
        ("rma_item.taxes_rate", "20"),
        ("rma.status", "APPROVED"),
        ("rma.increment_id", "000000042"),
        ("rma.carrier", "DHL"),
        ("rma.label", "https://labels.example/RT-42"),
        ("rma.tracking_number", "RT-42"),
        ("rma.rma_id", "R-42"),
        ("rma.sales_channel", "default"),
        ("rma.source", "default"),
        ("rma.credit_note", "CN-42"),
        ("rma.date", "2026-05-10 12:00:00"),
    ];
    let updated = render(
        include_str!(
            "../../crates/protocol/fixtures/mock-templates/magento.postsales.return_management.updated.json"
        ),
        &values,
    );
    let released = render(
        include_str!(
            "../../crates/protocol/fixtures/mock-templates/magento.postsales.refund_management.updated.json"
        ),
        &values,
    );
    let mut pending = released.clone();
    pending["refund"]["status"]["code"] = json!("PENDINGRELEASE");
    pending["refund"]["status"]["name"] = json!("PENDINGRELEASE");
    pending["refund"]["status"]["date"] = json!("2026-05-09 12:00:00");
    let publisher = oms_publisher(&env).await;
    for (method, id, params) in [
        (RETURN_UPDATED, "approved", &updated),
        (REFUND_UPDATED, "pending", &pending),
    ] {
        publisher
            .publish_raw(method, &envelope(method, id, params))
            .await
            .unwrap();
    }
    wait_settled(&worker, 2).await;
    let row = env
        .db
        .query_one(
            "SELECT r.state, r.tracking_number, r.tracking_url, l.oms_status,
                    f.status, f.amount::text,
                    (SELECT count(*) FROM postsales_credit_memos)
               FROM postsales_returns r
               JOIN postsales_return_lines l ON l.return_id = r.id
               JOIN postsales_refunds f ON f.rma = r.id
              WHERE r.id = 'R-42'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "authorized");
    assert_eq!(row.get::<_, String>(1), "RT-42");
    assert!(row.get::<_, String>(2).ends_with("piececode=RT-42"));
    assert_eq!(row.get::<_, String>(3), "APPROVED");
    assert_eq!(
        row.get::<_, String>(4),
        "PENDINGRELEASE",
        "recorded as pending"
    );
    assert_eq!(row.get::<_, String>(5), "49.9900");
    assert_eq!(row.get::<_, i64>(6), 0, "no credit memo before the release");

    // The release, delivered three times.
    for n in 0..3 {
        publisher
            .publish_raw(
                REFUND_UPDATED,
                &envelope(REFUND_UPDATED, &format!("released-{n}"), &released),
            )
            .await
            .unwrap();
    }
    wait_settled(&worker, 5).await;
    let memos: Vec<(String, String, String, Option<String>)> = env
        .db
        .query(
            "SELECT m.credit_note_number, m.grand_total::text, l.line_id, l.tax_amount::text
               FROM postsales_credit_memos m JOIN postsales_credit_memo_lines l ON l.credit_memo_id = m.id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        memos,
        [(
            "CN-42".to_owned(),
            "49.9900".to_owned(),
            "7".to_owned(),
            Some("8.3300".to_owned())
        )]
    );
    let status: String = env
        .db
        .query_one(
            "SELECT status FROM postsales_refunds WHERE credit_note_number = 'CN-42'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "RELEASED");
    assert_eq!(outcomes(&worker, "stale").await, 2.0, "the two repeats");
    env.assert_no_dead_letters().await;
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn return_statuses_apply_newest_first_and_returns_the_oms_created_are_kept_not_exported() {
    let env = TestEnv::new().await;
    let _inbox = OmsInbox::bind(&env).await;
    let worker = start_postsales(&env).await;
    let order = paid_order("CAS-1", Some("C-1"), d(0), d(0));
    placed_and_shipped(&env, std::slice::from_ref(&order)).await;
    let ours = SimReturn::new(&order, "R-CAS-1", &["1"]);
    postsales::storefront::request(&env.db, &ours.request())
        .await
        .unwrap();
    wait_authorized(&env, 1).await;
    let t0 = ours.requested_at;
    let publisher = oms_publisher(&env).await;
    let agents = SimReturn::new(&order, "OMS-9", &["2-1"]);
    let blind = SimReturn::new(&order, "unused", &["2-2"]);
    let mut received = blind.received(t0 + Duration::days(3));
    let mut body: Value = serde_json::from_slice(&received.body).unwrap();
    body["params"]["return"]
        .as_object_mut()
        .unwrap()
        .remove("rma");
    received.body = body.to_string().into_bytes();
    // One at a time, so that "older" means older on arrival too.
    let sequence = [
        ours.updated("APPROVED", t0 + Duration::hours(2), Some("RT-1")),
        ours.updated("REQUESTED", t0 + Duration::hours(1), None), // older: stale
        // Same date, earlier in the return's lifecycle: stale in any arrival order.
        ours.updated("REQUESTED", t0 + Duration::hours(2), None),
        agents.updated("APPROVED", t0 + Duration::hours(3), None), // created in the OMS
        received.clone(),                                          // goods without an rma
        received,                                                  // and again
    ];
    for (n, message) in sequence.iter().enumerate() {
        publish(&publisher, &[message]).await;
        wait_settled(&worker, n + 1).await;
    }
    assert_eq!(outcomes(&worker, "stale").await, 3.0);
    let returns: Vec<(String, String, String, Option<String>, bool)> = env
        .db
        .query(
            "SELECT id, origin, state, tracking_number, received_at IS NOT NULL
               FROM postsales_returns ORDER BY origin, id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(returns.len(), 3, "{returns:#?}");
    assert_eq!(
        returns[0],
        (
            "R-CAS-1".into(),
            "commerce".into(),
            "authorized".into(),
            Some("RT-1".into()),
            false
        )
    );
    assert_eq!(
        returns[1],
        (
            "OMS-9".into(),
            "oms".into(),
            "authorized".into(),
            None,
            false
        )
    );
    assert!(returns[2].0.starts_with("blind:"), "{:?}", returns[2]);
    assert_eq!(
        (returns[2].1.as_str(), returns[2].2.as_str(), returns[2].4),
        ("oms", "requested", true)
    );
    let exported: i64 = env
        .db
        .query_one(
            "SELECT count(*) FROM outbox WHERE module = 'postsales'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(exported, 1, "a return the OMS created is not exported back");
    // Every unit is in a return now: nothing is left to return.
    let returnable: i64 = env
        .db
        .query_one(
            "SELECT count(*) FROM postsales_returnable_lines WHERE order_id = 'CAS-1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(returnable, 0);
    env.assert_no_dead_letters().await;
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn refunded_money_goes_to_the_payment_then_store_credit_and_never_for_an_order_paid_by_gift_card()
 {
    let env = TestEnv::new().await;
    let _inbox = OmsInbox::bind(&env).await;
    let worker = start_postsales(&env).await;
    let part_gift_card = paid_order("SC-A", Some("C-A"), d(2000), d(0));
    let all_gift_card = paid_order("SC-B", Some("C-B"), d(8500), d(0));
    let guest = paid_order("SC-C", None, d(1000), d(0));
    let store_credit = paid_order("SC-D", Some("C-D"), d(0), d(1500));
    let card_only = paid_order("SC-E", Some("C-E"), d(0), d(0));
    let orders = [
        part_gift_card.clone(),
        all_gift_card.clone(),
        guest.clone(),
        store_credit.clone(),
        card_only.clone(),
    ];
    // C-D had 15.00 of store credit and spent it on SC-D.
    env.db
        .batch_execute(
            "INSERT INTO store_credit_transactions (customer_id, natural_key, kind, amount, comment)
             VALUES ('C-D', 'welcome', 'adjust', 15, 'welcome credit')",
        )
        .await
        .unwrap();
    placed_and_shipped(&env, &orders).await;
    env.db
        .query_one("SELECT store_credit_redeem('C-D', 'SC-D', 15)", &[])
        .await
        .unwrap();
    assert_eq!(balance(&env, "C-D").await, d(0));

    let at = Utc.with_ymd_and_hms(2026, 4, 1, 10, 0, 0).unwrap();
    let lines = |order: &SimOrder, ids: &[&str]| -> Vec<sales::export::ExportedLine> {
        order
            .lines()
            .into_iter()
            .filter(|l| ids.contains(&l.line_id.as_str()))
            .collect()
    };
    let released = |order: &SimOrder, cn: &str, kind: &str, ids: &[&str], minutes: i64| {
        let lines = lines(order, ids);
        let amounts: Vec<(&sales::export::ExportedLine, Decimal)> =
            lines.iter().map(|l| (l, l.gross_amount)).collect();
        refund(
            order,
            cn,
            None,
            kind,
            "RELEASED",
            at + Duration::minutes(minutes),
            &amounts,
        )
    };
    let everything = ["1", "2-1", "2-2", "SHIPPING"];
    let sequence = [
        // A partial return: back to the card, no store credit.
        released(&part_gift_card, "CN-A1", "Return", &["1"], 0),
        // The rest: the card is refunded in full (65), the gift card's 20 is store credit.
        released(
            &part_gift_card,
            "CN-A2",
            "Return",
            &["2-1", "2-2", "SHIPPING"],
            1,
        ),
        released(&all_gift_card, "CN-B", "Appeasement", &["1"], 2),
        released(&guest, "CN-C", "Cancellation", &everything, 3),
        released(&store_credit, "CN-D", "Return", &everything, 4),
        released(&card_only, "CN-E", "Cancellation", &everything, 5),
        // A release delivered again changes nothing.
        released(
            &part_gift_card,
            "CN-A2",
            "Return",
            &["2-1", "2-2", "SHIPPING"],
            1,
        ),
    ];
    let publisher = oms_publisher(&env).await;
    for (n, message) in sequence.iter().enumerate() {
        publish(&publisher, &[message]).await;
        wait_settled(&worker, n + 1).await;
    }
    let memos: Vec<(String, String, String, String, String)> = env
        .db
        .query(
            "SELECT credit_note_number, refund_type, payment_amount::text,
                    store_credit_amount::text, unrefunded_amount::text
               FROM postsales_credit_memos ORDER BY credit_note_number",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let memo = |cn: &str, kind: &str, payment: &str, credit: &str, unrefunded: &str| {
        (
            cn.to_owned(),
            kind.to_owned(),
            payment.to_owned(),
            credit.to_owned(),
            unrefunded.to_owned(),
        )
    };
    assert_eq!(
        memos,
        [
            memo("CN-A1", "return", "30.0000", "0.0000", "0.0000"),
            memo("CN-A2", "return", "35.0000", "20.0000", "0.0000"),
            memo("CN-B", "appeasement", "0.0000", "0.0000", "30.0000"),
            memo("CN-C", "cancellation", "75.0000", "0.0000", "10.0000"),
            memo("CN-D", "return", "70.0000", "15.0000", "0.0000"),
            memo("CN-E", "cancellation", "85.0000", "0.0000", "0.0000"),
        ]
    );
    assert_eq!(balance(&env, "C-A").await, d(2000));
    assert_eq!(balance(&env, "C-B").await, d(0));
    assert_eq!(balance(&env, "C-D").await, d(1500));
    assert_eq!(balance(&env, "C-E").await, d(0));
    let credits: Vec<(String, String, String)> = env
        .db
        .query(
            "SELECT customer_id, natural_key, amount::text FROM store_credit_transactions
              WHERE kind = 'refund' ORDER BY customer_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        credits,
        [
            ("C-A".into(), "refund:CN-A2".into(), "20.0000".into()),
            ("C-D".into(), "refund:CN-D".into(), "15.0000".into()),
        ]
    );
    assert_eq!(
        outcomes(&worker, "stale").await,
        1.0,
        "the repeated release"
    );
    env.assert_no_dead_letters().await;
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_refund_for_another_sales_channels_order_is_counted_and_ignored() {
    let env = TestEnv::new().await;
    let worker = start_postsales(&env).await;
    placed_and_shipped(&env, &[paid_order("OURS-1", None, d(0), d(0))]).await;
    let theirs = paid_order("MARKETPLACE-7", None, d(0), d(0));
    let mut theirs_rows = theirs.rows.clone();
    theirs_rows.order.store = "marketplace".into();
    let theirs = SimOrder { rows: theirs_rows };
    let line = theirs.lines().remove(0);
    let message = refund(
        &theirs,
        "MP-CN-1",
        None,
        "Appeasement",
        "RELEASED",
        Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap(),
        &[(&line, d(100))],
    );
    let publisher = oms_publisher(&env).await;
    publish(&publisher, &[&message, &message]).await;
    wait_until("both ignored", PATIENCE, || async {
        outcomes(&worker, "ignored").await == 2.0
    })
    .await;
    let seen: i64 = env
        .db
        .query_one(
            "SELECT messages FROM sales_foreign_orders WHERE order_id = 'MARKETPLACE-7'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 2);
    env.assert_no_dead_letters().await;
    worker.stop().await;
    env.teardown().await;
}
