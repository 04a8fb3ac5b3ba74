//! Test harness: a fresh database and a fresh queue prefix per test, workers in-process or
//! as real processes, a confirmed publisher, and waits on conditions with deadlines.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use protocol::inventory::StockSnapshot;
use runtime::RuntimeConfig;
use simulate::publish::OmsPublisher;
use simulate::stock;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

// The waits and the HTTP probes are the harness the benchmark shares (`test-support`).
pub use test_support::http::get as http_get;
// The restart binary includes this file too and asks for no headers.
#[allow(unused_imports)]
pub use test_support::http::get_with as http_get_with;
pub use test_support::wait::wait_until;

pub const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const INVENTORY_QUEUE: &str = "connector.inventory";
/// Every module queue a test may have declared, for the cleanup: the connector's own list.
pub fn module_queues() -> Vec<&'static str> {
    omsc::modules::queues().iter().map(|q| q.name).collect()
}

/// How long a test waits for a condition before it fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Flags as a person would type them, parsed by the real CLI definitions.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    runtime: RuntimeConfig,
    #[command(flatten)]
    inventory: inventory::InventoryConfig,
}

/// One test's world: its own database, its own exchange and queue prefix.
pub struct TestEnv {
    pub db_name: String,
    pub database_url: String,
    pub prefix: String,
    pub db: tokio_postgres::Client,
    cleaned: bool,
}

