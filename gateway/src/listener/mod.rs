//! One listening socket: what happens to a connection before the proxy sees a request.
//! It is counted against `max_connections` (over the limit it is closed at once), a
//! TLS 1.3-only listener drops what negotiated less, and an HTTP/1 connection gets a
//! deadline for every request header (`header_deadline.rs`). Then Pingora's HTTP
//! server takes it: HTTP/1.1, h2 by ALPN, or h2c.

mod header_deadline;
pub mod proxy_protocol;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{ALPN, GetSocketDigest, Stream};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use rustls::ProtocolVersion;

use crate::config::{ListenerLimits, TlsVersion};
use crate::metrics::ListenerMetrics;
use crate::proxy::Gateway;
use crate::runtime::RuntimeHandle;
use crate::throttled_log::ThrottledLog;

pub use header_deadline::request_finished;
use header_deadline::{HeaderDeadline, RequestBoundary};

/// Which limit turned a client away; the `limit` label of
/// `gateway_limit_rejections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    MaxConnections,
    HeaderBytes,
    Headers,
    BodyBytes,
    HeaderReadTimeout,
    BodyReadTimeout,
    TlsVersion,
    /// A request whose Host or path is outside the grammar (400).
    Malformed,
}

impl Limit {
    pub const ALL: [Limit; 8] = [
        Limit::MaxConnections,
        Limit::HeaderBytes,
        Limit::Headers,
        Limit::BodyBytes,
        Limit::HeaderReadTimeout,
        Limit::BodyReadTimeout,
        Limit::TlsVersion,
        Limit::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max_connections",
            Limit::HeaderBytes => "max_header_bytes",
            Limit::Headers => "max_headers",
            Limit::BodyBytes => "max_body_bytes",
            Limit::HeaderReadTimeout => "header_read_timeout",
            Limit::BodyReadTimeout => "body_read_timeout",
            Limit::TlsVersion => "min_version",
            Limit::Malformed => "malformed_request",
        }
    }
}

/// Counts and logs limits that fire on one listener: every time in metrics, at most
/// once a second per limit in the log (with how many were not logged).
pub struct LimitReporter {
    listener: String,
    metrics: ListenerMetrics,
    logs: [ThrottledLog; Limit::ALL.len()],
}

impl LimitReporter {
    pub fn new(listener: String, metrics: ListenerMetrics) -> Self {
        Self {
            listener,
            metrics,
            logs: Default::default(),
        }
    }

    pub fn fired(&self, limit: Limit, detail: &str) {
        self.metrics.rejected(limit);
        if let Some(suppressed) = self.logs[limit as usize].admit() {
            tracing::warn!(
                target: "gateway::limits",
                listener = %self.listener,
                limit = limit.as_str(),
                suppressed,
                "{detail}"
            );
        }
    }
}

/// The Pingora application behind one listener.
pub struct ListenerApp {
    address: SocketAddr,
    proxy: Arc<HttpProxy<Gateway>>,
    runtime: Arc<RuntimeHandle>,
    open: AtomicU32,
    limits: Arc<LimitReporter>,
}

impl ListenerApp {
    pub fn new(
        address: SocketAddr,
        proxy: HttpProxy<Gateway>,
        runtime: Arc<RuntimeHandle>,
        limits: Arc<LimitReporter>,
    ) -> Self {
        Self {
            address,
            proxy: Arc::new(proxy),
            runtime,
            open: AtomicU32::new(0),
            limits,
        }
    }
}

/// What a new connection on a listener is held to, from the config being served now
/// (reloads apply to the next connection).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionPolicy {
    pub limits: ListenerLimits,
    pub min_version: Option<TlsVersion>,
    pub proxy_protocol: bool,
    /// Whether `peer` may send a PROXY header: any peer when `trusted_proxies` is
    /// empty, else only those it lists.
    pub may_proxy: bool,
}

pub fn current(
    runtime: &RuntimeHandle,
    address: SocketAddr,
    peer: Option<IpAddr>,
) -> ConnectionPolicy {
    let runtime = runtime.snapshot();
    let spec = runtime
        .config
        .listeners
        .iter()
        .find(|l| l.address == address);
    ConnectionPolicy {
        limits: spec.map_or_else(ListenerLimits::default, |l| l.limits),
        min_version: spec.and_then(|l| l.tls.as_ref().map(|t| t.min_version)),
        proxy_protocol: spec.is_some_and(|l| l.proxy_protocol),
        may_proxy: spec
            .is_some_and(|l| l.trusted_proxies.is_empty() || peer.is_some_and(|ip| l.trusts(ip))),
    }
}

/// The connection's peer as the socket (or an earlier PROXY header) says.
pub fn peer_ip<S: GetSocketDigest + ?Sized>(stream: &S) -> Option<IpAddr> {
    stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
}

/// Gives the connection's place back when it ends, however it ends.
struct OpenConnection<'a> {
    app: &'a ListenerApp,
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.app.open.fetch_sub(1, Ordering::Relaxed);
        self.app.limits.metrics.connections.dec();
    }
}

#[async_trait]
impl ServerApp for ListenerApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut stream = stream;
        let tls = stream.get_ssl_digest().is_some();
        let policy = current(&self.runtime, self.address, peer_ip(&*stream));
        let (limits, min_version) = (policy.limits, policy.min_version);
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.limits.metrics.connections.inc();
        let _open = OpenConnection { app: self };
        if open > limits.max_connections {
            self.limits.fired(
                Limit::MaxConnections,
                "connection closed on accept: the listener is at max_connections",
            );
            return None;
        }
        // Backstop for the certificate resolver's check (see tls/sni.rs).
        if min_version == Some(TlsVersion::Tls13)
            && stream
                .get_ssl_digest()
                .is_some_and(|d| Some(d.version.as_ref()) != ProtocolVersion::TLSv1_3.as_str())
        {
            self.limits.fired(
                Limit::TlsVersion,
                "connection closed: negotiated below TLS 1.3",
            );
            return None;
        }
        if policy.proxy_protocol && !tls && !policy.may_proxy {
            self.limits.fired(
                Limit::Malformed,
                "connection closed: a PROXY header from a peer outside trusted_proxies",
            );
            return None;
        }
        // On TLS the header came before the handshake (`proxy_protocol::PreTls`).
        let mut ahead = Vec::new();
        if policy.proxy_protocol && !tls {
            match proxy_protocol::read(&mut stream, limits.header_read_timeout).await {
                Ok((source, rest)) => {
                    if let Some(digest) = proxy_protocol::digest_for(&*stream, source) {
                        stream.set_socket_digest(digest);
                    }
                    ahead = rest;
                }
                Err(e) => {
                    self.limits
                        .fired(Limit::Malformed, &format!("connection closed: {e}"));
                    return None;
                }
            }
        }
        if stream.selected_alpn_proto() == Some(ALPN::H2) {
            // HTTP/2 frames its own requests; its idle timeout is Pingora's h2 option.
            return self.proxy.process_new(stream, shutdown).await;
        }
        let boundary = Arc::new(RequestBoundary::default());
        let mut stream = HeaderDeadline::new(
            stream,
            limits.header_read_timeout,
            Arc::clone(&boundary),
            Arc::clone(&self.limits),
        );
        if !stream.first_bytes(ahead).await {
            return None;
        }
        let stream: Stream = Box::new(stream);
        header_deadline::scope(boundary, self.proxy.process_new(stream, shutdown)).await
    }

    async fn cleanup(&self) {
        self.proxy.cleanup().await;
    }
}
