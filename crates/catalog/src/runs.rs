//! Reading full-export runs, for the command line's progress bar and `omsc status`.

use chrono::{DateTime, Utc};

macro_rules! select_runs {
    () => {
        "SELECT id, state, requested_by, requested_at, coalesce(total, 0), exported, chunks,
                resumes, started_at, finished_at, last_error, lease_owner
           FROM catalog_export_runs"
    };
}

const ONE: &str = concat!(select_runs!(), " WHERE id = $1");

const RECENT: &str = concat!(
    select_runs!(),
    " ORDER BY requested_at DESC, id DESC LIMIT $1"
);

const CANCEL: &str = "
    UPDATE catalog_export_runs
       SET state = 'cancelled', finished_at = now(), lease_owner = NULL, lease_until = NULL,
           updated_at = now()
     WHERE id = $1 AND state IN ('pending', 'running')";

/// One run as stored.
#[derive(Debug, Clone)]
pub struct RunProgress {
    pub id: String,
    pub state: String,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    /// Products in the catalog when the run started (0 before).
    pub total: i64,
    pub exported: i64,
    pub chunks: i64,
    /// Times another exporter took the run over.
    pub resumes: i32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub lease_owner: Option<String>,
}

impl RunProgress {
    pub fn is_over(&self) -> bool {
        matches!(self.state.as_str(), "done" | "cancelled")
    }

    /// Products per second from start to finish (or to now).
    pub fn rate(&self) -> Option<f64> {
        let started = self.started_at?;
        let until = self.finished_at.unwrap_or_else(Utc::now);
        let seconds = (until - started).num_milliseconds() as f64 / 1000.0;
        (seconds > 0.0).then(|| self.exported as f64 / seconds)
    }
}

fn from_row(r: &tokio_postgres::Row) -> RunProgress {
    RunProgress {
        id: r.get(0),
        state: r.get(1),
        requested_by: r.get(2),
        requested_at: r.get(3),
        total: r.get(4),
        exported: r.get(5),
        chunks: r.get(6),
        resumes: r.get(7),
        started_at: r.get(8),
        finished_at: r.get(9),
        last_error: r.get(10),
        lease_owner: r.get(11),
    }
}

pub async fn one(
    client: &tokio_postgres::Client,
    id: &str,
) -> Result<Option<RunProgress>, tokio_postgres::Error> {
    Ok(client.query_opt(ONE, &[&id]).await?.as_ref().map(from_row))
}

pub async fn recent(
    client: &tokio_postgres::Client,
    limit: i64,
) -> Result<Vec<RunProgress>, tokio_postgres::Error> {
    Ok(client
        .query(RECENT, &[&limit])
        .await?
        .iter()
        .map(from_row)
        .collect())
}

/// Stops a run: the exporter driving it notices at its next chunk. True if it was open.
pub async fn cancel(
    client: &tokio_postgres::Client,
    id: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client.execute(CANCEL, &[&id]).await? == 1)
}
