//! Slow and idle clients against the real gateway process: every way a client can hold
//! a connection, a request or a breaker's probe without moving is cut at its deadline,
//! counted by limit, and does not disturb anyone else. Raw sockets (TCP, TLS, HTTP/2
//! frames) play the clients; each test awaits the close instead of sleeping past it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_tests::h2frame::{END_STREAM, HEADERS, PING, frame, hello};
use gateway_tests::http::Conn;
use gateway_tests::tls::{Ca, Client, h2_get, negotiated_alpn};
use gateway_tests::{Gateway, Reply, Request, Scripted, echo, one_upstream, start_origin};
use tokio::net::{TcpSocket, TcpStream};

async fn rejections(gw: &Gateway, limit: &str) -> f64 {
    gw.metric(&format!(
        "gateway_limit_rejections_total{{limit=\"{limit}\",listener=\"{}\"}}",
        gw.listen
    ))
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

/// Waits (up to 10 s) until `limit` has fired `count` times on `gw`'s listener: the
/// log line may be throttled, the counter never is.
async fn wait_for_rejections(gw: &Gateway, limit: &str, count: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while rejections(gw, limit).await < count {
        assert!(
            Instant::now() < deadline,
            "{limit} fired {} times, expected {count}",
            rejections(gw, limit).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn upstream_failures(gw: &Gateway, upstream: &str) -> f64 {
    gw.metric(&format!(
        "gateway_upstream_requests_total{{outcome=\"failure\",upstream=\"{upstream}\"}}"
    ))
    .await
}

/// Waits for `conn` to be closed by the gateway: no sooner than `at_least` after
/// `since` (the deadline did it, not something earlier), within `at_most` of it.
async fn cut_between(conn: &mut Conn, since: Instant, at_least: Duration, at_most: Duration) {
    let left = at_most.saturating_sub(since.elapsed());
    assert!(
        conn.closed_within(left).await,
        "still open {:?} after the start",
        since.elapsed()
    );
    let took = since.elapsed();
    assert!(took >= at_least, "cut after {took:?}, before {at_least:?}");
}

/// A TLS listener for `api.test`, with `limits` (a YAML flow mapping's entries).
fn tls_gateway_listener(dir: &std::path::Path, limits: &str) -> String {
    let ca = Ca::new("deadline test ca");
    let (cert, key) = ca.leaf(&["api.test"]).write(dir, "api");
    format!(
        "    tls:\n      certificates:\n        - {{ cert: \"{}\", key: \"{}\" }}\n    limits: {{ {limits} }}\n",
        cert.display(),
        key.display()
    )
}

#[tokio::test]
async fn a_tls_handshake_is_cut_at_handshake_timeout() {
    let dir = tempfile::tempdir().expect("dir");
    let origin = start_origin(echo("origin")).await;
    let listener = tls_gateway_listener(
        dir.path(),
        "handshake_timeout: 1s, header_read_timeout: 10s",
    );
    let gw = Gateway::start_with_listener(&one_upstream(&[origin.addr()], ""), &listener).await;

    let started = Instant::now();
    // One connects and says nothing; one sends the first bytes of a ClientHello record
    // (announcing 512 bytes) and stops.
    let mut silent = Conn::connect(gw.listen).await.expect("connect");
    let mut half_hello = Conn::connect(gw.listen).await.expect("connect");
    half_hello
        .send_raw(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("partial hello");
    // Meanwhile a real client is served.
    let tls = Client::new()
        .connect(gw.listen, Some("api.test"))
        .await
        .expect("handshake");
    let response = Conn::over(tls).get("/").await.expect("request over TLS");
    assert_eq!(response.status, 200);
    // The gateway's own handshake keeps the connection's details for the proxy.
    assert_eq!(response.json()["headers"]["x-forwarded-proto"], "https");
    assert_eq!(response.json()["headers"]["x-forwarded-for"], "127.0.0.1");

    let (at_least, at_most) = (Duration::from_millis(900), Duration::from_secs(4));
    cut_between(&mut silent, started, at_least, at_most).await;
    cut_between(&mut half_hello, started, at_least, at_most).await;
    settled_rejections(&gw, "handshake_timeout", 2.0).await;
    assert_eq!(rejections(&gw, "header_read_timeout").await, 0.0);
    gw.wait_for_log(&["gateway::limits", "handshake_timeout"])
        .await;
}

#[tokio::test]
async fn h2_over_tls_must_send_its_first_request_within_header_read_timeout() {
    let dir = tempfile::tempdir().expect("dir");
    let origin = start_origin(echo("origin")).await;
    let listener = tls_gateway_listener(dir.path(), "header_read_timeout: 1s");
    let gw = Gateway::start_with_listener(&one_upstream(&[origin.addr()], ""), &listener).await;
    let h2_client = Client::new().alpn(&[b"h2"]);
    let connect = || h2_client.connect(gw.listen, Some("api.test"));

    let started = Instant::now();
    // Handshake done, h2 negotiated, then not even the preface.
    let no_preface = connect().await.expect("handshake");
    assert_eq!(negotiated_alpn(&no_preface).as_deref(), Some(&b"h2"[..]));
    let mut no_preface = Conn::over(no_preface);
    // The preface and SETTINGS, then nothing.
    let mut hello_only = Conn::over(connect().await.expect("handshake"));
    hello_only.send_raw(&hello()).await.expect("hello");
    // The preface, then a PING every 100 ms: busy, answered, and never a request.
    let mut pinging = Conn::over(connect().await.expect("handshake"));
    pinging.send_raw(&hello()).await.expect("hello");
    let pinger = tokio::spawn(async move {
        while pinging.send_raw(&frame(PING, 0, 0, &[7; 8])).await.is_ok() {
            if pinging.closed_within(Duration::from_millis(100)).await {
                return (pinging, Instant::now());
            }
        }
        (pinging, Instant::now())
    });
    // A well-behaved h2 client is served meanwhile.
    let (status, _) = h2_get(connect().await.expect("handshake"), "api.test", "/").await;
    assert_eq!(status, 200);

    let (at_least, at_most) = (Duration::from_millis(900), Duration::from_secs(4));
    cut_between(&mut no_preface, started, at_least, at_most).await;
    cut_between(&mut hello_only, started, at_least, at_most).await;
    let (_, pinger_cut) = tokio::time::timeout(at_most, pinger)
        .await
        .expect("pinging client cut")
        .expect("pinger");
    let took = pinger_cut - started;
    assert!(
        took >= at_least && took < at_most,
        "pinger cut after {took:?}"
    );
    settled_rejections(&gw, "header_read_timeout", 3.0).await;
    gw.wait_for_log(&["gateway::limits", "HTTP/2 request header block"])
        .await;
}

#[tokio::test]
async fn h2c_detection_answers_short_requests_and_times_partial_ones() {
    let origin = start_origin(echo("origin")).await;
    let gw = Gateway::start_with_listener(
        &one_upstream(&[origin.addr()], ""),
        "    http2: true\n    limits: { header_read_timeout: 1s }\n",
    )
    .await;

    // A complete HTTP/1.0 request shorter than the h2 preface gets its answer at once.
    let started = Instant::now();
    let mut short = Conn::connect(gw.listen).await.expect("connect");
    short
        .send_raw(b"GET / HTTP/1.0\r\n\r\n")
        .await
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(5), short.response())
        .await
        .expect("answered, not left waiting for 24 bytes")
        .expect("response");
    assert_eq!(response.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "answered after {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    // `GET` and nothing more.
    let mut partial = Conn::connect(gw.listen).await.expect("connect");
    partial.send_raw(b"GET").await.expect("partial");
    // The h2c preface and SETTINGS, then nothing.
    let mut hello_only = Conn::connect(gw.listen).await.expect("connect");
    hello_only.send_raw(&hello()).await.expect("hello");
    // A HEADERS frame without END_HEADERS: the CONTINUATION never comes.
    let mut open_block = Conn::connect(gw.listen).await.expect("connect");
    let mut bytes = hello();
    bytes.extend(frame(HEADERS, END_STREAM, 1, &[0x82, 0x86, 0x84]));
    open_block
        .send_raw(&bytes)
        .await
        .expect("open header block");
    // h2c with prior knowledge still works.
    let tcp = TcpStream::connect(gw.listen).await.expect("connect");
    let (status, _) = h2_get(tcp, "gateway.test", "/over-h2c").await;
    assert_eq!(status, 200);

    let (at_least, at_most) = (Duration::from_millis(900), Duration::from_secs(4));
    cut_between(&mut partial, started, at_least, at_most).await;
    cut_between(&mut hello_only, started, at_least, at_most).await;
    cut_between(&mut open_block, started, at_least, at_most).await;
    settled_rejections(&gw, "header_read_timeout", 3.0).await;
}

/// An h2c connection to `gw` and a POST to `path` whose body stops after `first`.
async fn h2_stalled_upload(
    gw: &Gateway,
    path: &str,
    first: &'static [u8],
) -> (
    h2::client::SendRequest<Bytes>,
    h2::client::ResponseFuture,
    h2::SendStream<Bytes>,
) {
    let tcp = TcpStream::connect(gw.listen).await.expect("connect");
    let (send, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut send = send.ready().await.expect("h2 ready");
    let request = http::Request::post(format!("http://gateway.test{path}"))
        .body(())
        .expect("request");
    let (response, mut body) = send.send_request(request, false).expect("send");
    body.send_data(Bytes::from_static(first), false)
        .expect("first body bytes");
    (send, response, body)
}

#[tokio::test]
async fn a_stalled_h2_request_body_is_reset_at_body_read_timeout() {
    let origin = start_origin(echo("origin")).await;
    let gw = Gateway::start_with_listener(
        &one_upstream(&[origin.addr()], ""),
        "    http2: true\n    limits: { body_read_timeout: 1s }\n",
    )
    .await;
    let started = Instant::now();
    let (send, response, _body) = h2_stalled_upload(&gw, "/upload", b"first part").await;
    let answer = tokio::time::timeout(Duration::from_secs(4), response)
        .await
        .expect("the stalled stream was ended");
    let took = started.elapsed();
    let error = answer.expect_err("a stalled stream gets no response");
    assert!(error.is_reset(), "{error:?}");
    assert!(took >= Duration::from_millis(900), "reset after {took:?}");

    // The connection and its other streams are fine.
    let mut send = send.ready().await.expect("connection still usable");
    let request = http::Request::get("http://gateway.test/after")
        .body(())
        .expect("request");
    let (response, _) = send.send_request(request, true).expect("send");
    assert_eq!(response.await.expect("response").status(), 200);

    settled_rejections(&gw, "body_read_timeout", 1.0).await;
    assert_eq!(upstream_failures(&gw, "api").await, 0.0);
    gw.wait_for_log(&["gateway::limits", "HTTP/2 stream reset"])
        .await;
}

/// An origin answering every request with `size` bytes.
async fn big_origin(size: usize) -> gateway_tests::Origin {
    let body = Arc::new("x".repeat(size));
    start_origin(Arc::new(move |_: &Request| Reply::text(200, body.as_str()))).await
}

/// A TCP connection with a small receive buffer, so a client that stops reading stops
/// the gateway's writes soon.
async fn small_window_conn(gw: &Gateway) -> Conn {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("buffer size");
    let stream = socket.connect(gw.listen).await.expect("connect");
    Conn::over(stream)
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_at_write_timeout() {
    const SIZE: usize = 16 << 20;
    let origin = big_origin(SIZE).await;
    let gw = Gateway::start_with_listener(
        &one_upstream(&[origin.addr()], ""),
        "    http2: true\n    limits: { write_timeout: 1s }\n",
    )
    .await;

    // A pause shorter than the timeout is not a stall: the response completes.
    let mut pausing = small_window_conn(&gw).await;
    pausing
        .send_raw(b"GET /pausing HTTP/1.1\r\nhost: gateway.test\r\n\r\n")
        .await
        .expect("request");
    tokio::time::sleep(Duration::from_millis(600)).await; // the client's pause itself
    let response = pausing.response().await.expect("complete response");
    assert_eq!(response.body.len(), SIZE);
    assert_eq!(rejections(&gw, "write_timeout").await, 0.0);

    // A client that never reads.
    let mut stalled = small_window_conn(&gw).await;
    let started = Instant::now();
    stalled
        .send_raw(b"GET /stalled HTTP/1.1\r\nhost: gateway.test\r\n\r\n")
        .await
        .expect("request");
    wait_for_rejections(&gw, "write_timeout", 1.0).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(
        stalled.closed_within(Duration::from_secs(5)).await,
        "connection kept after the write timeout"
    );
    settled_rejections(&gw, "write_timeout", 1.0).await;

    // HTTP/2: a client that takes the head but never grants more flow-control window.
    let tcp = TcpStream::connect(gw.listen).await.expect("connect");
    let (send, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut send = send.ready().await.expect("h2 ready");
    let request = http::Request::get("http://gateway.test/h2-stalled")
        .body(())
        .expect("request");
    let started = Instant::now();
    let (response, _) = send.send_request(request, true).expect("send");
    let mut body = response.await.expect("response head").into_body();
    let mut received = 0;
    let reset = loop {
        match tokio::time::timeout(Duration::from_secs(5), body.data()).await {
            Ok(Some(Ok(chunk))) => received += chunk.len(), // never released
            Ok(Some(Err(e))) => break e,
            Ok(None) => panic!("the whole body arrived without flow control"),
            Err(_) => panic!(
                "stream kept {:?} after the write timeout",
                started.elapsed()
            ),
        }
    };
    assert!(reset.is_reset(), "{reset:?}");
    assert!(received < SIZE);
    assert!(started.elapsed() >= Duration::from_millis(900));
    wait_for_rejections(&gw, "write_timeout", 2.0).await;
    gw.wait_for_log(&["gateway::limits", "write_timeout", "read nothing"])
        .await;
}

#[tokio::test]
async fn a_route_request_timeout_bounds_the_whole_exchange() {
    let (slow_script, slow) = Scripted::new(200);
    slow_script.set_delay(3_000);
    let slow = start_origin(slow).await;
    let fast = start_origin(echo("fast")).await;
    let big = big_origin(16 << 20).await;
    let body = format!(
        "upstreams:\n  slow:\n    endpoints: [\"{}\"]\n    timeouts: {{ read: 30s }}\n  fast:\n    endpoints: [\"{}\"]\n  big:\n    endpoints: [\"{}\"]\n\
         routes:\n  - {{ match: {{ path_prefix: /slow }}, upstream: slow, limits: {{ request_timeout: 1s }} }}\n  \
         - {{ match: {{ path_prefix: /big }}, upstream: big, limits: {{ request_timeout: 1s }} }}\n  \
         - {{ upstream: fast, limits: {{ request_timeout: 1s }} }}\n",
        slow.addr(),
        fast.addr(),
        big.addr()
    );
    let gw = Gateway::start_with_listener(
        &body,
        "    limits: { body_read_timeout: 10s, write_timeout: 30s }\n",
    )
    .await;

    // Within its deadline a request is untouched.
    assert_eq!(gw.get("/quick").await.status, 200);

    // The upstream takes too long: 504 at the deadline, an upstream timeout to its breaker.
    let started = Instant::now();
    let response = gw.get("/slow").await;
    let took = started.elapsed();
    assert_eq!(response.status, 504);
    assert_eq!(response.json()["code"], "UPSTREAM_TIMEOUT");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "504 after {took:?}"
    );
    assert_eq!(upstream_failures(&gw, "slow").await, 1.0);
    settled_rejections(&gw, "request_timeout", 1.0).await;

    // The client sends its body slowly, each part well within body_read_timeout: 408
    // at the deadline, and nothing held against the upstream.
    let mut conn = Conn::connect(gw.listen).await.expect("connect");
    let started = Instant::now();
    conn.send_raw(b"POST /upload HTTP/1.1\r\nhost: gateway.test\r\ncontent-length: 100\r\n\r\n")
        .await
        .expect("head");
    let trickle = tokio::spawn(async move {
        for _ in 0..10 {
            if conn.send_raw(&[b'b'; 10]).await.is_err()
                || conn.closed_within(Duration::from_millis(300)).await
            {
                break;
            }
        }
        conn
    });
    let mut conn = trickle.await.expect("trickle");
    let response = conn.response().await.expect("response");
    let took = started.elapsed();
    assert_eq!(response.status, 408);
    assert_eq!(response.json()["code"], "REQUEST_TIMEOUT");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "408 after {took:?}"
    );
    assert_eq!(upstream_failures(&gw, "fast").await, 0.0);
    settled_rejections(&gw, "request_timeout", 2.0).await;

    // The client reads the response too slowly (not at all): the response has started,
    // so the connection is closed at the deadline, long before write_timeout.
    let mut reader = small_window_conn(&gw).await;
    let started = Instant::now();
    reader
        .send_raw(b"GET /big HTTP/1.1\r\nhost: gateway.test\r\n\r\n")
        .await
        .expect("request");
    wait_for_rejections(&gw, "request_timeout", 3.0).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "closed after {took:?}"
    );
    assert!(reader.closed_within(Duration::from_secs(5)).await);
    assert_eq!(rejections(&gw, "write_timeout").await, 0.0);
    assert_eq!(upstream_failures(&gw, "big").await, 0.0);
}

#[tokio::test]
async fn a_stuck_half_open_probe_expires_and_the_breaker_moves_on() {
    let (script, handler) = Scripted::new(500);
    let origin = start_origin(handler).await;
    let gw = Gateway::start(&one_upstream(
        &[origin.addr()],
        "    timeouts: { read: 60s }\n    breaker: { consecutive_failures: 1, open_duration: 1s, half_open: { permitted_requests: 1, success_threshold: 1, probe_timeout: 1s } }\n",
    ))
    .await;
    assert_eq!(gw.get("/").await.status, 500);
    gw.wait_for_log(&["breaker transition", "consecutive_failures"])
        .await;

    // The upstream now hangs: the first call after the open period is the probe, and
    // it will not be answered for a minute.
    script.set_status(200);
    script.set_delay(60_000);
    let listen = gw.listen;
    let probe = tokio::spawn(async move {
        loop {
            let response = gateway_tests::http::get(listen, "/probe")
                .await
                .expect("request");
            if response.status != 503 {
                return response.status;
            }
        }
    });
    gw.wait_for_log(&["breaker transition", "open_period_elapsed"])
        .await;
    let admitted = Instant::now();
    let deadline = admitted + Duration::from_secs(10);
    while origin.stats().requests() < 2 {
        assert!(
            Instant::now() < deadline,
            "the probe never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Later calls are answered at once, and the upstream has recovered for them.
    script.set_delay(0);
    let response = gw.get("/").await;
    assert_eq!(response.status, 503);
    assert_eq!(response.json()["state"], "half_open");

    // Within probe_timeout + open_duration (+ slack) the breaker closes again on a
    // fresh probe, while the stuck one is still waiting on the upstream.
    loop {
        let response = gw.get("/").await;
        if response.status == 200 {
            break;
        }
        assert_eq!(response.status, 503);
        assert!(
            Instant::now() < deadline,
            "breaker still {} after {:?}",
            response.json()["state"],
            admitted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = admitted.elapsed();
    assert!(took >= Duration::from_millis(1900), "closed after {took:?}");
    assert!(!probe.is_finished(), "the stuck probe ended first");
    gw.wait_for_log(&["breaker transition", "probe_timed_out"])
        .await;
    gw.wait_for_log(&["breaker transition", "probes_succeeded"])
        .await;
    probe.abort();
}
