//! One listening socket: what happens to a connection before the proxy sees a request.
//! It is counted against `max_connections` (over the limit it is closed at once), a TLS
//! listener runs the handshake under `handshake_timeout` (`tls_handshake.rs`), a TLS
//! 1.3-only listener drops what negotiated less, and every connection is wrapped in a
//! `ClientStream` that holds its bytes to the header and write deadlines
//! (`client_stream.rs`). Then Pingora's HTTP server takes it (HTTP/1.1, h2 by ALPN, or
//! h2c), each request under a `RequestWatch` (`request_watch.rs`).

mod client_stream;
mod header_scan;
mod passthrough;
pub mod proxy_protocol;
mod request_watch;
mod tls_handshake;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use futures_util::FutureExt;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::listeners::tls::Acceptor;
use pingora::prelude::fast_timeout::fast_timeout;
use pingora::protocols::http::ServerSession;
use pingora::protocols::{ALPN, Stream};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use rustls::ProtocolVersion;

use crate::config::{ListenerLimits, TlsVersion};
use crate::metrics::ListenerMetrics;
use crate::proxy::Gateway;
use crate::runtime::RuntimeHandle;
use crate::throttled_log::ThrottledLog;

pub use crate::limit::Limit;
pub use client_stream::request_finished;
use client_stream::{ClientStream, Protocol, RequestBoundary, Timeouts};
use request_watch::Requests;
pub use request_watch::{REQUEST_TIMEOUT_GRACE, body_progress, watch_request};
use tls_handshake::Handshake;

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
    requests: Arc<Requests>,
    /// Pingora's TLS acceptor for a TLS listener (the handshake is ours to time).
    tls: Option<Acceptor>,
    h2c: bool,
    runtime: Arc<RuntimeHandle>,
    open: AtomicU32,
    limits: Arc<LimitReporter>,
}

impl ListenerApp {
    pub fn new(
        address: SocketAddr,
        proxy: HttpProxy<Gateway>,
        tls: Option<Acceptor>,
        runtime: Arc<RuntimeHandle>,
        limits: Arc<LimitReporter>,
    ) -> Self {
        let h2c = tls.is_none()
            && proxy
                .server_options
                .as_ref()
                .is_some_and(|options| options.h2c);
        Self {
            address,
            requests: Arc::new(Requests::new(proxy, Arc::clone(&limits))),
            tls,
            h2c,
            runtime,
            open: AtomicU32::new(0),
            limits,
        }
    }

    /// What a new connection is held to, from the config being served now (reloads
    /// apply to the next connection).
    fn current(&self, peer: Option<IpAddr>) -> ConnectionPolicy {
        let runtime = self.runtime.snapshot();
        let spec = runtime.config.listener(self.address);
        ConnectionPolicy {
            limits: spec.map_or_else(ListenerLimits::default, |l| l.limits),
            min_version: spec.and_then(|l| l.tls.as_ref().map(|t| t.min_version)),
            proxy_protocol: spec.is_some_and(|l| l.proxy_protocol),
            may_proxy: spec.is_some_and(|l| {
                l.trusted_proxies.is_empty() || peer.is_some_and(|ip| l.trusts(ip))
            }),
        }
    }

    /// This listener's limits in the config being served now.
    fn limits_now(&self) -> ListenerLimits {
        let runtime = self.runtime.snapshot();
        runtime
            .config
            .listener(self.address)
            .map_or_else(ListenerLimits::default, |l| l.limits)
    }

    /// On a `proxy_protocol` listener, reads the PROXY header (before TLS) and makes
    /// the client it names the connection's peer; None: the connection is done.
    async fn proxy_header(&self, mut stream: Stream, policy: &ConnectionPolicy) -> Option<Stream> {
        if !policy.proxy_protocol {
            return Some(stream);
        }
        if !policy.may_proxy {
            self.limits.fired(
                Limit::Malformed,
                "connection closed: a PROXY header from a peer outside trusted_proxies",
            );
            return None;
        }
        match proxy_protocol::read(&mut stream, policy.limits.header_read_timeout).await {
            Ok(source) => {
                if let Some(digest) = proxy_protocol::digest_for(&*stream, source) {
                    stream.set_socket_digest(digest);
                }
                Some(stream)
            }
            Err(e) => {
                self.limits
                    .fired(Limit::Malformed, &format!("connection closed: {e}"));
                None
            }
        }
    }

    /// The TLS handshake, when this is a TLS listener; None: the connection is done.
    async fn handshake(&self, stream: Stream, limits: &ListenerLimits) -> Option<Stream> {
        let Some(acceptor) = &self.tls else {
            return Some(stream);
        };
        match tls_handshake::accept(acceptor, stream, limits.handshake_timeout).await {
            Handshake::Done(tls) => Some(tls),
            Handshake::TimedOut => {
                self.limits.fired(
                    Limit::HandshakeTimeout,
                    "connection closed: TLS handshake not complete within handshake_timeout",
                );
                None
            }
            Handshake::Failed(e) => {
                tracing::debug!(listener = %self.address, error = %e, "TLS handshake failed");
                None
            }
        }
    }
}

