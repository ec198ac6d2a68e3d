//! `cluster:`: gateways behind one balancer share breaker transitions and operator
//! actions through Redis (gateway/src/cluster/). Off when the section is absent.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::{KeyPath, Problems};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// `redis://host:port/db` or `rediss://` for TLS.
    pub redis_url: String,
    /// The environment variable holding the AUTH password (never in the file).
    pub password_env: Option<String>,
    /// The AUTH user (Redis 6 ACLs); `default` when only a password is given.
    pub username: Option<String>,
    /// TLS (`rediss://`): verify the server against these roots instead of the system's.
    pub ca_file: Option<String>,
    /// Instances with the same name share; others on the same Redis do not.
    pub name: String,
    /// This instance's name in events and the admin API (default: host name and pid).
    pub instance: Option<String>,
    #[serde(default)]
    pub share: RawShare,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShare {
    pub transitions: Option<bool>,
    pub modes: Option<bool>,
}

/// A checked `cluster:` section.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub redis_url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM bytes of the roots to verify a `rediss://` server against.
    pub ca: Option<Vec<u8>>,
    pub ca_file: Option<PathBuf>,
    pub name: String,
    pub instance: String,
    pub share_transitions: bool,
    pub share_modes: bool,
}

impl std::fmt::Debug for ClusterSpec {
    // Never print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSpec")
            .field("redis_url", &self.redis_url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("name", &self.name)
            .field("instance", &self.instance)
            .field("share_transitions", &self.share_transitions)
            .field("share_modes", &self.share_modes)
            .finish()
    }
}

/// Names that end up in Redis channel names and events: short, printable, no spaces.
fn is_name(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub fn cluster_spec(
    raw: RawCluster,
    source: &Path,
    path: &KeyPath,
    problems: &mut Problems,
) -> Option<ClusterSpec> {
    let before = problems.0.len();
    let url = raw.redis_url.trim().to_string();
    let tls = url.starts_with("rediss://");
    if !(url.starts_with("redis://") || tls) {
        problems.push(
            path.key("redis_url"),
            format!("`{url}` is not a redis:// or rediss:// URL"),
        );
    } else if url.contains('@') {
        problems.push(
            path.key("redis_url"),
            "credentials do not belong in the file: set `username` and `password_env`",
        );
    } else if let Err(e) = redis::Client::open(url.as_str()) {
        problems.push(path.key("redis_url"), format!("`{url}`: {e}"));
    }
    if !is_name(&raw.name) {
        problems.push(path.key("name"), "1 to 64 letters, digits, `-`, `_` or `.`");
    }
    let instance = match raw.instance {
        Some(name) if is_name(&name) => name,
        Some(_) => {
            problems.push(
                path.key("instance"),
                "1 to 64 letters, digits, `-`, `_` or `.`",
            );
            String::new()
        }
        None => default_instance(),
    };
    let password = raw
        .password_env
        .and_then(|name| match std::env::var(&name) {
            Ok(value) if !value.is_empty() => Some(value),
            _ => {
                problems.push(
                    path.key("password_env"),
                    format!("environment variable `{name}` is not set"),
                );
                None
            }
        });
    let ca_file = raw
        .ca_file
        .map(|file| super::resolve_relative(source, &file));
    let ca = ca_file.as_ref().and_then(|file| {
        if !tls {
            problems.push(path.key("ca_file"), "only a rediss:// URL uses TLS");
            return None;
        }
        // Checked the way an upstream's CA bundle is: certificates that parse.
        match crate::tls::load_ca_bundle(file) {
            Ok(_) => std::fs::read(file)
                .map_err(|e| problems.push(path.key("ca_file"), e.to_string()))
                .ok(),
            Err(e) => {
                problems.push(path.key("ca_file"), e.to_string());
                None
            }
        }
    });
    (problems.0.len() == before).then(|| ClusterSpec {
        redis_url: url,
        username: raw.username,
        password,
        ca,
        ca_file,
        name: raw.name,
        instance,
        share_transitions: raw.share.transitions.unwrap_or(true),
        share_modes: raw.share.modes.unwrap_or(true),
    })
}

/// `<host name>-<pid>`: unique on a machine, recognisable in a fleet.
fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .take(40)
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".into());
    format!("{host}-{}", std::process::id())
}
