//! What counts against an upstream, in a running gateway: `failure_when.statuses`
//! (codes, classes, ranges), `failure_when.errors` (each transport error kind, `none`,
//! `all`), and `on_plugin_error` when a predicate plugin traps. Each request's verdict
//! is read from `gateway_upstream_requests_total{outcome}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gateway_tests::wire::{Unanswered, answers_with, never_reads};
use gateway_tests::{Gateway, Reply, Request, WireFault, dead_address, plugin_entry, start_origin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The outcome counters of `upstream`: (success, failure, ignored).
async fn outcomes(gw: &Gateway, upstream: &str) -> (f64, f64, f64) {
    let series = |outcome: &str| {
        format!("gateway_upstream_requests_total{{outcome=\"{outcome}\",upstream=\"{upstream}\"}}")
    };
    (
        gw.metric(&series("success")).await,
        gw.metric(&series("failure")).await,
        gw.metric(&series("ignored")).await,
    )
}

/// An origin answering the status named by the last path segment (`/x/503` → 503).
fn status_from_path() -> gateway_tests::Handler {
    Arc::new(|req: &Request| {
        let status = req
            .path()
            .rsplit('/')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(200);
        Reply::text(status, "as asked")
    })
}

#[tokio::test]
async fn failure_when_statuses_take_codes_classes_and_ranges() {
    let origin = start_origin(status_from_path()).await;
    let gw = Gateway::start(&gateway_tests::one_upstream(
        &[origin.addr()],
        "    breaker:\n      consecutive_failures: 1000\n      failure_when: { statuses: [429, \"5xx\", \"400-403\"] }\n",
    ))
    .await;
    let mut conn = gw.conn().await;
    // (status, counted as a failure): 404 and 418 are outside every rule; 429 and 4xx
    // below 404 are failures only because the config says so.
    let cases = [
        (200, false),
        (302, false),
        (399, false),
        (400, true),
        (403, true),
        (404, false),
        (418, false),
        (429, true),
        (500, true),
        (503, true),
        (599, true),
    ];
    for (status, fails) in cases {
        let before = outcomes(&gw, "api").await;
        let response = conn
            .get(&format!("/status/{status}"))
            .await
            .expect("request");
        assert_eq!(response.status, status);
        let after = outcomes(&gw, "api").await;
        let expected = if fails {
            (before.0, before.1 + 1.0, before.2)
        } else {
            (before.0 + 1.0, before.1, before.2)
        };
        assert_eq!(after, expected, "{status}: counted as a failure: {fails}");
    }
}

/// Every transport error kind, and an endpoint (kept alive while the test runs) that
/// produces it; with the status the client gets.
struct Kind {
    name: &'static str,
    endpoint: SocketAddr,
    status: u16,
}

/// A POST with a body of `size` bytes on a fresh connection, written while the
/// response is read (an upstream that stops reading stops the body too); the status.
async fn post_large_body(addr: SocketAddr, path: &str, size: usize) -> u16 {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    let head =
        format!("POST {path} HTTP/1.1\r\nhost: gateway.test\r\ncontent-length: {size}\r\n\r\n");
    let writer = tokio::spawn(async move {
        let _ = write.write_all(head.as_bytes()).await;
        let chunk = vec![b'b'; 64 * 1024];
        let mut sent = 0;
        while sent < size {
            if write.write_all(&chunk).await.is_err() {
                return;
            }
            sent += chunk.len();
        }
    });
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = read.read(&mut chunk).await.expect("read response");
        assert!(n > 0, "closed without a response");
        response.extend_from_slice(&chunk[..n]);
    }
    writer.abort();
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text}"))
}

