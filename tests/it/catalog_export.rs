//! The full-catalog export at size: 100,000 products in chunks of 5,000 from a real
//! `omsc-catalog` process, killed with SIGKILL mid-export and resumed by another one.

use std::collections::HashMap;
use std::time::Instant;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use protocol::catalog::{EXPORT_CHUNK_SIZE, ExportFull, methods};
use simulate::publish::OmsPublisher;

use crate::catalog::spec_problems;
use crate::helpers::{AMQP_URL, PATIENCE, TestEnv, amqp, wait_until};

const PRODUCTS: i64 = 100_000;

/// A durable inbox on the commerce exchange that nothing consumes until the export is done.
async fn quiet_inbox(env: &TestEnv) -> String {
    let connection = amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let queue = format!("{}oms.catalog", env.prefix);
    runtime::Topology::new(&env.prefix, runtime::config::QueueType::Quorum)
        .declare_oms_listener(
            &channel,
            &queue,
            QueueDeclareOptions {
                auto_delete: false,
                ..Default::default()
            },
            methods::PRODUCT_UPDATED,
        )
        .await
        .unwrap();
    let _ = connection.close(200, "declared".into()).await;
    queue
}

/// Every message of `queue`, counted per SKU (the queue is deleted after).
async fn drain_counts(queue: &str) -> (u32, HashMap<String, u32>) {
    let connection = amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let total = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count();
    channel
        .basic_qos(5_000, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "count".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut counts = HashMap::new();
    for i in 0..total {
        let delivery = tokio::time::timeout(PATIENCE, consumer.next())
            .await
            .expect("a product message")
            .unwrap()
            .unwrap();
        let message: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
        if i % 10_000 == 0 {
            assert_eq!(spec_problems(&message), Vec::<String>::new());
        }
        let sku = message["params"]["product"]["sku"]
            .as_str()
            .unwrap()
            .to_owned();
        *counts.entry(sku).or_insert(0) += 1;
    }
    let _ = channel.queue_delete(queue.into(), Default::default()).await;
    (total, counts)
}

async fn progress(env: &TestEnv, run_id: &str) -> (String, i64, i32) {
    let row = env
        .db
        .query_one(
            "SELECT state, exported, resumes FROM catalog_export_runs WHERE id = $1",
            &[&run_id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

async fn exists(env: &TestEnv, run_id: &str) -> bool {
    env.db
        .query_opt(
            "SELECT 1 FROM catalog_export_runs WHERE id = $1",
            &[&run_id],
        )
        .await
        .unwrap()
        .is_some()
}

/// Peak resident memory of a process, in kB.
fn peak_rss_kb(pid: u32) -> u64 {
    test_support::process::peak_rss(pid).map_or(0, |bytes| bytes / 1024)
}

#[tokio::test]
async fn a_full_export_of_100000_products_resumes_after_a_kill_and_resends_at_most_one_chunk() {
    let env = TestEnv::new().await;
    let connector = runtime::db::connect(&env.database_url, "omsc-import")
        .await
        .unwrap();
    connector
        .batch_execute(&format!(
            "INSERT INTO store_views (code, locale, channel) VALUES ('default', 'en_US', 'base');
             INSERT INTO products (sku, type, name, price, currency)
             SELECT format('P-%s', lpad(i::text, 7, '0')), 'simple', format('Product %s', i),
                    (i % 1000) + 0.99, 'EUR'
               FROM generate_series(1, {PRODUCTS}) i;
             INSERT INTO product_attributes (sku, code, value)
             SELECT format('P-%s', lpad(i::text, 7, '0')), 'color', 'red'
               FROM generate_series(1, {PRODUCTS}, 7) i;"
        ))
        .await
        .unwrap();
    let inbox = quiet_inbox(&env).await;

    // The command, as `omsc catalog export --full` sends it, waits in the module's queue.
    let setup = amqp().await;
    let channel = setup.create_channel().await.unwrap();
    runtime::Topology::new(&env.prefix, runtime::config::QueueType::Quorum)
        .declare(&channel, &catalog::QUEUE)
        .await
        .unwrap();
    let run_id = "export-it-1".to_owned();
    let command = ExportFull {
        run_id: run_id.clone(),
        requested_by: "test".into(),
        chunk_size: EXPORT_CHUNK_SIZE,
    };
    let publisher = OmsPublisher::connect(AMQP_URL, &format!("{}oms.events", env.prefix))
        .await
        .unwrap();
    publisher
        .publish_all(
            [(methods::EXPORT_FULL, command.to_message(), run_id.clone())],
            1,
        )
        .await
        .unwrap();

    let lease = [("OMSC_CATALOG_EXPORT_LEASE_SECS", "2")];
    let mut first = env.spawn_binary("omsc-catalog", &lease);
    wait_until(
        "the first worker to confirm three chunks",
        PATIENCE,
        || async {
            exists(&env, &run_id).await
                && progress(&env, &run_id).await.1 >= 3 * i64::from(EXPORT_CHUNK_SIZE)
        },
    )
    .await;
    first.kill().await.unwrap(); // SIGKILL: no drain, the lease is left to expire
    let (state, exported_at_kill, _) = progress(&env, &run_id).await;
    assert!(
        state == "running" && exported_at_kill < PRODUCTS,
        "the kill must come mid-export for the test to mean anything ({state}, {exported_at_kill})"
    );

    let mut second = env.spawn_binary("omsc-catalog", &lease);
    let pid = second.id().unwrap();
    let sample = std::cell::Cell::new(None::<(i64, Instant)>);
    wait_until(
        "the second worker to finish the export",
        PATIENCE * 3,
        || async {
            let (state, exported, resumes) = progress(&env, &run_id).await;
            if sample.get().is_none() && resumes >= 1 && exported > exported_at_kill {
                sample.set(Some((exported, Instant::now())));
            }
            state == "done"
        },
    )
    .await;
    let finished = Instant::now();
    let peak_kb = peak_rss_kb(pid);
    second.kill().await.unwrap();

    let (state, exported, resumes) = progress(&env, &run_id).await;
    assert_eq!((state.as_str(), exported), ("done", PRODUCTS));
    assert_eq!(resumes, 1, "the second worker took the run over once");
    let (total, counts) = drain_counts(&inbox).await;
    assert_eq!(counts.len() as i64, PRODUCTS, "every product was exported");
    let duplicates = i64::from(total) - PRODUCTS;
    assert!(
        (0..=i64::from(EXPORT_CHUNK_SIZE)).contains(&duplicates),
        "{duplicates} products sent twice: at most the chunk in flight may be"
    );
    assert!(counts.values().all(|&n| n <= 2));
    assert!(
        peak_kb > 0 && peak_kb < 200 * 1024,
        "the exporter's memory must not follow the catalog: peak {peak_kb} kB"
    );
    if let Some((from, at)) = sample.get() {
        let seconds = (finished - at).as_secs_f64().max(0.001);
        eprintln!(
            "full export: {} products in {seconds:.1}s after the takeover = {:.0} products/s; \
             {duplicates} resent; peak RSS {} MB",
            PRODUCTS - from,
            (PRODUCTS - from) as f64 / seconds,
            peak_kb / 1024
        );
    }
    env.teardown().await;
}
