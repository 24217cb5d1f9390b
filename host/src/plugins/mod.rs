//! Listener plugins: WebAssembly components loaded from a folder, routed by message type,
//! hot-reloaded, and run in a sandbox with time and memory limits.
//!
//! - [`bindings`]: generated from `guest-sdk/wit` (the contract).
//! - [`engine`]: the shared engine and the epoch ticker behind call deadlines.
//! - [`runtime`]: one `Store` per call, limits, fault reports.
//! - [`state`] / [`imports`]: what a call's store holds; the host side of the imports.
//! - [`loaded`]: one loaded plugin version, its validation and counters.
//! - [`cache`]: compiled code on disk.
//! - [`sidecar`]: the operator's `NAME.toml` next to `NAME.wasm`.
//! - [`routes`]: the route table, swapped atomically on reload.
//! - [`watcher`]: file changes to reloads.

pub mod bindings;
pub mod cache;
pub mod engine;
mod imports;
pub mod loaded;
pub mod routes;
pub mod runtime;
pub mod sidecar;
pub mod state;
mod watcher;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use futures_util::{FutureExt, future::BoxFuture};
use parking_lot::Mutex;
use serde_json::{json, value::RawValue};

use self::{
    cache::CodeCache,
    loaded::{LoadContext, LoadedPlugin, Stats},
    routes::RouteTable,
    runtime::Runtime,
};
use crate::{
    config::PluginsConfig,
    delivery::Hub,
    dispatch::{DispatchError, Dispatcher},
    sessions::Session,
};

/// A file that failed to load; its previous version (if any) keeps serving.
#[derive(Debug, Clone)]
struct Failure {
    error: String,
    at: SystemTime,
}

/// Loads, reloads and runs the plugins of one folder.
pub struct PluginHost {
    runtime: Arc<Runtime>,
    config: PluginsConfig,
    dir: PathBuf,
    hub: Arc<Hub>,
    cache: Option<CodeCache>,
    routes: arc_swap::ArcSwap<RouteTable>,
    /// Files whose latest version failed to load, by key.
    failures: Mutex<BTreeMap<String, Failure>>,
    /// Counters by key, kept across reloads.
    stats: Mutex<HashMap<String, Arc<Stats>>>,
    /// Reloads run one at a time, so two changes cannot race on the route table.
    reload_lock: tokio::sync::Mutex<()>,
    ready: AtomicBool,
    /// Set by `stop`: background rescans end.
    stopped: AtomicBool,
    watcher: Mutex<Option<watcher::Watcher>>,
}

impl PluginHost {
    /// Loads every `*.wasm` in `config.dir` and, if `config.watch`, starts watching it.
    /// Files that fail to load are reported and skipped; the host serves the rest.
    pub async fn start(config: &PluginsConfig, hub: Arc<Hub>) -> anyhow::Result<Arc<Self>> {
        let runtime = Arc::new(Runtime::new(config)?);
        let dir = config.dir.clone();
        if !dir.exists() {
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("creating plugins dir {}: {e}", dir.display()))?;
        }
        let cache_dir = config
            .cache_dir
            .clone()
            .unwrap_or_else(|| dir.join(".cache"));
        let cache = Some(CodeCache::new(cache_dir, &runtime.engine));
        let host = Arc::new(Self {
            runtime,
            config: config.clone(),
            dir,
            hub,
            cache,
            routes: arc_swap::ArcSwap::from_pointee(RouteTable::default()),
            failures: Mutex::new(BTreeMap::new()),
            stats: Mutex::new(HashMap::new()),
            reload_lock: tokio::sync::Mutex::new(()),
            ready: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            watcher: Mutex::new(None),
        });
        if config.watch {
            let w = watcher::Watcher::start(
                &host.dir,
                config.watch_debounce_ms,
                Arc::downgrade(&host),
            )?;
            *host.watcher.lock() = Some(w);
        }
        host.reconcile().await;
        if config.watch && config.rescan_secs > 0 {
            spawn_rescan(
                Arc::downgrade(&host),
                Duration::from_secs(config.rescan_secs),
            );
        }
        host.ready.store(true, Ordering::Release);
        Ok(host)
    }

    /// Stops watching the folder.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.watcher.lock().take();
    }

    /// Brings every plugin in line with the folder: new, changed, deleted and renamed files.
    pub async fn reconcile(&self) {
        let mut keys: std::collections::BTreeSet<String> = match plugin_keys(&self.dir) {
            Ok(keys) => keys.into_iter().collect(),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list the plugins folder");
                return;
            }
        };
        keys.extend(self.routes.load().plugins.keys().cloned());
        keys.extend(self.failures.lock().keys().cloned());
        for key in keys {
            self.reload(&key).await;
        }
    }

    /// Brings plugin `key` in line with the folder: loads a new or changed `key.wasm`,
    /// unloads a deleted one. A version that fails to load never replaces a working one.
    pub async fn reload(&self, key: &str) {
        let _one_at_a_time = self.reload_lock.lock().await;
        let file = self.dir.join(format!("{key}.wasm"));
        if !file.exists() {
            self.failures.lock().remove(key);
            if let Some(old) = self.routes.load().plugins.get(key).cloned() {
                self.routes.store(Arc::new(self.routes.load().without(key)));
                tracing::info!(plugin = old.label(), file = %file.display(), "plugin unloaded: file removed");
                metrics::counter!("switchboard_plugin_reloads_total", "result" => "unloaded")
                    .increment(1);
            }
            return;
        }
        let current = self.routes.load().plugins.get(key).cloned();
        if let Some(current) = &current
            && unchanged(current, &self.dir, key)
        {
            // The folder holds the serving version again: an earlier failure no longer applies.
            self.failures.lock().remove(key);
            return;
        }
        let stats = self.stats.lock().entry(key.to_owned()).or_default().clone();
        let cx = LoadContext {
            runtime: &self.runtime,
            cache: self.cache.as_ref(),
            config: &self.config,
            hub: &self.hub,
        };
        let loaded = LoadedPlugin::load(&cx, &self.dir, key, stats).await;
        let result = loaded.and_then(|plugin| {
            let plugin = Arc::new(plugin);
            let table = self.routes.load().with(plugin.clone())?;
            self.routes.store(Arc::new(table));
            Ok(plugin)
        });
        match result {
            Ok(plugin) => {
                self.failures.lock().remove(key);
                tracing::info!(
                    plugin = plugin.label(),
                    types = ?plugin.info.message_types,
                    cached = plugin.from_cache,
                    replaced = current.is_some(),
                    "plugin loaded"
                );
                metrics::counter!("switchboard_plugin_reloads_total", "result" => "loaded")
                    .increment(1);
            }
            Err(e) => {
                let error = format!("{e:#}");
                tracing::error!(file = %file.display(), error = %error, kept_previous = current.is_some(), "plugin rejected");
                metrics::counter!("switchboard_plugin_reloads_total", "result" => "rejected")
                    .increment(1);
                self.failures.lock().insert(
                    key.to_owned(),
                    Failure {
                        error,
                        at: SystemTime::now(),
                    },
                );
            }
        }
    }
}

