//! Active health checks: unhealthy endpoints get no traffic; gated breakers recover
//! only once a health check passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use gateway_tests::{Gateway, Handler, Reply, Request, start_origin};

/// An origin whose `/health` and traffic statuses the test sets, counting traffic only.
struct Switchable {
    health: Arc<AtomicU16>,
    traffic_status: Arc<AtomicU16>,
    traffic: Arc<AtomicU64>,
}

fn switchable(name: &'static str) -> (Switchable, Handler) {
    let s = Switchable {
        health: Arc::new(AtomicU16::new(200)),
        traffic_status: Arc::new(AtomicU16::new(200)),
        traffic: Arc::new(AtomicU64::new(0)),
    };
    let (health, status, traffic) = (
        s.health.clone(),
        s.traffic_status.clone(),
        s.traffic.clone(),
    );
    let handler: Handler = Arc::new(move |req: &Request| {
        if req.path() == "/health" {
            return Reply::text(health.load(Ordering::SeqCst), "health");
        }
        traffic.fetch_add(1, Ordering::SeqCst);
        Reply::text(status.load(Ordering::SeqCst), name)
    });
    (s, handler)
}

/// Checks every 200 ms. A check may take its whole interval, and an endpoint turns
/// unhealthy only after two failed checks in a row, so one check slowed by a busy
/// machine does not fail a healthy endpoint.
const CHECK: &str = "    health_check: { path: /health, interval: 200ms, timeout: 200ms, healthy_threshold: 1, unhealthy_threshold: 2";

#[tokio::test]
async fn an_unhealthy_endpoint_gets_no_traffic_until_it_passes_again() {
    let (a, handler_a) = switchable("a");
    let (_b, handler_b) = switchable("b");
    let origin_a = start_origin(handler_a).await;
    let origin_b = start_origin(handler_b).await;
    let gw = Gateway::start(&format!(
        "upstreams:\n  api:\n    endpoints: [\"{}\", \"{}\"]\n{CHECK} }}\nroutes:\n  - {{ upstream: api }}\n",
        origin_a.addr(),
        origin_b.addr()
    ))
    .await;
    a.health.store(503, Ordering::SeqCst);
    gw.wait_for_log(&["endpoint unhealthy", &origin_a.addr().to_string()])
        .await;
    let before = a.traffic.load(Ordering::SeqCst);
    for _ in 0..20 {
        let response = gw.get("/").await;
        assert_eq!((response.status, response.text()), (200, "b".to_string()));
    }
    assert_eq!(
        a.traffic.load(Ordering::SeqCst),
        before,
        "no traffic to the unhealthy endpoint"
    );

    // The operator's view says the same: one endpoint fails its checks.
    let report = gw.admin("GET", "/health/upstreams", &[], b"").await.json();
    let api = &report[0];
    assert_eq!(api["upstream"], "api", "{report}");
    assert_eq!(api["status"], "degraded", "{report}");
    assert_eq!(api["usable_endpoints"], 1, "{report}");
    let endpoint = |addr: std::net::SocketAddr| {
        api["endpoints"]
            .as_array()
            .and_then(|list| list.iter().find(|e| e["address"] == addr.to_string()))
            .cloned()
            .unwrap_or_else(|| panic!("{addr} not in {report}"))
    };
    assert_eq!(endpoint(origin_a.addr())["healthy"], false, "{report}");
    assert_eq!(endpoint(origin_b.addr())["healthy"], true, "{report}");

    a.health.store(200, Ordering::SeqCst);
    gw.wait_for_log(&["endpoint healthy", &origin_a.addr().to_string()])
        .await;
    let report = gw.admin("GET", "/health/upstreams", &[], b"").await.json();
    assert_eq!(report[0]["status"], "healthy", "{report}");
    assert_eq!(report[0]["usable_endpoints"], 2, "{report}");
    let served_by_a = (0..20).map(|_| gw.get("/")).collect::<Vec<_>>();
    let mut a_count = 0;
    for request in served_by_a {
        if request.await.text() == "a" {
            a_count += 1;
        }
    }
    assert_eq!(a_count, 10, "round robin again across both endpoints");
}

