//! The one wasmtime engine: component model, the pooling allocator, and an epoch
//! clock that ticks every millisecond so that every call can be given a deadline.
//! Calls are synchronous, on the calling thread's stack: no fiber to switch to and no
//! timer to arm per call (`wasi.rs` makes sure that nothing a plugin calls waits).
//! Built on first use and kept for the life of the process, so components compiled
//! for one config stay valid for the next; the first config's `plugin_cache_dir` is
//! the cache for the life of the process (a change is reported as needing a restart).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Cache, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::host;
use super::cache::{Entry, PluginCache};
use super::host::HostState;
use super::{wasi, wasi_http};
use crate::config::{MAX_PLUGIN_MEMORY, WasmFile};

/// How often the epoch advances: the granularity of every plugin deadline.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Instances (and their memories) the pool holds, across all plugins.
const POOL_SLOTS: u32 = 512;

pub struct PluginEngine {
    pub engine: Engine,
    pub linker: Linker<HostState>,
    cache: Option<PluginCache>,
    epoch: Arc<EpochClock>,
}

/// Where the epoch counter stands against wall time. The ticker may wake late and
/// then catch up several ticks at once; a deadline set while it lags would count from
/// an epoch already past in wall time and cut the call early by the lag. Deadlines add
/// the lag (`PluginEngine::deadline`).
#[derive(Debug)]
struct EpochClock {
    start: Instant,
    /// Ticks the ticker has counted so far.
    counted: AtomicU64,
}

impl EpochClock {
    /// Ticks wall time says are due but not yet counted.
    fn lag(&self) -> u64 {
        let due = self.start.elapsed().as_nanos() / EPOCH_TICK.as_nanos().max(1);
        u64::try_from(due)
            .unwrap_or(u64::MAX)
            .saturating_sub(self.counted.load(Ordering::Acquire))
    }
}

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Loaded from the on-disk cache.
    Cache,
    /// Compiled now (by a child process into the cache, or in this process).
    Compiled,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Compiled => "compiled",
        }
    }
}

/// The process's engine, or why it could not be built (reported on every plugin).
/// `cache_dir` counts on the first call only.
pub fn engine(cache_dir: Option<&Path>) -> Result<&'static PluginEngine, String> {
    static ENGINE: OnceLock<Result<PluginEngine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| PluginEngine::new(cache_dir).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(Clone::clone)
}

/// The engine every compilation uses, this process's and a compiling child's alike:
/// the cache key covers these settings, so both must come from here.
pub fn build_engine(cache: Option<Cache>) -> wasmtime::Result<Engine> {
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
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .cache(cache);
    Engine::new(&config)
}

impl PluginEngine {
    fn new(cache_dir: Option<&Path>) -> wasmtime::Result<Self> {
        let (cache, wasmtime_cache) = match cache_dir.map(PluginCache::open) {
            Some(Ok((cache, wasmtime_cache))) => (Some(cache), Some(wasmtime_cache)),
            Some(Err(e)) => {
                tracing::warn!(target: "gateway::plugin", error = %e, "plugin cache disabled: every start compiles its plugins");
                (None, None)
            }
            None => (None, None),
        };
        let engine = build_engine(wasmtime_cache)?;

        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker)?;
        wasi_http::add_to_linker(&mut linker)?;
        host::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |state| state)?;

        let weak = engine.weak();
        let epoch = Arc::new(EpochClock {
            start: Instant::now(),
            counted: AtomicU64::new(0),
        });
        let clock = Arc::clone(&epoch);
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                // One tick per EPOCH_TICK of wall time, catching up after a late wake:
                // counting naps instead would stretch every deadline by what each nap
                // oversleeps (10-30 % on a busy machine).
                let tick = EPOCH_TICK.as_nanos();
                let start = clock.start;
                let mut ticks: u128 = 0;
                while let Some(engine) = weak.upgrade() {
                    let due = start.elapsed().as_nanos() / tick;
                    while ticks < due {
                        engine.increment_epoch();
                        ticks += 1;
                        clock.counted.fetch_add(1, Ordering::Release);
                    }
                    drop(engine);
                    let next = u64::try_from((ticks + 1) * tick).unwrap_or(u64::MAX);
                    std::thread::sleep(Duration::from_nanos(next).saturating_sub(start.elapsed()));
                }
            })?;
        Ok(Self {
            engine,
            linker,
            cache,
            epoch,
        })
    }

    /// The component for `wasm`: from the cache when an intact entry is there, else
    /// compiled by a child process into the cache and loaded from it, else (no cache,
    /// or no child could run) compiled here. Errors say why the component was refused.
    pub fn compile(&self, name: &str, wasm: &WasmFile) -> Result<(Component, Source), String> {
        let bytes = wasm.read()?;
        let in_process = || {
            Component::new(&self.engine, &bytes)
                .map(|c| (c, Source::Compiled))
                .map_err(|e| format!("{e:#}"))
        };
        let Some(cache) = &self.cache else {
            return in_process();
        };
        let key = PluginCache::key(&self.engine, wasm);
        let mut source = Source::Cache;
        let mut entry = cache.check(&key);
        if entry != Entry::Verified {
            if let Entry::Corrupt(why) = &entry {
                tracing::warn!(target: "gateway::plugin", plugin = name, dir = %cache.dir().display(), why = why.as_str(), "plugin cache entry corrupt: deleted, compiling again");
            }
            source = Source::Compiled;
            entry = match cache.compile_in_child(&key, &bytes) {
                Ok(()) => cache.check(&key),
                Err(Ok(refused)) => return Err(refused),
                Err(Err(e)) => Entry::Corrupt(e.to_string()),
            };
        }
        if entry != Entry::Verified {
            tracing::warn!(target: "gateway::plugin", plugin = name, entry = ?entry, "plugin cache unusable for this component: compiling in this process");
            // wasmtime's lookup must not find an entry this process cannot vouch for.
            if let Err(e) = cache.sweep_unrecorded() {
                tracing::warn!(target: "gateway::plugin", error = %e, "plugin cache sweep failed");
            }
        }
        let hits = cache.hits();
        let (component, _) = in_process()?;
        if cache.hits() == hits {
            if entry == Entry::Verified {
                tracing::warn!(target: "gateway::plugin", plugin = name, "plugin cache: wasmtime did not find the checked entry; compiled in this process");
            }
            source = Source::Compiled;
        }
        Ok((component, source))
    }
}

impl PluginEngine {
    /// The epoch deadline (ticks from the counter's value now) for a call that may
    /// run `limit` of wall time from now: `ticks(limit)` plus what the counter lags.
    pub fn deadline(&self, limit: Duration) -> u64 {
        ticks(limit).saturating_add(self.epoch.lag())
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
    fn a_deadline_set_while_the_ticker_lags_adds_the_lag() {
        // The ticker has counted 3 ticks, wall time says at least 10 are due: a call
        // armed now must not be cut 7 ticks early when the ticker catches up.
        let clock = EpochClock {
            start: Instant::now() - EPOCH_TICK * 10,
            counted: AtomicU64::new(3),
        };
        let lag = clock.lag();
        assert!((7..=9).contains(&lag), "{lag}");
        clock.counted.store(1_000, Ordering::Release);
        assert_eq!(clock.lag(), 0, "a counter ahead of wall time lags nothing");
    }

    #[test]
    fn deadlines_round_up_and_add_the_tick_in_progress() {
        assert_eq!(ticks(Duration::from_millis(10)), 11);
        assert_eq!(ticks(Duration::from_micros(1500)), 3);
        assert_eq!(ticks(Duration::from_millis(1)), 2);
    }
}
