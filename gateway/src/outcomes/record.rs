//! The format of one recorded outcome: a JSON object on one line, bounded in size.
//!
//! It holds what `failure_when` and a predicate plugin judge by (status, gRPC status,
//! transport error kind, latency, method, path, and the headers the config names) and
//! when the attempt was admitted and ended, so `gateway replay` can drive a breaker's
//! clock. Never a body, never a query string.

use serde::{Deserialize, Serialize};

use crate::grpc::Code;
use crate::upstream::classify::{CallResult, TransportError};

/// Bumped when a field changes meaning; replay refuses other versions.
pub const FORMAT_VERSION: u32 = 1;
/// Longest header value kept, in bytes (longer ones are cut at a character boundary).
pub const MAX_HEADER_VALUE: usize = 256;
/// Most header lines kept per message (a header listed once may repeat).
pub const MAX_HEADERS: usize = 32;
/// Longest path kept, in bytes.
pub const MAX_PATH: usize = 512;
/// Longest line written: a record over it is written without its headers.
pub const MAX_LINE: usize = 16 * 1024;

/// Header lines as (lowercase name, value), in message order.
pub type HeaderList = Vec<(String, String)>;

/// One line of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeRecord {
    pub v: u32,
    /// When the attempt was admitted (or refused), microseconds since the Unix epoch.
    pub at_us: u64,
    /// From admission to the outcome being recorded, microseconds.
    #[serde(default)]
    pub elapsed_us: u64,
    /// What slowness is measured on (time to the response head), microseconds.
    #[serde(default)]
    pub latency_us: u64,
    pub route: String,
    pub upstream: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub method: String,
    pub path: String,
    /// The HTTP status (with `grpc_status` for a gRPC answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u8>,
    /// The transport error kind (`failure_when.errors` vocabulary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The client went away before the answer was complete: says nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abandoned: bool,
    /// The live breaker or bulkhead refused the request (`circuit_open`, `overloaded`):
    /// the upstream was not called, so its outcome is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// What the live config judged: `failure`, `success` or `ignored`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// The hash of the config that was live (`gateway check` prints it).
    pub config: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers: HeaderList,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers: HeaderList,
    /// Headers were left out to keep the line under `MAX_LINE`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// What a line says happened, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordedResult {
    /// The upstream was called and the exchange ended so.
    Called(CallResult),
    /// The live gateway did not call the upstream: what it would have answered is unknown.
    Rejected,
}

impl OutcomeRecord {
    /// A record of an exchange on `route` with `upstream`, its result, times, endpoint
    /// and headers still to be told.
    pub fn new(route: &str, upstream: &str, method: &str, path: &str, config: &str) -> Self {
        Self {
            v: FORMAT_VERSION,
            at_us: 0,
            elapsed_us: 0,
            latency_us: 0,
            route: route.to_string(),
            upstream: upstream.to_string(),
            endpoint: None,
            method: method.to_string(),
            path: path.to_string(),
            status: None,
            grpc_status: None,
            error: None,
            abandoned: false,
            rejected: None,
            verdict: None,
            config: config.to_string(),
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            truncated: false,
        }
    }

    /// The line as written: one JSON object and a newline, at most `MAX_LINE` bytes.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        if line.len() >= MAX_LINE {
            let mut short = self.clone();
            short.request_headers.clear();
            short.response_headers.clear();
            short.truncated = true;
            line = serde_json::to_vec(&short).unwrap_or_default();
        }
        line.push(b'\n');
        line
    }

    /// How the exchange ended; an error names what makes the line inconsistent.
    pub fn result(&self) -> Result<RecordedResult, String> {
        if self.v != FORMAT_VERSION {
            return Err(format!(
                "format version {} (this gateway reads version {FORMAT_VERSION})",
                self.v
            ));
        }
        let error = self
            .error
            .as_deref()
            .map(|word| {
                TransportError::parse(word).ok_or_else(|| {
                    let known: Vec<&str> = TransportError::ALL.iter().map(|e| e.as_str()).collect();
                    format!(
                        "unknown transport error `{word}` (one of {})",
                        known.join(", ")
                    )
                })
            })
            .transpose()?;
        let grpc = self
            .grpc_status
            .map(|c| Code::new(c).ok_or_else(|| format!("gRPC status {c} is not 0-16")))
            .transpose()?;
        let said = [
            self.rejected.is_some(),
            self.abandoned,
            error.is_some(),
            grpc.is_some() || self.status.is_some(),
        ];
        if said.iter().filter(|s| **s).count() != 1 {
            return Err(
                "needs exactly one of `status` (with `grpc_status` for gRPC), `error`, `abandoned`, `rejected`"
                    .to_string(),
            );
        }
        Ok(match (&self.rejected, error, grpc, self.status) {
            (Some(_), ..) => RecordedResult::Rejected,
            (None, Some(error), ..) => RecordedResult::Called(CallResult::Transport(error)),
            (None, None, Some(code), _) => RecordedResult::Called(CallResult::Grpc(code)),
            (None, None, None, Some(status)) => {
                if !(100..=999).contains(&status) {
                    return Err(format!("status {status} is not an HTTP status"));
                }
                RecordedResult::Called(CallResult::Response(status))
            }
            (None, None, None, None) => RecordedResult::Called(CallResult::Abandoned),
        })
    }

    /// Fills the result fields from how the exchange ended.
    pub fn set_result(&mut self, result: CallResult) {
        match result {
            CallResult::Response(status) => self.status = Some(status),
            CallResult::Grpc(code) => {
                self.status = Some(200);
                self.grpc_status = Some(code.value());
            }
            CallResult::Transport(error) => self.error = Some(error.as_str().to_string()),
            CallResult::Abandoned => self.abandoned = true,
        }
    }
}

