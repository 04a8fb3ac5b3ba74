//! A return and its refund through the gateway only: the storefront asks for the return of
//! a shipped line, the bus receives `return_management.authorize` at `/delegate/oms`, and
//! the OMS's answers (the return's status updates, its receipt, the refund pending then
//! released) come back through the bus to the callback URL, signed. The OMS side never
//! touches the broker.

use chrono::{TimeZone, Utc};
use protocol::postsales::methods::{AUTHORIZE, REFUND_UPDATED, RETURN_UPDATED};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use simulate::orders::{OmsMessage, SimOrder, order_rows, simple_item};
use simulate::postsales::SimReturn;

use crate::gateway::{post, start_gateway_with};
use crate::gateway_bus::TestBus;
use crate::helpers::{PATIENCE, TestEnv, wait_until};
use crate::postsales_support::{end_state, rows_of};
use crate::sales_support::place_all;

const SECRET: &str = "bus-secret";
const ORDER: &str = "000000077";
const RMA: &str = "R-000000077-1";

/// A vendor mock template with its placeholders filled.
fn render(template: &str, values: &[(&str, &str)]) -> Value {
    let mut text = template.to_owned();
    for (k, v) in values {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    assert!(!text.contains("{{"), "unfilled placeholder in {text}");
    serde_json::from_str(&text).unwrap()
}

fn envelope(method: &'static str, id: &str, params: &Value) -> OmsMessage {
    OmsMessage {
        method,
        id: id.to_owned(),
        body: json!({"jsonrpc": "2.0", "id": id, "client": "FAKE", "method": method, "params": params})
            .to_string()
            .into_bytes(),
    }
}

/// Posts each message to the callback as the bus does (signed) and expects it acknowledged.
async fn deliver(callback: std::net::SocketAddr, messages: &[OmsMessage]) {
    for message in messages {
        let signature = gateway::signature::sign(SECRET.as_bytes(), &message.body);
        let reply = post(callback, &message.body, &[("X-Signature", &signature)]).await;
        assert_eq!(
            reply.status, 200,
            "{} {}: {reply:?}",
            message.method, message.id
        );
        assert_eq!(reply.json()["result"], Value::Null, "{}", message.method);
    }
}

#[tokio::test]
async fn a_return_requested_in_the_shop_is_authorized_received_and_refunded_through_the_bus() {
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    let url = format!("--oms-url={}", bus.base);
    let secret = format!("--registration-secret={SECRET}");
    let (worker, callback) = start_gateway_with(&env, &[&secret], &[&url], |app| {
        sales::install(app).unwrap();
        postsales::install(app).unwrap();
    })
    .await;

    // An order of one lamp at 49.99, placed in the shop, created and shipped by the OMS
    // through the bus.
    let order = SimOrder {
        rows: order_rows(
            ORDER,
            "default",
            Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap(),
            vec![simple_item(7, "LAMP", "simple", 1, Decimal::new(4999, 2))],
        ),
    };
    place_all(&env, std::slice::from_ref(&order)).await;
    wait_until("the order at the bus", PATIENCE, || async {
        bus.calls_of(protocol::sales::methods::CREATE)
            .iter()
            .any(|c| c.status == 200)
    })
    .await;
    deliver(callback, &order.lifecycle()).await;
    wait_until("the lamp returnable", PATIENCE, || async {
        env.db
            .query_one(
                "SELECT count(*) FROM postsales_returnable_lines WHERE order_id = $1",
                &[&ORDER],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 1
    })
    .await;

    // The customer sends the lamp back: the storefront writes the return, and the bus
    // receives its authorization as a command for the OMS, to the vendor's specification.
    let sim = SimReturn::new(&order, RMA, &["7"]);
    assert_eq!(sim.lines.len(), 1);
    postsales::storefront::request(&env.db, &sim.request())
        .await
        .unwrap();
    wait_until("the authorization at the bus", PATIENCE, || async {
        bus.calls_of(AUTHORIZE).iter().any(|c| c.status == 200)
    })
    .await;
    let authorizations = bus.calls_of(AUTHORIZE);
    assert_eq!(authorizations.len(), 1, "taken once: {authorizations:?}");
    let authorize = &authorizations[0];
    assert_eq!(authorize.path, "/delegate/oms");
    assert_eq!(authorize.id(), RMA, "the rma is the message id");
    let params = &authorize.body["params"];
    let problems = protocol::spec::spec().check_params(AUTHORIZE, params);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(params["return"]["order_id"], ORDER);
    assert_eq!(params["return"]["rma"], RMA);
    assert_eq!(params["return"]["lines"][0]["id"], "7");
    wait_until("the authorization acknowledged", PATIENCE, || async {
        env.depth("connector.gateway").await == 0
    })
    .await;

    // The OMS answers through the bus: REQUESTED, then APPROVED with a return label (the
    // vendor's mock template), the lamp received at the warehouse, the refund pending, then
    // released (the vendor's mock template).
    let values = [
        ("order_item.id", "7"),
        ("rma_item.line_number", "1"),
        ("rma_item.reason", "DAMAGED"),
        ("rma_item.reason_description", "Arrived damaged"),
        ("rma_item.sku", "LAMP"),
        ("rma_item.gross_amount", "49.99"),
        ("rma_item.net_amount", "41.66"),
        ("rma_item.taxes_amount", "8.33"),
        ("rma_item.taxes_rate", "20"),
        ("rma.status", "APPROVED"),
        ("rma.increment_id", ORDER),
        ("rma.carrier", "DHL"),
        ("rma.label", "https://labels.example/RT-77"),
        ("rma.tracking_number", "RT-77"),
        ("rma.rma_id", RMA),
        ("rma.sales_channel", "default"),
        ("rma.source", "default"),
        ("rma.credit_note", "CN-77"),
        ("rma.date", "2026-05-08 14:00:00"),
    ];
    let approved = render(
        include_str!(
            "../../crates/protocol/fixtures/mock-templates/magento.postsales.return_management.updated.json"
        ),
        &values,
    );
    let mut released = render(
        include_str!(
            "../../crates/protocol/fixtures/mock-templates/magento.postsales.refund_management.updated.json"
        ),
        &values,
    );
    released["refund"]["status"]["date"] = json!("2026-05-10 15:00:00");
    released["refund"]["credit_note_date"] = json!("2026-05-10 15:00:00");
    let mut pending = released.clone();
    pending["refund"]["status"]["code"] = json!("PENDINGRELEASE");
    pending["refund"]["status"]["name"] = json!("PENDINGRELEASE");
    pending["refund"]["status"]["date"] = json!("2026-05-10 13:00:00");
    let requested_at = sim.requested_at;
    deliver(
        callback,
        &[
            sim.updated("REQUESTED", requested_at + chrono::Duration::hours(1), None),
            envelope(RETURN_UPDATED, "approved-77", &approved),
            sim.received(requested_at + chrono::Duration::hours(48)),
            envelope(REFUND_UPDATED, "pending-77", &pending),
            envelope(REFUND_UPDATED, "released-77", &released),
        ],
    )
    .await;

    // As a shop owner sees it: the return approved, its label known, the lamp received;
    // the refund released for the lamp's price, one credit memo, the money back on the
    // payment.
    wait_until("the credit memo", PATIENCE, || async {
        !rows_of(&end_state(&env).await, "credit memo").is_empty()
    })
    .await;
    let state = end_state(&env).await;
    let returns = rows_of(&state, "return");
    assert_eq!(returns.len(), 1, "{state:#?}");
    let cells: Vec<&str> = returns[0].split(" | ").collect();
    assert_eq!(&cells[1..4], [RMA, ORDER, "commerce"], "{state:#?}");
    assert_eq!(&cells[4..6], ["authorized", "APPROVED"], "{state:#?}");
    assert_ne!(cells[8], "∅", "received: {state:#?}");
    assert_eq!(cells[10], "RT-77", "{state:#?}");
    let lines = rows_of(&state, "return line");
    assert_eq!(lines.len(), 1, "{state:#?}");
    assert!(
        lines[0].contains(" | 7 | DAMAGED | APPROVED | "),
        "{state:#?}"
    );
    let refunds = rows_of(&state, "refund");
    assert_eq!(refunds.len(), 1, "{state:#?}");
    assert!(
        refunds[0].starts_with(&format!(
            "refund | CN-77 | {ORDER} | {RMA} | return | RELEASED |"
        )),
        "{state:#?}"
    );
    assert!(refunds[0].contains(" | 49.9900 | "), "{state:#?}");
    let memos = rows_of(&state, "credit memo");
    assert_eq!(memos.len(), 1, "{state:#?}");
    let memo: Vec<&str> = memos[0].split(" | ").collect();
    assert_eq!(&memo[1..5], ["CN-77", ORDER, RMA, "return"], "{state:#?}");
    assert_eq!(
        &memo[6..8],
        ["49.9900", "49.9900"],
        "grand total, on the payment: {state:#?}"
    );
    assert_eq!(memo[10], "7=49.9900", "{state:#?}");
    env.assert_no_dead_letters().await;
    assert_eq!(
        bus.calls_of(AUTHORIZE).len(),
        1,
        "the authorization was sent once"
    );
    worker.stop().await;
    bus.stop();
    env.teardown().await;
}
