//! Checked config: every value here is known to be usable, so nothing downstream re-checks.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;

use super::error::{KeyPath, Problems};
use super::listener::{ListenerSpec, RouteLimits};
use super::plugins::{OnPluginError, PluginSpec};
use super::raw::{
    RawAdmin, RawDns, RawLoadBalancing, RawMode, RawProtocol, RawRoute, RawServer, RawUpstream,
    RawUpstreamTls,
};
use super::resilience::{self, FallbackSpec, HealthCheckSpec, OutlierSpec, RetrySpec};
use crate::breaker::{BreakerPolicy, Mode};
use crate::dns::ResolverSpec;
use crate::tls::{CaBundle, load_ca_bundle};
use crate::upstream::classify::FailureWhen;

pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9901";

/// A whole, valid configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (or `<embedded demo>`).
    pub source: PathBuf,
    /// Short content hash of the file, exported as `gateway_config_info{hash}`.
    pub hash: String,
    /// The file's text as loaded: what the settings API reads and edits
    /// (`edit.rs`), and what a concurrent edit on disk is told apart from.
    pub text: std::sync::Arc<str>,
    pub server: ServerSpec,
    pub listeners: Vec<ListenerSpec>,
    pub admin: AdminSpec,
    /// Sharing with the rest of the fleet; None: this instance stands alone.
    pub cluster: Option<super::ClusterSpec>,
    pub plugins: BTreeMap<String, PluginSpec>,
    pub upstreams: BTreeMap<String, UpstreamSpec>,
    pub routes: Vec<RouteSpec>,
}

impl Config {
    /// The listener bound to `address`, if this config has one.
    pub fn listener(&self, address: std::net::SocketAddr) -> Option<&ListenerSpec> {
        self.listeners.iter().find(|l| l.address == address)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerSpec {
    pub threads: NonZeroUsize,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace_period: Duration,
    pub upstream_keepalive_pool_size: usize,
    pub access_log: bool,
    /// Reload when the config file changes (SIGHUP and the admin API always work).
    pub watch_config: bool,
    /// Unix socket over which a new process takes the listening sockets (`run --upgrade`),
    /// in a directory only this process's uid can reach.
    pub upgrade_socket: PathBuf,
    /// Operator overrides are written here (a private directory); None: kept in memory
    /// only, lost at restart.
    pub state_dir: Option<PathBuf>,
    /// Where compiled plugin components are kept between starts; `None`: compile on
    /// every start (`off`, or no default location).
    pub plugin_cache_dir: Option<PathBuf>,
    /// How host-name endpoints are looked up (`server.dns`).
    pub dns: ResolverSpec,
    /// `server.record_outcomes`: None (the default) records nothing.
    pub record_outcomes: Option<RecordOutcomesSpec>,
}

/// Where and what the outcome recorder writes (`crate::outcomes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOutcomesSpec {
    pub path: PathBuf,
    /// Lowercase, valid, unique; never a credential header.
    pub headers: Vec<http::HeaderName>,
    pub queue: NonZeroUsize,
}

/// Headers that carry credentials: refused in `record_outcomes.headers`, so a recording
/// never puts a secret on disk.
const UNRECORDABLE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// More headers than this per record is a config mistake, not a use.
const MAX_RECORDED_HEADERS: usize = 32;

fn record_outcomes(
    raw: Option<super::raw::RawRecordOutcomes>,
    source: &Path,
    path: &KeyPath,
    problems: &mut Problems,
) -> Option<RecordOutcomesSpec> {
    let raw = raw?;
    let file = super::resolve_relative(source, &raw.path);
    if raw.path.is_empty() {
        problems.push(
            path.key("path"),
            "is empty; give the file to append records to",
        );
    } else if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        problems.push(
            path.key("path"),
            format!("directory `{}` does not exist", dir.display()),
        );
    }
    if raw.headers.len() > MAX_RECORDED_HEADERS {
        problems.push(
            path.key("headers"),
            format!(
                "{} headers; at most {MAX_RECORDED_HEADERS} may be recorded",
                raw.headers.len()
            ),
        );
    }
    let mut headers: Vec<http::HeaderName> = Vec::new();
    for (i, name) in raw.headers.iter().enumerate() {
        let at = path.key("headers").index(i);
        let lower = name.to_ascii_lowercase();
        if UNRECORDABLE_HEADERS.contains(&lower.as_str()) {
            problems.push(
                at,
                format!("`{name}` carries credentials and is never recorded"),
            );
            continue;
        }
        match http::HeaderName::from_bytes(lower.as_bytes()) {
            Ok(header) if headers.contains(&header) => {
                problems.push(at, format!("`{name}` is listed twice"));
            }
            Ok(header) => headers.push(header),
            Err(_) => problems.push(at, format!("`{name}` is not a valid header name")),
        }
    }
    let queue = match raw.queue {
        None => NonZeroUsize::new(8192),
        Some(n) if n > 1 << 20 => {
            problems.push(path.key("queue"), "at most 1048576 records may wait");
            None
        }
        Some(n) => NonZeroUsize::new(n).or_else(|| {
            problems.push(path.key("queue"), "must be at least 1");
            None
        }),
    }
    .unwrap_or(NonZeroUsize::MIN);
    Some(RecordOutcomesSpec {
        path: file,
        headers,
        queue,
    })
}

