//! Running recorded outcomes through a config's breakers.
//!
//! Each upstream gets the real `Breaker`, built from the config's policy and mode, with
//! a clock that is set, not read: to an attempt's admission time before `try_acquire`,
//! to the time it ended before its outcome is recorded. Attempts are admitted in the
//! order they started and recorded in the order they ended, so concurrency (a probe
//! still out while others arrive) is replayed as it happened. What the breaker cannot
//! know is not invented: an attempt the live gateway refused has no outcome, and one
//! the candidate would admit counts as unknown (its permit is dropped, as for a
//! cancelled call).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::breaker::{
    Breaker, Clock, Mode, Nanos, Outcome, Permit, State, Transition, TransitionListener,
};
use crate::config::{Config, UpstreamSpec};
use crate::plugin::{Exchange, Plugin, PluginSet, convert, types};
use crate::upstream::classify::{CallResult, Judgement};

use super::input::{Entry, Exchanged, Recording};
use crate::outcomes::RecordedResult;

/// A clock that replay sets; never read from the system.
#[derive(Debug, Default)]
struct ReplayClock(AtomicU64);

impl ReplayClock {
    fn set(&self, at: Nanos) {
        self.0.store(at.0, Ordering::Relaxed);
    }
}

impl Clock for ReplayClock {
    fn now(&self) -> Nanos {
        Nanos(self.0.load(Ordering::Relaxed))
    }
}

/// Collects transitions, stamped with the replay clock (a transition's own `at` is
/// the wall clock of the replay, which says nothing).
#[derive(Debug)]
struct Timeline {
    clock: Arc<ReplayClock>,
    steps: Mutex<Vec<(Nanos, Transition)>>,
}

impl Timeline {
    fn len(&self) -> usize {
        self.steps.lock().map_or(0, |s| s.len())
    }

    /// Notes `line` as the cause of the transitions since the last call.
    fn caused_by(&self, causes: &mut Vec<Option<usize>>, line: Option<usize>) {
        let len = self.len();
        while causes.len() < len {
            causes.push(line);
        }
    }
}

impl TransitionListener for Timeline {
    fn on_transition(&self, transition: &Transition) {
        let mut steps = self.steps.lock().unwrap_or_else(|p| p.into_inner());
        steps.push((self.clock.now(), transition.clone()));
    }
}

/// One transition of a replayed breaker.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub at_unix_us: u64,
    pub from: &'static str,
    pub to: &'static str,
    pub reason: &'static str,
    pub window_calls: u32,
    pub window_failures: u32,
    pub window_slow: u32,
    pub consecutive_failures: u32,
    pub open_for_ms: Option<u64>,
    /// The line of the outcome that caused it (for an open period's end: the request
    /// that found it over).
    pub line: Option<usize>,
}

/// What one upstream's breaker did over the recording.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UpstreamRun {
    pub upstream: String,
    pub transitions: Vec<Step>,
    /// Attempts judged and recorded in the breaker, by judgement.
    pub failures: u64,
    pub successes: u64,
    pub ignored: u64,
    /// Requests the breaker would have turned away (they would have had the fallback).
    pub rejected: u64,
    /// ... of which the live gateway had called the upstream (their outcome is known).
    pub rejected_called_live: u64,
    /// ... and of those, what this config judges their recorded outcome: a failure
    /// the breaker would have spared the upstream, or a success it would have cost.
    pub rejected_failures: u64,
    pub rejected_successes: u64,
    /// Requests the live gateway refused but this breaker would have admitted: their
    /// outcome is unknown and is not counted.
    pub admitted_unknown: u64,
    /// Time spent open (and forced open), in seconds, until the last recorded outcome.
    pub open_seconds: f64,
    pub half_open_seconds: f64,
    pub final_state: &'static str,
    /// The lines of requests that would have been rejected, the first 1000.
    pub rejected_lines: Vec<usize>,
}

/// Most rejected lines listed per upstream (the count is always whole).
const LISTED_LINES: usize = 1000;

