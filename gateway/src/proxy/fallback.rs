//! What a client gets instead of the upstream: chosen when admission fails or the
//! upstream fails without an answer. Every fallback response says so in a header.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;

use crate::breaker::State;
use crate::config::{FallbackSpec, StaticResponse};
use crate::plugin::answer::synthetic_response;
use crate::plugin::{Exchange, PluginError, convert, types};
use crate::runtime::Runtime;
use crate::upstream::Upstream;

use super::call::{Call, Rejection};
use super::grpc;
use super::headers::REQUEST_ID;
use crate::grpc::Code;

pub const FALLBACK_HEADER: &str = "x-gateway-fallback";
pub const FALLBACK_UPSTREAM_HEADER: &str = "x-gateway-fallback-upstream";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackReason {
    /// The breaker rejected the call (open, half-open with all probes taken, forced open).
    CircuitOpen { state: State, retry_after: Duration },
    /// The bulkhead was full.
    Overloaded,
    /// The upstream failed before any response head reached the client.
    UpstreamFailed,
}

impl FallbackReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::CircuitOpen { .. } => "circuit_open",
            FallbackReason::Overloaded => "overloaded",
            FallbackReason::UpstreamFailed => "upstream_failed",
        }
    }

    fn retry_after(self) -> Option<Duration> {
        match self {
            FallbackReason::CircuitOpen { retry_after, .. } => Some(retry_after),
            FallbackReason::Overloaded => Some(Duration::from_secs(1)),
            FallbackReason::UpstreamFailed => None,
        }
    }
}

impl FallbackReason {
    fn to_wit(self) -> types::FallbackReason {
        match self {
            FallbackReason::CircuitOpen { .. } => types::FallbackReason::CircuitOpen,
            FallbackReason::Overloaded => types::FallbackReason::Overloaded,
            FallbackReason::UpstreamFailed => types::FallbackReason::UpstreamFailed,
        }
    }
}

impl From<Rejection> for FallbackReason {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::Breaker(rejected) => FallbackReason::CircuitOpen {
                state: rejected.state,
                retry_after: rejected.retry_after,
            },
            Rejection::Overloaded => FallbackReason::Overloaded,
        }
    }
}

pub enum Admission {
    /// Go ahead: with the route's upstream, or a fallback upstream standing in for it.
    Call(Box<Call>),
    /// Answer with `upstream`'s fallback response.
    Respond {
        upstream: Arc<Upstream>,
        reason: FallbackReason,
    },
}

/// Admits the request to `upstream`, following `fallback: { upstream }` links when it
/// rejects (config validation guarantees the chain ends).
pub fn admit(runtime: &Runtime, upstream: &Arc<Upstream>) -> Admission {
    let mut current = Arc::clone(upstream);
    let mut first_rejection: Option<FallbackReason> = None;
    for _ in 0..=runtime.upstreams.len() {
        match Call::admit(&current, runtime) {
            Ok(mut call) => {
                if let Some(reason) = first_rejection {
                    call.fallback_for = Some((upstream.name().to_string(), reason));
                }
                return Admission::Call(Box::new(call));
            }
            Err(rejection) => {
                let reason = first_rejection.get_or_insert(FallbackReason::from(rejection));
                let next = match &current.spec.fallback {
                    FallbackSpec::Upstream(name) => runtime.upstreams.get(name),
                    _ => None,
                };
                match next {
                    Some(next) => current = Arc::clone(next),
                    None => {
                        return Admission::Respond {
                            upstream: current,
                            reason: *reason,
                        };
                    }
                }
            }
        }
    }
    Admission::Respond {
        upstream: current,
        reason: first_rejection.unwrap_or(FallbackReason::Overloaded),
    }
}

/// What a fallback plugin made of a request its upstream cannot serve.
pub enum PluginAnswer {
    /// Its response was sent; the status.
    Responded(u16),
    /// The request goes to another upstream, admitted by that upstream's breaker.
    Rerouted(Box<Call>),
    /// No plugin, the plugin declined, failed, or asked for something impossible:
    /// the built-in fallback answers.
    Declined,
}

