//! The replay engine over hand-written recordings: the real breaker, a set clock.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::*;
use crate::outcomes::OutcomeRecord;
use crate::upstream::classify::{CallResult, TransportError};

fn config(breaker: &str) -> Config {
    let text = format!(
        r#"
listeners:
  - address: "127.0.0.1:8080"
upstreams:
  orders:
    endpoints: ["127.0.0.1:9001"]
    breaker: {breaker}
routes:
  - match: {{ path_prefix: / }}
    upstream: orders
"#
    );
    crate::config::parse(&text, Path::new("candidate.yaml")).expect("a valid config")
}

const START_US: u64 = 1_700_000_000_000_000;

/// An attempt `ms` after the start, ending 1 ms later.
fn line(ms: u64, upstream: &str, result: Option<CallResult>) -> String {
    let mut record = OutcomeRecord {
        at_us: START_US + ms * 1000,
        elapsed_us: 1000,
        latency_us: 1000,
        ..OutcomeRecord::new("all", upstream, "GET", "/", "live")
    };
    match result {
        Some(result) => record.set_result(result),
        None => record.rejected = Some("circuit_open".into()),
    }
    String::from_utf8(record.to_line()).expect("utf-8")
}

struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("replay-{}-{name}", std::process::id()));
        let mut file = std::fs::File::create(&path).expect("a temp file");
        file.write_all(text.as_bytes()).expect("written");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// 10 successes, 10 refused connections, then 30 successes, 100 ms apart.
fn incident() -> String {
    let mut text = String::new();
    for i in 0..50 {
        let result = if (10..20).contains(&i) {
            CallResult::Transport(TransportError::ConnectRefused)
        } else {
            CallResult::Response(200)
        };
        text.push_str(&line(i * 100, "orders", Some(result)));
    }
    text
}

fn run(file: &TempFile, candidate: &Config, baseline: Option<&Config>) -> Report {
    let plugins = crate::plugin::PluginSet::default();
    let judge = |config| Judge {
        config,
        plugins: &plugins,
    };
    replay(&file.0, judge(candidate), baseline.map(judge), None).expect("a replay")
}

#[test]
fn a_strict_breaker_opens_where_a_lenient_one_does_not() {
    let file = TempFile::new("incident", &incident());
    let strict = config("{ consecutive_failures: 3, open_duration: 1s }");
    let lenient = config("{ consecutive_failures: 50 }");
    let report = run(&file, &strict, Some(&lenient));
    let orders = &report.upstreams[0];
    let strict_run = &orders.candidate;
    // Opens at the third failure (line 13), rejects the other 7 failures of the burst
    // and the successes until the open second is over (10 requests in all).
    let first = &strict_run.transitions[0];
    assert_eq!(
        (first.from, first.to, first.reason),
        ("closed", "open", "consecutive_failures")
    );
    assert_eq!(first.line, Some(13));
    assert_eq!(first.at_unix_us, START_US + 1_200_000 + 1000);
    assert_eq!(strict_run.rejected, 10);
    assert_eq!(strict_run.rejected_lines, (14..=23).collect::<Vec<_>>());
    // Seven of them failed live (spared), three succeeded (the breaker's cost).
    assert_eq!(
        (strict_run.rejected_failures, strict_run.rejected_successes),
        (7, 3)
    );
    let states: Vec<&str> = strict_run.transitions.iter().map(|s| s.to).collect();
    assert_eq!(states, ["open", "half_open", "closed"]);
    assert_eq!(strict_run.final_state, "closed");
    // Open from 1.201 s until the first request after the open second (2.3 s) probes.
    assert!(
        (strict_run.open_seconds - 1.099).abs() < 1e-9,
        "{}",
        strict_run.open_seconds
    );
    let lenient_run = orders.baseline.as_ref().expect("a baseline run");
    assert!(lenient_run.transitions.is_empty());
    assert_eq!(lenient_run.rejected, 0);
    assert_eq!(lenient_run.failures, 10);
    let comparison = orders.comparison.as_ref().expect("a comparison");
    assert_eq!(
        (comparison.candidate_opens, comparison.baseline_opens),
        (1, 0)
    );
    assert_eq!(comparison.rejected, 10);
    assert!(
        report
            .text()
            .contains("closed -> open: tripped by consecutive_failures")
    );
}

