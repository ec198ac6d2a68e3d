//! Gateways behind one balancer share what they learn (docs/OPERATIONS.md, "Running a
//! fleet"): three real gateway processes and a real `redis-server`. A trip on one
//! instance opens the others; an operator's action on one reaches all; with Redis gone
//! each stands alone, and when it is back they resynchronise; an unreachable Redis at
//! start is reported and traffic flows.

use std::time::{Duration, Instant};

use gateway_tests::redis::RedisServer;
use gateway_tests::{Gateway, Scripted, echo, start_origin};

fn body(redis: &str, cluster: &str, instance: &str, origin: std::net::SocketAddr) -> String {
    format!(
        "cluster: {{ redis_url: \"{redis}\", name: {cluster}, instance: {instance} }}\nserver: {{ watch_config: false }}\nupstreams:\n  api:\n    endpoints: [\"{origin}\"]\n    breaker: {{ consecutive_failures: 1, open_duration: 30s }}\nroutes:\n  - {{ upstream: api }}\n"
    )
}

async fn fleet(redis: &RedisServer, origin: std::net::SocketAddr) -> (String, Vec<Gateway>) {
    // Unique across test processes too: another suite's fleet may restart a Redis on a
    // port this one used (seen with two suites running at once), and a shared name
    // would then join the two fleets.
    let cluster = format!("t{}-{}", std::process::id(), redis.addr.port());
    let mut gateways = Vec::new();
    for instance in ["a", "b", "c"] {
        gateways.push(Gateway::start(&body(&redis.url(), &cluster, instance, origin)).await);
    }
    for gw in &gateways {
        until_connected(gw, &cluster, 1.0).await;
    }
    (cluster, gateways)
}

