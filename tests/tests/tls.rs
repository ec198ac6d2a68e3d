//! TLS at the edge and to upstreams, HTTP/2 both ways, certificate rotation: the real
//! gateway process, certificates generated per test, real TLS and h2 clients/origins.

use std::time::{Duration, Instant};

use gateway_tests::http::Conn;
use gateway_tests::tls::{
    Ca, Client, H2Origin, h2_get, negotiated_alpn, served_certificate, start_tls_origin,
};
use gateway_tests::{Gateway, check_config_file, echo, one_upstream, start_origin};

/// A TLS listener section serving `certs` (cert, key path pairs), plus `extra` keys.
fn tls_listener(certs: &[(std::path::PathBuf, std::path::PathBuf)], extra: &str) -> String {
    let list: String = certs
        .iter()
        .map(|(c, k)| {
            format!(
                "        - {{ cert: \"{}\", key: \"{}\" }}\n",
                c.display(),
                k.display()
            )
        })
        .collect();
    format!("    tls:\n      certificates:\n{list}{extra}")
}

#[tokio::test]
async fn sni_picks_the_certificate_and_alpn_offers_h2_and_http1() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("edge test ca");
    let default = ca.leaf(&["default.test"]);
    let api = ca.leaf(&["api.test"]);
    let wild = ca.leaf(&["*.apps.test"]);
    let files = [
        default.write(dir.path(), "default"),
        api.write(dir.path(), "api"),
        wild.write(dir.path(), "wild"),
    ];
    let origin = start_origin(echo("http1-origin")).await;
    let listener = tls_listener(&files, "");
    let gw = Gateway::start_with_listener(&one_upstream(&[origin.addr()], ""), &listener).await;

    let client = Client::new();
    for (sni, expected) in [
        (Some("api.test"), &api.der),
        (Some("API.Test"), &api.der),
        (Some("one.apps.test"), &wild.der),
        (Some("deep.one.apps.test"), &default.der),
        (Some("unknown.test"), &default.der),
        (None, &default.der),
    ] {
        let stream = client.connect(gw.listen, sni).await.expect("handshake");
        assert_eq!(
            &served_certificate(&stream),
            expected,
            "certificate served for SNI {sni:?}"
        );
    }

    // A client that verifies, as browsers do, accepts the chain for its name.
    let verified = Client::new()
        .trusting(&ca)
        .alpn(&[b"http/1.1"])
        .connect(gw.listen, Some("api.test"))
        .await
        .expect("verified handshake");
    assert_eq!(
        negotiated_alpn(&verified).as_deref(),
        Some(&b"http/1.1"[..])
    );
    let mut conn = Conn::over(verified);
    let response = conn.get("/over-tls").await.expect("http/1.1 over tls");
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["target"], "/over-tls");
    assert_eq!(response.json()["origin"], "http1-origin");
    assert_eq!(response.json()["headers"]["x-forwarded-proto"], "https");

    // h2 by ALPN, through the gateway to an HTTP/1.1 origin.
    let h2 = Client::new()
        .alpn(&[b"h2", b"http/1.1"])
        .connect(gw.listen, Some("api.test"))
        .await
        .expect("h2 handshake");
    assert_eq!(negotiated_alpn(&h2).as_deref(), Some(&b"h2"[..]));
    let (status, body) = h2_get(h2, "api.test", "/over-h2").await;
    assert_eq!(status, 200);
    let echoed: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(echoed["target"], "/over-h2");
    assert_eq!(echoed["origin"], "http1-origin");
}

