//! Conformance: orders driven the way real OMS senders drive them (TRANSPORT.md, "What real
//! senders do"), from the mock templates and the simulator's messages rather than the
//! connector's own builders. Each test ends in the state a shop owner expects, written as a
//! table.

use chrono::Duration;
use protocol::sales::methods::{CREATED, UPDATED};
use serde_json::{Value, json};

use crate::conformance_support::{
    MockLine, Shop, item, mock_update, money, origin, permutations, rfc3339, simulator_echo, table,
};

/// The simulator's five status changes, as it sends them.
const SIMULATOR_PATH: [(&str, &str); 5] = [
    ("RECEIVED", "IMPORTED"),
    ("ONHOLD", "PENDINGREMORSETIME"),
    ("LOGISTICS", "READYTOSHIP"),
    ("LOGISTICSCOMPLETE", "FULLYSHIPPED"),
    ("COMPLETE", "FULLYSHIPPED"),
];

async fn orders_with_acceptance(shop: &Shop) -> Vec<Vec<String>> {
    shop.table(
        &[
            "order",
            "state",
            "OMS status",
            "reason",
            "status date",
            "accepted",
        ],
        "SELECT id, state, oms_status, oms_status_reason, oms_status_date::text,
                CASE WHEN oms_accepted_at IS NULL THEN 'no' ELSE 'yes' END
           FROM sales_orders ORDER BY id",
    )
    .await
}

#[tokio::test]
async fn the_simulators_updates_without_dates_end_complete_in_any_arrival_order() {
    let mut shop = Shop::open().await;
    let arrivals: [(&str, &[usize]); 3] = [
        ("SIM-IN-ORDER", &[0, 1, 2, 3, 4]),
        ("SIM-REVERSED", &[4, 3, 2, 1, 0]),
        ("SIM-SHUFFLED-TWICE", &[2, 4, 0, 3, 1, 4, 0, 2]),
    ];
    for (id, order) in arrivals {
        let exported = shop.place(id, vec![item(1, "MUG", 1, money(1200))]).await;
        // `created` without a status date: the export echoed with the first status.
        shop.send(CREATED, &simulator_echo(&exported, "RECEIVED", "IMPORTED"))
            .await;
        for &n in order {
            let (status, reason) = SIMULATOR_PATH[n];
            shop.send(UPDATED, &simulator_echo(&exported, status, reason))
                .await;
        }
    }
    assert_eq!(
        orders_with_acceptance(&shop).await,
        table(
            "
            | order              | state    | OMS status | reason       | status date | accepted |
            | SIM-IN-ORDER       | complete | COMPLETE   | FULLYSHIPPED | ∅           | yes      |
            | SIM-REVERSED       | complete | COMPLETE   | FULLYSHIPPED | ∅           | yes      |
            | SIM-SHUFFLED-TWICE | complete | COMPLETE   | FULLYSHIPPED | ∅           | yes      |
            "
        )
    );
    shop.close().await;
}

/// The mock's path of an order: every status dated the order's origin date, the last one
/// the template's own header (COMPLETE/FULLYSHIPPED).
fn mock_path(order_id: &str) -> Vec<Value> {
    let line = |status, payment| MockLine {
        id: "1",
        number: 1,
        sku: "MUG",
        status,
        payment,
        gross: "12.00",
        net: "10.08",
        tax: "1.92",
    };
    [
        (("RECEIVED", "IMPORTED"), line("RECEIVED", "AUTHORIZED")),
        (
            ("ONHOLD", "PENDINGREMORSETIME"),
            line("RECEIVED", "AUTHORIZED"),
        ),
        (
            ("LOGISTICS", "READYTOSHIP"),
            line("LOGISTICS", "AUTHORIZED"),
        ),
        (
            ("LOGISTICSCOMPLETE", "FULLYSHIPPED"),
            line("SHIPPED", "CAPTURE_REQUESTED"),
        ),
        (
            ("COMPLETE", "FULLYSHIPPED"),
            line("SHIPPED", "CAPTURE_REQUESTED"),
        ),
    ]
    .iter()
    .map(|(header, line)| mock_update(order_id, *header, std::slice::from_ref(line)))
    .collect()
}

