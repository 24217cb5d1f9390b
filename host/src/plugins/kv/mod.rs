//! Key-value state for plugins: `wasi:keyvalue` (store, atomics, batch) and our
//! `switchboard:plugin/state` (TTL, listing by prefix), over one of two backends.
//!
//! - `memory`: in this process (the `local` and `nats` brokers); lost on restart.
//! - `redis`: in the cluster's Redis (the `redis` broker), shared by every node; each
//!   operation is one Lua script, so quotas and expiry are applied atomically.
//! - `host`: the WIT imports on a call's store, turning every failure into an error value;
//!   [`handle`]: the bucket and compare-and-swap handles they give out.
//!
//! Every entry lives in a `Space`: the plugin's namespace (its name), the tenant of the
//! session being handled, and the bucket the plugin opened. A plugin cannot name another
//! plugin's or another tenant's entries. Quotas (`[plugins] state_max_keys`,
//! `state_max_bytes`) count every entry of a namespace, all tenants and buckets together.

pub mod handle;
mod host;
mod memory;
mod redis;

use std::{sync::Arc, time::Duration};

use crate::config::{ClusterConfig, PluginsConfig};

/// Longest key a plugin may use, in bytes.
pub(crate) const MAX_KEY_BYTES: usize = 1024;
/// Longest bucket name, in bytes (`A-Z a-z 0-9 _ . -`; empty opens `default`).
pub(crate) const MAX_BUCKET_BYTES: usize = 64;
/// Keys returned by one `list-keys` or `list-prefix` page.
pub(crate) const LIST_PAGE: usize = 1000;

/// Why an operation failed. Shown to the plugin as `error::other(text)`.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum KvError {
    /// The namespace would exceed a quota.
    #[error("state quota exceeded: {0}")]
    Quota(String),
    /// The request itself is wrong (key too long, not a number to increment, ...).
    #[error("{0}")]
    Invalid(String),
    /// The backend cannot be reached or failed.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
}

/// How much one namespace may hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quota {
    /// Entries, every tenant and bucket together.
    pub max_keys: u64,
    /// Bytes of keys (with their scope) and values together.
    pub max_bytes: u64,
}

impl Quota {
    fn keys_error(&self) -> KvError {
        KvError::Quota(format!(
            "at most {} keys per plugin (plugins.state_max_keys)",
            self.max_keys
        ))
    }

    fn bytes_error(&self) -> KvError {
        KvError::Quota(format!(
            "at most {} bytes per plugin (plugins.state_max_bytes)",
            self.max_bytes
        ))
    }
}

/// Where a bucket's entries live: namespace, tenant and bucket.
#[derive(Debug, Clone)]
pub(crate) struct Space {
    /// The plugin's namespace (its name).
    pub ns: Arc<str>,
    /// What every stored key of this space starts with: the tenant (length-prefixed, so no
    /// tenant id can imitate another) and the bucket name, each followed by `\x1f`.
    prefix: String,
}

impl Space {
    /// The space of bucket `bucket` for tenant `tenant` of namespace `ns`.
    pub(crate) fn new(ns: Arc<str>, tenant: Option<&str>, bucket: &str) -> Self {
        let tenant = match tenant {
            None => "-".to_owned(),
            Some(t) => format!("{}:{t}", t.len()),
        };
        Self {
            ns,
            prefix: format!("{tenant}\x1f{bucket}\x1f"),
        }
    }

