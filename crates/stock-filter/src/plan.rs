//! Turning a batch of snapshots into the set of row writes to attempt.

use chrono::{DateTime, Utc};
use protocol::inventory::{SnapshotMode, StockSnapshot};

use crate::StockScope;

/// One SKU's new state, with the version (`created_on`) it was produced at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockUpdate {
    pub scope_id: String,
    pub sku: String,
    pub quantity: i64,
    pub unlimited: bool,
    pub inflight_backorders: Option<i64>,
    pub version: DateTime<Utc>,
}

/// The writes of one batch: at most one per key, the newest, sorted by key (bytewise, the
/// order of the `COLLATE "C"` primary key, which is also the order rows are locked in, so
/// replicas writing overlapping keys never deadlock).
#[derive(Debug)]
pub struct BatchPlan {
    ledger: StockScope,
    staged: Vec<(StockUpdate, u64, usize)>,
    updates: Vec<StockUpdate>,
    origins: Vec<usize>,
    nonzero: Vec<(String, DateTime<Utc>)>,
    superseded: u64,
    arrivals: u64,
    finished: bool,
}

impl BatchPlan {
    pub fn new(ledger: StockScope) -> Self {
        Self {
            ledger,
            staged: Vec::new(),
            updates: Vec::new(),
            origins: Vec::new(),
            nonzero: Vec::new(),
            superseded: 0,
            arrivals: 0,
            finished: false,
        }
    }

    /// Adds a snapshot's SKUs; `origin` identifies the message (its index in the batch).
    /// Snapshots are added in arrival order; among updates of one key with the same version,
    /// the first added wins, as it would in the database.
    pub fn add(&mut self, snapshot: &StockSnapshot, origin: usize) {
        debug_assert_eq!(snapshot.scope, self.ledger);
        debug_assert!(!self.finished, "add after finish");
        if snapshot.mode == SnapshotMode::NonZero {
            self.nonzero
                .push((snapshot.scope_id.clone(), snapshot.created_on));
        }
        for entry in &snapshot.stock {
            self.arrivals += 1;
            self.staged.push((
                StockUpdate {
                    scope_id: snapshot.scope_id.clone(),
                    sku: entry.sku.clone(),
                    quantity: entry.quantity,
                    unlimited: entry.unlimited,
                    inflight_backorders: entry.inflight_backorders,
                    version: snapshot.created_on,
                },
                self.arrivals,
                origin,
            ));
        }
    }

    /// Keeps the newest update per key and sorts; call once, after the last `add`.
    pub fn finish(mut self) -> Self {
        let mut staged = std::mem::take(&mut self.staged);
        staged.sort_unstable_by(|(a, a_seq, _), (b, b_seq, _)| {
            (a.scope_id.as_bytes(), a.sku.as_bytes())
                .cmp(&(b.scope_id.as_bytes(), b.sku.as_bytes()))
                .then(b.version.cmp(&a.version))
                .then(a_seq.cmp(b_seq))
        });
        let before = staged.len();
        staged.dedup_by(|later, kept| {
            later.0.scope_id == kept.0.scope_id && later.0.sku == kept.0.sku
        });
        self.superseded = (before - staged.len()) as u64;
        (self.updates, self.origins) = staged.into_iter().map(|(u, _, o)| (u, o)).unzip();
        self.nonzero.sort_unstable();
        self.nonzero.dedup();
        self.finished = true;
        self
    }

    pub fn ledger(&self) -> StockScope {
        self.ledger
    }

    pub fn updates(&self) -> &[StockUpdate] {
        debug_assert!(self.finished, "updates before finish");
        &self.updates
    }

    /// For each of [`Self::updates`], the origin of the message it came from.
    pub fn origins(&self) -> &[usize] {
        &self.origins
    }

    /// The NONZERO snapshots `(scope, created_on)` the batch contains, whatever their size.
    pub fn nonzero(&self) -> &[(String, DateTime<Utc>)] {
        &self.nonzero
    }

    /// Updates dropped because a newer (or earlier-arrived, equally new) update of the same key
    /// was in the batch: they count as stale.
    pub fn superseded_in_batch(&self) -> u64 {
        self.superseded
    }

    /// Every scope the batch touches, sorted and unique: the advisory locks to take.
    pub fn scopes(&self) -> Vec<&str> {
        let mut scopes: Vec<&str> = self
            .updates
            .iter()
            .map(|u| u.scope_id.as_str())
            .chain(self.nonzero.iter().map(|(s, _)| s.as_str()))
            .collect();
        scopes.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        scopes.dedup();
        scopes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use protocol::inventory::StockEntry;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_600_000_000 + secs, 0).unwrap()
    }

    fn snapshot(mode: SnapshotMode, secs: i64, entries: &[(&str, i64)]) -> StockSnapshot {
        StockSnapshot {
            scope: StockScope::Aggregate,
            scope_id: "EU".into(),
            mode,
            created_on: at(secs),
            stock: entries
                .iter()
                .map(|(sku, q)| StockEntry {
                    sku: (*sku).into(),
                    quantity: *q,
                    unlimited: false,
                    inflight_backorders: None,
                })
                .collect(),
            batch: None,
        }
    }

    #[test]
    fn keeps_the_newest_update_per_key_and_sorts() {
        let mut plan = BatchPlan::new(StockScope::Aggregate);
        plan.add(&snapshot(SnapshotMode::Delta, 5, &[("b", 1), ("a", 1)]), 0);
        plan.add(&snapshot(SnapshotMode::Delta, 3, &[("b", 2)]), 0);
        plan.add(&snapshot(SnapshotMode::Delta, 9, &[("a", 3)]), 0);
        let plan = plan.finish();
        let got: Vec<(&str, i64)> = plan
            .updates()
            .iter()
            .map(|u| (u.sku.as_str(), u.quantity))
            .collect();
        assert_eq!(got, vec![("a", 3), ("b", 1)]);
        assert_eq!(plan.superseded_in_batch(), 2);
    }

    #[test]
    fn equal_versions_keep_the_first_arrival() {
        let mut plan = BatchPlan::new(StockScope::Aggregate);
        plan.add(&snapshot(SnapshotMode::Delta, 5, &[("a", 1)]), 0);
        plan.add(&snapshot(SnapshotMode::Delta, 5, &[("a", 2)]), 0);
        let plan = plan.finish();
        assert_eq!(plan.updates()[0].quantity, 1);
    }

    #[test]
    fn records_nonzero_snapshots_even_when_empty() {
        let mut plan = BatchPlan::new(StockScope::Aggregate);
        plan.add(&snapshot(SnapshotMode::NonZero, 5, &[]), 0);
        plan.add(&snapshot(SnapshotMode::NonZero, 5, &[("a", 1)]), 0);
        let plan = plan.finish();
        assert_eq!(plan.nonzero(), &[("EU".to_owned(), at(5))]);
        assert_eq!(plan.scopes(), vec!["EU"]);
    }
}
