//! The operator's view of outbox rows (`omsc outbox`): find them by id, module, topic,
//! subject, state and age; send failed or stuck rows again; give up on rows for good.
//!
//! Each action leaves its trace on the row, as a dead letter keeps its status and
//! `settled_at`: a retry sets `retried_at` and counts `retries` (the retry window and the
//! backoff start over: the window counts from the retry, the attempts from zero), a discard sets `discarded_at`
//! (and `failed_at`, so that no relay takes the row; a discarded row no longer counts as
//! failed). Sent rows are history: neither action touches them.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Where a row stands. Derived from its timestamps, never stored, so that it cannot disagree
/// with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowState {
    /// Waiting for a relay, or being retried after a failure that may pass.
    Pending,
    /// Published and confirmed by the broker.
    Sent,
    /// Given up on by the relay (the retry window passed, or the row can never be built).
    Failed,
    /// Given up on by an operator.
    Discarded,
}

impl RowState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Discarded => "discarded",
        }
    }
}

/// One outbox row as an operator sees it.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub module: String,
    pub topic: String,
    pub subject: String,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub claimed_until: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub message_id: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub retried_at: Option<DateTime<Utc>>,
    pub retries: i32,
    pub discarded_at: Option<DateTime<Utc>>,
}

impl OutboxRow {
    pub fn state(&self) -> RowState {
        if self.sent_at.is_some() {
            RowState::Sent
        } else if self.discarded_at.is_some() {
            RowState::Discarded
        } else if self.failed_at.is_some() {
            RowState::Failed
        } else {
            RowState::Pending
        }
    }
}

/// Which rows an operation applies to. Empty fields select everything.
#[derive(Debug, Clone, Default)]
pub struct RowSelection {
    pub ids: Vec<i64>,
    pub module: Option<String>,
    pub topic: Option<String>,
    pub subject: Option<String>,
    /// `None` for every state.
    pub state: Option<RowState>,
    /// Only rows created at least this long ago.
    pub older_than: Option<Duration>,
    /// At most this many rows, oldest first; 0 for no limit.
    pub limit: i64,
}

/// What a retry did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retried {
    /// Rows that will go out again.
    pub ids: Vec<i64>,
    /// Rows left alone because a newer change of the same thing is pending and carries the
    /// latest state (a product saved again): `(row, the pending row)`.
    pub superseded: Vec<(i64, i64)>,
    /// Rows retried although a later row about the same subject was already sent (a cancel
    /// that went out after the create failed): `(row, the later sent row)`. The OMS will see
    /// them in the wrong order unless those later rows are sent again too.
    pub overtaken: Vec<(i64, i64)>,
}

const STATE: &str = "CASE WHEN sent_at IS NOT NULL THEN 'sent'
                          WHEN discarded_at IS NOT NULL THEN 'discarded'
                          WHEN failed_at IS NOT NULL THEN 'failed'
                          ELSE 'pending' END";

fn select_sql() -> String {
    format!(
        "SELECT id, module, topic, subject, version, created_at, next_attempt_at, claimed_until,
                attempts, last_error, message_id, sent_at, failed_at, retried_at, retries,
                discarded_at
           FROM outbox
          WHERE (cardinality($1::int8[]) = 0 OR id = ANY ($1))
            AND ($2::text IS NULL OR module = $2)
            AND ($3::text IS NULL OR topic = $3)
            AND ($4::text IS NULL OR subject = $4)
            AND ($5::text IS NULL OR {STATE} = $5)
            AND ($6::float8 IS NULL OR created_at <= now() - make_interval(secs => $6))
          ORDER BY id
          LIMIT $7"
    )
}

/// `p` supersedes `o`: a row with the same coalesce key that is pending, or newer and retried
/// in the same go. At most one row per key may be pending, and the newest carries the latest
/// state anyway (a product saved again).
const SUPERSEDES: &str = "p.module = o.module AND p.topic = o.topic
                          AND p.coalesce_key = o.coalesce_key AND p.id <> o.id
                          AND p.sent_at IS NULL
                          AND (p.failed_at IS NULL
                               OR (p.id = ANY ($1) AND p.id > o.id AND p.discarded_at IS NULL))";

