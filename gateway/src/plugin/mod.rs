//! WebAssembly plugins: failure predicates and fallbacks written against the WIT
//! package in `wit/`, run by wasmtime.
//!
//! - `bindings.rs`: the only `bindgen!`.
//! - `engine.rs`: the one engine (pooling allocator, epoch clock) and linker.
//! - `cache.rs`: compiled components on disk, compiled by a child process.
//! - `host.rs`: what an instance may touch (a WASI context granting nothing, logging,
//!   the exchange the current call is about).
//! - `log.rs`: what a plugin writes to the log: escaped, cut, within a budget.
//! - `wasi.rs`: WASI in which nothing waits, since calls run on the proxy's threads.
//! - `wasi_http.rs`: `wasi:http`, linked so that components importing it load; every
//!   outgoing request is denied when made.
//! - `instance.rs`: one plugin: instance pool, bounded calls, error accounting.
//! - `convert.rs`: gateway types to and from WIT types.
//! - `judge.rs`: a predicate's judgement, or the `on_plugin_error` policy's.
//! - `answer.rs`: a fallback plugin's response, checked before it reaches a client.
//!
//! A config's plugins load as a `PluginSet` before its runtime is built; a plugin whose
//! declaration and bytes did not change is carried over whole (compiled component and
//! warm instances), and a changed one reuses any compilation of the same bytes.

pub mod answer;
mod bindings;
mod cache;
pub mod convert;
mod engine;
mod host;
mod instance;
mod interest;
mod judge;
mod log;
mod wasi;
mod wasi_http;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ConfigError, ConfigErrors, KeyPath};
use crate::metrics::Metrics;

pub use bindings::types;
pub use host::Exchange;
pub use instance::Plugin;
pub use interest::Interest;
pub use judge::judge;

/// Why a plugin call (or its instance's start) failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("exceeded its memory limit of {0} bytes")]
    Memory(u64),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
    #[error("init returned an error: {0}")]
    InitRefused(String),
    #[error("init failed: {0}")]
    Init(Box<PluginError>),
    #[error("returned a {size} byte body, over its max_response of {limit} bytes")]
    ResponseTooLarge { size: usize, limit: usize },
    #[error("returned {count} headers, over the limit of {limit}")]
    TooManyHeaders { count: usize, limit: usize },
    #[error("returned {size} bytes of headers, over the limit of {limit} bytes")]
    HeadersTooLarge { size: usize, limit: usize },
    #[error("returned an invalid answer: {0}")]
    InvalidAnswer(String),
}

impl PluginError {
    /// Every `kind` label value.
    pub const KINDS: [&'static str; 6] = [
        "timeout",
        "memory",
        "trap",
        "init",
        "response_too_large",
        "invalid_answer",
    ];

    /// The `kind` label of `gateway_plugin_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::Timeout(_) => "timeout",
            PluginError::Memory(_) => "memory",
            PluginError::Trap(_) => "trap",
            PluginError::Instantiate(_) | PluginError::InitRefused(_) | PluginError::Init(_) => {
                "init"
            }
            PluginError::ResponseTooLarge { .. }
            | PluginError::TooManyHeaders { .. }
            | PluginError::HeadersTooLarge { .. } => "response_too_large",
            PluginError::InvalidAnswer(_) => "invalid_answer",
        }
    }
}

/// The plugins of one config, by name.
#[derive(Debug, Default)]
pub struct PluginSet {
    plugins: BTreeMap<String, Arc<Plugin>>,
}

impl PluginSet {
    pub fn get(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.values()
    }

