//! Why the admin listener refused a request, as the client sees it (status, JSON code)
//! and as the operator counts it (`gateway_admin_refusals_total{reason}`).

use serde_json::{Value, json};

use crate::throttled_log::ThrottledLog;

/// The metric label of each kind of refusal; a closed set.
pub const REASONS: [&str; 5] = ["host", "token", "origin", "fetch_site", "content_type"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No usable `Host` (missing on HTTP/1.1, repeated, not `host[:port]`): 400.
    BadHost(&'static str),
    /// A `Host` the admin does not answer to (DNS rebinding): 421.
    MisdirectedHost(String),
    /// The token is required and was missing or wrong: 401.
    Unauthorized,
    /// A state change from another origin: 403.
    CrossOrigin(String),
    /// A state change the browser marks as not same-origin (`Sec-Fetch-Site`): 403.
    CrossSite(String),
    /// A state change without `Content-Type: application/json`: 415.
    NotJson(Option<String>),
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Self::BadHost(_) => 400,
            Self::MisdirectedHost(_) => 421,
            Self::Unauthorized => 401,
            Self::CrossOrigin(_) | Self::CrossSite(_) => 403,
            Self::NotJson(_) => 415,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadHost(_) => "BAD_HOST",
            Self::MisdirectedHost(_) => "MISDIRECTED_HOST",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::CrossOrigin(_) => "CROSS_ORIGIN",
            Self::CrossSite(_) => "CROSS_SITE",
            Self::NotJson(_) => "UNSUPPORTED_MEDIA_TYPE",
        }
    }

    /// Index into `REASONS`.
    fn reason_index(&self) -> usize {
        match self {
            Self::BadHost(_) | Self::MisdirectedHost(_) => 0,
            Self::Unauthorized => 1,
            Self::CrossOrigin(_) => 2,
            Self::CrossSite(_) => 3,
            Self::NotJson(_) => 4,
        }
    }

    pub fn reason(&self) -> &'static str {
        REASONS[self.reason_index()]
    }

    pub fn message(&self) -> String {
        match self {
            Self::BadHost(why) => format!("bad Host header: {why}"),
            Self::MisdirectedHost(host) => format!(
                "the admin API does not answer to Host `{host}`; use its address, `localhost`, or a name listed in `admin.allowed_hosts`"
            ),
            Self::Unauthorized => "a valid bearer token is required".to_string(),
            Self::CrossOrigin(origin) => format!(
                "state changes are refused from origin `{origin}`: it is neither this host's origin nor in `admin.allowed_hosts`"
            ),
            Self::CrossSite(site) => {
                format!("state changes are refused for Sec-Fetch-Site `{site}`")
            }
            Self::NotJson(None) => {
                "state changes need `Content-Type: application/json`, even without a body"
                    .to_string()
            }
            Self::NotJson(Some(given)) => format!(
                "state changes need `Content-Type: application/json`, even without a body; got `{given}`"
            ),
        }
    }

    pub fn body(&self) -> Value {
        json!({ "code": self.code(), "message": self.message() })
    }
}

/// At most one log line a second for each kind of refusal: a browser tab hammering the
/// admin port must not flood the log (the counter still counts every one).
#[derive(Debug, Default)]
pub struct RefusalLog {
    lines: [ThrottledLog; REASONS.len()],
}

impl RefusalLog {
    pub fn report(&self, refusal: &Refusal, peer: &str, method: &str, path: &str) {
        if let Some(skipped) = self.lines[refusal.reason_index()].admit() {
            tracing::warn!(
                target: "gateway::admin",
                reason = %refusal.reason(),
                status = refusal.status(),
                peer = %peer,
                method = %method,
                path = %path,
                skipped,
                "admin request refused: {}",
                refusal.message()
            );
        }
    }
}

/// A header value as it may appear in a message or a log line: printable, bounded.
pub fn shown(value: &[u8]) -> String {
    const LIMIT: usize = 100;
    let text: String = String::from_utf8_lossy(value)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(LIMIT + 1)
        .collect();
    if text.chars().count() > LIMIT {
        format!("{}…", text.chars().take(LIMIT).collect::<String>())
    } else {
        text
    }
}
