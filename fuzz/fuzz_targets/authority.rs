//! Host / `:authority` parsing (`gateway::syntax::authority::parse`): what routing
//! matches and what the gateway repeats in `Forwarded` and `X-Forwarded-Host`.
//!
//! Properties: an authority that parses is exactly the bytes given and re-serializes
//! from its parts (host as written, or the IPv4 address in its one canonical form,
//! then `:` and the port's digits, which are the port's value); the host to route on
//! is a lower-case-able DNS name, an IPv4 address or a bracketed IPv6 address, never
//! a reg-name and never anything with a byte routing or a header could misread.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use gateway::syntax::authority::{Host, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(authority) = parse(data) else {
        return;
    };
    assert_eq!(
        authority.text.as_bytes(),
        data,
        "text is the value as given"
    );
    let host = match authority.host {
        Host::Name(name) | Host::RegName(name) | Host::Ipv6(name) => name.to_string(),
        Host::Ipv4(v4) => v4.to_string(),
    };
    let rest = &authority.text[host.len().min(authority.text.len())..];
    assert!(
        authority.text.starts_with(&host),
        "{:?} does not start with its host {host:?}",
        authority.text
    );
    match authority.port {
        None => assert_eq!(rest, "", "{:?}", authority.text),
        Some(port) => {
            let digits = rest
                .strip_prefix(':')
                .unwrap_or_else(|| panic!("no `:` before the port in {:?}", authority.text));
            assert!(
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
                "{:?}",
                authority.text
            );
            assert_eq!(digits.parse::<u32>().ok(), Some(u32::from(port)));
        }
    }
    match authority.host {
        Host::Name(name) => {
            let labels = name.strip_suffix('.').unwrap_or(name);
            assert!(labels.split('.').all(|l| {
                (1..=63).contains(&l.len())
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }));
            assert!(name.len() <= 254);
        }
        Host::Ipv6(literal) => {
            let inner = literal
                .strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
                .expect("bracketed");
            assert!(inner.parse::<Ipv6Addr>().is_ok());
        }
        Host::Ipv4(v4) => assert_eq!(host.parse::<Ipv4Addr>().ok(), Some(v4)),
        Host::RegName(_) => assert_eq!(authority.route_host(), None),
    }
    if let Some(route_host) = authority.route_host() {
        assert_eq!(route_host, host, "routing sees the host as written");
        assert!(
            route_host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.[]:".contains(&b)),
            "{route_host:?}"
        );
    }
    // Safe to repeat in a header value.
    assert!(
        authority.text.bytes().all(|b| b.is_ascii_graphic()),
        "{:?}",
        authority.text
    );
    assert!(http::HeaderValue::from_str(authority.text).is_ok());
});
