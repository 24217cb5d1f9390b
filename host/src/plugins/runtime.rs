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

    /// An instance for one call: from `pool` when it has one, else fresh. The store is set up
    /// for this call (deadline, fuel, tenant scope) either way.
    async fn acquire(
        &self,
        pre: &PluginPre<CallState>,
        env: &Arc<PluginEnv>,
        limits: &Limits,
        tenant: Option<Arc<str>>,
        pool: Option<&InstancePool>,
    ) -> wasmtime::Result<(Store<CallState>, Plugin)> {
        if let Some((mut store, plugin)) = pool.and_then(InstancePool::take) {
            let state = store.data_mut();
            state.deadline = Instant::now() + limits.call_timeout;
            state.tenant = tenant;
            state.sends = 0;
            store.set_epoch_deadline(1);
            if let Some(fuel) = limits.fuel {
                store.set_fuel(fuel)?;
            }
            return Ok((store, plugin));
        }
        let mut store = self.store(env, limits, tenant);
        let plugin = pre.instantiate_async(&mut store).await?;
        Ok((store, plugin))
    }

    /// Calls `describe` on a fresh instance.
    pub async fn describe(
        &self,
        pre: &PluginPre<CallState>,
        env: &Arc<PluginEnv>,
        limits: &Limits,
    ) -> Result<types::PluginInfo, Fault> {
        let result = async {
            let (mut store, plugin) = self.acquire(pre, env, limits, None, None).await?;
            plugin
                .switchboard_plugin_listener()
                .call_describe(&mut store)
                .await
        }
        .await;
        result.map_err(|e| fault(&e, limits))
    }

    /// Calls `on-message`, on a pooled instance when the plugin has a pool.
    #[expect(clippy::too_many_arguments, reason = "one call's full context")]
    pub async fn on_message(
        &self,
        pre: &PluginPre<CallState>,
        env: &Arc<PluginEnv>,
        limits: &Limits,
        pool: Option<&InstancePool>,
        from: &types::SessionInfo,
        msg_type: &str,
        content: &str,
    ) -> Result<Result<(), types::Error>, Fault> {
        let tenant = from.tenant_id.as_deref().map(Arc::from);
        let (mut store, plugin) = self
            .acquire(pre, env, limits, tenant, pool)
            .await
            .map_err(|e| fault(&e, limits))?;
        let result = plugin
            .switchboard_plugin_listener()
            .call_on_message(&mut store, from, msg_type, content)
            .await;
        // An instance that trapped may be in any state: only clean ones go back.
        if let (Ok(_), Some(pool)) = (&result, pool) {
            pool.put(store, plugin);
        }
        result.map_err(|e| fault(&e, limits))
    }

    /// Calls `on-connect` (`connected`) or `on-disconnect`, pooled like `on_message`.
    pub async fn on_lifecycle(
        &self,
        pre: &PluginPre<CallState>,
        env: &Arc<PluginEnv>,
        limits: &Limits,
        pool: Option<&InstancePool>,
        session: &types::SessionInfo,
        connected: bool,
    ) -> Result<(), Fault> {
        let tenant = session.tenant_id.as_deref().map(Arc::from);
        let (mut store, plugin) = self
            .acquire(pre, env, limits, tenant, pool)
            .await
            .map_err(|e| fault(&e, limits))?;
        let listener: &listener::Guest = plugin.switchboard_plugin_listener();
        let result = if connected {
            listener.call_on_connect(&mut store, session).await
        } else {
            listener.call_on_disconnect(&mut store, session).await
        };
        if let (Ok(()), Some(pool)) = (&result, pool) {
            pool.put(store, plugin);
        }
        result.map_err(|e| fault(&e, limits))
    }
}

/// Idle instances of one plugin version, for plugins whose instantiation is too slow to pay on
/// every call (JS and Python embed an interpreter). Reuse trades the isolation of a fresh
/// instance per call for speed: a plugin in a pool sees memory left by its earlier calls. The
/// pool holds at most `capacity` idle instances; more concurrent calls instantiate fresh ones.
pub struct InstancePool {
    idle: parking_lot::Mutex<Vec<(Store<CallState>, Plugin)>>,
    capacity: usize,
}

impl InstancePool {
    /// An empty pool that keeps up to `capacity` idle instances.
    pub fn new(capacity: usize) -> Self {
        Self {
            idle: parking_lot::Mutex::new(Vec::with_capacity(capacity)),
            capacity,
        }
    }

    fn take(&self) -> Option<(Store<CallState>, Plugin)> {
        self.idle.lock().pop()
    }

    fn put(&self, store: Store<CallState>, plugin: Plugin) {
        let mut idle = self.idle.lock();
        if idle.len() < self.capacity {
            idle.push((store, plugin));
        }
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
