//! WebAssembly plugins through the real gateway: the example plugins from `plugins/`,
//! built from source for this run, change what breakers record and what clients get;
//! hostile fixtures are cut off at their limits while other traffic flows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_tests::{
    Gateway, Origin, Reply, Request, check_config, dead_address, echo, plugin_entry, plugin_path,
    start_origin,
};

fn with_header(mut reply: Reply, name: &str, value: &str) -> Reply {
    reply.headers.push((name.into(), value.into()));
    reply
}

/// An origin answering by the end of the path: `/flagged` (200 + `x-degraded`),
/// `/missing` (404), `/teapot` (418), `/slow` (200 after 150 ms), anything else 200.
fn by_path() -> gateway_tests::Handler {
    Arc::new(|req: &Request| {
        let path = req.target.as_str();
        if path.ends_with("/flagged") {
            with_header(Reply::text(200, "looks fine"), "x-degraded", "1")
        } else if path.ends_with("/missing") {
            Reply::text(404, "missing")
        } else if path.ends_with("/teapot") {
            Reply::text(418, "teapot")
        } else if path.ends_with("/slow") {
            Reply::text(200, "slow").delayed(Duration::from_millis(150))
        } else {
            Reply::text(200, "ok")
        }
    })
}

#[tokio::test]
async fn status_latency_predicate_decides_what_each_breaker_records() {
    let origin = start_origin(by_path()).await;
    let addr = origin.addr();
    let config = format!(
        "plugins:\n{}upstreams:\n  a:\n    endpoints: [\"{addr}\"]\n    breaker: {{ consecutive_failures: 3, predicate: strict }}\n  b:\n    endpoints: [\"{addr}\"]\n    breaker: {{ consecutive_failures: 2, predicate: strict }}\n  c:\n    endpoints: [\"{addr}\"]\n    breaker:\n      window: {{ kind: count, size: 4 }}\n      minimum_requests: 4\n      slow_call: {{ duration: 10s, rate: 0.5 }}\n      predicate: strict\n  d:\n    endpoints: [\"{addr}\"]\n    breaker: {{ consecutive_failures: 5, predicate: strict }}\nroutes:\n  - {{ match: {{ path_prefix: /a }}, upstream: a }}\n  - {{ match: {{ path_prefix: /b }}, upstream: b }}\n  - {{ match: {{ path_prefix: /c }}, upstream: c }}\n  - {{ match: {{ path_prefix: /d }}, upstream: d }}\n",
        plugin_entry(
            "strict",
            "status-latency-predicate",
            "predicate",
            "config: { failure_statuses: \"500-599,418\", ignore_statuses: \"404\", failure_header: x-degraded, slow_ms: 100 }"
        )
    );
    let gw = Gateway::start(&config).await;
    let mut conn = gw.conn().await;

    // a: 200s that carry the failure header are failures; the built-in rules would
    // never open on a 200.
    for _ in 0..3 {
        assert_eq!(conn.get("/a/flagged").await.expect("request").status, 200);
    }
    let rejected = conn.get("/a/flagged").await.expect("request");
    assert_eq!(rejected.status, 503);
    assert_eq!(rejected.header("x-gateway-fallback"), Some("circuit_open"));

    // b: 404s count for nothing, 418s count as failures.
    for _ in 0..5 {
        assert_eq!(conn.get("/b/missing").await.expect("request").status, 404);
    }
    assert_eq!(
        gw.metric("gateway_upstream_requests_total{outcome=\"ignored\",upstream=\"b\"}")
            .await,
        5.0
    );
    for _ in 0..2 {
        assert_eq!(conn.get("/b/teapot").await.expect("request").status, 418);
    }
    assert_eq!(conn.get("/b/ok").await.expect("request").status, 503);

    // c: the plugin calls 150 ms slow (slow_ms: 100) although the breaker's own
    // threshold is 10 s: four slow calls trip the slow-call rate.
    for _ in 0..4 {
        assert_eq!(conn.get("/c/slow").await.expect("request").status, 200);
    }
    assert_eq!(conn.get("/c/slow").await.expect("request").status, 503);
    assert_eq!(
        gw.metric("gateway_breaker_transitions_total{from=\"closed\",reason=\"slow_call_rate\",to=\"open\",upstream=\"c\"}")
            .await,
        1.0
    );
    assert_eq!(origin.stats().requests(), 3 + 5 + 2 + 4);
    let calls = "gateway_plugin_calls_total{plugin=\"strict\",result=\"ok\"}";
    assert_eq!(gw.metric(calls).await, 14.0);

    // d: healthy traffic is outside what the plugin declared at init (its statuses,
    // header, slow_ms, transport errors): judged by failure_when, the plugin not called.
    for _ in 0..10 {
        assert_eq!(conn.get("/d/ok").await.expect("request").status, 200);
    }
    assert_eq!(
        gw.metric(calls).await,
        14.0,
        "healthy calls never reach the plugin"
    );
    assert_eq!(
        gw.metric("gateway_upstream_requests_total{outcome=\"success\",upstream=\"d\"}")
            .await,
        10.0
    );
    for path in ["/d/teapot", "/d/flagged", "/d/slow"] {
        conn.get(path).await.expect("request");
    }
    assert_eq!(
        gw.metric(calls).await,
        17.0,
        "declared exchanges are asked about"
    );
}

