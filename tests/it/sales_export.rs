//! The order export: the storefront's documented way of placing an order, every product
//! type round-tripped to a message that passes the spec check, cancellations after their
//! order, a worker killed mid-export, and the database keeping placed orders the OMS's.

use std::collections::HashMap;

use protocol::sales::methods;
use serde_json::Value;
use simulate::orders::{self, OrdersSpec};

use crate::helpers::{PATIENCE, TestEnv, wait_until};
use crate::sales_support::{OmsInbox, place_all, start_sales, wait_exported};

const EXAMPLE: &str = include_str!("../../docs/examples/place-order.sql");

fn spec_problems(method: &str, params: &Value) -> Vec<String> {
    protocol::spec::spec().check_params(method, params)
}

#[tokio::test]
async fn the_documented_storefront_example_exports_every_product_type_to_the_spec() {
    let env = TestEnv::new().await;
    let mut inbox = OmsInbox::bind(&env).await;
    env.db.batch_execute(EXAMPLE).await.unwrap();
    let worker = start_sales(&env).await;

    let create = inbox.next().await;
    assert_eq!(create.routing_key, methods::CREATE);
    assert_eq!(
        create.message_id, "000000101",
        "the order id is the message id"
    );
    assert_eq!(create.body["id"], "000000101");
    let order = &create.body["params"]["order"];
    let problems = spec_problems(methods::CREATE, &create.body["params"]);
    assert!(problems.is_empty(), "{problems:#?}");

    let lines = order["lines"].as_array().unwrap();
    let shape: Vec<(&str, &str, &str, Option<&str>)> = lines
        .iter()
        .map(|l| {
            (
                l["id"].as_str().unwrap(),
                l["product_type"].as_str().unwrap(),
                l["sku"].as_str().unwrap(),
                l["parent_line_id"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("1-1", "PHYSICAL", "MUG-BLUE", None),
            ("1-2", "PHYSICAL", "MUG-BLUE", None),
            ("2", "PHYSICAL", "TSHIRT-M", None),
            ("4", "BUNDLE", "LAMP-KIT", None),
            ("5", "PHYSICAL", "LAMP", Some("4")),
            ("6-1", "PHYSICAL", "BULB", Some("4")),
            ("6-2", "PHYSICAL", "BULB", Some("4")),
            ("7", "VIRTUAL", "GIFT-50", None),
            ("SHIPPING", "SHIPPING", "UPS-GND", None),
        ]
    );
    let numbers: Vec<i64> = lines
        .iter()
        .map(|l| l["line_number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, (1..=9).collect::<Vec<_>>());
    // The coupon: 10 % of two mugs at 15.00, split over the units; lines keep their prices.
    assert_eq!(lines[0]["amount"]["gross_amount"], 13.5);
    assert_eq!(lines[0]["promotions_info"]["original_price"], 15);
    assert_eq!(
        lines[0]["promotions_info"]["promotions"][0]["code"],
        "MUGS10"
    );
    assert_eq!(
        lines[0]["promotions_info"]["promotions"][0]["discount"],
        1.5
    );
    // 27 + 25 + 60 + 50 + 12.5 = 174.5 of lines; the gift card pays 20 of it.
    let transactions = order["payments"][0]["transactions"].as_array().unwrap();
    assert_eq!(transactions.len(), 1, "exactly one payment transaction");
    assert_eq!(transactions[0]["amount"], 154.5);
    let attribute = |list: &Value, code: &str| -> Option<String> {
        list.as_array()?
            .iter()
            .find(|a| a["attribute_code"] == code && a["name"] == code)
            .map(|a| a["value"].as_str().unwrap().to_owned())
    };
    let order_attributes = &order["custom_attributes"];
    assert_eq!(
        attribute(order_attributes, "gift_card_amount").as_deref(),
        Some("20")
    );
    assert_eq!(
        attribute(order_attributes, "gift_card_codes").as_deref(),
        Some("GC-0001")
    );
    assert_eq!(
        attribute(order_attributes, "delivery_instructions").as_deref(),
        Some("leave at the door")
    );
    assert_eq!(
        attribute(&lines[7]["custom_attributes"], "recipient_email").as_deref(),
        Some("friend@example.com")
    );
    assert_eq!(
        attribute(
            &transactions[0]["gateway_information"]["custom_attributes"],
            "mdc_gateway_processor"
        )
        .as_deref(),
        Some("braintree")
    );

    // The customer's cancellation follows its order, never before it.
    let cancel = inbox.next().await;
    assert_eq!(cancel.routing_key, methods::CANCEL);
    assert_eq!(cancel.body["params"]["order_id"], "000000101");
    assert!(spec_problems(methods::CANCEL, &cancel.body["params"]).is_empty());

    // The exported lines are kept for what the OMS will say about them.
    let kept: i64 = env
        .db
        .query_one(
            "SELECT count(*) FROM sales_order_lines WHERE order_id = '000000101'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 9);
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn an_order_that_cannot_be_exported_is_refused_at_its_commit() {
    let env = TestEnv::new().await;
    let without_payment = EXAMPLE
        .split("INSERT INTO sales_order_payments")
        .next()
        .unwrap()
        .to_owned()
        + "COMMIT;";
    let error = env.db.batch_execute(&without_payment).await.unwrap_err();
    let message = error.as_db_error().unwrap().message().to_owned();
    assert!(message.contains("has no payment"), "{message}");
    let orders: i64 = env
        .db
        .query_one("SELECT count(*) FROM sales_orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 0, "nothing of the order was kept");
    env.teardown().await;
}

#[tokio::test]
async fn a_placed_order_is_read_only_for_everyone_but_the_connector() {
    let env = TestEnv::new().await;
    env.db.batch_execute(EXAMPLE).await.unwrap();
    let refused = [
        "UPDATE sales_orders SET state = 'complete' WHERE id = '000000101'",
        "UPDATE sales_orders SET oms_status = 'COMPLETE' WHERE id = '000000101'",
        "DELETE FROM sales_orders WHERE id = '000000101'",
        "UPDATE sales_order_items SET qty = 5 WHERE order_id = '000000101'",
        "INSERT INTO sales_order_items (order_id, item_id, product_type, sku, name, qty, price)
         VALUES ('000000101', 99, 'simple', 'LATE', 'Late', 1, 1)",
        "INSERT INTO sales_orders (id, store, currency, billing_address_reference, state)
         VALUES ('000000102', 'default', 'USD', 'b', 'complete')",
        "INSERT INTO sales_order_lines (order_id, line_id, line_number, product_type, sku,
                                        gross_amount, net_amount, tax_amount)
         VALUES ('000000101', 'X', 99, 'PHYSICAL', 'X', 0, 0, 0)",
        "INSERT INTO sales_shipments (order_id, shipment_key) VALUES ('000000101', 'mine')",
        "INSERT INTO sales_invoices (order_id, captured_at) VALUES ('000000101', now())",
        "DELETE FROM sales_order_cancel_requests",
    ];
    for sql in refused {
        let error = env.db.batch_execute(sql).await.unwrap_err();
        let db = error.as_db_error().unwrap();
        assert_eq!(
            db.code(),
            &tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE,
            "{sql}: {}",
            db.message()
        );
    }
    // Asking to cancel is the storefront's to do (the example asked).
    let requests: i64 = env
        .db
        .query_one("SELECT count(*) FROM sales_order_cancel_requests", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(requests, 1);
    // The connector's sessions write what the OMS says.
    let connector = runtime::db::connect(&env.database_url, "omsc-test")
        .await
        .unwrap();
    connector
        .batch_execute("UPDATE sales_orders SET state = 'complete' WHERE id = '000000101'")
        .await
        .unwrap();
    env.teardown().await;
}

#[tokio::test]
async fn a_sales_worker_killed_during_export_loses_no_order_and_resends_the_same_content() {
    let env = TestEnv::new().await;
    let count = 600;
    let orders = orders::generate(&OrdersSpec {
        orders: count,
        ..OrdersSpec::default()
    });
    place_all(&env, &orders).await;
    let mut inbox = OmsInbox::bind(&env).await;
    // The rows the killed worker claimed go to the next one after 3 s, not the default 60 s.
    let claim = [("OMSC_OUTBOX_CLAIM_SECS", "3")];
    let mut first = env.spawn_binary("omsc-sales", &claim);
    let mut received: HashMap<String, Vec<u8>> = HashMap::new();
    record(&mut received, inbox.next().await);
    first.kill().await.unwrap(); // SIGKILL: no drain, no goodbye
    let pending: i64 = env
        .db
        .query_one(
            "SELECT count(*) FROM outbox WHERE module = 'sales' AND sent_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        pending > 0,
        "the kill must come in mid-export for the test to mean anything"
    );
    let restarted = std::time::Instant::now();
    let mut second = env.spawn_binary("omsc-sales", &claim);
    let deadline = std::time::Instant::now() + PATIENCE * 2;
    while received.len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {count} orders arrived",
            received.len()
        );
        record(&mut received, inbox.next().await);
    }
    wait_exported(&env, count as i64).await;
    eprintln!(
        "recovery figure: kill -9 during an order export (claim period 3 s), the next worker's start to every order exported: {:.2} s",
        restarted.elapsed().as_secs_f64()
    );
    for order in &orders {
        let body = &received[order.id()];
        let message: Value = serde_json::from_slice(body).unwrap();
        assert!(spec_problems(methods::CREATE, &message["params"]).is_empty());
    }
    second.kill().await.unwrap();
    env.teardown().await;
}

#[tokio::test]
async fn orders_placed_while_the_worker_runs_are_exported_at_once() {
    let env = TestEnv::new().await;
    let mut inbox = OmsInbox::bind(&env).await;
    let worker = start_sales(&env).await;
    let orders = orders::generate(&OrdersSpec {
        orders: 3,
        ..OrdersSpec::default()
    });
    place_all(&env, &orders).await;
    let mut ids = Vec::new();
    for _ in &orders {
        ids.push(inbox.next().await.message_id);
    }
    ids.sort();
    let mut expected: Vec<String> = orders.iter().map(|o| o.id().to_owned()).collect();
    expected.sort();
    assert_eq!(ids, expected);
    wait_until("all marked sent", PATIENCE, || async {
        env.db
            .query_one(
                "SELECT count(*) FROM outbox WHERE module = 'sales' AND sent_at IS NULL",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 0
    })
    .await;
    worker.stop().await;
    env.teardown().await;
}

/// Keeps the first copy of each message; a resend must be byte for byte the same.
fn record(received: &mut HashMap<String, Vec<u8>>, sent: crate::sales_support::Sent) {
    match received.get(&sent.message_id) {
        Some(earlier) => assert_eq!(
            earlier, &sent.raw,
            "order {} was resent with other content",
            sent.message_id
        ),
        None => {
            received.insert(sent.message_id, sent.raw);
        }
    }
}