#[tokio::test]
async fn failure_when_errors_count_exactly_the_listed_kinds() {
    let unanswered = Unanswered::start();
    let slow = start_origin(Arc::new(|_: &Request| {
        Reply::text(200, "late").delayed(Duration::from_secs(3))
    }))
    .await;
    let resetting = start_origin(Arc::new(|_: &Request| {
        Reply::text(200, "").with_fault(WireFault::Reset)
    }))
    .await;
    let kinds = [
        Kind {
            name: "connect_refused",
            endpoint: dead_address(),
            status: 502,
        },
        Kind {
            name: "connect_timeout",
            endpoint: unanswered.addr,
            status: 504,
        },
        Kind {
            name: "read_timeout",
            endpoint: slow.addr(),
            status: 504,
        },
        Kind {
            name: "write_timeout",
            endpoint: never_reads().await,
            status: 504,
        },
        Kind {
            name: "connection_reset",
            endpoint: resetting.addr(),
            status: 502,
        },
        Kind {
            name: "tls",
            endpoint: answers_with(b"HTTP/1.1 400 Bad Request\r\n\r\n").await,
            status: 502,
        },
        Kind {
            name: "other",
            endpoint: answers_with(b"this is no HTTP at all\r\n\r\n").await,
            status: 502,
        },
    ];
    // Per kind, two upstreams on the same endpoint: one that counts only this kind,
    // one that counts every other kind. Only the first may see a failure.
    let mut upstreams = String::new();
    let mut routes = String::new();
    let all: Vec<&str> = kinds.iter().map(|k| k.name).collect();
    for kind in &kinds {
        let others: Vec<&str> = all.iter().copied().filter(|k| *k != kind.name).collect();
        let tls = if kind.name == "tls" {
            "    tls: { verify: false }\n"
        } else {
            ""
        };
        for (suffix, errors) in [
            ("only", format!("[{}]", kind.name)),
            ("others", format!("[{}]", others.join(", "))),
        ] {
            let name = format!("{}-{suffix}", kind.name);
            upstreams.push_str(&format!(
                "  {name}:\n    endpoints: [\"{}\"]\n    timeouts: {{ connect: 300ms, read: 300ms, write: 300ms }}\n{tls}    breaker: {{ failure_when: {{ errors: {errors} }} }}\n",
                kind.endpoint
            ));
            routes.push_str(&format!(
                "  - {{ match: {{ path_prefix: /{name} }}, upstream: {name} }}\n"
            ));
        }
    }
    // `none` and `all`, on a resetting endpoint.
    for errors in ["none", "all"] {
        upstreams.push_str(&format!(
            "  errors-{errors}:\n    endpoints: [\"{}\"]\n    breaker: {{ failure_when: {{ errors: {errors} }} }}\n",
            resetting.addr()
        ));
        routes.push_str(&format!(
            "  - {{ match: {{ path_prefix: /errors-{errors} }}, upstream: errors-{errors} }}\n"
        ));
    }
    let gw = Gateway::start(&format!("upstreams:\n{upstreams}routes:\n{routes}")).await;

    for kind in &kinds {
        for suffix in ["only", "others"] {
            let name = format!("{}-{suffix}", kind.name);
            let status = if kind.name == "write_timeout" {
                post_large_body(gw.listen, &format!("/{name}"), 8 << 20).await
            } else {
                gw.get(&format!("/{name}")).await.status
            };
            assert_eq!(status, kind.status, "{name}");
            let expected = if suffix == "only" {
                (0.0, 1.0, 0.0)
            } else {
                (1.0, 0.0, 0.0)
            };
            assert_eq!(outcomes(&gw, &name).await, expected, "{name}");
        }
    }
    assert_eq!(gw.get("/errors-none").await.status, 502);
    assert_eq!(outcomes(&gw, "errors-none").await, (1.0, 0.0, 0.0));
    assert_eq!(gw.get("/errors-all").await.status, 502);
    assert_eq!(outcomes(&gw, "errors-all").await, (0.0, 1.0, 0.0));
}

#[tokio::test]
async fn on_plugin_error_decides_what_a_failed_predicate_call_counts_as() {
    let origin = start_origin(status_from_path()).await;
    // (upstream, its on_plugin_error setting, counts for a trapped call on a 200 and
    // on a 500 as (success, failure, ignored)).
    let policies = [
        ("default", "", (1.0, 1.0, 0.0)),
        ("rules", ", on_plugin_error: failure_when", (1.0, 1.0, 0.0)),
        (
            "fail",
            ", on_plugin_error: count_as_failure",
            (0.0, 2.0, 0.0),
        ),
        (
            "succeed",
            ", on_plugin_error: count_as_success",
            (2.0, 0.0, 0.0),
        ),
        ("ignore", ", on_plugin_error: ignore", (0.0, 0.0, 2.0)),
    ];
    let mut upstreams = String::new();
    let mut routes = String::new();
    for (name, setting, _) in &policies {
        upstreams.push_str(&format!(
            "  {name}:\n    endpoints: [\"{}\"]\n    breaker: {{ consecutive_failures: 100, predicate: hostile{setting} }}\n",
            origin.addr()
        ));
        routes.push_str(&format!(
            "  - {{ match: {{ path_prefix: /{name} }}, upstream: {name} }}\n"
        ));
    }
    let gw = Gateway::start(&format!(
        "plugins:\n{}upstreams:\n{upstreams}routes:\n{routes}",
        plugin_entry("hostile", "hostile-predicate", "predicate", "")
    ))
    .await;
    let mut conn = gw.conn().await;
    for (name, _, expected) in &policies {
        for status in [200, 500] {
            let response = conn
                .request(
                    "GET",
                    &format!("/{name}/{status}"),
                    &[("x-hostile", "panic")],
                    b"",
                )
                .await
                .expect("request");
            assert_eq!(response.status, status, "{name}: the answer is untouched");
        }
        assert_eq!(outcomes(&gw, name).await, *expected, "{name}");
    }
    assert_eq!(
        gw.metric("gateway_plugin_errors_total{kind=\"trap\",plugin=\"hostile\"}")
            .await,
        10.0,
        "every call trapped"
    );
}
