//! Checks for the resilience settings of an upstream: breaker policy, what counts as a
//! failure, what clients get instead, and outlier ejection.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use bytes::Bytes;

use super::error::{KeyPath, Problems};
use super::raw::{
    RawBreaker, RawFailureWhen, RawFallback, RawHealthCheck, RawOutlierDetection, RawRetries,
    RawWindowKind,
};
use super::units::WindowSize;
use crate::breaker::{BackoffPolicy, BreakerPolicy, SlowCallPolicy, WindowPolicy};
use crate::grpc::Code;
use crate::upstream::classify::{DEFAULT_GRPC_FAILURES, FailureWhen, TransportError};

/// What a client gets when the upstream is not called (breaker open, bulkhead full) or
/// failed without an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FallbackSpec {
    /// 503 with a JSON body naming the reason and a `Retry-After`.
    Default,
    Static(StaticResponse),
    /// Send the request to another upstream (which has its own breaker).
    Upstream(String),
    /// Ask a fallback plugin; when it declines or fails, the default answers.
    Plugin(String),
}

/// Headers that frame a message or belong to one connection: the gateway frames a
/// response it makes up itself (`content-length`, its own `connection`). A static
/// fallback that sets one is a config error; a fallback plugin's copies are dropped.
pub const FRAMING_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether `name` (lowercase) is one of `FRAMING_HEADERS`.
pub fn is_framing_header(name: &str) -> bool {
    FRAMING_HEADERS.contains(&name)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Sent after the body to HTTP/2 clients (a fallback plugin's answer only).
    pub trailers: Vec<(String, String)>,
    /// For a gRPC request: the Trailers-Only answer's status and message (the
    /// gateway's own when not set).
    pub grpc_status: Option<Code>,
    pub grpc_message: Option<String>,
}

/// Eject an endpoint after consecutive failures, for a while that grows on repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierSpec {
    pub consecutive_failures: NonZeroU32,
    pub ejection: Duration,
    pub max_ejection: Duration,
    /// Never eject more than this share of the pool (0-100).
    pub max_ejection_percent: u8,
}

/// Checks `breaker.shadow`: the same thresholds as `breaker`, judged on the live
/// breaker's outcomes. What decides an outcome, what a client gets, and modes belong to
/// the live breaker only.
pub fn shadow_policy(
    raw: RawBreaker,
    path: &KeyPath,
    problems: &mut Problems,
) -> Option<BreakerPolicy> {
    let before = problems.0.len();
    let live_only = [
        ("failure_when", raw.failure_when.is_some()),
        ("predicate", raw.predicate.is_some()),
        ("on_plugin_error", raw.on_plugin_error.is_some()),
        ("fallback", raw.fallback.is_some()),
        ("mode", raw.mode.is_some()),
        ("shadow", raw.shadow.is_some()),
    ];
    for (key, set) in live_only {
        if set {
            problems.push(
                path.key(key),
                "a shadow policy judges the live breaker's outcomes and acts on nothing: only thresholds (window, minimum_requests, failure_rate, consecutive_failures, failures_in_window, slow_call, open_duration, backoff, half_open) belong here",
            );
        }
    }
    let policy = breaker_policy(Some(raw), path, problems);
    (problems.0.len() == before).then_some(policy)
}

