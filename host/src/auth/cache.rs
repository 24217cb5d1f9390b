//! Answers of a back end, reused for a while: valid tokens for `cache_ttl_secs` (never past
//! their own expiry), refusals for `negative_cache_ttl_secs`, so a refused token cannot
//! hammer the back end. At most `cache_size` entries; the least recently used leaves first.
//! "Unavailable" is never cached: the next request asks again.

use std::{
    num::NonZeroUsize,
    time::{Duration, Instant},
};

use lru::LruCache;
use parking_lot::Mutex;

use super::{AuthError, Verified};

/// One cached answer.
type Answer = Result<Verified, AuthError>;

/// A bounded, expiring cache of answers by token.
pub(super) struct AnswerCache {
    entries: Mutex<LruCache<String, (Instant, Answer)>>,
    /// How long a valid answer is reused.
    positive: Duration,
    /// How long a refusal is reused.
    negative: Duration,
}

impl std::fmt::Debug for AnswerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerCache")
            .field("entries", &self.entries.lock().len())
            .finish()
    }
}

impl AnswerCache {
    /// A cache of at most `size` answers.
    pub(super) fn new(size: usize, positive: Duration, negative: Duration) -> Self {
        Self {
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(size).unwrap_or(NonZeroUsize::MIN),
            )),
            positive,
            negative,
        }
    }

    /// The answer for `token` if one is still fresh.
    pub(super) fn get(&self, token: &str, now: Instant) -> Option<Answer> {
        let mut entries = self.entries.lock();
        let fresh = match entries.get(token) {
            Some((until, answer)) if *until > now => Some(answer.clone()),
            Some(_) => None,
            None => return None,
        };
        if fresh.is_none() {
            entries.pop(token);
        }
        fresh
    }

    /// Keeps `answer` for `token` (not an unavailable one). `now_secs` bounds a valid answer
    /// by the token's own expiry.
    pub(super) fn put(&self, token: &str, answer: &Answer, now: Instant, now_secs: u64) {
        let ttl = match answer {
            Err(AuthError::Unavailable) => return,
            Ok(v) => {
                let left = v.expires_at.map_or(self.positive, |exp| {
                    Duration::from_secs(exp.saturating_sub(now_secs))
                });
                self.positive.min(left)
            }
            Err(_) => self.negative,
        };
        if ttl.is_zero() {
            self.entries.lock().pop(token);
            return;
        }
        self.entries
            .lock()
            .put(token.to_owned(), (now + ttl, answer.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;

    fn ok(expires_at: Option<u64>) -> Answer {
        Ok(Verified {
            principal: Principal {
                user_id: "1".into(),
                user_type: 2,
                tenant_id: None,
            },
            expires_at,
        })
    }

    #[test]
    fn answers_expire_and_the_cache_stays_bounded() {
        let cache = AnswerCache::new(2, Duration::from_secs(30), Duration::from_secs(5));
        let t0 = Instant::now();
        cache.put("a", &ok(None), t0, 1000);
        cache.put("b", &Err(AuthError::Invalid("x".into())), t0, 1000);
        cache.put("u", &Err(AuthError::Unavailable), t0, 1000);
        assert!(cache.get("u", t0).is_none(), "unavailable is not cached");
        assert!(cache.get("a", t0 + Duration::from_secs(29)).is_some());
        assert!(cache.get("b", t0 + Duration::from_secs(6)).is_none());
        // A token expiring in 3 s is kept 3 s, not 30.
        cache.put("c", &ok(Some(1003)), t0, 1000);
        assert!(cache.get("c", t0 + Duration::from_secs(4)).is_none());
        for i in 0..10 {
            cache.put(&i.to_string(), &ok(None), t0, 1000);
        }
        assert_eq!(cache.entries.lock().len(), 2);
    }
}
