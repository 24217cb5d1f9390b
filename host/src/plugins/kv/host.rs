//! The host side of `wasi:keyvalue` (store, atomics, batch) and `switchboard:plugin/state`.
//!
//! A bucket handle holds only the bucket's name: every operation is scoped to the tenant of
//! the call in progress, so a handle kept across calls by a reused instance cannot reach the
//! entries of the tenant it was opened for. Every failure is an `error` value, never a trap.

use std::time::Duration;

use wasmtime::component::Resource;

use super::{
    KvError, Space, StateStore, bucket_name,
    handle::{Bucket, Cas},
};
use crate::plugins::{
    bindings::v0_2::{
        switchboard::plugin::state,
        wasi::keyvalue::{atomics, batch, store},
    },
    state::CallState,
};

fn other(e: impl std::fmt::Display) -> store::Error {
    store::Error::Other(e.to_string())
}

impl CallState {
    fn space(&self, bucket: &str) -> Space {
        Space::new(self.env.namespace.clone(), self.tenant.as_deref(), bucket)
    }

    fn bucket_space(&self, bucket: &Resource<Bucket>) -> Result<Space, store::Error> {
        let name = &self.table.get(bucket).map_err(other)?.name;
        Ok(self.space(name))
    }

    fn store(&self) -> std::sync::Arc<StateStore> {
        self.env.state.clone()
    }

    /// Counts one operation (and its error, if any) and the bytes it moved.
    fn count<T>(
        &self,
        op: &'static str,
        bytes: usize,
        result: Result<T, KvError>,
    ) -> Result<T, store::Error> {
        let plugin = self.env.name.clone();
        metrics::counter!("switchboard_plugin_kv_operations_total", "plugin" => plugin.clone(), "op" => op)
            .increment(1);
        if bytes > 0 {
            metrics::counter!("switchboard_plugin_kv_bytes_total", "plugin" => plugin.clone())
                .increment(bytes as u64);
        }
        result.map_err(|e| {
            metrics::counter!("switchboard_plugin_kv_errors_total", "plugin" => plugin)
                .increment(1);
            other(e)
        })
    }
}

impl store::Host for CallState {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, store::Error> {
        let name = bucket_name(&identifier).map_err(other)?.to_owned();
        self.table.push(Bucket { name }).map_err(other)
    }
}

impl store::HostBucket for CallState {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, store::Error> {
        let space = self.bucket_space(&bucket)?;
        let result = self.store().get(&space, &key).await;
        let bytes = result
            .as_ref()
            .ok()
            .and_then(Option::as_ref)
            .map_or(0, Vec::len);
        self.count("get", bytes, result)
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), store::Error> {
        let space = self.bucket_space(&bucket)?;
        let result = self.store().set(&space, &key, &value, None).await;
        self.count("set", value.len(), result)
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), store::Error> {
        let space = self.bucket_space(&bucket)?;
        let result = self.store().delete(&space, &key).await;
        self.count("delete", 0, result)
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<bool, store::Error> {
        let space = self.bucket_space(&bucket)?;
        let result = self.store().exists(&space, &key).await;
        self.count("exists", 0, result)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> Result<store::KeyResponse, store::Error> {
        let space = self.bucket_space(&bucket)?;
        let result = self.store().list(&space, "", cursor.as_deref()).await;
        let (keys, cursor) = self.count("list", 0, result)?;
        Ok(store::KeyResponse { keys, cursor })
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for CallState {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> Result<i64, store::Error> {
        let space = self.bucket_space(&bucket)?;
        let result = self.store().increment(&space, &key, delta).await;
        self.count("increment", 0, result)
    }

    async fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> Result<(), atomics::CasError> {
        let cas = self
            .table
            .delete(cas)
            .map_err(|e| atomics::CasError::StoreError(other(e)))?;
        let space = self.space(&cas.bucket);
        let result = self
            .store()
            .swap(&space, &cas.key, cas.seen.as_deref(), &value)
            .await;
        match self.count("swap", value.len(), result) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(now)) => {
                let retry = Cas {
                    bucket: cas.bucket,
                    key: cas.key,
                    seen: now,
                };
                match self.table.push(retry) {
                    Ok(handle) => Err(atomics::CasError::CasFailed(handle)),
                    Err(e) => Err(atomics::CasError::StoreError(other(e))),
                }
            }
            Err(e) => Err(atomics::CasError::StoreError(e)),
        }
    }
}

impl atomics::HostCas for CallState {
    async fn new(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Resource<Cas>, store::Error> {
        let space = self.bucket_space(&bucket)?;
        let result = self.store().get(&space, &key).await;
        let seen = self.count("get", 0, result)?;
        let bucket = self.table.get(&bucket).map_err(other)?.name.clone();
        self.table.push(Cas { bucket, key, seen }).map_err(other)
    }

    async fn current(&mut self, cas: Resource<Cas>) -> Result<Option<Vec<u8>>, store::Error> {
        Ok(self.table.get(&cas).map_err(other)?.seen.clone())
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for CallState {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, store::Error> {
        let space = self.bucket_space(&bucket)?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let result = self.store().get(&space, &key).await;
            let bytes = result
                .as_ref()
                .ok()
                .and_then(Option::as_ref)
                .map_or(0, Vec::len);
            let value = self.count("get", bytes, result)?;
            out.push(value.map(|v| (key, v)));
        }
        Ok(out)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), store::Error> {
        let space = self.bucket_space(&bucket)?;
        for (key, value) in key_values {
            let result = self.store().set(&space, &key, &value, None).await;
            self.count("set", value.len(), result)?;
        }
        Ok(())
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<(), store::Error> {
        let space = self.bucket_space(&bucket)?;
        for key in keys {
            let result = self.store().delete(&space, &key).await;
            self.count("delete", 0, result)?;
        }
        Ok(())
    }
}

impl state::Host for CallState {
    async fn set_with_ttl(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<(), store::Error> {
        let space = self.bucket_space(&bucket)?;
        let ttl = Some(Duration::from_millis(ttl_ms));
        let result = self.store().set(&space, &key, &value, ttl).await;
        self.count("set", value.len(), result)
    }

    async fn list_prefix(
        &mut self,
        bucket: Resource<Bucket>,
        prefix: String,
        cursor: Option<String>,
    ) -> Result<store::KeyResponse, store::Error> {
        let space = self.bucket_space(&bucket)?;
        let result = self.store().list(&space, &prefix, cursor.as_deref()).await;
        let (keys, cursor) = self.count("list", 0, result)?;
        Ok(store::KeyResponse { keys, cursor })
    }
}
