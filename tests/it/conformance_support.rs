//! The OMS's side of the conformance tests: a shop with one sales worker, the orders it
//! exported as the OMS received them, and the OMS's messages written the way real senders
//! write them (the mock templates filled in, the simulator's echo of the exported order),
//! never with the connector's own message builders. The end state is read back as tables a
//! person can compare with the ones written in the tests.

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use sales::export::{ItemRow, OrderRows};
use serde_json::{Value, json};
use simulate::orders::{self, order_rows, simple_item};
use simulate::publish::OmsPublisher;

use crate::helpers::{PATIENCE, TestEnv, Worker, wait_until};
use crate::sales_support::{OmsInbox, Sent, oms_publisher, outcomes, start_sales};

/// The OMS mock's template of `order_management.updated`, verbatim.
pub const UPDATED_TEMPLATE: &str = include_str!(
    "../../crates/protocol/fixtures/mock-templates/magento.sales.order_management.updated.json"
);

/// When the orders of these tests were placed (the mock's `{{order.origin_date}}`).
pub fn origin() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap()
}

pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

pub fn money(cents: i64) -> Decimal {
    Decimal::new(cents, 2)
}

/// One item of `qty` units at `price` (tax included).
pub fn item(id: i64, sku: &str, qty: i32, price: Decimal) -> ItemRow {
    simple_item(id, sku, "simple", qty, price)
}

pub struct Shop {
    pub env: TestEnv,
    pub worker: Worker,
    inbox: OmsInbox,
    publisher: OmsPublisher,
    sent: usize,
}

impl Shop {
    pub async fn open() -> Self {
        Self::open_with(&[]).await
    }

    /// A shop whose sales worker runs with `flags` (`--sales-channel=…`).
    pub async fn open_with(flags: &[&str]) -> Self {
        let env = TestEnv::new().await;
        let inbox = OmsInbox::bind(&env).await;
        let worker = if flags.is_empty() {
            start_sales(&env).await
        } else {
            env.start_runtime(flags, |app| sales::install(app).unwrap())
                .await
        };
        let publisher = oms_publisher(&env).await;
        Self {
            env,
            worker,
            inbox,
            publisher,
            sent: 0,
        }
    }

    /// Places an order as a storefront does and returns the `order` object of its export as
    /// the OMS received it.
    pub async fn place(&mut self, id: &str, items: Vec<ItemRow>) -> Value {
        self.place_rows(&order_rows(id, "default", origin(), items))
            .await
    }

    /// [`Shop::place`] for rows a test wrote.
    pub async fn place_rows(&mut self, rows: &OrderRows) -> Value {
        let id = rows.order.id.as_str();
        orders::place(&self.env.db, rows).await.unwrap();
        loop {
            let sent = self.inbox.next().await;
            if sent.body["method"] == "magento.sales.order_management.create"
                && sent.body["params"]["order"]["id"] == id
            {
                return sent.body["params"]["order"].clone();
            }
        }
    }

    /// Sends one message as the OMS does and waits until the connector has settled it
    /// (applied, stale or ignored as another channel's), so that the order of the calls is
    /// the order of arrival.
    pub async fn send(&mut self, method: &str, params: &Value) {
        self.publish(method, params).await;
        let worker = &self.worker;
        let expected = self.sent as f64;
        wait_until("the message settled", PATIENCE, || async {
            outcomes(worker, "applied").await
                + outcomes(worker, "stale").await
                + outcomes(worker, "ignored").await
                == expected
        })
        .await;
    }

    /// Sends one message as the OMS does, without waiting for it (one that is to be
    /// dead-lettered: wait for the dead letter instead).
    pub async fn publish(&mut self, method: &str, params: &Value) {
        self.sent += 1;
        let id = format!("oms-{}", self.sent);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
            .to_string()
            .into_bytes();
        self.publisher
            .publish_all([(method, body, id)], 1)
            .await
            .unwrap();
    }

    /// The next message the connector sends with `method`, skipping others.
    pub async fn next_sent(&mut self, method: &str) -> Sent {
        loop {
            let sent = self.inbox.next().await;
            if sent.routing_key == method {
                return sent;
            }
        }
    }