/// Checks a `breaker:` block; `None` (no block) gives the documented defaults.
pub fn breaker_policy(
    raw: Option<RawBreaker>,
    path: &KeyPath,
    problems: &mut Problems,
) -> BreakerPolicy {
    let defaults = BreakerPolicy::default();
    let Some(raw) = raw else {
        return defaults;
    };
    let mut policy = defaults;
    let ratio = |value: f64, key: KeyPath, problems: &mut Problems| {
        if !(value > 0.0 && value <= 1.0) {
            problems.push(
                key,
                format!("`{value}` must be a ratio above 0 and at most 1 (0.5 is 50%)"),
            );
        }
        value
    };
    let positive = |value: u32, key: KeyPath, problems: &mut Problems| {
        NonZeroU32::new(value).unwrap_or_else(|| {
            problems.push(key, "must be at least 1");
            NonZeroU32::MIN
        })
    };

    if let Some(window) = raw.window {
        let at = path.key("window");
        policy.window = match (window.kind, window.size) {
            (RawWindowKind::Count, WindowSize::Calls(n)) => {
                if window.buckets.is_some() {
                    problems.push(at.key("buckets"), "only a time window has buckets");
                }
                match usize::try_from(n)
                    .ok()
                    .filter(|n| (1..=100_000).contains(n))
                    .and_then(NonZeroUsize::new)
                {
                    Some(size) => WindowPolicy::Count { size },
                    None => {
                        problems.push(
                            at.key("size"),
                            format!("a count window holds 1 to 100000 calls, not {n}"),
                        );
                        defaults.window
                    }
                }
            }
            (RawWindowKind::Time, WindowSize::Duration(size)) => {
                let buckets = window.buckets.unwrap_or(10);
                let ok =
                    (1..=1000).contains(&buckets) && size.as_millis() >= 10 * u128::from(buckets);
                match NonZeroUsize::new(buckets as usize).filter(|_| ok) {
                    Some(buckets) => WindowPolicy::Time { size, buckets },
                    None => {
                        problems.push(at.key("buckets"), format!("{buckets} buckets over {size:?}: use 1 to 1000 buckets of at least 10ms each"));
                        defaults.window
                    }
                }
            }
            (RawWindowKind::Count, WindowSize::Duration(_)) => {
                problems.push(
                    at.key("size"),
                    "a count window's size is a number of calls, such as 100",
                );
                defaults.window
            }
            (RawWindowKind::Time, WindowSize::Calls(n)) => {
                problems.push(
                    at.key("size"),
                    format!("a time window's size is a duration, such as 30s (got `{n}`)"),
                );
                defaults.window
            }
        };
    }
    if let Some(n) = raw.minimum_requests {
        policy.minimum_requests = positive(n, path.key("minimum_requests"), problems);
    }
    if let WindowPolicy::Count { size } = policy.window
        && policy.minimum_requests.get() as usize > size.get()
    {
        problems.push(
            path.key("minimum_requests"),
            format!(
                "{} is more than the window's {} calls, so rates would never be evaluated",
                policy.minimum_requests, size
            ),
        );
    }
    // Naming any trip condition replaces the default one.
    if raw.failure_rate.is_some()
        || raw.consecutive_failures.is_some()
        || raw.failures_in_window.is_some()
        || raw.slow_call.is_some()
    {
        policy.failure_rate = raw
            .failure_rate
            .map(|r| ratio(r, path.key("failure_rate"), problems));
        policy.consecutive_failures = raw
            .consecutive_failures
            .map(|n| positive(n, path.key("consecutive_failures"), problems));
        policy.failures_in_window = raw
            .failures_in_window
            .map(|n| positive(n, path.key("failures_in_window"), problems));
        if let (Some(n), WindowPolicy::Count { size }) = (policy.failures_in_window, policy.window)
            && n.get() as usize > size.get()
        {
            problems.push(
                path.key("failures_in_window"),
                format!("{n} failures can never fit in a window of the last {size} calls"),
            );
        }
        policy.slow_call = raw.slow_call.map(|slow| {
            if slow.duration.0.is_zero() {
                problems.push(
                    path.key("slow_call").key("duration"),
                    "must be greater than 0",
                );
            }
            SlowCallPolicy {
                duration: slow.duration.0,
                rate: ratio(slow.rate, path.key("slow_call").key("rate"), problems),
            }
        });
    }
    if let Some(open) = raw.open_duration {
        if open.0.is_zero() {
            problems.push(path.key("open_duration"), "must be greater than 0");
        }
        policy.open_duration = open.0;
    }
    if let Some(backoff) = raw.backoff {
        let at = path.key("backoff");
        let multiplier = backoff.multiplier.unwrap_or(2.0);
        if !(1.0..=100.0).contains(&multiplier) {
            problems.push(
                at.key("multiplier"),
                format!("`{multiplier}` must be from 1 to 100"),
            );
        }
        let jitter = backoff.jitter.unwrap_or(0.0);
        if !(0.0..1.0).contains(&jitter) {
            problems.push(
                at.key("jitter"),
                format!("`{jitter}` must be at least 0 and below 1"),
            );
        }
        if backoff.max.0 < policy.open_duration {
            problems.push(
                at.key("max"),
                format!(
                    "{:?} is shorter than open_duration {:?}",
                    backoff.max.0, policy.open_duration
                ),
            );
        }
        policy.backoff = Some(BackoffPolicy {
            multiplier,
            max: backoff.max.0,
            jitter,
        });
    }
    if let Some(half_open) = raw.half_open {
        let at = path.key("half_open");
        if let Some(n) = half_open.permitted_requests {
            policy.half_open.permitted_requests =
                positive(n, at.key("permitted_requests"), problems);
        }
        policy.half_open.success_threshold = match half_open.success_threshold {
            Some(n) => positive(n, at.key("success_threshold"), problems),
            None => policy
                .half_open
                .success_threshold
                .min(policy.half_open.permitted_requests),
        };
        if let Some(timeout) = half_open.probe_timeout {
            if timeout.0.is_zero() {
                problems.push(at.key("probe_timeout"), "must be greater than 0");
            } else {
                policy.half_open.probe_timeout = timeout.0;
            }
        }
        if policy.half_open.success_threshold > policy.half_open.permitted_requests {
            problems.push(
                at.key("success_threshold"),
                format!(
                    "{} is more than permitted_requests {}, so the breaker could never close",
                    policy.half_open.success_threshold, policy.half_open.permitted_requests
                ),
            );
        }
    }
    policy
}