#[tokio::test]
async fn json_body_predicate_fails_error_documents_without_touching_the_stream() {
    let big = format!(
        "{{\"status\":\"ok\",\"padding\":\"{}\"}}",
        "x".repeat(10_000)
    );
    let big_body = big.clone();
    let origin = start_origin(Arc::new(move |req: &Request| match req.target.as_str() {
        "/err" => Reply::text(200, r#"{"error":"database unavailable"}"#),
        "/degraded" => Reply::text(200, r#"{"status":"degraded","prices":[]}"#),
        _ => Reply::text(200, big_body.clone()),
    }))
    .await;
    let config = format!(
        "plugins:\n{}upstreams:\n  api:\n    endpoints: [\"{}\"]\n    breaker: {{ consecutive_failures: 2, predicate: body }}\nroutes:\n  - {{ upstream: api }}\n",
        plugin_entry(
            "body",
            "json-body-predicate",
            "predicate",
            "inspect_body_bytes: 4KiB"
        ),
        origin.addr()
    );
    let gw = Gateway::start(&config).await;
    let mut conn = gw.conn().await;
    for _ in 0..3 {
        let response = conn.get("/ok").await.expect("request");
        assert_eq!(response.status, 200);
        assert_eq!(
            response.text(),
            big,
            "the client gets the whole body, unchanged"
        );
    }
    let response = conn.get("/err").await.expect("request");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), r#"{"error":"database unavailable"}"#);
    assert_eq!(conn.get("/ok").await.expect("request").status, 200);
    assert_eq!(conn.get("/degraded").await.expect("request").status, 200);
    assert_eq!(conn.get("/err").await.expect("request").status, 200);
    let rejected = conn.get("/ok").await.expect("request");
    assert_eq!(
        rejected.status, 503,
        "two error documents in a row opened it"
    );
    assert_eq!(
        gw.metric("gateway_upstream_requests_total{outcome=\"failure\",upstream=\"api\"}")
            .await,
        3.0
    );
    assert_eq!(
        gw.metric("gateway_upstream_requests_total{outcome=\"success\",upstream=\"api\"}")
            .await,
        4.0
    );
}

#[tokio::test]
async fn degraded_fallback_serves_its_document_when_the_upstream_fails_and_while_open() {
    let config = format!(
        "plugins:\n{}upstreams:\n  prices:\n    endpoints: [\"{}\"]\n    breaker: {{ consecutive_failures: 2, open_duration: 30s, fallback: {{ plugin: degraded }} }}\nroutes:\n  - {{ upstream: prices }}\n",
        plugin_entry(
            "degraded",
            "degraded-fallback",
            "fallback",
            "config: { document: { prices: [], note: cached } }"
        ),
        dead_address()
    );
    let gw = Gateway::start(&config).await;
    for _ in 0..2 {
        // After an upstream failure the gateway closes the client connection.
        let response = gw.get("/prices").await;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("connection"), Some("close"));
        assert_eq!(response.header("x-fallback"), Some("degraded"));
        assert_eq!(
            response.header("x-gateway-fallback"),
            Some("upstream_failed")
        );
        assert_eq!(response.json()["reason"], "upstream_failed");
    }
    let started = Instant::now();
    let response = gw.get("/prices").await;
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-gateway-fallback"), Some("circuit_open"));
    let document = response.json();
    assert_eq!(document["prices"], serde_json::json!([]));
    assert_eq!(document["note"], "cached");
    assert_eq!(document["degraded"], true);
    assert_eq!(document["reason"], "circuit_open");
    assert_eq!(document["upstream"], "prices");
    let retry_after_ms = document["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(
        (20_000..=30_000).contains(&retry_after_ms),
        "{retry_after_ms}"
    );
    assert_eq!(
        gw.metric(
            "gateway_fallbacks_total{kind=\"plugin\",reason=\"circuit_open\",upstream=\"prices\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn route_fallback_answers_reads_and_writes_differently_and_reroutes() {
    let market = start_origin(Arc::new(|_: &Request| Reply::text(500, "down"))).await;
    let backup = start_origin(echo("backup")).await;
    let config = format!(
        "plugins:\n{}{}upstreams:\n  market:\n    endpoints: [\"{}\"]\n    breaker: {{ consecutive_failures: 1, fallback: {{ plugin: by-route }} }}\n  backup:\n    endpoints: [\"{}\"]\n  ledger:\n    endpoints: [\"{}\"]\n    breaker: {{ consecutive_failures: 1, fallback: {{ plugin: reads-only }} }}\nroutes:\n  - {{ name: quotes, match: {{ path_prefix: /quotes }}, upstream: market }}\n  - {{ name: orders, match: {{ path_prefix: /orders }}, upstream: market }}\n  - {{ name: ledger, match: {{ path_prefix: /ledger }}, upstream: ledger }}\n",
        plugin_entry(
            "by-route",
            "route-fallback",
            "fallback",
            "config: { routes: { quotes: { quotes: [], stale: true } }, reroute_reads_to: backup }"
        ),
        plugin_entry(
            "reads-only",
            "route-fallback",
            "fallback",
            "config: { routes: { quotes: { quotes: [] } } }"
        ),
        market.addr(),
        backup.addr(),
        dead_address()
    );
    let gw = Gateway::start(&config).await;
    let mut conn = gw.conn().await;
    assert_eq!(conn.get("/quotes").await.expect("request").status, 500);
    let mut conn = gw.conn().await;

    let read = conn.get("/quotes").await.expect("request");
    assert_eq!(read.status, 200);
    assert_eq!(read.header("x-fallback"), Some("route-content"));
    assert_eq!(
        read.json(),
        serde_json::json!({ "quotes": [], "stale": true })
    );

    let write = conn
        .request("POST", "/orders", &[], b"{\"buy\":1}")
        .await
        .expect("request");
    assert_eq!(write.status, 503);
    assert_eq!(write.header("x-fallback"), Some("writes-paused"));
    let retry_after: u64 = write
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry_after >= 1);
    assert_eq!(write.json()["code"], "WRITES_UNAVAILABLE");
    assert_eq!(write.json()["route"], "orders");
    // The unread request body ends that connection.
    let mut conn = gw.conn().await;

    let rerouted = conn.get("/orders/42").await.expect("request");
    assert_eq!(rerouted.status, 200);
    assert_eq!(rerouted.json()["origin"], "backup");
    assert_eq!(rerouted.json()["target"], "/orders/42");
    assert_eq!(rerouted.header("x-gateway-fallback"), Some("circuit_open"));
    assert_eq!(
        rerouted.header("x-gateway-fallback-upstream"),
        Some("backup")
    );
    assert_eq!(market.stats().requests(), 1);

    // Declined: after the upstream failed the JSON error answers, while open the
    // built-in fallback does.
    let failed = gw.get("/ledger").await;
    assert_eq!(failed.status, 502);
    assert_eq!(failed.json()["code"], "UPSTREAM_UNAVAILABLE");
    let open = gw.get("/ledger").await;
    assert_eq!(open.status, 503);
    assert_eq!(open.json()["code"], "CIRCUIT_BREAKER_OPEN");
}

/// One request asking the hostile fixture to misbehave as `mode`: the answer, and how
/// long it took.
async fn provoke(
    conn: &mut gateway_tests::http::Conn,
    mode: &str,
) -> (gateway_tests::http::Response, Duration) {
    let started = Instant::now();
    let response = conn
        .request("GET", "/", &[("x-hostile", mode)], b"")
        .await
        .expect("request");
    (response, started.elapsed())
}

async fn plugin_errors(gw: &Gateway, kind: &str) -> f64 {
    gw.metric(&format!(
        "gateway_plugin_errors_total{{kind=\"{kind}\",plugin=\"hostile\"}}"
    ))
    .await
}

const HOSTILE_LIMITS: &str = "limits: { timeout: 50ms, memory: 8MiB }";
/// `limits.timeout` in HOSTILE_LIMITS.
const HOSTILE_TIMEOUT: Duration = Duration::from_millis(50);

/// How much later than promised a cut-off may be seen by the client: the promise is
/// `timeout` + 1 ms inside the gateway, but this is a debug build on a shared 2-core
/// machine, where the epoch ticker, the proxy thread and the test each wait for a core.
const SCHEDULING_MARGIN: Duration = Duration::from_millis(100);

/// The slowest of five honest calls on `conn`: the part of a measured time that is the
/// round trip (proxy, origin, plugin), not the plugin's misbehaviour.
async fn honest_round_trip(conn: &mut gateway_tests::http::Conn) -> Duration {
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let (response, took) = provoke(conn, "none").await;
        assert_eq!(response.status, 200);
        slowest = slowest.max(took);
    }
    slowest
}

