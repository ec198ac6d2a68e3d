//! The admin event stream over WebSocket (RFC 6455) as well as Server-Sent Events:
//! same events, same admission plus an Origin check, a bound on subscribers, and a
//! subscriber that does not keep up is dropped (counted), never stalling the gateway.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use gateway_tests::{Gateway, echo, one_upstream, start_origin};

/// Opens a WebSocket to the admin's event stream; returns the stream and the response
/// head.
async fn open(gw: &Gateway, extra: &str) -> (TcpStream, String) {
    open_with(
        gw,
        extra,
        TcpStream::connect(gw.admin).await.expect("connect"),
    )
    .await
}

async fn open_with(gw: &Gateway, extra: &str, mut stream: TcpStream) -> (TcpStream, String) {
    let request = format!(
        "GET /api/v1/events/ws HTTP/1.1\r\nhost: {}\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n",
        gw.admin
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    (stream, String::from_utf8_lossy(&head).into_owned())
}

/// Reads one frame: (opcode, payload).
async fn frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut head))
        .await
        .expect("a frame in time")
        .expect("read");
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let len = match head[1] & 0x7F {
        126 => {
            let mut n = [0u8; 2];
            stream.read_exact(&mut n).await.expect("len");
            usize::from(u16::from_be_bytes(n))
        }
        127 => {
            let mut n = [0u8; 8];
            stream.read_exact(&mut n).await.expect("len");
            usize::try_from(u64::from_be_bytes(n)).expect("len")
        }
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.expect("payload");
    (head[0] & 0x0F, payload)
}

fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [7u8, 1, 9, 3];
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[tokio::test]
async fn events_arrive_over_websocket_and_the_protocol_is_kept() {
    let origin = start_origin(echo("svc")).await;
    let gw = Gateway::start(&one_upstream(&[origin.addr()], "")).await;
    let (mut ws, head) = open(&gw, "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "the RFC's accept key: {head}"
    );
    let r = gw.set_mode("api", "forced_open").await;
    assert_eq!(r.status, 200);
    let (opcode, payload) = frame(&mut ws).await;
    assert_eq!(opcode, 1, "a text frame");
    let event: serde_json::Value = serde_json::from_slice(&payload).expect("JSON");
    assert_eq!(event["type"], "breaker_transition");
    assert_eq!(event["to"], "forced_open");
    // Ping is answered with the same payload; a close is answered and ends it.
    ws.write_all(&masked(0x9, b"are you there"))
        .await
        .expect("ping");
    assert_eq!(frame(&mut ws).await, (0xA, b"are you there".to_vec()));
    ws.write_all(&masked(0x8, &1000u16.to_be_bytes()))
        .await
        .expect("close");
    assert_eq!(frame(&mut ws).await.0, 0x8);
    // A data frame from the client is not spoken here.
    let (mut ws, _) = open(&gw, "").await;
    ws.write_all(&masked(0x1, b"subscribe me"))
        .await
        .expect("text");
    let (opcode, payload) = frame(&mut ws).await;
    assert_eq!((opcode, &payload[..2]), (0x8, &1003u16.to_be_bytes()[..]));
}

#[tokio::test]
async fn a_foreign_page_a_bad_handshake_and_too_many_subscribers_are_refused() {
    let origin = start_origin(echo("svc")).await;
    let gw = Gateway::start(&one_upstream(&[origin.addr()], "")).await;
    let (_, head) = open(&gw, "origin: https://evil.example\r\n").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let own = format!("origin: http://{}\r\n", gw.admin);
    let (own_ws, head) = open(&gw, &own).await;
    assert!(head.starts_with("HTTP/1.1 101"), "its own page may: {head}");
    drop(own_ws);
    // A client speaking another version is refused.
    let mut stream = TcpStream::connect(gw.admin).await.expect("connect");
    stream
        .write_all(
            format!(
                "GET /api/v1/events/ws HTTP/1.1\r\nhost: {}\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-version: 8\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                gw.admin
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    let mut reply = vec![0u8; 12];
    stream.read_exact(&mut reply).await.expect("reply");
    assert_eq!(&reply, b"HTTP/1.1 400");

    // 64 places, SSE and WebSocket together: wait for those above to be given back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.metric("gateway_admin_event_subscribers").await > 0.0 {
        assert!(Instant::now() < deadline, "places never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut held = Vec::new();
    for _ in 0..64 {
        let mut sse = TcpStream::connect(gw.admin).await.expect("connect");
        sse.write_all(
            format!("GET /api/v1/events HTTP/1.1\r\nhost: {}\r\n\r\n", gw.admin).as_bytes(),
        )
        .await
        .expect("subscribe");
        let mut first = [0u8; 12];
        sse.read_exact(&mut first).await.expect("answer");
        assert_eq!(&first, b"HTTP/1.1 200");
        held.push(sse);
    }
    let (_, head) = open(&gw, "").await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert_eq!(
        gw.metric("gateway_admin_event_subscribers_dropped_total{reason=\"full\"}")
            .await,
        1.0
    );
    assert_eq!(gw.metric("gateway_admin_event_subscribers").await, 64.0);
    // Subscribers that left are noticed at the next write (an event, or the heartbeat).
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut mode = "forced_open";
    while gw.metric("gateway_admin_event_subscribers").await > 0.0 {
        assert!(Instant::now() < deadline, "places never given back");
        gw.set_mode("api", mode).await;
        mode = if mode == "forced_open" {
            "automatic"
        } else {
            "forced_open"
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_is_dropped_and_the_gateway_goes_on() {
    let origin = start_origin(echo("svc")).await;
    let gw = Gateway::start(&one_upstream(&[origin.addr()], "")).await;
    // Subscribes, then never reads; with a small receive buffer, so that the kernel
    // does not hold megabytes of events for it.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let stream = socket.connect(gw.admin).await.expect("connect");
    let (_stuck, head) = open_with(&gw, "", stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let slow = "gateway_admin_event_subscribers_dropped_total{reason=\"slow\"}";
    let mut toggles = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while gw.metric(slow).await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "never dropped after {toggles} events"
        );
        for state in ["forced_open", "automatic"] {
            let r = gw.set_mode("api", state).await;
            assert_eq!(r.status, 200, "the admin API never stalls");
        }
        toggles += 2;
    }
    assert_eq!(gw.get("/").await.status, 200, "traffic flows");
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.metric("gateway_admin_event_subscribers").await > 0.0 {
        assert!(
            Instant::now() < deadline,
            "the dropped subscriber's place is back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