/// Reconciles the folder every `every`, a safety net for file events the OS did not deliver
/// (e.g. an overflowing inotify queue).
fn spawn_rescan(host: std::sync::Weak<PluginHost>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            let Some(host) = host.upgrade() else { return };
            if host.stopped.load(Ordering::Acquire) {
                return;
            }
            host.reconcile().await;
        }
    });
}

/// Whether `current` is what the folder holds now (same bytes, same sidecar). The file's size
/// and modification time are compared first, so an unchanged folder is not re-hashed.
fn unchanged(current: &LoadedPlugin, dir: &Path, key: &str) -> bool {
    let file = dir.join(format!("{key}.wasm"));
    let sidecar = sidecar::Sidecar::load(&dir.join(format!("{key}.toml")));
    if !sidecar.is_ok_and(|s| s == current.sidecar) {
        return false;
    }
    if loaded::FileStamp::of(&file).is_some_and(|stamp| stamp == current.stamp) {
        return true;
    }
    std::fs::read(&file).is_ok_and(|bytes| loaded::content_hash(&bytes) == current.hash)
}

/// Stems of the `*.wasm` files in `dir`, sorted.
fn plugin_keys(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut keys: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (path.extension()? == "wasm").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    keys.sort();
    Ok(keys)
}

impl Dispatcher for PluginHost {
    fn dispatch(
        &self,
        from: Arc<Session>,
        msg_type: String,
        content: Box<RawValue>,
    ) -> BoxFuture<'static, Result<(), DispatchError>> {
        let plugin = self.routes.load().by_type.get(&msg_type).cloned();
        let runtime = self.runtime.clone();
        async move {
            let Some(plugin) = plugin else {
                return Err(DispatchError::UnknownType(msg_type));
            };
            plugin
                .on_message(&runtime, &from, &msg_type, content.get())
                .await
        }
        .boxed()
    }

    fn connected(&self, session: Arc<Session>) -> BoxFuture<'static, ()> {
        self.lifecycle(session, true)
    }

    fn disconnected(&self, session: Arc<Session>) -> BoxFuture<'static, ()> {
        self.lifecycle(session, false)
    }

    fn status(&self) -> serde_json::Value {
        let routes = self.routes.load();
        let plugins: Vec<_> = routes.plugins.values().map(|p| p.status()).collect();
        let failed: Vec<_> = self
            .failures
            .lock()
            .iter()
            .map(|(key, f)| {
                json!({
                    "file": self.dir.join(format!("{key}.wasm")).display().to_string(),
                    "error": f.error,
                    "at": humantime::format_rfc3339_seconds(f.at).to_string(),
                    "serving_previous_version": routes.plugins.contains_key(key),
                })
            })
            .collect();
        json!({ "plugins": plugins, "failed": failed })
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

impl PluginHost {
    fn lifecycle(&self, session: Arc<Session>, connected: bool) -> BoxFuture<'static, ()> {
        let listeners = self.routes.load().lifecycle.clone();
        if listeners.is_empty() {
            return futures_util::future::ready(()).boxed();
        }
        let runtime = self.runtime.clone();
        async move {
            for plugin in listeners.iter() {
                plugin.on_lifecycle(&runtime, &session, connected).await;
            }
        }
        .boxed()
    }
}
