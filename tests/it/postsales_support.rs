//! What the post-sales tests share: a post-sales worker, orders that are placed, exported and
//! shipped the way the sales module leaves them, orders paid partly by gift card or store
//! credit, and the end state of the post-sales tables in a form that can be compared
//! between runs.

use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use simulate::orders::{SimOrder, order_rows, simple_item};
use simulate::publish::OmsPublisher;

use crate::helpers::{AMQP_URL, PATIENCE, TestEnv, Worker, amqp, wait_until};
use crate::sales_support::place_all;

pub async fn start_postsales(env: &TestEnv) -> Worker {
    env.start_runtime(&[], |app| postsales::install(app).unwrap())
        .await
}

/// A publisher on the OMS exchange, with the post-sales queue declared first.
pub async fn oms_publisher(env: &TestEnv) -> OmsPublisher {
    let connection = amqp().await;
    let channel = connection.create_channel().await.unwrap();
    runtime::Topology::new(&env.prefix, runtime::config::QueueType::Quorum)
        .declare(&channel, &postsales::QUEUE)
        .await
        .unwrap();
    OmsPublisher::connect(AMQP_URL, &format!("{}oms.events", env.prefix))
        .await
        .unwrap()
}

/// An order of `customer` (a guest when `None`) with a mug at 30.00, two plates at 25.00 and
/// flat-rate shipping at 5.00 (lines total 85.00), `gift_card` of it paid by gift card and
/// `store_credit` by store credit.
pub fn paid_order(
    id: &str,
    customer: Option<&str>,
    gift_card: Decimal,
    store_credit: Decimal,
) -> SimOrder {
    let mut rows = order_rows(
        id,
        "default",
        Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap(),
        vec![
            simple_item(1, "MUG", "simple", 1, Decimal::new(3000, 2)),
            simple_item(2, "PLATE", "simple", 2, Decimal::new(2500, 2)),
        ],
    );
    rows.order.customer_id = customer.map(str::to_owned);
    rows.order.gift_card_amount = gift_card;
    if gift_card > Decimal::ZERO {
        rows.order.gift_card_codes = vec![format!("GC-{id}")];
    }
    rows.order.store_credit_amount = store_credit;
    SimOrder { rows }
}

/// Places the orders as a storefront does, then leaves them as the sales module would after
/// exporting them and hearing of their shipment: the exported lines kept, the export marked
/// sent, and the lines `ship` picks shipped (the physical ones by default).
pub async fn placed_and_shipped(env: &TestEnv, orders: &[SimOrder]) {
    placed_and_shipped_where(env, orders, |_| true).await;
}

pub async fn placed_and_shipped_where(
    env: &TestEnv,
    orders: &[SimOrder],
    ship: impl Fn(&sales::export::ExportedLine) -> bool,
) {
    place_all(env, orders).await;
    let pool = runtime::db::pool(&env.database_url, "omsc-test", 1).unwrap();
    let connector = pool.get().await.unwrap();
    for order in orders {
        let lines = order.lines();
        sales::export::save_lines(&connector, order.id(), &lines)
            .await
            .unwrap();
        let shipped: Vec<&str> = lines
            .iter()
            .filter(|l| l.product_type == protocol::sales::product_types::PHYSICAL && ship(l))
            .map(|l| l.line_id.as_str())
            .collect();
        if shipped.is_empty() {
            continue;
        }
        let shipped_at: DateTime<Utc> = order.rows.order.placed_at + Duration::days(1);
        let id: i64 = connector
            .query_one(
                "INSERT INTO sales_shipments (order_id, shipment_key, source_id, method, shipped_at)
                 VALUES ($1, 'test:' || $1, 'WH-1', 'STANDARD', $2) RETURNING id",
                &[&order.id(), &shipped_at],
            )
            .await
            .unwrap()
            .get(0);
        connector
            .execute(
                "INSERT INTO sales_shipment_lines (order_id, line_id, shipment_id)
                 SELECT $1, l, $2 FROM unnest($3::text[]) AS l",
                &[&order.id(), &id, &shipped],
            )
            .await
            .unwrap();
    }
    connector
        .execute(
            "UPDATE outbox SET sent_at = now() WHERE module = 'sales' AND sent_at IS NULL",
            &[],
        )
        .await
        .unwrap();
}

