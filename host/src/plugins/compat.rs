//! Components of `switchboard:plugin@0.1.0`, adapted to the current contract: their imports
//! convert their types and call the current implementation, and their exports are called
//! through [`Contract`] and [`Instance`], which hide the version from the rest of the host.

use wasmtime::{
    Store,
    component::{Component, InstancePre},
};

use super::{
    bindings::{
        self as current,
        switchboard::plugin as now,
        v0_1::{self, switchboard::plugin as old},
    },
    state::CallState,
};

/// The contract versions the host serves, newest first.
pub(crate) const VERSIONS: [&str; 2] = ["0.2.0", "0.1.0"];

/// A component linked against the contract version it exports.
pub(crate) enum Contract {
    /// `switchboard:plugin@0.2.0`.
    V0_2(current::PluginPre<CallState>),
    /// `switchboard:plugin@0.1.0`.
    V0_1(v0_1::PluginPre<CallState>),
}

/// An instance of either version.
pub(crate) enum Instance {
    /// `switchboard:plugin@0.2.0`.
    V0_2(current::Plugin),
    /// `switchboard:plugin@0.1.0`.
    V0_1(v0_1::Plugin),
}

impl Contract {
    /// The version `component` exports: the newest it has.
    pub(crate) fn new(pre: InstancePre<CallState>, component: &Component) -> anyhow::Result<Self> {
        let exports = |version: &str| {
            component
                .get_export_index(None, format!("switchboard:plugin/listener@{version}"))
                .is_some()
        };
        if exports("0.2.0") {
            return Ok(Self::V0_2(current::PluginPre::new(pre)?));
        }
        if exports("0.1.0") {
            return Ok(Self::V0_1(v0_1::PluginPre::new(pre)?));
        }
        anyhow::bail!(
            "component does not export switchboard:plugin/listener of a served contract version ({})",
            VERSIONS.join(", ")
        )
    }

    /// The contract version, e.g. `0.2.0`.
    pub(crate) fn version(&self) -> &'static str {
        match self {
            Self::V0_2(_) => VERSIONS[0],
            Self::V0_1(_) => VERSIONS[1],
        }
    }

    pub(crate) async fn instantiate(
        &self,
        store: &mut Store<CallState>,
    ) -> wasmtime::Result<Instance> {
        Ok(match self {
            Self::V0_2(pre) => Instance::V0_2(pre.instantiate_async(store).await?),
            Self::V0_1(pre) => Instance::V0_1(pre.instantiate_async(store).await?),
        })
    }
}

impl Instance {
    pub(crate) async fn describe(
        &self,
        store: &mut Store<CallState>,
    ) -> wasmtime::Result<now::types::PluginInfo> {
        Ok(match self {
            Self::V0_2(p) => p.switchboard_plugin_listener().call_describe(store).await?,
            Self::V0_1(p) => {
                let info = p.switchboard_plugin_listener().call_describe(store).await?;
                now::types::PluginInfo {
                    name: info.name,
                    version: info.version,
                    message_types: info.message_types,
                    lifecycle_events: info.lifecycle_events,
                }
            }
        })
    }

    pub(crate) async fn on_message(
        &self,
        store: &mut Store<CallState>,
        from: &now::types::SessionInfo,
        msg_type: &str,
        content: &str,
    ) -> wasmtime::Result<Result<(), now::types::Error>> {
        Ok(match self {
            Self::V0_2(p) => {
                p.switchboard_plugin_listener()
                    .call_on_message(store, from, msg_type, content)
                    .await?
            }
            Self::V0_1(p) => p
                .switchboard_plugin_listener()
                .call_on_message(store, &session(from), msg_type, content)
                .await?
                .map_err(error_now),
        })
    }

