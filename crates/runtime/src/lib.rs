//! What every worker shares: configuration, telemetry, the operations HTTP server, the
//! PostgreSQL pool and migrations, the broker topology, the batching consume loop, shutdown.
//!
//! A binary builds a [`Runtime`], lets each module add its consumer and background tasks,
//! and runs it until a shutdown signal:
//!
//! ```ignore
//! let mut runtime = Runtime::build(config).await?;
//! inventory::install(&mut runtime, &inventory_config)?;
//! runtime.run_until(runtime::shutdown_signal()).await
//! ```

pub mod amqp;
pub mod backoff;
mod batch;
pub mod config;
pub mod consume;
pub mod db;
pub mod dead_letters;
pub mod handler;
pub mod health;
mod host;
pub mod http;
pub mod https;
pub mod incoming;
pub mod metrics;
pub mod notify;
pub mod outbox;
pub mod outbox_rows;
pub mod prefetch;
pub mod properties;
pub mod registration;
pub mod startup;
pub mod stats;
mod storable;
pub mod telemetry;
pub mod tls;
pub mod topology;
pub mod trace;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::Pool;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{BrokerArgs, DatabaseArgs, RuntimeConfig};
pub use handler::{ApplyError, Handler, Outcome};
pub use topology::{QueueSpec, Topology};

use crate::health::{Beat, Health};
use crate::metrics::Metrics;
use crate::stats::Stats;

/// What the consumers and tasks of a process share. Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    pub config: Arc<RuntimeConfig>,
    pub pool: Pool,
    pub metrics: Metrics,
    pub health: Health,
    pub topology: Topology,
    pub registry: Registry,
    /// Per-endpoint statistics for the system report, flushed to the database.
    pub stats: Stats,
    /// The bytes of message bodies the process's consumers may hold at once, all together.
    pub inflight: Arc<prefetch::InflightBudget>,
}

