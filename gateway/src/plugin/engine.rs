//! The one wasmtime engine: component model, the pooling allocator, and an epoch
//! clock that ticks every millisecond so that every call can be given a deadline.
//! Calls are synchronous, on the calling thread's stack: no fiber to switch to and no
//! timer to arm per call (`wasi.rs` makes sure that nothing a plugin calls waits).
//! Built on first use and kept for the life of the process, so components compiled
//! for one config stay valid for the next.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::host;
use super::host::HostState;
use super::wasi;
use crate::config::MAX_PLUGIN_MEMORY;

/// How often the epoch advances: the granularity of every plugin deadline.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Instances (and their memories) the pool holds, across all plugins.
const POOL_SLOTS: u32 = 512;

pub struct PluginEngine {
    pub engine: Engine,
    pub linker: Linker<HostState>,
}

/// The process's engine, or why it could not be built (reported on every plugin).
pub fn engine() -> Result<&'static PluginEngine, String> {
    static ENGINE: OnceLock<Result<PluginEngine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| PluginEngine::new().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(Clone::clone)
}

impl PluginEngine {
    fn new() -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(POOL_SLOTS)
            .total_core_instances(POOL_SLOTS)
            .total_memories(POOL_SLOTS)
            .total_tables(POOL_SLOTS)
            .max_memory_size(usize::try_from(MAX_PLUGIN_MEMORY).unwrap_or(usize::MAX));
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker)?;
        host::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |state| state)?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                // One tick per EPOCH_TICK of wall time, catching up after a late wake:
                // counting naps instead would stretch every deadline by what each nap
                // oversleeps (10-30 % on a busy machine).
                let tick = EPOCH_TICK.as_nanos();
                let start = Instant::now();
                let mut ticks: u128 = 0;
                while let Some(engine) = weak.upgrade() {
                    let due = start.elapsed().as_nanos() / tick;
                    while ticks < due {
                        engine.increment_epoch();
                        ticks += 1;
                    }
                    drop(engine);
                    let next = u64::try_from((ticks + 1) * tick).unwrap_or(u64::MAX);
                    std::thread::sleep(Duration::from_nanos(next).saturating_sub(start.elapsed()));
                }
            })?;
        Ok(Self { engine, linker })
    }

    pub fn compile(&self, bytes: &[u8]) -> wasmtime::Result<Component> {
        Component::new(&self.engine, bytes)
    }
}

/// Epoch ticks for a wall-time limit: rounded up, plus one because the tick in
/// progress when the deadline is set may be almost over.
pub fn ticks(limit: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos().max(1);
    u64::try_from(limit.as_nanos().div_ceil(tick)).unwrap_or(u64::MAX) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_and_add_the_tick_in_progress() {
        assert_eq!(ticks(Duration::from_millis(10)), 11);
        assert_eq!(ticks(Duration::from_micros(1500)), 3);
        assert_eq!(ticks(Duration::from_millis(1)), 2);
    }
}
