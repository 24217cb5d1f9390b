//! Latency histograms in microseconds: log-linear buckets (exact below 128 µs, then 64
//! buckets per power of two, so a percentile is within 1.6 % of the true value), recorded
//! lock-free by many connection tasks, and merged across worker processes as [`Snapshot`]s.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Buckets per power of two, as a power of two.
const SUB_BITS: u32 = 6;
/// Values at or above this (about 12.7 days in µs) land in the last bucket.
const MAX_VALUE: u64 = (1 << 40) - 1;
/// Enough buckets for every value up to `MAX_VALUE`.
const BUCKETS: usize = bucket_of(MAX_VALUE) + 1;

/// The bucket of `v`: `v` itself below 128, else 64 linear steps per power of two.
const fn bucket_of(v: u64) -> usize {
    let v = if v > MAX_VALUE { MAX_VALUE } else { v };
    if v < (2 << SUB_BITS) {
        v as usize
    } else {
        let shift = 63 - v.leading_zeros() - SUB_BITS;
        ((shift as usize) << SUB_BITS) + (v >> shift) as usize
    }
}

/// The largest value that falls in bucket `i`.
fn bucket_high(i: usize) -> u64 {
    if i < (2 << SUB_BITS) {
        i as u64
    } else {
        let shift = (i >> SUB_BITS) as u32 - 1;
        let sub = (i - ((shift as usize) << SUB_BITS)) as u64;
        ((sub + 1) << shift) - 1
    }
}

/// A histogram that many tasks record into at once.
#[derive(Debug)]
pub(crate) struct Histogram {
    /// One counter per bucket.
    counts: Box<[AtomicU64]>,
    /// The exact largest value seen, since the last bucket is wide.
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Counts one value (µs).
    pub(crate) fn record(&self, micros: u64) {
        self.counts[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(micros, Ordering::Relaxed);
    }

    /// Forgets every value.
    pub(crate) fn reset(&self) {
        self.counts
            .iter()
            .for_each(|c| c.store(0, Ordering::Relaxed));
        self.max.store(0, Ordering::Relaxed);
    }

    /// The counts so far, in a form that travels between processes.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let counts = self
            .counts
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.load(Ordering::Relaxed);
                (c > 0).then_some((i as u32, c))
            })
            .collect();
        Snapshot {
            counts,
            max: self.max.load(Ordering::Relaxed),
        }
    }
}

/// Histogram counts, sparse: `(bucket, count)` for non-empty buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    /// Non-empty buckets in increasing order.
    counts: Vec<(u32, u64)>,
    /// The exact maximum.
    max: u64,
}

impl Snapshot {
    /// Adds `other`'s counts to these.
    pub(crate) fn merge(&mut self, other: &Snapshot) {
        let mut merged = Vec::with_capacity(self.counts.len() + other.counts.len());
        let (mut a, mut b) = (
            self.counts.iter().peekable(),
            other.counts.iter().peekable(),
        );
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.0 == y.0 => {
                    let v = (x.0, x.1 + y.1);
                    a.next();
                    b.next();
                    v
                }
                (Some(x), Some(y)) if x.0 < y.0 => *a.next().expect("peeked"),
                (Some(_), Some(_)) | (None, Some(_)) => *b.next().expect("peeked"),
                (Some(_), None) => *a.next().expect("peeked"),
                (None, None) => break,
            };
            merged.push(next);
        }
        self.counts = merged;
        self.max = self.max.max(other.max);
    }

    /// Number of values.
    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().map(|(_, c)| c).sum()
    }

    /// The largest value (µs).
    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1), as the top of its bucket, never above the maximum.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for &(bucket, count) in &self.counts {
            seen += count;
            if seen >= rank {
                return bucket_high(bucket as usize).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut last = 0;
        for v in [
            0, 1, 127, 128, 129, 255, 256, 1000, 10_000, 1_000_000, MAX_VALUE,
        ] {
            let b = bucket_of(v);
            assert!(b >= last, "{v}");
            last = b;
            let high = bucket_high(b);
            assert!(high >= v, "{v} above its bucket top {high}");
            assert!(
                high as f64 <= v as f64 * 1.0 + v as f64 / 64.0 + 1.0,
                "{v}: {high}"
            );
            if b > 0 {
                assert!(bucket_high(b - 1) < v, "{v}");
            }
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_merged_snapshots() {
        let (a, b) = (Histogram::default(), Histogram::default());
        for v in 1..=500 {
            a.record(v);
        }
        for v in 501..=1000 {
            b.record(v);
        }
        let mut s = a.snapshot();
        s.merge(&b.snapshot());
        assert_eq!(s.count(), 1000);
        assert_eq!(s.max(), 1000);
        let p50 = s.quantile(0.5);
        assert!((500..=508).contains(&p50), "{p50}");
        let p99 = s.quantile(0.99);
        assert!((990..=1000).contains(&p99), "{p99}");
        assert_eq!(s.quantile(1.0), 1000);
        assert_eq!(Snapshot::default().quantile(0.5), 0);
    }
}