    pub(crate) async fn on_lifecycle(
        &self,
        store: &mut Store<CallState>,
        session_info: &now::types::SessionInfo,
        connected: bool,
    ) -> wasmtime::Result<()> {
        match (self, connected) {
            (Self::V0_2(p), true) => {
                p.switchboard_plugin_listener()
                    .call_on_connect(store, session_info)
                    .await
            }
            (Self::V0_2(p), false) => {
                p.switchboard_plugin_listener()
                    .call_on_disconnect(store, session_info)
                    .await
            }
            (Self::V0_1(p), true) => {
                p.switchboard_plugin_listener()
                    .call_on_connect(store, &session(session_info))
                    .await
            }
            (Self::V0_1(p), false) => {
                p.switchboard_plugin_listener()
                    .call_on_disconnect(store, &session(session_info))
                    .await
            }
        }
    }
}

fn session(s: &now::types::SessionInfo) -> old::types::SessionInfo {
    old::types::SessionInfo {
        session_id: s.session_id.clone(),
        user: old::types::UserRef {
            user_type: s.user.user_type,
            user_id: s.user.user_id.clone(),
        },
        tenant_id: s.tenant_id.clone(),
    }
}

fn user_now(u: old::types::UserRef) -> now::types::UserRef {
    now::types::UserRef {
        user_type: u.user_type,
        user_id: u.user_id,
    }
}

fn target_now(t: old::types::Target) -> now::types::Target {
    use now::types::Target as T;
    match t {
        old::types::Target::Session(id) => T::Session(id),
        old::types::Target::User(u) => T::User(user_now(u)),
        old::types::Target::Users(us) => T::Users(us.into_iter().map(user_now).collect()),
        old::types::Target::UserType(n) => T::UserType(n),
        old::types::Target::Everyone => T::Everyone,
    }
}

fn error_now(e: old::types::Error) -> now::types::Error {
    match e {
        old::types::Error::InvalidContent(m) => now::types::Error::InvalidContent(m),
        old::types::Error::Forbidden(m) => now::types::Error::Forbidden(m),
        old::types::Error::Other(m) => now::types::Error::Other(m),
    }
}

fn error_old(e: now::types::Error) -> old::types::Error {
    match e {
        now::types::Error::InvalidContent(m) => old::types::Error::InvalidContent(m),
        now::types::Error::Forbidden(m) => old::types::Error::Forbidden(m),
        now::types::Error::Other(m) => old::types::Error::Other(m),
    }
}

fn level_now(l: old::types::Level) -> now::types::Level {
    match l {
        old::types::Level::Trace => now::types::Level::Trace,
        old::types::Level::Debug => now::types::Level::Debug,
        old::types::Level::Info => now::types::Level::Info,
        old::types::Level::Warn => now::types::Level::Warn,
        old::types::Level::Error => now::types::Level::Error,
    }
}

impl old::types::Host for CallState {}

impl old::sender::Host for CallState {
    fn send(
        &mut self,
        to: old::types::Target,
        msg_type: String,
        content: String,
    ) -> Result<(), old::types::Error> {
        now::sender::Host::send(self, target_now(to), msg_type, content).map_err(error_old)
    }

    fn send_to_tenant(
        &mut self,
        tenant_id: Option<String>,
        to: old::types::Target,
        msg_type: String,
        content: String,
    ) -> Result<(), old::types::Error> {
        now::sender::Host::send_to_tenant(self, tenant_id, target_now(to), msg_type, content)
            .map_err(error_old)
    }
}

impl old::presence::Host for CallState {
    async fn is_online(&mut self, user: old::types::UserRef) -> bool {
        now::presence::Host::is_online(self, user_now(user)).await
    }

    async fn online_users(&mut self, user_type: u32) -> Vec<String> {
        now::presence::Host::online_users(self, user_type).await
    }
}

impl old::logging::Host for CallState {
    fn log(&mut self, level: old::types::Level, message: String) {
        now::logging::Host::log(self, level_now(level), message);
    }
}

impl old::config::Host for CallState {
    fn get(&mut self, key: String) -> Option<String> {
        now::config::Host::get(self, key)
    }
}
