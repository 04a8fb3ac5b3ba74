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

    // After placing, the shop may ask about its order (a line's cancellation, a comment) …
    shop_db
        .batch_execute(
            "INSERT INTO sales_order_line_cancel_requests (order_id, line_id, reason)
                  VALUES ('000000101', '1', 'changed my mind');
             INSERT INTO sales_order_comments (order_id, author, comment)
                  VALUES ('000000101', 'customer', 'ring twice')",
        )
        .await
        .unwrap_or_else(|e| panic!("a storefront role's requests about its order: {e:?}"));
    // … and never change a request once made.
    for statement in [
        "UPDATE sales_order_line_cancel_requests SET reason = 'x'",
        "DELETE FROM sales_order_comments",
    ] {
        let err = shop_db.batch_execute(statement).await.unwrap_err();
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("42501"),
            "{statement}: {err:?}"
        );
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
        "INSERT INTO postsales_return_duplicates (order_id) VALUES ('000000101')",
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

// Issue 18: a storefront session must not be able to change what the OMS owns by anything it
// can do alone: a temporary table named like one the checks read, the connector's mark, or
// membership in omsc_storefront through a group.

/// What the OMS owns, as a storefront would try to change it, after `place-order.sql` placed
/// order 000000101 (placed orders, their items and payment, stock, store credit refunds).
const OMS_OWNED_WRITES: &[(&str, &str)] = &[
    (
        "an order's status, state and currency",
        "UPDATE sales_orders SET oms_status = 'COMPLETE', state = 'complete', currency = 'EUR' \
         WHERE id = '000000101'",
    ),
    (
        "an item's price",
        "UPDATE sales_order_items SET price = 0.01 WHERE order_id = '000000101' AND item_id = 1",
    ),
    (
        "the payment",
        "UPDATE sales_order_payments SET payment_method = 'ZEROPAY' WHERE order_id = '000000101'",
    ),
    (
        "stock",
        "INSERT INTO stock_items (aggregate_id, sku, quantity, source_updated_at) \
         VALUES ('EU', 'MUG-BLUE', 999, now())",
    ),
    (
        "a store credit refund",
        "INSERT INTO store_credit_transactions (customer_id, natural_key, kind, amount) \
         VALUES ('42', 'refund:forged', 'refund', 1000)",
    ),
];

/// A temporary `omsc_settings` saying hand edits are allowed.
const TEMP_SETTINGS: &str =
    "CREATE TEMP TABLE omsc_settings (key text PRIMARY KEY, value text NOT NULL);
     INSERT INTO omsc_settings VALUES ('hand_edits', 'allow')";
/// A temporary, empty `pg_auth_members` (no one a member of anything), and the mark.
const TEMP_MEMBERSHIPS_AND_MARK: &str =
    "CREATE TEMP TABLE pg_auth_members (roleid oid, member oid, grantor oid, admin_option boolean);
     SET omsc.actor = 'connector'";
const MARK: &str = "SET omsc.actor = 'connector'";

