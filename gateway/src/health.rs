//! Active health checks: a background service that probes every endpoint of every
//! upstream with `health_check` over HTTP/1.1, on the upstream's interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::HealthCheckSpec;
use crate::runtime::RuntimeHandle;

pub struct HealthChecker {
    runtime: Arc<RuntimeHandle>,
}

impl HealthChecker {
    pub fn new(runtime: Arc<RuntimeHandle>) -> Self {
        Self { runtime }
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut next_due: std::collections::HashMap<String, Instant> = Default::default();
        loop {
            // The current snapshot each round: a reload changes what is checked.
            let runtime = self.runtime.snapshot();
            let now = Instant::now();
            let mut wake = now + Duration::from_secs(1);
            for upstream in runtime.upstreams.values() {
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

/// One check: connect, `GET path`, read the status line; passes on an expected status
/// within the timeout.
async fn probe(addr: std::net::SocketAddr, check: &HealthCheckSpec, upstream: &str) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!(
            "GET {} HTTP/1.1\r\nhost: {upstream}\r\nuser-agent: edge-gateway-health-check\r\nconnection: close\r\n\r\n",
            check.path
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut buffer = Vec::with_capacity(512);
        loop {
            let mut chunk = [0u8; 512];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buffer.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&buffer) {
                Ok(httparse::Status::Complete(_)) => return response.code,
                Ok(httparse::Status::Partial) if buffer.len() < 16 * 1024 => continue,
                _ => return None,
            }
        }
    };
    match tokio::time::timeout(check.timeout, attempt).await {
        Ok(Some(status)) => check
            .expected_statuses
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&status)),
        _ => false,
    }
}