/// The lines of `headers` that `names` lists, values cut to `MAX_HEADER_VALUE` bytes,
/// at most `MAX_HEADERS` of them. Empty (no allocation) when nothing is listed.
pub fn select_headers(headers: &http::HeaderMap, names: &[http::HeaderName]) -> HeaderList {
    let mut kept = Vec::new();
    for name in names {
        for value in headers.get_all(name) {
            if kept.len() == MAX_HEADERS {
                return kept;
            }
            let text = String::from_utf8_lossy(value.as_bytes());
            kept.push((
                name.as_str().to_string(),
                cut(&text, MAX_HEADER_VALUE).to_string(),
            ));
        }
    }
    kept
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> OutcomeRecord {
        OutcomeRecord {
            v: FORMAT_VERSION,
            at_us: 1_700_000_000_000_000,
            elapsed_us: 1200,
            latency_us: 1000,
            route: "api".into(),
            upstream: "orders".into(),
            endpoint: Some("127.0.0.1:8080".into()),
            method: "GET".into(),
            path: "/x".into(),
            status: None,
            grpc_status: None,
            error: None,
            abandoned: false,
            rejected: None,
            verdict: Some("success".into()),
            config: "abc".into(),
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            truncated: false,
        }
    }

    #[test]
    fn every_result_round_trips_through_a_line() {
        let results = [
            CallResult::Response(503),
            CallResult::Grpc(Code::UNAVAILABLE),
            CallResult::Transport(TransportError::ConnectRefused),
            CallResult::Abandoned,
        ];
        for result in results {
            let mut r = record();
            r.set_result(result);
            let line = r.to_line();
            assert_eq!(line.last(), Some(&b'\n'));
            let back: OutcomeRecord = serde_json::from_slice(&line).expect("a line parses");
            assert_eq!(back, r);
            assert_eq!(back.result(), Ok(RecordedResult::Called(result)));
        }
    }

    #[test]
    fn inconsistent_lines_say_what_is_wrong() {
        let mut both = record();
        both.status = Some(200);
        both.error = Some("tls".into());
        assert!(
            both.result()
                .expect_err("an inconsistent line")
                .contains("exactly one")
        );
        let mut unknown = record();
        unknown.error = Some("dns".into());
        assert!(
            unknown
                .result()
                .expect_err("an inconsistent line")
                .contains("unknown transport error `dns`")
        );
        let mut future = record();
        future.v = 9;
        future.status = Some(200);
        assert!(
            future
                .result()
                .expect_err("an inconsistent line")
                .contains("format version 9")
        );
        let mut rejected = record();
        rejected.rejected = Some("circuit_open".into());
        assert_eq!(rejected.result(), Ok(RecordedResult::Rejected));
    }

    #[test]
    fn headers_are_selected_cut_and_bounded() {
        let mut headers = http::HeaderMap::new();
        let long = "é".repeat(200); // 400 bytes
        headers.insert("x-long", long.parse().expect("a valid value"));
        for i in 0..40 {
            headers.append("x-many", i.to_string().parse().expect("a valid value"));
        }
        headers.insert("x-other", "not listed".parse().expect("a valid value"));
        let names = [
            http::HeaderName::from_static("x-long"),
            http::HeaderName::from_static("x-many"),
        ];
        let kept = select_headers(&headers, &names);
        assert_eq!(kept.len(), MAX_HEADERS);
        assert_eq!(kept[0].1.len(), MAX_HEADER_VALUE);
        assert!(kept.iter().all(|(name, _)| name != "x-other"));
    }

    #[test]
    fn an_oversized_record_loses_its_headers_not_its_outcome() {
        let mut r = record();
        r.status = Some(200);
        r.request_headers = (0..100)
            .map(|i| (format!("x-h{i}"), "v".repeat(MAX_HEADER_VALUE)))
            .collect();
        let line = r.to_line();
        assert!(line.len() < MAX_LINE);
        let back: OutcomeRecord = serde_json::from_slice(&line).expect("a line parses");
        assert!(back.truncated && back.request_headers.is_empty());
        assert_eq!(back.status, Some(200));
    }
}
