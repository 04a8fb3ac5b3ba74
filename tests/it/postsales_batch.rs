//! The post-sales batch path against its model: return and refund lifecycles, shuffled and
//! partly delivered twice, applied in batches of any size end exactly as the same messages
//! applied one by one (each in its own transaction by the one-by-one path), with the same
//! outcome and dead-letter reason for every message.
//!
//! The handler is driven directly (parse, then `apply` in a transaction the test commits), so
//! the batches are the ones the test chooses; a message answered `Retry` is delivered again
//! after the others, as the retry path would, on both sides alike.

use chrono::Duration;
use protocol::postsales::methods;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use runtime::{Handler, Outcome};
use rust_decimal::Decimal;
use serde_json::json;
use simulate::orders::{OmsMessage, SimOrder, deliveries};
use simulate::postsales::{SimReturn, refund};

use crate::helpers::TestEnv;
use crate::postsales_support::{end_state, paid_order, placed_and_shipped};

fn d(cents: i64) -> Decimal {
    Decimal::new(cents, 2)
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "called with json! values built at the call"
)]
fn envelope(method: &'static str, id: &str, params: serde_json::Value) -> OmsMessage {
    OmsMessage {
        method,
        id: id.to_owned(),
        body: json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
            .to_string()
            .into_bytes(),
    }
}

/// The orders and the returns the storefront requested.
struct Shop {
    orders: Vec<SimOrder>,
    requested: Vec<SimReturn>,
}

