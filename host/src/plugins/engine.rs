//! The shared wasmtime [`Engine`] and the epoch ticker that enforces call deadlines.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the engine's epoch advances. A running call checks its deadline (and yields to
/// the async executor) at most this long apart.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

fn base_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // Always on: any plugin's sidecar may set a fuel budget, at start or on a reload.
    config.consume_fuel(true);
    // Guests get a 1 MiB wasm stack, on a 2 MiB fiber stack for async calls.
    config.max_wasm_stack(1 << 20);
    config.async_stack_size(2 << 20);
    config.memory_init_cow(true);
    config
}

fn pooling() -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    // Generous per-component sizes so large guests (JS and Python embed interpreters) fit;
    // the totals bound how many calls can be in flight at once.
    pool.total_component_instances(1000)
        .total_core_instances(4000)
        .total_memories(2000)
        .total_tables(4000)
        .total_stacks(1000)
        .max_core_instances_per_component(64)
        .max_memories_per_component(8)
        .max_tables_per_component(64)
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(8 << 20)
        .table_elements(100_000)
        // Per-call instances touch the same first pages every time: resetting them in place
        // is far cheaper than returning them to the kernel and faulting them in again.
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(128 << 10)
        // Reset only the pages a call dirtied (PAGEMAP_SCAN, Linux 6.7+; ignored elsewhere):
        // no memset of the whole keep-resident region, no madvise, no TLB shootdown, and a
        // slot keeps only the pages its module really uses resident.
        .pagemap_scan(wasmtime::Enabled::Auto);
    pool
}

/// Builds the engine: the pooling allocator (fast instantiation, copy-on-write memory
/// images) when the machine lets it reserve its address space, else on-demand allocation.
pub(crate) fn build(pooled: bool) -> anyhow::Result<Engine> {
    if pooled {
        let mut config = base_config();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling()));
        match Engine::new(&config) {
            Ok(engine) => return Ok(engine),
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable; using on-demand allocation")
            }
        }
    }
    Ok(Engine::new(&base_config())?)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a thread of its own until dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Starts ticking `engine`; fails only when the OS refuses a thread.
    pub(crate) fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("switchboard-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(Self { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
