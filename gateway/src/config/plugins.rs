//! `plugins:`: WebAssembly components declared once by name, with their limits, and
//! named by upstreams (`breaker.predicate`, `breaker.fallback.plugin`).
//!
//! Checking reads each component file, so a missing or non-component file is an error
//! at its `path` key. Compiling and running `init` happen later, in `crate::plugin`.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::error::{KeyPath, Position, Problems};
use super::model::UpstreamSpec;
use super::raw::{RawOnPluginError, RawPlugin, RawPluginKind};
use super::resilience::FallbackSpec;

/// The largest linear memory a plugin instance may be given (the engine's pool slots
/// are sized for it).
pub const MAX_PLUGIN_MEMORY: u64 = 256 << 20;

/// The largest log budgets a plugin may be given.
pub const MAX_LOG_LINES_PER_SECOND: u32 = 100_000;
pub const MAX_LOG_BYTES_PER_SECOND: u64 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    Predicate,
    Fallback,
}

impl PluginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Predicate => "predicate",
            PluginKind::Fallback => "fallback",
        }
    }
}

/// What bounds one plugin instance and each call into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// Linear memory per instance, in bytes.
    pub memory: u64,
    /// Wall time per `classify`/`respond` call.
    pub timeout: Duration,
    /// Wall time for instantiation plus `init`.
    pub init_timeout: Duration,
    /// Largest synthetic response body a fallback may return.
    pub max_response: usize,
    /// Idle instances kept for reuse.
    pub instances: NonZeroU32,
    /// Log lines (`host.log`, stdout, stderr) written per second, all instances
    /// together; more are dropped and counted.
    pub log_lines_per_second: u32,
    /// Bytes of log lines written per second, all instances together.
    pub log_bytes_per_second: u64,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            memory: 16 << 20,
            timeout: Duration::from_millis(10),
            init_timeout: Duration::from_secs(1),
            max_response: 1 << 20,
            instances: NonZeroU32::new(16).unwrap_or(NonZeroU32::MIN),
            log_lines_per_second: 100,
            log_bytes_per_second: 64 << 10,
        }
    }
}

/// A component file as checked: its path, length and SHA-256, by which it is compared.
/// The bytes are not kept (a large component would be held twice, here and compiled);
/// `read` takes them again when they are compiled, and refuses a file that changed.
#[derive(Clone)]
pub struct WasmFile {
    pub path: PathBuf,
    pub len: usize,
    pub sha256: [u8; 32],
}

impl WasmFile {
    pub fn new(path: &Path, bytes: &[u8]) -> Self {
        Self {
            path: path.to_path_buf(),
            len: bytes.len(),
            sha256: Sha256::digest(bytes).into(),
        }
    }

    /// The bytes again, as long as they are still the ones checked.
    pub fn read(&self) -> Result<Vec<u8>, String> {
        let bytes = std::fs::read(&self.path)
            .map_err(|e| format!("cannot read `{}` again: {e}", self.path.display()))?;
        if <[u8; 32]>::from(Sha256::digest(&bytes)) == self.sha256 {
            Ok(bytes)
        } else {
            Err(format!(
                "`{}` changed while the config was loading; load it again",
                self.path.display()
            ))
        }
    }
}

impl PartialEq for WasmFile {
    fn eq(&self, other: &Self) -> bool {
        self.sha256 == other.sha256
    }
}

impl std::fmt::Debug for WasmFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: String = self.sha256[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        write!(f, "WasmFile({} bytes, sha256 {hex}…)", self.len)
    }
}

#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub name: String,
    /// As resolved (relative paths are taken from the config file's directory).
    pub path: PathBuf,
    pub kind: PluginKind,
    /// Handed to `init`: scalars as text, lists and mappings as JSON.
    pub config: Vec<(String, String)>,
    pub limits: PluginLimits,
    /// Predicates only: the body prefix they see, in bytes.
    pub inspect_body_bytes: Option<usize>,
    pub wasm: WasmFile,
    /// Where the plugin is declared, for errors found when it is loaded.
    pub position: Position,
}

/// Two declarations are the same plugin when everything but their position matches.
impl PartialEq for PluginSpec {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.kind == other.kind
            && self.config == other.config
            && self.limits == other.limits
            && self.inspect_body_bytes == other.inspect_body_bytes
            && self.wasm == other.wasm
    }
}

/// What a call records when its predicate plugin fails (traps, times out, exceeds memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnPluginError {
    /// Judge the call with the built-in `failure_when` rules, as if there were no plugin.
    #[default]
    FailureWhen,
    CountAsFailure,
    CountAsSuccess,
    Ignore,
}

