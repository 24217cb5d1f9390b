//! Running plugin calls: one shared engine and linker, a fresh `Store` per call with the
//! plugin's memory cap, wall-time deadline and optional fuel, and faults turned into reports.

use std::{sync::Arc, time::Instant};

use anyhow::Context as _;
use wasmtime::{
    Engine, Store, Trap, UpdateDeadline,
    component::{HasSelf, Linker, ResourceTable},
};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::WasiHttpCtx;

use super::{
    bindings::{self, switchboard::plugin::types, v0_1},
    compat::{Contract, Instance},
    engine::{self, EpochTicker},
    escape::escape_control,
    kv::StateStore,
    limiter::{MemoryBudget, MemoryCapExceeded},
    outbound_http::CallHttp,
    sidecar::Limits,
    state::{CallState, PluginEnv},
    stderr::StderrTail,
};
use crate::{config::PluginsConfig, via::Via};

/// The call deadline passed: the epoch callback turns this into a trap.
#[derive(Debug, thiserror::Error)]
#[error("call exceeded its time limit")]
struct DeadlineExceeded;

/// A call that did not complete: the guest trapped, timed out or hit a limit.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub(crate) struct Fault {
    /// What stopped the call, naming the limit; safe to show to clients.
    pub reason: String,
    /// The end of what the guest wrote to stderr (e.g. its panic message): for the operator's
    /// log and status, not for clients.
    pub stderr: Option<String>,
}

/// The engine, the linker with the host imports, the plugins' state store and the epoch
/// ticker.
pub struct Runtime {
    /// Shared by every plugin.
    pub engine: Engine,
    linker: Linker<CallState>,
    /// Where every plugin's key-value state lives; outlives plugin versions, so a reload
    /// keeps the state.
    pub(crate) state: Arc<StateStore>,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the engine and links WASI (no preopens, no sockets), `wasi:http` (checked per
    /// plugin) and the plugin imports of
    /// every served contract version, with plugin state in memory.
    pub fn new(config: &PluginsConfig) -> anyhow::Result<Self> {
        Self::with_state(config, StateStore::memory(config))
    }

    /// [`Runtime::new`] with plugin state in `state`.
    pub fn with_state(config: &PluginsConfig, state: StateStore) -> anyhow::Result<Self> {
        let engine = engine::build(config.pooling)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // For every component: one that imports it loads, and reaches only what its sidecar
        // allows (nothing without `allowed_hosts`).
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        v0_1::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        let ticker = EpochTicker::start(engine.clone()).context("starting the epoch thread")?;
        Ok(Self {
            engine,
            linker,
            state: Arc::new(state),
            _ticker: ticker,
        })
    }

    /// Pre-links `component`: fails with a clear reason if it is not a plugin of a served
    /// contract version.
    pub(crate) fn prepare(
        &self,
        component: &wasmtime::component::Component,
    ) -> anyhow::Result<Contract> {
        let pre = self.linker.instantiate_pre(component).map_err(|e| {
            anyhow::anyhow!("component needs imports this host does not provide: {e:#}")
        })?;
        Contract::new(pre, component)
    }

    /// Links `component` as a load does, and returns the contract version it serves (e.g.
    /// `0.2.0`); fails with the reason a load would give.
    pub fn link(&self, component: &wasmtime::component::Component) -> anyhow::Result<&'static str> {
        self.prepare(component).map(|c| c.version())
    }