/// Runs `setup` in the storefront's session, then every write of [`OMS_OWNED_WRITES`] and a
/// product insert: each write must be refused (42501), the product must queue its export as
/// any storefront write does, and nothing the OMS owns may have changed.
async fn assert_treated_as_a_storefront(
    env: &TestEnv,
    shop_db: &tokio_postgres::Client,
    route: &str,
    setup: &str,
) {
    if !setup.is_empty() {
        shop_db
            .batch_execute(setup)
            .await
            .unwrap_or_else(|e| panic!("{route}: the setup {setup:?}: {e:?}"));
    }
    for (what, statement) in OMS_OWNED_WRITES {
        let outcome = shop_db.batch_execute(statement).await;
        let err = outcome.expect_err(&format!("{route}: {what} was changed"));
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("42501"),
            "{route}: {what}: {err:?}"
        );
    }

    // The catalog's import path skips the outbox for the connector only.
    let sku = format!("CLAIM-{:08x}", rand::random::<u32>());
    shop_db
        .execute(
            "INSERT INTO products (sku, type, name) VALUES ($1, 'simple', 'claimed')",
            &[&sku],
        )
        .await
        .unwrap_or_else(|e| panic!("{route}: a storefront writes products: {e:?}"));
    let exports: i64 = env
        .db
        .query_one(
            "SELECT count(*) FROM outbox WHERE module = 'catalog' AND subject = $1",
            &[&sku],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(exports, 1, "{route}: the product's export was not queued");

    let order = env
        .db
        .query_one(
            "SELECT o.oms_status, o.state, o.currency,
                    (SELECT price::text FROM sales_order_items WHERE order_id = o.id AND item_id = 1),
                    (SELECT payment_method FROM sales_order_payments WHERE order_id = o.id),
                    (SELECT count(*) FROM stock_items),
                    store_credit_balance('42')::text
               FROM sales_orders o WHERE o.id = '000000101'",
            &[],
        )
        .await
        .unwrap();
    let unchanged = (
        order.get::<_, Option<String>>(0),
        order.get::<_, String>(1),
        order.get::<_, String>(2),
        order.get::<_, String>(3),
        order.get::<_, String>(4),
        order.get::<_, i64>(5),
        order.get::<_, String>(6),
    );
    assert_eq!(
        unchanged,
        (
            None,
            "new".to_owned(),
            "USD".to_owned(),
            "15.0000".to_owned(),
            "CREDITCARD".to_owned(),
            0,
            "0".to_owned()
        ),
        "{route}: what the OMS owns changed"
    );
}

/// A test database with order 000000101 placed, and a cleanup for the roles a test makes.
async fn with_a_placed_order() -> TestEnv {
    let env = TestEnv::new().await;
    env.db
        .batch_execute(include_str!("../../docs/examples/place-order.sql"))
        .await
        .unwrap();
    env
}

async fn drop_roles(admin: &tokio_postgres::Client, roles: &[&str]) {
    for role in roles {
        admin
            .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
            .await
            .unwrap_or_else(|e| panic!("dropping role {role}: {e:?}"));
    }
}

#[tokio::test]
async fn a_temporary_omsc_settings_does_not_turn_hand_edits_on_for_a_storefront() {
    let env = with_a_placed_order().await;
    let admin = admin().await;
    let shop = Role::create(&admin, "tempsettings", Some("omsc_storefront")).await;
    let shop_db = session(&format!("{}/{}", shop.url_base, env.db_name)).await;

    assert_treated_as_a_storefront(&env, &shop_db, "temporary omsc_settings", TEMP_SETTINGS).await;

    drop(shop_db);
    env.teardown().await;
    drop_roles(&admin, &[&shop.name]).await;
}

#[tokio::test]
async fn a_temporary_pg_auth_members_and_the_mark_do_not_make_a_storefront_the_connector() {
    let env = with_a_placed_order().await;
    let admin = admin().await;
    let shop = Role::create(&admin, "tempmembers", Some("omsc_storefront")).await;
    let shop_db = session(&format!("{}/{}", shop.url_base, env.db_name)).await;

    assert_treated_as_a_storefront(
        &env,
        &shop_db,
        "temporary pg_auth_members and omsc.actor",
        TEMP_MEMBERSHIPS_AND_MARK,
    )
    .await;

    drop(shop_db);
    env.teardown().await;
    drop_roles(&admin, &[&shop.name]).await;
}

