//! One loaded plugin: its pre-linked component, a pool of initialised instances, and
//! the two calls (`classify`, `respond`), each bounded in time (epoch deadline) and
//! memory (the store's limiter). Calls run to the end on the caller's thread: a plugin
//! cannot wait (`wasi.rs`), so the epoch deadline bounds all of a call's time. An
//! instance that failed in any way is dropped; the next call gets a fresh one.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::Component;

use super::PluginError;
use super::bindings::fallback::{Fallback, FallbackPre};
use super::bindings::predicate::{FailurePredicate, FailurePredicatePre};
use super::bindings::types::{
    FallbackAction, FallbackContext, Outcome, SyntheticResponse, Verdict,
};
use super::engine::PluginEngine;
use super::host::{Exchange, HostState};
use super::interest::Interest;
use super::log::PluginLog;
use crate::config::{PluginKind, PluginSpec};
use crate::metrics::PluginMetrics;
use crate::throttled_log::ThrottledLog;

/// The WIT package plugins are built against, named in errors about a plugin that does
/// not fit it.
const CONTRACT: &str = "edge-gateway:plugin@0.5.0";

/// The contract version a component imports, when it is not this gateway's.
fn built_for(component: &Component, engine: &wasmtime::Engine) -> Option<String> {
    let (package, _) = CONTRACT.split_once('@')?;
    component
        .component_type()
        .imports(engine)
        .filter_map(|(name, _)| {
            let (interface, version) = name.split_once('@')?;
            interface
                .starts_with(&format!("{package}/"))
                .then(|| format!("{package}@{version}"))
        })
        .find(|imported| imported != CONTRACT)
}

enum Pre {
    Predicate(FailurePredicatePre<HostState>),
    Fallback(FallbackPre<HostState>),
}

enum Exports {
    Predicate(FailurePredicate),
    Fallback(Fallback),
}

struct Instance {
    store: Store<HostState>,
    exports: Exports,
}

pub struct Plugin {
    pub spec: PluginSpec,
    /// Compiled once; shared with any later config that loads the same bytes.
    pub component: Component,
    name: Arc<str>,
    engine: &'static PluginEngine,
    pre: Pre,
    idle: Mutex<Vec<Instance>>,
    metrics: PluginMetrics,
    /// Errors are counted always, logged at most once a second.
    errors_logged: ThrottledLog,
    /// What its instances write, within one budget for all of them.
    log: Arc<PluginLog>,
    /// Which exchanges a predicate is asked about: its first instance's `init` said.
    interest: Interest,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("spec", &self.spec).finish()
    }
}

impl Plugin {
    /// Links the component against the host and runs one instance's `init`, which is
    /// kept for the first call: a plugin that cannot start is refused here, not later.
    pub fn load(
        spec: PluginSpec,
        component: Component,
        engine: &'static PluginEngine,
        metrics: PluginMetrics,
    ) -> Result<Self, String> {
        let world = match spec.kind {
            PluginKind::Predicate => "failure-predicate",
            PluginKind::Fallback => "fallback",
        };
        let built_for = built_for(&component, &engine.engine);
        let mismatch = |e: wasmtime::Error| match &built_for {
            Some(version) => format!(
                "was built against {version}, but this gateway speaks {CONTRACT}: rebuild it against this gateway's wit/"
            ),
            None => format!("does not fit the `{world}` world of {CONTRACT}: {e:#}"),
        };
        let instance_pre = engine
            .linker
            .instantiate_pre(&component)
            .map_err(mismatch)?;
        let pre = match spec.kind {
            PluginKind::Predicate => {
                Pre::Predicate(FailurePredicatePre::new(instance_pre).map_err(mismatch)?)
            }
            PluginKind::Fallback => {
                Pre::Fallback(FallbackPre::new(instance_pre).map_err(mismatch)?)
            }
        };
        let name: Arc<str> = spec.name.as_str().into();
        let log = Arc::new(PluginLog::new(
            Arc::clone(&name),
            spec.limits.log_lines_per_second,
            spec.limits.log_bytes_per_second,
            metrics.log_dropped.clone(),
        ));
        let plugin = Self {
            name,
            log,
            spec,
            component,
            engine,
            pre,
            idle: Mutex::new(Vec::new()),
            metrics,
            errors_logged: ThrottledLog::default(),
            interest: Interest::all(),
        };
        let (first, declared) = plugin.instantiate().map_err(|e| e.to_string())?;
        let mut plugin = plugin;
        if let Some(declared) = declared {
            plugin.interest = Interest::from_plugin(declared)?;
        }
        plugin.check_in(first);
        Ok(plugin)
    }

    /// Which exchanges this predicate is asked about (every one for a fallback).
    pub fn interest(&self) -> &Interest {
        &self.interest
    }

