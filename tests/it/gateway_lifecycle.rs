//! An order's whole life through the gateway only: the storefront places it, the bus
//! receives `order_management.create` at `/delegate/oms`, and the OMS's messages come back
//! through the bus to the callback URL, signed. Nothing of the OMS side touches the broker.

use serde_json::Value;
use simulate::orders::{self, OrdersSpec};

use crate::gateway::{post, start_gateway_with};
use crate::gateway_bus::TestBus;
use crate::helpers::{PATIENCE, TestEnv, wait_until};
use crate::sales_support::{end_state, place_all};

const SECRET: &str = "bus-secret";

#[tokio::test]
async fn an_order_placed_in_the_shop_completes_shipped_and_invoiced_through_the_bus() {
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    let url = format!("--oms-url={}", bus.base);
    let secret = format!("--registration-secret={SECRET}");
    let (worker, callback) = start_gateway_with(&env, &[&secret], &[&url], |app| {
        sales::install(app).unwrap();
    })
    .await;
    let placed = orders::generate(&OrdersSpec {
        orders: 2,
        virtual_share: 0.0,
        ..OrdersSpec::default()
    });
    place_all(&env, &placed).await;

    // The bus receives each order's creation as a command for the OMS.
    wait_until("the orders at the bus", PATIENCE, || async {
        bus.calls_of(protocol::sales::methods::CREATE)
            .iter()
            .filter(|c| c.status == 200)
            .count()
            == placed.len()
    })
    .await;
    for call in bus.calls_of(protocol::sales::methods::CREATE) {
        assert_eq!(call.path, "/delegate/oms");
    }

    // The OMS answers through the bus: created, the status updates, the shipment, the
    // capture (payments CAPTURE_REQUESTED from LOGISTICSCOMPLETE on).
    for order in &placed {
        for message in order.lifecycle() {
            let signature = gateway::signature::sign(SECRET.as_bytes(), &message.body);
            let reply = post(callback, &message.body, &[("X-Signature", &signature)]).await;
            assert_eq!(reply.status, 200, "{}: {reply:?}", message.method);
            assert_eq!(reply.json()["result"], Value::Null, "{}", message.method);
        }
    }
    wait_until(
        "the orders complete, shipped and invoiced",
        PATIENCE,
        || async {
            let state = end_state(&env).await;
            placed.iter().all(|order| {
                let id = order.id();
                let ours = |row: &&String| row.starts_with(&format!("{id} |"));
                let complete = state
                    .iter()
                    .filter(ours)
                    .any(|row| row.contains("| complete | COMPLETE | FULLYSHIPPED |"));
                let shipped = state
                    .iter()
                    .filter(ours)
                    .any(|row| row.contains(&format!("1Z{id}")));
                let invoiced = env_invoiced(&state, id);
                complete && shipped && invoiced
            })
        },
    )
    .await;
    env.assert_no_dead_letters().await;
    worker.stop().await;
    bus.stop();
    env.teardown().await;
}

/// An invoice row of the order: `order | captured_at | grand total | lines`.
fn env_invoiced(state: &[String], id: &str) -> bool {
    state
        .iter()
        .any(|row| row.starts_with(&format!("{id} | ")) && row.split(" | ").count() == 4)
}