pub fn failure_when(
    raw: Option<RawFailureWhen>,
    path: &KeyPath,
    problems: &mut Problems,
) -> FailureWhen {
    let Some(raw) = raw else {
        return FailureWhen::default();
    };
    let defaults = FailureWhen::default();
    let statuses = match raw.statuses {
        None => defaults.statuses.clone(),
        Some(list) => status_list(
            &list,
            &path.key("statuses"),
            "503, \"5xx\" or \"500-504\"",
            problems,
        ),
    };
    let errors: Vec<TransportError> = match raw.errors {
        None => TransportError::ALL.to_vec(),
        Some(serde_yaml::Value::String(word)) if word == "all" => TransportError::ALL.to_vec(),
        Some(serde_yaml::Value::String(word)) if word == "none" => Vec::new(),
        Some(serde_yaml::Value::Sequence(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let kind = item.as_str().and_then(TransportError::parse);
                if kind.is_none() {
                    problems.push(
                        path.key("errors").index(i),
                        format!(
                            "`{}` is not an error kind; use {}",
                            yaml_text(item),
                            error_kinds()
                        ),
                    );
                }
                kind
            })
            .collect(),
        Some(other) => {
            problems.push(
                path.key("errors"),
                format!(
                    "`{}`: use all, none, or a list of {}",
                    yaml_text(&other),
                    error_kinds()
                ),
            );
            Vec::new()
        }
    };
    let grpc: Vec<Code> = match raw.grpc_statuses {
        None => DEFAULT_GRPC_FAILURES.to_vec(),
        Some(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let text = match item {
                    serde_yaml::Value::Number(n) => n.to_string(),
                    other => other.as_str().unwrap_or_default().to_string(),
                };
                let code = Code::parse(&text);
                if code.is_none() {
                    problems.push(
                        path.key("grpc_statuses").index(i),
                        format!(
                            "`{}` is not a gRPC status; use a name ({}) or a code 0-16",
                            yaml_text(item),
                            Code::all().map(Code::name).collect::<Vec<_>>().join(", ")
                        ),
                    );
                }
                code
            })
            .collect(),
    };
    FailureWhen::new(statuses, &errors, &grpc)
}

fn error_kinds() -> String {
    TransportError::ALL.map(TransportError::as_str).join(", ")
}

