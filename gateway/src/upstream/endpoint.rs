//! One address of a pool: its connection template, and what the gateway has learnt
//! about it (load, outlier ejection, health), which a reload keeps for as long as the
//! address stays in the pool.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use pingora::upstreams::peer::HttpPeer;

use crate::breaker::Nanos;
use crate::config::{Protocol, UpstreamSpec};

/// What is known about an endpoint. Shared by every snapshot whose pool holds the
/// address, so requests of an older snapshot still count against it.
#[derive(Debug)]
pub struct EndpointState {
    /// Requests currently sent to this endpoint (least-requests balancing).
    pub(super) in_flight: AtomicUsize,
    pub(super) consecutive_failures: AtomicU32,
    /// Clock time until which the endpoint gets no traffic (0: not ejected).
    pub(super) ejected_until: AtomicU64,
    /// Ejections in a row; each one lasts longer. Reset by a success after returning.
    pub(super) ejections: AtomicU32,
    /// Active health: true until health checks say otherwise.
    pub(super) healthy: AtomicBool,
    /// Consecutive health-check results in the same direction.
    pub(super) health_streak: AtomicU32,
}

impl Default for EndpointState {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            healthy: AtomicBool::new(true),
            health_streak: AtomicU32::new(0),
        }
    }
}

/// An endpoint's state in a form another process can adopt (graceful upgrade).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EndpointExport {
    pub address: SocketAddr,
    pub ejected_remaining: Option<Duration>,
    pub ejections: u32,
    pub consecutive_failures: u32,
    pub healthy: bool,
}

impl EndpointState {
    pub(super) fn export(&self, address: SocketAddr, now: Nanos) -> EndpointExport {
        let until = Nanos(self.ejected_until.load(Ordering::Acquire));
        EndpointExport {
            address,
            ejected_remaining: (until > now).then(|| now.until(until)),
            ejections: self.ejections.load(Ordering::Acquire),
            consecutive_failures: self.consecutive_failures.load(Ordering::Acquire),
            healthy: self.healthy.load(Ordering::Acquire),
        }
    }

    pub(super) fn adopt(&self, state: &EndpointExport, now: Nanos) {
        let until = state.ejected_remaining.map_or(0, |d| now.after(d).0);
        self.ejected_until.store(until, Ordering::Release);
        self.ejections.store(state.ejections, Ordering::Release);
        self.consecutive_failures
            .store(state.consecutive_failures, Ordering::Release);
        self.healthy.store(state.healthy, Ordering::Release);
    }

    /// Forgets what a setting that is gone decided: ejections without outlier
    /// detection, ill health without health checks.
    pub(super) fn settle(&self, spec: &UpstreamSpec) {
        if spec.outlier_detection.is_none() {
            self.ejected_until.store(0, Ordering::Release);
            self.ejections.store(0, Ordering::Release);
            self.consecutive_failures.store(0, Ordering::Release);
        }
        if spec.health_check.is_none() {
            self.healthy.store(true, Ordering::Release);
            self.health_streak.store(0, Ordering::Release);
        }
    }
}

/// One address of a pool.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Connection template: cloning it is cheaper than building one per request.
    pub(super) peer: HttpPeer,
    pub(super) state: Arc<EndpointState>,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, spec: &UpstreamSpec, state: Arc<EndpointState>) -> Self {
        let tls = spec.tls.as_ref();
        // Without a name (only allowed with `verify: false`), the address: rustls needs a
        // server name, and sends no SNI for an IP.
        let sni = tls.map_or_else(String::new, |t| {
            if t.server_name.is_empty() {
                addr.ip().to_string()
            } else {
                t.server_name.clone()
            }
        });
        let mut peer = HttpPeer::new(addr, tls.is_some(), sni);
        if let Some(tls) = tls {
            peer.options.verify_cert = tls.verify;
            peer.options.verify_hostname = tls.verify;
            peer.options.ca = tls.ca.as_ref().map(|ca| Arc::clone(&ca.certificates));
        }
        // Pingora pools connections by address and SNI, not by CA bundle: keep each
        // upstream's pool its own so a connection verified under one upstream's trust
        // settings never serves another's.
        peer.group_key = pool_group(&spec.name);
        if spec.protocol == Protocol::Http2 {
            // Over TLS, ALPN h2 only; in plaintext, h2c with prior knowledge.
            peer.options.set_http_version(2, 2);
        }
        let t = spec.timeouts;
        peer.options.connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.read);
        peer.options.write_timeout = Some(t.write);
        peer.options.idle_timeout = Some(t.idle);
        state.settle(spec);
        Self { addr, peer, state }
    }

    pub fn is_healthy(&self) -> bool {
        self.state.healthy.load(Ordering::Acquire)
    }
}

/// A stable key per upstream name for Pingora's connection pool.
fn pool_group(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut hasher);
    hasher.finish()
}
