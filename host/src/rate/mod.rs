//! Rates: the token bucket, and what is built on it: each session's message gate
//! ([`gate`]) and the handshake budget of each source address ([`sources`]).

pub(crate) mod gate;
pub(crate) mod sources;

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

/// A rate and a burst that a reload can change, read together: buckets made after a change
/// use the new values.
#[derive(Debug)]
pub(crate) struct Rates(AtomicU64);

impl Rates {
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        Self(AtomicU64::new(Self::pack(rate, burst)))
    }

    fn pack(rate: u32, burst: u32) -> u64 {
        (u64::from(rate) << 32) | u64::from(burst)
    }

    /// `(rate, burst)`.
    pub(crate) fn get(&self) -> (u32, u32) {
        let v = self.0.load(Ordering::Relaxed);
        ((v >> 32) as u32, v as u32)
    }

    pub(crate) fn set(&self, rate: u32, burst: u32) {
        self.0.store(Self::pack(rate, burst), Ordering::Relaxed);
    }

    /// A full bucket at the current values.
    pub(crate) fn bucket(&self) -> TokenBucket {
        let (rate, burst) = self.get();
        TokenBucket::new(rate, burst)
    }
}

/// Allows `rate` messages per second with bursts of `burst`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Messages refused since the bucket last had a token; past `burst` the client is abusive.
    strikes: u32,
}

/// What to do with one message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Handle it.
    Allow,
    /// Refuse it with an error.
    Refuse,
    /// Refused for too long: close the connection.
    Abuse,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: rate as f64,
            burst: burst as f64,
            tokens: burst as f64,
            last: Instant::now(),
            strikes: 0,
        }
    }

    /// New rate and burst; tokens above the new burst are dropped.
    pub(crate) fn set_rates(&mut self, rate: u32, burst: u32) {
        self.rate = rate as f64;
        self.burst = burst as f64;
        self.tokens = self.tokens.min(self.burst);
    }

    /// Whether the bucket would be full at `now` (its owner has been quiet long enough).
    pub(crate) fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
    }

    /// Takes a token for one message at time `now`.
    pub(crate) fn take(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.strikes = 0;
            Verdict::Allow
        } else {
            self.strikes += 1;
            if self.strikes as f64 > self.burst {
                Verdict::Abuse
            } else {
                Verdict::Refuse
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refuses_then_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3);
        assert!((0..3).all(|_| b.take(t0) == Verdict::Allow));
        assert_eq!(b.take(t0), Verdict::Refuse);
        assert_eq!(b.take(t0 + Duration::from_millis(100)), Verdict::Allow);
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(b.take(t1), Verdict::Refuse);
        assert_eq!(b.take(t1), Verdict::Refuse);
        assert_eq!(b.take(t1), Verdict::Refuse);
        assert_eq!(b.take(t1), Verdict::Abuse);
    }
}
