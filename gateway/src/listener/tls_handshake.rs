//! The TLS handshake under `handshake_timeout`.
//!
//! Pingora's listener would run the handshake itself, before any application sees the
//! connection, under a fixed 60 s timeout that its public API offers no way to change
//! (`pingora-core` `services/listening.rs`: `timeout(Duration::from_secs(60),
//! io.handshake())`; neither `TlsSettings`, `TlsAccept` nor `PreTlsProcess` bounds it).
//! So a TLS listener is a plain TCP listener to Pingora, and the handshake runs here with
//! Pingora's own acceptor (`TlsSettings::build`): the same rustls config, SNI resolver,
//! ALPN and `TlsStream`, so everything after it sees the connection exactly as before.

use std::time::Duration;

use pingora::listeners::tls::Acceptor;
use pingora::protocols::Stream;

use super::passthrough::Plain;

pub enum Handshake {
    Done(Stream),
    /// Not complete within the timeout: the connection is dropped.
    TimedOut,
    /// The client failed it (bad hello, no common cipher, closed): dropped.
    Failed(Box<pingora::Error>),
}

pub async fn accept(acceptor: &Acceptor, tcp: Stream, timeout: Duration) -> Handshake {
    // Boxed: the handshake's state (~5 KB) is needed only until it ends, and inline it
    // would sit in every connection's future for the connection's whole life.
    let handshake = Box::pin(acceptor.tls_handshake(Plain(tcp)));
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(tls)) => Handshake::Done(Box::new(tls)),
        Ok(Err(e)) => Handshake::Failed(e),
        Err(_) => Handshake::TimedOut,
    }
}
