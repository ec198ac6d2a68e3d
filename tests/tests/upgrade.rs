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
    // The socket's directory must be private (tempfile makes it 0755 here).
    set_mode(sockets.path(), 0o700);
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
        if let Ok(r) = gw.try_admin("GET", "/ready", &[], b"").await
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

const BODY: &str =
    "upstreams:\n  svc: { endpoints: [\"127.0.0.1:9\"] }\nroutes:\n  - { upstream: svc }\n";

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("stat").mode() & 0o7777
}

#[test]
fn check_refuses_an_upgrade_socket_another_user_could_reach() {
    let dirs = tempfile::tempdir().expect("temp dir");
    let config = |socket: &std::path::Path| {
        format!(
            "listeners:\n  - address: \"127.0.0.1:8080\"\nserver:\n  upgrade_socket: \"{}\"\n{BODY}",
            socket.display()
        )
    };
    for (mode, fragment) in [
        (0o1777, "is writable (sticky bit or not) by group or others"),
        (0o777, "is writable by group or others"),
        (0o755, "is readable or searchable by group or others"),
    ] {
        let dir = dirs.path().join(format!("mode-{mode:o}"));
        std::fs::create_dir(&dir).expect("dir");
        set_mode(&dir, mode);
        let (code, _, stderr) =
            gateway_tests::check_config("gateway.yaml", &config(&dir.join("up.sock")));
        assert_eq!(code, 2, "{mode:o}: {stderr}");
        assert!(
            stderr.contains("4:3: server.upgrade_socket: ") && stderr.contains(fragment),
            "{mode:o}: {stderr}"
        );
    }
    // A private directory passes; a file that is not a socket (an upgrade would delete
    // it) and a relative path do not.
    let private = dirs.path().join("private");
    std::fs::create_dir(&private).expect("dir");
    set_mode(&private, 0o700);
    let (code, stdout, stderr) =
        gateway_tests::check_config("gateway.yaml", &config(&private.join("up.sock")));
    assert_eq!(code, 0, "{stdout}{stderr}");
    std::fs::write(private.join("notes.txt"), "keep me").expect("file");
    let (code, _, stderr) =
        gateway_tests::check_config("gateway.yaml", &config(&private.join("notes.txt")));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("server.upgrade_socket: ") && stderr.contains("is not a socket"),
        "{stderr}"
    );
    let (code, _, stderr) =
        gateway_tests::check_config("gateway.yaml", &config(std::path::Path::new("run/up.sock")));
    assert_eq!(code, 2);
    assert!(stderr.contains("is not an absolute path"), "{stderr}");
    // The default passes the same checks.
    let (code, stdout, stderr) = gateway_tests::check_config(
        "gateway.yaml",
        &format!("listeners:\n  - address: \"127.0.0.1:8080\"\n{BODY}"),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[tokio::test]
async fn the_default_socket_directory_is_created_private() {
    let runtime_dir = tempfile::tempdir().expect("temp dir");
    set_mode(runtime_dir.path(), 0o700);
    let xdg = runtime_dir.path().display().to_string();
    let gw = Gateway::start_with(
        BODY,
        gateway_tests::Options {
            env: &[("XDG_RUNTIME_DIR", &xdg)],
            ..Default::default()
        },
    )
    .await;
    let dir = runtime_dir.path().join("edge-gateway");
    assert!(dir.is_dir(), "{} not created", dir.display());
    assert_eq!(mode_of(&dir), 0o700);
    let socket = dir.join("upgrade.sock").display().to_string();
    gw.wait_for_log(&["gateway starting", &socket]).await;
}

/// The test plays a new process listening on the upgrade socket; the running gateway
/// must send its sockets only once the directory is private and the socket is ours.
#[tokio::test]
async fn sigquit_sends_nothing_to_a_socket_that_fails_the_checks() {
    use std::os::unix::fs::MetadataExt;
    let sockets = tempfile::tempdir().expect("temp dir");
    let dir = sockets.path().join("private");
    std::fs::create_dir(&dir).expect("dir");
    set_mode(&dir, 0o700);
    let socket = dir.join("upgrade.sock");
    let gw = Gateway::start(&format!(
        "server: {{ upgrade_socket: \"{}\" }}\n{BODY}",
        socket.display()
    ))
    .await;
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let pid = gw.pid();
    let still_serving = async || {
        let ready = gw.admin("GET", "/ready", &[], b"").await;
        assert_eq!(ready.status, 200);
        assert_eq!(ready.json()["pid"], pid);
    };

    // The directory opened to others after start.
    set_mode(&dir, 0o755);
    gw.signal("QUIT");
    gw.wait_for_log(&[
        "upgrade refused",
        "readable or searchable by group or others",
    ])
    .await;
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "nothing may connect to the socket"
    );
    still_serving().await;
    set_mode(&dir, 0o700);

    // A socket bound by another uid (only root can make one here).
    let we_are_root = std::fs::metadata(&socket).expect("socket").uid() == 0;
    if we_are_root {
        std::os::unix::fs::chown(&socket, Some(65534), None).expect("chown");
        gw.signal("QUIT");
        gw.wait_for_log(&["upgrade refused", "is owned by uid 65534"])
            .await;
        assert!(matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
        still_serving().await;
        std::os::unix::fs::chown(&socket, Some(0), None).expect("chown back");
    } else {
        eprintln!("not root: the foreign-owner case needs chown and is skipped");
    }

    // Once the checks pass, the same signal hands the sockets over.
    let listener = tokio::net::UnixListener::from_std(listener).expect("tokio listener");
    gw.signal("QUIT");
    let accepted = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await;
    assert!(
        matches!(accepted, Ok(Ok(_))),
        "the gateway never connected: {accepted:?}"
    );
}