type Starter = Box<dyn FnOnce(Shared, CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// How the start of a consumer or task is watched.
enum Watch {
    /// It reports its own readiness (a consumer, the database watch) or none (a one-off).
    Own,
    /// A background loop: registered with [`Health::register_loop`] when it starts, beating
    /// at least every period (`None`: only its end is watched), its end reported.
    Loop(Option<Duration>),
}

/// A consumer or task to start, by name.
struct Start {
    name: String,
    watch: Watch,
    starter: Starter,
}

impl Start {
    fn own(name: impl Into<String>, starter: Starter) -> Self {
        Self {
            name: name.into(),
            watch: Watch::Own,
            starter,
        }
    }

    fn watched(name: impl Into<String>, period: Option<Duration>, starter: Starter) -> Self {
        Self {
            name: name.into(),
            watch: Watch::Loop(period),
            starter,
        }
    }
}

/// A process's worth of modules, built but not yet running.
pub struct Runtime {
    shared: Shared,
    listener: TcpListener,
    starters: Vec<Start>,
    consumed: Vec<&'static str>,
    /// The queues of the consumers, whose depths are sampled.
    queues: Vec<(&'static str, QueueSpec)>,
    modules: Vec<registration::ModuleMethods>,
    /// The modules of the outbox relays added so far.
    relays: Vec<&'static str>,
    /// Whether the relay of error notifications (`notify`) was added: once per process.
    notifier: bool,
}

impl Runtime {
    /// Binds the HTTP port and builds the pool and metrics. Connects to nothing yet: a
    /// worker starts, and reports itself not ready, while the broker or database is down.
    pub async fn build(config: RuntimeConfig) -> anyhow::Result<Self> {
        // A malformed URL is refused here, before anything waits on it.
        amqp::check_url(&config.broker.amqp_url)?;
        // So is a trace exporter asked for but not possible (`telemetry::init` read it).
        if let Some(reason) = trace::refused() {
            anyhow::bail!("cannot export traces: {reason}");
        }
        let registry = Registry::new();
        let metrics = Metrics::register(&registry).context("registering metrics")?;
        metrics::register_process(&registry).context("registering the process metrics")?;
        let pool = db::pool_with_timeout(
            &config.db.database_url,
            "omsc",
            config.db_pool_size,
            Some(std::time::Duration::from_secs(
                config.statement_timeout_secs,
            )),
        )?;
        let listener = http::bind(config.http_addr)
            .await
            .with_context(|| format!("binding the HTTP server to {}", config.http_addr))?;
        let topology = Topology::new(&config.broker.prefix, config.queue_type);
        let stats = Stats::new(stats::Identity::of_this_process(), metrics.clone());
        let inflight = prefetch::InflightBudget::new(config.consume.inflight_bytes);
        Ok(Self {
            shared: Shared {
                config: Arc::new(config),
                pool,
                metrics,
                health: Health::default(),
                topology,
                registry,
                stats,
                inflight,
            },
            listener,
            starters: Vec::new(),
            consumed: Vec::new(),
            queues: Vec::new(),
            modules: Vec::new(),
            relays: Vec::new(),
            notifier: false,
        })
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The address the HTTP server listens on (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Every method consumed by the modules installed so far, derived from their handlers.
    pub fn consumed_methods(&self) -> &[&'static str] {
        &self.consumed
    }

    /// The modules installed so far, each with the methods its consumer takes: what this
    /// process records for the registration with the OMS.
    pub fn modules(&self) -> &[registration::ModuleMethods] {
        &self.modules
    }

    /// Adds a module's consumer of `spec`'s queue, and the keeper of its dead letters; with
    /// `OMSC_NOTIFY_ERRORS`, also (once per process) the relay that tells the OMS about the
    /// dead letters of its messages (`notify`).
    ///
    /// # Panics
    ///
    /// When the queue is not bound to exactly the methods the handler consumes: a method bound
    /// but not handled would only ever be dead-lettered as unknown, a method handled but not
    /// bound would never arrive. A programming error that every test installing the module
    /// catches.
    pub fn add_consumer<H: Handler>(&mut self, spec: QueueSpec, handler: H) {
        if let Some(mismatch) = topology::binding_mismatch(&spec, handler.methods()) {
            panic!("queue {}: {mismatch}", spec.name);
        }
        self.consumed.extend_from_slice(handler.methods());
        self.shared.stats.add_module(handler.module());
        self.queues.push((handler.module(), spec));
        self.modules.push((handler.module(), handler.methods()));
        let handler = Arc::new(handler);
        self.starters.push(Start::own(
            format!("{} consumer", handler.module()),
            Box::new(move |shared, shutdown| {
                Box::pin(consume::run(shared, spec, handler, shutdown))
            }),
        ));
        self.add_dead_letter_keeper(spec);
        // Every worker that keeps dead letters of the OMS's messages relays their
        // notifications; replicas share the rows like any module's outbox rows.
        if self.shared.config.notify_errors && !spec.oms_bindings.is_empty() && !self.notifier {
            self.notifier = true;
            self.add_outbox_relay(notify::ErrorNotifier);
        }
    }

    /// Adds the keeper of `spec`'s dead-letter queue (`add_consumer` does, for a module's
    /// queue). It waits on dead letters for as long as none come, so it has no period to beat
    /// at: its end is watched, and it says itself when it is not ready (reconnecting).
    pub fn add_dead_letter_keeper(&mut self, spec: QueueSpec) {
        let name = format!("{} dead-letter keeper", spec.name);
        self.starters.push(Start::watched(
            name.clone(),
            None,
            Box::new(move |shared, shutdown| {
                Box::pin(dead_letters::keep(shared, spec, name, shutdown))
            }),
        ));
    }

    /// Adds a long-running service named `name` that waits on others for as long as they take
    /// (an HTTP server, a consumer with a loop of its own), so it has no period to beat at:
    /// only its end before shutdown is watched, and makes the process not ready.
    pub fn add_service<F, Fut>(&mut self, name: &str, task: F)
    where
        F: FnOnce(Shared, CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.starters.push(Start::watched(
            name,
            None,
            Box::new(move |shared, shutdown| Box::pin(task(shared, shutdown))),
        ));
    }

    /// Adds a one-off task named `name`, started with the others once the database and the
    /// broker are reachable, that ends when its work is done (a sync at start): its end is
    /// no failure, so it has no `/readyz` line and never makes the process unready. It must
    /// return soon after `shutdown` is cancelled.
    pub fn add_once<F, Fut>(&mut self, name: &str, task: F)
    where
        F: FnOnce(Shared, CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.starters.push(Start::own(
            name,
            Box::new(move |shared, shutdown| Box::pin(task(shared, shutdown))),
        ));
    }

    /// The modules of the outbox relays added so far: the values of `outbox.module` this
    /// process sends.
    pub fn relays(&self) -> &[&'static str] {
        &self.relays
    }

    /// Adds a module's outbox relay.
    pub fn add_outbox_relay<H: outbox::OutboxHandler>(&mut self, handler: H) {
        self.shared.stats.add_module(handler.module());
        self.relays.push(handler.module());
        let handler = Arc::new(handler);
        let name = format!("{} outbox relay", handler.module());
        let beat = Beat::new(self.shared.health.clone(), &name);
        self.starters.push(Start::watched(
            name,
            Some(outbox::BEAT_EVERY),
            Box::new(move |shared, shutdown| {
                Box::pin(outbox::run(shared, handler, beat, shutdown))
            }),
        ));
    }

    /// Adds a background loop named `name` (its `/readyz` line); it must return soon after
    /// `shutdown` is cancelled, and [`Beat::beat`] at least every `period`, idle or not. A
    /// loop that ends before shutdown, or misses its beats, makes the process not ready.
    pub fn add_task<F, Fut>(&mut self, name: &str, period: Duration, task: F)
    where
        F: FnOnce(Shared, Beat, CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let beat = Beat::new(self.shared.health.clone(), name);
        self.starters.push(Start::watched(
            name,
            Some(period),
            Box::new(move |shared, shutdown| Box::pin(task(shared, beat, shutdown))),
        ));
    }

    /// Serves HTTP, migrates (waiting for the database if needed), starts every consumer and
    /// task, and runs until `shutdown` completes; then stops consuming, drains and returns.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let token = CancellationToken::new();
        let http_stop = CancellationToken::new();
        let router = http::router(self.shared.registry.clone(), self.shared.health.clone());
        let http = tokio::spawn(http::serve(self.listener, router, http_stop.clone()));
        let tracker = TaskTracker::new();
        let shared = self.shared.clone();
        let mut starters = self.starters;
        starters.extend(stats_tasks(&shared, self.queues));
        if !starters.is_empty() {
            starters.push(Start::own(
                "database watch",
                Box::new(|shared, shutdown| Box::pin(watch_database(shared, shutdown))),
            ));
        }
        if shared.config.registration.register_on_start && !self.modules.is_empty() {
            let modules = self.modules;
            starters.push(Start::own(
                "registration",
                Box::new(move |shared, shutdown| {
                    Box::pin(registration::run(shared, modules, shutdown))
                }),
            ));
        }
        let start = {
            let token = token.clone();
            let tracker = tracker.clone();
            async move {
                if !startup::wait_until_reachable(&shared.config, &token).await? {
                    return Ok(());
                }
                for start in starters {
                    tracing::debug!(task = %start.name, "starting");
                    let task = (start.starter)(shared.clone(), token.clone());
                    match start.watch {
                        Watch::Own => tracker.spawn(task),
                        Watch::Loop(period) => {
                            shared.health.register_loop(&start.name, period);
                            let watched =
                                watch_loop(shared.health.clone(), start.name, task, token.clone());
                            tracker.spawn(watched)
                        }
                    };
                }
                anyhow::Ok(())
            }
        };
        let mut starting = tokio::spawn(start);
        tokio::pin!(shutdown);
        // A configuration the database or the broker refused for good ends the process; a
        // shutdown signal ends it at any time.
        let refused = tokio::select! {
            () = &mut shutdown => {
                token.cancel();
                (&mut starting).await.ok().and_then(Result::err)
            }
            started = &mut starting => match started {
                Ok(Err(e)) => Some(e),
                _ => {
                    shutdown.await;
                    None
                }
            },
        };
        // A refusal is said once, by whoever prints the error this returns.
        if refused.is_none() {
            tracing::info!("shutdown requested");
        }
        token.cancel();
        tracker.close();
        let drain = self.shared.config.consume.drain_timeout() + config::STOP_MARGIN;
        if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
            tracing::warn!("tasks did not stop within {drain:?}");
        }
        // The consumers have acknowledged their last batches: flush their statistics (none
        // ran when the start was refused) and, at the same time and within the same limit,
        // the last spans.
        let statistics = async {
            if refused.is_none() {
                let flush = self.shared.stats.flush(&self.shared.pool);
                match tokio::time::timeout(config::LAST_FLUSH_LIMIT, flush).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "the last statistics could not be written");
                    }
                    Err(_) => tracing::warn!("the last statistics could not be written in time"),
                }
            }
        };
        tokio::join!(statistics, trace::flush(config::LAST_FLUSH_LIMIT));
        http_stop.cancel();
        let _ = http.await;
        refused.map_or(Ok(()), Err)
    }
}

