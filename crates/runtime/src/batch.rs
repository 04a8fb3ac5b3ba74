//! Applying one batch: one transaction for the valid messages, then the retries and dead
//! letters published with confirms. Acknowledgement is the caller's, after this returns.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::PoolError;
use futures::FutureExt as _;
use futures::future::{BoxFuture, try_join_all};
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::amqp::{PublishError, Publisher};
use crate::backoff::Backoff;
use crate::db::{DbFailure, classify, classify_pool};
use crate::handler::{ApplyError, Handler, Outcome};
use crate::incoming::Incoming;
use crate::topology::{QueueSpec, Topology};

/// A lost race (deadlock, serialization failure) is retried in place this many times before
/// the batch is treated like any other statement failure.
const TRANSIENT_TRIES: u32 = 5;

/// Why a batch did not finish; either way nothing of it is acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum BatchAbort {
    #[error("publishing a retry or dead letter failed: {0}")]
    Publish(#[from] PublishError),
    #[error("stopped while waiting for the database")]
    Cancelled,
}

/// What the session needs to acknowledge and account for a finished batch.
pub struct BatchDone<M> {
    pub messages: Vec<Incoming<M>>,
    pub outcomes: Vec<Outcome>,
    /// The batch's span, which its acknowledgement runs in.
    pub span: tracing::Span,
}

pub struct BatchContext<H: Handler> {
    pub shared: Shared,
    pub handler: Arc<H>,
    pub spec: QueueSpec,
    pub publisher: Publisher,
    pub cancel: CancellationToken,
}

impl<H: Handler> BatchContext<H> {
    pub async fn run(
        self: Arc<Self>,
        messages: Vec<Incoming<H::Message>>,
        span: tracing::Span,
    ) -> Result<BatchDone<H::Message>, BatchAbort> {
        let mut outcomes: Vec<Option<Outcome>> = messages
            .iter()
            .map(|m| {
                m.parsed
                    .as_ref()
                    .err()
                    .map(|r| Outcome::Reject(r.reason().to_owned()))
            })
            .collect();
        let valid: Vec<&H::Message> = messages
            .iter()
            .filter_map(|m| m.parsed.as_ref().ok())
            .collect();
        if !valid.is_empty() {
            let applied = self.apply_isolating(&valid).await?;
            let mut applied = applied.into_iter();
            for slot in outcomes.iter_mut().filter(|o| o.is_none()) {
                *slot = applied.next();
            }
        }
        let outcomes: Vec<Outcome> = outcomes
            .into_iter()
            .map(|o| o.expect("every message has an outcome"))
            .collect();
        self.publish_failures(&messages, &outcomes).await?;
        Ok(BatchDone {
            messages,
            outcomes,
            span,
        })
    }

