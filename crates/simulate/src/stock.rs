//! Stock storms: FULL, NONZERO and DELTA snapshots over many aggregates, as the OMS sends them
//! (a FULL or NONZERO export in chunks that share the export's start time), optionally
//! shuffled and partly duplicated the way an at-least-once, unordered transport delivers them.

use chrono::{DateTime, Duration, TimeZone, Utc};
use protocol::OutgoingEnvelope;
use protocol::inventory::{
    SnapshotMode, StockEntry, StockScope, StockSnapshot, WireStockEntry, WireStockSnapshot, methods,
};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// What to generate. Each export (one FULL, one NONZERO, one DELTA) gets its own
/// `created_on`, one second apart (plus a random fraction), so the outcome is defined by
/// the rules whatever the delivery order.
#[derive(Debug, Clone)]
pub struct StormSpec {
    pub seed: u64,
    pub aggregates: usize,
    /// SKUs per aggregate.
    pub skus: usize,
    /// Number of exports in the storm.
    pub exports: usize,
    /// Relative weights of FULL, NONZERO and DELTA exports.
    pub mix: (u32, u32, u32),
    /// SKUs per message of a FULL or NONZERO export (the OMS uses at most 10,000).
    pub chunk_size: usize,
    /// Most SKUs a DELTA carries.
    pub delta_skus: usize,
    /// Share of SKUs reported as unlimited.
    pub unlimited_share: f64,
    /// Share of NONZERO-eligible SKUs the OMS reports at 0 (left out of NONZERO exports).
    pub out_of_stock_share: f64,
    /// Timestamp of the first export.
    pub start: DateTime<Utc>,
    /// Which ledger the storm writes.
    pub scope: StockScope,
}

impl Default for StormSpec {
    fn default() -> Self {
        Self {
            seed: 1,
            aggregates: 3,
            skus: 200,
            exports: 20,
            mix: (2, 2, 6),
            chunk_size: 50,
            delta_skus: 5,
            unlimited_share: 0.05,
            out_of_stock_share: 0.2,
            start: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            scope: StockScope::Aggregate,
        }
    }
}

/// A storm: the snapshots (chunks) in the order the OMS produced them.
#[derive(Debug, Clone)]
pub struct Storm {
    pub snapshots: Vec<StockSnapshot>,
}

pub fn scope_name(i: usize) -> String {
    format!("AGG-{i:03}")
}

pub fn sku_name(i: usize) -> String {
    format!("SKU-{i:07}")
}

impl Storm {
    pub fn generate(spec: &StormSpec) -> Self {
        let mut rng = SmallRng::seed_from_u64(spec.seed);
        let total_weight = spec.mix.0 + spec.mix.1 + spec.mix.2;
        let mut snapshots = Vec::new();
        for export in 0..spec.exports {
            let created_on = spec.start
                + Duration::seconds(export as i64)
                + Duration::microseconds(rng.random_range(0..1_000_000));
            let scope_id = scope_name(rng.random_range(0..spec.aggregates.max(1)));
            let pick = rng.random_range(0..total_weight.max(1));
            let mode = if pick < spec.mix.0 {
                SnapshotMode::Full
            } else if pick < spec.mix.0 + spec.mix.1 {
                SnapshotMode::NonZero
            } else {
                SnapshotMode::Delta
            };
            let entries: Vec<StockEntry> = match mode {
                SnapshotMode::Delta => {
                    let n = rng.random_range(1..=spec.delta_skus.max(1));
                    let mut skus: Vec<usize> = (0..n).map(|_| rng_sku(&mut rng, spec)).collect();
                    skus.sort_unstable();
                    skus.dedup();
                    skus.into_iter()
                        .map(|sku| random_entry(&mut rng, spec, sku))
                        .collect()
                }
                SnapshotMode::Full => (0..spec.skus)
                    .map(|i| random_entry(&mut rng, spec, i))
                    .collect(),
                SnapshotMode::NonZero => (0..spec.skus)
                    .map(|i| random_entry(&mut rng, spec, i))
                    .filter(|e| e.unlimited || e.quantity > 0)
                    .collect(),
            };
            if mode == SnapshotMode::Delta {
                snapshots.push(snapshot(spec.scope, &scope_id, mode, created_on, entries));
                continue;
            }
            if entries.is_empty() {
                // An export with nothing in it still arrives, as one empty message.
                snapshots.push(snapshot(spec.scope, &scope_id, mode, created_on, entries));
                continue;
            }
            for chunk in entries.chunks(spec.chunk_size.max(1)) {
                snapshots.push(snapshot(
                    spec.scope,
                    &scope_id,
                    mode,
                    created_on,
                    chunk.to_vec(),
                ));
            }
        }
        Self { snapshots }
    }