/// Waits until every return authorization queued so far has been sent.
pub async fn wait_authorized(env: &TestEnv, count: i64) {
    wait_until(&format!("{count} returns authorized"), PATIENCE, || async {
        let row = env
            .db
            .query_one(
                "SELECT count(*) FILTER (WHERE sent_at IS NOT NULL),
                        count(*) FILTER (WHERE sent_at IS NULL)
                   FROM outbox WHERE module = 'postsales' AND topic = 'return.authorize'",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0) == count && row.get::<_, i64>(1) == 0
    })
    .await;
}

/// How many messages of the post-sales module ended with `outcome`.
pub async fn outcomes(worker: &Worker, outcome: &str) -> f64 {
    worker
        .metric(
            "omsc_messages_total",
            &[("module", "postsales"), ("outcome", outcome)],
        )
        .await
}

/// Waits until the worker has applied or found stale `count` messages in all.
pub async fn wait_settled(worker: &Worker, count: usize) {
    wait_until(&format!("{count} messages settled"), PATIENCE, || async {
        outcomes(worker, "applied").await + outcomes(worker, "stale").await == count as f64
    })
    .await;
}

/// A customer's store credit balance.
pub async fn balance(env: &TestEnv, customer: &str) -> Decimal {
    env.db
        .query_one("SELECT store_credit_balance($1)", &[&customer])
        .await
        .unwrap()
        .get(0)
}

/// The post-sales tables as text, without serial ids or connector clocks: equal for two
/// databases that received the same facts.
pub async fn end_state(env: &TestEnv) -> Vec<String> {
    let queries = [
        "SELECT 'return', id, order_id, origin, state, oms_status, oms_status_reason,
                oms_status_date::text, received_at::text, source_id, tracking_number,
                tracking_carrier, tracking_label_url, tracking_date::text
           FROM postsales_returns ORDER BY id",
        "SELECT 'return line', return_id, line_id, reason, oms_status, oms_status_date::text,
                oms_condition, received_at::text, received_condition
           FROM postsales_return_lines ORDER BY return_id, line_id",
        "SELECT 'return attribute', return_id, code, value
           FROM postsales_return_attributes ORDER BY 2, 3",
        "SELECT 'refund', credit_note_number, order_id, rma, refund_type, status, status_reason,
                status_date::text, status_rank::text, amount::text, credit_note_date::text
           FROM postsales_refunds ORDER BY 2",
        "SELECT 'refund line', credit_note_number, line_id, amount::text, tax_amount::text
           FROM postsales_refund_lines ORDER BY 2, 3",
        "SELECT 'credit memo', m.credit_note_number, m.order_id, m.rma, m.refund_type,
                m.released_at::text, m.grand_total::text, m.payment_amount::text,
                m.store_credit_amount::text, m.unrefunded_amount::text,
                (SELECT string_agg(l.line_id || '=' || l.amount::text, ',' ORDER BY l.line_id)
                   FROM postsales_credit_memo_lines l WHERE l.credit_memo_id = m.id)
           FROM postsales_credit_memos m ORDER BY 2",
        "SELECT 'store credit', customer_id, balance::text FROM store_credit_accounts ORDER BY 2",
        "SELECT 'store credit transaction', customer_id, natural_key, kind, amount::text,
                order_id, credit_note_number
           FROM store_credit_transactions ORDER BY 2, 3",
    ];
    crate::helpers::text_rows(env, &queries).await
}

/// The rows of the end state that start with `kind` (`credit memo`, `store credit` …).
pub fn rows_of<'a>(state: &'a [String], kind: &str) -> Vec<&'a str> {
    let prefix = format!("{kind} | ");
    state
        .iter()
        .filter(|r| r.starts_with(&prefix))
        .map(String::as_str)
        .collect()
}