impl ListenerApp {
    /// An HTTP/1 connection's requests, one at a time through Pingora's proxy (what
    /// Pingora's own loop does), except that between two requests the connection waits
    /// here, outside the request's future: an idle keep-alive connection holds its
    /// socket and `ClientStream`, and nothing of the proxy's per-request state.
    async fn serve_http1(
        &self,
        mut client: Box<ClientStream>,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut reused: Option<HttpPersistentSettings> = None;
        let mut shutting_down = shutdown.clone();
        loop {
            let mut session = ServerSession::new_http1(client);
            match reused.take() {
                Some(settings) => settings.apply_to_session(&mut session),
                None => {
                    // As Pingora starts a connection; the proxy sets the listener's own
                    // keep-alive once it has the request (proxy::Gateway::request_filter).
                    session.set_keepalive((!*shutdown.borrow()).then_some(60));
                    session.set_keepalive_reuses_remaining(
                        self.requests
                            .server_options()
                            .and_then(|o| o.keepalive_request_limit),
                    );
                }
            }
            let (stream, settings) = self
                .requests
                .process_new_http(session, shutdown)
                .await?
                .consume();
            // Pingora hands back the stream it was given; anything else would be a
            // Pingora change this loop must not hide.
            let Ok(stream) = stream.into_any().downcast::<ClientStream>() else {
                tracing::error!(listener = %self.address, "keep-alive connection closed: Pingora handed back a stream of another type");
                return None;
            };
            client = stream;
            if !self.next_request(&mut client, &mut shutting_down).await {
                return None;
            }
            reused = settings;
        }
    }

    /// Waits, for at most the listener's `keepalive_timeout`, for the next request's
    /// first bytes; false: close the connection (timed out, closed by the client, or
    /// the process is shutting down). The clock is Pingora's coarse timer, the one its
    /// own keep-alive wait used: it is armed once per request, so it has to be cheap.
    async fn next_request(&self, client: &mut ClientStream, shutdown: &mut ShutdownWatch) -> bool {
        if client.has_read_ahead() {
            return true;
        }
        if *shutdown.borrow_and_update() {
            // A request already here is still served (with `connection: close`), as
            // Pingora's own loop does; only a wait for one that has not come ends.
            return client.read_ahead().now_or_never().unwrap_or(false);
        }
        let keepalive = self.limits_now().keepalive_timeout;
        tokio::select! {
            // Bytes already here are served even when shutdown has just begun.
            biased;
            next = fast_timeout(keepalive, client.read_ahead()) => next.unwrap_or(false),
            _ = shutdown.changed() => false,
        }
    }
}

/// What a new connection on a listener is held to.
#[derive(Debug, Clone, Copy)]
struct ConnectionPolicy {
    limits: ListenerLimits,
    min_version: Option<TlsVersion>,
    proxy_protocol: bool,
    /// Whether the peer may send a PROXY header: any peer when `trusted_proxies` is
    /// empty, else only those it lists.
    may_proxy: bool,
}

/// The connection's peer as the socket says.
fn peer_ip(stream: &Stream) -> Option<IpAddr> {
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
        crate::allocator::tidy_this_thread();
        let policy = self.current(peer_ip(&stream));
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
        let stream = self.proxy_header(stream, &policy).await?;
        let stream = self.handshake(stream, &limits).await?;
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
        let protocol = if stream.selected_alpn_proto() == Some(ALPN::H2) {
            Protocol::H2
        } else {
            Protocol::Http1 { h2c: self.h2c }
        };
        let timeouts = Timeouts {
            header: limits.header_read_timeout,
            write: limits.write_timeout,
        };
        let boundary = Arc::new(RequestBoundary::default());
        let mut stream = ClientStream::new(
            stream,
            protocol,
            timeouts,
            Arc::clone(&boundary),
            Arc::clone(&self.limits),
        );
        // HTTP/2 is bounded by its own graceful shutdown (GOAWAY); only an HTTP/1
        // request needs its first bytes read before Pingora sees the connection.
        if protocol != Protocol::H2 && !stream.first_bytes().await {
            return None;
        }
        let serve = async {
            if protocol == Protocol::H2 || stream.may_be_h2c() {
                self.requests.process_new(Box::new(stream), shutdown).await
            } else {
                self.serve_http1(Box::new(stream), shutdown).await
            }
        };
        client_stream::scope(boundary, serve).await
    }

    async fn cleanup(&self) {
        self.requests.cleanup().await;
    }
}