fn yaml_text(value: &serde_yaml::Value) -> String {
    match value {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Number(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

/// Parses a list of statuses, reporting each bad item at its index.
fn status_list(
    list: &[serde_yaml::Value],
    path: &KeyPath,
    examples: &str,
    problems: &mut Problems,
) -> Vec<(u16, u16)> {
    list.iter()
        .enumerate()
        .filter_map(|(i, value)| {
            let parsed = status_range(value);
            if parsed.is_none() {
                problems.push(
                    path.index(i),
                    format!("`{}` is not a status; use {examples}", yaml_text(value)),
                );
            }
            parsed
        })
        .collect()
}

/// `503`, `"5xx"` or `"500-504"` as an inclusive range.
fn status_range(value: &serde_yaml::Value) -> Option<(u16, u16)> {
    let valid = |s: u16| (100..=599).contains(&s);
    match value {
        serde_yaml::Value::Number(n) => {
            let code = u16::try_from(n.as_u64()?).ok().filter(|s| valid(*s))?;
            Some((code, code))
        }
        serde_yaml::Value::String(text) => {
            let text = text.trim().to_ascii_lowercase();
            if let Some(class) = text.strip_suffix("xx") {
                let digit: u16 = class.parse().ok().filter(|d| (1..=5).contains(d))?;
                return Some((digit * 100, digit * 100 + 99));
            }
            if let Some((lo, hi)) = text.split_once('-') {
                let (lo, hi): (u16, u16) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
                return (valid(lo) && valid(hi) && lo <= hi).then_some((lo, hi));
            }
            let code: u16 = text.parse().ok().filter(|s| valid(*s))?;
            Some((code, code))
        }
        _ => None,
    }
}

pub fn fallback(raw: Option<RawFallback>, path: &KeyPath, problems: &mut Problems) -> FallbackSpec {
    let Some(raw) = raw else {
        return FallbackSpec::Default;
    };
    let response = raw.status.is_some()
        || raw.body.is_some()
        || raw.json.is_some()
        || !raw.headers.is_empty()
        || raw.grpc_status.is_some()
        || raw.grpc_message.is_some();
    match (raw.upstream, raw.plugin) {
        (Some(_), Some(_)) => {
            problems.push(path.clone(), "a fallback is one of `upstream: name`, `plugin: name` or a response (status, headers, body or json)");
            return FallbackSpec::Default;
        }
        (Some(target), None) | (None, Some(target)) if response => {
            problems.push(path.clone(), "a fallback is one of `upstream: name`, `plugin: name` or a response (status, headers, body or json)");
            return FallbackSpec::Upstream(target);
        }
        (Some(upstream), None) => return FallbackSpec::Upstream(upstream),
        (None, Some(plugin)) => return FallbackSpec::Plugin(plugin),
        (None, None) => {}
    }
    let status = raw.status.unwrap_or(503);
    if !(200..=599).contains(&status) {
        problems.push(
            path.key("status"),
            format!("{status} is not a response status (200-599)"),
        );
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    for (name, value) in raw.headers {
        let name_ok = http::HeaderName::from_bytes(name.as_bytes()).is_ok();
        if !name_ok || http::HeaderValue::from_str(&value).is_err() {
            problems.push(
                path.key("headers").key(name.clone()),
                format!("`{name}: {value}` is not a valid header"),
            );
            continue;
        }
        let lowercase = name.to_ascii_lowercase();
        if is_framing_header(&lowercase) {
            problems.push(
                path.key("headers").key(name.clone()),
                format!(
                    "`{name}` frames the response or belongs to the connection; the gateway sets it itself \
                     (a static fallback may not set any of {})",
                    FRAMING_HEADERS.join(", ")
                ),
            );
            continue;
        }
        headers.push((lowercase, value));
    }
    let body = match (raw.body, raw.json) {
        (Some(_), Some(_)) => {
            problems.push(path.clone(), "give `body` or `json`, not both");
            Bytes::new()
        }
        (Some(body), None) => Bytes::from(body),
        (None, Some(json)) => {
            if !headers.iter().any(|(n, _)| n == "content-type") {
                headers.push(("content-type".into(), "application/json".into()));
            }
            Bytes::from(json.to_string())
        }
        (None, None) => Bytes::new(),
    };
    let grpc_status = raw.grpc_status.and_then(|value| {
        let text = match &value {
            serde_yaml::Value::Number(n) => n.to_string(),
            other => other.as_str().unwrap_or_default().to_string(),
        };
        let code = Code::parse(&text);
        if code.is_none() {
            problems.push(
                path.key("grpc_status"),
                format!(
                    "`{}` is not a gRPC status name or code 0-16",
                    yaml_text(&value)
                ),
            );
        }
        code
    });
    if grpc_status == Some(Code::OK) {
        problems.push(
            path.key("grpc_status"),
            "OK would tell a gRPC client its call succeeded with no answer",
        );
    }
    let grpc_message = raw.grpc_message.filter(|m| {
        let fits = m.len() <= 1024;
        if !fits {
            problems.push(path.key("grpc_message"), "at most 1024 bytes");
        }
        fits
    });
    FallbackSpec::Static(StaticResponse {
        status,
        headers,
        body,
        trailers: Vec::new(),
        grpc_status,
        grpc_message,
    })
}

pub fn outlier_detection(
    raw: RawOutlierDetection,
    path: &KeyPath,
    problems: &mut Problems,
) -> OutlierSpec {
    let consecutive_failures = NonZeroU32::new(raw.consecutive_failures.unwrap_or(5))
        .unwrap_or_else(|| {
            problems.push(path.key("consecutive_failures"), "must be at least 1");
            NonZeroU32::MIN
        });
    let ejection = raw.ejection.map_or(Duration::from_secs(30), |d| d.0);
    if ejection.is_zero() {
        problems.push(path.key("ejection"), "must be greater than 0");
    }
    let max_ejection = raw
        .max_ejection
        .map_or(ejection.max(Duration::from_secs(300)), |d| d.0);
    if max_ejection < ejection {
        problems.push(
            path.key("max_ejection"),
            format!("{max_ejection:?} is shorter than ejection {ejection:?}"),
        );
    }
    let percent = raw.max_ejection_percent.unwrap_or(50);
    if percent > 100 {
        problems.push(
            path.key("max_ejection_percent"),
            format!("{percent} is not a percentage (0-100)"),
        );
    }
    OutlierSpec {
        consecutive_failures,
        ejection,
        max_ejection,
        max_ejection_percent: u8::try_from(percent.min(100)).unwrap_or(100),
    }
}

/// Retries of failed connects on another endpoint, within a budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrySpec {
    /// Extra attempts per request (0: never retry).
    pub attempts: u32,
    /// Retries may add at most this share of recent requests...
    pub budget_ratio: f64,
    /// ...plus this many per second.
    pub budget_min_per_second: u32,
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            attempts: 1,
            budget_ratio: 0.2,
            budget_min_per_second: 3,
        }
    }
}

pub fn retries(raw: Option<RawRetries>, path: &KeyPath, problems: &mut Problems) -> RetrySpec {
    let defaults = RetrySpec::default();
    let Some(raw) = raw else {
        return defaults;
    };
    let attempts = raw.attempts.unwrap_or(defaults.attempts);
    if attempts > 5 {
        problems.push(
            path.key("attempts"),
            format!("{attempts} is more than 5 extra attempts; retries multiply load"),
        );
    }
    let budget = raw.budget;
    let ratio = budget
        .as_ref()
        .and_then(|b| b.ratio)
        .unwrap_or(defaults.budget_ratio);
    if !(0.0..=1.0).contains(&ratio) {
        problems.push(
            path.key("budget").key("ratio"),
            format!("`{ratio}` must be from 0 to 1"),
        );
    }
    RetrySpec {
        attempts,
        budget_ratio: ratio,
        budget_min_per_second: budget
            .and_then(|b| b.min_per_second)
            .unwrap_or(defaults.budget_min_per_second),
    }
}

/// Active health checks of every endpoint of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSpec {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Inclusive status ranges that mean healthy.
    pub expected_statuses: Vec<(u16, u16)>,
    pub healthy_threshold: NonZeroU32,
    pub unhealthy_threshold: NonZeroU32,
    /// An open breaker may let probes through only while a health check passes.
    pub gate_breaker: bool,
}

