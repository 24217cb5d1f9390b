//! What a plugin call's `Store` holds: WASI (no files, no sockets, no env), `wasi:http` (what
//! the sidecar allows), the memory limiter, the deadline, and the plugin's environment for the
//! host imports.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use parking_lot::Mutex;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::{
    kv::StateStore,
    limiter::MemoryBudget,
    outbound_http::{CallHttp, HttpGrant},
    sidecar::Capabilities,
    stderr::StderrTail,
};
use crate::{delivery::Hub, rate::TokenBucket};

/// What the host imports of one plugin can reach. Shared by every call of that plugin.
pub(crate) struct PluginEnv {
    /// `name@version`, for logs and fault reports.
    pub label: String,
    /// The plugin's name, the `plugin` label of its metrics.
    pub name: String,
    /// Whose key-value entries the plugin reaches: its own, by name.
    pub namespace: Arc<str>,
    /// Where key-value state lives.
    pub state: Arc<StateStore>,
    /// What the operator granted.
    pub capabilities: Capabilities,
    /// Values for `config.get`: this plugin's own, never another's.
    pub config: Arc<BTreeMap<String, String>>,
    /// Rate limit of `logging.log`.
    pub log_budget: Mutex<TokenBucket>,
    /// Counts the lines `log_budget` refused.
    pub log_dropped: metrics::Counter,
    /// Sends made by one call at most.
    pub max_sends_per_call: u32,
    /// Where sends go.
    pub hub: Arc<Hub>,
    /// What the plugin may reach over HTTP (nothing without `allowed_hosts`).
    pub http: Arc<HttpGrant>,
}

/// The data of one call's `Store`.
pub(crate) struct CallState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    /// The memory cap, across all the instance's memories.
    pub(super) limits: MemoryBudget,
    /// When the call must have finished; checked at every epoch tick.
    pub(super) deadline: Instant,
    /// Tenant of the session being handled: the scope of `sender.send` and `presence`.
    pub(super) tenant: Option<Arc<str>>,
    /// Sends made so far in this call.
    pub(super) sends: u32,
    /// Channels this call's sends may use: the handled session's endpoint's `reply_via`.
    pub(super) via: crate::via::Via,
    pub(super) env: Arc<PluginEnv>,
    /// The end of what the guest wrote to stderr, quoted in fault reports.
    pub(super) stderr: StderrTail,
    /// `wasi:http` resources' settings.
    pub(super) http_ctx: WasiHttpCtx,
    /// Where outbound requests are checked and sent, and when they must end.
    pub(super) http: CallHttp,
}

impl std::fmt::Debug for CallState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallState").finish_non_exhaustive()
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.http,
            table: &mut self.table,
            ctx: &mut self.http_ctx,
        }
    }
}
