//! The runtime snapshot: everything compiled from one config, swapped atomically.
//!
//! A request takes one `Arc<Runtime>` when it starts and keeps it to the end, so a
//! reload never changes the rules under a request in flight.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::breaker::{Clock, CoarseClock};
use crate::config::{Config, ConfigErrors, ListenerSpec, TlsVersion};
use crate::events::EventHub;
use crate::metrics::{Metrics, StateGauges};
use crate::plugin::PluginSet;
use crate::routing::{Route, RouteTable};
use crate::tls::{CertificateStore, SniTable};
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
    /// One per TLS listener the process started with; reloads replace their tables.
    certificates: BTreeMap<SocketAddr, Arc<CertificateStore>>,
}

impl Runtime {
    /// Sets the state gauges (breaker state, in-flight, endpoint ejection and health)
    /// from this snapshot, for a scrape.
    pub fn report_state(&self, gauges: &StateGauges<'_>) {
        for upstream in self.upstreams.values() {
            let name = upstream.name();
            gauges.breaker(name, upstream.breaker.state());
            gauges.in_flight(name, upstream.bulkhead.in_flight());
            let ejected: Vec<_> = upstream.ejected().map(|e| e.addr).collect();
            for endpoint in &upstream.endpoints {
                gauges.endpoint(
                    name,
                    &endpoint.addr.to_string(),
                    ejected.contains(&endpoint.addr),
                    endpoint.is_healthy(),
                );
            }
        }
    }
}

impl RuntimeHandle {
    /// Loads the config's plugins and builds the first snapshot.
    pub fn new(config: Config) -> Result<Self, ConfigErrors> {
        let metrics = Arc::new(Metrics::default());
        let plugins = Arc::new(PluginSet::load(&config, None, &metrics)?);
        metrics.config_applied(&config);
        let events = Arc::new(EventHub::new(Arc::clone(&metrics)));
        let certificates = config
            .listeners
            .iter()
            .filter_map(|l| Some((l.address, Arc::new(CertificateStore::new(sni_table(l)?)))))
            .collect();
        Ok(Self {
            metrics,
            certificates,
            current: ArcSwap::from_pointee(Runtime::build(config, plugins, 1, &events, None)),
            generations: AtomicU64::new(1),
            events,
        })
    }

    /// The certificate resolver of a TLS listener the process started with.
    pub fn certificates(&self, address: &SocketAddr) -> Option<Arc<CertificateStore>> {
        self.certificates.get(address).cloned()
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
        // New certificates serve the next handshake; open connections keep theirs.
        for listener in &runtime.config.listeners {
            if let (Some(store), Some(table)) = (
                self.certificates.get(&listener.address),
                sni_table(listener),
            ) {
                store.replace(table);
            }
        }
        self.current.store(Arc::clone(&runtime));
        self.metrics.config_applied(&runtime.config);
        Ok((runtime, fresh))
    }
}

fn sni_table(listener: &ListenerSpec) -> Option<SniTable> {
    let tls = listener.tls.as_ref()?;
    let loaded: Vec<_> = tls.certificates.iter().map(|c| c.loaded.clone()).collect();
    SniTable::new(&loaded, tls.min_version == TlsVersion::Tls13)
}
