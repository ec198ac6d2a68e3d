//! Configuration: the YAML file -> checked `Config`.
//!
//! Pipeline: text -> YAML value (syntax errors) -> each section and each upstream / route
//! deserialized on its own (type errors, unknown keys) -> checked `*Spec` types
//! (values, references) -> every problem reported together with file:line:column.
//! serde_yaml is called from this module only, so a fork can replace it in one place.

mod cluster;
pub mod edit;
mod error;
mod listener;
mod model;
mod plugins;
mod position;
mod raw;
mod resilience;
pub mod units;
mod vocabulary;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_yaml::Value;
use sha2::{Digest, Sha256};

pub use cluster::ClusterSpec;
pub use error::{ConfigError, ConfigErrors, KeyPath, Position, Segment};
pub use listener::{
    CertificateSpec, ListenerLimits, ListenerSpec, MAX_HEADER_BYTES, MAX_HEADERS, RouteLimits,
    TlsSpec, TlsVersion,
};
pub use model::{
    AdminSpec, Config, DEFAULT_RESOLVE_INTERVAL, HostEndpoint, HostMatch, LoadBalancing, PathMatch,
    Protocol, RecordOutcomesSpec, RouteSpec, ServerSpec, Timeouts, UpstreamSpec, UpstreamTls,
    assemble_endpoints,
};
pub use plugins::{
    MAX_LOG_BYTES_PER_SECOND, MAX_LOG_LINES_PER_SECOND, MAX_PLUGIN_MEMORY, OnPluginError,
    PluginKind, PluginLimits, PluginSpec, WasmFile,
};
pub use resilience::{
    FRAMING_HEADERS, FallbackSpec, HealthCheckSpec, OutlierSpec, RetrySpec, StaticResponse,
    is_framing_header,
};

use error::Problems;
use position::PositionIndex;
use raw::{
    RawAdmin, RawListener, RawPlugin, RawPlugins, RawRoute, RawServer, RawUpstream, RawUpstreams,
    TOP_LEVEL_KEYS,
};

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ConfigErrors),
}

/// Reads and checks the config file at `path`.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    load_knowing(path, &KnownHosts::default())
}

/// Like `load`, keeping `known` addresses for a host name that does not resolve now.
pub fn load_knowing(path: &Path, known: &KnownHosts) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse_knowing(&text, path, known)?)
}

/// What each host name of the running config resolved to: a reload (or a settings
/// change) whose lookup of the same name fails keeps these (the last good set, with a
/// warning) instead of refusing the whole file because DNS had a bad moment.
#[derive(Debug, Default)]
pub struct KnownHosts(std::collections::HashMap<(String, u16), Vec<std::net::SocketAddr>>);

impl KnownHosts {
    pub fn of(config: &Config) -> Self {
        Self(
            config
                .upstreams
                .values()
                .flat_map(|u| &u.hosts)
                .map(|h| ((h.host.clone(), h.port), h.addresses.clone()))
                .collect(),
        )
    }

    pub(crate) fn get(&self, host: &str, port: u16) -> Option<&Vec<std::net::SocketAddr>> {
        self.0.get(&(host.to_string(), port))
    }
}

/// Checks config `text`; `source` names it in errors.
pub fn parse(text: &str, source: &Path) -> Result<Config, ConfigErrors> {
    parse_knowing(text, source, &KnownHosts::default())
}

