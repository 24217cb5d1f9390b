//! Running plugin calls: one shared engine and linker, a fresh `Store` per call with the
//! plugin's memory cap, wall-time deadline and optional fuel, and faults turned into reports.

use std::{sync::Arc, time::Instant};

use wasmtime::{
    Engine, Store, StoreLimitsBuilder, Trap, UpdateDeadline,
    component::{HasSelf, Linker, ResourceTable},
};
use wasmtime_wasi::WasiCtx;

use super::{
    bindings::{
        Plugin, PluginPre, exports::switchboard::plugin::listener, switchboard::plugin::types,
    },
    engine::{self, EpochTicker},
    sidecar::Limits,
    state::{CallState, PluginEnv},
};
use crate::config::PluginsConfig;

/// The call deadline passed: the epoch callback turns this into a trap.
#[derive(Debug, thiserror::Error)]
#[error("call exceeded its time limit")]
struct DeadlineExceeded;

/// A call that did not complete: the guest trapped, timed out or hit a limit.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Fault(pub String);

/// The engine, the linker with the host imports, and the epoch ticker.
pub struct Runtime {
    /// Shared by every plugin.
    pub engine: Engine,
    linker: Linker<CallState>,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Builds the engine and links WASI (no preopens, no network) and the plugin imports.
    pub fn new(config: &PluginsConfig) -> anyhow::Result<Self> {
        let engine = engine::build(config.fuel.is_some(), config.pooling)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Self {
            engine,
            linker,
            _ticker: ticker,
        })
    }

    /// Pre-links `component`: fails with a clear reason if it is not a plugin of this world.
    pub fn prepare(
        &self,
        component: &wasmtime::component::Component,
    ) -> anyhow::Result<PluginPre<CallState>> {
        let pre = self.linker.instantiate_pre(component).map_err(|e| {
            anyhow::anyhow!("component needs imports this host does not provide: {e:#}")
        })?;
        PluginPre::new(pre).map_err(|e| {
            anyhow::anyhow!("component does not export switchboard:plugin/listener@0.1.0: {e:#}")
        })
    }

    fn store(
        &self,
        env: &Arc<PluginEnv>,
        limits: &Limits,
        tenant: Option<Arc<str>>,
    ) -> Store<CallState> {
        let state = CallState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .instances(64)
                .tables(64)
                .memories(8)
                .trap_on_grow_failure(true)
                .build(),
            deadline: Instant::now() + limits.call_timeout,
            tenant,
            sends: 0,
            env: env.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        if let Some(fuel) = limits.fuel {
            store
                .set_fuel(fuel)
                .expect("fuel is enabled on the engine whenever a plugin has a budget");
        }
        // Check the deadline at every epoch tick; yield to the executor in between so a long
        // call never holds a tokio worker for more than one tick.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                // tokio's yield defers the task until the I/O driver has run, so busy plugins
                // cannot delay socket events for everyone else.
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        store
    }

    /// Calls `describe` on a fresh instance.
    pub async fn describe(
        &self,
        pre: &PluginPre<CallState>,
        env: &Arc<PluginEnv>,
        limits: &Limits,
    ) -> Result<types::PluginInfo, Fault> {
        let mut store = self.store(env, limits, None);
        let result = async {
            let plugin = pre.instantiate_async(&mut store).await?;
            plugin
                .switchboard_plugin_listener()
                .call_describe(&mut store)
                .await
        }
        .await;
        result.map_err(|e| fault(&e, limits))
    }

    /// Calls `on-message` on a fresh instance.
    pub async fn on_message(
        &self,
        pre: &PluginPre<CallState>,
        env: &Arc<PluginEnv>,
        limits: &Limits,
        from: &types::SessionInfo,
        msg_type: &str,
        content: &str,
    ) -> Result<Result<(), types::Error>, Fault> {
        let mut store = self.store(env, limits, from.tenant_id.as_deref().map(Arc::from));
        let result = async {
            let plugin = pre.instantiate_async(&mut store).await?;
            plugin
                .switchboard_plugin_listener()
                .call_on_message(&mut store, from, msg_type, content)
                .await
        }
        .await;
        result.map_err(|e| fault(&e, limits))
    }

    /// Calls `on-connect` (`connected`) or `on-disconnect` on a fresh instance.
    pub async fn on_lifecycle(
        &self,
        pre: &PluginPre<CallState>,
        env: &Arc<PluginEnv>,
        limits: &Limits,
        session: &types::SessionInfo,
        connected: bool,
    ) -> Result<(), Fault> {
        let mut store = self.store(env, limits, session.tenant_id.as_deref().map(Arc::from));
        let result = async {
            let plugin = pre.instantiate_async(&mut store).await?;
            let listener: &listener::Guest = plugin.switchboard_plugin_listener();
            if connected {
                listener.call_on_connect(&mut store, session).await
            } else {
                listener.call_on_disconnect(&mut store, session).await
            }
        }
        .await;
        result.map_err(|e| fault(&e, limits))
    }
}

/// A one-line reason for a failed call, naming the limit that stopped it.
fn fault(error: &wasmtime::Error, limits: &Limits) -> Fault {
    if error.downcast_ref::<DeadlineExceeded>().is_some() {
        return Fault(format!(
            "exceeded its time limit of {:?}",
            limits.call_timeout
        ));
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => return Fault("ran out of fuel".into()),
        Some(Trap::UnreachableCodeReached) => {
            return Fault("trapped: unreachable (a panic or abort in the plugin)".into());
        }
        Some(trap) => return Fault(format!("trapped: {trap}")),
        None => {}
    }
    let text = format!("{error:#}");
    if text.contains("growing memory") || text.contains("memory") && text.contains("limit") {
        return Fault(format!(
            "exceeded its memory limit of {} MiB",
            limits.memory_bytes >> 20
        ));
    }
    Fault(format!(
        "failed: {}",
        text.lines().next().unwrap_or("unknown error")
    ))
}