/// Four orders paid in different ways, three returns the storefront requested (one of them
/// with a second, partial refund), one the OMS created, one without an rma; attribute
/// updates of returns, lines and refunds; duplicated-return reports; a refund over what was
/// paid, another channel's message and one about an order that is not here.
fn scenario() -> (Shop, Vec<OmsMessage>) {
    let everything = ["1", "2-1", "2-2"];
    let a = paid_order("PB-A", Some("C-A"), d(2000), d(0));
    let b = paid_order("PB-B", Some("C-B"), d(0), d(1000));
    let c = paid_order("PB-C", None, d(1000), d(0));
    let e = paid_order("PB-E", Some("C-E"), d(0), d(0));
    let requested = vec![
        SimReturn::new(&a, "R-PB-A", &everything),
        SimReturn::new(&b, "R-PB-B", &["2-1"]),
        SimReturn::new(&c, "R-PB-C", &everything),
    ];
    let mut messages: Vec<OmsMessage> = requested.iter().flat_map(|r| r.lifecycle()).collect();
    let t0 = requested[0].requested_at;

    // A second refund of order B, partial, pending then released the same day.
    let b_lines = b.lines();
    let plate = b_lines.iter().find(|l| l.line_id == "2-2").unwrap();
    for status in ["PENDINGRELEASE", "RELEASED"] {
        messages.push(refund(
            &b,
            "CN-PB-B-2",
            None,
            "Appeasement",
            status,
            t0 + Duration::days(5),
            &[(plate, d(1000))],
        ));
    }
    // A refund of more than order E cost: dead-lettered, whenever it comes.
    let e_lines = e.lines();
    messages.push(refund(
        &e,
        "CN-PB-E-BIG",
        None,
        "Appeasement",
        "RELEASED",
        t0 + Duration::days(6),
        &[(&e_lines[0], d(99_900))],
    ));

    // A return the OMS created (an agent), and goods that came back without an rma.
    let agents = SimReturn::new(&e, "OMS-PB-E", &["1", "2-1"]);
    messages.push(agents.updated("APPROVED", t0 + Duration::hours(3), Some("RT-E")));
    messages.push(agents.updated("REQUESTED", t0 + Duration::hours(2), None));
    let blind = SimReturn::new(&e, "unused", &["2-2"]);
    let mut received = blind.received(t0 + Duration::days(3));
    let mut body: serde_json::Value = serde_json::from_slice(&received.body).unwrap();
    body["params"]["return"]
        .as_object_mut()
        .unwrap()
        .remove("rma");
    received.body = body.to_string().into_bytes();
    messages.push(received);

    // Attribute updates (no version: arrival order decides between them).
    for (i, value) in ["first", "second"].iter().enumerate() {
        messages.push(envelope(
            methods::RETURN_CUSTOM_ATTRIBUTES_UPDATED,
            &format!("attr-{i}"),
            json!({"return_custom_attributes_modification": {"sales_channel_id": "default",
                "order_id": "PB-A", "rma": "R-PB-A", "user": "agent",
                "custom_attributes": [{"name": "note", "value": value}]}}),
        ));
    }
    messages.push(envelope(
        methods::RETURN_LINE_CUSTOM_ATTRIBUTES_UPDATED,
        "line-attr",
        json!({"return_line_custom_attributes_modification": {"sales_channel_id": "default",
            "order_id": "PB-E", "rma": "OMS-PB-E", "user": "agent", "line_number": 1,
            "custom_attributes": [{"name": "inspected", "value": "yes"}]}}),
    ));
    messages.push(envelope(
        methods::REFUND_CUSTOM_ATTRIBUTES_UPDATED,
        "refund-attr",
        json!({"refund_custom_attributes_modification": {"order_id": "PB-A",
            "credit_note_number": "CN-R-PB-A",
            "custom_attributes": [{"name": "ticket", "value": "T-1"}]}}),
    ));
    // Duplicated-return reports, another channel's return, an order that is not here.
    for (id, channel, order, rma) in [
        ("dup-1", "default", "PB-A", Some("R-PB-A")),
        ("dup-2", "default", "PB-C", None),
        ("dup-3", "marketplace", "PB-C", Some("R-PB-C")),
        ("dup-4", "default", "NOT-HERE", Some("R-X")),
    ] {
        let mut r = json!({"sales_channel_id": channel, "order_id": order});
        if let Some(rma) = rma {
            r["rma"] = json!(rma);
        }
        messages.push(envelope(
            methods::RETURN_DUPLICATED,
            id,
            json!({"return": r}),
        ));
    }
    let mut foreign =
        SimReturn::new(&a, "R-PB-A", &["1"]).updated("CLOSED", t0 + Duration::days(9), None);
    let mut body: serde_json::Value = serde_json::from_slice(&foreign.body).unwrap();
    body["params"]["return"]["sales_channel_id"] = json!("marketplace");
    foreign.body = body.to_string().into_bytes();
    messages.push(foreign);

    let orders = vec![a, b, c, e];
    (Shop { orders, requested }, messages)
}

/// What the batch path must leave as the model does, beyond `end_state`: the attributes,
/// the duplicate reports, the other channels' orders.
async fn more_state(env: &TestEnv) -> Vec<String> {
    let queries = [
        "SELECT 'return', id, origin, requested_by, state FROM postsales_returns ORDER BY id",
        "SELECT 'line attribute', return_id, line_id, code, value
           FROM postsales_return_line_attributes ORDER BY 2, 3, 4",
        "SELECT 'refund attributes', credit_note_number, custom_attributes::text
           FROM postsales_refunds ORDER BY 2",
        "SELECT 'duplicate', order_id, rma, messages::text
           FROM postsales_return_duplicates ORDER BY 2, 3",
        "SELECT 'foreign', order_id, sales_channel, messages::text
           FROM sales_foreign_orders ORDER BY 2, 3",
    ];
    crate::helpers::text_rows(env, &queries).await
}

/// Every outcome as text: its label and, for a retry or a dead letter, its reason.
fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Retry(reason) | Outcome::Reject(reason) => {
            format!("{}: {reason}", outcome.label())
        }
        Outcome::Ignored(why) => format!("ignored: {why}"),
        other => other.label().to_owned(),
    }
}