pub fn health_check(
    raw: RawHealthCheck,
    path: &KeyPath,
    problems: &mut Problems,
) -> HealthCheckSpec {
    if !raw.path.starts_with('/') || raw.path.contains(' ') {
        problems.push(
            path.key("path"),
            format!("`{}` must start with `/`", raw.path),
        );
    }
    let interval = raw.interval.map_or(Duration::from_secs(5), |d| d.0);
    let timeout = raw.timeout.map_or(Duration::from_secs(1), |d| d.0);
    if interval < Duration::from_millis(100) {
        problems.push(path.key("interval"), "must be at least 100ms");
    }
    if timeout.is_zero() || timeout > interval {
        problems.push(
            path.key("timeout"),
            format!("{timeout:?} must be above 0 and at most the interval {interval:?}"),
        );
    }
    let expected_statuses = match raw.expected_statuses {
        None => vec![(200, 299)],
        Some(list) => status_list(
            &list,
            &path.key("expected_statuses"),
            "200, \"2xx\" or \"200-204\"",
            problems,
        ),
    };
    let threshold = |value: Option<u32>, default: u32, key: &str, problems: &mut Problems| {
        NonZeroU32::new(value.unwrap_or(default)).unwrap_or_else(|| {
            problems.push(path.key(key), "must be at least 1");
            NonZeroU32::MIN
        })
    };
    HealthCheckSpec {
        path: raw.path,
        interval,
        timeout,
        expected_statuses,
        healthy_threshold: threshold(raw.healthy_threshold, 2, "healthy_threshold", problems),
        unhealthy_threshold: threshold(raw.unhealthy_threshold, 3, "unhealthy_threshold", problems),
        gate_breaker: raw.gate_breaker,
    }
}

