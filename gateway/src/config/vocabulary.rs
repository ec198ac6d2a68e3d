//! The words people bring from other breakers and typos: an unknown key's error says
//! what the key is called here, or the nearest key that exists.

/// Names other circuit breakers (Hystrix, Resilience4j, gobreaker, opossum, Polly) use
/// in a breaker's settings, and what each is here.
const BREAKER_SYNONYMS: &[(&str, &str)] = &[
    (
        "failure_threshold",
        "as a share of calls it is `failure_rate: 0.5` (a ratio); as a count, `failures_in_window: N` (N failures in the window) or `consecutive_failures: N` (N in a row)",
    ),
    (
        "failure_rate_threshold",
        "`failure_rate`, a ratio: 50 % is `failure_rate: 0.5`",
    ),
    (
        "error_threshold",
        "`failure_rate`, a ratio: 50 % is `failure_rate: 0.5`",
    ),
    (
        "error_threshold_percentage",
        "`failure_rate`, a ratio: 50 % is `failure_rate: 0.5`",
    ),
    ("reset_timeout", "`open_duration` (how long it stays open)"),
    ("sleep_window", "`open_duration` (how long it stays open)"),
    (
        "wait_duration_in_open_state",
        "`open_duration` (how long it stays open)",
    ),
    (
        "timeout",
        "`open_duration` when it means how long the breaker stays open; a call's own time limit is the upstream's `timeouts.read`",
    ),
    (
        "request_volume_threshold",
        "`minimum_requests` (calls the window must hold before rates count)",
    ),
    (
        "minimum_number_of_calls",
        "`minimum_requests` (calls the window must hold before rates count)",
    ),
    (
        "volume_threshold",
        "`minimum_requests` (calls the window must hold before rates count)",
    ),
    (
        "max_requests",
        "`half_open.permitted_requests` (probes let through while half-open)",
    ),
    (
        "permitted_number_of_calls_in_half_open_state",
        "`half_open.permitted_requests`",
    ),
    (
        "sliding_window_size",
        "`window.size` (with `window.kind: count` or `time`)",
    ),
    ("rolling_window", "`window: { kind: time, size: 30s }`"),
    ("slow_call_duration_threshold", "`slow_call.duration`"),
    ("slow_call_rate_threshold", "`slow_call.rate` (a ratio)"),
];

/// serde's message for an unknown key, with what the key is called here (under
/// `breaker`) or the nearest known key.
pub fn explain(message: &str, in_breaker: bool) -> String {
    let Some((key, known)) = unknown_field(message) else {
        return message.to_string();
    };
    if in_breaker {
        let normalized = key.to_ascii_lowercase().replace('-', "_");
        if let Some((_, here)) = BREAKER_SYNONYMS
            .iter()
            .find(|(name, _)| *name == normalized)
        {
            return format!("unknown key `{key}`: other breakers' `{key}` is {here} here");
        }
    }
    match nearest(&key, &known) {
        Some(candidate) => format!("{message}; did you mean `{candidate}`?"),
        None => message.to_string(),
    }
}

/// `unknown field `x`, expected one of `a`, `b`` → (x, [a, b]).
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let known = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((key.to_string(), known))
}

/// The known key closest to `key` by edit distance, when it is close enough to be a
/// typo (at most a third of the key's length, at least one edit).
fn nearest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    let limit = (key.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (edit_distance(key, k), k.as_str()))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            current.push(
                (previous[j] + cost)
                    .min(previous[j + 1] + 1)
                    .min(current[j] + 1),
            );
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERDE: &str = "unknown field `consecutive_failure`, expected one of `window`, `minimum_requests`, `failure_rate`, `consecutive_failures`";

    #[test]
    fn a_typo_gets_the_nearest_key() {
        assert!(explain(SERDE, true).ends_with("did you mean `consecutive_failures`?"));
        let far = SERDE.replace("consecutive_failure`", "colour`");
        assert_eq!(
            explain(&far, true),
            far,
            "nothing close: serde's list stands"
        );
    }

    #[test]
    fn other_breakers_words_are_translated_under_breaker_only() {
        let hystrix = SERDE.replace("consecutive_failure`", "sleepWindow`");
        // camelCase is not ours; the snake_case form is what people write in YAML.
        assert_eq!(explain(&hystrix, true), hystrix);
        let opossum = SERDE.replace("consecutive_failure`", "reset_timeout`");
        assert!(explain(&opossum, true).contains("`open_duration`"));
        assert!(!explain(&opossum, false).contains("other breakers"));
        let threshold = SERDE.replace("consecutive_failure`", "failure_threshold`");
        let text = explain(&threshold, true);
        assert!(
            text.contains("failures_in_window") && text.contains("failure_rate"),
            "{text}"
        );
    }
}