#[test]
fn failure_when_of_the_candidate_decides() {
    let mut text = String::new();
    for i in 0..5 {
        text.push_str(&line(i * 10, "orders", Some(CallResult::Response(429))));
    }
    let file = TempFile::new("429", &text);
    let counts_5xx = config("{ consecutive_failures: 3 }");
    let report = run(&file, &counts_5xx, None);
    assert_eq!(report.upstreams[0].candidate.failures, 0);
    let text = r#"
listeners:
  - address: "127.0.0.1:8080"
upstreams:
  orders:
    endpoints: ["127.0.0.1:9001"]
    breaker: { consecutive_failures: 3, failure_when: { statuses: [429, "5xx"] } }
routes:
  - match: { path_prefix: / }
    upstream: orders
"#;
    let counts_429 = crate::config::parse(text, Path::new("c.yaml")).expect("valid");
    let report = run(&file, &counts_429, None);
    assert_eq!(report.upstreams[0].candidate.failures, 3);
    assert_eq!(report.upstreams[0].candidate.rejected, 2);
}

#[test]
fn requests_refused_live_are_unknown_not_invented() {
    let mut text = String::new();
    for i in 0..5 {
        text.push_str(&line(i * 10, "orders", None));
    }
    let file = TempFile::new("refused", &text);
    let report = run(&file, &config("{ consecutive_failures: 3 }"), None);
    let orders = &report.upstreams[0];
    assert_eq!(orders.recorded_rejected, 5);
    assert_eq!(orders.candidate.admitted_unknown, 5);
    assert_eq!(orders.candidate.failures + orders.candidate.successes, 0);
}

#[test]
fn out_of_order_lines_are_replayed_in_time_order() {
    // Written as exchanges ended: the failure admitted first ends last.
    let mut text = line(30, "orders", Some(CallResult::Response(500)));
    text.push_str(&line(10, "orders", Some(CallResult::Response(500))));
    text.push_str(&line(20, "orders", Some(CallResult::Response(500))));
    let file = TempFile::new("order", &text);
    let report = run(&file, &config("{ consecutive_failures: 3 }"), None);
    let opened = &report.upstreams[0].candidate.transitions[0];
    assert_eq!(opened.line, Some(1));
    assert_eq!(opened.at_unix_us, START_US + 31_000);
}

fn error_of(text: &str, candidate: &Config, upstream: Option<&str>) -> String {
    let file = TempFile::new("bad", text);
    let plugins = crate::plugin::PluginSet::default();
    let judge = Judge {
        config: candidate,
        plugins: &plugins,
    };
    match replay(&file.0, judge, None, upstream) {
        Ok(_) => panic!("replayed a bad recording"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_input_names_its_line() {
    let candidate = config("{ consecutive_failures: 3 }");
    let ok = line(0, "orders", Some(CallResult::Response(200)));
    let error = error_of(&format!("{ok}\n{{\"v\":1, \"torn"), &candidate, None);
    assert!(error.contains(":3: not an outcome record"), "{error}");
    let both = ok.replace("\"status\":200", "\"status\":200,\"error\":\"tls\"");
    let error = error_of(&format!("{ok}{both}"), &candidate, None);
    assert!(error.contains(":2: needs exactly one of"), "{error}");
    let endless = format!("{ok}{}", "x".repeat(200_000));
    let error = error_of(&endless, &candidate, None);
    assert!(error.contains(":2: longer than 65536 bytes"), "{error}");
    let other = line(5, "payments", Some(CallResult::Response(200)));
    let error = error_of(&format!("{ok}{other}"), &candidate, None);
    assert!(
        error.contains(":2: upstream `payments` is not in candidate.yaml (it has: orders)"),
        "{error}"
    );
    // One upstream replayed: the others' lines are skipped, not refused.
    let file = TempFile::new("two", &format!("{ok}{other}"));
    let plugins = crate::plugin::PluginSet::default();
    let judge = Judge {
        config: &candidate,
        plugins: &plugins,
    };
    let report = replay(&file.0, judge, None, Some("orders")).expect("a replay");
    assert_eq!((report.lines, report.replayed), (2, 1));
    let error = error_of(&ok, &candidate, Some("payments"));
    assert!(
        error.contains("--upstream payments: not in candidate.yaml"),
        "{error}"
    );
}
