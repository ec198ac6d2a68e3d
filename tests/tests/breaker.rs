//! Breakers on the request path, against real upstream servers failing in scripted
//! ways: when they open, what clients get while open, how they recover.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway_tests::{
    Gateway, Reply, Request, Scripted, WireFault, dead_address, echo, one_upstream, start_origin,
};
use tokio::sync::mpsc;

#[tokio::test]
async fn opens_after_three_consecutive_5xx_and_answers_fast_without_calling_upstream() {
    let (script, handler) = Scripted::new(200);
    script.set_status(500);
    let origin = start_origin(handler).await;
    let gw = Gateway::start(&one_upstream(
        &[origin.addr()],
        "    breaker: { consecutive_failures: 3, open_duration: 30s }\n",
    ))
    .await;
    let mut conn = gw.conn().await;
    for _ in 0..3 {
        assert_eq!(
            conn.get("/").await.expect("request").status,
            500,
            "5xx passes through while closed"
        );
    }
    assert_eq!(origin.stats().requests(), 3);
    for _ in 0..20 {
        let started = Instant::now();
        let response = conn.get("/").await.expect("request");
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "fallback took {:?}",
            started.elapsed()
        );
        assert_eq!(response.status, 503);
        assert_eq!(response.header("x-gateway-fallback"), Some("circuit_open"));
        let retry_after: u64 = response
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .expect("Retry-After");
        assert!(
            (29..=30).contains(&retry_after),
            "Retry-After {retry_after}"
        );
        assert_eq!(response.json_str("/code"), "CIRCUIT_BREAKER_OPEN");
        assert_eq!(response.json_str("/upstream"), "api");
        assert_eq!(response.json_str("/state"), "open");
        let ms = response
            .json()
            .pointer("/retry_after_ms")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        assert!(ms > 28_000 && ms <= 30_000, "retry_after_ms {ms}");
    }
    assert_eq!(
        origin.stats().requests(),
        3,
        "rejected requests never reach the upstream"
    );
    let logs = gw.logs();
    assert!(
        logs.contains("breaker transition") && logs.contains("consecutive_failures"),
        "{logs}"
    );
}

#[tokio::test]
async fn a_dead_upstream_trips_the_breaker_and_clients_stop_waiting() {
    let gw = Gateway::start(&one_upstream(&[dead_address()], "    timeouts: { connect: 300ms }\n    breaker: { consecutive_failures: 2, open_duration: 30s }\n"))
    .await;
    assert_eq!(gw.get("/").await.status, 502);
    assert_eq!(gw.get("/").await.status, 502);
    let response = gw.get("/").await;
    assert_eq!(response.status, 503);
    assert_eq!(response.json_str("/code"), "CIRCUIT_BREAKER_OPEN");
}

