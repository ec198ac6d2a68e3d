//! Headers the gateway adds on the way to the upstream: request id and forwarding.

use std::net::{IpAddr, SocketAddr};

use pingora::http::RequestHeader;
use pingora::prelude::*;

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

/// Adds X-Forwarded-For/-Proto/-Host and RFC 7239 `Forwarded`, appending to what
/// earlier proxies wrote so the chain stays intact.
pub fn add_forwarding(
    upstream: &mut RequestHeader,
    client: Option<SocketAddr>,
    original_host: Option<&str>,
    tls: bool,
) -> Result<()> {
    let proto = if tls { "https" } else { "http" };
    let Some(client) = client else {
        upstream.insert_header("x-forwarded-proto", proto)?;
        return Ok(());
    };
    let ip = client.ip();
    let xff = match upstream
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(previous) if !previous.is_empty() => format!("{previous}, {ip}"),
        _ => ip.to_string(),
    };
    upstream.insert_header("x-forwarded-for", xff)?;
    upstream.insert_header("x-forwarded-proto", proto)?;
    let for_node = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let mut element = format!("for={for_node};proto={proto}");
    if let Some(host) = original_host {
        upstream.insert_header("x-forwarded-host", host)?;
        element.push_str(&format!(";host=\"{host}\""));
    }
    let forwarded = match upstream
        .headers
        .get("forwarded")
        .and_then(|v| v.to_str().ok())
    {
        Some(previous) if !previous.is_empty() => format!("{previous}, {element}"),
        _ => element,
    };
    upstream.insert_header("forwarded", forwarded)?;
    Ok(())
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

    #[test]
    fn forwarding_appends_to_existing_chain() -> Result<()> {
        let mut req = RequestHeader::build("GET", b"/", None)?;
        req.insert_header("x-forwarded-for", "10.0.0.1")?;
        add_forwarding(
            &mut req,
            Some("[::1]:5000".parse().expect("addr")),
            Some("api.example.com"),
            false,
        )?;
        let get = |name: &str| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(get("x-forwarded-for"), "10.0.0.1, ::1");
        assert_eq!(get("x-forwarded-proto"), "http");
        assert_eq!(
            get("forwarded"),
            "for=\"[::1]\";proto=http;host=\"api.example.com\""
        );
        Ok(())
    }
}
