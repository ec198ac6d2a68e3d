//! What a client gets instead of the upstream: the exact `x-gateway-fallback` reason
//! of each kind of fallback, the `Retry-After` a static fallback carries (or keeps),
//! and fallback chains whose fallback upstream is open too.

use std::sync::Arc;
use std::time::Duration;

use gateway_tests::{Gateway, Reply, Request, dead_address, start_origin, wait_until};

/// Every value of a header in a response (names are lower-cased by the client).
fn all_values<'a>(response: &'a gateway_tests::http::Response, name: &str) -> Vec<&'a str> {
    response
        .headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[tokio::test]
async fn every_static_fallback_says_exactly_why_and_when_to_retry() {
    let slow = start_origin(Arc::new(|_: &Request| {
        Reply::text(200, "slow").delayed(Duration::from_secs(2))
    }))
    .await;
    let fallback =
        "      fallback: { status: 503, headers: { x-static: \"yes\" }, body: \"static\" }\n";
    let gw = Gateway::start(&format!(
        "upstreams:\n  flaky:\n    endpoints: [\"{}\"]\n    breaker:\n      consecutive_failures: 1\n      open_duration: 30s\n{fallback}  busy:\n    endpoints: [\"{}\"]\n    max_concurrent_requests: 1\n    breaker:\n{fallback}routes:\n  - {{ match: {{ path_prefix: /busy }}, upstream: busy }}\n  - {{ upstream: flaky }}\n",
        dead_address(),
        slow.addr()
    ))
    .await;

    // The upstream fails: no retry hint (nothing says when it will be back), and the
    // connection ends with the answer.
    let failed = gw.get("/").await;
    assert_eq!((failed.status, failed.text()), (503, "static".to_string()));
    assert_eq!(failed.header("x-static"), Some("yes"));
    assert_eq!(failed.header("x-gateway-fallback"), Some("upstream_failed"));
    assert_eq!(failed.header("connection"), Some("close"));
    assert_eq!(all_values(&failed, "retry-after"), Vec::<&str>::new());

    // Open: the time left of the 30 s open period, in whole seconds rounded up.
    let open = gw.get("/").await;
    assert_eq!((open.status, open.text()), (503, "static".to_string()));
    assert_eq!(open.header("x-gateway-fallback"), Some("circuit_open"));
    let retry_after = all_values(&open, "retry-after");
    assert!(
        matches!(retry_after.as_slice(), ["30"] | ["29"]),
        "{retry_after:?}"
    );

    // The bulkhead is full while one slow request is in flight.
    let listen = gw.listen;
    let in_flight = tokio::spawn(async move { gateway_tests::http::get(listen, "/busy").await });
    wait_until(
        "the slow request reached the origin",
        Duration::from_secs(10),
        async || slow.stats().requests() == 1,
    )
    .await;
    let overloaded = gw.get("/busy").await;
    assert_eq!(
        (overloaded.status, overloaded.text()),
        (503, "static".to_string())
    );
    assert_eq!(overloaded.header("x-gateway-fallback"), Some("overloaded"));
    assert_eq!(all_values(&overloaded, "retry-after"), ["1"]);
    assert_eq!(
        in_flight.await.expect("task").expect("response").status,
        200
    );

    for (upstream, reason) in [
        ("flaky", "upstream_failed"),
        ("flaky", "circuit_open"),
        ("busy", "overloaded"),
    ] {
        assert_eq!(
            gw.metric(&format!(
                "gateway_fallbacks_total{{kind=\"static\",reason=\"{reason}\",upstream=\"{upstream}\"}}"
            ))
            .await,
            1.0,
            "{upstream} {reason}"
        );
    }
}

/// A `Retry-After` the operator wrote in the static fallback is the one the client
/// gets, however the operator spelled the name.
#[tokio::test]
async fn a_static_fallback_keeps_its_own_retry_after() {
    let gw = Gateway::start(&format!(
        "upstreams:\n  api:\n    endpoints: [\"{}\"]\n    breaker:\n      consecutive_failures: 1\n      open_duration: 30s\n      fallback: {{ status: 503, headers: {{ Retry-After: \"120\" }}, body: maintenance }}\nroutes:\n  - {{ upstream: api }}\n",
        dead_address()
    ))
    .await;
    assert_eq!(gw.get("/").await.text(), "maintenance");
    let open = gw.get("/").await;
    assert_eq!(open.header("x-gateway-fallback"), Some("circuit_open"));
    assert_eq!(all_values(&open, "retry-after"), ["120"]);
}

#[tokio::test]
async fn a_fallback_chain_ends_at_the_fallback_of_the_last_upstream_that_rejects() {
    let backup = start_origin(gateway_tests::echo("backup")).await;
    // front → middle → last, each opening on its first failure; `last` ends the chain
    // with a static answer, `middle` has none of its own.
    let gw = Gateway::start(&format!(
        r#"upstreams:
  front:
    endpoints: ["{dead}"]
    breaker: {{ consecutive_failures: 1, open_duration: 30s, fallback: {{ upstream: middle }} }}
  middle:
    endpoints: ["{backup}"]
    breaker: {{ consecutive_failures: 1, open_duration: 30s, fallback: {{ upstream: last }} }}
  last:
    endpoints: ["{dead}"]
    breaker:
      consecutive_failures: 1
      open_duration: 30s
      fallback: {{ status: 200, json: {{ from: last-static }} }}
routes:
  - {{ match: {{ path_prefix: /middle }}, upstream: middle }}
  - {{ match: {{ path_prefix: /last }}, upstream: last }}
  - {{ upstream: front }}
"#,
        dead = dead_address(),
        backup = backup.addr()
    ))
    .await;
    // The front fails (a failure is not rerouted: the request may have been sent).
    let failed = gw.get("/").await;
    assert_eq!(failed.status, 502);
    assert_eq!(failed.json_str("/code"), "UPSTREAM_UNAVAILABLE");
    // Open: the middle upstream serves in its place.
    let rerouted = gw.get("/").await;
    assert_eq!(rerouted.json_str("/origin"), "backup");
    assert_eq!(rerouted.header("x-gateway-fallback"), Some("circuit_open"));
    assert_eq!(
        rerouted.header("x-gateway-fallback-upstream"),
        Some("middle")
    );

    // Now the middle upstream is open too (forced, as an operator would), and the
    // last one has failed and opened: the last one's static fallback answers.
    let forced = gw
        .admin(
            "PUT",
            "/api/v1/breakers/middle/state",
            &[],
            br#"{"state":"forced_open"}"#,
        )
        .await;
    assert_eq!(forced.status, 200);
    assert_eq!(
        gw.get("/last").await.json()["from"],
        "last-static",
        "the last upstream's own failure"
    );
    let served = backup.stats().requests();
    let end = gw.get("/").await;
    assert_eq!(end.status, 200, "{}", end.text());
    assert_eq!(end.json()["from"], "last-static");
    assert_eq!(end.header("x-gateway-fallback"), Some("circuit_open"));
    assert_eq!(
        backup.stats().requests(),
        served,
        "middle is open: not called"
    );
    for upstream in ["front", "middle", "last"] {
        assert_eq!(
            gw.breaker(upstream).await["state"],
            if upstream == "middle" {
                "forced_open"
            } else {
                "open"
            },
            "{upstream}"
        );
    }
}