#[tokio::test]
async fn the_mock_templates_equal_dates_end_at_the_last_status_of_the_sequence() {
    let mut shop = Shop::open().await;
    let arrivals: [(&str, &[usize]); 2] = [
        ("MOCK-IN-ORDER", &[0, 1, 2, 3, 4]),
        ("MOCK-REVERSED-TWICE", &[4, 3, 2, 1, 0, 4, 2, 0]),
    ];
    for (id, order) in arrivals {
        shop.place(id, vec![item(1, "MUG", 1, money(1200))]).await;
        let path = mock_path(id);
        for &n in order {
            shop.send(UPDATED, &path[n]).await;
        }
    }
    assert_eq!(
        shop.orders().await,
        table(
            "
            | order               | state    | OMS status | reason       | status date         |
            | MOCK-IN-ORDER       | complete | COMPLETE   | FULLYSHIPPED | 2026-03-01 10:00:00 |
            | MOCK-REVERSED-TWICE | complete | COMPLETE   | FULLYSHIPPED | 2026-03-01 10:00:00 |
            "
        )
    );
    assert_eq!(
        shop.lines().await,
        table(
            "
            | order               | line     | status  | payment           |
            | MOCK-IN-ORDER       | 1        | SHIPPED | CAPTURE_REQUESTED |
            | MOCK-IN-ORDER       | SHIPPING | ∅       | ∅                 |
            | MOCK-REVERSED-TWICE | 1        | SHIPPED | CAPTURE_REQUESTED |
            | MOCK-REVERSED-TWICE | SHIPPING | ∅       | ∅                 |
            "
        )
    );
    // One capture each: the mug at the amounts the OMS captured (tax 1.92; the export had
    // none), the shipping with it.
    assert_eq!(
        shop.invoices().await,
        table(
            "
            | order               | captured at         | lines      | total   | tax    |
            | MOCK-IN-ORDER       | 2026-03-01 10:00:00 | 1,SHIPPING | 17.0000 | 1.9200 |
            | MOCK-REVERSED-TWICE | 2026-03-01 10:00:00 | 1,SHIPPING | 17.0000 | 1.9200 |
            "
        )
    );
    shop.close().await;
}

/// Sets every status date of a mock update (the order's, its lines', their payments').
fn dated(mut params: Value, at: chrono::DateTime<chrono::Utc>) -> Value {
    let at = json!(rfc3339(at));
    params["order"]["status_date"] = at.clone();
    for line in params["order"]["lines"].as_array_mut().unwrap() {
        line["status_date"] = at.clone();
        for payment in line["payments"].as_array_mut().unwrap() {
            payment["status_date"] = at.clone();
        }
    }
    params
}

#[tokio::test]
async fn dated_updates_go_by_their_dates_in_every_arrival_order() {
    // The order went to logistics, then on hold for its payment: the later date wins over
    // the lifecycle, in each of the six arrival orders.
    let mut shop = Shop::open().await;
    let line = |status| MockLine {
        id: "1",
        number: 1,
        sku: "MUG",
        status,
        payment: "AUTHORIZED",
        gross: "12.00",
        net: "10.08",
        tax: "1.92",
    };
    let updates = |id: &str| {
        [
            (("RECEIVED", "IMPORTED"), "RECEIVED", 0),
            (("LOGISTICS", "READYTOSHIP"), "LOGISTICS", 60),
            (("ONHOLD", "PAYMENT"), "ONHOLD", 120),
        ]
        .map(|(header, status, minute)| {
            dated(
                mock_update(id, header, &[line(status)]),
                origin() + Duration::minutes(minute),
            )
        })
    };
    for p in permutations(3) {
        let id = format!(
            "DATED-{}",
            p.iter().map(|n| n.to_string()).collect::<String>()
        );
        shop.place(&id, vec![item(1, "MUG", 1, money(1200))]).await;
        let updates = updates(&id);
        for n in p {
            shop.send(UPDATED, &updates[n]).await;
        }
    }
    assert_eq!(
        shop.orders().await,
        table(
            "
            | order     | state  | OMS status | reason  | status date         |
            | DATED-012 | holded | ONHOLD     | PAYMENT | 2026-03-01 12:00:00 |
            | DATED-021 | holded | ONHOLD     | PAYMENT | 2026-03-01 12:00:00 |
            | DATED-102 | holded | ONHOLD     | PAYMENT | 2026-03-01 12:00:00 |
            | DATED-120 | holded | ONHOLD     | PAYMENT | 2026-03-01 12:00:00 |
            | DATED-201 | holded | ONHOLD     | PAYMENT | 2026-03-01 12:00:00 |
            | DATED-210 | holded | ONHOLD     | PAYMENT | 2026-03-01 12:00:00 |
            "
        )
    );
    shop.close().await;
}

#[tokio::test]
async fn an_update_without_a_date_never_replaces_a_dated_status() {
    let mut shop = Shop::open().await;
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
    for (id, undated_first) in [("UNDATED-AFTER", false), ("UNDATED-FIRST", true)] {
        let exported = shop.place(id, vec![item(1, "MUG", 1, money(1200))]).await;
        let logistics = dated(
            mock_update(
                id,
                ("LOGISTICS", "READYTOSHIP"),
                std::slice::from_ref(&line),
            ),
            origin() + Duration::minutes(30),
        );
        let complete = simulator_echo(&exported, "COMPLETE", "FULLYSHIPPED");
        let sequence = if undated_first {
            [&complete, &logistics]
        } else {
            [&logistics, &complete]
        };
        for params in sequence {
            shop.send(UPDATED, params).await;
        }
    }
    assert_eq!(
        shop.orders().await,
        table(
            "
            | order         | state      | OMS status | reason      | status date         |
            | UNDATED-AFTER | processing | LOGISTICS  | READYTOSHIP | 2026-03-01 10:30:00 |
            | UNDATED-FIRST | processing | LOGISTICS  | READYTOSHIP | 2026-03-01 10:30:00 |
            "
        )
    );
    shop.close().await;
}

