//! The route table: which route, and so which upstream, serves a request.
//!
//! Precedence (documented in docs/CONFIG.md): an exact host beats a wildcard host
//! (longer suffix first) beats a route without host; within a host, an exact path beats
//! a longer prefix beats a shorter prefix; then routes that list methods beat routes
//! that do not; ties keep file order. The first route that matches wins.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use http::Method;

use crate::config::{HostMatch, PathMatch, RouteSpec};
use crate::upstream::Upstream;

/// A checked route bound to the upstream it sends to.
#[derive(Debug)]
pub struct Route {
    pub spec: RouteSpec,
    pub upstream: Arc<Upstream>,
    /// What clients experienced on this route (requests, status classes, duration).
    pub metrics: crate::metrics::RouteMetrics,
}

impl Route {
    fn matches(&self, path: &str, method: &Method) -> bool {
        let path_ok = match &self.spec.path {
            PathMatch::Exact(exact) => path == exact,
            PathMatch::Prefix(prefix) => prefix_matches(prefix, path),
        };
        path_ok && (self.spec.methods.is_empty() || self.spec.methods.contains(method))
    }

    /// The path and query the upstream should see, after `strip_prefix`.
    pub fn upstream_path_and_query<'a>(
        &self,
        path_and_query: &'a str,
    ) -> std::borrow::Cow<'a, str> {
        match &self.spec.path {
            PathMatch::Prefix(prefix) if self.spec.strip_prefix => {
                let prefix = prefix.trim_end_matches('/');
                let rest = path_and_query.get(prefix.len()..).unwrap_or("");
                if rest.starts_with('/') {
                    rest.into()
                } else {
                    format!("/{rest}").into()
                }
            }
            _ => path_and_query.into(),
        }
    }
}

/// `/api` matches `/api`, `/api/` and `/api/x`, never `/apix`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix) || path == prefix.trim_end_matches('/');
    }
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Routes grouped by host kind, each group already in precedence order.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    exact: HashMap<String, Vec<usize>>,
    /// (suffix such as `.example.com`, routes), longest suffix first.
    wildcard: Vec<(String, Vec<usize>)>,
    any_host: Vec<usize>,
}

