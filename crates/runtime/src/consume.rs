//! The consume loop of a module: one broker session after another until shutdown.
//!
//! Within a session, deliveries are read and parsed as they arrive and gathered into a batch;
//! a batch is handed to a task as soon as a slot is free (at once when nothing else is being
//! applied, so a quiet queue gets low latency; after a short linger or when full otherwise, so
//! a busy one gets large batches). Up to `apply_concurrency` batches are applied at once, each
//! in its own transaction. Acknowledgements leave in delivery order, one multiple-ack per
//! batch, and only after the batch's transaction committed and its retries and dead letters
//! were confirmed by the broker.
//!
//! When the gathering batch is full and every slot is busy, the loop stops reading: the
//! broker holds the rest (the prefetch bounds what is in flight). A database outage therefore
//! stops intake without losing or acknowledging anything. A broker failure ends the session;
//! the next one reconnects, re-declares and re-subscribes, and the broker redelivers what was
//! not acknowledged.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use chrono::Utc;
use futures::StreamExt as _;
use futures::stream::{BoxStream, FuturesOrdered};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::Shared;
use crate::amqp::{self, Publisher};
use crate::backoff::Backoff;
use crate::batch::{BatchAbort, BatchContext, BatchDone};
use crate::handler::Handler;
use crate::host::host_name;
use crate::incoming::Incoming;
use crate::prefetch::PrefetchGovernor;
use crate::topology::QueueSpec;
use crate::trace;

/// A session that lasted this long resets the reconnection backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// Runs a module's consumer until `shutdown`. Never returns early: every failure is logged,
/// counted and followed by a reconnection.
pub async fn run<H: Handler>(
    shared: Shared,
    spec: QueueSpec,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    let module = handler.module();
    shared.health.register(module);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    while !shutdown.is_cancelled() {
        let started = Instant::now();
        let session = Session::new(shared.clone(), spec, handler.clone());
        let result = session.run(&shutdown).await;
        shared.metrics.ready.with_label_values(&[module]).set(0);
        match result {
            Ok(()) => break,
            Err(e) => {
                if started.elapsed() > HEALTHY_SESSION {
                    backoff.reset();
                }
                if !wait_to_reconnect(&shared, module, &e, backoff.next_delay(), &shutdown).await {
                    break;
                }
            }
        }
    }
    shared.health.set(module, false, "stopped");
    tracing::info!(module, "consumer stopped");
}

enum Event {
    Delivery(Box<lapin::Result<lapin::message::Delivery>>),
    /// The consumer with this tag will deliver nothing more.
    Ended(String),
}

type Pending<M> = JoinHandle<Result<BatchDone<M>, BatchAbort>>;

struct Session<H: Handler> {
    shared: Shared,
    spec: QueueSpec,
    handler: Arc<H>,
    module: &'static str,
}

struct Gathering<M> {
    messages: Vec<Incoming<M>>,
    rows: usize,
    first_at: Option<Instant>,
}

impl<M> Gathering<M> {
    fn new() -> Self {
        Self {
            messages: Vec::new(),
            rows: 0,
            first_at: None,
        }
    }

    fn take(&mut self) -> Vec<Incoming<M>> {
        self.rows = 0;
        self.first_at = None;
        std::mem::take(&mut self.messages)
    }
}

impl<H: Handler> Session<H> {
    fn new(shared: Shared, spec: QueueSpec, handler: Arc<H>) -> Self {
        let module = handler.module();
        Self {
            shared,
            spec,
            handler,
            module,
        }
    }

    async fn run(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let config = &self.shared.config;
        let connection = amqp::connect(&config.broker.amqp_url, &self.connection_name())
            .await
            .context("connecting to the broker")?;
        let result = self.consume(&connection, shutdown).await;
        // Closing returns every unacknowledged delivery to the queue at once.
        if connection.status().connected() {
            let closing = connection.close(200, "omsc session ends".into());
            let _ = amqp::within("closing", closing).await;
        }
        result
    }

