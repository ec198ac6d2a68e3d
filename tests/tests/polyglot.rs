//! Plugins in other languages than Rust, through the real gateway: a Python predicate
//! (componentize-py) and a JavaScript fallback (ComponentizeJS, default settings, so it
//! imports `wasi:http`), built from `plugins/` by `scripts/build-polyglot-plugins.sh`
//! before `cargo test` (`make test` does). A missing component fails these tests.

use std::sync::Arc;
use gateway_tests::{
    Gateway, Reply, Request, component_imports, dead_address, polyglot_entry, polyglot_path,
    start_origin,
};

/// Each plugin is tens of MB: a generous start and call budget for a debug build on a
/// shared machine (a cut-off would show as a plugin error, which the tests count).
const LIMITS: &str = "limits: { timeout: 1s, init_timeout: 30s, memory: 64MiB }";

/// `/flagged`: 200 with `x-bad: 1`; `/broken`: 500; anything else 200.
fn flagging_origin() -> gateway_tests::Handler {
    Arc::new(|req: &Request| {
        if req.target.ends_with("/flagged") {
            let mut reply = Reply::text(200, "looks fine");
            reply.headers.push(("x-bad".into(), "1".into()));
            reply
        } else if req.target.ends_with("/broken") {
            Reply::text(500, "broken")
        } else {
            Reply::text(200, "ok")
        }
    })
}

#[tokio::test]
async fn python_predicate_opens_the_breaker_on_what_it_calls_failures() {
    let origin = start_origin(flagging_origin()).await;
    let config = format!(
        "plugins:\n{}upstreams:\n  a:\n    endpoints: [\"{}\"]\n    breaker: {{ consecutive_failures: 3, open_duration: 30s, predicate: py }}\n  b:\n    endpoints: [\"{}\"]\n    breaker: {{ consecutive_failures: 2, open_duration: 30s, predicate: py }}\nroutes:\n  - {{ match: {{ path_prefix: /a }}, upstream: a }}\n  - {{ match: {{ path_prefix: /b }}, upstream: b }}\n",
        polyglot_entry(
            "py",
            "python_predicate",
            "predicate",
            &format!("config: {{ failure_header: x-bad, failure_statuses: \"500-599\" }}, {LIMITS}")
        ),
        origin.addr(),
        origin.addr(),
    );
    let gw = Gateway::start(&config).await;
    gw.wait_for_log(&["python predicate ready", "plugin=\"py\""])
        .await;
    let mut conn = gw.conn().await;

    // a: 200s are successes until they carry the header the built-in rules never read;
    // three of those in a row open it.
    for _ in 0..2 {
        assert_eq!(conn.get("/a/ok").await.expect("request").status, 200);
    }
    for _ in 0..3 {
        let response = conn.get("/a/flagged").await.expect("request");
        assert_eq!(response.status, 200, "the client still gets the answer");
    }
    let rejected = conn.get("/a/ok").await.expect("request");
    assert_eq!(rejected.status, 503);
    assert_eq!(rejected.header("x-gateway-fallback"), Some("circuit_open"));

    // b: statuses from its config: two 500s open it.
    for _ in 0..2 {
        assert_eq!(conn.get("/b/broken").await.expect("request").status, 500);
    }
    assert_eq!(conn.get("/b/ok").await.expect("request").status, 503);

    for (outcome, upstream, count) in [
        ("success", "a", 2.0),
        ("failure", "a", 3.0),
        ("failure", "b", 2.0),
    ] {
        assert_eq!(
            gw.metric(&format!(
                "gateway_upstream_requests_total{{outcome=\"{outcome}\",upstream=\"{upstream}\"}}"
            ))
            .await,
            count,
            "{outcome} on {upstream}"
        );
    }
    assert_eq!(
        gw.metric("gateway_plugin_calls_total{plugin=\"py\",result=\"ok\"}")
            .await,
        7.0
    );
    assert_eq!(origin.stats().requests(), 7, "nothing reached an open upstream");
}