#[tokio::test]
async fn a_member_of_omsc_storefront_through_a_group_is_a_storefront_with_or_without_the_mark() {
    let env = with_a_placed_order().await;
    let admin = admin().await;
    // login → group → omsc_storefront: the login holds no direct grant of omsc_storefront.
    let group = format!("omsc_it_shops_{:08x}", rand::random::<u32>());
    admin
        .batch_execute(&format!(
            "CREATE ROLE {group} NOLOGIN; GRANT omsc_storefront TO {group}"
        ))
        .await
        .unwrap();
    let shop = Role::create(&admin, "viagroup", Some(&group)).await;

    let marked = session(&format!("{}/{}", shop.url_base, env.db_name)).await;
    assert_treated_as_a_storefront(&env, &marked, "a member through a group, marked", MARK).await;
    let unmarked = session(&format!("{}/{}", shop.url_base, env.db_name)).await;
    assert_treated_as_a_storefront(&env, &unmarked, "a member through a group", "").await;
    // The two routes above together with a temporary table, as the issue reproduced them.
    let both = session(&format!("{}/{}", shop.url_base, env.db_name)).await;
    assert_treated_as_a_storefront(
        &env,
        &both,
        "a member through a group, temporary omsc_settings",
        TEMP_SETTINGS,
    )
    .await;

    drop((marked, unmarked, both));
    env.teardown().await;
    drop_roles(&admin, &[&shop.name, &group]).await;
}

#[tokio::test]
async fn a_direct_member_of_omsc_storefront_is_a_storefront_with_or_without_the_mark() {
    let env = with_a_placed_order().await;
    let admin = admin().await;
    let shop = Role::create(&admin, "direct", Some("omsc_storefront")).await;

    let marked = session(&format!("{}/{}", shop.url_base, env.db_name)).await;
    assert_treated_as_a_storefront(&env, &marked, "a direct member, marked", MARK).await;
    let unmarked = session(&format!("{}/{}", shop.url_base, env.db_name)).await;
    assert_treated_as_a_storefront(&env, &unmarked, "a direct member", "").await;

    drop((marked, unmarked));
    env.teardown().await;
    drop_roles(&admin, &[&shop.name]).await;
}

/// The triggers read the connector's tables (here: when the order was placed), never a
/// temporary table of the same name that the session made.
#[tokio::test]
async fn a_temporary_table_does_not_stand_in_for_a_table_a_trigger_reads() {
    let env = with_a_placed_order().await;
    let admin = admin().await;
    let shop = Role::create(&admin, "tempsales", Some("omsc_storefront")).await;
    let shop_db = session(&format!("{}/{}", shop.url_base, env.db_name)).await;

    // A temporary sales_orders says the order was placed by this very transaction.
    let added = shop_db
        .batch_execute(
            "CREATE TEMP TABLE sales_orders (id text, placed_xact xid8);
             BEGIN;
             INSERT INTO pg_temp.sales_orders VALUES ('000000101', pg_current_xact_id());
             INSERT INTO public.sales_order_items (order_id, item_id, product_type, sku, name, qty, price)
             VALUES ('000000101', 99, 'simple', 'MUG-BLUE', 'Blue mug', 100, 0.01);
             COMMIT;",
        )
        .await;
    let err = added.expect_err("an item was added to a placed order");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err:?}");
    shop_db.batch_execute("ROLLBACK").await.unwrap();
    let items: i64 = env
        .db
        .query_one(
            "SELECT count(*) FROM sales_order_items WHERE order_id = '000000101' AND item_id = 99",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(items, 0);

    drop(shop_db);
    env.teardown().await;
    drop_roles(&admin, &[&shop.name]).await;
}

