//! `omsc sources sync`, and the inventory worker's sync at start: every source the OMS knows,
//! read page by page from its service bus (`source_repository.search` at `{base}/remote/oms`,
//! answered in the shape of the OMS's own mock template) and saved as a source message would
//! be. Against the real PostgreSQL (and the broker, for the worker).

use std::process::Output;

use serde_json::Value;

use crate::gateway_bus::TestBus;
use crate::helpers::{PATIENCE, TestEnv, binary, wait_until};
use protocol::inventory::methods;

/// `n` sources as the OMS's mock answers them, `WH-000` …, every third one feeding `US`
/// and inactive, the others `EU`.
fn sources(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let aggregate = if i % 3 == 0 { "US" } else { "EU" };
            let template = include_str!(
                "../../crates/protocol/fixtures/mock-templates/magento.inventory.source_repository.search.json"
            )
            .replace("{{aggregate_id}}", aggregate)
            .replace("{{source_id}}", &format!("WH-{i:03}"));
            let search: Value = serde_json::from_str(&template).unwrap();
            let mut source = search["items"][0].clone();
            if i % 3 == 0 {
                source["configurations"]["active"] = Value::Bool(false);
            }
            source
        })
        .collect()
}

async fn sync(env: &TestEnv, bus: &TestBus, extra_env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(binary("omsc"));
    command
        .args(["sources", "sync", "--page-size", "100"])
        .env("DATABASE_URL", &env.database_url)
        .env("OMSC_OMS_URL", &bus.base)
        .env("RUST_LOG", "warn");
    for (k, v) in extra_env {
        command.env(k, v);
    }
    command.output().await.unwrap()
}

async fn saved(env: &TestEnv) -> Vec<(String, Option<String>, Option<String>, bool)> {
    env.db
        .query(
            "SELECT source_id, name, source_type, active FROM sources ORDER BY source_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test]
async fn sync_fetches_every_page_and_saves_every_source() {
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    bus.set_sources(sources(250));
    // The bus wants a token: the sync logs in as the gateway does.
    bus.require_token();
    let output = sync(&env, &bus, &[("OMSC_OMS_OAUTH_CLIENT_ID", "connector")]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("250 source(s) saved from 3 page(s) (the bus counts 250)"),
        "{stdout}"
    );

    // Three pages, asked in the specification's query shape, at /remote/oms, with a token.
    let calls = bus.calls_of(methods::SOURCE_SEARCH);
    assert_eq!(calls.len(), 3, "{calls:?}");
    for (call, offset) in calls.iter().zip([0, 100, 200]) {
        assert_eq!(call.path, "/remote/oms");
        assert_eq!(call.body["jsonrpc"], "2.0");
        assert_eq!(call.body["params"]["query"]["offset"], offset);
        assert_eq!(call.body["params"]["query"]["size"], 100);
        assert_eq!(call.authorization.as_deref(), Some("Bearer token-1"));
    }
    assert_ne!(calls[0].body["id"], calls[1].body["id"]);

    let rows = saved(&env).await;
    assert_eq!(rows.len(), 250);
    assert_eq!(
        rows[7],
        (
            "WH-007".into(),
            Some("WH-007".into()),
            Some("Warehouse".into()),
            true
        )
    );
    assert_eq!(
        rows[9],
        (
            "WH-009".into(),
            Some("WH-009".into()),
            Some("Warehouse".into()),
            false
        )
    );
    let aggregates: Vec<(String, String)> = env
        .db
        .query(
            "SELECT source_id, aggregate_id FROM source_aggregates
              WHERE source_id IN ('WH-000', 'WH-001', 'WH-249') ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        aggregates,
        [
            ("WH-000".into(), "US".into()),
            ("WH-001".into(), "EU".into()),
            ("WH-249".into(), "US".into()),
        ]
    );

    // Again, after a source was renamed in the OMS: it is updated, nothing else changes.
    let mut renamed = sources(250);
    renamed[7]["name"] = Value::from("Central warehouse");
    bus.set_sources(renamed);
    let again = sync(&env, &bus, &[("OMSC_OMS_OAUTH_CLIENT_ID", "connector")]).await;
    assert!(again.status.success());
    let mut expected = rows.clone();
    expected[7].1 = Some("Central warehouse".into());
    assert_eq!(saved(&env).await, expected);
    env.teardown().await;
}

#[tokio::test]
async fn a_bus_that_cannot_answer_or_refuses_fails_the_sync_with_its_words() {
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    bus.set_sources(sources(5));

    bus.set_down(true);
    let output = sync(&env, &bus, &[]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("reading the sources from the bus") && stderr.contains("503"),
        "{stderr}"
    );
    assert!(saved(&env).await.is_empty());

    bus.set_down(false);
    bus.refuse_method(methods::SOURCE_SEARCH, "no such service: inventory");
    let output = sync(&env, &bus, &[]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("the bus refused magento.inventory.source_repository.search")
            && stderr.contains("no such service: inventory"),
        "{stderr}"
    );
    assert!(saved(&env).await.is_empty());

    // No bus configured at all: said so, not a connection error.
    let output = tokio::process::Command::new(binary("omsc"))
        .args(["sources", "sync"])
        .env("DATABASE_URL", &env.database_url)
        .env_remove("OMSC_OMS_URL")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("OMSC_OMS_URL is not set"));
    env.teardown().await;
}

#[tokio::test]
async fn an_invalid_source_is_named_and_the_others_are_saved() {
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    let mut list = sources(4);
    list[2].as_object_mut().unwrap().remove("id");
    bus.set_sources(list);
    let output = sync(&env, &bus, &[]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("refused: source 2 of the bus's list: items[2]")
            && stderr.contains("\"id\""),
        "{stderr}"
    );
    let ids: Vec<String> = saved(&env).await.into_iter().map(|r| r.0).collect();
    assert_eq!(ids, ["WH-000", "WH-001", "WH-003"]);
    env.teardown().await;
}

#[tokio::test]
async fn an_inventory_worker_reads_the_sources_at_start_without_waiting_for_the_bus() {
    let env = TestEnv::new().await;
    let bus = TestBus::start().await;
    bus.set_sources(sources(120));
    bus.set_down(true);
    let (_, inventory_config) = env.flags(&[]);
    let bus_config = crate::gateway::gateway_config(&[&format!("--oms-url={}", bus.base)]).bus;
    // Ready (consuming) while the bus is still away: the sync does not hold the consumer.
    let worker = env
        .start_runtime(&[], |app| {
            inventory::install_with_bus(app, &inventory_config, Some(&bus_config)).unwrap();
        })
        .await;
    wait_until("a first attempt at the bus", PATIENCE, || async {
        !bus.calls_of(methods::SOURCE_SEARCH).is_empty()
    })
    .await;
    assert!(saved(&env).await.is_empty());

    // The bus comes back: the retry reads both pages.
    bus.set_down(false);
    wait_until("120 sources", PATIENCE, || async {
        saved(&env).await.len() == 120
    })
    .await;
    let answered: Vec<_> = bus
        .calls_of(methods::SOURCE_SEARCH)
        .into_iter()
        .filter(|c| c.status == 200)
        .map(|c| c.body["params"]["query"]["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(answered, [0, 100]);
    worker.stop().await;
    env.teardown().await;
}
