//! Operator-visible events: every breaker transition and endpoint ejection is logged
//! through tracing and fanned out to subscribers (the admin event stream).

use std::sync::Arc;

use crate::breaker::{Broadcast, Transition, TransitionListener};

#[derive(Debug)]
pub struct EventHub {
    transitions: Broadcast,
}

impl Default for EventHub {
    fn default() -> Self {
        Self {
            transitions: Broadcast::new(1024),
        }
    }
}

impl EventHub {
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Transition>> {
        self.transitions.subscribe()
    }

    pub fn endpoint_ejected(
        &self,
        upstream: &str,
        endpoint: std::net::SocketAddr,
        for_: std::time::Duration,
        failures: u32,
    ) {
        tracing::warn!(
            target: "gateway::outlier",
            upstream,
            %endpoint,
            ejected_for_ms = for_.as_millis() as u64,
            consecutive_failures = failures,
            "endpoint ejected"
        );
    }
}

impl EventHub {
    pub fn endpoint_health(&self, upstream: &str, endpoint: std::net::SocketAddr, healthy: bool) {
        if healthy {
            tracing::info!(target: "gateway::health", upstream, %endpoint, "endpoint healthy");
        } else {
            tracing::warn!(target: "gateway::health", upstream, %endpoint, "endpoint unhealthy");
        }
    }
}

impl TransitionListener for EventHub {
    fn on_transition(&self, t: &Transition) {
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
            "breaker transition"
        );
        self.transitions.on_transition(t);
    }
}
