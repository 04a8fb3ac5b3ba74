//! The stock filter: for every `(scope, sku)` the stored row equals the one written by the
//! snapshot with the greatest `created_on`, whatever the order of arrival, the number of
//! consumers or the number of redeliveries.
//!
//! A batch of snapshots becomes a [`BatchPlan`]: the newest update per key (ties: the first
//! to arrive), sorted. [`apply`] writes it in one statement that only touches rows whose
//! stored version is older, so stale and repeated updates cost an index lookup and no write.
//!
//! NONZERO snapshots zero the SKUs they leave out. The zeroing waits until the snapshot has
//! settled (no chunk for a while), runs once per snapshot in [`settle_nonzero`], and raises the
//! scope's *floor*: the `created_on` of the newest zeroing. A later write that is older than
//! the floor, to a SKU the zeroing covered, lands as 0, so the late arrival of an old DELTA
//! cannot undo a newer zeroing. A late chunk of the snapshot itself carries exactly the
//! floor's timestamp and so still wins over its own zeroing.
//!
//! Zeroing and writes of one scope exclude each other through a transaction-scoped advisory
//! lock (shared for writers, exclusive for the zeroing), so a write never reads a floor that
//! a concurrent zeroing is about to raise.

mod model;
mod plan;
mod sql;

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::Error;
use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

pub use model::Model;
pub use plan::{BatchPlan, StockUpdate};
pub use protocol::inventory::StockScope;

/// What a batch did to the stock table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Rows inserted or changed.
    pub written: u64,
    /// Updates older than (or as old as) the stored row, discarded.
    pub stale: u64,
    /// The origins (see [`BatchPlan::add`]) of the messages that wrote at least one row,
    /// sorted and unique; the others were stale for every SKU they carried.
    pub writers: Vec<usize>,
}

/// One NONZERO zeroing, done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zeroing {
    pub ledger: StockScope,
    pub scope_id: String,
    pub created_on: DateTime<Utc>,
    /// Rows set to 0 (rows already at 0 and unlimited rows are left alone).
    pub zeroed_rows: u64,
}

/// Applies a batch inside the caller's transaction. The caller commits, and acknowledges the
/// messages only after the commit.
pub async fn apply(tx: &Transaction<'_>, plan: &BatchPlan) -> Result<Applied, Error> {
    let ledger = plan.ledger();
    let sql = sql::for_ledger(ledger);
    let mut applied = Applied {
        stale: plan.superseded_in_batch(),
        ..Applied::default()
    };
    let updates = plan.updates();
    let scopes = plan.scopes();
    if scopes.is_empty() {
        return Ok(applied);
    }
    let lock = tx.prepare_cached(sql.lock_shared).await?;
    if updates.is_empty() {
        tx.execute(&lock, &[&scopes]).await?;
    } else {
        let upsert = tx.prepare_cached(&sql.upsert).await?;
        let scope_ids: Vec<&str> = updates.iter().map(|u| u.scope_id.as_str()).collect();
        let skus: Vec<&str> = updates.iter().map(|u| u.sku.as_str()).collect();
        let quantities: Vec<i64> = updates.iter().map(|u| u.quantity).collect();
        let unlimited: Vec<bool> = updates.iter().map(|u| u.unlimited).collect();
        let backorders: Vec<Option<i64>> = updates.iter().map(|u| u.inflight_backorders).collect();
        let versions: Vec<DateTime<Utc>> = updates.iter().map(|u| u.version).collect();
        // Pipelined: both statements leave in one round trip; the server runs them in order,
        // and the upsert's snapshot is taken after the lock is granted.
        let lock_params: [&(dyn ToSql + Sync); 1] = [&scopes];
        let upsert_params: [&(dyn ToSql + Sync); 6] = [
            &scope_ids,
            &skus,
            &quantities,
            &unlimited,
            &backorders,
            &versions,
        ];
        let (_, row) = futures::try_join!(
            tx.execute(&lock, &lock_params),
            tx.query_one(&upsert, &upsert_params)
        )?;
        let written: Vec<i32> = row.get(0);
        applied.written = written.len() as u64;
        applied.stale += updates.len() as u64 - applied.written;
        let origins = plan.origins();
        applied.writers = written
            .iter()
            .map(|ord| origins[(*ord - 1) as usize])
            .collect();
        applied.writers.sort_unstable();
        applied.writers.dedup();
    }
    if !plan.nonzero().is_empty() {
        // Last in the transaction: the pending row is shared by every replica applying chunks
        // of the same snapshot, so its lock is held only until the commit that follows.
        let pending = tx.prepare_cached(&sql.nonzero_pending).await?;
        let (scopes, created): (Vec<&str>, Vec<DateTime<Utc>>) =
            plan.nonzero().iter().map(|(s, c)| (s.as_str(), *c)).unzip();
        tx.execute(&pending, &[&scopes, &created]).await?;
    }
    Ok(applied)
}

/// Zeroes the next settled NONZERO snapshot of `ledger`, if there is one: a snapshot none of
/// whose chunks has been applied for `settle`. Replicas may call it at the same time: the
/// scope lock lets one of them zero a snapshot, the others find it gone. Call it until it
/// returns `None`.
pub async fn settle_nonzero(
    client: &mut deadpool_postgres::Client,
    ledger: StockScope,
    settle: Duration,
) -> Result<Option<Zeroing>, Error> {
    let sql = sql::for_ledger(ledger);
    let tx = client.transaction().await?;
    let next = tx.prepare_cached(sql::NEXT_SETTLED).await?;
    let settle_secs = settle.as_secs_f64();
    let Some(row) = tx
        .query_opt(&next, &[&sql::ledger_name(ledger), &settle_secs])
        .await?
    else {
        return Ok(None);
    };
    let scope_id: String = row.get(0);
    let created_on: DateTime<Utc> = row.get(1);

    let lock = tx.prepare_cached(sql.lock_exclusive).await?;
    tx.execute(&lock, &[&scope_id]).await?;
    let confirm = tx.prepare_cached(sql::CONFIRM_SETTLED).await?;
    let still_pending = tx
        .query_opt(
            &confirm,
            &[
                &sql::ledger_name(ledger),
                &scope_id,
                &created_on,
                &settle_secs,
            ],
        )
        .await?;
    if still_pending.is_none() {
        return Ok(None);
    }
    let zero = tx.prepare_cached(&sql.zero_left_out).await?;
    let zeroed_rows = tx.execute(&zero, &[&scope_id, &created_on]).await?;
    let floor = tx.prepare_cached(sql::RAISE_FLOOR).await?;
    tx.execute(&floor, &[&sql::ledger_name(ledger), &scope_id, &created_on])
        .await?;
    tx.commit().await?;
    Ok(Some(Zeroing {
        ledger,
        scope_id,
        created_on,
        zeroed_rows,
    }))
}

/// Reads a whole ledger in key order, for tests, verification and tools.
pub async fn read_ledger(
    client: &impl GenericClient,
    ledger: StockScope,
) -> Result<Vec<StoredRow>, Error> {
    let rows = client.query(sql::for_ledger(ledger).read_all, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| StoredRow {
            scope_id: r.get(0),
            sku: r.get(1),
            quantity: r.get(2),
            unlimited: r.get(3),
            source_updated_at: r.get(4),
        })
        .collect())
}

/// A stock row as stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoredRow {
    pub scope_id: String,
    pub sku: String,
    pub quantity: i64,
    pub unlimited: bool,
    pub source_updated_at: DateTime<Utc>,
}
