//! Every Prometheus family the gateway exports, in one place.
//!
//! Labels are closed sets: upstream names and endpoint addresses come from the config,
//! states, reasons and outcomes from enums. Never a path or a client address. The
//! request path touches only handles cached per upstream (`UpstreamMetrics`): an atomic
//! add, no label lookup. Gauges that describe current state are set at scrape time by
//! whoever holds that state (`render`'s caller, through `StateGauges`). Modules above
//! this one hand in their closed label sets (plugin error kinds, admin refusal
//! reasons), so this module depends on none of them.

use std::sync::Arc;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::breaker::{State, Transition};
use crate::config::Config;
use crate::limit::Limit;

pub struct Metrics {
    registry: Registry,
    breaker_state: IntGaugeVec,
    breaker_shadow_state: IntGaugeVec,
    breaker_transitions: IntCounterVec,
    breaker_rejections: IntCounterVec,
    upstream_requests: IntCounterVec,
    upstream_grpc: IntCounterVec,
    upstream_duration: HistogramVec,
    upstream_retries: IntCounterVec,
    upstream_in_flight: IntGaugeVec,
    bulkhead_rejections: IntCounterVec,
    fallbacks: IntCounterVec,
    plugin_calls: IntCounterVec,
    plugin_errors: IntCounterVec,
    plugin_duration: HistogramVec,
    plugin_log_dropped: IntCounterVec,
    plugin_instances_created: IntCounterVec,
    plugin_instances_idle: IntGaugeVec,
    endpoint_ejected: IntGaugeVec,
    endpoint_healthy: IntGaugeVec,
    endpoint_ejections: IntCounterVec,
    pub config_reloads: IntCounterVec,
    /// Lookups of host-name endpoints by the refresher, by upstream and result.
    pub dns_lookups: IntCounterVec,
    pub config_last_reload_success: Gauge,
    config_info: IntGaugeVec,
    connections: IntGaugeVec,
    limit_rejections: IntCounterVec,
    certificate_expiry: IntGaugeVec,
    admin_refusals: IntCounterVec,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    breaker_last_transition: prometheus::GaugeVec,
    /// Requests that matched no route (a fixed label, never the client's path or host).
    pub unmatched: RouteMetrics,
    event_subscribers: IntGauge,
    event_subscribers_dropped: IntCounterVec,
    cluster_connected: IntGaugeVec,
    cluster_messages: IntCounterVec,
    cluster_lag: HistogramVec,
    outcome_records: IntCounterVec,
}

/// The label under which requests that matched no route are counted.
pub const UNMATCHED_ROUTE: &str = "(unmatched)";

/// What clients experienced on one route: requests by status class and their duration,
/// fallbacks and the gateway's own answers included. Resolved when the route is built.
#[derive(Clone)]
pub struct RouteMetrics {
    /// 1xx..5xx, then `none` (no response: the client went away).
    by_class: [IntCounter; 6],
    duration: Histogram,
}

const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteMetrics")
    }
}

