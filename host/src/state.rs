//! [`AppState`]: what every HTTP handler and connection task can reach.

use std::{path::PathBuf, sync::Arc};

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth::Providers,
    config::Config,
    delivery::Hub,
    dispatch::Dispatcher,
    rate::{TokenBucket, gate::Gates, sources::SourceBudgets},
};

/// Sets the running process's log filter (`server.log_filter`).
pub type LogFilterSetter = Arc<dyn Fn(&str) -> anyhow::Result<()> + Send + Sync>;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The configuration at start: what a reload cannot change reads it.
    pub config: Arc<Config>,
    /// The configuration with the keys a reload can change as last reloaded (see `reload`).
    pub live: Arc<ArcSwap<Config>>,
    /// Verifies client tokens: `[auth]` and every `[auth.providers.NAME]`; swapped by a reload.
    pub providers: Arc<ArcSwap<Providers>>,
    /// Where the config was read from, for reloads; `None`: nothing to re-read.
    pub config_path: Option<Arc<PathBuf>>,
    /// Applies `server.log_filter` on reload, when the process's logging allows it.
    pub log_filter: Option<LogFilterSetter>,
    /// Cancelled when the node starts draining (see `drain`).
    pub draining: CancellationToken,
    /// Delivery to local sessions and the cluster.
    pub hub: Arc<Hub>,
    /// Routes client messages to listeners.
    pub dispatcher: Arc<dyn Dispatcher>,
    /// One permit per open connection: `server.max_connections`.
    pub connections: Arc<Semaphore>,
    /// Node-wide handshake rate: `server.handshakes_per_sec`, spent on valid tokens only.
    pub handshakes: Arc<parking_lot::Mutex<TokenBucket>>,
    /// Handshake rate per source address: `server.handshakes_per_source_per_sec`.
    pub sources: Arc<SourceBudgets>,
    /// Each session's message budget and ordering, and per-user budgets of session-less
    /// dispatches.
    pub gates: Arc<Gates>,
    /// Cancelled when the host starts shutting down; every session's closer is a child.
    pub shutdown: CancellationToken,
    /// Connection tasks, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
}

impl AppState {
    /// The configuration in force for the keys a reload can change.
    pub(crate) fn live(&self) -> Arc<Config> {
        self.live.load_full()
    }

    /// The token verifiers in force.
    pub(crate) fn auth(&self) -> Arc<Providers> {
        self.providers.load_full()
    }

    /// A new session id, unguessable and unique in the cluster (see
    /// [`crate::sessions::new_session_id`]).
    pub(crate) fn next_session_id(&self) -> Arc<str> {
        crate::sessions::new_session_id(&self.hub.node_id)
    }
}