#[tokio::test]
async fn a_slow_upstream_trips_on_timeouts_and_the_fallback_is_far_faster_than_the_timeout() {
    let (script, handler) = Scripted::new(200);
    script.set_delay(3_000);
    let origin = start_origin(handler).await;
    let gw = Gateway::start(&one_upstream(&[origin.addr()], "    timeouts: { read: 1s }\n    breaker: { consecutive_failures: 2, open_duration: 30s }\n"))
    .await;
    for _ in 0..2 {
        assert_eq!(gw.get("/").await.status, 504);
    }
    let started = Instant::now();
    let response = gw.get("/").await;
    assert_eq!(response.status, 503);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn slow_successes_trip_the_slow_call_rate() {
    let (script, handler) = Scripted::new(200);
    script.set_delay(300);
    let origin = start_origin(handler).await;
    let gw = Gateway::start(&one_upstream(&[origin.addr()], "    breaker:\n      window: { kind: count, size: 10 }\n      minimum_requests: 4\n      slow_call: { duration: 200ms, rate: 0.75 }\n"))
    .await;
    let mut conn = gw.conn().await;
    for _ in 0..4 {
        assert_eq!(conn.get("/").await.expect("request").status, 200);
    }
    assert_eq!(conn.get("/").await.expect("request").status, 503);
    assert!(gw.logs().contains("slow_call_rate"));
}

#[tokio::test]
async fn resets_in_the_middle_of_the_body_count_as_failures() {
    let handler: gateway_tests::Handler = Arc::new(|_: &Request| {
        Reply::text(200, "x".repeat(64 * 1024)).with_fault(WireFault::ResetMidBody)
    });
    let origin = start_origin(handler).await;
    let gw = Gateway::start(&one_upstream(
        &[origin.addr()],
        "    breaker: { consecutive_failures: 2, open_duration: 30s }\n",
    ))
    .await;
    for _ in 0..2 {
        // The head was already sent: the client sees a cut connection, not a clean answer.
        let outcome = gw.conn().await.get("/").await;
        assert!(
            outcome.is_err() || outcome.as_ref().is_ok_and(|r| r.body.len() < 64 * 1024),
            "{:?}",
            outcome.map(|r| r.status)
        );
    }
    let response = gw.get("/").await;
    assert_eq!(response.status, 503);
    assert_eq!(origin.stats().requests(), 2);
}

#[tokio::test]
async fn half_open_lets_exactly_the_permitted_probes_through_under_load_then_closes() {
    let (script, handler) = Scripted::new(200);
    script.set_status(500);
    let origin = start_origin(handler).await;
    let gw = Gateway::start(&one_upstream(&[origin.addr()], "    breaker:\n      consecutive_failures: 1\n      open_duration: 500ms\n      half_open: { permitted_requests: 2, success_threshold: 2 }\n"))
    .await;
    assert_eq!(gw.get("/").await.status, 500);
    assert_eq!(gw.get("/").await.status, 503);
    // Recovered, but slow enough that all concurrent requests overlap the probes.
    script.set_status(200);
    script.set_delay(1_000);
    let before = origin.stats().requests();
    // The breaker's open period is what is under test: let it run out.
    gw.wait_open_period_over("api").await;

    let mut tasks = Vec::new();
    for _ in 0..20 {
        let addr = gw.listen;
        tasks.push(tokio::spawn(async move {
            gateway_tests::http::get(addr, "/").await
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("task").expect("response").status);
    }
    let passed = statuses.iter().filter(|s| **s == 200).count();
    let rejected = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!((passed, rejected), (2, 18), "{statuses:?}");
    assert_eq!(
        origin.stats().requests() - before,
        2,
        "only the probes reached the upstream"
    );

    // Two successful probes closed it: everything flows again.
    script.set_delay(0);
    let mut conn = gw.conn().await;
    for _ in 0..10 {
        assert_eq!(conn.get("/").await.expect("request").status, 200);
    }

    // And a failed probe reopens it.
    script.set_status(500);
    assert_eq!(conn.get("/").await.expect("request").status, 500);
    assert_eq!(conn.get("/").await.expect("request").status, 503);
    gw.wait_open_period_over("api").await;
    assert_eq!(conn.get("/").await.expect("probe").status, 500);
    let after_probe = conn.get("/").await.expect("request");
    assert_eq!(after_probe.status, 503);
    let logs = gw.logs();
    for reason in ["open_period_elapsed", "probes_succeeded", "probe_failed"] {
        assert!(logs.contains(reason), "no {reason} transition in logs");
    }
}

#[tokio::test]
async fn outlier_ejection_moves_traffic_off_a_dead_endpoint() {
    let healthy = start_origin(echo("healthy")).await;
    let gw = Gateway::start(&one_upstream(&[healthy.addr(), dead_address()], "    timeouts: { connect: 300ms }\n    retries: { attempts: 0 }\n    breaker: { failure_rate: 0.9, minimum_requests: 100 }\n    outlier_detection: { consecutive_failures: 2, ejection: 30s }\n"))
    .await;
    // Round robin: until the dead endpoint has failed twice, every other request fails.
    let mut failures = 0;
    for _ in 0..4 {
        if gw.get("/").await.status != 200 {
            failures += 1;
        }
    }
    assert_eq!(failures, 2);
    for _ in 0..40 {
        assert_eq!(
            gw.get("/").await.status,
            200,
            "after ejection no client sees an error"
        );
    }
    assert!(gw.logs().contains("endpoint ejected"));
}

#[tokio::test]
async fn the_bulkhead_answers_the_extra_request_at_once() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let seen_tx = Mutex::new(seen_tx);
    let origin = start_origin(Arc::new(move |_: &Request| {
        if let Ok(tx) = seen_tx.lock() {
            let _ = tx.send(());
        }
        Reply::text(200, "slow").delayed(Duration::from_millis(1500))
    }))
    .await;
    let gw = Gateway::start(&one_upstream(
        &[origin.addr()],
        "    max_concurrent_requests: 2\n",
    ))
    .await;
    let mut slow = Vec::new();
    for _ in 0..2 {
        let addr = gw.listen;
        slow.push(tokio::spawn(async move {
            gateway_tests::http::get(addr, "/").await
        }));
    }
    seen.recv().await.expect("first in flight");
    seen.recv().await.expect("second in flight");
    let started = Instant::now();
    let response = gw.get("/").await;
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(response.status, 503);
    assert_eq!(response.json_str("/code"), "UPSTREAM_OVERLOADED");
    assert_eq!(response.header("x-gateway-fallback"), Some("overloaded"));
    for task in slow {
        assert_eq!(task.await.expect("task").expect("response").status, 200);
    }
    assert_eq!(origin.stats().requests(), 2);
}

#[tokio::test]
async fn a_cancelled_client_request_is_not_an_upstream_failure() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let seen_tx = Mutex::new(seen_tx);
    let (script, _) = Scripted::new(200);
    let delay = Arc::clone(&script.delay_ms);
    delay.store(5_000, Ordering::SeqCst);
    let origin = start_origin(Arc::new(move |_: &Request| {
        if let Ok(tx) = seen_tx.lock() {
            let _ = tx.send(());
        }
        Reply::text(200, "ok").delayed(Duration::from_millis(delay.load(Ordering::SeqCst)))
    }))
    .await;
    let gw = Gateway::start(&one_upstream(
        &[origin.addr()],
        "    breaker: { consecutive_failures: 1, open_duration: 30s }\n",
    ))
    .await;
    let mut conn = gw.conn().await;
    let pending = tokio::spawn(async move {
        let _ = conn
            .request("GET", "/", &[("x-request-id", "cancelled-by-client")], b"")
            .await;
    });
    seen.recv().await.expect("request reached the origin");
    pending.abort(); // drops the client connection mid-request
    // Wait until the gateway has finished with the request (its access-log line).
    gw.wait_for_log(&["gateway::access", "cancelled-by-client"])
        .await;
    script.set_delay(0);
    assert_eq!(
        gw.get("/").await.status,
        200,
        "a single failure would have opened the breaker"
    );
}

#[tokio::test]
async fn static_fallback_and_fallback_upstream() {
    let backup = start_origin(echo("backup")).await;
    let gw = Gateway::start(&format!(
        r#"upstreams:
  primary:
    endpoints: ["{dead}"]
    timeouts: {{ connect: 300ms }}
    breaker:
      consecutive_failures: 1
      open_duration: 30s
      fallback: {{ upstream: backup }}
  backup:
    endpoints: ["{backup}"]
  quotes:
    endpoints: ["{dead}"]
    timeouts: {{ connect: 300ms }}
    breaker:
      consecutive_failures: 1
      open_duration: 30s
      fallback:
        status: 200
        headers: {{ x-degraded: "true" }}
        json: {{ quotes: [], stale: true }}
routes:
  - {{ match: {{ path_prefix: /quotes }}, upstream: quotes }}
  - {{ upstream: primary }}
"#,
        dead = dead_address(),
        backup = backup.addr()
    ))
    .await;
    // The primary's failure trips it; from then on the backup serves.
    assert_eq!(gw.get("/orders").await.status, 502);
    let response = gw.get("/orders").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json_str("/origin"), "backup");
    assert_eq!(response.header("x-gateway-fallback"), Some("circuit_open"));
    assert_eq!(
        response.header("x-gateway-fallback-upstream"),
        Some("backup")
    );

    // A static fallback also answers the failure itself, before the breaker opened.
    for _ in 0..2 {
        let response = gw.get("/quotes/ACME").await;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-degraded"), Some("true"));
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(
            response.json(),
            serde_json::json!({ "quotes": [], "stale": true })
        );
        assert!(response.header("x-gateway-fallback").is_some());
    }
}

