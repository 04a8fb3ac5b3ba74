//! Conformance, sales side: the shop as one OMS sales channel, the shipping address the OMS
//! changes, the order commands a customer sends after placing (a line's cancellation, a
//! comment), and the returns the OMS reports as duplicated. Messages are written in the
//! specification's shapes (`sales/order_management.xml`, `postsales/return.xml`) and the mock
//! templates, never with the connector's builders; each test ends in a table.

use protocol::postsales::methods::RETURN_DUPLICATED;
use protocol::sales::methods::{
    CANCEL, CANCEL_LINE, CREATE, CREATE_COMMENT, CUSTOM_ATTRIBUTES_UPDATED,
    SHIPPING_ADDRESS_UPDATED, UPDATED,
};
use serde_json::{Value, json};
use simulate::orders::{self, SimOrder, order_rows, simple_item};

use crate::conformance_support::{MockLine, Shop, item, mock_update, money, origin, table};
use crate::helpers::{PATIENCE, TestEnv, wait_until};
use crate::postsales_support::{oms_publisher, placed_and_shipped, start_postsales};
use crate::sales_support::{OmsInbox, wait_exported};

/// The mock's update of a one-line order to LOGISTICS, as sales channel `channel` (the
/// template's `{{order.store}}`).
fn logistics_update(order_id: &str, channel: &str) -> Value {
    let line = MockLine {
        id: "1",
        number: 1,
        sku: "MUG",
        status: "LOGISTICS",
        payment: "AUTHORIZED",
        gross: "12.00",
        net: "10.08",
        tax: "1.92",
    };
    let mut params = mock_update(order_id, ("LOGISTICS", "READYTOSHIP"), &[line]);
    params["order"]["store"] = json!(channel);
    params
}

/// `shipping_address_updated` as the specification writes it (`shipping_address_modification`
/// with a `magento.sales.shipping_address`).
fn address_update(order_id: &str, channel: &str, line: &str, street: &str, city: &str) -> Value {
    json!({"shipping_address_modification": {
    "sales_channel_id": channel,
    "order_id": order_id,
    "line_number": line,
    "user": "agent.miller",
    "force": false,
    "new_shipping_address": {
        "reference": "",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "company_name": "Analytical Engines",
        "address1": street,
        "address2": null,
        "city": city,
        "state": "",
        "zip": "10115",
        "country_code": "de",
        "phone": "+49 30 1234",
        "email": "grace@example.com",
        "latitude": "52.52",
        "longitude": "13.40",
        "custom_attributes": []
    }}})
}

/// `custom_attributes_updated` as the specification writes it.
fn attributes_update(order_id: &str, channel: &str) -> Value {
    json!({"custom_attributes_modification": {"sales_channel_id": channel, "order_id": order_id,
        "user": "agent.miller", "custom_attributes": [{"name": "gift_wrap", "value": "yes"}]}})
}

async fn foreign_orders(shop: &Shop) -> Vec<Vec<String>> {
    shop.table(
        &["order", "channel", "messages"],
        "SELECT order_id, sales_channel, messages::text FROM sales_foreign_orders ORDER BY 1, 2",
    )
    .await
}

/// What the customer's order page shows as "ships to": the row the order's shipping reference
/// names, and the billing address beside it.
async fn addresses(shop: &Shop) -> Vec<Vec<String>> {
    shop.table(
        &[
            "order",
            "kind",
            "reference",
            "name",
            "street",
            "city",
            "country",
            "changed by",
        ],
        "SELECT o.id, CASE WHEN a.reference = o.shipping_address_reference THEN 'ships to'
                           ELSE 'billing' END,
                a.reference, a.first_name || ' ' || a.last_name, a.address1, a.city,
                a.country_code, a.oms_updated_by
           FROM sales_orders o
           JOIN sales_order_addresses a ON a.order_id = o.id
            AND a.reference IN (o.shipping_address_reference, o.billing_address_reference)
          ORDER BY 1, 2",
    )
    .await
}

