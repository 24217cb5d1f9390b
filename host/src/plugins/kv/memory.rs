//! The in-process backend: an ordered map per namespace, with expiry and quotas.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    ops::Bound,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use super::{KvError, LIST_PAGE, Page, Quota, Space, parse_counter};

/// Every namespace's entries, in this process.
#[derive(Debug)]
pub(super) struct Memory {
    /// One area per namespace; a namespace is a plugin, so this grows with plugins only.
    areas: Mutex<HashMap<Arc<str>, Arc<Mutex<Area>>>>,
    quota: Quota,
}

/// One namespace's entries.
#[derive(Debug, Default)]
struct Area {
    /// By stored name (scope prefix + key), so a prefix is a contiguous range.
    entries: BTreeMap<String, Entry>,
    /// Entries with a TTL, by expiry, so expired ones are dropped in order.
    expiries: BTreeSet<(Instant, String)>,
    /// Bytes of stored names and values.
    bytes: u64,
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

fn size(field: &str, value: &[u8]) -> u64 {
    (field.len() + value.len()) as u64
}

impl Area {
    /// Drops every entry whose time has come.
    fn purge(&mut self, now: Instant) {
        while let Some(first) = self.expiries.first() {
            if first.0 > now {
                break;
            }
            if let Some((_, field)) = self.expiries.pop_first() {
                self.remove(&field);
            }
        }
    }

    fn remove(&mut self, field: &str) -> Option<Entry> {
        let entry = self.entries.remove(field)?;
        self.bytes -= size(field, &entry.value);
        if let Some(at) = entry.expires {
            self.expiries.remove(&(at, field.to_owned()));
        }
        Some(entry)
    }

    fn put(
        &mut self,
        quota: &Quota,
        field: String,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        let old = self.entries.get(&field).map(|e| size(&field, &e.value));
        let new = size(&field, &value);
        if old.is_none() && self.entries.len() as u64 >= quota.max_keys {
            return Err(quota.keys_error());
        }
        let bytes = self.bytes - old.unwrap_or(0) + new;
        // A write that does not grow the area is always allowed, so a full area can shrink.
        if bytes > quota.max_bytes && new > old.unwrap_or(0) {
            return Err(quota.bytes_error());
        }
        self.remove(&field);
        let expires = ttl.map(|t| Instant::now() + t);
        if let Some(at) = expires {
            self.expiries.insert((at, field.clone()));
        }
        self.bytes += new;
        self.entries.insert(field, Entry { value, expires });
        Ok(())
    }
}

impl Memory {
    pub(super) fn new(quota: Quota) -> Self {
        Self {
            areas: Mutex::new(HashMap::new()),
            quota,
        }
    }

    /// The namespace's area, expired entries dropped.
    fn area(&self, ns: &Arc<str>) -> Arc<Mutex<Area>> {
        let area = self.areas.lock().entry(ns.clone()).or_default().clone();
        area.lock().purge(Instant::now());
        area
    }

    pub(super) fn get(&self, space: &Space, key: &str) -> Option<Vec<u8>> {
        let area = self.area(&space.ns);
        let area = area.lock();
        area.entries.get(&space.field(key)).map(|e| e.value.clone())
    }

    pub(super) fn set(
        &self,
        space: &Space,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        let area = self.area(&space.ns);
        let mut area = area.lock();
        area.put(&self.quota, space.field(key), value.to_vec(), ttl)
    }

    pub(super) fn delete(&self, space: &Space, key: &str) {
        self.area(&space.ns).lock().remove(&space.field(key));
    }

    pub(super) fn list(&self, space: &Space, prefix: &str, cursor: Option<&str>) -> Page {
        let area = self.area(&space.ns);
        let area = area.lock();
        let start = space.field(prefix);
        let from = match cursor {
            Some(after) => Bound::Excluded(space.field(after)),
            None => Bound::Included(start.clone()),
        };
        let strip = space.prefix.len();
        let mut keys: Vec<String> = area
            .entries
            .range((from, Bound::Unbounded))
            .map(|(field, _)| field)
            .take_while(|field| field.starts_with(&start))
            .take(LIST_PAGE + 1)
            .map(|field| field[strip..].to_owned())
            .collect();
        let more = keys.len() > LIST_PAGE;
        keys.truncate(LIST_PAGE);
        let next = more.then(|| keys.last().cloned()).flatten();
        (keys, next)
    }