/// Asserts that a call cut off at `timeout` took the deadline plus at most 1 ms (plus
/// the round trip and the stated margin), and not less than the deadline less one 1 ms
/// epoch tick. (Fresh-clone CI runs once saw cuts 0.07 ms and 1.2 ms early: a deadline
/// set while the epoch ticker lagged wall time counted from an epoch already past; the
/// engine now adds the lag, `plugin/engine.rs`.)
fn assert_cut_at_deadline(what: &str, took: Duration, timeout: Duration, round_trip: Duration) {
    assert!(
        took + Duration::from_millis(1) >= timeout,
        "{what}: cut off before its deadline: {took:?}"
    );
    let latest = timeout + Duration::from_millis(1) + round_trip + SCHEDULING_MARGIN;
    assert!(
        took <= latest,
        "{what}: took {took:?}, promised {timeout:?} + 1 ms (+ round trip {round_trip:?} + margin {SCHEDULING_MARGIN:?})"
    );
}

/// A gateway whose one upstream (an origin answering 200) is judged by the hostile
/// predicate; `breaker`: the rest of that upstream's breaker settings.
async fn behind_hostile_predicate(breaker: &str) -> (Origin, Gateway) {
    behind_hostile_predicate_with(HOSTILE_LIMITS, breaker, &[]).await
}

