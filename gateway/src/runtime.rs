//! The runtime snapshot: everything compiled from one config, swapped atomically.
//!
//! A request takes one `Arc<Runtime>` when it starts and keeps it to the end, so a
//! reload never changes the rules under a request in flight.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::breaker::{Clock, CoarseClock, Mode};
use crate::config::{Config, ConfigErrors, ListenerSpec, TlsVersion};
use crate::events::{EventHub, FleetNote};
use crate::metrics::{Metrics, StateGauges};
use crate::operator_modes::{OperatorModes, Override, Remote, Stamp, StateError};
use crate::outcomes::{RecordCounters, Recorder};
use crate::plugin::PluginSet;
use crate::routing::{Route, RouteTable};
use crate::tls::{CertificateStore, SniTable};
use crate::upstream::{Fresh, Upstream};

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
    /// can fail was checked. An upstream that `previous` has too keeps what it learnt
    /// whatever else changed (`Upstream::succeed`); returns what starts fresh and why.
    pub fn build(
        config: Config,
        plugins: Arc<PluginSet>,
        generation: u64,
        events: &Arc<EventHub>,
        previous: Option<&Runtime>,
    ) -> (Self, Vec<Fresh>) {
        let clock: Arc<dyn Clock> = Arc::new(CoarseClock);
        let mut fresh = Vec::new();
        let upstreams: BTreeMap<String, Arc<Upstream>> = config
            .upstreams
            .values()
            .map(|spec| {
                let upstream = match previous.and_then(|p| p.upstreams.get(&spec.name)) {
                    Some(existing) if existing.spec == *spec => Arc::clone(existing),
                    Some(existing) => {
                        let (upstream, lost) = Upstream::succeed(spec.clone(), existing);
                        fresh.extend(lost);
                        Arc::new(upstream)
                    }
                    None => {
                        if previous.is_some() {
                            fresh.push(Fresh {
                                upstream: spec.name.clone(),
                                part: "upstream".into(),
                                why: "new upstream".into(),
                            });
                        }
                        Arc::new(Upstream::new(
                            spec.clone(),
                            Arc::clone(&clock),
                            Arc::clone(events),
                        ))
                    }
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
                    metrics: events.metrics.for_route(&spec.name),
                    spec: spec.clone(),
                    upstream: Arc::clone(upstream),
                })
            })
            .collect();
        let runtime = Self {
            config: Arc::new(config),
            generation,
            routes: RouteTable::new(routes),
            upstreams,
            plugins,
        };
        (runtime, fresh)
    }
}

/// Why the first snapshot could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("server.state_dir: {0}")]
    State(#[from] StateError),
    #[error("server.record_outcomes.path: cannot open {path}: {error}")]
    Record {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
}

/// Where a breaker's mode comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModeSource {
    /// `breaker.mode` in the file (automatic when not set).
    File,
    /// An operator's override through the admin API.
    Override(Override),
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
    /// Operators' mode overrides, for the life of the process and, with a state
    /// directory, beyond.
    pub modes: OperatorModes,
    /// Every snapshot swap (a reload, a DNS change) builds on the one before it, one
    /// at a time: a swap racing another would undo it.
    swaps: std::sync::Mutex<()>,
    /// `server.record_outcomes`, opened at start for the life of the process.
    pub recorder: Option<Arc<Recorder>>,
}

impl Runtime {
    /// Sets the state gauges (breaker state, in-flight, endpoint ejection and health)
    /// from this snapshot, for a scrape.
    pub fn report_state(&self, gauges: &StateGauges<'_>) {
        for upstream in self.upstreams.values() {
            let name = upstream.name();
            let snapshot = upstream.breaker.snapshot();
            gauges.breaker(name, snapshot.state);
            gauges.last_transition(name, snapshot.since);
            if let Some(shadow) = &upstream.shadow {
                gauges.shadow(name, shadow.state());
            }
            gauges.in_flight(name, upstream.bulkhead.in_flight());
            let ejected: Vec<_> = upstream.ejected().map(|e| e.addr).collect();
            for endpoint in &upstream.endpoints {
                gauges.endpoint(
                    name,
                    &endpoint.addr.to_string(),
                    ejected.contains(&endpoint.addr),
                    upstream.is_healthy(endpoint),
                );
            }
        }
    }
}

