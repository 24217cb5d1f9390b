//! One loaded plugin version: loading and validating a file, and calling it under its limits
//! with counters and fault reports.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use parking_lot::Mutex;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::{
    bindings::{PluginPre, switchboard::plugin::types},
    cache::CodeCache,
    runtime::{Fault, InstancePool, Runtime},
    sidecar::{Limits, Sidecar},
    state::{CallState, PluginEnv},
};
use crate::{
    config::PluginsConfig, delivery::Hub, dispatch::DispatchError, envelope::MAX_TYPE_LEN,
    sessions::Session, transport::rate::TokenBucket,
};

/// Largest plugin file accepted.
pub const MAX_PLUGIN_BYTES: u64 = 512 << 20;

/// Counters of one plugin, kept across reloads of its file.
#[derive(Debug, Default)]
pub struct Stats {
    calls: std::sync::atomic::AtomicU64,
    errors: std::sync::atomic::AtomicU64,
    faults: std::sync::atomic::AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Stats {
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

    /// Counters as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        use std::sync::atomic::Ordering::Relaxed;
        json!({
            "calls": self.calls.load(Relaxed),
            "errors": self.errors.load(Relaxed),
            "faults": self.faults.load(Relaxed),
            "last_error": *self.last_error.lock(),
        })
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
    pub stamp: FileStamp,
    /// When this version was loaded.
    pub loaded_at: SystemTime,
    /// What the plugin said about itself.
    pub info: types::PluginInfo,
    /// The operator's grants and limits.
    pub sidecar: Sidecar,
    /// The limits in force.
    pub limits: Limits,
    /// Whether the compiled code came from the cache.
    pub from_cache: bool,
    pre: PluginPre<CallState>,
    env: Arc<PluginEnv>,
    /// One permit per concurrent call.
    gate: Semaphore,
    /// Reused instances, when the sidecar asks for them (`[instances] reuse = true`).
    pool: Option<InstancePool>,
    stats: Arc<Stats>,
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

/// A file's size and modification time: a cheap "has it changed" check before hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    /// The stamp of `path`, if it can be read.
    pub fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
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
        let size = std::fs::metadata(&file)
            .with_context(|| format!("reading {}", file.display()))?
            .len();
        if size > MAX_PLUGIN_BYTES {
            bail!(
                "{} is {size} bytes; the limit is {MAX_PLUGIN_BYTES}",
                file.display()
            );
        }
        let stamp = FileStamp::of(&file);
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        // A file rewritten while it was read is picked up by the next change event.
        let stamp = stamp
            .filter(|s| Some(*s) == FileStamp::of(&file))
            .unwrap_or(FileStamp {
                len: u64::MAX,
                modified: None,
            });
        let sidecar = Sidecar::load(&dir.join(format!("{key}.toml")))?;
        let hash = content_hash(&bytes);
        let engine = cx.runtime.engine.clone();
        let cache = cx.cache.cloned();
        let hash_for_compile = hash.clone();
        // Compiling is CPU-heavy: keep it off the async workers.
        let (component, from_cache) = tokio::task::spawn_blocking(move || match cache {
            Some(cache) => cache.load_or_compile(&engine, &hash_for_compile, &bytes),
            None => super::cache::compile(&engine, &bytes).map(|c| (c, false)),
        })
        .await
        .context("compile task")??;
        let pre = cx.runtime.prepare(&component)?;
        let limits = sidecar.limits(cx.config);
        let probe_env = env(cx, key, key.to_owned(), &sidecar);
        let info = cx
            .runtime
            .describe(&pre, &probe_env, &limits)
            .await
            .map_err(|f| anyhow::anyhow!("describe {}", f.0))?;
        validate(&info, &sidecar)?;
        let label = format!("{}@{}", info.name, info.version);
        let env = env(cx, &info.name, label, &sidecar);
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
            pool: sidecar
                .instances
                .reuse
                .then(|| InstancePool::new(sidecar.instances.pool_size.max(1))),
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
                msg_type,
                content,
            )
            .await;
        let elapsed = started.elapsed().as_secs_f64();
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
            Err(Fault(reason)) => Err(self.report_fault(msg_type, &reason)),
        }
    }

    /// Tells the plugin a session opened or closed. Faults are logged and counted.
    pub async fn on_lifecycle(&self, runtime: &Runtime, session: &Session, connected: bool) {
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
            Err(Fault(reason)) => {
                self.report_fault(event, &reason);
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

    fn report_fault(&self, what: &str, reason: &str) -> DispatchError {
        let message = format!("plugin {} {reason} handling {what}", self.label());
        tracing::error!(plugin = %self.info.name, version = %self.info.version, msg_type = what, "{message}");
        metrics::counter!("switchboard_plugin_faults_total", "plugin" => self.info.name.clone())
            .increment(1);
        self.stats.record(&Err(message.clone()), true);
        DispatchError::Fault(message)
    }

    /// Status as shown by `GET /api/v1/plugins`.
    pub fn status(&self) -> serde_json::Value {
        let mut v = json!({
            "name": self.info.name,
            "version": self.info.version,
            "message_types": self.info.message_types,
            "lifecycle_events": self.info.lifecycle_events,
            "file": self.file.display().to_string(),
            "hash": self.hash,
            "loaded_at": humantime::format_rfc3339_seconds(self.loaded_at).to_string(),
            "capabilities": {
                "broadcast": self.sidecar.capabilities.broadcast,
                "cross_tenant": self.sidecar.capabilities.cross_tenant,
            },
            "instances": if self.pool.is_some() { "reused" } else { "fresh" },
            "limits": {
                "call_timeout_ms": self.limits.call_timeout.as_millis() as u64,
                "memory_limit_mb": self.limits.memory_bytes >> 20,
                "fuel": self.limits.fuel,
                "max_concurrent_calls": self.limits.max_concurrent_calls,
            },
        });
        if let (Some(obj), serde_json::Value::Object(stats)) =
            (v.as_object_mut(), self.stats.to_json())
        {
            obj.extend(stats);
        }
        v
    }
}

fn env(cx: &LoadContext<'_>, name: &str, label: String, sidecar: &Sidecar) -> Arc<PluginEnv> {
    let per_sec = cx.config.log_lines_per_sec.max(1);
    let log_dropped =
        metrics::counter!("switchboard_plugin_log_dropped_total", "plugin" => name.to_owned());
    Arc::new(PluginEnv {
        label,
        log_dropped,
        capabilities: sidecar.capabilities,
        config: Arc::new(sidecar.config.clone()),
        log_budget: Mutex::new(TokenBucket::new(per_sec, per_sec)),
        max_sends_per_call: cx.config.max_sends_per_call,
        hub: cx.hub.clone(),
    })
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
