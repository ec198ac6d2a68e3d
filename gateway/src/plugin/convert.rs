//! Gateway types to WIT types (what a plugin is told) and back (what it answers).

use std::time::Duration;

use pingora::http::{RequestHeader, ResponseHeader};

use super::types;
use crate::breaker::State;
use crate::classify::{Judgement, TransportError};

pub fn request(req: &RequestHeader, route: &str, upstream: &str) -> types::RequestInfo {
    let authority = req
        .headers
        .get(http::header::HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .or_else(|| req.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    types::RequestInfo {
        method: req.method.as_str().to_string(),
        path: req
            .uri
            .path_and_query()
            .map_or_else(|| req.uri.path().to_string(), |pq| pq.as_str().to_string()),
        authority,
        route: route.to_string(),
        upstream: upstream.to_string(),
    }
}

pub fn response(head: &ResponseHeader) -> types::ResponseInfo {
    types::ResponseInfo {
        status: head.status.as_u16(),
        body_prefix: None,
    }
}

pub fn outcome(
    request: types::RequestInfo,
    response: Option<types::ResponseInfo>,
    error: Option<TransportError>,
    latency: Duration,
) -> types::Outcome {
    types::Outcome {
        request,
        response,
        error: error.map(transport_error),
        latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
    }
}

fn transport_error(error: TransportError) -> types::TransportError {
    match error {
        TransportError::ConnectRefused => types::TransportError::ConnectRefused,
        TransportError::ConnectTimeout => types::TransportError::ConnectTimeout,
        TransportError::ReadTimeout => types::TransportError::ReadTimeout,
        TransportError::WriteTimeout => types::TransportError::WriteTimeout,
        TransportError::ConnectionReset => types::TransportError::ConnectionReset,
        TransportError::Tls => types::TransportError::Tls,
        TransportError::Other => types::TransportError::Other,
    }
}

pub fn breaker_state(state: State) -> types::BreakerState {
    match state {
        State::Closed => types::BreakerState::Closed,
        State::Open => types::BreakerState::Open,
        State::HalfOpen => types::BreakerState::HalfOpen,
        State::ForcedOpen => types::BreakerState::ForcedOpen,
        State::Disabled => types::BreakerState::Disabled,
        State::MetricsOnly => types::BreakerState::MetricsOnly,
    }
}

pub fn judgement(verdict: types::Verdict) -> Judgement {
    Judgement {
        failed: match verdict.classification {
            types::Classification::Success => Some(false),
            types::Classification::Failure => Some(true),
            types::Classification::Ignore => None,
        },
        slow: verdict.slow,
    }
}
