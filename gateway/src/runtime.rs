//! The runtime snapshot: everything compiled from one config, swapped atomically.
//!
//! A request takes one `Arc<Runtime>` when it starts and keeps it to the end, so a
//! reload never changes the rules under a request in flight.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::breaker::{Clock, CoarseClock};
use crate::config::Config;
use crate::events::EventHub;
use crate::metrics::Metrics;
use crate::routing::{Route, RouteTable};
use crate::upstream::Upstream;

#[derive(Debug)]
pub struct Runtime {
    pub config: Arc<Config>,
    /// Increases by one with every applied config.
    pub generation: u64,
    pub routes: RouteTable,
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
}

impl Runtime {
    /// Compiles a checked config. Infallible: everything that can fail was checked.
    pub fn build(config: Config, generation: u64, events: &Arc<EventHub>) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(CoarseClock);
        let upstreams: BTreeMap<String, Arc<Upstream>> = config
            .upstreams
            .values()
            .map(|spec| {
                let upstream = Upstream::new(spec.clone(), Arc::clone(&clock), Arc::clone(events));
                (spec.name.clone(), Arc::new(upstream))
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
    pub fn new(config: Config) -> Self {
        let metrics = Arc::new(Metrics::default());
        metrics.config_applied(&config.hash);
        let events = Arc::new(EventHub::new(Arc::clone(&metrics)));
        Self {
            metrics,
            current: ArcSwap::from_pointee(Runtime::build(config, 1, &events)),
            generations: AtomicU64::new(1),
            events,
        }
    }

    /// The snapshot a new request should use.
    pub fn snapshot(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// Replaces the snapshot; requests already running keep theirs.
    pub fn apply(&self, config: Config) -> Arc<Runtime> {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let hash = config.hash.clone();
        self.events.set_generation(generation);
        let runtime = Arc::new(Runtime::build(config, generation, &self.events));
        self.metrics.config_applied(&hash);
        self.current.store(Arc::clone(&runtime));
        runtime
    }
}
