//! The sales batch path against its model: a batch applied at once (a constant number of
//! round trips) must give every message the outcome, and leave every `sales_*` row, that
//! applying its messages one by one gives.
//!
//! Seeded cases (`rand`'s `SmallRng`, so a failure names the seed that reproduces it): order
//! lifecycles with the cases the rules are made of (updates without dates or of equal dates,
//! captures reported twice at different dates or without one, line cancellations, attributes
//! and addresses changed twice, shipments overlapping or naming a line twice, orders not
//! exported yet, another channel's and unknown orders), shuffled, partly repeated, cut into
//! batches of random sizes, and applied into two databases: one by the batch path, the
//! other by the one-by-one path.

use chrono::Duration;
use deadpool_postgres::Pool;
use protocol::sales::methods;
use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use runtime::{Handler, Outcome};
use sales::{SalesChannel, SalesHandler, SalesMessage};
use serde_json::{Value, json};
use simulate::orders::{self, LineState, OrdersSpec, SimOrder};

use crate::helpers::TestEnv;

const CASES: u64 = 12;
const ORDERS_PER_CASE: usize = 5;

/// One message as the OMS sends it: method and params.
#[derive(Debug, Clone)]
struct Sent {
    method: &'static str,
    params: Value,
}

fn from_sim(message: &orders::OmsMessage) -> Sent {
    let body: Value = serde_json::from_slice(&message.body).unwrap();
    Sent {
        method: message.method,
        params: body["params"].clone(),
    }
}

/// Removes every `status_date` of an update (header, lines, payments): a sender that
/// leaves the dates out.
fn without_dates(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("status_date");
            map.values_mut().for_each(without_dates);
        }
        Value::Array(items) => items.iter_mut().for_each(without_dates),
        _ => {}
    }
}