    fn store(
        &self,
        env: &Arc<PluginEnv>,
        limits: &Limits,
        (tenant, via): (Option<Arc<str>>, Via),
    ) -> wasmtime::Result<Store<CallState>> {
        let stderr = StderrTail::default();
        let deadline = Instant::now() + limits.call_timeout;
        let state = CallState {
            wasi: WasiCtx::builder().stderr(stderr.clone()).build(),
            table: ResourceTable::new(),
            limits: MemoryBudget::new(limits.memory_bytes),
            deadline,
            tenant,
            sends: 0,
            via,
            env: env.clone(),
            stderr,
            http_ctx: WasiHttpCtx::new(),
            http: CallHttp {
                grant: env.http.clone(),
                requests_end: requests_end(deadline, limits),
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // Fuel is always on in the engine (a sidecar may ask for it at any time); a plugin
        // without a budget gets one it cannot spend.
        store.set_fuel(limits.fuel.unwrap_or(u64::MAX))?;
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
        Ok(store)
    }

    /// An instance for one call: from `pool` when it has one, else fresh. The store is set up
    /// for this call (deadline, fuel, tenant scope) either way.
    async fn acquire(
        &self,
        pre: &Contract,
        env: &Arc<PluginEnv>,
        limits: &Limits,
        (tenant, via): (Option<Arc<str>>, Via),
        pool: Option<&InstancePool>,
    ) -> wasmtime::Result<(Store<CallState>, Instance)> {
        if let Some((mut store, plugin)) = pool.and_then(InstancePool::take) {
            let state = store.data_mut();
            state.deadline = Instant::now() + limits.call_timeout;
            state.http.requests_end = requests_end(state.deadline, limits);
            state.tenant = tenant;
            state.via = via;
            state.sends = 0;
            state.stderr.clear();
            store.set_epoch_deadline(1);
            store.set_fuel(limits.fuel.unwrap_or(u64::MAX))?;
            return Ok((store, plugin));
        }
        let mut store = self.store(env, limits, (tenant, via))?;
        let plugin = pre.instantiate(&mut store).await?;
        Ok((store, plugin))
    }

    /// Calls `describe` on a fresh instance.
    pub(crate) async fn describe(
        &self,
        pre: &Contract,
        env: &Arc<PluginEnv>,
        limits: &Limits,
    ) -> Result<types::PluginInfo, Fault> {
        let stderr = Slot::default();
        within(limits, &stderr, async {
            let (mut store, plugin) = self
                .acquire(pre, env, limits, (None, Via::default()), None)
                .await?;
            stderr.set(&store);
            plugin.describe(&mut store).await
        })
        .await
    }

    /// Calls `on-message`, on a pooled instance when the plugin has a pool.
    #[expect(clippy::too_many_arguments, reason = "one call's full context")]
    pub(crate) async fn on_message(
        &self,
        pre: &Contract,
        env: &Arc<PluginEnv>,
        limits: &Limits,
        pool: Option<&InstancePool>,
        from: &types::SessionInfo,
        via: Via,
        msg_type: &str,
        content: &str,
    ) -> Result<Result<(), types::Error>, Fault> {
        let tenant = from.tenant_id.as_deref().map(Arc::from);
        let stderr = Slot::default();
        within(limits, &stderr, async {
            let (mut store, plugin) = self.acquire(pre, env, limits, (tenant, via), pool).await?;
            stderr.set(&store);
            let result = plugin
                .on_message(&mut store, from, msg_type, content)
                .await?;
            // An instance that trapped or timed out may be in any state: only clean ones go
            // back (on a fault, `?` above or the timeout drops the store).
            if let Some(pool) = pool {
                pool.put(store, plugin);
            }
            Ok(result)
        })
        .await
    }

    /// Calls `on-connect` (`connected`) or `on-disconnect`, pooled like `on_message`.
    #[expect(clippy::too_many_arguments, reason = "one call's full context")]
    pub(crate) async fn on_lifecycle(
        &self,
        pre: &Contract,
        env: &Arc<PluginEnv>,
        limits: &Limits,
        pool: Option<&InstancePool>,
        session: &types::SessionInfo,
        via: Via,
        connected: bool,
    ) -> Result<(), Fault> {
        let tenant = session.tenant_id.as_deref().map(Arc::from);
        let stderr = Slot::default();
        within(limits, &stderr, async {
            let (mut store, plugin) = self.acquire(pre, env, limits, (tenant, via), pool).await?;
            stderr.set(&store);
            plugin.on_lifecycle(&mut store, session, connected).await?;
            if let Some(pool) = pool {
                pool.put(store, plugin);
            }
            Ok(())
        })
        .await
    }
}

/// When a call's outbound requests must end: a tenth of its time limit before its deadline.
fn requests_end(deadline: Instant, limits: &Limits) -> tokio::time::Instant {
    tokio::time::Instant::from_std(deadline - CallHttp::margin(limits.call_timeout))
}

/// Where a call's stderr goes, known once its instance exists; read after a fault.
#[derive(Default)]
struct Slot(parking_lot::Mutex<Option<StderrTail>>);

impl Slot {
    fn set(&self, store: &Store<CallState>) {
        *self.0.lock() = Some(store.data().stderr.clone());
    }

    fn summary(&self) -> Option<String> {
        self.0.lock().as_ref()?.summary()
    }
}

/// Runs one call into a plugin (instantiation included) with a wall-clock deadline of the
/// plugin's `call_timeout`. Epoch interruption stops a guest that runs wasm past its deadline,
/// but not one waiting inside a host call (a WASI clock or poll): the timeout drops the call's
/// future, which cancels the call and drops its store, whatever the guest waits on.
async fn within<T>(
    limits: &Limits,
    stderr: &Slot,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> Result<T, Fault> {
    match tokio::time::timeout(limits.call_timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(fault(&e, limits, stderr.summary())),
        Err(_elapsed) => Err(time_limit(limits)),
    }
}

/// Idle instances of one plugin version, for plugins whose instantiation is too slow to pay on
/// every call (JS and Python embed an interpreter). Reuse trades the isolation of a fresh
/// instance per call for speed: a plugin in a pool sees memory left by its earlier calls. The
/// pool holds at most `capacity` idle instances; more concurrent calls instantiate fresh ones.
pub(crate) struct InstancePool {
    idle: parking_lot::Mutex<Vec<(Store<CallState>, Instance)>>,
    capacity: usize,
}

impl InstancePool {
    /// An empty pool that keeps up to `capacity` idle instances.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            idle: parking_lot::Mutex::new(Vec::with_capacity(capacity)),
            capacity,
        }
    }

    fn take(&self) -> Option<(Store<CallState>, Instance)> {
        self.idle.lock().pop()
    }

    fn put(&self, store: Store<CallState>, plugin: Instance) {
        let mut idle = self.idle.lock();
        if idle.len() < self.capacity {
            idle.push((store, plugin));
        }
    }
}

fn time_limit(limits: &Limits) -> Fault {
    Fault {
        reason: format!("exceeded its time limit of {:?}", limits.call_timeout),
        stderr: None,
    }
}

/// A one-line reason for a failed call, naming the limit that stopped it, with the end of the
/// guest's stderr (a panic message) when it wrote any.
fn fault(error: &wasmtime::Error, limits: &Limits, stderr: Option<String>) -> Fault {
    let reason = |reason: String| Fault {
        reason,
        stderr: stderr.clone(),
    };
    if error.downcast_ref::<DeadlineExceeded>().is_some() {
        return time_limit(limits);
    }
    if error.downcast_ref::<MemoryCapExceeded>().is_some() {
        return reason(format!(
            "exceeded its memory limit of {} MiB",
            limits.memory_bytes >> 20
        ));
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => return reason("ran out of fuel".into()),
        Some(Trap::UnreachableCodeReached) => {
            return reason("trapped: unreachable (a panic or abort in the plugin)".into());
        }
        Some(trap) => return reason(format!("trapped: {trap}")),
        None => {}
    }
    let text = format!("{error:#}");
    if text.contains("growing memory") || text.contains("memory") && text.contains("limit") {
        return reason(format!(
            "exceeded its memory limit of {} MiB",
            limits.memory_bytes >> 20
        ));
    }
    reason(format!(
        "failed: {}",
        escape_control(text.lines().next().unwrap_or("unknown error"))
    ))
}
