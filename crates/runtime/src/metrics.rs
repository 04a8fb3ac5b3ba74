//! Prometheus metrics of the runtime, registered on a `Registry` passed in so that each test
//! (and each process) has its own. Label values come from closed sets: module names, the
//! methods a module consumes, outcomes; never SKUs or order ids.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, core::Collector,
};

/// Seconds from receiving a message to acknowledging it. The buckets resolve the
/// sub-millisecond to 10 ms range where a healthy batched worker lives, and the seconds
/// where a backlog or an outage pushes it.
pub const DURATION_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Messages per applied batch.
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];

#[derive(Debug, Clone)]
pub struct Metrics {
    /// `omsc_messages_total{module,endpoint,outcome}`: applied, stale, ignored, retried, dead.
    pub messages: IntCounterVec,
    /// `omsc_message_duration_seconds{module,endpoint}`.
    pub message_duration: HistogramVec,
    /// `omsc_source_lag_seconds{module,endpoint}`: now − the message's own timestamp, for the
    /// last message of the endpoint. `module` lets a dashboard filter it like every other
    /// per-endpoint series.
    pub source_lag: prometheus::GaugeVec,
    /// `omsc_batch_messages{module}`.
    pub batch_messages: HistogramVec,
    /// `omsc_batch_apply_seconds{module}`: one transaction, from begin to commit.
    pub batch_apply: HistogramVec,
    /// `omsc_reconnects_total{module,target}`: target is `broker` or `database`.
    pub reconnects: IntCounterVec,
    /// `omsc_consumer_prefetch{module}`: the prefetch currently in force.
    pub prefetch: IntGaugeVec,
    /// `omsc_ready{module}`: 1 while consuming.
    pub ready: IntGaugeVec,
    /// `omsc_outbox_pending{module}`: outbox rows neither sent nor failed.
    pub outbox_pending: IntGaugeVec,
    /// `omsc_outbox_messages_total{module,topic,outcome}`: sent, nothing, retried, failed.
    pub outbox_messages: IntCounterVec,
    /// `omsc_dead_letters{queue}`: dead letters stored and still open (neither replayed nor
    /// discarded).
    pub dead_letters: IntGaugeVec,
    /// `omsc_outbox_failed{module}`: outbox rows given up on (they wait for an operator).
    pub outbox_failed: IntGaugeVec,
    /// `omsc_last_message_timestamp_seconds{module,endpoint}`: when a message of the endpoint
    /// was last handled successfully (applied, stale or ignored), for "nothing arrives" alerts.
    pub last_message: prometheus::GaugeVec,
    /// `omsc_queue_messages{module,queue}`: messages waiting in the module's queue and in its
    /// dead-letter queue (`queue` is the name without the prefix), sampled.
    pub queue_messages: IntGaugeVec,
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            messages: IntCounterVec::new(
                Opts::new("omsc_messages_total", "Messages handled, by outcome"),
                &["module", "endpoint", "outcome"],
            )?,
            message_duration: HistogramVec::new(
                HistogramOpts::new(
                    "omsc_message_duration_seconds",
                    "Time from receiving a message to acknowledging it",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["module", "endpoint"],
            )?,
            source_lag: prometheus::GaugeVec::new(
                Opts::new(
                    "omsc_source_lag_seconds",
                    "Now minus the timestamp the OMS put in the last message of the endpoint",
                ),
                &["module", "endpoint"],
            )?,
            batch_messages: HistogramVec::new(
                HistogramOpts::new("omsc_batch_messages", "Messages per applied batch")
                    .buckets(BATCH_SIZE_BUCKETS.to_vec()),
                &["module"],
            )?,
            batch_apply: HistogramVec::new(
                HistogramOpts::new(
                    "omsc_batch_apply_seconds",
                    "Time to apply and commit one batch",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["module"],
            )?,
            reconnects: IntCounterVec::new(
                Opts::new(
                    "omsc_reconnects_total",
                    "Connections lost and re-established, by target",
                ),
                &["module", "target"],
            )?,
            prefetch: IntGaugeVec::new(
                Opts::new(
                    "omsc_consumer_prefetch",
                    "Prefetch of the module's consumer",
                ),
                &["module"],
            )?,
            ready: IntGaugeVec::new(
                Opts::new(
                    "omsc_ready",
                    "1 while the module is connected and consuming",
                ),
                &["module"],
            )?,
            outbox_pending: IntGaugeVec::new(
                Opts::new("omsc_outbox_pending", "Outbox rows neither sent nor failed"),
                &["module"],
            )?,
            outbox_messages: IntCounterVec::new(
                Opts::new(
                    "omsc_outbox_messages_total",
                    "Outbox rows settled, by outcome: sent, nothing, retried, failed",
                ),
                &["module", "topic", "outcome"],
            )?,
            dead_letters: IntGaugeVec::new(
                Opts::new(
                    "omsc_dead_letters",
                    "Dead letters stored and still open (neither replayed nor discarded)",
                ),
                &["queue"],
            )?,
            outbox_failed: IntGaugeVec::new(
                Opts::new(
                    "omsc_outbox_failed",
                    "Outbox rows given up on, waiting for an operator",
                ),
                &["module"],
            )?,
            last_message: prometheus::GaugeVec::new(
                Opts::new(
                    "omsc_last_message_timestamp_seconds",
                    "Unix time a message of the endpoint was last handled successfully",
                ),
                &["module", "endpoint"],
            )?,
            queue_messages: IntGaugeVec::new(
                Opts::new(
                    "omsc_queue_messages",
                    "Messages waiting in the module's queue and dead-letter queue (sampled)",
                ),
                &["module", "queue"],
            )?,
        };
        let collectors: [Box<dyn Collector>; 14] = [
            Box::new(metrics.messages.clone()),
            Box::new(metrics.message_duration.clone()),
            Box::new(metrics.source_lag.clone()),
            Box::new(metrics.batch_messages.clone()),
            Box::new(metrics.batch_apply.clone()),
            Box::new(metrics.reconnects.clone()),
            Box::new(metrics.prefetch.clone()),
            Box::new(metrics.ready.clone()),
            Box::new(metrics.outbox_pending.clone()),
            Box::new(metrics.outbox_messages.clone()),
            Box::new(metrics.dead_letters.clone()),
            Box::new(metrics.outbox_failed.clone()),
            Box::new(metrics.last_message.clone()),
            Box::new(metrics.queue_messages.clone()),
        ];
        for c in collectors {
            registry.register(c)?;
        }
        Ok(metrics)
    }
}

/// `process_*` (resident and virtual memory, CPU seconds, open and maximum file descriptors,
/// start time, threads: Prometheus' standard process collector, read from `/proc`) and
/// `omsc_build_info{version,revision}`, always 1, whose labels say what runs: the version of
/// the crates and the revision the image was built from (`OMSC_REVISION`, set by the image
/// and by `make run`; `unknown` otherwise). Read at start rather than compiled in, so that a
/// new commit does not rebuild every crate.
pub fn register_process(registry: &Registry) -> prometheus::Result<()> {
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    let revision = std::env::var("OMSC_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    let build = IntGaugeVec::new(
        Opts::new(
            "omsc_build_info",
            "The running build: its version and revision, always 1",
        ),
        &["version", "revision"],
    )?;
    build
        .with_label_values(&[env!("CARGO_PKG_VERSION"), revision.as_str()])
        .set(1);
    registry.register(Box::new(build))
}
