//! Sizing the consumer's prefetch from a byte budget.
//!
//! RabbitMQ bounds what it sends a consumer by message count only, so the worker picks the
//! count: many small DELTAs in flight keep the broker streaming; few large FULL chunks keep
//! the worker's memory flat. The governor follows the largest recent message and asks for a
//! new prefetch when the right one differs by a factor of two or more: at once when messages
//! grow (memory); when they shrink (throughput), once a whole window of small messages has
//! been seen since the last change, so a fresh consumer ramps up after its first few
//! deliveries and a steady one does not flap.

/// Below this the pipeline (one batch gathering while others apply) starves.
pub const MIN_PREFETCH: u16 = 4;

/// The prefetch a new consumer starts with, before any message size is known: a backlog of
/// large snapshots must not arrive all at once.
pub const INITIAL_PREFETCH: u16 = 16;

/// Messages are assumed at least this big, so tiny ones do not ask for absurd prefetches.
const SIZE_FLOOR: f64 = 512.0;

/// Per message, the remembered maximum decays by this factor: after a few hundred small
/// messages, a past large one stops constraining the prefetch.
const DECAY: f64 = 0.99;

#[derive(Debug)]
pub struct PrefetchGovernor {
    max: u16,
    budget: usize,
    current: u16,
    recent_max: f64,
    /// Deliveries observed since the prefetch last changed.
    seen_since_change: u32,
}

impl PrefetchGovernor {
    pub fn new(max: u16, budget_bytes: usize) -> Self {
        let max = max.max(MIN_PREFETCH);
        Self {
            max,
            budget: budget_bytes,
            current: INITIAL_PREFETCH.min(max),
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
        if shrink || grow {
            self.current = desired;
            self.seen_since_change = 0;
            Some(desired)
        } else {
            None
        }
    }

    fn desired(&self) -> u16 {
        let per_message = self.recent_max.max(SIZE_FLOOR);
        let fits = (self.budget as f64 / per_message).floor();
        (fits.min(f64::from(self.max)) as u16).clamp(MIN_PREFETCH, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_messages_shrink_the_prefetch_at_once() {
        let mut g = PrefetchGovernor::new(1000, 8 << 20);
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
        let mut g = PrefetchGovernor::new(1000, 8 << 20);
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
    fn never_below_the_minimum_nor_above_the_maximum() {
        let mut g = PrefetchGovernor::new(50, 1024);
        assert_eq!(g.observe(8 << 20), Some(MIN_PREFETCH));
        let g = PrefetchGovernor::new(2, 1 << 30);
        assert_eq!(g.current(), MIN_PREFETCH);
    }
}
