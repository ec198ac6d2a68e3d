//! Active health checks: a background service that probes every endpoint of every
//! upstream with `health_check` over HTTP/1.1, on the upstream's interval. A response
//! head is parsed the way the proxy parses the responses it forwards, so that a check
//! fails an endpoint for what would fail its traffic, not for having many headers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::HealthCheckSpec;
use crate::upstream::Upstream;

/// The pools in service now: asked every round, so a reload changes what is checked.
pub type CurrentUpstreams = Box<dyn Fn() -> Vec<Arc<Upstream>> + Send + Sync>;

pub struct HealthChecker {
    upstreams: CurrentUpstreams,
}

impl HealthChecker {
    pub fn new(upstreams: CurrentUpstreams) -> Self {
        Self { upstreams }
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut next_due: std::collections::HashMap<String, Instant> = Default::default();
        loop {
            let now = Instant::now();
            let mut wake = now + Duration::from_secs(1);
            for upstream in &(self.upstreams)() {
                let Some(check) = upstream.spec.health_check.clone() else {
                    continue;
                };
                let due = next_due.entry(upstream.name().to_string()).or_insert(now);
                if *due <= now {
                    *due = now + check.interval;
                    for index in 0..upstream.endpoints.len() {
                        let (upstream, check) = (Arc::clone(upstream), check.clone());
                        tokio::spawn(async move {
                            let addr = upstream.endpoints[index].addr;
                            let passed = probe(addr, &check, upstream.name()).await;
                            upstream.report_health(index, passed);
                        });
                    }
                }
                wake = wake.min(*due);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Most header fields a response head may have, and the largest head read: what
/// Pingora accepts in the responses it proxies (pingora-core's HTTP/1 `MAX_HEADERS` and
/// `MAX_HEADER_SIZE`, which it does not export). An endpoint whose answer the proxy
/// would read is not failed for its headers; one it would refuse is.
const MAX_HEADERS: usize = 256;
const MAX_HEAD_BYTES: usize = 1_048_575;

/// One check: connect, `GET path`, read the response head (never the body); passes on
/// an expected status, all within the timeout.
async fn probe(addr: std::net::SocketAddr, check: &HealthCheckSpec, upstream: &str) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let request = format!(
            "GET {} HTTP/1.1\r\nhost: {upstream}\r\nuser-agent: edge-gateway-health-check\r\nconnection: close\r\n\r\n",
            check.path
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buffer = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("closed before a complete response head".to_string());
            }
            buffer.extend_from_slice(&chunk[..n]);
            match parse_head(&buffer) {
                Head::Status(status) => return Ok(status),
                Head::Invalid(e) => return Err(format!("invalid response head: {e}")),
                Head::Partial if buffer.len() > MAX_HEAD_BYTES => {
                    return Err(format!("response head over {MAX_HEAD_BYTES} bytes"));
                }
                Head::Partial => {}
            }
        }
    };
    let result = match tokio::time::timeout(check.timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no response head within {:?}", check.timeout)),
    };
    match result {
        Ok(status) => {
            let passed = check
                .expected_statuses
                .iter()
                .any(|(lo, hi)| (*lo..=*hi).contains(&status));
            if !passed {
                tracing::debug!(target: "gateway::health", upstream, endpoint = %addr, status, "health check failed: unexpected status");
            }
            passed
        }
        Err(reason) => {
            tracing::debug!(target: "gateway::health", upstream, endpoint = %addr, %reason, "health check failed");
            false
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// The final response's status.
    Status(u16),
    Partial,
    Invalid(httparse::Error),
}

/// The status of the final response in `buffer`, parsed as Pingora parses a response it
/// proxies (same header limit, same leniency); interim 1xx responses are skipped.
fn parse_head(buffer: &[u8]) -> Head {
    let mut rest = buffer;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let mut parser = httparse::ParserConfig::default();
        parser
            .allow_spaces_after_header_name_in_responses(true)
            .allow_obsolete_multiline_headers_in_responses(true);
        match parser.parse_response(&mut response, rest) {
            Ok(httparse::Status::Complete(length)) => match response.code {
                Some(code) if (100..200).contains(&code) && code != 101 => {
                    rest = &rest[length..];
                }
                Some(code) => return Head::Status(code),
                None => return Head::Invalid(httparse::Error::Status),
            },
            Ok(httparse::Status::Partial) => return Head::Partial,
            Err(e) => return Head::Invalid(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status_line: &str, headers: usize, end: &str) -> Vec<u8> {
        let mut text = format!("{status_line}\r\n");
        for i in 0..headers {
            text.push_str(&format!("x-header-{i}: value {i}\r\n"));
        }
        text.push_str(end);
        text.into_bytes()
    }

    #[test]
    fn many_headers_are_read_as_the_proxy_reads_them() {
        // 32 was the old limit: 40 (or Pingora's 256) headers are a healthy answer.
        for count in [0, 40, MAX_HEADERS] {
            let response = head("HTTP/1.1 200 OK", count, "\r\nbody");
            assert_eq!(parse_head(&response), Head::Status(200), "{count} headers");
        }
        // More than the proxy would accept: not healthy either.
        let too_many = head("HTTP/1.1 200 OK", MAX_HEADERS + 1, "\r\n");
        assert_eq!(
            parse_head(&too_many),
            Head::Invalid(httparse::Error::TooManyHeaders)
        );
    }

    #[test]
    fn partial_heads_wait_for_more_and_garbage_is_invalid() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nx-a: b\r\n"), Head::Partial);
        assert_eq!(parse_head(b"HTTP/1.1 2"), Head::Partial);
        assert!(matches!(
            parse_head(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Head::Invalid(_)
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n"),
            Head::Invalid(_)
        ));
    }

    #[test]
    fn leniency_matches_the_proxy() {
        // Pingora accepts a space before the colon and folded lines in responses.
        let lenient = b"HTTP/1.1 204 No Content\r\nserver : origin\r\nx-folded: a\r\n b\r\n\r\n";
        assert_eq!(parse_head(lenient), Head::Status(204));
    }

    #[test]
    fn interim_responses_are_skipped() {
        let early_hints =
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(parse_head(early_hints), Head::Status(200));
        assert_eq!(
            parse_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 50"),
            Head::Partial
        );
        // 101 is final: not an expected status, but an answer.
        assert_eq!(
            parse_head(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            Head::Status(101)
        );
    }
}