    /// Asks a predicate what `exchange`, which ended with `outcome`, counts as.
    pub fn classify(
        &self,
        outcome: &Outcome,
        exchange: Exchange<'_>,
    ) -> Result<Verdict, PluginError> {
        self.call(exchange, |exports, store| match exports {
            Exports::Predicate(exports) => exports.call_classify(store, outcome),
            Exports::Fallback(_) => Err(wasmtime::Error::msg("not a predicate")),
        })
    }

    /// Asks a fallback what to answer for `exchange` (which has no response). The
    /// response is checked against `max_response` and the header bounds.
    ///
    /// The generated bindings lift the whole answer out of the plugin's memory before
    /// it can be measured: wasmtime runs the export's post-return (which frees the
    /// answer inside the plugin) right after lifting it, so a lazily lifted body
    /// (`WasmList`) could not be read safely afterwards. What is copied is bounded by
    /// the plugin's `limits.memory`; see docs/PLUGINS.md.
    pub fn respond(
        &self,
        context: FallbackContext,
        exchange: Exchange<'_>,
    ) -> Result<FallbackAction, PluginError> {
        let action = self.call(exchange, |exports, store| match exports {
            Exports::Fallback(exports) => exports.call_respond(store, context),
            Exports::Predicate(_) => Err(wasmtime::Error::msg("not a fallback")),
        })?;
        if let FallbackAction::Respond(response) = &action
            && let Err(e) = within_bounds(response, self.spec.limits.max_response)
        {
            return Err(self.count(e));
        }
        Ok(action)
    }

    /// One call on a pooled instance, within the plugin's limits, with `exchange` lent.
    fn call<R>(
        &self,
        exchange: Exchange<'_>,
        call: impl FnOnce(&Exports, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let started = Instant::now();
        let mut instance = self.check_out()?;
        self.arm(&mut instance, self.spec.limits.timeout);
        let Instance { store, exports } = &mut instance;
        // A panic in host code (a bug, not the plugin's doing) fails this call, not
        // the request; the instance is dropped with it.
        let result = catch_unwind(AssertUnwindSafe(|| exchange.lend(|| call(exports, store))))
            .unwrap_or_else(|_| Err(wasmtime::Error::msg("the host panicked during the call")));
        self.settle(instance, result, started)
    }

    /// Counts and (rate-limited) logs an error found by the caller, e.g. an invalid response.
    pub fn count(&self, error: PluginError) -> PluginError {
        self.metrics.calls_error.inc();
        self.metrics.error(error.kind());
        if let Some(suppressed) = self.errors_logged.admit() {
            tracing::warn!(target: "gateway::plugin", plugin = %self.name, kind = error.kind(), suppressed, %error, "plugin call failed");
        }
        error
    }

    fn check_out(&self) -> Result<Instance, PluginError> {
        let idle = self.idle.lock().ok().and_then(|mut idle| {
            let instance = idle.pop();
            self.metrics.instances_idle.set(idle.len() as i64);
            instance
        });
        match idle {
            Some(instance) => Ok(instance),
            None => self
                .instantiate()
                .map(|(i, _)| i)
                .map_err(|e| self.count(e)),
        }
    }

    fn check_in(&self, instance: Instance) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.spec.limits.instances.get() as usize
        {
            idle.push(instance);
            self.metrics.instances_idle.set(idle.len() as i64);
        }
    }

    fn arm(&self, instance: &mut Instance, limit: Duration) {
        instance.store.data_mut().limiter.exceeded = false;
        instance
            .store
            .set_epoch_deadline(self.engine.deadline(limit));
    }

    fn settle<R>(
        &self,
        instance: Instance,
        result: wasmtime::Result<R>,
        started: Instant,
    ) -> Result<R, PluginError> {
        self.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(value) => {
                self.metrics.calls_ok.inc();
                self.check_in(instance);
                Ok(value)
            }
            Err(e) => Err(self.count(self.explain(&instance, e, self.spec.limits.timeout))),
        }
    }

    /// A new instance with `init` done, within `init_timeout`, and the interest a
    /// predicate's `init` declared.
    fn instantiate(&self) -> Result<(Instance, Option<super::types::Interest>), PluginError> {
        self.metrics.instances_created.inc();
        let limits = self.spec.limits;
        let mut store = Store::new(
            &self.engine.engine,
            HostState::new(Arc::clone(&self.log), limits.memory),
        );
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(self.engine.deadline(limits.init_timeout));
        let exports = match &self.pre {
            Pre::Predicate(pre) => pre.instantiate(&mut store).map(Exports::Predicate),
            Pre::Fallback(pre) => pre.instantiate(&mut store).map(Exports::Fallback),
        }
        .map_err(|e| PluginError::Instantiate(format!("{e:#}")))?;
        let config = &self.spec.config;
        let init = match &exports {
            Exports::Predicate(exports) => {
                exports.call_init(&mut store, config).map(|r| r.map(Some))
            }
            Exports::Fallback(exports) => exports
                .call_init(&mut store, config)
                .map(|r| r.map(|()| None)),
        };
        let instance = Instance { store, exports };
        match init {
            Ok(Ok(interest)) => Ok((instance, interest)),
            Ok(Err(reason)) => Err(PluginError::InitRefused(reason)),
            Err(e) => Err(PluginError::Init(Box::new(self.explain(
                &instance,
                e,
                limits.init_timeout,
            )))),
        }
    }

    /// What a failed call ran into: its deadline, its memory limit, or a trap.
    fn explain(&self, instance: &Instance, e: wasmtime::Error, limit: Duration) -> PluginError {
        if instance.store.data().limiter.exceeded {
            PluginError::Memory(self.spec.limits.memory)
        } else if matches!(
            e.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        ) {
            PluginError::Timeout(limit)
        } else {
            // The trap itself, without the multi-line wasm backtrace.
            let reason = e
                .downcast_ref::<wasmtime::Trap>()
                .map_or_else(|| e.root_cause().to_string(), ToString::to_string);
            PluginError::Trap(reason)
        }
    }
}

