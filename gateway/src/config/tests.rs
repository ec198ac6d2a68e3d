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

// Found by fuzz/ (target `config`, on a mutated seed): an upstream got a Host that is
// no authority. (The same run found static fallbacks framing their own body, fixed
// with config::resilience's own test.)
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

#[test]
fn slow_client_deadlines_are_read_with_safe_defaults() {
    let config = parse(VALID, Path::new("test.yaml")).expect("valid");
    let limits = config.listeners[0].limits;
    assert_eq!(limits.handshake_timeout, std::time::Duration::from_secs(10));
    assert_eq!(limits.write_timeout, std::time::Duration::from_secs(60));
    assert_eq!(config.routes[0].limits.request_timeout, None);
    let breaker = &config.upstreams["market-data"].breaker;
    assert_eq!(
        breaker.half_open.probe_timeout,
        std::time::Duration::from_secs(30)
    );

    let text = VALID
        .replace(
            "  - address: \"127.0.0.1:8080\"\n",
            "  - address: \"127.0.0.1:8080\"\n    limits: { handshake_timeout: 3s, write_timeout: 15s }\n",
        )
        .replace(
            "    strip_prefix: true\n",
            "    strip_prefix: true\n    limits: { request_timeout: 2500ms }\n",
        )
        .replace(
            "timeouts: { connect: 250ms, read: 5s }\n",
            "timeouts: { connect: 250ms, read: 5s }\n    breaker: { half_open: { probe_timeout: 4s } }\n",
        );
    let config = parse(&text, Path::new("test.yaml")).expect("valid");
    let limits = config.listeners[0].limits;
    assert_eq!(limits.handshake_timeout, std::time::Duration::from_secs(3));
    assert_eq!(limits.write_timeout, std::time::Duration::from_secs(15));
    assert_eq!(
        config.routes[0].limits.request_timeout,
        Some(std::time::Duration::from_millis(2500))
    );
    assert_eq!(
        config.upstreams["market-data"]
            .breaker
            .half_open
            .probe_timeout,
        std::time::Duration::from_secs(4)
    );

    let zeros = text
        .replace("handshake_timeout: 3s", "handshake_timeout: 0s")
        .replace("write_timeout: 15s", "write_timeout: 0s")
        .replace("request_timeout: 2500ms", "request_timeout: 0s")
        .replace("probe_timeout: 4s", "probe_timeout: 0s");
    let found = errors(&zeros);
    assert_eq!(found.len(), 4, "{found:#?}");
    for (found, expected) in found.iter().zip([
        "test.yaml:4:15: listeners[0].limits.handshake_timeout: must be greater than 0",
        "test.yaml:4:38: listeners[0].limits.write_timeout: must be greater than 0",
        "test.yaml:10:29: upstreams.market-data.breaker.half_open.probe_timeout: must be greater than 0",
        "test.yaml:15:15: routes[0].limits.request_timeout: must be greater than 0",
    ]) {
        assert!(found.starts_with(expected), "{found} / {expected}");
    }
}

#[test]
fn breaker_mode_and_shadow_are_checked() {
    let text = r#"
listeners:
  - address: "127.0.0.1:8080"
upstreams:
  api:
    endpoints: ["127.0.0.1:9001"]
    breaker:
      mode: forced_open
      shadow: { consecutive_failures: 3, window: { kind: count, size: 10 }, minimum_requests: 5 }
routes:
  - upstream: api
"#;
    let config = parse(text, Path::new("test.yaml")).expect("valid");
    let api = &config.upstreams["api"];
    assert_eq!(api.breaker_mode, crate::breaker::Mode::ForcedOpen);
    let shadow = api.shadow.expect("shadow policy");
    assert_eq!(shadow.consecutive_failures.map(|n| n.get()), Some(3));
    assert_eq!(
        shadow.failure_rate, None,
        "naming a condition replaces the default"
    );

    let found = errors(&text.replace("mode: forced_open", "mode: sometimes"));
    assert!(
        found
            .iter()
            .any(|e| e.contains("upstreams.api.breaker.mode") && e.contains("sometimes")),
        "{found:?}"
    );
    let found = errors(&text.replace(
        "consecutive_failures: 3,",
        "consecutive_failures: 3, failure_when: { statuses: [500] },",
    ));
    assert!(
        found
            .iter()
            .any(|e| e.contains("upstreams.api.breaker.shadow.failure_when")
                && e.contains("acts on nothing")),
        "{found:?}"
    );
}

