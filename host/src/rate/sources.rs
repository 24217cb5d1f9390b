//! Handshake budgets per source address: one client cannot spend the node's handshake
//! budget, nor make the host verify tokens without end. The map is bounded.

use std::{collections::HashMap, net::IpAddr, time::Instant};

use parking_lot::Mutex;

use super::{Rates, TokenBucket, Verdict};

/// Most source addresses remembered; past it, addresses whose bucket has refilled are
/// forgotten, and if none has, all are.
const MAX_SOURCES: usize = 16_384;

/// Token buckets by source address.
#[derive(Debug)]
pub(crate) struct SourceBudgets {
    /// Of new buckets (a reload can change them).
    pub(crate) rates: Rates,
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl SourceBudgets {
    /// `rate` handshakes per second per address, bursts of `burst`.
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        Self {
            rates: Rates::new(rate, burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one handshake from `source`'s budget.
    pub(crate) fn take(&self, source: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_SOURCES && !buckets.contains_key(&source) {
            buckets.retain(|_, b| !b.is_full(now));
            if buckets.len() >= MAX_SOURCES {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(source).or_insert_with(|| self.rates.bucket());
        bucket.take(now) == Verdict::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_has_its_own_budget() {
        let b = SourceBudgets::new(1, 2);
        let now = Instant::now();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let c: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(b.take(a, now) && b.take(a, now));
        assert!(!b.take(a, now));
        assert!(b.take(c, now), "another source is not affected");
    }

    #[test]
    fn the_map_stays_bounded() {
        let b = SourceBudgets::new(1, 1);
        let now = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 10) {
            b.take(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(b.buckets.lock().len() <= MAX_SOURCES);
    }
}
