//! Record and replay (#20): an incident recorded through the running gateway
//! (`server.record_outcomes`), then replayed with `gateway replay` (the real binary)
//! against candidate configs whose breakers would have acted differently.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use gateway_tests::{
    Gateway, Reply, Request, check_config, gateway_binary, http, plugin_entry, start_origin,
};

/// `/degraded` answers 200 with `x-degraded: 1` (a predicate may call that a failure);
/// everything else 200, unless the origin's fault control says otherwise.
fn origin_handler() -> gateway_tests::Handler {
    Arc::new(|req: &Request| {
        if req.target.starts_with("/degraded") {
            Reply::text(200, "looks fine").with_header("x-degraded", "1")
        } else {
            Reply::text(200, "ok")
        }
    })
}

async fn fault(origin: std::net::SocketAddr, body: &str) {
    let r = http::Conn::connect(origin)
        .await
        .expect("connect to the origin")
        .request(
            "POST",
            "/_fault",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .await
        .expect("the origin answers");
    assert_eq!(r.status, 200, "{}", r.text());
}

async fn requests(gw: &Gateway, path: &str, n: usize, expect: u16) {
    let mut conn = gw.conn().await;
    for _ in 0..n {
        let r = conn
            .request("GET", path, &[("x-tenant", "acme")], b"")
            .await
            .expect("an answer");
        assert_eq!(r.status, expect, "{path}: {}", r.text());
    }
}

/// The upstream section of a config for `origin`, with `breaker` (a flow mapping).
fn upstream(origin: std::net::SocketAddr, breaker: &str) -> String {
    format!(
        "upstreams:\n  api:\n    endpoints: [\"{origin}\"]\n    breaker: {breaker}\nroutes:\n  - {{ upstream: api }}\n"
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a file");
    path
}

/// Runs `gateway replay`; returns (exit code, stdout, stderr).
fn replay(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = Command::new(gateway_binary())
        .arg("replay")
        .args(args)
        .output()
        .expect("gateway replay runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn replay_json(candidate: &Path, baseline: &Path, outcomes: &Path) -> serde_json::Value {
    let (code, stdout, stderr) = replay(&[
        "--config".as_ref(),
        candidate.as_os_str(),
        "--baseline".as_ref(),
        baseline.as_os_str(),
        "--outcomes".as_ref(),
        outcomes.as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
    ]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn transitions(run: &serde_json::Value) -> Vec<(String, String)> {
    run["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .map(|t| {
            (
                format!(
                    "{}->{}",
                    t["from"].as_str().unwrap_or(""),
                    t["to"].as_str().unwrap_or("")
                ),
                t["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_incident_recorded_live_is_replayed_against_two_candidates() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let outcomes = dir.path().join("outcomes.jsonl");
    let origin = start_origin(origin_handler()).await;
    // Live: a breaker that never opens on this incident, so every outcome is known.
    let live_body = format!(
        "server:\n  access_log: false\n  record_outcomes: {{ path: \"{}\", headers: [x-tenant, x-degraded] }}\n{}",
        outcomes.display(),
        upstream(origin.addr(), "{ consecutive_failures: 1000 }")
    );
    let gw = Gateway::start(&live_body).await;

    // Healthy, a burst of 503s (the origin's fault control), recovery, then 200s that
    // carry x-degraded (healthy to failure_when), then healthy again.
    requests(&gw, "/", 20, 200).await;
    fault(origin.addr(), r#"{"failure_rate": 1, "status": 503}"#).await;
    requests(&gw, "/", 10, 503).await;
    fault(origin.addr(), r#"{"failure_rate": 0}"#).await;
    requests(&gw, "/", 20, 200).await;
    requests(&gw, "/degraded", 10, 200).await;
    requests(&gw, "/", 5, 200).await;
    gw.wait_metric("gateway_outcome_records_total{result=\"written\"}", 65.0)
        .await;
    assert_eq!(
        gw.metric("gateway_outcome_records_total{result=\"dropped_queue_full\"}")
            .await,
        0.0
    );

    // What was recorded: one line per exchange, the named headers, the live config.
    let text = std::fs::read_to_string(&outcomes).expect("the recording");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 65);
    let hash = gw.scrape().await;
    let live_hash = lines[0]["config"].as_str().expect("a config hash");
    assert!(hash.contains(&format!("gateway_config_info{{hash=\"{live_hash}\"}} 1")));
    assert_eq!(lines.iter().filter(|l| l["status"] == 503).count(), 10);
    assert!(
        lines
            .iter()
            .all(|l| l["upstream"] == "api" && l["route"].is_string())
    );
    assert!(
        lines
            .iter()
            .all(|l| l["request_headers"] == serde_json::json!([["x-tenant", "acme"]]))
    );
    let degraded: Vec<_> = lines.iter().filter(|l| l["path"] == "/degraded").collect();
    assert_eq!(degraded.len(), 10);
    assert!(degraded.iter().all(|l| l["response_headers"]
        == serde_json::json!([["x-degraded", "1"]])
        && l["verdict"] == "success"));
    // The config that was live, byte for byte: the baseline replay compares with.
    let baseline = dir.path().join("live.yaml");
    std::fs::copy(&gw.config_path, &baseline).expect("copy the live config");
    drop(gw);

    let candidate = |name: &str, body: &str| {
        write(
            dir.path(),
            name,
            &format!("listeners:\n  - address: \"127.0.0.1:1\"\n{body}"),
        )
    };
    let strict = candidate(
        "strict.yaml",
        &upstream(
            origin.addr(),
            "{ consecutive_failures: 3, open_duration: 60s }",
        ),
    );
    let lenient = candidate(
        "lenient.yaml",
        &upstream(
            origin.addr(),
            "{ consecutive_failures: 20, open_duration: 60s }",
        ),
    );
    // A predicate plugin that calls x-degraded a failure and a 503 nothing.
    let predicate = candidate(
        "predicate.yaml",
        &format!(
            "plugins:\n{}{}",
            plugin_entry(
                "degraded",
                "status-latency-predicate",
                "predicate",
                "config: { failure_header: x-degraded, ignore_statuses: \"503\" }"
            ),
            upstream(
                origin.addr(),
                "{ consecutive_failures: 5, open_duration: 60s, predicate: degraded }"
            )
        ),
    );

    // Strict: opens at the third 503 and rejects everything after it for its 60 s.
    let report = replay_json(&strict, &baseline, &outcomes);
    let api = &report["upstreams"][0];
    assert_eq!(api["upstream"], "api");
    assert_eq!(api["recorded_attempts"], 65);
    assert_eq!(
        transitions(&api["candidate"]),
        [(
            "closed->open".to_string(),
            "consecutive_failures".to_string()
        )]
    );
    assert_eq!(api["candidate"]["failures"], 3);
    assert_eq!(api["candidate"]["rejected"], 7 + 20 + 10 + 5);
    assert_eq!(api["candidate"]["rejected_called_live"], 42);
    assert_eq!(api["candidate"]["rejected_failures"], 7);
    assert_eq!(api["candidate"]["rejected_successes"], 35);
    assert_eq!(api["candidate"]["final_state"], "open");
    assert!(
        api["candidate"]["open_seconds"]
            .as_f64()
            .is_some_and(|s| s > 0.0)
    );
    assert_eq!(api["baseline"]["rejected"], 0);
    assert_eq!(api["baseline"]["failures"], 10);
    assert!(transitions(&api["baseline"]).is_empty());
    assert_eq!(api["comparison"]["candidate_opens"], 1);
    assert_eq!(api["comparison"]["baseline_opens"], 0);
    assert_eq!(api["comparison"]["rejected"], 42);

    // Lenient: ten failures in a row are not twenty; nothing changes.
    let report = replay_json(&lenient, &baseline, &outcomes);
    let api = &report["upstreams"][0];
    assert!(transitions(&api["candidate"]).is_empty());
    assert_eq!(api["candidate"]["rejected"], 0);
    assert_eq!(api["comparison"]["rejected"], 0);

    assert_eq!(report["baseline"]["live_when_recorded"], true);
    assert_eq!(report["candidate"]["live_when_recorded"], false);

    // The predicate: the 503s count for nothing, the fifth x-degraded 200 opens it.
    let report = replay_json(&predicate, &baseline, &outcomes);
    let api = &report["upstreams"][0];
    assert_eq!(
        transitions(&api["candidate"]),
        [(
            "closed->open".to_string(),
            "consecutive_failures".to_string()
        )]
    );
    assert_eq!(api["candidate"]["ignored"], 10);
    assert_eq!(api["candidate"]["failures"], 5);
    assert_eq!(api["candidate"]["rejected"], 5 + 5);
    assert_eq!(api["candidate"]["rejected_failures"], 5);
    assert_eq!(api["candidate"]["rejected_successes"], 5);

    // Text for people: each transition with its reason and the line that caused it.
    let (code, stdout, stderr) = replay(&[
        "--config".as_ref(),
        strict.as_os_str(),
        "--baseline".as_ref(),
        baseline.as_os_str(),
        "--outcomes".as_ref(),
        outcomes.as_os_str(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("closed -> open: tripped by consecutive_failures (window 23 calls, 3 failed (13.0%), 0 slow; 3 consecutive failures); open for 60.000 s [line 23]"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "difference: candidate opens 1 time(s), baseline 0; candidate rejects +42 requests"
        ),
        "{stdout}"
    );

    // An upstream the config does not have is named, not guessed at.
    let (code, _, stderr) = replay(&[
        "--config".as_ref(),
        strict.as_os_str(),
        "--outcomes".as_ref(),
        outcomes.as_os_str(),
        "--upstream".as_ref(),
        "payments".as_ref(),
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--upstream payments: not in"), "{stderr}");
}

#[tokio::test]
async fn requests_the_live_breaker_refused_are_recorded_as_refused() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let outcomes = dir.path().join("outcomes.jsonl");
    let origin = start_origin(origin_handler()).await;
    let body = format!(
        "server:\n  record_outcomes: {{ path: \"{}\" }}\n{}",
        outcomes.display(),
        upstream(
            origin.addr(),
            "{ consecutive_failures: 3, open_duration: 60s }"
        )
    );
    let gw = Gateway::start(&body).await;
    fault(origin.addr(), r#"{"failure_rate": 1, "status": 503}"#).await;
    requests(&gw, "/", 3, 503).await;
    // The third failure opened it before its response reached the client.
    let mut conn = gw.conn().await;
    for _ in 0..2 {
        let r = conn.get("/").await.expect("an answer");
        assert_eq!(r.header("x-gateway-fallback"), Some("circuit_open"));
    }
    gw.wait_metric("gateway_outcome_records_total{result=\"written\"}", 5.0)
        .await;
    let text = std::fs::read_to_string(&outcomes).expect("the recording");
    let refused: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .filter(|l| l["rejected"] == "circuit_open")
        .collect();
    assert_eq!(refused.len(), 2, "{text}");
    assert!(
        refused
            .iter()
            .all(|l| l["status"].is_null() && l["upstream"] == "api")
    );
    let baseline = dir.path().join("live.yaml");
    std::fs::copy(&gw.config_path, &baseline).expect("copy the live config");
    drop(gw);

    // A candidate that would not have opened admits them, but cannot know what the
    // upstream would have said: counted as unknown, not invented.
    let lenient = write(
        dir.path(),
        "lenient.yaml",
        &format!(
            "listeners:\n  - address: \"127.0.0.1:1\"\n{}",
            upstream(origin.addr(), "{ consecutive_failures: 20 }")
        ),
    );
    let report = replay_json(&lenient, &baseline, &outcomes);
    let api = &report["upstreams"][0];
    assert_eq!(api["recorded_rejected"], 2);
    assert_eq!(api["candidate"]["admitted_unknown"], 2);
    assert_eq!(api["candidate"]["rejected"], 0);
    assert_eq!(api["baseline"]["rejected"], 2);
    assert_eq!(api["baseline"]["rejected_called_live"], 0);
}

#[test]
fn record_outcomes_is_checked_like_any_key() {
    let (code, _, stderr) = check_config(
        "gateway.yaml",
        "listeners:\n  - address: \"127.0.0.1:1\"\nserver:\n  record_outcomes:\n    path: /no/such/dir/outcomes.jsonl\n    headers: [x-tenant, Authorization, \"bad header\"]\nupstreams:\n  api: { endpoints: [\"127.0.0.1:2\"] }\nroutes:\n  - { upstream: api }\n",
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr
            .contains(":5:5: server.record_outcomes.path: directory `/no/such/dir` does not exist"),
        "{stderr}"
    );
    assert!(
        stderr.contains(":6:25: server.record_outcomes.headers[1]: `Authorization` carries credentials and is never recorded"),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("server.record_outcomes.headers[2]: `bad header` is not a valid header name"),
        "{stderr}"
    );
}

/// A body with one upstream and recording into `path` with a queue of `queue`.
fn recording_to(path: &Path, queue: usize, origin: std::net::SocketAddr) -> String {
    format!(
        "server:\n  access_log: false\n  record_outcomes: {{ path: \"{}\", queue: {queue} }}\n{}",
        path.display(),
        upstream(origin, "{ consecutive_failures: 1000 }")
    )
}

#[tokio::test]
async fn a_writer_that_cannot_keep_up_drops_records_never_requests() {
    // A FIFO nobody reads: the writer's write blocks once the pipe's buffer is full,
    // like a stuck disk. The test holds it open read-write so the gateway can open it.
    let dir = tempfile::tempdir().expect("a temp dir");
    let fifo = dir.path().join("stuck");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let _held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .expect("open the FIFO");
    let origin = start_origin(origin_handler()).await;
    let gw = Gateway::start(&recording_to(&fifo, 16, origin.addr())).await;
    // ~200 bytes a record: 1000 records are three times what the pipe holds.
    requests(&gw, "/", 1000, 200).await;
    let dropped = gw
        .metric("gateway_outcome_records_total{result=\"dropped_queue_full\"}")
        .await;
    let written = gw
        .metric("gateway_outcome_records_total{result=\"written\"}")
        .await;
    assert!(dropped > 0.0, "nothing dropped");
    assert!(written + dropped <= 1000.0, "{written} + {dropped}");
}

#[tokio::test]
async fn a_full_disk_counts_failed_writes() {
    // /dev/full fails every write with ENOSPC.
    let origin = start_origin(origin_handler()).await;
    let gw = Gateway::start(&recording_to(Path::new("/dev/full"), 64, origin.addr())).await;
    requests(&gw, "/", 5, 200).await;
    gw.wait_metric(
        "gateway_outcome_records_total{result=\"dropped_write_error\"}",
        5.0,
    )
    .await;
    assert_eq!(
        gw.metric("gateway_outcome_records_total{result=\"written\"}")
            .await,
        0.0
    );
    gw.wait_for_log(&[
        "outcome records dropped: cannot write",
        "No space left on device",
    ])
    .await;
}

#[tokio::test]
async fn nothing_is_recorded_or_exported_when_recording_is_off() {
    let origin = start_origin(origin_handler()).await;
    let gw = Gateway::start(&upstream(origin.addr(), "{ consecutive_failures: 1000 }")).await;
    requests(&gw, "/", 3, 200).await;
    gw.metric_absent("gateway_outcome_records_total{result=\"written\"}")
        .await;
}

#[tokio::test]
async fn sighup_reopens_the_recording_so_it_can_be_rotated() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("outcomes.jsonl");
    let rotated = dir.path().join("outcomes.jsonl.1");
    let origin = start_origin(origin_handler()).await;
    let gw = Gateway::start(&recording_to(&path, 64, origin.addr())).await;
    requests(&gw, "/", 3, 200).await;
    gw.wait_metric("gateway_outcome_records_total{result=\"written\"}", 3.0)
        .await;
    // logrotate without copytruncate: move the file away, then SIGHUP.
    std::fs::rename(&path, &rotated).expect("rotate");
    gw.signal("HUP");
    // The writer reopens before its next batch; until the signal arrives, records
    // still go to the moved file. Every request is in exactly one of the two.
    let mut sent = 3;
    let count = |p: &Path| std::fs::read_to_string(p).map_or(0, |t| t.lines().count());
    gateway_tests::wait_until(
        "records in a new file at the configured path",
        std::time::Duration::from_secs(10),
        async || {
            requests(&gw, "/", 1, 200).await;
            sent += 1;
            count(&path) > 0
        },
    )
    .await;
    gw.wait_metric(
        "gateway_outcome_records_total{result=\"written\"}",
        f64::from(sent),
    )
    .await;
    assert_eq!(count(&rotated) + count(&path), sent as usize);
    assert!(count(&rotated) >= 3);
    gw.wait_for_log(&["outcome recording reopened"]).await;
}

#[test]
fn a_million_outcomes_replay_well_under_a_minute() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    // 2 000 requests/s for 500 s; every 100 s, 10 s in which every third call is a 503.
    const N: u64 = 1_000_000;
    const START_US: u64 = 1_700_000_000_000_000;
    let dir = tempfile::tempdir().expect("a temp dir");
    let outcomes = dir.path().join("million.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&outcomes).expect("create"));
    for i in 0..N {
        let at_us = START_US + i * 500;
        let second = i / 2000;
        let status = if second % 100 >= 50 && second % 100 < 60 && i % 3 == 0 {
            503
        } else {
            200
        };
        writeln!(
            out,
            r#"{{"v":1,"at_us":{at_us},"elapsed_us":3000,"latency_us":2900,"route":"r","upstream":"api","method":"GET","path":"/","status":{status},"config":"c"}}"#
        )
        .expect("write");
    }
    out.flush().expect("flush");
    drop(out);
    let candidate = write(
        dir.path(),
        "candidate.yaml",
        "listeners:\n  - address: \"127.0.0.1:1\"\nupstreams:\n  api:\n    endpoints: [\"127.0.0.1:2\"]\n    breaker: { window: { kind: time, size: 5s }, failure_rate: 0.2, open_duration: 5s }\nroutes:\n  - { upstream: api }\n",
    );
    let started = Instant::now();
    let (code, stdout, stderr) = replay(&[
        "--config".as_ref(),
        candidate.as_os_str(),
        "--outcomes".as_ref(),
        outcomes.as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
    ]);
    let took = started.elapsed();
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(report["replayed"], N);
    let api = &report["upstreams"][0]["candidate"];
    // Each burst opens it; rejections are counted, not guessed.
    assert!(
        api["transitions"].as_array().is_some_and(|t| t
            .iter()
            .filter(|s| s["to"] == "open")
            .count()
            >= 5),
        "{api}"
    );
    assert!(api["rejected"].as_u64().is_some_and(|r| r > 0));
    assert!(
        took < Duration::from_secs(60),
        "1 million outcomes took {took:?}"
    );
}
