//! Gateway types to WIT types (what a plugin is told) and back (what it answers).

use std::time::Duration;

use pingora::http::ResponseHeader;

use super::types;
use crate::breaker::State;
use crate::upstream::classify::{Judgement, TransportError};

pub fn response(head: &ResponseHeader) -> types::ResponseInfo {
    types::ResponseInfo {
        status: head.status.as_u16(),
        body_prefix: None,
    }
}

pub fn outcome(
    response: Option<types::ResponseInfo>,
    error: Option<TransportError>,
    latency: Duration,
) -> types::Outcome {
    types::Outcome {
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