#[tokio::test]
async fn a_message_of_another_sales_channel_is_foreign_even_when_the_order_id_is_ours() {
    let mut shop = Shop::open().await;
    shop.place("000000101", vec![item(1, "MUG", 1, money(1200))])
        .await;
    // Another channel on the same OMS has an order 000000101 too.
    shop.send(UPDATED, &logistics_update("000000101", "marketplace"))
        .await;
    shop.send(
        CUSTOM_ATTRIBUTES_UPDATED,
        &attributes_update("000000101", "marketplace"),
    )
    .await;
    wait_exported(&shop.env, 1).await;
    shop.send(
        SHIPPING_ADDRESS_UPDATED,
        &address_update("000000101", "marketplace", "1", "Elsewhere 1", "Hamburg"),
    )
    .await;
    assert_eq!(
        shop.orders().await,
        table(
            "
            | order     | state | OMS status | reason | status date |
            | 000000101 | new   | ∅          | ∅      | ∅           |
            "
        ),
        "nothing of the marketplace's order reached ours"
    );
    assert_eq!(
        foreign_orders(&shop).await,
        table(
            "
            | order     | channel     | messages |
            | 000000101 | marketplace | 3        |
            "
        )
    );
    // The same messages as our channel (the store the order was exported with) apply.
    shop.send(UPDATED, &logistics_update("000000101", "default"))
        .await;
    shop.send(
        CUSTOM_ATTRIBUTES_UPDATED,
        &attributes_update("000000101", "default"),
    )
    .await;
    assert_eq!(
        shop.orders().await,
        table(
            "
            | order     | state      | OMS status | reason      | status date         |
            | 000000101 | processing | LOGISTICS  | READYTOSHIP | 2026-03-01 10:00:00 |
            "
        )
    );
    assert_eq!(
        shop.table(
            &["order", "code", "value"],
            "SELECT order_id, code, value FROM sales_order_attributes ORDER BY 1, 2",
        )
        .await,
        table(
            "
            | order     | code      | value |
            | 000000101 | gift_wrap | yes   |
            "
        )
    );
    shop.close().await;
}

#[tokio::test]
async fn a_configured_sales_channel_is_what_the_connector_exports_cancels_and_answers_to() {
    let mut shop = Shop::open_with(&["--sales-channel=WEB-EU"]).await;
    let exported = shop
        .place("000000201", vec![item(1, "MUG", 1, money(1200))])
        .await;
    assert_eq!(
        exported["store"], "WEB-EU",
        "the order is filed under the channel"
    );
    // The storefront's store code is no longer the channel: a message naming it is another
    // channel's; one naming the channel is ours.
    shop.send(UPDATED, &logistics_update("000000201", "default"))
        .await;
    shop.send(UPDATED, &logistics_update("000000201", "WEB-EU"))
        .await;
    assert_eq!(
        shop.orders().await,
        table(
            "
            | order     | state      | OMS status | reason      | status date         |
            | 000000201 | processing | LOGISTICS  | READYTOSHIP | 2026-03-01 10:00:00 |
            "
        )
    );
    assert_eq!(
        foreign_orders(&shop).await,
        table(
            "
            | order     | channel | messages |
            | 000000201 | default | 1        |
            "
        )
    );
    shop.env
        .db
        .execute(
            "INSERT INTO sales_order_cancel_requests (order_id, requested_by)
             VALUES ('000000201', 'customer@example.com')",
            &[],
        )
        .await
        .unwrap();
    let cancel = shop.next_sent(CANCEL).await;
    assert_eq!(
        cancel.body["params"],
        json!({"order_id": "000000201", "sales_channel_id": "WEB-EU",
               "user": "customer@example.com"})
    );
    let problems = protocol::spec::spec().check_params(CANCEL, &cancel.body["params"]);
    assert!(problems.is_empty(), "{problems:#?}");
    shop.close().await;
}

