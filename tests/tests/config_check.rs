//! `gateway check`: every invalid config is refused with file:line:column, the key
//! path and a message a user can act on; every shipped example passes.

use std::path::Path;

use gateway_tests::{check_config, check_config_file};

const HEAD: &str = "listeners:\n  - address: \"127.0.0.1:8080\"\n";
const UPSTREAM: &str = "upstreams:\n  api:\n    endpoints: [\"127.0.0.1:9001\"]\n";
const ROUTE: &str = "routes:\n  - upstream: api\n";

/// (case, yaml, expected "line:column: path: message fragment")
fn cases() -> Vec<(&'static str, String, &'static str)> {
    let ok = |s: &str| format!("{HEAD}{UPSTREAM}{ROUTE}{s}");
    vec![
        (
            "yaml syntax",
            format!("{HEAD}upstreams: [unclosed\n"),
            "4:1: (top level): invalid YAML",
        ),
        (
            "empty file",
            String::new(),
            "1:1: (top level): the config is empty",
        ),
        (
            "top level is a list",
            "- a\n- b\n".into(),
            "1:1: (top level): the top level must be a mapping",
        ),
        (
            "unknown top-level key",
            ok("upstream:\n  x: 1\n"),
            "8:1: upstream: unknown key `upstream`",
        ),
        (
            "duplicate key",
            format!("{HEAD}{UPSTREAM}  api:\n    endpoints: [\"127.0.0.1:9002\"]\n{ROUTE}"),
            "6:3: upstreams.api: duplicate key `api` (first given at line 4)",
        ),
        (
            "no listeners",
            format!("{UPSTREAM}{ROUTE}"),
            "1:1: listeners: at least one listener is required",
        ),
        (
            "bad listener address",
            format!("listeners:\n  - address: \"localhost:80\"\n{UPSTREAM}{ROUTE}"),
            "2:5: listeners[0].address: `localhost:80` is not an address to listen on",
        ),
        (
            "listener port 0",
            format!("listeners:\n  - address: \"127.0.0.1:0\"\n{UPSTREAM}{ROUTE}"),
            "2:5: listeners[0].address: `127.0.0.1:0` has port 0",
        ),
        (
            "duplicate listener",
            format!("{HEAD}  - address: \"127.0.0.1:8080\"\n{UPSTREAM}{ROUTE}"),
            "3:5: listeners[1].address: `127.0.0.1:8080` is listed twice",
        ),
        (
            "unknown listener key",
            format!(
                "listeners:\n  - address: \"127.0.0.1:8080\"\n    ssl: true\n{UPSTREAM}{ROUTE}"
            ),
            "3:5: listeners[0].ssl: unknown field `ssl`",
        ),
        (
            "too many headers allowed",
            format!("{HEAD}    limits: {{ max_headers: 300 }}\n{UPSTREAM}{ROUTE}"),
            "3:15: listeners[0].limits.max_headers: must be between 1 and 256",
        ),
        (
            "header limit above Pingora's",
            format!("{HEAD}    limits:\n      max_header_bytes: 2MiB\n{UPSTREAM}{ROUTE}"),
            "4:7: listeners[0].limits.max_header_bytes: must be between 1KiB and 1MiB",
        ),
        (
            "keep-alive in milliseconds",
            format!("{HEAD}    limits:\n      keepalive_timeout: 1500ms\n{UPSTREAM}{ROUTE}"),
            "4:7: listeners[0].limits.keepalive_timeout: must be whole seconds",
        ),
        (
            "zero max_connections",
            format!("{HEAD}    limits:\n      max_connections: 0\n{UPSTREAM}{ROUTE}"),
            "4:7: listeners[0].limits.max_connections: must be at least 1",
        ),
        (
            "zero handshake timeout",
            format!("{HEAD}    limits:\n      handshake_timeout: 0s\n{UPSTREAM}{ROUTE}"),
            "4:7: listeners[0].limits.handshake_timeout: must be greater than 0",
        ),
        (
            "zero write timeout",
            format!("{HEAD}    limits:\n      write_timeout: 0s\n{UPSTREAM}{ROUTE}"),
            "4:7: listeners[0].limits.write_timeout: must be greater than 0",
        ),
        (
            "TLS without certificates",
            format!("{HEAD}    tls:\n      certificates: []\n{UPSTREAM}{ROUTE}"),
            "4:7: listeners[0].tls.certificates: at least one certificate is required",
        ),
        (
            "TLS 1.1",
            format!(
                "{HEAD}    tls:\n      certificates: []\n      min_version: 1.1\n{UPSTREAM}{ROUTE}"
            ),
            "5:7: listeners[0].tls.min_version: must be \"1.2\" or \"1.3\"",
        ),
        (
            "route body limit of zero",
            format!(
                "{HEAD}{UPSTREAM}routes:\n  - upstream: api\n    limits:\n      max_body_bytes: 0\n"
            ),
            "9:7: routes[0].limits.max_body_bytes: must be at least 1 byte",
        ),
        (
            "route request timeout of zero",
            format!(
                "{HEAD}{UPSTREAM}routes:\n  - upstream: api\n    limits:\n      request_timeout: 0s\n"
            ),
            "9:7: routes[0].limits.request_timeout: must be greater than 0",
        ),
        (
            "zero probe timeout",
            format!(
                "{HEAD}{UPSTREAM}    breaker:\n      half_open: {{ probe_timeout: 0s }}\n{ROUTE}"
            ),
            "7:20: upstreams.api.breaker.half_open.probe_timeout: must be greater than 0",
        ),
        (
            "verified upstream TLS without a name",
            format!(
                "{HEAD}{UPSTREAM}    tls:\n      ca_file: /etc/ssl/certs/ca-certificates.crt\n{ROUTE}"
            ),
            "6:5: upstreams.api.tls.server_name: is required to verify the upstream's certificate",
        ),
        (
            "missing CA bundle",
            format!(
                "{HEAD}{UPSTREAM}    tls:\n      server_name: api.internal\n      ca_file: /nonexistent/ca.pem\n{ROUTE}"
            ),
            "8:7: upstreams.api.tls.ca_file: cannot read `/nonexistent/ca.pem`",
        ),
        (
            "health checks on a TLS upstream",
            format!(
                "{HEAD}{UPSTREAM}    tls: {{ verify: false }}\n    health_check: {{ path: /health }}\n{ROUTE}"
            ),
            "7:5: upstreams.api.health_check: active health checks speak plaintext HTTP/1.1 only",
        ),
        (
            "unknown upstream protocol",
            format!("{HEAD}{UPSTREAM}    protocol: http3\n{ROUTE}"),
            "6:5: upstreams.api.protocol: unknown variant `http3`, expected `http1` or `http2`",
        ),
        (
            "admin on the traffic port",
            ok("admin:\n  address: \"0.0.0.0:8080\"\n"),
            "9:3: admin.address: `0.0.0.0:8080` collides with a traffic listener",
        ),
        (
            "no upstreams",
            format!("{HEAD}{ROUTE}"),
            "1:1: upstreams: at least one upstream is required",
        ),
        (
            "upstream without endpoints",
            format!("{HEAD}upstreams:\n  api:\n    endpoints: []\n{ROUTE}"),
            "5:5: upstreams.api.endpoints: at least one endpoint is required",
        ),
        (
            "endpoints not a list",
            format!("{HEAD}upstreams:\n  api:\n    endpoints: \"127.0.0.1:9001\"\n{ROUTE}"),
            "5:5: upstreams.api.endpoints: invalid type: string \"127.0.0.1:9001\", expected a sequence",
        ),
        (
            "endpoint without port",
            format!("{HEAD}upstreams:\n  api:\n    endpoints: [\"127.0.0.1\"]\n{ROUTE}"),
            "5:17: upstreams.api.endpoints[0]: `127.0.0.1` is not host:port",
        ),
        (
            "endpoint bad port",
            format!("{HEAD}upstreams:\n  api:\n    endpoints: [\"svc:99999\"]\n{ROUTE}"),
            "5:17: upstreams.api.endpoints[0]: `svc:99999` is not host:port with a port from 1 to 65535",
        ),
        (
            "duplicate endpoint",
            format!(
                "{HEAD}upstreams:\n  api:\n    endpoints: [\"127.0.0.1:9001\", \"127.0.0.1:9001\"]\n{ROUTE}"
            ),
            "5:35: upstreams.api.endpoints[1]: `127.0.0.1:9001` is listed twice",
        ),
        (
            "unknown upstream key",
            format!("{HEAD}{UPSTREAM}    retry_policy: 3\n{ROUTE}"),
            "6:5: upstreams.api.retry_policy: unknown field `retry_policy`",
        ),
        (
            "bad upstream name",
            format!(
                "{HEAD}upstreams:\n  Market Data:\n    endpoints: [\"127.0.0.1:9001\"]\n{ROUTE}"
            ),
            "4:3: upstreams.Market Data: upstream name `Market Data` must be",
        ),
        (
            "unknown load balancing",
            format!("{HEAD}{UPSTREAM}    load_balancing: random\n{ROUTE}"),
            "6:5: upstreams.api.load_balancing: unknown variant `random`, expected `round_robin` or `least_requests`",
        ),
        (
            "duration without unit",
            format!("{HEAD}{UPSTREAM}    timeouts:\n      connect: 5\n{ROUTE}"),
            "7:7: upstreams.api.timeouts.connect: `5` has no unit",
        ),
        (
            "duration bad unit",
            format!("{HEAD}{UPSTREAM}    timeouts:\n      read: 5x\n{ROUTE}"),
            "7:7: upstreams.api.timeouts.read: `5x` has unknown unit `x`",
        ),
        (
            "zero timeout",
            format!("{HEAD}{UPSTREAM}    timeouts:\n      connect: 0s\n{ROUTE}"),
            "7:7: upstreams.api.timeouts.connect: must be greater than 0",
        ),
        (
            "negative number",
            ok("server:\n  threads: -1\n"),
            "9:3: server.threads: invalid value: integer `-1`, expected usize",
        ),
        (
            "zero threads",
            ok("server:\n  threads: 0\n"),
            "9:3: server.threads: must be at least 1",
        ),
        (
            "no routes",
            format!("{HEAD}{UPSTREAM}"),
            "1:1: routes: at least one route is required",
        ),
        (
            "dangling upstream",
            format!("{HEAD}{UPSTREAM}routes:\n  - upstream: apii\n"),
            "7:5: routes[0].upstream: no upstream named `apii` (declared: api)",
        ),
        (
            "route missing upstream",
            format!("{HEAD}{UPSTREAM}routes:\n  - match: {{ path: /x }}\n"),
            "7:5: routes[0]: missing field `upstream`",
        ),
        (
            "path without slash",
            format!(
                "{HEAD}{UPSTREAM}routes:\n  - match: {{ path_prefix: api }}\n    upstream: api\n"
            ),
            "7:14: routes[0].match.path_prefix: `api` must start with `/`",
        ),
        (
            "path and prefix",
            format!(
                "{HEAD}{UPSTREAM}routes:\n  - match: {{ path: /a, path_prefix: /b }}\n    upstream: api\n"
            ),
            "7:5: routes[0].match: give either `path` or `path_prefix`, not both",
        ),
        (
            "strip without prefix",
            format!("{HEAD}{UPSTREAM}routes:\n  - upstream: api\n    strip_prefix: true\n"),
            "8:5: routes[0].strip_prefix: needs a `match.path_prefix` other than `/`",
        ),
        (
            "wildcard in the middle",
            format!(
                "{HEAD}{UPSTREAM}routes:\n  - match: {{ host: \"api.*.com\" }}\n    upstream: api\n"
            ),
            "7:14: routes[0].match.host: `api.*.com` is not a host name",
        ),
        (
            "unknown method",
            format!(
                "{HEAD}{UPSTREAM}routes:\n  - match: {{ methods: [GET, FETCH] }}\n    upstream: api\n"
            ),
            "7:29: routes[0].match.methods[1]: `FETCH` is not an HTTP method",
        ),
        (
            "bad host rewrite",
            format!("{HEAD}{UPSTREAM}routes:\n  - upstream: api\n    host_rewrite: \"a b\"\n"),
            "8:5: routes[0].host_rewrite: `a b` is not a host",
        ),
        (
            // Found by fuzz/ (target `config`).
            "host rewrite not an authority",
            format!("{HEAD}{UPSTREAM}routes:\n  - upstream: api\n    host_rewrite: \"a:b:c\"\n"),
            "8:5: routes[0].host_rewrite: `a:b:c` is not a host",
        ),
        (
            "duplicate route",
            format!(
                "{HEAD}{UPSTREAM}routes:\n  - {{ match: {{ path_prefix: /a }}, upstream: api }}\n  - {{ match: {{ path_prefix: /a }}, upstream: api }}\n"
            ),
            "8:7: routes[1].match: same match as routes[0], so this route could never be used",
        ),
        (
            "bad status class",
            format!(
                "{HEAD}{UPSTREAM}    breaker:\n      failure_when: {{ statuses: [\"6xx\"] }}\n{ROUTE}"
            ),
            "7:34: upstreams.api.breaker.failure_when.statuses[0]: `6xx` is not a status",
        ),
        (
            "bad error kind",
            format!(
                "{HEAD}{UPSTREAM}    breaker:\n      failure_when: {{ errors: [timeout] }}\n{ROUTE}"
            ),
            "7:32: upstreams.api.breaker.failure_when.errors[0]: `timeout` is not an error kind; use connect_refused",
        ),
        (
            "fallback to unknown upstream",
            format!(
                "{HEAD}{UPSTREAM}    breaker:\n      fallback: {{ upstream: backup }}\n{ROUTE}"
            ),
            "7:19: upstreams.api.breaker.fallback.upstream: no upstream named `backup`",
        ),
        (
            "fallback loop",
            format!(
                "{HEAD}{UPSTREAM}    breaker: {{ fallback: {{ upstream: b }} }}\n  b:\n    endpoints: [\"127.0.0.1:9002\"]\n    breaker: {{ fallback: {{ upstream: api }} }}\n{ROUTE}"
            ),
            "6:28: upstreams.api.breaker.fallback.upstream: fallback loop: api -> b -> api",
        ),
        (
            "fallback body and json",
            format!(
                "{HEAD}{UPSTREAM}    breaker:\n      fallback: {{ body: x, json: {{ a: 1 }} }}\n{ROUTE}"
            ),
            "7:7: upstreams.api.breaker.fallback: give `body` or `json`, not both",
        ),
        (
            "fallback sets a framing header",
            format!(
                "{HEAD}{UPSTREAM}    breaker:\n      fallback: {{ status: 503, headers: {{ content-length: \"5\" }} }}\n{ROUTE}"
            ),
            "7:43: upstreams.api.breaker.fallback.headers.content-length: `content-length` frames the response",
        ),
        (
            "ejection percent",
            format!(
                "{HEAD}{UPSTREAM}    outlier_detection: {{ max_ejection_percent: 150 }}\n{ROUTE}"
            ),
            "6:26: upstreams.api.outlier_detection.max_ejection_percent: 150 is not a percentage",
        ),
        (
            "too many retries",
            format!("{HEAD}{UPSTREAM}    retries: {{ attempts: 10 }}\n{ROUTE}"),
            "6:16: upstreams.api.retries.attempts: 10 is more than 5 extra attempts",
        ),
        (
            "zero bulkhead",
            format!("{HEAD}{UPSTREAM}    max_concurrent_requests: 0\n{ROUTE}"),
            "6:5: upstreams.api.max_concurrent_requests: must be at least 1",
        ),
        (
            "health check too often",
            format!(
                "{HEAD}{UPSTREAM}    health_check: {{ path: /health, interval: 10ms }}\n{ROUTE}"
            ),
            "6:36: upstreams.api.health_check.interval: must be at least 100ms",
        ),
        (
            "public admin without token",
            format!("{HEAD}{UPSTREAM}{ROUTE}admin:\n  address: \"0.0.0.0:9901\"\n"),
            "9:3: admin.address: `0.0.0.0:9901` is not loopback: set `token_env`",
        ),
        (
            "admin token variable unset",
            format!(
                "{HEAD}{UPSTREAM}{ROUTE}admin:\n  address: \"127.0.0.1:9901\"\n  token_env: GATEWAY_TEST_SURELY_UNSET\n"
            ),
            "10:3: admin.token_env: environment variable `GATEWAY_TEST_SURELY_UNSET` is not set",
        ),
        (
            "duplicate route name",
            format!(
                "{HEAD}{UPSTREAM}routes:\n  - {{ name: r, match: {{ path: /a }}, upstream: api }}\n  - {{ name: r, match: {{ path: /b }}, upstream: api }}\n"
            ),
            "8:7: routes[1].name: route name `r` is already used by routes[0]",
        ),
        (
            "unknown plugin kind",
            format!("{HEAD}plugins:\n  p: {{ path: x.wasm, kind: filter }}\n{UPSTREAM}{ROUTE}"),
            "4:22: plugins.p.kind: unknown variant `filter`, expected `predicate` or `fallback`",
        ),
        (
            "plugin limit out of range",
            format!(
                "{HEAD}plugins:\n  p:\n    path: x.wasm\n    kind: predicate\n    limits: {{ timeout: 0ms, memory: 1GiB }}\n{UPSTREAM}{ROUTE}"
            ),
            "7:29: plugins.p.limits.memory: must be between 1MiB and 256MiB",
        ),
        (
            "body inspection on a fallback plugin",
            format!(
                "{HEAD}plugins:\n  p:\n    path: x.wasm\n    kind: fallback\n    inspect_body_bytes: 4KiB\n{UPSTREAM}{ROUTE}"
            ),
            "7:5: plugins.p.inspect_body_bytes: only predicate plugins see response bodies",
        ),
        (
            "missing plugin file",
            format!(
                "{HEAD}plugins:\n  p: {{ path: missing.wasm, kind: predicate }}\n{UPSTREAM}{ROUTE}"
            ),
            "4:8: plugins.p.path: cannot read `",
        ),
        (
            "predicate names no plugin",
            format!("{HEAD}{UPSTREAM}    breaker: {{ predicate: nope }}\n{ROUTE}"),
            "6:16: upstreams.api.breaker.predicate: no plugin named `nope` under `plugins`",
        ),
        (
            "plugin error policy without a predicate",
            format!("{HEAD}{UPSTREAM}    breaker: {{ on_plugin_error: ignore }}\n{ROUTE}"),
            "6:16: upstreams.api.breaker.on_plugin_error: only applies with a `predicate` plugin",
        ),
        (
            "fallback both upstream and plugin",
            format!(
                "{HEAD}{UPSTREAM}    breaker:\n      fallback: {{ upstream: api, plugin: p }}\n{ROUTE}"
            ),
            "7:7: upstreams.api.breaker.fallback: a fallback is one of `upstream: name`, `plugin: name` or a response",
        ),
    ]
}

