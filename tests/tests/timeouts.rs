//! Upstream timeouts and what follows them: connect and write timeouts answer `504`
//! within their bound, a failed connect is retried on another endpoint while a reset
//! after the request was sent is not, and a client that leaves counts only if the
//! upstream had already answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_tests::wire::{Unanswered, never_reads};
use gateway_tests::{Gateway, Reply, Request, WireFault, echo, one_upstream, start_origin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How much later than a configured timeout the answer may come on a shared, loaded
/// machine running a debug build.
const MARGIN: Duration = Duration::from_millis(700);

async fn outcomes(gw: &Gateway) -> (f64, f64, f64) {
    let series = |outcome: &str| {
        format!("gateway_upstream_requests_total{{outcome=\"{outcome}\",upstream=\"api\"}}")
    };
    (
        gw.metric(&series("success")).await,
        gw.metric(&series("failure")).await,
        gw.metric(&series("ignored")).await,
    )
}

#[tokio::test]
async fn a_connect_timeout_answers_504_at_its_bound() {
    let unanswered = Unanswered::start();
    let gw = Gateway::start(&one_upstream(
        &[unanswered.addr],
        "    timeouts: { connect: 300ms }\n",
    ))
    .await;
    let started = Instant::now();
    let response = gw.get("/").await;
    let took = started.elapsed();
    assert_eq!(response.status, 504, "{}", response.text());
    assert_eq!(response.json_str("/code"), "UPSTREAM_TIMEOUT");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(300) + MARGIN,
        "{took:?}"
    );
    assert_eq!(outcomes(&gw).await, (0.0, 1.0, 0.0));
}

/// A request body the upstream stops reading: the write gives up after
/// `timeouts.write`, then (as Pingora does, for an upstream that answers early
/// without reading the whole body) the gateway still waits up to `timeouts.read` for
/// an answer before it answers `504` itself.
#[tokio::test]
async fn a_write_timeout_answers_504_when_the_upstream_stops_reading_the_body() {
    let (write_timeout, read_timeout) = (Duration::from_millis(300), Duration::from_secs(1));
    let upstream = never_reads().await;
    let gw = Gateway::start(&one_upstream(
        &[upstream],
        "    timeouts: { write: 300ms, read: 1s }\n",
    ))
    .await;
    // 8 MiB fills every buffer between here and a peer that never reads.
    let size = 8 << 20;
    let stream = tokio::net::TcpStream::connect(gw.listen)
        .await
        .expect("connect");
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let head =
            format!("PUT /blob HTTP/1.1\r\nhost: gateway.test\r\ncontent-length: {size}\r\n\r\n");
        let _ = write.write_all(head.as_bytes()).await;
        let chunk = vec![b'b'; 64 * 1024];
        for _ in 0..size / chunk.len() {
            if write.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), read.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .expect("read");
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&chunk[..n]);
    }
    writer.abort();
    let took = started.elapsed();
    let head = String::from_utf8_lossy(&answer);
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
    assert!(head.contains("UPSTREAM_TIMEOUT"), "{head}");
    assert!(
        took >= read_timeout && took < write_timeout + read_timeout + MARGIN,
        "answered after {took:?}"
    );
    gateway_tests::wait_until(
        "the write timeout recorded",
        Duration::from_secs(10),
        async || outcomes(&gw).await == (0.0, 1.0, 0.0),
    )
    .await;
}

