//! Breaker state survives everything an operator does (docs/OPERATIONS.md, "What
//! survives what"): a reload that changes an upstream keeps its breaker, endpoints and
//! bulkhead; operator modes come from the file or from overrides kept across restarts;
//! a graceful upgrade hands state over; a shadow policy reports without acting.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use gateway_tests::{Gateway, Scripted, echo, http, start_origin};

fn private_dir(parent: &Path, name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    dir
}

/// Runs `gateway run` on `body` expecting it to refuse to start; (exit code, stderr).
fn start_refused(body: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.yaml");
    let (listen, admin) = (gateway_tests::free_port(), gateway_tests::free_port());
    std::fs::write(
        &path,
        format!("listeners:\n  - address: \"127.0.0.1:{listen}\"\nadmin:\n  address: \"127.0.0.1:{admin}\"\n{body}"),
    )
    .expect("write config");
    let mut child = std::process::Command::new(gateway_tests::gateway_binary())
        .args(["run", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("gateway runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the gateway started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn reload(gw: &Gateway, body: &str) -> Value {
    std::fs::write(&gw.config_path, gw.config_with(body)).expect("write config");
    let r = gw.admin("POST", "/admin/reload", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let reply = r.json();
    assert_eq!(reply["result"], "applied", "{reply}");
    reply
}

fn remaining_ms(view: &Value) -> u64 {
    view["open_remaining_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("not open: {view}"))
}

fn upstream_body(endpoints: &[std::net::SocketAddr], connect: &str, consecutive: u32) -> String {
    let list = endpoints
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "server: {{ watch_config: false }}\nupstreams:\n  api:\n    endpoints: [{list}]\n    timeouts: {{ connect: {connect} }}\n    outlier_detection: {{ consecutive_failures: 2, ejection: 60s, max_ejection_percent: 50 }}\n    breaker:\n      consecutive_failures: {consecutive}\n      open_duration: 60s\n      window: {{ kind: count, size: 20 }}\nroutes:\n  - {{ upstream: api }}\n"
    )
}

#[tokio::test]
async fn an_open_breaker_and_its_endpoints_survive_a_reload_that_changes_the_upstream() {
    let (_a, a_handler) = Scripted::new(500);
    let (_b, b_handler) = Scripted::new(500);
    let (a_origin, b_origin) = (start_origin(a_handler).await, start_origin(b_handler).await);
    let c_origin = start_origin(echo("c")).await;
    let (a_addr, b_addr, c_addr) = (a_origin.addr(), b_origin.addr(), c_origin.addr());
    let gw = Gateway::start(&upstream_body(&[a_addr, b_addr], "1s", 4)).await;
    // Round robin a, b, a, b: four failures open the breaker; a failed twice in a row
    // and is ejected (b too would exceed the 50 % cap).
    for _ in 0..4 {
        assert_eq!(gw.get("/").await.status, 500);
    }
    // One call rejected while open: the count is the breaker's own, a new breaker
    // would start at zero.
    assert_eq!(gw.get("/").await.status, 503);
    let before = gw.breaker("api").await;
    assert_eq!(before["state"], "open", "{before}");
    assert_eq!(before["rejections"], 1, "{before}");
    let health = gw.admin("GET", "/health/upstreams", &[], b"").await.json();
    let ejected_before: Vec<String> = health[0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter(|e| e["ejected"] == true)
        .map(|e| e["address"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ejected_before.len(), 1, "{health}");
    let ejected = ejected_before[0].clone();
    let kept = if ejected == a_addr.to_string() {
        a_addr
    } else {
        b_addr
    };
    let removed = if kept == a_addr { b_addr } else { a_addr };

    // New connect timeout, new threshold, one endpoint removed and one added.
    let reply = reload(&gw, &upstream_body(&[kept, c_addr], "2s", 7)).await;
    assert_eq!(
        reply["fresh_upstreams"],
        serde_json::json!([{ "upstream": "api", "part": format!("endpoint {c_addr}"), "why": "new endpoint" }]),
        "only the new endpoint starts fresh: {reply}"
    );
    let after = gw.breaker("api").await;
    assert_eq!(after["state"], "open", "kept open: {after}");
    assert_eq!(after["thresholds"]["consecutive_failures"], 7, "{after}");
    assert!(
        remaining_ms(&after) <= remaining_ms(&before) && remaining_ms(&after) > 50_000,
        "the rest of the open period, not a new one: before {before}, after {after}"
    );
    assert_eq!(after["rejections"], 1, "the same breaker: {after}");
    let response = gw.get("/").await;
    assert_eq!(response.status, 503);
    assert_eq!(response.header("x-gateway-fallback"), Some("circuit_open"));
    let health = gw.admin("GET", "/health/upstreams", &[], b"").await.json();
    let endpoints = health[0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .clone();
    let state_of = |addr: std::net::SocketAddr| {
        endpoints
            .iter()
            .find(|e| e["address"] == addr.to_string())
            .cloned()
            .unwrap_or_else(|| panic!("{addr} missing: {health}"))
    };
    assert_eq!(state_of(kept)["ejected"], true, "ejection kept: {health}");
    assert_eq!(state_of(c_addr)["ejected"], false);

    // A removed endpoint's state goes with it: the ejected one, removed and added
    // back, starts fresh (not ejected).
    let reply = reload(&gw, &upstream_body(&[c_addr, removed], "2s", 7)).await;
    assert_eq!(
        reply["fresh_upstreams"][0]["part"],
        format!("endpoint {removed}"),
        "{reply}"
    );
    let reply = reload(&gw, &upstream_body(&[kept, c_addr, removed], "2s", 7)).await;
    assert_eq!(
        reply["fresh_upstreams"][0]["part"],
        format!("endpoint {kept}"),
        "{reply}"
    );
    let health = gw.admin("GET", "/health/upstreams", &[], b"").await.json();
    let back = health[0]["endpoints"]
        .as_array()
        .and_then(|list| {
            list.iter()
                .find(|e| e["address"] == kept.to_string())
                .cloned()
        })
        .unwrap_or_default();
    assert_eq!(
        back["ejected"], false,
        "its ejection went with it: {health}"
    );
    // A window of another shape is rebuilt, and the reload says so. (Opening started an
    // empty window; fill one on a closed breaker.)
    let r = gw
        .admin("POST", "/api/v1/breakers/api/reset", &[], b"")
        .await;
    assert_eq!(r.status, 200);
    for _ in 0..4 {
        gw.get("/").await;
    }
    assert_eq!(gw.breaker("api").await["window"]["calls"], 4);
    let reshaped = upstream_body(&[kept, c_addr, removed], "2s", 7)
        .replace("size: 20", "size: 2")
        .replace(
            "open_duration: 60s",
            "open_duration: 60s\n      minimum_requests: 2",
        );
    let reply = reload(&gw, &reshaped).await;
    let why = reply["fresh_upstreams"][0]["why"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains("the last 20 calls")
            && why.contains("the last 2 calls")
            && why.contains("2 calls re-bucketed, 2 dropped"),
        "{reply}"
    );
    assert_eq!(gw.breaker("api").await["window"]["calls"], 2);
}

#[tokio::test]
async fn a_reload_never_lets_a_burst_past_the_bulkhead() {
    // Long enough that the held requests outlast the reload and the burst by far on a
    // loaded machine; the test waits for them, not for the delay.
    let (slow, handler) = Scripted::new(200);
    slow.set_delay(4000);
    let origin = start_origin(handler).await;
    let body = |read: &str| {
        format!(
            "server: {{ watch_config: false }}\nupstreams:\n  api:\n    endpoints: [\"{}\"]\n    max_concurrent_requests: 3\n    timeouts: {{ read: {read} }}\nroutes:\n  - {{ upstream: api }}\n",
            origin.addr()
        )
    };
    let gw = Gateway::start(&body("10s")).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let listen = gw.listen;
        held.push(tokio::spawn(async move {
            http::Conn::connect(listen).await?.get("/").await
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw
        .metric("gateway_upstream_requests_in_flight{upstream=\"api\"}")
        .await
        < 3.0
    {
        assert!(Instant::now() < deadline, "three requests never in flight");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The upstream's definition changes: the bulkhead must still count the three.
    reload(&gw, &body("11s")).await;
    let mut burst = Vec::new();
    for _ in 0..5 {
        let listen = gw.listen;
        burst.push(tokio::spawn(async move {
            http::Conn::connect(listen).await?.get("/").await
        }));
    }
    for task in burst {
        let r = task.await.expect("task").expect("response");
        assert_eq!(r.status, 503, "admitted past the bulkhead");
        assert_eq!(r.header("x-gateway-fallback"), Some("overloaded"));
    }
    for task in held {
        assert_eq!(task.await.expect("task").expect("response").status, 200);
    }
}

fn modes_body(state_dir: &Path, mode: &str) -> String {
    format!(
        "server: {{ watch_config: false, state_dir: \"{}\" }}\nupstreams:\n  api:\n    endpoints: [\"127.0.0.1:9\"]\n    breaker: {{ mode: {mode} }}\nroutes:\n  - {{ upstream: api }}\n",
        state_dir.display()
    )
}

#[tokio::test]
async fn the_file_sets_a_mode_and_an_override_outlives_a_restart_until_cleared() {
    let dirs = tempfile::tempdir().expect("temp dir");
    let state = private_dir(dirs.path(), "state");

    // The file's mode.
    let gw = Gateway::start(&modes_body(&state, "forced_open")).await;
    let view = gw.breaker("api").await;
    assert_eq!(view["state"], "forced_open", "{view}");
    assert_eq!(view["mode_source"]["from"], "file");
    assert_eq!(gw.get("/").await.status, 503);
    reload(&gw, &modes_body(&state, "automatic")).await;
    assert_eq!(gw.breaker("api").await["state"], "closed");

    // An override: kept in the state directory, says who and when.
    let r = gw.set_mode("api", "disabled").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let source = &r.json()["mode_source"];
    assert_eq!(source["from"], "override", "{source}");
    assert!(
        source["by"]
            .as_str()
            .is_some_and(|b| b.starts_with("127.0.0.1:")),
        "{source}"
    );
    assert_eq!(source["persisted"], true);
    assert!(
        source["since_unix_ms"]
            .as_u64()
            .is_some_and(|t| t > 1_600_000_000_000)
    );
    // A reload that sets another file mode does not undo it.
    reload(&gw, &modes_body(&state, "forced_open")).await;
    assert_eq!(gw.breaker("api").await["state"], "disabled");
    drop(gw);

    // Restart: the override is back; clearing it returns to the file's mode.
    let gw = Gateway::start(&modes_body(&state, "automatic")).await;
    let view = gw.breaker("api").await;
    assert_eq!(view["state"], "disabled", "{view}");
    assert_eq!(view["mode_source"]["from"], "override");
    let r = gw.set_mode("api", "automatic").await;
    assert_eq!(r.json()["mode_source"]["from"], "file");
    assert_eq!(r.json()["state"], "closed");
    drop(gw);
    let gw = Gateway::start(&modes_body(&state, "automatic")).await;
    assert_eq!(gw.breaker("api").await["mode_source"]["from"], "file");

    // A state file that is not ours stops the start with an error naming it.
    drop(gw);
    std::fs::write(
        state.join("breaker-overrides.json"),
        "{\"version\": 1, \"overrides\": 3}",
    )
    .expect("corrupt");
    let (code, stderr) = start_refused(&modes_body(&state, "automatic"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("breaker-overrides.json"), "{stderr}");
}

#[tokio::test]
async fn an_upgrade_hands_over_open_breakers_overrides_and_the_old_process_outcomes() {
    let dirs = tempfile::tempdir().expect("temp dir");
    let sockets = private_dir(dirs.path(), "sockets");
    let upgrade_socket = sockets.join("upgrade.sock");
    let ok = start_origin(echo("ops")).await;
    // The old process must still be waiting on it when the state is handed over (a
    // few ms after SIGQUIT); 4 s is far beyond that on a loaded machine.
    let (slow, handler) = Scripted::new(500);
    slow.set_delay(4000);
    let slow_origin = start_origin(handler).await;
    let dead = gateway_tests::dead_address();
    let mut gw = Gateway::start(&format!(
        "server: {{ upgrade_socket: \"{}\", shutdown_grace_period: 10s, watch_config: false }}\nupstreams:\n  api:\n    endpoints: [\"{dead}\"]\n    breaker: {{ consecutive_failures: 2, open_duration: 30s }}\n  ops: {{ endpoints: [\"{}\"] }}\n  slow:\n    endpoints: [\"{}\"]\n    timeouts: {{ read: 10s }}\n    breaker: {{ consecutive_failures: 1, open_duration: 30s }}\nroutes:\n  - {{ match: {{ path_prefix: /ops }}, upstream: ops }}\n  - {{ match: {{ path_prefix: /slow }}, upstream: slow }}\n  - {{ upstream: api }}\n",
        upgrade_socket.display(),
        ok.addr(),
        slow_origin.addr()
    ))
    .await;
    for _ in 0..2 {
        assert_eq!(gw.get("/").await.status, 502);
    }
    assert_eq!(gw.breaker("api").await["state"], "open");
    let r = gw.set_mode("ops", "forced_open").await;
    assert_eq!(r.status, 200);
    // A request the old process will finish after the handover: it fails.
    let listen = gw.listen;
    let in_flight =
        tokio::spawn(async move { http::Conn::connect(listen).await?.get("/slow").await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw
        .metric("gateway_upstream_requests_in_flight{upstream=\"slow\"}")
        .await
        < 1.0
    {
        assert!(Instant::now() < deadline, "the slow request never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut new = gw.spawn_upgrade();
    let new_pid = new.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !upgrade_socket.exists() {
        assert!(
            Instant::now() < deadline,
            "the new process never opened the upgrade socket"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let old_remaining = remaining_ms(&gw.breaker("api").await);
    let asked = Instant::now();
    gw.signal("QUIT");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = gw.try_admin("GET", "/ready", &[], b"").await;
        if ready.is_ok_and(|r| r.json()["pid"] == new_pid) {
            break;
        }
        assert!(Instant::now() < deadline, "the new process never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The old process finishes the slow request (500), drains and exits: from then on
    // only the new process answers.
    let r = in_flight.await.expect("task").expect("response");
    assert_eq!(r.status, 500);
    let old_exit = gw.wait_exit(Duration::from_secs(30)).await;
    assert!(old_exit.is_some_and(|s| s.success()), "{old_exit:?}");

    // Open with the time that was left (same clock on both sides; within 1 s).
    let view = gw.breaker("api").await;
    let expected = old_remaining.saturating_sub(asked.elapsed().as_millis() as u64);
    let new_remaining = remaining_ms(&view);
    assert!(
        new_remaining.abs_diff(expected) <= 1000,
        "remaining {new_remaining} ms, expected about {expected} ms: {view}"
    );
    // The override came along.
    let ops = gw.breaker("ops").await;
    assert_eq!(ops["state"], "forced_open", "{ops}");
    assert_eq!(ops["mode_source"]["from"], "override");
    // The old process's last outcome was forwarded and tripped the new one's breaker
    // (which never sent that upstream a request).
    let slow = gw.breaker("slow").await;
    assert_eq!(slow["state"], "open", "{slow}");
    assert_eq!(slow_origin.stats().requests(), 1);
    let upgrade_log =
        std::fs::read_to_string(gw.config_path.with_file_name("upgrade.log")).unwrap_or_default();
    assert!(
        upgrade_log.contains("state handed over by the previous process"),
        "{upgrade_log}"
    );
    assert!(
        upgrade_log
            .lines()
            .any(|l| l.contains("its outcomes are recorded here") && l.contains("forwarded=1")),
        "{upgrade_log}"
    );
    let _ = new.kill();
    let _ = new.wait();
}

#[tokio::test]
async fn a_shadow_policy_says_what_it_would_do_and_does_nothing() {
    let (_failing, handler) = Scripted::new(503);
    let origin = start_origin(handler).await;
    let gw = Gateway::start(&format!(
        "upstreams:\n  api:\n    endpoints: [\"{}\"]\n    breaker:\n      consecutive_failures: 50\n      shadow: {{ consecutive_failures: 3, open_duration: 60s }}\nroutes:\n  - {{ upstream: api }}\n",
        origin.addr()
    ))
    .await;
    let mut events = gateway_tests::EventStream::open(&gw).await;
    for _ in 0..5 {
        assert_eq!(
            gw.get("/").await.status,
            503,
            "the live breaker lets every call through"
        );
    }
    events.read_until("shadow_transition").await;
    assert!(
        !events.received.contains("breaker_transition"),
        "the live breaker moved: {}",
        events.received
    );
    let view = gw.breaker("api").await;
    assert_eq!(view["state"], "closed", "{view}");
    assert_eq!(view["shadow"]["state"], "open", "{view}");
    assert_eq!(view["shadow"]["thresholds"]["consecutive_failures"], 3);
    let t = &view["shadow"]["transitions"][0];
    assert_eq!(t["would"], "open", "{view}");
    assert_eq!(t["reason"], "consecutive_failures");
    assert_eq!(t["top_failure"]["kind"], "503");
    assert_eq!(
        gw.metric("gateway_breaker_shadow_state{state=\"open\",upstream=\"api\"}")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric("gateway_breaker_state{state=\"closed\",upstream=\"api\"}")
            .await,
        1.0
    );
    gw.wait_for_log(&["shadow breaker would open", "api"]).await;
    // The shadow counts what it would have rejected.
    assert_eq!(gw.get("/").await.status, 503);
    let view = gw.breaker("api").await;
    assert!(
        view["shadow"]["rejections"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{view}"
    );
}
