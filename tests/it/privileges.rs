//! Least privilege: a storefront role can do everything the documented storefront examples
//! do, and cannot write what the OMS owns, even by claiming to be the connector. The
//! connector itself runs without superuser rights, as the owner of its database.

use crate::helpers::{PG_BASE, TestEnv};

/// A login role for the test, removed when dropped.
struct Role {
    name: String,
    url_base: String,
}

impl Role {
    async fn create(admin: &tokio_postgres::Client, label: &str, member_of: Option<&str>) -> Self {
        let name = format!("omsc_it_{label}_{:08x}", rand::random::<u32>());
        admin
            .batch_execute(&format!(
                "CREATE ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
            ))
            .await
            .unwrap();
        if let Some(group) = member_of {
            admin
                .batch_execute(&format!("GRANT {group} TO {name}"))
                .await
                .unwrap();
        }
        Self {
            url_base: PG_BASE.replace("postgres@", &format!("{name}@")),
            name,
        }
    }
}

async fn admin() -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&format!("{PG_BASE}/postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    client
}

async fn session(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn a_storefront_role_does_what_a_shop_does_and_nothing_the_oms_owns() {
    let env = TestEnv::new().await;
    let admin = admin().await;
    let shop = Role::create(&admin, "shop", Some("omsc_storefront")).await;
    let shop_db = session(&format!("{}/{}", shop.url_base, env.db_name)).await;

    for (name, sql) in [
        (
            "place-order",
            include_str!("../../docs/examples/place-order.sql"),
        ),
        ("redeem", include_str!("../../docs/examples/redeem.sql")),
    ] {
        shop_db.batch_execute(sql).await.unwrap_or_else(|e| {
            panic!("the storefront example {name} as a storefront role: {e:?}")
        });
    }

    // Writing what the OMS owns is refused by privilege, with or without the connector's mark.
    shop_db
        .batch_execute("SET omsc.actor = 'connector'")
        .await
        .unwrap();
    for statement in [
        "INSERT INTO stock_items (aggregate_id, sku, quantity, source_updated_at) VALUES ('EU', 'x', 1, now())",
        "UPDATE sources SET active = false",
        "INSERT INTO omsc_settings VALUES ('hand_edits', 'allow')",
        "DELETE FROM sales_shipments",
        "DELETE FROM outbox",
        "SELECT * FROM dead_letters",
    ] {
        let err = shop_db.batch_execute(statement).await.unwrap_err();
        let code = err.code().map(|c| c.code().to_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {err:?}");
    }
    // Where the shop may write a table whose OMS columns it may not, the mark is no pass.
    let err = shop_db
        .batch_execute("UPDATE sales_orders SET oms_status = 'COMPLETE'")
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("owned by the OMS")
            || err.code().map(|c| c.code()) == Some("42501"),
        "{err:?}"
    );

    // And it reads what a shop reads.
    let sellable: bool = shop_db
        .query_one("SELECT is_sellable('base', 'MUG-BLUE')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!sellable);
    drop(shop_db);
    admin
        .batch_execute(&format!("DROP OWNED BY {0}; DROP ROLE {0}", shop.name))
        .await
        .ok();
    env.teardown().await;
}

#[tokio::test]
async fn the_connector_needs_no_superuser_only_its_own_database() {
    let env = TestEnv::new().await;
    let admin = admin().await;
    let owner = Role::create(&admin, "connector", None).await;
    let database = format!("{}_own", env.db_name);
    admin
        .batch_execute(&format!("CREATE DATABASE {database} OWNER {}", owner.name))
        .await
        .unwrap();
    let url = format!("{}/{database}", owner.url_base);
    runtime::db::migrate(&url)
        .await
        .expect("an owner without superuser migrates its database");
    let worker = env
        .start_worker_with(&[&format!("--database-url={url}")])
        .await;
    let publisher = env.publisher().await;
    publisher
        .publish_raw(
            "magento.inventory.aggregate_stock_management.updated",
            br#"{"jsonrpc":"2.0","method":"magento.inventory.aggregate_stock_management.updated",
                "params":{"snapshot":{"aggregate_id":"EU","mode":"DELTA","created_on":"2026-01-01T00:00:00Z",
                "stock":[{"sku":"own","quantity":2}]}}}"#,
        )
        .await
        .unwrap();
    let db = session(&format!("{PG_BASE}/{database}")).await;
    crate::helpers::wait_until("the row", crate::helpers::PATIENCE, || async {
        db.query_opt("SELECT 1 FROM stock_items WHERE sku = 'own'", &[])
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let superuser: bool = db
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = $1",
            &[&owner.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!superuser);
    worker.stop().await;
    drop(db);
    admin
        .batch_execute(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("DROP ROLE {}", owner.name))
        .await
        .ok();
    env.teardown().await;
}

#[tokio::test]
async fn every_migration_run_makes_the_storefront_grants_again() {
    let env = TestEnv::new().await;
    let admin = admin().await;
    let shop = Role::create(&admin, "regrant", Some("omsc_storefront")).await;
    // As if the tables had been created before the role existed.
    env.db
        .batch_execute("REVOKE ALL ON products, sales_orders FROM omsc_storefront")
        .await
        .unwrap();
    let shop_db = session(&format!("{}/{}", shop.url_base, env.db_name)).await;
    let denied = shop_db.query("SELECT count(*) FROM products", &[]).await;
    assert!(denied.is_err(), "the revoke took effect");

    runtime::db::migrate(&env.database_url).await.unwrap();
    let count: i64 = shop_db
        .query_one("SELECT count(*) FROM products", &[])
        .await
        .expect("the storefront reads products again after a migration run")
        .get(0);
    assert_eq!(count, 0);
    shop_db
        .batch_execute(include_str!("../../docs/examples/place-order.sql"))
        .await
        .expect("and places orders again");
}