#[tokio::test]
async fn the_oms_changes_the_shipping_address_and_the_storefront_reads_the_new_one() {
    let mut shop = Shop::open().await;
    shop.place("000000301", vec![item(1, "MUG", 1, money(1200))])
        .await;
    // One address for billing and shipping: the billing address must stay as placed.
    let mut shared = order_rows(
        "000000302",
        "default",
        origin(),
        vec![item(1, "MUG", 1, money(1200))],
    );
    shared.order.shipping_address_reference = Some("billing".into());
    shared.addresses.retain(|a| a.reference == "billing");
    shop.place_rows(&shared).await;
    wait_exported(&shop.env, 2).await;
    let before = addresses(&shop).await;
    shop.send(
        SHIPPING_ADDRESS_UPDATED,
        &address_update("000000301", "default", "1", "Unter den Linden 1", "Berlin"),
    )
    .await;
    // No date: the later change wins by arriving later; the same change again changes nothing.
    shop.send(
        SHIPPING_ADDRESS_UPDATED,
        &address_update("000000301", "default", "1", "Friedrichstraße 43", "Berlin"),
    )
    .await;
    shop.send(
        SHIPPING_ADDRESS_UPDATED,
        &address_update("000000301", "default", "1", "Friedrichstraße 43", "Berlin"),
    )
    .await;
    shop.send(
        SHIPPING_ADDRESS_UPDATED,
        &address_update("000000302", "default", "1", "Kurfürstendamm 21", "Berlin"),
    )
    .await;
    let after = addresses(&shop).await;
    assert_eq!(
        after,
        table(
            "
            | order     | kind     | reference    | name         | street             | city      | country | changed by   |
            | 000000301 | billing  | billing      | Grace Hopper | 1 Compiler Road    | Arlington | US      | ∅            |
            | 000000301 | ships to | shipping     | Ada Lovelace | Friedrichstraße 43 | Berlin    | DE      | agent.miller |
            | 000000302 | billing  | billing      | Grace Hopper | 1 Compiler Road    | Arlington | US      | ∅            |
            | 000000302 | ships to | oms-shipping | Ada Lovelace | Kurfürstendamm 21  | Berlin    | DE      | agent.miller |
            "
        ),
        "before: {before:#?}"
    );
    assert_eq!(
        crate::sales_support::outcomes(&shop.worker, "stale").await,
        1.0,
        "the repeated change is stale"
    );
    // A change naming a line the order does not have, or an address without a country code,
    // is dead-lettered with the reason; the address stays.
    shop.publish(
        SHIPPING_ADDRESS_UPDATED,
        &address_update("000000301", "default", "99", "Nowhere 1", "Berlin"),
    )
    .await;
    let mut no_country = address_update("000000301", "default", "1", "Nowhere 2", "Berlin");
    no_country["shipping_address_modification"]["new_shipping_address"]["country_code"] =
        json!("Germany");
    shop.publish(SHIPPING_ADDRESS_UPDATED, &no_country).await;
    let mut reasons: Vec<String> = shop
        .env
        .expect_dead_letters(2)
        .await
        .into_iter()
        .map(|d| d.reason)
        .collect();
    reasons.sort();
    assert!(
        reasons[0].contains("has no line with number 99"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("\"country_code\" must be a two-letter country code, got \"Germany\""),
        "{reasons:?}"
    );
    assert_eq!(addresses(&shop).await, after);
    let Shop { env, worker, .. } = shop;
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_customers_line_cancellation_and_comment_follow_the_export_never_ahead() {
    let mut shop = Shop::open().await;
    let rows = order_rows(
        "000000401",
        "default",
        origin(),
        vec![
            item(1, "MUG", 2, money(1200)),
            simple_item(2, "PLATE", "simple", 1, money(2500)),
        ],
    );
    // The storefront asks in the very transaction that places the order.
    let db = &shop.env.db;
    db.batch_execute("BEGIN").await.unwrap();
    orders::insert(db, &rows).await.unwrap();
    shop.env
        .db
        .batch_execute(
            "INSERT INTO sales_order_line_cancel_requests (order_id, line_id, reason, requested_by)
         VALUES ('000000401', '1-2', 'Ordered one mug too many', 'customer@example.com');
         INSERT INTO sales_order_comments (order_id, author, comment, created_at)
         VALUES ('000000401', 'customer@example.com', 'Please leave it with the neighbour',
                 '2026-03-01 10:05:00.75+00');
         COMMIT",
        )
        .await
        .unwrap();
    let sent = shop.sent_in_order(3).await;
    let order: Vec<Vec<String>> = std::iter::once(vec!["method".into(), "message id".into()])
        .chain(
            sent.iter()
                .map(|s| vec![s.routing_key.clone(), s.message_id.clone()]),
        )
        .collect();
    assert_eq!(
        order,
        table(
            "
            | method                                        | message id                      |
            | magento.sales.order_management.create         | 000000401                       |
            | magento.sales.order_management.cancel_line    | 000000401:cancel_line:1-2       |
            | magento.sales.order_management.create_comment | 000000401:comment:1             |
            "
        )
    );
    let exported_number = sent[0].body["params"]["order"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == "1-2")
        .expect("line 1-2 exported")["line_number"]
        .clone();
    assert_eq!(
        sent[1].body["params"],
        json!({"order_id": "000000401", "sales_channel_id": "default",
               "line_number": exported_number, "reason": "Ordered one mug too many",
               "user": "customer@example.com"})
    );
    assert_eq!(
        sent[2].body["params"],
        json!({"order_comment": {"order_id": "000000401", "sales_channel_id": "default",
               "created_date": "2026-03-01T10:05:00+00:00", "user": "customer@example.com",
               "comment": "Please leave it with the neighbour"}})
    );
    for (s, method) in sent[1..].iter().zip([CANCEL_LINE, CREATE_COMMENT]) {
        let problems = protocol::spec::spec().check_params(method, &s.body["params"]);
        assert!(problems.is_empty(), "{method}: {problems:#?}");
    }
    assert_eq!(sent[0].routing_key, CREATE);

    let db = &shop.env.db;
    // A request, once made, is not the storefront's to change.
    for statement in [
        "UPDATE sales_order_line_cancel_requests SET reason = 'never mind'",
        "DELETE FROM sales_order_comments",
    ] {
        let err = db.batch_execute(statement).await.unwrap_err();
        assert!(
            format!("{err:?}").contains("belongs to the OMS"),
            "{statement}: {err:?}"
        );
    }
    // A line the order never had fails its outbox row, with the reason.
    db.execute(
        "INSERT INTO sales_order_line_cancel_requests (order_id, line_id, reason)
         VALUES ('000000401', '9', 'no such line')",
        &[],
    )
    .await
    .unwrap();
    wait_until(
        "the request for an unknown line failed",
        PATIENCE,
        || async {
            db.query_opt(
                "SELECT 1 FROM outbox WHERE topic = 'order.cancel_line' AND failed_at IS NOT NULL
                AND last_error LIKE '%has no exported line \"9\"%'",
                &[],
            )
            .await
            .unwrap()
            .is_some()
        },
    )
    .await;
    shop.close().await;
}

#[tokio::test]
async fn a_return_the_oms_reports_duplicated_is_recorded_and_left_as_it_is() {
    let env = TestEnv::new().await;
    let _inbox = OmsInbox::bind(&env).await;
    let worker = start_postsales(&env).await;
    let order = SimOrder {
        rows: order_rows(
            "000000501",
            "default",
            origin(),
            vec![simple_item(7, "LAMP", "simple", 1, money(4999))],
        ),
    };
    placed_and_shipped(&env, std::slice::from_ref(&order)).await;
    let request = simulate::postsales::SimReturn::new(&order, "R-501", &["7"]).request();
    postsales::storefront::request(&env.db, &request)
        .await
        .unwrap();
    let publisher = oms_publisher(&env).await;
    let duplicated = |channel: &str, rma: Option<&str>| {
        let mut r = json!({"sales_channel_id": channel, "order_id": "000000501"});
        if let Some(rma) = rma {
            r["rma"] = json!(rma);
        }
        json!({"jsonrpc": "2.0", "id": "dup", "method": RETURN_DUPLICATED,
               "params": {"return": r}})
        .to_string()
    };
    for body in [
        duplicated("default", Some("R-501")),
        duplicated("default", Some("R-501")),
        duplicated("default", None),
        duplicated("marketplace", Some("R-501")),
    ] {
        publisher
            .publish_raw(RETURN_DUPLICATED, body.as_bytes())
            .await
            .unwrap();
    }
    let outcome = |o: &'static str| {
        let worker = &worker;
        async move { crate::postsales_support::outcomes(worker, o).await }
    };
    wait_until("all four settled", PATIENCE, || async {
        outcome("applied").await == 3.0 && outcome("ignored").await == 1.0
    })
    .await;
    let rows = |sql: &'static str, header: &[&str]| {
        let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
        let db = &env.db;
        async move {
            let mut out = vec![header];
            for row in db.query(sql, &[]).await.unwrap() {
                out.push((0..row.len()).map(|i| row.get::<_, String>(i)).collect());
            }
            out
        }
    };
    assert_eq!(
        rows(
            "SELECT order_id, rma, messages::text FROM postsales_return_duplicates ORDER BY 1, 2",
            &["order", "rma", "messages"],
        )
        .await,
        table(
            "
            | order     | rma   | messages |
            | 000000501 |       | 1        |
            | 000000501 | R-501 | 2        |
            "
        )
    );
    assert_eq!(
        rows(
            "SELECT id, state FROM postsales_returns ORDER BY id",
            &["return", "state"],
        )
        .await,
        table(
            "
            | return | state     |
            | R-501  | requested |
            "
        ),
        "a duplicate report changes no return"
    );
    assert_eq!(
        rows(
            "SELECT order_id, sales_channel FROM sales_foreign_orders",
            &["order", "channel"],
        )
        .await,
        table(
            "
            | order     | channel     |
            | 000000501 | marketplace |
            "
        )
    );
    env.assert_no_dead_letters().await;
    worker.stop().await;
    env.teardown().await;
}
