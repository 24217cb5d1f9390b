//! Every metric the host exports, described in one place (Prometheus `HELP` and `TYPE`), and
//! present from the start: series without a per-plugin label are registered at zero, so
//! dashboards and alerts see zeros on a fresh host, not "no data". A new metric belongs in
//! these tables. [`recorder`] installs the Prometheus recorder they are kept in.

use std::time::Duration;

use anyhow::Context as _;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use parking_lot::Mutex;

/// Counters without labels.
const COUNTERS: &[(&str, &str)] = &[
    (
        "switchboard_slow_consumers_closed_total",
        "Sessions closed (4001) because their outbound queue overflowed.",
    ),
    (
        "switchboard_messages_rate_limited_total",
        "Client messages refused because the session or user exceeded its message rate.",
    ),
    (
        "switchboard_messages_out_total",
        "Frames written to WebSocket clients.",
    ),
    (
        "switchboard_deliveries_total",
        "Messages queued for local sessions.",
    ),
    (
        "switchboard_presence_degraded_total",
        "Presence answers given from this node only because cluster presence failed.",
    ),
    (
        "switchboard_broker_published_total",
        "Publications sent to the cluster broker.",
    ),
];

/// Counters with one label and its every value.
const LABELLED_COUNTERS: &[(&str, &str, &str, &[&str])] = &[
    (
        "switchboard_config_reloads_total",
        "Config reloads (SIGHUP or POST /api/v1/admin/reload), by result: `applied`, or `refused` (the file did not load; nothing changed).",
        "result",
        &["applied", "refused"],
    ),
    (
        "switchboard_connections_rejected_total",
        "Connections refused or closed before becoming a session, by reason.",
        "reason",
        &[
            "origin",
            "source_handshake_rate",
            "handshake_rate",
            "max_connections",
            "user_limit",
            "pending_evicted",
        ],
    ),
    (
        "switchboard_messages_in_total",
        "Client messages received, by wire profile (`http`: POST /api/v1/dispatch).",
        "profile",
        &["native", "yudao", "ruoyi-plus", "http"],
    ),
    (
        "switchboard_messages_dropped_total",
        "Messages dropped, by reason.",
        "reason",
        &[
            "slow_consumer",
            "broker_down",
            "broker_refused",
            "inbound_full",
        ],
    ),
    (
        "switchboard_cluster_routed_total",
        "This node's publications to the other nodes, by route: `broadcast` (every node), \
         `targeted` (only the nodes that hold the sessions or users), `nowhere` (no other node \
         holds them: nothing published).",
        "route",
        &["broadcast", "targeted", "nowhere"],
    ),
    (
        "switchboard_cluster_received_total",
        "Publications from other nodes this node received, by channel: `broadcast` (every \
         node's) or `targeted` (this node's own).",
        "route",
        &["broadcast", "targeted"],
    ),
    (
        "switchboard_auth_total",
        "Token checks of connections and user-token requests, by result (`unavailable`: the \
         auth back end could not be asked; answered 503).",
        "result",
        &["ok", "refused", "unavailable"],
    ),
    (
        "switchboard_auth_rechecks_total",
        "Re-checks of live sessions' credentials, by result.",
        "result",
        &["valid", "expired", "revoked", "unavailable"],
    ),
    (
        "switchboard_auth_sessions_closed_total",
        "Sessions closed because their credential ended: 4003 expired, 4004 revoked.",
        "reason",
        &["expired", "revoked"],
    ),
    (
        "switchboard_auth_cache_total",
        "Introspection answers taken from the cache (`hit`) or asked of the back end (`miss`).",
        "result",
        &["hit", "miss"],
    ),
    (
        "switchboard_plugin_reloads_total",
        "Plugin files loaded, unloaded or rejected.",
        "result",
        &["loaded", "unloaded", "rejected"],
    ),
];

/// Per-plugin counters (label `plugin`): described only, since plugin names are not known
/// in advance.
const PLUGIN_COUNTERS: &[(&str, &str)] = &[
    ("switchboard_plugin_calls_total", "Calls into a plugin."),
    (
        "switchboard_plugin_errors_total",
        "Plugin calls that returned an error or faulted.",
    ),
    (
        "switchboard_plugin_busy_total",
        "Calls refused because the plugin was at its concurrency limit.",
    ),
    (
        "switchboard_plugin_faults_total",
        "Plugin calls that trapped, ran out of time or memory.",
    ),
    (
        "switchboard_plugin_log_dropped_total",
        "Plugin log lines dropped by the log rate limit or a full queue.",
    ),
    (
        "switchboard_plugin_kv_operations_total",
        "Key-value operations of a plugin (label `op`: get, set, delete, exists, list, increment, swap).",
    ),
    (
        "switchboard_plugin_kv_errors_total",
        "Key-value operations of a plugin that returned an error (quota, invalid, store unavailable).",
    ),
    (
        "switchboard_plugin_http_requests_total",
        "Outbound HTTP requests of a plugin (label `outcome`: ok, denied, prohibited, busy, timeout, too_large, failed).",
    ),
    (
        "switchboard_plugin_http_body_errors_total",
        "Outbound HTTP response bodies that failed after their response arrived (label `outcome`: timeout, too_large).",
    ),
    (
        "switchboard_plugin_http_bytes_total",
        "Body bytes of a plugin's outbound HTTP requests (label `direction`: out) and responses (in).",
    ),
    (
        "switchboard_plugin_kv_bytes_total",
        "Value bytes a plugin read from or wrote to its key-value state.",
    ),
];