/// Every trigger function, and every function a trigger calls, resolves names in pg_catalog,
/// then the connector's schema, then (last) the session's temporary schema.
#[tokio::test]
async fn every_trigger_function_runs_with_the_connectors_search_path() {
    let env = TestEnv::new().await;
    let unpinned: Vec<String> = env
        .db
        .query(
            "SELECT p.oid::regprocedure::text
               FROM pg_proc p
              WHERE p.pronamespace = 'public'::regnamespace
                AND (p.prorettype = 'trigger'::regtype
                     OR p.proname IN ('omsc_is_connector', 'omsc_may_write_oms_data',
                                      'omsc_outbox_add', 'catalog_carrier_active',
                                      'store_credit_balance', 'gift_card_balance',
                                      'store_credit_redeem', 'gift_card_redeem'))
                AND NOT coalesce(p.proconfig, '{}') @> ARRAY['search_path=pg_catalog, public, pg_temp']
              ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        unpinned.is_empty(),
        "functions without search_path = pg_catalog, public, pg_temp: {unpinned:?}"
    );
    // Only the outbox needs its owner's rights.
    let definers: Vec<String> = env
        .db
        .query(
            "SELECT proname::text FROM pg_proc
              WHERE pronamespace = 'public'::regnamespace AND prosecdef ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(definers, ["omsc_outbox_add"]);
    env.teardown().await;
}

/// The connector is its role with its mark: the owner of the connector's tables (no
/// superuser) is the connector when marked, and like a storefront when not; a role that is
/// neither the owner nor a storefront is not the connector, marked or not.
#[tokio::test]
async fn the_connector_is_the_owners_role_with_its_mark_and_no_other_role() {
    let env = TestEnv::new().await;
    let admin = admin().await;
    let owner = Role::create(&admin, "owner", None).await;
    let other = Role::create(&admin, "other", None).await;
    let database = format!("{}_own", env.db_name);
    admin
        .batch_execute(&format!("CREATE DATABASE {database} OWNER {}", owner.name))
        .await
        .unwrap();
    let url = format!("{}/{database}", owner.url_base);
    runtime::db::migrate(&url).await.unwrap();
    let superuser = session(&format!("{PG_BASE}/{database}")).await;
    superuser
        .batch_execute(&format!(
            "GRANT SELECT, INSERT, DELETE ON products, product_tombstones TO {}",
            other.name
        ))
        .await
        .unwrap();
    let exports = |sku: &'static str| {
        let superuser = &superuser;
        async move {
            let n: i64 = superuser
                .query_one(
                    "SELECT count(*) FROM outbox WHERE module = 'catalog' AND subject = $1",
                    &[&sku],
                )
                .await
                .unwrap()
                .get(0);
            n
        }
    };
    let stock = "INSERT INTO stock_items (aggregate_id, sku, quantity, source_updated_at) \
                 VALUES ('EU', 'own', 1, now())";

    // The connector's own session, marked at start-up as the workers' are.
    let connector = runtime::db::connect(&url, "omsc-test").await.unwrap();
    connector
        .batch_execute("INSERT INTO products (sku, type, name) VALUES ('IMPORTED', 'simple', 'x')")
        .await
        .unwrap();
    assert_eq!(
        exports("IMPORTED").await,
        0,
        "an import is not exported back"
    );
    connector.batch_execute(stock).await.unwrap();

    // The owner's plain session is treated like a storefront.
    let plain = session(&url).await;
    plain
        .batch_execute("INSERT INTO products (sku, type, name) VALUES ('BY-HAND', 'simple', 'x')")
        .await
        .unwrap();
    assert_eq!(
        exports("BY-HAND").await,
        1,
        "a plain session's write is exported"
    );
    let err = plain.batch_execute(stock).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err:?}");

    // Another role that carries the mark is not the connector.
    let pretender = session(&format!("{}/{database}", other.url_base)).await;
    pretender.batch_execute(MARK).await.unwrap();
    pretender
        .batch_execute("INSERT INTO products (sku, type, name) VALUES ('PRETEND', 'simple', 'x')")
        .await
        .unwrap();
    assert_eq!(
        exports("PRETEND").await,
        1,
        "the mark alone made a role the connector"
    );

    drop((connector, plain, pretender, superuser));
    admin
        .batch_execute(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .await
        .unwrap();
    env.teardown().await;
    drop_roles(&admin, &[&owner.name, &other.name]).await;
}