#[test]
fn a_cluster_section_is_checked() {
    let with = |cluster: &str| format!("{VALID}cluster: {cluster}\n");
    let config = parse(
        &with("{ redis_url: \"redis://127.0.0.1:6379/0\", name: prod-edge, instance: a1 }"),
        Path::new("test.yaml"),
    )
    .expect("valid");
    let cluster = config.cluster.expect("cluster");
    assert_eq!(cluster.instance, "a1");
    assert!(cluster.share_transitions && cluster.share_modes);
    let found = errors(&with(
        "{ redis_url: \"redis://user:secret@127.0.0.1:6379\", name: \"a b\" }",
    ));
    assert!(
        found
            .iter()
            .any(|e| e.contains("cluster.redis_url") && e.contains("password_env")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|e| e.contains("cluster.name")),
        "{found:?}"
    );
    assert!(
        !found.iter().any(|e| e.contains("secret")),
        "never echoed: {found:?}"
    );
    let found = errors(&with(
        "{ redis_url: \"http://127.0.0.1\", name: x, password_env: GATEWAY_TEST_UNSET_VARIABLE }",
    ));
    assert!(
        found.iter().any(|e| e.contains("cluster.redis_url")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|e| e.contains("cluster.password_env") && e.contains("not set")),
        "{found:?}"
    );
}

#[test]
fn unknown_keys_say_what_they_are_called_here() {
    let with = |breaker: &str| {
        format!(
            "listeners:\n  - address: \"127.0.0.1:8080\"\nupstreams:\n  api:\n    endpoints: [\"127.0.0.1:9001\"]\n    breaker: {{ {breaker} }}\nroutes:\n  - upstream: api\n"
        )
    };
    let found = errors(&with("sleep_window: 5s"));
    assert!(
        found.iter().any(|e| e.contains("upstreams.api.breaker")
            && e.contains("`sleep_window`")
            && e.contains("`open_duration`")),
        "{found:?}"
    );
    let found = errors(&with("consecutive_failure: 3"));
    assert!(
        found
            .iter()
            .any(|e| e.contains("did you mean `consecutive_failures`?")),
        "{found:?}"
    );
    let config = parse(&with("failures_in_window: 5"), Path::new("t.yaml")).expect("valid");
    let policy = config.upstreams["api"].breaker;
    assert_eq!(policy.failures_in_window.map(|n| n.get()), Some(5));
    assert_eq!(
        policy.failure_rate, None,
        "naming a condition replaces the default"
    );
    let found = errors(&with(
        "failures_in_window: 30, window: { kind: count, size: 10 }, minimum_requests: 5",
    ));
    assert!(
        found
            .iter()
            .any(|e| e.contains("failures_in_window") && e.contains("can never fit")),
        "{found:?}"
    );
}

#[test]
fn plugin_cache_dir_is_an_absolute_path_or_off() {
    let with = |value: &str| format!("server: {{ plugin_cache_dir: {value} }}\n{VALID}");
    let config = parse(&with("/var/cache/gw"), Path::new("test.yaml")).expect("valid");
    assert_eq!(
        config.server.plugin_cache_dir.as_deref(),
        Some(Path::new("/var/cache/gw"))
    );
    let config = parse(&with("off"), Path::new("test.yaml")).expect("valid");
    assert_eq!(config.server.plugin_cache_dir, None);

    let relative = errors(&with("cache/plugins"));
    assert_eq!(relative.len(), 1, "{relative:?}");
    assert!(
        relative[0].contains("server.plugin_cache_dir")
            && relative[0].contains("`cache/plugins` is not an absolute path"),
        "{relative:?}"
    );
    let dotted = errors(&with("/var/cache/../tmp"));
    assert!(
        dotted.len() == 1
            && dotted[0].contains("server.plugin_cache_dir")
            && dotted[0].contains("contains `..`"),
        "{dotted:?}"
    );
}