    async fn consume(
        &self,
        connection: &Connection,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let config = &self.shared.config;
        let topology = &self.shared.topology;
        if config.declare_topology {
            let setup = amqp::within("opening a channel", connection.create_channel()).await?;
            amqp::within(
                "declaring the topology",
                topology.declare(&setup, &self.spec),
            )
            .await?;
            let _ = amqp::within("closing", setup.close(200, "declared".into())).await;
        }
        let publisher = amqp::within("opening a channel", Publisher::open(connection)).await?;
        let channel = amqp::within("opening a channel", connection.create_channel()).await?;
        let queue = topology.queue(&self.spec);

        let cancel = CancellationToken::new();
        let _cancel_batches_on_exit = cancel.clone().drop_guard();
        let context = Arc::new(BatchContext {
            shared: self.shared.clone(),
            handler: self.handler.clone(),
            spec: self.spec,
            publisher,
            cancel: cancel.clone(),
        });

        let consume = &config.consume;
        let limits = consume.limits();
        // The budget is the process's: the other modules' consumers draw on it too.
        let mut governor = PrefetchGovernor::new(
            consume.prefetch,
            self.shared.inflight.clone(),
            limits.max_body_bytes,
        );
        let mut consumers: VecDeque<BoxStream<'static, Event>> = VecDeque::new();
        let mut tag_seq = 0u32;
        let mut current_tag = self
            .subscribe(
                &channel,
                &queue,
                governor.current(),
                &mut consumers,
                &mut tag_seq,
            )
            .await?;
        self.shared.health.set(self.module, true, "consuming");
        self.shared
            .metrics
            .ready
            .with_label_values(&[self.module])
            .set(1);
        tracing::info!(module = self.module, %queue, "consuming");

        let mut gathering = Gathering::new();
        let mut in_flight: FuturesOrdered<Pending<H::Message>> = FuturesOrdered::new();
        let mut stopping: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));

        loop {
            self.shared.health.beat(self.module);
            let slot_free = in_flight.len() < consume.apply_concurrency.max(1);
            let full = gathering.messages.len() >= consume.batch_messages.max(1)
                || gathering.rows >= consume.batch_rows.max(1);
            let lingered = gathering
                .first_at
                .is_some_and(|t| t.elapsed() >= consume.batch_linger());
            if !gathering.messages.is_empty()
                && slot_free
                && (in_flight.is_empty() || full || lingered || stopping.is_some())
            {
                let batch = gathering.take();
                let span = batch_span(self.module, &queue, &batch);
                let context = context.clone();
                let apply = context.run(batch, span.clone()).instrument(span);
                in_flight.push_back(tokio::spawn(apply));
                continue;
            }
            if let Some(since) = stopping {
                if in_flight.is_empty() {
                    tracing::info!(module = self.module, took = ?since.elapsed(), "drained");
                    // Close the channels before the connection, so the broker sees an orderly
                    // goodbye and returns the deliveries still buffered at once.
                    let _ = amqp::within("closing", channel.close(200, "drained".into())).await;
                    let publishing = context.publisher.channel();
                    let _ = amqp::within("closing", publishing.close(200, "drained".into())).await;
                    return Ok(());
                }
                if since.elapsed() > consume.drain_timeout() {
                    tracing::warn!(
                        module = self.module,
                        batches = in_flight.len(),
                        "drain timed out; unacknowledged messages return to the queue"
                    );
                    return Ok(());
                }
            }
            let can_read = stopping.is_none() && !full;
            let linger_deadline = gathering
                .first_at
                .filter(|_| slot_free)
                .map(|t| tokio::time::Instant::from_std(t + consume.batch_linger()));

            tokio::select! {
                biased;
                () = shutdown.cancelled(), if stopping.is_none() => {
                    tracing::info!(module = self.module, "stopping: finishing the batches in hand");
                    stopping = Some(Instant::now());
                    self.shared.health.set(self.module, false, "draining");
                    // Nothing new is read from here on; deliveries already buffered go back
                    // to the queue when the channel closes.
                    let tag = ShortString::from(current_tag.as_str());
                    let cancel = channel.basic_cancel(tag, BasicCancelOptions::default());
                    let _ = amqp::within("cancelling the consumer", cancel).await;
                }
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    let done = done.map_err(|e| anyhow!("a batch task failed: {e}"))?;
                    match done {
                        Ok(done) => {
                            // The acknowledgement's log lines belong to the batch too.
                            let span = done.span.clone();
                            self.acknowledge(done).instrument(span).await?;
                        }
                        Err(BatchAbort::Cancelled) => return Err(anyhow!("batch cancelled")),
                        Err(e) => return Err(e.into()),
                    }
                }
                event = next_event(&mut consumers), if can_read => match event {
                    Some(Event::Delivery(delivery)) => {
                        let delivery = (*delivery).context("the consumer failed")?;
                        if let Some(prefetch) = governor.observe(delivery.data.len()) {
                            current_tag = self
                                .resubscribe(&channel, &queue, prefetch, &current_tag, &mut consumers, &mut tag_seq)
                                .await?;
                        }
                        let incoming = Incoming::read(self.handler.as_ref(), delivery, &limits);
                        if incoming.body.len() > limits.max_body_bytes {
                            self.refuse_unread(incoming, limits.max_body_bytes).await?;
                            continue;
                        }
                        gathering.rows += match &incoming.parsed {
                            Ok(message) => self.handler.weight(message).max(1),
                            Err(_) => 1,
                        };
                        gathering.first_at.get_or_insert(incoming.received_at);
                        gathering.messages.push(incoming);
                    }
                    Some(Event::Ended(tag)) if tag == current_tag => {
                        return Err(anyhow!("the broker cancelled the consumer of {queue} (was the queue deleted?)"));
                    }
                    Some(Event::Ended(_)) => {}
                    None => return Err(anyhow!("no consumer left on {queue}")),
                },
                () = sleep_until(linger_deadline), if linger_deadline.is_some() => {}
                _ = tick.tick() => {}
            }
        }
    }

    /// Refuses a body over the size limit without reading or copying it: rejected without
    /// requeue, the broker moves it to the dead-letter queue by the main queue's dead-letter
    /// route, and the keeper names the reason (`dead_letters.rs`). Publishing it there like
    /// other dead letters would hold a second copy of a body of any size the broker accepts
    /// (up to 128 MiB) while it is sent. Refused at once, it never waits in a batch either.
    async fn refuse_unread(
        &self,
        message: Incoming<H::Message>,
        limit: usize,
    ) -> anyhow::Result<()> {
        let nack = message.acker.nack(BasicNackOptions {
            multiple: false,
            requeue: false,
        });
        amqp::within("refusing an oversized message", nack).await?;
        let outcome = crate::handler::Outcome::Reject(String::new()).label();
        self.shared
            .metrics
            .messages
            .with_label_values(&[self.module, message.endpoint, outcome])
            .inc();
        let took = message.received_at.elapsed();
        self.shared
            .stats
            .batch()
            .message(self.module, message.endpoint, outcome, took, None);
        tracing::warn!(
            module = self.module,
            endpoint = message.endpoint,
            message_id = message.message_id().unwrap_or("-"),
            routing_key = message.routing_key.as_str(),
            attempt = message.attempt + 1,
            bytes = message.body.len(),
            limit,
            "dead-lettered unread: the body is over the size limit"
        );
        Ok(())
    }

    async fn acknowledge(&self, done: BatchDone<H::Message>) -> anyhow::Result<()> {
        let Some(last) = done.messages.last() else {
            return Ok(());
        };
        // A channel that failed cannot acknowledge; say so now rather than wait on it.
        anyhow::ensure!(
            !last.acker.poisoned(),
            "the consuming channel closed before the acknowledgement"
        );
        let ack = last.acker.ack(BasicAckOptions { multiple: true });
        amqp::within("acknowledging a batch", ack).await?;
        let metrics = &self.shared.metrics;
        let now = Utc::now();
        // Label lookups hash and lock: resolve them once per endpoint and outcome of the
        // batch (usually one of each), not once per message.
        let mut durations: Vec<(&'static str, prometheus::Histogram)> = Vec::new();
        let mut counts: Vec<(&'static str, &'static str, u64)> = Vec::new();
        let mut lags: Vec<(&'static str, f64)> = Vec::new();
        let mut stats = self.shared.stats.batch();
        let max_attempts = self.shared.config.consume.max_attempts.max(1);
        for (message, outcome) in done.messages.iter().zip(&done.outcomes) {
            let label = outcome.label();
            match counts
                .iter_mut()
                .find(|(e, o, _)| *e == message.endpoint && *o == label)
            {
                Some((_, _, n)) => *n += 1,
                None => counts.push((message.endpoint, label, 1)),
            }
            let histogram = match durations.iter().find(|(e, _)| *e == message.endpoint) {
                Some((_, h)) => h,
                None => {
                    let h = metrics
                        .message_duration
                        .with_label_values(&[self.module, message.endpoint]);
                    durations.push((message.endpoint, h));
                    &durations[durations.len() - 1].1
                }
            };
            let took = message.received_at.elapsed();
            histogram.observe(took.as_secs_f64());
            let mut lag = None;
            if let Ok(parsed) = &message.parsed
                && let Some(produced) = self.handler.produced_at(parsed)
            {
                let seconds = (now - produced).num_milliseconds() as f64 / 1000.0;
                lag = Some(seconds);
                match lags.iter_mut().find(|(e, _)| *e == message.endpoint) {
                    Some((_, l)) => *l = seconds,
                    None => lags.push((message.endpoint, seconds)),
                }
            }
            stats.message(self.module, message.endpoint, outcome.label(), took, lag);
            // Each line names its message (id, routing key, module, which attempt failed,
            // counting from 1), so a person can find the message in the dead letters or the
            // broker and follow it through its retries; the batch span names the batch it
            // came in.
            let message_id = message.message_id().unwrap_or("-");
            let routing_key = message.routing_key.as_str();
            let attempt = message.attempt + 1;
            match outcome {
                crate::handler::Outcome::Reject(reason) => tracing::warn!(
                    module = self.module,
                    endpoint = message.endpoint,
                    message_id,
                    routing_key,
                    attempt,
                    reason = %reason,
                    "dead-lettered"
                ),
                // The last attempt went to the dead-letter queue, not to a retry queue
                // (`batch.rs`): say so.
                crate::handler::Outcome::Retry(reason) if attempt >= max_attempts => {
                    tracing::warn!(
                        module = self.module,
                        endpoint = message.endpoint,
                        message_id,
                        routing_key,
                        attempt,
                        reason = %reason,
                        "dead-lettered: gave up retrying"
                    );
                }
                crate::handler::Outcome::Retry(reason) => tracing::info!(
                    module = self.module,
                    endpoint = message.endpoint,
                    message_id,
                    routing_key,
                    attempt,
                    reason = %reason,
                    "will retry"
                ),
                _ => {}
            }
        }
        for (endpoint, outcome, n) in counts {
            metrics
                .messages
                .with_label_values(&[self.module, endpoint, outcome])
                .inc_by(n);
        }
        for (endpoint, lag) in lags {
            metrics
                .source_lag
                .with_label_values(&[self.module, endpoint])
                .set(lag);
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        channel: &Channel,
        queue: &str,
        prefetch: u16,
        consumers: &mut VecDeque<BoxStream<'static, Event>>,
        seq: &mut u32,
    ) -> anyhow::Result<String> {
        *seq += 1;
        let tag = format!("{}-{}", self.connection_name(), seq);
        // A per-consumer prefetch applies to consumers created after it is set.
        let qos = channel.basic_qos(prefetch, BasicQosOptions { global: false });
        amqp::within("setting the prefetch", qos).await?;
        let consume = channel.basic_consume(
            ShortString::from(queue),
            ShortString::from(tag.as_str()),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        );
        let consumer = amqp::within("subscribing", consume)
            .await
            .with_context(|| format!("subscribing to {queue}"))?;
        let end_tag = tag.clone();
        consumers.push_back(
            consumer
                .map(|d| Event::Delivery(Box::new(d)))
                .chain(futures::stream::once(async move { Event::Ended(end_tag) }))
                .boxed(),
        );
        self.shared
            .metrics
            .prefetch
            .with_label_values(&[self.module])
            .set(i64::from(prefetch));
        Ok(tag)
    }

    /// Replaces the consumer by one with another prefetch. The old consumer is cancelled first
    /// and read to its end before the new one, so deliveries keep their order and a
    /// multiple-ack never covers a delivery that is not applied yet.
    async fn resubscribe(
        &self,
        channel: &Channel,
        queue: &str,
        prefetch: u16,
        old_tag: &str,
        consumers: &mut VecDeque<BoxStream<'static, Event>>,
        seq: &mut u32,
    ) -> anyhow::Result<String> {
        tracing::debug!(module = self.module, prefetch, "changing the prefetch");
        let cancel =
            channel.basic_cancel(ShortString::from(old_tag), BasicCancelOptions::default());
        amqp::within("cancelling the consumer to change the prefetch", cancel).await?;
        self.subscribe(channel, queue, prefetch, consumers, seq)
            .await
    }

    fn connection_name(&self) -> String {
        format!(
            "omsc-{}@{}-{}",
            self.module,
            host_name(),
            std::process::id()
        )
    }
}

/// The span of one batch, around its apply, its retries and dead letters and its
/// acknowledgement: every log line of the batch carries its module, queue and size. The
/// message ids are said once, at debug level (a batch holds up to thousands of them). When
/// spans are exported, it continues the traces its messages carry (`trace::continue_from`).
fn batch_span<M>(module: &'static str, queue: &str, batch: &[Incoming<M>]) -> tracing::Span {
    let span = tracing::info_span!("batch", module, queue, messages = batch.len());
    // Lazy: the headers are read only when spans are exported.
    trace::continue_from(
        &span,
        batch.iter().filter_map(|m| {
            m.properties
                .headers()
                .as_ref()
                .and_then(trace::remote_context)
        }),
    );
    tracing::debug!(
        parent: &span,
        message_ids = ?batch
            .iter()
            .map(|m| m.message_id().unwrap_or("-"))
            .collect::<Vec<_>>(),
        "batch gathered"
    );
    span
}

/// The next event of the oldest consumer that still has any.
async fn next_event(consumers: &mut VecDeque<BoxStream<'static, Event>>) -> Option<Event> {
    loop {
        let front = consumers.front_mut()?;
        match front.next().await {
            Some(event) => {
                if matches!(event, Event::Ended(_)) {
                    consumers.pop_front();
                }
                return Some(event);
            }
            None => {
                consumers.pop_front();
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// After a consumer's broker session ended with `error`: says so (log, `/readyz`, the
/// reconnect counter) and waits `delay`. False when shutdown came first. Every consumer of
/// its own queue reconnects the same way, the modules' and the gateway's alike.
pub async fn wait_to_reconnect(
    shared: &Shared,
    module: &str,
    error: &anyhow::Error,
    delay: std::time::Duration,
    shutdown: &CancellationToken,
) -> bool {
    let reason = format!("{error:#}");
    tracing::warn!(module, error = %reason, ?delay, "broker session ended; reconnecting");
    shared
        .health
        .set(module, false, format!("reconnecting: {reason}"));
    shared
        .metrics
        .reconnects
        .with_label_values(&[module, "broker"])
        .inc();
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}