#[derive(Clone, PartialEq, Eq)]
pub struct AdminSpec {
    pub address: SocketAddr,
    /// Bearer token every admin request but `/health` and `/ready` must carry.
    pub token: Option<String>,
    /// Names (lowercase) and IP addresses the `Host` header may carry besides the
    /// loopback names and the admin's own address.
    pub allowed_hosts: Vec<String>,
}

impl std::fmt::Debug for AdminSpec {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSpec")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSpec {
    pub name: String,
    /// Every address: those written as IPs, then what each host name resolves to.
    pub endpoints: Vec<SocketAddr>,
    /// Endpoints written as IP addresses.
    pub fixed: Vec<SocketAddr>,
    /// Endpoints written as `host:port`, looked up again every `resolve_interval`
    /// (sooner when a record's TTL says so) by `endpoint_refresh.rs`.
    pub hosts: Vec<HostEndpoint>,
    pub resolve_interval: Duration,
    pub load_balancing: LoadBalancing,
    pub timeouts: Timeouts,
    /// Bulkhead: requests beyond this many in flight are answered at once.
    pub max_concurrent_requests: Option<NonZeroU32>,
    pub breaker: BreakerPolicy,
    /// `breaker.mode`: what the breaker does when no operator override is set.
    pub breaker_mode: Mode,
    /// `breaker.shadow`: a candidate policy that only reports what it would do.
    pub shadow: Option<BreakerPolicy>,
    pub failure_when: FailureWhen,
    /// A predicate plugin that replaces `failure_when`.
    pub predicate: Option<String>,
    pub on_plugin_error: OnPluginError,
    pub fallback: FallbackSpec,
    pub outlier_detection: Option<OutlierSpec>,
    pub retries: RetrySpec,
    pub health_check: Option<HealthCheckSpec>,
    pub protocol: Protocol,
    pub tls: Option<UpstreamTls>,
}

/// An endpoint written as a host name, and what it resolved to at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEndpoint {
    pub host: String,
    pub port: u16,
    pub addresses: Vec<SocketAddr>,
}

/// Default `resolve_interval`: the TTL most service discovery DNS hands out.
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);

/// The HTTP version spoken to an upstream. HTTP/2 without TLS is h2c with prior knowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// Sent as SNI and checked against the certificate when verifying.
    pub server_name: String,
    pub verify: bool,
    /// Verify against these instead of the system's roots.
    pub ca: Option<CaBundle>,
    pub ca_file: Option<PathBuf>,
}