#[tokio::test]
async fn connect_failures_are_retried_on_another_endpoint_for_idempotent_requests_only() {
    let healthy = start_origin(echo("healthy")).await;
    let gw = Gateway::start(&one_upstream(&[healthy.addr(), dead_address()], "    timeouts: { connect: 300ms }\n    breaker: { failure_rate: 0.9, minimum_requests: 100 }\n"))
    .await;
    for _ in 0..10 {
        assert_eq!(
            gw.get("/").await.status,
            200,
            "GET is retried on the healthy endpoint"
        );
    }
    let mut failed_posts = 0;
    for _ in 0..10 {
        let response = gw
            .conn()
            .await
            .request("POST", "/orders", &[], b"{}")
            .await
            .expect("response");
        if response.status != 200 {
            failed_posts += 1;
        }
    }
    assert_eq!(
        failed_posts, 5,
        "a POST that failed to connect is not retried"
    );
    assert_eq!(healthy.stats().requests(), 15);
}

#[tokio::test]
async fn the_retry_budget_caps_retries() {
    let healthy = start_origin(echo("healthy")).await;
    let gw = Gateway::start(&one_upstream(&[healthy.addr(), dead_address()], "    timeouts: { connect: 300ms }\n    retries: { attempts: 1, budget: { ratio: 0.0, min_per_second: 1 } }\n    breaker: { failure_rate: 0.9, minimum_requests: 1000 }\n"))
    .await;
    let mut failures = 0;
    for _ in 0..40 {
        if gw.get("/").await.status != 200 {
            failures += 1;
        }
    }
    // 20 requests meet the dead endpoint; the floor of 1 retry a second over the
    // 10-second window lets 10 of them retry.
    assert_eq!(failures, 10);
}

#[tokio::test]
async fn half_open_probes_are_never_retried() {
    let gw = Gateway::start(&one_upstream(&[dead_address(), dead_address()], "    timeouts: { connect: 300ms }\n    retries: { attempts: 3 }\n    breaker: { consecutive_failures: 3, open_duration: 300ms }\n"))
    .await;
    let first = gw
        .conn()
        .await
        .request("GET", "/", &[("x-request-id", "closed-call")], b"")
        .await
        .expect("response");
    assert_eq!(first.status, 502);
    assert_eq!(gw.get("/").await.status, 503);
    gw.wait_open_period_over("api").await;
    let probe = gw
        .conn()
        .await
        .request("GET", "/", &[("x-request-id", "probe-call")], b"")
        .await
        .expect("response");
    assert_eq!(probe.status, 502);
    // While closed, the failures were retried until the third one opened the breaker;
    // the probe was not retried at all.
    let closed = gw.wait_for_log(&["gateway::access", "closed-call"]).await;
    assert!(closed.contains("retries=2"), "{closed}");
    let probe = gw.wait_for_log(&["gateway::access", "probe-call"]).await;
    assert!(probe.contains("retries=0"), "{probe}");
}