/// Like `behind_hostile_predicate`, with the plugin's `settings` (e.g. its `limits:`)
/// and the gateway's command-line `args`.
async fn behind_hostile_predicate_with(
    settings: &str,
    breaker: &str,
    args: &[&str],
) -> (Origin, Gateway) {
    let origin = start_origin(Arc::new(|_: &Request| Reply::text(200, "fine"))).await;
    let config = format!(
        "plugins:\n{}upstreams:\n  api:\n    endpoints: [\"{}\"]\n    breaker: {{ predicate: hostile{breaker} }}\nroutes:\n  - {{ upstream: api }}\n",
        plugin_entry("hostile", "hostile-predicate", "predicate", settings),
        origin.addr()
    );
    (origin, Gateway::start_with_args(&config, args).await)
}

#[tokio::test]
async fn hostile_predicate_is_cut_off_counted_and_its_policy_applied() {
    let (_origin, gw) =
        behind_hostile_predicate(", consecutive_failures: 3, on_plugin_error: count_as_failure")
            .await;

    // Other traffic on another connection is answered throughout (how long a call
    // may hold it up: a_looping_plugin_call_holds_up_other_traffic_at_most_its_timeout).
    let listen = gw.listen;
    let background = tokio::spawn(async move {
        let mut conn = gateway_tests::http::Conn::connect(listen)
            .await
            .expect("connect");
        let mut statuses = Vec::new();
        for _ in 0..60 {
            statuses.push(conn.get("/").await.expect("background request").status);
        }
        statuses
    });

    let mut conn = gw.conn().await;
    let round_trip = honest_round_trip(&mut conn).await;
    let mut errors = std::collections::HashMap::new();
    for (mode, kind) in [
        ("loop", "timeout"),
        ("memory", "memory"),
        ("panic", "trap"),
        // A wait would stall the proxy's thread: it traps at once instead.
        ("sleep", "trap"),
        // Calls run on the proxy thread's own stack: the wasm stack limit must trap
        // before that stack runs out, or the process would die.
        ("recurse", "trap"),
    ] {
        let (response, took) = provoke(&mut conn, mode).await;
        assert_eq!(
            response.status, 200,
            "{mode}: the client still gets the answer"
        );
        if kind == "timeout" {
            assert_cut_at_deadline(mode, took, HOSTILE_TIMEOUT, round_trip);
        } else {
            // Stopped by what it did, long before the deadline could.
            assert!(
                took < HOSTILE_TIMEOUT + round_trip + SCHEDULING_MARGIN,
                "{mode}: cut off, took {took:?}"
            );
        }
        let expected = errors.entry(kind).or_insert(0.0);
        *expected += 1.0;
        assert_eq!(plugin_errors(&gw, kind).await, *expected, "{mode}");
        // The very next call gets a fresh instance and an honest answer.
        assert_eq!(conn.get("/").await.expect("request").status, 200, "{mode}");
    }
    let statuses = background.await.expect("background task");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    // count_as_failure: each cut-off call was recorded as a failure, each honest
    // answer as a success (which is why the breaker is still closed).
    let failures = "gateway_upstream_requests_total{outcome=\"failure\",upstream=\"api\"}";
    assert_eq!(gw.metric(failures).await, 5.0);
    for _ in 0..3 {
        assert_eq!(provoke(&mut conn, "panic").await.0.status, 200);
    }
    assert_eq!(
        conn.get("/").await.expect("request").status,
        503,
        "three failed plugin calls in a row count as three failures"
    );
}

/// The deadline is wall time: a 2 s call is cut at 2 s + 1 ms, not after 2000 ticks
/// of a thread that oversleeps each of its 1 ms naps (which once made it 2.2-2.6 s).
#[tokio::test]
async fn a_long_plugin_deadline_is_kept_to_the_millisecond() {
    let timeout = Duration::from_secs(2);
    let (_origin, gw) = behind_hostile_predicate_with("limits: { timeout: 2s }", "", &[]).await;
    let mut conn = gw.conn().await;
    let round_trip = honest_round_trip(&mut conn).await;
    let (response, took) = provoke(&mut conn, "loop").await;
    assert_eq!(response.status, 200);
    assert_eq!(plugin_errors(&gw, "timeout").await, 1.0);
    assert_cut_at_deadline("loop", took, timeout, round_trip);
}

/// A gateway with two proxy threads whose upstream is judged by the hostile predicate
/// with a call `timeout`, and 16 connections to it opened (and served once) first: each
/// landed on one of the two threads at random. The origin pools nothing: a pooled
/// upstream connection is watched by a task on a random thread, which would tie a
/// request on one thread to the other.
async fn two_threads_behind_a_looping_predicate(
    timeout: &str,
) -> (Origin, Gateway, Vec<gateway_tests::http::Conn>) {
    let origin = start_origin(Arc::new(|_: &Request| {
        Reply::text(200, "fine").with_header("connection", "close")
    }))
    .await;
    let config = format!(
        "server: {{ threads: 2 }}\nplugins:\n{}upstreams:\n  api:\n    endpoints: [\"{}\"]\n    breaker: {{ predicate: hostile }}\nroutes:\n  - {{ upstream: api }}\n",
        plugin_entry(
            "hostile",
            "hostile-predicate",
            "predicate",
            &format!("limits: {{ timeout: {timeout} }}")
        ),
        origin.addr()
    );
    let gw = Gateway::start(&config).await;
    let mut others = Vec::new();
    for _ in 0..16 {
        let mut conn = gw.conn().await;
        assert_eq!(conn.get("/").await.expect("request").status, 200);
        others.push(conn);
    }
    (origin, gw, others)
}