    /// Applies `batch`; when the database refuses the batch, halves it until the message
    /// that causes the failure is alone, and answers that one with `Retry`.
    fn apply_isolating<'a>(
        &'a self,
        batch: &'a [&'a H::Message],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, BatchAbort>> {
        async move {
            match self.apply_until_available(batch).await? {
                Ok(outcomes) => Ok(outcomes),
                Err(reason) if batch.len() == 1 => Ok(vec![Outcome::Retry(reason)]),
                Err(reason) => {
                    tracing::warn!(
                        module = self.handler.module(),
                        messages = batch.len(),
                        %reason,
                        "batch failed; applying it in halves to isolate the message that fails"
                    );
                    let (left, right) = batch.split_at(batch.len() / 2);
                    let mut outcomes = self.apply_isolating(left).await?;
                    outcomes.extend(self.apply_isolating(right).await?);
                    Ok(outcomes)
                }
            }
        }
        .boxed()
    }

    /// Applies the batch, waiting through database outages and retrying lost races. The inner
    /// `Err` is a failure of the statements themselves, to be isolated.
    async fn apply_until_available(
        &self,
        batch: &[&H::Message],
    ) -> Result<Result<Vec<Outcome>, String>, BatchAbort> {
        let module = self.handler.module();
        let mut outage: Option<(Instant, Backoff)> = None;
        let mut transient = 0;
        loop {
            match self.apply_once(batch).await {
                Ok(outcomes) => {
                    if let Some((since, _)) = outage {
                        tracing::info!(module, down_for = ?since.elapsed(), "database is back");
                        self.shared.health.set(module, true, "consuming");
                        self.shared
                            .metrics
                            .ready
                            .with_label_values(&[module])
                            .set(1);
                    }
                    return Ok(Ok(outcomes));
                }
                Err(failure) => match failure.class() {
                    DbFailure::Statement => return Ok(Err(failure.to_string())),
                    DbFailure::Transient if transient < TRANSIENT_TRIES => {
                        transient += 1;
                        tracing::debug!(module, reason = %failure, transient, "lost a race; applying the batch again");
                        self.wait(Duration::from_millis(5 << transient)).await?;
                    }
                    DbFailure::Transient => return Ok(Err(failure.to_string())),
                    DbFailure::Unavailable => {
                        let (_, backoff) = outage.get_or_insert_with(|| {
                            tracing::warn!(module, reason = %failure, "database unavailable; holding the batch until it is back");
                            self.shared.health.set(module, false, format!("database unavailable: {failure}"));
                            self.shared.metrics.ready.with_label_values(&[module]).set(0);
                            self.shared.metrics.reconnects.with_label_values(&[module, "database"]).inc();
                            (
                                Instant::now(),
                                Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
                            )
                        });
                        let delay = backoff.next_delay();
                        self.wait(delay).await?;
                    }
                },
            }
        }
    }

    async fn apply_once(&self, batch: &[&H::Message]) -> Result<Vec<Outcome>, Failure> {
        let started = Instant::now();
        let mut client = self.shared.pool.get().await?;
        let tx = client.transaction().await?;
        let applied = AssertUnwindSafe(self.handler.apply(&tx, batch))
            .catch_unwind()
            .await
            .map_err(|panic| Failure::Panic(panic_message(&panic)))?;
        let outcomes = applied.map_err(|ApplyError::Database(e)| Failure::Db(e))?;
        assert_eq!(
            outcomes.len(),
            batch.len(),
            "the {} handler must answer every message of the batch",
            self.handler.module()
        );
        tx.commit().await?;
        let module = self.handler.module();
        self.shared
            .metrics
            .batch_apply
            .with_label_values(&[module])
            .observe(started.elapsed().as_secs_f64());
        self.shared
            .metrics
            .batch_messages
            .with_label_values(&[module])
            .observe(batch.len() as f64);
        Ok(outcomes)
    }

    async fn wait(&self, delay: Duration) -> Result<(), BatchAbort> {
        tokio::select! {
            () = self.cancel.cancelled() => Err(BatchAbort::Cancelled),
            () = tokio::time::sleep(delay) => Ok(()),
        }
    }

    /// Sends `Retry` messages to their retry queue (or, after the last attempt, to the dead
    /// queue) and `Reject` messages to the dead queue, all confirmed before returning.
    async fn publish_failures(
        &self,
        messages: &[Incoming<H::Message>],
        outcomes: &[Outcome],
    ) -> Result<(), PublishError> {
        let topology: &Topology = &self.shared.topology;
        let module = self.handler.module();
        let queue = topology.queue(&self.spec);
        let max_attempts = self.shared.config.consume.max_attempts.max(1);
        let mut publishes = Vec::new();
        for (message, outcome) in messages.iter().zip(outcomes) {
            let (routing_key, properties) = match outcome {
                Outcome::Retry(reason) => {
                    let attempt = message.attempt + 1;
                    if attempt >= max_attempts {
                        let reason = format!("gave up after {attempt} attempts: {reason}");
                        (
                            topology.dead_queue(&self.spec),
                            message.dead_properties(&reason, module, &queue),
                        )
                    } else {
                        (
                            topology.retry_queue(&self.spec, Topology::retry_tier(attempt)),
                            message.retry_properties(attempt, reason),
                        )
                    }
                }
                Outcome::Reject(reason) => (
                    topology.dead_queue(&self.spec),
                    message.dead_properties(reason, module, &queue),
                ),
                _ => continue,
            };
            publishes.push(async move {
                self.publisher
                    .publish("", &routing_key, &message.body, properties)
                    .await
            });
        }
        try_join_all(publishes).await.map(|_| ())
    }
}

/// Why one attempt at applying a batch failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// Said with its SQLSTATE when the server gave one: the reason a retry and a dead letter
    /// carry.
    #[error("{}", pg_reason(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Pool(#[from] PoolError),
    /// The handler panicked; the batch is isolated like one the database refused.
    #[error("the handler panicked: {0}")]
    Panic(String),
}

impl Failure {
    fn class(&self) -> DbFailure {
        match self {
            Failure::Db(e) => classify(e),
            Failure::Pool(e) => classify_pool(e),
            Failure::Panic(_) => DbFailure::Statement,
        }
    }
}

fn pg_reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
