//! Listeners: where the gateway accepts clients, with TLS (certificates chosen by SNI),
//! HTTP/2, and the limits that protect it from slow or oversized clients. Route-level
//! limits live here too: body limits override the listener's, and a route may set a
//! total request deadline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{KeyPath, Problems};
use super::raw::{
    RawEncodedSlashes, RawListener, RawListenerLimits, RawListenerTls, RawPathPolicy,
    RawRouteLimits,
};
use super::units::HumanDuration;
use crate::syntax::cidr::Cidr;
use crate::syntax::path::{EncodedSlashes, PathPolicy};
use crate::tls::{LoadedCertificate, load_certificate};

/// Pingora reads at most this much request header, whatever the config says.
pub const MAX_HEADER_BYTES: u64 = 1024 * 1024;
/// Pingora parses at most this many request headers.
pub const MAX_HEADERS: u32 = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSpec {
    pub address: SocketAddr,
    pub tls: Option<TlsSpec>,
    /// TLS: h2 offered by ALPN. Plaintext: h2c accepted.
    pub http2: bool,
    pub limits: ListenerLimits,
    /// Peers whose X-Forwarded-* and Forwarded headers are appended to; from anyone
    /// else they are dropped and replaced by the gateway's own.
    pub trusted_proxies: Vec<Cidr>,
    /// Connections start with a PROXY protocol header naming the real client.
    pub proxy_protocol: bool,
    pub paths: PathPolicy,
}

impl ListenerSpec {
    /// What a running process cannot change: the socket and how it speaks. Certificates
    /// and limits reload in place.
    pub fn shape(&self) -> (SocketAddr, bool, bool) {
        (self.address, self.tls.is_some(), self.http2)
    }

    /// A name for metrics and logs.
    pub fn label(&self) -> String {
        self.address.to_string()
    }

    /// Whether forwarding headers from `peer` are believed.
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        self.trusted_proxies
            .iter()
            .any(|range| range.contains(peer))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsSpec {
    /// The first is the default for clients without SNI or with an unknown name.
    pub certificates: Vec<CertificateSpec>,
    pub min_version: TlsVersion,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CertificateSpec {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub loaded: LoadedCertificate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Request line plus all header lines; larger requests get 431.
    pub max_header_bytes: u64,
    /// More header fields than this get 431.
    pub max_headers: u32,
    /// Larger request bodies get 413 (routes may override).
    pub max_body_bytes: u64,
    /// From accepting the connection (or the first byte of a later request on it) to the
    /// end of the request header; a slower client is disconnected.
    pub header_read_timeout: Duration,
    /// Longest wait between two reads of a request body (routes may override).
    pub body_read_timeout: Duration,
    /// How long an idle keep-alive connection is kept; zero closes after each response.
    pub keepalive_timeout: Duration,
    /// Connections beyond this many open at once are closed on accept.
    pub max_connections: u32,
    /// From accepting a TLS connection to the end of its handshake; a slower client is
    /// disconnected.
    pub handshake_timeout: Duration,
    /// Longest a write to the client may wait for it to read (no byte taken): the
    /// connection is closed.
    pub write_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body_bytes: 10 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(60),
        }
    }
}

/// A route's overrides of its listener's body limits, and its own total deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouteLimits {
    pub max_body_bytes: Option<u64>,
    pub body_read_timeout: Option<Duration>,
    /// From the end of the request header to the last response byte sent; none when
    /// absent.
    pub request_timeout: Option<Duration>,
}

pub fn listener_specs(
    raw: Vec<RawListener>,
    source: &Path,
    path: &KeyPath,
    problems: &mut Problems,
) -> Vec<ListenerSpec> {
    if raw.is_empty() {
        problems.push(path.clone(), "at least one listener is required");
    }
    let mut specs: Vec<ListenerSpec> = Vec::new();
    for (i, listener) in raw.into_iter().enumerate() {
        let at = path.index(i);
        let tls = listener
            .tls
            .and_then(|tls| tls_spec(tls, source, &at.key("tls"), problems));
        let limits = listener_limits(&listener.limits, &at.key("limits"), problems);
        let trusted_proxies = trusted_proxies(&listener.trusted_proxies, &at, problems);
        let Some(address) =
            super::model::listen_address(&listener.address, at.key("address"), problems)
        else {
            continue;
        };
        if specs.iter().any(|s| s.address == address) {
            problems.push(at.key("address"), format!("`{address}` is listed twice"));
            continue;
        }
        specs.push(ListenerSpec {
            address,
            http2: listener.http2.unwrap_or(tls.is_some()),
            tls,
            limits,
            trusted_proxies,
            proxy_protocol: listener.proxy_protocol.unwrap_or(false),
            paths: path_policy(&listener.paths),
        });
    }
    specs
}

fn trusted_proxies(raw: &[String], at: &KeyPath, problems: &mut Problems) -> Vec<Cidr> {
    let mut ranges = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        match text.trim().parse::<Cidr>() {
            Ok(range) => ranges.push(range),
            Err(e) => problems.push(at.key("trusted_proxies").index(i), e.to_string()),
        }
    }
    ranges
}

fn path_policy(raw: &RawPathPolicy) -> PathPolicy {
    PathPolicy {
        merge_slashes: raw.merge_slashes.unwrap_or(false),
        encoded_slashes: match raw.encoded_slashes {
            None | Some(RawEncodedSlashes::Refuse) => EncodedSlashes::Refuse,
            Some(RawEncodedSlashes::Keep) => EncodedSlashes::Keep,
        },
    }
}

