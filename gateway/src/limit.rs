//! The limits a listener or route holds clients to, as the closed label set of
//! `gateway_limit_rejections_total`. A leaf: metrics, the listener and the proxy all
//! name limits with it.

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
    HandshakeTimeout,
    WriteTimeout,
    RequestTimeout,
    /// A request whose Host, path or Content-Length is outside the grammar (400), or a
    /// connection without a valid PROXY header where one is required.
    Malformed,
}

impl Limit {
    pub const ALL: [Limit; 11] = [
        Limit::MaxConnections,
        Limit::HeaderBytes,
        Limit::Headers,
        Limit::BodyBytes,
        Limit::HeaderReadTimeout,
        Limit::BodyReadTimeout,
        Limit::TlsVersion,
        Limit::HandshakeTimeout,
        Limit::WriteTimeout,
        Limit::RequestTimeout,
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
            Limit::HandshakeTimeout => "handshake_timeout",
            Limit::WriteTimeout => "write_timeout",
            Limit::RequestTimeout => "request_timeout",
            Limit::Malformed => "malformed_request",
        }
    }
}
