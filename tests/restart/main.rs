//! The restart suite: the real local broker and database restarted under a running fleet.
//! It stops shared servers, so it runs alone (`make test-restart`), never beside other tests.
//! Each test prints its recovery times; docs/reliability.md quotes them.

#[allow(dead_code)]
#[path = "../it/helpers.rs"]
mod helpers;

use std::time::Instant;

use chrono::{TimeZone, Utc};
use protocol::inventory::StockScope;
use simulate::stock::{Storm, StormSpec};
use stock_filter::Model;

use helpers::{PATIENCE, TestEnv, http_get, wait_until};

fn storm(seed: u64) -> Storm {
    Storm::generate(&StormSpec {
        seed,
        aggregates: 3,
        skus: 10_000,
        exports: 40,
        mix: (2, 1, 6),
        chunk_size: 500,
        delta_skus: 20,
        start: Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap(),
        ..StormSpec::default()
    })
}

fn free_port() -> u16 {
    test_support::http::free_address().unwrap().port()
}

fn run(program: &str, args: &[&str]) {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The test process that made a queue or exchange, from its prefix
/// (`it{epoch}_{pid}_{n}_{random}.`, [`TestEnv::new`]).
fn test_pid(name: &str) -> Option<u32> {
    let tag = name.strip_prefix("it")?.split('.').next()?;
    tag.split('_').nth(1)?.parse().ok()
}

/// Deletes the queues and exchanges of test runs that were killed before their teardown.
/// A broker restarted with hundreds of them left over spends minutes recovering them (once,
/// longer than any patience here); a test process that is still alive keeps its own.
async fn forget_what_dead_test_runs_left() {
    let listed = |what: &str| -> Vec<String> {
        let output = std::process::Command::new("rabbitmqctl")
            .args(["-q", what, "name", "--no-table-headers"])
            .output()
            .unwrap();
        assert!(output.status.success(), "rabbitmqctl {what}");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|name| test_pid(name).is_some_and(|pid| !process_alive(pid)))
            .map(str::to_owned)
            .collect()
    };
    let connection = helpers::amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let queues = listed("list_queues");
    for queue in &queues {
        channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await
            .unwrap();
    }
    let exchanges = listed("list_exchanges");
    for exchange in &exchanges {
        channel
            .exchange_delete(exchange.as_str().into(), Default::default())
            .await
            .unwrap();
    }
    if !queues.is_empty() || !exchanges.is_empty() {
        eprintln!(
            "deleted {} queues and {} exchanges left by test runs that were killed",
            queues.len(),
            exchanges.len()
        );
    }
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Three worker processes of the inventory module on one environment, with their HTTP ports.
struct Fleet {
    workers: Vec<(tokio::process::Child, std::net::SocketAddr)>,
}

impl Fleet {
    fn start(env: &TestEnv) -> Self {
        let workers = (0..3)
            .map(|_| {
                let address: std::net::SocketAddr =
                    format!("127.0.0.1:{}", free_port()).parse().unwrap();
                let child = env.spawn_process(&[("OMSC_HTTP_ADDR", &address.to_string())]);
                (child, address)
            })
            .collect();
        Self { workers }
    }

    async fn all(&self, status: u16) -> bool {
        for (_, address) in &self.workers {
            if http_get(*address, "/readyz").await.0 != status {
                return false;
            }
        }
        true
    }

    async fn wait(&self, what: &str, status: u16) {
        wait_until(what, PATIENCE, || async { self.all(status).await }).await;
    }

    async fn stop(self) {
        for (mut child, _) in self.workers {
            child.kill().await.unwrap();
        }
    }
}

async fn rows(env: &TestEnv) -> i64 {
    env.db
        .query_one("SELECT count(*) FROM stock_items", &[])
        .await
        .unwrap()
        .get(0)
}

async fn wait_for_model(env: &TestEnv, storm: &Storm) {
    let expected = Model::replay(StockScope::Aggregate, &storm.snapshots).rows();
    wait_until("the table to equal the model", PATIENCE * 3, || async {
        let pending: i64 = env
            .db
            .query_one("SELECT count(*) FROM stock_nonzero_pending", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(1);
        pending == 0 && env.stock().await == expected
    })
    .await;
    env.assert_no_dead_letters().await;
}

#[tokio::test]
async fn a_broker_restart_mid_stream_loses_nothing_and_every_replica_recovers() {
    forget_what_dead_test_runs_left().await;
    let env = TestEnv::new().await;
    let storm = storm(21);
    let deliveries = storm.deliveries(21, true, 0.1);
    let (before, after) = deliveries.split_at(deliveries.len() / 2);
    let publisher = env.publisher().await;
    env.publish_snapshots(&publisher, before).await;
    drop(publisher);
    let fleet = Fleet::start(&env);
    fleet.wait("the fleet to be ready", 200).await;
    wait_until("progress", PATIENCE, || async { rows(&env).await > 0 }).await;

    run("rabbitmqctl", &["-q", "stop_app"]);
    let stopped = Instant::now();
    fleet.wait("every replica to notice", 503).await;
    let noticed = stopped.elapsed();
    run("rabbitmqctl", &["-q", "start_app"]);
    run("rabbitmqctl", &["-q", "await_startup"]);
    let started = Instant::now();
    fleet.wait("every replica to be back", 200).await;
    let back = started.elapsed();

    let publisher = env.publisher().await;
    env.publish_snapshots(&publisher, after).await;
    wait_for_model(&env, &storm).await;
    let complete = started.elapsed();
    eprintln!(
        "broker restart, 3 replicas: noticed after {noticed:.1?}; every replica consuming {back:.1?} after the broker was back; the storm complete and equal to the model {complete:.1?} after"
    );
    fleet.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_database_restart_mid_stream_loses_nothing_and_every_replica_recovers() {
    let env = TestEnv::new().await;
    let storm = storm(22);
    let publisher = env.publisher().await;
    env.publish_snapshots(&publisher, &storm.deliveries(22, true, 0.1))
        .await;
    let fleet = Fleet::start(&env);
    fleet.wait("the fleet to be ready", 200).await;
    wait_until("progress", PATIENCE, || async { rows(&env).await > 0 }).await;

    let version = std::fs::read_dir("/etc/postgresql")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .max()
        .unwrap();
    let restarted = Instant::now();
    run(
        "pg_ctlcluster",
        &[
            "--skip-systemctl-redirect",
            &version,
            "main",
            "restart",
            "-m",
            "fast",
        ],
    );
    let down_for = restarted.elapsed();
    // The test's own connection died with the server.
    let env = env.reconnect().await;
    fleet.wait("every replica to be back", 200).await;
    let back = restarted.elapsed();
    wait_for_model(&env, &storm).await;
    let complete = restarted.elapsed();
    eprintln!(
        "database restart ({down_for:.1?}), 3 replicas: every replica ready {back:.1?} after the restart began; the storm complete and equal to the model {complete:.1?} after"
    );
    fleet.stop().await;
    env.teardown().await;
}

#[test]
fn a_test_prefix_names_its_process() {
    assert_eq!(
        test_pid("it1764480000_4242_3_beef.connector.sales.dead"),
        Some(4242)
    );
    assert_eq!(test_pid("it1764480000_4242_3_beef.oms.events"), Some(4242));
    assert_eq!(test_pid("connector.sales"), None);
    assert_eq!(test_pid("itinerary"), None);
}