/// Replays every upstream of `recording` with `config`'s breakers.
pub fn simulate(config: &Config, plugins: &PluginSet, recording: &Recording) -> Vec<UpstreamRun> {
    recording
        .upstreams
        .iter()
        .enumerate()
        .filter_map(|(index, name)| {
            let spec = config.upstreams.get(name)?;
            let predicate = spec
                .predicate
                .as_deref()
                .and_then(|p| plugins.get(p))
                .map(Arc::as_ref);
            let entries = recording.entries.iter().filter(|e| e.upstream == index);
            Some(run_upstream(spec, predicate, entries))
        })
        .collect()
}

/// An admitted attempt waiting for its end.
struct Pending {
    permit: Permit,
    outcome: Outcome,
    line: usize,
}

fn run_upstream<'a>(
    spec: &UpstreamSpec,
    predicate: Option<&Plugin>,
    entries: impl Iterator<Item = &'a Entry>,
) -> UpstreamRun {
    let clock = Arc::new(ReplayClock::default());
    let timeline = Arc::new(Timeline {
        clock: Arc::clone(&clock),
        steps: Mutex::new(Vec::new()),
    });
    let breaker = Arc::new(Breaker::new(
        spec.name.as_str(),
        spec.breaker,
        Arc::clone(&clock) as Arc<dyn Clock>,
        Arc::clone(&timeline) as Arc<dyn TransitionListener>,
    ));
    let mut run = UpstreamRun {
        upstream: spec.name.clone(),
        ..UpstreamRun::default()
    };
    let mut entries = entries.peekable();
    let Some(origin_us) = entries.peek().map(|e| e.at_us) else {
        return run;
    };
    let nanos = |us: u64| Nanos(us.saturating_sub(origin_us).saturating_mul(1000));
    if spec.breaker_mode != Mode::Automatic {
        breaker.set_mode(spec.breaker_mode);
    }
    // Attempts admitted and not yet ended, soonest end first.
    let mut ends: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut pending: Vec<Option<Pending>> = Vec::new();
    // Per transition, the line of the outcome (or request) that caused it.
    let mut causes: Vec<Option<usize>> = Vec::new();
    timeline.caused_by(&mut causes, None);
    let mut last_us = origin_us;
    let end_until = |until_us: u64,
                     ends: &mut BinaryHeap<Reverse<(u64, usize)>>,
                     pending: &mut Vec<Option<Pending>>,
                     causes: &mut Vec<Option<usize>>| {
        while let Some(Reverse((end_us, slot))) = ends.peek().copied() {
            if end_us > until_us {
                break;
            }
            ends.pop();
            if let Some(p) = pending.get_mut(slot).and_then(Option::take) {
                clock.set(nanos(end_us));
                breaker.record(p.permit, p.outcome);
                timeline.caused_by(causes, Some(p.line));
            }
        }
    };
    for entry in entries {
        end_until(entry.at_us, &mut ends, &mut pending, &mut causes);
        clock.set(nanos(entry.at_us));
        last_us = last_us.max(entry.at_us.saturating_add(entry.elapsed_us));
        let admitted = breaker.try_acquire();
        timeline.caused_by(&mut causes, Some(entry.line));
        let result = match entry.result {
            RecordedResult::Called(result) => Some(result),
            RecordedResult::Rejected => None,
        };
        match (admitted, result) {
            (Err(_), called) => {
                run.rejected += 1;
                if let Some(result) = called {
                    run.rejected_called_live += 1;
                    match judge(spec, predicate, entry, result).failed {
                        Some(true) => run.rejected_failures += 1,
                        Some(false) => run.rejected_successes += 1,
                        None => {}
                    }
                    if run.rejected_lines.len() < LISTED_LINES {
                        run.rejected_lines.push(entry.line);
                    }
                }
            }
            // Admitted, but the outcome is unknown: dropped unrecorded (ignored).
            (Ok(_permit), None) => run.admitted_unknown += 1,
            (Ok(permit), Some(result)) => {
                let judgement = judge(spec, predicate, entry, result);
                let latency = Duration::from_micros(entry.latency_us);
                let mut outcome = match judgement.failed {
                    Some(true) => {
                        run.failures += 1;
                        Outcome::failure(latency)
                    }
                    Some(false) => {
                        run.successes += 1;
                        Outcome::success(latency)
                    }
                    None => {
                        run.ignored += 1;
                        Outcome::ignored()
                    }
                };
                outcome.slow = judgement.slow;
                let end_us = entry.at_us.saturating_add(entry.elapsed_us);
                ends.push(Reverse((end_us, pending.len())));
                pending.push(Some(Pending {
                    permit,
                    outcome,
                    line: entry.line,
                }));
            }
        }
    }
    end_until(u64::MAX, &mut ends, &mut pending, &mut causes);
    let steps = std::mem::take(&mut *timeline.steps.lock().unwrap_or_else(|p| p.into_inner()));
    let end = nanos(last_us);
    let mut entered = (State::Closed, Nanos(0));
    // Summed as durations, turned into seconds once (no float drift in the report).
    let mut spent = [Duration::ZERO; 2];
    for (i, (at, t)) in steps.iter().enumerate() {
        add_time(&mut spent, entered, *at);
        entered = (t.to, *at);
        run.transitions.push(Step {
            at_unix_us: origin_us.saturating_add(at.0 / 1000),
            from: t.from.as_str(),
            to: t.to.as_str(),
            reason: t.reason.as_str(),
            window_calls: t.window.calls,
            window_failures: t.window.failures,
            window_slow: t.window.slow,
            consecutive_failures: t.consecutive_failures,
            open_for_ms: t
                .open_for
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            line: causes.get(i).copied().flatten(),
        });
    }
    add_time(&mut spent, entered, end.max(entered.1));
    [run.open_seconds, run.half_open_seconds] = spent.map(|d| d.as_secs_f64());
    run.final_state = breaker.state().as_str();
    run
}

