//! The optional sidecar `NAME.toml` next to `NAME.wasm`: what the operator grants a plugin.
//!
//! ```toml
//! message_types = ["chat"]      # the types it may claim; unset: whatever it claims
//! [limits]
//! call_timeout_ms = 500          # each unset limit falls back to [plugins] in the host config
//! memory_limit_mb = 32
//! fuel = 100000000
//! max_concurrent_calls = 16
//! [capabilities]
//! broadcast = false              # may send to `everyone`
//! cross_tenant = false           # may use `send-to-tenant`
//! [config]
//! greeting = "hello"             # values for the plugin's `config.get`
//! [instances]
//! reuse = false                  # true: keep up to pool_size instances between calls
//! pool_size = 8
//! ```

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::Context as _;
use serde::Deserialize;

use crate::config::PluginsConfig;

/// A plugin's sidecar file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Sidecar {
    /// Message types the plugin may claim; `None` allows any.
    pub message_types: Option<Vec<String>>,
    /// Overrides of the host's plugin limits.
    pub limits: LimitOverrides,
    /// What the plugin may do beyond sending within its tenant.
    pub capabilities: Capabilities,
    /// Values returned by the plugin's `config.get`.
    pub config: BTreeMap<String, String>,
    /// Whether calls get a fresh instance (the default) or reuse pooled ones.
    pub instances: Instances,
}

/// How a plugin's calls get instances.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Instances {
    /// Reuse instances between calls (fast for plugins with a costly start, e.g. JS and
    /// Python). Off by default: a fresh instance per call shares no memory between calls.
    pub reuse: bool,
    /// Idle instances kept when `reuse` is on.
    pub pool_size: usize,
}

impl Default for Instances {
    fn default() -> Self {
        Self {
            reuse: false,
            pool_size: 8,
        }
    }
}

/// Per-plugin overrides of `[plugins]` limits.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitOverrides {
    /// Wall-time limit of one call, in milliseconds.
    pub call_timeout_ms: Option<u64>,
    /// Linear memory cap, in MiB.
    pub memory_limit_mb: Option<u64>,
    /// Instruction budget per call.
    pub fuel: Option<u64>,
    /// Concurrent calls into this plugin.
    pub max_concurrent_calls: Option<usize>,
}

/// Capabilities an operator grants.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Capabilities {
    /// May send to `everyone` (within the tenant scope).
    pub broadcast: bool,
    /// May send into other tenants with `send-to-tenant`.
    pub cross_tenant: bool,
}

/// The limits in force for one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall time of one call.
    pub call_timeout: Duration,
    /// Linear memory cap in bytes.
    pub memory_bytes: usize,
    /// Instruction budget per call, when fuel is on.
    pub fuel: Option<u64>,
    /// Concurrent calls.
    pub max_concurrent_calls: usize,
}

impl Sidecar {
    /// Reads `path` if it exists; a missing sidecar is the empty one.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("sidecar {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading sidecar {}", path.display())),
        }
    }

    /// The limits for this plugin: the sidecar's where set, else the host's.
    pub fn limits(&self, host: &PluginsConfig) -> Limits {
        let l = &self.limits;
        Limits {
            call_timeout: Duration::from_millis(
                l.call_timeout_ms.unwrap_or(host.call_timeout_ms).max(1),
            ),
            memory_bytes: (l.memory_limit_mb.unwrap_or(host.memory_limit_mb).max(1) as usize) << 20,
            fuel: l.fuel.or(host.fuel),
            max_concurrent_calls: l
                .max_concurrent_calls
                .unwrap_or(host.max_concurrent_calls)
                .max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_overrides() {
        let s: Sidecar = toml::from_str(
            "message_types = [\"a\"]\n[limits]\nmemory_limit_mb = 8\n[capabilities]\nbroadcast = true\n[config]\nk = \"v\"\n",
        )
        .unwrap();
        let l = s.limits(&PluginsConfig::default());
        assert_eq!(l.memory_bytes, 8 << 20);
        assert_eq!(l.call_timeout, Duration::from_millis(1000));
        assert!(s.capabilities.broadcast && !s.capabilities.cross_tenant);
        assert_eq!(s.config["k"], "v");
        assert!(toml::from_str::<Sidecar>("[capabilities]\nroot = true\n").is_err());
    }
}
