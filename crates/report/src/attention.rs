//! What waits for a person: the open dead letters and the outbox rows that failed or are
//! stuck, oldest first, each with the `omsc` command that settles it. The counts alone say
//! that something is wrong; these lists say what, and what to type.
//!
//! Both queries only read (the tables belong to `runtime::dead_letters` and the outbox),
//! leave the bodies out (a dead letter may be megabytes), and count every row that matches
//! beside the few they return, so the report can say how many more there are.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

/// How many of each list the report shows: the oldest, since they have waited longest.
pub const SHOWN: i64 = 20;

/// A pending outbox row is stuck when the relay has not managed to send it for this long
/// since it was written, or since an operator last retried it (a retry starts its window
/// over, and would otherwise leave it listed as stuck right away). Without retries, these
/// are the rows of `omsc outbox list --state pending --older-than 1h`.
pub const STUCK_AFTER: TimeDelta = TimeDelta::hours(1);

/// The longest reason or last error kept; the command's `show` gives the whole text.
const TEXT_CHARS: i32 = 500;

const DEAD_LETTERS: &str = "
    SELECT id, queue, module, coalesce(endpoint, routing_key), left(reason, $2), dead_at,
           attempts, count(*) OVER ()
      FROM dead_letters
     WHERE status = 'open'
     ORDER BY dead_at, id
     LIMIT $1";

const OUTBOX: &str = "
    SELECT id, module, topic, subject, failed_at IS NOT NULL, attempts, left(last_error, $2),
           created_at, count(*) OVER ()
      FROM outbox
     WHERE sent_at IS NULL AND discarded_at IS NULL
       AND (failed_at IS NOT NULL OR coalesce(retried_at, created_at) <= $3)
     ORDER BY created_at, id
     LIMIT $1";

/// The two lists and how many rows each has in all.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Attention {
    /// The oldest open dead letters, at most [`SHOWN`].
    pub dead_letters: Vec<OpenDeadLetter>,
    /// Every open dead letter.
    pub dead_letters_total: i64,
    /// The oldest failed or stuck outbox rows, at most [`SHOWN`].
    pub outbox: Vec<OutboxAttention>,
    /// Every failed or stuck outbox row.
    pub outbox_total: i64,
}

/// An open dead letter: neither replayed nor discarded.
#[derive(Debug, Clone, Serialize)]
pub struct OpenDeadLetter {
    pub id: i64,
    pub queue: String,
    pub module: Option<String>,
    /// The method, or the routing key when the body could not be read.
    pub endpoint: Option<String>,
    pub reason: String,
    pub dead_at: DateTime<Utc>,
    pub attempts: i32,
    /// What replays it once its cause is fixed.
    pub command: String,
}

/// Why an outbox row needs a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxTrouble {
    /// Given up on by the relay.
    Failed,
    /// Still pending after [`STUCK_AFTER`].
    Stuck,
}

impl OutboxTrouble {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Stuck => "stuck",
        }
    }
}

/// An outbox row that failed or is stuck.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxAttention {
    pub id: i64,
    pub module: String,
    /// The outbox topic: the method of the message it becomes (`order.create`, …).
    pub method: String,
    /// What it is about: an order, a return, a SKU.
    pub subject: String,
    pub trouble: OutboxTrouble,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// What sends it again once its cause is fixed.
    pub command: String,
}

impl Attention {
    /// Reads both lists as of `now`.
    pub async fn load(
        client: &tokio_postgres::Client,
        now: DateTime<Utc>,
    ) -> Result<Self, tokio_postgres::Error> {
        let mut attention = Self::default();
        for row in client.query(DEAD_LETTERS, &[&SHOWN, &TEXT_CHARS]).await? {
            attention.dead_letters_total = row.get(7);
            let id: i64 = row.get(0);
            attention.dead_letters.push(OpenDeadLetter {
                id,
                queue: row.get(1),
                module: row.get(2),
                endpoint: row.get(3),
                reason: row.get(4),
                dead_at: row.get(5),
                attempts: row.get(6),
                command: replay_command(id),
            });
        }
        let stuck_before = now - STUCK_AFTER;
        for row in client
            .query(OUTBOX, &[&SHOWN, &TEXT_CHARS, &stuck_before])
            .await?
        {
            attention.outbox_total = row.get(8);
            let id: i64 = row.get(0);
            let trouble = if row.get::<_, bool>(4) {
                OutboxTrouble::Failed
            } else {
                OutboxTrouble::Stuck
            };
            attention.outbox.push(OutboxAttention {
                id,
                module: row.get(1),
                method: row.get(2),
                subject: row.get(3),
                trouble,
                attempts: row.get(5),
                last_error: row.get(6),
                created_at: row.get(7),
                command: retry_command(id, trouble),
            });
        }
        Ok(attention)
    }

    /// Open dead letters beyond the ones listed.
    pub fn more_dead_letters(&self) -> i64 {
        self.dead_letters_total - self.dead_letters.len() as i64
    }

    /// Failed or stuck outbox rows beyond the ones listed.
    pub fn more_outbox(&self) -> i64 {
        self.outbox_total - self.outbox.len() as i64
    }
}

/// `omsc dead-letters replay <id>`: publishes the letter back to its queue, with its
/// original message id (the broker and prefix come from the operator's `AMQP_URL` and
/// `OMSC_PREFIX`, as for every `omsc` command).
pub fn replay_command(id: i64) -> String {
    format!("omsc dead-letters replay {id}")
}

/// `omsc outbox retry <id>`: a stuck row is still pending, and `retry` takes failed rows
/// unless told otherwise.
pub fn retry_command(id: i64, trouble: OutboxTrouble) -> String {
    match trouble {
        OutboxTrouble::Failed => format!("omsc outbox retry {id}"),
        OutboxTrouble::Stuck => format!("omsc outbox retry --state pending {id}"),
    }
}

/// What lists all of them, for the "N more" line.
pub const LIST_DEAD_LETTERS: &str = "omsc dead-letters list";
/// What lists every failed row; stuck ones are `--state pending --older-than 1h`.
pub const LIST_OUTBOX: &str = "omsc outbox list";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stuck_row_is_retried_as_the_pending_row_it_is() {
        assert_eq!(replay_command(42), "omsc dead-letters replay 42");
        assert_eq!(
            retry_command(7, OutboxTrouble::Failed),
            "omsc outbox retry 7"
        );
        assert_eq!(
            retry_command(7, OutboxTrouble::Stuck),
            "omsc outbox retry --state pending 7"
        );
    }
}
