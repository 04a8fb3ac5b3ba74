//! Sizing the consumers' prefetch from one byte budget per process.
//!
//! RabbitMQ bounds what it sends a consumer by message count only, so the worker picks the
//! count: many small DELTAs in flight keep the broker streaming; few large FULL chunks keep
//! the worker's memory flat. Every consumer of a process draws on one [`InflightBudget`].
//! A governor follows the largest recent message and asks for a new prefetch when the right
//! one differs by a factor of two or more: at once when messages grow (memory); when they
//! shrink (throughput), once a whole window of small messages has been seen since the last
//! change, so a fresh consumer ramps up after its first few deliveries and a steady one does
//! not flap. A fresh consumer assumes messages as large as the size limit allows: with the
//! default budget and limit, it starts with one message in flight, and grows after it.

use std::sync::{Arc, Mutex};

/// The most a consumer starts with, before any message size is known.
pub const INITIAL_PREFETCH: u16 = 16;

/// Messages are assumed at least this big, so tiny ones do not ask for absurd prefetches.
const SIZE_FLOOR: f64 = 512.0;

/// Per message, the remembered maximum decays by this factor: after a few hundred small
/// messages, a past large one stops constraining the prefetch.
const DECAY: f64 = 0.99;

/// The bytes of message bodies one process aims to hold at once (`OMSC_INFLIGHT_BYTES`),
/// shared by every consumer in it: `omsc run --all` runs every module in one process, and
/// six modules each sizing its prefetch from the whole budget would hold six budgets.
///
/// Each consumer reserves what its prefetch can bring (prefetch × its largest recent
/// message) and sizes its prefetch from what the others leave. A consumer always keeps one
/// message: when messages are larger than what is left, a process holds at most one per
/// consumer.
#[derive(Debug)]
pub struct InflightBudget {
    total: usize,
    /// The reservation of each consumer, by slot; a slot whose consumer ended is free.
    reserved: Mutex<Vec<Option<usize>>>,
}

impl InflightBudget {
    pub fn new(total: usize) -> Arc<Self> {
        Arc::new(Self {
            total,
            reserved: Mutex::new(Vec::new()),
        })
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes reserved by every consumer but `slot`.
    fn left_for(&self, slot: usize) -> usize {
        let reserved = self.lock();
        let others: usize = reserved
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != slot)
            .filter_map(|(_, r)| *r)
            .sum();
        self.total.saturating_sub(others)
    }

    fn join(&self) -> usize {
        let mut reserved = self.lock();
        if let Some(free) = reserved.iter().position(Option::is_none) {
            reserved[free] = Some(0);
            return free;
        }
        reserved.push(Some(0));
        reserved.len() - 1
    }

    fn reserve(&self, slot: usize, bytes: usize) {
        if let Some(r) = self.lock().get_mut(slot) {
            *r = Some(bytes);
        }
    }

