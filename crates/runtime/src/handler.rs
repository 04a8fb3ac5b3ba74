//! What a module gives the consume loop: how to parse its messages and how to apply a batch
//! of them in one transaction.

use std::future::Future;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use protocol::Rejection;
use serde_json::value::RawValue;
use thiserror::Error;

/// The result of applying one message. Only `Retry` and `Reject` leave the normal path;
/// "stale" and "ignored" are successes that did nothing, counted separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The message changed the database.
    Applied,
    /// Newer data was already there; the message was discarded.
    Stale,
    /// Nothing to do (an update for an order another sales channel owns); the reason is a
    /// closed-set label for metrics.
    Ignored(&'static str),
    /// Failed in a way that may pass (what it refers to is not there yet): redeliver later,
    /// dead-letter after the last attempt.
    Retry(String),
    /// Can never be applied: dead-letter now with this reason.
    Reject(String),
}

impl Outcome {
    /// The `outcome` label of `omsc_messages_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Stale => "stale",
            Outcome::Ignored(_) => "ignored",
            Outcome::Retry(_) => "retried",
            Outcome::Reject(_) => "dead",
        }
    }
}

/// A failure of a whole batch. Database errors are classified by the runtime
/// ([`crate::db::classify`]): unavailable (hold and reconnect), transient (apply again) or
/// statement (isolate the message that causes it).
#[derive(Debug, Error)]
pub enum ApplyError {
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// A module's message handling. Implementations are order-independent and idempotent: any
/// number of replicas may apply the same messages in any order, any number of times.
pub trait Handler: Send + Sync + 'static {
    /// A parsed, valid message.
    type Message: Send + Sync + 'static;

    /// The module's name (`inventory`), the `module` label of its metrics.
    fn module(&self) -> &'static str;

    /// The methods this module consumes; anything else on its queue is dead-lettered.
    fn methods(&self) -> &'static [&'static str];

    /// Parses the params of one message (an envelope without them is refused before).
    /// Called once per delivery, outside any transaction.
    fn parse(
        &self,
        method: &str,
        params: &RawValue,
        limits: &protocol::Limits,
    ) -> Result<Self::Message, Rejection>;

    /// The rows a message will write, to bound a batch (a 10,000-SKU snapshot weighs 10,000).
    fn weight(&self, _message: &Self::Message) -> usize {
        1
    }

    /// When the OMS produced the message, for `omsc_source_lag_seconds`.
    fn produced_at(&self, _message: &Self::Message) -> Option<DateTime<Utc>> {
        None
    }

    /// Applies a batch inside `tx` and says what happened to each message, in order. The
    /// runtime commits, then acknowledges. On `Err` nothing of the batch is kept and the
    /// runtime decides, from the error's class, to apply it again or to isolate the culprit.
    /// A message answered with `Retry` or `Reject` must have left no trace in `tx`.
    fn apply<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        batch: &'a [&'a Self::Message],
    ) -> impl Future<Output = Result<Vec<Outcome>, ApplyError>> + Send + 'a;
}