/// Applies `messages` with `handler` in batches whose sizes `sizes` picks; a retried message
/// comes again after the rest (three rounds at most). Returns each delivery's outcome, in
/// the order they were delivered, and the end state.
async fn run(
    shop: &Shop,
    handler: &postsales::PostsalesHandler,
    messages: &[&OmsMessage],
    mut sizes: impl FnMut() -> usize,
) -> (Vec<String>, Vec<String>) {
    let env = TestEnv::new().await;
    placed_and_shipped(&env, &shop.orders).await;
    for r in &shop.requested {
        postsales::storefront::request(&env.db, &r.request())
            .await
            .unwrap();
    }
    let limits = protocol::Limits::default();
    let pool = runtime::db::pool(&env.database_url, "omsc-test", 1).unwrap();
    let mut client = pool.get().await.unwrap();
    let mut pending: Vec<(String, postsales::PostsalesMessage)> = messages
        .iter()
        .map(|m| {
            let envelope = protocol::Envelope::parse(&m.body, &limits).unwrap();
            let parsed = handler
                .parse(m.method, envelope.require_params().unwrap(), &limits)
                .unwrap_or_else(|e| panic!("{}: {e:?}", m.id));
            (m.id.clone(), parsed)
        })
        .collect();
    let mut log = Vec::new();
    for _round in 0..3 {
        let mut retried = Vec::new();
        let mut rest = pending.into_iter().peekable();
        while rest.peek().is_some() {
            let size = sizes().max(1);
            let chunk: Vec<(String, postsales::PostsalesMessage)> =
                rest.by_ref().take(size).collect();
            let refs: Vec<&postsales::PostsalesMessage> = chunk.iter().map(|(_, m)| m).collect();
            let tx = client.transaction().await.unwrap();
            let outcomes = handler.apply(&tx, &refs).await.unwrap();
            tx.commit().await.unwrap();
            assert_eq!(outcomes.len(), chunk.len());
            for ((id, message), outcome) in chunk.into_iter().zip(&outcomes) {
                log.push(format!("{id}: {}", describe(outcome)));
                if matches!(outcome, Outcome::Retry(_)) {
                    retried.push((id, message));
                }
            }
        }
        pending = retried;
        if pending.is_empty() {
            break;
        }
    }
    let mut state = end_state(&env).await;
    state.extend(more_state(&env).await);
    drop(client);
    env.teardown().await;
    (log, state)
}

#[tokio::test]
async fn batches_of_any_size_end_as_the_messages_applied_one_by_one() {
    let (shop, messages) = scenario();
    let channel = sales::SalesChannel::new(None);
    let model = postsales::PostsalesHandler::one_by_one(channel.clone());
    let batched = postsales::PostsalesHandler::new(channel);
    for seed in [1_u64, 2, 3] {
        let deliveries = deliveries(&messages, seed, true, 0.3);
        let (model_log, model_state) = run(&shop, &model, &deliveries, || 1).await;
        let mut rng = SmallRng::seed_from_u64(seed);
        let (log, state) = run(&shop, &batched, &deliveries, || rng.random_range(1..=24)).await;
        assert_eq!(log, model_log, "seed {seed}: outcomes");
        assert_eq!(state, model_state, "seed {seed}: end state");
        // The scenario reaches what it is about: every kind of outcome, money credited.
        for kind in ["applied", "stale", "ignored", "dead"] {
            assert!(
                model_log
                    .iter()
                    .any(|l| l.split(": ").nth(1).is_some_and(|o| o.starts_with(kind))),
                "seed {seed}: no {kind} outcome in {model_log:#?}"
            );
        }
        assert!(
            model_state
                .iter()
                .any(|r| r.starts_with("store credit | C-A | ")),
            "{model_state:#?}"
        );
    }
    // And all in one batch: the whole path of every return at once.
    let in_order: Vec<&OmsMessage> = messages.iter().collect();
    let (model_log, model_state) = run(&shop, &model, &in_order, || 1).await;
    let (log, state) = run(&shop, &batched, &in_order, || usize::MAX).await;
    assert_eq!(log, model_log);
    assert_eq!(state, model_state);
}
