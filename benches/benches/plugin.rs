//! What a predicate plugin costs per call, through the same host the request path
//! uses (instance pool, epoch deadline, memory limiter, WIT lowering of a realistic
//! outcome), next to the built-in `failure_when` rules measured in the same run.
//!
//! Run: `cargo bench -p gateway-benches --bench plugin`

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::config;
use gateway::metrics::Metrics;
use gateway::plugin::{Exchange, Plugin, PluginSet, types};
use gateway::upstream::classify::{CallResult, FailureWhen};
use gateway_tests::plugin_entry;
use pingora::http::RequestHeader;

fn load(entry: &str) -> (PluginSet, Arc<Plugin>) {
    let yaml = format!(
        "listeners: [{{ address: \"127.0.0.1:18999\" }}]\nplugins:\n{entry}upstreams:\n  api:\n    endpoints: [\"127.0.0.1:9\"]\nroutes:\n  - {{ upstream: api }}\n"
    );
    let config = config::parse(&yaml, Path::new("bench.yaml")).expect("bench config");
    let set = PluginSet::load(&config, None, &Metrics::default()).expect("plugins load");
    let plugin = Arc::clone(set.iter().next().expect("one plugin"));
    (set, plugin)
}

/// A typical API exchange as the request path holds it: the request (8 headers), the
/// route and upstream names, the response's 5 headers.
struct Held {
    request: RequestHeader,
    route: String,
    upstream: String,
    response: http::HeaderMap,
}

impl Held {
    fn lent(&self) -> Exchange<'_> {
        Exchange {
            request: &self.request,
            route: &self.route,
            upstream: &self.upstream,
            response: Some(&self.response),
            trailers: None,
        }
    }
}

/// The outcome a plugin is told and the exchange it may read from on demand (the
/// status-latency plugin asks for one header).
fn exchange(body_prefix: Option<Vec<u8>>) -> (types::Outcome, Held) {
    let outcome = types::Outcome {
        response: Some(types::ResponseInfo {
            status: 200,
            body_prefix,
        }),
        error: None,
        latency_us: 3_000,
    };
    let mut request = RequestHeader::build("GET", b"/api/v1/market/quotes?symbol=ACME", None)
        .expect("request line");
    for (name, value) in [
        ("host", "api.example.com"),
        ("user-agent", "bench/1.0"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip"),
        ("x-request-id", "0123456789abcdef0123456789abcdef"),
        ("x-forwarded-for", "10.0.0.1"),
        ("authorization", "Bearer abcdefghijklmnopqrstuvwxyz"),
        ("connection", "keep-alive"),
    ] {
        request.append_header(name, value).expect("header");
    }
    let response = [
        ("content-type", "application/json"),
        ("content-length", "512"),
        ("cache-control", "no-store"),
        ("date", "Mon, 23 Nov 2026 09:00:00 GMT"),
        ("server", "origin"),
    ]
    .into_iter()
    .map(|(n, v)| {
        (
            http::HeaderName::from_static(n),
            http::HeaderValue::from_static(v),
        )
    })
    .collect();
    let held = Held {
        request,
        route: "market".into(),
        upstream: "market-data".into(),
        response,
    };
    (outcome, held)
}

/// Time per call, `iters` calls on this thread (as a proxy worker makes them), inside
/// a Tokio runtime as the proxy's are. The plugins get a 1 s limit here: a bench on a
/// shared machine can be descheduled for longer than the 10 ms default, and the limit
/// is wall time.
fn per_call(
    rt: &tokio::runtime::Runtime,
    plugin: &Plugin,
    (outcome, held): &(types::Outcome, Held),
    iters: u64,
) -> Duration {
    let _entered = rt.enter();
    let start = Instant::now();
    for _ in 0..iters {
        // Lent, as the request path lends Pingora's.
        let verdict = plugin.classify(black_box(outcome), held.lent());
        black_box(verdict.expect("classify"));
    }
    start.elapsed()
}

fn predicate(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let rules = FailureWhen::default();
    c.bench_function("predicate/built-in failure_when", |b| {
        b.iter(|| black_box(&rules).judge(black_box(CallResult::Response(200))))
    });

    let (_set, status) = load(&plugin_entry(
        "status",
        "status-latency-predicate",
        "predicate",
        "config: { failure_statuses: \"500-599,429\", failure_header: x-degraded, slow_ms: 800 }, limits: { timeout: 1s }",
    ));
    let plain = exchange(None);
    c.bench_function("predicate/wasm status-latency (headers)", |b| {
        b.iter_custom(|iters| per_call(&rt, &status, &plain, iters))
    });

    // What the request path does for an exchange outside the predicate's interest
    // (a healthy 200: the status-latency plugin asks for 5xx, 429, slow and flagged
    // ones): the native interest check, then `failure_when`. No call into the plugin.
    let (_, held) = &plain;
    let interest = status.interest().clone();
    c.bench_function(
        "predicate/wasm status-latency, healthy exchange outside its interest",
        |b| {
            b.iter(|| {
                let asked = black_box(&interest).wants_response(
                    black_box(200),
                    &held.response,
                    Duration::from_micros(3_000),
                );
                assert!(!asked);
                black_box(&rules).judge(black_box(CallResult::Response(200)))
            })
        },
    );

    let (_set, body) = load(&plugin_entry(
        "body",
        "json-body-predicate",
        "predicate",
        "inspect_body_bytes: 4KiB, limits: { timeout: 1s }",
    ));
    let document = format!(
        "{{\"status\":\"ok\",\"prices\":[{}]}}",
        "1.25,".repeat(80) + "1.0"
    );
    let with_body = exchange(Some(document.into_bytes()));
    c.bench_function("predicate/wasm json-body (512-byte body)", |b| {
        b.iter_custom(|iters| per_call(&rt, &body, &with_body, iters))
    });
}

criterion_group!(benches, predicate);
criterion_main!(benches);