#[tokio::test]
async fn min_version_1_3_turns_tls_1_2_clients_away() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("edge test ca");
    let files = [ca.leaf(&["api.test"]).write(dir.path(), "api")];
    let origin = start_origin(echo("o")).await;
    let listener = tls_listener(&files, "      min_version: \"1.3\"\n");
    let gw = Gateway::start_with_listener(&one_upstream(&[origin.addr()], ""), &listener).await;
    // Pingora's rustls listener always enables TLS 1.2 (see docs/OPERATIONS.md): a
    // 1.2-only client is disconnected right after the handshake, before any request.
    match Client::new()
        .only_tls12()
        .connect(gw.listen, Some("api.test"))
        .await
    {
        Err(_) => {}
        Ok(tls12) => {
            let mut conn = Conn::over(tls12);
            let _ = conn
                .send_raw(b"GET / HTTP/1.1\r\nhost: api.test\r\n\r\n")
                .await;
            assert!(
                conn.closed_within(Duration::from_secs(5)).await,
                "a TLS 1.2 session must be closed"
            );
            assert!(conn.response().await.is_err(), "no response over TLS 1.2");
            let series = format!(
                "gateway_limit_rejections_total{{limit=\"min_version\",listener=\"{}\"}}",
                gw.listen
            );
            assert_eq!(gw.metric(&series).await, 1.0);
        }
    }
    let accepted = Client::new()
        .connect(gw.listen, Some("api.test"))
        .await
        .expect("TLS 1.3 handshake");
    assert_eq!(
        accepted.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let mut conn = Conn::over(accepted);
    assert_eq!(conn.get("/").await.expect("request").status, 200);

    // Without the setting, TLS 1.2 is served.
    let listener = tls_listener(&files, "");
    let gw12 = Gateway::start_with_listener(&one_upstream(&[origin.addr()], ""), &listener).await;
    let tls12 = Client::new()
        .only_tls12()
        .connect(gw12.listen, Some("api.test"))
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(
        tls12.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
}

#[tokio::test]
async fn http2_to_an_h2_upstream_and_h2c_from_clients() {
    let h2_origin = H2Origin::start().await;
    let body = format!(
        "upstreams:\n  h2:\n    endpoints: [\"{}\"]\n    protocol: http2\nroutes:\n  - {{ upstream: h2 }}\n",
        h2_origin.addr
    );
    let gw = Gateway::start_with_listener(&body, "    http2: true\n").await;

    // HTTP/1.1 client -> gateway -> h2 upstream.
    let response = gateway_tests::http::get(gw.listen, "/from-h1")
        .await
        .expect("h1 request");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "h2 /from-h1");
    assert_eq!(response.header("x-origin-protocol"), Some("HTTP/2.0"));

    // h2c (prior knowledge) client -> gateway -> h2 upstream.
    let tcp = tokio::net::TcpStream::connect(gw.listen)
        .await
        .expect("connect");
    let (status, body) = h2_get(tcp, "gateway.test", "/from-h2c").await;
    assert_eq!(status, 200);
    assert_eq!(body, b"h2 /from-h2c");
    assert_eq!(h2_origin.hits.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn h2_over_tls_to_an_h2_upstream() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("edge test ca");
    let files = [ca.leaf(&["api.test"]).write(dir.path(), "api")];
    let h2_origin = H2Origin::start().await;
    let body = format!(
        "upstreams:\n  h2:\n    endpoints: [\"{}\"]\n    protocol: http2\nroutes:\n  - {{ upstream: h2 }}\n",
        h2_origin.addr
    );
    let listener = tls_listener(&files, "");
    let gw = Gateway::start_with_listener(&body, &listener).await;
    let stream = Client::new()
        .alpn(&[b"h2"])
        .connect(gw.listen, Some("api.test"))
        .await
        .expect("handshake");
    let (status, body) = h2_get(stream, "api.test", "/end-to-end-h2").await;
    assert_eq!(status, 200);
    assert_eq!(body, b"h2 /end-to-end-h2");
}

#[tokio::test]
async fn upstream_tls_is_verified_unless_told_otherwise() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("origin ca");
    let other_ca = Ca::new("some other ca");
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("ca");
    std::fs::write(dir.path().join("other-ca.pem"), other_ca.pem()).expect("other ca");
    let origin = start_tls_origin(&ca.leaf(&["origin.test"])).await;
    let ca_file = dir.path().join("ca.pem");
    let other = dir.path().join("other-ca.pem");
    let upstream = |name: &str, tls: &str| {
        format!("  {name}:\n    endpoints: [\"{origin}\"]\n    tls: {{ {tls} }}\n")
    };
    let body = format!(
        "upstreams:\n{}{}{}{}{}routes:\n{}",
        upstream(
            "verified",
            &format!(
                "server_name: origin.test, ca_file: \"{}\"",
                ca_file.display()
            )
        ),
        upstream(
            "wrong_ca",
            &format!("server_name: origin.test, ca_file: \"{}\"", other.display())
        ),
        upstream(
            "wrong_name",
            &format!(
                "server_name: other.test, ca_file: \"{}\"",
                ca_file.display()
            )
        ),
        upstream("system_roots", "server_name: origin.test"),
        upstream("insecure", "verify: false"),
        [
            "verified",
            "wrong_ca",
            "wrong_name",
            "system_roots",
            "insecure"
        ]
        .iter()
        .map(|u| format!("  - {{ match: {{ path_prefix: /{u} }}, upstream: {u} }}\n"))
        .collect::<String>(),
    );
    let gw = Gateway::start(&body).await;
    for (path, status) in [
        ("/verified", 200),
        ("/insecure", 200),
        ("/wrong_ca", 502),
        ("/wrong_name", 502),
        ("/system_roots", 502),
    ] {
        let response = gateway_tests::http::get(gw.listen, path)
            .await
            .expect("request");
        assert_eq!(response.status, status, "{path}: {}", response.text());
        if status == 200 {
            assert_eq!(response.text(), "tls-origin");
        } else {
            assert_eq!(response.json()["code"], "UPSTREAM_UNAVAILABLE");
        }
    }
}