/// The statistics flusher and, when the process consumes queues, their depth sampler.
fn stats_tasks(shared: &Shared, queues: Vec<(&'static str, QueueSpec)>) -> Vec<Start> {
    const FLUSHER: &str = "statistics flusher";
    let beat = Beat::new(shared.health.clone(), FLUSHER);
    // It beats once per flush; a period of at least 10 s keeps a test's 50 ms flushes from
    // making one slow flush a late loop.
    let period = shared
        .config
        .stats
        .flush_every()
        .max(Duration::from_secs(10));
    let mut tasks = vec![Start::watched(
        FLUSHER,
        Some(period),
        Box::new(move |shared: Shared, shutdown| {
            let config = shared.config.stats.clone();
            Box::pin(stats::run_flusher(
                shared.stats.clone(),
                shared.pool,
                config,
                beat,
                shutdown,
            ))
        }),
    )];
    if !queues.is_empty() {
        tasks.push(Start::own(
            "queue depth sampler",
            Box::new(move |shared: Shared, shutdown| {
                Box::pin(stats::depth::run(shared, queues, shutdown))
            }),
        ));
    }
    tasks
}

/// Runs a background loop and reports its end: returning or panicking before `shutdown`
/// makes the process not ready (and not alive) with the reason; a panic is also logged
/// here, since nothing awaits the task.
async fn watch_loop(
    health: Health,
    name: String,
    task: BoxFuture<'static, ()>,
    shutdown: CancellationToken,
) {
    let outcome = std::panic::AssertUnwindSafe(task).catch_unwind().await;
    let unexpectedly = !shutdown.is_cancelled();
    let reason = match outcome {
        Ok(()) if unexpectedly => "returned".to_owned(),
        Ok(()) => "shut down".to_owned(),
        Err(panic) => format!("panicked: {}", outbox::panic_message(panic.as_ref())),
    };
    if unexpectedly {
        tracing::error!(task = %name, %reason, "a background loop stopped; the process is not ready");
    }
    health.ended(&name, reason, unexpectedly);
}

/// Readiness component `database`: the pool answers a trivial query. Consumers notice an
/// outage when they next apply a batch; this notices it on an idle worker too, so a rollout
/// waits for a worker that can actually reach its database.
async fn watch_database(shared: Shared, shutdown: CancellationToken) {
    const COMPONENT: &str = "database";
    const EVERY: Duration = Duration::from_secs(2);
    shared.health.register(COMPONENT);
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reachable = true;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ping = async {
            let client = shared.pool.get().await.map_err(|e| e.to_string())?;
            client
                .simple_query("SELECT 1")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let result = match tokio::time::timeout(EVERY, ping).await {
            Ok(result) => result,
            Err(_) => Err("no answer within 2s".to_owned()),
        };
        match result {
            Ok(()) => {
                if !reachable {
                    tracing::info!("database reachable again");
                }
                reachable = true;
                shared.health.set(COMPONENT, true, "reachable");
            }
            Err(e) => {
                if reachable {
                    tracing::warn!(error = %e, "database unavailable");
                }
                reachable = false;
                shared
                    .health
                    .set(COMPONENT, false, format!("database unavailable: {e}"));
            }
        }
    }
}

/// A worker binary's whole life: logging as configured, the runtime, the module(s) that
/// `install` adds, then running until SIGTERM or Ctrl-C. Every `omsc-*` worker's `main` is
/// its flags and this.
pub async fn serve(
    config: RuntimeConfig,
    install: impl FnOnce(&mut Runtime) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    telemetry::init(config.log_format);
    let mut app = Runtime::build(config).await?;
    install(&mut app)?;
    app.run_until(shutdown_signal()).await
}

/// Completes on SIGTERM (Kubernetes) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
