//! The reference model of the stock rules, written the simplest way: replay every snapshot in
//! `created_on` order, as if delivery were perfect. The filter must end in the same state
//! whatever the real order of arrival; tests and `omsc simulate --verify` compare the two.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use protocol::inventory::{SnapshotMode, StockSnapshot};

use crate::StockScope;

/// The expected stock of every key.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Model {
    rows: BTreeMap<(String, String), (i64, bool)>,
}

impl Model {
    /// Replays `snapshots` of one ledger in `created_on` order. Chunks of one snapshot share
    /// its `created_on`; distinct snapshots of one scope must have distinct `created_on`
    /// (with equal versions "first write wins" makes the outcome depend on arrival order).
    pub fn replay<'a>(
        ledger: StockScope,
        snapshots: impl IntoIterator<Item = &'a StockSnapshot>,
    ) -> Self {
        let mut ordered: Vec<&StockSnapshot> = snapshots
            .into_iter()
            .filter(|s| s.scope == ledger)
            .collect();
        ordered.sort_by_key(|s| s.created_on);
        let mut model = Model::default();
        let mut i = 0;
        while i < ordered.len() {
            let at = ordered[i].created_on;
            let group_end = ordered[i..]
                .iter()
                .position(|s| s.created_on != at)
                .map_or(ordered.len(), |n| i + n);
            model.apply_group(&ordered[i..group_end], at);
            i = group_end;
        }
        model
    }

    fn apply_group(&mut self, group: &[&StockSnapshot], _at: DateTime<Utc>) {
        let mut nonzero_keys: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        // Equal versions: the first write wins, later ones are repeats.
        let mut written: BTreeSet<(&str, &str)> = BTreeSet::new();
        for snapshot in group {
            if snapshot.mode == SnapshotMode::NonZero {
                nonzero_keys.entry(snapshot.scope_id.as_str()).or_default();
            }
            for entry in &snapshot.stock {
                if written.insert((snapshot.scope_id.as_str(), entry.sku.as_str())) {
                    self.rows.insert(
                        (snapshot.scope_id.clone(), entry.sku.clone()),
                        (entry.quantity, entry.unlimited),
                    );
                }
                if snapshot.mode == SnapshotMode::NonZero {
                    nonzero_keys
                        .entry(snapshot.scope_id.as_str())
                        .or_default()
                        .insert(entry.sku.as_str());
                }
            }
        }
        for (scope, listed) in nonzero_keys {
            for ((row_scope, sku), (quantity, unlimited)) in self.rows.iter_mut() {
                if row_scope == scope && !listed.contains(sku.as_str()) && !*unlimited {
                    *quantity = 0;
                }
            }
        }
    }

    /// `(scope, sku, quantity, unlimited)` in key order.
    pub fn rows(&self) -> Vec<(String, String, i64, bool)> {
        self.rows
            .iter()
            .map(|((scope, sku), (q, u))| (scope.clone(), sku.clone(), *q, *u))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use protocol::inventory::StockEntry;

    fn snap(mode: SnapshotMode, secs: i64, entries: &[(&str, i64, bool)]) -> StockSnapshot {
        StockSnapshot {
            scope: StockScope::Aggregate,
            scope_id: "EU".into(),
            mode,
            created_on: Utc.timestamp_opt(secs, 0).unwrap(),
            stock: entries
                .iter()
                .map(|(sku, q, u)| StockEntry {
                    sku: (*sku).into(),
                    quantity: *q,
                    unlimited: *u,
                    inflight_backorders: None,
                })
                .collect(),
            batch: None,
        }
    }

    #[test]
    fn replays_in_version_order_whatever_the_input_order() {
        let delta = snap(SnapshotMode::Delta, 20, &[("a", 5, false)]);
        let full = snap(SnapshotMode::Full, 10, &[("a", 1, false), ("b", 2, false)]);
        let model = Model::replay(StockScope::Aggregate, [&delta, &full]);
        assert_eq!(
            model.rows(),
            vec![
                ("EU".into(), "a".into(), 5, false),
                ("EU".into(), "b".into(), 2, false)
            ]
        );
    }

    #[test]
    fn nonzero_zeroes_what_its_chunks_leave_out_except_unlimited() {
        let full = snap(
            SnapshotMode::Full,
            10,
            &[("a", 1, false), ("b", 2, false), ("c", 0, true)],
        );
        let chunk1 = snap(SnapshotMode::NonZero, 20, &[("a", 7, false)]);
        let chunk2 = snap(SnapshotMode::NonZero, 20, &[]);
        let model = Model::replay(StockScope::Aggregate, [&chunk2, &full, &chunk1]);
        assert_eq!(
            model.rows(),
            vec![
                ("EU".into(), "a".into(), 7, false),
                ("EU".into(), "b".into(), 0, false),
                ("EU".into(), "c".into(), 0, true)
            ]
        );
    }
}