impl From<RawOnPluginError> for OnPluginError {
    fn from(raw: RawOnPluginError) -> Self {
        match raw {
            RawOnPluginError::FailureWhen => OnPluginError::FailureWhen,
            RawOnPluginError::CountAsFailure => OnPluginError::CountAsFailure,
            RawOnPluginError::CountAsSuccess => OnPluginError::CountAsSuccess,
            RawOnPluginError::Ignore => OnPluginError::Ignore,
        }
    }
}

/// Checks one `plugins.NAME` entry and reads its component file.
pub fn plugin_spec(
    name: &str,
    raw: RawPlugin,
    source: &Path,
    position: Position,
    path: &KeyPath,
    problems: &mut Problems,
) -> Option<PluginSpec> {
    let before = problems.0.len();
    let kind = match raw.kind {
        RawPluginKind::Predicate => PluginKind::Predicate,
        RawPluginKind::Fallback => PluginKind::Fallback,
    };
    let limits = limits(&raw, path, problems);
    let inspect_body_bytes = match (raw.inspect_body_bytes, kind) {
        (None, _) => None,
        (Some(_), PluginKind::Fallback) => {
            problems.push(
                path.key("inspect_body_bytes"),
                "only predicate plugins see response bodies",
            );
            None
        }
        (Some(size), PluginKind::Predicate) if size.0 == 0 || size.0 > 1 << 20 => {
            problems.push(
                path.key("inspect_body_bytes"),
                "must be between 1 byte and 1MiB",
            );
            None
        }
        (Some(size), PluginKind::Predicate) => usize::try_from(size.0).ok(),
    };
    let config = raw
        .config
        .into_iter()
        .map(|(key, value)| (key, config_text(&value)))
        .collect();
    let file = super::resolve_relative(source, &raw.path);
    let wasm = read_component(&file).map_err(|message| problems.push(path.key("path"), message));
    let wasm = wasm.ok()?;
    (problems.0.len() == before).then(|| PluginSpec {
        name: name.to_string(),
        path: file,
        kind,
        config,
        limits,
        inspect_body_bytes,
        wasm,
        position,
    })
}

fn limits(raw: &RawPlugin, path: &KeyPath, problems: &mut Problems) -> PluginLimits {
    let path = path.key("limits");
    let raw = &raw.limits;
    let defaults = PluginLimits::default();
    let mut within = |key: &str, value: u64, lo: u64, hi: u64, what: &str| {
        if (lo..=hi).contains(&value) {
            true
        } else {
            problems.push(path.key(key), format!("must be between {what}"));
            false
        }
    };
    let memory = raw
        .memory
        .map(|m| m.0)
        .filter(|m| within("memory", *m, 1 << 20, MAX_PLUGIN_MEMORY, "1MiB and 256MiB"))
        .unwrap_or(defaults.memory);
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let timeout = raw
        .timeout
        .map(|d| d.0)
        .filter(|d| within("timeout", millis(*d), 1, 10_000, "1ms and 10s"))
        .unwrap_or(defaults.timeout);
    let init_timeout = raw
        .init_timeout
        .map(|d| d.0)
        .filter(|d| within("init_timeout", millis(*d), 1, 60_000, "1ms and 60s"))
        .unwrap_or(defaults.init_timeout);
    let max_response = raw
        .max_response
        .map(|m| m.0)
        .filter(|m| within("max_response", *m, 1, 64 << 20, "1 byte and 64MiB"))
        .and_then(|m| usize::try_from(m).ok())
        .unwrap_or(defaults.max_response);
    let instances = raw
        .instances
        .filter(|n| within("instances", u64::from(*n), 1, 256, "1 and 256"))
        .and_then(NonZeroU32::new)
        .unwrap_or(defaults.instances);
    // 0 is allowed: a plugin whose lines are all dropped (and counted).
    let log_lines_per_second = raw
        .log_lines_per_second
        .filter(|n| {
            within(
                "log_lines_per_second",
                u64::from(*n),
                0,
                u64::from(MAX_LOG_LINES_PER_SECOND),
                "0 and 100000",
            )
        })
        .unwrap_or(defaults.log_lines_per_second);
    let log_bytes_per_second = raw
        .log_bytes_per_second
        .map(|b| b.0)
        .filter(|b| {
            within(
                "log_bytes_per_second",
                *b,
                0,
                MAX_LOG_BYTES_PER_SECOND,
                "0 and 16MiB",
            )
        })
        .unwrap_or(defaults.log_bytes_per_second);
    PluginLimits {
        memory,
        timeout,
        init_timeout,
        max_response,
        instances,
        log_lines_per_second,
        log_bytes_per_second,
    }
}

