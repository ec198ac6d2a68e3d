//! Plugins in other languages than Rust, through the real gateway: a Python predicate
//! (componentize-py) and a JavaScript fallback (ComponentizeJS, default settings, so it
//! imports `wasi:http`), built from `plugins/` by `scripts/build-polyglot-plugins.sh`
//! before `cargo test` (`make test` does). A missing component fails these tests.

use gateway_tests::{
    Gateway, Reply, Request, check_config, component_imports, dead_address, polyglot_entry,
    polyglot_path, start_origin,
};
use std::path::Path;
use std::sync::{Arc, Once};

/// Each plugin is tens of MB: a generous start and call budget for a debug build on a
/// shared machine (a cut-off would show as a plugin error, which the tests count).
const LIMITS: &str = "limits: { timeout: 1s, init_timeout: 30s, memory: 64MiB }";

/// The `server:` section of every config here: one plugin cache for this test binary,
/// kept across runs under cargo's test scratch directory (not the machine's default).
fn server_section() -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("polyglot-plugin-cache");
    format!("server: {{ plugin_cache_dir: \"{}\" }}\n", dir.display())
}

/// Compiles both components into the plugin cache once, before any test starts a
/// gateway: uncached, compiling them takes 15-20 s on a busy 2-core machine, and
/// several tests compiling at once could outlast the harness's 30 s wait for a gateway
/// to be ready. Cached, each start loads them in well under a second.
fn warm_plugin_cache() {
    static WARM: Once = Once::new();
    WARM.call_once(|| {
        let yaml = format!(
            "{}listeners: [{{ address: \"127.0.0.1:18999\" }}]\nplugins:\n{}{}upstreams:\n  a:\n    endpoints: [\"127.0.0.1:9\"]\n    breaker: {{ predicate: py, fallback: {{ plugin: js }} }}\nroutes:\n  - {{ upstream: a }}\n",
            server_section(),
            polyglot_entry("py", "python_predicate", "predicate", LIMITS),
            polyglot_entry("js", "js_fallback", "fallback", LIMITS),
        );
        let (code, _, stderr) = check_config("gateway.yaml", &yaml);
        assert_eq!(code, 0, "gateway check refused the components: {stderr}");
    });
}

/// `/flagged`: 200 with `x-bad: 1`; `/broken`: 500; anything else 200.
fn flagging_origin() -> gateway_tests::Handler {
    Arc::new(|req: &Request| {
        if req.target.ends_with("/flagged") {
            let mut reply = Reply::text(200, "looks fine");
            reply.headers.push(("x-bad".into(), "1".into()));
            reply
        } else if req.target.ends_with("/broken") {
            Reply::text(500, "broken")
        } else {
            Reply::text(200, "ok")
        }
    })
}

#[tokio::test]
async fn python_predicate_opens_the_breaker_on_what_it_calls_failures() {
    warm_plugin_cache();
    let origin = start_origin(flagging_origin()).await;
    let config = format!(
        "{}plugins:\n{}upstreams:\n  a:\n    endpoints: [\"{}\"]\n    breaker: {{ consecutive_failures: 3, open_duration: 30s, predicate: py }}\n  b:\n    endpoints: [\"{}\"]\n    breaker: {{ consecutive_failures: 2, open_duration: 30s, predicate: py }}\nroutes:\n  - {{ match: {{ path_prefix: /a }}, upstream: a }}\n  - {{ match: {{ path_prefix: /b }}, upstream: b }}\n",
        server_section(),
        polyglot_entry(
            "py",
            "python_predicate",
            "predicate",
            &format!(
                "config: {{ failure_header: x-bad, failure_statuses: \"500-599\" }}, {LIMITS}"
            )
        ),
        origin.addr(),
        origin.addr(),
    );
    let gw = Gateway::start(&config).await;
    gw.wait_for_log(&["python predicate ready", "plugin=\"py\""])
        .await;
    let mut conn = gw.conn().await;

    // a: 200s are successes until they carry the header the built-in rules never read;
    // three of those in a row open it.
    for _ in 0..2 {
        assert_eq!(conn.get("/a/ok").await.expect("request").status, 200);
    }
    for _ in 0..3 {
        let response = conn.get("/a/flagged").await.expect("request");
        assert_eq!(response.status, 200, "the client still gets the answer");
    }
    let rejected = conn.get("/a/ok").await.expect("request");
    assert_eq!(rejected.status, 503);
    assert_eq!(rejected.header("x-gateway-fallback"), Some("circuit_open"));

    // b: statuses from its config: two 500s open it.
    for _ in 0..2 {
        assert_eq!(conn.get("/b/broken").await.expect("request").status, 500);
    }
    assert_eq!(conn.get("/b/ok").await.expect("request").status, 503);

    for (outcome, upstream, count) in [
        ("success", "a", 2.0),
        ("failure", "a", 3.0),
        ("failure", "b", 2.0),
    ] {
        assert_eq!(
            gw.metric(&format!(
                "gateway_upstream_requests_total{{outcome=\"{outcome}\",upstream=\"{upstream}\"}}"
            ))
            .await,
            count,
            "{outcome} on {upstream}"
        );
    }
    // The two healthy 200s are outside the interest its init declared (its statuses,
    // its header, transport errors): judged by failure_when, the plugin not called.
    assert_eq!(
        gw.metric("gateway_plugin_calls_total{plugin=\"py\",result=\"ok\"}")
            .await,
        5.0
    );
    assert_eq!(
        origin.stats().requests(),
        7,
        "nothing reached an open upstream"
    );
}