    /// Every message the connector sends next, as `(method, message id)`, until `n` arrived.
    pub async fn sent_in_order(&mut self, n: usize) -> Vec<Sent> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(self.inbox.next().await);
        }
        out
    }

    /// Rows of `sql` as text cells (null as `∅`), under a header row.
    pub async fn table(&self, header: &[&str], sql: &str) -> Vec<Vec<String>> {
        let mut out = vec![header.iter().map(|h| h.to_string()).collect()];
        for row in self.env.db.query(sql, &[]).await.unwrap() {
            out.push(crate::helpers::text_cells(&row));
        }
        out
    }

    pub async fn orders(&self) -> Vec<Vec<String>> {
        self.table(
            &["order", "state", "OMS status", "reason", "status date"],
            "SELECT id, state, oms_status, oms_status_reason,
                    to_char(oms_status_date AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
               FROM sales_orders ORDER BY id",
        )
        .await
    }

    pub async fn lines(&self) -> Vec<Vec<String>> {
        self.table(
            &["order", "line", "status", "payment"],
            "SELECT order_id, line_id, status, payment_status
               FROM sales_order_lines ORDER BY order_id, line_number",
        )
        .await
    }

    pub async fn invoices(&self) -> Vec<Vec<String>> {
        self.table(
            &["order", "captured at", "lines", "total", "tax"],
            "SELECT i.order_id,
                    to_char(i.captured_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                    (SELECT string_agg(line_id, ',' ORDER BY line_id) FROM sales_invoice_lines l
                      WHERE l.invoice_id = i.id),
                    i.grand_total::text, i.tax_amount::text
               FROM sales_invoices i ORDER BY i.order_id, i.captured_at, i.first_line_id",
        )
        .await
    }

    pub async fn close(self) {
        self.env.assert_no_dead_letters().await;
        self.worker.stop().await;
        self.env.teardown().await;
    }
}

/// A table written in a test: one row a line, cells between `|`.
pub fn table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

/// What the OMS simulator sends back for every status change: the `order` object of the
/// export, with only `status` and `status_reason` changed (no `status_date` anywhere).
pub fn simulator_echo(exported: &Value, status: &str, reason: &str) -> Value {
    let mut order = exported.clone();
    order["status"] = json!(status);
    order["status_reason"] = json!(reason);
    json!({ "order": order })
}

/// One line of an order as the mock fills the template in.
#[derive(Clone)]
pub struct MockLine<'a> {
    pub id: &'a str,
    pub number: i32,
    pub sku: &'a str,
    pub status: &'a str,
    /// What the payment of the line says: its status and the amounts (gross, net, tax).
    pub payment: &'a str,
    pub gross: &'a str,
    pub net: &'a str,
    pub tax: &'a str,
}

/// The mock's `order_management.updated`: the template verbatim, its placeholders filled,
/// one `lines[]` entry per line (the mock renders its line block once per item), every
/// status date the order's origin date. `header` is the order's status and reason.
pub fn mock_update(order_id: &str, header: (&str, &str), lines: &[MockLine<'_>]) -> Value {
    let render = |line: &MockLine<'_>| -> Value {
        let values = [
            ("order.origin_date", rfc3339(origin())),
            ("order.increment_id", order_id.to_owned()),
            ("order.store", "default".to_owned()),
            ("order.total_amount", "0".to_owned()),
            ("order.address1", "1 Main Street".to_owned()),
            ("order.city", "Berlin".to_owned()),
            ("order.country_code", "DE".to_owned()),
            ("order.email", "guest@example.com".to_owned()),
            ("order.first_name", "Ada".to_owned()),
            ("order.last_name", "Lovelace".to_owned()),
            ("order.zip", "10115".to_owned()),
            ("order_item.id", line.id.to_owned()),
            ("order_item.line_number", line.number.to_string()),
            ("order_item.product_name", line.sku.to_owned()),
            ("order_item.sku", line.sku.to_owned()),
            ("order_item.source_id", "default".to_owned()),
            ("order_item.status", line.status.to_owned()),
            ("order_item.gross_amount", line.gross.to_owned()),
            ("order_item.net_amount", line.net.to_owned()),
            ("order_item.taxes_amount", line.tax.to_owned()),
            ("order_item.taxes_rate", "19".to_owned()),
        ];
        let mut text = UPDATED_TEMPLATE.to_owned();
        for (k, v) in &values {
            text = text.replace(&format!("{{{{{k}}}}}"), v);
        }
        assert!(!text.contains("{{"), "unfilled placeholder in {text}");
        let mut params: Value = serde_json::from_str(&text).unwrap();
        // The template's payment status is CAPTURE_REQUESTED; the mock sends what the
        // payment is at.
        params["order"]["lines"][0]["payments"][0]["status"] = json!(line.payment);
        params
    };
    let mut params = render(&lines[0]);
    params["order"]["lines"] = Value::Array(
        lines
            .iter()
            .map(|l| render(l)["order"]["lines"][0].clone())
            .collect(),
    );
    params["order"]["status"] = json!(header.0);
    params["order"]["status_reason"] = json!(header.1);
    params
}

/// Every permutation of `0..n`, in lexicographic order.
pub fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for first in 0..n {
        for rest in permutations(n - 1) {
            let mut p = vec![first];
            p.extend(rest.into_iter().map(|i| if i >= first { i + 1 } else { i }));
            out.push(p);
        }
    }
    out
}
