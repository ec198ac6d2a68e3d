//! Reload latency and safety under load.
//!
//! 100 reloads of the real gateway (release build) by replacing its config file the way
//! editors and Kubernetes do (write a new file, rename it over the old one), alternating
//! a route between two origins. For each: time from the rename to the first response
//! served by the new config. Meanwhile a bounded loopback load (keep-alive and fresh
//! connections) counts failed requests. Prints median, p99, max, failures per 100
//! reloads; writes target/bench/reload.json.
//!
//! Run: `cargo bench -p gateway-benches --bench reload`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gateway_tests::{Gateway, Options, echo, http, start_origin};

const RELOADS: usize = 100;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = start_origin(echo("a")).await;
    let b = start_origin(echo("b")).await;
    let body = |target: &str| {
        format!(
            "server: {{ access_log: false }}\nupstreams:\n  a: {{ endpoints: [\"{}\"] }}\n  b: {{ endpoints: [\"{}\"] }}\nroutes:\n  - {{ upstream: {target} }}\n",
            a.addr(),
            b.addr()
        )
    };
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_gateway-under-bench"));
    let options = Options {
        binary: Some(binary),
        ..Options::default()
    };
    let gw = Arc::new(Gateway::start_with(&body("a"), options).await);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (listen, stop, ok, failed) = (gw.listen, stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let mut conn: Option<http::Conn> = None;
            let mut sent = 0u64;
            while !stop.load(Ordering::SeqCst) && sent < 2_000_000 {
                sent += 1;
                if conn.is_none() || worker >= 2 {
                    conn = http::Conn::connect(listen).await.ok();
                }
                let result = match conn.as_mut() {
                    Some(c) => c.get("/").await,
                    None => Err(std::io::Error::other("connect failed")),
                };
                match result {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        conn = None;
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                // A steady, bounded rate rather than a flood: this measures reloads.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }

    let mut latencies = Vec::with_capacity(RELOADS);
    let staging = gw.config_path.with_file_name("gateway.yaml.new");
    for i in 0..RELOADS {
        let target = if i % 2 == 0 { "b" } else { "a" };
        std::fs::write(&staging, gw.config_with(&body(target))).expect("write staging");
        let started = Instant::now();
        std::fs::rename(&staging, &gw.config_path).expect("rename into place");
        loop {
            let response = gw.get("/").await;
            if response.json()["origin"] == target {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "reload {i} never applied"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(started.elapsed());
    }
    stop.store(true, Ordering::SeqCst);
    for task in load {
        let _ = task.await;
    }
    latencies.sort();
    let (median, p99, max) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("reload: file rename -> new config serving, over {RELOADS} reloads");
    println!(
        "  median {:.1} ms   p99 {:.1} ms   max {:.1} ms   (target: < 250 ms)",
        ms(median),
        ms(p99),
        ms(max)
    );
    println!(
        "  under load: {ok} requests ok, {failed} failed ({:.2} failed per 100 reloads)",
        failed as f64 * 100.0 / RELOADS as f64
    );
    let report = serde_json::json!({
        "reloads": RELOADS,
        "median_ms": ms(median),
        "p99_ms": ms(p99),
        "max_ms": ms(max),
        "requests_ok": ok,
        "requests_failed": failed,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("reload.json"), report.to_string());
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
