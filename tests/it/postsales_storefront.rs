//! The storefront's side of post-sales: the documented return request, authorized to the
//! spec once its order shipped; the checks it meets at its commit; returns, refunds and
//! credit memos read-only for it; gift cards and store credit as ledgers that never go
//! negative; `omsc returns`.

use protocol::postsales::methods;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use simulate::orders;
use tokio_postgres::error::SqlState;

use crate::helpers::{PATIENCE, TestEnv, binary, wait_until};
use crate::postsales_support::{balance, paid_order, placed_and_shipped_where};
use crate::sales_support::{OmsInbox, oms_publisher};

const PLACE_ORDER: &str = include_str!("../../docs/examples/place-order.sql");
const REQUEST_RETURN: &str = include_str!("../../docs/examples/request-return.sql");
const REDEEM: &str = include_str!("../../docs/examples/redeem.sql");

fn d(cents: i64) -> Decimal {
    Decimal::new(cents, 2)
}

/// The message of a database error.
fn refusal(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_else(|| error.to_string())
}

#[tokio::test]
async fn the_documented_return_request_is_authorized_to_the_spec_once_its_order_shipped() {
    let env = TestEnv::new().await;
    let mut inbox = OmsInbox::bind(&env).await;
    let worker = env
        .start_runtime(&[], |app| {
            sales::install(app).unwrap();
            postsales::install(app).unwrap();
        })
        .await;
    env.db.batch_execute(PLACE_ORDER).await.unwrap();
    let create = inbox.next().await;
    assert_eq!(create.routing_key, protocol::sales::methods::CREATE);

    // Nothing has shipped yet: the storefront learns it at its commit.
    let early = env.db.batch_execute(REQUEST_RETURN).await.unwrap_err();
    assert!(
        refusal(&early).contains("line 1-2 of order 000000101 has not shipped"),
        "{}",
        refusal(&early)
    );
    env.db.batch_execute("ROLLBACK").await.unwrap();

    // The OMS ships the physical units.
    let items: Vec<Value> = ["1-1", "1-2", "2", "5", "6-1", "6-2"]
        .iter()
        .map(|id| json!({ "order_line_id": id }))
        .collect();
    let shipment = json!({"jsonrpc": "2.0", "id": "ship-101", "method": protocol::sales::methods::SHIPMENT_DONE,
        "params": {"shipment": {"order_id": "000000101", "store_id": "default", "source_id": "WH-1",
            "items": items,
            "packages": [{"id": "P1", "carrier": "UPS", "tracking_number": "1Z1", "items": [1, 2, 3, 5, 6, 7]}]}}});
    oms_publisher(&env)
        .await
        .publish_raw(
            protocol::sales::methods::SHIPMENT_DONE,
            shipment.to_string().as_bytes(),
        )
        .await
        .unwrap();
    wait_until("the shipment applied", PATIENCE, || async {
        env.db
            .query_one(
                "SELECT count(*) FROM postsales_returnable_lines WHERE order_id = '000000101'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 6
    })
    .await;

    env.db.batch_execute(REQUEST_RETURN).await.unwrap();
    let authorize = loop {
        let sent = inbox.next().await;
        if sent.routing_key == methods::AUTHORIZE {
            break sent;
        }
        assert_eq!(
            sent.routing_key,
            protocol::sales::methods::CANCEL,
            "{sent:?}"
        );
    };
    assert_eq!(
        authorize.message_id, "R-000000101-1",
        "the rma is the message id"
    );
    let params = &authorize.body["params"];
    let problems = protocol::spec::spec().check_params(methods::AUTHORIZE, params);
    assert!(problems.is_empty(), "{problems:#?}");
    let r = &params["return"];
    assert_eq!(r["order_id"], "000000101");
    assert_eq!(r["rma"], "R-000000101-1");
    assert_eq!(r["sales_channel_id"], "default");
    assert_eq!(r["user"], "customer");
    assert_eq!(r["return_tracking_number"], "1Z999AA10123456784");
    assert_eq!(r["return_tracking_carrier"], "UPS");
    assert_eq!(
        r["custom_attributes"],
        json!([{"name": "refund_method", "attribute_code": "refund_method", "value": "original_payment"}])
    );
    let lines: Vec<(&str, i64, &str, &str, &str)> = r["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["id"].as_str().unwrap(),
                l["line_number"].as_i64().unwrap(),
                l["sku"].as_str().unwrap(),
                l["reason"].as_str().unwrap(),
                l["condition"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("1-2", 2, "MUG-BLUE", "DAMAGED", "DAMAGED"),
            ("6-1", 6, "BULB", "NOT_WANTED", "NEW")
        ]
    );
    assert_eq!(
        r["lines"][0]["custom_attributes"][0]["value"],
        "https://img.example/returns/1-2.jpg"
    );
    let returnable: Vec<String> = env
        .db
        .query(
            "SELECT line_id FROM postsales_returnable_lines WHERE order_id = '000000101'
              ORDER BY line_number",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(returnable, ["1-1", "2", "5", "6-2"]);
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn only_shipped_lines_can_be_returned_and_the_storefront_learns_why_at_commit() {
    let env = TestEnv::new().await;
    let order = paid_order("ONLY-1", Some("C-1"), d(0), d(0));
    placed_and_shipped_where(&env, std::slice::from_ref(&order), |l| {
        l.line_id == "1" || l.line_id == "2-1"
    })
    .await;
    let request = |id: &str, lines: &[(&str, &str)]| postsales::storefront::ReturnRequest {
        id: id.into(),
        order_id: "ONLY-1".into(),
        requested_at: None,
        requested_by: None,
        source_id: None,
        tracking_number: None,
        tracking_carrier: None,
        attributes: Vec::new(),
        lines: lines
            .iter()
            .map(|(line, reason)| postsales::storefront::ReturnLineRequest {
                line_id: (*line).into(),
                reason: (*reason).into(),
                reason_description: String::new(),
                condition: None,
            })
            .collect(),
    };
    let refused = [
        (
            request("R-1", &[("2-2", "DAMAGED")]),
            "line 2-2 of order ONLY-1 has not shipped; only shipped lines can be returned",
        ),
        (request("R-2", &[]), "return R-2 has no lines"),
        (request("R-3", &[("1", "")]), "line 1 has no reason"),
    ];
    for (r, expected) in &refused {
        let error = postsales::storefront::request(&env.db, r)
            .await
            .unwrap_err();
        assert!(refusal(&error).contains(expected), "{}", refusal(&error));
    }
    let unknown = postsales::storefront::request(&env.db, &request("R-4", &[("9", "DAMAGED")]))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Some(&SqlState::FOREIGN_KEY_VIOLATION));

    postsales::storefront::request(&env.db, &request("R-5", &[("1", "DAMAGED")]))
        .await
        .unwrap();
    let twice = postsales::storefront::request(&env.db, &request("R-6", &[("1", "DAMAGED")]))
        .await
        .unwrap_err();
    assert!(
        refusal(&twice).contains("line 1 of order ONLY-1 is already in return R-5"),
        "{}",
        refusal(&twice)
    );
    let kept: Vec<(String, i64)> = env
        .db
        .query(
            "SELECT r.id, (SELECT count(*) FROM outbox o WHERE o.module = 'postsales' AND o.subject = r.id)
               FROM postsales_returns r",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        kept,
        [("R-5".to_owned(), 1)],
        "nothing of the refused returns was kept"
    );
    let returnable: Vec<String> = env
        .db
        .query(
            "SELECT line_id FROM postsales_returnable_lines WHERE order_id = 'ONLY-1'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(returnable, ["2-1"]);
    env.teardown().await;
}

#[tokio::test]
async fn returns_refunds_and_credit_memos_are_read_only_for_everyone_but_the_connector() {
    let env = TestEnv::new().await;
    let order = paid_order("RO-1", Some("C-1"), d(0), d(0));
    placed_and_shipped_where(&env, std::slice::from_ref(&order), |_| true).await;
    let r = simulate::postsales::SimReturn::new(&order, "R-RO-1", &["1"]);
    postsales::storefront::request(&env.db, &r.request())
        .await
        .unwrap();
    let refused = [
        "UPDATE postsales_returns SET state = 'closed'",
        "UPDATE postsales_returns SET tracking_number = 'X'",
        "DELETE FROM postsales_returns",
        "INSERT INTO postsales_return_lines (return_id, line_id, reason) VALUES ('R-RO-1', '2-1', 'LATE')",
        "UPDATE postsales_return_lines SET reason = 'OTHER'",
        "DELETE FROM postsales_return_attributes",
        "INSERT INTO postsales_returns (id, order_id, state) VALUES ('R-X', 'RO-1', 'authorized')",
        "INSERT INTO postsales_returns (id, order_id, origin) VALUES ('R-Y', 'RO-1', 'oms')",
        "INSERT INTO postsales_refunds (credit_note_number, order_id, amount, status, status_date, status_rank)
         VALUES ('CN', 'RO-1', 1, 'RELEASED', now(), 2)",
        "INSERT INTO postsales_credit_memos (credit_note_number, order_id, released_at, grand_total,
                                             payment_amount, store_credit_amount, unrefunded_amount)
         VALUES ('CN', 'RO-1', now(), 0, 0, 0, 0)",
        "INSERT INTO store_credit_transactions (customer_id, natural_key, kind, amount)
         VALUES ('C-1', 'refund:CN', 'refund', 100)",
    ];
    for sql in refused {
        let error = env.db.batch_execute(sql).await.unwrap_err();
        assert_eq!(
            error.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {}",
            refusal(&error)
        );
    }
    // The connector's sessions write what the OMS says.
    let connector = runtime::db::connect(&env.database_url, "omsc-test")
        .await
        .unwrap();
    connector
        .batch_execute("UPDATE postsales_returns SET state = 'authorized' WHERE id = 'R-RO-1'")
        .await
        .unwrap();
    env.teardown().await;
}

#[tokio::test]
async fn the_documented_redemption_debits_the_gift_card_and_the_store_credit_with_the_order() {
    let env = TestEnv::new().await;
    env.db.batch_execute(REDEEM).await.unwrap();
    let gift_card: Decimal = env
        .db
        .query_one("SELECT gift_card_balance('GC-0002')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(gift_card, d(2000));
    assert_eq!(balance(&env, "42").await, d(0));
    // The order went to the outbox with what gift cards and store credit paid of it.
    let queued: i64 = env
        .db
        .query_one(
            "SELECT count(*) FROM outbox WHERE module = 'sales' AND subject = '000000201'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(queued, 1);
    // Redeeming the same card on the same order again is the same fact: nothing moves.
    let again: Decimal = env
        .db
        .query_one("SELECT gift_card_redeem('GC-0002', '000000201', 30)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, d(2000));
    let other = env
        .db
        .query_one("SELECT gift_card_redeem('GC-0002', '000000201', 5)", &[])
        .await
        .unwrap_err();
    assert!(
        refusal(&other).contains("was already redeemed on order 000000201 for 30"),
        "{}",
        refusal(&other)
    );
    env.teardown().await;
}

/// Places `order` and redeems `gift_card` of GC-0002 on it in the same transaction.
async fn place_redeeming(
    env: &TestEnv,
    order: &orders::SimOrder,
    gift_card: Decimal,
) -> Result<(), tokio_postgres::Error> {
    env.db.batch_execute("BEGIN").await?;
    let placed = async {
        orders::insert(&env.db, &order.rows).await?;
        env.db
            .query_one(
                "SELECT gift_card_redeem('GC-0002', $1, $2)",
                &[&order.id(), &gift_card],
            )
            .await?;
        env.db.batch_execute("COMMIT").await
    }
    .await;
    if placed.is_err() {
        let _ = env.db.batch_execute("ROLLBACK").await;
    }
    placed
}

#[tokio::test]
async fn ledgers_never_go_negative_are_append_only_and_must_match_the_order() {
    let env = TestEnv::new().await;
    env.db.batch_execute(REDEEM).await.unwrap(); // GC-0002 has 20.00 left
    let mut order = paid_order("GC-OVER", Some("42"), d(2500), d(0));
    order.rows.order.gift_card_codes = vec!["GC-0002".into()];
    let over = place_redeeming(&env, &order, d(2500)).await.unwrap_err();
    assert!(
        refusal(&over).contains("gift card GC-0002 has 20.0000, not enough for 25"),
        "{}",
        refusal(&over)
    );
    let mut order = paid_order("GC-MISMATCH", Some("42"), d(500), d(0));
    order.rows.order.gift_card_codes = vec!["GC-0002".into()];
    let mismatch = place_redeeming(&env, &order, d(400)).await.unwrap_err();
    assert!(
        refusal(&mismatch)
            .contains("order GC-MISMATCH: gift cards redeemed 4.0000 but the order says gift_card_amount 5.0000"),
        "{}",
        refusal(&mismatch)
    );
    let placed: i64 = env
        .db
        .query_one(
            "SELECT count(*) FROM sales_orders WHERE id LIKE 'GC-%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(placed, 0, "an order whose redemption failed is not placed");
    let overdraw = env
        .db
        .query_one("SELECT store_credit_redeem('42', 'ANOTHER-1', 99)", &[])
        .await
        .unwrap_err();
    assert!(
        refusal(&overdraw).contains("store credit of customer 42 is 0.0000, not enough for 99"),
        "{}",
        refusal(&overdraw)
    );
    for sql in [
        "UPDATE gift_card_accounts SET balance = 1000 WHERE code = 'GC-0002'",
        "UPDATE store_credit_accounts SET balance = 1000",
        "DELETE FROM gift_card_transactions",
        "UPDATE store_credit_transactions SET amount = 1000",
        "INSERT INTO gift_card_accounts (code, balance) VALUES ('GC-FREE', 100)",
        "DELETE FROM store_credit_accounts",
    ] {
        let error = env.db.batch_execute(sql).await.unwrap_err();
        assert_eq!(
            error.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {}",
            refusal(&error)
        );
    }
    let (gift_card, credit): (Decimal, Decimal) = {
        let row = env
            .db
            .query_one(
                "SELECT gift_card_balance('GC-0002'), store_credit_balance('42')",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((gift_card, credit), (d(2000), d(0)));
    // The balance is the sum of the ledger.
    let sums: (Decimal, Decimal) = {
        let row = env
            .db
            .query_one(
                "SELECT (SELECT sum(amount) FROM gift_card_transactions WHERE code = 'GC-0002'),
                        (SELECT sum(amount) FROM store_credit_transactions WHERE customer_id = '42')",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(sums, (gift_card, credit));
    env.teardown().await;
}

async fn omsc_returns(env: &TestEnv, args: &[&str]) -> (bool, String) {
    let output = tokio::process::Command::new(binary("omsc"))
        .arg("returns")
        .args(args)
        .env("DATABASE_URL", &env.database_url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn omsc_returns_request_asks_for_shipped_lines_and_says_why_it_refuses_others() {
    let env = TestEnv::new().await;
    let order = paid_order("CLI-1", Some("C-1"), d(0), d(0));
    placed_and_shipped_where(&env, std::slice::from_ref(&order), |l| l.line_id == "1").await;
    let (ok, text) = omsc_returns(
        &env,
        &[
            "request", "--order", "CLI-1", "--line", "2-1", "--reason", "DAMAGED",
        ],
    )
    .await;
    assert!(!ok);
    assert!(
        text.contains("line 2-1 of order CLI-1 has not shipped"),
        "{text}"
    );
    let (ok, text) = omsc_returns(
        &env,
        &[
            "request", "--order", "CLI-1", "--line", "1", "--reason", "DAMAGED",
        ],
    )
    .await;
    assert!(ok, "{text}");
    assert!(text.contains("requested return CLI-1-R1"), "{text}");
    let (ok, text) = omsc_returns(&env, &["list", "--order", "CLI-1"]).await;
    assert!(ok, "{text}");
    let row = text
        .lines()
        .find(|l| l.contains("CLI-1-R1"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        row.contains("commerce") && row.contains("requested"),
        "{row}"
    );
    let queued: Value = env
        .db
        .query_one(
            "SELECT to_jsonb(array_agg(topic)) FROM outbox WHERE module = 'postsales'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(queued, json!(["return.authorize"]));
    env.teardown().await;
}
