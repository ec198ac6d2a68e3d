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

const CHECK: &str = "    health_check: { path: /health, interval: 100ms, timeout: 100ms, healthy_threshold: 1, unhealthy_threshold: 1";

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

    a.health.store(200, Ordering::SeqCst);
    gw.wait_for_log(&["endpoint healthy", &origin_a.addr().to_string()])
        .await;
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
    tokio::time::sleep(Duration::from_millis(300)).await; // past the open period under test
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