    /// The messages to send: each snapshot once, then `duplicate_share` of them again, the
    /// whole shuffled when `shuffle` is set.
    pub fn deliveries(
        &self,
        seed: u64,
        shuffle: bool,
        duplicate_share: f64,
    ) -> Vec<&StockSnapshot> {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
        let mut out: Vec<&StockSnapshot> = self.snapshots.iter().collect();
        for s in &self.snapshots {
            if rng.random_bool(duplicate_share.clamp(0.0, 1.0)) {
                out.push(s);
            }
        }
        if shuffle {
            out.shuffle(&mut rng);
        }
        out
    }
}

fn rng_sku(rng: &mut SmallRng, spec: &StormSpec) -> usize {
    rng.random_range(0..spec.skus.max(1))
}

fn random_entry(rng: &mut SmallRng, spec: &StormSpec, sku: usize) -> StockEntry {
    let unlimited = rng.random_bool(spec.unlimited_share.clamp(0.0, 1.0));
    let quantity = if rng.random_bool(spec.out_of_stock_share.clamp(0.0, 1.0)) {
        0
    } else {
        rng.random_range(1..500)
    };
    StockEntry {
        sku: sku_name(sku),
        quantity,
        unlimited,
        inflight_backorders: None,
    }
}

fn snapshot(
    scope: StockScope,
    scope_id: &str,
    mode: SnapshotMode,
    created_on: DateTime<Utc>,
    stock: Vec<StockEntry>,
) -> StockSnapshot {
    StockSnapshot {
        scope,
        scope_id: scope_id.to_owned(),
        mode,
        created_on,
        stock,
        batch: None,
    }
}

/// The method of a snapshot of this scope.
pub fn method(scope: StockScope) -> &'static str {
    match scope {
        StockScope::Aggregate => methods::AGGREGATE_STOCK_UPDATED,
        StockScope::Source => methods::SOURCE_STOCK_UPDATED,
    }
}

/// The message body of a snapshot, exactly as an OMS would send it; `id` is the envelope id.
pub fn encode(snapshot: &StockSnapshot, id: &str) -> Vec<u8> {
    let wire = WireStockSnapshot {
        aggregate_id: (snapshot.scope == StockScope::Aggregate)
            .then_some(snapshot.scope_id.as_str()),
        source_id: (snapshot.scope == StockScope::Source).then_some(snapshot.scope_id.as_str()),
        mode: snapshot.mode,
        created_on: protocol::lenient::format_timestamp(&snapshot.created_on),
        stock: snapshot
            .stock
            .iter()
            .map(|e| WireStockEntry {
                sku: &e.sku,
                quantity: e.quantity,
                unlimited: e.unlimited,
            })
            .collect(),
    };
    let params = wire.params();
    OutgoingEnvelope::new(Some(id), method(snapshot.scope), &params).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_storm() {
        let spec = StormSpec::default();
        let a = Storm::generate(&spec);
        let b = Storm::generate(&spec);
        assert_eq!(a.snapshots, b.snapshots);
        assert!(a.snapshots.len() >= spec.exports);
    }

    #[test]
    fn chunks_of_one_export_share_its_timestamp_and_exports_do_not() {
        let spec = StormSpec {
            mix: (1, 0, 0),
            exports: 3,
            skus: 120,
            chunk_size: 50,
            ..StormSpec::default()
        };
        let storm = Storm::generate(&spec);
        assert_eq!(storm.snapshots.len(), 9);
        let mut stamps: Vec<_> = storm.snapshots.iter().map(|s| s.created_on).collect();
        stamps.dedup();
        assert_eq!(stamps.len(), 3);
    }

    #[test]
    fn encoded_snapshots_parse_back_to_themselves() {
        let storm = Storm::generate(&StormSpec::default());
        for snapshot in storm.snapshots.iter().take(20) {
            let body = encode(snapshot, "id-1");
            let envelope = protocol::Envelope::parse(&body, &protocol::Limits::default()).unwrap();
            assert_eq!(envelope.method, method(snapshot.scope));
            let parsed = protocol::inventory::parse_stock_snapshot(
                envelope.params.unwrap(),
                snapshot.scope,
                &protocol::Limits::default(),
            )
            .unwrap();
            assert_eq!(&parsed, snapshot);
        }
    }

    #[test]
    fn deliveries_duplicate_and_shuffle_on_request() {
        let storm = Storm::generate(&StormSpec::default());
        let plain = storm.deliveries(7, false, 0.0);
        assert_eq!(plain.len(), storm.snapshots.len());
        let noisy = storm.deliveries(7, true, 0.5);
        assert!(noisy.len() > plain.len());
    }
}
