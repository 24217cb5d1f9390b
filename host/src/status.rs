//! The plugin status answered by `GET /api/v1/plugins` and printed by `switchboard plugin
//! check`: one type per JSON object, so the shape is stated once and checked by the compiler.

use serde::Serialize;

/// `GET /api/v1/plugins` for operators (API key).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PluginsStatus {
    /// Plugins serving calls.
    pub plugins: Vec<PluginStatus>,
    /// Plugin files whose last load failed.
    pub failed: Vec<FailedPlugin>,
}

/// `GET /api/v1/plugins` for users (a valid token): what they can send to.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PluginsSummary {
    /// Name, version and message types of each plugin serving calls.
    pub plugins: Vec<PluginSummary>,
}

/// What a user may know of one plugin.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PluginSummary {
    /// The plugin's name.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// Message types it listens to.
    pub message_types: Vec<String>,
}

impl PluginsStatus {
    /// The users' view of this status.
    pub(crate) fn summary(&self) -> PluginsSummary {
        PluginsSummary {
            plugins: self
                .plugins
                .iter()
                .map(|p| PluginSummary {
                    name: p.plugin.name.clone(),
                    version: p.plugin.version.clone(),
                    message_types: p.plugin.message_types.clone(),
                })
                .collect(),
        }
    }
}

/// One plugin serving calls.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PluginStatus {
    /// What the plugin is and how it is configured.
    #[serde(flatten)]
    pub plugin: PluginDescription,
    /// When this version was loaded (RFC 3339, seconds).
    pub loaded_at: String,
    /// Its calls so far.
    #[serde(flatten)]
    pub counters: CallCounters,
}

/// A plugin as its file and sidecar define it: what `switchboard plugin check` prints.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PluginDescription {
    /// The plugin's name.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// Message types it listens to.
    pub message_types: Vec<String>,
    /// Whether it is told of sessions opening and closing.
    pub lifecycle_events: bool,
    /// The version of the `switchboard:plugin` contract the component was built against.
    pub contract: &'static str,
    /// The component file.
    pub file: String,
    /// SHA-256 of the file, hex.
    pub hash: String,
    /// What the sidecar grants.
    pub capabilities: CapabilitiesStatus,
    /// `fresh` (an instance per call) or `reused` (a pool).
    pub instances: &'static str,
    /// The limits in force.
    pub limits: LimitsStatus,
}

/// The grants of a plugin.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CapabilitiesStatus {
    /// May send to everyone in its scope.
    pub broadcast: bool,
    /// May send into other tenants.
    pub cross_tenant: bool,
    /// What it may reach over HTTP, as the sidecar lists it; empty: nothing.
    pub allowed_hosts: Vec<String>,
}

/// The limits of a plugin.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct LimitsStatus {
    /// Wall time of one call.
    pub call_timeout_ms: u64,
    /// Memory of one instance.
    pub memory_limit_mb: u64,
    /// Instruction budget of one call; `null`: none.
    pub fuel: Option<u64>,
    /// Concurrent calls.
    pub max_concurrent_calls: usize,
    /// Longest outbound HTTP request.
    pub http_timeout_ms: u64,
    /// Largest outbound HTTP response body.
    pub http_max_response_bytes: u64,
    /// Outbound HTTP requests in flight at once.
    pub http_max_concurrent_requests: usize,
}

/// Counters of one plugin version.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CallCounters {
    /// Calls made.
    pub calls: u64,
    /// Mean wall time of its message calls, in milliseconds (0 before the first).
    pub mean_call_ms: f64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Calls that trapped, timed out or ran out of memory or fuel.
    pub faults: u64,
    /// The last error or fault, if any.
    pub last_error: Option<String>,
}

/// A plugin file whose last load failed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FailedPlugin {
    /// The file.
    pub file: String,
    /// Why it failed.
    pub error: String,
    /// When (RFC 3339, seconds).
    pub at: String,
    /// Whether an earlier version of the plugin still serves its calls.
    pub serving_previous_version: bool,
}