#[test]
fn invalid_configs_are_refused_with_position_and_path() {
    let cases = cases();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for (name, yaml, expected) in &cases {
        let (code, stdout, stderr) = check_config("bad.yaml", yaml);
        let ok = code == 2 && stdout.is_empty() && stderr.contains(&format!("bad.yaml:{expected}"));
        if !ok {
            failures.push(format!(
                "{name}: exit {code}, expected `bad.yaml:{expected}` in:\n{stderr}{stdout}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn all_errors_are_reported_in_one_run() {
    let yaml = format!(
        "{HEAD}upstreams:\n  a:\n    endpoints: [\"nope\"]\n  b:\n    endpoints: [\"127.0.0.1:1\"]\n    timeouts: {{ read: 0s }}\nroutes:\n  - upstream: c\n"
    );
    let (code, _, stderr) = check_config("multi.yaml", &yaml);
    assert_eq!(code, 2);
    assert!(stderr.starts_with("3 errors in config:"), "{stderr}");
    for fragment in [
        "multi.yaml:5:17: upstreams.a.endpoints[0]",
        "multi.yaml:8:17: upstreams.b.timeouts.read",
        "multi.yaml:10:5: routes[0].upstream",
    ] {
        assert!(
            stderr.contains(fragment),
            "missing {fragment} in:\n{stderr}"
        );
    }
}

#[test]
fn a_missing_file_is_named() {
    let (code, _, stderr) = check_config_file(Path::new("/nonexistent/gateway.yaml"));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("cannot read config file /nonexistent/gateway.yaml"),
        "{stderr}"
    );
}

#[test]
fn shipped_example_configs_pass_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("config dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let (code, stdout, stderr) = check_config_file(&path);
            assert_eq!(code, 0, "{}: {stderr}", path.display());
            assert!(stdout.contains(": ok (hash "), "{stdout}");
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "expected gateway.yaml and demo.yaml, checked {checked}"
    );
}
