//! A fallback that serves a degraded JSON document built from its config, marked with
//! an `x-fallback: degraded` header, whenever the upstream cannot answer.
//!
//! Config keys (all optional):
//! - `document`: the JSON object to serve (a YAML mapping in the gateway config)
//! - `status`: the status to answer with (default 200)
//!
//! The gateway adds `degraded: true`, the `reason`, the `upstream` and `retry_after_ms`
//! to the document, so clients can tell stale data from fresh.
//!
//! A gRPC client (`content-type: application/grpc...`) cannot read a JSON document: it
//! gets an empty gRPC response whose trailers say UNAVAILABLE, why, and when to retry.

use std::cell::RefCell;

wit_bindgen::generate!({ world: "fallback", path: "../../wit" });

use edge_gateway::plugin::host::{Message, RequestField, header, request};
use edge_gateway::plugin::types::{FallbackReason, SyntheticResponse};
use serde_json::{Map, Value, json};

struct Settings {
    document: Map<String, Value>,
    status: u16,
}

thread_local! {
    static SETTINGS: RefCell<Settings> = RefCell::new(Settings { document: Map::new(), status: 200 });
}

fn reason(reason: FallbackReason) -> &'static str {
    match reason {
        FallbackReason::CircuitOpen => "circuit_open",
        FallbackReason::Overloaded => "overloaded",
        FallbackReason::UpstreamFailed => "upstream_failed",
    }
}

struct Plugin;

impl Guest for Plugin {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        let mut settings = Settings {
            document: Map::new(),
            status: 200,
        };
        for (key, value) in config {
            match key.as_str() {
                "document" => match serde_json::from_str(&value) {
                    Ok(Value::Object(document)) => settings.document = document,
                    _ => return Err(format!("document: expected a mapping, got `{value}`")),
                },
                "status" => {
                    settings.status = value
                        .parse()
                        .ok()
                        .filter(|s| (200..=599).contains(s))
                        .ok_or_else(|| {
                            format!("status: `{value}` is not a status between 200 and 599")
                        })?
                }
                other => return Err(format!("unknown config key `{other}`")),
            }
        }
        SETTINGS.with(|s| *s.borrow_mut() = settings);
        Ok(())
    }

    fn respond(context: FallbackContext) -> FallbackAction {
        let grpc = header(Message::Request, "content-type")
            .first()
            .is_some_and(|ct| ct.starts_with("application/grpc"));
        if grpc {
            let upstream = request(RequestField::Upstream);
            let mut trailers = vec![
                ("grpc-status".into(), "14".into()),
                (
                    "grpc-message".into(),
                    format!("degraded: {upstream} is {}", reason(context.reason)),
                ),
            ];
            // A pushback of 0 would tell the client to retry at once.
            if context.retry_after_ms > 0 {
                trailers.push((
                    "grpc-retry-pushback-ms".into(),
                    context.retry_after_ms.to_string(),
                ));
            }
            return FallbackAction::Respond(SyntheticResponse {
                status: 200,
                headers: vec![("content-type".into(), "application/grpc".into())],
                body: Vec::new(),
                trailers,
            });
        }
        SETTINGS.with(|s| {
            let s = s.borrow();
            let mut document = s.document.clone();
            document.insert("degraded".into(), json!(true));
            document.insert("reason".into(), json!(reason(context.reason)));
            document.insert("upstream".into(), json!(request(RequestField::Upstream)));
            document.insert("retry_after_ms".into(), json!(context.retry_after_ms));
            FallbackAction::Respond(SyntheticResponse {
                status: s.status,
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("cache-control".into(), "no-store".into()),
                    ("x-fallback".into(), "degraded".into()),
                ],
                body: Value::Object(document).to_string().into_bytes(),
                trailers: Vec::new(),
            })
        })
    }
}

export!(Plugin);
