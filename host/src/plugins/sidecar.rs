//! The optional sidecar `NAME.toml` next to `NAME.wasm`: what the operator grants a plugin.
//!
//! ```toml
//! message_types = ["chat"]      # the types it may claim; unset: whatever it claims
//! [limits]
//! call_timeout_ms = 500          # each unset limit falls back to [plugins] in the host config
//! memory_limit_mb = 32
//! fuel = 100000000
//! max_concurrent_calls = 16
//! http_timeout_ms = 500          # one outbound HTTP request, DNS to the end of its body
//! http_max_response_bytes = 1048576
//! http_max_concurrent_requests = 16
//! [capabilities]
//! broadcast = false              # may send to `everyone`
//! cross_tenant = false           # may use `send-to-tenant`
//! allowed_hosts = []             # outbound HTTP: "api.example.com:443", "*.example.com",
//!                                # "10.0.0.0/8" (see plugins::outbound_http::allow)
//! [config]
//! greeting = "hello"             # values for the plugin's `config.get`
//! [instances]
//! reuse = false                  # true: keep up to pool_size instances between calls
//! pool_size = 8
//! ```

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::bail;
use serde::Deserialize;

use super::{
    escape::{escape_control, show_path},
    outbound_http::allow::AllowList,
};
use crate::config::{PluginsConfig, plugin_ranges as ranges};

/// A plugin's sidecar file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Sidecar {
    /// Message types the plugin may claim; `None` allows any.
    pub message_types: Option<Vec<String>>,
    /// Overrides of the host's plugin limits.
    pub limits: LimitOverrides,
    /// What the plugin may do beyond sending within its tenant.
    pub(crate) capabilities: Capabilities,
    /// Values returned by the plugin's `config.get`.
    pub config: BTreeMap<String, String>,
    /// Whether calls get a fresh instance (the default) or reuse pooled ones.
    pub(crate) instances: Instances,
}

/// How a plugin's calls get instances.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Instances {
    /// Reuse instances between calls (fast for plugins with a costly start, e.g. JS and
    /// Python). Off by default: a fresh instance per call shares no memory between calls.
    pub reuse: bool,
    /// Idle instances kept when `reuse` is on; default [`DEFAULT_POOL_SIZE`].
    pub pool_size: Option<usize>,
}

/// Idle instances kept by default when `reuse` is on.
pub(crate) const DEFAULT_POOL_SIZE: usize = 8;

impl Instances {
    /// The pool to keep, if instances are reused.
    pub(crate) fn pool(&self) -> Option<usize> {
        self.reuse
            .then(|| self.pool_size.unwrap_or(DEFAULT_POOL_SIZE))
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
    /// Longest outbound HTTP request, in milliseconds.
    pub http_timeout_ms: Option<u64>,
    /// Largest outbound HTTP response body, in bytes.
    pub http_max_response_bytes: Option<u64>,
    /// Outbound HTTP requests in flight at once.
    pub http_max_concurrent_requests: Option<usize>,
}

/// Capabilities an operator grants.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Capabilities {
    /// May send to `everyone` (within the tenant scope).
    pub broadcast: bool,
    /// May send into other tenants with `send-to-tenant`.
    pub cross_tenant: bool,
    /// Hosts, addresses and ranges the plugin may reach over HTTP; empty: none.
    pub allowed_hosts: Vec<String>,
}

/// The limits in force for one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Wall time of one call.
    pub call_timeout: Duration,
    /// Linear memory cap in bytes.
    pub memory_bytes: usize,
    /// Instruction budget per call, when fuel is on.
    pub fuel: Option<u64>,
    /// Concurrent calls.
    pub max_concurrent_calls: usize,
    /// Longest outbound HTTP request.
    pub http_timeout: Duration,
    /// Largest outbound HTTP response body, in bytes.
    pub http_max_response_bytes: u64,
    /// Outbound HTTP requests in flight at once.
    pub http_max_concurrent_requests: usize,
}