#[tokio::test]
async fn js_fallback_answers_while_the_breaker_is_open() {
    warm_plugin_cache();
    let config = format!(
        "{}plugins:\n{}upstreams:\n  quotes:\n    endpoints: [\"{}\"]\n    breaker: {{ consecutive_failures: 2, open_duration: 30s, fallback: {{ plugin: js }} }}\nroutes:\n  - {{ upstream: quotes }}\n",
        server_section(),
        polyglot_entry(
            "js",
            "js_fallback",
            "fallback",
            &format!("config: {{ message: served from the edge, status: 200 }}, {LIMITS}")
        ),
        dead_address()
    );
    let gw = Gateway::start(&config).await;
    for _ in 0..2 {
        let response = gw.get("/quotes").await;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-fallback"), Some("js"));
        assert_eq!(response.json()["reason"], "upstream-failed");
        assert_eq!(
            response.header("x-gateway-fallback"),
            Some("upstream_failed")
        );
    }

    let response = gw.get("/quotes/eur?depth=5").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-gateway-fallback"), Some("circuit_open"));
    assert_eq!(response.header("x-fallback"), Some("js"));
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("x-probe"), None, "no probe_url, no fetch");
    let retry_after: u64 = response
        .header("retry-after")
        .expect("retry-after")
        .parse()
        .expect("whole seconds");
    assert!((20..=30).contains(&retry_after), "{retry_after}");
    let document = response.json();
    assert_eq!(document["message"], "served from the edge");
    assert_eq!(document["reason"], "circuit-open");
    assert_eq!(document["state"], "open");
    assert_eq!(document["upstream"], "quotes");
    assert_eq!(document["method"], "GET");
    assert_eq!(document["path"], "/quotes/eur?depth=5");
    let retry_after_ms = document["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(
        (20_000..=30_000).contains(&retry_after_ms),
        "{retry_after_ms}"
    );
    assert_eq!(
        gw.metric(
            "gateway_fallbacks_total{kind=\"plugin\",reason=\"circuit_open\",upstream=\"quotes\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn js_fallback_fetch_fails_at_call_time_and_nothing_leaves() {
    warm_plugin_cache();
    // A live server the plugin is told to fetch: it must never be reached.
    let probed = start_origin(Arc::new(|_: &Request| Reply::text(200, "up"))).await;
    let live = start_origin(Arc::new(|_: &Request| Reply::text(200, "live"))).await;
    let config = format!(
        "{}plugins:\n{}upstreams:\n  down:\n    endpoints: [\"{}\"]\n    breaker: {{ consecutive_failures: 1, open_duration: 30s, fallback: {{ plugin: js }} }}\n  live:\n    endpoints: [\"{}\"]\nroutes:\n  - {{ match: {{ path_prefix: /live }}, upstream: live }}\n  - {{ upstream: down }}\n",
        server_section(),
        polyglot_entry(
            "js",
            "js_fallback",
            "fallback",
            &format!(
                "config: {{ probe_url: \"http://{}/status\" }}, {LIMITS}",
                probed.addr()
            )
        ),
        dead_address(),
        live.addr()
    );
    let gw = Gateway::start(&config).await;
    let mut conn = gw.conn().await;
    // The first request fails upstream (that connection is closed); the rest are
    // answered while open, over one connection.
    assert_eq!(gw.get("/down").await.header("x-probe"), Some("failed"));
    for _ in 0..20 {
        let response = conn.get("/down").await.expect("request");
        assert_eq!(response.status, 503, "the plugin's default status");
        assert_eq!(response.header("x-fallback"), Some("js"));
        assert_eq!(response.header("x-probe"), Some("failed"));
        let probe = response.json()["probe"]
            .as_str()
            .expect("probe")
            .to_string();
        assert!(probe.starts_with("failed: "), "{probe}");
    }
    gw.wait_for_log(&[
        "plugin=\"js\"",
        "failed",
        &format!("probe http://{}", probed.addr()),
    ])
    .await;

    assert_eq!(probed.stats().requests(), 0, "no request left the sandbox");
    assert_eq!(
        gw.metric("gateway_plugin_calls_total{plugin=\"js\",result=\"ok\"}")
            .await,
        21.0,
        "every fetch failed inside the call, which then answered"
    );
    for kind in ["trap", "timeout", "memory"] {
        assert_eq!(
            gw.metric(&format!(
                "gateway_plugin_errors_total{{kind=\"{kind}\",plugin=\"js\"}}"
            ))
            .await,
            0.0,
            "{kind}"
        );
    }
    // The gateway is healthy: ready, and serving other upstreams.
    assert_eq!(gw.admin("GET", "/ready", &[], b"").await.status, 200);
    let response = conn.get("/live").await.expect("request");
    assert_eq!((response.status, response.text().as_str()), (200, "live"));
}

/// Guards the point of the JavaScript plugin: it is built with ComponentizeJS's default
/// settings, so it imports `wasi:http`; a build with `-d http` would pass the tests
/// above without proving that such components load.
#[test]
fn js_fallback_imports_wasi_http_as_componentize_js_builds_by_default() {
    let imports = component_imports(&polyglot_path("js_fallback"));
    for interface in ["wasi:http/types@0.2.", "wasi:http/outgoing-handler@0.2."] {
        assert!(
            imports.iter().any(|name| name.starts_with(interface)),
            "js_fallback.wasm does not import {interface}*: {imports:?}"
        );
    }
}

/// The WASI interfaces TinyGo's wasip2 target binds its runtime to (tinygo's
/// `src/internal/wasi/`, generated from `wasi:cli/command@0.2.0`; its
/// `targets/wasip2.json` names that world). A TinyGo plugin imports those of them its
/// code reaches, at version 0.2.0. TinyGo itself is not installable from the registries
/// this repository builds from, so the `wasi-imports` fixture stands in for it.
const TINYGO_WASIP2_IMPORTS: [&str; 25] = [
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:filesystem/preopens",
    "wasi:filesystem/types",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:random/random",
    "wasi:sockets/instance-network",
    "wasi:sockets/ip-name-lookup",
    "wasi:sockets/network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
];

/// `wasi:<package>/<interface>@<version>` split at the `@`.
fn unversioned(name: &str) -> &str {
    name.split_once('@')
        .map_or(name, |(interface, _)| interface)
}

/// A copy of the fixture with its WASI imports renamed to 0.2.0, the version TinyGo
/// imports: Rust's toolchain merges every WASI import to its own version (0.2.6), so
/// the names are rewritten in place (same length; the component stays valid, and the
/// gateway validates it again on load).
fn at_wasi_0_2_0(original: &[u8], from: &str) -> Vec<u8> {
    let mut bytes = original.to_vec();
    let (from, to) = (format!("@{from}"), b"@0.2.0");
    let mut at = 0;
    while let Some(found) = bytes[at..]
        .windows(from.len())
        .position(|w| w == from.as_bytes())
    {
        let start = at + found;
        // Only in a WASI interface name: `wasi:` a few bytes before.
        let name_start = start.saturating_sub(40);
        if bytes[name_start..start].windows(5).any(|w| w == b"wasi:") {
            bytes[start..start + from.len()].copy_from_slice(to);
        }
        at = start + from.len();
    }
    bytes
}

#[tokio::test]
async fn a_component_importing_tinygos_wasi_world_loads_and_every_call_answers_at_once() {
    let fixture = gateway_tests::plugin_path("wasi-imports");
    let imports = component_imports(&fixture);
    let unversioned_imports: Vec<&str> = imports.iter().map(|n| unversioned(n)).collect();
    for interface in TINYGO_WASIP2_IMPORTS {
        assert!(
            unversioned_imports.contains(&interface),
            "the fixture does not import {interface}: {imports:?}"
        );
    }
    let rust_version = imports
        .iter()
        .find(|n| n.starts_with("wasi:io/poll@"))
        .and_then(|n| n.split_once('@'))
        .map(|(_, v)| v.to_string())
        .expect("a wasi:io/poll import");

    let dir = tempfile::tempdir().expect("temp dir");
    let tinygo_like = dir.path().join("wasi_imports_0_2_0.wasm");
    let original = std::fs::read(&fixture).expect("read fixture");
    std::fs::write(&tinygo_like, at_wasi_0_2_0(&original, &rust_version)).expect("write copy");
    let renamed = component_imports(&tinygo_like);
    for interface in TINYGO_WASIP2_IMPORTS {
        let at_0_2_0 = format!("{interface}@0.2.0");
        assert!(renamed.contains(&at_0_2_0), "{at_0_2_0} not in {renamed:?}");
    }

    let config = format!(
        "plugins:\n  go: {{ path: \"{}\", kind: fallback }}\nupstreams:\n  a:\n    endpoints: [\"{}\"]\n    breaker: {{ consecutive_failures: 1, open_duration: 30s, fallback: {{ plugin: go }} }}\nroutes:\n  - {{ upstream: a }}\n",
        tinygo_like.display(),
        dead_address()
    );
    let gw = Gateway::start(&config).await;
    let _ = gw.get("/").await; // opens the breaker
    let response = gw.get("/").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-gateway-fallback"), Some("circuit_open"));
    let body = response.text();
    let results: std::collections::BTreeMap<&str, &str> =
        body.lines().filter_map(|l| l.split_once('\t')).collect();
    // What a plugin gets from a host that grants nothing, each at once.
    for (call, expected) in [
        ("environment.get-environment", "[]"),
        ("environment.get-arguments", "[]"),
        ("environment.initial-cwd", "None"),
        ("stdin.read", "Err(\"closed\")"),
        ("stdout.blocking-write-and-flush", "Ok(())"),
        ("stderr.check-write", "Ok(true)"),
        ("terminal-stdin/stdout/stderr", "(false, false, false)"),
        ("monotonic-clock.now", "true"),
        ("wall-clock.now", "true"),
        ("poll.poll", "[0]"),
        ("random.get-random-u64", "true"),
        ("insecure.get-insecure-random-bytes", "4"),
        ("insecure-seed.insecure-seed", "true"),
        ("preopens.get-directories", "0"),
        ("tcp.start-connect", "Err(\"access-denied\")"),
        (
            "udp-create-socket.create-udp-socket",
            "Err(\"access-denied\")",
        ),
        (
            "ip-name-lookup.resolve-addresses",
            "Err(\"permanent-resolver-failure\")",
        ),
    ] {
        assert_eq!(results.get(call), Some(&expected), "{call} in:\n{body}");
    }
    gw.wait_for_log(&["wasi-imports: stdout works", "plugin=\"go\""])
        .await;
    assert_eq!(
        gw.metric("gateway_plugin_errors_total{kind=\"trap\",plugin=\"go\"}")
            .await,
        0.0
    );
}

/// `init`'s `result<_, string>` in both languages: a Python `raise Err(...)` and a
/// JavaScript `throw` refuse the config, with their message, at the declaration.
#[test]
fn python_and_javascript_plugins_refuse_a_bad_config_with_their_own_message() {
    warm_plugin_cache();
    for (entry, expected) in [
        (
            polyglot_entry(
                "py",
                "python_predicate",
                "predicate",
                &format!("config: {{ slow_ms: soon }}, {LIMITS}"),
            ),
            "slow_ms: `soon` is not a whole number of milliseconds",
        ),
        (
            polyglot_entry(
                "js",
                "js_fallback",
                "fallback",
                &format!("config: {{ status: 99 }}, {LIMITS}"),
            ),
            "status: `99` is not a status between 200 and 599",
        ),
    ] {
        let yaml = format!(
            "{}listeners: [{{ address: \"127.0.0.1:18999\" }}]\nplugins:\n{entry}upstreams:\n  a:\n    endpoints: [\"127.0.0.1:9\"]\nroutes:\n  - {{ upstream: a }}\n",
            server_section()
        );
        let (code, _, stderr) = check_config("gateway.yaml", &yaml);
        assert_eq!(code, 2, "{expected}: {stderr}");
        assert!(stderr.contains(expected), "{expected}:\n{stderr}");
        assert!(
            stderr.contains("gateway.yaml:4:"),
            "at the declaration:\n{stderr}"
        );
    }
}