/// The messages of one order's life, with the cases around the usual path.
fn life(order: &SimOrder, rng: &mut SmallRng) -> Vec<Sent> {
    let id = order.id();
    let store = order.rows.order.store.clone();
    let t0 = order.rows.order.placed_at;
    let at = |minute: i64| t0 + Duration::minutes(minute);
    let lines = order.lines();
    let physical = order.shipped_lines();
    let mut out: Vec<Sent> = order.lifecycle().iter().map(from_sim).collect();
    let state = |status: &str, reason: &str, minute: i64, payment: &str| -> Vec<LineState> {
        lines
            .iter()
            .map(|l| LineState {
                line_id: l.line_id.clone(),
                line_number: l.line_number,
                status: status.into(),
                reason: reason.into(),
                date: at(minute),
                payment_status: payment.into(),
                payment_date: at(minute),
            })
            .collect()
    };
    // An update without dates (header and lines), and one of an equal date as LOGISTICS.
    let mut dateless = from_sim(&order.updated(
        "LOGISTICS",
        "READYTOSHIP",
        at(3),
        &state("LOGISTICS", "READYTOSHIP", 3, "AUTHORIZED"),
    ));
    without_dates(&mut dateless.params);
    out.push(dateless);
    out.push(from_sim(&order.updated(
        "ONHOLD",
        "FRAUD",
        at(3),
        &state("ONHOLD", "FRAUD", 3, "AUTHORIZED"),
    )));
    // Captures of some lines reported earlier than the lifecycle's, and of others without a
    // date: invoices made, dated back, or made at the batch's clock.
    let mut part = state("LOGISTICS", "PARTIALLYSHIPPED", 2, "CAPTURED");
    part.retain(|_| rng.random_bool(0.5));
    if !part.is_empty() {
        out.push(from_sim(&order.updated(
            "LOGISTICS",
            "PARTIALLYSHIPPED",
            at(2),
            &part,
        )));
    }
    if rng.random_bool(0.5) {
        let mut undated = from_sim(&order.updated(
            "LOGISTICS",
            "PARTIALLYSHIPPED",
            at(2),
            &state("LOGISTICS", "PARTIALLYSHIPPED", 2, "CAPTURED")[..1],
        ));
        without_dates(&mut undated.params);
        out.push(undated);
    }
    // A line cancelled, with the capture of every other line: whichever comes last invoices
    // the shipping; and a line that was never exported.
    if let Some(line) = lines.choose(rng) {
        out.push(Sent {
            method: methods::LINE_CANCELLED,
            params: json!({"order_id": id, "order_line_id": line.line_id}),
        });
        let mut others = state("LOGISTICS", "PARTIALLYSHIPPED", 3, "CAPTURED");
        others.retain(|l| l.line_id != line.line_id);
        out.push(from_sim(&order.updated(
            "LOGISTICS",
            "PARTIALLYSHIPPED",
            at(3),
            &others,
        )));
    }
    out.push(Sent {
        method: methods::LINE_CANCELLED,
        params: json!({"order_id": id, "order_line_id": "NO-SUCH-LINE"}),
    });
    // Attributes changed twice (arrival order decides), of a line, and of a line not there.
    for value in ["red", "blue"] {
        out.push(Sent {
            method: methods::CUSTOM_ATTRIBUTES_UPDATED,
            params: json!({"custom_attributes_modification": {"order_id": id,
                "sales_channel_id": store,
                "custom_attributes": [{"name": "gift_wrap", "value": value},
                                      {"name": "note", "value": "fragile"}]}}),
        });
    }
    let line = &lines[0];
    for (line_id, value) in [
        (line.line_id.as_str(), "A"),
        (line.line_id.as_str(), "B"),
        ("NOPE", "C"),
    ] {
        out.push(Sent {
            method: methods::LINE_CUSTOM_ATTRIBUTES_UPDATED,
            params: json!({"line_custom_attributes_modification": {"order_id": id,
                "line_id": line_id,
                "custom_attributes": [{"name": "engraving", "value": value}]}}),
        });
    }
    // The shipping address changed twice (the first splits it from the billing address).
    for street in ["1 First Street", "2 Second Street"] {
        out.push(Sent {
            method: methods::SHIPPING_ADDRESS_UPDATED,
            params: json!({"shipping_address_modification": {
                "sales_channel_id": store, "order_id": id,
                "line_number": line.line_number.to_string(), "user": "agent",
                "new_shipping_address": {"first_name": "Ada", "last_name": "Lovelace",
                    "address1": street, "city": "Berlin", "zip": "10115",
                    "country_code": "DE", "email": "ada@example.com"}}}),
        });
    }
    // Shipments: one line alone (overlapping the lifecycle's shipment of all of them),
    // the same by its id again, and one naming a line twice (by its id and by its number).
    if let Some(first) = physical.first() {
        out.push(from_sim(&order.shipment(
            &[first],
            at(4),
            Some("S-1"),
            "1ZPART",
        )));
        out.push(from_sim(&order.shipment(
            &[first],
            at(4),
            Some("S-1"),
            "1ZPART",
        )));
        let mut twice = from_sim(&order.shipment(&[first], at(4), None, "1ZTWICE"));
        let by_id = twice.params["shipment"]["items"][0].clone();
        let mut by_number = by_id.clone();
        by_number.as_object_mut().unwrap().remove("order_line_id");
        twice.params["shipment"]["items"] = json!([by_id, by_number]);
        out.push(twice);
    }
    // Another channel's order of the same id.
    let mut foreign = from_sim(&order.created(at(0)));
    foreign.params["order"]["store"] = json!("marketplace");
    out.push(foreign);
    out
}

/// Messages about orders that are not here: one of this shop's channel (retried: it may be on
/// its way) and one of another channel's (recorded).
fn strangers(case: u64) -> Vec<Sent> {
    ["default", "marketplace"]
        .iter()
        .map(|store| Sent {
            method: methods::UPDATED,
            params: json!({"order": {"id": format!("ELSEWHERE-{case}"), "store": store,
                "status": "LOGISTICS", "status_date": "2026-03-01T10:00:00Z", "lines": []}}),
        })
        .collect()
}

