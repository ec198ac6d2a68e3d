//! Headers the gateway adds on the way to the upstream: request id and forwarding.

use std::net::IpAddr;

use pingora::http::RequestHeader;
use pingora::prelude::*;

use crate::syntax::forwarded;

pub const REQUEST_ID: &str = "x-request-id";

/// The client's request id when it is sane, otherwise a fresh random one.
pub fn request_id(incoming: Option<&[u8]>) -> String {
    match incoming {
        Some(id) if (1..=128).contains(&id.len()) && id.iter().all(|b| b.is_ascii_graphic()) => {
            // is_ascii_graphic guarantees valid UTF-8.
            String::from_utf8_lossy(id).into_owned()
        }
        _ => format!("{:032x}", rand::random::<u128>()),
    }
}

/// Forwarding headers a client could forge: believed (and appended to) only from a
/// listener's `trusted_proxies`, dropped from anyone else.
const FORWARDING: [&str; 5] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
];

/// Sets X-Forwarded-For/-Proto/-Host and RFC 7239 `Forwarded`. From a trusted peer the
/// chain it sent is kept and our hop appended (a malformed `Forwarded` is replaced);
/// from anyone else what it sent is dropped first, so the upstream's first element is
/// always the gateway's view of the client.
pub fn add_forwarding(
    upstream: &mut RequestHeader,
    client: Option<IpAddr>,
    host: Option<&str>,
    tls: bool,
    trusted: bool,
) -> Result<()> {
    if !trusted {
        for name in FORWARDING {
            upstream.remove_header(name);
        }
    }
    let proto = if tls { "https" } else { "http" };
    if let Some(ip) = client {
        let xff = match joined(upstream, "x-forwarded-for") {
            Some(previous) => format!("{previous}, {ip}"),
            None => ip.to_string(),
        };
        upstream.insert_header("x-forwarded-for", xff)?;
    }
    let sent_proto = upstream
        .headers
        .get("x-forwarded-proto")
        .is_some_and(|v| matches!(v.as_bytes(), b"http" | b"https"));
    if !sent_proto {
        upstream.insert_header("x-forwarded-proto", proto)?;
    }
    if !upstream.headers.contains_key("x-forwarded-host")
        && let Some(host) = host
    {
        upstream.insert_header("x-forwarded-host", host)?;
    }
    let element = forwarded::element(client, proto, host);
    let forwarded = match joined(upstream, "forwarded") {
        Some(previous) if forwarded::is_valid(previous.as_bytes()) => {
            format!("{previous}, {element}")
        }
        _ => element,
    };
    upstream.insert_header("forwarded", forwarded)?;
    Ok(())
}

/// Every line of a header, joined as one list (RFC 9110 §5.3); None when absent or not
/// visible ASCII.
fn joined(req: &RequestHeader, name: &str) -> Option<String> {
    let mut values = req.headers.get_all(name).iter().peekable();
    values.peek()?;
    let parts: Option<Vec<&str>> = values.map(|v| v.to_str().ok()).collect();
    Some(parts?.join(", ")).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_propagated_when_sane() {
        assert_eq!(request_id(Some(b"abc-123")), "abc-123");
        assert_eq!(request_id(None).len(), 32);
        assert_eq!(request_id(Some(b"has space")).len(), 32);
        assert_eq!(request_id(Some(&[b'x'; 129])).len(), 32);
    }

    fn header(req: &RequestHeader, name: &str) -> String {
        req.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("?"))
            .collect::<Vec<_>>()
            .join(" | ")
    }

    fn forged() -> Result<RequestHeader> {
        let mut req = RequestHeader::build("GET", b"/", None)?;
        req.insert_header("x-forwarded-for", "6.6.6.6")?;
        req.append_header("x-forwarded-for", "7.7.7.7")?;
        req.insert_header("x-forwarded-proto", "https")?;
        req.insert_header("x-forwarded-host", "www.example.com")?;
        req.insert_header("x-real-ip", "6.6.6.6")?;
        req.insert_header("forwarded", "for=6.6.6.6;proto=https")?;
        Ok(req)
    }

    #[test]
    fn an_untrusted_peer_cannot_forge_the_chain() -> Result<()> {
        let mut req = forged()?;
        let peer = Some("192.0.2.7".parse().expect("ip"));
        add_forwarding(&mut req, peer, Some("api.example.com"), false, false)?;
        assert_eq!(header(&req, "x-forwarded-for"), "192.0.2.7");
        assert_eq!(header(&req, "x-forwarded-proto"), "http");
        assert_eq!(header(&req, "x-forwarded-host"), "api.example.com");
        assert_eq!(header(&req, "x-real-ip"), "");
        assert_eq!(
            header(&req, "forwarded"),
            "for=192.0.2.7;proto=http;host=api.example.com"
        );
        Ok(())
    }

    #[test]
    fn a_trusted_peer_is_appended_to() -> Result<()> {
        let mut req = forged()?;
        let peer = Some("::1".parse().expect("ip"));
        add_forwarding(&mut req, peer, Some("api.example.com"), false, true)?;
        assert_eq!(header(&req, "x-forwarded-for"), "6.6.6.6, 7.7.7.7, ::1");
        assert_eq!(header(&req, "x-forwarded-proto"), "https");
        assert_eq!(header(&req, "x-forwarded-host"), "www.example.com");
        assert_eq!(
            header(&req, "forwarded"),
            "for=6.6.6.6;proto=https, for=\"[::1]\";proto=http;host=api.example.com"
        );
        // A malformed chain, even from a trusted peer, is replaced rather than extended.
        req.insert_header("forwarded", "for=\"unterminated")?;
        add_forwarding(&mut req, peer, None, true, true)?;
        assert_eq!(header(&req, "forwarded"), "for=\"[::1]\";proto=https");
        Ok(())
    }
}