/// Asks `upstream`'s fallback plugin, if it has one, and carries out its answer. A
/// reroute is only possible before the request went anywhere (not after the upstream
/// failed), and the upstream it names answers through its own breaker, without
/// following that upstream's fallback.
pub async fn ask_plugin(
    session: &mut Session,
    runtime: &Runtime,
    route: &String,
    upstream: &Arc<Upstream>,
    reason: FallbackReason,
    request_id: &str,
) -> Result<PluginAnswer> {
    let FallbackSpec::Plugin(name) = &upstream.spec.fallback else {
        return Ok(PluginAnswer::Declined);
    };
    let Some(plugin) = runtime.plugins.get(name) else {
        return Ok(PluginAnswer::Declined);
    };
    let (state, retry_after) = match reason {
        FallbackReason::CircuitOpen { state, retry_after } => (state, retry_after),
        _ => (upstream.breaker.state(), Duration::ZERO),
    };
    let context = types::FallbackContext {
        reason: reason.to_wit(),
        state: convert::breaker_state(state),
        retry_after_ms: u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
    };
    let metrics = &upstream.events.metrics;
    let exchange = Exchange {
        request: session.req_header(),
        route,
        upstream: &upstream.spec.name,
        response: None,
        trailers: None,
    };
    match plugin.respond(context, exchange) {
        Ok(types::FallbackAction::Respond(response)) => match synthetic_response(response) {
            Ok(response) => {
                metrics.fallback(upstream.name(), reason.as_str(), "plugin");
                let status = response.status;
                write(session, response, reason, request_id).await?;
                Ok(PluginAnswer::Responded(status))
            }
            Err(problem) => {
                plugin.count(PluginError::InvalidAnswer(problem));
                Ok(PluginAnswer::Declined)
            }
        },
        Ok(types::FallbackAction::Reroute(target)) => {
            let Some(next) = runtime.upstreams.get(&target) else {
                plugin.count(PluginError::InvalidAnswer(format!(
                    "reroute to `{target}`, which is not a configured upstream"
                )));
                return Ok(PluginAnswer::Declined);
            };
            if reason == FallbackReason::UpstreamFailed {
                return Ok(PluginAnswer::Declined);
            }
            match Call::admit(next, runtime) {
                Ok(mut call) => {
                    metrics.fallback(upstream.name(), reason.as_str(), "upstream");
                    call.fallback_for = Some((upstream.name().to_string(), reason));
                    Ok(PluginAnswer::Rerouted(Box::new(call)))
                }
                Err(_) => Ok(PluginAnswer::Declined),
            }
        }
        Ok(types::FallbackAction::Decline) | Err(_) => Ok(PluginAnswer::Declined),
    }
}

/// Writes `upstream`'s fallback response: its configured static response, or the
/// default JSON 503. Returns the status sent.
pub async fn respond(
    session: &mut Session,
    upstream: &Upstream,
    reason: FallbackReason,
    request_id: &str,
) -> Result<u16> {
    let (kind, mut response) = match &upstream.spec.fallback {
        FallbackSpec::Static(response) => ("static", response.clone()),
        _ => (
            "default",
            default_response(upstream.name(), reason, request_id),
        ),
    };
    upstream
        .events
        .metrics
        .fallback(upstream.name(), reason.as_str(), kind);
    if grpc::is_grpc_request(session.req_header()) {
        // A gRPC client reads a status, not a page (Trailers-Only).
        let (code, message) = grpc_answer(upstream.name(), reason);
        let message = response.grpc_message.unwrap_or(message);
        grpc::write_trailers_only(
            session,
            grpc::Answer {
                code: response.grpc_status.unwrap_or(code),
                message: &message,
                pushback: reason.retry_after(),
                headers: vec![
                    (FALLBACK_HEADER, reason.as_str().to_string()),
                    (REQUEST_ID, request_id.to_string()),
                ],
            },
        )
        .await?;
        return Ok(200);
    }
    if let Some(retry_after) = reason.retry_after()
        && !response.headers.iter().any(|(n, _)| n == "retry-after")
    {
        // Whole seconds, rounded up, at least 1: never tell a client to retry at once.
        let secs = retry_after.as_millis().div_ceil(1000).max(1);
        response
            .headers
            .push(("retry-after".into(), secs.to_string()));
    }
    let status = response.status;
    write(session, response, reason, request_id).await?;
    Ok(status)
}

