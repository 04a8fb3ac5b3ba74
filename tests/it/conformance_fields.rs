//! Conformance with the OMS as it really sends and reads: the broker routes only the methods a
//! module handles; what leaves the connector has one date format and `null` for what is not
//! known; shipments and refunds in the shapes real senders use (the OMS mock's templates,
//! verbatim, placeholders filled in).

use runtime::Topology;
use runtime::amqp::{PublishError, Publisher};
use runtime::config::QueueType;

use crate::helpers::{PATIENCE, TestEnv, amqp, wait_until};

/// A mock template of the OMS, as the OMS mock ships it.
macro_rules! template {
    ($method:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crates/protocol/fixtures/mock-templates/",
            $method,
            ".json"
        ))
    };
}

/// The body of a JSON-RPC request for `method` with a template's params.
fn request(method: &str, params: &str) -> Vec<u8> {
    format!(r#"{{"jsonrpc":"2.0","id":"conformance-1","method":"{method}","params":{params}}}"#)
        .into_bytes()
}

/// Every module queue with the methods its handler consumes, as installed by the workers.
fn modules() -> [(runtime::QueueSpec, &'static [&'static str]); 4] {
    [
        (inventory::QUEUE, protocol::inventory::methods::ALL),
        (sales::QUEUE, protocol::sales::methods::CONSUMED),
        (postsales::QUEUE, protocol::postsales::methods::CONSUMED),
        (catalog::QUEUE, catalog::CONSUMED),
    ]
}

#[tokio::test]
async fn the_oms_exchange_routes_only_the_methods_a_module_handles() {
    let env = TestEnv::new().await;
    let connection = amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let topology = Topology::new(&env.prefix, QueueType::Quorum);
    for (spec, _) in modules() {
        topology.declare(&channel, &spec).await.unwrap();
    }
    let publisher = Publisher::open(&connection).await.unwrap();
    let oms = topology.oms_exchange();

    // The logistics methods the OMS sends to a carrier and to a warehouse: no connector
    // module handles them, so no connector queue takes them (before, the sales queue took
    // them under `magento.logistics.#` and dead-lettered them as unknown).
    for (method, params) in [
        (
            "magento.logistics.carrier_management.request_shipping_details",
            template!("magento.logistics.carrier_management.request_shipping_details"),
        ),
        (
            "magento.logistics.warehouse_management.request_shipment",
            template!("magento.logistics.warehouse_management.request_shipment"),
        ),
    ] {
        let outcome = publisher
            .publish(&oms, method, &request(method, params), Default::default())
            .await;
        assert!(
            matches!(outcome, Err(PublishError::Unroutable { .. })),
            "{method} was routed to a connector queue: {outcome:?}"
        );
    }

    // Every method a module handles reaches that module's queue, and only that one.
    for (_, methods) in modules() {
        for method in methods {
            publisher
                .publish(&oms, method, &request(method, "{}"), Default::default())
                .await
                .unwrap_or_else(|e| panic!("{method} reaches no queue: {e}"));
        }
    }
    for (spec, methods) in modules() {
        // The broker counts a confirmed message at once; the wait only spares the test a
        // race with the queue's own bookkeeping.
        wait_until(
            &format!("{} to hold one message per method it handles", spec.name),
            PATIENCE,
            || async { env.depth(spec.name).await as usize == methods.len() },
        )
        .await;
    }
    let _ = connection.close(200, "done".into()).await;
    env.teardown().await;
}

/// A template with its `{{placeholders}}` filled in; every placeholder must be.
fn render(template: &str, values: &[(&str, &str)]) -> serde_json::Value {
    let mut text = template.to_owned();
    for (k, v) in values {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    assert!(!text.contains("{{"), "unfilled placeholder in {text}");
    serde_json::from_str(&text).unwrap()
}

fn envelope(method: &str, id: &str, params: &serde_json::Value) -> Vec<u8> {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "client": "FAKE", "method": method,
                       "params": params})
    .to_string()
    .into_bytes()
}

/// The rows of a query as `a | b | c` lines (NULL as ∅), for tables a person can read.
async fn table(env: &TestEnv, query: &str) -> Vec<String> {
    crate::helpers::text_rows(env, &[query]).await
}

