//! JSON views of breakers and upstreams, and the operator actions on breakers.

use serde_json::{Value, json};

use crate::breaker::{Breaker, Mode, State};
use crate::events::unix_ms;
use crate::runtime::{ModeSource, RuntimeHandle};
use crate::upstream::Upstream;

pub fn breaker(upstream: &Upstream, runtime: &RuntimeHandle) -> Value {
    let events = &runtime.events;
    let (_, source) = runtime.mode_of(upstream);
    let mode_source = match source {
        ModeSource::File => {
            json!({ "from": "file", "file_mode": upstream.spec.breaker_mode.as_str() })
        }
        ModeSource::Override(o) => json!({
            "from": "override",
            "file_mode": upstream.spec.breaker_mode.as_str(),
            "since_unix_ms": o.since_unix_ms,
            "by": o.by,
            "token": o.token,
            "persisted": runtime.modes.persisted(),
        }),
    };
    let mut view = breaker_view(&upstream.breaker);
    view["upstream"] = json!(upstream.name());
    view["origin"] = json!(
        upstream
            .breaker
            .snapshot()
            .origin
            .as_deref()
            .unwrap_or("local")
    );
    view["mode_source"] = mode_source;
    view["transitions"] = json!(events.history(upstream.name()));
    if let Some(shadow) = &upstream.shadow {
        let mut shadow_view = breaker_view(shadow);
        shadow_view["transitions"] = json!(events.shadow_history(upstream.name()));
        view["shadow"] = shadow_view;
    }
    view
}

/// What one breaker (live or shadow) holds and decides by.
fn breaker_view(breaker: &Breaker) -> Value {
    let snapshot = breaker.snapshot();
    let policy = breaker.policy();
    json!({
        "state": snapshot.state.as_str(),
        "mode": snapshot.mode.as_str(),
        "since_unix_ms": unix_ms(snapshot.since),
        "in_state_ms": snapshot.in_state_for.as_millis() as u64,
        "open_remaining_ms": snapshot.open_remaining.map(|d| d.as_millis() as u64),
        "window": {
            "calls": snapshot.window.calls,
            "failures": snapshot.window.failures,
            "slow": snapshot.window.slow,
            "failure_rate": snapshot.window.failure_rate(),
            "slow_rate": snapshot.window.slow_rate(),
        },
        "consecutive_failures": snapshot.consecutive_failures,
        "rejections": snapshot.rejections,
        "half_open": {
            "probes_admitted": snapshot.probes_admitted,
            "probe_successes": snapshot.probe_successes,
            "permitted_requests": policy.half_open.permitted_requests.get(),
            "success_threshold": policy.half_open.success_threshold.get(),
        },
        "thresholds": {
            "minimum_requests": policy.minimum_requests.get(),
            "failure_rate": policy.failure_rate,
            "consecutive_failures": policy.consecutive_failures.map(|n| n.get()),
            "slow_call_rate": policy.slow_call.map(|s| s.rate),
            "slow_call_duration_ms": policy.slow_call.map(|s| s.duration.as_millis() as u64),
            "open_duration_ms": policy.open_duration.as_millis() as u64,
        },
    })
}

/// A word an operator can act on: healthy, degraded, recovering or unhealthy.
fn status_word(upstream: &Upstream, usable: usize) -> &'static str {
    match upstream.breaker.state() {
        State::Open | State::ForcedOpen => "unhealthy",
        State::HalfOpen => "recovering",
        _ if usable == 0 => "unhealthy",
        _ if usable < upstream.endpoints.len() => "degraded",
        _ => "healthy",
    }
}

pub fn upstream_health(upstream: &Upstream, runtime: &RuntimeHandle) -> Value {
    let ejected: Vec<_> = upstream.ejected().map(|e| e.addr).collect();
    let endpoints: Vec<Value> = upstream
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "address": e.addr.to_string(),
                "healthy": upstream.is_healthy(e),
                "ejected": ejected.contains(&e.addr),
                "ejected_for_ms": upstream.ejected_for(e).map(|d| d.as_millis() as u64),
            })
        })
        .collect();
    let usable = upstream
        .endpoints
        .iter()
        .filter(|e| upstream.is_healthy(e) && !ejected.contains(&e.addr))
        .count();
    let snapshot = upstream.breaker.snapshot();
    json!({
        "upstream": upstream.name(),
        "status": status_word(upstream, usable),
        "breaker_state": snapshot.state.as_str(),
        "failure_rate": snapshot.window.failure_rate(),
        "window_calls": snapshot.window.calls,
        "consecutive_failures": snapshot.consecutive_failures,
        "usable_endpoints": usable,
        "endpoints": endpoints,
        "in_flight": upstream.bulkhead.in_flight(),
        // With a cluster: whether this instance hears the fleet or stands alone.
        "fleet": runtime.events.fleet_connected().map(|up| if up { "connected" } else { "alone" }),
    })
}

/// Parses `{"state": "forced_open" | "disabled" | "metrics_only" | "automatic"}`.
pub fn requested_mode(body: &[u8]) -> Result<Mode, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    match value.get("state").and_then(Value::as_str) {
        Some("forced_open") => Ok(Mode::ForcedOpen),
        Some("disabled") => Ok(Mode::Disabled),
        Some("metrics_only") => Ok(Mode::MetricsOnly),
        Some("automatic") => Ok(Mode::Automatic),
        Some(other) => Err(format!(
            "unknown state `{other}`; use forced_open, disabled, metrics_only or automatic"
        )),
        None => Err("expected {\"state\": \"forced_open|disabled|metrics_only|automatic\"}".into()),
    }
}