/// A request sent during a loop: (status, when sent, latency, when answered).
type Answered = (u16, Instant, Duration, Instant);

/// One request on each of `others` while a looping call is known to be in progress
/// (the plugin logged it): how each went; and the looping request's (status, took,
/// when answered).
async fn requests_during_a_loop(
    gw: &Gateway,
    others: Vec<gateway_tests::http::Conn>,
) -> (Vec<Answered>, (u16, Duration, Instant)) {
    let mut looping_conn = gw.conn().await;
    let looping = tokio::spawn(async move {
        let (response, took) = provoke(&mut looping_conn, "loop").await;
        (response.status, took, Instant::now())
    });
    gw.wait_for_log(&["hostile: looping until cut off"]).await;
    let requests: Vec<_> = others
        .into_iter()
        .map(|mut conn| {
            tokio::spawn(async move {
                let sent = Instant::now();
                let status = conn.get("/").await.expect("request").status;
                (status, sent, sent.elapsed(), Instant::now())
            })
        })
        .collect();
    let mut answered = Vec::new();
    for request in requests {
        answered.push(request.await.expect("request task"));
    }
    (answered, looping.await.expect("looping request"))
}

/// A call runs to its end on the proxy thread that asked: the traffic it holds up
/// (see the next test for how much) waits at most the call's `limits.timeout`, and
/// the looping request itself is answered.
#[tokio::test]
async fn a_looping_plugin_call_holds_up_other_traffic_at_most_its_timeout() {
    let timeout = Duration::from_secs(1);
    let (_origin, gw, others) = two_threads_behind_a_looping_predicate("1s").await;
    let (answered, (status, took, loop_ended)) = requests_during_a_loop(&gw, others).await;
    assert_eq!(status, 200, "the looping request is still answered");
    assert_cut_at_deadline("loop", took, timeout, Duration::ZERO);
    assert_eq!(plugin_errors(&gw, "timeout").await, 1.0);
    for (status, sent, latency, _) in &answered {
        assert_eq!(*status, 200);
        assert!(
            *sent + timeout / 2 < loop_ended,
            "sent while the call looped (it ended {:?} later)",
            loop_ended - *sent
        );
        assert!(
            *latency < timeout + SCHEDULING_MARGIN,
            "a request waited {latency:?}, longer than the plugin's timeout"
        );
    }
}

/// PLUGINS.md promised that a call holds only its own thread, "the thread that also
/// serves other connections": connections on the other thread should be answered at
/// once. They are not when the held thread also runs the listener's accept loop:
/// Pingora (work_stealing: false) registers every accepted socket with the accepting
/// thread's reactor and spawns its task on a random thread, so while that thread runs
/// wasm no connection of the listener hears from its socket. Four fresh gateways: the
/// chance that none had its accept loop on the held thread is 1 in 16.
#[tokio::test]
#[ignore = "defect: a plugin call on the thread that runs a listener's accept loop stalls every connection of that listener (Pingora registers accepted sockets with that thread's reactor); needs plugin calls off the proxy threads or work stealing"]
async fn requests_on_other_threads_are_not_held_up_by_a_looping_call() {
    for trial in 0..4 {
        let (_origin, gw, others) = two_threads_behind_a_looping_predicate("500ms").await;
        let (answered, (_, _, loop_ended)) = requests_during_a_loop(&gw, others).await;
        let during = answered
            .iter()
            .filter(|(_, _, _, done)| *done + Duration::from_millis(200) < loop_ended)
            .count();
        assert!(
            during > 0,
            "trial {trial}: none of 16 connections was answered while the call looped: {answered:?}"
        );
    }
}

#[tokio::test]
async fn a_plugin_may_print_but_not_wait() {
    let (_origin, gw) = behind_hostile_predicate("").await;
    let mut conn = gw.conn().await;
    let response = conn
        .request("GET", "/printed", &[("x-hostile", "print")], b"")
        .await
        .expect("request");
    assert_eq!(response.status, 200);
    // Writing is one of the WASI calls that complete at once: it works, and the call
    // succeeds.
    gw.wait_for_log(&["INFO", "to stdout from /printed", "hostile", "stdout"])
        .await;
    gw.wait_for_log(&["WARN", "to stderr from /printed", "hostile", "stderr"])
        .await;
    let ok = "gateway_plugin_calls_total{plugin=\"hostile\",result=\"ok\"}";
    assert_eq!(gw.metric(ok).await, 1.0);

    // A sleep would stall a thread that serves other requests: the call traps at once,
    // saying why, and the request is still answered.
    let (response, _) = provoke(&mut conn, "sleep").await;
    assert_eq!(response.status, 200);
    gw.wait_for_log(&[
        "plugin call failed",
        "tried to wait (block)",
        "may not block",
    ])
    .await;
    assert_eq!(plugin_errors(&gw, "trap").await, 1.0);
}

