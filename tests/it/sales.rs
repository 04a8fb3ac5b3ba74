//! What the OMS says about exported orders: lifecycles in any order, partial shipments and
//! captures, real payloads, other sales channels, updates that race their order.

use chrono::{Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use simulate::orders::{
    self, LineState, OmsMessage, OrdersSpec, SimOrder, deliveries, order_rows, simple_item,
};

use crate::helpers::{PATIENCE, TestEnv, wait_until};
use crate::sales_support::{
    OmsInbox, end_state, oms_publisher, outcomes, place_all, publish, start_sales, wait_exported,
};

fn spec(orders: usize) -> OrdersSpec {
    OrdersSpec {
        orders,
        virtual_share: 0.2,
        ..OrdersSpec::default()
    }
}

/// Places and exports `orders`, sends `messages` in the given order, and waits until the
/// worker has settled every one of them; returns the end state.
async fn run_lifecycle(orders: &[SimOrder], messages: &[&OmsMessage]) -> Vec<String> {
    let env = TestEnv::new().await;
    let _inbox = OmsInbox::bind(&env).await;
    let worker = start_sales(&env).await;
    place_all(&env, orders).await;
    wait_exported(&env, orders.len() as i64).await;
    let publisher = oms_publisher(&env).await;
    publish(&publisher, messages).await;
    let settled =
        || async { outcomes(&worker, "applied").await + outcomes(&worker, "stale").await };
    wait_until("every message settled", PATIENCE, || async {
        settled().await == messages.len() as f64
    })
    .await;
    env.assert_no_dead_letters().await;
    let state = end_state(&env).await;
    worker.stop().await;
    env.teardown().await;
    state
}

#[tokio::test]
async fn an_order_lifecycle_delivered_shuffled_and_twice_ends_as_in_order() {
    let orders = orders::generate(&spec(6));
    let messages: Vec<OmsMessage> = orders.iter().flat_map(|o| o.lifecycle()).collect();
    let in_order = run_lifecycle(&orders, &deliveries(&messages, 5, false, 0.0)).await;
    let shuffled = run_lifecycle(&orders, &deliveries(&messages, 5, true, 1.0)).await;
    assert_eq!(in_order, shuffled);
    // And the end state is the one the lifecycle describes.
    let complete = in_order
        .iter()
        .filter(|row| row.contains("| complete | COMPLETE | FULLYSHIPPED |"))
        .count();
    assert_eq!(complete, orders.len());
    let invoices_with_shipping = in_order
        .iter()
        .filter(|row| row.ends_with(",SHIPPING"))
        .count();
    let shipping_orders = orders
        .iter()
        .filter(|o| !o.shipped_lines().is_empty())
        .count();
    assert_eq!(invoices_with_shipping, shipping_orders);
}

fn two_part_order(id: &str) -> SimOrder {
    SimOrder {
        rows: order_rows(
            id,
            "default",
            Utc.with_ymd_and_hms(2026, 4, 1, 8, 0, 0).unwrap(),
            vec![
                simple_item(1, "MUG", "simple", 2, Decimal::new(1000, 2)),
                simple_item(2, "PLATE", "simple", 1, Decimal::new(2550, 2)),
            ],
        ),
    }
}

/// The messages of a shipment in two parts: lines `1-1` and `2` first, `1-2` later, each
/// part shipped and captured together.
fn two_part_messages(order: &SimOrder) -> Vec<OmsMessage> {
    let lines = order.lines();
    let t0 = order.rows.order.placed_at;
    let (t1, t2) = (t0 + Duration::hours(1), t0 + Duration::hours(5));
    let first: Vec<&str> = vec!["1-1", "2"];
    let state = |shipped_by: Option<chrono::DateTime<Utc>>, l: &sales::export::ExportedLine| {
        let (status, payment, date) = match shipped_by {
            Some(date) => ("SHIPPED", "CAPTURE_REQUESTED", date),
            None => ("LOGISTICS", "AUTHORIZED", t0),
        };
        LineState {
            line_id: l.line_id.clone(),
            line_number: l.line_number,
            status: status.into(),
            reason: "".into(),
            date,
            payment_status: payment.into(),
            payment_date: date,
        }
    };
    let after_first: Vec<LineState> = lines
        .iter()
        .map(|l| state(first.contains(&l.line_id.as_str()).then_some(t1), l))
        .collect();
    let after_second: Vec<LineState> = lines
        .iter()
        .map(|l| {
            let when = if first.contains(&l.line_id.as_str()) {
                Some(t1)
            } else if l.line_id == "SHIPPING" {
                None
            } else {
                Some(t2)
            };
            state(when, l)
        })
        .collect();
    let part = |ids: &[&str]| -> Vec<&sales::export::ExportedLine> {
        lines
            .iter()
            .filter(|l| ids.contains(&l.line_id.as_str()))
            .collect()
    };
    vec![
        order.shipment(&part(&first), t1, None, "TRACK-1"),
        order.updated("LOGISTICS", "PARTIALLYSHIPPED", t1, &after_first),
        order.shipment(&part(&["1-2"]), t2, Some("SHIP-2"), "TRACK-2"),
        order.updated("LOGISTICSCOMPLETE", "FULLYSHIPPED", t2, &after_second),
    ]
}

#[tokio::test]
async fn a_partial_shipment_in_two_parts_captures_and_invoices_each_part() {
    let env = TestEnv::new().await;
    let _inbox = OmsInbox::bind(&env).await;
    let worker = start_sales(&env).await;
    let (a, b) = (two_part_order("PART-A"), two_part_order("PART-B"));
    place_all(&env, &[a.clone(), b.clone()]).await;
    wait_exported(&env, 2).await;
    let publisher = oms_publisher(&env).await;
    // A in order, with the first shipment delivered twice; B backwards.
    let a_messages = two_part_messages(&a);
    let mut b_messages = two_part_messages(&b);
    b_messages.reverse();
    let sequence: Vec<&OmsMessage> = a_messages
        .iter()
        .chain([&a_messages[0]])
        .chain(&b_messages)
        .collect();
    for (n, message) in sequence.iter().enumerate() {
        // One at a time, so "in order" means in order.
        publish(&publisher, &[message]).await;
        wait_until("the message settled", PATIENCE, || async {
            outcomes(&worker, "applied").await + outcomes(&worker, "stale").await == n as f64 + 1.0
        })
        .await;
    }
    for order in ["PART-A", "PART-B"] {
        let invoices: Vec<(String, String)> = env
            .db
            .query(
                "SELECT i.grand_total::text, string_agg(l.line_id, ',' ORDER BY l.line_id)
                   FROM sales_invoices i JOIN sales_invoice_lines l ON l.invoice_id = i.id
                  WHERE i.order_id = $1 GROUP BY i.id, i.captured_at ORDER BY i.captured_at",
                &[&order],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(
            invoices,
            vec![
                ("35.5000".to_owned(), "1-1,2".to_owned()),
                ("15.0000".to_owned(), "1-2,SHIPPING".to_owned()),
            ],
            "{order}"
        );
        let progress: Vec<(String, i32, i32, i32)> = env
            .db
            .query(
                "SELECT sku, qty_ordered, qty_shipped, qty_invoiced FROM sales_order_item_progress
                  WHERE order_id = $1 ORDER BY item_id",
                &[&order],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        assert_eq!(
            progress,
            vec![("MUG".into(), 2, 2, 2), ("PLATE".into(), 1, 1, 1)]
        );
        let tracking: Vec<(String, String)> = env
            .db
            .query(
                "SELECT carrier, tracking_number FROM sales_order_tracking
                  WHERE order_id = $1 ORDER BY tracking_number",
                &[&order],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(
            tracking,
            vec![
                ("UPS".into(), "TRACK-1".into()),
                ("UPS".into(), "TRACK-2".into())
            ]
        );
    }
    assert_eq!(
        outcomes(&worker, "stale").await,
        2.0,
        "the repeated shipment, and B's first update after its newer second"
    );
    env.assert_no_dead_letters().await;
    worker.stop().await;
    env.teardown().await;
}

fn render(template: &str, values: &[(&str, &str)]) -> Vec<u8> {
    let mut text = template.to_owned();
    for (k, v) in values {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    assert!(!text.contains("{{"), "unfilled placeholder in {text}");
    text.into_bytes()
}

fn envelope(method: &str, params: &[u8]) -> Vec<u8> {
    let params: serde_json::Value = serde_json::from_slice(params).unwrap();
    json!({"jsonrpc": "2.0", "id": "mock-1", "client": "FAKE", "method": method, "params": params})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn the_mock_templates_rendered_with_values_are_applied() {
    let env = TestEnv::new().await;
    let _inbox = OmsInbox::bind(&env).await;
    let worker = start_sales(&env).await;
    let order = SimOrder {
        rows: order_rows(
            "000000042",
            "default",
            Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap(),
            vec![simple_item(7, "LAMP", "simple", 1, Decimal::new(4999, 2))],
        ),
    };
    place_all(&env, std::slice::from_ref(&order)).await;
    wait_exported(&env, 1).await;
    let values = [
        ("order.increment_id", "000000042"),
        ("order.address1", "1 Compiler Road"),
        ("order.address_type", "customer"),
        ("order.city", "Arlington"),
        ("order.country_code", "US"),
        ("order.email", "grace@example.com"),
        ("order.first_name", "Grace"),
        ("order.last_name", "Hopper"),
        ("order.zip", "22201"),
        ("order.origin_date", "2026-05-01 13:00:00"),
        ("order.total_amount", "54.99"),
        ("order.store", "default"),
        ("order_item.id", "7"),
        ("order_item.line_number", "1"),
        ("order_item.sku", "LAMP"),
        ("order_item.product_name", "Lamp"),
        ("order_item.gross_amount", "49.99"),
        ("order_item.net_amount", "49.99"),
        ("order_item.taxes_amount", "0"),
        ("order_item.taxes_rate", "0"),
        ("order_item.source_id", "WH-1"),
        ("order_item.status", "SHIPPED"),
        ("source_id", "WH-1"),
    ];
    let updated = render(
        include_str!(
            "../../crates/protocol/fixtures/mock-templates/magento.sales.order_management.updated.json"
        ),
        &values,
    );
    let shipped = render(
        include_str!(
            "../../crates/protocol/fixtures/mock-templates/magento.logistics.fulfillment_management.customer_shipment_done.json"
        ),
        &values,
    );
    let publisher = oms_publisher(&env).await;
    for (method, params) in [
        (protocol::sales::methods::UPDATED, &updated),
        (protocol::sales::methods::SHIPMENT_DONE, &shipped),
    ] {
        publisher
            .publish_raw(method, &envelope(method, params))
            .await
            .unwrap();
    }
    wait_until("both applied", PATIENCE, || async {
        outcomes(&worker, "applied").await == 2.0
    })
    .await;
    let row = env
        .db
        .query_one(
            "SELECT o.state, o.oms_status, l.status, l.payment_status,
                    (SELECT count(*) FROM sales_invoices WHERE order_id = o.id),
                    (SELECT tracking_number FROM sales_order_tracking WHERE order_id = o.id)
               FROM sales_orders o JOIN sales_order_lines l ON l.order_id = o.id AND l.line_id = '7'
              WHERE o.id = '000000042'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "complete");
    assert_eq!(row.get::<_, String>(1), "COMPLETE");
    assert_eq!(row.get::<_, String>(2), "SHIPPED");
    assert_eq!(row.get::<_, String>(3), "CAPTURE_REQUESTED");
    assert_eq!(row.get::<_, i64>(4), 1);
    assert_eq!(row.get::<_, String>(5), "1234567890");
    worker.stop().await;
    env.teardown().await;
}

fn update_body(order_id: &str, store: &str, status: &str, reason: &str, date: &str) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": format!("{order_id}-{status}"), "method": protocol::sales::methods::UPDATED,
           "params": {"order": {"id": order_id, "store": store, "status": status,
                                "status_reason": reason, "status_date": date}}})
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn an_update_for_an_order_of_another_sales_channel_is_ignored_and_counted() {
    let env = TestEnv::new().await;
    let worker = start_sales(&env).await;
    let publisher = oms_publisher(&env).await;
    let body = update_body(
        "MARKETPLACE-9",
        "marketplace",
        "COMPLETE",
        "",
        "2026-01-01 00:00:00",
    );
    publisher
        .publish_raw(protocol::sales::methods::UPDATED, &body)
        .await
        .unwrap();
    publisher
        .publish_raw(protocol::sales::methods::UPDATED, &body)
        .await
        .unwrap();
    wait_until("both ignored", PATIENCE, || async {
        outcomes(&worker, "ignored").await == 2.0
    })
    .await;
    let messages: i64 = env
        .db
        .query_one(
            "SELECT messages FROM sales_foreign_orders WHERE order_id = 'MARKETPLACE-9'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(messages, 2);
    env.assert_no_dead_letters().await;
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn an_update_racing_ahead_of_its_order_is_retried_until_the_order_is_there() {
    let env = TestEnv::new().await;
    let _inbox = OmsInbox::bind(&env).await;
    let worker = start_sales(&env).await;
    let orders = orders::generate(&spec(2));
    place_all(&env, &orders[..1]).await;
    let publisher = oms_publisher(&env).await;
    publisher
        .publish_raw(
            protocol::sales::methods::UPDATED,
            &update_body(
                orders[1].id(),
                "default",
                "LOGISTICS",
                "",
                "2026-03-01 10:00:00",
            ),
        )
        .await
        .unwrap();
    wait_until("the update to be retried", PATIENCE, || async {
        outcomes(&worker, "retried").await >= 1.0
    })
    .await;
    place_all(&env, &orders[1..]).await;
    wait_until("the update applied", PATIENCE, || async {
        env.db
            .query_one(
                "SELECT coalesce(oms_status, '') FROM sales_orders WHERE id = $1",
                &[&orders[1].id()],
            )
            .await
            .unwrap()
            .get::<_, String>(0)
            == "LOGISTICS"
    })
    .await;
    env.assert_no_dead_letters().await;
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn statuses_apply_newest_first_and_unknown_ones_are_stored_not_rejected() {
    let env = TestEnv::new().await;
    let _inbox = OmsInbox::bind(&env).await;
    let worker = start_sales(&env).await;
    let orders = orders::generate(&spec(1));
    place_all(&env, &orders).await;
    wait_exported(&env, 1).await;
    let id = orders[0].id();
    let publisher = oms_publisher(&env).await;
    let state = || async {
        let row = env
            .db
            .query_one(
                "SELECT state, oms_status FROM sales_orders WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (row.get::<_, String>(0), row.get::<_, Option<String>>(1))
    };
    let send = |status: &'static str, reason: &'static str, date: &'static str| {
        let publisher = &publisher;
        async move {
            publisher
                .publish_raw(
                    protocol::sales::methods::UPDATED,
                    &update_body(id, "default", status, reason, date),
                )
                .await
                .unwrap();
        }
    };
    // The remorse period spelled the other way is still the remorse period.
    send("ONHOLD", "PENDING_REMORSE_TIME", "2026-03-01 10:00:00").await;
    wait_until("the drifted status", PATIENCE, || async {
        state().await == ("new".into(), Some("ONHOLD".into()))
    })
    .await;
    // One at a time: "first" must mean first.
    for (n, (status, reason, date)) in [
        ("A_STATUS_NOBODY_KNOWS", "", "2026-03-01 11:00:00"),
        ("RECEIVED", "IMPORTED", "2026-03-01 09:00:00"), // older: acked, not applied
        // Same date: the lifecycle decides. RECEIVED comes before, CANCELLED after.
        ("RECEIVED", "IMPORTED", "2026-03-01 11:00:00"),
        ("CANCELLED", "", "2026-03-01 11:00:00"),
    ]
    .into_iter()
    .enumerate()
    {
        send(status, reason, date).await;
        wait_until("the update settled", PATIENCE, || async {
            outcomes(&worker, "applied").await + outcomes(&worker, "stale").await == n as f64 + 2.0
        })
        .await;
    }
    assert_eq!(state().await, ("canceled".into(), Some("CANCELLED".into())));
    assert_eq!(outcomes(&worker, "stale").await, 2.0);
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn line_cancellations_and_custom_attributes_from_the_oms_are_applied() {
    let env = TestEnv::new().await;
    let _inbox = OmsInbox::bind(&env).await;
    let worker = start_sales(&env).await;
    let order = two_part_order("ATTR-1");
    place_all(&env, std::slice::from_ref(&order)).await;
    wait_exported(&env, 1).await;
    let publisher = oms_publisher(&env).await;
    let methods = protocol::sales::methods::CONSUMED;
    let bodies = [
        (
            protocol::sales::methods::LINE_CANCELLED,
            json!({"order_id": "ATTR-1", "order_line_id": "1-2"}),
        ),
        (
            protocol::sales::methods::CUSTOM_ATTRIBUTES_UPDATED,
            json!({"custom_attributes_modification": {"sales_channel_id": "default", "order_id": "ATTR-1",
                "user": "agent", "custom_attributes": [{"name": "gift_wrap", "value": "yes"}]}}),
        ),
        (
            protocol::sales::methods::LINE_CUSTOM_ATTRIBUTES_UPDATED,
            json!({"line_custom_attributes_modification": {"sales_channel_id": "default",
                "order_id": "ATTR-1", "user": "agent", "line_id": "2", "line_number": "3",
                "custom_attributes": [{"attribute_code": "engraving", "value": "A.L."}]}}),
        ),
    ];
    for (method, params) in &bodies {
        assert!(methods.contains(method));
        let body = json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string();
        publisher
            .publish_raw(method, body.as_bytes())
            .await
            .unwrap();
    }
    wait_until("all three applied", PATIENCE, || async {
        outcomes(&worker, "applied").await == 3.0
    })
    .await;
    let state = end_state(&env).await;
    assert!(
        state
            .iter()
            .any(|r| r.starts_with("ATTR-1 | 1-2 |") && r.ends_with("| true")),
        "{state:#?}"
    );
    assert!(state.contains(&"ATTR-1 | gift_wrap | yes".to_owned()));
    assert!(state.contains(&"ATTR-1 | 2 | engraving | A.L.".to_owned()));
    worker.stop().await;
    env.teardown().await;
}
