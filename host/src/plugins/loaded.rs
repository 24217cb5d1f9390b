//! One loaded plugin version: loading and validating a file, and calling it under its limits
//! with counters and fault reports.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::{
    bindings::switchboard::plugin::types,
    cache::CodeCache,
    compat::Contract,
    escape::show_path,
    outbound_http::HttpGrant,
    runtime::{Fault, InstancePool, Runtime},
    sidecar::{Limits, Sidecar},
    state::PluginEnv,
};
use crate::{
    config::PluginsConfig,
    delivery::Hub,
    dispatch::DispatchError,
    envelope::MAX_TYPE_LEN,
    rate::TokenBucket,
    sessions::Session,
    status::{CallCounters, CapabilitiesStatus, LimitsStatus, PluginDescription, PluginStatus},
};

/// Counters of one plugin, kept across reloads of its file.
#[derive(Debug, Default)]
pub struct Stats {
    calls: std::sync::atomic::AtomicU64,
    errors: std::sync::atomic::AtomicU64,
    faults: std::sync::atomic::AtomicU64,
    /// Wall time of every message call together, in microseconds.
    call_micros: std::sync::atomic::AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Stats {
    /// Adds the wall time of one message call.
    fn time(&self, seconds: f64) {
        let micros = (seconds * 1e6) as u64;
        self.call_micros
            .fetch_add(micros, std::sync::atomic::Ordering::Relaxed);
    }

    fn record(&self, outcome: &Result<(), String>, fault: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        self.calls.fetch_add(1, Relaxed);
        if let Err(e) = outcome {
            if fault {
                self.faults.fetch_add(1, Relaxed);
            } else {
                self.errors.fetch_add(1, Relaxed);
            }
            *self.last_error.lock() = Some(e.clone());
        }
    }

    /// The counters now.
    pub(crate) fn counters(&self) -> CallCounters {
        use std::sync::atomic::Ordering::Relaxed;
        let calls = self.calls.load(Relaxed);
        CallCounters {
            calls,
            mean_call_ms: match calls {
                0 => 0.0,
                n => self.call_micros.load(Relaxed) as f64 / n as f64 / 1000.0,
            },
            errors: self.errors.load(Relaxed),
            faults: self.faults.load(Relaxed),
            last_error: self.last_error.lock().clone(),
        }
    }
}

/// A plugin version that passed validation and can serve calls.
pub struct LoadedPlugin {
    /// File stem: `NAME` of `NAME.wasm`; identifies the plugin across versions.
    pub key: String,
    /// The component file.
    pub file: PathBuf,
    /// SHA-256 of the file, hex.
    pub hash: String,
    /// Size and modification time of the file when it was read.
    pub(crate) stamp: FileStamp,
    /// When this version was loaded.
    pub loaded_at: SystemTime,
    /// What the plugin said about itself.
    pub info: types::PluginInfo,
    /// The operator's grants and limits.
    pub sidecar: Sidecar,
    /// The limits in force.
    pub(crate) limits: Limits,
    /// Whether the compiled code came from the cache.
    pub from_cache: bool,
    pre: Contract,
    env: Arc<PluginEnv>,
    /// One permit per concurrent call.
    gate: Semaphore,
    /// Reused instances, when the sidecar asks for them (`[instances] reuse = true`).
    pool: Option<InstancePool>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("key", &self.key)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// Everything needed to load a plugin.
pub struct LoadContext<'a> {
    /// The engine and linker.
    pub runtime: &'a Arc<Runtime>,
    /// Compiled code cache, if enabled.
    pub cache: Option<&'a CodeCache>,
    /// Host-wide plugin settings.
    pub config: &'a PluginsConfig,
    /// Where sends go.
    pub hub: &'a Arc<Hub>,
}

impl std::fmt::Debug for LoadContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadContext")
            .field("hub", &self.hub)
            .finish_non_exhaustive()
    }
}

/// A file's size and modification time: a cheap "has it changed" check before hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    /// The stamp of `path`, if it can be read.
    pub(crate) fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

