//! What clients experienced, per route (docs/OPERATIONS.md, "Metrics"): requests by
//! status class and their duration, fallbacks and the gateway's own answers included,
//! requests that matched no route under a fixed label; process metrics and build info;
//! when each breaker last moved.

use gateway_tests::{Gateway, Scripted, echo, start_origin};

#[tokio::test]
async fn requests_are_counted_per_route_as_clients_saw_them() {
    let ok = start_origin(echo("quotes")).await;
    let (_failing, handler) = Scripted::new(500);
    let failing = start_origin(handler).await;
    let gw = Gateway::start(&format!(
        "upstreams:\n  quotes: {{ endpoints: [\"{}\"] }}\n  orders:\n    endpoints: [\"{}\"]\n    breaker: {{ consecutive_failures: 2, open_duration: 30s }}\nroutes:\n  - {{ name: quotes, match: {{ path_prefix: /quotes }}, upstream: quotes }}\n  - {{ name: orders, match: {{ path_prefix: /orders }}, upstream: orders }}\n",
        ok.addr(),
        failing.addr()
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(gw.get("/quotes/ACME").await.status, 200);
    }
    // Two 500s from the upstream, then the breaker's own 503: all 5xx to the client.
    for expected in [500, 500, 503] {
        assert_eq!(gw.get("/orders/1").await.status, expected);
    }
    // No route: counted under the fixed label, never under the path.
    assert_eq!(gw.get("/secret-admin-path").await.status, 404);

    let count = |route: &str, class: &str| {
        format!("gateway_requests_total{{route=\"{route}\",status_class=\"{class}\"}}")
    };
    assert_eq!(gw.metric(&count("quotes", "2xx")).await, 3.0);
    assert_eq!(
        gw.metric(&count("quotes", "5xx")).await,
        0.0,
        "every class starts at 0"
    );
    assert_eq!(
        gw.metric(&count("orders", "5xx")).await,
        3.0,
        "the fallback counts"
    );
    assert_eq!(gw.metric(&count("(unmatched)", "4xx")).await, 1.0);
    assert!(
        !gw.scrape().await.contains("secret-admin-path"),
        "a client's path never becomes a label"
    );
    assert_eq!(
        gw.metric("gateway_request_duration_seconds_count{route=\"orders\"}")
            .await,
        3.0
    );
    // The process and the build.
    assert!(gw.metric("process_resident_memory_bytes").await > 1e6);
    assert!(gw.metric("process_open_fds").await > 3.0);
    assert!(gw.metric("process_start_time_seconds").await > 1.6e9);
    assert!(gw.try_metric("process_cpu_seconds_total").await.is_some());
    assert_eq!(
        gw.metric(&format!(
            "gateway_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        ))
        .await,
        1.0
    );
    // When the breaker last moved: its trip, not its creation.
    let view = gw
        .admin("GET", "/api/v1/breakers/orders", &[], b"")
        .await
        .json();
    let since = view["since_unix_ms"].as_f64().unwrap_or_default() / 1000.0;
    let exported = gw
        .metric("gateway_breaker_last_transition_timestamp_seconds{upstream=\"orders\"}")
        .await;
    assert!((exported - since).abs() < 0.01, "{exported} vs {since}");
    let quiet = gw
        .metric("gateway_breaker_last_transition_timestamp_seconds{upstream=\"quotes\"}")
        .await;
    assert!(exported > quiet, "orders moved after quotes was created");
}
