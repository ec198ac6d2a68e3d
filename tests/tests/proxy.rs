//! The request path against real upstream servers: routing, rewrites, headers,
//! connection reuse, error responses.

use std::time::Duration;

use gateway_tests::{Gateway, Reply, dead_address, echo, one_upstream, start_origin};

fn json_str(value: &serde_json::Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn routes_follow_documented_precedence() {
    let catch_all = start_origin(echo("catch-all")).await;
    let exact_host = start_origin(echo("exact-host")).await;
    let exact_host_v1 = start_origin(echo("exact-host-v1")).await;
    let wildcard = start_origin(echo("wildcard")).await;
    let exact_path = start_origin(echo("exact-path")).await;
    let posts = start_origin(echo("posts")).await;
    let gw = Gateway::start(&format!(
        r#"
upstreams:
  catch-all: {{ endpoints: ["{}"] }}
  exact-host: {{ endpoints: ["{}"] }}
  exact-host-v1: {{ endpoints: ["{}"] }}
  wildcard: {{ endpoints: ["{}"] }}
  exact-path: {{ endpoints: ["{}"] }}
  posts: {{ endpoints: ["{}"] }}
routes:
  - {{ match: {{ path_prefix: / }}, upstream: catch-all }}
  - {{ match: {{ host: "*.example.com" }}, upstream: wildcard }}
  - {{ match: {{ host: api.example.com }}, upstream: exact-host }}
  - {{ match: {{ host: api.example.com, path_prefix: /v1 }}, upstream: exact-host-v1 }}
  - {{ match: {{ host: api.example.com, path: /v1/status }}, upstream: exact-path }}
  - {{ match: {{ host: api.example.com, path_prefix: /v1, methods: [POST] }}, upstream: posts }}
"#,
        catch_all.addr(),
        exact_host.addr(),
        exact_host_v1.addr(),
        wildcard.addr(),
        exact_path.addr(),
        posts.addr()
    ))
    .await;

    let cases: &[(&str, &str, &str, &str)] = &[
        ("GET", "api.example.com", "/v1/status", "exact-path"),
        ("GET", "api.example.com", "/v1/quotes", "exact-host-v1"),
        ("POST", "api.example.com", "/v1/quotes", "posts"),
        ("GET", "API.Example.com:8080", "/v1x", "exact-host"),
        ("GET", "www.example.com", "/v1/status", "wildcard"),
        ("GET", "example.com", "/v1/status", "catch-all"),
        ("GET", "other.test", "/", "catch-all"),
    ];
    let mut conn = gw.conn().await;
    for (method, host, path, expected) in cases {
        let response = conn
            .request(method, path, &[("host", host)], b"")
            .await
            .expect("request");
        assert_eq!(
            response.status,
            200,
            "{method} {host}{path}: {}",
            response.text()
        );
        assert_eq!(
            json_str(&response.json(), "/origin"),
            *expected,
            "{method} {host}{path}"
        );
    }
}

#[tokio::test]
async fn prefix_is_stripped_and_host_rewritten() {
    let origin = start_origin(echo("svc")).await;
    let gw = Gateway::start(&format!(
        r#"
upstreams:
  svc: {{ endpoints: ["{}"] }}
routes:
  - match: {{ path_prefix: /api/v1/market }}
    upstream: svc
    strip_prefix: true
    host_rewrite: market.internal
  - match: {{ path_prefix: /keep }}
    upstream: svc
"#,
        origin.addr()
    ))
    .await;
    let body = gw.get("/api/v1/market/quotes/ACME?depth=2").await.json();
    assert_eq!(json_str(&body, "/target"), "/quotes/ACME?depth=2");
    assert_eq!(json_str(&body, "/headers/host"), "market.internal");
    let body = gw.get("/api/v1/market").await.json();
    assert_eq!(json_str(&body, "/target"), "/");
    let body = gw.get("/keep/this?x=1").await.json();
    assert_eq!(json_str(&body, "/target"), "/keep/this?x=1");
    assert_eq!(json_str(&body, "/headers/host"), "gateway.test");
}

#[tokio::test]
async fn forwarding_headers_extend_a_trusted_proxys_chain() {
    // From an untrusted peer the chain is replaced instead (tests/tests/adversarial.rs).
    let origin = start_origin(echo("svc")).await;
    let gw = Gateway::start_with_listener(
        &one_upstream(&[origin.addr()], ""),
        "    trusted_proxies: [\"127.0.0.1\"]\n",
    )
    .await;
    let mut conn = gw.conn().await;
    let response = conn
        .request(
            "GET",
            "/",
            &[
                ("host", "shop.example.com"),
                ("x-forwarded-for", "203.0.113.7"),
                ("forwarded", "for=203.0.113.7"),
            ],
            b"",
        )
        .await
        .expect("request");
    let body = response.json();
    assert_eq!(
        json_str(&body, "/headers/x-forwarded-for"),
        "203.0.113.7, 127.0.0.1"
    );
    assert_eq!(json_str(&body, "/headers/x-forwarded-proto"), "http");
    assert_eq!(
        json_str(&body, "/headers/x-forwarded-host"),
        "shop.example.com"
    );
    assert_eq!(
        json_str(&body, "/headers/forwarded"),
        "for=203.0.113.7, for=127.0.0.1;proto=http;host=shop.example.com"
    );
}

#[tokio::test]
async fn request_id_is_propagated_or_generated() {
    let origin = start_origin(echo("svc")).await;
    let gw = Gateway::start(&one_upstream(&[origin.addr()], "")).await;
    let mut conn = gw.conn().await;
    let given = conn
        .request("GET", "/", &[("x-request-id", "trace-abc-123")], b"")
        .await
        .expect("request");
    assert_eq!(given.header("x-request-id"), Some("trace-abc-123"));
    assert_eq!(
        json_str(&given.json(), "/headers/x-request-id"),
        "trace-abc-123"
    );

    let generated = conn.get("/").await.expect("request");
    let id = generated
        .header("x-request-id")
        .expect("generated id")
        .to_string();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_eq!(json_str(&generated.json(), "/headers/x-request-id"), id);
    let again = conn.get("/").await.expect("request");
    assert_ne!(again.header("x-request-id"), Some(id.as_str()));
}

#[tokio::test]
async fn connections_are_reused_both_sides() {
    let origin = start_origin(echo("svc")).await;
    let gw = Gateway::start(&format!(
        "server: {{ threads: 1 }}\n{}",
        one_upstream(&[origin.addr()], "")
    ))
    .await;
    let mut conn = gw.conn().await;
    for i in 0..20 {
        let response = conn
            .request("POST", "/orders", &[], format!("order {i}").as_bytes())
            .await
            .expect("keep-alive request");
        assert_eq!(response.status, 200);
        assert_eq!(json_str(&response.json(), "/body"), format!("order {i}"));
    }
    assert_eq!(origin.stats().requests(), 20);
    assert_eq!(
        origin.stats().connections(),
        1,
        "20 sequential requests should share one pooled upstream connection"
    );
}

#[tokio::test]
async fn failures_become_json_errors_with_stable_codes() {
    let slow = start_origin(std::sync::Arc::new(|_: &gateway_tests::Request| {
        Reply::text(200, "late").delayed(Duration::from_secs(3))
    }))
    .await;
    let gw = Gateway::start(&format!(
        r#"
upstreams:
  dead: {{ endpoints: ["{}"], timeouts: {{ connect: 200ms }} }}
  slow: {{ endpoints: ["{}"], timeouts: {{ read: 200ms }} }}
routes:
  - {{ match: {{ path_prefix: /dead }}, upstream: dead }}
  - {{ match: {{ path_prefix: /slow }}, upstream: slow }}
"#,
        dead_address(),
        slow.addr()
    ))
    .await;
    for (path, status, code) in [
        ("/nowhere", 404, "ROUTE_NOT_FOUND"),
        ("/dead", 502, "UPSTREAM_UNAVAILABLE"),
        ("/slow", 504, "UPSTREAM_TIMEOUT"),
    ] {
        let started = std::time::Instant::now();
        let response = gw.get(path).await;
        assert_eq!(response.status, status, "{path}: {}", response.text());
        assert_eq!(response.header("content-type"), Some("application/json"));
        let body = response.json();
        assert_eq!(json_str(&body, "/code"), code, "{path}");
        let id = response
            .header("x-request-id")
            .expect("request id on errors");
        assert_eq!(json_str(&body, "/request_id"), id);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path} took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn json_logs_carry_one_structured_access_event_per_request() {
    let origin = start_origin(echo("svc")).await;
    let gw = Gateway::start_with_args(
        &format!(
            "upstreams:\n  svc: {{ endpoints: [\"{}\"] }}\nroutes:\n  - {{ name: all, match: {{ path_prefix: /things }}, upstream: svc }}\n",
            origin.addr()
        ),
        &["--log-format", "json"],
    )
    .await;
    // Three requests, one of them a 404 from the gateway itself: each gets exactly one
    // access event, and nothing else is logged as one.
    let mut conn = gw.conn().await;
    for (path, id, status) in [
        ("/things?x=1", "json-log-check", 200),
        ("/things/2", "json-log-second", 200),
        ("/nowhere", "json-log-missing", 404),
    ] {
        let response = conn
            .request("GET", path, &[("x-request-id", id)], b"")
            .await
            .expect("request");
        assert_eq!(response.status, status, "{path}");
    }
    gw.wait_for_log(&["json-log-missing"]).await;
    let access: Vec<serde_json::Value> = gw
        .logs()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .filter(|event: &serde_json::Value| event["target"] == "gateway::access")
        .collect();
    let ids: Vec<&str> = access
        .iter()
        .map(|e| e["request_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        ids,
        ["json-log-check", "json-log-second", "json-log-missing"],
        "one access event per request, in order"
    );
    let event = &access[0];
    assert_eq!(event["target"], "gateway::access");
    assert_eq!(event["request_id"], "json-log-check");
    assert_eq!(event["status"], 200);
    assert_eq!(event["route"], "all");
    assert_eq!(event["upstream"], "svc");
    assert_eq!(
        event["path"], "/things",
        "paths are logged without the query string"
    );
}
