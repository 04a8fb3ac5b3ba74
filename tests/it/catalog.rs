//! The catalog export: products of every type and shipping methods saved by a storefront
//! session become `magento.catalog.product_management.updated` messages that match the
//! specification; saves coalesce; the connector's own writes do not echo.

use clap::Parser;
use futures::StreamExt;
use lapin::options::BasicAckOptions;
use protocol::catalog::methods;
use protocol::spec::spec;
use serde_json::{Value, json};

use crate::helpers::{PATIENCE, TestEnv, Worker, wait_until};

#[derive(Parser)]
struct CatalogFlags {
    #[command(flatten)]
    catalog: catalog::CatalogConfig,
}

/// The catalog module's settings, with `extra` flags (`--export-lease-secs=2`).
pub fn catalog_config(extra: &[&str]) -> catalog::CatalogConfig {
    let args = std::iter::once("omsc-test").chain(extra.iter().copied());
    CatalogFlags::try_parse_from(args).unwrap().catalog
}

/// An in-process catalog worker (consumer, relay, exporter).
pub async fn start_catalog(env: &TestEnv, extra: &[&str]) -> Worker {
    let config = catalog_config(&[]);
    env.start_runtime(extra, move |app| catalog::install(app, &config).unwrap())
        .await
}

/// A queue on the commerce exchange bound to `pattern`, as the OMS would bind one.
pub async fn commerce_inbox(env: &TestEnv, pattern: &str) -> (lapin::Connection, lapin::Consumer) {
    let (connection, _, consumer) = crate::helpers::oms_listener(env, pattern, Some(2_000)).await;
    (connection, consumer)
}

/// The next message of an inbox, parsed.
pub async fn next_json(consumer: &mut lapin::Consumer) -> Value {
    let delivery = tokio::time::timeout(PATIENCE, consumer.next())
        .await
        .expect("a message on the commerce exchange")
        .unwrap()
        .unwrap();
    delivery.ack(BasicAckOptions::default()).await.unwrap();
    serde_json::from_slice(&delivery.data).unwrap()
}

/// Problems the specification finds with an emitted message.
pub fn spec_problems(message: &Value) -> Vec<String> {
    let method = message["method"].as_str().unwrap_or_default();
    spec().check_params(method, &message["params"])
}

/// Every required field of the spec's product struct is present in `product`.
fn assert_required_fields(product: &Value) {
    for (name, field) in &spec().structs["magento.catalog.product"] {
        if field.required {
            assert!(
                product.get(name).is_some_and(|v| !v.is_null()),
                "required {name} is missing from {product}"
            );
        }
    }
}

async fn outbox_rows(env: &TestEnv) -> i64 {
    env.db
        .query_one("SELECT count(*) FROM outbox WHERE module = 'catalog'", &[])
        .await
        .unwrap()
        .get(0)
}