struct Side {
    env: TestEnv,
    pool: Pool,
}

impl Side {
    async fn new() -> Self {
        let env = TestEnv::new().await;
        let pool = runtime::db::pool(&env.database_url, "omsc-test", 1).unwrap();
        Self { env, pool }
    }

    /// Places the orders; the exported ones have their lines, and the confirmed ones their
    /// export marked sent.
    async fn place(&self, orders: &[(SimOrder, bool, bool)]) {
        let client = self.pool.get().await.unwrap();
        for (order, exported, confirmed) in orders {
            orders::place(&self.env.db, &order.rows).await.unwrap();
            if *exported {
                sales::export::save_lines(&client, order.id(), &order.lines())
                    .await
                    .unwrap();
            }
            if *confirmed {
                client
                    .execute(
                        "UPDATE outbox SET sent_at = now() WHERE module = 'sales' AND subject = $1",
                        &[&order.id()],
                    )
                    .await
                    .unwrap();
            }
        }
    }

    async fn apply(
        &self,
        handler: &SalesHandler,
        batch: &[&SalesMessage],
        one_by_one: bool,
    ) -> Vec<Outcome> {
        let mut client = self.pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        let outcomes = if one_by_one {
            handler.apply_one_by_one(&tx, batch).await.unwrap()
        } else {
            handler.apply(&tx, batch).await.unwrap()
        };
        tx.commit().await.unwrap();
        let mut named = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            named.push(self.name_shipment(outcome).await);
        }
        named
    }

    /// A reason that names an earlier shipment by its id (a serial, which differs between
    /// the two databases) names it by its key instead, so the comparison checks that both
    /// name the same shipment.
    async fn name_shipment(&self, outcome: Outcome) -> Outcome {
        const SHIPMENT: &str = "already shipped in shipment ";
        let Outcome::Reject(reason) = &outcome else {
            return outcome;
        };
        let Some((head, tail)) = reason.split_once(SHIPMENT) else {
            return outcome;
        };
        let (id, rest) = tail
            .split_once(';')
            .expect("the shipment id ends the clause");
        let id: i64 = id.parse().expect("a shipment id");
        let key: String = self
            .env
            .db
            .query_one(
                "SELECT shipment_key FROM sales_shipments WHERE id = $1",
                &[&id],
            )
            .await
            .expect("the shipment a reason names is stored")
            .get(0);
        Outcome::Reject(format!("{head}{SHIPMENT}{key};{rest}"))
    }

    /// Every row of every sales table the handler writes, as JSON text: serial ids replaced
    /// by the natural keys they stand for, and the connector's clock by whether it is set
    /// (or, for a capture dated by the clock, by "clock").
    async fn rows(&self) -> Vec<String> {
        let queries = [
            "SELECT (to_jsonb(o) - 'updated_at' - 'placed_xact' - 'oms_accepted_at'
                     || jsonb_build_object('accepted', o.oms_accepted_at IS NOT NULL))::text
               FROM sales_orders o",
            "SELECT (to_jsonb(l) - 'cancelled_at'
                     || jsonb_build_object('cancelled', l.cancelled_at IS NOT NULL))::text
               FROM sales_order_lines l",
            "SELECT (to_jsonb(a) - 'updated_at')::text FROM sales_order_attributes a",
            "SELECT (to_jsonb(a) - 'updated_at')::text FROM sales_order_line_attributes a",
            "SELECT (to_jsonb(a) - 'oms_updated_at'
                     || jsonb_build_object('changed', a.oms_updated_at IS NOT NULL))::text
               FROM sales_order_addresses a",
            "SELECT (to_jsonb(i) - 'id' - 'created_at' - 'captured_at'
                     || jsonb_build_object('captured_at', CASE WHEN i.captured_at > '2026-06-01'
                                                               THEN 'clock'
                                                               ELSE i.captured_at::text END))::text
               FROM sales_invoices i",
            "SELECT (to_jsonb(l) - 'invoice_id'
                     || jsonb_build_object('invoice', i.first_line_id))::text
               FROM sales_invoice_lines l JOIN sales_invoices i ON i.id = l.invoice_id",
            "SELECT (to_jsonb(s) - 'id' - 'created_at')::text FROM sales_shipments s",
            "SELECT (to_jsonb(l) - 'shipment_id'
                     || jsonb_build_object('shipment', s.shipment_key))::text
               FROM sales_shipment_lines l JOIN sales_shipments s ON s.id = l.shipment_id",
            "SELECT (to_jsonb(p) - 'shipment_id'
                     || jsonb_build_object('order', s.order_id, 'shipment', s.shipment_key))::text
               FROM sales_shipment_packages p JOIN sales_shipments s ON s.id = p.shipment_id",
            "SELECT (to_jsonb(f) - 'first_seen' - 'last_seen')::text FROM sales_foreign_orders f",
        ];
        let mut out = Vec::new();
        for q in queries {
            let mut rows: Vec<String> = self
                .env
                .db
                .query(q, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            rows.sort();
            out.extend(rows);
        }
        out
    }
}