fn tls_spec(
    raw: RawListenerTls,
    source: &Path,
    path: &KeyPath,
    problems: &mut Problems,
) -> Option<TlsSpec> {
    let min_version = match &raw.min_version {
        None => TlsVersion::Tls12,
        Some(value) => match tls_version(value) {
            Some(version) => version,
            None => {
                problems.push(
                    path.key("min_version"),
                    "must be \"1.2\" or \"1.3\" (TLS 1.0 and 1.1 are not offered)",
                );
                TlsVersion::Tls12
            }
        },
    };
    if raw.certificates.is_empty() {
        problems.push(
            path.key("certificates"),
            "at least one certificate is required (the first is the default)",
        );
        return None;
    }
    let count = raw.certificates.len();
    let mut certificates = Vec::with_capacity(count);
    for (i, certificate) in raw.certificates.into_iter().enumerate() {
        let at = path.key("certificates").index(i);
        let cert = super::resolve_relative(source, &certificate.cert);
        let key = super::resolve_relative(source, &certificate.key);
        match load_certificate(&cert, &key) {
            Ok(loaded) => certificates.push(CertificateSpec { cert, key, loaded }),
            Err(e) => {
                // Point at the entry's key for the file the problem is in.
                let field = if e.file() == key { "key" } else { "cert" };
                problems.push(at.key(field), e.to_string());
            }
        }
    }
    (certificates.len() == count).then_some(TlsSpec {
        certificates,
        min_version,
    })
}

fn tls_version(value: &serde_yaml::Value) -> Option<TlsVersion> {
    let text = match value {
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::String(s) => s.trim().to_ascii_lowercase(),
        _ => return None,
    };
    match text.trim_start_matches("tlsv").trim_start_matches("tls") {
        "1.2" => Some(TlsVersion::Tls12),
        "1.3" => Some(TlsVersion::Tls13),
        _ => None,
    }
}

fn listener_limits(
    raw: &RawListenerLimits,
    path: &KeyPath,
    problems: &mut Problems,
) -> ListenerLimits {
    let defaults = ListenerLimits::default();
    let max_header_bytes = raw
        .max_header_bytes
        .map_or(defaults.max_header_bytes, |s| s.0);
    if !(1024..=MAX_HEADER_BYTES).contains(&max_header_bytes) {
        problems.push(
            path.key("max_header_bytes"),
            format!("must be between 1KiB and 1MiB (Pingora's own ceiling), not {max_header_bytes} bytes"),
        );
    }
    let max_headers = raw.max_headers.unwrap_or(defaults.max_headers);
    if !(1..=MAX_HEADERS).contains(&max_headers) {
        problems.push(
            path.key("max_headers"),
            format!(
                "must be between 1 and {MAX_HEADERS} (Pingora's own ceiling), not {max_headers}"
            ),
        );
    }
    let max_connections = raw.max_connections.unwrap_or(defaults.max_connections);
    if max_connections == 0 {
        problems.push(path.key("max_connections"), "must be at least 1");
    }
    let keepalive_timeout = raw
        .keepalive_timeout
        .map_or(defaults.keepalive_timeout, |d| d.0);
    if keepalive_timeout.subsec_nanos() != 0 {
        problems.push(
            path.key("keepalive_timeout"),
            "must be whole seconds (0s closes each connection after its response)",
        );
    }
    let max_body_bytes = body_bytes(
        raw.max_body_bytes.map(|s| s.0),
        &path.key("max_body_bytes"),
        problems,
    )
    .unwrap_or(defaults.max_body_bytes);
    // A duration limit: greater than zero when given, the default otherwise.
    let mut timeout = |value: Option<HumanDuration>, key: &str, default: Duration| {
        positive(value.map(|d| d.0), &path.key(key), problems).unwrap_or(default)
    };
    ListenerLimits {
        max_header_bytes,
        max_headers,
        max_body_bytes,
        header_read_timeout: timeout(
            raw.header_read_timeout,
            "header_read_timeout",
            defaults.header_read_timeout,
        ),
        body_read_timeout: timeout(
            raw.body_read_timeout,
            "body_read_timeout",
            defaults.body_read_timeout,
        ),
        keepalive_timeout,
        max_connections,
        handshake_timeout: timeout(
            raw.handshake_timeout,
            "handshake_timeout",
            defaults.handshake_timeout,
        ),
        write_timeout: timeout(raw.write_timeout, "write_timeout", defaults.write_timeout),
    }
}

pub fn route_limits(raw: &RawRouteLimits, path: &KeyPath, problems: &mut Problems) -> RouteLimits {
    RouteLimits {
        max_body_bytes: body_bytes(
            raw.max_body_bytes.map(|s| s.0),
            &path.key("max_body_bytes"),
            problems,
        ),
        body_read_timeout: positive(
            raw.body_read_timeout.map(|d| d.0),
            &path.key("body_read_timeout"),
            problems,
        ),
        request_timeout: positive(
            raw.request_timeout.map(|d| d.0),
            &path.key("request_timeout"),
            problems,
        ),
    }
}

fn body_bytes(value: Option<u64>, path: &KeyPath, problems: &mut Problems) -> Option<u64> {
    if value == Some(0) {
        problems.push(path.clone(), "must be at least 1 byte");
    }
    value
}

fn positive(value: Option<Duration>, path: &KeyPath, problems: &mut Problems) -> Option<Duration> {
    if value.is_some_and(|d| d.is_zero()) {
        problems.push(path.clone(), "must be greater than 0");
    }
    value
}
