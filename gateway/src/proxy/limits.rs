//! The request limits the proxy checks itself: header size and count (Pingora's own
//! ceilings are 1 MiB and 256 fields), and the request body's size, declared or
//! counted as it streams. Timeouts are enforced below the proxy (`listener/`) and by
//! Pingora's per-read timeout.

use pingora::http::RequestHeader;

use crate::config::{ListenerLimits, RouteLimits};
use crate::limit::Limit;

/// Bytes the header would take on the wire: request line and `name: value\r\n` lines.
fn header_bytes(req: &RequestHeader) -> u64 {
    let line = req.method.as_str().len() + req.raw_path().len() + " HTTP/1.1\r\n".len() + 1;
    let fields: usize = req
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    (line + fields + 2) as u64
}

/// The first header limit the request breaks, with a line for the log.
pub fn header_limit(req: &RequestHeader, limits: &ListenerLimits) -> Option<(Limit, String)> {
    let count = req.headers.len();
    if count > limits.max_headers as usize {
        return Some((
            Limit::Headers,
            format!(
                "431: {count} header fields, max_headers is {}",
                limits.max_headers
            ),
        ));
    }
    let bytes = header_bytes(req);
    (bytes > limits.max_header_bytes).then(|| {
        (
            Limit::HeaderBytes,
            format!(
                "431: request header of {bytes} bytes, max_header_bytes is {}",
                limits.max_header_bytes
            ),
        )
    })
}

/// How much request body may still arrive.
#[derive(Debug, Clone, Copy)]
pub struct BodyBudget {
    max: u64,
    seen: u64,
}

impl BodyBudget {
    pub fn new(listener: &ListenerLimits, route: &RouteLimits) -> Self {
        Self {
            max: route.max_body_bytes.unwrap_or(listener.max_body_bytes),
            seen: 0,
        }
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// A declared Content-Length over the limit: refuse before reading any of it.
    pub fn declared_over(&self, req: &RequestHeader) -> Option<u64> {
        req.headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .filter(|&length| length > self.max)
    }

    /// Counts a chunk; false once the body is over the limit.
    pub fn take(&mut self, bytes: usize) -> bool {
        self.seen = self.seen.saturating_add(bytes as u64);
        self.seen <= self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(fields: usize, value: &str) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/p", None).expect("request");
        for i in 0..fields {
            req.append_header(format!("x-f{i}"), value).expect("header");
        }
        req
    }

    #[test]
    fn header_count_and_size() {
        let limits = ListenerLimits {
            max_headers: 3,
            max_header_bytes: 1024,
            ..ListenerLimits::default()
        };
        assert!(header_limit(&request(3, "v"), &limits).is_none());
        assert_eq!(
            header_limit(&request(4, "v"), &limits).map(|l| l.0),
            Some(Limit::Headers)
        );
        let big = "v".repeat(1100);
        assert_eq!(
            header_limit(&request(1, &big), &limits).map(|l| l.0),
            Some(Limit::HeaderBytes)
        );
    }

    #[test]
    fn body_budget_route_overrides_listener() {
        let listener = ListenerLimits {
            max_body_bytes: 10,
            ..ListenerLimits::default()
        };
        let mut budget = BodyBudget::new(&listener, &RouteLimits::default());
        assert!(budget.take(10));
        assert!(!budget.take(1));
        let route = RouteLimits {
            max_body_bytes: Some(100),
            ..RouteLimits::default()
        };
        let mut budget = BodyBudget::new(&listener, &route);
        assert!(budget.take(100));
        let mut req = request(0, "");
        req.insert_header("content-length", "101").expect("header");
        assert_eq!(budget.declared_over(&req), Some(101));
    }
}
