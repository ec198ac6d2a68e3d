//! `gateway replay` at scale: a recording of 1 million outcomes (one upstream, 2 000
//! requests/s for 500 s, a 10 s burst of 60 % 503s every 100 s) replayed against a
//! candidate and a baseline config, the way the command does it: read and check every
//! line, then run each config's real breaker over the outcomes.
//!
//! Run: `cargo bench -p gateway-benches --bench replay` (`REPLAY_OUTCOMES=n` for
//! another size). Prints the time; docs/PERFORMANCE.md keeps the figure.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use gateway::config;
use gateway::outcomes::OutcomeRecord;
use gateway::plugin::PluginSet;
use gateway::replay::{Judge, replay};
use gateway::upstream::classify::CallResult;

const START_US: u64 = 1_700_000_000_000_000;

fn config(breaker: &str) -> config::Config {
    let text = format!(
        "listeners: [{{ address: \"127.0.0.1:18999\" }}]\nupstreams:\n  api:\n    endpoints: [\"127.0.0.1:20000\"]\n    breaker: {breaker}\nroutes:\n  - {{ upstream: api }}\n"
    );
    config::parse(&text, Path::new("bench.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

/// Writes `n` outcomes; a fixed xorshift makes every run the same recording.
fn generate(path: &Path, n: u64) {
    let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{e}"));
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut random: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut record = OutcomeRecord {
        endpoint: Some("127.0.0.1:20000".into()),
        ..OutcomeRecord::new("all", "api", "GET", "/api/orders", "recorded")
    };
    for i in 0..n {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        let at_us = START_US + i * 500;
        let second = (at_us - START_US) / 1_000_000;
        let burst = second % 100 >= 50 && second % 100 < 60;
        let failed = burst && random % 100 < 60;
        record.at_us = at_us;
        record.latency_us = 2_000 + random % 8_000;
        record.elapsed_us = record.latency_us + 100;
        record.status = None;
        record.set_result(CallResult::Response(if failed { 503 } else { 200 }));
        record.verdict = Some(if failed { "failure" } else { "success" }.into());
        out.write_all(&record.to_line())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    out.flush().unwrap_or_else(|e| panic!("{e}"));
}

fn main() {
    // `cargo bench` passes `--bench`; this program takes no arguments.
    let n: u64 = std::env::var("REPLAY_OUTCOMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("replay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("outcomes.jsonl");
    let started = Instant::now();
    generate(&path, n);
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    println!(
        "generated {n} outcomes ({:.1} MB) in {:.2} s",
        size as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let candidate = config(
        "{ window: { kind: time, size: 5s }, failure_rate: 0.5, minimum_requests: 100, open_duration: 5s }",
    );
    let baseline = config("{ consecutive_failures: 5, open_duration: 5s }");
    let plugins = PluginSet::default();
    let judge = |config| Judge {
        config,
        plugins: &plugins,
    };
    // Reading alone (every line parsed and checked, then sorted): the rest is breakers.
    let started = Instant::now();
    let recording =
        gateway::replay::read(&path, None, &|_| false).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "read and checked {} lines in {:.2} s",
        recording.entries.len(),
        started.elapsed().as_secs_f64()
    );
    drop(recording);
    let started = Instant::now();
    let report = replay(&path, judge(&candidate), Some(judge(&baseline)), None)
        .unwrap_or_else(|e| panic!("{e}"));
    let took = started.elapsed().as_secs_f64();
    let api = &report.upstreams[0];
    println!(
        "replayed {n} outcomes against a candidate and a baseline in {took:.2} s ({:.0} outcomes/s); candidate: {} transitions, {} rejected; baseline: {} transitions, {} rejected",
        n as f64 / took,
        api.candidate.transitions.len(),
        api.candidate.rejected,
        api.baseline.as_ref().map_or(0, |b| b.transitions.len()),
        api.baseline.as_ref().map_or(0, |b| b.rejected),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
