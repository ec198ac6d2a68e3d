//! Request limits at the edge, each against the real gateway process (over HTTP/1.1
//! and HTTP/2): what the client gets, that the upstream never sees the refused request,
//! that other clients are not disturbed, and that every firing is counted by limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gateway_tests::http::Conn;
use gateway_tests::{Gateway, Handler, Reply, Request, start_origin};

/// An origin answering `200` with the body length it received; counts requests.
fn counting() -> (Arc<AtomicU64>, Handler) {
    let hits = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&hits);
    let handler: Handler = Arc::new(move |req: &Request| {
        counter.fetch_add(1, Ordering::SeqCst);
        Reply::json(200, &serde_json::json!({ "received": req.body.len() }))
    });
    (hits, handler)
}

async fn start(limits: &str, routes: &str) -> (Gateway, Arc<AtomicU64>) {
    let (hits, handler) = counting();
    let origin = start_origin(handler).await;
    let body = format!(
        "upstreams:\n  api:\n    endpoints: [\"{}\"]\nroutes:\n{routes}  - {{ upstream: api }}\n",
        origin.addr()
    );
    let listener = format!("    limits: {{ {limits} }}\n");
    let gw = Gateway::start_with_listener(&body, &listener).await;
    std::mem::forget(origin); // lives for the test process
    (gw, hits)
}

/// Calls recorded as failures against the upstream: a client's broken limit must add none.
async fn upstream_failures(gw: &Gateway) -> f64 {
    gw.metric("gateway_upstream_requests_total{outcome=\"failure\",upstream=\"api\"}")
        .await
}

/// Waits (up to 10 s) until `limit` has fired exactly `count` times: a client may see
/// its connection closed a moment before the gateway counts why.
async fn settled_rejections(gw: &Gateway, limit: &str, count: f64) {
    gw.wait_metric(
        &format!(
            "gateway_limit_rejections_total{{limit=\"{limit}\",listener=\"{}\"}}",
            gw.listen
        ),
        count,
    )
    .await;
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let (gw, hits) = start("max_header_bytes: 2KiB, max_headers: 10", "").await;
    let big = "x".repeat(3000);
    let mut conn = Conn::connect(gw.listen).await.expect("connect");
    let response = conn
        .request("GET", "/", &[("x-big", &big)], b"")
        .await
        .expect("response");
    assert_eq!(response.status, 431);
    assert_eq!(response.json()["code"], "REQUEST_HEADERS_TOO_LARGE");
    assert_eq!(response.header("connection"), Some("close"));

    let many: Vec<(String, String)> = (0..20).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let response = Conn::connect(gw.listen)
        .await
        .expect("connect")
        .request("GET", "/", &many, b"")
        .await
        .expect("response");
    assert_eq!(response.status, 431);

    let ok = gateway_tests::http::get(gw.listen, "/")
        .await
        .expect("request");
    assert_eq!(ok.status, 200);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "refused requests reached the upstream"
    );
    settled_rejections(&gw, "max_header_bytes", 1.0).await;
    settled_rejections(&gw, "max_headers", 1.0).await;
    gw.wait_for_log(&["gateway::limits", "max_header_bytes", "3"])
        .await;
}