impl TestEnv {
    pub async fn new() -> Self {
        // The workers' logs go to the test's output, which the runner shows when a test fails.
        let filter =
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,runtime=info,inventory=info".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!(
            "{epoch}_{}_{n}_{:04x}",
            std::process::id(),
            rand::random::<u16>()
        );
        let db_name = format!("omsc_it_{tag}");
        let database_url = format!("{PG_BASE}/{db_name}");
        runtime::db::migrate(&database_url)
            .await
            .expect("PostgreSQL at 127.0.0.1:5432 must accept connections (make services)");
        // A plain session, like a storefront's: it is not the connector.
        let (db, connection) = tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        Self {
            db_name,
            database_url,
            prefix: format!("it{tag}."),
            db,
            cleaned: false,
        }
    }

    /// The flags of a worker of this environment, plus `extra` ones.
    pub fn flags(&self, extra: &[&str]) -> (RuntimeConfig, inventory::InventoryConfig) {
        let mut args = vec![
            "omsc-test".to_owned(),
            format!("--database-url={}", self.database_url),
            format!("--amqp-url={AMQP_URL}"),
            format!("--prefix={}", self.prefix),
            "--http-addr=127.0.0.1:0".into(),
            "--db-pool-size=4".into(),
            "--nonzero-settle-secs=0.3".into(),
            "--drain-timeout-secs=5".into(),
            // Tests that register say so; the others must not publish registrations.
            "--register=false".into(),
        ];
        // An extra flag replaces the default one of the same name.
        let name = |arg: &str| arg.split('=').next().unwrap_or(arg).to_owned();
        args.retain(|a| !extra.iter().any(|e| name(e) == name(a)));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let flags = Flags::try_parse_from(args).unwrap_or_else(|e| panic!("bad test flags: {e}"));
        (flags.runtime, flags.inventory)
    }

    pub async fn start_worker(&self) -> Worker {
        self.start_worker_with(&[]).await
    }

    /// Starts an in-process inventory worker and waits until it consumes.
    pub async fn start_worker_with(&self, extra: &[&str]) -> Worker {
        let (_, inventory_config) = self.flags(extra);
        self.start_runtime(extra, move |app| {
            inventory::install(app, &inventory_config).unwrap();
        })
        .await
    }

    /// Starts an in-process runtime with whatever `install` adds to it (a module's consumer,
    /// its relay …), and waits until every consumer consumes.
    pub async fn start_runtime(
        &self,
        extra: &[&str],
        install: impl FnOnce(&mut runtime::Runtime),
    ) -> Worker {
        let (config, _) = self.flags(extra);
        let mut app = runtime::Runtime::build(config).await.unwrap();
        install(&mut app);
        let http = app.http_addr();
        let token = CancellationToken::new();
        let stop = token.clone();
        let handle = tokio::spawn(app.run_until(async move { stop.cancelled().await }));
        let worker = Worker {
            token,
            handle,
            http,
        };
        worker.wait_ready().await;
        worker
    }

    /// Starts a real `omsc-inventory` process with this environment's settings.
    pub fn spawn_process(&self, extra_env: &[(&str, &str)]) -> tokio::process::Child {
        self.spawn_binary("omsc-inventory", extra_env)
    }

    /// Starts a real worker binary (`omsc-inventory`, `omsc`, …) with this environment's
    /// settings in its environment.
    pub fn spawn_binary(&self, name: &str, extra_env: &[(&str, &str)]) -> tokio::process::Child {
        self.spawn_binary_with_args(name, &[], extra_env)
    }

    /// Starts a real binary with arguments (`omsc run --all`) and this environment's
    /// settings in its environment.
    pub fn spawn_binary_with_args(
        &self,
        name: &str,
        args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> tokio::process::Child {
        self.binary_command(name, args, extra_env)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"))
    }

    /// Spawns a whole connector (`omsc run --all`, a real process) serving its health and
    /// metrics on a free address, and waits until it is ready.
    pub async fn spawn_ready_connector(&self) -> (tokio::process::Child, SocketAddr) {
        let addr = test_support::http::free_address().unwrap();
        let process = self.spawn_binary_with_args(
            "omsc",
            &["run", "--all"],
            &[("OMSC_HTTP_ADDR", &addr.to_string())],
        );
        wait_until("the connector to be ready", PATIENCE, || async {
            http_get(addr, "/readyz").await.0 == 200
        })
        .await;
        (process, addr)
    }

    /// Runs `omsc` with `args` and this environment's settings (and `extra_env`), asserts it
    /// succeeded, and returns what it printed.
    pub async fn omsc(&self, args: &[&str], extra_env: &[(&str, &str)]) -> String {
        let output = self
            .binary_command("omsc", args, extra_env)
            .output()
            .await
            .unwrap_or_else(|e| panic!("starting omsc {args:?}: {e}"));
        assert!(
            output.status.success(),
            "omsc {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// The command that starts a real binary with arguments and this environment's settings
    /// in its environment, for a test that needs more of it (its output piped).
    pub fn binary_command(
        &self,
        name: &str,
        args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(binary(name));
        command
            .args(args)
            .env("DATABASE_URL", &self.database_url)
            .env("AMQP_URL", AMQP_URL)
            .env("OMSC_PREFIX", &self.prefix)
            .env("OMSC_HTTP_ADDR", "127.0.0.1:0")
            .env("OMSC_DB_POOL_SIZE", "4")
            .env("OMSC_NONZERO_SETTLE_SECS", "0.3")
            .env("OMSC_DRAIN_TIMEOUT_SECS", "5")
            .env("OMSC_REGISTER", "false")
            .env("RUST_LOG", "warn")
            .kill_on_drop(true);
        for (k, v) in extra_env {
            command.env(k, v);
        }
        command
    }

    pub fn queue(&self, base: &str) -> String {
        format!("{}{base}", self.prefix)
    }

    /// A publisher on this environment's OMS exchange. The topology is declared first (the
    /// same declaration the workers make), so messages published before any worker runs
    /// wait in the queue.
    pub async fn publisher(&self) -> OmsPublisher {
        let connection = amqp().await;
        let channel = connection.create_channel().await.unwrap();
        runtime::Topology::new(&self.prefix, runtime::config::QueueType::Quorum)
            .declare(&channel, &inventory::QUEUE)
            .await
            .unwrap();
        OmsPublisher::connect(AMQP_URL, &format!("{}oms.events", self.prefix))
            .await
            .expect("RabbitMQ at 127.0.0.1:5672 must accept connections (make services)")
    }

    /// Publishes snapshots in the given order, each with its own envelope id.
    pub async fn publish_snapshots(&self, publisher: &OmsPublisher, snapshots: &[&StockSnapshot]) {
        let messages = snapshots.iter().enumerate().map(|(i, s)| {
            (
                stock::method(s.scope),
                stock::encode(s, &format!("msg-{i}")),
                format!("msg-{i}"),
            )
        });
        publisher.publish_all(messages, 256).await.unwrap();
    }

    /// `(scope, sku, quantity, unlimited)` of every aggregate stock row, in key order.
    pub async fn stock(&self) -> Vec<(String, String, i64, bool)> {
        self.db
            .query(
                "SELECT aggregate_id, sku, quantity, unlimited FROM stock_items ORDER BY 1, 2",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    pub async fn source_stock(&self) -> Vec<(String, String, i64, bool)> {
        self.db
            .query(
                "SELECT source_id, sku, quantity, unlimited FROM source_stock_items ORDER BY 1, 2",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    /// One SKU's `(quantity, unlimited)`, if it has a row.
    pub async fn sku(&self, aggregate: &str, sku: &str) -> Option<(i64, bool)> {
        self.db
            .query_opt(
                "SELECT quantity, unlimited FROM stock_items WHERE aggregate_id = $1 AND sku = $2",
                &[&aggregate, &sku],
            )
            .await
            .unwrap()
            .map(|r| (r.get(0), r.get(1)))
    }

    /// Messages ready in one of this environment's queues, if it was declared.
    pub async fn depth_if_declared(&self, base: &str) -> Option<u32> {
        let connection = amqp().await;
        let channel = connection.create_channel().await.unwrap();
        channel
            .queue_declare(
                self.queue(base).as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .ok()
            .map(|q| q.message_count())
    }

    /// Messages ready in one of this environment's queues.
    pub async fn depth(&self, base: &str) -> u32 {
        let connection = amqp().await;
        let channel = connection.create_channel().await.unwrap();
        let queue = channel
            .queue_declare(
                self.queue(base).as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        queue.message_count()
    }

    /// Every open dead letter of the environment, as the keeper stored it.
    pub async fn dead_letters(&self) -> Vec<DeadLetter> {
        self.db
            .query(
                "SELECT id, body, reason, coalesce(endpoint, ''), message_id FROM dead_letters
                  WHERE status = 'open' ORDER BY id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| DeadLetter {
                id: r.get(0),
                body: r.get(1),
                reason: r.get(2),
                endpoint: r.get(3),
                message_id: r.get(4),
            })
            .collect()
    }

    /// Asserts that nothing was dead-lettered: none stored, none on its way to the store.
    pub async fn assert_no_dead_letters(&self) {
        let stored = self.dead_letters().await;
        assert!(stored.is_empty(), "dead letters: {stored:?}");
        for queue in module_queues() {
            let dead = format!("{queue}.dead");
            assert_eq!(
                self.depth_if_declared(&dead).await.unwrap_or(0),
                0,
                "{dead}"
            );
        }
    }

    /// Waits until `n` dead letters are stored, then returns them (exactly `n`).
    pub async fn expect_dead_letters(&self, n: usize) -> Vec<DeadLetter> {
        wait_until(&format!("{n} dead letters"), PATIENCE, || async {
            self.dead_letters().await.len() >= n
        })
        .await;
        let letters = self.dead_letters().await;
        assert_eq!(letters.len(), n, "dead letters: {letters:?}");
        letters
    }

    /// The same environment with a new connection of its own (after a database restart).
    #[allow(dead_code, reason = "used by the restart suite")]
    pub async fn reconnect(mut self) -> Self {
        let (db, connection) = tokio_postgres::connect(&self.database_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let fresh = Self {
            db_name: self.db_name.clone(),
            database_url: self.database_url.clone(),
            prefix: self.prefix.clone(),
            db,
            cleaned: false,
        };
        self.cleaned = true;
        fresh
    }

    /// Drops the database and the queues and exchanges of the prefix.
    pub async fn teardown(mut self) {
        cleanup(&self.db_name, &self.prefix).await;
        self.cleaned = true;
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // A failed test still leaves nothing behind.
        let (db_name, prefix) = (self.db_name.clone(), self.prefix.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(cleanup(&db_name, &prefix));
        })
        .join();
    }
}

async fn cleanup(db_name: &str, prefix: &str) {
    if let Ok(connection) = Connection::connect(AMQP_URL, ConnectionProperties::default()).await
        && let Ok(channel) = connection.create_channel().await
    {
        for base in module_queues() {
            let mut names = vec![format!("{prefix}{base}"), format!("{prefix}{base}.dead")];
            for (label, _) in runtime::topology::RETRY_DELAYS {
                names.push(format!("{prefix}{base}.retry.{label}"));
            }
            for name in names {
                let _ = channel
                    .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
        }
        for exchange in [
            runtime::topology::OMS_EXCHANGE,
            runtime::topology::COMMERCE_EXCHANGE,
        ] {
            let _ = channel
                .exchange_delete(
                    format!("{prefix}{exchange}").as_str().into(),
                    lapin::options::ExchangeDeleteOptions::default(),
                )
                .await;
        }
        let _ = connection.close(200, "test done".into()).await;
    }
    if let Ok((client, conn)) =
        tokio_postgres::connect(&format!("{PG_BASE}/postgres"), tokio_postgres::NoTls).await
    {
        tokio::spawn(conn);
        let _ = client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)"
            ))
            .await;
    }
}

#[derive(Debug)]
pub struct DeadLetter {
    pub id: i64,
    pub body: Vec<u8>,
    pub reason: String,
    pub endpoint: String,
    pub message_id: Option<String>,
}

/// An in-process worker.
pub struct Worker {
    token: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
    pub http: SocketAddr,
}

impl Worker {
    pub async fn wait_ready(&self) {
        wait_until("the worker to be ready", PATIENCE, || async {
            http_get(self.http, "/readyz").await.0 == 200
        })
        .await;
    }

    pub async fn metrics(&self) -> String {
        http_get(self.http, "/metrics").await.1
    }

    /// The value of a counter or gauge line, e.g.
    /// `omsc_messages_total{endpoint="…",module="inventory",outcome="dead"}`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics().await, name, labels)
    }

    /// Stops like SIGTERM would, and waits for the worker to finish.
    pub async fn stop(self) {
        self.token.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

/// Sums the samples of `name` whose labels include all of `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            (series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

pub async fn amqp() -> Connection {
    Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("RabbitMQ at 127.0.0.1:5672")
}

/// A binary of the workspace, built next to the test executable (`make test` builds them).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --bins; make test does)",
        path.display()
    );
    path
}

/// A queue on the commerce exchange bound to `pattern`, as the OMS would bind one: exclusive
/// to this connection, consumed at once (tag `oms`), with `prefetch` deliveries in hand when
/// given. The channel stays usable (a test may publish on it).
pub async fn oms_listener(
    env: &TestEnv,
    pattern: &str,
    prefetch: Option<u16>,
) -> (Connection, lapin::Channel, lapin::Consumer) {
    let connection = amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let queue = format!("{}oms.inbox.{}", env.prefix, rand::random::<u32>());
    runtime::Topology::new(&env.prefix, runtime::config::QueueType::Quorum)
        .declare_oms_listener(
            &channel,
            &queue,
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            pattern,
        )
        .await
        .unwrap();
    if let Some(prefetch) = prefetch {
        channel
            .basic_qos(prefetch, lapin::options::BasicQosOptions::default())
            .await
            .unwrap();
    }
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "oms".into(),
            lapin::options::BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    (connection, channel, consumer)
}

/// A row's cells as text for a person to read: text as it is, booleans as `true`/`false`,
/// NULL as `∅`.
pub fn text_cells(row: &tokio_postgres::Row) -> Vec<String> {
    (0..row.len())
        .map(|i| {
            row.try_get::<_, Option<String>>(i)
                .map(|v| v.unwrap_or_else(|| "∅".into()))
                .or_else(|_| row.try_get::<_, bool>(i).map(|b| b.to_string()))
                .unwrap()
        })
        .collect()
}

/// The rows of each of `queries`, in turn, as `a | b | c` lines ([`text_cells`]).
pub async fn text_rows(env: &TestEnv, queries: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for query in queries {
        for row in env.db.query(*query, &[]).await.unwrap() {
            out.push(text_cells(&row).join(" | "));
        }
    }
    out
}

/// Stops a process as Kubernetes does (SIGTERM) and waits up to `within` for it to exit;
/// returns how it ended.
pub async fn sigterm(
    process: &mut tokio::process::Child,
    within: Duration,
) -> std::process::ExitStatus {
    let pid = process.id().expect("the process runs").to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(signalled.success(), "kill -TERM {pid} failed");
    tokio::time::timeout(within, process.wait())
        .await
        .unwrap_or_else(|_| panic!("process {pid} did not exit within {within:?} of SIGTERM"))
        .unwrap()
}
