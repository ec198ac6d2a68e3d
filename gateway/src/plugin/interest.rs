//! Which exchanges a predicate is asked about: what its `init` declared (WIT
//! `interest`), checked once at load and matched natively before any call, so that
//! the exchanges it does not care about (healthy traffic, usually) cost what
//! `failure_when` costs.

use std::ops::RangeInclusive;
use std::time::Duration;

use http::HeaderName;

use super::types;

/// Bounds on what a plugin may declare: the match runs for every response.
const MAX_RANGES: usize = 32;
const MAX_HEADERS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interest {
    all: bool,
    statuses: Vec<RangeInclusive<u16>>,
    transport_errors: bool,
    slower_than: Option<Duration>,
    headers: Vec<HeaderName>,
}

impl Interest {
    /// Every exchange: a fallback's, or a predicate's that said so.
    pub fn all() -> Self {
        Self {
            all: true,
            statuses: Vec::new(),
            transport_errors: true,
            slower_than: None,
            headers: Vec::new(),
        }
    }

    /// Checks what a plugin declared; the error says what is wrong with it.
    pub fn from_plugin(declared: types::Interest) -> Result<Self, String> {
        if declared.statuses.len() > MAX_RANGES {
            return Err(format!(
                "interest: {} status ranges, at most {MAX_RANGES}",
                declared.statuses.len()
            ));
        }
        if declared.response_headers.len() > MAX_HEADERS {
            return Err(format!(
                "interest: {} response headers, at most {MAX_HEADERS}",
                declared.response_headers.len()
            ));
        }
        let nothing = !declared.all
            && declared.statuses.is_empty()
            && !declared.transport_errors
            && declared.slower_than_us.is_none()
            && declared.response_headers.is_empty();
        if nothing {
            return Err(
                "interest: declares no exchange, so the predicate would never be asked; return `all: true` or what it needs to see".into(),
            );
        }
        let mut statuses = Vec::with_capacity(declared.statuses.len());
        for range in &declared.statuses {
            // Upstreams may answer any three-digit status; Pingora passes up to 999.
            if !(100..=999).contains(&range.min) || !(100..=999).contains(&range.max) {
                return Err(format!(
                    "interest: status range {}-{} is not within 100-999",
                    range.min, range.max
                ));
            }
            if range.min > range.max {
                return Err(format!(
                    "interest: status range {}-{} is empty",
                    range.min, range.max
                ));
            }
            statuses.push(range.min..=range.max);
        }
        let mut headers = Vec::with_capacity(declared.response_headers.len());
        for name in &declared.response_headers {
            let shown: String = name.chars().take(64).collect();
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("interest: {shown:?} is not a header name"))?;
            headers.push(header);
        }
        Ok(Self {
            all: declared.all,
            statuses,
            transport_errors: declared.transport_errors,
            slower_than: declared.slower_than_us.map(Duration::from_micros),
            headers,
        })
    }

    /// Whether a response with this head, after `latency`, is asked about.
    pub fn wants_response(
        &self,
        status: u16,
        headers: &http::HeaderMap,
        latency: Duration,
    ) -> bool {
        self.all
            || self.statuses.iter().any(|r| r.contains(&status))
            || self.slower_than.is_some_and(|limit| latency > limit)
            || self.headers.iter().any(|name| headers.contains_key(name))
    }

    /// Whether an exchange told as `outcome` (with its response head's `headers`) is
    /// asked about.
    pub fn wants_outcome(
        &self,
        outcome: &types::Outcome,
        headers: Option<&http::HeaderMap>,
    ) -> bool {
        match (&outcome.response, outcome.error) {
            (_, Some(_)) => self.wants_transport_errors(),
            (Some(response), None) => self.wants_response(
                response.status,
                headers.unwrap_or(&http::HeaderMap::new()),
                Duration::from_micros(outcome.latency_us),
            ),
            // The client left before anything came back: never asked (as on the
            // request path, which judges nothing then).
            (None, None) => false,
        }
    }

    /// Whether an exchange that failed on the wire is asked about.
    pub fn wants_transport_errors(&self) -> bool {
        self.all || self.transport_errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> types::Interest {
        types::Interest {
            all: false,
            statuses: vec![
                types::StatusRange { min: 500, max: 599 },
                types::StatusRange { min: 429, max: 429 },
            ],
            transport_errors: true,
            slower_than_us: Some(800_000),
            response_headers: vec!["x-degraded".into()],
        }
    }

    #[test]
    fn a_response_is_asked_about_when_any_field_matches() {
        let interest = Interest::from_plugin(declared()).expect("valid");
        let none = http::HeaderMap::new();
        let fast = Duration::from_millis(5);
        assert!(!interest.wants_response(200, &none, fast));
        assert!(!interest.wants_response(404, &none, fast));
        assert!(interest.wants_response(503, &none, fast));
        assert!(interest.wants_response(429, &none, fast));
        assert!(interest.wants_response(200, &none, Duration::from_millis(801)));
        let mut degraded = http::HeaderMap::new();
        degraded.insert("x-degraded", http::HeaderValue::from_static("1"));
        assert!(interest.wants_response(200, &degraded, fast));
        assert!(interest.wants_transport_errors());
        assert!(Interest::all().wants_response(200, &none, fast));
    }

    #[test]
    fn what_cannot_be_matched_is_refused_with_what_is_wrong() {
        let mut bad = declared();
        bad.statuses.push(types::StatusRange {
            min: 900,
            max: 1000,
        });
        assert_eq!(
            Interest::from_plugin(bad),
            Err("interest: status range 900-1000 is not within 100-999".into())
        );
        let mut bad = declared();
        bad.statuses.push(types::StatusRange { min: 503, max: 500 });
        assert!(Interest::from_plugin(bad).is_err());
        let mut bad = declared();
        bad.response_headers.push("bad header\n".into());
        assert_eq!(
            Interest::from_plugin(bad),
            Err("interest: \"bad header\\n\" is not a header name".into())
        );
        let nothing = types::Interest {
            all: false,
            statuses: Vec::new(),
            transport_errors: false,
            slower_than_us: None,
            response_headers: Vec::new(),
        };
        assert!(Interest::from_plugin(nothing).is_err());
        let mut bad = declared();
        bad.statuses = vec![types::StatusRange { min: 200, max: 200 }; 33];
        assert!(Interest::from_plugin(bad).is_err());
    }
}
