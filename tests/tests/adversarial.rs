//! A hostile client against the real binary: forged forwarding headers, dot segments
//! that try to leave a route, and framing after which the connection must end. Each
//! test fails if the defence it names is removed (issue 17, items 1 to 4).

use std::time::Duration;

use gateway_tests::http::{Conn, Response};
use gateway_tests::tls::{Ca, Client};
use gateway_tests::{Gateway, echo, start_origin};

/// Sends `raw` on a fresh connection; the response, and whether the gateway then closed.
async fn exchange(gw: &Gateway, raw: &str) -> (Response, bool) {
    let mut conn = Conn::connect(gw.listen).await.expect("connect");
    conn.send_raw(raw.as_bytes()).await.expect("send");
    let response = conn.response().await.expect("response");
    let closed = conn.closed_within(Duration::from_secs(5)).await;
    (response, closed)
}

#[tokio::test]
async fn a_host_cannot_inject_a_forwarded_element() {
    let origin = start_origin(echo("www")).await;
    let gw = Gateway::start(&format!(
        "upstreams:\n  www: {{ endpoints: [\"{}\"] }}\nroutes:\n  - {{ match: {{ host: \"*.example.com\" }}, upstream: www }}\n",
        origin.addr()
    ))
    .await;

    let forged = "x\", for=6.6.6.6;proto=https;host=\"www.example.com";
    let (response, closed) =
        exchange(&gw, &format!("GET /x HTTP/1.1\r\nhost: {forged}\r\n\r\n")).await;
    assert_eq!(response.status, 400, "{}", response.text());
    assert!(closed, "a refused request ends its connection");
    assert_eq!(origin.stats().requests(), 0, "the upstream saw nothing");
    gw.wait_for_log(&["malformed_request", "not allowed in a host"])
        .await;
    let series = format!(
        "gateway_limit_rejections_total{{limit=\"malformed_request\",listener=\"{}\"}}",
        gw.listen
    );
    assert_eq!(gw.metric(&series).await, 1.0);

    // A valid host goes through, and the element the upstream sees is the gateway's.
    let mut conn = gw.conn().await;
    let ok = conn
        .request("GET", "/x", &[("host", "WWW.example.com:8080")], b"")
        .await
        .expect("request");
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        ok.json_str("/headers/forwarded"),
        "for=127.0.0.1;proto=http;host=\"WWW.example.com:8080\""
    );
    assert_eq!(
        ok.json_str("/headers/x-forwarded-host"),
        "WWW.example.com:8080"
    );

    // A reg-name that is not a host name is never matched against a host route.
    let (odd, _) = exchange(&gw, "GET /x HTTP/1.1\r\nhost: www.example.com;x\r\n\r\n").await;
    assert_eq!(odd.status, 404, "{}", odd.text());
    // HTTP/1.1 without Host (RFC 9112 §3.2: 400).
    let (missing, closed) = exchange(&gw, "GET /x HTTP/1.1\r\n\r\n").await;
    assert_eq!(missing.status, 400);
    assert!(closed);
}

#[tokio::test]
async fn dot_segments_cannot_leave_a_route() {
    let public = start_origin(echo("public")).await;
    let gw = Gateway::start(&format!(
        "upstreams:\n  public: {{ endpoints: [\"{}\"] }}\nroutes:\n  - {{ match: {{ path_prefix: /api/public, methods: [GET] }}, upstream: public }}\n",
        public.addr()
    ))
    .await;
    let mut conn = gw.conn().await;
    for escape in [
        "/api/public/../internal",
        "/api/public/%2e%2e/internal",
        "/api/public/%2E./internal",
        "/api/public/./../internal",
    ] {
        let response = conn.get(escape).await.expect("request");
        assert_eq!(
            response.status, 404,
            "{escape} must not reach the public route"
        );
    }
    assert_eq!(public.stats().requests(), 0);

    // Inside the route, the upstream sees the normalized form.
    let inside = conn
        .get("/api/public/a/./b/../%7Ec%41?q=%2e%2e")
        .await
        .expect("request");
    assert_eq!(inside.status, 200, "{}", inside.text());
    assert_eq!(inside.json_str("/target"), "/api/public/a/~cA?q=%2e%2e");

    for refused in [
        "/api/public/..%2finternal",
        "/api/public/..%5Cinternal",
        "/api/public/%00",
        "/../api/public",
        "/api/public/a\\b",
    ] {
        let (response, closed) =
            exchange(&gw, &format!("GET {refused} HTTP/1.1\r\nhost: a\r\n\r\n")).await;
        assert_eq!(response.status, 400, "{refused}: {}", response.text());
        assert!(closed, "{refused}");
    }
    assert_eq!(public.stats().requests(), 1);
}