#[tokio::test]
async fn a_connect_timeout_is_retried_on_another_endpoint() {
    let unanswered = Unanswered::start();
    let good = start_origin(echo("good")).await;
    let gw = Gateway::start(&one_upstream(
        &[unanswered.addr, good.addr()],
        "    timeouts: { connect: 300ms }\n    retries: { attempts: 1 }\n",
    ))
    .await;
    // Round robin: one of the two requests meets the unanswered endpoint first.
    let mut slowest = Duration::ZERO;
    for id in ["first", "second"] {
        let started = Instant::now();
        let response = gw
            .conn()
            .await
            .request("GET", "/", &[("x-request-id", id)], b"")
            .await
            .expect("request");
        slowest = slowest.max(started.elapsed());
        assert_eq!(response.status, 200, "{id}: {}", response.text());
        assert_eq!(response.json_str("/origin"), "good");
    }
    assert!(slowest >= Duration::from_millis(300), "{slowest:?}");
    assert_eq!(good.stats().requests(), 2);
    let retried = ["first", "second"]
        .iter()
        .filter(|id| {
            gw.logs().lines().any(|l| {
                l.contains("gateway::access") && l.contains(*id) && l.contains("retries=1")
            })
        })
        .count();
    assert_eq!(retried, 1, "{}", gw.logs());
    // Every attempt recorded once: the timed-out connect, and both answers.
    assert_eq!(outcomes(&gw).await, (2.0, 1.0, 0.0));
}

#[tokio::test]
async fn a_reset_after_the_request_was_sent_is_not_retried() {
    let resetting = start_origin(Arc::new(|_: &Request| {
        Reply::text(200, "").with_fault(WireFault::Reset)
    }))
    .await;
    let good = start_origin(echo("good")).await;
    let gw = Gateway::start(&one_upstream(
        &[resetting.addr(), good.addr()],
        "    retries: { attempts: 3 }\n",
    ))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(gw.get("/").await.status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 502], "the reset is answered, not retried");
    assert_eq!(resetting.stats().requests(), 1);
    assert_eq!(good.stats().requests(), 1);
    assert_eq!(outcomes(&gw).await, (1.0, 1.0, 0.0));
}

#[tokio::test]
async fn a_client_leaving_counts_only_if_the_upstream_had_answered() {
    // A 500 with a body far larger than the socket buffers: the client reads the head
    // and leaves while the body is still coming.
    let big = "x".repeat(16 << 20);
    let origin = start_origin(Arc::new(move |req: &Request| {
        if req.path() == "/late" {
            Reply::text(500, "late").delayed(Duration::from_secs(2))
        } else {
            Reply::text(500, big.clone())
        }
    }))
    .await;
    let gw = Gateway::start(&one_upstream(
        &[origin.addr()],
        "    breaker: { consecutive_failures: 100 }\n",
    ))
    .await;

    let mut stream = tokio::net::TcpStream::connect(gw.listen)
        .await
        .expect("connect");
    stream
        .write_all(
            b"GET /big HTTP/1.1\r\nhost: gateway.test\r\nx-request-id: left-after-head\r\n\r\n",
        )
        .await
        .expect("request");
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0);
        head.extend_from_slice(&chunk[..n]);
    }
    assert!(head.starts_with(b"HTTP/1.1 500"));
    drop(stream);
    gw.wait_for_log(&["gateway::access", "left-after-head"])
        .await;
    assert_eq!(
        outcomes(&gw).await,
        (0.0, 1.0, 0.0),
        "the upstream had answered 500: that counts"
    );

    // Before the upstream answers, leaving says nothing about the upstream.
    let mut stream = tokio::net::TcpStream::connect(gw.listen)
        .await
        .expect("connect");
    stream
        .write_all(
            b"GET /late HTTP/1.1\r\nhost: gateway.test\r\nx-request-id: left-before-answer\r\n\r\n",
        )
        .await
        .expect("request");
    gateway_tests::wait_until(
        "the origin has the request",
        Duration::from_secs(10),
        async || origin.stats().requests() == 2,
    )
    .await;
    drop(stream);
    gw.wait_for_log(&["gateway::access", "left-before-answer"])
        .await;
    assert_eq!(
        outcomes(&gw).await,
        (0.0, 1.0, 1.0),
        "counted as ignored: neither success nor failure"
    );
    assert_eq!(
        gw.breaker("api").await["window"]["calls"],
        1,
        "only the answered call is in the breaker's window"
    );
}
