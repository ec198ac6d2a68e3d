//! What a finished request leaves in the outcome recording (`server.record_outcomes`):
//! a line per attempt the breaker recorded, and one for a refusal (the upstream's
//! breaker or bulkhead turned the request away). Built in `logging` from what the
//! request kept; the recorder takes it without waiting.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pingora::proxy::Session;

use super::call::Call;
use crate::outcomes::{MAX_PATH, OutcomeRecord, Recorder, cut, select_headers};
use crate::upstream::classify::CallResult;

/// A request the route's upstream refused: its name and why (`circuit_open`, `overloaded`).
pub type Refusal = (String, &'static str);

pub fn write(
    recorder: &Recorder,
    session: &Session,
    route: &str,
    config: &str,
    call: Option<&Call>,
    refused: Option<&Refusal>,
    started: Instant,
) {
    if call.is_none_or(|c| c.attempts.is_empty()) && refused.is_none() {
        return;
    }
    // Instants to wall-clock time, through one reading of both clocks.
    let (now, wall) = (Instant::now(), SystemTime::now());
    let unix_us = |at: Instant| {
        let wall_at = wall
            .checked_sub(now.saturating_duration_since(at))
            .unwrap_or(wall);
        micros(wall_at.duration_since(UNIX_EPOCH).unwrap_or_default())
    };
    let req = session.req_header();
    let request_headers = select_headers(&req.headers, &recorder.headers);
    let base = || OutcomeRecord {
        request_headers: request_headers.clone(),
        ..OutcomeRecord::new(
            route,
            "",
            req.method.as_str(),
            cut(req.uri.path(), MAX_PATH),
            config,
        )
    };
    if let Some((upstream, reason)) = refused {
        let mut record = base();
        record.at_us = unix_us(started);
        record.upstream.clone_from(upstream);
        record.rejected = Some((*reason).to_string());
        recorder.record(record);
    }
    let Some(call) = call else {
        return;
    };
    for attempt in &call.attempts {
        let mut record = base();
        record.at_us = unix_us(attempt.admitted);
        record.elapsed_us = micros(attempt.finished.saturating_duration_since(attempt.admitted));
        record.latency_us = micros(attempt.latency);
        record.upstream = call.upstream.name().to_string();
        record.endpoint = attempt.endpoint.map(|e| e.to_string());
        record.set_result(attempt.result);
        record.verdict = Some(
            match attempt.failed {
                Some(true) => "failure",
                Some(false) => "success",
                None => "ignored",
            }
            .to_string(),
        );
        if matches!(
            attempt.result,
            CallResult::Response(_) | CallResult::Grpc(_)
        ) {
            record.response_headers.clone_from(&call.response_headers);
        }
        recorder.record(record);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
