//! Operator-visible events: every breaker transition, endpoint ejection and health
//! change is logged through tracing, counted in metrics, kept in a short per-upstream
//! history (for the admin API) and broadcast as JSON to live subscribers (the admin
//! event stream). Events are rare, so building their JSON here costs nothing on the
//! request path.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::breaker::{Mode, Reason, State, Transition, TransitionListener, WindowCounts};
use crate::metrics::Metrics;

/// Transitions kept per upstream for `GET /api/v1/breakers/{upstream}`.
const HISTORY: usize = 20;

/// The last `HISTORY` events per upstream.
#[derive(Debug, Default)]
struct History(Mutex<HashMap<String, VecDeque<Value>>>);

impl History {
    fn push(&self, upstream: &str, event: Value) {
        if let Ok(mut history) = self.0.lock() {
            let list = history.entry(upstream.to_string()).or_default();
            if list.len() == HISTORY {
                list.pop_front();
            }
            list.push_back(event);
        }
    }

    fn of(&self, upstream: &str) -> Vec<Value> {
        self.0
            .lock()
            .map(|h| {
                h.get(upstream)
                    .map(|v| v.iter().cloned().collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct EventHub {
    sender: broadcast::Sender<Arc<Value>>,
    history: History,
    shadow_history: History,
    /// The config generation in service, stamped on every event.
    generation: AtomicU64,
    pub metrics: Arc<Metrics>,
    /// Where this instance's own moves go to be shared with the fleet (cluster/).
    fleet: OnceLock<FleetOutbox>,
}

/// What this instance tells the rest of the fleet.
#[derive(Debug, Clone)]
pub enum FleetNote {
    /// One of its breakers moved on its own evidence.
    Transition {
        upstream: String,
        to: State,
        open_remaining: Option<Duration>,
        reason: &'static str,
        window: WindowCounts,
        /// When it moved: an open period is measured from here, however long the note
        /// waited in the queue.
        at: SystemTime,
    },
    /// An operator set (`Automatic`: cleared) a mode override here.
    Mode {
        upstream: String,
        mode: Mode,
        since_unix_ms: u64,
        by: String,
    },
    /// An operator reset a breaker here.
    Reset {
        upstream: String,
        since_unix_ms: u64,
        by: String,
    },
}

/// A bounded queue to the fleet link: a request thread never waits on it.
#[derive(Debug)]
pub struct FleetOutbox {
    pub sender: tokio::sync::mpsc::Sender<FleetNote>,
    pub dropped: prometheus::IntCounter,
    /// 1 while the link is up.
    pub connected: prometheus::IntGauge,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new(Arc::default())
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl EventHub {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            sender: broadcast::channel(1024).0,
            history: History::default(),
            shadow_history: History::default(),
            generation: AtomicU64::new(1),
            metrics,
            fleet: OnceLock::new(),
        }
    }

    /// From now on, this instance's own moves are offered to the fleet.
    pub fn connect_fleet(&self, outbox: FleetOutbox) {
        let _ = self.fleet.set(outbox);
    }

    /// Whether the fleet link is up; None without a cluster.
    pub fn fleet_connected(&self) -> Option<bool> {
        self.fleet.get().map(|f| f.connected.get() == 1)
    }

    /// Queues `note` for the fleet when there is one; a full queue drops it (counted).
    pub fn tell_fleet(&self, note: FleetNote) {
        if let Some(fleet) = self.fleet.get()
            && fleet.sender.try_send(note).is_err()
        {
            fleet.dropped.inc();
        }
    }

    /// A live feed of events as JSON objects with a `type` field. A subscriber that
    /// falls behind misses old events (`Lagged`); it never slows the gateway down.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Value>> {
        self.sender.subscribe()
    }

    pub fn set_generation(&self, generation: u64) {
        self.generation.store(generation, Ordering::Relaxed);
    }

    /// The most recent transitions of `upstream`, oldest first.
    pub fn history(&self, upstream: &str) -> Vec<Value> {
        self.history.of(upstream)
    }

    pub fn publish(&self, event: Value) {
        // No subscriber is not an error.
        let _ = self.sender.send(Arc::new(event));
    }

    pub fn endpoint_ejected(
        &self,
        upstream: &str,
        endpoint: SocketAddr,
        period: Duration,
        failures: u32,
    ) {
        self.metrics.ejection(upstream, &endpoint.to_string());
        tracing::warn!(
            target: "gateway::outlier",
            upstream,
            %endpoint,
            ejected_for_ms = period.as_millis() as u64,
            consecutive_failures = failures,
            "endpoint ejected"
        );
        self.publish(json!({
            "type": "endpoint_ejected",
            "upstream": upstream,
            "endpoint": endpoint.to_string(),
            "ejected_for_ms": period.as_millis() as u64,
            "consecutive_failures": failures,
            "at_unix_ms": unix_ms(SystemTime::now()),
            "config_generation": self.generation.load(Ordering::Relaxed),
        }));
    }

    pub fn endpoint_health(&self, upstream: &str, endpoint: SocketAddr, healthy: bool) {
        if healthy {
            tracing::info!(target: "gateway::health", upstream, %endpoint, "endpoint healthy");
        } else {
            tracing::warn!(target: "gateway::health", upstream, %endpoint, "endpoint unhealthy");
        }
        self.publish(json!({
            "type": "endpoint_health",
            "upstream": upstream,
            "endpoint": endpoint.to_string(),
            "healthy": healthy,
            "at_unix_ms": unix_ms(SystemTime::now()),
        }));
    }
}

/// The JSON form of a transition: what changed, why, the window at that moment, and
/// what the upstream failed with most since the previous transition.
pub fn transition_json(
    t: &Transition,
    generation: u64,
    top_failure: Option<&(String, u32)>,
) -> Value {
    json!({
        "type": "breaker_transition",
        "upstream": &*t.breaker,
        "from": t.from.as_str(),
        "to": t.to.as_str(),
        "reason": t.reason.as_str(),
        "at_unix_ms": unix_ms(t.at),
        "window": {
            "calls": t.window.calls,
            "failures": t.window.failures,
            "slow": t.window.slow,
            "failure_rate": t.window.failure_rate(),
            "slow_rate": t.window.slow_rate(),
        },
        "consecutive_failures": t.consecutive_failures,
        "open_for_ms": t.open_for.map(|d| d.as_millis() as u64),
        "config_generation": generation,
        "top_failure": top_failure.map(|(what, count)| json!({ "kind": what, "count": count })),
        "origin": t.remote.as_ref().map_or("local", |r| &*r.instance),
        "remote_reason": t.remote.as_ref().map(|r| &*r.reason),
    })
}

/// A shadow transition in the words of its event: what the live breaker would do.
fn would(to: crate::breaker::State) -> &'static str {
    match to {
        crate::breaker::State::Open => "open",
        crate::breaker::State::HalfOpen => "half_open",
        _ => "close",
    }
}

/// The listener one upstream's breaker reports to: adds what that upstream has been
/// failing with, then hands the transition to the hub.
#[derive(Debug)]
pub struct UpstreamEvents {
    pub hub: Arc<EventHub>,
    pub failures: Arc<crate::upstream::failure_tally::FailureTally>,
}

impl TransitionListener for UpstreamEvents {
    fn on_transition(&self, t: &Transition) {
        let top = self.failures.take_top();
        self.hub.transition(t, top);
    }
}

/// The listener of an upstream's shadow breaker: what the candidate policy would have
/// done, never acted on.
#[derive(Debug)]
pub struct ShadowEvents {
    pub hub: Arc<EventHub>,
    pub failures: Arc<crate::upstream::failure_tally::FailureTally>,
}

impl TransitionListener for ShadowEvents {
    fn on_transition(&self, t: &Transition) {
        self.hub.shadow_transition(t, self.failures.top());
    }
}

impl EventHub {
    /// A shadow policy's transition: logged, kept in the upstream's shadow history and
    /// broadcast as `shadow_transition` ("would open", "would close").
    pub fn shadow_transition(&self, t: &Transition, top_failure: Option<(String, u32)>) {
        tracing::info!(
            target: "gateway::shadow",
            upstream = &*t.breaker,
            from = t.from.as_str(),
            to = t.to.as_str(),
            reason = t.reason.as_str(),
            window_calls = t.window.calls,
            window_failures = t.window.failures,
            failure_rate = t.window.failure_rate(),
            consecutive_failures = t.consecutive_failures,
            "shadow breaker would {}",
            would(t.to)
        );
        let mut event = transition_json(
            t,
            self.generation.load(Ordering::Relaxed),
            top_failure.as_ref(),
        );
        event["type"] = json!("shadow_transition");
        event["would"] = json!(would(t.to));
        self.shadow_history.push(&t.breaker, event.clone());
        self.publish(event);
    }

    /// The most recent shadow transitions of `upstream`, oldest first.
    pub fn shadow_history(&self, upstream: &str) -> Vec<Value> {
        self.shadow_history.of(upstream)
    }

    pub fn transition(&self, t: &Transition, top_failure: Option<(String, u32)>) {
        tracing::warn!(
            target: "gateway::breaker",
            upstream = &*t.breaker,
            from = t.from.as_str(),
            to = t.to.as_str(),
            reason = t.reason.as_str(),
            window_calls = t.window.calls,
            window_failures = t.window.failures,
            window_slow = t.window.slow,
            failure_rate = t.window.failure_rate(),
            slow_rate = t.window.slow_rate(),
            consecutive_failures = t.consecutive_failures,
            open_for_ms = t.open_for.map(|d| d.as_millis() as u64),
            top_failure = top_failure.as_ref().map(|(what, _)| what.as_str()),
            top_failure_count = top_failure.as_ref().map(|(_, n)| *n),
            "breaker transition"
        );
        self.metrics.transition(t);
        let own_evidence = !matches!(
            t.reason,
            Reason::Operator(_) | Reason::Reset | Reason::Adopted
        );
        if own_evidence && matches!(t.to, State::Open | State::HalfOpen | State::Closed) {
            self.tell_fleet(FleetNote::Transition {
                upstream: t.breaker.to_string(),
                to: t.to,
                open_remaining: t.open_for,
                reason: t.reason.as_str(),
                window: t.window,
                at: t.at,
            });
        }
        let event = transition_json(
            t,
            self.generation.load(Ordering::Relaxed),
            top_failure.as_ref(),
        );
        self.history.push(&t.breaker, event.clone());
        self.publish(event);
    }
}

impl TransitionListener for EventHub {
    fn on_transition(&self, t: &Transition) {
        self.transition(t, None);
    }
}
