//! A failure predicate on status, latency and headers, configured through `init`.
//!
//! Config keys (all optional):
//! - `failure_statuses`: statuses that count as failures, e.g. `"500-599,429"` (default `500-599`)
//! - `ignore_statuses`: statuses that count for nothing, e.g. `"404"` (default none)
//! - `failure_header`: a response header whose presence marks a failure, e.g. `x-degraded`
//! - `slow_ms`: calls at or above this latency are slow; others are not (default: the
//!   breaker's own `slow_call.duration` decides)
//! - `failure_grpc_statuses`: gRPC status codes that count as failures, e.g. `"14,4"`:
//!   read from the response's trailers (`grpc-status`), or from its head for a
//!   Trailers-Only answer
//!
//! Transport errors are always failures.
//!
//! It declares at `init` what it needs to see: every status from 300 up (so that a
//! status it does not list is a success, as before, not `failure_when`'s call), the
//! statuses above, transport errors, calls slower than `slow_ms`, responses carrying
//! `failure_header`, and every call when `failure_grpc_statuses` is set (the status is
//! in the trailers). The rest, fast 1xx/2xx answers without the header (healthy
//! traffic), is judged by the upstream's `failure_when` and the breaker's own
//! `slow_call.duration` without calling the plugin: with `slow_ms`, keep
//! `slow_call.duration` unset or at least as long, and on a gRPC upstream set
//! `failure_grpc_statuses` (else `failure_when.grpc_statuses` judges a 200's status).

use std::cell::RefCell;

wit_bindgen::generate!({ world: "failure-predicate", path: "../../wit" });

use edge_gateway::plugin::host::{LogLevel, Message, header, log};
use edge_gateway::plugin::types::{Classification, StatusRange};

#[derive(Default)]
struct Settings {
    failure_statuses: Vec<(u16, u16)>,
    ignore_statuses: Vec<(u16, u16)>,
    failure_header: Option<String>,
    slow_us: Option<u64>,
    failure_grpc_statuses: Vec<u8>,
}

thread_local! {
    static SETTINGS: RefCell<Settings> = RefCell::new(Settings::default());
}

/// Parses `"500-599,429"` into inclusive ranges.
fn status_ranges(key: &str, text: &str) -> Result<Vec<(u16, u16)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            let parse = |s: &str| {
                s.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|n| (100..=599).contains(n))
                    .ok_or_else(|| {
                        format!("{key}: `{part}` is not a status or a range like 500-599")
                    })
            };
            let (lo, hi) = (parse(lo)?, parse(hi)?);
            if lo > hi {
                return Err(format!("{key}: `{part}` is an empty range"));
            }
            Ok((lo, hi))
        })
        .collect()
}

fn within(ranges: &[(u16, u16)], status: u16) -> bool {
    ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
}

/// Whether the call's `grpc-status` (trailers first, then the head) is one of `codes`.
/// Asked only when configured: a plain HTTP upstream's calls read no header for it.
fn grpc_failed(codes: &[u8]) -> bool {
    if codes.is_empty() {
        return false;
    }
    let status = header(Message::Trailers, "grpc-status")
        .into_iter()
        .chain(header(Message::Response, "grpc-status"))
        .next();
    status
        .and_then(|s| s.trim().parse::<u8>().ok())
        .is_some_and(|code| codes.contains(&code))
}

struct Plugin;

impl Guest for Plugin {
    fn init(config: Vec<(String, String)>) -> Result<Interest, String> {
        let mut settings = Settings {
            failure_statuses: vec![(500, 599)],
            ..Settings::default()
        };
        for (key, value) in config {
            match key.as_str() {
                "failure_statuses" => settings.failure_statuses = status_ranges(&key, &value)?,
                "ignore_statuses" => settings.ignore_statuses = status_ranges(&key, &value)?,
                "failure_header" => settings.failure_header = Some(value.to_ascii_lowercase()),
                "failure_grpc_statuses" => {
                    settings.failure_grpc_statuses = value
                        .split(',')
                        .map(str::trim)
                        .filter(|part| !part.is_empty())
                        .map(|part| {
                            part.parse::<u8>().ok().filter(|c| *c <= 16).ok_or_else(|| {
                                format!("failure_grpc_statuses: `{part}` is not a gRPC code 0-16")
                            })
                        })
                        .collect::<Result<_, _>>()?;
                }
                "slow_ms" => {
                    let ms: u64 = value.parse().map_err(|_| {
                        format!("slow_ms: `{value}` is not a whole number of milliseconds")
                    })?;
                    settings.slow_us = Some(ms * 1000);
                }
                other => return Err(format!("unknown config key `{other}`")),
            }
        }
        log(
            LogLevel::Debug,
            &format!("failing on {:?}", settings.failure_statuses),
        );
        let interest = Interest {
            all: !settings.failure_grpc_statuses.is_empty(),
            statuses: settings
                .failure_statuses
                .iter()
                .chain(&settings.ignore_statuses)
                .chain(&[(300, 999)])
                .map(|&(min, max)| StatusRange { min, max })
                .collect(),
            transport_errors: true,
            // "At or above `slow_ms`" is "longer than one µs less".
            slower_than_us: settings.slow_us.map(|us| us.saturating_sub(1)),
            response_headers: settings.failure_header.iter().cloned().collect(),
        };
        SETTINGS.with(|s| *s.borrow_mut() = settings);
        Ok(interest)
    }

    fn classify(outcome: Outcome) -> Verdict {
        SETTINGS.with(|s| {
            let s = s.borrow();
            let slow = s.slow_us.map(|limit| outcome.latency_us >= limit);
            let classification = match (&outcome.error, &outcome.response) {
                (Some(_), _) => Classification::Failure,
                (None, Some(response)) if within(&s.ignore_statuses, response.status) => {
                    Classification::Ignore
                }
                (None, Some(response)) => {
                    // Only this one header crosses into the plugin, and only when configured.
                    let flagged = s
                        .failure_header
                        .as_ref()
                        .is_some_and(|name| !header(Message::Response, name).is_empty());
                    if flagged
                        || within(&s.failure_statuses, response.status)
                        || grpc_failed(&s.failure_grpc_statuses)
                    {
                        Classification::Failure
                    } else {
                        Classification::Success
                    }
                }
                (None, None) => Classification::Ignore,
            };
            Verdict {
                classification,
                slow,
            }
        })
    }
}

export!(Plugin);
