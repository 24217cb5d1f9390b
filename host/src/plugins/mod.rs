//! Listener plugins: WebAssembly components loaded from a folder, routed by message type,
//! hot-reloaded, and run in a sandbox with time and memory limits.
//!
//! - `bindings`: generated from `guest-sdk/wit` (every served contract version);
//!   `compat`: older versions adapted to the current one.
//! - `engine`: the shared engine and the epoch ticker behind call deadlines.
//! - [`runtime`]: one `Store` per call, limits, fault reports.
//! - `state` / `imports`: what a call's store holds; the host side of the imports.
//! - `kv`: key-value state (`wasi:keyvalue` and `state`) in memory or Redis.
//! - `outbound_http`: `wasi:http/outgoing-handler`, limited to the sidecar's `allowed_hosts`.
//! - [`loaded`]: one loaded plugin version, its validation and counters.
//! - [`cache`]: compiled code on disk.
//! - [`sidecar`]: the operator's `NAME.toml` next to `NAME.wasm`.
//! - `routes`: the route table, swapped atomically on reload.
//! - `watcher`: file changes to reloads.

pub(crate) mod bindings;
pub mod cache;
pub(crate) mod compat;
pub(crate) mod engine;
pub(crate) mod escape;
mod imports;
pub mod kv;
pub(crate) mod limiter;
pub mod loaded;
pub(crate) mod outbound_http;
pub(crate) mod routes;
pub mod runtime;
pub mod sidecar;
pub(crate) mod state;
pub(crate) mod stderr;
mod watcher;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use futures_util::{FutureExt, StreamExt, future::BoxFuture};
use parking_lot::Mutex;
use serde_json::value::RawValue;
use tokio::sync::OwnedMutexGuard;

use self::{
    cache::CodeCache,
    escape::show_path,
    loaded::{FileStamp, LoadContext, LoadedPlugin, Stats},
    routes::RouteTable,
    runtime::Runtime,
};
use crate::{
    config::PluginsConfig,
    delivery::Hub,
    dispatch::{DispatchError, Dispatcher},
    sessions::Session,
    status::{FailedPlugin, PluginsStatus},
};

/// Files loaded at the same time by one reconcile (compiling uses every core already; this
/// lets one slow file, e.g. a `describe` that waits until its deadline, not hold up the rest).
const PARALLEL_LOADS: usize = 4;

/// What the folder holds for one plugin: the stamps of `NAME.wasm` and `NAME.toml`. A file is
/// retried after a rejection only when these change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamps {
    wasm: Option<FileStamp>,
    sidecar: Option<FileStamp>,
}

impl Stamps {
    fn of(dir: &Path, key: &str) -> Self {
        Self {
            wasm: FileStamp::of(&dir.join(format!("{key}.wasm"))),
            sidecar: FileStamp::of(&dir.join(format!("{key}.toml"))),
        }
    }
}

/// A file that failed to load; its previous version (if any) keeps serving.
#[derive(Debug, Clone)]
struct Failure {
    error: String,
    at: SystemTime,
    /// The files as they were when they failed: unchanged files are not retried.
    stamps: Stamps,
    /// For a rejection caused by the route table (a type another plugin claims): the table
    /// generation it was refused against; a changed table retries it.
    table_generation: Option<u64>,
}

/// Why `prepare` ended, for `commit` to apply.
enum Outcome {
    /// The file is gone: unload.
    Removed,
    /// The folder holds the serving version.
    Serving,
    /// The folder holds a rejected version that has not changed: not retried.
    StillRejected,
    /// A version that passed validation.
    Loaded(Box<LoadedPlugin>, Stamps),
    /// A version that did not.
    Rejected(String, Stamps),
}

/// One plugin's prepared change. Holds the plugin's load lock until it is applied.
struct Step {
    key: String,
    outcome: Outcome,
    _one_at_a_time: OwnedMutexGuard<()>,
}

/// Loads, reloads and runs the plugins of one folder.
pub(crate) struct PluginHost {
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
    /// One load at a time per plugin, so two changes to one file cannot race. Loads of
    /// different plugins run side by side: no lock is held across one plugin's guest code
    /// while another waits.
    load_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Route-table updates one at a time (read, modify, swap); never held across an await.
    swap: Mutex<()>,
    /// Bumped on every route-table change.
    generation: AtomicU64,
    ready: AtomicBool,
    /// Set by `stop`: background rescans end.
    stopped: AtomicBool,
    /// Cleared if the watcher or rescan task ends before `stop`: `/readyz` then reports the
    /// host not ready, since hot reload has stopped.
    background_alive: Arc<AtomicBool>,
    watcher: Mutex<Option<watcher::Watcher>>,
}