#[tokio::test]
async fn oversized_bodies_get_413_and_routes_may_allow_more() {
    let (gw, hits) = start(
        "max_body_bytes: 1KiB",
        "  - { match: { path_prefix: /upload }, upstream: api, limits: { max_body_bytes: 8KiB } }\n",
    )
    .await;
    // Declared too large: refused before any of it is read.
    let response = Conn::connect(gw.listen)
        .await
        .expect("connect")
        .request("POST", "/", &[], &[b'a'; 2048])
        .await
        .expect("response");
    assert_eq!(response.status, 413);
    assert_eq!(response.json()["code"], "REQUEST_BODY_TOO_LARGE");

    // Chunked, so only counting can tell.
    let mut conn = Conn::connect(gw.listen).await.expect("connect");
    conn.send_raw(b"POST / HTTP/1.1\r\nhost: gateway.test\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .expect("head");
    let chunk = format!("3e8\r\n{}\r\n", "b".repeat(1000));
    for _ in 0..4 {
        if conn.send_raw(chunk.as_bytes()).await.is_err() {
            break; // the gateway may close before the client is done
        }
    }
    let _ = conn.send_raw(b"0\r\n\r\n").await;
    let response = conn.response().await.expect("response");
    assert_eq!(response.status, 413);
    assert_eq!(response.json()["code"], "REQUEST_BODY_TOO_LARGE");

    // The route's own limit.
    let response = Conn::connect(gw.listen)
        .await
        .expect("connect")
        .request("POST", "/upload", &[], &[b'c'; 4096])
        .await
        .expect("response");
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["received"], 4096);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    settled_rejections(&gw, "max_body_bytes", 2.0).await;
    // The upstream did nothing wrong: nothing was recorded against it as a failure.
    assert_eq!(upstream_failures(&gw).await, 0.0);
}