    /// Compiles, links and starts every plugin of `config`, carrying over what
    /// `previous` already has. Every plugin that cannot load is reported, at its
    /// declaration. Runs on a thread of its own, so it may be called from anywhere,
    /// including from inside an async runtime; that thread enters a runtime of its
    /// own because WASI's clocks are Tokio timers.
    pub fn load(
        config: &Config,
        previous: Option<&PluginSet>,
        metrics: &Metrics,
    ) -> Result<PluginSet, ConfigErrors> {
        if config.plugins.is_empty() {
            return Ok(PluginSet::default());
        }
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| vec![(String::new(), format!("cannot start: {e}"))])
                        .and_then(|rt| {
                            let _entered = rt.enter();
                            load_all(config, previous, metrics)
                        })
                })
                .join()
                .unwrap_or_else(|_| Err(vec![(String::new(), "plugin loading panicked".into())]))
        })
        .inspect(|_| release_freed_memory())
        .map_err(|problems| {
            ConfigErrors(
                problems
                    .into_iter()
                    .map(|(name, message)| {
                        let spec = config.plugins.get(&name);
                        ConfigError {
                            file: config.source.clone(),
                            position: spec.map(|s| s.position).unwrap_or_default(),
                            path: KeyPath::root().key("plugins").key(name),
                            message,
                        }
                    })
                    .collect(),
            )
        })
    }
}

/// How long mimalloc keeps freed memory before returning it to the system (its
/// `purge_delay`), plus a margin.
const ALLOCATOR_PURGE_DELAY: Duration = Duration::from_millis(1500);

/// Loading a large component frees tens of MB (wasmtime's read and decompression of the
/// cache entry, instantiation). mimalloc returns freed memory to the system only when a
/// later page is freed after its purge delay; an idle proxy frees none, and the memory
/// would stay resident for good. So, past that delay, one large block is allocated and
/// freed, which runs the purge.
fn release_freed_memory() {
    let _ = std::thread::Builder::new()
        .name("plugin-purge".into())
        .spawn(|| {
            std::thread::sleep(ALLOCATOR_PURGE_DELAY);
            drop(std::hint::black_box(vec![1u8; 4 << 20]));
        });
}

/// `gateway compile-plugin`: a child compiling one component into the cache (`cache.rs`).
pub fn compile_child(dir: &std::path::Path, key: &str) -> std::process::ExitCode {
    let built = cache::compile_child(dir, key, |cache| {
        engine::build_engine(Some(cache)).map_err(|e| format!("{e:#}"))
    });
    match built {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(cache::ChildFailure::Refused(message)) => {
            eprint!("{message}");
            std::process::ExitCode::from(cache::EXIT_REFUSED)
        }
        Err(cache::ChildFailure::Other(message)) => {
            eprint!("{message}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn load_all(
    config: &Config,
    previous: Option<&PluginSet>,
    metrics: &Metrics,
) -> Result<PluginSet, Vec<(String, String)>> {
    let engine = engine::engine(config.server.plugin_cache_dir.as_deref()).map_err(|e| {
        config
            .plugins
            .keys()
            .map(|name| {
                (
                    name.clone(),
                    format!("the WebAssembly engine could not start: {e}"),
                )
            })
            .collect::<Vec<_>>()
    })?;
    let mut plugins = BTreeMap::new();
    let mut problems = Vec::new();
    for spec in config.plugins.values() {
        let kept = previous
            .and_then(|p| p.get(&spec.name))
            .filter(|p| p.spec == *spec);
        if let Some(kept) = kept {
            plugins.insert(spec.name.clone(), Arc::clone(kept));
            continue;
        }
        let compiled = previous
            .into_iter()
            .flat_map(PluginSet::iter)
            .chain(plugins.values())
            .find(|p| p.spec.wasm == spec.wasm)
            .map(|p| p.component.clone());
        let component = match compiled {
            Some(component) => component,
            None => {
                let started = std::time::Instant::now();
                match engine.compile(&spec.name, &spec.wasm) {
                    Ok((component, source)) => {
                        tracing::info!(target: "gateway::plugin", plugin = %spec.name, source = source.as_str(), took_ms = started.elapsed().as_millis() as u64, "plugin component ready");
                        component
                    }
                    Err(e) => {
                        problems.push((
                            spec.name.clone(),
                            format!("`{}` could not be compiled: {e}", spec.path.display()),
                        ));
                        continue;
                    }
                }
            }
        };
        let handles = metrics.for_plugin(&spec.name, &PluginError::KINDS);
        match Plugin::load(spec.clone(), component, engine, handles) {
            Ok(plugin) => {
                plugins.insert(spec.name.clone(), Arc::new(plugin));
            }
            Err(message) => problems.push((spec.name.clone(), message)),
        }
    }
    if problems.is_empty() {
        Ok(PluginSet { plugins })
    } else {
        Err(problems)
    }
}