#[tokio::test]
async fn hostile_fallback_is_cut_off_and_the_built_in_fallback_answers() {
    let config = format!(
        "plugins:\n{}upstreams:\n  api:\n    endpoints: [\"{}\"]\n    breaker: {{ consecutive_failures: 1, open_duration: 60s, fallback: {{ plugin: hostile }} }}\nroutes:\n  - {{ upstream: api }}\n",
        plugin_entry(
            "hostile",
            "hostile-fallback",
            "fallback",
            "config: { huge_bytes: 2097152 }, limits: { timeout: 200ms, memory: 32MiB, max_response: 1MiB }"
        ),
        dead_address()
    );
    let gw = Gateway::start(&config).await;
    assert_eq!(gw.get("/").await.text(), "fallback ok");
    let mut conn = gw.conn().await;
    let mut round_trip = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(conn.get("/").await.expect("request").text(), "fallback ok");
        round_trip = round_trip.max(started.elapsed());
    }
    let timeout = Duration::from_millis(200);
    let mut errors = std::collections::HashMap::new();
    for (mode, kind) in [
        ("headers", "response_too_large"),
        ("loop", "timeout"),
        ("memory", "memory"),
        ("panic", "trap"),
        ("huge", "response_too_large"),
        ("header-bytes", "response_too_large"),
    ] {
        let (response, took) = provoke(&mut conn, mode).await;
        assert_eq!(response.status, 503, "{mode}");
        assert_eq!(response.json()["code"], "CIRCUIT_BREAKER_OPEN", "{mode}");
        assert!(
            response.header("x-fallback").is_none(),
            "{mode}: nothing of the refused answer reaches the client"
        );
        if kind == "timeout" {
            assert_cut_at_deadline(mode, took, timeout, round_trip);
        } else {
            assert!(
                took < timeout + round_trip + SCHEDULING_MARGIN,
                "{mode}: took {took:?}"
            );
        }
        let expected = errors.entry(kind).or_insert(0.0);
        *expected += 1.0;
        assert_eq!(plugin_errors(&gw, kind).await, *expected, "{mode}");
        if mode == "headers" {
            // The first failure is logged (the next ones within the second are only
            // counted).
            gw.wait_for_log(&[
                "plugin call failed",
                "hostile",
                "returned 1001 headers, over the limit of 64",
            ])
            .await;
        }
        let next = conn.get("/").await.expect("request");
        assert_eq!(next.status, 200, "{mode}: the next call works");
        assert_eq!(next.text(), "fallback ok");
    }
}

/// Lines of the gateway's log that carry `fragment`.
fn log_lines(gw: &Gateway, fragment: &str) -> Vec<String> {
    gw.logs()
        .lines()
        .filter(|line| line.contains(fragment))
        .map(str::to_string)
        .collect()
}

const LOG_DROPPED: &str = "gateway_plugin_log_dropped_total{plugin=\"hostile\"}";

#[tokio::test]
async fn a_plugin_flooding_the_log_is_held_to_its_budget() {
    // Default budget: 100 lines and 64 KiB a second; the 1 KiB lines hit the bytes first.
    let (_origin, gw) = behind_hostile_predicate_with("limits: { timeout: 5s }", "", &[]).await;
    let mut conn = gw.conn().await;

    // The text log: a forged line stays inside the plugin's line, escaped.
    assert_eq!(provoke(&mut conn, "forge").await.0.status, 200);
    let line = gw.wait_for_log(&["fake line"]).await;
    assert!(
        line.contains(r"forged\n2030-01-01T00:00:00Z ERROR gateway: fake line\r\u{1b}[31mred\u{2028}sep\u{85}nel\\n"),
        "{line}"
    );
    assert_eq!(log_lines(&gw, "fake line").len(), 1);
    assert!(
        !gw.logs().contains('\u{1b}'),
        "no raw escape reaches the log"
    );

    let started = Instant::now();
    for mode in ["flood", "flood-stdout", "flood"] {
        let (response, _) = provoke(&mut conn, mode).await;
        assert_eq!(response.status, 200, "{mode}");
    }
    let elapsed = started.elapsed();
    let ok = "gateway_plugin_calls_total{plugin=\"hostile\",result=\"ok\"}";
    assert_eq!(gw.metric(ok).await, 4.0, "each call ran to its end");

    // Every line, from host.log or stdout, is either written or counted as dropped;
    // what is written is at most the budget of each second the calls touched.
    let written = log_lines(&gw, "flood-line");
    let dropped = gw.metric(LOG_DROPPED).await;
    assert_eq!(written.len() as f64 + dropped, 3000.0);
    let seconds = elapsed.as_secs() + 2;
    let lines_per_second = (64 * 1024) / 1024;
    assert!(
        written.len() as u64 <= lines_per_second * seconds,
        "{} lines written in {elapsed:?}",
        written.len()
    );
    // The first second's budget (less the forged lines) is used.
    assert!(written.len() >= 60, "{} lines written", written.len());
    assert!(
        written
            .iter()
            .all(|l| l.len() > 1024 && l.len() < 1024 + 200),
        "flood lines are written whole"
    );
    // Said at most once a second, with how many.
    let warning = gw
        .wait_for_log(&["plugin log over budget", "hostile", "dropped="])
        .await;
    assert!(warning.contains("WARN"), "{warning}");
    let warnings = log_lines(&gw, "plugin log over budget").len() as u64;
    assert!((1..=seconds).contains(&warnings), "{warnings} warnings");
}