/// Most header and trailer fields a fallback's answer may carry (the gateway adds its own few).
pub const MAX_ANSWER_HEADERS: usize = 64;
/// Most bytes of header and trailer names and values a fallback's answer may carry.
pub const MAX_ANSWER_HEADER_BYTES: usize = 16 << 10;

/// A fallback's response fits its body limit and the header bounds.
fn within_bounds(response: &SyntheticResponse, max_body: usize) -> Result<(), PluginError> {
    if response.body.len() > max_body {
        return Err(PluginError::ResponseTooLarge {
            size: response.body.len(),
            limit: max_body,
        });
    }
    // Trailers are header fields too, sent in the same kind of block: one budget.
    let fields = || response.headers.iter().chain(&response.trailers);
    let count = fields().count();
    if count > MAX_ANSWER_HEADERS {
        return Err(PluginError::TooManyHeaders {
            count,
            limit: MAX_ANSWER_HEADERS,
        });
    }
    let size = fields()
        .map(|(name, value)| name.len().saturating_add(value.len()))
        .fold(0usize, usize::saturating_add);
    if size > MAX_ANSWER_HEADER_BYTES {
        return Err(PluginError::HeadersTooLarge {
            size,
            limit: MAX_ANSWER_HEADER_BYTES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(headers: usize, value_len: usize, body: usize) -> SyntheticResponse {
        SyntheticResponse {
            status: 200,
            headers: (0..headers)
                .map(|i| (format!("x-h{i}"), "v".repeat(value_len)))
                .collect(),
            body: vec![b'x'; body],
            trailers: Vec::new(),
        }
    }

    #[test]
    fn trailers_count_against_the_same_field_budget() {
        let mut response = answer(MAX_ANSWER_HEADERS, 1, 0);
        assert!(within_bounds(&response, 0).is_ok());
        response.trailers.push(("grpc-status".into(), "14".into()));
        assert!(matches!(
            within_bounds(&response, 0),
            Err(PluginError::TooManyHeaders { .. })
        ));
        let mut response = answer(1, 1, 0);
        response
            .trailers
            .push(("grpc-message".into(), "m".repeat(MAX_ANSWER_HEADER_BYTES)));
        assert!(matches!(
            within_bounds(&response, 0),
            Err(PluginError::HeadersTooLarge { .. })
        ));
    }

    #[test]
    fn answers_within_bounds_pass() {
        assert!(within_bounds(&answer(MAX_ANSWER_HEADERS, 10, 1024), 1024).is_ok());
        assert!(within_bounds(&answer(0, 0, 0), 1).is_ok());
    }

    #[test]
    fn answers_over_a_bound_are_refused_saying_which() {
        let too_big = within_bounds(&answer(1, 1, 1025), 1024);
        assert!(
            matches!(
                too_big,
                Err(PluginError::ResponseTooLarge {
                    size: 1025,
                    limit: 1024
                })
            ),
            "{too_big:?}"
        );
        let too_many = within_bounds(&answer(1000, 1, 10), 1024);
        assert!(
            matches!(
                too_many,
                Err(PluginError::TooManyHeaders {
                    count: 1000,
                    limit: 64
                })
            ),
            "{too_many:?}"
        );
        // 20 headers of about 1 KiB: few enough, but 20 KiB in all.
        let too_large = within_bounds(&answer(20, 1024, 10), 1024);
        assert!(
            matches!(
                too_large,
                Err(PluginError::HeadersTooLarge { limit: 16384, .. })
            ),
            "{too_large:?}"
        );
        for error in [too_big, too_many, too_large] {
            assert_eq!(error.err().map(|e| e.kind()), Some("response_too_large"));
        }
    }
}