#[tokio::test]
async fn a_gated_breaker_stays_open_until_a_health_check_passes() {
    let (s, handler) = switchable("only");
    s.traffic_status.store(500, Ordering::SeqCst);
    s.health.store(503, Ordering::SeqCst);
    let origin = start_origin(handler).await;
    let gw = Gateway::start(&format!(
        "upstreams:\n  api:\n    endpoints: [\"{}\"]\n{CHECK}, gate_breaker: true }}\n    breaker: {{ consecutive_failures: 1, open_duration: 200ms }}\nroutes:\n  - {{ upstream: api }}\n",
        origin.addr()
    ))
    .await;
    gw.wait_for_log(&["endpoint unhealthy"]).await;
    // A single endpoint that fails checks still gets traffic (nothing better to do)...
    assert_eq!(gw.get("/").await.status, 500);
    // ...which opens the breaker.
    assert_eq!(gw.get("/").await.status, 503);
    gw.wait_open_period_over("api").await;
    let traffic = s.traffic.load(Ordering::SeqCst);
    let gated = gw.get("/").await;
    assert_eq!(gated.status, 503, "no probe while health checks fail");
    assert_eq!(s.traffic.load(Ordering::SeqCst), traffic);

    s.traffic_status.store(200, Ordering::SeqCst);
    s.health.store(200, Ordering::SeqCst);
    gw.wait_for_log(&["endpoint healthy"]).await;
    for _ in 0..5 {
        assert_eq!(gw.get("/").await.status, 200);
    }
    gw.wait_for_log(&["probes_succeeded"]).await;
}

/// An origin whose `/health` answers 200 with `headers` extra header fields, counting
/// the checks it answered; other requests get `headers` as text.
fn with_many_headers(headers: usize) -> (Arc<AtomicU64>, Handler) {
    let checks = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&checks);
    let handler: Handler = Arc::new(move |req: &Request| {
        if req.path() != "/health" {
            return Reply::text(200, headers.to_string());
        }
        counted.fetch_add(1, Ordering::SeqCst);
        (0..headers).fold(Reply::text(200, "health"), |reply, i| {
            reply.with_header(&format!("x-header-{i}"), "some value")
        })
    });
    (checks, handler)
}

#[tokio::test]
async fn health_checks_read_responses_as_the_proxy_does() {
    // 40 header fields (32 was once the limit) are a healthy answer; more than the
    // proxy itself accepts (256) are not.
    let (checks_many, many) = with_many_headers(40);
    let (_, too_many) = with_many_headers(300);
    let many = start_origin(many).await;
    let too_many = start_origin(too_many).await;
    let gw = Gateway::start(&format!(
        "upstreams:\n  api:\n    endpoints: [\"{}\", \"{}\"]\n{CHECK} }}\nroutes:\n  - {{ upstream: api }}\n",
        many.addr(),
        too_many.addr()
    ))
    .await;
    gw.wait_for_log(&["endpoint unhealthy", &too_many.addr().to_string()])
        .await;
    // Three more checks of the other endpoint (unhealthy_threshold is 2).
    let seen = checks_many.load(Ordering::SeqCst);
    gateway_tests::wait_until(
        "three more health checks",
        Duration::from_secs(10),
        async || checks_many.load(Ordering::SeqCst) >= seen + 3,
    )
    .await;
    let healthy = |addr: std::net::SocketAddr| {
        format!("gateway_endpoint_healthy{{endpoint=\"{addr}\",upstream=\"api\"}}")
    };
    assert_eq!(gw.metric(&healthy(many.addr())).await, 1.0);
    assert_eq!(gw.metric(&healthy(too_many.addr())).await, 0.0);
    assert!(
        !gw.logs()
            .lines()
            .any(|l| l.contains("endpoint unhealthy") && l.contains(&many.addr().to_string())),
        "{}",
        gw.logs()
    );
    // Traffic goes to the endpoint that passes.
    for _ in 0..4 {
        assert_eq!(gw.get("/").await.text(), "40");
    }
}