/// A config value as the plugin's `init` receives it.
fn config_text(value: &serde_yaml::Value) -> String {
    match value {
        serde_yaml::Value::Null => String::new(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::String(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// Reads a component file, telling a core module or a non-wasm file apart by its header.
fn read_component(file: &Path) -> Result<WasmFile, String> {
    let bytes =
        std::fs::read(file).map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(WasmFile::new(file, &bytes)),
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(format!(
            "`{}` is a core WebAssembly module, not a component; build it for \
             wasm32-wasip2 (or wrap it with `wasm-tools component new`)",
            file.display()
        )),
        _ => Err(format!(
            "`{}` is not a WebAssembly component",
            file.display()
        )),
    }
}

/// Every plugin an upstream names exists and is of the kind that place needs.
pub fn check_references(
    upstreams: &BTreeMap<String, UpstreamSpec>,
    plugins: &BTreeMap<String, PluginSpec>,
    declared: &[String],
    upstreams_path: &KeyPath,
    problems: &mut Problems,
) {
    for spec in upstreams.values() {
        let breaker = upstreams_path.key(spec.name.clone()).key("breaker");
        let mut check = |name: &str, wanted: PluginKind, at: KeyPath| match plugins.get(name) {
            Some(plugin) if plugin.kind == wanted => {}
            Some(plugin) => problems.push(
                at,
                format!(
                    "plugin `{name}` is a {} plugin; this needs a {} plugin",
                    plugin.kind.as_str(),
                    wanted.as_str()
                ),
            ),
            None if declared.iter().any(|d| d == name) => {} // its own error is reported
            None => problems.push(at, format!("no plugin named `{name}` under `plugins`")),
        };
        if let Some(name) = &spec.predicate {
            check(name, PluginKind::Predicate, breaker.key("predicate"));
        }
        if let FallbackSpec::Plugin(name) = &spec.fallback {
            check(
                name,
                PluginKind::Fallback,
                breaker.key("fallback").key("plugin"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_config_values_arrive_as_text_or_json() {
        let value: serde_yaml::Value =
            serde_yaml::from_str("{ a: 1, b: true, c: text, d: [1, 2], e: { f: g }, h: null }")
                .expect("yaml");
        let serde_yaml::Value::Mapping(map) = value else {
            panic!("mapping");
        };
        let texts: Vec<String> = map.values().map(config_text).collect();
        assert_eq!(texts, ["1", "true", "text", "[1,2]", "{\"f\":\"g\"}", ""]);
    }

    fn checked_limits(yaml: &str) -> (PluginLimits, Vec<String>) {
        let raw: RawPlugin = serde_yaml::from_str(yaml).expect("a plugin entry");
        let mut problems = Problems::default();
        let limits = limits(&raw, &KeyPath::root().key("p"), &mut problems);
        let messages = problems
            .0
            .into_iter()
            .map(|(path, _, message)| format!("{path}: {message}"))
            .collect();
        (limits, messages)
    }

    #[test]
    fn log_budgets_default_and_are_bounded() {
        let (limits, problems) = checked_limits("{ path: p.wasm, kind: predicate }");
        assert!(problems.is_empty());
        assert_eq!(
            (limits.log_lines_per_second, limits.log_bytes_per_second),
            (100, 64 << 10)
        );
        let (limits, problems) = checked_limits(
            "{ path: p.wasm, kind: predicate, limits: { log_lines_per_second: 0, log_bytes_per_second: 1MiB } }",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            (limits.log_lines_per_second, limits.log_bytes_per_second),
            (0, 1 << 20)
        );
        let (_, problems) = checked_limits(
            "{ path: p.wasm, kind: predicate, limits: { log_lines_per_second: 100001, log_bytes_per_second: 17MiB } }",
        );
        assert_eq!(
            problems,
            [
                "p.limits.log_lines_per_second: must be between 0 and 100000",
                "p.limits.log_bytes_per_second: must be between 0 and 16MiB"
            ]
        );
    }

    #[test]
    fn component_paths_are_relative_to_the_config_file() {
        let dir = tempfile_dir();
        let config = dir.join("gateway.yaml");
        std::fs::write(&config, "").expect("write");
        assert_eq!(
            crate::config::resolve_relative(&config, "p.wasm"),
            dir.join("p.wasm")
        );
        assert_eq!(
            crate::config::resolve_relative(&config, "/abs/p.wasm"),
            PathBuf::from("/abs/p.wasm")
        );
        assert_eq!(
            crate::config::resolve_relative(Path::new("<embedded demo>"), "p.wasm"),
            PathBuf::from("p.wasm")
        );
    }

    #[test]
    fn only_components_are_accepted() {
        let dir = tempfile_dir();
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).expect("write");
            path
        };
        let component = write("c.wasm", b"\0asm\x0d\0\x01\0");
        assert!(read_component(&component).is_ok());
        let core = write("m.wasm", b"\0asm\x01\0\0\0");
        let message = read_component(&core).err().unwrap_or_default();
        assert!(message.contains("core WebAssembly module"), "{message}");
        let text = write("t.wasm", b"hello world");
        let message = read_component(&text).err().unwrap_or_default();
        assert!(message.contains("not a WebAssembly component"), "{message}");
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "gateway-plugin-spec-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}