#[tokio::test]
async fn js_fallback_answers_while_the_breaker_is_open() {
    let config = format!(
        "plugins:\n{}upstreams:\n  quotes:\n    endpoints: [\"{}\"]\n    breaker: {{ consecutive_failures: 2, open_duration: 30s, fallback: {{ plugin: js }} }}\nroutes:\n  - {{ upstream: quotes }}\n",
        polyglot_entry(
            "js",
            "js_fallback",
            "fallback",
            &format!("config: {{ message: served from the edge, status: 200 }}, {LIMITS}")
        ),
        dead_address()
    );
    let gw = Gateway::start(&config).await;
    for _ in 0..2 {
        let response = gw.get("/quotes").await;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-fallback"), Some("js"));
        assert_eq!(response.json()["reason"], "upstream-failed");
        assert_eq!(
            response.header("x-gateway-fallback"),
            Some("upstream_failed")
        );
    }

    let response = gw.get("/quotes/eur?depth=5").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-gateway-fallback"), Some("circuit_open"));
    assert_eq!(response.header("x-fallback"), Some("js"));
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("x-probe"), None, "no probe_url, no fetch");
    let retry_after: u64 = response
        .header("retry-after")
        .expect("retry-after")
        .parse()
        .expect("whole seconds");
    assert!((20..=30).contains(&retry_after), "{retry_after}");
    let document = response.json();
    assert_eq!(document["message"], "served from the edge");
    assert_eq!(document["reason"], "circuit-open");
    assert_eq!(document["state"], "open");
    assert_eq!(document["upstream"], "quotes");
    assert_eq!(document["method"], "GET");
    assert_eq!(document["path"], "/quotes/eur?depth=5");
    let retry_after_ms = document["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(
        (20_000..=30_000).contains(&retry_after_ms),
        "{retry_after_ms}"
    );
    assert_eq!(
        gw.metric(
            "gateway_fallbacks_total{kind=\"plugin\",reason=\"circuit_open\",upstream=\"quotes\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn js_fallback_fetch_fails_at_call_time_and_nothing_leaves() {
    // A live server the plugin is told to fetch: it must never be reached.
    let probed = start_origin(Arc::new(|_: &Request| Reply::text(200, "up"))).await;
    let live = start_origin(Arc::new(|_: &Request| Reply::text(200, "live"))).await;
    let config = format!(
        "plugins:\n{}upstreams:\n  down:\n    endpoints: [\"{}\"]\n    breaker: {{ consecutive_failures: 1, open_duration: 30s, fallback: {{ plugin: js }} }}\n  live:\n    endpoints: [\"{}\"]\nroutes:\n  - {{ match: {{ path_prefix: /live }}, upstream: live }}\n  - {{ upstream: down }}\n",
        polyglot_entry(
            "js",
            "js_fallback",
            "fallback",
            &format!(
                "config: {{ probe_url: \"http://{}/status\" }}, {LIMITS}",
                probed.addr()
            )
        ),
        dead_address(),
        live.addr()
    );
    let gw = Gateway::start(&config).await;
    let mut conn = gw.conn().await;
    // The first request fails upstream (that connection is closed); the rest are
    // answered while open, over one connection.
    assert_eq!(gw.get("/down").await.header("x-probe"), Some("failed"));
    for _ in 0..20 {
        let response = conn.get("/down").await.expect("request");
        assert_eq!(response.status, 503, "the plugin's default status");
        assert_eq!(response.header("x-fallback"), Some("js"));
        assert_eq!(response.header("x-probe"), Some("failed"));
        let probe = response.json()["probe"]
            .as_str()
            .expect("probe")
            .to_string();
        assert!(probe.starts_with("failed: "), "{probe}");
    }
    gw.wait_for_log(&["plugin=\"js\"", "failed", &format!("probe http://{}", probed.addr())])
        .await;

    assert_eq!(probed.stats().requests(), 0, "no request left the sandbox");
    assert_eq!(
        gw.metric("gateway_plugin_calls_total{plugin=\"js\",result=\"ok\"}")
            .await,
        21.0,
        "every fetch failed inside the call, which then answered"
    );
    for kind in ["trap", "timeout", "memory"] {
        assert_eq!(
            gw.metric(&format!(
                "gateway_plugin_errors_total{{kind=\"{kind}\",plugin=\"js\"}}"
            ))
            .await,
            0.0,
            "{kind}"
        );
    }
    // The gateway is healthy: ready, and serving other upstreams.
    assert_eq!(gw.admin("GET", "/ready", &[], b"").await.status, 200);
    let response = conn.get("/live").await.expect("request");
    assert_eq!((response.status, response.text().as_str()), (200, "live"));
}

/// Guards the point of the JavaScript plugin: it is built with ComponentizeJS's default
/// settings, so it imports `wasi:http`; a build with `-d http` would pass the tests
/// above without proving that such components load.
#[test]
fn js_fallback_imports_wasi_http_as_componentize_js_builds_by_default() {
    let imports = component_imports(&polyglot_path("js_fallback"));
    for interface in ["wasi:http/types@0.2.", "wasi:http/outgoing-handler@0.2."] {
        assert!(
            imports.iter().any(|name| name.starts_with(interface)),
            "js_fallback.wasm does not import {interface}*: {imports:?}"
        );
    }
}
