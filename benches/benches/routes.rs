//! A large config: loading and validating 10 000 routes, and matching a request
//! against them; and what every request pays before routing: checking its Host and
//! normalizing its path.
//!
//! Run: `cargo bench -p gateway-benches --bench routes`

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::config;
use gateway::runtime::RuntimeHandle;

const ROUTES: usize = 10_000;

/// 100 hosts, 100 upstreams, 10 000 routes: exact hosts with path prefixes, a
/// wildcard host, method-restricted routes, and a catch-all at the end.
fn big_config() -> String {
    let mut yaml = String::from("listeners: [{ address: \"127.0.0.1:18999\" }]\nupstreams:\n");
    for u in 0..100 {
        yaml.push_str(&format!(
            "  svc-{u}:\n    endpoints: [\"127.0.0.1:{}\"]\n",
            20_000 + u
        ));
    }
    yaml.push_str("routes:\n");
    for r in 0..ROUTES {
        let host = r % 100;
        let methods = if r % 10 == 0 { ", methods: [GET]" } else { "" };
        yaml.push_str(&format!(
            "  - {{ match: {{ host: svc{host}.example.com, path_prefix: /api/v{}/r{r}{methods} }}, upstream: svc-{host} }}\n",
            r / 100
        ));
    }
    yaml.push_str("  - { match: { host: \"*.example.com\" }, upstream: svc-0 }\n");
    yaml.push_str("  - { upstream: svc-1 }\n");
    yaml
}

fn routes(c: &mut Criterion) {
    let yaml = big_config();
    c.bench_function("config/parse + validate 10k routes", |b| {
        b.iter(|| config::parse(black_box(&yaml), Path::new("big.yaml")).expect("valid"))
    });

    let config = config::parse(&yaml, Path::new("big.yaml")).expect("valid");
    let runtime = RuntimeHandle::new(config).expect("runtime");
    let snapshot = runtime.snapshot();
    let get = http::Method::GET;
    let cases = [
        (
            "exact host, prefix near the end",
            "svc99.example.com",
            "/api/v99/r9999/items/1",
        ),
        ("wildcard host", "other.example.com", "/anything"),
        ("catch-all", "unknown.test", "/"),
    ];
    for (name, host, path) in cases {
        assert!(
            snapshot.routes.find(Some(host), path, &get).is_some(),
            "{name}"
        );
        c.bench_function(&format!("routes/find in 10k: {name}"), |b| {
            b.iter(|| {
                snapshot
                    .routes
                    .find(black_box(Some(host)), black_box(path), &get)
            })
        });
    }
}

/// The per-request checks before routing (`gateway::syntax`), next to the route lookup
/// they precede.
fn request_syntax(c: &mut Criterion) {
    use gateway::syntax::{authority, path};
    let policy = path::PathPolicy::default();
    c.bench_function("syntax/authority: name with port", |b| {
        b.iter(|| authority::parse(black_box(b"svc99.example.com:8080")))
    });
    let normal = b"/api/v99/r9999/items/1?page=2&sort=desc";
    assert_eq!(path::normalize(normal, policy), Ok(None));
    c.bench_function("syntax/path: already normal (no allocation)", |b| {
        b.iter(|| path::normalize(black_box(normal), policy))
    });
    let rewritten = b"/api/v99/./r9999/%7Eitems/../items/1?page=2";
    assert!(matches!(path::normalize(rewritten, policy), Ok(Some(_))));
    c.bench_function("syntax/path: dot segments and escapes", |b| {
        b.iter(|| path::normalize(black_box(rewritten), policy))
    });
}

criterion_group!(benches, routes, request_syntax);
criterion_main!(benches);