pub async fn pending(env: &TestEnv) -> i64 {
    env.db
        .query_one(
            "SELECT count(*) FROM outbox WHERE module = 'catalog' AND sent_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Receives `n` product messages and returns them by SKU.
async fn products(
    consumer: &mut lapin::Consumer,
    n: usize,
) -> std::collections::BTreeMap<String, Value> {
    let mut by_sku = std::collections::BTreeMap::new();
    for _ in 0..n {
        let message = next_json(consumer).await;
        assert_eq!(message["method"], methods::PRODUCT_UPDATED);
        assert_eq!(spec_problems(&message), Vec::<String>::new(), "{message}");
        let product = message["params"]["product"].clone();
        assert_required_fields(&product);
        by_sku.insert(product["sku"].as_str().unwrap().to_owned(), product);
    }
    by_sku
}

#[tokio::test]
async fn every_product_type_exports_a_message_of_the_specification() {
    let env = TestEnv::new().await;
    let (_connection, mut inbox) = commerce_inbox(&env, methods::PRODUCT_UPDATED).await;
    env.db
        .batch_execute(
            "INSERT INTO store_views (code, locale, channel) VALUES
                 ('default', 'en_US', 'base'), ('es', 'es_ES', 'base');
             INSERT INTO products (sku, type, name, price, currency, giftcard_kind, price_adjustable) VALUES
                 ('SIMPLE-1', 'simple', 'Mug', 9.5, 'EUR', NULL, false),
                 ('TS-S', 'simple', 'T-Shirt S', 19.99, 'EUR', NULL, false),
                 ('TS-M', 'simple', 'T-Shirt M', 19.99, 'EUR', NULL, false),
                 ('TS', 'configurable', 'T-Shirt', 19.99, 'EUR', NULL, false),
                 ('BUNDLE-1', 'bundle', 'Breakfast set', 30, 'EUR', NULL, false),
                 ('VIRTUAL-1', 'virtual', 'Warranty', 5, 'EUR', NULL, false),
                 ('GIFT-1', 'giftcard', 'Gift card', NULL, NULL, 'virtual', true),
                 ('GIFT-2', 'giftcard', 'Plastic gift card', 25, 'EUR', 'physical', false),
                 ('EBOOK-1', 'downloadable', 'E-book', 3, 'EUR', NULL, false);
             INSERT INTO product_children (parent_sku, child_sku, position) VALUES
                 ('TS', 'TS-M', 2), ('TS', 'TS-S', 1), ('BUNDLE-1', 'SIMPLE-1', 1);
             INSERT INTO product_names (sku, store_view, value) VALUES ('TS', 'es', 'Camiseta');
             INSERT INTO product_attributes (sku, code, value) VALUES
                 ('TS', 'color', 'red'), ('TS', 'ean', '4006381333931'),
                 ('EBOOK-1', 'country_of_origin', 'NL');",
        )
        .await
        .unwrap();
    let worker = start_catalog(&env, &[]).await;
    let exported = products(&mut inbox, 9).await;

    let shirt = &exported["TS"];
    assert_eq!(shirt["type"], "configurable");
    assert_eq!(shirt["id"], "TS");
    assert_eq!(shirt["children_skus"], json!(["TS-S", "TS-M"]));
    assert_eq!(
        shirt["name"],
        json!([
            {"value": "T-Shirt", "locale": "en_US", "channel": "base"},
            {"value": "Camiseta", "locale": "es_ES", "channel": "base"},
        ])
    );
    assert_eq!(shirt["price"], json!({"currency": "EUR", "amount": 19.99}));
    assert_eq!(shirt["status"], "ACTIVE");
    assert_eq!(
        shirt["custom_attributes"],
        json!([
            {"name": "color", "attribute_code": "color", "value": "red"},
            {"name": "ean", "attribute_code": "ean", "value": "4006381333931"},
        ])
    );
    let types: Vec<(&str, &str)> = exported
        .iter()
        .map(|(sku, p)| (sku.as_str(), p["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        types,
        [
            ("BUNDLE-1", "bundle"),
            ("EBOOK-1", "downloadable"),
            ("GIFT-1", "virtual"),
            ("GIFT-2", "simple"),
            ("SIMPLE-1", "simple"),
            ("TS", "configurable"),
            ("TS-M", "simple"),
            ("TS-S", "simple"),
            ("VIRTUAL-1", "virtual"),
        ]
    );
    // Only configurables list children; a price-less gift card has no price and an open
    // amount.
    assert!(exported["BUNDLE-1"].get("children_skus").is_none());
    assert!(exported["GIFT-1"].get("price").is_none());
    assert_eq!(exported["GIFT-1"]["price_adjustable"], true);
    assert!(exported["SIMPLE-1"].get("custom_attributes").is_none());
    wait_until("every row sent", PATIENCE, || async {
        pending(&env).await == 0
    })
    .await;
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn many_saves_of_one_product_export_its_latest_state_once() {
    let env = TestEnv::new().await;
    let (_connection, mut inbox) = commerce_inbox(&env, methods::PRODUCT_UPDATED).await;
    env.db
        .batch_execute(
            "INSERT INTO products (sku, type, name, price, currency) VALUES ('MUG', 'simple', 'Mug', 1, 'EUR');
             UPDATE products SET price = 2 WHERE sku = 'MUG';
             INSERT INTO product_attributes (sku, code, value) VALUES ('MUG', 'color', 'blue');
             UPDATE products SET price = 3, name = 'Big mug' WHERE sku = 'MUG';
             INSERT INTO products (sku, type, name) VALUES ('MARKER', 'virtual', 'Marker');",
        )
        .await
        .unwrap();
    assert_eq!(
        outbox_rows(&env).await,
        2,
        "four saves of MUG merge into one row"
    );
    let worker = start_catalog(&env, &[]).await;
    let first = next_json(&mut inbox).await;
    let second = next_json(&mut inbox).await;
    let mug = &first["params"]["product"];
    assert_eq!(mug["sku"], "MUG");
    assert_eq!(mug["price"]["amount"], 3.0);
    assert_eq!(mug["name"], json!([{"value": "Big mug"}]));
    assert_eq!(mug["custom_attributes"][0]["value"], "blue");
    assert_eq!(second["params"]["product"]["sku"], "MARKER");

    // A save after the export is a new export.
    env.db
        .execute("UPDATE products SET status = 'EOL' WHERE sku = 'MUG'", &[])
        .await
        .unwrap();
    let third = next_json(&mut inbox).await;
    assert_eq!(third["params"]["product"]["status"], "EOL");
    wait_until("every row sent", PATIENCE, || async {
        pending(&env).await == 0
    })
    .await;
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn the_connectors_own_writes_are_not_exported_and_a_deleted_product_goes_inactive() {
    let env = TestEnv::new().await;
    let connector = runtime::db::connect(&env.database_url, "omsc-import")
        .await
        .unwrap();
    connector
        .batch_execute(
            "INSERT INTO products (sku, type, name) VALUES ('IMPORTED', 'simple', 'From the PIM');
             INSERT INTO product_attributes (sku, code, value) VALUES ('IMPORTED', 'color', 'red');
             INSERT INTO shipping_carriers (code, active) VALUES ('dhl', true);
             INSERT INTO shipping_methods (carrier_code, method_code) VALUES ('dhl', 'Express');",
        )
        .await
        .unwrap();
    assert_eq!(outbox_rows(&env).await, 0, "an import must not echo back");

    let (_connection, mut inbox) = commerce_inbox(&env, methods::PRODUCT_UPDATED).await;
    env.db
        .batch_execute(
            "INSERT INTO products (sku, type, name) VALUES ('GONE', 'virtual', 'Old service');",
        )
        .await
        .unwrap();
    let worker = start_catalog(&env, &[]).await;
    assert_eq!(
        next_json(&mut inbox).await["params"]["product"]["status"],
        "ACTIVE"
    );
    env.db
        .execute("DELETE FROM products WHERE sku = 'GONE'", &[])
        .await
        .unwrap();
    let deleted = next_json(&mut inbox).await;
    assert_eq!(spec_problems(&deleted), Vec::<String>::new());
    assert_eq!(
        deleted["params"]["product"],
        json!({"id": "GONE", "type": "virtual", "sku": "GONE", "status": "INACTIVE"})
    );
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn shipping_methods_export_when_enabled_and_go_inactive_when_disabled() {
    let env = TestEnv::new().await;
    let (_connection, mut inbox) = commerce_inbox(&env, methods::PRODUCT_UPDATED).await;
    let worker = start_catalog(&env, &[]).await;

    env.db
        .batch_execute(
            "INSERT INTO shipping_carriers (code, title, active) VALUES
                 ('flatrate', 'Flat Rate', true), ('ups', 'UPS', true);
             INSERT INTO shipping_methods (carrier_code, method_code, title, price, currency) VALUES
                 ('flatrate', 'flatrate', 'Fixed', 5, 'EUR');",
        )
        .await
        .unwrap();
    let flat = shipping(&mut inbox).await;
    assert_eq!(
        flat,
        json!({
            "id": "STANDARD", "type": "shipping", "sku": "STANDARD", "status": "ACTIVE",
            "name": [{"value": "Flat Rate - Fixed"}],
            "price": {"currency": "EUR", "amount": 5.0},
        })
    );

    // A method added disabled is not exported; enabling it is.
    env.db
        .execute(
            "INSERT INTO shipping_methods (carrier_code, method_code, title, active) VALUES ('ups', 'GND', 'Ground', false)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        outbox_rows(&env).await,
        1,
        "a disabled method is not exported"
    );
    env.db
        .execute(
            "UPDATE shipping_methods SET active = true WHERE method_code = 'GND'",
            &[],
        )
        .await
        .unwrap();
    let ground = shipping(&mut inbox).await;
    assert_eq!(
        (&ground["sku"], &ground["id"], &ground["status"]),
        (&json!("UPS-GND"), &json!("UPS-GND"), &json!("ACTIVE"))
    );

    // Switching the carrier off exports its methods inactive.
    env.db
        .execute(
            "UPDATE shipping_carriers SET active = false WHERE code = 'ups'",
            &[],
        )
        .await
        .unwrap();
    let off = shipping(&mut inbox).await;
    assert_eq!(
        (&off["sku"], &off["status"]),
        (&json!("UPS-GND"), &json!("INACTIVE"))
    );

    // Disabling a method, and deleting an enabled one, too.
    env.db
        .execute(
            "UPDATE shipping_methods SET active = false WHERE carrier_code = 'flatrate'",
            &[],
        )
        .await
        .unwrap();
    let flat_off = shipping(&mut inbox).await;
    assert_eq!(
        (&flat_off["sku"], &flat_off["status"]),
        (&json!("STANDARD"), &json!("INACTIVE"))
    );
    env.db
        .batch_execute(
            "UPDATE shipping_methods SET active = true WHERE carrier_code = 'flatrate';
             DELETE FROM shipping_carriers WHERE code = 'flatrate';",
        )
        .await
        .unwrap();
    let gone = shipping(&mut inbox).await;
    assert_eq!(
        (&gone["sku"], &gone["status"]),
        (&json!("STANDARD"), &json!("INACTIVE"))
    );
    wait_until("every row sent", PATIENCE, || async {
        pending(&env).await == 0
    })
    .await;
    worker.stop().await;
    env.teardown().await;
}

/// The next shipping product; checks it against the specification.
async fn shipping(inbox: &mut lapin::Consumer) -> Value {
    let message = next_json(inbox).await;
    assert_eq!(spec_problems(&message), Vec::<String>::new(), "{message}");
    let product = message["params"]["product"].clone();
    assert_eq!(product["type"], "shipping", "{product}");
    product
}

#[tokio::test]
async fn a_full_export_reports_its_chunks_to_the_command_line() {
    let env = TestEnv::new().await;
    let (_connection, mut inbox) = commerce_inbox(&env, methods::PRODUCT_UPDATED).await;
    let connector = runtime::db::connect(&env.database_url, "omsc-import")
        .await
        .unwrap();
    connector
        .batch_execute(
            "INSERT INTO products (sku, type, name)
             SELECT format('SKU-%s', lpad(i::text, 3, '0')), 'simple', format('Product %s', i)
               FROM generate_series(1, 12) i",
        )
        .await
        .unwrap();
    let worker = start_catalog(&env, &[]).await;
    let output = tokio::process::Command::new(crate::helpers::binary("omsc"))
        .args(["catalog", "export", "--full", "--chunk-size=5"])
        .env("DATABASE_URL", &env.database_url)
        .env("AMQP_URL", crate::helpers::AMQP_URL)
        .env("OMSC_PREFIX", &env.prefix)
        .output();
    let output = tokio::time::timeout(PATIENCE, output)
        .await
        .expect("the export to finish")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("done: 12 products in 3 chunks"), "{stdout}");
    let mut skus = Vec::new();
    for _ in 0..12 {
        let message = next_json(&mut inbox).await;
        assert_eq!(spec_problems(&message), Vec::<String>::new());
        let id = message["id"].as_str().unwrap().to_owned();
        let sku = message["params"]["product"]["sku"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(id.ends_with(&format!("/{sku}")), "{id}");
        skus.push(sku);
    }
    let expected: Vec<String> = (1..=12).map(|i| format!("SKU-{i:03}")).collect();
    assert_eq!(skus, expected, "in SKU order, each once");
    assert_eq!(
        worker.metric("omsc_catalog_export_chunks_total", &[]).await,
        3.0
    );
    let status = tokio::process::Command::new(crate::helpers::binary("omsc"))
        .args(["catalog", "exports"])
        .env("DATABASE_URL", &env.database_url)
        .output()
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(table.contains("done") && table.contains("12/12"), "{table}");
    worker.stop().await;
    env.teardown().await;
}