/// Lower sorts first: exact path, then longer prefixes, then routes with methods.
fn path_rank(spec: &RouteSpec) -> (u8, std::cmp::Reverse<usize>, u8) {
    let methods = u8::from(spec.methods.is_empty());
    match &spec.path {
        PathMatch::Exact(p) => (0, std::cmp::Reverse(p.len()), methods),
        PathMatch::Prefix(p) => (1, std::cmp::Reverse(p.len()), methods),
    }
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        let mut table = RouteTable::default();
        for (i, route) in routes.iter().enumerate() {
            match &route.spec.host {
                HostMatch::Exact(host) => table.exact.entry(host.clone()).or_default().push(i),
                HostMatch::Wildcard(suffix) => {
                    match table.wildcard.iter_mut().find(|(s, _)| s == suffix) {
                        Some((_, group)) => group.push(i),
                        None => table.wildcard.push((suffix.clone(), vec![i])),
                    }
                }
                HostMatch::Any => table.any_host.push(i),
            }
        }
        let rank = |i: &usize| path_rank(&routes[*i].spec);
        // sort_by_key is stable: equal ranks keep file order.
        table
            .exact
            .values_mut()
            .for_each(|group| group.sort_by_key(rank));
        table
            .wildcard
            .iter_mut()
            .for_each(|(_, group)| group.sort_by_key(rank));
        table.any_host.sort_by_key(rank);
        table
            .wildcard
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        table.routes = routes.into_iter().map(Arc::new).collect();
        table
    }

    /// The route for a request; `host` may carry a port and any case.
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> Option<Arc<Route>> {
        let host = host.map(normalize_host);
        let exact = host
            .as_deref()
            .and_then(|h| self.exact.get(h))
            .into_iter()
            .flatten();
        let wildcard = self
            .wildcard
            .iter()
            .filter(|(suffix, _)| {
                host.as_deref()
                    .is_some_and(|h| h.len() > suffix.len() && h.ends_with(suffix.as_str()))
            })
            .flat_map(|(_, group)| group);
        exact
            .chain(wildcard)
            .chain(&self.any_host)
            .map(|i| &self.routes[*i])
            .find(|route| route.matches(path, method))
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// Lower-case, without port or trailing dot; `[::1]:80` becomes `[::1]`. Borrows when
/// the host is already in that form (the common case), so lookups do not allocate.
fn normalize_host(host: &str) -> Cow<'_, str> {
    let without_port = match host.strip_prefix('[') {
        Some(rest) => rest
            .split_once(']')
            .map_or(host, |(ip, _)| &host[..ip.len() + 2]),
        None => host
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(name, _)| name),
    };
    let trimmed = without_port.trim_end_matches('.');
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamSpec;

    fn route(
        name: &str,
        host: HostMatch,
        path: PathMatch,
        methods: &[Method],
        strip: bool,
    ) -> Route {
        let upstream = Arc::new(Upstream::new(
            UpstreamSpec::for_test("u", vec!["127.0.0.1:1".parse().expect("addr")]),
            Arc::new(crate::breaker::ManualClock::default()),
            Arc::default(),
        ));
        Route {
            spec: RouteSpec {
                name: name.into(),
                host,
                path,
                methods: methods.to_vec(),
                upstream: "u".into(),
                strip_prefix: strip,
                host_rewrite: None,
                limits: Default::default(),
            },
            metrics: crate::metrics::Metrics::default().for_route(name),
            upstream,
        }
    }

    fn table() -> RouteTable {
        use HostMatch::{Any, Exact as Host, Wildcard};
        use PathMatch::{Exact, Prefix};
        RouteTable::new(vec![
            route("catch-all", Any, Prefix("/".into()), &[], false),
            route("any-api", Any, Prefix("/api".into()), &[], false),
            route(
                "wild",
                Wildcard(".example.com".into()),
                Prefix("/".into()),
                &[],
                false,
            ),
            route(
                "wild-deep",
                Wildcard(".eu.example.com".into()),
                Prefix("/".into()),
                &[],
                false,
            ),
            route(
                "exact-host",
                Host("api.example.com".into()),
                Prefix("/".into()),
                &[],
                false,
            ),
            route(
                "exact-host-v1",
                Host("api.example.com".into()),
                Prefix("/v1".into()),
                &[],
                false,
            ),
            route(
                "exact-path",
                Host("api.example.com".into()),
                Exact("/v1/health".into()),
                &[],
                false,
            ),
            route(
                "posts",
                Host("api.example.com".into()),
                Prefix("/v1".into()),
                &[Method::POST],
                false,
            ),
        ])
    }

    fn found(t: &RouteTable, host: Option<&str>, path: &str, method: Method) -> Option<String> {
        t.find(host, path, &method).map(|r| r.spec.name.clone())
    }

    #[test]
    fn precedence_host_then_path_then_methods() {
        let t = table();
        let get = || Method::GET;
        assert_eq!(
            found(&t, Some("api.example.com"), "/v1/health", get()).as_deref(),
            Some("exact-path")
        );
        assert_eq!(
            found(&t, Some("API.example.com:8080"), "/v1/x", get()).as_deref(),
            Some("exact-host-v1")
        );
        assert_eq!(
            found(&t, Some("api.example.com"), "/v1/x", Method::POST).as_deref(),
            Some("posts")
        );
        assert_eq!(
            found(&t, Some("api.example.com"), "/other", get()).as_deref(),
            Some("exact-host")
        );
        assert_eq!(
            found(&t, Some("x.eu.example.com"), "/", get()).as_deref(),
            Some("wild-deep")
        );
        assert_eq!(
            found(&t, Some("www.example.com"), "/", get()).as_deref(),
            Some("wild")
        );
        assert_eq!(
            found(&t, Some("example.com"), "/api/x", get()).as_deref(),
            Some("any-api")
        );
        assert_eq!(
            found(&t, Some("example.com"), "/apix", get()).as_deref(),
            Some("catch-all")
        );
        assert_eq!(found(&t, None, "/", get()).as_deref(), Some("catch-all"));
    }

    #[test]
    fn hosts_are_normalized_without_copying_when_already_normal() {
        assert!(matches!(
            normalize_host("api.example.com:8080"),
            Cow::Borrowed("api.example.com")
        ));
        assert_eq!(normalize_host("API.Example.COM."), "api.example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("[::1]"), "[::1]");
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/x"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(prefix_matches("/api/", "/api/x"));
        assert!(prefix_matches("/api/", "/api"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn strip_prefix_keeps_a_leading_slash_and_the_query() {
        let r = route(
            "s",
            HostMatch::Any,
            PathMatch::Prefix("/api/v1".into()),
            &[],
            true,
        );
        assert_eq!(
            r.upstream_path_and_query("/api/v1/quotes?s=X"),
            "/quotes?s=X"
        );
        assert_eq!(r.upstream_path_and_query("/api/v1"), "/");
        assert_eq!(r.upstream_path_and_query("/api/v1?x=1"), "/?x=1");
        let r = route(
            "s",
            HostMatch::Any,
            PathMatch::Prefix("/api/".into()),
            &[],
            true,
        );
        assert_eq!(r.upstream_path_and_query("/api/x"), "/x");
    }
}