/// Reads a plugin file of at most `max_bytes`: a symbolic link or anything but a regular file
/// is refused. Returns the bytes and the stamp they were read under.
pub(crate) fn read_plugin(file: &Path, max_bytes: u64) -> anyhow::Result<(Vec<u8>, FileStamp)> {
    let shown = show_path(file);
    let meta = std::fs::symlink_metadata(file).with_context(|| format!("reading {shown}"))?;
    if meta.file_type().is_symlink() {
        bail!("{shown} is a symbolic link: put a regular file in the plugins folder");
    }
    if !meta.is_file() {
        bail!("{shown} is not a regular file");
    }
    if meta.len() > max_bytes {
        bail!(
            "{shown} is {} bytes; the limit is {max_bytes} (plugins.max_plugin_bytes)",
            meta.len()
        );
    }
    let stamp = FileStamp::of(file);
    let mut bytes = Vec::new();
    // `take` bounds the read even if the file grows after the check.
    std::fs::File::open(file)
        .and_then(|f| f.take(max_bytes + 1).read_to_end(&mut bytes))
        .with_context(|| format!("reading {shown}"))?;
    if bytes.len() as u64 > max_bytes {
        bail!("{shown} grew past the limit of {max_bytes} bytes while it was read");
    }
    // A file rewritten while it was read is picked up by the next change event.
    let stamp = stamp
        .filter(|s| Some(*s) == FileStamp::of(file))
        .unwrap_or(FileStamp {
            len: u64::MAX,
            modified: None,
        });
    Ok((bytes, stamp))
}

