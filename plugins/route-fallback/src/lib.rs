//! A fallback that answers by method and route: reads (GET, HEAD) get degraded content
//! for their route, writes get `503` with `Retry-After` so clients retry later instead
//! of believing a write happened.
//!
//! Config keys (all optional):
//! - `routes`: a mapping of route name to the JSON document its reads get
//! - `default`: the document for reads on routes not listed
//! - `reroute_reads_to`: instead of `default`, send unlisted reads to this configured
//!   upstream (through its own breaker)
//!
//! A read with neither a document nor a reroute is declined: the gateway's built-in
//! fallback answers it.

use std::cell::RefCell;
use std::collections::HashMap;

wit_bindgen::generate!({ world: "fallback", path: "../../wit" });

use edge_gateway::plugin::host::{RequestField, request};
use edge_gateway::plugin::types::SyntheticResponse;
use serde_json::{Value, json};

#[derive(Default)]
struct Settings {
    routes: HashMap<String, Value>,
    default: Option<Value>,
    reroute_reads_to: Option<String>,
}

thread_local! {
    static SETTINGS: RefCell<Settings> = RefCell::new(Settings::default());
}

fn json_response(status: u16, extra: Vec<(String, String)>, body: &Value) -> FallbackAction {
    let mut headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("cache-control".to_string(), "no-store".to_string()),
    ];
    headers.extend(extra);
    FallbackAction::Respond(SyntheticResponse {
        status,
        headers,
        body: body.to_string().into_bytes(),
        trailers: Vec::new(),
    })
}

struct Plugin;

impl Guest for Plugin {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        let mut settings = Settings::default();
        for (key, value) in config {
            let parsed =
                || serde_json::from_str::<Value>(&value).map_err(|e| format!("{key}: {e}"));
            match key.as_str() {
                "routes" => match parsed()? {
                    Value::Object(routes) => settings.routes = routes.into_iter().collect(),
                    _ => return Err("routes: expected a mapping of route name to document".into()),
                },
                "default" => settings.default = Some(parsed()?),
                "reroute_reads_to" => settings.reroute_reads_to = Some(value),
                other => return Err(format!("unknown config key `{other}`")),
            }
        }
        SETTINGS.with(|s| *s.borrow_mut() = settings);
        Ok(())
    }

    fn respond(context: FallbackContext) -> FallbackAction {
        let route = request(RequestField::Route);
        let read = matches!(request(RequestField::Method).as_str(), "GET" | "HEAD");
        if !read {
            let seconds = context.retry_after_ms.div_ceil(1000).max(1);
            let body = json!({
                "code": "WRITES_UNAVAILABLE",
                "message": "writes are paused while the upstream recovers; retry later",
                "route": route,
                "retry_after_ms": context.retry_after_ms,
            });
            return json_response(
                503,
                vec![
                    ("retry-after".into(), seconds.to_string()),
                    ("x-fallback".into(), "writes-paused".into()),
                ],
                &body,
            );
        }
        SETTINGS.with(|s| {
            let s = s.borrow();
            match (
                s.routes.get(&route).or(s.default.as_ref()),
                &s.reroute_reads_to,
            ) {
                (Some(document), _) => json_response(
                    200,
                    vec![("x-fallback".into(), "route-content".into())],
                    document,
                ),
                (None, Some(upstream)) => FallbackAction::Reroute(upstream.clone()),
                (None, None) => FallbackAction::Decline,
            }
        })
    }
}

export!(Plugin);