async fn until_connected(gw: &Gateway, cluster: &str, value: f64) {
    let series = format!("gateway_cluster_connected{{cluster=\"{cluster}\"}}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while gw.metric(&series).await != value {
        assert!(
            Instant::now() < deadline,
            "{series} never {value}:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::test]
async fn a_trip_on_one_instance_opens_the_others_within_a_bounded_time() {
    let redis = RedisServer::start().await;
    let (_failing, handler) = Scripted::new(500);
    let origin = start_origin(handler).await;
    let (_cluster, gws) = fleet(&redis, origin.addr()).await;
    let (a, b, c) = (&gws[0], &gws[1], &gws[2]);
    let mut convergence = Vec::new();
    for round in 0..50 {
        // Traffic through A alone: A trips.
        assert_eq!(a.get("/").await.status, 500, "round {round}");
        let tripped = Instant::now();
        for other in [b, c] {
            // The state moves first, its transition reaches the history a moment later.
            let view = other
                .wait_breaker("api", "adopted A's open", Duration::from_secs(5), |v| {
                    v["state"] == "open"
                        && v["transitions"]
                            .as_array()
                            .and_then(|t| t.last())
                            .is_some_and(|t| t["to"] == "open")
                })
                .await;
            if round == 0 {
                assert_eq!(view["origin"], "a", "{view}");
                let t = view["transitions"]
                    .as_array()
                    .and_then(|t| t.last())
                    .cloned();
                let t = t.unwrap_or_default();
                assert_eq!(t["reason"], "adopted", "{view}");
                assert_eq!(t["origin"], "a");
                assert_eq!(t["remote_reason"], "consecutive_failures");
                assert!(
                    view["open_remaining_ms"]
                        .as_u64()
                        .is_some_and(|ms| ms > 25_000 && ms <= 30_000),
                    "the rest of A's period: {view}"
                );
            }
        }
        convergence.push(tripped.elapsed());
        // An operator resets A; the reset reaches B and C.
        let r = a
            .admin("POST", "/api/v1/breakers/api/reset", &[], b"")
            .await;
        assert_eq!(r.status, 200);
        for other in [b, c] {
            other
                .wait_breaker("api", "reset by the fleet", Duration::from_secs(5), |v| {
                    v["state"] == "closed"
                })
                .await;
        }
    }
    convergence.sort();
    let (p50, p99) = (
        percentile(&convergence, 0.5),
        percentile(&convergence, 0.99),
    );
    eprintln!(
        "fleet convergence over {} trips (A trips -> B and C open, read through their admin API): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        convergence.len(),
        p50.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
        convergence[convergence.len() - 1].as_secs_f64() * 1000.0
    );
    assert!(p99 < Duration::from_secs(2), "p99 {p99:?}");
    // B and C never sent the upstream a request: only the fleet told them.
    assert_eq!(origin.stats().requests(), 50);
}

#[tokio::test]
async fn an_operator_action_on_one_instance_reaches_every_other() {
    let redis = RedisServer::start().await;
    let origin = start_origin(echo("svc")).await;
    let (_cluster, gws) = fleet(&redis, origin.addr()).await;
    let (a, b, c) = (&gws[0], &gws[1], &gws[2]);
    let r = b.set_mode("api", "forced_open").await;
    assert_eq!(r.status, 200);
    for other in [a, c] {
        let view = other
            .wait_breaker(
                "api",
                "forced open by B's operator",
                Duration::from_secs(5),
                |v| v["state"] == "forced_open",
            )
            .await;
        assert_eq!(view["mode_source"]["from"], "override", "{view}");
        assert!(
            view["mode_source"]["by"]
                .as_str()
                .is_some_and(|by| by.starts_with("fleet:b (127.0.0.1:")),
            "{view}"
        );
        assert_eq!(other.get("/").await.status, 503);
    }
    let r = b.set_mode("api", "automatic").await;
    assert_eq!(r.status, 200);
    for other in [a, c] {
        other
            .wait_breaker("api", "back to automatic", Duration::from_secs(5), |v| {
                v["state"] == "closed" && v["mode_source"]["from"] == "file"
            })
            .await;
        assert_eq!(other.get("/").await.status, 200);
    }
}

#[tokio::test]
async fn with_redis_gone_each_instance_stands_alone_and_resynchronises_when_it_is_back() {
    let mut redis = RedisServer::start().await;
    let (_failing, handler) = Scripted::new(500);
    let origin = start_origin(handler).await;
    let (cluster, gws) = fleet(&redis, origin.addr()).await;
    let (a, b, c) = (&gws[0], &gws[1], &gws[2]);
    redis.stop();
    for gw in &gws {
        until_connected(gw, &cluster, 0.0).await;
    }
    // Alone: A's breaker still trips and recovers on its own; B and C are untouched.
    assert_eq!(a.get("/").await.status, 500);
    assert_eq!(a.breaker("api").await["state"], "open");
    assert_eq!(a.get("/").await.status, 503);
    assert_eq!(
        a.admin("POST", "/api/v1/breakers/api/reset", &[], b"")
            .await
            .status,
        200
    );
    assert_eq!(a.breaker("api").await["state"], "closed");
    assert_eq!(b.breaker("api").await["state"], "closed");
    assert_eq!(c.breaker("api").await["state"], "closed");
    // A trips again while the fleet cannot hear it...
    assert_eq!(a.get("/").await.status, 500);
    assert_eq!(a.breaker("api").await["state"], "open");
    // ...and the others learn it once Redis is back (A answers their sync request).
    redis.restart().await;
    for gw in &gws {
        until_connected(gw, &cluster, 1.0).await;
    }
    for other in [b, c] {
        let view = other
            .wait_breaker("api", "resynchronised", Duration::from_secs(10), |v| {
                v["state"] == "open"
            })
            .await;
        assert_eq!(view["origin"], "a", "{view}");
    }
}

#[tokio::test]
async fn an_unreachable_redis_at_start_is_reported_and_traffic_flows() {
    let origin = start_origin(echo("svc")).await;
    let dead = gateway_tests::dead_address();
    let gw = Gateway::start(&body(
        &format!("redis://{dead}"),
        "lonely",
        "a",
        origin.addr(),
    ))
    .await;
    assert_eq!(gw.get("/").await.status, 200);
    gw.wait_for_log(&["cannot reach the fleet's Redis", "stands alone"])
        .await;
    assert_eq!(
        gw.metric("gateway_cluster_connected{cluster=\"lonely\"}")
            .await,
        0.0
    );
    let health = gw.admin("GET", "/health/upstreams", &[], b"").await.json();
    assert_eq!(health[0]["fleet"], "alone", "{health}");
    // Its breaker works as a lone gateway's does.
    let r = gw.set_mode("api", "forced_open").await;
    assert_eq!(r.status, 200);
    assert_eq!(gw.get("/").await.status, 503);
}

#[tokio::test]
async fn a_clear_made_while_redis_was_down_wins_when_the_fleet_meets_again() {
    let mut redis = RedisServer::start().await;
    let origin = start_origin(echo("svc")).await;
    let (cluster, gws) = fleet(&redis, origin.addr()).await;
    let (a, b, c) = (&gws[0], &gws[1], &gws[2]);
    let r = b.set_mode("api", "forced_open").await;
    assert_eq!(r.status, 200);
    for other in [a, c] {
        other
            .wait_breaker("api", "forced open by B", Duration::from_secs(5), |v| {
                v["state"] == "forced_open"
            })
            .await;
    }
    redis.stop();
    for gw in &gws {
        until_connected(gw, &cluster, 0.0).await;
    }
    // Alone, A's operator clears it: only A knows.
    let r = a.set_mode("api", "automatic").await;
    assert_eq!(r.status, 200);
    assert_eq!(b.breaker("api").await["state"], "forced_open");
    redis.restart().await;
    for gw in &gws {
        until_connected(gw, &cluster, 1.0).await;
    }
    // The clear is the newest action: it wins everywhere, and B's older forced-open,
    // sent in B's own sync, does not come back to A.
    for gw in [a, b, c] {
        gw.wait_breaker(
            "api",
            "cleared by A's newer action",
            Duration::from_secs(10),
            |v| v["state"] == "closed" && v["mode_source"]["from"] == "file",
        )
        .await;
    }
}