impl RuntimeHandle {
    /// Loads the config's plugins and builds the first snapshot.
    pub fn new(config: Config) -> Result<Self, StartError> {
        let modes = OperatorModes::open(config.server.state_dir.as_deref())?;
        let metrics = Arc::new(Metrics::default());
        let plugins = Arc::new(PluginSet::load(&config, None, &metrics)?);
        metrics.config_applied(&config);
        let events = Arc::new(EventHub::new(Arc::clone(&metrics)));
        let certificates = config
            .listeners
            .iter()
            .filter_map(|l| Some((l.address, Arc::new(CertificateStore::new(sni_table(l)?)))))
            .collect();
        let recorder = match &config.server.record_outcomes {
            None => None,
            Some(spec) => {
                let counters = RecordCounters::new(metrics.outcome_records());
                let recorder =
                    Recorder::open(spec, counters).map_err(|error| StartError::Record {
                        path: spec.path.clone(),
                        error,
                    })?;
                Some(Arc::new(recorder))
            }
        };
        let (runtime, _) = Runtime::build(config, plugins, 1, &events, None);
        let handle = Self {
            recorder,
            metrics,
            certificates,
            current: ArcSwap::from_pointee(runtime),
            swaps: std::sync::Mutex::new(()),
            generations: AtomicU64::new(1),
            events,
            modes,
        };
        handle.apply_modes(&handle.snapshot());
        Ok(handle)
    }

    /// Where `upstream`'s mode comes from, and the mode.
    pub fn mode_of(&self, upstream: &Upstream) -> (Mode, ModeSource) {
        match self.modes.get(upstream.name()) {
            Some(o) => (o.mode, ModeSource::Override(o)),
            None => (upstream.spec.breaker_mode, ModeSource::File),
        }
    }

    /// An operator here sets (`Some`) or clears (`None`, back to the file's mode) the
    /// mode of `upstream`, and the fleet is told. Kept first, then acted on: a change
    /// that cannot be kept is not made.
    pub fn override_mode(
        &self,
        upstream: &Upstream,
        value: Option<Override>,
    ) -> Result<(), StateError> {
        let mode = value.as_ref().map_or(Mode::Automatic, |o| o.mode);
        let by = value.as_ref().map_or_else(String::new, |o| o.by.clone());
        let stamp = self.modes.set(upstream.name(), value, |mode| {
            put_in_mode(upstream, mode.unwrap_or(upstream.spec.breaker_mode));
        })?;
        self.events.tell_fleet(FleetNote::Mode {
            upstream: upstream.name().to_string(),
            mode,
            since_unix_ms: stamp.at_ms,
            by,
        });
        Ok(())
    }

    /// Another instance's operator set or cleared the mode of `upstream` (cluster/):
    /// applied when it is the newest action known.
    pub fn fleet_mode(
        &self,
        upstream: &Upstream,
        value: Option<Override>,
        stamp: Stamp,
    ) -> Result<Remote, StateError> {
        self.modes
            .set_remote(upstream.name(), value, stamp, |mode| {
                put_in_mode(upstream, mode.unwrap_or(upstream.spec.breaker_mode));
            })
    }

    /// An operator here resets `upstream`'s breaker: closed, automatic, window cleared;
    /// a file mode other than automatic applies again at once. The fleet is told.
    pub fn reset(&self, upstream: &Upstream, by: &str) -> Result<(), StateError> {
        let stamp = self.modes.set(upstream.name(), None, |_| {
            upstream.breaker.reset_into(upstream.spec.breaker_mode);
        })?;
        self.events.tell_fleet(FleetNote::Reset {
            upstream: upstream.name().to_string(),
            since_unix_ms: stamp.at_ms,
            by: by.to_string(),
        });
        Ok(())
    }

    /// Another instance's operator reset `upstream` (cluster/), when it is the newest
    /// action known.
    pub fn fleet_reset(&self, upstream: &Upstream, stamp: Stamp) -> Result<Remote, StateError> {
        self.modes.set_remote(upstream.name(), None, stamp, |_| {
            upstream.breaker.reset_into(upstream.spec.breaker_mode);
        })
    }

