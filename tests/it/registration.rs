//! Registration with the OMS: what workers announce (exactly the methods their handlers
//! consume), that one process per module registers the union, that a repeat sends nothing,
//! and what `omsc status` shows.

use protocol::service_bus::methods;
use runtime::registration::{self, Sent};
use serde_json::Value;

use crate::catalog::{catalog_config, commerce_inbox, next_json, spec_problems};
use crate::helpers::{AMQP_URL, PATIENCE, TestEnv, wait_until};

const SECRET: &str = "s3cret-do-not-print";

fn registering<'a>() -> Vec<&'a str> {
    vec![
        "--register=true",
        "--connector-id=shop-eu",
        "--callback-url=https://shop.example/oms",
        "--registration-secret=s3cret-do-not-print",
    ]
}

/// The methods a registration must announce for the modules of `app`: what their handlers
/// consume, less the connector's own operator commands, sorted.
fn expected_subscribes(app: &runtime::Runtime) -> Vec<String> {
    let mut methods: Vec<String> = app
        .consumed_methods()
        .iter()
        .filter(|m| !protocol::catalog::is_operator_command(m))
        .map(|m| (*m).to_owned())
        .collect();
    methods.sort();
    methods.dedup();
    methods
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

async fn omsc(env: &TestEnv, args: &[&str]) -> String {
    let output = env
        .binary_command(
            "omsc",
            args,
            &[
                ("OMSC_CONNECTOR_ID", "shop-eu"),
                ("OMSC_CALLBACK_URL", "https://shop.example/oms"),
                ("OMSC_REGISTRATION_SECRET", SECRET),
            ],
        )
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "omsc {args:?}: {stdout} {stderr}");
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));
    stdout
}

#[tokio::test]
async fn a_fleet_registers_exactly_the_methods_its_modules_consume() {
    let env = TestEnv::new().await;
    let (_connection, mut inbox) = commerce_inbox(&env, "magento.service_bus.remote.#").await;
    let (inventory_config, catalog_config) = (env.flags(&[]).1, catalog_config(&[]));
    let mut expected = Vec::new();
    let worker = env
        .start_runtime(&registering(), |app| {
            inventory::install(app, &inventory_config).unwrap();
            catalog::install(app, &catalog_config).unwrap();
            expected = expected_subscribes(app);
        })
        .await;
    let message = next_json(&mut inbox).await;
    assert_eq!(message["method"], methods::REGISTER);
    assert_eq!(spec_problems(&message), Vec::<String>::new());
    let params = &message["params"];
    assert_eq!(strings(&params["subscribes"]), expected);
    assert!(!expected.is_empty());
    assert_eq!(params["id"], "shop-eu");
    assert_eq!(params["url"], "https://shop.example/oms");
    assert_eq!(params["secret"], SECRET);
    assert_eq!(params["labels"]["modules"], "catalog,inventory");
    assert_eq!(params["labels"]["version"], registration::VERSION);
    wait_until(
        "the registration to be recorded as confirmed",
        PATIENCE,
        || async {
            env.db
                .query_opt(
                    "SELECT 1 FROM connector_registration
                  WHERE state = 'registered' AND confirmed_at IS NOT NULL AND message_id = $1",
                    &[&message["id"].as_str().unwrap()],
                )
                .await
                .unwrap()
                .is_some()
        },
    )
    .await;
    let stored: String = env
        .db
        .query_one(
            "SELECT row_to_json(r)::text FROM connector_registration r",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !stored.contains(SECRET),
        "the secret is never stored: {stored}"
    );
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn one_process_per_module_registers_the_union_and_a_repeat_sends_nothing() {
    let env = TestEnv::new().await;
    let (_connection, mut inbox) = commerce_inbox(&env, "magento.service_bus.remote.#").await;
    let inventory_config = env.flags(&[]).1;
    let mut inventory_methods = Vec::new();
    let inventory_worker = env
        .start_runtime(&registering(), |app| {
            inventory::install(app, &inventory_config).unwrap();
            inventory_methods = expected_subscribes(app);
        })
        .await;
    let first = next_json(&mut inbox).await;
    assert_eq!(first["params"]["labels"]["modules"], "inventory");
    assert_eq!(strings(&first["params"]["subscribes"]), inventory_methods);

    // The catalog process knows only its own methods (operator commands, which are never
    // announced, and the bus's activation), yet registers the union.
    let mut catalog_methods = Vec::new();
    let catalog_worker = {
        let config = catalog_config(&[]);
        env.start_runtime(&registering(), |app| {
            catalog::install(app, &config).unwrap();
            catalog_methods = expected_subscribes(app);
        })
        .await
    };
    assert_eq!(catalog_methods, [methods::ACTIVATE]);
    let mut union = [inventory_methods.clone(), catalog_methods].concat();
    union.sort();
    let second = next_json(&mut inbox).await;
    assert_eq!(second["params"]["labels"]["modules"], "catalog,inventory");
    assert_eq!(strings(&second["params"]["subscribes"]), union);

    // Registering the same again sends nothing.
    let (flags, _) = env.flags(&registering());
    let mut client = runtime::db::connect(&env.database_url, "test")
        .await
        .unwrap();
    let topology = runtime::Topology::new(&env.prefix, flags.queue_type);
    let (connection, publisher) = registration::open_publisher(AMQP_URL, &topology, true, "test")
        .await
        .unwrap();
    let again = registration::register(
        &mut client,
        &publisher,
        &topology,
        &flags.registration,
        "test",
        false,
    )
    .await
    .unwrap();
    assert_eq!(again, Sent::Unchanged);
    let _ = connection.close(200, "done".into()).await;

    // On demand, it is sent again (harmless), and shows in the status.
    let registered = omsc(&env, &["register"]).await;
    assert!(
        registered.contains("confirmed by the broker"),
        "{registered}"
    );
    let third = next_json(&mut inbox).await;
    assert_eq!(third["params"], second["params"]);
    let status = omsc(&env, &["status"]).await;
    for expected in [
        "Registration: registered (confirmed by the broker at",
        "id:         shop-eu",
        "secret:     set (not shown)",
        "by omsc register",
        &format!("subscribes: {} methods", union.len()),
        &inventory_methods[0],
        "\"modules\": \"catalog,inventory\"",
    ] {
        assert!(status.contains(expected), "{expected:?} not in:\n{status}");
    }
    assert!(
        status.contains("| catalog") && status.contains("| inventory"),
        "{status}"
    );

    let unregistered = omsc(&env, &["unregister"]).await;
    assert!(
        unregistered.contains("unregistered shop-eu"),
        "{unregistered}"
    );
    let last = next_json(&mut inbox).await;
    assert_eq!(last["method"], methods::UNREGISTER);
    assert_eq!(last["params"], serde_json::json!({"id": "shop-eu"}));
    let status = omsc(&env, &["status"]).await;
    assert!(status.contains("Registration: unregistered"), "{status}");
    assert!(status.contains("Modules: none recorded yet"), "{status}");

    inventory_worker.stop().await;
    catalog_worker.stop().await;
    env.teardown().await;
}
