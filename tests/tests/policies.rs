//! Breaker and pool policies on real traffic: the default breaker (a failure rate over
//! a time window, once `minimum_requests` calls were made), `backoff` with jitter
//! across re-opens, `least_requests`, and outlier ejection's share cap, doubling,
//! `max_ejection` and reset.

use std::sync::Arc;
use std::time::Duration;

use gateway_tests::{
    Gateway, Reply, Request, Scripted, dead_address, one_upstream, start_origin, wait_until,
};

#[tokio::test]
async fn the_default_breaker_opens_at_half_of_twenty_calls_failing() {
    let (script, handler) = Scripted::new(200);
    let origin = start_origin(handler).await;
    // No breaker block: failure_rate 0.5 over 30 s, minimum_requests 20.
    let gw = Gateway::start(&one_upstream(&[origin.addr()], "")).await;
    let mut conn = gw.conn().await;
    for _ in 0..11 {
        assert_eq!(conn.get("/").await.expect("request").status, 200);
    }
    script.set_status(500);
    // 9 of 20, then 10 of 21: under half.
    for _ in 0..10 {
        assert_eq!(conn.get("/").await.expect("request").status, 500);
    }
    let breaker = gw.breaker("api").await;
    assert_eq!(breaker["state"], "closed", "{breaker}");
    assert_eq!(breaker["window"]["calls"], 21, "{breaker}");
    // 11 of 22: half. It opens on this call, whose 500 still reaches the client.
    assert_eq!(conn.get("/").await.expect("request").status, 500);
    let breaker = gw.breaker("api").await;
    assert_eq!(breaker["state"], "open", "{breaker}");
    let rejected = conn.get("/").await.expect("request");
    assert_eq!(rejected.status, 503);
    assert_eq!(rejected.json_str("/code"), "CIRCUIT_BREAKER_OPEN");
    gw.wait_for_log(&["breaker transition", "reason=\"failure_rate\""])
        .await;
}

#[tokio::test]
async fn fewer_than_minimum_requests_never_open_the_default_breaker() {
    let (_script, handler) = Scripted::new(500);
    let origin = start_origin(handler).await;
    let gw = Gateway::start(&one_upstream(&[origin.addr()], "")).await;
    let mut conn = gw.conn().await;
    for _ in 0..19 {
        assert_eq!(conn.get("/").await.expect("request").status, 500);
    }
    assert_eq!(gw.breaker("api").await["state"], "closed");
    assert_eq!(conn.get("/").await.expect("request").status, 500);
    assert_eq!(gw.breaker("api").await["state"], "open", "the 20th call");
}

