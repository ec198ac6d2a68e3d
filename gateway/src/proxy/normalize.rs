//! The request as routing and the upstream will see it. Pingora has already refused
//! what RFC 9112 makes ambiguous in framing and authority (two Host fields, a Host that
//! differs from an absolute-form target, Content-Length / Transfer-Encoding conflicts);
//! this checks what it leaves to the proxy: Content-Length must be one plain number, the
//! Host (or `:authority`) must be a valid authority, and the path is brought to normal form (`syntax::path`) so that the route
//! chosen is the route the upstream serves. An absolute-form target becomes origin-form
//! with its authority in Host, as RFC 9112 §3.2.2 asks of a server.

use http::header::{CONTENT_LENGTH, HOST};
use http::uri::{PathAndQuery, Uri};
use pingora::http::RequestHeader;
use pingora::http::authority::{RawTargetAuthority, raw_target_authority};

use crate::syntax::authority::{self, Authority};
use crate::syntax::path::{self, PathPolicy};

/// Checks the authority and normalizes the target in place; the error is a line for
/// the log saying what was wrong.
pub fn request(req: &mut RequestHeader, policy: PathPolicy) -> Result<(), String> {
    let absolute = match raw_target_authority(req.raw_path()) {
        RawTargetAuthority::None => None,
        RawTargetAuthority::AmbiguousAuthority => {
            return Err("ambiguous absolute-form request target".into());
        }
        RawTargetAuthority::Absolute {
            scheme,
            authority,
            path_and_query,
        } => {
            if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
                return Err(format!(
                    "absolute-form target with scheme `{}`",
                    scheme.escape_ascii()
                ));
            }
            let target = if path_and_query.first() == Some(&b'/') {
                path_and_query.to_vec()
            } else {
                [b"/", path_and_query].concat()
            };
            Some((authority.to_vec(), target))
        }
    };
    // Pingora accepts identical duplicates (`5, 5`, or two fields) but forwards them as
    // they came; an upstream that reads them differently would frame another body.
    let mut lengths = req.headers.get_all(CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        let digits = !first.is_empty() && first.as_bytes().iter().all(u8::is_ascii_digit);
        if lengths.next().is_some() || !digits {
            return Err("Content-Length must be one field of digits".into());
        }
    }
    let host = host_value(req).or(absolute.as_ref().map(|(a, _)| a.as_slice()));
    match host {
        None if req.version == http::Version::HTTP_11 => {
            return Err("HTTP/1.1 request without Host".into());
        }
        Some(value) if !value.is_empty() => {
            authority::parse(value).map_err(|e| format!("Host `{}`: {e}", value.escape_ascii()))?;
        }
        _ => {}
    }
    let target = absolute
        .as_ref()
        .map_or(req.raw_path(), |(_, t)| t.as_slice());
    let normalized = path::normalize(target, policy)
        .map_err(|e| format!("target `{}`: {e}", target.escape_ascii()))?;
    let normalized = match (normalized, &absolute) {
        (Some(path), _) => path,
        (None, Some((_, target))) => String::from_utf8_lossy(target).into_owned(),
        (None, None) => return Ok(()),
    };
    if let Some((authority, _)) = &absolute
        && !req.headers.contains_key(HOST)
    {
        let value = http::HeaderValue::from_bytes(authority).map_err(|e| e.to_string())?;
        req.insert_header(HOST, value).map_err(|e| e.to_string())?;
    }
    let mut parts = req.uri.clone().into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(normalized.as_str())
            .map_err(|e| format!("normalized target `{normalized}`: {e}"))?,
    );
    let uri = Uri::from_parts(parts).map_err(|e| format!("normalized target: {e}"))?;
    req.set_uri(uri);
    Ok(())
}

/// The Host header, else the h2 `:authority` (kept in the URI).
fn host_value(req: &RequestHeader) -> Option<&[u8]> {
    req.headers
        .get(HOST)
        .map(|v| v.as_bytes())
        .or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()))
}

/// The checked authority of a request that passed `request`, classified for routing;
/// None when it names none.
pub fn authority(req: &RequestHeader) -> Option<Authority<'_>> {
    host_value(req).and_then(|v| authority::parse(v).ok())
}

/// The authority of a request that passed `request`, as text (already checked, so not
/// parsed again); None when it names none.
pub fn host(req: &RequestHeader) -> Option<&str> {
    host_value(req)
        .and_then(|v| std::str::from_utf8(v).ok())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, host: Option<&str>) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target.as_bytes(), None).expect("request");
        if let Some(host) = host {
            req.insert_header("host", host).expect("host");
        }
        req
    }

    #[test]
    fn a_forged_forwarded_element_in_host_is_refused() {
        let mut r = req(
            "/x",
            Some("x\", for=6.6.6.6;proto=https;host=\"www.example.com"),
        );
        let e = request(&mut r, PathPolicy::default()).expect_err("refused");
        assert!(e.contains("not allowed in a host"), "{e}");
    }

    #[test]
    fn http11_needs_a_host_and_http10_does_not() {
        let mut r = req("/x", None);
        assert!(request(&mut r, PathPolicy::default()).is_err());
        r.set_version(http::Version::HTTP_10);
        assert!(request(&mut r, PathPolicy::default()).is_ok());
    }

    #[test]
    fn the_path_is_rewritten_in_place() {
        let mut r = req("/api/public/%2e%2e/internal?a=1", Some("api.example.com"));
        request(&mut r, PathPolicy::default()).expect("normalized");
        assert_eq!(r.raw_path(), b"/api/internal?a=1");
        assert_eq!(r.uri.path(), "/api/internal");
        assert_eq!(
            authority(&r).and_then(|a| a.route_host()),
            Some("api.example.com")
        );
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_its_host() {
        let mut r = req("http://api.example.com:8080/a/./b?q", None);
        request(&mut r, PathPolicy::default()).expect("normalized");
        assert_eq!(r.raw_path(), b"/a/b?q");
        assert_eq!(
            r.headers.get("host").map(|v| v.as_bytes()),
            Some(&b"api.example.com:8080"[..])
        );
        let mut r = req("ftp://api.example.com/a", None);
        assert!(request(&mut r, PathPolicy::default()).is_err());
    }
}