/// Failed or pending rows go out at once; sent and discarded rows are left alone, and so is a
/// superseded row.
fn retry_sql() -> String {
    format!(
        "UPDATE outbox o
            SET failed_at = NULL, next_attempt_at = now(), retried_at = now(),
                retries = o.retries + 1, attempts = 0
          WHERE o.id = ANY ($1) AND o.sent_at IS NULL AND o.discarded_at IS NULL
            AND NOT EXISTS (SELECT 1 FROM outbox p WHERE {SUPERSEDES})
      RETURNING o.id"
    )
}

fn superseded_sql() -> String {
    format!(
        "SELECT o.id, max(p.id)
           FROM outbox o JOIN outbox p ON {SUPERSEDES}
          WHERE o.id = ANY ($1) AND o.sent_at IS NULL AND o.discarded_at IS NULL
          GROUP BY o.id
          ORDER BY o.id"
    )
}

const OVERTAKEN: &str = "
    SELECT o.id, min(later.id)
      FROM outbox o
      JOIN outbox later ON later.module = o.module AND later.subject = o.subject
                       AND later.id > o.id AND later.sent_at IS NOT NULL
     WHERE o.id = ANY ($1)
     GROUP BY o.id
     ORDER BY o.id";

const DISCARD: &str = "
    UPDATE outbox
       SET discarded_at = now(), failed_at = coalesce(failed_at, now())
     WHERE id = ANY ($1) AND sent_at IS NULL AND discarded_at IS NULL
 RETURNING id";

/// The rows of a selection, oldest first.
pub async fn select(
    client: &tokio_postgres::Client,
    selection: &RowSelection,
) -> Result<Vec<OutboxRow>, tokio_postgres::Error> {
    let limit = if selection.limit > 0 {
        selection.limit
    } else {
        i64::MAX
    };
    let state = selection.state.map(RowState::as_str);
    let older_than = selection.older_than.map(|d| d.as_secs_f64());
    let rows = client
        .query(
            &select_sql(),
            &[
                &selection.ids,
                &selection.module,
                &selection.topic,
                &selection.subject,
                &state,
                &older_than,
                &limit,
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| OutboxRow {
            id: r.get(0),
            module: r.get(1),
            topic: r.get(2),
            subject: r.get(3),
            version: r.get(4),
            created_at: r.get(5),
            next_attempt_at: r.get(6),
            claimed_until: r.get(7),
            attempts: r.get(8),
            last_error: r.get(9),
            message_id: r.get(10),
            sent_at: r.get(11),
            failed_at: r.get(12),
            retried_at: r.get(13),
            retries: r.get(14),
            discarded_at: r.get(15),
        })
        .collect())
}

/// Sends the given rows again (those that are neither sent nor discarded), in one
/// transaction; says which were left alone and which will arrive after a later row.
pub async fn retry(
    client: &mut tokio_postgres::Client,
    ids: &[i64],
) -> Result<Retried, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let pairs = |rows: Vec<tokio_postgres::Row>| -> Vec<(i64, i64)> {
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    };
    let superseded = pairs(tx.query(&superseded_sql(), &[&ids]).await?);
    let mut retried: Vec<i64> = tx
        .query(&retry_sql(), &[&ids])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    retried.sort_unstable();
    let overtaken = pairs(tx.query(OVERTAKEN, &[&retried]).await?);
    tx.commit().await?;
    Ok(Retried {
        ids: retried,
        superseded,
        overtaken,
    })
}

/// Gives up on the given rows for good (those that are neither sent nor discarded already);
/// returns their ids.
pub async fn discard(
    client: &tokio_postgres::Client,
    ids: &[i64],
) -> Result<Vec<i64>, tokio_postgres::Error> {
    let mut discarded: Vec<i64> = client
        .query(DISCARD, &[&ids])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    discarded.sort_unstable();
    Ok(discarded)
}