#[tokio::test]
async fn backoff_lengthens_each_reopen_within_its_jitter_and_cap() {
    let gw = Gateway::start(&one_upstream(
        &[dead_address()],
        "    breaker:\n      consecutive_failures: 1\n      open_duration: 200ms\n      backoff: { multiplier: 2, max: 1s, jitter: 0.5 }\n",
    ))
    .await;
    // Open periods of 200 ms, then 400, 800, 1000 (the cap), each (the first too)
    // shortened by up to half at random.
    let mut periods = Vec::new();
    for (i, full) in [200u64, 400, 800, 1000].into_iter().enumerate() {
        if i > 0 {
            gw.wait_open_period_over("api").await;
        }
        // The first call fails while closed; every later one is a failed probe.
        assert_eq!(gw.get("/").await.status, 502);
        gw.wait_for_log(&["breaker transition", "to=\"open\"", "open_for_ms="])
            .await;
        let opened: Vec<u64> = gw
            .logs()
            .lines()
            .filter(|l| l.contains("breaker transition") && l.contains("to=\"open\""))
            .filter_map(|l| {
                l.split("open_for_ms=")
                    .nth(1)?
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        assert_eq!(opened.len(), i + 1, "one opening per round: {opened:?}");
        let period = opened[i];
        assert!(
            (full / 2..=full).contains(&period),
            "opening {i}: {period} ms, expected {}..={full}",
            full / 2
        );
        periods.push(period);
    }
    assert!(
        periods.windows(2).filter(|w| w[1] > w[0]).count() >= 1,
        "the periods grow: {periods:?}"
    );
}

#[tokio::test]
async fn least_requests_sends_new_requests_away_from_a_busy_endpoint() {
    let handler = |name: &'static str| -> gateway_tests::Handler {
        Arc::new(move |req: &Request| {
            let reply = Reply::text(200, name);
            if req.path() == "/hold" {
                reply.delayed(Duration::from_secs(2))
            } else {
                reply
            }
        })
    };
    let first = start_origin(handler("first")).await;
    let second = start_origin(handler("second")).await;
    let gw = Gateway::start(&one_upstream(
        &[first.addr(), second.addr()],
        "    load_balancing: least_requests\n",
    ))
    .await;
    let listen = gw.listen;
    let held = tokio::spawn(async move { gateway_tests::http::get(listen, "/hold").await });
    wait_until(
        "the held request reached an origin",
        Duration::from_secs(10),
        async || first.stats().requests() + second.stats().requests() == 1,
    )
    .await;
    let busy = if first.stats().requests() == 1 {
        "first"
    } else {
        "second"
    };
    let mut conn = gw.conn().await;
    for _ in 0..10 {
        let answer = conn.get("/quick").await.expect("request").text();
        assert_ne!(answer, busy, "a request went to the busy endpoint");
    }
    assert_eq!(held.await.expect("task").expect("response").text(), busy);
}

/// The `ejected_for_ms` of each ejection of `endpoint` logged so far.
fn ejections(gw: &Gateway, endpoint: std::net::SocketAddr) -> Vec<u64> {
    gw.logs()
        .lines()
        .filter(|l| l.contains("endpoint ejected") && l.contains(&endpoint.to_string()))
        .filter_map(|l| {
            l.split("ejected_for_ms=")
                .nth(1)?
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test]
async fn outlier_ejection_doubles_up_to_its_cap_and_resets_after_a_success() {
    let (bad, handler) = Scripted::new(500);
    let bad_origin = start_origin(handler).await;
    let good = start_origin(Arc::new(|_: &Request| Reply::text(200, "good"))).await;
    let gw = Gateway::start(&one_upstream(
        &[bad_origin.addr(), good.addr()],
        "    outlier_detection: { consecutive_failures: 1, ejection: 200ms, max_ejection: 300ms }\n    breaker: { consecutive_failures: 1000 }\n",
    ))
    .await;
    let endpoint = bad_origin.addr();
    // Requests until the bad endpoint has served one more; its status is returned.
    let until_bad_serves = async |gw: &Gateway| {
        let seen = bad_origin.stats().requests();
        for _ in 0..100 {
            let status = gw.get("/").await.status;
            if bad_origin.stats().requests() > seen {
                return status;
            }
        }
        panic!("the bad endpoint got no request in 100");
    };
    let back = async |gw: &Gateway| {
        wait_until(
            "the endpoint back from ejection",
            Duration::from_secs(10),
            async || {
                let report = gw.admin("GET", "/health/upstreams", &[], b"").await.json();
                report[0]["endpoints"]
                    .as_array()
                    .is_some_and(|list| list.iter().all(|e| e["ejected"] == false))
            },
        )
        .await;
    };
    assert_eq!(until_bad_serves(&gw).await, 500);
    back(&gw).await;
    assert_eq!(until_bad_serves(&gw).await, 500);
    back(&gw).await;
    assert_eq!(until_bad_serves(&gw).await, 500);
    assert_eq!(
        ejections(&gw, endpoint),
        [200, 300, 300],
        "doubled, then held at max_ejection"
    );
    // A success after it returns resets the doubling.
    back(&gw).await;
    bad.set_status(200);
    assert_eq!(until_bad_serves(&gw).await, 200);
    bad.set_status(500);
    assert_eq!(until_bad_serves(&gw).await, 500);
    assert_eq!(ejections(&gw, endpoint), [200, 300, 300, 200]);
}

#[tokio::test]
async fn outlier_ejection_never_takes_more_than_its_share_of_the_pool() {
    let bad = |name: &'static str| -> gateway_tests::Handler {
        Arc::new(move |_: &Request| Reply::text(500, name))
    };
    let bad_a = start_origin(bad("a")).await;
    let bad_b = start_origin(bad("b")).await;
    let good = start_origin(Arc::new(|_: &Request| Reply::text(200, "good"))).await;
    // 50 % of 3 endpoints is 1.
    let gw = Gateway::start(&one_upstream(
        &[bad_a.addr(), bad_b.addr(), good.addr()],
        "    outlier_detection: { consecutive_failures: 1, ejection: 60s, max_ejection_percent: 50 }\n    breaker: { consecutive_failures: 1000 }\n",
    ))
    .await;
    for _ in 0..12 {
        gw.get("/").await;
    }
    let report = gw.admin("GET", "/health/upstreams", &[], b"").await.json();
    let ejected: Vec<&str> = report[0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter(|e| e["ejected"] == true)
        .filter_map(|e| e["address"].as_str())
        .collect();
    assert_eq!(ejected.len(), 1, "{report}");
    // The bad endpoint that could not be ejected keeps getting traffic; the ejected
    // one gets none.
    let (kept, gone) = if ejected[0] == bad_a.addr().to_string() {
        (&bad_b, &bad_a)
    } else {
        (&bad_a, &bad_b)
    };
    let (kept_before, gone_before) = (kept.stats().requests(), gone.stats().requests());
    for _ in 0..6 {
        gw.get("/").await;
    }
    assert!(kept.stats().requests() > kept_before);
    assert_eq!(gone.stats().requests(), gone_before);
}
