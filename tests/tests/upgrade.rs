//! Zero-downtime binary upgrade: a new process takes the listening sockets from the
//! running one (SIGQUIT), the old one drains and exits, and no request fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gateway_tests::{Gateway, echo, http, start_origin};

#[tokio::test]
async fn a_graceful_upgrade_under_load_fails_no_request() {
    let origin = start_origin(echo("svc")).await;
    let sockets = tempfile::tempdir().expect("temp dir");
    let upgrade_socket = sockets.path().join("upgrade.sock");
    let mut gw = Gateway::start(&format!(
        "server: {{ upgrade_socket: \"{}\", shutdown_grace_period: 10s }}\nupstreams:\n  svc: {{ endpoints: [\"{}\"] }}\nroutes:\n  - {{ upstream: svc }}\n",
        upgrade_socket.display(),
        origin.addr()
    ))
    .await;
    let old_pid = gw.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    // Requests retried once because a reused keep-alive connection closed before any
    // response (RFC 9112 9.3.1: what every HTTP client does for idempotent requests).
    let retried = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (listen, stop, ok, retried, failures) = (
            gw.listen,
            stop.clone(),
            ok.clone(),
            retried.clone(),
            failures.clone(),
        );
        load.push(tokio::spawn(async move {
            // Workers 0-1 keep connections alive (reconnecting when the server says
            // `connection: close`); workers 2-3 open a connection per request.
            let mut conn: Option<http::Conn> = None;
            let mut sent = 0;
            while !stop.load(Ordering::SeqCst) && sent < 50_000 {
                sent += 1;
                let reused = conn.is_some() && worker < 2;
                if !reused {
                    conn = http::Conn::connect(listen).await.ok();
                }
                let mut result = match conn.as_mut() {
                    Some(c) => c.get("/").await,
                    None => Err(std::io::Error::other("connect failed")),
                };
                if result.is_err() && reused {
                    retried.fetch_add(1, Ordering::Relaxed);
                    conn = http::Conn::connect(listen).await.ok();
                    result = match conn.as_mut() {
                        Some(c) => c.get("/").await,
                        None => Err(std::io::Error::other("connect failed")),
                    };
                }
                match result {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if worker >= 2
                            || r.header("connection")
                                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                        {
                            conn = None;
                        }
                    }
                    Ok(r) => failures
                        .lock()
                        .expect("lock")
                        .push(format!("worker {worker}: status {}", r.status)),
                    Err(e) => {
                        failures
                            .lock()
                            .expect("lock")
                            .push(format!("worker {worker}: {e}"));
                        conn = None;
                    }
                }
            }
        }));
    }

    let mut new = gw.spawn_upgrade();
    let new_pid = new.id();
    // The new process is ready to take over once it listens on the upgrade socket.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !upgrade_socket.exists() {
        assert!(
            Instant::now() < deadline,
            "the new process never opened the upgrade socket"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.signal("QUIT");

    // Both serve for a while; then only the new one.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http::get(gw.admin, "/ready").await
            && r.json()["pid"] == new_pid
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new process never answered /ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let old_exit = gw.wait_exit(Duration::from_secs(30)).await;
    assert!(
        old_exit.is_some_and(|s| s.success()),
        "old process (pid {old_pid}) did not drain and exit: {old_exit:?}"
    );
    let served_before = ok.load(Ordering::Relaxed);
    // Keep the load on the new process alone for a moment.
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until || ok.load(Ordering::Relaxed) < served_before + 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.expect("load task");
    }
    let _ = new.kill();
    let _ = new.wait();
    let failures = failures.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "{} failed requests across the upgrade, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(
        ok.load(Ordering::Relaxed) > 500,
        "load too light: {}",
        ok.load(Ordering::Relaxed)
    );
}