impl PluginHost {
    /// Loads every `*.wasm` in `config.dir` and, if `config.watch`, starts watching it.
    /// Files that fail to load are reported and skipped; the host serves the rest.
    pub(crate) async fn start(
        config: &PluginsConfig,
        hub: Arc<Hub>,
        state: kv::StateStore,
    ) -> anyhow::Result<Arc<Self>> {
        tracing::info!(store = state.name(), "plugin state");
        let runtime = Arc::new(Runtime::with_state(config, state)?);
        let dir = config.dir.clone();
        if !dir.exists() {
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("creating plugins dir {}: {e}", show_path(&dir)))?;
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
            load_locks: Mutex::new(HashMap::new()),
            swap: Mutex::new(()),
            generation: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            background_alive: Arc::new(AtomicBool::new(true)),
            watcher: Mutex::new(None),
        });
        if config.watch {
            let w = watcher::Watcher::start(
                &host.dir,
                config.watch_debounce_ms,
                Arc::downgrade(&host),
                Alive(host.background_alive.clone()),
            )?;
            *host.watcher.lock() = Some(w);
        }
        // Bounded: every load's guest code (`describe`) ends at its call deadline.
        host.reconcile().await;
        if config.watch && config.rescan_secs > 0 {
            spawn_rescan(
                Arc::downgrade(&host),
                Duration::from_secs(config.rescan_secs),
                Alive(host.background_alive.clone()),
            );
        }
        host.ready.store(true, Ordering::Release);
        Ok(host)
    }

    /// Stops watching the folder.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.watcher.lock().take();
    }

    /// Brings every plugin in line with the folder: new, changed, deleted and renamed files.
    /// Files load side by side, and each change applies as soon as its file is loaded: when
    /// two new files claim one type, the first loaded keeps it.
    pub(crate) async fn reconcile(&self) {
        let dir = self.dir.clone();
        let listed = tokio::task::spawn_blocking(move || plugin_keys(&dir)).await;
        let mut keys: BTreeSet<String> = match listed {
            Ok(Ok(keys)) => keys.into_iter().collect(),
            Ok(Err(e)) => {
                tracing::warn!(dir = %show_path(&self.dir), error = %e, "cannot list the plugins folder");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "listing the plugins folder failed");
                return;
            }
        };
        keys.extend(self.routes.load().plugins.keys().cloned());
        keys.extend(self.failures.lock().keys().cloned());
        let mut steps = futures_util::stream::iter(keys)
            .map(|key| self.prepare(key))
            .buffer_unordered(PARALLEL_LOADS);
        while let Some(step) = steps.next().await {
            self.commit(step);
        }
        drop(steps);
        // A file refused for a type another plugin claimed gets another try once the table
        // has changed (e.g. that plugin was removed in this same pass).
        let generation = self.generation.load(Ordering::Acquire);
        let stale: Vec<String> = self
            .failures
            .lock()
            .iter()
            .filter(|(_, f)| f.table_generation.is_some_and(|g| g != generation))
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            self.reload(&key).await;
        }
    }

    /// Brings plugin `key` in line with the folder: loads a new or changed `key.wasm`,
    /// unloads a deleted one. A version that fails to load never replaces a working one.
    pub(crate) async fn reload(&self, key: &str) {
        let step = self.prepare(key.to_owned()).await;
        self.commit(step);
    }

    /// Works out what changed for `key` and loads a new version if needed, without touching
    /// the route table. A panic while loading becomes a rejection, so no file can stop the
    /// tasks that reload the others.
    async fn prepare(&self, key: String) -> Step {
        let lock = self
            .load_locks
            .lock()
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = lock.lock_owned().await;
        let outcome = AssertUnwindSafe(self.outcome(&key))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                let what = panic_text(&*panic);
                Outcome::Rejected(
                    format!("internal error while loading: {what}"),
                    Stamps::of(&self.dir, &key),
                )
            });
        Step {
            key,
            outcome,
            _one_at_a_time: guard,
        }
    }

    async fn outcome(&self, key: &str) -> Outcome {
        let current = self.routes.load().plugins.get(key).cloned();
        let failure = self.failures.lock().get(key).cloned();
        let generation = self.generation.load(Ordering::Acquire);
        let (dir, owned_key, serving) = (self.dir.clone(), key.to_owned(), current);
        let max_bytes = self.config.max_plugin_bytes;
        // Metadata, the sidecar and maybe a hash of the file: blocking work.
        let probe = tokio::task::spawn_blocking(move || {
            let file = dir.join(format!("{owned_key}.wasm"));
            if std::fs::symlink_metadata(&file)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            {
                return None;
            }
            let stamps = Stamps::of(&dir, &owned_key);
            let same =
                serving.is_some_and(|current| unchanged(&current, &dir, &owned_key, max_bytes));
            Some((stamps, same))
        })
        .await;
        let (stamps, same_as_serving) = match probe {
            Ok(Some(probe)) => probe,
            Ok(None) => return Outcome::Removed,
            Err(e) => {
                return Outcome::Rejected(
                    format!("checking the file: {e}"),
                    Stamps::of(&self.dir, key),
                );
            }
        };
        if same_as_serving {
            return Outcome::Serving;
        }
        if let Some(failure) = failure
            && failure.stamps == stamps
            && failure.table_generation.is_none_or(|g| g == generation)
        {
            return Outcome::StillRejected;
        }
        let stats = self.stats.lock().entry(key.to_owned()).or_default().clone();
        let cx = LoadContext {
            runtime: &self.runtime,
            cache: self.cache.as_ref(),
            config: &self.config,
            hub: &self.hub,
        };
        match LoadedPlugin::load(&cx, &self.dir, key, stats).await {
            Ok(plugin) => Outcome::Loaded(Box::new(plugin), stamps),
            Err(e) => Outcome::Rejected(format!("{e:#}"), stamps),
        }
    }

    /// Applies a prepared change to the route table and the failure list, and reports it.
    fn commit(&self, step: Step) {
        let Step { key, outcome, .. } = step;
        let file = show_path(&self.dir.join(format!("{key}.wasm")));
        match outcome {
            Outcome::StillRejected => {}
            Outcome::Serving => {
                // The folder holds the serving version again: an earlier failure no longer
                // applies.
                self.failures.lock().remove(&key);
            }
            Outcome::Removed => {
                self.failures.lock().remove(&key);
                let _swap = self.swap.lock();
                if let Some(old) = self.routes.load().plugins.get(&key).cloned() {
                    self.routes
                        .store(Arc::new(self.routes.load().without(&key)));
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    tracing::info!(plugin = old.label(), file = %file, "plugin unloaded: file removed");
                    metrics::counter!("switchboard_plugin_reloads_total", "result" => "unloaded")
                        .increment(1);
                }
            }
            Outcome::Loaded(plugin, stamps) => {
                let plugin = Arc::new(*plugin);
                let swapped = {
                    let _swap = self.swap.lock();
                    let generation = self.generation.load(Ordering::Acquire);
                    let current = self.routes.load();
                    let replaced = current.plugins.contains_key(&key);
                    current
                        .with(plugin.clone())
                        .map(|table| {
                            self.routes.store(Arc::new(table));
                            self.generation.fetch_add(1, Ordering::AcqRel);
                            replaced
                        })
                        .map_err(|e| (e, generation))
                };
                match swapped {
                    Ok(replaced) => {
                        self.failures.lock().remove(&key);
                        tracing::info!(
                            plugin = plugin.label(),
                            types = ?plugin.info.message_types,
                            cached = plugin.from_cache,
                            replaced,
                            "plugin loaded"
                        );
                        metrics::counter!("switchboard_plugin_reloads_total", "result" => "loaded")
                            .increment(1);
                    }
                    Err((e, generation)) => {
                        self.reject(&key, &file, format!("{e:#}"), stamps, Some(generation))
                    }
                }
            }
            Outcome::Rejected(error, stamps) => self.reject(&key, &file, error, stamps, None),
        }
    }

    /// Records a rejection. It is logged and counted once per (file contents, reason): the
    /// same files failing the same way again (e.g. after a claimed type was freed and taken
    /// again) stay quiet.
    fn reject(
        &self,
        key: &str,
        file: &str,
        error: String,
        stamps: Stamps,
        table_generation: Option<u64>,
    ) {
        // One line, whatever the component parser or the file name put in it.
        let error = escape::escape_control(&error).into_owned();
        let kept_previous = self.routes.load().plugins.contains_key(key);
        let mut failures = self.failures.lock();
        let repeat = failures
            .get(key)
            .is_some_and(|f| f.stamps == stamps && f.error == error);
        if repeat {
            tracing::debug!(file = %file, error = %error, "plugin still rejected");
        } else {
            tracing::error!(file = %file, error = %error, kept_previous, "plugin rejected");
            metrics::counter!("switchboard_plugin_reloads_total", "result" => "rejected")
                .increment(1);
        }
        let at = failures
            .get(key)
            .filter(|_| repeat)
            .map_or_else(SystemTime::now, |f| f.at);
        failures.insert(
            key.to_owned(),
            Failure {
                error,
                at,
                stamps,
                table_generation,
            },
        );
    }
}