    pub(super) fn increment(&self, space: &Space, key: &str, delta: i64) -> Result<i64, KvError> {
        let area = self.area(&space.ns);
        let mut area = area.lock();
        let field = space.field(key);
        let (current, expires) = match area.entries.get(&field) {
            Some(e) => (parse_counter(&e.value)?, e.expires),
            None => (0, None),
        };
        let sum = current
            .checked_add(delta)
            .ok_or_else(|| KvError::Invalid("the counter would overflow".into()))?;
        let ttl = expires.map(|at| {
            at.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        });
        area.put(&self.quota, field, sum.to_string().into_bytes(), ttl)?;
        Ok(sum)
    }

    pub(super) fn swap(
        &self,
        space: &Space,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Result<(), Option<Vec<u8>>>, KvError> {
        let area = self.area(&space.ns);
        let mut area = area.lock();
        let field = space.field(key);
        let current = area.entries.get(&field).map(|e| e.value.as_slice());
        if current != expected {
            return Ok(Err(current.map(<[u8]>::to_vec)));
        }
        area.put(&self.quota, field, value.to_vec(), None)?;
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max_keys: u64, max_bytes: u64) -> Memory {
        Memory::new(Quota {
            max_keys,
            max_bytes,
        })
    }

    fn space(tenant: Option<&str>) -> Space {
        Space::new(Arc::from("p"), tenant, "default")
    }

    #[test]
    fn tenants_are_apart_and_quotas_hold() {
        let m = store(2, 1 << 20);
        let (a, b) = (space(Some("a")), space(Some("b")));
        m.set(&a, "k", b"1", None).unwrap();
        assert_eq!(m.get(&b, "k"), None);
        m.set(&b, "k", b"2", None).unwrap();
        assert_eq!(m.get(&a, "k").unwrap(), b"1");
        // Overwriting is not a new key; a third key is refused.
        m.set(&a, "k", b"3", None).unwrap();
        let e = m.set(&a, "other", b"x", None).unwrap_err().to_string();
        assert!(e.contains("state_max_keys"), "{e}");
        m.delete(&a, "k");
        m.set(&a, "other", b"x", None).unwrap();
    }

    #[test]
    fn bytes_quota_refuses_growth_but_allows_shrinking() {
        let m = store(100, 40);
        let s = space(None);
        m.set(&s, "k", &[0; 20], None).unwrap();
        let e = m.set(&s, "k", &[0; 40], None).unwrap_err().to_string();
        assert!(e.contains("state_max_bytes"), "{e}");
        m.set(&s, "k", &[0; 5], None).unwrap();
    }

    #[test]
    fn ttl_expires_and_frees_the_quota() {
        let m = store(1, 1 << 20);
        let s = space(None);
        m.set(&s, "k", b"v", Some(Duration::from_millis(1)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(m.get(&s, "k"), None);
        m.set(&s, "j", b"v", None).unwrap();
    }

    #[test]
    fn listing_pages_by_prefix() {
        let m = store(10_000, 1 << 30);
        let s = space(Some("t"));
        for i in 0..(LIST_PAGE + 5) {
            m.set(&s, &format!("room:{i:05}"), b"", None).unwrap();
        }
        m.set(&s, "roomz", b"", None).unwrap();
        m.set(&space(Some("u")), "room:x", b"", None).unwrap();
        let (first, cursor) = m.list(&s, "room:", None);
        assert_eq!(first.len(), LIST_PAGE);
        assert_eq!(first[0], "room:00000");
        let (rest, end) = m.list(&s, "room:", cursor.as_deref());
        assert_eq!(rest.len(), 5);
        assert_eq!(end, None);
    }

    #[test]
    fn increment_and_swap() {
        let m = store(10, 1 << 20);
        let s = space(None);
        assert_eq!(m.increment(&s, "n", 2).unwrap(), 2);
        assert_eq!(m.increment(&s, "n", -5).unwrap(), -3);
        m.set(&s, "x", b"abc", None).unwrap();
        assert!(m.increment(&s, "x", 1).is_err());
        assert_eq!(
            m.swap(&s, "x", Some(b"zzz"), b"new").unwrap(),
            Err(Some(b"abc".to_vec()))
        );
        assert_eq!(m.swap(&s, "x", Some(b"abc"), b"new").unwrap(), Ok(()));
        assert_eq!(m.swap(&s, "y", None, b"1").unwrap(), Ok(()));
    }
}