/// Sends a fallback response, marked as one; its trailers, if any, after the body.
async fn write(
    session: &mut Session,
    response: StaticResponse,
    reason: FallbackReason,
    request_id: &str,
) -> Result<()> {
    let mut header = ResponseHeader::build(response.status, Some(response.headers.len() + 4))?;
    for (name, value) in response.headers {
        header.insert_header(name, value)?;
    }
    if response.trailers.is_empty() {
        header.insert_header("content-length", response.body.len().to_string())?;
    }
    header.insert_header(FALLBACK_HEADER, reason.as_str())?;
    header.insert_header(REQUEST_ID, request_id)?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    let trailers = response.trailers;
    session
        .write_response_body(Some(response.body), trailers.is_empty())
        .await?;
    if !trailers.is_empty() {
        let mut map = http::HeaderMap::with_capacity(trailers.len());
        for (name, value) in trailers {
            // Checked when the answer was (`plugin/answer.rs`).
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(&value),
            ) {
                map.append(name, value);
            }
        }
        session.write_response_trailers(map).await?;
    }
    Ok(())
}

/// The gRPC status and message of the default fallback.
fn grpc_answer(upstream: &str, reason: FallbackReason) -> (Code, String) {
    match reason {
        FallbackReason::CircuitOpen { state, retry_after } => (
            Code::UNAVAILABLE,
            format!(
                "the gateway's circuit breaker for upstream `{upstream}` is {state}: not calling it for {} ms",
                retry_after.as_millis()
            ),
        ),
        FallbackReason::Overloaded => (
            Code::RESOURCE_EXHAUSTED,
            format!("too many calls in flight to upstream `{upstream}` (bulkhead full)"),
        ),
        FallbackReason::UpstreamFailed => (
            Code::UNAVAILABLE,
            format!("upstream `{upstream}` could not be reached or failed"),
        ),
    }
}

fn default_response(upstream: &str, reason: FallbackReason, request_id: &str) -> StaticResponse {
    let retry_after_ms = reason.retry_after().map_or(0, |d| d.as_millis() as u64);
    let body = match reason {
        FallbackReason::CircuitOpen { state, .. } => serde_json::json!({
            "code": "CIRCUIT_BREAKER_OPEN",
            "message": "the upstream is failing; the gateway is not calling it for now",
            "upstream": upstream,
            "state": state.as_str(),
            "retry_after_ms": retry_after_ms,
            "request_id": request_id,
        }),
        FallbackReason::Overloaded => serde_json::json!({
            "code": "UPSTREAM_OVERLOADED",
            "message": "too many requests in flight to this upstream",
            "upstream": upstream,
            "retry_after_ms": retry_after_ms,
            "request_id": request_id,
        }),
        FallbackReason::UpstreamFailed => serde_json::json!({
            "code": "UPSTREAM_UNAVAILABLE",
            "message": "the upstream could not be reached or failed",
            "upstream": upstream,
            "request_id": request_id,
        }),
    };
    StaticResponse {
        status: 503,
        headers: vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("cache-control".to_string(), "no-store".to_string()),
        ],
        body: Bytes::from(body.to_string()),
        trailers: Vec::new(),
        grpc_status: None,
        grpc_message: None,
    }
}