impl Sidecar {
    /// Reads `path` if it exists; a missing sidecar is the empty one. A symbolic link is
    /// refused, and errors never quote the file's text (only line, column and what is wrong).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let shown = show_path(path);
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => bail!("reading sidecar {shown}: {e}"),
            Ok(meta) if meta.file_type().is_symlink() => bail!(
                "sidecar {shown} is a symbolic link: put a regular file in the plugins folder"
            ),
            Ok(meta) if !meta.is_file() => bail!("sidecar {shown} is not a regular file"),
            Ok(meta) if meta.len() > MAX_SIDECAR_BYTES => bail!(
                "sidecar {shown} is {} bytes: the limit is {MAX_SIDECAR_BYTES}",
                meta.len()
            ),
            Ok(_) => {}
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading sidecar {shown}: {e}"))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("sidecar {shown}: {e}"))
    }

    /// Parses and range-checks a sidecar's text. Errors say where (line, column, key) and what
    /// to change, without quoting the text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let sidecar: Self = toml::from_str(text).map_err(|e| {
            let message = e.message().trim_end();
            let at = match e.span() {
                Some(span) => {
                    let start = floor_char_boundary(text, span.start);
                    let before = &text[..start];
                    let line = before.matches('\n').count() + 1;
                    let column = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
                    let key = key_at(text, start).map_or(String::new(), |k| format!(", {k}"));
                    format!("line {line}, column {column}{key}: ")
                }
                None => String::new(),
            };
            anyhow::anyhow!("{at}{}{}", escape_control(message), hint(message))
        })?;
        sidecar.check()?;
        Ok(sidecar)
    }

    /// Every limit in its range (see [`ranges`]).
    fn check(&self) -> anyhow::Result<()> {
        let l = &self.limits;
        let place = "[limits] ";
        for (bounds, value) in [
            (&ranges::CALL_TIMEOUT_MS, l.call_timeout_ms),
            (&ranges::MEMORY_LIMIT_MB, l.memory_limit_mb),
            (&ranges::FUEL, l.fuel),
            (
                &ranges::MAX_CONCURRENT_CALLS,
                l.max_concurrent_calls.map(|n| n as u64),
            ),
            (&ranges::HTTP_TIMEOUT_MS, l.http_timeout_ms),
            (&ranges::HTTP_MAX_RESPONSE_BYTES, l.http_max_response_bytes),
            (
                &ranges::HTTP_MAX_CONCURRENT_REQUESTS,
                l.http_max_concurrent_requests.map(|n| n as u64),
            ),
        ] {
            if let Some(value) = value {
                bounds.check(place, value)?;
            }
        }
        self.allowed_hosts()
            .map_err(|e| anyhow::anyhow!("[capabilities] allowed_hosts {e:#}"))?;
        if let Some(size) = self.instances.pool_size {
            ranges::POOL_SIZE.check("[instances] ", size as u64)?;
        }
        if let Some(types) = &self.message_types {
            if types.is_empty() {
                bail!(
                    "message_types = [] allows no type, so the plugin could never load: list \
                     the types it may claim, or remove the key to allow any"
                );
            }
            let mut seen = std::collections::BTreeSet::new();
            if let Some(twice) = types.iter().find(|t| !seen.insert(*t)) {
                bail!(
                    "message_types lists {:?} twice: list each type once",
                    escape_control(twice)
                );
            }
        }
        Ok(())
    }

    /// The parsed `[capabilities] allowed_hosts`.
    pub(crate) fn allowed_hosts(&self) -> anyhow::Result<AllowList> {
        AllowList::parse(&self.capabilities.allowed_hosts)
    }

    /// The limits for this plugin: the sidecar's where set, else the host's. Both are
    /// range-checked when read, so the conversions cannot overflow.
    pub(crate) fn limits(&self, host: &PluginsConfig) -> Limits {
        let l = &self.limits;
        let mb = l.memory_limit_mb.unwrap_or(host.memory_limit_mb);
        Limits {
            call_timeout: Duration::from_millis(
                l.call_timeout_ms.unwrap_or(host.call_timeout_ms).max(1),
            ),
            memory_bytes: usize::try_from(mb.max(1))
                .ok()
                .and_then(|mb| mb.checked_mul(1 << 20))
                .unwrap_or(usize::MAX),
            fuel: l.fuel.or(host.fuel),
            max_concurrent_calls: l
                .max_concurrent_calls
                .unwrap_or(host.max_concurrent_calls)
                .max(1),
            http_timeout: Duration::from_millis(
                l.http_timeout_ms.unwrap_or(host.http_timeout_ms).max(1),
            ),
            http_max_response_bytes: l
                .http_max_response_bytes
                .unwrap_or(host.http_max_response_bytes),
            http_max_concurrent_requests: l
                .http_max_concurrent_requests
                .unwrap_or(host.http_max_concurrent_requests)
                .max(1),
        }
    }
}

/// The largest char boundary at or before `at`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The key (with its `[table]`) on the line holding byte `at`, for an error message. Only
/// plain key names are shown, so an error never quotes other text of the file.
fn key_at(text: &str, at: usize) -> Option<String> {
    let plain = |s: &str| {
        let s = s.trim();
        (!s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        .then(|| s.to_owned())
    };
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    if line.trim_start().starts_with('[') {
        return None;
    }
    let key = plain(line.split_once('=')?.0)?;
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .and_then(|l| plain(l.trim_start_matches('[').split(']').next()?));
    Some(match table {
        Some(table) => format!("[{table}] {key}"),
        None => key,
    })
}

/// How to fix the common mistakes serde reports.
fn hint(message: &str) -> &'static str {
    const LIMITS: [&str; 7] = [
        "`call_timeout_ms`",
        "`memory_limit_mb`",
        "`fuel`",
        "`max_concurrent_calls`",
        "`http_timeout_ms`",
        "`http_max_response_bytes`",
        "`http_max_concurrent_requests`",
    ];
    let unknown = message
        .strip_prefix("unknown field ")
        .and_then(|rest| rest.split(',').next());
    if unknown.is_some_and(|field| LIMITS.contains(&field)) {
        ": limits go under [limits]"
    } else if unknown.is_some_and(|field| matches!(field, "`reuse`" | "`pool_size`")) {
        ": these go under [instances]"
    } else if unknown
        .is_some_and(|field| matches!(field, "`broadcast`" | "`cross_tenant`" | "`allowed_hosts`"))
    {
        ": capabilities go under [capabilities]"
    } else if message.contains("expected u64") || message.contains("expected usize") {
        ": write a whole number without quotes"
    } else if message.contains("expected a boolean") {
        ": write true or false without quotes"
    } else if message.contains("expected a string") {
        ": put the value in double quotes"
    } else if message.contains("expected a sequence") {
        ": write a list, e.g. [\"chat\"]"
    } else if message.contains("duplicate key") {
        ": each key and table may appear once; remove the repeat"
    } else {
        ""
    }
}

/// Largest sidecar read: a sidecar is a few lines.
const MAX_SIDECAR_BYTES: u64 = 64 << 10;

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