impl RouteMetrics {
    /// One finished request: the status the client got (0: none) and its duration.
    pub fn observe(&self, status: u16, elapsed: std::time::Duration) {
        let class = match status {
            100..=599 => usize::from(status / 100 - 1),
            _ => 5,
        };
        self.by_class[class].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}

/// Handles for the fleet link (cluster/), labelled with the cluster's name; resolved only
/// when a cluster is configured, so a lone gateway exports none of these series.
#[derive(Clone)]
pub struct ClusterMetrics {
    pub connected: IntGauge,
    pub sent: IntCounter,
    pub received: IntCounter,
    /// Not sent (queue full, Redis down) or not applicable (unreadable, stale).
    pub dropped: IntCounter,
    /// From a remote transition's sending to its adoption here.
    pub lag: Histogram,
}

/// Handles for one listener, resolved when it starts.
#[derive(Clone)]
pub struct ListenerMetrics {
    pub connections: IntGauge,
    rejections: Vec<IntCounter>,
}

impl ListenerMetrics {
    pub fn rejected(&self, limit: Limit) {
        if let Some(counter) = self.rejections.get(limit as usize) {
            counter.inc();
        }
    }
}

/// Handles for one upstream, resolved once when the runtime is built.
#[derive(Clone)]
pub struct UpstreamMetrics {
    pub success: IntCounter,
    pub failure: IntCounter,
    pub ignored: IntCounter,
    pub duration: Histogram,
    pub rejected: IntCounter,
    pub overloaded: IntCounter,
    pub retries: IntCounter,
    /// By gRPC status (17 names): resolved on first use, so a plain HTTP upstream
    /// exports none.
    grpc: IntCounterVec,
    upstream: Arc<str>,
}

impl UpstreamMetrics {
    /// A gRPC call to this upstream ended with `code`.
    pub fn grpc_status(&self, code: crate::grpc::Code) {
        self.grpc
            .with_label_values(&[&*self.upstream, code.name()])
            .inc();
    }
}

/// Handles for one plugin, resolved when it loads.
#[derive(Clone)]
pub struct PluginMetrics {
    pub calls_ok: IntCounter,
    pub calls_error: IntCounter,
    pub duration: Histogram,
    /// Log lines dropped over the plugin's log budget.
    pub log_dropped: IntCounter,
    pub instances_created: IntCounter,
    pub instances_idle: IntGauge,
    errors: IntCounterVec,
    plugin: String,
}

impl PluginMetrics {
    pub fn error(&self, kind: &str) {
        self.errors.with_label_values(&[&self.plugin, kind]).inc();
    }
}

impl std::fmt::Debug for UpstreamMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamMetrics")
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(vec.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    vec
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let vec = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(vec.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    vec
}

/// Plugin call buckets, in seconds: 10 µs to 100 ms.
const PLUGIN_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
];

fn histogram(registry: &Registry, opts: HistogramOpts, labels: &[&str]) -> HistogramVec {
    let vec = HistogramVec::new(opts, labels).unwrap_or_else(|e| panic!("histogram: {e}"));
    registry
        .register(Box::new(vec.clone()))
        .unwrap_or_else(|e| panic!("histogram: {e}"));
    vec
}

/// Latency buckets, in seconds: 1 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Default for Metrics {
    // The names and label sets below are fixed at compile time; a failure here is a
    // programming error caught by the first test that builds a runtime.
    fn default() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let upstream_duration = histogram(
            r,
            HistogramOpts::new(
                "gateway_upstream_request_duration_seconds",
                "Time from choosing an endpoint to the upstream's response head (or failure).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["upstream"],
        );
        let plugin_duration = histogram(
            r,
            HistogramOpts::new(
                "gateway_plugin_call_duration_seconds",
                "Time per plugin call, from taking an instance to its answer.",
            )
            .buckets(PLUGIN_BUCKETS.to_vec()),
            &["plugin"],
        );
        let config_last_reload_success = Gauge::new(
            "gateway_config_last_reload_success_timestamp_seconds",
            "Unix time of the last config applied successfully (at start or by reload).",
        )
        .unwrap_or_else(|e| panic!("gauge: {e}"));
        registry
            .register(Box::new(config_last_reload_success.clone()))
            .unwrap_or_else(|e| panic!("gauge: {e}"));
        let requests = counter(
            r,
            "gateway_requests_total",
            "Requests as clients saw them, by route (\"(unmatched)\" when none matched) and status class (none: the client left before a response).",
            &["route", "status_class"],
        );
        let request_duration = histogram(
            r,
            HistogramOpts::new(
                "gateway_request_duration_seconds",
                "Time from a request's start to its end as the client saw it, by route; fallbacks and the gateway's own answers included.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        );
        // Standard process metrics (resident memory, open fds, CPU seconds, start time).
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .unwrap_or_else(|e| panic!("process metrics: {e}"));
        let build_info = IntGaugeVec::new(
            Opts::new(
                "gateway_build_info",
                "1, labelled with the gateway's version.",
            ),
            &["version"],
        )
        .unwrap_or_else(|e| panic!("gauge: {e}"));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry
            .register(Box::new(build_info))
            .unwrap_or_else(|e| panic!("gauge: {e}"));
        let config_reloads = counter(
            r,
            "gateway_config_reloads_total",
            "Config reload attempts by result.",
            &["result"],
        );
        // Known label sets start at 0, so increase() sees the first one.
        for result in ["success", "error"] {
            config_reloads.with_label_values(&[result]);
        }
        let dns_lookups = counter(
            r,
            "gateway_dns_lookups_total",
            "Background lookups of host-name endpoints, by upstream and result (success, failure: the last good addresses stay).",
            &["upstream", "result"],
        );
        let admin_refusals = counter(
            r,
            "gateway_admin_refusals_total",
            "Admin requests refused, by reason (host, token, origin, fetch_site, content_type).",
            &["reason"],
        );
        Self {
            breaker_state: gauge(
                r,
                "gateway_breaker_state",
                "1 for the breaker's current state, 0 for the others.",
                &["upstream", "state"],
            ),
            breaker_shadow_state: gauge(
                r,
                "gateway_breaker_shadow_state",
                "The state `breaker.shadow`'s candidate policy would have the breaker in (1 for it, 0 for the others); it acts on nothing.",
                &["upstream", "state"],
            ),
            breaker_transitions: counter(
                r,
                "gateway_breaker_transitions_total",
                "Breaker state changes.",
                &["upstream", "from", "to", "reason"],
            ),
            breaker_rejections: counter(
                r,
                "gateway_breaker_rejections_total",
                "Requests the breaker did not let through to the upstream.",
                &["upstream"],
            ),
            upstream_requests: counter(
                r,
                "gateway_upstream_requests_total",
                "Calls to upstreams by recorded outcome.",
                &["upstream", "outcome"],
            ),
            upstream_grpc: counter(
                r,
                "gateway_upstream_grpc_responses_total",
                "gRPC calls to upstreams by the grpc-status they ended with (its name).",
                &["upstream", "grpc_status"],
            ),
            upstream_duration,
            upstream_retries: counter(
                r,
                "gateway_upstream_retries_total",
                "Connect failures retried on another endpoint.",
                &["upstream"],
            ),
            upstream_in_flight: gauge(
                r,
                "gateway_upstream_requests_in_flight",
                "Requests currently admitted to the upstream (bulkhead occupancy).",
                &["upstream"],
            ),
            bulkhead_rejections: counter(
                r,
                "gateway_bulkhead_rejections_total",
                "Requests refused because the upstream's bulkhead was full.",
                &["upstream"],
            ),
            fallbacks: counter(
                r,
                "gateway_fallbacks_total",
                "Fallback responses served, by why and what.",
                &["upstream", "reason", "kind"],
            ),
            plugin_calls: counter(
                r,
                "gateway_plugin_calls_total",
                "Calls into plugins by result (ok, error).",
                &["plugin", "result"],
            ),
            plugin_errors: counter(
                r,
                "gateway_plugin_errors_total",
                "Failed plugin calls by kind (timeout, memory, trap, init, response_too_large, invalid_answer).",
                &["plugin", "kind"],
            ),
            plugin_duration,
            plugin_log_dropped: counter(
                r,
                "gateway_plugin_log_dropped_total",
                "Plugin log lines (host.log, stdout, stderr) dropped over the plugin's log budget.",
                &["plugin"],
            ),
            plugin_instances_created: counter(
                r,
                "gateway_plugin_instances_created_total",
                "Plugin instances created and initialised. Growing with traffic: more calls at once than limits.instances keeps, or instances dropped after failures.",
                &["plugin"],
            ),
            plugin_instances_idle: gauge(
                r,
                "gateway_plugin_instances_idle",
                "Initialised plugin instances waiting for a call (at most limits.instances).",
                &["plugin"],
            ),
            endpoint_ejected: gauge(
                r,
                "gateway_endpoint_ejected",
                "1 while outlier detection keeps the endpoint out of rotation.",
                &["upstream", "endpoint"],
            ),
            endpoint_healthy: gauge(
                r,
                "gateway_endpoint_healthy",
                "1 while the endpoint passes its active health checks (or has none).",
                &["upstream", "endpoint"],
            ),
            endpoint_ejections: counter(
                r,
                "gateway_endpoint_ejections_total",
                "Times an endpoint was ejected.",
                &["upstream", "endpoint"],
            ),
            config_reloads,
            dns_lookups,
            config_last_reload_success,
            config_info: gauge(
                r,
                "gateway_config_info",
                "1 for the hash of the config being served.",
                &["hash"],
            ),
            connections: gauge(
                r,
                "gateway_downstream_connections",
                "Client connections open on the listener now.",
                &["listener"],
            ),
            limit_rejections: counter(
                r,
                "gateway_limit_rejections_total",
                "Clients turned away by a listener or route limit, by limit.",
                &["listener", "limit"],
            ),
            certificate_expiry: gauge(
                r,
                "gateway_tls_certificate_expiry_timestamp_seconds",
                "When each served certificate expires (Unix time).",
                &["listener", "certificate"],
            ),
            admin_refusals,
            unmatched: route_metrics(&requests, &request_duration, UNMATCHED_ROUTE),
            requests,
            request_duration,
            breaker_last_transition: {
                let vec = prometheus::GaugeVec::new(
                    Opts::new(
                        "gateway_breaker_last_transition_timestamp_seconds",
                        "Unix time the breaker entered its current state (its creation, before any transition).",
                    ),
                    &["upstream"],
                )
                .unwrap_or_else(|e| panic!("gauge: {e}"));
                registry
                    .register(Box::new(vec.clone()))
                    .unwrap_or_else(|e| panic!("gauge: {e}"));
                vec
            },
            event_subscribers: {
                let g = IntGauge::new(
                    "gateway_admin_event_subscribers",
                    "Live subscribers of the admin event stream (SSE and WebSocket).",
                )
                .unwrap_or_else(|e| panic!("gauge: {e}"));
                registry
                    .register(Box::new(g.clone()))
                    .unwrap_or_else(|e| panic!("gauge: {e}"));
                g
            },
            event_subscribers_dropped: counter(
                r,
                "gateway_admin_event_subscribers_dropped_total",
                "Event subscribers dropped for falling behind (slow) or refused over the bound (full).",
                &["reason"],
            ),
            cluster_connected: gauge(
                r,
                "gateway_cluster_connected",
                "1 while the link to the fleet's Redis is up, 0 while this instance stands alone.",
                &["cluster"],
            ),
            cluster_messages: counter(
                r,
                "gateway_cluster_messages_total",
                "Fleet messages sent, received, or dropped (queue full, Redis down, unreadable).",
                &["cluster", "direction"],
            ),
            cluster_lag: histogram(
                r,
                HistogramOpts::new(
                    "gateway_cluster_apply_lag_seconds",
                    "Time from another instance's transition to its adoption here (wall clocks).",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["cluster"],
            ),
            outcome_records: counter(
                r,
                "gateway_outcome_records_total",
                "Outcome records (server.record_outcomes) written, or dropped: queue full (a slow disk) or a failed write (a full disk).",
                &["result"],
            ),
            registry,
        }
    }
}

impl Metrics {
    pub fn for_upstream(&self, upstream: &str) -> UpstreamMetrics {
        let outcome = |o: &str| self.upstream_requests.with_label_values(&[upstream, o]);
        UpstreamMetrics {
            success: outcome("success"),
            failure: outcome("failure"),
            ignored: outcome("ignored"),
            duration: self.upstream_duration.with_label_values(&[upstream]),
            rejected: self.breaker_rejections.with_label_values(&[upstream]),
            overloaded: self.bulkhead_rejections.with_label_values(&[upstream]),
            retries: self.upstream_retries.with_label_values(&[upstream]),
            grpc: self.upstream_grpc.clone(),
            upstream: upstream.into(),
        }
    }

    /// Handles for one plugin; every error kind in `kinds` starts at 0, so increase()
    /// and the alert see the first error.
    pub fn for_plugin(&self, plugin: &str, kinds: &[&str]) -> PluginMetrics {
        for kind in kinds {
            self.plugin_errors.with_label_values(&[plugin, kind]);
        }
        PluginMetrics {
            calls_ok: self.plugin_calls.with_label_values(&[plugin, "ok"]),
            calls_error: self.plugin_calls.with_label_values(&[plugin, "error"]),
            duration: self.plugin_duration.with_label_values(&[plugin]),
            log_dropped: self.plugin_log_dropped.with_label_values(&[plugin]),
            instances_created: self.plugin_instances_created.with_label_values(&[plugin]),
            instances_idle: self.plugin_instances_idle.with_label_values(&[plugin]),
            errors: self.plugin_errors.clone(),
            plugin: plugin.to_string(),
        }
    }

    /// Starts every admin refusal reason at 0 (the admin listener's closed set).
    pub fn admin_refusal_reasons(&self, reasons: &[&str]) {
        for reason in reasons {
            self.admin_refusals.with_label_values(&[reason]);
        }
    }

    /// An admin request refused; `reason` is one of `admin::REFUSAL_REASONS`.
    pub fn for_cluster(&self, name: &str) -> ClusterMetrics {
        let messages = |direction| self.cluster_messages.with_label_values(&[name, direction]);
        ClusterMetrics {
            connected: self.cluster_connected.with_label_values(&[name]),
            sent: messages("sent"),
            received: messages("received"),
            dropped: messages("dropped"),
            lag: self.cluster_lag.with_label_values(&[name]),
        }
    }

    /// Handles for one route, resolved when the runtime is built.
    pub fn for_route(&self, route: &str) -> RouteMetrics {
        route_metrics(&self.requests, &self.request_duration, route)
    }

    /// The live event subscribers' gauge, and the counters of those dropped for falling
    /// behind and of those refused over the bound.
    pub fn event_subscribers(&self) -> (IntGauge, IntCounter, IntCounter) {
        (
            self.event_subscribers.clone(),
            self.event_subscribers_dropped.with_label_values(&["slow"]),
            self.event_subscribers_dropped.with_label_values(&["full"]),
        )
    }

    pub fn admin_refused(&self, reason: &str) {
        self.admin_refusals.with_label_values(&[reason]).inc();
    }

    pub fn transition(&self, t: &Transition) {
        self.breaker_transitions
            .with_label_values(&[
                &t.breaker,
                t.from.as_str(),
                t.to.as_str(),
                t.reason.as_str(),
            ])
            .inc();
    }

    pub fn fallback(&self, upstream: &str, reason: &str, kind: &str) {
        self.fallbacks
            .with_label_values(&[upstream, reason, kind])
            .inc();
    }

    pub fn ejection(&self, upstream: &str, endpoint: &str) {
        self.endpoint_ejections
            .with_label_values(&[upstream, endpoint])
            .inc();
    }

    /// Endpoints DNS took away: their series go, so that pods coming and going do not
    /// grow the scrape for ever.
    pub fn endpoints_gone(&self, upstream: &str, endpoints: &[String]) {
        for endpoint in endpoints {
            let _ = self
                .endpoint_ejections
                .remove_label_values(&[upstream, endpoint.as_str()]);
        }
    }

    /// Marks `hash` as the config in service.
    /// Handles for a listener; every limit starts at 0 so increase() sees the first.
    pub fn for_listener(&self, listener: &str) -> ListenerMetrics {
        ListenerMetrics {
            connections: self.connections.with_label_values(&[listener]),
            rejections: Limit::ALL
                .iter()
                .map(|l| {
                    self.limit_rejections
                        .with_label_values(&[listener, l.as_str()])
                })
                .collect(),
        }
    }

    /// The outcome recorder's counters (written, dropped_queue_full,
    /// dropped_write_error); resolved only when recording is on, so a gateway that
    /// records nothing exports none of these series.
    pub fn outcome_records(&self) -> [IntCounter; 3] {
        ["written", "dropped_queue_full", "dropped_write_error"]
            .map(|result| self.outcome_records.with_label_values(&[result]))
    }

    pub fn config_applied(&self, config: &Config) {
        let hash = config.hash.as_str();
        self.config_info.reset();
        self.config_info.with_label_values(&[hash]).set(1);
        self.certificate_expiry.reset();
        for listener in &config.listeners {
            for certificate in listener.tls.iter().flat_map(|t| &t.certificates) {
                let name = certificate
                    .loaded
                    .names
                    .first()
                    .cloned()
                    .unwrap_or_else(|| certificate.cert.display().to_string());
                self.certificate_expiry
                    .with_label_values(&[listener.label().as_str(), name.as_str()])
                    .set(certificate.loaded.not_after);
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.config_last_reload_success.set(now);
    }

    /// The text exposition, with the state gauges set by `state` first (they describe
    /// now, so they are rebuilt on every scrape).
    pub fn render(&self, state: impl FnOnce(&StateGauges<'_>)) -> String {
        self.breaker_state.reset();
        self.breaker_shadow_state.reset();
        self.endpoint_ejected.reset();
        self.endpoint_healthy.reset();
        self.upstream_in_flight.reset();
        state(&StateGauges { metrics: self });
        let mut buffer = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// The gauges that describe current state, for `render`'s caller to set.
pub struct StateGauges<'a> {
    metrics: &'a Metrics,
}

impl StateGauges<'_> {
    /// Upstream `name`'s breaker is in `current` (1 for that state, 0 for the others).
    pub fn breaker(&self, name: &str, current: State) {
        one_hot(&self.metrics.breaker_state, name, current);
    }

    /// When upstream `name`'s breaker entered its current state.
    pub fn last_transition(&self, name: &str, at: std::time::SystemTime) {
        let seconds = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.metrics
            .breaker_last_transition
            .with_label_values(&[name])
            .set(seconds);
    }

    /// Where upstream `name`'s shadow policy would have its breaker.
    pub fn shadow(&self, name: &str, current: State) {
        one_hot(&self.metrics.breaker_shadow_state, name, current);
    }

    pub fn in_flight(&self, name: &str, requests: u32) {
        self.metrics
            .upstream_in_flight
            .with_label_values(&[name])
            .set(i64::from(requests));
    }

    pub fn endpoint(&self, name: &str, endpoint: &str, ejected: bool, healthy: bool) {
        self.metrics
            .endpoint_ejected
            .with_label_values(&[name, endpoint])
            .set(i64::from(ejected));
        self.metrics
            .endpoint_healthy
            .with_label_values(&[name, endpoint])
            .set(i64::from(healthy));
    }
}

fn route_metrics(requests: &IntCounterVec, duration: &HistogramVec, route: &str) -> RouteMetrics {
    RouteMetrics {
        // Every class at 0 from the start, so a first error shows as an increase.
        by_class: STATUS_CLASSES.map(|class| requests.with_label_values(&[route, class])),
        duration: duration.with_label_values(&[route]),
    }
}

fn one_hot(gauge: &IntGaugeVec, name: &str, current: State) {
    for state in State::ALL {
        gauge
            .with_label_values(&[name, state.as_str()])
            .set(i64::from(state == current));
    }
}

/// Shared handle.
pub type SharedMetrics = Arc<Metrics>;
