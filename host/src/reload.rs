//! Reloading the config while sessions stay connected (SIGHUP or `POST /api/v1/admin/reload`).
//!
//! The file is read again as at start (environment overrides included). What can change live
//! is applied: API keys, `[auth]` and its providers (a changed key verifies new tokens at
//! once; see `jwt_previous_secret` for an overlap window), message and handshake rates (for
//! connections made from then on), allowed origins and the log filter. Every other changed
//! key is reported as needing a restart and keeps its running value. A file that does not
//! load changes nothing.

use std::sync::Arc;

use serde::Serialize;

use crate::{auth::Providers, config::Config, state::AppState};

/// Keys a reload applies; a section name covers all its keys.
const LIVE_KEYS: &[&str] = &[
    "api.keys",
    "auth",
    "server.allowed_origins",
    "server.messages_per_sec",
    "server.messages_burst",
    "server.handshakes_per_sec",
    "server.handshakes_burst",
    "server.handshakes_per_source_per_sec",
    "server.handshakes_per_source_burst",
    "server.log_filter",
    "server.drain_period_secs",
];

/// What a reload did.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// Changed keys now in force.
    pub applied: Vec<String>,
    /// Changed keys that keep their running value until a restart.
    pub needs_restart: Vec<String>,
}

/// Reads the config file again and applies it. An error: nothing changed.
pub(crate) fn from_file(state: &AppState) -> anyhow::Result<Report> {
    let path = state.config_path.as_deref();
    let config = Config::load(path.map(|p| p.as_path()), std::env::vars())?;
    apply(state, &config)
}

/// Applies what can change live of `new`.
pub(crate) fn apply(state: &AppState, new: &Config) -> anyhow::Result<Report> {
    let running = state.live();
    let (mut merged, mut report) = merge(&running, new)?;
    let mut auth = None;
    if report.applied.iter().any(|k| is_under(k, "auth")) {
        let names = |c: &Config| c.auth.providers.keys().cloned().collect::<Vec<_>>();
        if names(&running) == names(&merged) {
            auth = Some(Arc::new(Providers::new(&merged.auth)?));
        } else {
            // Sessions and re-check tasks know providers by position: keep the running ones.
            report.applied.retain(|k| !is_under(k, "auth"));
            report
                .needs_restart
                .push("auth.providers (added or removed)".into());
            merged.auth = running.auth.clone();
        }
    }
    // Each provider's re-check task keeps the period it started with.
    let (restart, applied): (Vec<String>, Vec<String>) = std::mem::take(&mut report.applied)
        .into_iter()
        .partition(|k| k.ends_with(".recheck_interval_secs"));
    report.applied = applied;
    report.needs_restart.extend(restart);
    let server = &merged.server;
    if let Some(set) = &state.log_filter
        && server.log_filter != running.server.log_filter
    {
        set(&server.log_filter)?;
    }
    state
        .gates
        .rates
        .set(server.messages_per_sec, server.messages_burst);
    state
        .handshakes
        .lock()
        .set_rates(server.handshakes_per_sec, server.handshakes_burst);
    state.sources.rates.set(
        server.handshakes_per_source_per_sec,
        server.handshakes_per_source_burst,
    );
    if let Some(auth) = auth {
        state.providers.store(auth);
    }
    state.live.store(Arc::new(merged));
    Ok(report)
}