/// Like `parse`, keeping `known` addresses for a host name that does not resolve now.
pub fn parse_knowing(
    text: &str,
    source: &Path,
    known: &KnownHosts,
) -> Result<Config, ConfigErrors> {
    let fail = |problems: Problems, index: &PositionIndex| {
        let mut errors: Vec<ConfigError> = problems
            .0
            .into_iter()
            .map(|(path, position, message)| ConfigError {
                file: source.to_path_buf(),
                position: position.unwrap_or_else(|| index.locate(&path)),
                path,
                message,
            })
            .collect();
        errors.sort_by_key(|e| (e.position.line, e.position.column));
        ConfigErrors(errors)
    };

    let index = PositionIndex::build(text);
    if !index.duplicates.is_empty() {
        let mut problems = Problems::default();
        for (path, at, first) in &index.duplicates {
            let key = match path.0.last() {
                Some(Segment::Key(key)) => key.as_str(),
                _ => "",
            };
            problems.push_at(
                path.clone(),
                *at,
                format!("duplicate key `{key}` (first given at line {})", first.line),
            );
        }
        return Err(fail(problems, &index));
    }
    let value: Value = match serde_yaml::from_str(text) {
        Ok(value) => value,
        Err(e) => {
            let mut problems = Problems::default();
            let position = e
                .location()
                .map_or(Position { line: 1, column: 1 }, |l| Position {
                    line: l.line(),
                    column: l.column(),
                });
            let message = e.to_string();
            let message = message
                .rfind(" at line ")
                .map_or(message.as_str(), |cut| &message[..cut]);
            problems.push_at(
                KeyPath::root(),
                position,
                format!("invalid YAML: {message}"),
            );
            return Err(fail(problems, &PositionIndex::default()));
        }
    };
    let mut problems = Problems::default();
    let config = check(value, source, text, &index, known, &mut problems);
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(fail(problems, &index)),
    }
}

/// Deserializes one section, recording a type error under its full key path.
fn section<T: DeserializeOwned>(
    value: Value,
    path: &KeyPath,
    problems: &mut Problems,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            let inner = KeyPath(
                e.path()
                    .iter()
                    .filter_map(|segment| match segment {
                        serde_path_to_error::Segment::Map { key } => {
                            Some(Segment::Key(key.clone()))
                        }
                        serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
                        _ => None,
                    })
                    .collect(),
            );
            let at = path.join(&inner);
            let in_breaker =
                at.0.iter()
                    .any(|s| matches!(s, Segment::Key(k) if k == "breaker"));
            problems.push(
                at,
                vocabulary::explain(&e.into_inner().to_string(), in_breaker),
            );
            None
        }
    }
}