#[tokio::test]
async fn encoded_slashes_and_merged_slashes_follow_the_listener() {
    let origin = start_origin(echo("api")).await;
    let gw = Gateway::start_with_listener(
        &format!(
            "upstreams:\n  api: {{ endpoints: [\"{}\"] }}\nroutes:\n  - {{ upstream: api }}\n",
            origin.addr()
        ),
        "    paths: { encoded_slashes: keep, merge_slashes: true }\n",
    )
    .await;
    let mut conn = gw.conn().await;
    let kept = conn.get("//files//a%2fb/./c").await.expect("request");
    assert_eq!(kept.status, 200, "{}", kept.text());
    assert_eq!(kept.json_str("/target"), "/files/a%2Fb/c");
}

#[tokio::test]
async fn connections_end_where_rfc_9112_says() {
    let origin = start_origin(echo("api")).await;
    let gw = Gateway::start(&format!(
        "upstreams:\n  api: {{ endpoints: [\"{}\"] }}\nroutes:\n  - {{ upstream: api }}\n",
        origin.addr()
    ))
    .await;

    // Content-Length with Transfer-Encoding: served, then closed (§6.1).
    let (both, closed) = exchange(
        &gw,
        "POST /p HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(both.status, 200, "{}", both.text());
    assert_eq!(both.json_str("/body"), "abc", "chunked framing wins");
    assert_eq!(both.header("connection"), Some("close"));
    assert!(closed, "CL + TE must end the connection");

    // HTTP/1.0 without keep-alive: closed after the response.
    let (old, closed) = exchange(&gw, "GET /p HTTP/1.0\r\n\r\n").await;
    assert_eq!(old.status, 200);
    assert_ne!(old.header("connection"), Some("keep-alive"));
    assert!(closed, "HTTP/1.0 without keep-alive ends the connection");

    // Connection: close on HTTP/1.1 is honoured too.
    let (close, closed) = exchange(
        &gw,
        "GET /p HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(close.status, 200);
    assert!(closed);

    // HTTP/1.0 that asks for keep-alive keeps it.
    let mut conn = Conn::connect(gw.listen).await.expect("connect");
    for _ in 0..2 {
        conn.send_raw(b"GET /p HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
            .await
            .expect("send");
        let response = conn
            .response()
            .await
            .expect("response on the same connection");
        assert_eq!(response.status, 200);
        assert_eq!(response.header("connection"), Some("keep-alive"));
    }
}

#[tokio::test]
async fn forwarding_headers_are_believed_only_from_trusted_proxies() {
    let origin = start_origin(echo("api")).await;
    let body = format!(
        "upstreams:\n  api: {{ endpoints: [\"{}\"] }}\nroutes:\n  - {{ upstream: api }}\n",
        origin.addr()
    );
    let forged: &[(&str, &str)] = &[
        ("host", "api.test"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "admin.internal"),
        ("x-real-ip", "6.6.6.6"),
        ("forwarded", "for=6.6.6.6;proto=https"),
    ];

    let untrusting = Gateway::start(&body).await;
    let seen = untrusting
        .conn()
        .await
        .request("GET", "/", forged, b"")
        .await
        .expect("request");
    assert_eq!(seen.json_str("/headers/x-forwarded-for"), "127.0.0.1");
    assert_eq!(seen.json_str("/headers/x-forwarded-proto"), "http");
    assert_eq!(seen.json_str("/headers/x-forwarded-host"), "api.test");
    assert_eq!(seen.json_str("/headers/x-real-ip"), "");
    assert_eq!(
        seen.json_str("/headers/forwarded"),
        "for=127.0.0.1;proto=http;host=api.test"
    );

    let trusting =
        Gateway::start_with_listener(&body, "    trusted_proxies: [\"127.0.0.0/8\"]\n").await;
    let seen = trusting
        .conn()
        .await
        .request("GET", "/", forged, b"")
        .await
        .expect("request");
    assert_eq!(
        seen.json_str("/headers/x-forwarded-for"),
        "6.6.6.6, 127.0.0.1"
    );
    assert_eq!(seen.json_str("/headers/x-forwarded-proto"), "https");
    assert_eq!(seen.json_str("/headers/x-forwarded-host"), "admin.internal");
    assert_eq!(
        seen.json_str("/headers/forwarded"),
        "for=6.6.6.6;proto=https, for=127.0.0.1;proto=http;host=api.test"
    );
}

/// A PROXY protocol v2 header for a TCP4 client.
fn proxy_v2(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12]);
    header.extend_from_slice(&client);
    header.extend_from_slice(&[127, 0, 0, 1]);
    header.extend_from_slice(&port.to_be_bytes());
    header.extend_from_slice(&80u16.to_be_bytes());
    header
}

#[tokio::test]
async fn the_proxy_protocol_names_the_client_everywhere() {
    let origin = start_origin(echo("api")).await;
    let body = format!(
        "upstreams:\n  api: {{ endpoints: [\"{}\"] }}\nroutes:\n  - {{ upstream: api }}\n",
        origin.addr()
    );
    let gw = Gateway::start_with_listener(&body, "    proxy_protocol: true\n").await;

    // Version 1, with the request in the same packet as the header.
    let (v1, _) = exchange(
        &gw,
        "PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\nGET /v1 HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(v1.status, 200, "{}", v1.text());
    assert_eq!(v1.json_str("/headers/x-forwarded-for"), "203.0.113.7");
    assert_eq!(
        v1.json_str("/headers/forwarded"),
        "for=203.0.113.7;proto=http;host=a"
    );
    gw.wait_for_log(&["gateway::access", "203.0.113.7"]).await;

    // Version 2.
    let mut conn = Conn::connect(gw.listen).await.expect("connect");
    conn.send_raw(&proxy_v2([198, 51, 100, 9], 4000))
        .await
        .expect("header");
    let v2 = conn.get("/v2").await.expect("request");
    assert_eq!(v2.json_str("/headers/x-forwarded-for"), "198.51.100.9");

    // No header: the connection is closed without an answer, and the upstream sees nothing.
    let before = origin.stats().requests();
    let mut bare = Conn::connect(gw.listen).await.expect("connect");
    bare.send_raw(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("send");
    assert!(bare.closed_within(Duration::from_secs(5)).await);
    assert!(
        bare.response().await.is_err(),
        "no response without a PROXY header"
    );
    assert_eq!(origin.stats().requests(), before);
    gw.wait_for_log(&["malformed_request", "PROXY protocol header"])
        .await;

    // A balancer outside trusted_proxies may not name clients.
    let fenced = Gateway::start_with_listener(
        &body,
        "    proxy_protocol: true\n    trusted_proxies: [\"10.0.0.0/8\"]\n",
    )
    .await;
    let mut conn = Conn::connect(fenced.listen).await.expect("connect");
    conn.send_raw(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\nGET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("send");
    assert!(conn.closed_within(Duration::from_secs(5)).await);
    assert!(conn.response().await.is_err());
}

#[tokio::test]
async fn the_proxy_protocol_comes_before_tls() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("edge test ca");
    let (cert, key) = ca.leaf(&["api.test"]).write(dir.path(), "api");
    let origin = start_origin(echo("api")).await;
    let gw = Gateway::start_with_listener(
        &format!(
            "upstreams:\n  api: {{ endpoints: [\"{}\"] }}\nroutes:\n  - {{ upstream: api }}\n",
            origin.addr()
        ),
        &format!(
            "    proxy_protocol: true\n    tls:\n      certificates:\n        - {{ cert: \"{}\", key: \"{}\" }}\n",
            cert.display(),
            key.display()
        ),
    )
    .await;
    let stream = Client::new()
        .trusting(&ca)
        .connect_after(
            gw.listen,
            Some("api.test"),
            &proxy_v2([192, 0, 2, 44], 1234),
        )
        .await
        .expect("handshake after the PROXY header");
    let mut conn = Conn::over(stream);
    let response = conn.get("/").await.expect("request");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json_str("/headers/x-forwarded-for"), "192.0.2.44");
    assert_eq!(response.json_str("/headers/x-forwarded-proto"), "https");

    // Without the header the handshake never starts.
    assert!(
        Client::new()
            .trusting(&ca)
            .connect(gw.listen, Some("api.test"))
            .await
            .is_err()
    );
}
