//! The audit trail: one log line (target `gateway::audit`) for every state-changing admin
//! request, whatever became of it, saying who asked. Never throttled: an audit log that
//! drops entries is not one.

use serde_json::Value;

/// What the request presented as credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// No token is configured (loopback admin).
    NotRequired,
    Absent,
    Valid,
    Invalid,
}

impl Token {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotRequired => "not_required",
            Self::Absent => "absent",
            Self::Valid => "valid",
            Self::Invalid => "invalid",
        }
    }
}

/// The word a reply body gives for its outcome: an error's `code`, a reload's `result`,
/// else `ok`.
pub fn result_word(body: &Value) -> String {
    body.get("code")
        .or_else(|| body.get("result"))
        .and_then(Value::as_str)
        .unwrap_or("ok")
        .to_string()
}

pub struct Entry<'a> {
    pub peer: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub token: Token,
    pub status: u16,
    pub result: &'a str,
}

pub fn record(entry: &Entry<'_>) {
    let path: String = entry.path.chars().take(256).collect();
    tracing::info!(
        target: "gateway::audit",
        peer = %entry.peer,
        method = %entry.method,
        path = %path,
        token = %entry.token.as_str(),
        status = entry.status,
        result = %entry.result,
        "admin state change"
    );
}

/// A section of the config file changed through the settings API: who, what, old and
/// new value, and the file's hash before and after.
pub struct SettingsChange<'a> {
    pub peer: &'a str,
    pub token: Token,
    pub upstream: &'a str,
    pub section: &'a str,
    pub old: &'a Value,
    pub new: &'a Value,
    pub old_hash: &'a str,
    pub new_hash: &'a str,
}

pub fn settings_change(change: &SettingsChange<'_>) {
    tracing::info!(
        target: "gateway::audit",
        peer = %change.peer,
        token = %change.token.as_str(),
        upstream = %change.upstream,
        section = %change.section,
        old = %change.old,
        new = %change.new,
        file_hash = %format!("{} -> {}", change.old_hash, change.new_hash),
        "config section changed through the admin API and written to the file"
    );
}