    /// The stored name of `key`.
    fn field(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

/// Checks a bucket name: empty means `default`.
pub(crate) fn bucket_name(identifier: &str) -> Result<&str, KvError> {
    if identifier.is_empty() {
        return Ok("default");
    }
    let ok = identifier.len() <= MAX_BUCKET_BYTES
        && identifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(identifier)
    } else {
        Err(KvError::Invalid(format!(
            "bucket names are 1 to {MAX_BUCKET_BYTES} characters from A-Z a-z 0-9 _ . -"
        )))
    }
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(KvError::Invalid(format!(
            "keys are 1 to {MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A page of keys and where the next one starts.
pub(crate) type Page = (Vec<String>, Option<String>);

/// The state backend every plugin of this host uses.
#[derive(Debug)]
pub struct StateStore {
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    /// In this process.
    Memory(memory::Memory),
    /// In Redis, shared by the cluster (boxed: it holds a connection and scripts).
    Redis(Box<redis::RedisState>),
}

impl StateStore {
    /// An in-memory store with the quotas of `config`.
    pub fn memory(config: &PluginsConfig) -> Self {
        Self {
            backend: Backend::Memory(memory::Memory::new(quota(config))),
        }
    }

    /// The store for a host: Redis when the cluster broker is Redis, memory otherwise.
    pub fn for_host(plugins: &PluginsConfig, cluster: &ClusterConfig) -> anyhow::Result<Self> {
        use crate::config::BrokerKind;
        Ok(match cluster.broker {
            BrokerKind::Redis => Self {
                backend: Backend::Redis(Box::new(redis::RedisState::new(
                    &cluster.redis_url,
                    &cluster.name,
                    quota(plugins),
                    Duration::from_millis(plugins.state_timeout_ms),
                )?)),
            },
            BrokerKind::Local | BrokerKind::Nats | BrokerKind::Rabbitmq => Self::memory(plugins),
        })
    }

    /// `redis` or `memory`, for logs.
    pub(crate) fn name(&self) -> &'static str {
        match &self.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        }
    }

    pub(crate) async fn get(&self, space: &Space, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key)?;
        match &self.backend {
            Backend::Memory(m) => Ok(m.get(space, key)),
            Backend::Redis(r) => r.get(space, key).await,
        }
    }

    pub(crate) async fn set(
        &self,
        space: &Space,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        check_key(key)?;
        if ttl.is_some_and(|t| t.is_zero()) {
            return Err(KvError::Invalid("a TTL is at least 1 ms".into()));
        }
        match &self.backend {
            Backend::Memory(m) => m.set(space, key, value, ttl),
            Backend::Redis(r) => r.set(space, key, value, ttl).await,
        }
    }

    pub(crate) async fn delete(&self, space: &Space, key: &str) -> Result<(), KvError> {
        check_key(key)?;
        match &self.backend {
            Backend::Memory(m) => {
                m.delete(space, key);
                Ok(())
            }
            Backend::Redis(r) => r.delete(space, key).await,
        }
    }

    pub(crate) async fn exists(&self, space: &Space, key: &str) -> Result<bool, KvError> {
        Ok(self.get(space, key).await?.is_some())
    }

    /// Keys starting with `prefix`, in byte order, after `cursor` (the last key of the
    /// previous page).
    pub(crate) async fn list(
        &self,
        space: &Space,
        prefix: &str,
        cursor: Option<&str>,
    ) -> Result<Page, KvError> {
        if prefix.len() > MAX_KEY_BYTES {
            return Err(KvError::Invalid(format!(
                "a prefix is at most {MAX_KEY_BYTES} bytes"
            )));
        }
        match &self.backend {
            Backend::Memory(m) => Ok(m.list(space, prefix, cursor)),
            Backend::Redis(r) => r.list(space, prefix, cursor).await,
        }
    }

    /// Adds `delta` to the decimal integer stored at `key` (absent: 0); returns the sum.
    pub(crate) async fn increment(
        &self,
        space: &Space,
        key: &str,
        delta: i64,
    ) -> Result<i64, KvError> {
        check_key(key)?;
        match &self.backend {
            Backend::Memory(m) => m.increment(space, key, delta),
            Backend::Redis(r) => r.increment(space, key, delta).await,
        }
    }

    /// Sets `key` to `value` if it still holds `expected` (`None`: absent). `Ok(Err(now))`
    /// when it did not, with what it holds now.
    pub(crate) async fn swap(
        &self,
        space: &Space,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Result<(), Option<Vec<u8>>>, KvError> {
        check_key(key)?;
        match &self.backend {
            Backend::Memory(m) => m.swap(space, key, expected, value),
            Backend::Redis(r) => r.swap(space, key, expected, value).await,
        }
    }
}

fn quota(config: &PluginsConfig) -> Quota {
    Quota {
        max_keys: config.state_max_keys,
        max_bytes: config.state_max_bytes,
    }
}

/// Parses a stored counter.
fn parse_counter(value: &[u8]) -> Result<i64, KvError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| KvError::Invalid("the value is not a decimal integer".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_of_different_tenants_never_share_a_prefix() {
        let ns: Arc<str> = Arc::from("p");
        let a = Space::new(ns.clone(), Some("a\x1fdefault\x1fk"), "default");
        let b = Space::new(ns.clone(), Some("a"), "default");
        let none = Space::new(ns, None, "default");
        assert!(!a.field("x").starts_with(&b.prefix));
        assert!(!b.field("x").starts_with(&none.prefix));
        assert_ne!(b.prefix, none.prefix);
    }

    #[test]
    fn bucket_names_are_checked() {
        assert_eq!(bucket_name("").unwrap(), "default");
        assert_eq!(bucket_name("rooms.v1").unwrap(), "rooms.v1");
        assert!(bucket_name("a/b").is_err());
        assert!(bucket_name(&"x".repeat(65)).is_err());
    }
}