    /// Takes the overrides and action stamps another process had (graceful upgrade) and
    /// applies them.
    pub fn adopt_overrides(
        &self,
        overrides: BTreeMap<String, Override>,
        actions: BTreeMap<String, Stamp>,
    ) -> Result<(), StateError> {
        let written = self.modes.adopt(overrides, actions);
        self.apply_modes(&self.snapshot());
        written
    }

    /// Puts every breaker of `runtime` in the mode it should be in, and forgets the
    /// overrides of upstreams it no longer has.
    fn apply_modes(&self, runtime: &Runtime) {
        match self
            .modes
            .retain(|name| runtime.upstreams.contains_key(name))
        {
            Ok(gone) if !gone.is_empty() => tracing::info!(
                target: "gateway::admin",
                upstreams = ?gone,
                "breaker overrides of removed upstreams forgotten"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(target: "gateway::admin", error = %e, "cannot update the breaker override file")
            }
        }
        for upstream in runtime.upstreams.values() {
            self.apply_mode(upstream);
        }
    }

    /// Puts `upstream`'s breaker in the mode it should be in (override, else file),
    /// deciding under the overrides' lock.
    pub fn apply_mode(&self, upstream: &Upstream) {
        self.modes.with(upstream.name(), |mode| {
            put_in_mode(upstream, mode.unwrap_or(upstream.spec.breaker_mode));
        });
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
    /// changes nothing. Returns the new snapshot and what in it starts fresh, and why.
    pub fn apply(&self, config: Config) -> Result<(Arc<Runtime>, Vec<Fresh>), ConfigErrors> {
        let _swap = self.swaps.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.snapshot();
        let plugins = Arc::new(PluginSet::load(
            &config,
            Some(&previous.plugins),
            &self.metrics,
        )?);
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        self.events.set_generation(generation);
        let (runtime, fresh) =
            Runtime::build(config, plugins, generation, &self.events, Some(&previous));
        let runtime = Arc::new(runtime);
        // New certificates serve the next handshake; open connections keep theirs.
        for listener in &runtime.config.listeners {
            if let (Some(store), Some(table)) = (
                self.certificates.get(&listener.address),
                sni_table(listener),
            ) {
                store.replace(table);
            }
        }
        // Modes first: a new upstream the file forces open never serves closed.
        self.apply_modes(&runtime);
        self.current.store(Arc::clone(&runtime));
        self.metrics.config_applied(&runtime.config);
        Ok((runtime, fresh))
    }
}

impl RuntimeHandle {
    /// A host-name endpoint of `upstream` now resolves to `addresses`: a snapshot with
    /// that upstream's endpoints changed and everything else the same (same config
    /// generation and hash: the file did not change). Addresses that stay keep their
    /// state (`Upstream::succeed`). None when nothing changed, or the upstream or name
    /// is gone (a reload got there first).
    pub fn follow_dns(
        &self,
        upstream: &str,
        host: &str,
        port: u16,
        addresses: Vec<SocketAddr>,
    ) -> Option<Vec<Fresh>> {
        let _swap = self.swaps.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.snapshot();
        let mut config = (*current.config).clone();
        let spec = config.upstreams.get_mut(upstream)?;
        let entry = spec
            .hosts
            .iter_mut()
            .find(|h| h.host == host && h.port == port)?;
        if entry.addresses == addresses {
            return None;
        }
        entry.addresses = addresses;
        spec.endpoints = crate::config::assemble_endpoints(&spec.fixed, &spec.hosts);
        let (runtime, fresh) = Runtime::build(
            config,
            Arc::clone(&current.plugins),
            current.generation,
            &self.events,
            Some(&current),
        );
        self.apply_modes(&runtime);
        self.current.store(Arc::new(runtime));
        Some(fresh)
    }
}

fn put_in_mode(upstream: &Upstream, mode: Mode) {
    if upstream.breaker.mode() != mode {
        upstream.breaker.set_mode(mode);
    }
}

fn sni_table(listener: &ListenerSpec) -> Option<SniTable> {
    let tls = listener.tls.as_ref()?;
    let loaded: Vec<_> = tls.certificates.iter().map(|c| c.loaded.clone()).collect();
    SniTable::new(&loaded, tls.min_version == TlsVersion::Tls13)
}
