//! Route matching (`gateway::routing::RouteTable::find`) after the request went through
//! what the proxy does first: the Host parsed (`syntax::authority`), the target
//! normalized (`syntax::path`), the URI rebuilt by the `http` crate.
//!
//! The input is a small route table (hosts and paths drawn from a pool or written
//! freely, so that routes overlap) checked by `config::parse` like any config, and a
//! few requests. Properties: the table picks exactly the route a plain reading of the
//! documented precedence picks (exact host, then longer wildcard suffix, then any
//! host; exact path, then longer prefix; routes with methods first; then file order),
//! computed here by a linear scan written apart from the table; and what a route
//! sends upstream after `strip_prefix` is still a normal path with the same query.
#![no_main]

use std::cmp::Reverse;

use arbitrary::Arbitrary;
use gateway::config::{HostMatch, PathMatch, RouteSpec, parse};
use gateway::runtime::RuntimeHandle;
use gateway::syntax::authority;
use gateway::syntax::path::{EncodedSlashes, PathPolicy, normalize};
use http::Method;
use libfuzzer_sys::fuzz_target;

const HOSTS: &[&str] = &[
    "api.example.com",
    "*.example.com",
    "*.eu.example.com",
    "example.com",
    "10.0.0.1",
    "Api.Example.COM",
    "*.com",
];
const PATHS: &[&str] = &[
    "/",
    "/api",
    "/api/",
    "/api/v1",
    "/api/v1/health",
    "/admin",
    "/a%2Fb",
    "/api//x",
];
const METHODS: &[Method] = &[Method::GET, Method::POST, Method::PUT, Method::HEAD];

#[derive(Debug, Arbitrary)]
enum Text {
    Pick(u8),
    Free(String),
}

impl Text {
    fn get<'a>(&'a self, pool: &[&'a str]) -> &'a str {
        match self {
            Text::Pick(i) => pool[usize::from(*i) % pool.len()],
            Text::Free(text) => text,
        }
    }
}

#[derive(Debug, Arbitrary)]
struct RouteIn {
    host: Option<Text>,
    path: Text,
    exact: bool,
    methods: u8,
    strip_prefix: bool,
}

#[derive(Debug, Arbitrary)]
enum HostIn {
    /// A pool host (without its `*.`), maybe with a port, upper-cased, a final dot.
    Pick {
        host: u8,
        label: bool,
        port: Option<u16>,
        upper: bool,
        dot: bool,
    },
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct RequestIn {
    host: Option<HostIn>,
    target: Vec<u8>,
    method: u8,
}

#[derive(Debug, Arbitrary)]
struct Input {
    routes: Vec<RouteIn>,
    requests: Vec<RequestIn>,
    merge_slashes: bool,
    keep_encoded_slashes: bool,
}

fuzz_target!(|input: Input| {
    if input.routes.is_empty() || input.routes.len() > 12 || input.requests.len() > 16 {
        return;
    }
    let Some(routes) = table(&input.routes) else {
        return;
    };
    let handle = RuntimeHandle::new(routes).expect("a config without plugins loads");
    let runtime = handle.snapshot();
    let specs = &runtime.config.routes;
    let policy = PathPolicy {
        merge_slashes: input.merge_slashes,
        encoded_slashes: if input.keep_encoded_slashes {
            EncodedSlashes::Keep
        } else {
            EncodedSlashes::Refuse
        },
    };
    for request in &input.requests {
        let method = &METHODS[usize::from(request.method) % METHODS.len()];
        let host_bytes = request.host.as_ref().map(host_value);
        // The proxy refuses (400) what does not parse; only the rest is routed.
        let host = match &host_bytes {
            Some(bytes) => match authority::parse(bytes) {
                Ok(a) => a.route_host(),
                Err(_) => continue,
            },
            None => None,
        };
        let Ok(normalized) = normalize(&request.target, policy) else {
            continue;
        };
        let Ok(target) = std::str::from_utf8(&request.target) else {
            continue;
        };
        let path_and_query = normalized.as_deref().unwrap_or(target);
        let Ok(uri) = http::uri::PathAndQuery::try_from(path_and_query) else {
            continue;
        };
        let path = uri.path();
        let found = runtime.routes.find(host, path, method);
        let expected = reference(specs, host, path, method);
        assert_eq!(
            found.as_ref().map(|r| r.spec.name.as_str()),
            expected.map(|i| specs[i].name.as_str()),
            "host {host:?} path {path:?} {method}"
        );
        if let Some(route) = found {
            let upstream = route.upstream_path_and_query(uri.as_str());
            assert!(upstream.starts_with('/'), "{upstream:?}");
            assert_eq!(
                normalize(upstream.as_bytes(), policy),
                Ok(None),
                "{} sends {upstream:?} for {:?}",
                route.spec.name,
                uri.as_str()
            );
            assert_eq!(
                upstream.split_once('?').map(|(_, q)| q),
                uri.query(),
                "the query is kept"
            );
        }
        // Whatever the string, the table never panics on it.
        if let Some(bytes) = &host_bytes {
            let _ = runtime
                .routes
                .find(Some(&String::from_utf8_lossy(bytes)), path, method);
        }
    }
});

fn host_value(host: &HostIn) -> Vec<u8> {
    match host {
        HostIn::Raw(bytes) => bytes.clone(),
        HostIn::Pick {
            host,
            label,
            port,
            upper,
            dot,
        } => {
            let name = HOSTS[usize::from(*host) % HOSTS.len()];
            let mut value = match name.strip_prefix("*.") {
                Some(rest) if *label => format!("x.{rest}"),
                Some(rest) => rest.to_string(),
                None => name.to_string(),
            };
            if *upper {
                value = value.to_ascii_uppercase();
            }
            if *dot {
                value.push('.');
            }
            if let Some(port) = port {
                value.push_str(&format!(":{port}"));
            }
            value.into_bytes()
        }
    }
}

/// The routes as a config, through the same checks as a file; None when refused.
fn table(routes: &[RouteIn]) -> Option<gateway::config::Config> {
    let routes: Vec<serde_json::Value> = routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut matcher = serde_json::Map::new();
            if let Some(host) = &r.host {
                matcher.insert("host".into(), host.get(HOSTS).into());
            }
            let key = if r.exact { "path" } else { "path_prefix" };
            matcher.insert(key.into(), r.path.get(PATHS).into());
            let methods: Vec<&str> = METHODS
                .iter()
                .enumerate()
                .filter(|(bit, _)| r.methods & (1 << bit) != 0)
                .map(|(_, m)| m.as_str())
                .collect();
            if !methods.is_empty() {
                matcher.insert("methods".into(), methods.into());
            }
            serde_json::json!({
                "name": format!("r{i}"),
                "match": matcher,
                "upstream": "u",
                "strip_prefix": r.strip_prefix,
            })
        })
        .collect();
    let config = serde_json::json!({
        "listeners": [{ "address": "127.0.0.1:18080" }],
        "upstreams": { "u": { "endpoints": ["127.0.0.1:9001"] } },
        "routes": routes,
    });
    // YAML is a superset of JSON.
    parse(&config.to_string(), std::path::Path::new("routes.json")).ok()
}