#[cfg(test)]
impl UpstreamSpec {
    /// An upstream with every setting at its default, for unit tests.
    pub fn for_test(name: &str, endpoints: Vec<SocketAddr>) -> Self {
        Self {
            name: name.to_string(),
            fixed: endpoints.clone(),
            endpoints,
            hosts: Vec::new(),
            resolve_interval: DEFAULT_RESOLVE_INTERVAL,
            load_balancing: LoadBalancing::RoundRobin,
            timeouts: Timeouts::default(),
            max_concurrent_requests: None,
            breaker: Default::default(),
            breaker_mode: Mode::Automatic,
            shadow: None,
            failure_when: Default::default(),
            predicate: None,
            on_plugin_error: Default::default(),
            fallback: FallbackSpec::Default,
            outlier_detection: None,
            retries: Default::default(),
            health_check: None,
            protocol: Protocol::Http1,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadBalancing {
    RoundRobin,
    /// Power of two random choices on in-flight requests.
    LeastRequests,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    /// How long a pooled upstream connection may sit unused.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(30),
            write: Duration::from_secs(30),
            idle: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub name: String,
    pub host: HostMatch,
    pub path: PathMatch,
    /// Empty means any method.
    pub methods: Vec<Method>,
    pub upstream: String,
    pub strip_prefix: bool,
    pub host_rewrite: Option<String>,
    pub limits: RouteLimits,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com`, stored as the suffix `.example.com`.
    Wildcard(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathMatch {
    Exact(String),
    /// Matches the prefix itself and anything below it at a `/` boundary.
    Prefix(String),
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

pub fn server_spec(
    raw: RawServer,
    source: &Path,
    path: &KeyPath,
    problems: &mut Problems,
) -> ServerSpec {
    let default_threads = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
    let threads = match raw.threads {
        None => default_threads,
        Some(n) => NonZeroUsize::new(n).unwrap_or_else(|| {
            problems.push(path.key("threads"), "must be at least 1");
            default_threads
        }),
    };
    ServerSpec {
        threads,
        shutdown_grace_period: raw
            .shutdown_grace_period
            .map_or(Duration::from_secs(30), |d| d.0),
        upstream_keepalive_pool_size: raw.upstream_keepalive_pool_size.unwrap_or(128),
        access_log: raw.access_log.unwrap_or(true),
        watch_config: raw.watch_config.unwrap_or(true),
        upgrade_socket: upgrade_socket(
            raw.upgrade_socket,
            &crate::upgrade_socket::Environment::current(),
            &path.key("upgrade_socket"),
            problems,
        ),
        state_dir: state_dir(raw.state_dir, source, &path.key("state_dir"), problems),
        plugin_cache_dir: plugin_cache_dir(
            raw.plugin_cache_dir,
            &crate::upgrade_socket::Environment::current(),
            std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from),
            &path.key("plugin_cache_dir"),
            problems,
        ),
        dns: resolver_spec(raw.dns, &path.key("dns"), problems),
        record_outcomes: record_outcomes(
            raw.record_outcomes,
            source,
            &path.key("record_outcomes"),
            problems,
        ),
    }
}

fn resolver_spec(raw: Option<RawDns>, path: &KeyPath, problems: &mut Problems) -> ResolverSpec {
    let Some(raw) = raw else {
        return ResolverSpec::default();
    };
    let mut spec = ResolverSpec::default();
    for (i, text) in raw.nameservers.iter().enumerate() {
        match text.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => spec.nameservers.push(addr),
            _ => problems.push(
                path.key("nameservers").index(i),
                format!("`{text}` is not ip:port (e.g. 10.0.0.10:53)"),
            ),
        }
    }
    if let Some(timeout) = raw.timeout {
        if timeout.0.is_zero() || timeout.0 > Duration::from_secs(30) {
            problems.push(path.key("timeout"), "must be more than 0s and at most 30s");
        }
        spec.timeout = timeout.0;
    }
    spec
}

/// The plugin cache's directory: given (an absolute path without `..`), `off`, or the
/// default: `/var/cache/edge-gateway/plugins` for root, else under `$XDG_CACHE_HOME` or
/// `~/.cache`. Whether it is usable (ours, private) is found when plugins load; an
/// unusable one disables the cache with a warning rather than refusing the config.
fn plugin_cache_dir(
    raw: Option<String>,
    env: &crate::upgrade_socket::Environment,
    xdg_cache_home: Option<PathBuf>,
    path: &KeyPath,
    problems: &mut Problems,
) -> Option<PathBuf> {
    const BELOW: &str = "edge-gateway/plugins";
    match raw.as_deref() {
        Some("off") => None,
        Some(text) => {
            let dir = PathBuf::from(text);
            if !dir.is_absolute() {
                problems.push(
                    path.clone(),
                    format!("`{text}` is not an absolute path; give one, or `off`"),
                );
            } else if dir
                .components()
                .any(|c| c == std::path::Component::ParentDir)
            {
                problems.push(
                    path.clone(),
                    format!("`{text}` contains `..`; write the directory without it"),
                );
            }
            Some(dir)
        }
        None if env.euid == 0 => Some(PathBuf::from("/var/cache").join(BELOW)),
        None => xdg_cache_home
            .filter(|dir| dir.is_absolute())
            .or_else(|| {
                env.home
                    .as_ref()
                    .filter(|home| home.is_absolute())
                    .map(|home| home.join(".cache"))
            })
            .map(|dir| dir.join(BELOW)),
    }
}

/// The state directory: given (relative to the config file), else systemd's
/// `$STATE_DIRECTORY`, else none. Like the upgrade socket's, it must be private: whoever
/// can write there can force a breaker open.
fn state_dir(
    raw: Option<String>,
    source: &Path,
    path: &KeyPath,
    problems: &mut Problems,
) -> Option<PathBuf> {
    let dir = match raw {
        Some(text) => super::resolve_relative(source, &text),
        None => PathBuf::from(std::env::var_os("STATE_DIRECTORY")?),
    };
    let euid = crate::upgrade_socket::effective_uid();
    if dir.exists()
        && let Err(e) = crate::upgrade_socket::check_private_dir(&dir, euid)
    {
        problems.push(path.clone(), e.to_string());
    }
    Some(dir)
}

/// The upgrade socket's path, given or the default, checked for safety: another local
/// user must not be able to bind it or reach it (`upgrade_socket.rs`).
fn upgrade_socket(
    raw: Option<String>,
    env: &crate::upgrade_socket::Environment,
    path: &KeyPath,
    problems: &mut Problems,
) -> PathBuf {
    use crate::upgrade_socket::{check_configured, default_path};
    let (socket, given) = match raw {
        Some(text) => (PathBuf::from(text), true),
        None => match default_path(env) {
            Ok(socket) => (socket, false),
            Err(e) => {
                problems.push(path.clone(), format!("no default location: {e}"));
                return PathBuf::new();
            }
        },
    };
    if let Err(e) = check_configured(&socket, env.euid) {
        let message = if given {
            e.to_string()
        } else {
            format!(
                "the default `{}` cannot be used: {e}; set `upgrade_socket` to a file in a private directory",
                socket.display()
            )
        };
        problems.push(path.clone(), message);
    }
    socket
}

/// A listening address: an IP literal and a non-zero port.
pub(super) fn listen_address(
    text: &str,
    path: KeyPath,
    problems: &mut Problems,
) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => {
            problems.push(path, format!("`{text}` has port 0; give a fixed port"));
            None
        }
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.push(
                path,
                format!("`{text}` is not an address to listen on; write it like 0.0.0.0:8080 or [::]:8080"),
            );
            None
        }
    }
}

pub fn admin_spec(raw: Option<RawAdmin>, path: &KeyPath, problems: &mut Problems) -> AdminSpec {
    let (text, token_env, raw_hosts) = raw.map_or_else(
        || (DEFAULT_ADMIN_ADDRESS.to_string(), None, None),
        |a| (a.address, a.token_env, a.allowed_hosts),
    );
    let allowed_hosts = raw_hosts
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, entry)| {
            allowed_host(entry)
                .map_err(|message| problems.push(path.key("allowed_hosts").index(i), message))
                .ok()
        })
        .collect();
    let fallback = SocketAddr::from(([127, 0, 0, 1], 9901));
    let address = listen_address(&text, path.key("address"), problems).unwrap_or(fallback);
    let token = token_env.and_then(|name| match std::env::var(&name) {
        Ok(token) if token.trim().len() >= 16 => Some(token.trim().to_string()),
        Ok(_) => {
            problems.push(
                path.key("token_env"),
                format!(
                    "environment variable `{name}` must hold a token of at least 16 characters"
                ),
            );
            None
        }
        Err(_) => {
            problems.push(
                path.key("token_env"),
                format!("environment variable `{name}` is not set"),
            );
            None
        }
    });
    if !address.ip().is_loopback()
        && token.is_none()
        && !problems.0.iter().any(|(p, ..)| p == &path.key("token_env"))
    {
        problems.push(
            path.key("address"),
            format!("`{address}` is not loopback: set `token_env` to the environment variable holding a bearer token"),
        );
    }
    AdminSpec {
        address,
        token,
        allowed_hosts,
    }
}

/// One `admin.allowed_hosts` entry: a host name (lowercased) or an IP address (in its
/// canonical text form), without scheme, port or wildcard.
fn allowed_host(entry: &str) -> Result<String, String> {
    let text = entry.trim();
    let unbracketed = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(ip) = unbracketed.parse::<std::net::IpAddr>() {
        return Ok(ip.to_string());
    }
    let name = text.to_ascii_lowercase();
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(name)
    } else {
        Err(format!(
            "`{entry}` is not a host name or IP address; write it like `gateway-admin.internal` (no scheme, port or wildcard)"
        ))
    }
}

/// Names become metric labels and URL segments: keep them plain.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

pub fn upstream_spec(
    name: &str,
    raw: RawUpstream,
    source: &Path,
    (resolver, known): (&ResolverSpec, &super::KnownHosts),
    path: &KeyPath,
    problems: &mut Problems,
) -> Option<UpstreamSpec> {
    let before = problems.0.len();
    if !valid_name(name) {
        problems.push(
            path.clone(),
            format!("upstream name `{name}` must be 1-64 characters of a-z, 0-9, '-' or '_'"),
        );
    }
    if raw.endpoints.is_empty() {
        problems.push(path.key("endpoints"), "at least one endpoint is required");
    }
    let mut endpoints: Vec<SocketAddr> = Vec::new();
    let mut hosts: Vec<HostEndpoint> = Vec::new();
    for (i, text) in raw.endpoints.iter().enumerate() {
        let at = path.key("endpoints").index(i);
        match endpoint(text, resolver, known) {
            Ok(Endpoint::Address(addr)) if endpoints.contains(&addr) => {
                problems.push(at, format!("`{text}` is listed twice"));
            }
            Ok(Endpoint::Address(addr)) => endpoints.push(addr),
            Ok(Endpoint::Host(host))
                if hosts
                    .iter()
                    .any(|h| h.host == host.host && h.port == host.port) =>
            {
                problems.push(at, format!("`{text}` is listed twice"));
            }
            Ok(Endpoint::Host(host)) => hosts.push(host),
            Err(message) => problems.push(at, message),
        }
    }
    let fixed = endpoints;
    let endpoints = assemble_endpoints(&fixed, &hosts);
    let resolve_interval = match raw.resolve_interval {
        None => DEFAULT_RESOLVE_INTERVAL,
        Some(d) if d.0 >= Duration::from_millis(100) => d.0,
        Some(_) => {
            problems.push(path.key("resolve_interval"), "must be at least 100ms");
            DEFAULT_RESOLVE_INTERVAL
        }
    };
    let defaults = Timeouts::default();
    let mut timeout = |key: &str, value: Option<super::units::HumanDuration>, default: Duration| {
        let value = value.map_or(default, |d| d.0);
        if value.is_zero() {
            problems.push(path.key("timeouts").key(key), "must be greater than 0");
        }
        value
    };
    let timeouts = Timeouts {
        connect: timeout("connect", raw.timeouts.connect, defaults.connect),
        read: timeout("read", raw.timeouts.read, defaults.read),
        write: timeout("write", raw.timeouts.write, defaults.write),
        idle: timeout("idle", raw.timeouts.idle, defaults.idle),
    };
    let load_balancing = match raw.load_balancing {
        RawLoadBalancing::RoundRobin => LoadBalancing::RoundRobin,
        RawLoadBalancing::LeastRequests => LoadBalancing::LeastRequests,
    };
    let max_concurrent_requests = raw.max_concurrent_requests.map(|n| {
        NonZeroU32::new(n).unwrap_or_else(|| {
            problems.push(
                path.key("max_concurrent_requests"),
                "must be at least 1 (leave it out for no limit)",
            );
            NonZeroU32::MIN
        })
    });
    let breaker_path = path.key("breaker");
    let mut predicate = None;
    let mut on_plugin_error = OnPluginError::default();
    let mut breaker_mode = Mode::Automatic;
    let mut shadow = None;
    let (breaker, failure_when, fallback) = match raw.breaker {
        None => (
            BreakerPolicy::default(),
            FailureWhen::default(),
            FallbackSpec::Default,
        ),
        Some(mut raw_breaker) => {
            predicate = raw_breaker.predicate.take();
            if let Some(mode) = raw_breaker.mode.take() {
                breaker_mode = mode.into();
            }
            if let Some(raw) = raw_breaker.shadow.take() {
                shadow = resilience::shadow_policy(*raw, &breaker_path.key("shadow"), problems);
            }
            if let Some(raw) = raw_breaker.on_plugin_error.take() {
                if predicate.is_none() {
                    problems.push(
                        breaker_path.key("on_plugin_error"),
                        "only applies with a `predicate` plugin",
                    );
                }
                on_plugin_error = raw.into();
            }
            let failure_when = resilience::failure_when(
                raw_breaker.failure_when.take(),
                &breaker_path.key("failure_when"),
                problems,
            );
            let fallback = resilience::fallback(
                raw_breaker.fallback.take(),
                &breaker_path.key("fallback"),
                problems,
            );
            (
                resilience::breaker_policy(Some(raw_breaker), &breaker_path, problems),
                failure_when,
                fallback,
            )
        }
    };
    let outlier_detection = raw
        .outlier_detection
        .map(|raw| resilience::outlier_detection(raw, &path.key("outlier_detection"), problems));
    let retries = resilience::retries(raw.retries, &path.key("retries"), problems);
    let health_check = raw
        .health_check
        .map(|raw| resilience::health_check(raw, &path.key("health_check"), problems));
    let protocol = match raw.protocol {
        RawProtocol::Http1 => Protocol::Http1,
        RawProtocol::Http2 => Protocol::Http2,
    };
    let tls = raw
        .tls
        .map(|tls| upstream_tls(tls, source, &path.key("tls"), problems));
    if health_check.is_some() && (tls.is_some() || protocol == Protocol::Http2) {
        problems.push(
            path.key("health_check"),
            "active health checks speak plaintext HTTP/1.1 only; leave them out for TLS or HTTP/2 upstreams (the breaker and outlier detection still guard them)",
        );
    }
    (problems.0.len() == before).then(|| UpstreamSpec {
        name: name.to_string(),
        endpoints,
        fixed,
        hosts,
        resolve_interval,
        load_balancing,
        timeouts,
        max_concurrent_requests,
        breaker,
        breaker_mode,
        shadow,
        failure_when,
        predicate,
        on_plugin_error,
        fallback,
        outlier_detection,
        retries,
        health_check,
        protocol,
        tls,
    })
}

/// An upstream's endpoints: the addresses written as such, then each host name's
/// addresses (one an IP entry or another name has too is not doubled).
pub fn assemble_endpoints(fixed: &[SocketAddr], hosts: &[HostEndpoint]) -> Vec<SocketAddr> {
    let mut endpoints = fixed.to_vec();
    for addr in hosts.iter().flat_map(|h| &h.addresses) {
        if !endpoints.contains(addr) {
            endpoints.push(*addr);
        }
    }
    endpoints
}

/// An `endpoints` entry: an address, or a host name and what it resolves to now.
enum Endpoint {
    Address(SocketAddr),
    Host(HostEndpoint),
}

fn endpoint(
    text: &str,
    resolver: &ResolverSpec,
    known: &super::KnownHosts,
) -> Result<Endpoint, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(format!("`{text}` has port 0"));
        }
        return Ok(Endpoint::Address(addr));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("`{text}` is not host:port"));
    };
    let port = match port.parse::<u16>() {
        Ok(port) if port != 0 && !host.is_empty() => port,
        _ => {
            return Err(format!(
                "`{text}` is not host:port with a port from 1 to 65535"
            ));
        }
    };
    // Looked up at load (a name that does not resolve now is refused), then again in
    // the background; the request path never waits on DNS.
    let addresses = match crate::dns::lookup(resolver, host, port) {
        Ok(answer) => answer.addresses,
        Err(error) => match known.get(host, port) {
            Some(last_good) => {
                tracing::warn!(target: "gateway::dns", %error, kept = ?last_good, "host name lookup failed while loading the config; the running addresses stay");
                last_good.clone()
            }
            None => return Err(error.to_string()),
        },
    };
    Ok(Endpoint::Host(HostEndpoint {
        host: host.to_string(),
        port,
        addresses,
    }))
}

fn host_match(text: &str, path: KeyPath, problems: &mut Problems) -> HostMatch {
    let host = text.trim().to_ascii_lowercase();
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest.to_string()),
        None => (false, host.clone()),
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || !name.split('.').all(label_ok) {
        problems.push(
            path,
            format!("`{text}` is not a host name; use `api.example.com` or `*.example.com` (a wildcard only as the first label)"),
        );
        return HostMatch::Any;
    }
    if wildcard {
        HostMatch::Wildcard(format!(".{name}"))
    } else {
        HostMatch::Exact(name)
    }
}

fn path_ok(text: &str) -> bool {
    text.starts_with('/') && !text.contains(['?', '#', ' '])
}

pub fn route_spec(
    index: usize,
    raw: RawRoute,
    upstreams: &BTreeMap<String, UpstreamSpec>,
    declared_upstreams: &[String],
    path: &KeyPath,
    problems: &mut Problems,
) -> Option<RouteSpec> {
    let before = problems.0.len();
    let m = path.key("match");
    let host = raw
        .matcher
        .host
        .as_deref()
        .map_or(HostMatch::Any, |h| host_match(h, m.key("host"), problems));
    let path_match = match (raw.matcher.path, raw.matcher.path_prefix) {
        (Some(_), Some(_)) => {
            problems.push(m.clone(), "give either `path` or `path_prefix`, not both");
            PathMatch::Prefix("/".into())
        }
        (Some(exact), None) => {
            if !path_ok(&exact) {
                problems.push(
                    m.key("path"),
                    format!("`{exact}` must start with `/` and hold no query"),
                );
            }
            PathMatch::Exact(exact)
        }
        (None, prefix) => {
            let prefix = prefix.unwrap_or_else(|| "/".into());
            if !path_ok(&prefix) {
                problems.push(
                    m.key("path_prefix"),
                    format!("`{prefix}` must start with `/` and hold no query"),
                );
            }
            PathMatch::Prefix(prefix)
        }
    };
    if raw.strip_prefix && !matches!(&path_match, PathMatch::Prefix(p) if p != "/") {
        problems.push(
            path.key("strip_prefix"),
            "needs a `match.path_prefix` other than `/` to strip",
        );
    }
    let mut methods = Vec::new();
    for (i, method) in raw.matcher.methods.unwrap_or_default().iter().enumerate() {
        let upper = method.to_ascii_uppercase();
        match Method::from_bytes(upper.as_bytes()) {
            Ok(parsed) if METHODS.contains(&upper.as_str()) => {
                if !methods.contains(&parsed) {
                    methods.push(parsed);
                }
            }
            _ => problems.push(
                m.key("methods").index(i),
                format!(
                    "`{method}` is not an HTTP method; use one of {}",
                    METHODS.join(", ")
                ),
            ),
        }
    }
    if let Some(rewrite) = &raw.host_rewrite {
        // Sent as the upstream's Host: the authority grammar, as a client's must be.
        let ok = rewrite
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
            && crate::syntax::authority::parse(rewrite.as_bytes()).is_ok();
        if !ok {
            problems.push(
                path.key("host_rewrite"),
                format!("`{rewrite}` is not a host (optionally with :port)"),
            );
        }
    }
    // An upstream that is declared but invalid has its own errors already.
    if !upstreams.contains_key(&raw.upstream) && !declared_upstreams.contains(&raw.upstream) {
        let known = declared_upstreams.join(", ");
        problems.push(
            path.key("upstream"),
            format!(
                "no upstream named `{}` (declared: {})",
                raw.upstream,
                if known.is_empty() { "none" } else { &known }
            ),
        );
    }
    if let Some(name) = raw.name.as_deref().filter(|n| !valid_name(n)) {
        problems.push(
            path.key("name"),
            format!("route name `{name}` must be 1-64 characters of a-z, 0-9, '-' or '_'"),
        );
    }
    let limits = super::listener::route_limits(&raw.limits, &path.key("limits"), problems);
    (problems.0.len() == before).then(|| RouteSpec {
        name: raw.name.unwrap_or_else(|| format!("routes[{index}]")),
        host,
        path: path_match,
        methods,
        upstream: raw.upstream,
        strip_prefix: raw.strip_prefix,
        host_rewrite: raw.host_rewrite,
        limits,
    })
}

/// Checks that involve several routes: unique names, no route hidden by an identical one.
/// Route names are unique and no route repeats an earlier one's match (it could never
/// be used). One pass with hash maps: large route tables must load fast.
pub fn check_routes(routes: &[(usize, RouteSpec)], path: &KeyPath, problems: &mut Problems) {
    let mut names: HashMap<&str, usize> = HashMap::with_capacity(routes.len());
    let mut matches: HashMap<(&HostMatch, &PathMatch, Vec<&str>), usize> =
        HashMap::with_capacity(routes.len());
    for (index, route) in routes {
        if let Some(earlier_index) = names.get(route.name.as_str()) {
            problems.push(
                path.index(*index).key("name"),
                format!(
                    "route name `{}` is already used by routes[{earlier_index}]",
                    route.name
                ),
            );
        } else {
            names.insert(&route.name, *index);
        }
        let mut methods: Vec<&str> = route.methods.iter().map(Method::as_str).collect();
        methods.sort_unstable();
        match matches.entry((&route.host, &route.path, methods)) {
            Entry::Occupied(earlier) => problems.push(
                path.index(*index).key("match"),
                format!(
                    "same match as routes[{}], so this route could never be used",
                    earlier.get()
                ),
            ),
            Entry::Vacant(slot) => {
                slot.insert(*index);
            }
        }
    }
}

pub fn check_admin_apart(
    admin: &AdminSpec,
    listeners: &[ListenerSpec],
    path: &KeyPath,
    problems: &mut Problems,
) {
    if listeners.iter().any(|l| {
        l.address.port() == admin.address.port()
            && (l.address.ip() == admin.address.ip()
                || l.address.ip().is_unspecified()
                || admin.address.ip().is_unspecified())
    }) {
        problems.push(path.key("address"), format!("`{}` collides with a traffic listener; the admin API must not be reachable on the traffic port", admin.address));
    }
}

fn upstream_tls(
    raw: RawUpstreamTls,
    source: &Path,
    path: &KeyPath,
    problems: &mut Problems,
) -> UpstreamTls {
    let verify = raw.verify.unwrap_or(true);
    let server_name = raw.server_name.unwrap_or_default();
    if verify && server_name.is_empty() {
        problems.push(
            path.key("server_name"),
            "is required to verify the upstream's certificate (endpoints are addresses, so the name to check must be given); set `verify: false` only for tests",
        );
    } else if !server_name.is_empty()
        && rustls_pki_types::ServerName::try_from(server_name.as_str()).is_err()
    {
        problems.push(
            path.key("server_name"),
            format!("`{server_name}` is not a DNS name or IP address"),
        );
    }
    let ca_file = raw
        .ca_file
        .map(|file| super::resolve_relative(source, &file));
    let ca = ca_file.as_ref().and_then(|file| {
        load_ca_bundle(file)
            .map_err(|e| problems.push(path.key("ca_file"), e.to_string()))
            .ok()
    });
    UpstreamTls {
        server_name,
        verify,
        ca,
        ca_file,
    }
}

impl From<RawMode> for Mode {
    fn from(raw: RawMode) -> Self {
        match raw {
            RawMode::Automatic => Self::Automatic,
            RawMode::ForcedOpen => Self::ForcedOpen,
            RawMode::Disabled => Self::Disabled,
            RawMode::MetricsOnly => Self::MetricsOnly,
        }
    }
}
