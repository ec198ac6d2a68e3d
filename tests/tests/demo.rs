//! `gateway demo` does what the README's walkthrough says: it starts the simulated
//! trading services and the gateway on the fixed demo ports, a failing portfolio
//! service trips its breaker after three 500s, and a market-data outage is first
//! retried around, then answered with the stale-quotes fallback.
//!
//! The demo binds fixed ports (8080, 9901, 9101, 9102, 9201, 9301): the test refuses
//! to run, saying so, when one is taken.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gateway_tests::http::{Conn, Response};
use gateway_tests::{gateway_binary, poll_until};

const GATEWAY: &str = "127.0.0.1:8080";
const ADMIN: &str = "127.0.0.1:9901";

/// The demo process; killed on drop.
struct Demo {
    child: Child,
    stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

async fn request(addr: &str, method: &str, path: &str) -> Response {
    let addr: SocketAddr = addr.parse().expect("address");
    Conn::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
        .request(method, path, &[("host", &addr.to_string())], b"")
        .await
        .unwrap_or_else(|e| panic!("{method} {addr}{path}: {e}"))
}

#[tokio::test]
async fn the_demo_walkthrough_behaves_as_the_readme_says() {
    for port in [8080, 9901, 9101, 9102, 9201, 9301] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is taken: the demo needs it (stop whatever uses it)"
        );
    }
    let dir = tempfile::tempdir().expect("dir");
    let stderr = dir.path().join("demo.log");
    let child = Command::new(gateway_binary())
        .arg("demo")
        .env("RUST_LOG", "info")
        .env("XDG_RUNTIME_DIR", dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("log file"))
        .spawn()
        .expect("gateway demo starts");
    let demo = Demo {
        child,
        stderr,
        _dir: dir,
    };
    let ready = poll_until(Duration::from_secs(30), async || {
        let admin: SocketAddr = ADMIN.parse().expect("address");
        match Conn::connect(admin).await {
            Ok(mut conn) => conn
                .request("GET", "/ready", &[("host", ADMIN)], b"")
                .await
                .is_ok_and(|r| r.status == 200),
            Err(_) => false,
        }
    })
    .await;
    assert!(ready, "the demo is not ready after 30 s:\n{}", demo.logs());

    // Normal traffic.
    let quotes = request(GATEWAY, "GET", "/api/v1/market/quotes/ACME").await;
    assert_eq!(quotes.status, 200, "{}", quotes.text());

    // portfolio starts failing: three 500s pass through, then its breaker opens.
    assert_eq!(
        request("127.0.0.1:9201", "POST", "/_fault?failure_rate=1")
            .await
            .status,
        200
    );
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            request(GATEWAY, "GET", "/api/v1/portfolio/portfolios/42")
                .await
                .status,
        );
    }
    assert_eq!(statuses, [500, 500, 500, 503, 503]);
    let open = request(GATEWAY, "GET", "/api/v1/portfolio/portfolios/42").await;
    assert_eq!(open.status, 503);
    assert!(
        matches!(open.header("retry-after"), Some("10" | "9")),
        "{:?}",
        open.header("retry-after")
    );
    assert_eq!(open.header("x-gateway-fallback"), Some("circuit_open"));
    let body = open.json();
    assert_eq!(body["code"], "CIRCUIT_BREAKER_OPEN");
    assert_eq!(body["state"], "open");
    assert_eq!(body["upstream"], "portfolio");
    assert!(
        body["retry_after_ms"]
            .as_u64()
            .is_some_and(|ms| ms <= 10_000)
    );

    // A market-data instance dies: retried on the other one; no client error.
    request("127.0.0.1:9101", "POST", "/_fault?down_for=60s").await;
    for _ in 0..10 {
        let response = request(GATEWAY, "GET", "/api/v1/market/quotes").await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert!(response.header("x-gateway-fallback").is_none());
    }
    // Both die: the breaker opens; clients get the configured stale-quotes fallback.
    request("127.0.0.1:9102", "POST", "/_fault?down_for=60s").await;
    let mut stale = None;
    for _ in 0..50 {
        let response = request(GATEWAY, "GET", "/api/v1/market/quotes").await;
        if response.header("x-gateway-fallback") == Some("circuit_open") {
            stale = Some(response);
            break;
        }
    }
    let stale = stale.unwrap_or_else(|| {
        panic!(
            "the market-data breaker did not open in 50 requests:\n{}",
            demo.logs()
        )
    });
    assert_eq!(stale.status, 200);
    assert_eq!(stale.header("x-data-freshness"), Some("stale"));
    assert_eq!(
        stale.json(),
        serde_json::json!({
            "quotes": [],
            "stale": true,
            "reason": "market data temporarily unavailable"
        })
    );
    // The gateway's stderr shows each step, as the README quotes it.
    let logs = demo.logs();
    for step in [
        [
            "breaker transition",
            "\"portfolio\"",
            "to=\"open\"",
            "consecutive_failures",
        ],
        [
            "endpoint ejected",
            "\"market-data\"",
            "127.0.0.1:9101",
            "ejected_for_ms=15000",
        ],
        [
            "breaker transition",
            "\"market-data\"",
            "to=\"open\"",
            "failure_rate",
        ],
    ] {
        assert!(
            logs.lines()
                .any(|line| line.contains("WARN") && step.iter().all(|f| line.contains(f))),
            "no line with {step:?} in the demo's log:\n{logs}"
        );
    }
}