/// `running` with the live keys of `new`; and which changed keys were applied or not.
fn merge(running: &Config, new: &Config) -> anyhow::Result<(Config, Report)> {
    let mut merged = toml::Table::try_from(running)?;
    let new = toml::Table::try_from(new)?;
    let mut report = Report {
        applied: Vec::new(),
        needs_restart: Vec::new(),
    };
    let sections: std::collections::BTreeSet<&String> = merged.keys().chain(new.keys()).collect();
    let sections: Vec<String> = sections.into_iter().cloned().collect();
    for section in sections {
        let old_value = merged.get(&section).cloned();
        let new_value = new.get(&section).cloned();
        if old_value == new_value {
            continue;
        }
        match (old_value, new_value) {
            (Some(toml::Value::Table(old)), Some(toml::Value::Table(fresh))) => {
                let keys: std::collections::BTreeSet<&String> =
                    old.keys().chain(fresh.keys()).collect();
                for key in keys {
                    if old.get(key) == fresh.get(key) {
                        continue;
                    }
                    let dotted = format!("{section}.{key}");
                    if is_live(&dotted) {
                        let table = merged
                            .get_mut(&section)
                            .and_then(toml::Value::as_table_mut)
                            .ok_or_else(|| anyhow::anyhow!("{section} is not a table"))?;
                        match fresh.get(key) {
                            Some(v) => table.insert(key.clone(), v.clone()),
                            None => table.remove(key),
                        };
                        report.applied.push(dotted);
                    } else {
                        report.needs_restart.push(dotted);
                    }
                }
            }
            (_, fresh) => {
                if is_live(&section) {
                    match fresh {
                        Some(v) => merged.insert(section.clone(), v),
                        None => merged.remove(&section),
                    };
                    report.applied.push(section);
                } else {
                    report.needs_restart.push(section);
                }
            }
        }
    }
    let merged = Config::deserialize_table(merged)?;
    Ok((merged, report))
}

fn is_live(dotted: &str) -> bool {
    LIVE_KEYS.iter().any(|live| is_under(dotted, live))
}

/// Whether `dotted` is `prefix` or a key under it.
fn is_under(dotted: &str, prefix: &str) -> bool {
    dotted
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Logs and counts a reload's outcome.
pub(crate) fn log_outcome(by: &str, outcome: &anyhow::Result<Report>) {
    match outcome {
        Ok(report) => {
            metrics::counter!("switchboard_config_reloads_total", "result" => "applied")
                .increment(1);
            tracing::info!(by, applied = ?report.applied, "config reloaded");
            if !report.needs_restart.is_empty() {
                tracing::warn!(by, keys = ?report.needs_restart, "config keys changed that apply only after a restart");
            }
        }
        Err(e) => {
            metrics::counter!("switchboard_config_reloads_total", "result" => "refused")
                .increment(1);
            tracing::error!(by, error = %format!("{e:#}"), "config reload refused; nothing was changed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, []).unwrap()
    }

    #[test]
    fn live_keys_are_applied_and_the_rest_reported() {
        let running = config("[api]\nkeys = [\"a\"]\n[server]\nlisten = \"127.0.0.1:1\"\n");
        let new = config(
            "[api]\nkeys = [\"b\"]\n[server]\nlisten = \"127.0.0.1:2\"\nmessages_per_sec = 7\n\
             [cluster]\nname = \"other\"\n",
        );
        let (merged, report) = merge(&running, &new).unwrap();
        assert_eq!(merged.api.keys, vec!["b"]);
        assert_eq!(merged.server.messages_per_sec, 7);
        assert_eq!(
            merged.server.listen.port(),
            1,
            "listen keeps its running value"
        );
        assert_eq!(merged.cluster.name, running.cluster.name);
        assert_eq!(report.applied, vec!["api.keys", "server.messages_per_sec"]);
        assert_eq!(report.needs_restart, vec!["cluster.name", "server.listen"]);
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let c = config("[api]\nkeys = [\"a\"]\n");
        let (_, report) = merge(&c, &c).unwrap();
        assert!(report.applied.is_empty() && report.needs_restart.is_empty());
    }

    #[test]
    fn a_whole_auth_section_is_live() {
        // (Except the re-check period, which `apply` reports as needing a restart.)
        let running = config("");
        let new = config("[auth]\njwt_secret = \"0123456789abcdef0123\"\n");
        let (merged, report) = merge(&running, &new).unwrap();
        assert_eq!(
            merged.auth.jwt_secret.as_deref(),
            Some("0123456789abcdef0123")
        );
        assert_eq!(report.applied, vec!["auth.jwt_secret"]);
    }
}