fn check(
    value: Value,
    source: &Path,
    text: &str,
    index: &PositionIndex,
    known: &KnownHosts,
    problems: &mut Problems,
) -> Option<Config> {
    let root = KeyPath::root();
    let mut top = match value {
        Value::Mapping(map) => map,
        Value::Null => {
            problems.push(
                root,
                "the config is empty; it needs at least `listeners`, `upstreams` and `routes`",
            );
            return None;
        }
        _ => {
            problems.push(root, "the top level must be a mapping of `listeners`, `admin`, `plugins`, `upstreams`, `routes`, `server`");
            return None;
        }
    };
    for key in top.keys() {
        match key.as_str() {
            Some(name) if TOP_LEVEL_KEYS.contains(&name) => {}
            Some(name) => problems.push(
                root.key(name),
                format!(
                    "unknown key `{name}`, expected one of {}",
                    TOP_LEVEL_KEYS.join(", ")
                ),
            ),
            None => problems.push(root.clone(), "top-level keys must be strings"),
        }
    }
    let mut take = |key: &str| top.remove(key).unwrap_or(Value::Null);

    let server_path = root.key("server");
    let server = match take("server") {
        Value::Null => RawServer::default(),
        value => section(value, &server_path, problems).unwrap_or_default(),
    };
    let server = model::server_spec(server, source, &server_path, problems);

    let listeners_path = root.key("listeners");
    let listeners = match take("listeners") {
        Value::Null => Some(Vec::new()),
        // A type error is reported here; "at least one" would only repeat it.
        value => section::<Vec<RawListener>>(value, &listeners_path, problems),
    };
    let listeners = listeners
        .map(|raw| listener::listener_specs(raw, source, &listeners_path, problems))
        .unwrap_or_default();

    let admin_path = root.key("admin");
    let admin = match take("admin") {
        Value::Null => None,
        value => section::<RawAdmin>(value, &admin_path, problems),
    };
    let admin = model::admin_spec(admin, &admin_path, problems);
    model::check_admin_apart(&admin, &listeners, &admin_path, problems);

    let cluster_path = root.key("cluster");
    let cluster = match take("cluster") {
        Value::Null => None,
        value => section::<cluster::RawCluster>(value, &cluster_path, problems)
            .and_then(|raw| cluster::cluster_spec(raw, source, &cluster_path, problems)),
    };

    let plugins_path = root.key("plugins");
    let raw_plugins: RawPlugins = match take("plugins") {
        Value::Null => RawPlugins::new(),
        value => section(value, &plugins_path, problems).unwrap_or_default(),
    };
    let declared_plugins: Vec<String> = raw_plugins.keys().cloned().collect();
    let mut plugins = std::collections::BTreeMap::new();
    for (name, value) in raw_plugins {
        let path = plugins_path.key(name.clone());
        let Some(raw) = section::<RawPlugin>(value, &path, problems) else {
            continue;
        };
        let position = index.locate(&path);
        if let Some(spec) = plugins::plugin_spec(&name, raw, source, position, &path, problems) {
            plugins.insert(name, spec);
        }
    }

    let upstreams_path = root.key("upstreams");
    let raw_upstreams: RawUpstreams = match take("upstreams") {
        Value::Null => {
            problems.push(upstreams_path.clone(), "at least one upstream is required");
            RawUpstreams::new()
        }
        value => section(value, &upstreams_path, problems).unwrap_or_default(),
    };
    let declared: Vec<String> = raw_upstreams.keys().cloned().collect();
    let mut upstreams = std::collections::BTreeMap::new();
    for (name, value) in raw_upstreams {
        let path = upstreams_path.key(name.clone());
        let Some(raw) = section::<RawUpstream>(value, &path, problems) else {
            continue;
        };
        if let Some(spec) =
            model::upstream_spec(&name, raw, source, (&server.dns, known), &path, problems)
        {
            upstreams.insert(name, spec);
        }
    }

    resilience::check_fallback_chains(&upstreams, &declared, &upstreams_path, problems);
    plugins::check_references(
        &upstreams,
        &plugins,
        &declared_plugins,
        &upstreams_path,
        problems,
    );

    let routes_path = root.key("routes");
    let raw_routes: Vec<Value> = match take("routes") {
        Value::Null => {
            problems.push(routes_path.clone(), "at least one route is required");
            Vec::new()
        }
        value => section(value, &routes_path, problems).unwrap_or_default(),
    };
    let mut routes = Vec::new();
    for (i, value) in raw_routes.into_iter().enumerate() {
        let path = routes_path.index(i);
        let Some(raw) = section::<RawRoute>(value, &path, problems) else {
            continue;
        };
        if let Some(spec) = model::route_spec(i, raw, &upstreams, &declared, &path, problems) {
            routes.push((i, spec));
        }
    }
    model::check_routes(&routes, &routes_path, problems);

    Some(Config {
        source: source.to_path_buf(),
        hash: content_hash(text, &plugins, &listeners, &upstreams),
        text: std::sync::Arc::from(text),
        server,
        listeners,
        admin,
        cluster,
        plugins,
        upstreams,
        routes: routes.into_iter().map(|(_, route)| route).collect(),
    })
}

/// A path in the config, relative to the config file's directory (as written when the
/// config comes from elsewhere, like the embedded demo).
pub(crate) fn resolve_relative(source: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    match source.parent() {
        Some(dir) if path.is_relative() && source.is_file() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

/// First 12 hex digits of the SHA-256 of the file's text alone: what the settings API
/// names a version of the file by (`If-Match`, the 409 on a concurrent edit).
pub fn text_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// First 12 hex digits of the SHA-256 of the file and the plugins it loads: short
/// enough for a label, long enough to tell apart. A rebuilt plugin changes the hash.
fn content_hash(
    text: &str,
    plugins: &std::collections::BTreeMap<String, PluginSpec>,
    listeners: &[ListenerSpec],
    upstreams: &std::collections::BTreeMap<String, UpstreamSpec>,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(text.as_bytes());
    // Files the config points at: a rebuilt plugin or a rotated certificate is a change.
    for plugin in plugins.values() {
        hasher.update(plugin.wasm.sha256);
    }
    for tls in listeners.iter().filter_map(|l| l.tls.as_ref()) {
        for certificate in &tls.certificates {
            hasher.update(certificate.loaded.sha256);
        }
    }
    for ca in upstreams
        .values()
        .filter_map(|u| u.tls.as_ref()?.ca.as_ref())
    {
        hasher.update(ca.sha256);
    }
    let digest = hasher.finalize();
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
