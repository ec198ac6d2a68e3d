//! The config file as written: plain serde structs, unknown keys rejected.
//!
//! Nothing here is checked beyond its type; `model.rs` turns these into `*Spec` types.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::units::{ByteSize, HumanDuration, WindowSize};

/// Top-level keys. Sections are kept as YAML values so that each upstream and route
/// is deserialized on its own and one mistake does not hide the others.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "server",
    "listeners",
    "admin",
    "cluster",
    "plugins",
    "upstreams",
    "routes",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub threads: Option<usize>,
    pub shutdown_grace_period: Option<HumanDuration>,
    pub upstream_keepalive_pool_size: Option<usize>,
    pub access_log: Option<bool>,
    pub watch_config: Option<bool>,
    pub upgrade_socket: Option<String>,
    /// Where operator overrides are kept across restarts.
    pub state_dir: Option<String>,
    pub plugin_cache_dir: Option<String>,
    pub dns: Option<RawDns>,
    /// Write one JSON line per finished exchange (`gateway replay` reads them).
    pub record_outcomes: Option<RawRecordOutcomes>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// `ip:port` of name servers to ask directly (TTLs honoured); default: the system's.
    #[serde(default)]
    pub nameservers: Vec<String>,
    pub timeout: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecordOutcomes {
    /// The file records are appended to; relative to the config file.
    pub path: String,
    /// Request and response headers whose values are recorded (for predicate plugins).
    #[serde(default)]
    pub headers: Vec<String>,
    /// Records waiting for the writer; more are dropped (and counted).
    pub queue: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub address: String,
    pub tls: Option<RawListenerTls>,
    /// TLS: offer h2 by ALPN (default on). Plaintext: accept h2c (default off).
    pub http2: Option<bool>,
    #[serde(default)]
    pub limits: RawListenerLimits,
    /// Peers (CIDR ranges) whose forwarding headers are believed and appended to.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Every connection starts with a PROXY protocol header (v1 or v2).
    pub proxy_protocol: Option<bool>,
    #[serde(default)]
    pub paths: RawPathPolicy,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPathPolicy {
    pub merge_slashes: Option<bool>,
    pub encoded_slashes: Option<RawEncodedSlashes>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawEncodedSlashes {
    Refuse,
    Keep,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub certificates: Vec<RawCertificate>,
    /// `1.2` or `1.3` (YAML may read these as numbers, so taken as a value).
    pub min_version: Option<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// PEM certificate chain, leaf first; relative to the config file.
    pub cert: String,
    /// PEM private key; relative to the config file.
    pub key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerLimits {
    pub max_header_bytes: Option<ByteSize>,
    pub max_headers: Option<u32>,
    pub max_body_bytes: Option<ByteSize>,
    pub header_read_timeout: Option<HumanDuration>,
    pub body_read_timeout: Option<HumanDuration>,
    pub keepalive_timeout: Option<HumanDuration>,
    pub max_connections: Option<u32>,
    pub handshake_timeout: Option<HumanDuration>,
    pub write_timeout: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteLimits {
    pub max_body_bytes: Option<ByteSize>,
    pub body_read_timeout: Option<HumanDuration>,
    pub request_timeout: Option<HumanDuration>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawProtocol {
    #[default]
    Http1,
    Http2,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// SNI and the name the certificate must carry.
    pub server_name: Option<String>,
    /// Verify the upstream's certificate (default on).
    pub verify: Option<bool>,
    /// PEM CA bundle, relative to the config file; default: the system's roots.
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: String,
    /// Name of the environment variable holding the admin bearer token.
    pub token_env: Option<String>,
    /// Host names (or IP addresses) the admin API answers to besides the loopback names
    /// and its own address: for operators who reach it through a name.
    pub allowed_hosts: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub load_balancing: RawLoadBalancing,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    pub max_concurrent_requests: Option<u32>,
    /// How often host-name endpoints are looked up again.
    pub resolve_interval: Option<HumanDuration>,
    pub breaker: Option<RawBreaker>,
    pub outlier_detection: Option<RawOutlierDetection>,
    pub retries: Option<RawRetries>,
    pub health_check: Option<RawHealthCheck>,
    #[serde(default)]
    pub protocol: RawProtocol,
    pub tls: Option<RawUpstreamTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: String,
    pub interval: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
    pub expected_statuses: Option<Vec<serde_yaml::Value>>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
    #[serde(default)]
    pub gate_breaker: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    pub attempts: Option<u32>,
    pub budget: Option<RawRetryBudget>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetryBudget {
    pub ratio: Option<f64>,
    pub min_per_second: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlierDetection {
    pub consecutive_failures: Option<u32>,
    pub ejection: Option<HumanDuration>,
    pub max_ejection: Option<HumanDuration>,
    pub max_ejection_percent: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailureWhen {
    /// Status codes (`429`), classes (`"5xx"`) or ranges (`"500-504"`).
    pub statuses: Option<Vec<serde_yaml::Value>>,
    /// `all`, `none`, or a list of transport error kinds.
    pub errors: Option<serde_yaml::Value>,
    /// gRPC status names (`UNAVAILABLE`) or codes (`14`).
    pub grpc_statuses: Option<Vec<serde_yaml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFallback {
    pub status: Option<u16>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    pub json: Option<serde_json::Value>,
    /// What a gRPC client gets instead (a name or a code; default UNAVAILABLE).
    pub grpc_status: Option<serde_yaml::Value>,
    pub grpc_message: Option<String>,
    pub upstream: Option<String>,
    /// A fallback plugin declared under `plugins:`.
    pub plugin: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub window: Option<RawWindow>,
    pub minimum_requests: Option<u32>,
    pub failure_rate: Option<f64>,
    pub consecutive_failures: Option<u32>,
    pub failures_in_window: Option<u32>,
    pub slow_call: Option<RawSlowCall>,
    pub open_duration: Option<HumanDuration>,
    pub backoff: Option<RawBackoff>,
    pub half_open: Option<RawHalfOpen>,
    pub failure_when: Option<RawFailureWhen>,
    /// A predicate plugin declared under `plugins:`; replaces `failure_when`.
    pub predicate: Option<String>,
    pub on_plugin_error: Option<RawOnPluginError>,
    pub fallback: Option<RawFallback>,
    /// The operator mode the file asks for (an admin API override wins while set).
    pub mode: Option<RawMode>,
    /// A candidate policy evaluated on the same outcomes, acting on nothing.
    pub shadow: Option<Box<RawBreaker>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawMode {
    Automatic,
    ForcedOpen,
    Disabled,
    MetricsOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawOnPluginError {
    FailureWhen,
    CountAsFailure,
    CountAsSuccess,
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawPluginKind {
    Predicate,
    Fallback,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugin {
    /// The component file, relative to the config file.
    pub path: String,
    pub kind: RawPluginKind,
    /// Handed to the plugin's `init`.
    #[serde(default)]
    pub config: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    pub limits: RawPluginLimits,
    /// Predicates only: how much of the response body the plugin sees.
    pub inspect_body_bytes: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPluginLimits {
    pub memory: Option<ByteSize>,
    pub timeout: Option<HumanDuration>,
    pub init_timeout: Option<HumanDuration>,
    pub max_response: Option<ByteSize>,
    pub instances: Option<u32>,
    pub log_lines_per_second: Option<u32>,
    pub log_bytes_per_second: Option<ByteSize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawWindowKind {
    Count,
    Time,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    pub kind: RawWindowKind,
    /// Calls for a count window, a duration for a time window.
    pub size: WindowSize,
    pub buckets: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlowCall {
    pub duration: HumanDuration,
    pub rate: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackoff {
    pub multiplier: Option<f64>,
    pub max: HumanDuration,
    pub jitter: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHalfOpen {
    pub permitted_requests: Option<u32>,
    pub success_threshold: Option<u32>,
    pub probe_timeout: Option<HumanDuration>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawLoadBalancing {
    #[default]
    RoundRobin,
    LeastRequests,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect: Option<HumanDuration>,
    pub read: Option<HumanDuration>,
    pub write: Option<HumanDuration>,
    pub idle: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: RawMatch,
    pub upstream: String,
    #[serde(default)]
    pub strip_prefix: bool,
    pub host_rewrite: Option<String>,
    #[serde(default)]
    pub limits: RawRouteLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub host: Option<String>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub methods: Option<Vec<String>>,
}

/// Plugins keyed by name.
pub type RawPlugins = BTreeMap<String, serde_yaml::Value>;

/// Upstreams keyed by name, in file order of their names (BTreeMap: deterministic).
pub type RawUpstreams = BTreeMap<String, serde_yaml::Value>;