/// SHA-256 of `bytes`, hex.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl LoadedPlugin {
    /// Loads `dir/key.wasm` with its sidecar, compiles (or takes from the cache), links and
    /// validates it by calling `describe`.
    pub async fn load(
        cx: &LoadContext<'_>,
        dir: &Path,
        key: &str,
        stats: Arc<Stats>,
    ) -> anyhow::Result<Self> {
        let file = dir.join(format!("{key}.wasm"));
        let sidecar_file = dir.join(format!("{key}.toml"));
        let max_bytes = cx.config.max_plugin_bytes;
        let read_file = file.clone();
        // Reading (up to hundreds of MiB), hashing and parsing are blocking work: keep them off
        // the async workers.
        let (bytes, stamp, hash, sidecar) = tokio::task::spawn_blocking(move || {
            let (bytes, stamp) = read_plugin(&read_file, max_bytes)?;
            let sidecar = Sidecar::load(&sidecar_file)?;
            let hash = content_hash(&bytes);
            anyhow::Ok((bytes, stamp, hash, sidecar))
        })
        .await
        .context("reading task")??;
        let limits = sidecar.limits(cx.config);
        let engine = cx.runtime.engine.clone();
        let cache = cx.cache.cloned();
        let hash_for_compile = hash.clone();
        let shown = show_path(&file);
        let size = bytes.len();
        let started = Instant::now();
        // Compiling is CPU-heavy: keep it off the async workers.
        let (component, from_cache) = tokio::task::spawn_blocking(move || match cache {
            Some(cache) => cache.load_or_compile(&engine, &hash_for_compile, &bytes, &shown),
            None => {
                tracing::info!(file = %shown, bytes = bytes.len(), "compiling plugin");
                super::cache::compile(&engine, &bytes).map(|c| (c, false))
            }
        })
        .await
        .context("compile task")??;
        if !from_cache {
            tracing::info!(
                file = %show_path(&file),
                bytes = size,
                seconds = started.elapsed().as_secs_f64(),
                "plugin compiled"
            );
        }
        let pre = cx.runtime.prepare(&component)?;
        let probe_env = env(cx, key, key.to_owned(), &sidecar, &limits)?;
        let info = cx
            .runtime
            .describe(&pre, &probe_env, &limits)
            .await
            .map_err(|f| match f.stderr {
                Some(stderr) => anyhow::anyhow!("describe {} (stderr: {stderr})", f.reason),
                None => anyhow::anyhow!("describe {}", f.reason),
            })?;
        validate(&info, &sidecar)?;
        let label = format!("{}@{}", info.name, info.version);
        let env = env(cx, &info.name, label, &sidecar, &limits)?;
        Ok(Self {
            key: key.to_owned(),
            file,
            hash,
            stamp,
            loaded_at: SystemTime::now(),
            info,
            limits,
            from_cache,
            gate: Semaphore::new(limits.max_concurrent_calls),
            pool: sidecar.instances.pool().map(InstancePool::new),
            sidecar,
            pre,
            env,
            stats,
        })
    }

    /// `name@version`.
    pub fn label(&self) -> &str {
        &self.env.label
    }

    /// Handles one message under the plugin's limits.
    pub async fn on_message(
        &self,
        runtime: &Runtime,
        from: &Session,
        msg_type: &str,
        content: &str,
    ) -> Result<(), DispatchError> {
        let _permit = self.permit().await?;
        let started = Instant::now();
        let info = session_info(from);
        let result = runtime
            .on_message(
                &self.pre,
                &self.env,
                &self.limits,
                self.pool.as_ref(),
                &info,
                from.reply_via(),
                msg_type,
                content,
            )
            .await;
        let elapsed = started.elapsed().as_secs_f64();
        self.stats.time(elapsed);
        let plugin = self.info.name.clone();
        metrics::histogram!("switchboard_plugin_call_seconds", "plugin" => plugin.clone())
            .record(elapsed);
        metrics::counter!("switchboard_plugin_calls_total", "plugin" => plugin.clone())
            .increment(1);
        match result {
            Ok(Ok(())) => {
                self.stats.record(&Ok(()), false);
                Ok(())
            }
            Ok(Err(e)) => {
                metrics::counter!("switchboard_plugin_errors_total", "plugin" => plugin)
                    .increment(1);
                let (err, text) = match e {
                    types::Error::InvalidContent(m) => {
                        (DispatchError::InvalidContent(m.clone()), m)
                    }
                    types::Error::Forbidden(m) => (DispatchError::Forbidden(m.clone()), m),
                    types::Error::Other(m) => (DispatchError::Listener(m.clone()), m),
                };
                self.stats
                    .record(&Err(format!("{msg_type}: {text}")), false);
                Err(err)
            }
            Err(fault) => Err(self.report_fault(msg_type, &fault)),
        }
    }

    /// Tells the plugin a session opened or closed. Faults are logged and counted.
    pub(crate) async fn on_lifecycle(&self, runtime: &Runtime, session: &Session, connected: bool) {
        let Ok(_permit) = self.permit().await else {
            tracing::warn!(
                plugin = self.label(),
                "lifecycle event skipped: plugin busy"
            );
            return;
        };
        let info = session_info(session);
        let result = runtime
            .on_lifecycle(
                &self.pre,
                &self.env,
                &self.limits,
                self.pool.as_ref(),
                &info,
                session.reply_via(),
                connected,
            )
            .await;
        let event = if connected {
            "on-connect"
        } else {
            "on-disconnect"
        };
        match result {
            Ok(()) => self.stats.record(&Ok(()), false),
            Err(fault) => {
                self.report_fault(event, &fault);
            }
        }
    }

    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, DispatchError> {
        match tokio::time::timeout(self.limits.call_timeout, self.gate.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                metrics::counter!("switchboard_plugin_busy_total", "plugin" => self.info.name.clone())
                    .increment(1);
                Err(DispatchError::Busy)
            }
        }
    }

    /// Logs and counts a fault. The operator's log and status get the guest's stderr (its
    /// panic message); the client gets the reason only.
    fn report_fault(&self, what: &str, fault: &Fault) -> DispatchError {
        let message = format!("plugin {} {} handling {what}", self.label(), fault.reason);
        let detailed = match &fault.stderr {
            Some(stderr) => format!("{message} (stderr: {stderr})"),
            None => message.clone(),
        };
        tracing::error!(plugin = %self.info.name, version = %self.info.version, msg_type = what, "{detailed}");
        metrics::counter!("switchboard_plugin_faults_total", "plugin" => self.info.name.clone())
            .increment(1);
        self.stats.record(&Err(detailed), true);
        DispatchError::Fault(message)
    }

    /// What the file and sidecar define, as `switchboard plugin check` prints it.
    pub(crate) fn description(&self) -> PluginDescription {
        PluginDescription {
            name: self.info.name.clone(),
            version: self.info.version.clone(),
            message_types: self.info.message_types.clone(),
            lifecycle_events: self.info.lifecycle_events,
            contract: self.pre.version(),
            file: show_path(&self.file),
            hash: self.hash.clone(),
            capabilities: CapabilitiesStatus {
                broadcast: self.sidecar.capabilities.broadcast,
                cross_tenant: self.sidecar.capabilities.cross_tenant,
                allowed_hosts: self.sidecar.capabilities.allowed_hosts.clone(),
            },
            instances: if self.pool.is_some() {
                "reused"
            } else {
                "fresh"
            },
            limits: LimitsStatus {
                call_timeout_ms: self.limits.call_timeout.as_millis() as u64,
                memory_limit_mb: (self.limits.memory_bytes >> 20) as u64,
                fuel: self.limits.fuel,
                max_concurrent_calls: self.limits.max_concurrent_calls,
                http_timeout_ms: self.limits.http_timeout.as_millis() as u64,
                http_max_response_bytes: self.limits.http_max_response_bytes,
                http_max_concurrent_requests: self.limits.http_max_concurrent_requests,
            },
        }
    }

    /// Status as shown by `GET /api/v1/plugins`.
    pub(crate) fn status(&self) -> PluginStatus {
        PluginStatus {
            plugin: self.description(),
            loaded_at: humantime::format_rfc3339_seconds(self.loaded_at).to_string(),
            counters: self.stats.counters(),
        }
    }
}

