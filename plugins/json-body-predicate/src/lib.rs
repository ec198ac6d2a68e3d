//! A failure predicate that reads the response body as JSON: `200 {"error": ...}` and
//! `{"status": "degraded"}` are failures even though the status says success.
//!
//! Needs `inspect_body_bytes` on the plugin in the gateway config (the body prefix is
//! what it reads). Config keys (all optional):
//! - `error_field`: a top-level field whose non-null value marks a failure (default `error`)
//! - `status_field`: a top-level field to compare (default `status`)
//! - `failure_values`: comma-separated values of `status_field` that are failures
//!   (default `degraded`)
//!
//! Bodies that are not JSON (or were cut off by the prefix limit) are judged by their
//! status alone: 5xx is a failure. Transport errors are failures.
//!
//! It asks to see only 2xx responses (the ones whose body can contradict their status);
//! every other exchange is judged by the upstream's `failure_when`.

use std::cell::RefCell;

wit_bindgen::generate!({ world: "failure-predicate", path: "../../wit" });

use edge_gateway::plugin::types::{Classification, StatusRange};
use serde_json::Value;

struct Settings {
    error_field: String,
    status_field: String,
    failure_values: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            error_field: "error".into(),
            status_field: "status".into(),
            failure_values: vec!["degraded".into()],
        }
    }
}

thread_local! {
    static SETTINGS: RefCell<Settings> = RefCell::new(Settings::default());
}

impl Settings {
    fn body_fails(&self, body: &[u8]) -> Option<bool> {
        let Ok(Value::Object(document)) = serde_json::from_slice::<Value>(body) else {
            return None;
        };
        let has_error = document
            .get(&self.error_field)
            .is_some_and(|v| !v.is_null());
        let degraded = document
            .get(&self.status_field)
            .and_then(Value::as_str)
            .is_some_and(|v| self.failure_values.iter().any(|f| f == v));
        Some(has_error || degraded)
    }
}

struct Plugin;

impl Guest for Plugin {
    fn init(config: Vec<(String, String)>) -> Result<Interest, String> {
        let mut settings = Settings::default();
        for (key, value) in config {
            match key.as_str() {
                "error_field" => settings.error_field = value,
                "status_field" => settings.status_field = value,
                "failure_values" => {
                    settings.failure_values =
                        value.split(',').map(|v| v.trim().to_string()).collect()
                }
                other => return Err(format!("unknown config key `{other}`")),
            }
        }
        SETTINGS.with(|s| *s.borrow_mut() = settings);
        Ok(Interest {
            all: false,
            statuses: vec![StatusRange { min: 200, max: 299 }],
            transport_errors: false,
            slower_than_us: None,
            response_headers: Vec::new(),
        })
    }

    fn classify(outcome: Outcome) -> Verdict {
        let classification = match (&outcome.error, &outcome.response) {
            (Some(_), _) => Classification::Failure,
            (None, None) => Classification::Ignore,
            (None, Some(response)) => {
                let by_body = response
                    .body_prefix
                    .as_deref()
                    .and_then(|body| SETTINGS.with(|s| s.borrow().body_fails(body)));
                match by_body {
                    Some(true) => Classification::Failure,
                    _ if response.status >= 500 => Classification::Failure,
                    _ => Classification::Success,
                }
            }
        };
        Verdict {
            classification,
            slow: None,
        }
    }
}

export!(Plugin);