/// A panic payload as text.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// Clears the shared flag when dropped: a background task that ends (or unwinds) before `stop`
/// makes the host report not ready.
struct Alive(Arc<AtomicBool>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Reconciles the folder every `every`, a safety net for file events the OS did not deliver
/// (e.g. an overflowing inotify queue).
fn spawn_rescan(host: std::sync::Weak<PluginHost>, every: Duration, alive: Alive) {
    tokio::spawn(async move {
        let _alive = alive;
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
fn unchanged(current: &LoadedPlugin, dir: &Path, key: &str, max_bytes: u64) -> bool {
    let file = dir.join(format!("{key}.wasm"));
    let sidecar = sidecar::Sidecar::load(&dir.join(format!("{key}.toml")));
    if !sidecar.is_ok_and(|s| s == current.sidecar) {
        return false;
    }
    if FileStamp::of(&file).is_some_and(|stamp| stamp == current.stamp) {
        return true;
    }
    loaded::read_plugin(&file, max_bytes)
        .is_ok_and(|(bytes, _)| loaded::content_hash(&bytes) == current.hash)
}

/// Stems of the `*.wasm` files in `dir`, sorted. Hidden files (a leading `.`: editors and
/// copy tools write these while a file is in transit) and names that are not UTF-8 are left
/// out.
fn plugin_keys(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut keys: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (path.extension()? == "wasm").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .filter(|key| !key.starts_with('.'))
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

    fn status(&self) -> PluginsStatus {
        let routes = self.routes.load();
        let plugins = routes.plugins.values().map(|p| p.status()).collect();
        let failed = self
            .failures
            .lock()
            .iter()
            .map(|(key, f)| FailedPlugin {
                file: show_path(&self.dir.join(format!("{key}.wasm"))),
                error: f.error.clone(),
                at: humantime::format_rfc3339_seconds(f.at).to_string(),
                serving_previous_version: routes.plugins.contains_key(key),
            })
            .collect();
        PluginsStatus { plugins, failed }
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && (self.background_alive.load(Ordering::Acquire)
                || self.stopped.load(Ordering::Acquire))
    }
}

impl PluginHost {
    /// Tells every lifecycle listener about `session`, side by side, and waits for them at
    /// most the longest of their call timeouts: a transport awaits this before it greets the
    /// client, so a listener that waits cannot hold greetings longer. A call still running
    /// then finishes in the background, bounded by its own deadline.
    fn lifecycle(&self, session: Arc<Session>, connected: bool) -> BoxFuture<'static, ()> {
        let listeners = self.routes.load().lifecycle.clone();
        if listeners.is_empty() {
            return futures_util::future::ready(()).boxed();
        }
        let runtime = self.runtime.clone();
        let wait = listeners
            .iter()
            .map(|p| p.limits.call_timeout)
            .max()
            .unwrap_or_default();
        async move {
            let calls: Vec<_> = listeners
                .iter()
                .map(|plugin| {
                    let (plugin, runtime, session) =
                        (plugin.clone(), runtime.clone(), session.clone());
                    tokio::spawn(
                        async move { plugin.on_lifecycle(&runtime, &session, connected).await },
                    )
                })
                .collect();
            let _ = tokio::time::timeout(wait, futures_util::future::join_all(calls)).await;
        }
        .boxed()
    }
}