#[tokio::test]
async fn a_plugin_log_budget_is_configurable() {
    let (_origin, gw) = behind_hostile_predicate_with(
        "limits: { timeout: 5s, log_lines_per_second: 5, log_bytes_per_second: 1MiB }",
        "",
        &[],
    )
    .await;
    let mut conn = gw.conn().await;
    let started = Instant::now();
    // stdout is held to the same budget as host.log.
    assert_eq!(provoke(&mut conn, "flood-stdout").await.0.status, 200);
    let seconds = started.elapsed().as_secs() + 2;
    let written = log_lines(&gw, "flood-line").len() as u64;
    assert!((5..=5 * seconds).contains(&written), "{written} lines");
    assert_eq!(gw.metric(LOG_DROPPED).await, (1000 - written) as f64);
}

#[tokio::test]
async fn plugin_log_lines_cannot_forge_json_log_lines() {
    let (_origin, gw) = behind_hostile_predicate_with("", "", &["--log-format", "json"]).await;
    let mut conn = gw.conn().await;
    assert_eq!(provoke(&mut conn, "forge").await.0.status, 200);
    let parse = |line: &str| -> serde_json::Value {
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    let forged = parse(&gw.wait_for_log(&["fake line"]).await);
    assert_eq!(
        forged["message"],
        r"forged\n2030-01-01T00:00:00Z ERROR gateway: fake line\r\u{1b}[31mred\u{2028}sep\u{85}nel\\n"
    );
    assert_eq!(forged["plugin"], "hostile");
    assert_eq!(forged["stream"], "log");
    assert_eq!(forged["level"], "WARN");
    let stdout = parse(&gw.wait_for_log(&["stdout-forged"]).await);
    assert_eq!(
        stdout["message"],
        r"stdout-forged \u{1b}]0;title\u{7}\u{2029}end"
    );
    assert_eq!(stdout["stream"], "stdout");
    // Each plugin line is one JSON line: nothing spilled into a line of its own.
    assert_eq!(log_lines(&gw, "fake line").len(), 1);
    for line in gw.logs().lines() {
        parse(line);
    }
}

#[test]
fn a_static_fallback_may_not_set_framing_headers() {
    // The same list a fallback plugin's answer is stripped of, refused at load.
    let yaml = "listeners: [{ address: \"127.0.0.1:18999\" }]
upstreams:
  api:
    endpoints: [\"127.0.0.1:9\"]
    breaker:
      fallback:
        status: 503
        headers:
          content-length: \"5\"
          x-reason: maintenance
          Transfer-Encoding: chunked
routes:
  - { upstream: api }
";
    let (code, _, stderr) = check_config("gateway.yaml", yaml);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("gateway.yaml:9:11: upstreams.api.breaker.fallback.headers.content-length: `content-length` frames the response"),
        "{stderr}"
    );
    assert!(
        stderr.contains("gateway.yaml:11:11: upstreams.api.breaker.fallback.headers.Transfer-Encoding: `Transfer-Encoding` frames the response"),
        "{stderr}"
    );
    assert!(!stderr.contains("x-reason"), "{stderr}");
    let (code, _, stderr) = check_config(
        "gateway.yaml",
        &yaml
            .replace("          content-length: \"5\"\n", "")
            .replace("          Transfer-Encoding: chunked\n", ""),
    );
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn plugins_that_cannot_load_are_config_errors_at_their_declaration() {
    let dir = tempfile::tempdir().expect("temp dir");
    let core_module = dir.path().join("core.wasm");
    std::fs::write(&core_module, b"\0asm\x01\0\0\0").expect("write");
    let upstreams = "listeners: [{ address: \"127.0.0.1:18999\" }]\nupstreams:\n  api:\n    endpoints: [\"127.0.0.1:9\"]\nroutes:\n  - { upstream: api }\n";
    let cases = [
        (
            plugin_entry(
                "stubborn",
                "hostile-predicate",
                "predicate",
                "config: { init: fail }",
            ),
            "plugins.stubborn: init returned an error: refusing to start: init=fail",
        ),
        (
            plugin_entry(
                "sleepy",
                "hostile-predicate",
                "predicate",
                "config: { init: hang }, limits: { init_timeout: 200ms }",
            ),
            "plugins.sleepy: init failed: timed out after 200ms",
        ),
        (
            format!(
                "  core: {{ path: \"{}\", kind: predicate }}\n",
                core_module.display()
            ),
            "is a core WebAssembly module, not a component",
        ),
        (
            "  gone: { path: /nonexistent/plugin.wasm, kind: fallback }\n".to_string(),
            "plugins.gone.path: cannot read `/nonexistent/plugin.wasm`",
        ),
        (
            plugin_entry("wrong", "degraded-fallback", "predicate", ""),
            "plugins.wrong: does not fit the `failure-predicate` world",
        ),
        (
            plugin_entry("old", "old-contract", "predicate", ""),
            "plugins.old: was built against edge-gateway:plugin@0.1.0, but this gateway speaks edge-gateway:plugin@0.5.0: rebuild it",
        ),
    ];
    for (entry, expected) in cases {
        let yaml = format!("plugins:\n{entry}{upstreams}");
        let started = Instant::now();
        let (code, _, stderr) = check_config("gateway.yaml", &yaml);
        assert_eq!(code, 2, "{expected}: {stderr}");
        assert!(stderr.contains(expected), "{expected}:\n{stderr}");
        assert!(
            stderr.contains("gateway.yaml:2:"),
            "{expected}: names the declaration's line:column:\n{stderr}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    let wrong_kind = format!(
        "plugins:\n{}listeners: [{{ address: \"127.0.0.1:18999\" }}]\nupstreams:\n  api:\n    endpoints: [\"127.0.0.1:9\"]\n    breaker: {{ predicate: fb }}\nroutes:\n  - {{ upstream: api }}\n",
        plugin_entry("fb", "degraded-fallback", "fallback", "")
    );
    let (code, _, stderr) = check_config("gateway.yaml", &wrong_kind);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("upstreams.api.breaker.predicate: plugin `fb` is a fallback plugin; this needs a predicate plugin"),
        "{stderr}"
    );
    assert!(plugin_path("degraded-fallback").exists());
}

#[tokio::test]
async fn reload_carries_plugins_over_and_refuses_one_that_cannot_start() {
    let origin = start_origin(by_path()).await;
    let other = start_origin(echo("other")).await;
    let body = |plugin: &str| {
        format!(
            "server: {{ watch_config: false }}\nplugins:\n{plugin}upstreams:\n  api:\n    endpoints: [\"{}\"]\n    breaker: {{ consecutive_failures: 2, open_duration: 60s, predicate: rules }}\n  other:\n    endpoints: [\"{}\"]\nroutes:\n  - {{ match: {{ path_prefix: /other }}, upstream: other }}\n  - {{ upstream: api }}\n",
            origin.addr(),
            other.addr()
        )
    };
    let lenient = plugin_entry(
        "rules",
        "status-latency-predicate",
        "predicate",
        "config: { failure_statuses: \"500-599\" }",
    );
    let strict = plugin_entry(
        "rules",
        "status-latency-predicate",
        "predicate",
        "config: { failure_statuses: \"418\" }",
    );
    let gw = Gateway::start(&body(&lenient)).await;
    let mut conn = gw.conn().await;
    for _ in 0..3 {
        assert_eq!(conn.get("/teapot").await.expect("request").status, 418);
    }

    // A changed plugin applies without resetting the upstream that names it.
    std::fs::write(&gw.config_path, gw.config_with(&body(&strict))).expect("write");
    let reply = gw.admin("POST", "/admin/reload", &[], b"").await.json();
    assert_eq!(reply["result"], "applied", "{reply}");
    assert_eq!(reply["fresh_upstreams"], serde_json::json!([]));
    for _ in 0..2 {
        assert_eq!(conn.get("/teapot").await.expect("request").status, 418);
    }
    assert_eq!(conn.get("/teapot").await.expect("request").status, 503);

    // A plugin whose init hangs is refused after its init_timeout, traffic flowing
    // meanwhile, and nothing changes.
    let init_timeout = Duration::from_secs(1);
    let hanging = plugin_entry(
        "rules",
        "hostile-predicate",
        "predicate",
        "config: { init: hang }, limits: { init_timeout: 1s }",
    );
    std::fs::write(&gw.config_path, gw.config_with(&body(&hanging))).expect("write");
    let reload_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listen = gw.listen;
    let done = Arc::clone(&reload_done);
    // Requests one after another until the reload has answered: (latency, answered at).
    let traffic = tokio::spawn(async move {
        let mut conn = gateway_tests::http::Conn::connect(listen)
            .await
            .expect("connect");
        let mut answered = Vec::new();
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let started = Instant::now();
            let status = conn.get("/other").await.expect("request").status;
            assert_eq!(status, 200);
            answered.push((started.elapsed(), Instant::now()));
        }
        answered
    });
    let reload_sent = Instant::now();
    let reply = gw.admin("POST", "/admin/reload", &[], b"").await;
    let reload_answered = Instant::now();
    reload_done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(reply.status, 422);
    let errors = reply.json()["errors"].to_string();
    assert!(
        errors.contains("plugins.rules: init failed: timed out after 1s"),
        "{errors}"
    );
    let answered = traffic.await.expect("traffic");
    // The refusal comes when init_timeout ran out, so init was hanging for the last
    // second before it: requests answered then overlapped the hanging init.
    assert!(reload_answered - reload_sent >= init_timeout);
    let init_hanging = reload_answered - init_timeout + Duration::from_millis(100);
    let during = answered
        .iter()
        .filter(|(_, at)| *at > init_hanging && *at < reload_answered)
        .count();
    assert!(
        during >= 5,
        "{during} requests answered while init hung: {answered:?}"
    );
    let slowest = answered.iter().map(|(latency, _)| *latency).max();
    assert!(
        slowest < Some(Duration::from_millis(250)),
        "traffic waited {slowest:?} during the reload"
    );
    assert_eq!(
        conn.get("/teapot").await.expect("request").status,
        503,
        "the old runtime, breaker state included, keeps serving"
    );
    assert_eq!(
        gw.admin("GET", "/admin/config", &[], b"").await.json()["generation"],
        2
    );
}
