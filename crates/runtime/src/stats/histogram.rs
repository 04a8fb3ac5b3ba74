//! Latency histograms that merge by addition: bucket counts, not samples, so the histograms
//! of any number of workers and minutes add up to the histogram of them all, and percentiles
//! are read from the sum.

use serde::Serialize;

/// Upper bounds of the buckets, in seconds: six per decade (1, 1.5, 2, 3, 5, 7) from 0.1 ms
/// to 100 s. Estimating a percentile inside a bucket is then off by at most about a third of
/// the value, which is what telling a 2 ms endpoint from a 3 ms one needs. A histogram has one
/// more bucket, for what is above the last bound. Stored in `omsc_endpoint_stats`: changing
/// them needs a new table.
pub const BUCKETS: &[f64] = &[
    0.000_1, 0.000_15, 0.000_2, 0.000_3, 0.000_5, 0.000_7, //
    0.001, 0.001_5, 0.002, 0.003, 0.005, 0.007, //
    0.01, 0.015, 0.02, 0.03, 0.05, 0.07, //
    0.1, 0.15, 0.2, 0.3, 0.5, 0.7, //
    1.0, 1.5, 2.0, 3.0, 5.0, 7.0, //
    10.0, 15.0, 20.0, 30.0, 50.0, 70.0, //
    100.0,
];

/// A duration histogram with its count, sum and maximum.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Histogram {
    /// Counts per bucket of [`BUCKETS`], plus one for what is above the last bound. May be
    /// shorter when it came from the database (missing buckets count 0).
    pub buckets: Vec<i64>,
    pub count: i64,
    pub sum: f64,
    pub max: f64,
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            buckets: vec![0; BUCKETS.len() + 1],
            ..Self::default()
        }
    }

    pub fn observe(&mut self, seconds: f64) {
        let seconds = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        if self.buckets.len() < BUCKETS.len() + 1 {
            self.buckets.resize(BUCKETS.len() + 1, 0);
        }
        self.buckets[bucket_of(seconds)] += 1;
        self.count += 1;
        self.sum += seconds;
        self.max = self.max.max(seconds);
    }

    pub fn merge(&mut self, other: &Histogram) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// The `q` quantile (0 < q ≤ 1), interpolated linearly inside its bucket and never above
    /// the largest observation. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: i64 = self.buckets.iter().sum();
        if total <= 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut below = 0i64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n <= 0 {
                continue;
            }
            if (below + n) as f64 >= rank {
                let lower = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
                let upper = BUCKETS.get(i).copied().unwrap_or(self.max.max(lower));
                let within = (rank - below as f64) / n as f64;
                let estimate = lower + (upper - lower) * within;
                return Some(if self.max > 0.0 {
                    estimate.min(self.max)
                } else {
                    estimate
                });
            }
            below += n;
        }
        Some(self.max)
    }
}

/// The index of the bucket that counts `seconds`.
pub fn bucket_of(seconds: f64) -> usize {
    BUCKETS.partition_point(|&bound| bound < seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_rise() {
        assert!(BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_value_on_a_bound_falls_in_that_bucket() {
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(0.000_1), 0);
        assert_eq!(bucket_of(0.000_11), 1);
        assert_eq!(
            bucket_of(1.0),
            BUCKETS.iter().position(|&b| b == 1.0).unwrap()
        );
        assert_eq!(bucket_of(1_000.0), BUCKETS.len());
    }

    #[test]
    fn quantiles_land_in_the_right_bucket() {
        let mut h = Histogram::new();
        for _ in 0..90 {
            h.observe(0.004);
        }
        for _ in 0..9 {
            h.observe(0.06);
        }
        h.observe(2.5);
        let p50 = h.quantile(0.5).unwrap();
        assert!((0.003..=0.005).contains(&p50), "p50 {p50}");
        let p95 = h.quantile(0.95).unwrap();
        assert!((0.05..=0.07).contains(&p95), "p95 {p95}");
        let p99 = h.quantile(0.99).unwrap();
        assert!((0.05..=0.07).contains(&p99), "p99 {p99}");
        assert_eq!(h.quantile(1.0).unwrap(), 2.5);
        assert_eq!(h.count, 100);
        assert!((h.mean().unwrap() - (0.36 + 0.54 + 2.5) / 100.0).abs() < 1e-9);
    }

    #[test]
    fn merged_histograms_equal_one_histogram_of_everything() {
        let values: Vec<f64> = (1..500).map(|i| f64::from(i) * 0.0007).collect();
        let mut all = Histogram::new();
        let (mut a, mut b) = (Histogram::new(), Histogram::new());
        for (i, v) in values.iter().enumerate() {
            all.observe(*v);
            if i % 3 == 0 { &mut a } else { &mut b }.observe(*v);
        }
        a.merge(&b);
        assert_eq!(a.buckets, all.buckets);
        assert_eq!(a.count, all.count);
        assert_eq!(a.quantile(0.95), all.quantile(0.95));
    }

    #[test]
    fn an_empty_histogram_has_no_quantiles() {
        assert_eq!(Histogram::new().quantile(0.5), None);
        assert_eq!(Histogram::new().mean(), None);
    }

    #[test]
    fn overflow_is_estimated_at_the_largest_observation() {
        let mut h = Histogram::new();
        h.observe(250.0);
        assert_eq!(h.quantile(0.99), Some(250.0));
    }
}
