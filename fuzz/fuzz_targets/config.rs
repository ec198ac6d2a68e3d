//! Config parse + validate (`gateway::config::parse`) on any text, and building the
//! runtime from what it accepts.
//!
//! Properties: never a panic; a refused config gets at least one error, each with a
//! message and a line inside the text; an accepted config holds what the rest of the
//! gateway relies on without checking again: every reference resolves (routes to
//! upstreams, fallbacks to upstreams with chains that end, plugins by name), route
//! names are unique, paths start with `/`, a static fallback response can be sent as
//! configured (a real status, valid headers, none of the framing headers the gateway
//! writes itself), a `host_rewrite` is a valid authority, and the runtime it builds
//! routes every route.
//!
//! The source is a file in a directory that does not exist, so relative paths in the
//! text (certificates, CA bundles, plugins) name nothing; absolute ones are only read.
//! Endpoint names may be resolved: `make fuzz` runs the targets without a network when
//! the machine allows it (`unshare -rn`).
#![no_main]

use std::collections::HashSet;
use std::path::Path;

use gateway::config::{Config, FallbackSpec, parse};
use gateway::runtime::RuntimeHandle;
use gateway::syntax::authority;
use libfuzzer_sys::fuzz_target;

/// What the gateway frames itself (see `proxy::fallback`).
const FRAMING: &[&str] = &[
    "connection",
    "content-length",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
];

fuzz_target!(|text: &str| {
    let source = Path::new("/nonexistent-gateway-fuzz/gateway.yaml");
    match parse(text, source) {
        Err(errors) => {
            assert!(!errors.0.is_empty(), "refused without an error");
            let lines = yaml_lines(text);
            for error in &errors.0 {
                assert!(!error.message.is_empty(), "{error}");
                assert!(
                    // +1: the YAML parser puts the end of a text that does not
                    // end in a line break on a line of its own.
                    (1..=lines + 1).contains(&error.position.line),
                    "line {} of a {lines}-line text: {error}",
                    error.position.line
                );
            }
        }
        Ok(config) => accepted(config),
    }
});

/// Lines as the YAML parser counts them: `\r\n`, a lone `\r` or `\n`, and (YAML 1.1)
/// NEL, LS and PS each end one.
fn yaml_lines(text: &str) -> usize {
    let breaks = text
        .replace("\r\n", "\n")
        .chars()
        .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
        .count();
    breaks + 1
}

fn accepted(config: Config) {
    assert_eq!(config.hash.len(), 12);
    assert!(!config.routes.is_empty() && !config.upstreams.is_empty());
    let mut names = HashSet::new();
    for route in &config.routes {
        assert!(names.insert(&route.name), "route name {} twice", route.name);
        assert!(
            config.upstreams.contains_key(&route.upstream),
            "route {} names a missing upstream",
            route.name
        );
        let path = match &route.path {
            gateway::config::PathMatch::Exact(p) | gateway::config::PathMatch::Prefix(p) => p,
        };
        assert!(path.starts_with('/'), "route path {path:?}");
        if let Some(rewrite) = &route.host_rewrite {
            assert!(
                authority::parse(rewrite.as_bytes()).is_ok(),
                "host_rewrite {rewrite:?} is not an authority"
            );
        }
    }
    for upstream in config.upstreams.values() {
        assert!(
            !upstream.endpoints.is_empty(),
            "{} has no endpoint",
            upstream.name
        );
        for plugin in upstream.predicate.iter().chain(match &upstream.fallback {
            FallbackSpec::Plugin(name) => Some(name),
            _ => None,
        }) {
            assert!(
                config.plugins.contains_key(plugin),
                "plugin {plugin} missing"
            );
        }
        // A fallback chain ends, at upstreams that exist.
        let mut current = upstream;
        for _ in 0..=config.upstreams.len() {
            match &current.fallback {
                FallbackSpec::Upstream(next) => {
                    current = config
                        .upstreams
                        .get(next)
                        .unwrap_or_else(|| panic!("fallback to missing upstream {next}"));
                }
                _ => break,
            }
        }
        assert!(
            !matches!(current.fallback, FallbackSpec::Upstream(_)),
            "fallback chain from {} never ends",
            upstream.name
        );
        if let FallbackSpec::Static(response) = &upstream.fallback {
            assert!(http::StatusCode::from_u16(response.status).is_ok());
            assert!((200..=599).contains(&response.status));
            for (name, value) in &response.headers {
                assert!(http::HeaderName::from_bytes(name.as_bytes()).is_ok());
                assert!(http::HeaderValue::from_str(value).is_ok());
                assert!(
                    !FRAMING.contains(&name.as_str()),
                    "static fallback of {} sets framing header {name}",
                    upstream.name
                );
            }
        }
    }
    // Plugins are compiled by a separate step (not what this target is about).
    if config.plugins.is_empty() {
        let routes = config.routes.len();
        let handle = RuntimeHandle::new(config).expect("a config without plugins loads");
        assert_eq!(
            handle.snapshot().routes.len(),
            routes,
            "a route was dropped"
        );
    }
}