#[tokio::test]
async fn a_header_sent_a_byte_at_a_time_is_cut_off_but_a_slow_body_is_not() {
    let (gw, hits) = start("header_read_timeout: 1s, body_read_timeout: 1s", "").await;

    // One byte every 100 ms: every read succeeds, only the header deadline stops it.
    let mut slow = Conn::connect(gw.listen).await.expect("connect");
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for byte in b"GET / HTTP/1.1\r\nhost: gateway.test\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n" {
            if slow.send_raw(&[*byte]).await.is_err() {
                return (slow, true);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (slow, false)
    });
    // Meanwhile other clients are served.
    for _ in 0..5 {
        let ok = gateway_tests::http::get(gw.listen, "/")
            .await
            .expect("request");
        assert_eq!(ok.status, 200);
    }
    let (mut slow, write_failed) = trickle.await.expect("trickle");
    assert!(
        write_failed || slow.closed_within(Duration::from_secs(3)).await,
        "slow header not cut off"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "cut off too early: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "cut off too late: {took:?}");
    settled_rejections(&gw, "header_read_timeout", 1.0).await;

    // A body that takes longer than the header timeout, but never pauses for longer
    // than body_read_timeout, goes through; then the next request on the same
    // connection gets a fresh header deadline.
    let mut conn = Conn::connect(gw.listen).await.expect("connect");
    conn.send_raw(b"POST /slow-body HTTP/1.1\r\nhost: gateway.test\r\ncontent-length: 40\r\n\r\n")
        .await
        .expect("head");
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        conn.send_raw(&[b'd'; 10]).await.expect("body part");
    }
    let response = conn.response().await.expect("response");
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["received"], 40);
    conn.send_raw(b"GET / HTTP/1.1\r\n")
        .await
        .expect("next head");
    assert!(
        conn.closed_within(Duration::from_secs(3)).await,
        "second request's header was not timed"
    );
    settled_rejections(&gw, "header_read_timeout", 2.0).await;
    assert_eq!(hits.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn a_stalled_body_gets_408() {
    let (gw, hits) = start("body_read_timeout: 1s", "").await;
    let mut conn = Conn::connect(gw.listen).await.expect("connect");
    conn.send_raw(
        b"POST / HTTP/1.1\r\nhost: gateway.test\r\ncontent-length: 100\r\n\r\n0123456789",
    )
    .await
    .expect("partial request");
    let started = Instant::now();
    let response = conn.response().await.expect("response");
    assert_eq!(response.status, 408);
    assert_eq!(response.json()["code"], "REQUEST_TIMEOUT");
    assert!(started.elapsed() < Duration::from_secs(5));
    settled_rejections(&gw, "body_read_timeout", 1.0).await;
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    assert_eq!(upstream_failures(&gw).await, 0.0);
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_on_accept() {
    let (gw, _hits) = start("max_connections: 3", "").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut conn = Conn::connect(gw.listen).await.expect("connect");
        assert_eq!(conn.get("/").await.expect("request").status, 200);
        open.push(conn);
    }
    let mut fourth = Conn::connect(gw.listen).await.expect("tcp accept");
    let _ = fourth
        .send_raw(b"GET / HTTP/1.1\r\nhost: gateway.test\r\n\r\n")
        .await;
    assert!(
        fourth.closed_within(Duration::from_secs(3)).await,
        "fourth connection served"
    );
    assert!(fourth.response().await.is_err());
    settled_rejections(&gw, "max_connections", 1.0).await;
    // The open ones are undisturbed.
    for conn in &mut open {
        assert_eq!(conn.get("/").await.expect("request").status, 200);
    }
    // Once one closes, a new client gets its place.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut conn = Conn::connect(gw.listen).await.expect("connect");
        if let Ok(response) = conn.get("/").await {
            assert_eq!(response.status, 200);
            break;
        }
        assert!(Instant::now() < deadline, "no place freed after a close");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_keepalive_timeout() {
    let (gw, _hits) = start("keepalive_timeout: 1s", "").await;
    let mut conn = Conn::connect(gw.listen).await.expect("connect");
    assert_eq!(conn.get("/").await.expect("request").status, 200);
    let idle = Instant::now();
    assert!(
        conn.closed_within(Duration::from_secs(4)).await,
        "idle connection kept"
    );
    assert!(
        idle.elapsed() >= Duration::from_millis(900),
        "{:?}",
        idle.elapsed()
    );
}

/// One HTTP/2 request with prior knowledge on a fresh connection: the status the
/// gateway answers with, or None when it reset the stream or closed the connection.
/// `declared`: send `content-length` (else the body streams without one).
async fn h2_request(
    gw: &Gateway,
    headers: &[(&str, String)],
    body: &[u8],
    declared: bool,
) -> Option<u16> {
    let tcp = tokio::net::TcpStream::connect(gw.listen)
        .await
        .expect("connect");
    let (send, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut send = send.ready().await.ok()?;
    let mut request = http::Request::post("http://gateway.test/upload");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    if declared {
        request = request.header("content-length", body.len());
    }
    let (response, mut stream) = send
        .send_request(request.body(()).expect("request"), body.is_empty())
        .ok()?;
    if !body.is_empty() {
        let _ = stream.send_data(bytes::Bytes::copy_from_slice(body), true);
    }
    Some(response.await.ok()?.status().as_u16())
}

#[tokio::test]
async fn request_limits_hold_over_http2() {
    let (hits, handler) = counting();
    let origin = start_origin(handler).await;
    let gw = Gateway::start_with_listener(
        &format!(
            "upstreams:\n  api:\n    endpoints: [\"{}\"]\nroutes:\n  - {{ upstream: api }}\n",
            origin.addr()
        ),
        "    http2: true\n    limits: { max_body_bytes: 1KiB, max_header_bytes: 2KiB, max_headers: 10 }\n",
    )
    .await;
    // Within every limit: served.
    assert_eq!(h2_request(&gw, &[], &[b'x'; 1024], true).await, Some(200));
    let names: Vec<String> = (0..12).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, String)> = names.iter().map(|n| (n.as_str(), "v".into())).collect();
    for (what, headers, body, declared, expected) in [
        ("declared body", vec![], vec![b'x'; 1025], true, 413),
        ("streamed body", vec![], vec![b'x'; 4096], false, 413),
        (
            "header bytes",
            vec![("x-big", "v".repeat(3000))],
            vec![],
            false,
            431,
        ),
        ("header count", many, vec![], false, 431),
    ] {
        let status = h2_request(&gw, &headers, &body, declared).await;
        assert_eq!(status, Some(expected), "{what}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "only the first reached the origin"
    );
    for (limit, count) in [
        ("max_body_bytes", 2.0),
        ("max_header_bytes", 1.0),
        ("max_headers", 1.0),
    ] {
        assert_eq!(
            gw.metric(&format!(
                "gateway_limit_rejections_total{{limit=\"{limit}\",listener=\"{}\"}}",
                gw.listen
            ))
            .await,
            count,
            "{limit}"
        );
    }
}
