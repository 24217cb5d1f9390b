//! The allowed range of every plugin limit, shared by `[plugins]` in the host config and the
//! `[limits]` / `[instances]` tables of a sidecar, so both refuse the same values with the
//! same words.

use std::ops::RangeInclusive;

use anyhow::bail;

use super::PluginsConfig;

/// One numeric setting and the values it accepts.
#[derive(Debug, Clone)]
pub(crate) struct Bounded {
    /// The key as the operator writes it.
    pub key: &'static str,
    /// Accepted values, inclusive.
    pub range: RangeInclusive<u64>,
    /// Unit shown after the range, e.g. `ms`.
    pub unit: &'static str,
}

impl Bounded {
    /// Ok if `value` is in range; else an error naming `place` (file and table), the key, the
    /// value and the allowed range.
    pub(crate) fn check(&self, place: &str, value: u64) -> anyhow::Result<()> {
        if self.range.contains(&value) {
            return Ok(());
        }
        let unit = if self.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", self.unit)
        };
        bail!(
            "{place}{} = {value} is out of range: set a value from {} to {}{unit}",
            self.key,
            self.range.start(),
            self.range.end(),
        )
    }
}

const fn bounded(key: &'static str, min: u64, max: u64, unit: &'static str) -> Bounded {
    Bounded {
        key,
        range: min..=max,
        unit,
    }
}

/// Wall time of one call (a minute at most: a call holds a permit and, for on-connect, a
/// greeting for that long).
pub(crate) const CALL_TIMEOUT_MS: Bounded = bounded("call_timeout_ms", 1, 60_000, "ms");
/// Memory of one instance, all its memories together.
pub(crate) const MEMORY_LIMIT_MB: Bounded = bounded("memory_limit_mb", 1, 4096, "MiB");
/// Instruction budget of one call; 0 would trap every call before it starts.
pub(crate) const FUEL: Bounded = bounded("fuel", 1, i64::MAX as u64, "");
/// Concurrent calls into one plugin: each may hold an instance of up to the memory cap.
pub(crate) const MAX_CONCURRENT_CALLS: Bounded = bounded("max_concurrent_calls", 1, 1000, "");
/// Idle instances kept by a plugin with `reuse = true`.
pub(crate) const POOL_SIZE: Bounded = bounded("pool_size", 1, 256, "");
/// Largest plugin file read (512 MiB: a JS or Python component is 12 to 20 MB).
pub(crate) const MAX_PLUGIN_BYTES: Bounded = bounded("max_plugin_bytes", 1024, 512 << 20, "bytes");
/// Quiet period before file changes are applied.
pub(crate) const WATCH_DEBOUNCE_MS: Bounded = bounded("watch_debounce_ms", 1, 60_000, "ms");
/// Safety-net rescan period; 0 turns it off.
pub(crate) const RESCAN_SECS: Bounded = bounded("rescan_secs", 0, 86_400, "s");
/// Log lines one plugin may write per second.
pub(crate) const LOG_LINES_PER_SEC: Bounded = bounded("log_lines_per_sec", 1, 100_000, "");
/// Sends one call may make; 0 forbids sending.
pub(crate) const MAX_SENDS_PER_CALL: Bounded = bounded("max_sends_per_call", 0, 1_000_000, "");
/// Key-value entries one plugin may hold; 0 leaves it no state.
pub(crate) const STATE_MAX_KEYS: Bounded = bounded("state_max_keys", 0, 100_000_000, "");
/// Bytes of key-value state one plugin may hold (16 GiB at most).
pub(crate) const STATE_MAX_BYTES: Bounded = bounded("state_max_bytes", 0, 16 << 30, "bytes");
/// Wait for Redis per key-value operation (below any sensible call timeout).
pub(crate) const STATE_TIMEOUT_MS: Bounded = bounded("state_timeout_ms", 1, 60_000, "ms");

/// One outbound HTTP request of a plugin, DNS to the end of its body (it also ends a tenth of
/// the call timeout before the call's deadline).
pub(crate) const HTTP_TIMEOUT_MS: Bounded = bounded("http_timeout_ms", 1, 60_000, "ms");
/// Largest response body a plugin may receive (it lands in the plugin's memory).
pub(crate) const HTTP_MAX_RESPONSE_BYTES: Bounded =
    bounded("http_max_response_bytes", 1, 1 << 30, "bytes");
/// Outbound HTTP requests of one plugin in flight at once.
pub(crate) const HTTP_MAX_CONCURRENT_REQUESTS: Bounded =
    bounded("http_max_concurrent_requests", 1, 1000, "");

/// Every numeric `[plugins]` setting in its range.
pub(crate) fn check_host(config: &PluginsConfig) -> anyhow::Result<()> {
    let place = "plugins.";
    for (bounds, value) in [
        (&CALL_TIMEOUT_MS, Some(config.call_timeout_ms)),
        (&MEMORY_LIMIT_MB, Some(config.memory_limit_mb)),
        (&FUEL, config.fuel),
        (
            &MAX_CONCURRENT_CALLS,
            Some(config.max_concurrent_calls as u64),
        ),
        (&MAX_PLUGIN_BYTES, Some(config.max_plugin_bytes)),
        (&WATCH_DEBOUNCE_MS, Some(config.watch_debounce_ms)),
        (&RESCAN_SECS, Some(config.rescan_secs)),
        (
            &LOG_LINES_PER_SEC,
            Some(u64::from(config.log_lines_per_sec)),
        ),
        (
            &MAX_SENDS_PER_CALL,
            Some(u64::from(config.max_sends_per_call)),
        ),
        (&STATE_MAX_KEYS, Some(config.state_max_keys)),
        (&STATE_MAX_BYTES, Some(config.state_max_bytes)),
        (&STATE_TIMEOUT_MS, Some(config.state_timeout_ms)),
        (&HTTP_TIMEOUT_MS, Some(config.http_timeout_ms)),
        (
            &HTTP_MAX_RESPONSE_BYTES,
            Some(config.http_max_response_bytes),
        ),
        (
            &HTTP_MAX_CONCURRENT_REQUESTS,
            Some(config.http_max_concurrent_requests as u64),
        ),
    ] {
        if let Some(value) = value {
            bounds.check(place, value)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_defaults_are_in_range_and_extremes_are_not() {
        check_host(&PluginsConfig::default()).unwrap();
        let c = PluginsConfig {
            memory_limit_mb: u64::MAX,
            ..Default::default()
        };
        let e = check_host(&c).unwrap_err().to_string();
        assert!(
            e.starts_with("plugins.memory_limit_mb = 18446744073709551615"),
            "{e}"
        );
        let c = PluginsConfig {
            fuel: Some(0),
            ..Default::default()
        };
        assert!(
            check_host(&c)
                .unwrap_err()
                .to_string()
                .contains("plugins.fuel = 0")
        );
    }

    #[test]
    fn errors_name_the_place_the_key_and_the_range() {
        assert!(CALL_TIMEOUT_MS.check("plugins.", 1000).is_ok());
        assert_eq!(
            CALL_TIMEOUT_MS
                .check("plugins.", 0)
                .unwrap_err()
                .to_string(),
            "plugins.call_timeout_ms = 0 is out of range: set a value from 1 to 60000 ms"
        );
        assert_eq!(
            POOL_SIZE
                .check("sidecar p.toml: [instances] ", u64::MAX)
                .unwrap_err()
                .to_string(),
            "sidecar p.toml: [instances] pool_size = 18446744073709551615 is out of range: \
             set a value from 1 to 256"
        );
    }
}