#[tokio::test]
async fn h2_over_tls_to_a_verified_upstream() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("origin ca");
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("ca");
    let origin = H2Origin::start_tls(&ca.leaf(&["origin.test"])).await;
    let body = format!(
        "upstreams:\n  secure:\n    endpoints: [\"{}\"]\n    protocol: http2\n    tls: {{ server_name: origin.test, ca_file: \"{}\" }}\nroutes:\n  - {{ upstream: secure }}\n",
        origin.addr,
        dir.path().join("ca.pem").display()
    );
    let gw = Gateway::start(&body).await;
    for path in ["/one", "/two"] {
        let response = gateway_tests::http::get(gw.listen, path)
            .await
            .expect("request");
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.text(), format!("h2 {path}"));
        assert_eq!(response.header("x-origin-protocol"), Some("HTTP/2.0"));
    }
    assert_eq!(origin.hits.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// New connections until one is served `expected`, or panic after 10 s.
async fn wait_for_certificate(gw: &Gateway, expected: &[u8]) -> Duration {
    let start = Instant::now();
    loop {
        let stream = Client::new()
            .connect(gw.listen, Some("api.test"))
            .await
            .expect("handshake");
        if served_certificate(&stream) == expected {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "new certificate not served after 10 s:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn rotated_certificates_serve_new_connections_and_keep_open_ones() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("edge test ca");
    let first = ca.leaf(&["api.test"]);
    let second = ca.leaf(&["api.test"]);
    let files = [first.write(dir.path(), "api")];
    let origin = start_origin(echo("o")).await;
    let listener = tls_listener(&files, "");
    let gw = Gateway::start_with_listener(&one_upstream(&[origin.addr()], ""), &listener).await;
    let open = Client::new()
        .connect(gw.listen, Some("api.test"))
        .await
        .expect("handshake");
    assert_eq!(served_certificate(&open), first.der);
    let mut open = Conn::over(open);
    assert_eq!(open.get("/before").await.expect("request").status, 200);
    let series = format!(
        "gateway_tls_certificate_expiry_timestamp_seconds{{certificate=\"api.test\",listener=\"{}\"}}",
        gw.listen
    );
    // rcgen's default validity ends in 4096.
    assert!(gw.metric(&series).await > 4.0e9, "{}", gw.scrape().await);

    // Rotate the way a cert manager may: the key first. Until the certificate follows,
    // the pair does not match: that reload is refused and the old pair keeps serving.
    let errors = gw
        .metric("gateway_config_reloads_total{result=\"error\"}")
        .await;
    std::fs::write(&files[0].1, &second.key_pem).expect("write key");
    gw.wait_metric_at_least(
        "gateway_config_reloads_total{result=\"error\"}",
        errors + 1.0,
    )
    .await;
    let between = Client::new()
        .connect(gw.listen, Some("api.test"))
        .await
        .expect("handshake between key and certificate");
    assert_eq!(served_certificate(&between), first.der);
    let started = Instant::now();
    std::fs::write(&files[0].0, &second.cert_pem).expect("write cert");
    wait_for_certificate(&gw, &second.der).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "rotation took {took:?}");
    // The connection opened before the rotation was not dropped.
    assert_eq!(
        open.get("/after").await.expect("same connection").status,
        200
    );

    // A broken certificate: refused, reported, the working one keeps serving.
    let errors = gw
        .metric("gateway_config_reloads_total{result=\"error\"}")
        .await;
    std::fs::write(
        &files[0].0,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .expect("break cert");
    gw.wait_metric_at_least(
        "gateway_config_reloads_total{result=\"error\"}",
        errors + 1.0,
    )
    .await;
    gw.wait_for_log(&["config reload refused", "api.crt"]).await;
    let stream = Client::new()
        .connect(gw.listen, Some("api.test"))
        .await
        .expect("handshake after a broken rotation");
    assert_eq!(served_certificate(&stream), second.der);
    assert_eq!(
        Conn::over(stream).get("/").await.expect("request").status,
        200
    );
    assert_eq!(
        open.get("/still").await.expect("same connection").status,
        200
    );
}

#[test]
fn bad_certificates_are_config_errors_naming_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("edge test ca");
    let (cert, key) = ca.leaf(&["api.test"]).write(dir.path(), "api");
    let (_, other_key) = ca.leaf(&["other.test"]).write(dir.path(), "other");
    std::fs::write(dir.path().join("empty.pem"), "nothing here\n").expect("write");
    let empty = dir.path().join("empty.pem");
    let missing = dir.path().join("missing.crt");
    let cases: Vec<(String, String)> = vec![
        (
            format!(
                "{{ cert: \"{}\", key: \"{}\" }}",
                cert.display(),
                other_key.display()
            ),
            format!(
                "listeners[0].tls.certificates[0].key: `{}` is not the private key of the certificate in `{}`",
                other_key.display(),
                cert.display()
            ),
        ),
        (
            format!(
                "{{ cert: \"{}\", key: \"{}\" }}",
                missing.display(),
                key.display()
            ),
            format!(
                "listeners[0].tls.certificates[0].cert: cannot read `{}`",
                missing.display()
            ),
        ),
        (
            format!(
                "{{ cert: \"{}\", key: \"{}\" }}",
                empty.display(),
                key.display()
            ),
            format!(
                "listeners[0].tls.certificates[0].cert: `{}` holds no PEM certificate",
                empty.display()
            ),
        ),
        (
            format!(
                "{{ cert: \"{}\", key: \"{}\" }}",
                cert.display(),
                empty.display()
            ),
            format!(
                "listeners[0].tls.certificates[0].key: `{}` holds no PEM private key",
                empty.display()
            ),
        ),
    ];
    for (entry, expected) in cases {
        let config = dir.path().join("gateway.yaml");
        std::fs::write(
            &config,
            format!(
                "listeners:\n  - address: 127.0.0.1:18443\n    tls:\n      certificates:\n        - {entry}\nupstreams:\n  api: {{ endpoints: [\"127.0.0.1:1\"] }}\nroutes:\n  - {{ upstream: api }}\n"
            ),
        )
        .expect("config");
        let (code, _, stderr) = check_config_file(&config);
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains(&expected) && stderr.contains("gateway.yaml:5:"),
            "expected `{expected}` at line 5 in:\n{stderr}"
        );
    }
}