    fn leave(&self, slot: usize) {
        if let Some(r) = self.lock().get_mut(slot) {
            *r = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<usize>>> {
        // The vector holds plain numbers: a panic elsewhere cannot leave it inconsistent.
        self.reserved.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The prefetch of one consumer, sized from its share of the process's [`InflightBudget`].
#[derive(Debug)]
pub struct PrefetchGovernor {
    max: u16,
    budget: Arc<InflightBudget>,
    slot: usize,
    current: u16,
    recent_max: f64,
    /// Deliveries observed since the prefetch last changed.
    seen_since_change: u32,
}

impl PrefetchGovernor {
    /// A consumer of at most `max` unacknowledged deliveries, whose messages may be as large
    /// as `largest_body` (the size limit) until it has seen some: it starts with the prefetch
    /// that many of those fit, so a backlog of large bodies does not arrive all at once.
    pub fn new(max: u16, budget: Arc<InflightBudget>, largest_body: usize) -> Self {
        let max = max.max(1);
        let assumed = (largest_body as f64).max(SIZE_FLOOR);
        let slot = budget.join();
        let fits = (budget.left_for(slot) as f64 / assumed).floor();
        let current = (fits.min(f64::from(INITIAL_PREFETCH)) as u16).clamp(1, max);
        budget.reserve(slot, (f64::from(current) * assumed) as usize);
        Self {
            max,
            budget,
            slot,
            current,
            recent_max: 0.0,
            seen_since_change: 0,
        }
    }

    pub fn current(&self) -> u16 {
        self.current
    }

    /// Records a received body; returns the prefetch to switch to, if a switch is due.
    pub fn observe(&mut self, body_len: usize) -> Option<u16> {
        self.recent_max = (body_len as f64).max(self.recent_max * DECAY);
        self.seen_since_change = self.seen_since_change.saturating_add(1);
        let desired = self.desired();
        let shrink = desired.saturating_mul(2) <= self.current;
        let settled = self.seen_since_change >= u32::from(self.current);
        let grow = settled
            && (desired >= self.current.saturating_mul(2)
                || (desired == self.max && self.current < self.max));
        let change = if shrink || grow {
            self.current = desired;
            self.seen_since_change = 0;
            Some(desired)
        } else {
            None
        };
        self.budget.reserve(
            self.slot,
            (self.per_message() * f64::from(self.current)) as usize,
        );
        change
    }

    fn per_message(&self) -> f64 {
        self.recent_max.max(SIZE_FLOOR)
    }

    /// The bytes the other consumers leave this one.
    fn share(&self) -> f64 {
        self.budget.left_for(self.slot) as f64
    }

    fn desired(&self) -> u16 {
        let fits = (self.share() / self.per_message()).floor();
        (fits.min(f64::from(self.max)) as u16).clamp(1, self.max)
    }
}

impl Drop for PrefetchGovernor {
    /// A consumer that ends (its session closed) holds nothing any more.
    fn drop(&mut self) {
        self.budget.leave(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    /// A consumer alone in its process, expecting snapshots of up to half a megabyte.
    fn alone(max: u16, budget: usize) -> PrefetchGovernor {
        PrefetchGovernor::new(max, InflightBudget::new(budget), MIB / 2)
    }

    #[test]
    fn large_messages_shrink_the_prefetch_at_once() {
        let mut g = alone(1000, 8 * MIB);
        assert_eq!(g.current(), INITIAL_PREFETCH);
        for _ in 1..INITIAL_PREFETCH {
            assert_eq!(g.observe(200), None);
        }
        assert_eq!(
            g.observe(200),
            Some(1000),
            "a window of small messages grows it"
        );
        assert_eq!(g.observe(450_000), Some(18));
        assert_eq!(g.current(), 18);
        assert_eq!(g.observe(450_000), None);
    }

    #[test]
    fn small_messages_grow_it_again_once_the_large_ones_fade() {
        let mut g = alone(1000, 8 * MIB);
        // 18 fit the budget: close enough to the initial 16 to stay.
        assert_eq!(g.observe(450_000), None);
        // The large message keeps the prefetch low while its memory decays, then it grows
        // step by step to the maximum.
        let first_growth = (1..2000).find(|_| g.observe(200).is_some());
        assert!(first_growth.is_some_and(|n| n > 16), "{first_growth:?}");
        for _ in 0..2000 {
            g.observe(200);
        }
        assert_eq!(g.current(), 1000);
    }

    #[test]
    fn never_below_one_nor_above_the_maximum() {
        let mut g = alone(50, MIB);
        assert_eq!(g.current(), 2);
        assert_eq!(g.observe(50 * MIB), Some(1), "one message, however large");
        assert_eq!(g.observe(50 * MIB), None);
        let g = alone(2, 1 << 30);
        assert_eq!(g.current(), 2);
    }

    #[test]
    fn a_fresh_consumer_expects_bodies_as_large_as_the_limit_until_it_sees_some() {
        // The default budget and size limit: a backlog of 8 MiB bodies arrives one by one.
        let mut g = PrefetchGovernor::new(1000, InflightBudget::new(8 * MIB), 8 * MIB);
        assert_eq!(g.current(), 1);
        assert_eq!(
            g.observe(300),
            Some(1000),
            "small ones open it after the first"
        );
    }

    #[test]
    fn the_consumers_of_one_process_share_one_budget() {
        let budget = InflightBudget::new(8 * MIB);
        let mut a = PrefetchGovernor::new(1000, budget.clone(), MIB / 2);
        let mut b = PrefetchGovernor::new(1000, budget.clone(), MIB / 2);
        assert_eq!(a.current(), 16, "the first takes what it may need");
        assert_eq!(
            b.current(),
            1,
            "the second one gets what is left, at least one"
        );
        assert_eq!(a.observe(MIB), Some(7), "a sizes itself from what b leaves");
        assert_eq!(b.observe(MIB), None);
        let held = |a: &PrefetchGovernor, b: &PrefetchGovernor| {
            (usize::from(a.current()) + usize::from(b.current())) * MIB
        };
        assert!(held(&a, &b) <= budget.total(), "{}", held(&a, &b));
        // Once a's consumer ends, b may use the whole budget.
        drop(a);
        let grown = (0..100).find_map(|_| b.observe(MIB));
        assert_eq!(grown, Some(8));
        // A consumer of a later session takes a's place and shares again.
        let c = PrefetchGovernor::new(1000, budget.clone(), MIB);
        assert_eq!(c.current(), 1);
        assert_eq!(budget.lock().len(), 2, "an ended consumer's slot is reused");
    }
}
