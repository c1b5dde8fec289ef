//! A lock-free latency histogram with log-linear buckets (4 per power of two, 1 µs to ~71 min).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets per power of two: 4 gives a worst-case relative error of 19% on a quantile,
/// plenty for p50/p99 in reports, at 128 counters per histogram.
const SUB_BUCKETS: u32 = 4;
const POWERS: u32 = 32;
const BUCKETS: usize = (SUB_BUCKETS * POWERS) as usize;

/// Records durations with a few relaxed atomic adds; reads quantiles from a snapshot.
#[derive(Debug)]
pub struct Histogram {
    buckets: Box<[AtomicU64; BUCKETS]>,
    count: AtomicU64,
    sum_micros: AtomicU64,
    max_micros: AtomicU64,
}

/// A point-in-time copy of a [`Histogram`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct HistogramSnapshot {
    /// How many durations were recorded.
    pub count: u64,
    /// Their sum.
    pub sum: Duration,
    /// The largest recorded.
    pub max: Duration,
    buckets: Vec<u64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
            max_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one duration.
    pub fn record(&self, value: Duration) {
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_index(micros)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        // Most acquires wait under a microsecond: nothing to add, and no locked add.
        if micros > 0 {
            self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        }
        // A read first: the maximum rarely moves, and a plain load avoids a locked
        // compare-and-swap on every record.
        if micros > self.max_micros.load(Ordering::Relaxed) {
            self.max_micros.fetch_max(micros, Ordering::Relaxed);
        }
    }

    /// Copies the current counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            count: self.count.load(Ordering::Relaxed),
            sum: Duration::from_micros(self.sum_micros.load(Ordering::Relaxed)),
            max: Duration::from_micros(self.max_micros.load(Ordering::Relaxed)),
            buckets: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
        }
    }
}

impl HistogramSnapshot {
    /// The duration below which a fraction `q` (0.0 to 1.0) of the recorded values fall,
    /// as the upper bound of the bucket that holds it (never above the recorded max).
    /// Zero when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        // The rank of the wanted value, 1-based; ceil so that q = 1.0 is the last value.
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Duration::from_micros(bucket_upper_bound(index)).min(self.max);
            }
        }
        self.max
    }

    /// The mean of the recorded values; zero when nothing was recorded.
    pub fn mean(&self) -> Duration {
        match u32::try_from(self.count) {
            Ok(0) => Duration::ZERO,
            Ok(n) => self.sum / n,
            Err(_) => Duration::from_micros(self.sum.as_micros() as u64 / self.count),
        }
    }
}

/// Bucket 0 holds 0-1 µs; above that, each power of two is split into `SUB_BUCKETS` parts.
fn bucket_index(micros: u64) -> usize {
    if micros < u64::from(SUB_BUCKETS) {
        return micros as usize;
    }
    let power = 63 - micros.leading_zeros(); // floor(log2), at least 2 here
    let shift = power - SUB_BUCKETS.trailing_zeros();
    let sub = (micros >> shift) as u32 & (SUB_BUCKETS - 1);
    let index = (power - 1) * SUB_BUCKETS + sub;
    (index as usize).min(BUCKETS - 1)
}

fn bucket_upper_bound(index: usize) -> u64 {
    let index = index as u32;
    if index < SUB_BUCKETS {
        return u64::from(index);
    }
    let power = index / SUB_BUCKETS + 1;
    let sub = u64::from(index % SUB_BUCKETS);
    let shift = power - SUB_BUCKETS.trailing_zeros();
    let low = (u64::from(SUB_BUCKETS) + sub) << shift;
    low + (1u64 << shift) - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quantiles_of_a_uniform_spread() {
        let h = Histogram::default();
        for ms in 1..=1000 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 1000);
        assert_eq!(s.max, Duration::from_millis(1000));
        for (q, exact_ms) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0)] {
            let got = s.quantile(q).as_secs_f64() * 1000.0;
            assert!(got >= exact_ms && got <= exact_ms * 1.25, "q{q}: {got} vs {exact_ms}");
        }
        assert_eq!(s.quantile(1.0), Duration::from_millis(1000));
        assert_eq!(s.mean(), Duration::from_micros(500_500));
    }

    #[test]
    fn empty_histogram_reads_zero() {
        let s = Histogram::default().snapshot();
        assert_eq!(
            (s.quantile(0.99), s.mean(), s.max),
            (Duration::ZERO, Duration::ZERO, Duration::ZERO)
        );
    }

    proptest! {
        #[test]
        fn every_value_lands_in_a_bucket_that_bounds_it(micros in 0u64..(1 << 40)) {
            let index = bucket_index(micros);
            prop_assert!(index < BUCKETS);
            if index < BUCKETS - 1 {
                prop_assert!(bucket_upper_bound(index) >= micros);
                // The bound is tight: within 25% above the value (the sub-bucket width).
                prop_assert!(bucket_upper_bound(index) as f64 <= (micros as f64) * 1.25 + 1.0);
                if index > 0 {
                    prop_assert!(bucket_upper_bound(index - 1) < micros);
                }
            }
        }
    }
}