/// The documented precedence, by a linear scan: the index of the route that serves.
fn reference(
    routes: &[RouteSpec],
    host: Option<&str>,
    path: &str,
    method: &Method,
) -> Option<usize> {
    let host = host.map(plain_host);
    routes
        .iter()
        .enumerate()
        .filter_map(|(i, route)| {
            let host_rank = match (&route.host, host.as_deref()) {
                (HostMatch::Exact(exact), Some(h)) if h == exact => (0, Reverse(0)),
                (HostMatch::Wildcard(suffix), Some(h))
                    if h.len() > suffix.len() && h.ends_with(suffix.as_str()) =>
                {
                    (1, Reverse(suffix.len()))
                }
                (HostMatch::Any, _) => (2, Reverse(0)),
                _ => return None,
            };
            let path_rank = match &route.path {
                PathMatch::Exact(exact) if path == exact => (0, Reverse(exact.len())),
                PathMatch::Prefix(prefix) if prefix_matches(prefix, path) => {
                    (1, Reverse(prefix.len()))
                }
                _ => return None,
            };
            if !route.methods.is_empty() && !route.methods.contains(method) {
                return None;
            }
            let methods_rank = u8::from(route.methods.is_empty());
            Some(((host_rank, path_rank, methods_rank, i), i))
        })
        .min()
        .map(|(_, i)| i)
}

/// A prefix matches itself and what continues it at a `/`; `/api/` also matches `/api`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let bare = prefix.trim_end_matches('/');
    path == bare
        || path.starts_with(prefix)
            && (prefix.ends_with('/')
                || path[prefix.len()..].starts_with('/')
                || path.len() == prefix.len())
}

/// Lower case, no port, no final dots.
fn plain_host(host: &str) -> String {
    let host = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}
