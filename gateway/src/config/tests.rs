use std::path::Path;

use super::*;

const VALID: &str = r#"
listeners:
  - address: "127.0.0.1:8080"
upstreams:
  market-data:
    endpoints: ["127.0.0.1:9001", "localhost:9002"]
    load_balancing: least_requests
    timeouts: { connect: 250ms, read: 5s }
routes:
  - match: { host: "*.example.com", path_prefix: /api }
    upstream: market-data
    strip_prefix: true
  - match: { path: /health, methods: [get] }
    upstream: market-data
"#;

fn errors(text: &str) -> Vec<String> {
    match parse(text, Path::new("test.yaml")) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn valid_config_is_checked_into_specs() {
    let config = parse(VALID, Path::new("test.yaml")).expect("valid");
    let upstream = &config.upstreams["market-data"];
    assert_eq!(upstream.endpoints.len(), 2);
    assert_eq!(upstream.load_balancing, LoadBalancing::LeastRequests);
    assert_eq!(
        upstream.timeouts.connect,
        std::time::Duration::from_millis(250)
    );
    assert_eq!(upstream.timeouts.write, Timeouts::default().write);
    assert_eq!(
        config.routes[0].host,
        HostMatch::Wildcard(".example.com".into())
    );
    assert_eq!(config.routes[1].name, "routes[1]");
    assert_eq!(config.routes[1].methods, vec![http::Method::GET]);
    assert_eq!(config.hash.len(), 12);
}

#[test]
fn every_error_is_reported_with_position_and_path() {
    let text = VALID
        .replace("connect: 250ms", "connect: 5x")
        .replace(
            "upstream: market-data\n    strip",
            "upstream: nowhere\n    strip",
        )
        .replace("methods: [get]", "methods: [get, fetch]");
    let found = errors(&text);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(
        found[0].starts_with(
            "test.yaml:8:17: upstreams.market-data.timeouts.connect: `5x` has unknown unit"
        ),
        "{}",
        found[0]
    );
    assert!(
        found[1].starts_with("test.yaml:11:5: routes[0].upstream: no upstream named `nowhere`"),
        "{}",
        found[1]
    );
    assert!(
        found[2].starts_with(
            "test.yaml:13:44: routes[1].match.methods[1]: `fetch` is not an HTTP method"
        ),
        "{}",
        found[2]
    );
}

#[test]
fn unknown_keys_name_the_key() {
    let found = errors(&VALID.replace("read: 5s", "raed: 5s"));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains("upstreams.market-data.timeouts"),
        "{}",
        found[0]
    );
    assert!(found[0].contains("unknown field `raed`"), "{}", found[0]);
}

// Found by fuzz/ (target `config`, on a mutated seed): both were accepted, then a static
// fallback sent `content-length` twice or framed its body wrongly, and an upstream got
// a Host that is no authority.
#[test]
fn a_static_fallback_cannot_frame_its_own_body() {
    let text = VALID.replace(
        "    timeouts: { connect: 250ms, read: 5s }",
        "    timeouts: { connect: 250ms, read: 5s }\n    breaker:\n      fallback:\n        status: 503\n        headers: { Content-Length: \"5\", Transfer-Encoding: chunked, x-ok: y }",
    );
    let found = errors(&text);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].contains(
            "fallback.headers.content-length: `content-length` is written by the gateway"
        ),
        "{}",
        found[0]
    );
    assert!(
        found[1].contains("fallback.headers.transfer-encoding"),
        "{}",
        found[1]
    );
}

#[test]
fn host_rewrite_must_be_an_authority() {
    for bad in ["a:b:c", "[::1", "]x[", "host:", "a..b:99999"] {
        let text = VALID.replace(
            "    strip_prefix: true",
            &format!("    strip_prefix: true\n    host_rewrite: \"{bad}\""),
        );
        let found = errors(&text);
        assert_eq!(found.len(), 1, "{bad}: {found:#?}");
        assert!(found[0].contains("routes[0].host_rewrite"), "{}", found[0]);
    }
    for good in [
        "internal.example.com",
        "internal.example.com:8080",
        "[::1]:80",
        "10.0.0.1",
    ] {
        let text = VALID.replace(
            "    strip_prefix: true",
            &format!("    strip_prefix: true\n    host_rewrite: \"{good}\""),
        );
        assert_eq!(errors(&text), Vec::<String>::new(), "{good}");
    }
}

#[test]
fn syntax_errors_carry_the_parser_position() {
    let found = errors("listeners:\n  - address: [unclosed\n");
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with("test.yaml:3:1: (top level): invalid YAML"),
        "{}",
        found[0]
    );
}
