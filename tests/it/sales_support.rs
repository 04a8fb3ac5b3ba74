//! What the sales tests share: a sales worker, the OMS's side of the broker (its inbox on
//! `commerce.events`, its publisher on `oms.events`), placing orders, and the end state of
//! the sales tables in a form that can be compared between runs.

use futures::StreamExt;
use lapin::options::BasicAckOptions;
use simulate::orders::{self, OmsMessage, SimOrder};
use simulate::publish::OmsPublisher;

use crate::helpers::{AMQP_URL, PATIENCE, TestEnv, Worker, amqp, wait_until};

pub async fn start_sales(env: &TestEnv) -> Worker {
    env.start_runtime(&[], |app| sales::install(app).unwrap())
        .await
}

/// A publisher on the OMS exchange, with the sales queue declared first.
pub async fn oms_publisher(env: &TestEnv) -> OmsPublisher {
    let connection = amqp().await;
    let channel = connection.create_channel().await.unwrap();
    runtime::Topology::new(&env.prefix, runtime::config::QueueType::Quorum)
        .declare(&channel, &sales::QUEUE)
        .await
        .unwrap();
    OmsPublisher::connect(AMQP_URL, &format!("{}oms.events", env.prefix))
        .await
        .unwrap()
}

pub async fn publish(publisher: &OmsPublisher, messages: &[&OmsMessage]) {
    publisher
        .publish_all(
            messages
                .iter()
                .map(|m| (m.method, m.body.clone(), m.id.clone())),
            64,
        )
        .await
        .unwrap();
}

/// The OMS's queue on `commerce.events`, bound to everything the connector sends.
pub struct OmsInbox {
    _connection: lapin::Connection,
    consumer: lapin::Consumer,
}

/// One message the connector sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub routing_key: String,
    pub message_id: String,
    pub body: serde_json::Value,
    pub raw: Vec<u8>,
}

impl OmsInbox {
    pub async fn bind(env: &TestEnv) -> Self {
        let (connection, _, consumer) = crate::helpers::oms_listener(env, "#", None).await;
        Self {
            _connection: connection,
            consumer,
        }
    }

    pub async fn next(&mut self) -> Sent {
        let delivery = tokio::time::timeout(PATIENCE, self.consumer.next())
            .await
            .expect("a message from the connector")
            .unwrap()
            .unwrap();
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        Sent {
            routing_key: delivery.routing_key.as_str().to_owned(),
            message_id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            body: serde_json::from_slice(&delivery.data).unwrap(),
            raw: delivery.data,
        }
    }
}

/// Places the orders as a storefront does.
pub async fn place_all(env: &TestEnv, orders: &[SimOrder]) {
    for order in orders {
        orders::place(&env.db, &order.rows).await.unwrap();
    }
}

/// Waits until every order of the database has been exported (its outbox row sent).
pub async fn wait_exported(env: &TestEnv, count: i64) {
    wait_until(&format!("{count} orders exported"), PATIENCE, || async {
        let row = env
            .db
            .query_one(
                "SELECT count(*) FILTER (WHERE sent_at IS NOT NULL),
                        count(*) FILTER (WHERE sent_at IS NULL)
                   FROM outbox WHERE module = 'sales' AND topic = 'order.create'",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0) == count && row.get::<_, i64>(1) == 0
    })
    .await;
}

/// The sales tables as text, without serial ids or connector clocks: equal for two
/// databases that received the same facts.
pub async fn end_state(env: &TestEnv) -> Vec<String> {
    let queries = [
        "SELECT id, state, oms_status, oms_status_reason, oms_status_date::text,
                oms_accepted_at IS NOT NULL
           FROM sales_orders ORDER BY id",
        "SELECT order_id, line_id, status, status_reason, status_date::text, payment_status,
                payment_status_date::text, cancelled_at IS NOT NULL
           FROM sales_order_lines ORDER BY order_id, line_number",
        "SELECT s.order_id, s.shipment_key, s.source_id, s.shipped_at::text,
                (SELECT string_agg(line_id, ',' ORDER BY line_id) FROM sales_shipment_lines l
                  WHERE l.shipment_id = s.id),
                (SELECT string_agg(coalesce(carrier, '') || '/' || coalesce(tracking_number, ''), ','
                                   ORDER BY package_id)
                   FROM sales_shipment_packages p WHERE p.shipment_id = s.id)
           FROM sales_shipments s ORDER BY 1, 2",
        "SELECT i.order_id, i.captured_at::text, i.grand_total::text,
                (SELECT string_agg(line_id, ',' ORDER BY line_id) FROM sales_invoice_lines l
                  WHERE l.invoice_id = i.id)
           FROM sales_invoices i ORDER BY 1, 2",
        "SELECT order_id, code, value FROM sales_order_attributes ORDER BY 1, 2",
        "SELECT order_id, line_id, code, value FROM sales_order_line_attributes ORDER BY 1, 2, 3",
    ];
    crate::helpers::text_rows(env, &queries).await
}

/// How many messages of the sales module ended with `outcome`.
pub async fn outcomes(worker: &Worker, outcome: &str) -> f64 {
    worker
        .metric(
            "omsc_messages_total",
            &[("module", "sales"), ("outcome", outcome)],
        )
        .await
}