#[tokio::test]
async fn a_batch_applies_as_its_messages_one_by_one() {
    let batched = Side::new().await;
    let model = Side::new().await;
    let handler = SalesHandler::new(SalesChannel::new(None));
    let limits = protocol::Limits::default();
    let mut seen: std::collections::BTreeMap<&'static str, usize> = Default::default();
    for case in 0..CASES {
        let mut rng = SmallRng::seed_from_u64(case);
        let orders: Vec<(SimOrder, bool, bool)> = orders::generate(&OrdersSpec {
            seed: case,
            orders: ORDERS_PER_CASE,
            id_prefix: format!("B{case}-"),
            ..OrdersSpec::default()
        })
        .into_iter()
        .map(|o| (o, rng.random_bool(0.8), rng.random_bool(0.7)))
        .collect();
        batched.place(&orders).await;
        model.place(&orders).await;

        let mut sent: Vec<Sent> = orders
            .iter()
            .flat_map(|(o, _, _)| life(o, &mut rng))
            .collect();
        sent.extend(strangers(case));
        // Shuffled, and a third of them delivered again.
        let again: Vec<Sent> = sent
            .iter()
            .filter(|_| rng.random_bool(0.3))
            .cloned()
            .collect();
        sent.extend(again);
        sent.shuffle(&mut rng);
        let messages: Vec<SalesMessage> = sent
            .iter()
            .map(|s| {
                let raw = serde_json::value::to_raw_value(&s.params).unwrap();
                handler
                    .parse(s.method, &raw, &limits)
                    .unwrap_or_else(|e| panic!("case {case}: {} does not parse: {e:?}", s.method))
            })
            .collect();

        let mut rest: &[SalesMessage] = &messages;
        while !rest.is_empty() {
            let size = rng.random_range(1..=rest.len().min(40));
            let (batch, tail) = rest.split_at(size);
            rest = tail;
            let batch: Vec<&SalesMessage> = batch.iter().collect();
            let got = batched.apply(&handler, &batch, false).await;
            let want = model.apply(&handler, &batch, true).await;
            assert_eq!(got, want, "case {case}: the outcomes of a batch of {size}");
            for outcome in got {
                *seen.entry(outcome.label()).or_default() += 1;
            }
        }
        let (got, want) = (batched.rows().await, model.rows().await);
        assert_eq!(got.len(), want.len(), "case {case}: row counts");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "case {case}: a row differs");
        }
    }
    eprintln!("outcomes compared: {seen:?}");
    // Every outcome occurred, so every path of the rules was compared.
    for label in ["applied", "stale", "ignored", "retried", "dead"] {
        assert!(
            seen.get(label).copied().unwrap_or(0) > 0,
            "no message ended {label}: {seen:?}"
        );
    }
    batched.env.teardown().await;
    model.env.teardown().await;
}