fn env(
    cx: &LoadContext<'_>,
    name: &str,
    label: String,
    sidecar: &Sidecar,
    limits: &Limits,
) -> anyhow::Result<Arc<PluginEnv>> {
    let per_sec = cx.config.log_lines_per_sec.max(1);
    let log_dropped =
        metrics::counter!("switchboard_plugin_log_dropped_total", "plugin" => name.to_owned());
    let http = HttpGrant::new(
        sidecar.allowed_hosts()?,
        limits,
        name.to_owned(),
        label.clone(),
    );
    Ok(Arc::new(PluginEnv {
        http: Arc::new(http),
        label,
        name: name.to_owned(),
        namespace: Arc::from(name),
        state: cx.runtime.state.clone(),
        log_dropped,
        capabilities: sidecar.capabilities.clone(),
        config: Arc::new(sidecar.config.clone()),
        log_budget: Mutex::new(TokenBucket::new(per_sec, per_sec)),
        max_sends_per_call: cx.config.max_sends_per_call,
        hub: cx.hub.clone(),
    }))
}

fn session_info(session: &Session) -> types::SessionInfo {
    types::SessionInfo {
        session_id: session.id.to_string(),
        user: types::UserRef {
            user_type: session.principal.user_type,
            user_id: session.principal.user_id.to_string(),
        },
        tenant_id: session.principal.tenant_id.as_deref().map(str::to_owned),
    }
}

fn validate(info: &types::PluginInfo, sidecar: &Sidecar) -> anyhow::Result<()> {
    if info.name.trim().is_empty() {
        bail!("describe returned an empty name");
    }
    if info.message_types.is_empty() {
        bail!("plugin {} claims no message types", info.name);
    }
    let mut seen = std::collections::HashSet::new();
    for t in &info.message_types {
        if t.is_empty() || t.len() > MAX_TYPE_LEN {
            bail!("plugin {} claims an invalid message type {t:?}", info.name);
        }
        if !seen.insert(t) {
            bail!("plugin {} claims {t:?} twice", info.name);
        }
        if let Some(allowed) = &sidecar.message_types
            && !allowed.contains(t)
        {
            bail!(
                "plugin {} claims {t:?}, which its sidecar does not allow (allowed: {allowed:?})",
                info.name
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_plugin_refuses_large_files_and_symlinks_unread() {
        let dir = std::env::temp_dir().join(format!("switchboard-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.wasm");
        std::fs::write(&file, vec![0u8; 4096]).unwrap();
        let (bytes, _) = read_plugin(&file, 4096).unwrap();
        assert_eq!(bytes.len(), 4096);
        let e = read_plugin(&file, 4095).unwrap_err().to_string();
        assert!(e.contains("is 4096 bytes; the limit is 4095"), "{e}");
        let link = dir.join("l.wasm");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let e = read_plugin(&link, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