/// Adds the time from `since` to `until` in `state` to `[open, half-open]`.
fn add_time(spent: &mut [Duration; 2], (state, since): (State, Nanos), until: Nanos) {
    let time = since.until(until);
    match state {
        State::Open | State::ForcedOpen => spent[0] += time,
        State::HalfOpen => spent[1] += time,
        _ => {}
    }
}

/// The config's judgement: its predicate plugin's (with `on_plugin_error`), else
/// `failure_when`'s. A client that went away is judged by nobody, as in the proxy.
fn judge(
    spec: &UpstreamSpec,
    predicate: Option<&Plugin>,
    entry: &Entry,
    result: CallResult,
) -> Judgement {
    let (Some(plugin), Some(exchanged)) = (predicate, entry.exchange.as_deref()) else {
        return spec.failure_when.judge(result);
    };
    if result == CallResult::Abandoned {
        return Judgement::default();
    }
    let Some(request) = request_header(exchanged) else {
        return spec.failure_when.judge(result);
    };
    let response_headers = header_map(&exchanged.response_headers);
    let mut trailers = http::HeaderMap::new();
    let (response, error) = match result {
        CallResult::Response(status) => (Some(status), None),
        CallResult::Grpc(code) => {
            trailers.insert(
                "grpc-status",
                http::HeaderValue::from(u16::from(code.value())),
            );
            (Some(200), None)
        }
        CallResult::Transport(error) => (None, Some(error)),
        CallResult::Abandoned => (None, None),
    };
    let info = response.map(|status| types::ResponseInfo {
        status,
        // Bodies are never recorded: a body-reading predicate sees an empty prefix.
        body_prefix: plugin.spec.inspect_body_bytes.map(|_| Vec::new()),
    });
    let outcome = convert::outcome(info, error, Duration::from_micros(entry.latency_us));
    let exchange = Exchange {
        request: &request,
        route: &exchanged.route,
        upstream: &spec.name,
        response: response.map(|_| &response_headers),
        trailers: matches!(result, CallResult::Grpc(_)).then_some(&trailers),
    };
    crate::plugin::judge(plugin, spec, &outcome, exchange, result)
}

/// The recorded request as a plugin reads it; None when its method or path no longer
/// builds a request (then `failure_when` judges).
fn request_header(exchanged: &Exchanged) -> Option<pingora::http::RequestHeader> {
    let mut request = pingora::http::RequestHeader::build(
        exchanged.method.as_str(),
        exchanged.path.as_bytes(),
        None,
    )
    .ok()?;
    for (name, value) in &exchanged.request_headers {
        // A recorded header that is no longer valid is left out, as a client's would be.
        let _ = request.append_header(name.clone(), value.as_str());
    }
    Some(request)
}

fn header_map(headers: &[(String, String)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            map.append(name, value);
        }
    }
    map
}