/// Fallback upstreams must exist, differ from their upstream, and never lead back to it.
pub fn check_fallback_chains(
    upstreams: &std::collections::BTreeMap<String, super::model::UpstreamSpec>,
    declared: &[String],
    path: &KeyPath,
    problems: &mut Problems,
) {
    for (name, spec) in upstreams {
        let FallbackSpec::Upstream(first) = &spec.fallback else {
            continue;
        };
        let at = path
            .key(name.clone())
            .key("breaker")
            .key("fallback")
            .key("upstream");
        if !declared.contains(first) {
            problems.push(
                at,
                format!(
                    "no upstream named `{first}` (declared: {})",
                    declared.join(", ")
                ),
            );
            continue;
        }
        let mut chain = vec![name.clone()];
        let mut next = Some(first.clone());
        while let Some(current) = next {
            if chain.contains(&current) {
                chain.push(current);
                problems.push(at.clone(), format!("fallback loop: {}", chain.join(" -> ")));
                break;
            }
            chain.push(current.clone());
            next = match upstreams.get(&current).map(|u| &u.fallback) {
                Some(FallbackSpec::Upstream(n)) => Some(n.clone()),
                _ => None,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn static_fallback(yaml: &str) -> (FallbackSpec, Vec<String>) {
        let raw: RawFallback = serde_yaml::from_str(yaml).expect("a fallback mapping");
        let mut problems = Problems::default();
        let spec = fallback(Some(raw), &KeyPath::root().key("fallback"), &mut problems);
        let messages = problems
            .0
            .into_iter()
            .map(|(path, _, message)| format!("{path}: {message}"))
            .collect();
        (spec, messages)
    }

    #[test]
    fn a_static_fallback_may_not_frame_its_own_response() {
        for name in FRAMING_HEADERS {
            let upper = name.to_ascii_uppercase();
            for written in [name.to_string(), upper] {
                let (_, problems) = static_fallback(&format!(
                    "{{ status: 503, headers: {{ {written}: \"5\" }} }}"
                ));
                assert_eq!(problems.len(), 1, "{written}: {problems:?}");
                assert!(
                    problems[0].starts_with(&format!(
                        "fallback.headers.{written}: `{written}` frames the response"
                    )),
                    "{}",
                    problems[0]
                );
            }
        }
        let (spec, problems) = static_fallback(
            "{ status: 503, headers: { x-reason: maintenance, cache-control: no-store }, body: down }",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let FallbackSpec::Static(response) = spec else {
            panic!("a static fallback");
        };
        assert_eq!(
            response.headers,
            [
                ("cache-control".to_string(), "no-store".to_string()),
                ("x-reason".to_string(), "maintenance".to_string())
            ]
        );
    }
}