/// Per-source ingest counters (label `source`, and `reason` for rejects): described only,
/// since sources are named in the config; each source registers its series at zero.
const INGEST_COUNTERS: &[(&str, &str)] = &[
    (
        "switchboard_ingest_messages_total",
        "Messages an ingest source decoded and delivered.",
    ),
    (
        "switchboard_ingest_rejected_total",
        "Messages an ingest source skipped because it could not decode or route them, by reason.",
    ),
];

/// Profiles and transports of `switchboard_connections`.
const TRANSPORTS: &[&str] = &["websocket", "sse"];
const PROFILES: &[&str] = &["native", "yudao", "ruoyi-plus"];

/// Describes every metric and registers the ones without a per-plugin label at zero. Needs
/// the recorder installed first; idempotent.
pub(crate) fn describe() {
    for (name, help) in COUNTERS {
        describe_counter!(*name, *help);
        metrics::counter!(*name).increment(0);
    }
    for (name, help, label, values) in LABELLED_COUNTERS {
        describe_counter!(*name, *help);
        for value in *values {
            metrics::counter!(*name, *label => *value).increment(0);
        }
    }
    for (name, help) in PLUGIN_COUNTERS {
        describe_counter!(*name, *help);
    }
    for (name, help) in INGEST_COUNTERS {
        describe_counter!(*name, *help);
    }
    describe_gauge!(
        "switchboard_ingest_up",
        "1 while an ingest source is subscribed to its broker, else 0 (label `source`)."
    );
    describe_histogram!(
        "switchboard_plugin_call_seconds",
        Unit::Seconds,
        "Duration of plugin calls (label `plugin`)."
    );
    describe_gauge!(
        "switchboard_draining",
        "1 once this node is draining (refusing connections, closing sessions with 1012), else 0."
    );
    metrics::gauge!("switchboard_draining").set(0.0);
    describe_gauge!("switchboard_sessions", "Sessions open on this node.");
    metrics::gauge!("switchboard_sessions").increment(0.0);
    describe_gauge!(
        "switchboard_connections",
        "Open client connections, by transport and wire profile."
    );
    for transport in TRANSPORTS {
        for profile in PROFILES {
            metrics::gauge!("switchboard_connections", "transport" => *transport, "profile" => *profile)
                .increment(0.0);
        }
    }
    describe_gauge!(
        "switchboard_broker_up",
        "1 while the cluster broker answers, else 0 (always 1 with the local broker)."
    );
}

/// How often histogram samples are folded into their buckets.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// The process-wide Prometheus recorder (the `metrics` facade allows one per process),
/// installed by the first host of the process; later hosts share its handle.
pub(crate) fn recorder() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut installed = HANDLE.lock();
    if let Some(handle) = &*installed {
        return Ok(handle.clone());
    }
    let buckets = [
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        0.5, 1.0, 2.5,
    ];
    let recorder = PrometheusBuilder::new()
        .set_buckets(&buckets)?
        .build_recorder();
    let handle = recorder.handle();
    // Histogram samples pile up (8 bytes each) until drained into buckets; without a scraper
    // they would grow with every plugin call, so drain them on a timer.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(METRICS_UPKEEP);
                upkeep.run_upkeep();
            }
        })
        .context("starting the metrics upkeep thread")?;
    // Another recorder may already be installed (e.g. by an embedding program); then this
    // handle renders an empty page rather than failing the host.
    let _ = metrics::set_global_recorder(recorder);
    *installed = Some(handle.clone());
    Ok(handle)
}

#[cfg(test)]
mod tests {
    /// The Grafana dashboard in `packaging/` shows only metrics this module describes.
    #[test]
    fn the_dashboard_queries_only_described_metrics() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../packaging/grafana-dashboard.json")).unwrap();
        let described = include_str!("telemetry.rs");
        let panels = dashboard["panels"].as_array().unwrap();
        assert!(panels.len() >= 10);
        for panel in panels {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                let mut rest = expr;
                let mut found = 0;
                while let Some(at) = rest.find("switchboard_") {
                    let name: String = rest[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    let base = name.strip_suffix("_bucket").unwrap_or(&name);
                    assert!(
                        described.contains(&format!("\"{base}\"")),
                        "{base} in panel {:?} is not a described metric",
                        panel["title"]
                    );
                    found += 1;
                    rest = &rest[at + name.len()..];
                }
                assert!(found > 0, "{expr} queries no switchboard metric");
            }
        }
    }
}
