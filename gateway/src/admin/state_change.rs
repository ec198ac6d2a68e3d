//! What a state-changing admin request (anything but GET, HEAD, OPTIONS) must carry, so
//! that a web page the operator visits cannot make one.
//!
//! A browser marks a cross-origin request with `Origin` and `Sec-Fetch-Site`; and it can
//! send `Content-Type: application/json` only after a CORS preflight, which the admin
//! API never answers positively. So: a foreign `Origin` is refused, `Sec-Fetch-Site`
//! other than `same-origin` or `none` is refused, and the JSON content type is required
//! even on requests without a body (`POST /admin/reload`, `.../reset`).

use http::Method;
use pingora::http::RequestHeader;

use super::host::{Authority, HostPolicy, parse_authority};
use super::refusal::{Refusal, shown};

pub fn is_state_change(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Checks a state-changing request; `host` is its `Host` authority (already allowed).
pub fn check(
    request: &RequestHeader,
    host: Option<&Authority>,
    hosts: &HostPolicy,
) -> Result<(), Refusal> {
    check_origin(request, host, hosts)?;
    let mut types = request.headers.get_all(http::header::CONTENT_TYPE).iter();
    match (types.next(), types.next()) {
        (Some(value), None) if is_json(value.as_bytes()) => Ok(()),
        (Some(value), None) => Err(Refusal::NotJson(Some(shown(value.as_bytes())))),
        (None, _) => Err(Refusal::NotJson(None)),
        (Some(_), Some(_)) => Err(Refusal::NotJson(Some(
            "(more than one Content-Type header)".into(),
        ))),
    }
}

/// Where a request comes from must be the admin itself (or an allowed host): its
/// `Sec-Fetch-Site` and `Origin`, when a browser sent them.
pub fn check_origin(
    request: &RequestHeader,
    host: Option<&Authority>,
    hosts: &HostPolicy,
) -> Result<(), Refusal> {
    for site in request.headers.get_all("sec-fetch-site") {
        let same = site.as_bytes().eq_ignore_ascii_case(b"same-origin")
            || site.as_bytes().eq_ignore_ascii_case(b"none");
        if !same {
            return Err(Refusal::CrossSite(shown(site.as_bytes())));
        }
    }
    let mut origins = request.headers.get_all(http::header::ORIGIN).iter();
    if let Some(origin) = origins.next() {
        if origins.next().is_some() {
            return Err(Refusal::CrossOrigin("(more than one Origin header)".into()));
        }
        if !origin_allowed(origin.as_bytes(), host, hosts) {
            return Err(Refusal::CrossOrigin(shown(origin.as_bytes())));
        }
    }
    Ok(())
}

/// `application/json`, parameters (`; charset=utf-8`) allowed.
fn is_json(value: &[u8]) -> bool {
    let essence = value.split(|&b| b == b';').next().unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/json")
}

/// Same origin as `Host` (the admin speaks plain HTTP, so `http://` and the same host
/// and port), or a host listed in `admin.allowed_hosts` (http or https, for an admin
/// reached through a proxy under that name). `null` (an opaque origin) never passes.
fn origin_allowed(origin: &[u8], host: Option<&Authority>, hosts: &HostPolicy) -> bool {
    let Ok(origin) = std::str::from_utf8(origin) else {
        return false;
    };
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    let Some(authority) = parse_authority(rest) else {
        return false;
    };
    if hosts.configured(&authority.host) {
        return true;
    }
    host.is_some_and(|host| {
        scheme == "http"
            && host.host == authority.host
            && host.port.unwrap_or(80) == authority.port.unwrap_or(default_port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AdminSpec;

    fn hosts() -> HostPolicy {
        HostPolicy::new(&AdminSpec {
            address: "127.0.0.1:9901".parse().expect("address"),
            token: None,
            allowed_hosts: vec!["gw-admin.internal".into()],
        })
    }

    fn post(headers: &[(&str, &str)]) -> RequestHeader {
        let mut request =
            RequestHeader::build("POST", b"/admin/reload", None).expect("request header");
        for (name, value) in headers {
            request
                .append_header(name.to_string(), *value)
                .expect("header");
        }
        request
    }

    fn verdict(headers: &[(&str, &str)]) -> Result<(), &'static str> {
        let host = parse_authority("127.0.0.1:9901");
        check(&post(headers), host.as_ref(), &hosts()).map_err(|r| r.code())
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    #[test]
    fn only_safe_methods_are_not_state_changes() {
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(!is_state_change(&method));
        }
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert!(is_state_change(&method));
        }
    }

    #[test]
    fn the_json_content_type_is_required() {
        assert_eq!(verdict(&[JSON]), Ok(()));
        assert_eq!(
            verdict(&[("content-type", "Application/JSON; charset=utf-8")]),
            Ok(())
        );
        for value in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
            "application/json-patch+json",
        ] {
            assert_eq!(
                verdict(&[("content-type", value)]),
                Err("UNSUPPORTED_MEDIA_TYPE"),
                "{value}"
            );
        }
        assert_eq!(verdict(&[]), Err("UNSUPPORTED_MEDIA_TYPE"));
        assert_eq!(verdict(&[JSON, JSON]), Err("UNSUPPORTED_MEDIA_TYPE"));
    }

    #[test]
    fn only_the_same_origin_or_an_allowed_host_may_change_state() {
        for origin in [
            "http://127.0.0.1:9901",
            "HTTP://127.0.0.1:9901",
            "https://gw-admin.internal",
            "http://gw-admin.internal:8443",
        ] {
            assert_eq!(verdict(&[JSON, ("origin", origin)]), Ok(()), "{origin}");
        }
        for origin in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:9902",
            "http://127.0.0.1",
            "https://127.0.0.1:9901",
            "http://localhost:9901",
            "http://127.0.0.1:9901/",
            "file://",
            "127.0.0.1:9901",
        ] {
            assert_eq!(
                verdict(&[JSON, ("origin", origin)]),
                Err("CROSS_ORIGIN"),
                "{origin}"
            );
        }
        assert_eq!(
            verdict(&[
                JSON,
                ("origin", "http://127.0.0.1:9901"),
                ("origin", "http://127.0.0.1:9901")
            ]),
            Err("CROSS_ORIGIN")
        );
        // Without Host (HTTP/1.0) nothing is same-origin.
        assert_eq!(
            check(
                &post(&[JSON, ("origin", "http://127.0.0.1:9901")]),
                None,
                &hosts()
            )
            .map_err(|r| r.code()),
            Err("CROSS_ORIGIN")
        );
    }

    #[test]
    fn fetch_metadata_other_than_same_origin_or_none_is_refused() {
        for site in ["same-origin", "none"] {
            assert_eq!(verdict(&[JSON, ("sec-fetch-site", site)]), Ok(()));
        }
        for site in ["cross-site", "same-site", "garbage"] {
            assert_eq!(
                verdict(&[JSON, ("sec-fetch-site", site)]),
                Err("CROSS_SITE"),
                "{site}"
            );
        }
    }
}