#[tokio::test]
async fn the_export_writes_one_date_format_and_null_for_what_it_does_not_know() {
    use chrono::{TimeZone, Utc};
    use protocol::sales::methods;
    use rust_decimal::Decimal;
    use simulate::orders::{SimOrder, order_rows, simple_item};

    use crate::sales_support::{OmsInbox, place_all, start_sales};

    let env = TestEnv::new().await;
    let mut inbox = OmsInbox::bind(&env).await;
    let placed_at = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap()
        + chrono::Duration::microseconds(654_321);
    let mut rows = order_rows(
        "000000301",
        "default",
        placed_at,
        vec![simple_item(1, "LAMP", "simple", 1, Decimal::new(4999, 2))],
    );
    // A back-office order: no customer IP. An offline payment: no account, no transaction.
    rows.order.ip = String::new();
    let payment = rows.payment.as_mut().unwrap();
    payment.account = Some(String::new());
    payment.transaction_id = None;
    place_all(&env, &[SimOrder { rows }]).await;
    let worker = start_sales(&env).await;

    let create = inbox.next().await;
    assert_eq!(create.routing_key, methods::CREATE);
    let ours = &create.body["params"]["order"];
    let problems = protocol::spec::spec().check_params(methods::CREATE, &create.body["params"]);
    assert!(problems.is_empty(), "{problems:#?}");

    let captured: serde_json::Value = serde_json::from_str(include_str!(
        "../../crates/protocol/fixtures/captured-order-create.json"
    ))
    .unwrap();
    let theirs = &captured["params"]["order"];
    let gateway = |order: &serde_json::Value| {
        order["payments"][0]["transactions"][0]["gateway_information"].clone()
    };
    // What a shop owner expects the OMS to read, beside what the captured real export wrote.
    let field = |v: &serde_json::Value| v.to_string();
    let rows = [
        (
            "origin_date",
            field(&ours["origin_date"]),
            "\"2026-03-01T10:00:00+00:00\"",
        ),
        ("ip", field(&ours["ip"]), "null"),
        ("account", field(&gateway(ours)["account"]), "null"),
        (
            "transaction_id",
            field(&gateway(ours)["transaction_id"]),
            "null",
        ),
    ];
    for (name, got, expected) in &rows {
        assert_eq!(got, expected, "{name}");
    }
    // The captured export writes the same shapes: unknown gateway values as null, and its
    // date with whole seconds and a numeric offset.
    assert!(gateway(theirs)["account"].is_null() && gateway(theirs)["transaction_id"].is_null());
    assert!(protocol::spec::is_outbound_datetime(
        theirs["origin_date"].as_str().unwrap()
    ));
    assert!(theirs.get("ip").is_some() && ours.get("ip").is_some());
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn shipments_in_the_mock_and_simulator_shapes_keep_what_a_storefront_shows() {
    use chrono::{TimeZone, Utc};
    use protocol::sales::methods;
    use rust_decimal::Decimal;
    use simulate::orders::{SimOrder, order_rows, simple_item};

    use crate::sales_support::{
        OmsInbox, oms_publisher, outcomes, place_all, start_sales, wait_exported,
    };

    let env = TestEnv::new().await;
    let _inbox = OmsInbox::bind(&env).await;
    let worker = start_sales(&env).await;
    let order = SimOrder {
        rows: order_rows(
            "000000302",
            "default",
            Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap(),
            vec![
                simple_item(7, "LAMP", "simple", 1, Decimal::new(4999, 2)),
                simple_item(8, "BULB", "simple", 1, Decimal::new(500, 2)),
            ],
        ),
    };
    place_all(&env, std::slice::from_ref(&order)).await;
    wait_exported(&env, 1).await;

    // The OMS mock's template, verbatim with its placeholders filled: no shipment id, items
    // with order_line_id and order_line_number, a parcel listing a line number as a string.
    let mock = render(
        template!("magento.logistics.fulfillment_management.customer_shipment_done"),
        &[
            ("order.increment_id", "000000302"),
            ("order.address1", "1 Compiler Road"),
            ("order.address_type", "customer"),
            ("order.city", "Arlington"),
            ("order.country_code", "US"),
            ("order.email", "grace@example.com"),
            ("order.first_name", "Grace"),
            ("order.last_name", "Hopper"),
            ("order.zip", "22201"),
            ("order.store", "default"),
            ("order_item.id", "7"),
            ("order_item.line_number", "1"),
            ("order_item.sku", "LAMP"),
            ("order_item.product_name", "Lamp"),
            ("order_item.gross_amount", "49.99"),
            ("order_item.net_amount", "49.99"),
            ("order_item.taxes_amount", "0"),
            ("order_item.taxes_rate", "0"),
            ("source_id", "WH-1"),
        ],
    );
    // A simulator's shape: the spec's shipment_request_id, the `shimpent_id` typo left
    // empty, store_id, numbers as strings, and a label to print.
    let simulator = serde_json::json!({"shipment": {
        "order_id": "000000302", "store_id": "default", "source_id": "WH-2",
        "shimpent_id": "", "shipment_request_id": "RQ-302-2", "method": "EXPRESS",
        "shipment_date": "2026-05-03T08:30:00+02:00",
        "address": {"reference": "", "first_name": "Ada", "last_name": "Lovelace",
                    "address1": "12 Analytical St", "city": "London", "zip": "N1",
                    "country_code": "GB"},
        "items": [{"order_line_id": "8", "order_line_number": "2", "sku": "BULB",
                   "status": "SHIPPED", "status_reason": "PARTIAL"}],
        "packages": [{"id": "P-2", "carrier": "UPS", "tracking_number": "1Z999",
                      "tracking_link": "https://ups.example/1Z999",
                      "shipping_label_link": "https://labels.example/P-2.pdf",
                      "items": ["2"]}]}});
    let publisher = oms_publisher(&env).await;
    // Each delivered twice: each is stored once.
    for (i, params) in [&mock, &simulator, &mock, &simulator].iter().enumerate() {
        publisher
            .publish_raw(
                methods::SHIPMENT_DONE,
                &envelope(methods::SHIPMENT_DONE, &format!("s-{i}"), params),
            )
            .await
            .unwrap();
    }
    wait_until("the four deliveries", PATIENCE, || async {
        outcomes(&worker, "applied").await + outcomes(&worker, "stale").await == 4.0
    })
    .await;
    assert_eq!(outcomes(&worker, "applied").await, 2.0);

    // What the customer's order page reads.
    assert_eq!(
        table(
            &env,
            "SELECT shipment_request_id, method, package_id, carrier, tracking_number,
                    shipping_label_link, shipping_address->>'first_name',
                    shipping_address->>'city', shipping_address->>'country_code',
                    (shipping_address ? 'reference')::text
               FROM sales_order_tracking WHERE order_id = '000000302' ORDER BY shipped_at NULLS FIRST"
        )
        .await,
        [
            // shipment_request_id | method | package | carrier | tracking | label | name | city | country | empty kept
            "∅ | STANDARD | #1 | DHL | 1234567890 | ∅ | Grace | Arlington | US | false",
            "RQ-302-2 | EXPRESS | P-2 | UPS | 1Z999 | https://labels.example/P-2.pdf | Ada | London | GB | false",
        ]
    );
    assert_eq!(
        table(
            &env,
            "SELECT l.line_id, l.status, l.status_reason, s.shipment_key
               FROM sales_shipment_lines l JOIN sales_shipments s ON s.id = l.shipment_id
              WHERE l.order_id = '000000302' ORDER BY l.line_id"
        )
        .await
        .iter()
        .map(|r| r.split(":").next().unwrap().to_owned())
        .collect::<Vec<_>>(),
        [
            // line | status in the shipment | reason | what the shipment is known by
            "7 | SHIPPED | OSREPORT | content",
            "8 | SHIPPED | PARTIAL | request",
        ]
    );
    env.assert_no_dead_letters().await;
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn refunds_name_lines_by_id_or_number_and_need_no_credit_note_number() {
    use chrono::{TimeZone, Utc};
    use protocol::postsales::methods;
    use rust_decimal::Decimal;
    use simulate::orders::{SimOrder, order_rows, simple_item};

    use crate::postsales_support::{
        oms_publisher, outcomes, placed_and_shipped, start_postsales, wait_settled,
    };

    let env = TestEnv::new().await;
    let worker = start_postsales(&env).await;
    // Two mugs (item 1: lines "1-1" and "1-2", numbers 1 and 2) and a plate (item 2: line
    // "2", number 3): "2" is line id "2" and line number 2, two different lines.
    let order = SimOrder {
        rows: order_rows(
            "000000303",
            "default",
            Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap(),
            vec![
                simple_item(1, "MUG", "simple", 2, Decimal::new(3000, 2)),
                simple_item(2, "PLATE", "simple", 1, Decimal::new(2500, 2)),
            ],
        ),
    };
    placed_and_shipped(&env, std::slice::from_ref(&order)).await;

    // The OMS mock's refund template, verbatim, filled in as the mock fills it: order_line
    // is the line number, order_item_id the exported line id.
    let refund = |credit_note: &str, item: &str, line_number: &str, gross: &str| {
        render(
            template!("magento.postsales.refund_management.updated"),
            &[
                ("rma.date", "2026-05-10"),
                ("rma.credit_note", credit_note),
                ("order_item.id", item),
                ("rma_item.line_number", line_number),
                ("rma_item.gross_amount", gross),
                ("rma_item.net_amount", gross),
                ("rma_item.taxes_amount", "0"),
                ("rma_item.taxes_rate", "0"),
                ("rma_item.reason", "DAMAGED"),
                ("rma_item.reason_description", "Arrived broken"),
                ("rma.increment_id", "000000303"),
                ("rma.rma_id", ""),
                ("rma.sales_channel", "default"),
                ("rma.source", "default"),
            ],
        )
    };
    // Line number 2 of item "1-2": the second mug, though line id "2" is the plate.
    let by_number = refund("CN-303", "1-2", "2", "30.00");
    // No credit note number (optional in the spec): known by its content, so its
    // redelivery is the same refund and makes no second credit memo.
    let unnumbered = refund("", "2", "3", "25.00");
    // "2" with nothing to tell line id "2" from line number 2: refused, not guessed.
    let mut ambiguous = refund("CN-304", "", "2", "1.00");
    ambiguous["refund"]["lines"][0]
        .as_object_mut()
        .unwrap()
        .remove("order_item_id");

    let publisher = oms_publisher(&env).await;
    for (id, params) in [
        ("by-number", &by_number),
        ("unnumbered", &unnumbered),
        ("unnumbered-again", &unnumbered),
        ("ambiguous", &ambiguous),
    ] {
        publisher
            .publish_raw(
                methods::REFUND_UPDATED,
                &envelope(methods::REFUND_UPDATED, id, params),
            )
            .await
            .unwrap();
    }
    wait_settled(&worker, 3).await;
    let letters = env.expect_dead_letters(1).await;
    assert_eq!(
        letters[0].reason,
        "refund.lines[0]: order_line \"2\" is ambiguous: as a line id it names line \"2\" \
         (number 3, PLATE), as a line number line \"1-2\" (number 2, MUG), and the line sends \
         no order_item_id to tell them apart; refusing to guess which line is refunded"
    );
    assert_eq!(outcomes(&worker, "applied").await, 2.0);

    let memos = table(
        &env,
        "SELECT CASE WHEN m.credit_note_number LIKE 'digest:%' THEN 'digest' ELSE m.credit_note_number END,
                l.line_id, l.amount::text, m.grand_total::text
           FROM postsales_credit_memos m
           JOIN postsales_credit_memo_lines l ON l.credit_memo_id = m.id
          ORDER BY l.line_id",
    )
    .await;
    assert_eq!(
        memos,
        [
            // credit note | refunded line | amount | memo total
            "CN-303 | 1-2 | 30.0000 | 30.0000",
            "digest | 2 | 25.0000 | 25.0000",
        ]
    );
    worker.stop().await;
    env.teardown().await;
}