#[tokio::test]
async fn every_arrival_order_of_a_captures_updates_makes_the_same_invoice() {
    // A line's payment: authorized at 10:00, capture requested at 10:01, captured 7 s later.
    let mut shop = Shop::open().await;
    let line = |payment| MockLine {
        id: "1",
        number: 1,
        sku: "MUG",
        status: "SHIPPED",
        payment,
        gross: "12.00",
        net: "10.08",
        tax: "1.92",
    };
    let updates = |id: &str| {
        [
            ("AUTHORIZED", Duration::zero()),
            ("CAPTURE_REQUESTED", Duration::minutes(1)),
            ("CAPTURED", Duration::minutes(1) + Duration::seconds(7)),
        ]
        .map(|(payment, after)| {
            dated(
                mock_update(id, ("LOGISTICS", "SHIPPED"), &[line(payment)]),
                origin() + after,
            )
        })
    };
    for p in permutations(3) {
        let id = format!(
            "CAP-{}",
            p.iter().map(|n| n.to_string()).collect::<String>()
        );
        shop.place(&id, vec![item(1, "MUG", 1, money(1200))]).await;
        let updates = updates(&id);
        for n in p {
            shop.send(UPDATED, &updates[n]).await;
        }
    }
    assert_eq!(
        shop.invoices().await,
        table(
            "
            | order   | captured at         | lines      | total   | tax    |
            | CAP-012 | 2026-03-01 10:01:00 | 1,SHIPPING | 17.0000 | 1.9200 |
            | CAP-021 | 2026-03-01 10:01:00 | 1,SHIPPING | 17.0000 | 1.9200 |
            | CAP-102 | 2026-03-01 10:01:00 | 1,SHIPPING | 17.0000 | 1.9200 |
            | CAP-120 | 2026-03-01 10:01:00 | 1,SHIPPING | 17.0000 | 1.9200 |
            | CAP-201 | 2026-03-01 10:01:00 | 1,SHIPPING | 17.0000 | 1.9200 |
            | CAP-210 | 2026-03-01 10:01:00 | 1,SHIPPING | 17.0000 | 1.9200 |
            "
        )
    );
    let payments: Vec<Vec<String>> = shop
        .lines()
        .await
        .into_iter()
        .filter(|row| row[1] == "1")
        .map(|row| row[3].clone())
        .map(|payment| vec![payment])
        .collect();
    assert_eq!(payments, vec![vec!["CAPTURED".to_owned()]; 6]);
    shop.close().await;
}

#[tokio::test]
async fn two_captures_of_the_same_date_are_two_invoices_at_the_captured_amounts() {
    let mut shop = Shop::open().await;
    // MUG is captured first, PLATE later, every date the origin date (the mock). The OMS
    // captured 20.00 of the plate's 25.50.
    shop.place(
        "TWO-CAPTURES",
        vec![
            item(1, "MUG", 1, money(1200)),
            item(2, "PLATE", 1, money(2550)),
        ],
    )
    .await;
    let mug = |payment| MockLine {
        id: "1",
        number: 1,
        sku: "MUG",
        status: "SHIPPED",
        payment,
        gross: "12.00",
        net: "10.08",
        tax: "1.92",
    };
    let plate = |status, payment| MockLine {
        id: "2",
        number: 2,
        sku: "PLATE",
        status,
        payment,
        gross: "20.00",
        net: "16.81",
        tax: "3.19",
    };
    let first = mock_update(
        "TWO-CAPTURES",
        ("LOGISTICS", "PARTIALLYSHIPPED"),
        &[mug("CAPTURE_REQUESTED"), plate("LOGISTICS", "AUTHORIZED")],
    );
    let second = mock_update(
        "TWO-CAPTURES",
        ("LOGISTICSCOMPLETE", "FULLYSHIPPED"),
        &[
            mug("CAPTURE_REQUESTED"),
            plate("SHIPPED", "CAPTURE_REQUESTED"),
        ],
    );
    shop.send(UPDATED, &first).await;
    shop.send(UPDATED, &second).await;

    // A sender that gives no amounts with the capture: the exported ones stand.
    shop.place("NO-AMOUNTS", vec![item(1, "MUG", 1, money(1200))])
        .await;
    let mut bare = mock_update(
        "NO-AMOUNTS",
        ("COMPLETE", "FULLYSHIPPED"),
        &[mug("CAPTURE_REQUESTED")],
    );
    let payment = &mut bare["order"]["lines"][0]["payments"][0];
    for field in ["gross_amount", "net_amount", "tax_amount"] {
        payment.as_object_mut().unwrap().remove(field);
    }
    shop.send(UPDATED, &bare).await;

    assert_eq!(
        shop.invoices().await,
        table(
            "
            | order        | captured at         | lines      | total   | tax    |
            | NO-AMOUNTS   | 2026-03-01 10:00:00 | 1,SHIPPING | 17.0000 | 0.0000 |
            | TWO-CAPTURES | 2026-03-01 10:00:00 | 1          | 12.0000 | 1.9200 |
            | TWO-CAPTURES | 2026-03-01 10:00:00 | 2,SHIPPING | 25.0000 | 3.1900 |
            "
        )
    );
    shop.close().await;
}
