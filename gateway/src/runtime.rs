//! The runtime snapshot: everything compiled from one config, swapped atomically.
//!
//! A request takes one `Arc<Runtime>` when it starts and keeps it to the end, so a
//! reload never changes the rules under a request in flight.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::breaker::{Clock, CoarseClock};
use crate::config::{Config, ConfigErrors};
use crate::events::EventHub;
use crate::metrics::Metrics;
use crate::plugin::PluginSet;
use crate::routing::{Route, RouteTable};
use crate::upstream::Upstream;

#[derive(Debug)]
pub struct Runtime {
    pub config: Arc<Config>,
    /// Increases by one with every applied config.
    pub generation: u64,
    pub routes: RouteTable,
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    /// Looked up by name per request, so a changed plugin never resets a breaker.
    pub plugins: Arc<PluginSet>,
}

impl Runtime {
    /// Compiles a checked config with its loaded plugins. Infallible: everything that
    /// can fail was checked. Upstreams whose definition is unchanged from `previous`
    /// are carried over whole: breaker state, ejections, bulkhead and in-flight counts
    /// survive the reload.
    pub fn build(
        config: Config,
        plugins: Arc<PluginSet>,
        generation: u64,
        events: &Arc<EventHub>,
        previous: Option<&Runtime>,
    ) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(CoarseClock);
        let upstreams: BTreeMap<String, Arc<Upstream>> = config
            .upstreams
            .values()
            .map(|spec| {
                let kept = previous
                    .and_then(|p| p.upstreams.get(&spec.name))
                    .filter(|u| u.spec == *spec);
                let upstream = match kept {
                    Some(existing) => Arc::clone(existing),
                    None => Arc::new(Upstream::new(
                        spec.clone(),
                        Arc::clone(&clock),
                        Arc::clone(events),
                    )),
                };
                (spec.name.clone(), upstream)
            })
            .collect();
        let routes = config
            .routes
            .iter()
            .filter_map(|spec| {
                let upstream = upstreams.get(&spec.upstream)?;
                Some(Route {
                    spec: spec.clone(),
                    upstream: Arc::clone(upstream),
                })
            })
            .collect();
        Self {
            config: Arc::new(config),
            generation,
            routes: RouteTable::new(routes),
            upstreams,
            plugins,
        }
    }
}

/// The one global: the current snapshot.
#[derive(Debug)]
pub struct RuntimeHandle {
    current: ArcSwap<Runtime>,
    generations: AtomicU64,
    pub events: Arc<EventHub>,
    pub metrics: Arc<Metrics>,
}

impl RuntimeHandle {
    /// Loads the config's plugins and builds the first snapshot.
    pub fn new(config: Config) -> Result<Self, ConfigErrors> {
        let metrics = Arc::new(Metrics::default());
        let plugins = Arc::new(PluginSet::load(&config, None, &metrics)?);
        metrics.config_applied(&config.hash);
        let events = Arc::new(EventHub::new(Arc::clone(&metrics)));
        Ok(Self {
            metrics,
            current: ArcSwap::from_pointee(Runtime::build(config, plugins, 1, &events, None)),
            generations: AtomicU64::new(1),
            events,
        })
    }

    /// The snapshot a new request should use.
    pub fn snapshot(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// Loads the config's plugins (carrying over unchanged ones), then replaces the
    /// snapshot; requests already running keep theirs. A plugin that cannot load
    /// changes nothing. Returns the new snapshot and the names of upstreams that start
    /// fresh (new or changed).
    pub fn apply(&self, config: Config) -> Result<(Arc<Runtime>, Vec<String>), ConfigErrors> {
        let previous = self.snapshot();
        let plugins = Arc::new(PluginSet::load(
            &config,
            Some(&previous.plugins),
            &self.metrics,
        )?);
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let hash = config.hash.clone();
        self.events.set_generation(generation);
        let runtime = Arc::new(Runtime::build(
            config,
            plugins,
            generation,
            &self.events,
            Some(&previous),
        ));
        let fresh = runtime
            .upstreams
            .iter()
            .filter(|(name, u)| {
                previous
                    .upstreams
                    .get(*name)
                    .is_none_or(|old| !Arc::ptr_eq(old, u))
            })
            .map(|(name, _)| name.clone())
            .collect();
        self.current.store(Arc::clone(&runtime));
        self.metrics.config_applied(&hash);
        Ok((runtime, fresh))
    }
}
