//! Hot reload: every way a file really changes is applied; invalid edits change
//! nothing; breaker state survives unrelated changes; reloads under load drop nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gateway_tests::{Gateway, Options, Reply, Request, echo, start_origin};

fn routes_to(
    upstream_addr: std::net::SocketAddr,
    other: std::net::SocketAddr,
    target: &str,
) -> String {
    format!(
        "upstreams:\n  a: {{ endpoints: [\"{upstream_addr}\"] }}\n  b: {{ endpoints: [\"{other}\"] }}\nroutes:\n  - {{ upstream: {target} }}\n"
    )
}

/// Polls until `/` is served by origin `expected` (the readiness of a reload).
async fn wait_served_by(gw: &Gateway, expected: &str) -> Duration {
    let started = Instant::now();
    loop {
        let response = gw.get("/").await;
        if response.status == 200 && response.json()["origin"] == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never served by {expected}:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const ERRORS: &str = "gateway_config_reloads_total{result=\"error\"}";
const SUCCESSES: &str = "gateway_config_reloads_total{result=\"success\"}";

#[tokio::test]
async fn every_way_of_changing_the_file_is_applied() {
    let a = start_origin(echo("a")).await;
    let b = start_origin(echo("b")).await;
    let (to_a, to_b) = (
        routes_to(a.addr(), b.addr(), "a"),
        routes_to(a.addr(), b.addr(), "b"),
    );
    let gw = Gateway::start(&to_a).await;
    wait_served_by(&gw, "a").await;
    let path = gw.config_path.clone();
    let dir = path.parent().expect("dir").to_path_buf();

    // Written in place.
    std::fs::write(&path, gw.config_with(&to_b)).expect("write");
    wait_served_by(&gw, "b").await;

    // An editor's save: write a temporary file, rename it over the config.
    let temp = dir.join(".gateway.yaml.swp");
    std::fs::write(&temp, gw.config_with(&to_a)).expect("write temp");
    std::fs::rename(&temp, &path).expect("rename");
    wait_served_by(&gw, "a").await;

    // Written in several chunks, closer together than the debounce: one valid reload,
    // never a half-written file.
    let before = (gw.metric(SUCCESSES).await, gw.metric(ERRORS).await);
    let full = gw.config_with(&to_b);
    let mut file = std::fs::File::create(&path).expect("truncate");
    for chunk in full.as_bytes().chunks(full.len() / 3 + 1) {
        use std::io::Write;
        file.write_all(chunk).expect("chunk");
        file.flush().expect("flush");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(file);
    wait_served_by(&gw, "b").await;
    assert_eq!(
        gw.metric(ERRORS).await,
        before.1,
        "a half-written file was never loaded"
    );
    assert_eq!(gw.metric(SUCCESSES).await, before.0 + 1.0);

    // Deleted, then recreated a little later: the old config serves meanwhile.
    std::fs::remove_file(&path).expect("delete");
    tokio::time::sleep(Duration::from_millis(300)).await; // longer than the debounce: the file is really gone for a while
    assert_eq!(
        gw.get("/").await.json()["origin"],
        "b",
        "the old config keeps serving while the file is missing"
    );
    std::fs::write(&path, gw.config_with(&to_a)).expect("recreate");
    wait_served_by(&gw, "a").await;
    assert_eq!(
        gw.metric(ERRORS).await,
        before.1,
        "a briefly missing file is not an error"
    );
}

#[tokio::test]
async fn a_configmap_symlink_swap_is_applied() {
    let a = start_origin(echo("a")).await;
    let b = start_origin(echo("b")).await;
    let mut gw = Gateway::start_with(
        &routes_to(a.addr(), b.addr(), "a"),
        Options {
            configmap: true,
            ..Options::default()
        },
    )
    .await;
    wait_served_by(&gw, "a").await;
    gw.configmap_swap(&routes_to(a.addr(), b.addr(), "b"));
    wait_served_by(&gw, "b").await;
    gw.configmap_swap(&routes_to(a.addr(), b.addr(), "a"));
    wait_served_by(&gw, "a").await;
}

#[tokio::test]
async fn sighup_and_the_admin_api_reload_when_watching_is_off() {
    let a = start_origin(echo("a")).await;
    let b = start_origin(echo("b")).await;
    let body = |target| {
        format!(
            "server: {{ watch_config: false }}\n{}",
            routes_to(a.addr(), b.addr(), target)
        )
    };
    let gw = Gateway::start(&body("a")).await;
    std::fs::write(&gw.config_path, gw.config_with(&body("b"))).expect("write");
    gw.signal("HUP");
    wait_served_by(&gw, "b").await;
    let config = gw.admin("GET", "/admin/config", &[], b"").await.json();
    assert_eq!(config["last_reload"]["trigger"], "sighup");
    assert_eq!(config["generation"], 2);

    std::fs::write(&gw.config_path, gw.config_with(&body("a"))).expect("write");
    let reply = gw.admin("POST", "/admin/reload", &[], b"").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["result"], "applied");
    assert_eq!(
        gw.get("/").await.json()["origin"],
        "a",
        "applied before the API answered"
    );
    let again = gw.admin("POST", "/admin/reload", &[], b"").await.json();
    assert_eq!(again["result"], "unchanged");
}

#[tokio::test]
async fn invalid_edits_change_nothing_and_say_why() {
    let a = start_origin(echo("a")).await;
    let b = start_origin(echo("b")).await;
    let good = routes_to(a.addr(), b.addr(), "a");
    let gw = Gateway::start(&format!("server: {{ watch_config: false }}\n{good}")).await;
    let cases = [
        (
            "bad YAML",
            "upstreams: [unclosed\n".to_string(),
            "invalid YAML",
        ),
        (
            "unknown key",
            format!("{good}  - {{ upstream: a, retry: 3 }}\n"),
            "unknown field `retry`",
        ),
        (
            "dangling reference",
            routes_to(a.addr(), b.addr(), "c"),
            "no upstream named `c`",
        ),
        (
            "impossible value",
            format!("{good}server: {{ threads: 0 }}\n"),
            "must be at least 1",
        ),
    ];
    for (n, (name, body, expected)) in cases.iter().enumerate() {
        std::fs::write(&gw.config_path, gw.config_with(body)).expect("write");
        let reply = gw.admin("POST", "/admin/reload", &[], b"").await;
        assert_eq!(reply.status, 422, "{name}");
        let json = reply.json();
        let errors = json["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(errors.contains(expected), "{name}: {errors}");
        assert!(
            errors.contains("gateway.yaml:"),
            "{name}: errors name file:line:col: {errors}"
        );
        assert_eq!(
            gw.get("/").await.json()["origin"],
            "a",
            "{name}: the old config keeps serving"
        );
        assert_eq!(gw.metric(ERRORS).await, (n + 1) as f64);
        assert!(gw.logs().contains(expected), "{name}: the error is logged");
    }
    let config = gw.admin("GET", "/admin/config", &[], b"").await.json();
    assert_eq!(config["generation"], 1);
    assert_eq!(config["last_reload"]["result"], "error");
}

#[tokio::test]
async fn an_open_breaker_survives_reloads_whether_its_upstream_changed_or_not() {
    let failing = start_origin(Arc::new(|_: &Request| Reply::text(500, "down"))).await;
    let other = start_origin(echo("other")).await;
    let body = |other_read: &str, open: &str| {
        format!(
            "server: {{ watch_config: false }}\nupstreams:\n  flaky:\n    endpoints: [\"{}\"]\n    breaker: {{ consecutive_failures: 1, open_duration: {open} }}\n  other:\n    endpoints: [\"{}\"]\n    timeouts: {{ read: {other_read} }}\nroutes:\n  - {{ match: {{ path_prefix: /flaky }}, upstream: flaky }}\n  - {{ upstream: other }}\n",
            failing.addr(),
            other.addr()
        )
    };
    let gw = Gateway::start(&body("5s", "60s")).await;
    assert_eq!(gw.get("/flaky").await.status, 500);
    assert_eq!(gw.get("/flaky").await.status, 503);

    std::fs::write(&gw.config_path, gw.config_with(&body("6s", "60s"))).expect("write");
    let reply = gw.admin("POST", "/admin/reload", &[], b"").await.json();
    assert_eq!(reply["fresh_upstreams"], serde_json::json!([]), "{reply}");
    assert_eq!(
        gw.get("/flaky").await.status,
        503,
        "still open after an unrelated reload"
    );
    assert_eq!(failing.stats().requests(), 1);

    // Its own breaker settings change: still open, for the rest of the period it had.
    std::fs::write(&gw.config_path, gw.config_with(&body("6s", "30s"))).expect("write");
    let reply = gw.admin("POST", "/admin/reload", &[], b"").await.json();
    assert_eq!(reply["fresh_upstreams"], serde_json::json!([]), "{reply}");
    let response = gw.get("/flaky").await;
    assert_eq!(response.status, 503, "a changed breaker keeps its state");
    assert_eq!(response.header("x-gateway-fallback"), Some("circuit_open"));
    let view = gw
        .admin("GET", "/api/v1/breakers/flaky", &[], b"")
        .await
        .json();
    assert!(
        view["open_remaining_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 30_000),
        "the open period it had, not the new 30 s: {view}"
    );
    assert_eq!(view["thresholds"]["open_duration_ms"], 30_000);
    assert_eq!(failing.stats().requests(), 1);
}

#[tokio::test]
async fn fifty_reloads_under_load_fail_no_request() {
    let slow_echo = |name: &'static str| -> gateway_tests::Handler {
        let inner = echo(name);
        Arc::new(move |req: &Request| {
            let reply = inner(req);
            if req.path() == "/slow" {
                reply.delayed(Duration::from_millis(150))
            } else {
                reply
            }
        })
    };
    let a = start_origin(slow_echo("a")).await;
    let b = start_origin(slow_echo("b")).await;
    let body = |target| {
        format!(
            "server: {{ watch_config: false }}\n{}",
            routes_to(a.addr(), b.addr(), target)
        )
    };
    let gw = Arc::new(Gateway::start(&body("a")).await);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for worker in 0..6 {
        let (gw, stop, ok, failures) = (gw.clone(), stop.clone(), ok.clone(), failures.clone());
        load.push(tokio::spawn(async move {
            // Workers 0-2 keep one connection alive; 3-4 connect per request; 5 sends slow requests.
            let mut conn = gw.conn().await;
            let mut sent = 0;
            while !stop.load(Ordering::SeqCst) && sent < 20_000 {
                sent += 1;
                let path = if worker == 5 { "/slow" } else { "/" };
                let result = if (3..5).contains(&worker) {
                    gateway_tests::http::get(gw.listen, path).await
                } else {
                    conn.get(path).await
                };
                match result {
                    Ok(r)
                        if r.status == 200
                            && ["a", "b"].contains(&r.json()["origin"].as_str().unwrap_or("")) =>
                    {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        failures
                            .lock()
                            .expect("lock")
                            .push(format!("{} {}", r.status, r.text()))
                    }
                    Err(e) => failures.lock().expect("lock").push(e.to_string()),
                }
            }
        }));
    }
    for i in 0..50 {
        let target = if i % 2 == 0 { "b" } else { "a" };
        std::fs::write(&gw.config_path, gw.config_with(&body(target))).expect("write");
        let reply = gw.admin("POST", "/admin/reload", &[], b"").await;
        assert_eq!(reply.json()["result"], "applied", "reload {i}");
        // Traffic runs between reloads: some requests answered since this one.
        let answered = ok.load(Ordering::Relaxed);
        gateway_tests::wait_until(
            "requests between reloads",
            Duration::from_secs(10),
            async || ok.load(Ordering::Relaxed) >= answered + 11,
        )
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.expect("load task");
    }
    let failures = failures.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "{} failed requests, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(
        ok.load(Ordering::Relaxed) > 500,
        "load too light to mean anything: {}",
        ok.load(Ordering::Relaxed)
    );
    assert_eq!(gw.metric(SUCCESSES).await, 50.0);
}
