//! Key-value state that outlives a call: `wasi:keyvalue` and `switchboard:plugin/state`,
//! with typed helpers.

use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

use crate::bindings::{
    switchboard::plugin::state as ext,
    wasi::keyvalue::{atomics, store},
};
use crate::{Error, Result};

/// One bucket of the plugin's key-value state.
///
/// The host scopes every operation to the plugin and to the tenant of the session being
/// handled: a key written while handling tenant A's message is not visible while handling
/// tenant B's, and no other plugin can read it. Entries outlive calls, instances, plugin
/// reloads and, with the Redis store, host restarts; with Redis every node of the cluster
/// sees the same entries.
///
/// Every method fails with [`Error::Other`] when the host refuses the operation (a quota is
/// reached, a key is too long, the store cannot be reached); none of them traps.
///
/// ```no_run
/// # use switchboard_guest::{State, Result};
/// # fn f() -> Result<()> {
/// let state = State::open("")?; // the default bucket
/// let visits = state.increment("visits", 1)?;
/// state.set_json("last", &serde_json::json!({ "visits": visits }))?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct State {
    bucket: store::Bucket,
}

fn store_error(e: store::Error) -> Error {
    match e {
        store::Error::NoSuchStore => Error::other("state: no such store"),
        store::Error::AccessDenied => Error::other("state: access denied"),
        store::Error::Other(m) => Error::other(format!("state: {m}")),
    }
}

impl State {
    /// Opens bucket `name` (1 to 64 characters from `A-Z a-z 0-9 _ . -`; empty: `default`).
    ///
    /// # Errors
    ///
    /// [`Error::Other`] for an invalid name.
    pub fn open(name: &str) -> Result<Self> {
        store::open(name)
            .map(|bucket| Self { bucket })
            .map_err(store_error)
    }

    /// The value of `key`, if set.
    ///
    /// # Errors
    ///
    /// [`Error::Other`] when the host refuses the operation.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.bucket.get(key).map_err(store_error)
    }

    /// The value of `key` parsed from JSON, if set.
    ///
    /// # Errors
    ///
    /// [`Error::Other`] when the host refuses the operation or the value does not parse.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::other(format!("state: {key} holds no valid value: {e}"))),
        }
    }

    /// Sets `key` to `value`, for good.
    ///
    /// # Errors
    ///
    /// [`Error::Other`] when the host refuses the operation (e.g. a quota is reached).
    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        self.bucket.set(key, value).map_err(store_error)
    }

    /// Sets `key` to `value` serialized as JSON.
    ///
    /// # Errors
    ///
    /// [`Error::Other`] when the host refuses the operation or `value` does not serialize.
    pub fn set_json<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::other(format!("state: cannot serialize {key}: {e}")))?;
        self.set(key, &bytes)
    }

    /// Sets `key` to `value`, to expire after `ttl` (at least a millisecond).
    ///
    /// # Errors
    ///
    /// [`Error::Other`] when the host refuses the operation.
    pub fn set_with_ttl(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        ext::set_with_ttl(&self.bucket, key, value, ttl_ms).map_err(store_error)
    }

    /// Removes `key`; removing an absent key is not an error.
    ///
    /// # Errors
    ///
    /// [`Error::Other`] when the host refuses the operation.
    pub fn delete(&self, key: &str) -> Result<()> {
        self.bucket.delete(key).map_err(store_error)
    }

    /// Whether `key` is set.
    ///
    /// # Errors
    ///
    /// [`Error::Other`] when the host refuses the operation.
    pub fn exists(&self, key: &str) -> Result<bool> {
        self.bucket.exists(key).map_err(store_error)
    }

    /// Adds `delta` to the decimal integer at `key` (absent: 0), atomically across calls
    /// and nodes; returns the sum.
    ///
    /// # Errors
    ///
    /// [`Error::Other`] when the value is not a decimal integer, or the host refuses.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        atomics::increment(&self.bucket, key, delta).map_err(store_error)
    }

    /// Every key starting with `prefix`, in byte order (all pages; at most `limit` keys).
    ///
    /// # Errors
    ///
    /// [`Error::Other`] when the host refuses the operation.
    pub fn keys_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page =
                ext::list_prefix(&self.bucket, prefix, cursor.as_deref()).map_err(store_error)?;
            keys.extend(page.keys);
            if keys.len() >= limit {
                keys.truncate(limit);
                return Ok(keys);
            }
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// The `wasi:keyvalue` bucket, for `batch` and compare-and-swap (`atomics::Cas`).
    pub fn bucket(&self) -> &store::Bucket {
        &self.bucket
    }
}
